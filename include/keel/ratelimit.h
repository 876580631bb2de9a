/*
 * keel/ratelimit.h - at most `rate` calls per `period`, evenly spaced or in
 * bursts.
 *
 * A rate limiter protects a dependency (or a quota) from being called more
 * often than it can take. keel's is a token bucket, implemented as GCRA
 * (the generic cell rate algorithm): the whole state is one atomic
 * "theoretical arrival time" moved forward by a compare-and-swap loop, so
 * taking a permit is lock-free and the counts are exact under any number of
 * threads.
 *
 * Permits come one every period / rate ns (the interval, rounded down to a
 * whole nanosecond). The bucket holds at most `burst` of them:
 *   - KEEL_RATELIMIT_SMOOTH (the default): burst 1, so calls are spaced at
 *     least one interval apart; 10 per second means one every 100 ms;
 *   - KEEL_RATELIMIT_BURSTY: up to `burst` (default: rate) calls may go at
 *     once after a quiet spell, then one per interval; 10 per second lets 10
 *     through at once, then one every 100 ms. Over any stretch of time t no
 *     more than burst + t / interval permits are handed out.
 * A new limiter starts full.
 *
 * Waiting: with max_wait 0 (the default) a call that finds no permit is
 * rejected at once. With max_wait > 0 a call reserves the next free permit
 * and waits on the policy clock until that permit's time, if the wait fits
 * both within max_wait and before the call's deadline (x->deadline, which
 * includes its cancel token's); if it does not fit, the call is rejected at
 * once, without waiting and without taking a permit. A call cancelled while
 * it waits gives its permit back and ends with the token's reason.
 *
 * A rejected call gets code KEEL_ERATE_LIMITED (decided_by
 * KEEL_POLICY_RATELIMIT), outcome.retry_after set to how long until a
 * permit is free, a KEEL_EV_REJECTED event and the rejections
 * counter; it never started, so calls == successes + failures + panics +
 * rejections. In a pipeline the limiter sits inside retry: every attempt
 * takes a permit of its own.
 *
 * Thread-safety: shared by any number of threads; nothing is allocated per
 * call and no lock is taken.
 */
#ifndef KEEL_RATELIMIT_H
#define KEEL_RATELIMIT_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_ratelimit_mode {
	KEEL_RATELIMIT_SMOOTH = 0, /* one permit per interval, burst 1 */
	KEEL_RATELIMIT_BURSTY,     /* up to burst permits at once */
};

struct keel_ratelimit_config {
	const char *name;               /* default "ratelimit"; copied */
	const struct keel_clock *clock; /* default NULL: the system clock */
	keel_event_fn on_event;         /* default NULL: no listener */
	void *event_ud;
	int64_t rate;                   /* permits per period; default 100;
					 * 1 <= rate <= period */
	int64_t period;                 /* ns; default 1 s; > 0 */
	enum keel_ratelimit_mode mode;  /* default KEEL_RATELIMIT_SMOOTH */
	int64_t burst;                  /* default 0: 1 when SMOOTH, rate when
					 * BURSTY; SMOOTH accepts only 0 or 1 */
	int64_t max_wait;               /* ns, >= 0; default 0: never wait */
};

/* Fills cfg with the defaults above. */
KEEL_API void keel_ratelimit_config_init(struct keel_ratelimit_config *cfg);

/*
 * keel_ratelimit_new - builds a limiter from cfg (not kept: the name is
 * copied; the clock and event_ud must outlive the policy). Returns 0 and
 * sets *out; -EINVAL for a bad config (rate < 1, period <= 0, rate >
 * period, which would make the interval 0 ns, an unknown mode, burst < 0,
 * burst > 1 with SMOOTH, a burst whose span overflows, max_wait < 0), with
 * nothing allocated and *out NULL; or -ENOMEM. Free with keel_policy_free().
 */
KEEL_API int keel_ratelimit_new(const struct keel_ratelimit_config *cfg,
				struct keel_policy **out);

/*
 * Manual use (say, a loop that sends messages under a quota).
 *
 * keel_ratelimit_try_acquire - takes n permits at once if they are
 * available now: 0, or KEEL_ERATE_LIMITED (nothing taken). Never waits.
 * keel_ratelimit_acquire - takes n permits, waiting for them as a call
 * through the policy does (up to max_wait, never past cancel's deadline;
 * cancel may be NULL): 0, KEEL_ERATE_LIMITED, or the token's reason.
 *
 * n must be 1..burst (more can never be available at once): -EINVAL
 * otherwise, and when p is not a rate limiter. Neither touches the
 * counters or emits events.
 */
KEEL_API int keel_ratelimit_try_acquire(struct keel_policy *p, int64_t n);
KEEL_API int keel_ratelimit_acquire(struct keel_policy *p, int64_t n,
				    struct keel_cancel *cancel);

/*
 * keel_ratelimit_available - the permits that could be taken right now
 * (0..burst), for health checks; -EINVAL when p is not a rate limiter.
 */
KEEL_API int64_t keel_ratelimit_available(const struct keel_policy *p);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_RATELIMIT_H */
