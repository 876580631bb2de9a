/* KEEL_TEST_LABELS: threads */
/*
 * tests/resilience/test_chaos.c - each kind of injected harm at rate 1 and
 * 0, reproducible decisions from a seed, switching at run time from other
 * threads, and a real NULL dereference recovered as an ordinary panic.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include <keel.h>
#include <keel/chaos.h>
#include <keel/pipeline.h>
#include <keel/timeout.h>
#include "keel_test.h"

#define NIL_MSG                                                               \
	"runtime error: invalid memory address or nil pointer dereference"

static struct keel_vclock vc;
static int ran, cleaned; /* atomics */

static void cleanup(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&cleaned, 1, __ATOMIC_RELAXED);
}

/* The real call: registers a cleanup, counts, returns arg as its code. */
static int op_real(struct keel_exec *x, void *arg)
{
	keel_defer(cleanup, NULL);
	__atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
	x->result = "real";
	return (int)(intptr_t)arg;
}

static int op_panic(struct keel_exec *x, void *arg)
{
	(void)x;
	keel_panic(arg);
}

static void base_config(struct keel_chaos_config *cfg,
			enum keel_chaos_kind kind, double rate)
{
	keel_chaos_config_init(cfg);
	cfg->clock = &vc.clock;
	cfg->kind = kind;
	cfg->rate = rate;
}

static struct keel_policy *make(enum keel_chaos_kind kind, double rate)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;

	base_config(&cfg, kind, rate);
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	return p;
}

static int run(struct keel_policy *p, struct keel_outcome *o)
{
	return keel_policy_execute(p, op_real, NULL, NULL, o);
}

static void check_stats(struct keel_policy *p, uint64_t calls,
			uint64_t injected)
{
	struct keel_policy_stats st;

	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, calls);
	CHECK_INT(st.injected, ==, injected);
	CHECK_INT(st.calls, ==, st.successes + st.failures + st.panics);
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

static int change_none(struct keel_exec *x, int code, void *ud)
{
	(void)x;
	(void)ud;
	return code;
}

TEST(config_defaults_and_bad_config)
{
	struct keel_chaos_config cfg, bad;
	struct keel_policy *p = (void *)1;

	keel_chaos_config_init(&cfg);
	CHECK(cfg.name == NULL);
	CHECK(cfg.clock == NULL);
	CHECK(cfg.on_event == NULL);
	CHECK_INT(cfg.kind, ==, KEEL_CHAOS_ERROR);
	CHECK(cfg.rate == 0.1);
	CHECK_INT(cfg.enabled, ==, 1);
	CHECK_INT(cfg.seed, ==, 0);
	CHECK(cfg.panic_msg == NULL);
	CHECK_INT(cfg.error_code, ==, KEEL_ECHAOS);
	CHECK_INT(cfg.latency, ==, 100 * KEEL_MSEC);
	CHECK(cfg.change == NULL);

	CHECK_INT(keel_chaos_new(NULL, &p), ==, -EINVAL);
	CHECK(p == NULL);
	CHECK_INT(keel_chaos_new(&cfg, NULL), ==, -EINVAL);
#define BAD(field, value)                                                     \
	do {                                                                  \
		bad = cfg;                                                    \
		bad.field = value;                                            \
		p = (void *)1;                                                \
		CHECK_INT(keel_chaos_new(&bad, &p), ==, -EINVAL);             \
		CHECK(p == NULL);                                             \
	} while (0)
	BAD(rate, -0.1);
	BAD(rate, 1.5);
	BAD(rate, NAN);
	BAD(error_code, 0);
	BAD(error_code, 5);
	BAD(kind, (enum keel_chaos_kind)42);
	BAD(kind, KEEL_CHAOS_RESULT); /* no change function */
	cfg.kind = KEEL_CHAOS_LATENCY;
	BAD(latency, 0);
#undef BAD
	keel_test_leak_check();

	cfg.kind = KEEL_CHAOS_RESULT;
	cfg.change = change_none;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_CHAOS);
	CHECK_STR(keel_policy_name(p), "chaos");
	CHECK_INT(keel_chaos_enabled(p), ==, 1);
	CHECK(keel_chaos_rate(p) == 0.1);
	keel_policy_free(p);
}

