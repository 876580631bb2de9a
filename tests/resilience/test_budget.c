/* KEEL_TEST_LABELS: threads */
/*
 * tests/resilience/test_budget.c - retry budgets: first attempts always go,
 * retries only while the budget allows; gRPC-style tokens drain on failures
 * and recover on successes; Envoy-style percentages cap the retries in
 * flight, with a floor; exact fixed-point counts under threads.
 *
 * A stand-in for the retry policy (attempt_policy below) sets x->attempt,
 * so the budget is tested on its own, the way it sits in a pipeline.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include <keel.h>
#include <keel/budget.h>
#include <keel/pipeline.h>
#include <keel/retry.h>
#include <keel/timeout.h>
#include "keel_test.h"
#include "policy_check.h"

/* ------------------------------------------------------------------------
 * A minimal outer policy that numbers the attempt
 * ------------------------------------------------------------------------ */

static __thread int next_attempt = 1;

static void attempt_execute(struct keel_policy *p, struct keel__chain *next,
			    struct keel_exec *x, struct keel_outcome *out)
{
	(void)p;
	x->attempt = next_attempt;
	keel__chain_next(next, x, out);
}

static void attempt_destroy(struct keel_policy *p)
{
	(void)p;
}

static const struct keel_policy_ops attempt_ops = {
	KEEL_POLICY_RETRY, attempt_execute, attempt_destroy
};

static struct keel_policy attempt_policy;

__attribute__((constructor)) static void attempt_policy_init(void)
{
	keel__policy_init(&attempt_policy, &attempt_ops, "attempts", NULL,
			  NULL, NULL);
}

static int ran;

static int op_code(struct keel_exec *x, void *arg)
{
	(void)x;
	__atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
	return (int)(intptr_t)arg;
}

static int op_panic(struct keel_exec *x, void *arg)
{
	(void)x;
	keel_panic(arg);
}

/* Runs op as attempt number `attempt` through the budget. */
static int attempt_op(struct keel_policy *b, int attempt, keel_op_fn op,
		      void *arg, struct keel_outcome *o)
{
	struct keel_policy *chain[2];
	struct keel_outcome local;

	chain[0] = &attempt_policy;
	chain[1] = b;
	next_attempt = attempt;
	return keel__execute(chain, 2, NULL, op, arg, NULL,
			     o != NULL ? o : &local);
}

static int attempt_code(struct keel_policy *b, int attempt, int code)
{
	return attempt_op(b, attempt, op_code, (void *)(intptr_t)code, NULL);
}

static struct keel_policy *make_tokens(int max_tokens, double ratio)
{
	struct keel_budget_config cfg;
	struct keel_policy *p;

	keel_budget_config_init(&cfg);
	cfg.max_tokens = max_tokens;
	cfg.token_ratio = ratio;
	CHECK_INT(keel_budget_new(&cfg, &p), ==, 0);
	return p;
}

static struct keel_policy *make_percent(double percent, int min_retries)
{
	struct keel_budget_config cfg;
	struct keel_policy *p;

	keel_budget_config_init(&cfg);
	cfg.mode = KEEL_BUDGET_PERCENT;
	cfg.budget_percent = percent;
	cfg.min_retry_concurrency = min_retries;
	CHECK_INT(keel_budget_new(&cfg, &p), ==, 0);
	return p;
}

