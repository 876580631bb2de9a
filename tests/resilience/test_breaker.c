/* KEEL_TEST_LABELS: threads */
/*
 * tests/resilience/test_breaker.c - the circuit breaker: every trip
 * condition, the open duration, half-open probes (stuck rounds included),
 * operator controls, events, the view, classifiers, panics and faults as
 * failures, and many threads sharing one breaker. Time is a virtual clock,
 * so nothing sleeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include <keel.h>
#include <keel/breaker.h>
#include <keel/fallback.h>
#include <keel/pipeline.h>
#include "keel_test.h"

static struct keel_vclock vc;

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Recovers a panic and logs "caught:<message>". */
static void d_catch_msg_ev(void *arg)
{
	const struct keel_panic *pn = keel_recover();

	(void)arg;
	if (pn != NULL)
		keel_test_ev_addf("caught:%s", keel_panic_message(pn));
}

/* State changes as "from>to" in keel_test_ev; the other events counted. */
static unsigned ev_rejected, ev_success, ev_failure, ev_panic;

static void listener(const struct keel_event *ev, void *ud)
{
	(void)ud;
	switch (ev->type) {
	case KEEL_EV_STATE:
		keel_test_ev_addf("%s>%s", keel_breaker_state_name(ev->from),
				  keel_breaker_state_name(ev->to));
		break;
	case KEEL_EV_REJECTED: /* from any thread */
		CHECK_INT(ev->code, ==, KEEL_EBREAKER_OPEN);
		__atomic_fetch_add(&ev_rejected, 1, __ATOMIC_RELAXED);
		break;
	case KEEL_EV_SUCCESS:
		__atomic_fetch_add(&ev_success, 1, __ATOMIC_RELAXED);
		break;
	case KEEL_EV_FAILURE:
		__atomic_fetch_add(&ev_failure, 1, __ATOMIC_RELAXED);
		break;
	case KEEL_EV_PANIC:
		__atomic_fetch_add(&ev_panic, 1, __ATOMIC_RELAXED);
		break;
	default:
		break;
	}
}

/* Defaults, on the virtual clock, with every trip condition off: each test
 * turns on what it tests. */
static void base_cfg(struct keel_breaker_config *cfg)
{
	keel_vclock_init(&vc, 0);
	keel_breaker_config_init(cfg);
	cfg->name = "db";
	cfg->clock = &vc.clock;
	cfg->on_event = listener;
	cfg->failure_rate_threshold = 0;
	cfg->open_duration = 10 * KEEL_SEC;
}

static struct keel_policy *make(const struct keel_breaker_config *cfg)
{
	struct keel_policy *p = NULL;

	CHECK_INT(keel_breaker_new(cfg, &p), ==, 0);
	CHECK(p != NULL);
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_BREAKER);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	return p;
}

static unsigned ran; /* protected calls that actually ran */

/* Returns the code in arg. */
static int op_code(struct keel_exec *x, void *arg)
{
	(void)x;
	ran++;
	return (int)(intptr_t)arg;
}

/* Takes arg ns of virtual time, then succeeds. */
static int op_slow(struct keel_exec *x, void *arg)
{
	(void)x;
	ran++;
	keel_vclock_advance(&vc, (int64_t)(intptr_t)arg);
	return 0;
}

static int run(struct keel_policy *p, int code)
{
	struct keel_outcome o;

	return keel_policy_execute(p, op_code, (void *)(intptr_t)code, NULL,
				   &o);
}

static int run_slow(struct keel_policy *p, int64_t ns)
{
	struct keel_outcome o;

	return keel_policy_execute(p, op_slow, (void *)(intptr_t)ns, NULL, &o);
}

static void runs(struct keel_policy *p, int code, int n)
{
	while (n-- > 0)
		CHECK_INT(run(p, code), ==, code);
}

static void rejects(struct keel_policy *p, int n)
{
	while (n-- > 0)
		CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
}

static struct keel_breaker_view view(struct keel_policy *p)
{
	struct keel_breaker_view v;

	keel_breaker_view(p, &v);
	return v;
}

static struct keel_policy_stats stats(struct keel_policy *p)
{
	struct keel_policy_stats st;

	keel_policy_stats(p, &st);
	return st;
}

/* Trips a breaker configured with consecutive_failures == 1. */
static void trip1(struct keel_policy *p)
{
	CHECK_INT(run(p, -5), ==, -5);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

TEST(config_defaults)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	memset(&cfg, 0xa5, sizeof(cfg));
	keel_breaker_config_init(&cfg);
	CHECK(cfg.name == NULL);
	CHECK(cfg.clock == NULL);
	CHECK(cfg.on_event == NULL);
	CHECK(cfg.classify == NULL);
	CHECK_INT(cfg.consecutive_failures, ==, 0);
	CHECK_INT(cfg.failure_rate_threshold, ==, 50);
	CHECK_INT(cfg.slow_rate_threshold, ==, 0);
	CHECK_INT(cfg.slow_call_duration, ==, 10 * KEEL_SEC);
	CHECK_INT(cfg.window, ==, KEEL_BREAKER_WINDOW_COUNT);
	CHECK_INT(cfg.window_size, ==, 100);
	CHECK_INT(cfg.min_calls, ==, 10);
	CHECK_INT(cfg.open_duration, ==, 10 * KEEL_SEC);
	CHECK(cfg.open_multiplier == 1.0);
	CHECK_INT(cfg.open_max_duration, ==, 300 * KEEL_SEC);
	CHECK_INT(cfg.half_open_calls, ==, 3);

	/* The defaults build, on the system clock, named "breaker", and
	 * trip at 50% of at least 10 calls. */
	CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
	CHECK_STR(keel_policy_name(p), "breaker");
	runs(p, 0, 5);
	runs(p, -1, 4);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	runs(p, -1, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	keel_policy_free(p);
}

TEST(name_is_copied)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	char name[16];

	base_cfg(&cfg);
	snprintf(name, sizeof(name), "payments");
	cfg.name = name;
	p = make(&cfg);
	memset(name, 'x', sizeof(name) - 1);
	CHECK_STR(keel_policy_name(p), "payments");
	keel_policy_free(p);
	keel_policy_free(NULL);
}

static void check_einval(const struct keel_breaker_config *cfg)
{
	struct keel_policy *p = (struct keel_policy *)&p; /* not NULL */

	CHECK_INT(keel_breaker_new(cfg, &p), ==, -EINVAL);
	CHECK(p == NULL);
}

