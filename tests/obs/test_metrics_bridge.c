/* KEEL_TEST_LABELS: threads */
/*
 * tests/obs/test_metrics_bridge.c - policies and pools as metrics: real
 * policies that retry, open, fall back, time out, reject and inject, a real
 * pool whose tasks panic, and the rendered numbers compared with
 * keel_policy_stats and keel_pool_stats; bridges removed while renders run.
 *
 * Every rendering goes through the exposition checker of expo_check.h.
 */
#include "obs/expo_check.h"

#include <keel/breaker.h>
#include <keel/budget.h>
#include <keel/bulkhead.h>
#include <keel/chaos.h>
#include <keel/fallback.h>
#include <keel/pipeline.h>
#include <keel/pool.h>
#include <keel/ratelimit.h>
#include <keel/retry.h>
#include <keel/timeout.h>

#define MS (1000 * 1000LL)

static struct keel_vclock vc;

static struct keel_metrics *new_reg(void)
{
	struct keel_metrics *reg = NULL;

	CHECK_INT(keel_metrics_new(NULL, &reg), ==, 0);
	return reg;
}

/* Every series of p equals keel_policy_stats(p). */
static void check_policy(const struct expo *e, struct keel_policy *p)
{
	static const char *const extra[KEEL_POLICY__COUNT] = {
		[KEEL_POLICY_RETRY] = "keel_policy_retries_total",
		[KEEL_POLICY_TIMEOUT] = "keel_policy_timeouts_total",
		[KEEL_POLICY_FALLBACK] = "keel_policy_fallbacks_total",
		[KEEL_POLICY_CHAOS] = "keel_policy_injected_total",
	};
	const char *name = keel_policy_name(p);
	const char *kind = keel_policy_kind_name(keel_policy_kind(p));
	struct keel_policy_stats st;

	keel_policy_stats(p, &st);
#define OUTCOME(o) EXPO_VALUE(e, "keel_policy_calls_total", "policy", name, \
			      "kind", kind, "outcome", o, NULL)
	CHECK(OUTCOME("success") == (double)st.successes);
	CHECK(OUTCOME("failure") == (double)st.failures);
	CHECK(OUTCOME("panic") == (double)st.panics);
	CHECK(OUTCOME("rejected") == (double)st.rejections);
#undef OUTCOME
	if (extra[keel_policy_kind(p)] != NULL) {
		uint64_t want = keel_policy_kind(p) == KEEL_POLICY_RETRY ? st.retries :
				keel_policy_kind(p) == KEEL_POLICY_TIMEOUT ? st.timeouts :
				keel_policy_kind(p) == KEEL_POLICY_FALLBACK ? st.fallbacks :
									     st.injected;

		CHECK(EXPO_VALUE(e, extra[keel_policy_kind(p)], "policy", name,
				 "kind", kind, NULL) == (double)want);
	}
	if (keel_policy_kind(p) == KEEL_POLICY_BREAKER) {
		const char *const *s;
		double transitions = 0;
		int i;

		CHECK(EXPO_VALUE(e, "keel_breaker_state", "policy", name, NULL) ==
		      (double)keel_breaker_state(p));
		for (i = 0; i < e->n; i++)
			if (strcmp(e->s[i].name, "keel_breaker_transitions_total") == 0 &&
			    strcmp(expo_label(&e->s[i], "policy"), name) == 0)
				transitions += e->s[i].v;
		CHECK(transitions == (double)st.transitions);
		(void)s;
	}
}

/* No series of the policy of this name and kind is left. */
static void check_gone(const struct expo *e, const char *name, const char *kind)
{
	int i;

	for (i = 0; i < e->n; i++) {
		const char *pol = expo_label(&e->s[i], "policy");
		const char *k = expo_label(&e->s[i], "kind");

		if (k == NULL) /* the breaker's own families */
			k = "breaker";
		if (pol != NULL && strcmp(pol, name) == 0 && strcmp(k, kind) == 0)
			KEEL_TEST_FAIL("series %s of %s still there", e->s[i].name, name);
	}
}

static void check_rendered(struct keel_metrics *reg,
			   struct keel_policy *const *ps, int n)
{
	struct expo e;
	char *text = render_checked(reg, &e);
	int i;

	for (i = 0; i < n; i++)
		check_policy(&e, ps[i]);
	expo_free(&e);
	free(text);
}

