/* KEEL_TEST_LABELS: threads */
/*
 * tests/resilience/test_ratelimit.c - GCRA permits over virtual time:
 * smooth spacing, bursts, bounded waits that never outlive max_wait or the
 * deadline, permits given back on cancel, and exact counts under threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include <keel.h>
#include <keel/ratelimit.h>
#include <keel/timeout.h>
#include "keel_test.h"
#include "policy_check.h"

static struct keel_vclock vc;

static struct keel_policy *make(enum keel_ratelimit_mode mode, int64_t rate,
				int64_t period, int64_t burst, int64_t max_wait)
{
	struct keel_ratelimit_config cfg;
	struct keel_policy *p;

	keel_ratelimit_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.mode = mode;
	cfg.rate = rate;
	cfg.period = period;
	cfg.burst = burst;
	cfg.max_wait = max_wait;
	CHECK_INT(keel_ratelimit_new(&cfg, &p), ==, 0);
	return p;
}

static int op_ok(struct keel_exec *x, void *arg)
{
	x->result = arg;
	return 0;
}

static int run(struct keel_policy *p)
{
	return keel_policy_execute(p, op_ok, NULL, NULL, NULL);
}

static void set_time(int64_t t)
{
	keel_vclock_advance(&vc, t - keel_clock_now(&vc.clock));
}

/* Calls once every `step` ns of virtual time over [0, span); returns the
 * number admitted and logs their times (in ms) to the event log. */
static int sweep(struct keel_policy *p, int64_t span, int64_t step)
{
	int64_t t;
	int ok = 0;

	for (t = 0; t < span; t += step) {
		set_time(t);
		if (run(p) == 0) {
			ok++;
			keel_test_ev_addf("%lld", (long long)(t / KEEL_MSEC));
		}
	}
	return ok;
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

TEST(config_defaults_and_bad_config)
{
	struct keel_ratelimit_config cfg, bad;
	struct keel_policy *p = (void *)1;

	keel_ratelimit_config_init(&cfg);
	CHECK(cfg.name == NULL);
	CHECK(cfg.clock == NULL);
	CHECK(cfg.on_event == NULL);
	CHECK_INT(cfg.rate, ==, 100);
	CHECK_INT(cfg.period, ==, KEEL_SEC);
	CHECK_INT(cfg.mode, ==, KEEL_RATELIMIT_SMOOTH);
	CHECK_INT(cfg.burst, ==, 0);
	CHECK_INT(cfg.max_wait, ==, 0);

	CHECK_INT(keel_ratelimit_new(NULL, &p), ==, -EINVAL);
	CHECK(p == NULL);
	CHECK_INT(keel_ratelimit_new(&cfg, NULL), ==, -EINVAL);
#define BAD(field, value)                                                     \
	do {                                                                  \
		bad = cfg;                                                    \
		bad.field = value;                                            \
		p = (void *)1;                                                \
		CHECK_INT(keel_ratelimit_new(&bad, &p), ==, -EINVAL);         \
		CHECK(p == NULL);                                             \
	} while (0)
	BAD(rate, 0);
	BAD(rate, -1);
	BAD(period, 0);
	BAD(rate, 2 * KEEL_SEC); /* interval under 1 ns */
	BAD(burst, -1);
	BAD(burst, 2);           /* SMOOTH has burst 1 */
	BAD(max_wait, -1);
	BAD(mode, (enum keel_ratelimit_mode)7);
	bad = cfg;
	bad.mode = KEEL_RATELIMIT_BURSTY;
	bad.burst = INT64_MAX / 2; /* the burst's span would overflow */
	CHECK_INT(keel_ratelimit_new(&bad, &p), ==, -EINVAL);
#undef BAD
	keel_test_leak_check();

	cfg.burst = 1; /* SMOOTH accepts an explicit 1 */
	cfg.name = "quota";
	CHECK_INT(keel_ratelimit_new(&cfg, &p), ==, 0);
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_RATELIMIT);
	CHECK_STR(keel_policy_name(p), "quota");
	keel_policy_free(p);
	cfg.name = NULL;
	CHECK_INT(keel_ratelimit_new(&cfg, &p), ==, 0);
	CHECK_STR(keel_policy_name(p), "ratelimit");
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Permits over virtual time
 * ------------------------------------------------------------------------ */

TEST(smooth_spaces_permits_evenly)
{
	struct keel_policy *p;
	struct keel_policy_stats st;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, 0);
	/* One call a millisecond for a second: one permit per 100 ms. */
	CHECK_INT(sweep(p, KEEL_SEC, KEEL_MSEC), ==, 10);
	CHECK_STR(keel_test_ev, "0,100,200,300,400,500,600,700,800,900");
	keel_policy_stats(p, &st);
	CHECK_INT(st.successes, ==, 10);
	CHECK_INT(st.rejections, ==, 990);
	check_invariant(p);
	keel_policy_free(p);
}

