/*
 * keel/retry.h - the retry policy: call again after a failure, waiting a
 * backoff delay (keel/backoff.h) between attempts.
 *
 *	struct keel_retry_config cfg;
 *	struct keel_policy *retry;
 *
 *	keel_retry_config_init(&cfg);         (3 attempts, 100 ms doubling)
 *	cfg.max_duration = 2 * KEEL_SEC;
 *	if (keel_retry_new(&cfg, &retry) != 0)
 *		...
 *	rc = keel_policy_execute(retry, fetch, &req, NULL, &out);
 *	keel_policy_free(retry);
 *
 * A panic or hardware fault in the protected call is an ordinary failure
 * (KEEL_EPANIC, out.panicked = 1): its keel_defer cleanups have run by the
 * time retry sees it, and it is retried like any other failure unless
 * retry_if says otherwise.
 *
 * One call through the policy, step by step:
 *  1. If the cancel token is already cancelled, or the exec deadline has
 *     passed, no attempt is made: the outcome is the token's reason
 *     (-ECANCELED, or -ETIMEDOUT for a deadline), out.attempts 0,
 *     decided_by KEEL_POLICY_RETRY.
 *  2. Attempt n (x->attempt = n, starting at 1) runs the rest of the chain.
 *  3. retry_if (NULL: keel_retry_retryable) sees the outcome; 0 ends the
 *     call with that outcome as it is, success or failure.
 *  4. Otherwise retry stops and gives up, returning that outcome, when:
 *     abort_if says so; n == max_attempts; the token is cancelled or the
 *     deadline passed; the server asked for a longer delay than
 *     max_retry_after; the wait would never end; or the next attempt would
 *     start at or after the end of max_duration or of the exec deadline.
 *  5. Otherwise on_retry and the KEEL_EV_RETRY event see the delay, and the
 *     policy waits on the exec clock, observing the cancel token. A cancel
 *     during the wait ends it at once and retry gives up.
 *  6. The outcome is reset and attempt n + 1 runs (back to 2).
 * Giving up keeps the last attempt's outcome: its code, result, panic
 * details and retry_after. It emits KEEL_EV_GIVE_UP, and sets decided_by to
 * KEEL_POLICY_RETRY when more than one attempt was made (one attempt that
 * was not retried leaves the outcome as the inner layers decided it).
 *
 * Events (on the caller's thread): KEEL_EV_RETRY before each wait (attempt
 * = the attempt that failed, delay = the wait before the next one),
 * KEEL_EV_GIVE_UP (delay = the wait that was refused for time reasons,
 * else 0), and one SUCCESS, FAILURE or PANIC per call for the final
 * outcome. Counters: calls, successes, failures, panics per call through
 * the policy, and retries = extra attempts made.
 *
 * Thread-safety: a policy is immutable once built; any number of threads
 * may run calls through it at once. A call allocates nothing.
 */
#ifndef KEEL_RETRY_H
#define KEEL_RETRY_H

#include <stdint.h>

#include <keel/backoff.h>
#include <keel/common.h>
#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Called before each wait: attempt is the attempt that just failed (1 for
 * the first), delay the wait before the next one, o its outcome. Read-only:
 * it observes (logs, metrics) and cannot change the delay. Runs on the
 * caller's thread; it must not call back into the same policy.
 */
typedef void (*keel_retry_hook_fn)(int attempt, int64_t delay,
				   const struct keel_outcome *o, void *ud);

struct keel_retry_config {
	const char *name;       /* copied; NULL: "retry" */
	const struct keel_clock *clock; /* NULL: the system clock */
	keel_event_fn on_event; /* may be NULL */
	void *event_ud;

	/* Calls in all, the first one included, >= 1. Default 3. */
	int max_attempts;
	/* Delay before each retry. Default: keel_backoff_init's, exponential
	 * 100 ms doubling up to 10 s, full jitter. */
	struct keel_backoff backoff;
	/* Time budget for the whole call, first attempt included, in ns;
	 * 0 = none (default). No wait is begun, and so no attempt started,
	 * that would end at or after start + max_duration. An attempt that is
	 * running when the budget ends is not interrupted: put a timeout
	 * policy inside the retry for that. */
	int64_t max_duration;

	/* Whether an outcome should be retried: non-zero = retry. It sees
	 * every outcome, successes included (a call can be retried on its
	 * result). NULL (default) is keel_retry_retryable. A classifier you
	 * give replaces that default entirely. */
	keel_classify_fn retry_if;
	void *retry_if_ud;
	/* Consulted for outcomes retry_if would retry: non-zero stops at once
	 * and gives up (a failure known to be permanent, a shutdown flag).
	 * NULL (default): never. */
	keel_classify_fn abort_if;
	void *abort_if_ud;

	/* When the failed attempt set x->retry_after (a server's Retry-After)
	 * to more than the backoff delay, wait that long instead, exactly (no
	 * jitter). Default 1. */
	int honour_retry_after;
	/* The longest server delay honoured, in ns. A server asking for more
	 * ends retrying (give up): retrying sooner than it asked would only be
	 * refused again. 0 = no limit. Default 60 s. */
	int64_t max_retry_after;

	keel_retry_hook_fn on_retry; /* may be NULL */
	void *on_retry_ud;

	/* Seed for the jitter. 0 (default): each thread's own random state.
	 * Non-zero: reproducible delays; call k through the policy (counting
	 * only calls that drew a jittered delay) draws from the same stream on
	 * every run, so a single-threaded test sees the same delays each time. */
	uint64_t seed;
};

/* keel_retry_config_init - fills cfg with the defaults documented above. */
KEEL_API void keel_retry_config_init(struct keel_retry_config *cfg);

/*
 * keel_retry_new - builds a retry policy from cfg (which may be discarded
 * afterwards: the name is copied; clock, callbacks and their ud pointers
 * must outlive the policy). Returns 0 and sets *out, or -EINVAL (cfg or out
 * NULL, max_attempts < 1, a backoff keel_backoff_check refuses, negative
 * max_duration or max_retry_after) or -ENOMEM, with *out set to NULL (when
 * out is not NULL) and nothing allocated. Free with keel_policy_free.
 */
KEEL_API int keel_retry_new(const struct keel_retry_config *cfg,
			    struct keel_policy **out);

/*
 * keel_retry_retryable - the default retry_if: retries every failure,
 * panics and -ETIMEDOUT included, except
 *   KEEL_EBREAKER_OPEN  a breaker inside the retry refused: calling again at
 *                       once would only be refused again, and hammering an
 *                       open breaker defeats it;
 *   KEEL_EBUDGET        the retry budget said no more retries (retry then
 *                       returns the previous attempt's failure, decided_by
 *                       KEEL_POLICY_BUDGET);
 *   -ECANCELED          the call was cancelled: nobody wants the answer.
 * Bulkhead-full and rate-limited failures are retried: waiting a backoff
 * is what they call for. Successes are never retried. ud is unused, so a
 * classifier of your own can end with `return keel_retry_retryable(o, NULL)`.
 */
KEEL_API int keel_retry_retryable(const struct keel_outcome *o, void *ud);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_RETRY_H */