/* ------------------------------------------------------------------------
 * Protected calls
 * ------------------------------------------------------------------------ */

struct op {
	int fail_first; /* attempts that fail before one succeeds */
	int mode;       /* 0 as above, 1 always -EIO, 2 always panic,
			 * 3 succeed after sleeping 2 s on the vclock */
	int calls;
};

static int op_fn(struct keel_exec *x, void *arg)
{
	struct op *o = arg;

	o->calls++;
	switch (o->mode) {
	case 1:
		return -EIO;
	case 2:
		keel_panic("op exploded");
	case 3:
		keel_vclock_advance(&vc, 2000 * MS);
		return 0;
	}
	return o->calls <= o->fail_first ? -ECONNREFUSED : 0;
}

static int run(struct keel_policy *p, int fail_first, int mode)
{
	struct op o = { fail_first, mode, 0 };

	return keel_policy_execute(p, op_fn, &o, NULL, NULL);
}

static struct keel_policy *new_retry(const char *name)
{
	struct keel_retry_config cfg;
	struct keel_policy *p;

	keel_retry_config_init(&cfg);
	cfg.name = name;
	cfg.clock = &vc.clock;
	cfg.max_attempts = 3;
	cfg.backoff.kind = KEEL_BACKOFF_CONSTANT;
	cfg.backoff.initial = 10 * MS;
	cfg.backoff.jitter = KEEL_JITTER_NONE;
	CHECK_INT(keel_retry_new(&cfg, &p), ==, 0);
	return p;
}

/* ------------------------------------------------------------------------
 * Policies
 * ------------------------------------------------------------------------ */

TEST(retry_that_retries)
{
	struct keel_metrics *reg = new_reg();
	struct keel_policy *p;
	struct keel_policy_stats st;
	struct expo e;
	char *text;

	keel_vclock_init(&vc, 0);
	p = new_retry("fetch");
	CHECK_INT(keel_metrics_bridge_policy(reg, p), ==, 0);
	CHECK_INT(run(p, 2, 0), ==, 0);             /* 2 retries, success */
	CHECK_INT(run(p, 0, 2), ==, KEEL_EPANIC);   /* 2 retries, panic */
	CHECK_INT(run(p, 0, 1), ==, -EIO);          /* 2 retries, failure */
	CHECK_INT(run(p, 0, 0), ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.retries, ==, 6);
	CHECK_INT(st.successes, ==, 2);
	text = render_checked(reg, &e);
	check_policy(&e, p);
	CHECK(EXPO_VALUE(&e, "keel_policy_retries_total", "policy", "fetch",
			 "kind", "retry", NULL) == 6);
	CHECK(EXPO_VALUE(&e, "keel_policy_calls_total", "policy", "fetch", "kind",
			 "retry", "outcome", "panic", NULL) == 1);
	CHECK_CONTAINS(text, "# TYPE keel_policy_calls_total counter\n");
	CHECK(strstr(text, "keel_breaker_state") == NULL);
	expo_free(&e);
	free(text);
	CHECK_INT(keel_metrics_unbridge_policy(reg, p), ==, 0);
	CHECK_INT(keel_metrics_unbridge_policy(reg, p), ==, -ENOENT);
	text = render_checked(reg, &e);
	check_gone(&e, "fetch", "retry");
	expo_free(&e);
	free(text);
	keel_policy_free(p);
	keel_metrics_free(reg);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

static int user_events, user_states;

static void user_listener(const struct keel_event *ev, void *ud)
{
	CHECK(ud == &user_events);
	user_events++;
	if (ev->type == KEEL_EV_STATE)
		user_states++;
}

static struct keel_policy *new_breaker(const char *name, keel_event_fn fn,
				       void *ud)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;

	keel_breaker_config_init(&cfg);
	cfg.name = name;
	cfg.clock = &vc.clock;
	cfg.on_event = fn;
	cfg.event_ud = ud;
	cfg.consecutive_failures = 2;
	cfg.open_duration = 1000 * MS;
	cfg.half_open_calls = 1;
	CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
	return p;
}

static double transitions(struct keel_metrics *reg, const char *name,
			  const char *from, const char *to)
{
	struct expo e;
	char *text = render_checked(reg, &e);
	const struct expo_sample *s = expo_find(&e, "keel_breaker_transitions_total",
						"policy", name, "from", from,
						"to", to, NULL);
	double v = s != NULL ? s->v : -1;

	expo_free(&e);
	free(text);
	return v;
}

