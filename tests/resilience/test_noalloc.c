/*
 * tests/resilience/test_noalloc.c - once built, policies allocate nothing
 * per call: successes, failures, panics, real faults, retries, fallbacks,
 * timeouts and rejections through a pipeline of all eight policies.
 */
#define _GNU_SOURCE
#include <errno.h>

#include <keel.h>
#define KEEL_TEST_COUNT_ALLOCATIONS 1
#include "keel_test.h"

static int *volatile nil_ptr;
static char fallback_value[] = "fallback";

static int op_ok(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	return 0;
}

static int op_fail(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	return -EIO;
}

static int op_panic(struct keel_exec *x, void *arg)
{
	(void)x;
	/* Up to 127 bytes a panic message lives in the panic record; longer
	 * ones are copied to the heap (docs/panic.md). */
	keel_panicf("panic %d: %s", 1, (const char *)arg);
}

KEEL_TEST_NO_SANITIZE static int op_fault(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	return *nil_ptr;
}

static struct keel_pipeline *everything(struct keel_vclock *vc,
					struct keel_policy **breaker)
{
	struct keel_pipeline_config pc;
	struct keel_pipeline *pl;
	struct keel_policy *p;

	keel_pipeline_config_init(&pc);
	pc.clock = &vc->clock;
	pc.owns_policies = 1;
	{
		struct keel_fallback_config c;

		keel_fallback_config_init(&c);
		c.clock = &vc->clock;
		keel_fallback_config_value(&c, fallback_value);
		CHECK_INT(keel_fallback_new(&c, &p), ==, 0);
		keel_pipeline_config_add(&pc, p);
	}
	{
		struct keel_retry_config c;

		keel_retry_config_init(&c);
		c.clock = &vc->clock;
		keel_pipeline_config_add(&pc, (keel_retry_new(&c, &p), p));
	}
	{
		struct keel_budget_config c;

		keel_budget_config_init(&c);
		c.clock = &vc->clock;
		keel_pipeline_config_add(&pc, (keel_budget_new(&c, &p), p));
	}
	{
		struct keel_breaker_config c;

		keel_breaker_config_init(&c);
		c.clock = &vc->clock;
		c.failure_rate_threshold = 0; /* stays closed: every path runs */
		c.slow_rate_threshold = 90;
		c.slow_call_duration = KEEL_SEC;
		c.window = KEEL_BREAKER_WINDOW_TIME;
		c.window_size = 10;
		keel_pipeline_config_add(&pc, (keel_breaker_new(&c, breaker), *breaker));
	}
	{
		struct keel_ratelimit_config c;

		keel_ratelimit_config_init(&c);
		c.clock = &vc->clock;
		c.rate = 1000;
		c.mode = KEEL_RATELIMIT_BURSTY;
		keel_pipeline_config_add(&pc, (keel_ratelimit_new(&c, &p), p));
	}
	{
		struct keel_bulkhead_config c;

		keel_bulkhead_config_init(&c);
		c.clock = &vc->clock;
		keel_pipeline_config_add(&pc, (keel_bulkhead_new(&c, &p), p));
	}
	{
		struct keel_timeout_config c;

		keel_timeout_config_init(&c);
		c.clock = &vc->clock;
		keel_pipeline_config_add(&pc, (keel_timeout_new(&c, &p), p));
	}
	{
		struct keel_chaos_config c;

		keel_chaos_config_init(&c);
		c.clock = &vc->clock;
		c.rate = 0.3;
		c.seed = 7;
		keel_pipeline_config_add(&pc, (keel_chaos_new(&c, &p), p));
	}
	CHECK_INT(pc.npolicies, ==, 8);
	CHECK_INT(keel_pipeline_new(&pc, &pl), ==, 0);
	return pl;
}

static void round_of_calls(struct keel_pipeline *pl, struct keel_policy *breaker,
			   struct keel_cancel *tok)
{
	static const char long_text[] = "the database went away";
	int i;

	for (i = 0; i < 50; i++) {
		keel_pipeline_execute(pl, op_ok, NULL, tok, NULL);
		keel_pipeline_execute(pl, op_fail, NULL, tok, NULL);
		keel_pipeline_execute(pl, op_panic, (void *)long_text, tok, NULL);
		keel_pipeline_execute(pl, op_fault, NULL, NULL, NULL);
	}
	/* Rejections too. */
	keel_breaker_force_open(breaker);
	keel_pipeline_execute(pl, op_ok, NULL, tok, NULL);
	keel_breaker_reset(breaker);
}

TEST(pipeline_of_every_policy_allocates_nothing)
{
	struct keel_vclock vc;
	struct keel_pipeline *pl;
	struct keel_policy *breaker;
	struct keel_policy_stats st;
	struct keel_cancel tok;

	keel_vclock_init(&vc, 0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	pl = everything(&vc, &breaker);
	round_of_calls(pl, breaker, &tok); /* warms the thread's state up */
#if KEEL_TEST_CAN_COUNT
	{
		void *(*volatile alloc)(size_t) = malloc;
		void *probe;

		keel_test_counting = 1;
		probe = alloc(8); /* the counter itself works */
		keel_test_counting = 0;
		free(probe);
		CHECK_INT(keel_test_allocations, ==, 1);
		keel_test_allocations = 0;
		keel_test_counting = 1;
		round_of_calls(pl, breaker, &tok);
		keel_test_counting = 0;
		CHECK_INT(keel_test_allocations, ==, 0);
	}
#else
	/* The sanitizer owns malloc: the calls run, the count is the plain
	 * builds' to check. */
	round_of_calls(pl, breaker, &tok);
#endif
	/* And the calls really went through all of it. */
	keel_policy_stats(breaker, &st);
	CHECK(st.successes > 0 && st.failures + st.panics > 0 &&
	      st.rejections >= 2);
	keel_pipeline_free(pl);
	keel_cancel_destroy(&tok);
	keel_vclock_destroy(&vc);
}
