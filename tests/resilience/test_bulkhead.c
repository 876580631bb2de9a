/* KEEL_TEST_LABELS: threads */
/*
 * tests/resilience/test_bulkhead.c - at most max_concurrent calls inside;
 * the rest are rejected at once or wait a bounded time for a freed slot; a
 * cancel or a deadline ends the wait; no freed slot is lost under threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include <keel.h>
#include <keel/bulkhead.h>
#include <keel/pipeline.h>
#include <keel/timeout.h>
#include "keel_test.h"
#include "policy_check.h"

static struct keel_vclock vc;

static struct keel_policy *make(const struct keel_clock *clock, int max,
				int64_t max_wait, int max_waiting)
{
	struct keel_bulkhead_config cfg;
	struct keel_policy *p;

	keel_bulkhead_config_init(&cfg);
	cfg.clock = clock;
	cfg.max_concurrent = max;
	cfg.max_wait = max_wait;
	cfg.max_waiting = max_waiting;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, 0);
	return p;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { 0, ms * 1000000L };

	nanosleep(&ts, NULL);
}

/* Polls until the bulkhead has n waiters (a few seconds at most). */
static void wait_for_waiters(struct keel_policy *p, int n)
{
	int i;

	for (i = 0; i < 5000 && keel_bulkhead_waiting(p) != n; i++)
		sleep_ms(1);
	CHECK_INT(keel_bulkhead_waiting(p), ==, n);
}

static int op_ok(struct keel_exec *x, void *arg)
{
	x->result = arg;
	return 0;
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

TEST(config_defaults_and_bad_config)
{
	struct keel_bulkhead_config cfg;
	struct keel_policy *p = (void *)1;

	keel_bulkhead_config_init(&cfg);
	CHECK(cfg.name == NULL);
	CHECK(cfg.clock == NULL);
	CHECK(cfg.on_event == NULL);
	CHECK_INT(cfg.max_concurrent, ==, 10);
	CHECK_INT(cfg.max_wait, ==, 0);
	CHECK_INT(cfg.max_waiting, ==, 0);

	CHECK_INT(keel_bulkhead_new(NULL, &p), ==, -EINVAL);
	CHECK(p == NULL);
	CHECK_INT(keel_bulkhead_new(&cfg, NULL), ==, -EINVAL);
	cfg.max_concurrent = 0;
	p = (void *)1;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, -EINVAL);
	CHECK(p == NULL);
	cfg.max_concurrent = 1;
	cfg.max_wait = -1;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, -EINVAL);
	cfg.max_wait = 0;
	cfg.max_waiting = -1;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, -EINVAL);
	keel_test_leak_check();

	cfg.max_waiting = 0;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, 0);
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_BULKHEAD);
	CHECK_STR(keel_policy_name(p), "bulkhead");
	keel_policy_free(p);
	keel_policy_free(NULL);
}

TEST(name_is_copied)
{
	struct keel_bulkhead_config cfg;
	struct keel_policy *p;
	char name[16];

	snprintf(name, sizeof(name), "db-pool");
	keel_bulkhead_config_init(&cfg);
	cfg.name = name;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, 0);
	memset(name, 'x', sizeof(name) - 1);
	CHECK_STR(keel_policy_name(p), "db-pool");
	keel_policy_free(p);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The limit, single-threaded: a call that calls through the same bulkhead
 * holds its slot while the inner one asks for another.
 * ------------------------------------------------------------------------ */

struct nest {
	struct keel_policy *p;
	int depth, max_depth;
	int in_flight[8]; /* seen at each depth */
	int code[8];      /* the inner call's outcome at each depth */
	enum keel_policy_kind by[8];
};

static int op_nest(struct keel_exec *x, void *arg)
{
	struct nest *n = arg;
	struct keel_outcome o;
	int d = n->depth++;

	(void)x;
	n->in_flight[d] = keel_bulkhead_in_flight(n->p);
	if (n->depth < n->max_depth) {
		keel_policy_execute(n->p, op_nest, n, NULL, &o);
		n->code[d] = o.code;
		n->by[d] = o.decided_by;
	}
	return 0;
}

