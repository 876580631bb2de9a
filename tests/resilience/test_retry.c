/* KEEL_TEST_LABELS: threads */
/*
 * tests/resilience/test_retry.c - the retry policy: when it calls again,
 * how long it waits (on a virtual clock: nothing here sleeps but the two
 * cancellation cases), when it stops and what the caller sees then, panics
 * and faults as retryable failures, and one policy shared by four threads.
 */
#include <pthread.h>
#include <stdint.h>

#include <keel.h>
#include <keel/retry.h>
#define KEEL_TEST_COUNT_ALLOCATIONS 1
#include "keel_test.h"

#define MS KEEL_MSEC
#define T0 (1000 * KEEL_SEC) /* the virtual clock's start */
#define PANIC 1              /* a script code: panic instead of returning */
#define FAULT 2              /* a script code: dereference NULL */

/* ------------------------------------------------------------------------
 * A scripted protected call
 * ------------------------------------------------------------------------ */

struct script {
	int codes[8];          /* attempt i + 1 returns codes[i]; the last repeats */
	int n;
	int64_t retry_after[8];
	int64_t work;          /* virtual time each call takes */
	struct keel_vclock *vc;
	struct keel_cancel *cancel; /* cancelled by call number cancel_at */
	int cancel_at;
	void *result;          /* x->result on success */
	int calls;
	int seen[16];          /* x->attempt of each call */
};

static int *volatile nil_int;
static volatile int vsink;

static void d_cleanup(void *arg)
{
	keel_test_ev_addf("cleanup%d", (int)(intptr_t)arg);
}

KEEL_TEST_NO_SANITIZE static void fault_now(void)
{
	vsink = *nil_int;
}

static int op_script(struct keel_exec *x, void *arg)
{
	struct script *s = arg;
	int i = s->calls < s->n ? s->calls : s->n - 1;

	s->seen[s->calls < 16 ? s->calls : 15] = x->attempt;
	__atomic_add_fetch(&s->calls, 1, __ATOMIC_SEQ_CST); /* a canceller
							      thread reads it */
	keel_defer(d_cleanup, (void *)(intptr_t)x->attempt);
	if (s->work != 0)
		keel_vclock_advance(s->vc, s->work);
	if (s->cancel != NULL && s->calls == s->cancel_at)
		keel_cancel_cancel(s->cancel, 0);
	x->retry_after = s->retry_after[i];
	switch (s->codes[i]) {
	case PANIC:
		keel_panicf("boom %d", x->attempt);
	case FAULT:
		fault_now();
		return -EIO; /* not reached */
	case 0:
		x->result = s->result;
		return 0;
	default:
		return s->codes[i];
	}
}

/* ------------------------------------------------------------------------
 * Events, hooks, configs
 * ------------------------------------------------------------------------ */

static void fmt_delay(char *buf, size_t n, int64_t d)
{
	if (d % MS == 0)
		snprintf(buf, n, "%lldms", (long long)(d / MS));
	else
		snprintf(buf, n, "%lldns", (long long)d);
}

/* "retry@1+100ms", "give-up@3", "give-up@4+800ms", "failure@3". */
static void log_event(const struct keel_event *ev, void *ud)
{
	char d[32];

	(void)ud;
	CHECK_INT(ev->kind, ==, KEEL_POLICY_RETRY);
	if (ev->type == KEEL_EV_RETRY ||
	    (ev->type == KEEL_EV_GIVE_UP && ev->delay != 0)) {
		fmt_delay(d, sizeof(d), ev->delay);
		keel_test_ev_addf("%s@%d+%s", keel_event_type_name(ev->type),
				  ev->attempt, d);
	} else {
		keel_test_ev_addf("%s@%d", keel_event_type_name(ev->type),
				  ev->attempt);
	}
}

/* Exponential 100 ms doubling, capped at 10 s, no jitter, on vc. */
static void cfg_plain(struct keel_retry_config *cfg, struct keel_vclock *vc)
{
	keel_retry_config_init(cfg);
	cfg->clock = &vc->clock;
	cfg->on_event = log_event;
	cfg->backoff.jitter = KEEL_JITTER_NONE;
}

static struct keel_policy *mk(const struct keel_retry_config *cfg)
{
	struct keel_policy *p = NULL;

	CHECK_INT(keel_retry_new(cfg, &p), ==, 0);
	CHECK(p != NULL);
	return p;
}

static int64_t vnow(struct keel_vclock *vc)
{
	return keel_clock_now(&vc->clock);
}

static struct keel_policy_stats stats_of(struct keel_policy *p)
{
	struct keel_policy_stats st;

	keel_policy_stats(p, &st);
	return st;
}

/* ========================================================================
 * Configuration
 * ======================================================================== */

TEST(config_defaults)
{
	struct keel_retry_config cfg;

	memset(&cfg, 0x5a, sizeof(cfg));
	keel_retry_config_init(&cfg);
	CHECK(cfg.name == NULL && cfg.clock == NULL && cfg.on_event == NULL);
	CHECK_INT(cfg.max_attempts, ==, 3);
	CHECK_INT(cfg.backoff.kind, ==, KEEL_BACKOFF_EXPONENTIAL);
	CHECK_INT(cfg.backoff.initial, ==, 100 * MS);
	CHECK(cfg.backoff.multiplier == 2.0);
	CHECK_INT(cfg.backoff.max, ==, 10 * KEEL_SEC);
	CHECK_INT(cfg.backoff.jitter, ==, KEEL_JITTER_FULL);
	CHECK_INT(cfg.max_duration, ==, 0);
	CHECK(cfg.retry_if == NULL && cfg.abort_if == NULL);
	CHECK_INT(cfg.honour_retry_after, ==, 1);
	CHECK_INT(cfg.max_retry_after, ==, 60 * KEEL_SEC);
	CHECK(cfg.on_retry == NULL);
	CHECK_INT(cfg.seed, ==, 0);
}

