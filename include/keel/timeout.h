/*
 * keel/timeout.h - a deadline for the call.
 *
 * What C can and cannot interrupt, honestly: nothing stops a running C
 * function from outside without killing its thread, and killing a thread
 * leaks whatever it held. So a keel timeout is a deadline the call is told
 * about, and a verdict afterwards:
 *
 *   - before the call, x->deadline becomes the earlier of the existing one
 *     and now + timeout. Every wait inside keel (a retry's backoff, a
 *     bulkhead's or rate limiter's wait, injected latency) ends at it, and
 *     so does keel_exec_wait() for the call's own waits. A call that polls
 *     keel_exec_expired(x) between steps stops early.
 *   - after the call, if the deadline has passed, the outcome becomes
 *     -ETIMEDOUT (decided_by KEEL_POLICY_TIMEOUT, a KEEL_EV_TIMEOUT event),
 *     even when the late call succeeded, unless keep_late_success is set:
 *     by then its work is done, so make such calls idempotent.
 *
 * A call blocked in a system call that knows nothing of the deadline (a
 * read() with no timeout of its own) is not interrupted: give it a timeout
 * of its own (SO_RCVTIMEO, poll with a timeout computed from x->deadline).
 *
 * Thread-safety: shared by any number of threads; nothing allocated per call.
 */
#ifndef KEEL_TIMEOUT_H
#define KEEL_TIMEOUT_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_timeout_config {
	const char *name;               /* default "timeout" */
	const struct keel_clock *clock; /* default: the system clock */
	keel_event_fn on_event;
	void *event_ud;
	int64_t timeout;                /* ns; default 1 s; must be > 0 */
	int keep_late_success;          /* default 0 */
};

KEEL_API void keel_timeout_config_init(struct keel_timeout_config *cfg);
/* 0, -EINVAL (timeout <= 0), or -ENOMEM. Free with keel_policy_free. */
KEEL_API int keel_timeout_new(const struct keel_timeout_config *cfg,
			      struct keel_policy **out);

/* 1 when x's deadline has passed or its token was cancelled. */
KEEL_API int keel_exec_expired(const struct keel_exec *x);

/*
 * keel_exec_wait - waits until `until` on x's clock, ending early at x's
 * deadline (returns -ETIMEDOUT) or when x's token is cancelled (returns its
 * reason). 0 when `until` was reached.
 */
KEEL_API int keel_exec_wait(const struct keel_exec *x, int64_t until);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_TIMEOUT_H */
