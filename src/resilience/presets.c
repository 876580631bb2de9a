/*
 * src/resilience/presets.c - the design notes' three tiers of calls as
 * ready pipelines (see keel/pipeline.h for the numbers and why).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>

#include <keel/breaker.h>
#include <keel/pipeline.h>
#include <keel/retry.h>

static int tier_retry(enum keel_tier tier, const char *name,
		      const struct keel_clock *clock, struct keel_policy **out)
{
	struct keel_retry_config cfg;

	keel_retry_config_init(&cfg);
	cfg.name = name;
	cfg.clock = clock;
	switch (tier) {
	case KEEL_TIER_LIGHT:
		cfg.max_attempts = 2;
		cfg.backoff.kind = KEEL_BACKOFF_CONSTANT;
		cfg.backoff.initial = 500 * KEEL_MSEC;
		cfg.backoff.jitter = KEEL_JITTER_NONE;
		break;
	case KEEL_TIER_CORE:
		cfg.max_attempts = 3;
		cfg.backoff.kind = KEEL_BACKOFF_EXPONENTIAL;
		cfg.backoff.initial = 100 * KEEL_MSEC;
		cfg.backoff.multiplier = 2.0;
		cfg.backoff.max = 2 * KEEL_SEC;
		cfg.backoff.jitter = KEEL_JITTER_FULL;
		break;
	case KEEL_TIER_READONLY:
		cfg.max_attempts = 2; /* one retry */
		cfg.backoff.kind = KEEL_BACKOFF_CONSTANT;
		cfg.backoff.initial = 0;
		cfg.backoff.jitter = KEEL_JITTER_NONE;
		break;
	default:
		return -EINVAL;
	}
	return keel_retry_new(&cfg, out);
}

static int tier_breaker(const char *name, const struct keel_clock *clock,
			struct keel_policy **out)
{
	struct keel_breaker_config cfg;

	keel_breaker_config_init(&cfg);
	cfg.name = name;
	cfg.clock = clock;
	cfg.consecutive_failures = 5;
	cfg.failure_rate_threshold = 50;
	cfg.window = KEEL_BREAKER_WINDOW_COUNT;
	cfg.window_size = 20;
	cfg.min_calls = 10;
	cfg.open_duration = 10 * KEEL_SEC;
	return keel_breaker_new(&cfg, out);
}

int keel_pipeline_preset(enum keel_tier tier, const char *name,
			 const struct keel_clock *clock,
			 struct keel_pipeline **out)
{
	struct keel_pipeline_config cfg;
	struct keel_policy *retry = NULL, *breaker = NULL;
	int rc;

	*out = NULL;
	keel_pipeline_config_init(&cfg);
	cfg.name = name;
	cfg.clock = clock;
	cfg.owns_policies = 1;
	rc = tier_retry(tier, name, clock, &retry);
	if (rc != 0)
		return rc;
	keel_pipeline_config_add(&cfg, retry);
	if (tier == KEEL_TIER_CORE) {
		rc = tier_breaker(name, clock, &breaker);
		if (rc != 0)
			goto fail;
		keel_pipeline_config_add(&cfg, breaker);
	}
	rc = keel_pipeline_new(&cfg, out);
	if (rc == 0)
		return 0;
fail:
	keel_policy_free(breaker);
	keel_policy_free(retry);
	return rc;
}