TEST(new_refuses_bad_configs)
{
	struct keel_retry_config cfg;
	struct keel_policy *p;

	keel_retry_config_init(&cfg);
	CHECK_INT(keel_retry_new(&cfg, NULL), ==, -EINVAL);
	p = (struct keel_policy *)&cfg;
	CHECK_INT(keel_retry_new(NULL, &p), ==, -EINVAL);
	CHECK(p == NULL);
#define BAD(stmt)                                                             \
	do {                                                                  \
		keel_retry_config_init(&cfg);                                 \
		stmt;                                                         \
		p = (struct keel_policy *)&cfg;                               \
		if (keel_retry_new(&cfg, &p) != -EINVAL || p != NULL)         \
			KEEL_TEST_FAIL("accepted: %s", #stmt);                \
	} while (0)
	BAD(cfg.max_attempts = 0);
	BAD(cfg.max_attempts = -3);
	BAD(cfg.max_duration = -1);
	BAD(cfg.max_retry_after = -1);
	BAD(cfg.backoff.initial = -1);
	BAD(cfg.backoff.multiplier = 0.5);
	BAD(cfg.backoff.jitter = (enum keel_jitter)99);
#undef BAD
	keel_test_leak_check();
}

TEST(name_kind_and_free)
{
	struct keel_retry_config cfg;
	struct keel_policy *p;
	char name[16] = "fetch-user";

	keel_retry_config_init(&cfg);
	p = mk(&cfg);
	CHECK_STR(keel_policy_name(p), "retry");
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_RETRY);
	keel_policy_free(p);

	cfg.name = name;
	p = mk(&cfg);
	strcpy(name, "changed");
	CHECK_STR(keel_policy_name(p), "fetch-user"); /* copied */
	keel_policy_free(p);
	keel_policy_free(NULL);
	keel_test_leak_check();
}

/* ========================================================================
 * Attempts and delays
 * ======================================================================== */

TEST(succeeds_on_third_attempt)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy_stats st;
	struct keel_policy *p;
	int value = 42;
	struct script s = { .codes = { -EIO, -EIO, 0 }, .n = 3,
			    .result = &value };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, 0);
	CHECK_INT(out.code, ==, 0);
	CHECK(out.result == &value);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_NONE);
	CHECK_INT(s.seen[0], ==, 1);
	CHECK_INT(s.seen[1], ==, 2);
	CHECK_INT(s.seen[2], ==, 3);
	/* Waited 100 ms, then 200 ms, on the virtual clock. */
	CHECK_INT(keel_vclock_slept(&vc), ==, 300 * MS);
	CHECK_INT(keel_vclock_waits(&vc), ==, 2);
	CHECK_INT(vnow(&vc), ==, T0 + 300 * MS);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,success@3");
	st = stats_of(p);
	CHECK_INT(st.calls, ==, 1);
	CHECK_INT(st.retries, ==, 2);
	CHECK_INT(st.successes, ==, 1);
	CHECK_INT(st.failures, ==, 0);
	CHECK_INT(st.panics, ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(gives_up_after_max_attempts_with_last_error)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy_stats st;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO, -EAGAIN, -ENOTCONN }, .n = 3 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==,
		  -ENOTCONN);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(s.calls, ==, 3);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	CHECK_INT(out.panicked, ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 300 * MS);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,give-up@3,failure@3");
	st = stats_of(p);
	CHECK_INT(st.calls, ==, 1);
	CHECK_INT(st.retries, ==, 2);
	CHECK_INT(st.failures, ==, 1);
	CHECK_INT(st.successes, ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(one_attempt_is_not_a_retry_decision)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 1;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 1);
	/* Nothing was retried: the call's own failure stands as it decided. */
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_NONE);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	CHECK_STR(keel_test_ev, "cleanup1,give-up@1,failure@1");
	CHECK_INT(stats_of(p).retries, ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(counters_over_several_calls)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy_stats st;
	struct keel_policy *p;
	struct script ok = { .codes = { 0 }, .n = 1 };
	struct script second = { .codes = { -EIO, 0 }, .n = 2 };
	struct script never = { .codes = { -EIO }, .n = 1 };
	struct script panics = { .codes = { PANIC }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.on_event = NULL;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &ok, NULL, NULL), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_script, &second, NULL, NULL), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_script, &never, NULL, NULL), ==,
		  -EIO);
	CHECK_INT(keel_policy_execute(p, op_script, &panics, NULL, NULL), ==,
		  KEEL_EPANIC);
	st = stats_of(p);
	CHECK_INT(st.calls, ==, 4);
	CHECK_INT(st.successes, ==, 2);
	CHECK_INT(st.failures, ==, 1);
	CHECK_INT(st.panics, ==, 1);
	CHECK_INT(st.retries, ==, 0 + 1 + 2 + 2);
	CHECK_INT(st.rejections + st.timeouts + st.fallbacks, ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(zero_delay_does_not_wait)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO, -EIO, 0 }, .n = 3 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.backoff.initial = 0;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, 0);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	CHECK_INT(vnow(&vc), ==, T0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * The seed's withRetry and per-tier strategies (chapter 3)
 * ======================================================================== */

/* withRetry(fn, retries = 3, delay = 1000): three calls in all, waiting
 * delay * 2^i after failure i, and the last error is thrown. */
static void with_retry_config(struct keel_retry_config *cfg,
			      struct keel_vclock *vc)
{
	cfg_plain(cfg, vc);
	cfg->max_attempts = 3;
	cfg->backoff.kind = KEEL_BACKOFF_EXPONENTIAL;
	cfg->backoff.initial = 1000 * MS;
	cfg->backoff.multiplier = 2;
	cfg->backoff.max = 0; /* withRetry has no cap */
}

TEST(seed_with_retry_example)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script fails = { .codes = { -EIO, -ECONNRESET, -ETIMEDOUT },
				.n = 3 };
	struct script recovers = { .codes = { -EIO, 0 }, .n = 2 };

	keel_vclock_init(&vc, T0);
	with_retry_config(&cfg, &vc);
	p = mk(&cfg);
	/* Every call fails: waits of 1 s and 2 s, then the last error. */
	CHECK_INT(keel_policy_execute(p, op_script, &fails, NULL, &out), ==,
		  -ETIMEDOUT);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(keel_vclock_slept(&vc), ==, 3 * KEEL_SEC);
	CHECK_CONTAINS(keel_test_ev, "retry@1+1000ms");
	CHECK_CONTAINS(keel_test_ev, "retry@2+2000ms");
	/* A transient failure: one wait of 1 s, then the result. */
	CHECK_INT(keel_policy_execute(p, op_script, &recovers, NULL, &out), ==,
		  0);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(keel_vclock_slept(&vc), ==, 4 * KEEL_SEC);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* The seed's table: light requests 2 tries at a fixed 500 ms, core
 * services 3 with exponential backoff, read-only queries 1 try, no delay. */
TEST(seed_tier_strategies)
{
	static const struct {
		int attempts;
		enum keel_backoff_kind kind;
		int64_t initial;
		int64_t slept; /* when every try fails */
	} tier[] = {
		{ 2, KEEL_BACKOFF_CONSTANT, 500 * MS, 500 * MS },
		{ 3, KEEL_BACKOFF_EXPONENTIAL, 100 * MS, 300 * MS },
		{ 1, KEEL_BACKOFF_CONSTANT, 0, 0 },
	};
	size_t i;

	for (i = 0; i < 3; i++) {
		struct keel_vclock vc;
		struct keel_retry_config cfg;
		struct keel_outcome out;
		struct keel_policy *p;
		struct script s = { .codes = { -EIO }, .n = 1 };

		keel_vclock_init(&vc, T0);
		cfg_plain(&cfg, &vc);
		cfg.on_event = NULL;
		cfg.max_attempts = tier[i].attempts;
		cfg.backoff.kind = tier[i].kind;
		cfg.backoff.initial = tier[i].initial;
		p = mk(&cfg);
		CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==,
			  -EIO);
		CHECK_INT(out.attempts, ==, tier[i].attempts);
		CHECK_INT(keel_vclock_slept(&vc), ==, tier[i].slept);
		keel_policy_free(p);
		keel_vclock_destroy(&vc);
	}
}