TEST(name_and_message_are_copied)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;
	char name[16], msg[32];

	keel_vclock_init(&vc, 0);
	snprintf(name, sizeof(name), "gameday");
	snprintf(msg, sizeof(msg), "injected by the test");
	base_config(&cfg, KEEL_CHAOS_PANIC, 1.0);
	cfg.name = name;
	cfg.panic_msg = msg;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	memset(name, 0, sizeof(name));
	memset(msg, 0, sizeof(msg));
	CHECK_STR(keel_policy_name(p), "gameday");
	CHECK_INT(run(p, &o), ==, KEEL_EPANIC);
	CHECK_STR(o.panic_msg, "injected by the test");
	keel_policy_free(p);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Each kind at rate 1 (always) and 0 (never)
 * ------------------------------------------------------------------------ */

TEST(error_at_rate_one)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_CHAOS_ERROR, 1.0);
	CHECK_INT(run(p, &o), ==, KEEL_ECHAOS);
	CHECK_INT(o.panicked, ==, 0);
	CHECK_INT(o.attempts, ==, 1); /* looks like the call's own failure */
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_NONE);
	CHECK(o.result == NULL);
	CHECK_INT(ran, ==, 0); /* the real call never ran */
	check_stats(p, 1, 1);
	keel_policy_free(p);

	base_config(&cfg, KEEL_CHAOS_ERROR, 1.0);
	cfg.error_code = -ECONNREFUSED;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	CHECK_INT(run(p, &o), ==, -ECONNREFUSED);
	keel_policy_free(p);
}

TEST(panic_at_rate_one)
{
	struct keel_policy *p;
	struct keel_outcome o;
	int i;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_CHAOS_PANIC, 1.0);
	for (i = 0; i < 3; i++) {
		CHECK_INT(run(p, &o), ==, KEEL_EPANIC);
		CHECK_INT(o.panicked, ==, 1);
		CHECK_INT(o.panic_kind, ==, KEEL_PANIC_MESSAGE);
		CHECK_STR(o.panic_msg, "chaos: injected panic");
		CHECK_INT(o.attempts, ==, 1);
	}
	CHECK_INT(ran, ==, 0);
	CHECK_INT(cleaned, ==, 0); /* the call never started: no cleanups */
	check_stats(p, 3, 3);
	{
		struct keel_policy_stats st;

		keel_policy_stats(p, &st);
		CHECK_INT(st.panics, ==, 3);
	}
	keel_policy_free(p);
}

TEST(fault_is_recovered_as_a_nil_dereference_panic)
{
	struct keel_policy *p;
	struct keel_outcome o;
	int i;

#ifdef KEEL_TEST_TSAN
	KEEL_TEST_SKIP("TSan cannot follow the jump out of a signal handler");
#endif
	keel_vclock_init(&vc, 0);
	p = make(KEEL_CHAOS_FAULT, 1.0);
	/* Several in a row: each fault leaves the signal unblocked. */
	for (i = 0; i < 3; i++) {
		CHECK_INT(run(p, &o), ==, KEEL_EPANIC);
		CHECK_INT(o.panicked, ==, 1);
		CHECK_INT(o.panic_kind, ==, KEEL_PANIC_NIL_DEREF);
		CHECK_STR(o.panic_msg, NIL_MSG);
	}
	CHECK_INT(ran, ==, 0);
	CHECK_INT(cleaned, ==, 0); /* the call never started: no cleanups */
	check_stats(p, 3, 3);
	/* The thread is fine afterwards. */
	CHECK_INT(keel_chaos_set_rate(p, 0.0), ==, 0);
	CHECK_INT(run(p, &o), ==, 0);
	CHECK_INT(ran, ==, 1);
	CHECK_INT(cleaned, ==, 1);
	keel_policy_free(p);
}