TEST(bad_config_is_einval_and_allocates_nothing)
{
	struct keel_breaker_config cfg, good;

	base_cfg(&good);
	check_einval(NULL);
	CHECK_INT(keel_breaker_new(&good, NULL), ==, -EINVAL);

	cfg = good, cfg.failure_rate_threshold = 101;
	check_einval(&cfg);
	cfg = good, cfg.slow_rate_threshold = 101;
	check_einval(&cfg);
	cfg = good, cfg.failure_rate_threshold = 50, cfg.window_size = 0;
	check_einval(&cfg);
	cfg = good, cfg.slow_rate_threshold = 50, cfg.window_size = 0;
	check_einval(&cfg);
	cfg = good, cfg.window = (enum keel_breaker_window)7;
	check_einval(&cfg);
	cfg = good, cfg.window_size = KEEL_BREAKER_MAX_COUNT_WINDOW + 1;
	check_einval(&cfg);
	cfg = good, cfg.window = KEEL_BREAKER_WINDOW_TIME;
	cfg.window_size = KEEL_BREAKER_MAX_TIME_WINDOW + 1;
	check_einval(&cfg);
	cfg = good, cfg.window_size = 10, cfg.min_calls = 11;
	check_einval(&cfg);
	cfg = good, cfg.slow_rate_threshold = 50, cfg.slow_call_duration = 0;
	check_einval(&cfg);
	cfg = good, cfg.open_duration = 0;
	check_einval(&cfg);
	cfg = good, cfg.open_duration = -KEEL_SEC;
	check_einval(&cfg);
	cfg = good, cfg.open_multiplier = 0.5;
	check_einval(&cfg);
	cfg = good, cfg.open_multiplier = NAN;
	check_einval(&cfg);
	cfg = good, cfg.half_open_calls = 0;
	check_einval(&cfg);
	cfg = good, cfg.half_open_calls = KEEL_BREAKER_MAX_HALF_OPEN + 1;
	check_einval(&cfg);
	keel_test_leak_check();

	/* The edges that are fine: a time window's min_calls above its size,
	 * no window when no rate is on, the largest sizes. */
	{
		struct keel_policy *p;

		cfg = good, cfg.window = KEEL_BREAKER_WINDOW_TIME;
		cfg.window_size = 5, cfg.min_calls = 1000;
		CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
		keel_policy_free(p);
		cfg = good, cfg.window_size = 0, cfg.consecutive_failures = 3;
		CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
		keel_policy_free(p);
		cfg = good, cfg.window_size = KEEL_BREAKER_MAX_COUNT_WINDOW;
		cfg.failure_rate_threshold = 100;
		cfg.half_open_calls = KEEL_BREAKER_MAX_HALF_OPEN;
		CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
		keel_policy_free(p);
	}
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Trip conditions
 * ------------------------------------------------------------------------ */

TEST(trips_on_consecutive_failures)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;
	struct keel_policy_stats st;

	base_cfg(&cfg);
	cfg.consecutive_failures = 3;
	p = make(&cfg);

	runs(p, -5, 2);
	runs(p, 0, 1); /* a success ends the run */
	CHECK_INT(view(p).consecutive_failures, ==, 0);
	runs(p, -5, 2);
	CHECK_INT(view(p).consecutive_failures, ==, 2);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	runs(p, -5, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_STR(keel_test_ev, "closed>open");

	/* Open: the call does not run. */
	ran = 0;
	CHECK_INT(keel_policy_execute(p, op_code, NULL, NULL, &o), ==,
		  KEEL_EBREAKER_OPEN);
	CHECK_INT(ran, ==, 0);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_BREAKER);
	CHECK_INT(o.attempts, ==, 0);
	CHECK_INT(o.panicked, ==, 0);

	st = stats(p);
	CHECK_INT(st.calls, ==, 7);
	CHECK_INT(st.successes, ==, 1);
	CHECK_INT(st.failures, ==, 5);
	CHECK_INT(st.rejections, ==, 1);
	CHECK_INT(st.transitions, ==, 1);
	CHECK_INT(ev_rejected, ==, 1);
	CHECK_INT(ev_failure, ==, 5);
	CHECK_INT(ev_success, ==, 1);
	keel_policy_free(p);
}

TEST(failure_rate_count_window_waits_for_min_calls)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.failure_rate_threshold = 50;
	cfg.window_size = 10;
	cfg.min_calls = 6;
	p = make(&cfg);

	/* 100% failures, but only 5 calls: not evaluated yet. */
	runs(p, -5, 5);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK(view(p).failure_rate == -1);
	runs(p, -5, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	keel_policy_free(p);
}