/* ========================================================================
 * max_duration
 * ======================================================================== */

TEST(max_duration_stops_before_a_wait_past_it)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 10;
	cfg.max_duration = 1000 * MS;
	p = mk(&cfg);
	/* Attempts at 0, 100, 300 and 700 ms; the next wait (800 ms) would
	 * end at 1500 ms, past the budget, so retry gives up at 700 ms. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 4);
	CHECK_INT(vnow(&vc), ==, T0 + 700 * MS);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	CHECK_CONTAINS(keel_test_ev, "retry@3+400ms,cleanup4,give-up@4+800ms,"
				     "failure@4");
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(max_duration_counts_the_attempts_time)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO }, .n = 1, .work = 300 * MS,
			    .vc = &vc };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 10;
	cfg.max_duration = 1000 * MS;
	p = mk(&cfg);
	/* 0-300 call, 300-400 wait, 400-700 call, 700-900 wait, 900-1200
	 * call; a wait of 400 ms would end at 1600 ms. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(vnow(&vc), ==, T0 + 1200 * MS);
	CHECK_INT(keel_vclock_slept(&vc), ==, 300 * MS);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(max_duration_boundary_is_exclusive)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 10;
	cfg.max_duration = 300 * MS;
	p = mk(&cfg);
	/* The second wait would end exactly at the budget's end: an attempt
	 * starting then would have no time left, so it is not made. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(vnow(&vc), ==, T0 + 100 * MS);
	keel_policy_free(p);
	cfg.max_duration = 300 * MS + 1;
	p = mk(&cfg);
	s.calls = 0;
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 3);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(wait_that_cannot_end_gives_up)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.backoff.kind = KEEL_BACKOFF_CONSTANT;
	cfg.backoff.initial = INT64_MAX;
	cfg.backoff.max = 0;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 1);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * Classification
 * ======================================================================== */

static int only_eagain(const struct keel_outcome *o, void *ud)
{
	(void)ud;
	return o->code == -EAGAIN;
}

TEST(retry_if_decides_alone)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EAGAIN, -EAGAIN, -EIO }, .n = 3 };
	struct script open = { .codes = { KEEL_EBREAKER_OPEN, 0 }, .n = 2 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 5;
	cfg.retry_if = only_eagain;
	p = mk(&cfg);
	/* -EIO is not retried: the failure stands, no give-up. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_NONE);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,failure@3");
	/* The default's exceptions are gone too: it is not consulted. */
	CHECK_INT(keel_policy_execute(p, op_script, &open, NULL, &out), ==,
		  KEEL_EBREAKER_OPEN);
	CHECK_INT(out.attempts, ==, 1);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* Retries a success whose result says "not ready yet". */
static int until_ready(const struct keel_outcome *o, void *ud)
{
	if (o->code != 0)
		return keel_retry_retryable(o, NULL);
	return o->result != ud;
}

static int op_ready_on_third(struct keel_exec *x, void *arg)
{
	x->result = x->attempt == 3 ? arg : NULL;
	return 0;
}

TEST(retry_if_sees_successes)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	int ready;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.retry_if = until_ready;
	cfg.retry_if_ud = &ready;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_ready_on_third, &ready, NULL, &out),
		  ==, 0);
	CHECK_INT(out.attempts, ==, 3);
	CHECK(out.result == &ready);
	CHECK_STR(keel_test_ev, "retry@1+100ms,retry@2+200ms,success@3");
	CHECK_INT(stats_of(p).successes, ==, 1);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