TEST(latency_delays_then_runs_the_call)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	base_config(&cfg, KEEL_CHAOS_LATENCY, 1.0);
	cfg.latency = 250 * KEEL_MSEC;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	CHECK_INT(run(p, &o), ==, 0);
	CHECK_STR(o.result, "real");
	CHECK_INT(ran, ==, 1);
	CHECK_INT(keel_vclock_slept(&vc), ==, 250 * KEEL_MSEC);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 250 * KEEL_MSEC);
	check_stats(p, 1, 1);
	keel_policy_free(p);
}

TEST(latency_ends_at_the_deadline)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;
	struct keel_cancel tok;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	base_config(&cfg, KEEL_CHAOS_LATENCY, 1.0);
	cfg.latency = KEEL_SEC;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, 40 * KEEL_MSEC);
	CHECK_INT(keel_policy_execute(p, op_real, NULL, &tok, &o), ==,
		  -ETIMEDOUT);
	CHECK_INT(ran, ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 40 * KEEL_MSEC);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}

TEST(latency_ends_at_a_timeout_outside)
{
	struct keel_timeout_config tc;
	struct keel_policy *t, *c, *both[2];
	struct keel_chaos_config cfg;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_timeout_config_init(&tc);
	tc.clock = &vc.clock;
	tc.timeout = 30 * KEEL_MSEC;
	CHECK_INT(keel_timeout_new(&tc, &t), ==, 0);
	base_config(&cfg, KEEL_CHAOS_LATENCY, 1.0);
	cfg.latency = KEEL_SEC;
	CHECK_INT(keel_chaos_new(&cfg, &c), ==, 0);
	both[0] = t;
	both[1] = c;
	CHECK_INT(keel__execute(both, 2, &vc.clock, op_real, NULL, NULL, &o),
		  ==, -ETIMEDOUT);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_TIMEOUT);
	CHECK_INT(ran, ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 30 * KEEL_MSEC);
	keel_policy_free(c);
	keel_policy_free(t);
}

struct latency_call {
	struct keel_policy *p;
	struct keel_cancel *tok;
	int code;
};

static void *latency_thread(void *arg)
{
	struct latency_call *l = arg;

	l->code = keel_policy_execute(l->p, op_real, NULL, l->tok, NULL);
	return NULL;
}

TEST(latency_observes_cancel)
{
	struct latency_call l;
	struct keel_cancel tok;
	pthread_t th;
	int i;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0); /* the wait blocks */
	l.p = make(KEEL_CHAOS_LATENCY, 1.0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	l.tok = &tok;
	CHECK_INT(pthread_create(&th, NULL, latency_thread, &l), ==, 0);
	for (i = 0; i < 5000 && keel_vclock_waits(&vc) == 0; i++)
		usleep(1000);
	CHECK_INT(keel_vclock_waits(&vc), ==, 1);
	keel_cancel_cancel(&tok, 0);
	pthread_join(th, NULL);
	CHECK_INT(l.code, ==, -ECANCELED);
	CHECK_INT(ran, ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(l.p);
}

/* Turns a success into -EIO and replaces the result; logs what it saw. */
static int change_flip(struct keel_exec *x, int code, void *ud)
{
	keel_test_ev_addf("change:%d:%s", code, (const char *)x->result);
	x->result = ud;
	return code == 0 ? -EIO : 0;
}

TEST(result_changes_the_real_outcome)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	base_config(&cfg, KEEL_CHAOS_RESULT, 1.0);
	cfg.change = change_flip;
	cfg.change_ud = "changed";
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	CHECK_INT(run(p, &o), ==, -EIO);
	CHECK_STR(o.result, "changed");
	CHECK_INT(ran, ==, 1); /* the real call ran, with its cleanups */
	CHECK_INT(cleaned, ==, 1);
	CHECK_INT(keel_policy_execute(p, op_real, (void *)(intptr_t)-EPIPE,
				      NULL, &o), ==, 0);
	CHECK_STR(keel_test_ev, "change:0:real,change:-32:real");
	/* A call that panics is not changed. */
	CHECK_INT(keel_policy_execute(p, op_panic, "real panic", NULL, &o), ==,
		  KEEL_EPANIC);
	CHECK_STR(o.panic_msg, "real panic");
	CHECK_STR(keel_test_ev, "change:0:real,change:-32:real");
	check_stats(p, 3, 3);
	keel_policy_free(p);
}

