/*
 * tests/resilience/test_pipeline.c - nesting order, ownership, decided_by.
 */
#define _GNU_SOURCE
#include <errno.h>

#include <keel.h>
#include <keel/fallback.h>
#include <keel/pipeline.h>
#include <keel/timeout.h>
#include "keel_test.h"

static struct keel_vclock vc;
static char fallback_value[] = "fallback";

static struct keel_policy *timeout_policy(int64_t t)
{
	struct keel_timeout_config cfg;
	struct keel_policy *p;

	keel_timeout_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.timeout = t;
	CHECK_INT(keel_timeout_new(&cfg, &p), ==, 0);
	return p;
}

static struct keel_policy *fallback_policy(void)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p;

	keel_fallback_config_init(&cfg);
	keel_fallback_config_value(&cfg, fallback_value);
	CHECK_INT(keel_fallback_new(&cfg, &p), ==, 0);
	return p;
}

static int op_slow(struct keel_exec *x, void *arg)
{
	(void)x;
	keel_vclock_advance(&vc, (int64_t)(intptr_t)arg);
	return 0;
}

TEST(sorted_into_default_order)
{
	struct keel_pipeline_config cfg;
	struct keel_pipeline *pl;
	struct keel_policy *const *ps;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_pipeline_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.owns_policies = 1;
	/* Given innermost first; the pipeline puts fallback outside. */
	keel_pipeline_config_add(&cfg, timeout_policy(100));
	keel_pipeline_config_add(&cfg, fallback_policy());
	CHECK_INT(keel_pipeline_new(&cfg, &pl), ==, 0);
	CHECK_INT(keel_pipeline_policies(pl, &ps), ==, 2);
	CHECK_INT(keel_policy_kind(ps[0]), ==, KEEL_POLICY_FALLBACK);
	CHECK_INT(keel_policy_kind(ps[1]), ==, KEEL_POLICY_TIMEOUT);
	/* The timeout fires inside, the fallback answers outside. */
	CHECK_INT(keel_pipeline_execute(pl, op_slow, (void *)(intptr_t)500, NULL,
					&o), ==, 0);
	CHECK(o.result == fallback_value);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_FALLBACK);
	CHECK_INT(o.elapsed, ==, 500);
	keel_pipeline_free(pl);
}

TEST(keep_order_nests_as_given)
{
	struct keel_pipeline_config cfg;
	struct keel_pipeline *pl;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_pipeline_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.keep_order = 1;
	cfg.owns_policies = 1;
	/* Timeout outside the fallback: the fallback's value arrives late,
	 * and the timeout still says -ETIMEDOUT. */
	keel_pipeline_config_add(&cfg, timeout_policy(100));
	keel_pipeline_config_add(&cfg, fallback_policy());
	CHECK_INT(keel_pipeline_new(&cfg, &pl), ==, 0);
	CHECK_INT(keel_pipeline_execute(pl, op_slow, (void *)(intptr_t)500, NULL,
					&o), ==, -ETIMEDOUT);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_TIMEOUT);
	keel_pipeline_free(pl);
}

TEST(shared_policy_not_owned)
{
	struct keel_pipeline_config cfg;
	struct keel_pipeline *a, *b;
	struct keel_policy *shared = timeout_policy(100);
	struct keel_policy_stats st;

	keel_vclock_init(&vc, 0);
	keel_pipeline_config_init(&cfg);
	cfg.clock = &vc.clock;
	keel_pipeline_config_add(&cfg, shared);
	CHECK_INT(keel_pipeline_new(&cfg, &a), ==, 0);
	CHECK_INT(keel_pipeline_new(&cfg, &b), ==, 0);
	keel_pipeline_execute(a, op_slow, (void *)(intptr_t)1, NULL, NULL);
	keel_pipeline_execute(b, op_slow, (void *)(intptr_t)1, NULL, NULL);
	keel_pipeline_free(a);
	keel_pipeline_free(b);
	keel_policy_stats(shared, &st); /* still alive: not owned */
	CHECK_INT(st.calls, ==, 2);
	keel_policy_free(shared);
	keel_test_leak_check();
}