TEST(smooth_allows_only_one_after_a_quiet_spell)
{
	struct keel_policy *p;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, 0);
	set_time(5 * KEEL_SEC); /* idle for 50 intervals */
	CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, KEEL_ERATE_LIMITED);
	keel_policy_free(p);
}

TEST(bursty_allows_a_burst_then_the_rate)
{
	struct keel_policy *p;
	int i;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 10, KEEL_SEC, 0, 0); /* burst = rate */
	/* The first 10 calls (one a millisecond) get through at once, then
	 * one per 100 ms. */
	CHECK_INT(sweep(p, KEEL_SEC, KEEL_MSEC), ==, 19);
	CHECK_STR(keel_test_ev,
		  "0,1,2,3,4,5,6,7,8,9,100,200,300,400,500,600,700,800,900");
	keel_policy_free(p);

	/* Over 10 s: the burst plus one per interval after it. */
	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 10, KEEL_SEC, 0, 0);
	CHECK_INT(sweep(p, 10 * KEEL_SEC, KEEL_MSEC), ==, 10 + 99);
	keel_policy_free(p);

	/* An explicit burst, and the bucket refilling while idle. */
	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 10, KEEL_SEC, 4, 0);
	for (i = 0; i < 4; i++)
		CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, KEEL_ERATE_LIMITED);
	set_time(250 * KEEL_MSEC); /* 2.5 intervals: two permits back */
	CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, KEEL_ERATE_LIMITED);
	set_time(10 * KEEL_SEC); /* refills to the burst, no further */
	for (i = 0; i < 4; i++)
		CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, KEEL_ERATE_LIMITED);
	keel_policy_free(p);
}

TEST(period_and_rate_set_the_interval)
{
	struct keel_policy *p;

	/* 3 per 30 ms = one per 10 ms. */
	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 3, 30 * KEEL_MSEC, 0, 0);
	CHECK_INT(sweep(p, 100 * KEEL_MSEC, KEEL_MSEC), ==, 10);
	CHECK_STR(keel_test_ev, "0,10,20,30,40,50,60,70,80,90");
	keel_policy_free(p);
}

TEST(starts_full_on_any_clock)
{
	struct keel_policy *p;
	int i;

	/* A virtual clock that starts at 0 or far in the negative. */
	keel_vclock_init(&vc, -KEEL_SEC * 1000);
	p = make(KEEL_RATELIMIT_BURSTY, 5, KEEL_SEC, 0, 0);
	CHECK_INT(keel_ratelimit_available(p), ==, 5);
	for (i = 0; i < 5; i++)
		CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, KEEL_ERATE_LIMITED);
	keel_policy_free(p);
}

/* Listener: logs "type:kind:code". */
static void on_event(const struct keel_event *ev, void *ud)
{
	(void)ud;
	keel_test_ev_addf("%s:%s:%d", keel_event_type_name(ev->type),
			  keel_policy_kind_name(ev->kind), ev->code);
}

