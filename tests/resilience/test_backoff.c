/*
 * tests/resilience/test_backoff.c - backoff delays: the exact sequences of
 * each kind, the bounds of each jitter over many draws, saturation at huge
 * attempt numbers, reproducibility from a seed, and configuration checks.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include <keel.h>
#include <keel/backoff.h>
#include "keel_test.h"

#define MS KEEL_MSEC
#define SAMPLES 100000

static double dabs(double v)
{
	return v < 0 ? -v : v;
}

static struct keel_backoff plain(enum keel_backoff_kind kind, int64_t initial,
				 int64_t max)
{
	struct keel_backoff b;

	keel_backoff_init(&b);
	b.kind = kind;
	b.initial = initial;
	b.max = max;
	b.jitter = KEEL_JITTER_NONE;
	return b;
}

/* Checks delays for retries 1..n against want[]. */
static void check_sequence(const struct keel_backoff *b, const int64_t *want,
			   int n)
{
	uint64_t rng = 1;
	int i;

	for (i = 0; i < n; i++) {
		int64_t d = keel_backoff_delay(b, i + 1, 0, &rng);

		if (d != want[i])
			KEEL_TEST_FAIL("retry %d: delay %lld, want %lld", i + 1,
				       (long long)d, (long long)want[i]);
	}
	CHECK_INT(rng, ==, 1); /* no jitter: the random state is untouched */
}

/* ========================================================================
 * Defaults and checks
 * ======================================================================== */

TEST(init_defaults)
{
	struct keel_backoff b;

	memset(&b, 0xa5, sizeof(b));
	keel_backoff_init(&b);
	CHECK_INT(b.kind, ==, KEEL_BACKOFF_EXPONENTIAL);
	CHECK_INT(b.initial, ==, 100 * MS);
	CHECK(b.multiplier == 2.0);
	CHECK_INT(b.step, ==, 0);
	CHECK_INT(b.max, ==, 10 * KEEL_SEC);
	CHECK_INT(b.jitter, ==, KEEL_JITTER_FULL);
	CHECK(b.jitter_factor == 0.2);
	CHECK_INT(keel_backoff_check(&b), ==, 0);
}

TEST(check_refuses_bad_configs)
{
	struct keel_backoff b;

	CHECK_INT(keel_backoff_check(NULL), ==, -EINVAL);
#define BAD(stmt)                                                             \
	do {                                                                  \
		keel_backoff_init(&b);                                        \
		stmt;                                                         \
		if (keel_backoff_check(&b) != -EINVAL)                        \
			KEEL_TEST_FAIL("accepted: %s", #stmt);                \
	} while (0)
	BAD(b.kind = (enum keel_backoff_kind)3);
	BAD(b.kind = (enum keel_backoff_kind)-1);
	BAD(b.jitter = (enum keel_jitter)5);
	BAD(b.initial = -1);
	BAD(b.step = -1);
	BAD(b.max = -1);
	BAD(b.initial = b.max + 1);
	BAD(b.multiplier = 0.5);
	BAD(b.multiplier = NAN);
	BAD((b.jitter = KEEL_JITTER_PLUS_MINUS, b.jitter_factor = 1.5));
	BAD((b.jitter = KEEL_JITTER_PLUS_MINUS, b.jitter_factor = -0.1));
	BAD((b.jitter = KEEL_JITTER_PLUS_MINUS, b.jitter_factor = NAN));
#undef BAD
	/* Fine: a multiplier below 1 for kinds that do not use it, no cap,
	 * zero delays, a multiplier of exactly 1. */
	keel_backoff_init(&b);
	b.kind = KEEL_BACKOFF_CONSTANT;
	b.multiplier = 0;
	CHECK_INT(keel_backoff_check(&b), ==, 0);
	keel_backoff_init(&b);
	b.max = 0;
	b.initial = 0;
	b.multiplier = 1;
	CHECK_INT(keel_backoff_check(&b), ==, 0);
}

/* ========================================================================
 * Exact sequences, no jitter
 * ======================================================================== */

TEST(constant_sequence)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_CONSTANT, 500 * MS, 0);
	const int64_t want[] = { 500 * MS, 500 * MS, 500 * MS, 500 * MS };

	check_sequence(&b, want, 4);
	b.max = 200 * MS; /* the cap still applies */
	b.initial = 500 * MS;
	CHECK_INT(keel_backoff_delay(&b, 1, 0, NULL), ==, 200 * MS);
}

