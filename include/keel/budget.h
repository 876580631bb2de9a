/*
 * keel/budget.h - a retry budget: retries may not turn an outage into a
 * storm.
 *
 * Three attempts per call look harmless until the dependency goes down and
 * every caller triples its load on it. A retry budget caps retries across
 * all the calls that share it, while first attempts always go through.
 * Two kinds, after the two systems that made them common:
 *
 *   - KEEL_BUDGET_TOKENS (the default), gRPC's retry throttling: a bucket
 *     of max_tokens (default 10) starts full; each failed attempt takes 1
 *     token, each successful one gives back token_ratio (default 0.1), never
 *     above max_tokens. Retries are allowed only while tokens > max_tokens /
 *     2. With the defaults, after the bucket has drained it takes 51
 *     successes to allow retries again: a flaky dependency that fails more
 *     than about one call in eleven gets no retries at all. Tokens are kept
 *     in thousandths (token_ratio is rounded to 3 decimals, as gRPC does).
 *
 *   - KEEL_BUDGET_PERCENT, Envoy's retry budget: a retry is allowed while
 *     the retries in flight are fewer than budget_percent (default 20) % of
 *     the attempts in flight (first attempts and retries), and never fewer
 *     than min_retry_concurrency (default 3), so a quiet service can still
 *     retry. It limits retries in proportion to current load rather than by
 *     recent history.
 *
 * In a pipeline the budget sits just inside the retry policy, so it sees
 * every attempt: x->attempt == 1 is a first attempt (always allowed), and
 * x->attempt > 1 is a retry, which the budget may refuse. A refused retry
 * is rejected without running: code KEEL_EBUDGET, decided_by
 * KEEL_POLICY_BUDGET, a KEEL_EV_REJECTED event and the rejections counter.
 * KEEL_EBUDGET is not worth retrying (retrying it at once would be refused
 * again, and waiting is the backoff's job, not the budget's): the retry
 * policy stops there and hands back the previous attempt's failure (its
 * code, result and panic details) with decided_by KEEL_POLICY_BUDGET, so
 * the caller sees what went wrong and who stopped the retries.
 *
 * Which outcomes count as failures (take a token) is decided by classify,
 * default any non-zero code, panics included. Attempts rejected by policies
 * inside the budget (an open breaker) are failures by default too: they are
 * the dependency being unavailable.
 *
 * Counters: calls == successes + failures + panics + rejections.
 *
 * Thread-safety: shared by any number of threads; the state is a few atomic
 * integers (fixed point for the tokens), with no lock and no allocation per
 * call. The percentage check and the increment that follows it are not one
 * atomic step: under a burst of simultaneous retries the limit may be
 * overshot by the number of threads racing, never by more.
 */
#ifndef KEEL_BUDGET_H
#define KEEL_BUDGET_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_budget_mode {
	KEEL_BUDGET_TOKENS = 0, /* gRPC-style token bucket */
	KEEL_BUDGET_PERCENT,    /* Envoy-style share of attempts in flight */
};

struct keel_budget_config {
	const char *name;               /* default "budget"; copied */
	const struct keel_clock *clock; /* default NULL: the system clock (the
					 * budget reads it only for events) */
	keel_event_fn on_event;         /* default NULL: no listener */
	void *event_ud;
	enum keel_budget_mode mode;     /* default KEEL_BUDGET_TOKENS */
	/* KEEL_BUDGET_TOKENS */
	int max_tokens;                 /* default 10; 1..1000000 */
	double token_ratio;             /* default 0.1; 0.001..max_tokens */
	/* KEEL_BUDGET_PERCENT */
	double budget_percent;          /* default 20; 0..100 */
	int min_retry_concurrency;      /* default 3; >= 0 */
	/* Both */
	keel_classify_fn classify;      /* default NULL: any non-zero code is a
					 * failure */
	void *classify_ud;
};

/* Fills cfg with the defaults above. */
KEEL_API void keel_budget_config_init(struct keel_budget_config *cfg);

/*
 * keel_budget_new - builds a budget from cfg (not kept: the name is
 * copied; the clock, event_ud and classify_ud must outlive the policy).
 * Returns 0 and sets *out; -EINVAL for a bad config (an option out of its
 * range above, an unknown mode), with nothing allocated and *out NULL; or
 * -ENOMEM. Free with keel_policy_free().
 */
KEEL_API int keel_budget_new(const struct keel_budget_config *cfg,
			     struct keel_policy **out);

/*
 * Manual use, for retry loops of your own.
 *
 * keel_budget_allow_retry - 1 when a retry would be allowed now, else 0.
 * A check only: it reserves nothing (in KEEL_BUDGET_PERCENT mode use
 * keel_budget_enter, which counts the retry in flight).
 * keel_budget_record - records one finished attempt: success != 0 gives
 * token_ratio back, 0 takes a token. KEEL_BUDGET_TOKENS only (a no-op in
 * KEEL_BUDGET_PERCENT mode, which keeps no history).
 *
 * keel_budget_enter / keel_budget_leave - exactly what the policy does
 * around each attempt, for either mode. enter(p, retry) returns 0 (the
 * attempt may go) or KEEL_EBUDGET (a retry refused; first attempts,
 * retry == 0, are always allowed). Every 0 must be followed by one
 * leave(p, retry, success) with the same retry flag once the attempt ends.
 *
 * None of these touch the counters or emit events. All return -EINVAL (or
 * do nothing) when p is not a budget.
 */
KEEL_API int keel_budget_allow_retry(struct keel_policy *p);
KEEL_API void keel_budget_record(struct keel_policy *p, int success);
KEEL_API int keel_budget_enter(struct keel_policy *p, int retry);
KEEL_API void keel_budget_leave(struct keel_policy *p, int retry, int success);

/*
 * Health checks (lock-free reads).
 * keel_budget_tokens - the tokens now (0..max_tokens), KEEL_BUDGET_TOKENS
 * only; -1 for a percentage budget or when p is not a budget.
 * keel_budget_in_flight - the attempts in flight through the budget, and
 * (through *retries, which may be NULL) how many of them are retries.
 * KEEL_BUDGET_PERCENT only: 0 in token mode, which does not track them;
 * -EINVAL when p is not a budget.
 */
KEEL_API double keel_budget_tokens(const struct keel_policy *p);
KEEL_API int keel_budget_in_flight(const struct keel_policy *p, int *retries);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_BUDGET_H */