TEST(rejection_outcome_and_event)
{
	struct keel_ratelimit_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;
	char want[128];

	keel_vclock_init(&vc, 0);
	keel_ratelimit_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.on_event = on_event;
	CHECK_INT(keel_ratelimit_new(&cfg, &p), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_ok, "r", NULL, &o), ==, 0);
	CHECK_STR(o.result, "r");
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_NONE);
	CHECK_INT(keel_policy_execute(p, op_ok, "r", NULL, &o), ==,
		  KEEL_ERATE_LIMITED);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_RATELIMIT);
	CHECK_INT(o.attempts, ==, 0);
	CHECK(o.result == NULL);
	snprintf(want, sizeof(want),
		 "success:ratelimit:0,rejected:ratelimit:%d",
		 KEEL_ERATE_LIMITED);
	CHECK_STR(keel_test_ev, want);
	keel_policy_free(p);
}

TEST(rejection_says_when_a_permit_is_free)
{
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 10, KEEL_SEC, 2, 0); /* 100 ms apart */
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, NULL, &o), ==, 0);
	CHECK_INT(o.retry_after, ==, 0);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, NULL, &o), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, NULL, &o), ==,
		  KEEL_ERATE_LIMITED);
	CHECK_INT(o.retry_after, ==, 100 * KEEL_MSEC);
	set_time(30 * KEEL_MSEC);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, NULL, &o), ==,
		  KEEL_ERATE_LIMITED);
	CHECK_INT(o.retry_after, ==, 70 * KEEL_MSEC);
	set_time(100 * KEEL_MSEC); /* exactly when it said */
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, NULL, &o), ==, 0);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Waiting for a permit
 * ------------------------------------------------------------------------ */

TEST(max_wait_waits_for_the_next_permit)
{
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, 150 * KEEL_MSEC);
	CHECK_INT(run(p), ==, 0);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	/* The next permit is 100 ms away: within max_wait, so it waits. */
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, NULL, &o), ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 100 * KEEL_MSEC);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 100 * KEEL_MSEC);
	CHECK_INT(run(p), ==, 0); /* and again, to 200 ms */
	CHECK_INT(keel_vclock_waits(&vc), ==, 2);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 200 * KEEL_MSEC);
	CHECK_INT(keel_ratelimit_available(p), ==, 0);
	keel_policy_free(p);

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, 50 * KEEL_MSEC);
	CHECK_INT(run(p), ==, 0);
	CHECK_INT(run(p), ==, KEEL_ERATE_LIMITED); /* needs 100 ms > 50 */
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	set_time(60 * KEEL_MSEC);                   /* now 40 ms away */
	CHECK_INT(run(p), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 100 * KEEL_MSEC);
	keel_policy_free(p);
}

struct waiter {
	struct keel_policy *p;
	struct keel_cancel *tok;
	int code;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;

	w->code = keel_policy_execute(w->p, op_ok, NULL, w->tok, NULL);
	return NULL;
}

static void wait_for_waits(unsigned n)
{
	int i;

	for (i = 0; i < 5000 && keel_vclock_waits(&vc) < n; i++)
		usleep(1000);
	CHECK_INT(keel_vclock_waits(&vc), ==, n);
}

TEST(waiting_calls_queue_up_to_max_wait)
{
	struct waiter w = { 0 };
	pthread_t th;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	w.p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, 150 * KEEL_MSEC);
	CHECK_INT(run(w.p), ==, 0);
	/* One call holds the reservation for the permit at 100 ms ... */
	CHECK_INT(pthread_create(&th, NULL, wait_thread, &w), ==, 0);
	wait_for_waits(1);
	/* ... so the next free one is at 200 ms, beyond max_wait: rejected
	 * at once, without a wait and without taking it. */
	CHECK_INT(run(w.p), ==, KEEL_ERATE_LIMITED);
	CHECK_INT(keel_vclock_waits(&vc), ==, 1);
	set_time(100 * KEEL_MSEC);
	pthread_join(th, NULL);
	CHECK_INT(w.code, ==, 0);
	set_time(200 * KEEL_MSEC);
	CHECK_INT(run(w.p), ==, 0); /* the 200 ms permit was not taken */
	keel_policy_free(w.p);
}