TEST(linear_sequence)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_LINEAR, 100 * MS, 450 * MS);
	const int64_t by_initial[] = { 100 * MS, 200 * MS, 300 * MS, 400 * MS,
				       450 * MS, 450 * MS };
	const int64_t by_step[] = { 100 * MS, 125 * MS, 150 * MS, 175 * MS };

	check_sequence(&b, by_initial, 6); /* step 0: steps of initial */
	b.step = 25 * MS;
	check_sequence(&b, by_step, 4);
}

TEST(exponential_sequence)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS,
				      1000 * MS);
	const int64_t doubling[] = { 100 * MS, 200 * MS, 400 * MS, 800 * MS,
				     1000 * MS, 1000 * MS };
	const int64_t by_1_5[] = { 100 * MS, 150 * MS, 225 * MS, 337500000,
				   506250000 };
	const int64_t by_1[] = { 100 * MS, 100 * MS, 100 * MS };

	check_sequence(&b, doubling, 6);
	b.multiplier = 1.5;
	check_sequence(&b, by_1_5, 5);
	b.multiplier = 1.0;
	check_sequence(&b, by_1, 3);
}

TEST(attempt_below_one_counts_as_one)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS, 0);

	CHECK_INT(keel_backoff_delay(&b, 0, 0, NULL), ==, 100 * MS);
	CHECK_INT(keel_backoff_delay(&b, -5, 0, NULL), ==, 100 * MS);
	CHECK_INT(keel_backoff_delay(&b, INT_MIN, 0, NULL), ==, 100 * MS);
	b.kind = KEEL_BACKOFF_LINEAR;
	CHECK_INT(keel_backoff_delay(&b, INT_MIN, 0, NULL), ==, 100 * MS);
}

TEST(zero_initial_is_zero)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 0, 0);

	b.multiplier = 1e300; /* 0 * inf must not become NaN */
	CHECK_INT(keel_backoff_delay(&b, INT_MAX, 0, NULL), ==, 0);
	b.kind = KEEL_BACKOFF_LINEAR;
	CHECK_INT(keel_backoff_delay(&b, INT_MAX, 0, NULL), ==, 0);
	b.jitter = KEEL_JITTER_FULL;
	CHECK_INT(keel_backoff_delay(&b, 7, 0, NULL), ==, 0);
}

/* ========================================================================
 * Saturation
 * ======================================================================== */

TEST(huge_attempts_saturate_at_the_cap)
{
	static const enum keel_backoff_kind kinds[] = {
		KEEL_BACKOFF_CONSTANT, KEEL_BACKOFF_LINEAR,
		KEEL_BACKOFF_EXPONENTIAL
	};
	static const int attempts[] = { 101, 1000, 1 << 20, 1 << 30,
					INT_MAX - 1, INT_MAX };
	size_t k, i;

	for (k = 0; k < 3; k++)
		for (i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
			struct keel_backoff b = plain(kinds[k], 100 * MS,
						      10 * KEEL_SEC);
			int64_t want = kinds[k] == KEEL_BACKOFF_CONSTANT
					       ? 100 * MS
					       : 10 * KEEL_SEC;

			if (keel_backoff_delay(&b, attempts[i], 0, NULL) != want)
				KEEL_TEST_FAIL("kind %d attempt %d", (int)k,
					       attempts[i]);
		}
}

TEST(no_cap_saturates_at_int64_max)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS, 0);
	int a;

	/* 100 ms * 2^36 ~ 6.9e18 ns still fits; 2^37 does not. */
	CHECK_INT(keel_backoff_delay(&b, 37, 0, NULL), ==,
		  100 * MS * ((int64_t)1 << 36));
	CHECK_INT(keel_backoff_delay(&b, 38, 0, NULL), ==, INT64_MAX);
	CHECK_INT(keel_backoff_delay(&b, INT_MAX, 0, NULL), ==, INT64_MAX);
	b.multiplier = 1e308; /* overflows double itself: inf */
	CHECK_INT(keel_backoff_delay(&b, 3, 0, NULL), ==, INT64_MAX);
	b.multiplier = 2;
	b.initial = INT64_MAX;
	CHECK_INT(keel_backoff_delay(&b, 1, 0, NULL), ==, INT64_MAX);
	CHECK_INT(keel_backoff_delay(&b, 2, 0, NULL), ==, INT64_MAX);

	b = plain(KEEL_BACKOFF_LINEAR, INT64_MAX / 2, 0);
	CHECK_INT(keel_backoff_delay(&b, 2, 0, NULL), ==, INT64_MAX / 2 * 2);
	CHECK_INT(keel_backoff_delay(&b, 3, 0, NULL), ==, INT64_MAX);
	CHECK_INT(keel_backoff_delay(&b, INT_MAX, 0, NULL), ==, INT64_MAX);
	b.initial = 1;
	b.step = INT64_MAX;
	CHECK_INT(keel_backoff_delay(&b, 2, 0, NULL), ==, INT64_MAX);

	/* Never negative, whatever the attempt. */
	b = plain(KEEL_BACKOFF_EXPONENTIAL, 3, 0);
	b.multiplier = 3;
	for (a = 1; a < 200; a++)
		CHECK(keel_backoff_delay(&b, a, 0, NULL) > 0);
}

