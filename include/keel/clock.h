/*
 * keel/clock.h - time for keel's policies, pools and schedulers, and a
 * virtual clock that makes tests of time deterministic.
 *
 * Times are int64_t nanoseconds on a monotonic scale (the system clock is
 * CLOCK_MONOTONIC). KEEL_NEVER is "no deadline".
 *
 * Everything that waits in keel (a retry's backoff, a bulkhead's queue, a
 * rate limiter's permit, an injected latency) waits through a clock and a
 * cancel token (keel/cancel.h), so a test that gives a virtual clock never
 * sleeps, and a cancelled call never waits out its backoff.
 */
#ifndef KEEL_CLOCK_H
#define KEEL_CLOCK_H

#include <pthread.h>
#include <stdint.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_NEVER INT64_MAX
#define KEEL_USEC ((int64_t)1000)
#define KEEL_MSEC ((int64_t)1000000)
#define KEEL_SEC ((int64_t)1000000000)

struct keel_cancel;

/*
 * A clock: now() and a wait that ends at a deadline or when the cancel
 * token (which may be NULL) is cancelled, whichever comes first. wait_until
 * returns 0 when the deadline was reached, or the token's reason (negative:
 * -ECANCELED, -ETIMEDOUT) when it was cancelled first. Implementations are
 * thread-safe.
 */
struct keel_clock {
	int64_t (*now)(const struct keel_clock *c);
	int (*wait_until)(const struct keel_clock *c, int64_t deadline,
			  struct keel_cancel *cancel);
};

/* The process's monotonic clock (CLOCK_MONOTONIC). Never NULL, never
 * freed. A read costs about 24 ns on this project's VM. */
KEEL_API const struct keel_clock *keel_clock_system(void);

/*
 * keel_clock_coarse - CLOCK_MONOTONIC_COARSE: about 5 ns a read, but it
 * moves in kernel ticks (clock_getres says 4 ms here). For pipelines whose
 * timeouts, slow-call limits and rate periods are far above a tick and
 * whose calls are too fast to pay 2 x 24 ns of clock reads each: a timeout
 * then fires up to one tick late, and elapsed times are multiples of a
 * tick. Waits still end on the fine clock. Same scale as keel_clock_system
 * (both are CLOCK_MONOTONIC), so times from the two can be compared.
 */
KEEL_API const struct keel_clock *keel_clock_coarse(void);

/* Shorthands: c may be NULL for the system clock. */
KEEL_API int64_t keel_clock_now(const struct keel_clock *c);
KEEL_API int keel_clock_wait_until(const struct keel_clock *c, int64_t deadline,
				   struct keel_cancel *cancel);
KEEL_API int keel_clock_sleep(const struct keel_clock *c, int64_t ns,
			      struct keel_cancel *cancel);

/*
 * A virtual clock for tests. Its time moves only when told:
 *   - keel_vclock_advance() moves it forward and wakes the waits it passes;
 *   - with auto_advance on (the default), a wait_until that would block
 *     instead moves the clock to its deadline at once and returns, so a
 *     single-threaded test of backoff or open durations runs in no time and
 *     still sees every delay in now();
 *   - with auto_advance off, waits block until another thread advances the
 *     clock past their deadline, or their token is cancelled.
 * Embed it in your test and pass &vc.clock wherever a clock is taken.
 */
struct keel_vclock {
	struct keel_clock clock; /* first: (struct keel_clock *)&vc works */
	int64_t t;               /* guarded by mu */
	int auto_advance;
	int64_t slept;           /* total time waits asked for (auto mode) */
	unsigned waits;          /* number of waits that were made */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

KEEL_API void keel_vclock_init(struct keel_vclock *vc, int64_t start);
KEEL_API void keel_vclock_destroy(struct keel_vclock *vc);
KEEL_API void keel_vclock_advance(struct keel_vclock *vc, int64_t ns);
KEEL_API void keel_vclock_set_auto(struct keel_vclock *vc, int on);
KEEL_API int64_t keel_vclock_slept(struct keel_vclock *vc);
KEEL_API unsigned keel_vclock_waits(struct keel_vclock *vc);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_CLOCK_H */