TEST(deadline_bounds_the_wait)
{
	struct keel_policy *p;
	struct keel_cancel tok;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, KEEL_SEC);
	CHECK_INT(run(p), ==, 0);
	/* The permit is 100 ms away but the deadline is at 80 ms: rejected
	 * at once, no wait, no permit taken. */
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, 80 * KEEL_MSEC);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, &tok, NULL), ==,
		  KEEL_ERATE_LIMITED);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 0);
	keel_cancel_destroy(&tok);
	/* A deadline exactly at the permit's time is too late as well. */
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, 100 * KEEL_MSEC);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, &tok, NULL), ==,
		  KEEL_ERATE_LIMITED);
	keel_cancel_destroy(&tok);
	/* With room to spare it waits. */
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, 150 * KEEL_MSEC);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, &tok, NULL), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 100 * KEEL_MSEC);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}

/* A timeout inside the limiter bounds the call, not the wait for a permit:
 * the attempt starts (x->start) after the wait. */
static int64_t seen_deadline;

static int op_deadline(struct keel_exec *x, void *arg)
{
	(void)arg;
	seen_deadline = x->deadline;
	return 0;
}

TEST(waiting_restarts_the_attempt_clock)
{
	struct keel_timeout_config tc;
	struct keel_policy *t, *p, *both[2];
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, KEEL_SEC);
	keel_timeout_config_init(&tc);
	tc.clock = &vc.clock;
	tc.timeout = 30 * KEEL_MSEC;
	CHECK_INT(keel_timeout_new(&tc, &t), ==, 0);
	both[0] = p;
	both[1] = t;
	CHECK_INT(keel__execute(both, 2, &vc.clock, op_deadline, NULL, NULL,
				&o), ==, 0);
	CHECK_INT(seen_deadline, ==, 30 * KEEL_MSEC);
	CHECK_INT(keel__execute(both, 2, &vc.clock, op_deadline, NULL, NULL,
				&o), ==, 0); /* waited 100 ms for its permit */
	CHECK_INT(seen_deadline, ==, 130 * KEEL_MSEC);
	keel_policy_free(t);
	keel_policy_free(p);
}

TEST(cancel_ends_the_wait_and_gives_the_permit_back)
{
	struct keel_cancel tok;
	struct waiter w;
	pthread_t th;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	w.p = make(KEEL_RATELIMIT_SMOOTH, 10, KEEL_SEC, 0, KEEL_SEC);
	CHECK_INT(keel_ratelimit_try_acquire(w.p, 1), ==, 0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	w.tok = &tok;
	CHECK_INT(pthread_create(&th, NULL, wait_thread, &w), ==, 0);
	/* It waits (manual time) for its permit at 100 ms. */
	wait_for_waits(1);
	keel_cancel_cancel(&tok, 0);
	pthread_join(th, NULL);
	CHECK_INT(w.code, ==, -ECANCELED);
	/* Its permit came back: the next one is at 100 ms, not 200 ms. */
	set_time(100 * KEEL_MSEC);
	CHECK_INT(keel_ratelimit_try_acquire(w.p, 1), ==, 0);
	CHECK_INT(keel_ratelimit_try_acquire(w.p, 1), ==, KEEL_ERATE_LIMITED);
	check_invariant(w.p);
	keel_cancel_destroy(&tok);
	keel_policy_free(w.p);
}

/* ------------------------------------------------------------------------
 * Manual use
 * ------------------------------------------------------------------------ */

TEST(try_acquire_takes_n_at_once)
{
	struct keel_policy *p, *other;
	struct keel_policy_stats st;
	struct keel_timeout_config tc;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 10, KEEL_SEC, 0, 0);
	CHECK_INT(keel_ratelimit_available(p), ==, 10);
	CHECK_INT(keel_ratelimit_try_acquire(p, 4), ==, 0);
	CHECK_INT(keel_ratelimit_available(p), ==, 6);
	CHECK_INT(keel_ratelimit_try_acquire(p, 4), ==, 0);
	CHECK_INT(keel_ratelimit_try_acquire(p, 4), ==, KEEL_ERATE_LIMITED);
	CHECK_INT(keel_ratelimit_available(p), ==, 2); /* nothing taken */
	CHECK_INT(keel_ratelimit_try_acquire(p, 2), ==, 0);
	CHECK_INT(keel_ratelimit_available(p), ==, 0);
	CHECK_INT(keel_ratelimit_try_acquire(p, 11), ==, -EINVAL);
	CHECK_INT(keel_ratelimit_try_acquire(p, 0), ==, -EINVAL);
	set_time(300 * KEEL_MSEC);
	CHECK_INT(keel_ratelimit_available(p), ==, 3);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 0); /* manual use is not counted */

	keel_timeout_config_init(&tc);
	CHECK_INT(keel_timeout_new(&tc, &other), ==, 0);
	CHECK_INT(keel_ratelimit_try_acquire(other, 1), ==, -EINVAL);
	CHECK_INT(keel_ratelimit_acquire(other, 1, NULL), ==, -EINVAL);
	CHECK_INT(keel_ratelimit_available(other), ==, -EINVAL);
	CHECK_INT(keel_ratelimit_available(NULL), ==, -EINVAL);
	keel_policy_free(other);
	keel_policy_free(p);
}