TEST(jitter_at_saturation_stays_in_range)
{
	static const enum keel_jitter jit[] = {
		KEEL_JITTER_FULL, KEEL_JITTER_EQUAL, KEEL_JITTER_PLUS_MINUS,
		KEEL_JITTER_DECORRELATED
	};
	uint64_t rng = 42;
	size_t j;
	int i;

	for (j = 0; j < 4; j++) {
		struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL,
					      INT64_MAX / 4, 0);

		b.jitter = jit[j];
		b.jitter_factor = 1.0;
		for (i = 0; i < 1000; i++) {
			int64_t d = keel_backoff_delay(&b, INT_MAX, INT64_MAX,
						       &rng);

			CHECK(d >= 0);
			if (jit[j] == KEEL_JITTER_DECORRELATED)
				CHECK(d >= INT64_MAX / 4);
		}
	}
}

/* ========================================================================
 * Jitter bounds
 * ======================================================================== */

struct stats {
	int64_t min, max;
	double mean;
};

static struct stats sample(const struct keel_backoff *b, int attempt,
			   uint64_t seed)
{
	struct stats s = { INT64_MAX, INT64_MIN, 0 };
	uint64_t rng = seed;
	int i;

	for (i = 0; i < SAMPLES; i++) {
		int64_t d = keel_backoff_delay(b, attempt, 0, &rng);

		if (d < s.min)
			s.min = d;
		if (d > s.max)
			s.max = d;
		s.mean += (double)d / SAMPLES;
	}
	return s;
}

/* d = 400 ms for all the jitter cases (retry 3 of 100 ms doubling). */
#define D (400 * MS)

TEST(full_jitter_bounds)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS, 0);
	struct stats s;

	b.jitter = KEEL_JITTER_FULL;
	s = sample(&b, 3, 7);
	CHECK_INT(s.min, >=, 0);
	CHECK_INT(s.max, <=, D);
	/* 100k uniform draws: the extremes come within 0.1% of the ends and
	 * the mean within 1% of the middle (sigma of the mean ~ 0.1%). */
	CHECK_INT(s.min, <, D / 1000);
	CHECK_INT(s.max, >, D - D / 1000);
	CHECK(dabs(s.mean - D / 2.0) < D * 0.01);
}

TEST(equal_jitter_bounds)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS, 0);
	struct stats s;

	b.jitter = KEEL_JITTER_EQUAL;
	s = sample(&b, 3, 8);
	CHECK_INT(s.min, >=, D / 2);
	CHECK_INT(s.max, <=, D);
	CHECK_INT(s.min, <, D / 2 + D / 1000);
	CHECK_INT(s.max, >, D - D / 1000);
	CHECK(dabs(s.mean - D * 0.75) < D * 0.01);

	/* An odd delay: the lower end rounds up, never below d/2. */
	b = plain(KEEL_BACKOFF_CONSTANT, 3, 0);
	b.jitter = KEEL_JITTER_EQUAL;
	s = sample(&b, 1, 9);
	CHECK_INT(s.min, ==, 2);
	CHECK_INT(s.max, ==, 3);
}

TEST(plus_minus_jitter_bounds)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS, 0);
	struct stats s;

	b.jitter = KEEL_JITTER_PLUS_MINUS;
	b.jitter_factor = 0.25;
	s = sample(&b, 3, 10);
	CHECK_INT(s.min, >=, D - D / 4);
	CHECK_INT(s.max, <=, D + D / 4);
	CHECK_INT(s.min, <, D - D / 4 + D / 1000);
	CHECK_INT(s.max, >, D + D / 4 - D / 1000);
	CHECK(dabs(s.mean - D) < D * 0.01);

	/* The cap is a hard limit, after jitter too. */
	b.max = D;
	s = sample(&b, 3, 11);
	CHECK_INT(s.max, ==, D);
	CHECK_INT(s.min, >=, D - D / 4);

	/* Factor 0: no spread, no random draw. */
	b.jitter_factor = 0;
	s = sample(&b, 3, 12);
	CHECK_INT(s.min, ==, D);
	CHECK_INT(s.max, ==, D);
}