static int abort_on_eperm(const struct keel_outcome *o, void *ud)
{
	int *calls = ud;

	(*calls)++;
	return o->code == -EPERM;
}

TEST(abort_if_stops_a_retryable_failure)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EIO, -EPERM, 0 }, .n = 3 };
	struct script ok = { .codes = { 0 }, .n = 1 };
	int calls = 0;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 5;
	cfg.abort_if = abort_on_eperm;
	cfg.abort_if_ud = &calls;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EPERM);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,give-up@2,"
				"failure@2");
	CHECK_INT(calls, ==, 2);
	/* Not consulted for outcomes retry_if would not retry. */
	CHECK_INT(keel_policy_execute(p, op_script, &ok, NULL, &out), ==, 0);
	CHECK_INT(calls, ==, 2);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(default_classification)
{
	static const int not_retried[] = { KEEL_EBREAKER_OPEN, KEEL_EBUDGET,
					   -ECANCELED };
	static const int retried[] = { -EIO, -ETIMEDOUT, KEEL_EBULKHEAD_FULL,
				       KEEL_ERATE_LIMITED, KEEL_ECHAOS,
				       KEEL_EUNKNOWN, -ECONNREFUSED, PANIC };
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	size_t i;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.on_event = NULL;
	p = mk(&cfg);
	for (i = 0; i < sizeof(not_retried) / sizeof(not_retried[0]); i++) {
		struct script s = { .codes = { not_retried[i], 0 }, .n = 2 };

		CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==,
			  not_retried[i]);
		CHECK_INT(out.attempts, ==, 1);
	}
	for (i = 0; i < sizeof(retried) / sizeof(retried[0]); i++) {
		struct script s = { .codes = { retried[i], 0 }, .n = 2 };

		CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==,
			  0);
		CHECK_INT(out.attempts, ==, 2);
	}
	memset(&out, 0, sizeof(out));
	CHECK_INT(keel_retry_retryable(&out, NULL), ==, 0);
	out.code = KEEL_EPANIC;
	out.panicked = 1;
	CHECK_INT(keel_retry_retryable(&out, NULL), ==, 1);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * Retry-After
 * ======================================================================== */

TEST(retry_after_is_honoured_exactly)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EAGAIN, 0 }, .n = 2,
			    .retry_after = { 3 * KEEL_SEC } };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.backoff.jitter = KEEL_JITTER_FULL; /* the server's delay is not jittered */
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, 0);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(keel_vclock_slept(&vc), ==, 3 * KEEL_SEC);
	CHECK_INT(vnow(&vc), ==, T0 + 3 * KEEL_SEC);
	CHECK_INT(out.retry_after, ==, 0); /* the last attempt's */
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+3000ms,cleanup2,success@2");
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(retry_after_shorter_than_backoff_is_ignored)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *p;
	struct script s = { .codes = { -EAGAIN, 0 }, .n = 2,
			    .retry_after = { 50 * MS } };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, NULL), ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 100 * MS);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(retry_after_off)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *p;
	struct script s = { .codes = { -EAGAIN, 0 }, .n = 2,
			    .retry_after = { 3 * KEEL_SEC } };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.honour_retry_after = 0;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, NULL), ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 100 * MS);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(retry_after_beyond_the_limit_gives_up)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { -EAGAIN, 0 }, .n = 2,
			    .retry_after = { 120 * KEEL_SEC } };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	/* Default limit 60 s: asked for 120 s, retry hands the failure back
	 * at once, with the server's delay for the caller to see. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==,
		  -EAGAIN);
	CHECK_INT(out.attempts, ==, 1);
	CHECK_INT(out.retry_after, ==, 120 * KEEL_SEC);
	CHECK_INT(keel_vclock_waits(&vc), ==, 0);
	CHECK_STR(keel_test_ev, "cleanup1,give-up@1+120000ms,failure@1");
	keel_policy_free(p);

	/* 0 = no limit: it waits the full 120 s. */
	cfg.max_retry_after = 0;
	p = mk(&cfg);
	s.calls = 0;
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, 0);
	CHECK_INT(keel_vclock_slept(&vc), ==, 120 * KEEL_SEC);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * The on_retry hook and seeded jitter
 * ======================================================================== */

struct hook_log {
	int n;
	int attempt[16];
	int64_t delay[16];
	int code[16];
	int64_t clock_at[16];
	struct keel_vclock *vc;
};

static void hook(int attempt, int64_t delay, const struct keel_outcome *o,
		 void *ud)
{
	struct hook_log *h = ud;

	if (h->n >= 16)
		return;
	h->attempt[h->n] = attempt;
	h->delay[h->n] = delay;
	h->code[h->n] = o->code;
	h->clock_at[h->n] = h->vc != NULL ? vnow(h->vc) : 0;
	h->n++;
}