TEST(bad_config_changes_nothing)
{
	struct keel_pipeline_config cfg;
	struct keel_pipeline *pl = (void *)1;
	struct keel_policy *t1 = timeout_policy(1), *t2 = timeout_policy(2);
	int i;

	keel_pipeline_config_init(&cfg);
	CHECK_INT(keel_pipeline_config_add(&cfg, NULL), ==, -EINVAL);
	keel_pipeline_config_add(&cfg, t1);
	keel_pipeline_config_add(&cfg, t2);
	cfg.owns_policies = 1;
	/* Two of one kind cannot be sorted. */
	CHECK_INT(keel_pipeline_new(&cfg, &pl), ==, -EINVAL);
	CHECK(pl == NULL);
	for (i = 2; i < KEEL_PIPELINE_MAX; i++)
		CHECK_INT(keel_pipeline_config_add(&cfg, t1), ==, 0);
	CHECK_INT(keel_pipeline_config_add(&cfg, t1), ==, -ENOSPC);
	/* The policies are still the caller's. */
	keel_policy_free(t1);
	keel_policy_free(t2);
	keel_test_leak_check();
}

TEST(empty_pipeline_runs_the_call)
{
	struct keel_pipeline_config cfg;
	struct keel_pipeline *pl;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	keel_pipeline_config_init(&cfg);
	cfg.clock = &vc.clock;
	CHECK_INT(keel_pipeline_new(&cfg, &pl), ==, 0);
	CHECK_INT(keel_pipeline_execute(pl, op_slow, (void *)(intptr_t)3, NULL, &o),
		  ==, 0);
	CHECK_INT(o.attempts, ==, 1);
	keel_pipeline_free(pl);
}

/* ------------------------------------------------------------------------
 * The three tiers
 * ------------------------------------------------------------------------ */

static int down_calls;

static int op_down(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	down_calls++;
	return -ECONNREFUSED;
}

static void check_tier(enum keel_tier tier, int attempts, int64_t wait_lo,
		       int64_t wait_hi, enum keel_policy_kind kinds[], int nkinds)
{
	struct keel_pipeline *pl;
	struct keel_policy *const *ps;
	struct keel_outcome o;
	int i;

	keel_vclock_init(&vc, 0);
	CHECK_INT(keel_pipeline_preset(tier, "tier", &vc.clock, &pl), ==, 0);
	CHECK_INT(keel_pipeline_policies(pl, &ps), ==, nkinds);
	for (i = 0; i < nkinds; i++)
		CHECK_INT(keel_policy_kind(ps[i]), ==, kinds[i]);
	down_calls = 0;
	CHECK_INT(keel_pipeline_execute(pl, op_down, NULL, NULL, &o), ==,
		  -ECONNREFUSED);
	CHECK_INT(o.attempts, ==, attempts);
	CHECK_INT(down_calls, ==, attempts);
	CHECK(keel_vclock_slept(&vc) >= wait_lo);
	CHECK(keel_vclock_slept(&vc) <= wait_hi);
	keel_pipeline_free(pl);
	keel_test_leak_check();
}

TEST(preset_light)
{
	enum keel_policy_kind k[] = { KEEL_POLICY_RETRY };

	check_tier(KEEL_TIER_LIGHT, 2, 500 * KEEL_MSEC, 500 * KEEL_MSEC, k, 1);
}

TEST(preset_readonly)
{
	enum keel_policy_kind k[] = { KEEL_POLICY_RETRY };

	check_tier(KEEL_TIER_READONLY, 2, 0, 0, k, 1);
}

TEST(preset_core_has_a_breaker_that_opens)
{
	enum keel_policy_kind k[] = { KEEL_POLICY_RETRY, KEEL_POLICY_BREAKER };
	struct keel_pipeline *pl;
	struct keel_outcome o;
	int i, rejected = 0;

	/* 3 attempts; full jitter keeps each wait within 100 ms, 200 ms. */
	check_tier(KEEL_TIER_CORE, 3, 0, 300 * KEEL_MSEC, k, 2);
	keel_vclock_init(&vc, 0);
	CHECK_INT(keel_pipeline_preset(KEEL_TIER_CORE, "core", &vc.clock, &pl),
		  ==, 0);
	down_calls = 0;
	for (i = 0; i < 10; i++) {
		keel_pipeline_execute(pl, op_down, NULL, NULL, &o);
		rejected += o.code == KEEL_EBREAKER_OPEN;
	}
	/* 5 failures in a row open it: call 1 makes 3 attempts, call 2 two
	 * more and its third attempt is refused (so call 2 ends with
	 * KEEL_EBREAKER_OPEN too); after that nothing reaches the service and
	 * retry does not hammer the open breaker. */
	CHECK_INT(down_calls, ==, 5);
	CHECK_INT(rejected, ==, 9);
	keel_pipeline_free(pl);
}

TEST(preset_bad_tier)
{
	struct keel_pipeline *pl = (void *)1;

	CHECK_INT(keel_pipeline_preset((enum keel_tier)42, "x", NULL, &pl), ==,
		  -EINVAL);
	CHECK(pl == NULL);
}