TEST(rate_zero_never_injects)
{
	static const enum keel_chaos_kind kinds[] = {
		KEEL_CHAOS_ERROR, KEEL_CHAOS_PANIC, KEEL_CHAOS_FAULT,
		KEEL_CHAOS_LATENCY,
	};
	struct keel_outcome o;
	size_t k;
	int i;

	keel_vclock_init(&vc, 0);
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct keel_policy *p = make(kinds[k], 0.0);

		for (i = 0; i < 1000; i++) {
			CHECK_INT(run(p, &o), ==, 0);
			CHECK_STR(o.result, "real");
		}
		check_stats(p, 1000, 0);
		keel_policy_free(p);
	}
	CHECK_INT(ran, ==, 4000);
	CHECK_INT(keel_vclock_slept(&vc), ==, 0);
}

/* ------------------------------------------------------------------------
 * Where the harm happens
 * ------------------------------------------------------------------------ */

TEST(injected_panic_is_caught_at_the_innermost_layer)
{
	/* Chaos outside a timeout (keep_order): the harm still happens in
	 * the call's place, inside the timeout, and is an ordinary outcome. */
	struct keel_pipeline_config pc;
	struct keel_timeout_config tc;
	struct keel_policy *t, *c;
	struct keel_pipeline *pl;
	struct keel_policy_stats st;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_timeout_config_init(&tc);
	tc.clock = &vc.clock;
	CHECK_INT(keel_timeout_new(&tc, &t), ==, 0);
	c = make(KEEL_CHAOS_PANIC, 1.0);
	keel_pipeline_config_init(&pc);
	pc.clock = &vc.clock;
	pc.keep_order = 1;
	pc.owns_policies = 1;
	keel_pipeline_config_add(&pc, c);
	keel_pipeline_config_add(&pc, t);
	CHECK_INT(keel_pipeline_new(&pc, &pl), ==, 0);
	CHECK_INT(keel_pipeline_execute(pl, op_real, NULL, NULL, &o), ==,
		  KEEL_EPANIC);
	CHECK_STR(o.panic_msg, "chaos: injected panic");
	keel_policy_stats(t, &st);
	CHECK_INT(st.panics, ==, 1); /* the timeout saw the call panic */
	CHECK_INT(ran, ==, 0);
	keel_pipeline_free(pl);
}

/* Listener: logs "type:kind:code:delay:from". */
static void on_event(const struct keel_event *ev, void *ud)
{
	(void)ud;
	keel_test_ev_addf("%s:%s:%d:%lld:%d", keel_event_type_name(ev->type),
			  keel_policy_kind_name(ev->kind), ev->code,
			  (long long)ev->delay, ev->from);
}

TEST(injection_emits_an_event)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;
	char want[256];

	keel_vclock_init(&vc, 0);
	base_config(&cfg, KEEL_CHAOS_LATENCY, 1.0);
	cfg.latency = 7;
	cfg.on_event = on_event;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	run(p, NULL);
	keel_policy_free(p);
	base_config(&cfg, KEEL_CHAOS_ERROR, 1.0);
	cfg.on_event = on_event;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	run(p, NULL);
	keel_chaos_enable(p, 0);
	run(p, NULL);
	keel_policy_free(p);
	snprintf(want, sizeof(want),
		 "injected:chaos:0:7:%d,success:chaos:0:0:0,"
		 "injected:chaos:%d:0:%d,failure:chaos:%d:0:0,"
		 "success:chaos:0:0:0",
		 KEEL_CHAOS_LATENCY, KEEL_ECHAOS, KEEL_CHAOS_ERROR,
		 KEEL_ECHAOS);
	CHECK_STR(keel_test_ev, want);
}

/* ------------------------------------------------------------------------
 * Randomness: rate, seeds, reproducibility
 * ------------------------------------------------------------------------ */