TEST(failure_rate_count_window_slides)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.failure_rate_threshold = 60;
	cfg.window_size = 4;
	cfg.min_calls = 4;
	p = make(&cfg);

	/* F F S S S S: the failures have left the window again. */
	runs(p, -5, 2);
	runs(p, 0, 4);
	CHECK_INT(view(p).calls, ==, 4);
	CHECK_INT(view(p).failures, ==, 0);
	/* S S F F: 50% < 60%. */
	runs(p, -5, 2);
	CHECK_INT(view(p).failures, ==, 2);
	CHECK(view(p).failure_rate == 50.0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	/* S F F F: 75%. */
	runs(p, -5, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(view(p).trips, ==, 1);
	keel_policy_free(p);
}

TEST(threshold_is_reached_at_equality)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.failure_rate_threshold = 50;
	cfg.window_size = 4;
	cfg.min_calls = 4;
	p = make(&cfg);
	runs(p, 0, 2);
	runs(p, -5, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	runs(p, -5, 1); /* exactly 50% */
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	keel_policy_free(p);
}

TEST(time_window_buckets_expire)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.failure_rate_threshold = 50;
	cfg.window = KEEL_BREAKER_WINDOW_TIME;
	cfg.window_size = 10; /* seconds */
	cfg.min_calls = 4;
	p = make(&cfg);

	/* Second 0: three failures, under min_calls. */
	keel_vclock_advance(&vc, 500 * KEEL_MSEC);
	runs(p, -5, 3);
	CHECK_INT(view(p).calls, ==, 3);
	/* They stay through second 9 ... */
	keel_vclock_advance(&vc, 9 * KEEL_SEC + 499 * KEEL_MSEC); /* 9.999 s */
	CHECK_INT(view(p).calls, ==, 3);
	CHECK_INT(view(p).failures, ==, 3);
	/* ... and are gone at second 10, by the view alone. */
	keel_vclock_advance(&vc, KEEL_MSEC);
	CHECK_INT(view(p).calls, ==, 0);
	CHECK_INT(view(p).failures, ==, 0);

	/* Second 10: S S F; second 12: S F (2 of 5 = 40%). */
	runs(p, 0, 2);
	runs(p, -5, 1);
	keel_vclock_advance(&vc, 2 * KEEL_SEC);
	runs(p, 0, 1);
	runs(p, -5, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK(view(p).failure_rate == 40.0);
	/* Second 20: the calls of second 10 left, second 12's stayed. */
	keel_vclock_advance(&vc, 8 * KEEL_SEC);
	CHECK_INT(view(p).calls, ==, 2);
	CHECK_INT(view(p).failures, ==, 1);
	/* A jump of more than the whole window empties it. */
	keel_vclock_advance(&vc, 1000 * KEEL_SEC);
	CHECK_INT(view(p).calls, ==, 0);

	runs(p, 0, 2);
	runs(p, -5, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	runs(p, -5, 1); /* 2 of 4 in this window */
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	keel_policy_free(p);
}

TEST(slow_call_rate)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_breaker_view v;

	base_cfg(&cfg);
	cfg.slow_rate_threshold = 50;
	cfg.slow_call_duration = 100 * KEEL_MSEC;
	cfg.window_size = 4;
	cfg.min_calls = 4;
	p = make(&cfg);

	CHECK_INT(run_slow(p, 10 * KEEL_MSEC), ==, 0);
	CHECK_INT(run_slow(p, 99 * KEEL_MSEC), ==, 0);
	CHECK_INT(run_slow(p, 0), ==, 0);
	CHECK_INT(run_slow(p, 100 * KEEL_MSEC), ==, 0); /* slow: >= 100 ms */
	v = view(p);
	CHECK_INT(v.calls, ==, 4);
	CHECK_INT(v.slow_calls, ==, 1);
	CHECK(v.slow_rate == 25.0);
	CHECK(v.failure_rate == 0.0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(run_slow(p, 5 * KEEL_SEC), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	/* Slow calls are successes to the statistics. */
	CHECK_INT(stats(p).successes, ==, 5);
	CHECK_INT(stats(p).failures, ==, 0);
	keel_policy_free(p);
}

TEST(slow_calls_not_tracked_when_rate_off)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.failure_rate_threshold = 50;
	cfg.slow_call_duration = KEEL_MSEC;
	cfg.window_size = 4;
	cfg.min_calls = 1;
	p = make(&cfg);
	CHECK_INT(run_slow(p, KEEL_SEC), ==, 0);
	CHECK_INT(view(p).slow_calls, ==, 0);
	CHECK(view(p).slow_rate == -1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Open duration
 * ------------------------------------------------------------------------ */

TEST(open_duration_fixed)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	int i;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.half_open_calls = 1;
	p = make(&cfg);

	for (i = 0; i < 3; i++) {
		trip1(p);
		CHECK_INT(view(p).open_duration, ==, 10 * KEEL_SEC);
		CHECK_INT(view(p).until_half_open, ==, 10 * KEEL_SEC);
		keel_vclock_advance(&vc, 10 * KEEL_SEC - 1);
		CHECK_INT(view(p).until_half_open, ==, 1);
		CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
		keel_vclock_advance(&vc, 1);
		/* Lazy: still OPEN until a call comes. */
		CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
		CHECK_INT(view(p).until_half_open, ==, 0);
		/* Alternate: reopen from a failing probe, then a fresh trip. */
		if (i == 1) {
			CHECK_INT(run(p, -5), ==, -5);
			CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
			CHECK_INT(view(p).open_duration, ==, 10 * KEEL_SEC);
			keel_vclock_advance(&vc, 10 * KEEL_SEC);
		}
		CHECK_INT(run(p, 0), ==, 0);
		CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	}
	CHECK_INT(view(p).trips, ==, 4);
	keel_policy_free(p);
}

TEST(open_duration_grows_to_max)
{
	static const int64_t want[] = { 1, 2, 4, 5, 5 };
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	size_t i;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.half_open_calls = 1;
	cfg.open_duration = KEEL_SEC;
	cfg.open_multiplier = 2.0;
	cfg.open_max_duration = 5 * KEEL_SEC;
	p = make(&cfg);

	trip1(p);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		int64_t d = want[i] * KEEL_SEC;

		CHECK_INT(view(p).open_duration, ==, d);
		keel_vclock_advance(&vc, d - 1);
		CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
		keel_vclock_advance(&vc, 1);
		CHECK_INT(run(p, -5), ==, -5); /* the probe fails */
		CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	}
	/* A successful probe closes it; the next trip starts over at 1 s. */
	keel_vclock_advance(&vc, 5 * KEEL_SEC);
	CHECK_INT(run(p, 0), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(view(p).open_duration, ==, 5 * KEEL_SEC); /* the last one */
	trip1(p);
	CHECK_INT(view(p).open_duration, ==, KEEL_SEC);
	CHECK_INT(view(p).trips, ==, 7);
	keel_policy_free(p);
}

TEST(open_max_below_duration_means_no_growth)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.half_open_calls = 1;
	cfg.open_duration = KEEL_SEC;
	cfg.open_multiplier = 3.0;
	cfg.open_max_duration = 0;
	p = make(&cfg);
	trip1(p);
	keel_vclock_advance(&vc, KEEL_SEC);
	CHECK_INT(run(p, -5), ==, -5);
	CHECK_INT(view(p).open_duration, ==, KEEL_SEC);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Half-open
 * ------------------------------------------------------------------------ */

static struct keel_policy *open_breaker(unsigned probes)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.half_open_calls = probes;
	p = make(&cfg);
	trip1(p);
	keel_vclock_advance(&vc, 10 * KEEL_SEC);
	return p;
}

TEST(half_open_admits_n_probes_and_closes)
{
	struct keel_policy *p = open_breaker(3);
	struct keel_breaker_permit pm[4];
	struct keel_breaker_view v;

	CHECK_INT(keel_breaker_allow(p, &pm[0]), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_HALF_OPEN);
	CHECK_INT(keel_breaker_allow(p, &pm[1]), ==, 0);
	CHECK_INT(keel_breaker_allow(p, &pm[2]), ==, 0);
	/* Probes in flight: everyone else is turned away. */
	CHECK_INT(keel_breaker_allow(p, &pm[3]), ==, KEEL_EBREAKER_OPEN);
	CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
	v = view(p);
	CHECK_INT(v.half_open_permits, ==, 3);
	CHECK_INT(v.half_open_done, ==, 0);

	keel_breaker_record(p, &pm[3], -5, 0); /* a rejected permit: no-op */
	keel_breaker_record(p, &pm[0], 0, 0);
	keel_breaker_record(p, &pm[1], 0, 0);
	v = view(p);
	CHECK_INT(v.state, ==, KEEL_BREAKER_HALF_OPEN);
	CHECK_INT(v.half_open_permits, ==, 1);
	CHECK_INT(v.half_open_done, ==, 2);
	keel_breaker_record(p, &pm[2], 0, 0);
	v = view(p);
	CHECK_INT(v.state, ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(v.calls, ==, 0); /* the window was emptied */
	CHECK_INT(v.consecutive_failures, ==, 0);
	CHECK_INT(v.half_open_permits, ==, 0);
	CHECK_STR(keel_test_ev, "closed>open,open>half-open,half-open>closed");
	/* Calls: the trip, 4 allows, 1 run; 3 successes, 1 failure. */
	CHECK_INT(stats(p).calls, ==, 6);
	CHECK_INT(stats(p).successes, ==, 3);
	CHECK_INT(stats(p).failures, ==, 1);
	CHECK_INT(stats(p).rejections, ==, 2);
	keel_policy_free(p);
}

TEST(half_open_failing_probe_reopens_at_once)
{
	struct keel_policy *p = open_breaker(3);
	struct keel_breaker_permit pm[3];
	int i;

	for (i = 0; i < 3; i++)
		CHECK_INT(keel_breaker_allow(p, &pm[i]), ==, 0);
	keel_breaker_record(p, &pm[0], 0, 0);
	keel_breaker_record(p, &pm[1], -5, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	/* The last probe finishes into the new open period: ignored. */
	keel_breaker_record(p, &pm[2], 0, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_STR(keel_test_ev, "closed>open,open>half-open,half-open>open");
	CHECK_INT(view(p).trips, ==, 2);
	CHECK_INT(view(p).until_half_open, ==, 10 * KEEL_SEC);
	keel_policy_free(p);
}

TEST(half_open_slow_probes_reopen)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.slow_rate_threshold = 50;
	cfg.slow_call_duration = KEEL_SEC;
	cfg.window_size = 10;
	cfg.min_calls = 10;
	cfg.half_open_calls = 4;
	p = make(&cfg);
	trip1(p);
	keel_vclock_advance(&vc, 10 * KEEL_SEC);
	/* One slow probe of four: 25%, fine. */
	CHECK_INT(run_slow(p, 2 * KEEL_SEC), ==, 0);
	CHECK_INT(run_slow(p, 0), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_HALF_OPEN);
	/* The second makes 50% of the round whatever the rest do. */
	CHECK_INT(run_slow(p, 2 * KEEL_SEC), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	keel_vclock_advance(&vc, 10 * KEEL_SEC);
	CHECK_INT(run_slow(p, 2 * KEEL_SEC), ==, 0);
	runs(p, 0, 3);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	keel_policy_free(p);
}

TEST(stuck_half_open_gets_new_probes)
{
	struct keel_policy *p = open_breaker(2);
	struct keel_breaker_permit lost[2], pm[2];

	/* Two probes admitted, never recorded (a hung call, a forgotten
	 * record). */
	CHECK_INT(keel_breaker_allow(p, &lost[0]), ==, 0);
	CHECK_INT(keel_breaker_allow(p, &lost[1]), ==, 0);
	CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
	keel_vclock_advance(&vc, 10 * KEEL_SEC - 1);
	CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
	CHECK_INT(view(p).abandoned_rounds, ==, 0);
	/* One open duration later, a new round. */
	keel_vclock_advance(&vc, 1);
	CHECK_INT(keel_breaker_allow(p, &pm[0]), ==, 0);
	CHECK_INT(view(p).abandoned_rounds, ==, 1);
	CHECK_INT(view(p).half_open_permits, ==, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_HALF_OPEN);
	/* The lost probes turn up, failing: their round is gone, no effect. */
	keel_breaker_record(p, &lost[0], -5, 0);
	keel_breaker_record(p, &lost[1], -5, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_HALF_OPEN);
	CHECK_INT(view(p).half_open_done, ==, 0);
	CHECK_INT(stats(p).failures, ==, 3); /* still counted */
	/* The new round decides. */
	CHECK_INT(keel_breaker_allow(p, &pm[1]), ==, 0);
	keel_breaker_record(p, &pm[0], 0, 0);
	keel_breaker_record(p, &pm[1], 0, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	/* No state event for the new round: it was not a state change. */
	CHECK_STR(keel_test_ev, "closed>open,open>half-open,half-open>closed");
	keel_policy_free(p);
}

TEST(stuck_rule_waits_only_when_all_permits_taken)
{
	struct keel_policy *p = open_breaker(3);
	struct keel_breaker_permit pm[3];

	/* One probe hangs, one is still available for an hour. */
	CHECK_INT(keel_breaker_allow(p, &pm[0]), ==, 0);
	keel_vclock_advance(&vc, 3600 * KEEL_SEC);
	CHECK_INT(keel_breaker_allow(p, &pm[1]), ==, 0);
	CHECK_INT(keel_breaker_allow(p, &pm[2]), ==, 0);
	CHECK_INT(view(p).abandoned_rounds, ==, 0);
	keel_breaker_record(p, &pm[1], 0, 0);
	keel_breaker_record(p, &pm[2], 0, 0);
	keel_breaker_record(p, &pm[0], 0, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	keel_policy_free(p);
}

/* Many threads race for the probes of one round. */
struct probe_race {
	struct keel_policy *p;
	pthread_barrier_t *go;
	unsigned admitted;
};

static void *probe_racer(void *arg)
{
	struct probe_race *r = arg;
	struct keel_breaker_permit pm;
	int i;

	pthread_barrier_wait(r->go);
	for (i = 0; i < 2000; i++)
		if (keel_breaker_allow(r->p, &pm) == 0)
			r->admitted++;
	return NULL;
}

TEST(concurrent_probes_exactly_n_admitted)
{
	enum { THREADS = 8, PROBES = 5 };
	struct probe_race r[THREADS];
	pthread_t th[THREADS];
	pthread_barrier_t go;
	struct keel_policy *p;
	unsigned total = 0;
	int round, i;

	for (round = 0; round < 20; round++) {
		keel_test_ev[0] = '\0';
		p = open_breaker(PROBES);
		pthread_barrier_init(&go, NULL, THREADS);
		for (i = 0; i < THREADS; i++) {
			r[i] = (struct probe_race){ p, &go, 0 };
			CHECK_INT(pthread_create(&th[i], NULL, probe_racer,
						 &r[i]), ==, 0);
		}
		total = 0;
		for (i = 0; i < THREADS; i++) {
			pthread_join(th[i], NULL);
			total += r[i].admitted;
		}
		pthread_barrier_destroy(&go);
		CHECK_INT(total, ==, PROBES);
		/* One thread moved it to half-open, once. */
		CHECK_STR(keel_test_ev, "closed>open,open>half-open");
		CHECK_INT(view(p).half_open_permits, ==, PROBES);
		CHECK_INT(stats(p).rejections, ==, THREADS * 2000 - PROBES);
		keel_policy_free(p);
		keel_vclock_destroy(&vc);
	}
}

/* ------------------------------------------------------------------------
 * Operator controls, events, the view
 * ------------------------------------------------------------------------ */

TEST(force_open_force_closed_reset)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_breaker_view v;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.failure_rate_threshold = 50;
	cfg.window_size = 10;
	cfg.min_calls = 1;
	p = make(&cfg);

	runs(p, 0, 3);
	keel_breaker_force_open(p);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_FORCED_OPEN);
	keel_vclock_advance(&vc, 1000000 * KEEL_SEC);
	ran = 0;
	CHECK_INT(run(p, 0), ==, KEEL_EBREAKER_OPEN);
	CHECK_INT(ran, ==, 0);
	v = view(p);
	CHECK_INT(v.until_half_open, ==, KEEL_NEVER);
	CHECK_INT(v.trips, ==, 0); /* forcing is not a trip */
	keel_breaker_force_open(p); /* again: no event */

	keel_breaker_force_closed(p);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_DISABLED);
	runs(p, -5, 20); /* nothing trips it, nothing is recorded */
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_DISABLED);
	v = view(p);
	CHECK_INT(v.calls, ==, 3);
	CHECK_INT(v.failures, ==, 0);
	CHECK_INT(v.consecutive_failures, ==, 0);
	CHECK_INT(v.until_half_open, ==, 0);

	keel_breaker_reset(p);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(view(p).calls, ==, 0);
	trip1(p);
	keel_breaker_reset(p);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	runs(p, 0, 1);
	CHECK_INT(view(p).calls, ==, 1);
	keel_breaker_reset(p); /* already closed: counts cleared, no event */
	CHECK_INT(view(p).calls, ==, 0);
	CHECK_INT(view(p).trips, ==, 1);
	keel_breaker_force_open(p);
	keel_breaker_reset(p);
	CHECK_STR(keel_test_ev, "closed>forced-open,forced-open>disabled,"
				"disabled>closed,closed>open,open>closed,"
				"closed>forced-open,forced-open>closed");
	CHECK_INT(stats(p).transitions, ==, 7);
	keel_policy_free(p);
}

TEST(force_from_half_open_drops_probes)
{
	struct keel_policy *p = open_breaker(1);
	struct keel_breaker_permit pm;

	CHECK_INT(keel_breaker_allow(p, &pm), ==, 0);
	keel_breaker_force_closed(p);
	keel_breaker_record(p, &pm, -5, 0); /* its round is over */
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_DISABLED);
	keel_policy_free(p);
}

TEST(listener_sees_each_transition_once)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_breaker_permit pm[2];

	base_cfg(&cfg);
	cfg.consecutive_failures = 2;
	cfg.half_open_calls = 2;
	p = make(&cfg);

	runs(p, -5, 2);                        /* closed>open */
	rejects(p, 3);
	keel_vclock_advance(&vc, 10 * KEEL_SEC);
	runs(p, -5, 1);                        /* open>half-open>open */
	keel_vclock_advance(&vc, 10 * KEEL_SEC);
	runs(p, 0, 2);                         /* open>half-open>closed */
	CHECK_INT(keel_breaker_allow(p, &pm[0]), ==, 0);
	CHECK_INT(keel_breaker_allow(p, &pm[1]), ==, 0);
	keel_breaker_record(p, &pm[0], -5, 0);
	keel_breaker_record(p, &pm[1], -5, 0); /* closed>open, by hand */
	keel_breaker_force_open(p);
	keel_breaker_force_closed(p);
	keel_breaker_reset(p);
	CHECK_STR(keel_test_ev, "closed>open,open>half-open,half-open>open,"
				"open>half-open,half-open>closed,closed>open,"
				"open>forced-open,forced-open>disabled,"
				"disabled>closed");
	CHECK_INT(stats(p).transitions, ==, 9);
	CHECK_INT(ev_rejected, ==, 3);
	CHECK_INT(stats(p).rejections, ==, 3);
	keel_policy_free(p);
}

static int64_t ev_at_sum;
static const char *ev_name;

static void at_listener(const struct keel_event *ev, void *ud)
{
	(void)ud;
	if (ev->type != KEEL_EV_STATE)
		return;
	ev_at_sum += ev->at;
	ev_name = ev->name;
	CHECK_INT(ev->kind, ==, KEEL_POLICY_BREAKER);
	if (ev->to == KEEL_BREAKER_OPEN)
		CHECK_INT(ev->code, ==, -7); /* the call that tripped it */
}

TEST(state_events_carry_time_name_and_code)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.on_event = at_listener;
	p = make(&cfg);
	keel_vclock_advance(&vc, 123);
	runs(p, -7, 1);
	CHECK_INT(ev_at_sum, ==, 123);
	CHECK_STR(ev_name, "db");
	keel_policy_free(p);
}