static void check_tokens(struct keel_policy *p, double want)
{
	double got = keel_budget_tokens(p);

	if (fabs(got - want) > 1e-9)
		KEEL_TEST_FAIL("tokens %.4f, want %.4f", got, want);
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

TEST(config_defaults_and_bad_config)
{
	struct keel_budget_config cfg, bad;
	struct keel_policy *p = (void *)1;

	keel_budget_config_init(&cfg);
	CHECK(cfg.name == NULL);
	CHECK(cfg.clock == NULL);
	CHECK(cfg.on_event == NULL);
	CHECK(cfg.classify == NULL);
	CHECK_INT(cfg.mode, ==, KEEL_BUDGET_TOKENS);
	CHECK_INT(cfg.max_tokens, ==, 10);
	CHECK(cfg.token_ratio == 0.1);
	CHECK(cfg.budget_percent == 20.0);
	CHECK_INT(cfg.min_retry_concurrency, ==, 3);

	CHECK_INT(keel_budget_new(NULL, &p), ==, -EINVAL);
	CHECK(p == NULL);
	CHECK_INT(keel_budget_new(&cfg, NULL), ==, -EINVAL);
#define BAD(field, value)                                                     \
	do {                                                                  \
		bad = cfg;                                                    \
		bad.field = value;                                            \
		p = (void *)1;                                                \
		CHECK_INT(keel_budget_new(&bad, &p), ==, -EINVAL);            \
		CHECK(p == NULL);                                             \
	} while (0)
	BAD(max_tokens, 0);
	BAD(max_tokens, 1000001);
	BAD(token_ratio, 0.0);
	BAD(token_ratio, 0.0004);
	BAD(token_ratio, NAN);
	BAD(token_ratio, 11.0); /* more than max_tokens */
	BAD(mode, (enum keel_budget_mode)9);
	cfg.mode = KEEL_BUDGET_PERCENT;
	BAD(budget_percent, -1.0);
	BAD(budget_percent, 100.5);
	BAD(budget_percent, NAN);
	BAD(min_retry_concurrency, -1);
	/* Each mode checks only its own options. */
	bad = cfg;
	bad.token_ratio = 0.0;
	CHECK_INT(keel_budget_new(&bad, &p), ==, 0);
	keel_policy_free(p);
#undef BAD
	keel_test_leak_check();

	keel_budget_config_init(&cfg);
	CHECK_INT(keel_budget_new(&cfg, &p), ==, 0);
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_BUDGET);
	CHECK_STR(keel_policy_name(p), "budget");
	check_tokens(p, 10.0);
	keel_policy_free(p);
	cfg.name = "retries-to-db";
	CHECK_INT(keel_budget_new(&cfg, &p), ==, 0);
	CHECK_STR(keel_policy_name(p), "retries-to-db");
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Token mode (gRPC)
 * ------------------------------------------------------------------------ */

TEST(tokens_first_attempts_always_go)
{
	struct keel_policy *p = make_tokens(10, 0.1);
	int i;

	for (i = 0; i < 20; i++)
		CHECK_INT(attempt_code(p, 1, -EIO), ==, -EIO);
	check_tokens(p, 0.0); /* clamped at 0 */
	CHECK_INT(ran, ==, 20);
	CHECK_INT(attempt_code(p, 2, 0), ==, KEEL_EBUDGET);
	CHECK_INT(ran, ==, 20); /* the refused retry never ran */
	keel_policy_free(p);
}

TEST(tokens_failures_drain_to_half)
{
	struct keel_policy *p = make_tokens(10, 0.1);
	struct keel_policy_stats st;
	struct keel_outcome o;
	int i;

	/* Retries go while tokens > 5: four failures leave 6. */
	for (i = 0; i < 4; i++)
		CHECK_INT(attempt_code(p, 1 + i, -EIO), ==, -EIO);
	check_tokens(p, 6.0);
	CHECK_INT(keel_budget_allow_retry(p), ==, 1);
	CHECK_INT(attempt_code(p, 2, -EIO), ==, -EIO); /* a retry: allowed */
	check_tokens(p, 5.0);
	CHECK_INT(keel_budget_allow_retry(p), ==, 0);
	CHECK_INT(attempt_op(p, 3, op_code, NULL, &o), ==, KEEL_EBUDGET);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_BUDGET);
	CHECK_INT(o.attempts, ==, 0);
	check_tokens(p, 5.0); /* a refused retry costs nothing */
	/* First attempts still go. */
	CHECK_INT(attempt_code(p, 1, 0), ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 7);
	CHECK_INT(st.failures, ==, 5);
	CHECK_INT(st.successes, ==, 1);
	CHECK_INT(st.rejections, ==, 1);
	check_invariant(p);
	keel_policy_free(p);
}

TEST(tokens_recover_after_successes)
{
	struct keel_policy *p = make_tokens(10, 0.1);
	int i;

	for (i = 0; i < 10; i++)
		attempt_code(p, 1, -EIO);
	check_tokens(p, 0.0);
	/* 50 successes: 5.0 tokens, not yet above half ... */
	for (i = 0; i < 50; i++)
		CHECK_INT(attempt_code(p, 1, 0), ==, 0);
	check_tokens(p, 5.0);
	CHECK_INT(attempt_code(p, 2, 0), ==, KEEL_EBUDGET);
	/* ... the 51st tips it over. */
	CHECK_INT(attempt_code(p, 1, 0), ==, 0);
	check_tokens(p, 5.1);
	CHECK_INT(attempt_code(p, 2, 0), ==, 0);
	check_tokens(p, 5.2); /* a successful retry gives back too */
	/* Never above max_tokens. */
	for (i = 0; i < 100; i++)
		attempt_code(p, 1, 0);
	check_tokens(p, 10.0);
	keel_policy_free(p);
}