/* n calls; returns the pattern of injections as "x" and "." */
static void pattern(struct keel_policy *p, int n, char *buf)
{
	int i;

	for (i = 0; i < n; i++)
		buf[i] = run(p, NULL) == KEEL_ECHAOS ? 'x' : '.';
	buf[n] = '\0';
}

static struct keel_policy *make_seeded(double rate, uint64_t seed)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;

	base_config(&cfg, KEEL_CHAOS_ERROR, rate);
	cfg.seed = seed;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	return p;
}

TEST(same_seed_same_decisions)
{
	char a[201], b[201], c[201];
	struct keel_policy *p, *q, *r;
	int x = 0, i;

	keel_vclock_init(&vc, 0);
	p = make_seeded(0.3, 42);
	q = make_seeded(0.3, 42);
	r = make_seeded(0.3, 43);
	pattern(p, 200, a);
	pattern(q, 200, b);
	pattern(r, 200, c);
	CHECK_STR(a, b);
	CHECK(strcmp(a, c) != 0);
	for (i = 0; i < 200; i++)
		x += a[i] == 'x';
	CHECK_INT(x, >, 30); /* 60 expected */
	CHECK_INT(x, <, 90);
	keel_policy_free(p);
	keel_policy_free(q);
	keel_policy_free(r);

	/* A new policy with the same seed repeats it too. */
	p = make_seeded(0.3, 42);
	pattern(p, 200, b);
	CHECK_STR(a, b);
	keel_policy_free(p);
}

TEST(rate_is_respected_over_many_calls)
{
	static const double rates[] = { 0.01, 0.1, 0.5, 0.9 };
	struct keel_policy_stats st;
	size_t k;

	keel_vclock_init(&vc, 0);
	for (k = 0; k < sizeof(rates) / sizeof(rates[0]); k++) {
		struct keel_policy *p = make_seeded(rates[k], 7);
		double got;
		int i;

		for (i = 0; i < 20000; i++)
			run(p, NULL);
		keel_policy_stats(p, &st);
		got = (double)st.injected / 20000.0;
		/* 20000 draws: a standard deviation under 0.0036 */
		if (fabs(got - rates[k]) > 0.02)
			KEEL_TEST_FAIL("rate %.2f: injected %.4f", rates[k],
				       got);
		CHECK_INT(st.failures, ==, st.injected);
		keel_policy_free(p);
	}
}

TEST(disabled_calls_draw_nothing)
{
	char a[21], b[11], c[11], d[11];
	struct keel_policy *p, *q;

	keel_vclock_init(&vc, 0);
	p = make_seeded(0.5, 9);
	q = make_seeded(0.5, 9);
	pattern(p, 20, a);
	pattern(q, 10, b);
	CHECK_INT(keel_chaos_enable(q, 0), ==, 0);
	CHECK_INT(keel_chaos_enabled(q), ==, 0);
	pattern(q, 10, c);
	CHECK_STR(c, "..........");
	CHECK_INT(keel_chaos_enable(q, 1), ==, 0);
	pattern(q, 10, d);
	CHECK(memcmp(a, b, 10) == 0);
	CHECK(memcmp(a + 10, d, 10) == 0); /* the sequence just resumed */
	keel_policy_free(p);
	keel_policy_free(q);
}

/* ------------------------------------------------------------------------
 * Switching at run time
 * ------------------------------------------------------------------------ */

TEST(created_disabled)
{
	struct keel_chaos_config cfg;
	struct keel_policy *p;

	keel_vclock_init(&vc, 0);
	base_config(&cfg, KEEL_CHAOS_PANIC, 1.0);
	cfg.enabled = 0;
	CHECK_INT(keel_chaos_new(&cfg, &p), ==, 0);
	CHECK_INT(keel_chaos_enabled(p), ==, 0);
	CHECK_INT(run(p, NULL), ==, 0);
	CHECK_INT(keel_chaos_enable(p, 1), ==, 0);
	CHECK_INT(run(p, NULL), ==, KEEL_EPANIC);
	check_stats(p, 2, 1);
	keel_policy_free(p);
}