TEST(decorrelated_stays_within_initial_and_cap)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 100 * MS,
				      5 * KEEL_SEC);
	uint64_t rng = 13;
	int64_t prev = 0, top = 0;
	int i, at_cap = 0;

	b.jitter = KEEL_JITTER_DECORRELATED;
	for (i = 0; i < SAMPLES; i++) {
		/* Restart the chain now and then, as a new call would. */
		int64_t d = keel_backoff_delay(&b, i % 20 + 1,
					       i % 20 == 0 ? 0 : prev, &rng);

		if (d < 100 * MS || d > 5 * KEEL_SEC)
			KEEL_TEST_FAIL("draw %d: %lld outside [initial, cap]",
				       i, (long long)d);
		if (i % 20 != 0 && d > prev * 3)
			KEEL_TEST_FAIL("draw %d: %lld above 3 * prev %lld", i,
				       (long long)d, (long long)prev);
		at_cap += d == 5 * KEEL_SEC;
		if (d > top)
			top = d;
		prev = d;
	}
	CHECK_INT(top, ==, 5 * KEEL_SEC); /* the chain does grow to the cap */
	CHECK_INT(at_cap, >, 0);

	/* First retry: prev 0 gives exactly initial (the range collapses). */
	CHECK_INT(keel_backoff_delay(&b, 1, 0, &rng), ==, 100 * MS);
}

/* ========================================================================
 * Random numbers and reproducibility
 * ======================================================================== */

TEST(rand_is_splitmix64)
{
	uint64_t s = 0;

	/* The reference SplitMix64 outputs for seed 0, so seeded delays are
	 * the same on every platform and every keel version. */
	CHECK(keel_backoff_rand(&s) == 0xe220a8397b1dcdafULL);
	CHECK(keel_backoff_rand(&s) == 0x6e789e6aa1b965f4ULL);
	CHECK(keel_backoff_rand(&s) == 0x06c45d188009454fULL);
}

TEST(seeded_delays_are_reproducible)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_EXPONENTIAL, 10 * MS,
				      KEEL_SEC);
	int64_t first[64];
	uint64_t rng;
	int i, same = 0;

	b.jitter = KEEL_JITTER_FULL;
	rng = 1234;
	for (i = 0; i < 64; i++)
		first[i] = keel_backoff_delay(&b, i % 8 + 1, 0, &rng);
	rng = 1234;
	for (i = 0; i < 64; i++)
		CHECK_INT(keel_backoff_delay(&b, i % 8 + 1, 0, &rng), ==,
			  first[i]);
	rng = 1235;
	for (i = 0; i < 64; i++)
		same += keel_backoff_delay(&b, i % 8 + 1, 0, &rng) == first[i];
	CHECK_INT(same, <, 4);
}

TEST(thread_state_when_rng_is_null)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_CONSTANT, 100 * MS, 0);
	int64_t d, first = -1;
	int i, differ = 0;

	b.jitter = KEEL_JITTER_FULL;
	for (i = 0; i < 1000; i++) {
		d = keel_backoff_delay(&b, 1, 0, NULL);
		CHECK(d >= 0 && d <= 100 * MS);
		if (first < 0)
			first = d;
		differ += d != first;
	}
	CHECK_INT(differ, >, 990);
	/* Two draws from the thread's state differ. */
	CHECK(keel_backoff_rand(NULL) != keel_backoff_rand(NULL));
}

/* Buckets of full jitter over [0, d]: each tenth gets its share. */
TEST(full_jitter_is_uniform)
{
	struct keel_backoff b = plain(KEEL_BACKOFF_CONSTANT, 1000, 0);
	int buckets[10] = { 0 };
	uint64_t rng = 99;
	int i;

	b.jitter = KEEL_JITTER_FULL;
	for (i = 0; i < SAMPLES; i++) {
		int64_t d = keel_backoff_delay(&b, 1, 0, &rng);

		buckets[d >= 1000 ? 9 : d / 100]++;
	}
	for (i = 0; i < 10; i++)
		CHECK_INT(abs(buckets[i] - SAMPLES / 10), <, SAMPLES / 100);
}
