/*
 * keel/fallback.h - when the call fails, produce a result another way.
 *
 * A fallback holds up to KEEL_FALLBACK_MAX steps, tried in order after a
 * failure that handle_if accepts: each step is a fixed value or a function
 * (read a cache, compute a default, raise an alert and give up). The first
 * step that succeeds decides the outcome: code 0, its result, decided_by
 * KEEL_POLICY_FALLBACK. A step that fails, panics included, passes on to the
 * next; when every step fails, the outcome is the last step's failure.
 *
 * Every step runs in a scope of its own, like the protected call: a step
 * that panics or faults is a failed step, not a crash.
 *
 * Thread-safety: a fallback policy may be shared by any number of threads;
 * its steps are called concurrently and must be safe for that.
 */
#ifndef KEEL_FALLBACK_H
#define KEEL_FALLBACK_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_FALLBACK_MAX 8

/*
 * A step function: failed is the call's own failed outcome (every step sees
 * that one, so an alert can say why the call fell back), x->result is where
 * the step puts its result. Returns 0 on success or a negative code.
 */
typedef int (*keel_fallback_fn)(const struct keel_outcome *failed,
				struct keel_exec *x, void *ud);

struct keel_fallback_step {
	keel_fallback_fn fn; /* NULL: the step is the fixed value */
	void *ud;
	void *value;
};

struct keel_fallback_config {
	const char *name;                /* default "fallback" */
	const struct keel_clock *clock;  /* default: the system clock */
	keel_event_fn on_event;          /* default: none */
	void *event_ud;
	keel_classify_fn handle_if;      /* default NULL: every failure */
	void *handle_ud;
	struct keel_fallback_step steps[KEEL_FALLBACK_MAX];
	int nsteps;                      /* default 0; at least 1 to build */
};

KEEL_API void keel_fallback_config_init(struct keel_fallback_config *cfg);
/* Appends a step; -ENOSPC when KEEL_FALLBACK_MAX steps are there already. */
KEEL_API int keel_fallback_config_value(struct keel_fallback_config *cfg,
					void *value);
KEEL_API int keel_fallback_config_fn(struct keel_fallback_config *cfg,
				     keel_fallback_fn fn, void *ud);

/* 0, -EINVAL (no step), or -ENOMEM. Free with keel_policy_free. */
KEEL_API int keel_fallback_new(const struct keel_fallback_config *cfg,
			       struct keel_policy **out);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_FALLBACK_H */