static void panicking_listener(const struct keel_event *ev, void *ud)
{
	(void)ud;
	if (ev->type == KEEL_EV_STATE)
		keel_panic("listener bug");
}

struct exec_args {
	struct keel_policy *p;
	int code;
};

static void exec_body(void *arg)
{
	struct exec_args *a = arg;

	keel_defer(d_catch_msg_ev, NULL);
	run(a->p, a->code);
}

static void force_closed_body(void *arg)
{
	keel_defer(d_catch_msg_ev, NULL);
	keel_breaker_force_closed(arg);
}

/* A listener that panics during a transition: the panic reaches the
 * caller, and the breaker is left consistent and unlocked. */
TEST(panicking_listener_leaves_breaker_usable)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct exec_args a;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.half_open_calls = 1;
	cfg.on_event = panicking_listener;
	p = make(&cfg);
	a.p = p;
	a.code = -5;
	CHECK_INT(keel_call(exec_body, &a), ==, 1);
	CHECK_STR(keel_test_ev, "caught:listener bug");
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(view(p).trips, ==, 1); /* takes mu: not left locked */
	/* A transition by hand: the same again. */
	CHECK_INT(keel_call(force_closed_body, p), ==, 1);
	CHECK_STR(keel_test_ev, "caught:listener bug,caught:listener bug");
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_DISABLED);
	CHECK_INT(stats(p).transitions, ==, 2);
	keel_test_leak_check();
	keel_policy_free(p);
}