TEST(switches_take_effect_at_once)
{
	struct keel_policy *p, *t;
	struct keel_timeout_config tc;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_CHAOS_ERROR, 1.0);
	CHECK_INT(run(p, NULL), ==, KEEL_ECHAOS);
	CHECK_INT(keel_chaos_enable(p, 0), ==, 0);
	CHECK_INT(run(p, NULL), ==, 0);
	CHECK_INT(keel_chaos_enable(p, 7), ==, 0); /* any non-zero is on */
	CHECK_INT(keel_chaos_enabled(p), ==, 1);
	CHECK_INT(run(p, NULL), ==, KEEL_ECHAOS);
	CHECK_INT(keel_chaos_set_rate(p, 0.0), ==, 0);
	CHECK(keel_chaos_rate(p) == 0.0);
	CHECK_INT(run(p, NULL), ==, 0);
	CHECK_INT(keel_chaos_set_rate(p, 1.0), ==, 0);
	CHECK_INT(run(p, NULL), ==, KEEL_ECHAOS);
	CHECK_INT(keel_chaos_set_rate(p, 1.01), ==, -EINVAL);
	CHECK_INT(keel_chaos_set_rate(p, -0.5), ==, -EINVAL);
	CHECK_INT(keel_chaos_set_rate(p, NAN), ==, -EINVAL);
	CHECK(keel_chaos_rate(p) == 1.0); /* unchanged */
	CHECK_INT(keel_chaos_set_rate(p, 0.25), ==, 0);
	CHECK(keel_chaos_rate(p) == 0.25);
	check_stats(p, 5, 3);

	keel_timeout_config_init(&tc);
	CHECK_INT(keel_timeout_new(&tc, &t), ==, 0);
	CHECK_INT(keel_chaos_enable(t, 1), ==, -EINVAL);
	CHECK_INT(keel_chaos_set_rate(t, 0.5), ==, -EINVAL);
	CHECK_INT(keel_chaos_enabled(t), ==, -EINVAL);
	CHECK(keel_chaos_rate(t) == -1.0);
	CHECK(keel_chaos_rate(NULL) == -1.0);
	keel_policy_free(t);
	keel_policy_free(p);
}

#define NTHREADS 4
#define NCALLS 5000

struct worker {
	struct keel_policy *p;
	int injected, clean;
};

static int stop; /* atomic */

static void *worker_thread(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < NCALLS; i++) {
		if (keel_policy_execute(w->p, op_real, NULL, NULL, NULL) == 0)
			w->clean++;
		else
			w->injected++;
	}
	return NULL;
}

static void *switch_thread(void *arg)
{
	struct keel_policy *p = arg;
	unsigned i = 0;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		keel_chaos_enable(p, i % 3 != 0);
		keel_chaos_set_rate(p, (double)(i % 5) / 4.0);
		i++;
		sched_yield();
	}
	return NULL;
}

TEST(four_threads_while_another_switches)
{
	struct keel_policy *p;
	struct worker w[NTHREADS];
	pthread_t th[NTHREADS], sw;
	struct keel_policy_stats st;
	int i, injected = 0, clean = 0;

	keel_vclock_init(&vc, 0);
	p = make(KEEL_CHAOS_ERROR, 0.5);
	CHECK_INT(pthread_create(&sw, NULL, switch_thread, p), ==, 0);
	for (i = 0; i < NTHREADS; i++) {
		w[i].p = p;
		w[i].injected = w[i].clean = 0;
		CHECK_INT(pthread_create(&th[i], NULL, worker_thread, &w[i]),
			  ==, 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		injected += w[i].injected;
		clean += w[i].clean;
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(sw, NULL);
	keel_policy_stats(p, &st);
	CHECK_INT(injected + clean, ==, NTHREADS * NCALLS);
	CHECK_INT(st.injected, ==, injected);
	CHECK_INT(st.failures, ==, injected);
	CHECK_INT(st.successes, ==, clean);
	CHECK_INT(ran, ==, clean);
	/* And it settles: off means off, from the next call on. */
	keel_chaos_enable(p, 0);
	for (i = 0; i < 100; i++)
		CHECK_INT(run(p, NULL), ==, 0);
	keel_policy_free(p);
}
