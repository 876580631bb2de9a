/*
 * src/resilience/pipeline.c - several policies around one call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/pipeline.h>

struct keel_pipeline {
	const char *name;
	const struct keel_clock *clock;
	struct keel_policy *policies[KEEL_PIPELINE_MAX];
	int n;
	int owns;
};

/* Nesting rank of each kind, outermost first (see keel/pipeline.h). */
static int rank(enum keel_policy_kind kind)
{
	switch (kind) {
	case KEEL_POLICY_FALLBACK:
		return 0;
	case KEEL_POLICY_RETRY:
		return 1;
	case KEEL_POLICY_BUDGET:
		return 2;
	case KEEL_POLICY_BREAKER:
		return 3;
	case KEEL_POLICY_RATELIMIT:
		return 4;
	case KEEL_POLICY_BULKHEAD:
		return 5;
	case KEEL_POLICY_TIMEOUT:
		return 6;
	case KEEL_POLICY_CHAOS:
		return 7;
	default:
		return 8;
	}
}

void keel_pipeline_config_init(struct keel_pipeline_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
}

int keel_pipeline_config_add(struct keel_pipeline_config *cfg,
			     struct keel_policy *p)
{
	if (p == NULL)
		return -EINVAL;
	if (cfg->npolicies >= KEEL_PIPELINE_MAX)
		return -ENOSPC;
	cfg->policies[cfg->npolicies++] = p;
	return 0;
}

int keel_pipeline_new(const struct keel_pipeline_config *cfg,
		      struct keel_pipeline **out)
{
	struct keel_pipeline *pl;
	int i, j;

	*out = NULL;
	if (cfg == NULL || cfg->npolicies < 0 ||
	    cfg->npolicies > KEEL_PIPELINE_MAX)
		return -EINVAL;
	for (i = 0; i < cfg->npolicies; i++) {
		if (cfg->policies[i] == NULL)
			return -EINVAL;
		for (j = 0; j < i && !cfg->keep_order; j++)
			if (keel_policy_kind(cfg->policies[j]) ==
			    keel_policy_kind(cfg->policies[i]))
				return -EINVAL; /* the order would be ambiguous */
	}
	pl = calloc(1, sizeof(*pl));
	if (pl == NULL)
		return -ENOMEM;
	pl->name = cfg->name != NULL ? cfg->name : "pipeline";
	pl->clock = cfg->clock != NULL ? cfg->clock : keel_clock_system();
	pl->n = cfg->npolicies;
	pl->owns = cfg->owns_policies;
	memcpy(pl->policies, cfg->policies, sizeof(pl->policies));
	/* Insertion sort by rank: stable, and n <= 8. */
	for (i = 1; i < pl->n && !cfg->keep_order; i++) {
		struct keel_policy *p = pl->policies[i];

		for (j = i; j > 0 && rank(keel_policy_kind(pl->policies[j - 1])) >
					     rank(keel_policy_kind(p));
		     j--)
			pl->policies[j] = pl->policies[j - 1];
		pl->policies[j] = p;
	}
	*out = pl;
	return 0;
}

void keel_pipeline_free(struct keel_pipeline *pl)
{
	int i;

	if (pl == NULL)
		return;
	if (pl->owns)
		for (i = 0; i < pl->n; i++)
			keel_policy_free(pl->policies[i]);
	free(pl);
}

int keel_pipeline_execute(struct keel_pipeline *pl, keel_op_fn fn, void *arg,
			  struct keel_cancel *cancel, struct keel_outcome *out)
{
	struct keel_outcome local;

	if (out == NULL)
		out = &local;
	return keel__execute(pl->policies, pl->n, pl->clock, fn, arg, cancel,
			     out);
}

int keel_pipeline_policies(const struct keel_pipeline *pl,
			   struct keel_policy *const **policies)
{
	if (policies != NULL)
		*policies = pl->policies;
	return pl->n;
}