TEST(breaker_that_opens)
{
	struct keel_metrics *reg = new_reg();
	struct keel_policy *p;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	user_events = user_states = 0;
	p = new_breaker("payments", user_listener, &user_events);
	CHECK_INT(keel_metrics_bridge_policy(reg, p), ==, 0);
	check_rendered(reg, &p, 1);
	CHECK_INT(run(p, 0, 1), ==, -EIO);
	CHECK_INT(run(p, 0, 2), ==, KEEL_EPANIC); /* second failure: opens */
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_OPEN);
	CHECK_INT(run(p, 0, 0), ==, KEEL_EBREAKER_OPEN);
	CHECK_INT(run(p, 0, 0), ==, KEEL_EBREAKER_OPEN);
	check_rendered(reg, &p, 1);
	CHECK(transitions(reg, "payments", "closed", "open") == 1);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		CHECK(EXPO_VALUE(&e, "keel_breaker_state", "policy", "payments", NULL) == 1);
		CHECK(EXPO_VALUE(&e, "keel_policy_calls_total", "policy", "payments",
				 "kind", "breaker", "outcome", "rejected", NULL) == 2);
		expo_free(&e);
		free(text);
	}
	/* The open duration passes; a probe succeeds: half-open, closed. */
	keel_vclock_advance(&vc, 1000 * MS);
	CHECK_INT(run(p, 0, 0), ==, 0);
	CHECK_INT(keel_breaker_state(p), ==, KEEL_BREAKER_CLOSED);
	CHECK(transitions(reg, "payments", "open", "half-open") == 1);
	CHECK(transitions(reg, "payments", "half-open", "closed") == 1);
	keel_breaker_force_open(p);
	check_rendered(reg, &p, 1);
	CHECK(transitions(reg, "payments", "closed", "forced-open") == 1);
	/* The user's listener saw every event, the bridge's came first. */
	CHECK_INT(user_states, ==, 4);
	CHECK_INT(user_events, ==, 4 + 5);
	/* Unbridged: the series go, the user's listener is back alone. */
	CHECK_INT(keel_metrics_unbridge_policy(reg, p), ==, 0);
	CHECK(p->on_event == user_listener && p->event_ud == &user_events);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		check_gone(&e, "payments", "breaker");
		expo_free(&e);
		free(text);
	}
	keel_breaker_reset(p);
	CHECK_INT(user_states, ==, 5);
	keel_policy_free(p);
	keel_metrics_free(reg);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

