/*
 * keel/pipeline.h - several policies around one call, in a documented order.
 *
 * The default order, outermost first:
 *
 *     fallback > retry > budget > breaker > ratelimit > bulkhead > timeout > chaos > call
 *
 * - fallback is outermost so it sees the final failure, after retries;
 * - retry is outside everything that can fail a single attempt, so each
 *   attempt gets its own breaker check, bulkhead slot and timeout;
 * - the retry budget sits just inside retry, where it sees which attempt
 *   is a retry (x->attempt > 1);
 * - the breaker counts each attempt, and rejects at once while open (retry
 *   treats KEEL_EBREAKER_OPEN as not worth retrying);
 * - the rate limiter and bulkhead guard the resource itself, per attempt;
 * - the timeout is innermost but chaos, so it bounds one attempt;
 * - chaos is innermost, so injected failures look like the call's own.
 *
 * keel_pipeline_new sorts the given policies into that order unless
 * cfg.keep_order is set, in which case they nest exactly as given
 * (policies[0] outermost). The outcome's decided_by names the policy that
 * decided the result: KEEL_POLICY_NONE when the call's own result stands,
 * else the fallback that produced a value, the retry that gave up, the
 * breaker, bulkhead, rate limiter or budget that rejected, or the timeout
 * that fired.
 *
 * A pipeline holds policies; it does not own them unless cfg.owns_policies
 * is set (then keel_pipeline_free frees them). One policy may serve in
 * several pipelines (a breaker shared by every caller of one service).
 * Executing allocates nothing; any number of threads may execute at once.
 */
#ifndef KEEL_PIPELINE_H
#define KEEL_PIPELINE_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_PIPELINE_MAX 8

struct keel_pipeline;

struct keel_pipeline_config {
	const char *name;               /* default "pipeline" */
	const struct keel_clock *clock; /* default: the system clock */
	struct keel_policy *policies[KEEL_PIPELINE_MAX];
	int npolicies;
	int keep_order;                 /* default 0: sort into the default order */
	int owns_policies;              /* default 0 */
};

KEEL_API void keel_pipeline_config_init(struct keel_pipeline_config *cfg);
/* Appends p; -ENOSPC past KEEL_PIPELINE_MAX, -EINVAL for NULL. */
KEEL_API int keel_pipeline_config_add(struct keel_pipeline_config *cfg,
				      struct keel_policy *p);

/*
 * keel_pipeline_new - 0, -EINVAL (a NULL policy, two of one kind when
 * sorting, too many), or -ENOMEM. On failure nothing is allocated and, even
 * with owns_policies, the policies are left to the caller.
 */
KEEL_API int keel_pipeline_new(const struct keel_pipeline_config *cfg,
			       struct keel_pipeline **out);
KEEL_API void keel_pipeline_free(struct keel_pipeline *pl);

/*
 * keel_pipeline_execute - runs fn(x, arg) through the pipeline. cancel may
 * be NULL; its deadline and cancellation reach every wait and the call.
 * Fills *out (which may be NULL) and returns out->code.
 */
KEEL_API int keel_pipeline_execute(struct keel_pipeline *pl, keel_op_fn fn,
				   void *arg, struct keel_cancel *cancel,
				   struct keel_outcome *out);

/* The policies in nesting order (outermost first) and their number. */
KEEL_API int keel_pipeline_policies(const struct keel_pipeline *pl,
				    struct keel_policy *const **policies);

/*
 * Presets for the design notes' three tiers of calls:
 *   KEEL_TIER_LIGHT     light requests: 2 attempts, a fixed 500 ms apart,
 *                       no breaker;
 *   KEEL_TIER_CORE      core services: 3 attempts, exponential backoff
 *                       (100 ms, x2, up to 2 s, full jitter), a breaker
 *                       (50 % failures over the last 20 calls, at least 10,
 *                       or 5 in a row; open 10 s);
 *   KEEL_TIER_READONLY  read-only queries: 1 retry, no delay.
 * The pipeline owns its policies. clock may be NULL.
 */
enum keel_tier {
	KEEL_TIER_LIGHT,
	KEEL_TIER_CORE,
	KEEL_TIER_READONLY,
};
KEEL_API int keel_pipeline_preset(enum keel_tier tier, const char *name,
				  const struct keel_clock *clock,
				  struct keel_pipeline **out);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_PIPELINE_H */