TEST(at_the_limit_rejects_at_once)
{
	struct nest n = { 0 };
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	n.p = make(&vc.clock, 2, 0, 0);
	n.max_depth = 3;
	CHECK_INT(keel_policy_execute(n.p, op_nest, &n, NULL, &o), ==, 0);
	CHECK_INT(n.depth, ==, 2); /* the third call never ran */
	CHECK_INT(n.in_flight[0], ==, 1);
	CHECK_INT(n.in_flight[1], ==, 2);
	CHECK_INT(n.code[1], ==, KEEL_EBULKHEAD_FULL);
	CHECK_INT(n.by[1], ==, KEEL_POLICY_BULKHEAD);
	CHECK_INT(n.code[0], ==, 0);
	CHECK_INT(keel_bulkhead_in_flight(n.p), ==, 0);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0); /* max_wait 0: no wait */
	{
		struct keel_policy_stats st;

		keel_policy_stats(n.p, &st);
		CHECK_INT(st.calls, ==, 3);
		CHECK_INT(st.successes, ==, 2);
		CHECK_INT(st.rejections, ==, 1);
	}
	check_invariant(n.p);
	keel_policy_free(n.p);
}

static int op_panic(struct keel_exec *x, void *arg)
{
	(void)x;
	keel_panic(arg);
}

static int op_fail(struct keel_exec *x, void *arg)
{
	(void)x;
	return (int)(intptr_t)arg;
}

TEST(failures_and_panics_give_the_slot_back)
{
	struct keel_policy *p = make(NULL, 1, 0, 0);
	struct keel_policy_stats st;
	struct keel_outcome o;

	CHECK_INT(keel_policy_execute(p, op_panic, "boom", NULL, &o), ==,
		  KEEL_EPANIC);
	CHECK_INT(o.panicked, ==, 1);
	CHECK_STR(o.panic_msg, "boom");
	CHECK_INT(keel_bulkhead_in_flight(p), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL,
				      &o), ==, -EIO);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_NONE);
	CHECK_INT(keel_bulkhead_in_flight(p), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_ok, "r", NULL, &o), ==, 0);
	CHECK_STR(o.result, "r");
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 3);
	CHECK_INT(st.panics, ==, 1);
	CHECK_INT(st.failures, ==, 1);
	CHECK_INT(st.successes, ==, 1);
	CHECK_INT(st.rejections, ==, 0);
	keel_policy_free(p);
}

/* Listener: logs "type:kind:name:code". */
static void on_event(const struct keel_event *ev, void *ud)
{
	(void)ud;
	keel_test_ev_addf("%s:%s:%s:%d", keel_event_type_name(ev->type),
			  keel_policy_kind_name(ev->kind), ev->name, ev->code);
}

TEST(rejection_emits_an_event)
{
	struct keel_bulkhead_config cfg;
	struct nest n = { 0 };
	char want[256];

	keel_bulkhead_config_init(&cfg);
	cfg.name = "pool";
	cfg.max_concurrent = 1;
	cfg.on_event = on_event;
	CHECK_INT(keel_bulkhead_new(&cfg, &n.p), ==, 0);
	n.max_depth = 2;
	keel_policy_execute(n.p, op_nest, &n, NULL, NULL);
	snprintf(want, sizeof(want),
		 "rejected:bulkhead:pool:%d,success:bulkhead:pool:0",
		 KEEL_EBULKHEAD_FULL);
	CHECK_STR(keel_test_ev, want);
	keel_policy_free(n.p);
}

/* ------------------------------------------------------------------------
 * Bounded waits, single-threaded (auto-advance: a wait that would block
 * jumps the clock to its end)
 * ------------------------------------------------------------------------ */

TEST(wait_ends_after_max_wait)
{
	struct nest n = { 0 };

	keel_vclock_init(&vc, 1000);
	n.p = make(&vc.clock, 1, 50 * KEEL_MSEC, 0);
	n.max_depth = 2;
	CHECK_INT(keel_policy_execute(n.p, op_nest, &n, NULL, NULL), ==, 0);
	CHECK_INT(n.code[0], ==, KEEL_EBULKHEAD_FULL);
	CHECK_INT(keel_vclock_slept(&vc), ==, 50 * KEEL_MSEC);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 1000 + 50 * KEEL_MSEC);
	CHECK_INT(keel_bulkhead_waiting(n.p), ==, 0);
	CHECK_INT(keel_bulkhead_in_flight(n.p), ==, 0);
	check_invariant(n.p);
	keel_policy_free(n.p);
}