TEST(tokens_other_sizes_and_ratios)
{
	struct keel_policy *p = make_tokens(4, 0.25);

	/* Half of 4 is 2: retries need 3 tokens or more (in thousandths:
	 * more than 2.000). */
	attempt_code(p, 1, -EIO);
	attempt_code(p, 1, -EIO);
	check_tokens(p, 2.0);
	CHECK_INT(keel_budget_allow_retry(p), ==, 0);
	attempt_code(p, 1, 0);
	check_tokens(p, 2.25);
	CHECK_INT(keel_budget_allow_retry(p), ==, 1);
	keel_policy_free(p);

	/* token_ratio is kept to 3 decimals, as gRPC does. */
	p = make_tokens(10, 0.0126);
	attempt_code(p, 1, -EIO);
	attempt_code(p, 1, 0);
	check_tokens(p, 9.013);
	keel_policy_free(p);
}

TEST(tokens_panics_are_failures)
{
	struct keel_policy *p = make_tokens(10, 0.1);
	struct keel_outcome o;

	CHECK_INT(attempt_op(p, 1, op_panic, "boom", &o), ==, KEEL_EPANIC);
	CHECK_INT(o.panicked, ==, 1);
	check_tokens(p, 9.0);
	keel_policy_free(p);
}

/* Treats -ENOENT as an answer, not a failure of the dependency. */
static int not_found_is_fine(const struct keel_outcome *o, void *ud)
{
	(void)ud;
	return o->code != 0 && o->code != -ENOENT;
}

TEST(tokens_classifier_decides_what_costs)
{
	struct keel_budget_config cfg;
	struct keel_policy *p;

	keel_budget_config_init(&cfg);
	cfg.classify = not_found_is_fine;
	CHECK_INT(keel_budget_new(&cfg, &p), ==, 0);
	attempt_code(p, 1, -EIO);
	check_tokens(p, 9.0);
	attempt_code(p, 1, -ENOENT); /* counts as a success */
	check_tokens(p, 9.1);
	keel_policy_free(p);
}

TEST(tokens_manual_use)
{
	struct keel_policy *p = make_tokens(10, 0.1);
	struct keel_policy_stats st;
	int i;

	for (i = 0; i < 5; i++) {
		CHECK_INT(keel_budget_allow_retry(p), ==, 1);
		keel_budget_record(p, 0);
	}
	CHECK_INT(keel_budget_allow_retry(p), ==, 0);
	keel_budget_record(p, 1);
	CHECK_INT(keel_budget_allow_retry(p), ==, 1);
	check_tokens(p, 5.1);
	/* enter/leave: the policy's own steps. */
	CHECK_INT(keel_budget_enter(p, 1), ==, 0);
	keel_budget_leave(p, 1, 0);
	check_tokens(p, 4.1);
	CHECK_INT(keel_budget_enter(p, 1), ==, KEEL_EBUDGET);
	CHECK_INT(keel_budget_enter(p, 0), ==, 0);
	keel_budget_leave(p, 0, 1);
	check_tokens(p, 4.2);
	CHECK_INT(keel_budget_in_flight(p, NULL), ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 0); /* manual use is not counted */
	keel_policy_free(p);
}

TEST(not_a_budget)
{
	struct keel_timeout_config tc;
	struct keel_policy *t;
	int r = 7;

	keel_timeout_config_init(&tc);
	CHECK_INT(keel_timeout_new(&tc, &t), ==, 0);
	CHECK_INT(keel_budget_allow_retry(t), ==, -EINVAL);
	CHECK_INT(keel_budget_enter(t, 1), ==, -EINVAL);
	CHECK(keel_budget_tokens(t) == -1.0);
	CHECK(keel_budget_tokens(NULL) == -1.0);
	CHECK_INT(keel_budget_in_flight(t, &r), ==, -EINVAL);
	CHECK_INT(r, ==, 7);
	keel_budget_record(t, 0);   /* ignored */
	keel_budget_leave(t, 1, 0); /* ignored */
	keel_policy_free(t);
}

/* Listener: logs "type:kind:attempt:code". */
static void on_event(const struct keel_event *ev, void *ud)
{
	(void)ud;
	keel_test_ev_addf("%s:%s:%d:%d", keel_event_type_name(ev->type),
			  keel_policy_kind_name(ev->kind), ev->attempt,
			  ev->code);
}

TEST(refused_retry_emits_rejected)
{
	struct keel_budget_config cfg;
	struct keel_policy *p;
	char want[256];

	keel_budget_config_init(&cfg);
	cfg.max_tokens = 2;
	cfg.on_event = on_event;
	CHECK_INT(keel_budget_new(&cfg, &p), ==, 0);
	attempt_code(p, 1, -EIO);
	attempt_code(p, 2, 0);
	snprintf(want, sizeof(want),
		 "failure:budget:1:%d,rejected:budget:2:%d", -EIO,
		 KEEL_EBUDGET);
	CHECK_STR(keel_test_ev, want);
	keel_policy_free(p);
}