TEST(on_retry_sees_each_attempt_and_delay)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *p;
	struct hook_log h = { .vc = &vc };
	struct script s = { .codes = { -EIO, -EAGAIN, -ENOTCONN, 0 }, .n = 4 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 4;
	cfg.on_retry = hook;
	cfg.on_retry_ud = &h;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, NULL), ==, 0);
	CHECK_INT(h.n, ==, 3);
	CHECK_INT(h.attempt[0], ==, 1);
	CHECK_INT(h.attempt[1], ==, 2);
	CHECK_INT(h.attempt[2], ==, 3);
	CHECK_INT(h.delay[0], ==, 100 * MS);
	CHECK_INT(h.delay[1], ==, 200 * MS);
	CHECK_INT(h.delay[2], ==, 400 * MS);
	CHECK_INT(h.code[0], ==, -EIO);
	CHECK_INT(h.code[1], ==, -EAGAIN);
	CHECK_INT(h.code[2], ==, -ENOTCONN);
	/* Called before the wait, not after. */
	CHECK_INT(h.clock_at[0], ==, T0);
	CHECK_INT(h.clock_at[1], ==, T0 + 100 * MS);
	CHECK_INT(h.clock_at[2], ==, T0 + 300 * MS);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* The delays of five failing calls through a fresh policy with seed. */
static void seeded_delays(uint64_t seed, int64_t *delays, int64_t *slept)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *p;
	struct hook_log h = { 0 };
	int i;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.on_event = NULL;
	cfg.backoff.jitter = KEEL_JITTER_FULL;
	cfg.max_attempts = 4;
	cfg.seed = seed;
	cfg.on_retry = hook;
	cfg.on_retry_ud = &h;
	p = mk(&cfg);
	for (i = 0; i < 5; i++) {
		struct script s = { .codes = { -EIO }, .n = 1 };

		CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, NULL), ==,
			  -EIO);
	}
	CHECK_INT(h.n, ==, 15);
	memcpy(delays, h.delay, sizeof(h.delay[0]) * 15);
	*slept = keel_vclock_slept(&vc);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(seeded_jitter_is_reproducible)
{
	int64_t a[15], b[15], c[15], sa, sb, sc, sum = 0;
	int i, same = 0;

	seeded_delays(7, a, &sa);
	seeded_delays(7, b, &sb);
	seeded_delays(8, c, &sc);
	for (i = 0; i < 15; i++) {
		int64_t d = (int64_t)100 * MS << (i % 3);

		CHECK_INT(a[i], ==, b[i]);
		CHECK(a[i] >= 0 && a[i] <= d); /* full jitter of 100/200/400 ms */
		same += a[i] == c[i];
		sum += a[i];
	}
	CHECK_INT(same, <, 3);
	CHECK_INT(sa, ==, sb);
	CHECK_INT(sa, ==, sum); /* the virtual clock waited what the hook saw */
	/* Each call draws its own stream: the five calls do not repeat. */
	CHECK(a[0] != a[3] || a[1] != a[4] || a[2] != a[5]);
}

TEST(seeded_streams_do_not_overlap)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *p;
	struct hook_log h = { 0 };
	int i;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.on_event = NULL;
	cfg.backoff.kind = KEEL_BACKOFF_CONSTANT;
	cfg.backoff.jitter = KEEL_JITTER_FULL;
	cfg.seed = 5;
	cfg.on_retry = hook;
	cfg.on_retry_ud = &h;
	p = mk(&cfg);
	for (i = 0; i < 4; i++) {
		struct script s = { .codes = { -EIO }, .n = 1 };

		keel_policy_execute(p, op_script, &s, NULL, NULL);
	}
	CHECK_INT(h.n, ==, 8);
	/* Streams k and k + 1 would share draws if they were neighbouring
	 * points of one sequence: call 2's first delay would be call 1's
	 * second. */
	for (i = 2; i < 8; i += 2)
		CHECK(h.delay[i] != h.delay[i - 1]);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * Outcomes between attempts
 * ======================================================================== */

TEST(outcome_is_reset_between_attempts)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { PANIC, -EIO }, .n = 2,
			    .retry_after = { 10 * MS, 0 } };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 2;
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, -EIO);
	CHECK_INT(out.panicked, ==, 0);
	CHECK_STR(out.panic_msg, "");
	CHECK_INT(out.retry_after, ==, 0);
	CHECK(out.result == NULL);
	CHECK_INT(out.attempts, ==, 2);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * Panics and faults are retried; their cleanups run every time
 * ======================================================================== */