TEST(view_numbers)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_breaker_view v;

	base_cfg(&cfg);
	cfg.failure_rate_threshold = 50;
	cfg.slow_rate_threshold = 80;
	cfg.slow_call_duration = KEEL_SEC;
	cfg.window_size = 10;
	cfg.min_calls = 8;
	p = make(&cfg);

	runs(p, 0, 2);
	CHECK_INT(run_slow(p, KEEL_SEC), ==, 0);
	runs(p, -5, 2);
	v = view(p);
	CHECK_INT(v.state, ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(v.calls, ==, 5);
	CHECK_INT(v.failures, ==, 2);
	CHECK_INT(v.slow_calls, ==, 1);
	CHECK(v.failure_rate == -1); /* under min_calls */
	CHECK(v.slow_rate == -1);
	CHECK_INT(v.consecutive_failures, ==, 2);
	runs(p, 0, 3);
	CHECK(view(p).failure_rate == 25.0);
	runs(p, -5, 2);
	v = view(p);
	CHECK_INT(v.calls, ==, 10);
	CHECK_INT(v.failures, ==, 4);
	CHECK(v.failure_rate == 40.0);
	CHECK(v.slow_rate == 10.0);
	CHECK_INT(v.consecutive_failures, ==, 2);
	CHECK_INT(v.trips, ==, 0);
	CHECK_INT(v.until_half_open, ==, 0);
	CHECK_INT(v.open_duration, ==, 10 * KEEL_SEC);
	runs(p, -5, 1); /* replaces the first success: 5 of 10 */
	v = view(p);
	CHECK_INT(v.state, ==, KEEL_BREAKER_OPEN);
	/* The window keeps what tripped it. */
	CHECK_INT(v.failures, ==, 5);
	CHECK(v.failure_rate == 50.0);
	CHECK_INT(v.trips, ==, 1);
	keel_vclock_advance(&vc, 4 * KEEL_SEC);
	CHECK_INT(view(p).until_half_open, ==, 6 * KEEL_SEC);
	keel_policy_free(p);
}