/* The real retry policy around the budget: a refused retry ends retrying. */
TEST(inside_the_retry_policy)
{
	struct keel_pipeline_config pc;
	struct keel_retry_config rc;
	struct keel_policy *retry, *budget;
	struct keel_pipeline *pl;
	struct keel_vclock vc;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_retry_config_init(&rc);
	rc.clock = &vc.clock;
	rc.max_attempts = 5;
	CHECK_INT(keel_retry_new(&rc, &retry), ==, 0);
	budget = make_tokens(4, 0.1);
	keel_pipeline_config_init(&pc);
	pc.clock = &vc.clock;
	pc.owns_policies = 1;
	keel_pipeline_config_add(&pc, budget); /* sorted: retry outside */
	keel_pipeline_config_add(&pc, retry);
	CHECK_INT(keel_pipeline_new(&pc, &pl), ==, 0);
	/* 4 tokens: the first attempt fails (3 left), the first retry goes
	 * and fails (2 left, not above half), the second retry is refused.
	 * The caller gets the last real failure, and who stopped the retries. */
	CHECK_INT(keel_pipeline_execute(pl, op_code, (void *)(intptr_t)-EIO,
					NULL, &o), ==, -EIO);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_BUDGET);
	CHECK_INT(o.attempts, ==, 2);
	CHECK_INT(ran, ==, 2);
	check_tokens(budget, 2.0);
	keel_pipeline_free(pl);
	keel_vclock_destroy(&vc);
}

/* ------------------------------------------------------------------------
 * Percent mode (Envoy)
 * ------------------------------------------------------------------------ */

TEST(percent_floor_allows_min_retry_concurrency)
{
	struct keel_policy *p = make_percent(20.0, 3);
	int retries = -1;

	/* Nothing in flight: the floor, 3 retries at once. */
	CHECK_INT(keel_budget_allow_retry(p), ==, 1);
	CHECK_INT(keel_budget_enter(p, 1), ==, 0);
	CHECK_INT(keel_budget_enter(p, 1), ==, 0);
	CHECK_INT(keel_budget_enter(p, 1), ==, 0);
	CHECK_INT(keel_budget_allow_retry(p), ==, 0);
	CHECK_INT(keel_budget_enter(p, 1), ==, KEEL_EBUDGET);
	CHECK_INT(keel_budget_in_flight(p, &retries), ==, 3);
	CHECK_INT(retries, ==, 3);
	keel_budget_leave(p, 1, 0);
	CHECK_INT(keel_budget_enter(p, 1), ==, 0);
	/* First attempts are never refused. */
	CHECK_INT(keel_budget_enter(p, 0), ==, 0);
	keel_budget_leave(p, 0, 1);
	keel_budget_leave(p, 1, 1);
	keel_budget_leave(p, 1, 1);
	keel_budget_leave(p, 1, 1);
	CHECK_INT(keel_budget_in_flight(p, &retries), ==, 0);
	CHECK_INT(retries, ==, 0);
	CHECK(keel_budget_tokens(p) == -1.0);
	keel_budget_record(p, 0); /* no history kept: a no-op */
	CHECK_INT(keel_budget_allow_retry(p), ==, 1);
	keel_policy_free(p);
}

TEST(percent_scales_with_attempts_in_flight)
{
	struct keel_policy *p = make_percent(20.0, 3);
	int i, n = 0;

	for (i = 0; i < 100; i++)
		CHECK_INT(keel_budget_enter(p, 0), ==, 0);
	/* 20 % of the attempts in flight, retries included: the r-th retry
	 * goes while r < (100 + r) / 5, so 24 of them. */
	while (keel_budget_enter(p, 1) == 0)
		n++;
	CHECK_INT(n, ==, 24);
	/* As first attempts finish the budget shrinks: 24 retries stay in
	 * flight, none more until enough finish. */
	for (i = 0; i < 50; i++)
		keel_budget_leave(p, 0, 1);
	CHECK_INT(keel_budget_enter(p, 1), ==, KEEL_EBUDGET);
	for (i = 0; i < 20; i++)
		keel_budget_leave(p, 1, 1);
	/* 50 first attempts and 4 retries in flight: retries go while
	 * r < (50 + r) / 5, so up to 12 in flight: 8 more. */
	for (n = 0; keel_budget_enter(p, 1) == 0; n++)
		;
	CHECK_INT(n, ==, 8);
	keel_policy_free(p);
}

