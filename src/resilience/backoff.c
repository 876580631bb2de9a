/*
 * src/resilience/backoff.c - backoff delays and the small random generator
 * their jitter draws from.
 *
 * Integer formulas use checked arithmetic and the exponential one runs in
 * double, so that no attempt number or configuration can overflow into a
 * negative or wrapped delay: everything saturates at the cap.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <time.h>

#include <keel/backoff.h>
#include <keel/clock.h>

/* ------------------------------------------------------------------------
 * Random numbers
 * ------------------------------------------------------------------------ */

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static _Thread_local uint64_t tls_state;
static _Thread_local int tls_seeded;
static uint64_t seed_counter; /* atomic: two threads seeded in the same ns differ */

/* Seeds from the time, this thread's TLS address and a process counter:
 * enough to decorrelate the retries of threads and processes, which is all
 * jitter needs. */
static uint64_t *thread_state(void)
{
	if (KEEL_UNLIKELY(!tls_seeded)) {
		struct timespec ts;
		uint64_t n = __atomic_add_fetch(&seed_counter, 1, __ATOMIC_RELAXED);

		clock_gettime(CLOCK_MONOTONIC, &ts);
		tls_state = mix64((uint64_t)ts.tv_sec * 1000000000ULL +
				  (uint64_t)ts.tv_nsec) ^
			    mix64((uint64_t)(uintptr_t)&tls_state) ^
			    mix64(n * GOLDEN_GAMMA);
		tls_seeded = 1;
	}
	return &tls_state;
}

uint64_t keel_backoff_rand(uint64_t *state)
{
	if (state == NULL)
		state = thread_state();
	*state += GOLDEN_GAMMA;
	return mix64(*state);
}

/* Uniform in [lo, hi] (lo <= hi, both >= 0). Lemire's multiply-shift: no
 * division and a bias below 2^-64 per value. */
static int64_t uniform(uint64_t *rng, int64_t lo, int64_t hi)
{
	uint64_t span = (uint64_t)hi - (uint64_t)lo + 1; /* <= 2^63: no wrap */
	unsigned __int128 m = (unsigned __int128)keel_backoff_rand(rng) * span;

	return lo + (int64_t)(uint64_t)(m >> 64);
}

/* ------------------------------------------------------------------------
 * Saturating arithmetic
 * ------------------------------------------------------------------------ */

/* The largest delay allowed: the cap, or INT64_MAX without one. */
static int64_t cap_of(const struct keel_backoff *b)
{
	return b->max > 0 ? b->max : INT64_MAX;
}

/* A double to ns in [0, cap]. NaN and negatives give 0; anything at or
 * beyond 2^63 (where the cast would be undefined) gives the cap. */
static int64_t clamp_ns(double d, int64_t cap)
{
	if (!(d > 0))
		return 0;
	if (d >= 9223372036854775808.0 || d >= (double)cap)
		return cap;
	return (int64_t)d;
}

static int64_t sat_add(int64_t a, int64_t b)
{
	int64_t r;

	return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* x^n by squaring: O(log n) multiplications, no libm. Overflow gives +inf,
 * which clamp_ns turns into the cap. */
static double pow_u(double x, unsigned n)
{
	double r = 1;

	while (n != 0) {
		if (n & 1)
			r *= x;
		n >>= 1;
		if (n != 0)
			x *= x;
	}
	return r;
}

/* ------------------------------------------------------------------------
 * Delays
 * ------------------------------------------------------------------------ */

void keel_backoff_init(struct keel_backoff *b)
{
	b->kind = KEEL_BACKOFF_EXPONENTIAL;
	b->initial = 100 * KEEL_MSEC;
	b->multiplier = 2.0;
	b->step = 0;
	b->max = 10 * KEEL_SEC;
	b->jitter = KEEL_JITTER_FULL;
	b->jitter_factor = 0.2;
}

int keel_backoff_check(const struct keel_backoff *b)
{
	if (b == NULL)
		return -EINVAL;
	if ((unsigned)b->kind > KEEL_BACKOFF_EXPONENTIAL ||
	    (unsigned)b->jitter > KEEL_JITTER_PLUS_MINUS)
		return -EINVAL;
	if (b->initial < 0 || b->step < 0 || b->max < 0)
		return -EINVAL;
	if (b->max > 0 && b->initial > b->max)
		return -EINVAL;
	/* !(x >= 1) also refuses NaN. */
	if (b->kind == KEEL_BACKOFF_EXPONENTIAL && !(b->multiplier >= 1.0))
		return -EINVAL;
	if (b->jitter == KEEL_JITTER_PLUS_MINUS &&
	    !(b->jitter_factor >= 0.0 && b->jitter_factor <= 1.0))
		return -EINVAL;
	return 0;
}

/* The capped delay before jitter. */
static int64_t base_delay(const struct keel_backoff *b, int attempt,
			  int64_t cap)
{
	unsigned n = attempt > 1 ? (unsigned)attempt - 1 : 0;
	int64_t initial = b->initial > 0 ? b->initial : 0;
	int64_t step, d;

	switch (b->kind) {
	case KEEL_BACKOFF_LINEAR:
		step = b->step > 0 ? b->step : initial;
		if (__builtin_mul_overflow(step, (int64_t)n, &d))
			return cap;
		return min64(sat_add(initial, d), cap);
	case KEEL_BACKOFF_EXPONENTIAL:
		if (initial == 0)
			return 0; /* 0 * inf would be NaN */
		return clamp_ns((double)initial * pow_u(b->multiplier, n), cap);
	case KEEL_BACKOFF_CONSTANT:
	default:
		return min64(initial, cap);
	}
}

int64_t keel_backoff_delay(const struct keel_backoff *b, int attempt,
			   int64_t prev_delay, uint64_t *rng)
{
	int64_t cap = cap_of(b), d, half, spread, lo, hi;
	double f;

	if (b->jitter == KEEL_JITTER_DECORRELATED) {
		lo = min64(b->initial > 0 ? b->initial : 0, cap);
		hi = prev_delay > INT64_MAX / 3 ? INT64_MAX : prev_delay * 3;
		if (hi < lo)
			hi = lo;
		return min64(uniform(rng, lo, hi), cap);
	}
	d = base_delay(b, attempt, cap);
	switch (b->jitter) {
	case KEEL_JITTER_NONE:
		return d;
	case KEEL_JITTER_FULL:
		return uniform(rng, 0, d);
	case KEEL_JITTER_EQUAL:
		half = d / 2;
		return d - half + uniform(rng, 0, half);
	case KEEL_JITTER_PLUS_MINUS:
		f = b->jitter_factor;
		if (!(f > 0))
			return d;
		spread = clamp_ns((double)d * (f < 1 ? f : 1), INT64_MAX);
		if (spread > d) /* (double)d may round up */
			spread = d;
		lo = d - spread;
		hi = sat_add(d, spread);
		return min64(uniform(rng, lo, hi), cap);
	default:
		return d;
	}
}