TEST(state_names)
{
	CHECK_STR(keel_breaker_state_name(KEEL_BREAKER_CLOSED), "closed");
	CHECK_STR(keel_breaker_state_name(KEEL_BREAKER_OPEN), "open");
	CHECK_STR(keel_breaker_state_name(KEEL_BREAKER_HALF_OPEN), "half-open");
	CHECK_STR(keel_breaker_state_name(KEEL_BREAKER_FORCED_OPEN),
		  "forced-open");
	CHECK_STR(keel_breaker_state_name(KEEL_BREAKER_DISABLED), "disabled");
	CHECK_STR(keel_breaker_state_name((enum keel_breaker_state)99),
		  "unknown");
}

/* ------------------------------------------------------------------------
 * Classifiers, hand-guarded calls, stale outcomes
 * ------------------------------------------------------------------------ */

static unsigned classified;

static int only_below_minus_100(const struct keel_outcome *o, void *ud)
{
	CHECK(ud == &classified);
	classified++;
	return o->code < -100;
}

TEST(classifier_decides_failures)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	base_cfg(&cfg);
	cfg.consecutive_failures = 2;
	cfg.classify = only_below_minus_100;
	cfg.classify_ud = &classified;
	p = make(&cfg);

	runs(p, -5, 50); /* failures to the caller, not to the breaker */
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(view(p).consecutive_failures, ==, 0);
	runs(p, -200, 1);
	runs(p, -5, 1);  /* not a failure: the run ends */
	runs(p, -200, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	runs(p, -200, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(classified, ==, 54);
	/* The statistics still call them failures: they are the call's. */
	CHECK_INT(stats(p).failures, ==, 54);
	keel_policy_free(p);
}

TEST(manual_allow_record_measures_duration)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_breaker_permit pm;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.slow_rate_threshold = 100;
	cfg.slow_call_duration = 100 * KEEL_MSEC;
	cfg.window_size = 3;
	cfg.min_calls = 3;
	p = make(&cfg);

	CHECK_INT(keel_breaker_allow(p, &pm), ==, 0);
	keel_vclock_advance(&vc, 150 * KEEL_MSEC);
	keel_breaker_record(p, &pm, 0, KEEL_BREAKER_MEASURE);
	CHECK_INT(view(p).slow_calls, ==, 1);
	CHECK_INT(keel_breaker_allow(p, &pm), ==, 0);
	keel_breaker_record(p, &pm, 0, KEEL_BREAKER_MEASURE); /* fast */
	CHECK_INT(view(p).slow_calls, ==, 1);
	CHECK_INT(keel_breaker_allow(p, &pm), ==, 0);
	keel_breaker_record(p, &pm, 0, 5 * KEEL_SEC); /* told */
	CHECK_INT(view(p).slow_calls, ==, 2);
	CHECK_INT(view(p).calls, ==, 3);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(keel_breaker_allow(p, &pm), ==, 0);
	keel_breaker_record(p, &pm, KEEL_EPANIC, 200 * KEEL_MSEC);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(stats(p).panics, ==, 1);
	CHECK_INT(stats(p).successes, ==, 3);
	CHECK_INT(stats(p).calls, ==, 4);
	keel_policy_free(p);
}