TEST(percent_zero_means_only_the_floor)
{
	struct keel_policy *p = make_percent(0.0, 1);
	int i;

	for (i = 0; i < 1000; i++)
		keel_budget_enter(p, 0);
	CHECK_INT(keel_budget_enter(p, 1), ==, 0);
	CHECK_INT(keel_budget_enter(p, 1), ==, KEEL_EBUDGET);
	keel_policy_free(p);

	p = make_percent(0.0, 0); /* no retries at all */
	CHECK_INT(keel_budget_enter(p, 1), ==, KEEL_EBUDGET);
	CHECK_INT(keel_budget_enter(p, 0), ==, 0);
	keel_policy_free(p);
}

/* Retries through the policy from four threads: each blocks inside until
 * released, so the number let in at once is exact. */
struct blocker {
	sem_t entered, go;
};

static int op_block(struct keel_exec *x, void *arg)
{
	struct blocker *b = arg;

	(void)x;
	sem_post(&b->entered);
	while (sem_wait(&b->go) != 0)
		;
	return 0;
}

struct retry_thread {
	struct keel_policy *p;
	struct blocker *b;
	sem_t *done;
	int code;
};

static void *retry_thread(void *arg)
{
	struct retry_thread *r = arg;

	r->code = attempt_op(r->p, 2, op_block, r->b, NULL);
	sem_post(r->done);
	return NULL;
}

TEST(percent_through_the_policy_four_threads)
{
	struct keel_policy *p = make_percent(20.0, 3);
	struct retry_thread r[4];
	struct blocker b;
	pthread_t th[4];
	sem_t done;
	struct keel_policy_stats st;
	int i, refused = 0, ok = 0;

	sem_init(&b.entered, 0, 0);
	sem_init(&b.go, 0, 0);
	sem_init(&done, 0, 0);
	for (i = 0; i < 4; i++) {
		r[i].p = p;
		r[i].b = &b;
		r[i].done = &done;
		CHECK_INT(pthread_create(&th[i], NULL, retry_thread, &r[i]),
			  ==, 0);
	}
	/* Three get in (the floor), one is refused. */
	for (i = 0; i < 3; i++)
		while (sem_wait(&b.entered) != 0)
			;
	while (sem_wait(&done) != 0)
		;
	CHECK_INT(keel_budget_in_flight(p, NULL), ==, 3);
	for (i = 0; i < 3; i++)
		sem_post(&b.go);
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (r[i].code == KEEL_EBUDGET)
			refused++;
		else if (r[i].code == 0)
			ok++;
	}
	CHECK_INT(ok, ==, 3);
	CHECK_INT(refused, ==, 1);
	CHECK_INT(keel_budget_in_flight(p, NULL), ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.rejections, ==, 1);
	CHECK_INT(st.successes, ==, 3);
	sem_destroy(&b.entered);
	sem_destroy(&b.go);
	sem_destroy(&done);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Four threads, token mode: the fixed-point count is exact
 * ------------------------------------------------------------------------ */

struct token_thread {
	struct keel_policy *p;
	int n, code, retries;
};

static void *token_thread(void *arg)
{
	struct token_thread *t = arg;
	int i;

	for (i = 0; i < t->n; i++)
		attempt_code(t->p, t->retries ? 1 + i % 3 : 1, t->code);
	return NULL;
}

/* Four threads make n attempts each; with retries, attempts number 1, 2,
 * 3, 1, 2, ... */
static void token_round(struct keel_policy *p, int n, int code, int retries)
{
	struct token_thread t[4];
	pthread_t th[4];
	int i;

	for (i = 0; i < 4; i++) {
		t[i].p = p;
		t[i].n = n;
		t[i].code = code;
		t[i].retries = retries;
		CHECK_INT(pthread_create(&th[i], NULL, token_thread, &t[i]),
			  ==, 0);
	}
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
}

TEST(tokens_four_threads_exact)
{
	struct keel_policy *p = make_tokens(10, 0.1);
	struct keel_policy_stats st;

	token_round(p, 1000, 0, 1); /* stays clamped at 10 */
	check_tokens(p, 10.0);
	token_round(p, 2, -EIO, 0); /* 10 - 8 */
	check_tokens(p, 2.0);
	/* Retries (attempts 2 and 3) are now refused, first attempts go:
	 * of 5 attempts per thread, 2 are first attempts. */
	token_round(p, 5, 0, 1);
	check_tokens(p, 2.0 + 8 * 0.1);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 4 * (1000 + 2 + 5));
	CHECK_INT(st.rejections, ==, 4 * 3);
	check_invariant(p);
	keel_policy_free(p);
}