TEST(panic_is_retried_and_cleanups_run)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	int value;
	struct script s = { .codes = { PANIC, PANIC, 0 }, .n = 3,
			    .result = &value };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, 0);
	CHECK(out.result == &value);
	CHECK_INT(out.panicked, ==, 0);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,success@3");
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(panic_every_time_gives_up_as_a_panic)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { PANIC }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==,
		  KEEL_EPANIC);
	CHECK_INT(out.panicked, ==, 1);
	CHECK_INT(out.panic_kind, ==, KEEL_PANIC_MESSAGE);
	CHECK_STR(out.panic_msg, "boom 3"); /* the last attempt's */
	CHECK_INT(out.attempts, ==, 3);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,give-up@3,panic@3");
	CHECK_INT(stats_of(p).panics, ==, 1);
	CHECK_INT(stats_of(p).failures, ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(null_dereference_is_retried_and_cleanups_run)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct script s = { .codes = { FAULT, FAULT, 0 }, .n = 3 };
	struct script always = { .codes = { FAULT }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	CHECK_INT(keel_policy_execute(p, op_script, &s, NULL, &out), ==, 0);
	CHECK_INT(out.attempts, ==, 3);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,success@3");
	keel_test_ev[0] = '\0';
	CHECK_INT(keel_policy_execute(p, op_script, &always, NULL, &out), ==,
		  KEEL_EPANIC);
	CHECK_INT(out.panicked, ==, 1);
	CHECK_INT(out.panic_kind, ==, KEEL_PANIC_NIL_DEREF);
	CHECK_CONTAINS(out.panic_msg, "nil pointer dereference");
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,"
				"retry@2+200ms,cleanup3,give-up@3,panic@3");
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * Cancellation and deadlines
 * ======================================================================== */

/* A policy for tests: does something to the exec before the rest of the
 * chain runs, and records what it sees. */
enum probe_mode { PROBE_RECORD, PROBE_CANCEL, PROBE_DEADLINE, PROBE_REJECT };

struct probe {
	struct keel_policy base;
	enum probe_mode mode;
	struct keel_cancel *cancel;
	int64_t deadline;
	int n;
	int attempt[16];
	int64_t start[16];
	int attempt_after;
};

static void probe_execute(struct keel_policy *p, struct keel__chain *next,
			  struct keel_exec *x, struct keel_outcome *out)
{
	struct probe *pr = (struct probe *)(void *)p;

	if (pr->mode == PROBE_CANCEL)
		keel_cancel_cancel(pr->cancel, 0);
	if (pr->mode == PROBE_DEADLINE)
		x->deadline = pr->deadline;
	if (pr->n < 16) {
		pr->attempt[pr->n] = x->attempt;
		pr->start[pr->n] = x->start;
		pr->n++;
	}
	/* A bulkhead inside the retry, full from the second attempt on. */
	if (pr->mode == PROBE_REJECT && x->attempt > 1) {
		keel__outcome_reject(out, KEEL_POLICY_BULKHEAD,
				     KEEL_EBULKHEAD_FULL);
		return;
	}
	keel__chain_next(next, x, out);
	pr->attempt_after = x->attempt;
}

static void probe_destroy(struct keel_policy *p)
{
	(void)p;
}

static const struct keel_policy_ops probe_ops = {
	KEEL_POLICY_NONE, probe_execute, probe_destroy
};

static void probe_init(struct probe *pr, enum probe_mode mode,
		       struct keel_vclock *vc)
{
	memset(pr, 0, sizeof(*pr));
	keel__policy_init(&pr->base, &probe_ops, "probe", &vc->clock, NULL,
			  NULL);
	pr->mode = mode;
}

TEST(cancelled_before_any_attempt)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct keel_cancel tok;
	struct probe pr;
	struct keel_policy *chain[2];
	struct script s = { .codes = { 0 }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	keel_cancel_init(&tok, &vc.clock, NULL);
	/* Cancelled while an outer layer held the call (a bulkhead queue, say):
	 * retry makes no attempt. */
	probe_init(&pr, PROBE_CANCEL, &vc);
	pr.cancel = &tok;
	chain[0] = &pr.base;
	chain[1] = p;
	CHECK_INT(keel__execute(chain, 2, &vc.clock, op_script, &s, &tok, &out),
		  ==, -ECANCELED);
	CHECK_INT(s.calls, ==, 0);
	CHECK_INT(out.attempts, ==, 0);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	CHECK_STR(keel_test_ev, "failure@0");
	CHECK_INT(stats_of(p).calls, ==, 1);
	CHECK_INT(stats_of(p).failures, ==, 1);
	CHECK_INT(pr.attempt_after, ==, 1); /* x->attempt given back */

	/* Through the engine alone, a cancelled token never reaches retry. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, &tok, &out), ==,
		  -ECANCELED);
	CHECK_INT(s.calls, ==, 0);
	CHECK_INT(out.attempts, ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(deadline_passed_before_any_attempt)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct probe pr;
	struct keel_policy *chain[2];
	struct script s = { .codes = { 0 }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	probe_init(&pr, PROBE_DEADLINE, &vc);
	pr.deadline = T0;
	chain[0] = &pr.base;
	chain[1] = p;
	CHECK_INT(keel__execute(chain, 2, &vc.clock, op_script, &s, NULL, &out),
		  ==, -ETIMEDOUT);
	CHECK_INT(s.calls, ==, 0);
	CHECK_INT(out.attempts, ==, 0);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(exec_deadline_refuses_a_wait_past_it)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct probe pr;
	struct keel_policy *chain[2];
	struct script s = { .codes = { -EIO }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 10;
	p = mk(&cfg);
	probe_init(&pr, PROBE_DEADLINE, &vc);
	pr.deadline = T0 + 250 * MS;
	chain[0] = &pr.base;
	chain[1] = p;
	/* Attempts at 0 and 100 ms; a 200 ms wait would end at 300 ms. */
	CHECK_INT(keel__execute(chain, 2, &vc.clock, op_script, &s, NULL, &out),
		  ==, -EIO);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(vnow(&vc), ==, T0 + 100 * MS);
	CHECK_CONTAINS(keel_test_ev, "give-up@2+200ms");
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(token_deadline_refuses_a_wait_past_it)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct keel_cancel tok;
	struct script s = { .codes = { -EIO }, .n = 1 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 10;
	p = mk(&cfg);
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, T0 + 250 * MS);
	CHECK_INT(keel_policy_execute(p, op_script, &s, &tok, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(vnow(&vc), ==, T0 + 100 * MS);
	/* Retry did not sit out the deadline: the token is still live. */
	CHECK_INT(keel_cancel_err(&tok), ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(cancelled_during_an_attempt_stops_retrying)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct keel_cancel tok;
	struct script s = { .codes = { -EIO }, .n = 1, .cancel_at = 2 };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 10;
	p = mk(&cfg);
	keel_cancel_init(&tok, &vc.clock, NULL);
	s.cancel = &tok;
	/* The second call cancels and then fails: its failure is the answer. */
	CHECK_INT(keel_policy_execute(p, op_script, &s, &tok, &out), ==, -EIO);
	CHECK_INT(out.attempts, ==, 2);
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,cleanup2,give-up@2,"
				"failure@2");
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

struct canceller {
	struct keel_cancel *tok;
	struct keel_vclock *vc; /* NULL: cancel 20 ms of real time after the
				   first call */
	int *calls;		/* the script's calls (real time) */
};

static void *cancel_thread(void *arg)
{
	struct canceller *c = arg;

	if (c->vc != NULL) {
		while (keel_vclock_waits(c->vc) == 0)
			usleep(1000);
		usleep(5000); /* let it settle into the wait */
	} else {
		/* After the first attempt (a loaded machine may start it
		 * late), once the retry waits. */
		for (int i = 0; i < 5000 &&
				__atomic_load_n(c->calls, __ATOMIC_SEQ_CST) == 0;
		     i++)
			usleep(1000);
		usleep(20000);
	}
	keel_cancel_cancel(c->tok, 0);
	return NULL;
}

TEST(cancel_interrupts_a_real_wait)
{
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct keel_cancel tok;
	struct script s = { .codes = { -EIO }, .n = 1 };
	struct canceller c = { &tok, NULL, &s.calls };
	pthread_t t;
	double t0, took;

	keel_retry_config_init(&cfg); /* the system clock */
	cfg.on_event = log_event;
	cfg.backoff.kind = KEEL_BACKOFF_CONSTANT;
	cfg.backoff.initial = 10 * KEEL_SEC;
	cfg.backoff.jitter = KEEL_JITTER_NONE;
	p = mk(&cfg);
	keel_cancel_init(&tok, NULL, NULL);
	CHECK_INT(pthread_create(&t, NULL, cancel_thread, &c), ==, 0);
	t0 = keel_test_now();
	CHECK_INT(keel_policy_execute(p, op_script, &s, &tok, &out), ==, -EIO);
	took = keel_test_now() - t0;
	pthread_join(t, NULL);
	CHECK(took < 2.0); /* 20 ms expected; 10 s if the wait ignored it */
	CHECK_INT(out.attempts, ==, 1);
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+10000ms,give-up@1,failure@1");
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}

TEST(cancel_interrupts_a_virtual_wait)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct keel_cancel tok;
	struct canceller c = { &tok, &vc, NULL };
	struct script s = { .codes = { -EIO }, .n = 1 };
	pthread_t t;

	keel_vclock_init(&vc, T0);
	keel_vclock_set_auto(&vc, 0); /* waits block until time is moved */
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	keel_cancel_init(&tok, &vc.clock, NULL);
	CHECK_INT(pthread_create(&t, NULL, cancel_thread, &c), ==, 0);
	CHECK_INT(keel_policy_execute(p, op_script, &s, &tok, &out), ==, -EIO);
	pthread_join(t, NULL);
	CHECK_INT(out.attempts, ==, 1);
	CHECK_INT(vnow(&vc), ==, T0); /* no virtual time passed */
	CHECK_STR(keel_test_ev, "cleanup1,retry@1+100ms,give-up@1,failure@1");
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * Nesting
 * ======================================================================== */

TEST(rejection_inside_leaves_nothing_of_the_previous_attempt)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct probe inner;
	struct keel_policy *chain[2];
	struct script s = { .codes = { PANIC }, .n = 1,
			    .retry_after = { 10 * MS } };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.max_attempts = 2;
	p = mk(&cfg);
	probe_init(&inner, PROBE_REJECT, &vc);
	chain[0] = p;
	chain[1] = &inner.base;
	CHECK_INT(keel__execute(chain, 2, &vc.clock, op_script, &s, NULL, &out),
		  ==, KEEL_EBULKHEAD_FULL);
	CHECK_INT(out.attempts, ==, 1); /* the rejected attempt made no call */
	CHECK_INT(out.panicked, ==, 0);
	CHECK_INT(out.panic_kind, ==, KEEL_PANIC_MESSAGE);
	CHECK_INT(out.retry_after, ==, 0); /* not the first attempt's 10 ms */
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(attempt_and_start_seen_by_inner_policies)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *p;
	struct probe outer, inner;
	struct keel_policy *chain[3];
	struct script s = { .codes = { -EIO, -EIO, 0 }, .n = 3, .work = 5 * MS,
			    .vc = &vc };

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	p = mk(&cfg);
	probe_init(&outer, PROBE_RECORD, &vc);
	probe_init(&inner, PROBE_RECORD, &vc);
	inner.base.needs_time = 1; /* asks the engine to keep x->start */
	chain[0] = &outer.base;
	chain[1] = p;
	chain[2] = &inner.base;
	CHECK_INT(keel__execute(chain, 3, &vc.clock, op_script, &s, NULL, &out),
		  ==, 0);
	CHECK_INT(inner.n, ==, 3);
	CHECK_INT(inner.attempt[0], ==, 1);
	CHECK_INT(inner.attempt[1], ==, 2);
	CHECK_INT(inner.attempt[2], ==, 3);
	/* Each attempt's start is after its wait: 0; 5 + 100; 110 + 200. */
	CHECK_INT(inner.start[0], ==, T0);
	CHECK_INT(inner.start[1], ==, T0 + 105 * MS);
	CHECK_INT(inner.start[2], ==, T0 + 310 * MS);
	CHECK_INT(outer.attempt_after, ==, 1); /* given back as it was */
	keel_policy_free(p);
	keel_vclock_destroy(&vc);
}

TEST(retry_inside_retry_multiplies)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_outcome out;
	struct keel_policy *outer, *inner;
	struct keel_policy *chain[2];
	struct script s = { .codes = { -EIO }, .n = 1 };
	int i;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.on_event = NULL;
	cfg.backoff.initial = 0;
	cfg.max_attempts = 2;
	outer = mk(&cfg);
	cfg.max_attempts = 3;
	inner = mk(&cfg);
	chain[0] = outer;
	chain[1] = inner;
	CHECK_INT(keel__execute(chain, 2, &vc.clock, op_script, &s, NULL, &out),
		  ==, -EIO);
	CHECK_INT(out.attempts, ==, 6); /* calls made, across both */
	CHECK_INT(out.decided_by, ==, KEEL_POLICY_RETRY);
	for (i = 0; i < 6; i++)
		CHECK_INT(s.seen[i], ==, i % 3 + 1);
	CHECK_INT(stats_of(outer).calls, ==, 1);
	CHECK_INT(stats_of(outer).retries, ==, 1);
	CHECK_INT(stats_of(inner).calls, ==, 2);
	CHECK_INT(stats_of(inner).retries, ==, 4);
	keel_policy_free(outer);
	keel_policy_free(inner);
	keel_vclock_destroy(&vc);
}

/* ========================================================================
 * A call allocates nothing
 * ======================================================================== */

TEST(a_call_allocates_nothing)
{
#if !KEEL_TEST_CAN_COUNT
	KEEL_TEST_SKIP("the sanitizer owns malloc; counted in the plain builds");
#else
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *p, *seeded;
	struct keel_cancel tok;
	void *(*volatile alloc)(size_t) = malloc;
	void *probe;
	int i;

	keel_vclock_init(&vc, T0);
	cfg_plain(&cfg, &vc);
	cfg.on_event = NULL;
	cfg.max_duration = 100 * KEEL_SEC;
	p = mk(&cfg);
	cfg.backoff.jitter = KEEL_JITTER_DECORRELATED;
	cfg.seed = 3;
	seeded = mk(&cfg);
	keel_cancel_init(&tok, &vc.clock, NULL);
	/* Make sure the counter works at all. */
	keel_test_counting = 1;
	probe = alloc(16); /* through a volatile pointer: not optimised away */
	keel_test_counting = 0;
	free(probe);
	CHECK_INT(keel_test_allocations, ==, 1);
	keel_test_allocations = 0;
	for (i = 0; i < 2; i++) {
		struct script ok = { .codes = { 0 }, .n = 1 };
		struct script retried = { .codes = { -EIO, -EIO, 0 }, .n = 3 };

		keel_test_counting = i; /* the first round warms up keel's per-thread state */
		CHECK_INT(keel_policy_execute(p, op_script, &ok, &tok, NULL), ==,
			  0);
		CHECK_INT(keel_policy_execute(p, op_script, &retried, &tok, NULL),
			  ==, 0);
		retried.calls = 0;
		CHECK_INT(keel_policy_execute(seeded, op_script, &retried, NULL,
					      NULL),
			  ==, 0);
	}
	keel_test_counting = 0;
	CHECK_INT(keel_test_allocations, ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
	keel_policy_free(seeded);
	keel_vclock_destroy(&vc);
#endif
}

/* ========================================================================
 * One policy, four threads
 * ======================================================================== */

#define THREADS 4
#define CALLS 2000

struct worker {
	struct keel_policy *p;
	int failures; /* calls that did not end as expected */
};

/* Fails the first attempt of every call, panicking on every fourth. */
static int op_flaky(struct keel_exec *x, void *arg)
{
	intptr_t n = (intptr_t)arg;

	if (x->attempt == 1) {
		if (n % 4 == 0)
			keel_panic("flaky");
		return -EAGAIN;
	}
	return 0;
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	intptr_t i;

	for (i = 0; i < CALLS; i++) {
		struct keel_outcome out;

		if (keel_policy_execute(w->p, op_flaky, (void *)i, NULL, &out) != 0 ||
		    out.attempts != 2)
			w->failures++;
	}
	return NULL;
}

static uint64_t ev_counts[KEEL_EV__COUNT];

static void count_event(const struct keel_event *ev, void *ud)
{
	(void)ud;
	__atomic_add_fetch(&ev_counts[ev->type], 1, __ATOMIC_RELAXED);
}

TEST(four_threads_share_one_policy)
{
	struct keel_vclock vc;
	struct keel_retry_config cfg;
	struct keel_policy *pol[2];
	int k;

	keel_vclock_init(&vc, T0);
	keel_retry_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.on_event = count_event;
	pol[0] = mk(&cfg); /* full jitter from each thread's own state */
	cfg.seed = 99;
	cfg.backoff.jitter = KEEL_JITTER_DECORRELATED;
	pol[1] = mk(&cfg); /* seeded: streams handed out atomically */
	for (k = 0; k < 2; k++) {
		struct worker w[THREADS];
		pthread_t t[THREADS];
		struct keel_policy_stats st;
		int i;

		memset(ev_counts, 0, sizeof(ev_counts));
		for (i = 0; i < THREADS; i++) {
			w[i].p = pol[k];
			w[i].failures = 0;
			CHECK_INT(pthread_create(&t[i], NULL, worker_run, &w[i]),
				  ==, 0);
		}
		for (i = 0; i < THREADS; i++) {
			pthread_join(t[i], NULL);
			CHECK_INT(w[i].failures, ==, 0);
		}
		st = stats_of(pol[k]);
		CHECK_INT(st.calls, ==, THREADS * CALLS);
		CHECK_INT(st.successes, ==, THREADS * CALLS);
		CHECK_INT(st.retries, ==, THREADS * CALLS);
		CHECK_INT(st.failures + st.panics, ==, 0);
		CHECK_INT(ev_counts[KEEL_EV_RETRY], ==, THREADS * CALLS);
		CHECK_INT(ev_counts[KEEL_EV_SUCCESS], ==, THREADS * CALLS);
		CHECK_INT(ev_counts[KEEL_EV_GIVE_UP], ==, 0);
	}
	keel_policy_free(pol[0]);
	keel_policy_free(pol[1]);
	keel_vclock_destroy(&vc);
}