TEST(outcome_of_an_earlier_state_is_ignored)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_breaker_permit old;

	base_cfg(&cfg);
	cfg.consecutive_failures = 1;
	cfg.failure_rate_threshold = 50;
	cfg.window_size = 10;
	cfg.min_calls = 1;
	cfg.half_open_calls = 1;
	p = make(&cfg);

	CHECK_INT(keel_breaker_allow(p, &old), ==, 0); /* a long call */
	trip1(p);
	keel_vclock_advance(&vc, 10 * KEEL_SEC);
	runs(p, 0, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	/* It ends now, in a later CLOSED period: no trip, not in the window. */
	keel_breaker_record(p, &old, -5, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(view(p).calls, ==, 0);
	CHECK_INT(stats(p).failures, ==, 2);
	keel_policy_free(p);
}

static void not_a_breaker_body(void *arg)
{
	keel_defer(keel_recover_error, arg);
	(void)keel_breaker_state(NULL);
}

static void d_catch_msg(void *arg)
{
	const struct keel_panic *pn = keel_recover();

	if (pn != NULL)
		snprintf(arg, 128, "%s", keel_panic_message(pn));
}

static void wrong_policy_body(void *arg)
{
	struct keel_breaker_view v;

	keel_defer(d_catch_msg, arg);
	keel_breaker_view(((struct keel_policy **)arg)[0], &v);
}

TEST(not_a_breaker_panics)
{
	struct keel_error *err = NULL;
	union {
		struct keel_policy *p;
		char msg[128];
	} u;
	struct keel_policy *fb;
	struct keel_fallback_config fcfg;

	CHECK_INT(keel_call(not_a_breaker_body, &err), ==, 1);
	CHECK(err != NULL);
	CHECK_CONTAINS(keel_error_message(err), "not a circuit breaker");
	keel_error_free(err);

	/* Another kind of policy: a bug too. */
	keel_fallback_config_init(&fcfg);
	keel_fallback_config_value(&fcfg, NULL);
	CHECK_INT(keel_fallback_new(&fcfg, &fb), ==, 0);
	u.p = fb;
	CHECK_INT(keel_call(wrong_policy_body, &u), ==, 1);
	CHECK_CONTAINS(u.msg, "not a circuit breaker");
	keel_policy_free(fb);
}

/* ------------------------------------------------------------------------
 * In a pipeline: time from the chain's shared readings, or its own clock
 * ------------------------------------------------------------------------ */

/* A breaker on the virtual clock that trips when 60% of the calls take
 * 1 s or more, in a pipeline on pl_clock. */
static void slow_in_pipeline(const struct keel_clock *pl_clock,
			     enum keel_breaker_window window)
{
	struct keel_breaker_config cfg;
	struct keel_pipeline_config pcfg;
	struct keel_pipeline *pl;
	struct keel_policy *p;
	struct keel_outcome o;

	base_cfg(&cfg);
	cfg.slow_rate_threshold = 60;
	cfg.slow_call_duration = KEEL_SEC;
	cfg.window = window;
	cfg.window_size = window == KEEL_BREAKER_WINDOW_TIME ? 60 : 2;
	cfg.min_calls = 2;
	p = make(&cfg);
	keel_pipeline_config_init(&pcfg);
	pcfg.clock = pl_clock != NULL ? pl_clock : &vc.clock;
	CHECK_INT(keel_pipeline_config_add(&pcfg, p), ==, 0);
	CHECK_INT(keel_pipeline_new(&pcfg, &pl), ==, 0);

	CHECK_INT(keel_pipeline_execute(pl, op_slow,
					(void *)(intptr_t)(999 * KEEL_MSEC),
					NULL, &o), ==, 0);
	CHECK_INT(keel_pipeline_execute(pl, op_slow,
					(void *)(intptr_t)(1500 * KEEL_MSEC),
					NULL, &o), ==, 0);
	CHECK_INT(view(p).slow_calls, ==, 1);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK_INT(keel_pipeline_execute(pl, op_slow,
					(void *)(intptr_t)(3 * KEEL_SEC), NULL,
					&o), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(keel_pipeline_execute(pl, op_slow, NULL, NULL, &o), ==,
		  KEEL_EBREAKER_OPEN);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_BREAKER);
	keel_pipeline_free(pl);
	keel_policy_free(p);
}

TEST(slow_calls_measured_in_a_pipeline_on_the_same_clock)
{
	slow_in_pipeline(NULL, KEEL_BREAKER_WINDOW_COUNT);
	slow_in_pipeline(NULL, KEEL_BREAKER_WINDOW_TIME);
}

/* The pipeline's readings are on the system clock, where the calls take
 * no time: the breaker must read its own (virtual) clock. */
TEST(slow_calls_measured_on_the_breaker_clock_in_a_foreign_pipeline)
{
	slow_in_pipeline(keel_clock_system(), KEEL_BREAKER_WINDOW_COUNT);
	slow_in_pipeline(keel_clock_system(), KEEL_BREAKER_WINDOW_TIME);
}

/* ------------------------------------------------------------------------
 * Panics and faults in the protected call are failures
 * ------------------------------------------------------------------------ */

static unsigned cleanups;

static void d_cleanup(void *arg)
{
	(void)arg;
	cleanups++;
}

static int op_panics(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	keel_defer(d_cleanup, NULL);
	keel_panic("backend exploded");
}

static int *volatile nil_int;

static KEEL_TEST_NO_SANITIZE int op_faults(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	keel_defer(d_cleanup, NULL);
	return *nil_int;
}

static void check_trips_on(keel_op_fn op, const char *msg_part)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;
	int i;

	base_cfg(&cfg);
	cfg.consecutive_failures = 2;
	p = make(&cfg);
	cleanups = 0;
	for (i = 0; i < 2; i++) {
		CHECK_INT(keel_policy_execute(p, op, NULL, NULL, &o), ==,
			  KEEL_EPANIC);
		CHECK_INT(o.panicked, ==, 1);
		CHECK_CONTAINS(o.panic_msg, msg_part);
		CHECK_INT(cleanups, ==, i + 1);
	}
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(keel_policy_execute(p, op, NULL, NULL, &o), ==,
		  KEEL_EBREAKER_OPEN);
	CHECK_INT(cleanups, ==, 2); /* rejected: it did not run */
	CHECK_INT(stats(p).panics, ==, 2);
	CHECK_INT(ev_panic, ==, 2);
	CHECK_INT(stats(p).rejections, ==, 1);
	CHECK_STR(keel_test_ev, "closed>open");
	keel_policy_free(p);
}

TEST(panicking_call_is_a_failure)
{
	check_trips_on(op_panics, "backend exploded");
}

TEST(faulting_call_is_a_failure)
{
#ifdef KEEL_TEST_TSAN
	KEEL_TEST_SKIP("TSan cannot follow a jump out of a signal handler");
#endif
	check_trips_on(op_faults, "nil pointer dereference");
}