TEST(every_kind_matches_stats)
{
	struct keel_metrics *reg = new_reg();
	struct keel_policy *ps[8];
	struct keel_fallback_config fb;
	struct keel_timeout_config to;
	struct keel_bulkhead_config bh;
	struct keel_ratelimit_config rl;
	struct keel_budget_config bu;
	struct keel_chaos_config ch;
	struct keel_pipeline_config pc;
	struct keel_pipeline *pl;
	int i;

	keel_vclock_init(&vc, 0);
	ps[0] = new_retry("r");
	ps[1] = new_breaker("b", NULL, NULL);
	keel_fallback_config_init(&fb);
	fb.name = "f";
	fb.clock = &vc.clock;
	keel_fallback_config_value(&fb, &fb);
	CHECK_INT(keel_fallback_new(&fb, &ps[2]), ==, 0);
	keel_timeout_config_init(&to);
	to.name = "t";
	to.clock = &vc.clock;
	CHECK_INT(keel_timeout_new(&to, &ps[3]), ==, 0);
	keel_bulkhead_config_init(&bh);
	bh.name = "bh";
	bh.clock = &vc.clock;
	bh.max_concurrent = 1;
	CHECK_INT(keel_bulkhead_new(&bh, &ps[4]), ==, 0);
	keel_ratelimit_config_init(&rl);
	rl.name = "rl";
	rl.clock = &vc.clock;
	rl.rate = 1;
	CHECK_INT(keel_ratelimit_new(&rl, &ps[5]), ==, 0);
	keel_budget_config_init(&bu);
	bu.name = "bu";
	bu.clock = &vc.clock;
	bu.max_tokens = 1;
	CHECK_INT(keel_budget_new(&bu, &ps[6]), ==, 0);
	keel_chaos_config_init(&ch);
	ch.name = "ch";
	ch.clock = &vc.clock;
	ch.rate = 1;
	CHECK_INT(keel_chaos_new(&ch, &ps[7]), ==, 0);
	for (i = 0; i < 8; i++)
		CHECK_INT(keel_metrics_bridge_policy(reg, ps[i]), ==, 0);
	check_rendered(reg, ps, 8);

	CHECK_INT(run(ps[0], 1, 0), ==, 0);              /* retry: 1 retry */
	CHECK_INT(run(ps[1], 0, 0), ==, 0);              /* breaker */
	CHECK_INT(run(ps[2], 0, 1), ==, 0);              /* fallback used */
	CHECK_INT(run(ps[2], 0, 2), ==, 0);              /* ... for a panic too */
	CHECK_INT(run(ps[3], 0, 3), ==, -ETIMEDOUT);     /* timeout fires */
	CHECK_INT(run(ps[3], 0, 0), ==, 0);
	CHECK_INT(keel_bulkhead_try_acquire(ps[4]), ==, 0);
	CHECK_INT(run(ps[4], 0, 0), ==, KEEL_EBULKHEAD_FULL);
	CHECK_INT(keel_bulkhead_release(ps[4]), ==, 0);
	CHECK_INT(run(ps[4], 0, 1), ==, -EIO);
	CHECK_INT(run(ps[5], 0, 0), ==, 0);
	CHECK_INT(run(ps[5], 0, 0), ==, KEEL_ERATE_LIMITED);
	CHECK_INT(run(ps[7], 0, 0), ==, KEEL_ECHAOS);    /* injected */
	check_rendered(reg, ps, 8);

	/* The budget refuses retries inside a retry: a pipeline of both. */
	keel_pipeline_config_init(&pc);
	pc.clock = &vc.clock;
	keel_pipeline_config_add(&pc, ps[0]);
	keel_pipeline_config_add(&pc, ps[6]);
	CHECK_INT(keel_pipeline_new(&pc, &pl), ==, 0);
	for (i = 0; i < 5; i++) {
		struct op o = { 0, 1, 0 };

		keel_pipeline_execute(pl, op_fn, &o, NULL, NULL);
	}
	{
		struct keel_policy_stats st;

		keel_policy_stats(ps[6], &st);
		CHECK(st.rejections > 0);
	}
	check_rendered(reg, ps, 8);
	keel_pipeline_free(pl);
	for (i = 0; i < 8; i++) {
		CHECK_INT(keel_metrics_unbridge_policy(reg, ps[i]), ==, 0);
		keel_policy_free(ps[i]);
	}
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		CHECK_INT(e.n, ==, 0);
		expo_free(&e);
		free(text);
	}
	keel_metrics_free(reg);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

TEST(pipeline_bridge)
{
	struct keel_metrics *reg = new_reg();
	struct keel_pipeline *pl;
	struct keel_policy *const *ps;
	int n, i;

	keel_vclock_init(&vc, 0);
	CHECK_INT(keel_pipeline_preset(KEEL_TIER_CORE, "svc", &vc.clock, &pl), ==, 0);
	n = keel_pipeline_policies(pl, &ps);
	CHECK_INT(n, ==, 2);
	CHECK_INT(keel_metrics_unbridge_pipeline(reg, pl), ==, -ENOENT);
	CHECK_INT(keel_metrics_bridge_pipeline(reg, pl), ==, 0);
	for (i = 0; i < 20; i++) {
		struct op o = { i % 3, 0, 0 };

		keel_pipeline_execute(pl, op_fn, &o, NULL, NULL);
	}
	check_rendered(reg, ps, n);
	/* A policy bridged on its own as well stays after the pipeline goes. */
	CHECK_INT(keel_metrics_bridge_policy(reg, ps[1]), ==, 0);
	CHECK_INT(keel_metrics_unbridge_pipeline(reg, pl), ==, 0);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		check_gone(&e, keel_policy_name(ps[0]),
			   keel_policy_kind_name(keel_policy_kind(ps[0])));
		check_policy(&e, ps[1]);
		expo_free(&e);
		free(text);
	}
	/* Not all bridged: nothing changes. */
	CHECK_INT(keel_metrics_unbridge_pipeline(reg, pl), ==, -ENOENT);
	CHECK_INT(keel_metrics_unbridge_policy(reg, ps[1]), ==, 0);
	CHECK_INT(keel_metrics_bridge_pipeline(NULL, pl), ==, -EINVAL);
	CHECK_INT(keel_metrics_bridge_pipeline(reg, NULL), ==, -EINVAL);
	keel_pipeline_free(pl);
	keel_metrics_free(reg);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

