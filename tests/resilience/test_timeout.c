/*
 * tests/resilience/test_timeout.c - the deadline reaches the call and its
 * waits; a late call becomes -ETIMEDOUT unless keep_late_success.
 */
#define _GNU_SOURCE
#include <errno.h>

#include <keel.h>
#include <keel/timeout.h>
#include <keel/pipeline.h>
#include "keel_test.h"

static struct keel_vclock vc;
static int64_t seen_deadline;

static struct keel_policy *make(int64_t timeout, int keep_late)
{
	struct keel_timeout_config cfg;
	struct keel_policy *p;

	keel_timeout_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.timeout = timeout;
	cfg.keep_late_success = keep_late;
	CHECK_INT(keel_timeout_new(&cfg, &p), ==, 0);
	return p;
}

/* Works for arg ns of virtual time, then succeeds. */
static int op_work(struct keel_exec *x, void *arg)
{
	seen_deadline = x->deadline;
	keel_vclock_advance(&vc, (int64_t)(intptr_t)arg);
	return 0;
}

/* Waits for something that takes arg ns, through keel_exec_wait. */
static int op_wait(struct keel_exec *x, void *arg)
{
	return keel_exec_wait(x, x->clock->now(x->clock) + (int64_t)(intptr_t)arg);
}

TEST(fast_call_passes)
{
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 1000);
	p = make(100, 0);
	CHECK_INT(keel_policy_execute(p, op_work, (void *)(intptr_t)50, NULL, &o),
		  ==, 0);
	CHECK_INT(seen_deadline, ==, 1100);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_NONE);
	keel_policy_free(p);
}

TEST(late_call_times_out)
{
	struct keel_policy *p;
	struct keel_policy_stats st;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	p = make(100, 0);
	CHECK_INT(keel_policy_execute(p, op_work, (void *)(intptr_t)150, NULL, &o),
		  ==, -ETIMEDOUT);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_TIMEOUT);
	keel_policy_stats(p, &st);
	CHECK_INT(st.timeouts, ==, 1);
	keel_policy_free(p);

	p = make(100, 1); /* keep_late_success */
	CHECK_INT(keel_policy_execute(p, op_work, (void *)(intptr_t)150, NULL, &o),
		  ==, 0);
	keel_policy_free(p);
}

TEST(waits_end_at_the_deadline)
{
	struct keel_policy *p;
	struct keel_outcome o;

	keel_vclock_init(&vc, 0);
	p = make(100, 0);
	/* The call wants 10 s; the timeout gives it 100 ns of virtual time. */
	CHECK_INT(keel_policy_execute(p, op_wait, (void *)(intptr_t)(10 * KEEL_SEC),
				      NULL, &o), ==, -ETIMEDOUT);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 100);
	keel_policy_free(p);
}

TEST(nested_timeouts_take_the_earliest)
{
	struct keel_policy *outer, *inner;
	struct keel_pipeline_config cfg;
	struct keel_pipeline *pl;

	keel_vclock_init(&vc, 0);
	outer = make(50, 0);
	inner = make(500, 0);
	keel_pipeline_config_init(&cfg);
	cfg.clock = &vc.clock;
	cfg.keep_order = 1; /* two timeouts: nest exactly as given */
	keel_pipeline_config_add(&cfg, outer);
	keel_pipeline_config_add(&cfg, inner);
	cfg.owns_policies = 1;
	CHECK_INT(keel_pipeline_new(&cfg, &pl), ==, 0);
	CHECK_INT(keel_pipeline_execute(pl, op_work, (void *)(intptr_t)10, NULL, NULL),
		  ==, 0);
	CHECK_INT(seen_deadline, ==, 50);
	keel_pipeline_free(pl);
}

TEST(bad_config)
{
	struct keel_timeout_config cfg;
	struct keel_policy *p = (void *)1;

	keel_timeout_config_init(&cfg);
	CHECK_INT(cfg.timeout, ==, KEEL_SEC);
	cfg.timeout = 0;
	CHECK_INT(keel_timeout_new(&cfg, &p), ==, -EINVAL);
	CHECK(p == NULL);
}