TEST(acquire_waits_like_the_policy)
{
	struct keel_policy *p;
	struct keel_cancel tok;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 10, KEEL_SEC, 2, 150 * KEEL_MSEC);
	CHECK_INT(keel_ratelimit_acquire(p, 2, NULL), ==, 0);
	/* Two more are 200 ms away, beyond max_wait; one is 100 ms away. */
	CHECK_INT(keel_ratelimit_acquire(p, 2, NULL), ==, KEEL_ERATE_LIMITED);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	CHECK_INT(keel_ratelimit_acquire(p, 1, NULL), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 100 * KEEL_MSEC);
	CHECK_INT(keel_ratelimit_acquire(p, 2, NULL), ==, KEEL_ERATE_LIMITED);
	CHECK_INT(keel_ratelimit_acquire(p, 1, NULL), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 200 * KEEL_MSEC);
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_cancel(&tok, 0);
	CHECK_INT(keel_ratelimit_acquire(p, 1, &tok), ==, -ECANCELED);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Four threads: the counts are exact
 * ------------------------------------------------------------------------ */

#define NTHREADS 4
#define NCALLS 500

struct stress {
	struct keel_policy *p;
	int manual;
	int ok;
};

static void *stress_thread(void *arg)
{
	struct stress *s = arg;
	int i;

	s->ok = 0;
	for (i = 0; i < NCALLS; i++) {
		int code = s->manual ? keel_ratelimit_try_acquire(s->p, 1)
				     : run(s->p);

		if (code == 0)
			s->ok++;
	}
	return NULL;
}

static int stress(struct keel_policy *p, int manual)
{
	struct stress s[NTHREADS];
	pthread_t th[NTHREADS];
	int i, ok = 0;

	for (i = 0; i < NTHREADS; i++) {
		s[i].p = p;
		s[i].manual = manual;
		CHECK_INT(pthread_create(&th[i], NULL, stress_thread, &s[i]),
			  ==, 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		ok += s[i].ok;
	}
	return ok;
}

TEST(four_threads_get_exactly_the_permits)
{
	struct keel_policy *p;
	struct keel_policy_stats st;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_RATELIMIT_BURSTY, 1000, KEEL_SEC, 100, 0);
	/* 2000 attempts at one instant: exactly the burst gets through. */
	CHECK_INT(stress(p, 0), ==, 100);
	/* 50 ms later, exactly 50 more. */
	set_time(50 * KEEL_MSEC);
	CHECK_INT(stress(p, 1), ==, 50);
	set_time(50 * KEEL_MSEC + 999 * KEEL_USEC);
	CHECK_INT(stress(p, 0), ==, 0);
	set_time(51 * KEEL_MSEC);
	CHECK_INT(stress(p, 0), ==, 1);
	keel_policy_stats(p, &st);
	CHECK_INT(st.successes, ==, 101);
	CHECK_INT(st.rejections, ==, 3 * NTHREADS * NCALLS - 101);
	check_invariant(p);
	keel_policy_free(p);
}