/* Like op_nest, but the inner call runs under the token in arg. */
struct nest_tok {
	struct keel_policy *p; /* or NULL: through pl */
	struct keel_pipeline *pl;
	struct keel_cancel *tok;
	int code, inner_ran;
};

static int op_inner(struct keel_exec *x, void *arg)
{
	struct nest_tok *n = arg;

	(void)x;
	n->inner_ran = 1;
	return 0;
}

static int op_outer(struct keel_exec *x, void *arg)
{
	struct nest_tok *n = arg;

	(void)x;
	if (n->pl != NULL)
		n->code = keel_pipeline_execute(n->pl, op_inner, n, n->tok,
						NULL);
	else
		n->code = keel_policy_execute(n->p, op_inner, n, n->tok, NULL);
	return 0;
}

TEST(wait_ends_at_the_token_deadline)
{
	struct nest_tok n = { 0 };
	struct keel_cancel tok;

	keel_vclock_init(&vc, 0);
	n.p = make(&vc.clock, 1, 10 * KEEL_SEC, 0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, 30 * KEEL_MSEC);
	n.tok = &tok;
	CHECK_INT(keel_policy_execute(n.p, op_outer, &n, NULL, NULL), ==, 0);
	CHECK_INT(n.code, ==, -ETIMEDOUT);
	CHECK_INT(n.inner_ran, ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 30 * KEEL_MSEC);
	CHECK_INT(keel_bulkhead_waiting(n.p), ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(n.p);
}

TEST(wait_ends_at_the_call_deadline)
{
	/* A timeout outside the bulkhead sets x->deadline (no token). */
	struct keel_pipeline_config pc;
	struct keel_timeout_config tc;
	struct keel_policy *t, *outer;
	struct nest_tok n = { 0 };
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_timeout_config_init(&tc);
	tc.clock = &vc.clock;
	tc.timeout = 20 * KEEL_MSEC;
	CHECK_INT(keel_timeout_new(&tc, &t), ==, 0);
	n.p = make(&vc.clock, 1, 10 * KEEL_SEC, 0);
	outer = n.p;
	keel_pipeline_config_init(&pc);
	pc.clock = &vc.clock;
	keel_pipeline_config_add(&pc, t);
	keel_pipeline_config_add(&pc, n.p);
	pc.keep_order = 1; /* timeout outside the bulkhead */
	CHECK_INT(keel_pipeline_new(&pc, &n.pl), ==, 0);
	CHECK_INT(keel_policy_execute(outer, op_outer, &n, NULL, &o), ==, 0);
	/* The wait ended at the deadline without a slot; the timeout then
	 * gives its verdict. */
	CHECK_INT(n.code, ==, -ETIMEDOUT);
	CHECK_INT(n.inner_ran, ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 20 * KEEL_MSEC);
	{
		struct keel_policy_stats st;

		keel_policy_stats(n.p, &st);
		CHECK_INT(st.rejections, ==, 1);
	}
	keel_pipeline_free(n.pl);
	keel_policy_free(t);
	keel_policy_free(n.p);
}

TEST(cancelled_token_is_not_admitted_to_wait)
{
	struct keel_policy *p = make(NULL, 1, 10 * KEEL_SEC, 0);
	struct keel_cancel tok;

	keel_cancel_init(&tok, NULL, NULL);
	CHECK_INT(keel_bulkhead_try_acquire(p), ==, 0);
	keel_cancel_cancel(&tok, 0);
	CHECK_INT(keel_bulkhead_acquire(p, &tok), ==, -ECANCELED);
	CHECK_INT(keel_bulkhead_release(p), ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Waiting across threads
 * ------------------------------------------------------------------------ */

struct holder {
	struct keel_policy *p;
	sem_t entered, leave;
	int code;
};

static int op_hold(struct keel_exec *x, void *arg)
{
	struct holder *h = arg;

	(void)x;
	sem_post(&h->entered);
	while (sem_wait(&h->leave) != 0)
		;
	return 0;
}

static void *hold_thread(void *arg)
{
	struct holder *h = arg;

	h->code = keel_policy_execute(h->p, op_hold, h, NULL, NULL);
	return NULL;
}

static void holder_start(struct holder *h, struct keel_policy *p,
			 pthread_t *th)
{
	h->p = p;
	sem_init(&h->entered, 0, 0);
	sem_init(&h->leave, 0, 0);
	CHECK_INT(pthread_create(th, NULL, hold_thread, h), ==, 0);
	while (sem_wait(&h->entered) != 0)
		;
}

static void holder_stop(struct holder *h, pthread_t th)
{
	sem_post(&h->leave);
	pthread_join(th, NULL);
	CHECK_INT(h->code, ==, 0);
	sem_destroy(&h->entered);
	sem_destroy(&h->leave);
}

/* Releases the holder once the bulkhead has one waiter. */
static void *release_when_waiting(void *arg)
{
	struct holder *h = arg;

	wait_for_waiters(h->p, 1);
	sem_post(&h->leave);
	return NULL;
}

TEST(waiter_gets_the_freed_slot)
{
	struct holder h;
	pthread_t th, rel;
	struct keel_outcome o;

	/* Manual virtual time: the waiter blocks until a slot is handed to
	 * it; time never moves, so its max_wait cannot be what ends it. */
	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	h.p = make(&vc.clock, 1, KEEL_SEC, 0);
	holder_start(&h, h.p, &th);
	CHECK_INT(keel_bulkhead_in_flight(h.p), ==, 1);
	CHECK_INT(pthread_create(&rel, NULL, release_when_waiting, &h), ==, 0);
	CHECK_INT(keel_policy_execute(h.p, op_ok, "got", NULL, &o), ==, 0);
	CHECK_STR(o.result, "got");
	CHECK_INT(keel_clock_now(&vc.clock), ==, 0);
	pthread_join(rel, NULL);
	pthread_join(th, NULL);
	CHECK_INT(h.code, ==, 0);
	CHECK_INT(keel_bulkhead_in_flight(h.p), ==, 0);
	CHECK_INT(keel_bulkhead_waiting(h.p), ==, 0);
	check_invariant(h.p);
	keel_policy_free(h.p);
}

static void *advance_when_waiting(void *arg)
{
	struct keel_policy *p = arg;

	wait_for_waiters(p, 1);
	keel_vclock_advance(&vc, 100);
	return NULL;
}

TEST(waiter_times_out_when_time_passes)
{
	struct holder h;
	pthread_t th, adv;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	h.p = make(&vc.clock, 1, 100, 0);
	holder_start(&h, h.p, &th);
	CHECK_INT(pthread_create(&adv, NULL, advance_when_waiting, h.p), ==, 0);
	CHECK_INT(keel_policy_execute(h.p, op_ok, NULL, NULL, &o), ==,
		  KEEL_EBULKHEAD_FULL);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_BULKHEAD);
	CHECK_INT(o.attempts, ==, 0);
	pthread_join(adv, NULL);
	CHECK_INT(keel_bulkhead_waiting(h.p), ==, 0);
	holder_stop(&h, th);
	CHECK_INT(keel_bulkhead_in_flight(h.p), ==, 0);
	check_invariant(h.p);
	keel_policy_free(h.p);
}

struct canceller {
	struct keel_policy *p;
	struct keel_cancel *tok;
};

static void *cancel_when_waiting(void *arg)
{
	struct canceller *c = arg;

	wait_for_waiters(c->p, 1);
	keel_cancel_cancel(c->tok, 0);
	return NULL;
}

/* A cancel ends the wait at once, on the system clock (whose wait sleeps
 * on the token's condition variable) and on a manual virtual clock. */
TEST(cancel_wakes_a_waiter)
{
	int round;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	for (round = 0; round < 2; round++) {
		const struct keel_clock *clk = round == 0 ? NULL : &vc.clock;
		struct keel_cancel tok;
		struct canceller c;
		struct holder h;
		pthread_t th, can;
		struct keel_outcome o;
		double t0;

		h.p = make(clk, 1, 60 * KEEL_SEC, 0);
		holder_start(&h, h.p, &th);
		keel_cancel_init(&tok, clk, NULL);
		c.p = h.p;
		c.tok = &tok;
		CHECK_INT(pthread_create(&can, NULL, cancel_when_waiting, &c),
			  ==, 0);
		t0 = keel_test_now();
		CHECK_INT(keel_policy_execute(h.p, op_ok, NULL, &tok, &o), ==,
			  -ECANCELED);
		CHECK(keel_test_now() - t0 < 5.0);
		CHECK_INT(o.decided_by, ==, KEEL_POLICY_BULKHEAD);
		CHECK_INT(o.attempts, ==, 0);
		pthread_join(can, NULL);
		CHECK_INT(keel_bulkhead_waiting(h.p), ==, 0);
		holder_stop(&h, th);
		CHECK_INT(keel_bulkhead_in_flight(h.p), ==, 0);
		check_invariant(h.p);
		keel_cancel_destroy(&tok);
		keel_policy_free(h.p);
	}
}

struct waiter_thread {
	struct keel_policy *p;
	int code;
};

static void *wait_thread(void *arg)
{
	struct waiter_thread *w = arg;

	w->code = keel_policy_execute(w->p, op_ok, NULL, NULL, NULL);
	return NULL;
}

TEST(max_waiting_rejects_at_once)
{
	struct waiter_thread w;
	struct holder h;
	pthread_t th, wt;
	unsigned waits;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	h.p = make(&vc.clock, 1, KEEL_SEC, 1);
	holder_start(&h, h.p, &th);
	w.p = h.p;
	CHECK_INT(pthread_create(&wt, NULL, wait_thread, &w), ==, 0);
	wait_for_waiters(h.p, 1);
	waits = keel_vclock_waits(&vc);
	/* One call waits already: the next is turned away without waiting. */
	CHECK_INT(keel_policy_execute(h.p, op_ok, NULL, NULL, NULL), ==,
		  KEEL_EBULKHEAD_FULL);
	CHECK_INT(keel_vclock_waits(&vc), ==, waits);
	holder_stop(&h, th); /* the slot goes to the waiter */
	pthread_join(wt, NULL);
	CHECK_INT(w.code, ==, 0);
	CHECK_INT(keel_bulkhead_in_flight(h.p), ==, 0);
	check_invariant(h.p);
	keel_policy_free(h.p);
}

/* ------------------------------------------------------------------------
 * Four threads
 * ------------------------------------------------------------------------ */

#define NTHREADS 4
#define NCALLS 2000

static int inside, max_inside; /* atomics */

static int op_count(struct keel_exec *x, void *arg)
{
	int n = __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
	int m = __atomic_load_n(&max_inside, __ATOMIC_RELAXED);

	(void)x;
	(void)arg;
	while (n > m && !__atomic_compare_exchange_n(&max_inside, &m, n, 1,
						     __ATOMIC_RELAXED,
						     __ATOMIC_RELAXED))
		;
	if ((uintptr_t)&n % 3 == 0)
		sched_yield();
	__atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
	return 0;
}

struct stress {
	struct keel_policy *p;
	int ok, full;
};

static void *stress_thread(void *arg)
{
	struct stress *s = arg;
	int i;

	for (i = 0; i < NCALLS; i++) {
		int code = keel_policy_execute(s->p, op_count, NULL, NULL,
					       NULL);

		if (code == 0)
			s->ok++;
		else if (code == KEEL_EBULKHEAD_FULL)
			s->full++;
	}
	return NULL;
}

static void run_stress(struct keel_policy *p, struct stress *s)
{
	pthread_t th[NTHREADS];
	int i;

	inside = max_inside = 0;
	for (i = 0; i < NTHREADS; i++) {
		s[i].p = p;
		s[i].ok = s[i].full = 0;
		CHECK_INT(pthread_create(&th[i], NULL, stress_thread, &s[i]),
			  ==, 0);
	}
	for (i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
}

TEST(four_threads_waiting_all_get_in)
{
	/* Every call waits as long as it takes: a lost wake-up would hang
	 * (and fail by the harness's timeout) or reject. */
	struct keel_policy *p = make(NULL, 2, 60 * KEEL_SEC, 0);
	struct stress s[NTHREADS];
	struct keel_policy_stats st;
	int i;

	run_stress(p, s);
	for (i = 0; i < NTHREADS; i++) {
		CHECK_INT(s[i].ok, ==, NCALLS);
		CHECK_INT(s[i].full, ==, 0);
	}
	CHECK_INT(max_inside, <=, 2);
	CHECK_INT(max_inside, >=, 1);
	CHECK_INT(keel_bulkhead_in_flight(p), ==, 0);
	CHECK_INT(keel_bulkhead_waiting(p), ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, NTHREADS * NCALLS);
	CHECK_INT(st.successes, ==, NTHREADS * NCALLS);
	keel_policy_free(p);
}

TEST(four_threads_without_waiting_never_exceed_the_limit)
{
	struct keel_policy *p = make(NULL, 2, 0, 0);
	struct stress s[NTHREADS];
	struct keel_policy_stats st;
	int i, ok = 0, full = 0;

	run_stress(p, s);
	for (i = 0; i < NTHREADS; i++) {
		ok += s[i].ok;
		full += s[i].full;
	}
	CHECK_INT(ok + full, ==, NTHREADS * NCALLS);
	CHECK_INT(max_inside, <=, 2);
	keel_policy_stats(p, &st);
	CHECK_INT(st.successes, ==, ok);
	CHECK_INT(st.rejections, ==, full);
	CHECK_INT(keel_bulkhead_in_flight(p), ==, 0);
	check_invariant(p);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Manual use
 * ------------------------------------------------------------------------ */

TEST(manual_acquire_and_release)
{
	struct keel_policy *p, *other;
	struct keel_policy_stats st;
	struct keel_timeout_config tc;

	keel_vclock_init(&vc, 0);
	p = make(&vc.clock, 2, 40, 0);
	CHECK_INT(keel_bulkhead_try_acquire(p), ==, 0);
	CHECK_INT(keel_bulkhead_acquire(p, NULL), ==, 0);
	CHECK_INT(keel_bulkhead_in_flight(p), ==, 2);
	CHECK_INT(keel_bulkhead_try_acquire(p), ==, KEEL_EBULKHEAD_FULL);
	/* acquire waits max_wait (auto-advance: at once) and gives up. */
	CHECK_INT(keel_bulkhead_acquire(p, NULL), ==, KEEL_EBULKHEAD_FULL);
	CHECK_INT(keel_vclock_slept(&vc), ==, 40);
	CHECK_INT(keel_bulkhead_release(p), ==, 0);
	CHECK_INT(keel_bulkhead_release(p), ==, 0);
	CHECK_INT(keel_bulkhead_release(p), ==, -EINVAL); /* none held */
	CHECK_INT(keel_bulkhead_in_flight(p), ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 0); /* manual use is not counted */
	CHECK_INT(st.rejections, ==, 0);

	keel_timeout_config_init(&tc);
	CHECK_INT(keel_timeout_new(&tc, &other), ==, 0);
	CHECK_INT(keel_bulkhead_try_acquire(other), ==, -EINVAL);
	CHECK_INT(keel_bulkhead_acquire(other, NULL), ==, -EINVAL);
	CHECK_INT(keel_bulkhead_release(other), ==, -EINVAL);
	CHECK_INT(keel_bulkhead_in_flight(other), ==, -EINVAL);
	CHECK_INT(keel_bulkhead_waiting(NULL), ==, -EINVAL);
	keel_policy_free(other);
	keel_policy_free(p);
}

TEST(manual_release_hands_the_slot_to_a_waiter)
{
	struct waiter_thread w;
	pthread_t wt;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	w.p = make(&vc.clock, 1, KEEL_SEC, 0);
	CHECK_INT(keel_bulkhead_try_acquire(w.p), ==, 0);
	CHECK_INT(pthread_create(&wt, NULL, wait_thread, &w), ==, 0);
	wait_for_waiters(w.p, 1);
	CHECK_INT(keel_bulkhead_release(w.p), ==, 0);
	pthread_join(wt, NULL);
	CHECK_INT(w.code, ==, 0);
	CHECK_INT(keel_bulkhead_in_flight(w.p), ==, 0);
	keel_policy_free(w.p);
}
