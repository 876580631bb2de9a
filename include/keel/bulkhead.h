/*
 * keel/bulkhead.h - at most N calls at once; the rest wait a bounded time
 * for a slot, or are turned away.
 *
 * A slow dependency holds on to whatever calls it: threads, connections,
 * memory. A bulkhead caps how many calls may be inside at once, so one slow
 * dependency cannot take every worker with it; the calls beyond the cap fail
 * fast with KEEL_EBULKHEAD_FULL instead of piling up.
 *
 * How it behaves:
 *   - a call takes a slot when fewer than max_concurrent calls are inside
 *     (one compare-and-swap on an atomic counter, no lock), runs, and gives
 *     the slot back when it ends: normally, with an error, or by panicking
 *     (the innermost layer turns a panic into an outcome, so the bulkhead
 *     always sees the call end);
 *   - with max_wait 0 (the default) a call that finds every slot taken is
 *     rejected at once;
 *   - with max_wait > 0 it waits for a slot, at most max_wait ns on the
 *     policy clock, and never past the call's deadline (x->deadline) or its
 *     cancel token's. A slot given back goes straight to one waiting call;
 *     the waits are not strictly first come, first served (a call that
 *     arrives just as a slot frees may take it first), but no freed slot is
 *     ever left unused while a call waits for it;
 *   - a call that gets no slot is rejected: code KEEL_EBULKHEAD_FULL, or
 *     the token's reason (-ECANCELED, -ETIMEDOUT) when its token was
 *     cancelled or its deadline passed while it waited; decided_by
 *     KEEL_POLICY_BULKHEAD, a KEEL_EV_REJECTED event, and the rejections
 *     counter. A rejected call never started, so it is not also counted as a
 *     failure: calls == successes + failures + panics + rejections.
 *
 * In a pipeline the bulkhead sits inside retry, so every attempt takes (and
 * gives back) a slot of its own, and the time a retry spends in its backoff
 * holds no slot.
 *
 * With a virtual clock (keel/clock.h) in auto-advance mode a wait for a slot
 * moves the clock to the wait's end at once and is rejected, as every
 * virtual wait does; a test that wants a waiting call to get a slot turns
 * auto-advance off (the waiter then blocks until a slot is given to it, or
 * another thread moves the clock past its end).
 *
 * Thread-safety: a bulkhead is shared by any number of threads. Executing a
 * call allocates nothing; a waiting call keeps its queue entry on its own
 * stack.
 */
#ifndef KEEL_BULKHEAD_H
#define KEEL_BULKHEAD_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_bulkhead_config {
	const char *name;               /* default "bulkhead"; copied */
	const struct keel_clock *clock; /* default NULL: the system clock */
	keel_event_fn on_event;         /* default NULL: no listener */
	void *event_ud;
	int max_concurrent;             /* default 10; must be >= 1 */
	int64_t max_wait;               /* ns, >= 0; default 0: never wait */
	int max_waiting;                /* default 0: no limit on waiting calls;
					 * else a call that finds this many
					 * waiting is rejected at once */
};

/* Fills cfg with the defaults above. */
KEEL_API void keel_bulkhead_config_init(struct keel_bulkhead_config *cfg);

/*
 * keel_bulkhead_new - builds a bulkhead from cfg (which is not kept: the
 * name is copied; the clock and event_ud must outlive the policy). Returns
 * 0 and sets *out, -EINVAL for a bad config (max_concurrent < 1,
 * max_wait < 0, max_waiting < 0; nothing is allocated and *out is NULL) or
 * -ENOMEM. Free with keel_policy_free(), when no call is inside or waiting.
 */
KEEL_API int keel_bulkhead_new(const struct keel_bulkhead_config *cfg,
			       struct keel_policy **out);

/*
 * Health checks: the calls inside the bulkhead now, and the calls waiting
 * for a slot. Lock-free reads, instantly stale under load. -EINVAL when p
 * is not a bulkhead.
 */
KEEL_API int keel_bulkhead_in_flight(const struct keel_policy *p);
KEEL_API int keel_bulkhead_waiting(const struct keel_policy *p);

/*
 * Manual use, for code that guards a resource without a keel_op_fn (an
 * HTTP server admitting connections, say). Each successful acquire must be
 * paired with exactly one keel_bulkhead_release().
 *
 * keel_bulkhead_try_acquire - takes a slot if one is free now: 0, or
 * KEEL_EBULKHEAD_FULL. Never waits.
 * keel_bulkhead_acquire - takes a slot, waiting up to the configured
 * max_wait (and never past cancel's deadline; cancel may be NULL): 0,
 * KEEL_EBULKHEAD_FULL, or the token's reason when it was cancelled.
 * keel_bulkhead_release - gives a slot back (and hands it to a waiting call).
 *
 * The manual functions touch no counter and emit no event: the counters
 * describe calls executed through the policy. All return -EINVAL when p is
 * not a bulkhead.
 */
KEEL_API int keel_bulkhead_try_acquire(struct keel_policy *p);
KEEL_API int keel_bulkhead_acquire(struct keel_policy *p,
				   struct keel_cancel *cancel);
KEEL_API int keel_bulkhead_release(struct keel_policy *p);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_BULKHEAD_H */