static void bridge_in_collector(struct keel_metrics *reg, void *ud)
{
	int *rc = ud;

	rc[0] = keel_metrics_bridge_policy(reg, *(struct keel_policy **)(rc + 2));
	rc[1] = keel_metrics_bridge_pool(reg, (struct keel_pool *)(void *)rc, "x");
}

TEST(bridge_errors)
{
	struct keel_metrics *reg = new_reg();
	struct keel_policy *a, *b, *br;
	struct keel_family *f;
	char *before, *after;
	struct {
		int rc[2];
		struct keel_policy *p;
	} nested = { { 1, 1 }, NULL };

	keel_vclock_init(&vc, 0);
	a = new_retry("same");
	b = new_retry("same");
	br = new_breaker("same", NULL, NULL); /* another kind: fine */
	CHECK_INT(keel_metrics_bridge_policy(NULL, a), ==, -EINVAL);
	CHECK_INT(keel_metrics_bridge_policy(reg, NULL), ==, -EINVAL);
	CHECK_INT(keel_metrics_unbridge_policy(reg, NULL), ==, -EINVAL);
	CHECK_INT(keel_metrics_bridge_policy(reg, a), ==, 0);
	CHECK_INT(keel_metrics_bridge_policy(reg, b), ==, -EEXIST);
	CHECK_INT(keel_metrics_bridge_policy(reg, br), ==, 0);
	/* The same policy again: a reference. */
	CHECK_INT(keel_metrics_bridge_policy(reg, a), ==, 0);
	CHECK_INT(keel_metrics_unbridge_policy(reg, a), ==, 0);
	check_rendered(reg, &a, 1);
	CHECK_INT(keel_metrics_unbridge_policy(reg, a), ==, 0);
	CHECK_INT(keel_metrics_unbridge_policy(reg, a), ==, -ENOENT);
	CHECK_INT(keel_metrics_unbridge_policy(reg, b), ==, -ENOENT);
	/* b may go in now that a is out. */
	CHECK_INT(keel_metrics_bridge_policy(reg, b), ==, 0);
	CHECK_INT(keel_metrics_unbridge_policy(reg, b), ==, 0);
	CHECK_INT(keel_metrics_unbridge_policy(reg, br), ==, 0);

	/* A family a bridge needs is taken: nothing of the bridge stays. */
	{
		struct keel_metrics *r2 = new_reg();

		CHECK_INT(keel_metrics_gauge(r2, "keel_breaker_transitions_total",
					     "Mine.", KEEL_NO_LABELS, &f), ==, 0);
		before = render(r2);
		CHECK_INT(keel_metrics_bridge_policy(r2, br), ==, -EEXIST);
		CHECK(br->on_event == NULL);
		after = render(r2);
		CHECK_STR(after, before);
		free(after);
		free(before);
		/* Not even an empty family: other definitions of the names the
		 * bridge would have registered still go in. */
		CHECK_INT(keel_metrics_counter(r2, "keel_breaker_state", "Other.",
					       KEEL_NO_LABELS, &f), ==, 0);
		CHECK_INT(keel_metrics_gauge(r2, "keel_policy_calls_total", "Other.",
					     KEEL_NO_LABELS, &f), ==, 0);
		keel_metrics_free(r2);
	}

	/* Bridging from inside a collector. */
	nested.p = a;
	CHECK_INT(keel_metrics_add_collector(reg, bridge_in_collector, &nested), ==, 0);
	free(render(reg));
	CHECK_INT(nested.rc[0], ==, -EDEADLK);
	CHECK_INT(nested.rc[1], ==, -EDEADLK);
	keel_policy_free(a);
	keel_policy_free(b);
	keel_policy_free(br);
	keel_metrics_free(reg);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

TEST(registry_free_gives_the_listener_back)
{
	struct keel_metrics *reg = new_reg();
	struct keel_policy *p;

	keel_vclock_init(&vc, 0);
	user_events = user_states = 0;
	p = new_breaker("db", user_listener, &user_events);
	CHECK_INT(keel_metrics_bridge_policy(reg, p), ==, 0);
	CHECK(p->on_event != user_listener);
	keel_metrics_free(reg);
	CHECK(p->on_event == user_listener && p->event_ud == &user_events);
	CHECK_INT(run(p, 0, 1), ==, -EIO);
	CHECK_INT(run(p, 0, 1), ==, -EIO);
	CHECK_INT(user_states, ==, 1);
	/* A breaker without a listener has none after. */
	p->on_event = NULL;
	p->event_ud = NULL;
	reg = new_reg();
	CHECK_INT(keel_metrics_bridge_policy(reg, p), ==, 0);
	keel_metrics_free(reg);
	CHECK(p->on_event == NULL);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Pools
 * ------------------------------------------------------------------------ */

static int *volatile nil_int;
static volatile int vsink;

void bridge_nil_site(void);
KEEL_TEST_NO_SANITIZE void bridge_nil_site(void)
{
	vsink = *nil_int;
}

static void task_fn(struct keel_task *t, void *arg)
{
	intptr_t i = (intptr_t)arg;

	(void)t;
	if (i % 10 == 3)
		keel_panic("task exploded");
#ifndef KEEL_TEST_TSAN
	if (i % 25 == 7)
		bridge_nil_site(); /* a real fault (TSan cannot follow one) */
#endif
}

static struct keel_pool *new_pool(const char *name, int threads, size_t queue,
				  enum keel_pool_full full)
{
	struct keel_pool_config cfg;
	struct keel_pool *pool;

	keel_pool_config_init(&cfg);
	cfg.name = name;
	cfg.min_threads = threads;
	cfg.queue_size = queue;
	cfg.when_full = full;
	CHECK_INT(keel_pool_new(&cfg, &pool), ==, 0);
	return pool;
}

static void check_pool(const struct expo *e, struct keel_pool *pool,
		       const char *name)
{
	struct keel_pool_stats st;

	keel_pool_stats(pool, &st);
#define V(metric) EXPO_VALUE(e, metric, "pool", name, NULL)
	CHECK(V("keel_pool_tasks_submitted_total") == (double)st.submitted);
	CHECK(V("keel_pool_tasks_rejected_total") == (double)st.rejected);
	CHECK(V("keel_pool_tasks_completed_total") == (double)st.completed);
	CHECK(V("keel_pool_tasks_panicked_total") == (double)st.panicked);
	CHECK(V("keel_pool_tasks_cancelled_total") == (double)st.cancelled);
	CHECK(V("keel_pool_tasks_caller_runs_total") == (double)st.caller_runs);
	CHECK(V("keel_pool_tasks_overdue_total") == (double)st.overdue);
	CHECK(V("keel_pool_task_latency_samples_total") == (double)st.latency_count);
	CHECK(V("keel_pool_queued_tasks") == (double)st.queued);
	CHECK(V("keel_pool_running_tasks") == (double)st.running);
	CHECK(V("keel_pool_threads") == (double)st.threads);
	CHECK(V("keel_pool_task_latency_avg_seconds") == st.latency_avg_ns / 1e9);
	CHECK(V("keel_pool_task_latency_max_seconds") == st.latency_max_ns / 1e9);
#undef V
}

TEST(pool_with_panicking_tasks)
{
	struct keel_metrics *reg = new_reg();
	struct keel_pool *pool = new_pool("work", 2, 1024, KEEL_POOL_BLOCK);
	struct keel_pool_stats st;
	struct expo e;
	char *text;
	intptr_t i;
	int panics = 0;

	CHECK_INT(keel_metrics_bridge_pool(reg, pool, "work"), ==, 0);
	for (i = 0; i < 500; i++) {
		CHECK_INT(keel_pool_submit(pool, task_fn, (void *)i, NULL), ==, 0);
		panics += i % 10 == 3;
#ifndef KEEL_TEST_TSAN
		panics += i % 25 == 7 && i % 10 != 3;
#endif
	}
	CHECK_INT(keel_pool_shutdown(pool, KEEL_POOL_DRAIN, 0), ==, 0);
	keel_pool_stats(pool, &st);
	CHECK_INT(st.submitted, ==, 500);
	CHECK_INT(st.panicked, ==, panics);
	CHECK_INT(st.completed, ==, 500 - panics);
	CHECK_INT(keel_pool_submit(pool, task_fn, NULL, NULL), ==, -ESHUTDOWN);
	text = render_checked(reg, &e);
	check_pool(&e, pool, "work");
	CHECK(EXPO_VALUE(&e, "keel_pool_tasks_panicked_total", "pool", "work", NULL) ==
	      panics);
	CHECK(EXPO_VALUE(&e, "keel_pool_tasks_rejected_total", "pool", "work", NULL) == 1);
	CHECK_CONTAINS(text, "# TYPE keel_pool_threads gauge\n");
	expo_free(&e);
	free(text);
	CHECK_INT(keel_metrics_unbridge_pool(reg, pool), ==, 0);
	CHECK_INT(keel_metrics_unbridge_pool(reg, pool), ==, -ENOENT);
	keel_pool_free(pool);
	text = render_checked(reg, &e);
	CHECK_INT(e.n, ==, 0);
	expo_free(&e);
	free(text);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int open, waiting;
};

static void gate_task(struct keel_task *t, void *arg)
{
	struct gate *g = arg;

	(void)t;
	pthread_mutex_lock(&g->mu);
	g->waiting++;
	pthread_cond_broadcast(&g->cv);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

TEST(pool_gauges_and_rejections)
{
	struct keel_metrics *reg = new_reg();
	struct keel_pool *pool = new_pool("tight", 1, 1, KEEL_POOL_REJECT);
	struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	struct expo e;
	char *text;

	CHECK_INT(keel_metrics_bridge_pool(reg, pool, "tight"), ==, 0);
	CHECK_INT(keel_pool_submit(pool, gate_task, &g, NULL), ==, 0);
	pthread_mutex_lock(&g.mu);
	while (g.waiting == 0)
		pthread_cond_wait(&g.cv, &g.mu);
	pthread_mutex_unlock(&g.mu);
	CHECK_INT(keel_pool_submit(pool, gate_task, &g, NULL), ==, 0); /* queued */
	CHECK_INT(keel_pool_submit(pool, gate_task, &g, NULL), ==, -EAGAIN);
	text = render_checked(reg, &e);
	check_pool(&e, pool, "tight");
	CHECK(EXPO_VALUE(&e, "keel_pool_running_tasks", "pool", "tight", NULL) == 1);
	CHECK(EXPO_VALUE(&e, "keel_pool_queued_tasks", "pool", "tight", NULL) == 1);
	CHECK(EXPO_VALUE(&e, "keel_pool_threads", "pool", "tight", NULL) == 1);
	CHECK(EXPO_VALUE(&e, "keel_pool_tasks_rejected_total", "pool", "tight", NULL) == 1);
	expo_free(&e);
	free(text);
	pthread_mutex_lock(&g.mu);
	g.open = 1;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mu);
	CHECK_INT(keel_pool_shutdown(pool, KEEL_POOL_DRAIN, 0), ==, 0);
	text = render_checked(reg, &e);
	check_pool(&e, pool, "tight");
	CHECK(EXPO_VALUE(&e, "keel_pool_tasks_completed_total", "pool", "tight", NULL) == 2);
	expo_free(&e);
	free(text);
	/* keel_metrics_free without unbridging: the pool is alive, fine. */
	keel_metrics_free(reg);
	keel_pool_free(pool);
	keel_test_leak_check();
}

TEST(pool_bridge_errors)
{
	struct keel_metrics *reg = new_reg();
	struct keel_pool *a = new_pool("a", 1, 8, KEEL_POOL_BLOCK);
	struct keel_pool *b = new_pool("b", 1, 8, KEEL_POOL_BLOCK);
	char *before, *after;

	CHECK_INT(keel_metrics_bridge_pool(NULL, a, "a"), ==, -EINVAL);
	CHECK_INT(keel_metrics_bridge_pool(reg, NULL, "a"), ==, -EINVAL);
	CHECK_INT(keel_metrics_bridge_pool(reg, a, NULL), ==, -EINVAL);
	CHECK_INT(keel_metrics_unbridge_pool(reg, NULL), ==, -EINVAL);
	CHECK_INT(keel_metrics_unbridge_pool(reg, a), ==, -ENOENT);
	before = render(reg);
	CHECK_INT(keel_metrics_bridge_pool(reg, a, "bad\xff"), ==, -EINVAL);
	after = render(reg);
	CHECK_STR(after, before);
	free(after);
	free(before);
	CHECK_INT(keel_metrics_bridge_pool(reg, a, "a \"quoted\"\n"), ==, 0);
	CHECK_INT(keel_metrics_bridge_pool(reg, a, "other"), ==, -EEXIST);
	CHECK_INT(keel_metrics_bridge_pool(reg, b, "a \"quoted\"\n"), ==, -EEXIST);
	CHECK_INT(keel_metrics_bridge_pool(reg, b, "b"), ==, 0);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		check_pool(&e, a, "a \"quoted\"\n");
		check_pool(&e, b, "b");
		expo_free(&e);
		free(text);
	}
	CHECK_INT(keel_metrics_unbridge_pool(reg, a), ==, 0);
	CHECK_INT(keel_metrics_unbridge_pool(reg, b), ==, 0);
	keel_pool_free(a);
	keel_pool_free(b);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Threads: unbridging and freeing while renders run
 * ------------------------------------------------------------------------ */

struct renderer {
	struct keel_metrics *reg;
	int stop;
	int renders;
};

static void *render_loop(void *arg)
{
	struct renderer *r = arg;

	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		struct expo e;
		char *text = render_checked(r->reg, &e);

		expo_free(&e);
		free(text);
		r->renders++;
	}
	return NULL;
}

static void noop_task(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
}

TEST(pool_freed_while_rendering)
{
	struct renderer r = { new_reg(), 0, 0 };
	pthread_t t;
	int round, i;

	CHECK_INT(pthread_create(&t, NULL, render_loop, &r), ==, 0);
	for (round = 0; round < 30; round++) {
		struct keel_pool *pool = new_pool("p", 1, 64, KEEL_POOL_BLOCK);

		CHECK_INT(keel_metrics_bridge_pool(r.reg, pool, "p"), ==, 0);
		for (i = 0; i < 50; i++)
			keel_pool_submit(pool, noop_task, NULL, NULL);
		usleep(200);
		CHECK_INT(keel_metrics_unbridge_pool(r.reg, pool), ==, 0);
		/* From here no render reads the pool: freeing it is safe
		 * (ASan reports any read of it after this). */
		keel_pool_free(pool);
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	CHECK(r.renders > 0);
	keel_metrics_free(r.reg);
	keel_test_leak_check();
}

struct caller {
	struct keel_pipeline *pl;
	int n;
};

static int ok_op(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	return 0;
}

static void *call_loop(void *arg)
{
	struct caller *c = arg;
	int i;

	for (i = 0; i < c->n; i++)
		keel_pipeline_execute(c->pl, ok_op, NULL, NULL, NULL);
	return NULL;
}

TEST(policies_called_while_rendering)
{
	struct renderer r = { new_reg(), 0, 0 };
	struct keel_pipeline_config pc;
	struct keel_pipeline *pl;
	struct keel_policy *br, *re;
	struct caller c;
	pthread_t t[3];
	int i;

	keel_vclock_init(&vc, 0);
	br = new_breaker("svc", NULL, NULL);
	re = new_retry("svc");
	keel_pipeline_config_init(&pc);
	pc.clock = &vc.clock;
	pc.owns_policies = 1;
	keel_pipeline_config_add(&pc, br);
	keel_pipeline_config_add(&pc, re);
	CHECK_INT(keel_pipeline_new(&pc, &pl), ==, 0);
	/* Bridged before any call runs (the breaker gets a listener). */
	CHECK_INT(keel_metrics_bridge_pipeline(r.reg, pl), ==, 0);
	c.pl = pl;
	c.n = 20000;
	CHECK_INT(pthread_create(&t[0], NULL, render_loop, &r), ==, 0);
	for (i = 1; i < 3; i++)
		CHECK_INT(pthread_create(&t[i], NULL, call_loop, &c), ==, 0);
	for (i = 1; i < 3; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t[0], NULL);
	{
		struct keel_policy *ps[2] = { br, re };
		struct expo e;
		char *text = render_checked(r.reg, &e);

		check_policy(&e, br);
		check_policy(&e, re);
		CHECK(EXPO_VALUE(&e, "keel_policy_calls_total", "policy", "svc",
				 "kind", "retry", "outcome", "success", NULL) == 40000);
		expo_free(&e);
		free(text);
		(void)ps;
	}
	CHECK_INT(keel_metrics_unbridge_pipeline(r.reg, pl), ==, 0);
	keel_pipeline_free(pl);
	keel_metrics_free(r.reg);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}