/* ------------------------------------------------------------------------
 * Many threads, one breaker
 * ------------------------------------------------------------------------ */

#define HAMMER_CALLS 100000

/* Moves the virtual clock forward while the hammers run, so the time
 * window rotates under them. */
static int ticking;
static pthread_t tick_thread;

static void *ticker(void *arg)
{
	(void)arg;
	while (__atomic_load_n(&ticking, __ATOMIC_ACQUIRE)) {
		keel_vclock_advance(&vc, 300 * KEEL_MSEC);
		usleep(200);
	}
	return NULL;
}

static void start_ticker(void)
{
	__atomic_store_n(&ticking, 1, __ATOMIC_RELEASE);
	CHECK_INT(pthread_create(&tick_thread, NULL, ticker, NULL), ==, 0);
}

static void stop_ticker(void)
{
	if (!__atomic_load_n(&ticking, __ATOMIC_ACQUIRE))
		return;
	__atomic_store_n(&ticking, 0, __ATOMIC_RELEASE);
	pthread_join(tick_thread, NULL);
}

struct hammer {
	struct keel_policy *p;
	pthread_barrier_t *go;
	unsigned seed;
	unsigned period, burst; /* calls; the first burst of each period fail */
	uint64_t ok, failed, rejected, other;
};

static int op_hammer(struct keel_exec *x, void *arg)
{
	(void)x;
	return (int)(intptr_t)arg;
}

/* Mostly successes with 10% noise, which the window absorbs, and a burst
 * of failures every period, which trips the breaker; the successes after
 * it let the probes close it again. Every fourth call goes through
 * allow/record instead of execute. */
static void *hammer(void *arg)
{
	struct hammer *h = arg;
	unsigned i;

	pthread_barrier_wait(h->go);
	for (i = 0; i < HAMMER_CALLS; i++) {
		int code = (i % h->period) < h->burst ? -5 : 0, rc;

		h->seed = h->seed * 1103515245u + 12345u;
		if ((h->seed >> 16) % 10 == 0)
			code = -5;
		if (i % 4 == 3) {
			struct keel_breaker_permit pm;

			rc = keel_breaker_allow(h->p, &pm);
			if (rc == 0) {
				keel_breaker_record(h->p, &pm, code,
						    KEEL_BREAKER_MEASURE);
				rc = code;
			}
		} else {
			struct keel_outcome o;

			rc = keel_policy_execute(h->p, op_hammer,
						 (void *)(intptr_t)code, NULL,
						 &o);
		}
		if (rc == 0)
			h->ok++;
		else if (rc == -5)
			h->failed++;
		else if (rc == KEEL_EBREAKER_OPEN)
			h->rejected++;
		else
			h->other++;
	}
	return NULL;
}

static void hammer_run(const struct keel_breaker_config *cfg,
		       unsigned period, unsigned burst)
{
	enum { THREADS = 4 };
	struct hammer h[THREADS];
	pthread_t th[THREADS];
	pthread_barrier_t go;
	struct keel_policy *p;
	struct keel_policy_stats st;
	struct keel_breaker_view v;
	uint64_t ok = 0, failed = 0, rejected = 0;
	int i;

	CHECK_INT(keel_breaker_new(cfg, &p), ==, 0);
	pthread_barrier_init(&go, NULL, THREADS);
	for (i = 0; i < THREADS; i++) {
		h[i] = (struct hammer){ p, &go, (unsigned)i * 7919u + 1, period,
					burst, 0, 0, 0, 0 };
		CHECK_INT(pthread_create(&th[i], NULL, hammer, &h[i]), ==, 0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(h[i].other, ==, 0);
		CHECK_INT(h[i].ok + h[i].failed + h[i].rejected, ==,
			  HAMMER_CALLS);
		ok += h[i].ok;
		failed += h[i].failed;
		rejected += h[i].rejected;
	}
	pthread_barrier_destroy(&go);
	stop_ticker();

	st = stats(p);
	CHECK_INT(st.calls, ==, THREADS * HAMMER_CALLS);
	CHECK_INT(st.successes + st.failures + st.panics + st.rejections, ==,
		  st.calls);
	CHECK_INT(st.successes, ==, ok);
	CHECK_INT(st.failures, ==, failed);
	CHECK_INT(st.rejections, ==, rejected);
	CHECK_INT(st.panics, ==, 0);
	v = view(p);
	CHECK(v.trips > 0);
	CHECK(st.transitions >= v.trips);
	CHECK(v.calls <= (cfg->window == KEEL_BREAKER_WINDOW_COUNT
				  ? cfg->window_size
				  : (unsigned)st.calls));
	CHECK(v.failures <= v.calls);

	/* Quiet now: the window's aggregates must match its contents
	 * exactly, so emptying it reaches zero, and refilling counts right. */
	keel_breaker_reset(p);
	v = view(p);
	CHECK_INT(v.calls, ==, 0);
	CHECK_INT(v.failures, ==, 0);
	CHECK_INT(v.slow_calls, ==, 0);
	runs(p, 0, 7);
	runs(p, -5, 3);
	v = view(p);
	CHECK_INT(v.calls, ==, 10);
	CHECK_INT(v.failures, ==, 3);
	keel_policy_free(p);
}

TEST(threads_share_one_breaker_count_window)
{
	struct keel_breaker_config cfg;

	keel_breaker_config_init(&cfg); /* the system clock */
	cfg.failure_rate_threshold = 50;
	cfg.window_size = 100;
	cfg.min_calls = 20;
	cfg.consecutive_failures = 50;
	cfg.slow_rate_threshold = 90;
	cfg.slow_call_duration = 50 * KEEL_MSEC;
	cfg.open_duration = 20 * KEEL_USEC;
	cfg.half_open_calls = 4;
	hammer_run(&cfg, 4096, 256);
}

TEST(threads_share_one_breaker_time_window)
{
	struct keel_breaker_config cfg;

	base_cfg(&cfg);
	cfg.on_event = NULL;
	cfg.failure_rate_threshold = 50;
	cfg.window = KEEL_BREAKER_WINDOW_TIME;
	cfg.window_size = 3;
	cfg.min_calls = 20;
	cfg.open_duration = 100 * KEEL_MSEC;
	cfg.half_open_calls = 4;
	start_ticker();
	hammer_run(&cfg, 8192, 2048);
}
