/*
 * tests/resilience/test_fallback.c - a value, a function, a chain; steps
 * that fail or panic pass on to the next; handle_if.
 */
#define _GNU_SOURCE
#include <errno.h>

#include <keel.h>
#include <keel/fallback.h>
#include "keel_test.h"

static int op_fail(struct keel_exec *x, void *arg)
{
	(void)x;
	return (int)(intptr_t)arg;
}

static int op_ok(struct keel_exec *x, void *arg)
{
	x->result = arg;
	return 0;
}

static int op_panic(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	keel_panic("primary down");
}

static char cache_value[] = "from cache";
static char default_value[] = "default";
static int cache_calls, alert_calls;
static int last_failed_code;

static int from_cache(const struct keel_outcome *failed, struct keel_exec *x,
		      void *ud)
{
	cache_calls++;
	last_failed_code = failed->code;
	if (ud == NULL)
		return -ENOENT; /* cache miss */
	x->result = ud;
	return 0;
}

static int cache_panics(const struct keel_outcome *failed, struct keel_exec *x,
			void *ud)
{
	(void)failed;
	(void)x;
	(void)ud;
	cache_calls++;
	keel_panic("cache crashed");
}

static int alert(const struct keel_outcome *failed, struct keel_exec *x,
		 void *ud)
{
	(void)x;
	(void)ud;
	alert_calls++;
	last_failed_code = failed->code;
	return -EHOSTDOWN; /* give up, loudly */
}

static struct keel_policy *make(struct keel_fallback_config *cfg)
{
	struct keel_policy *p;

	CHECK_INT(keel_fallback_new(cfg, &p), ==, 0);
	return p;
}

TEST(value_replaces_failure)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;
	struct keel_policy_stats st;

	keel_fallback_config_init(&cfg);
	CHECK_INT(keel_fallback_config_value(&cfg, default_value), ==, 0);
	p = make(&cfg);
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, &o),
		  ==, 0);
	CHECK(o.result == default_value);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_FALLBACK);
	CHECK_INT(o.attempts, ==, 1);
	/* Success passes through untouched. */
	CHECK_INT(keel_policy_execute(p, op_ok, cache_value, NULL, &o), ==, 0);
	CHECK(o.result == cache_value);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_NONE);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 2);
	CHECK_INT(st.fallbacks, ==, 1);
	CHECK_INT(st.successes, ==, 2);
	keel_policy_free(p);
}

TEST(chain_cache_then_default)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;

	keel_fallback_config_init(&cfg);
	keel_fallback_config_fn(&cfg, from_cache, NULL); /* a miss */
	keel_fallback_config_value(&cfg, default_value);
	p = make(&cfg);
	cache_calls = 0;
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, &o),
		  ==, 0);
	CHECK_INT(cache_calls, ==, 1);
	CHECK_INT(last_failed_code, ==, -EIO);
	CHECK(o.result == default_value);
	keel_policy_free(p);

	keel_fallback_config_init(&cfg);
	keel_fallback_config_fn(&cfg, from_cache, cache_value); /* a hit */
	keel_fallback_config_value(&cfg, default_value);
	p = make(&cfg);
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, &o),
		  ==, 0);
	CHECK(o.result == cache_value);
	keel_policy_free(p);
}

TEST(panicking_primary_and_step_are_failures)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;

	keel_fallback_config_init(&cfg);
	keel_fallback_config_fn(&cfg, cache_panics, NULL);
	keel_fallback_config_value(&cfg, default_value);
	p = make(&cfg);
	cache_calls = 0;
	CHECK_INT(keel_policy_execute(p, op_panic, NULL, NULL, &o), ==, 0);
	CHECK_INT(cache_calls, ==, 1);
	CHECK(o.result == default_value);
	CHECK_INT(o.panicked, ==, 0);
	keel_policy_free(p);
}

TEST(all_steps_fail_gives_last_failure)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p;
	struct keel_outcome o;

	keel_fallback_config_init(&cfg);
	keel_fallback_config_fn(&cfg, from_cache, NULL);
	keel_fallback_config_fn(&cfg, alert, NULL);
	p = make(&cfg);
	alert_calls = 0;
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, &o),
		  ==, -EHOSTDOWN);
	CHECK_INT(alert_calls, ==, 1);
	CHECK_INT(last_failed_code, ==, -EIO); /* the call's own failure */
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_FALLBACK);
	keel_policy_free(p);
}

static int only_eio(const struct keel_outcome *o, void *ud)
{
	(void)ud;
	return o->code == -EIO;
}

TEST(handle_if_limits_what_falls_back)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p;

	keel_fallback_config_init(&cfg);
	cfg.handle_if = only_eio;
	keel_fallback_config_value(&cfg, default_value);
	p = make(&cfg);
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, NULL),
		  ==, 0);
	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EPERM, NULL,
				      NULL), ==, -EPERM);
	keel_policy_free(p);
}

TEST(bad_config)
{
	struct keel_fallback_config cfg;
	struct keel_policy *p = (void *)1;
	int i;

	keel_fallback_config_init(&cfg);
	CHECK_INT(keel_fallback_new(&cfg, &p), ==, -EINVAL); /* no step */
	CHECK(p == NULL);
	CHECK_INT(keel_fallback_config_fn(&cfg, NULL, NULL), ==, -EINVAL);
	for (i = 0; i < KEEL_FALLBACK_MAX; i++)
		CHECK_INT(keel_fallback_config_value(&cfg, NULL), ==, 0);
	CHECK_INT(keel_fallback_config_value(&cfg, NULL), ==, -ENOSPC);
	CHECK_INT(cfg.nsteps, ==, KEEL_FALLBACK_MAX);
}
