/*
 * keel/backoff.h - how long to wait before the next retry.
 *
 * struct keel_backoff is a plain value: fill it with keel_backoff_init and
 * change what you need. keel_backoff_delay computes one delay from it; it
 * reads no clock and no global state except, when asked to, a per-thread
 * random state, so a test that passes its own random state gets the same
 * delays on every run. keel/retry.h uses it between attempts; anything else
 * that backs off (a reconnect loop, a poller) can use it on its own.
 *
 * Delays are int64_t nanoseconds. Every computation saturates: a huge
 * attempt number, a huge initial delay or a huge multiplier gives the cap
 * (or INT64_MAX when there is no cap), never a negative or wrapped delay.
 *
 * The base delay for retry n (n = 1 before the second call, 2 before the
 * third, ...; n < 1 counts as 1) is
 *   KEEL_BACKOFF_CONSTANT     initial
 *   KEEL_BACKOFF_LINEAR       initial + (n - 1) * step
 *   KEEL_BACKOFF_EXPONENTIAL  initial * multiplier^(n - 1)
 * capped at max. Jitter then spreads it, d being the capped base delay:
 *   KEEL_JITTER_NONE          d
 *   KEEL_JITTER_FULL          uniform in [0, d]
 *   KEEL_JITTER_EQUAL         d - d/2 + uniform in [0, d/2]   (so [d/2, d])
 *   KEEL_JITTER_PLUS_MINUS    uniform in [d * (1 - f), d * (1 + f)], f = jitter_factor
 *   KEEL_JITTER_DECORRELATED  uniform in [initial, max(initial, 3 * prev)]
 *                             (AWS's "decorrelated jitter": the kind and n
 *                             are ignored; prev is the previous delay, 0 for
 *                             the first retry)
 * and the result is capped at max again, so max is a hard limit on every
 * delay. The formulas and the trade-offs between them are in
 * docs/policies.md ("Backoff").
 *
 * Thread-safety: a struct keel_backoff is only read, so any number of
 * threads may share one. A random state (uint64_t) belongs to one thread at
 * a time; NULL selects the calling thread's own.
 */
#ifndef KEEL_BACKOFF_H
#define KEEL_BACKOFF_H

#include <stdint.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_backoff_kind {
	KEEL_BACKOFF_CONSTANT = 0,
	KEEL_BACKOFF_LINEAR,
	KEEL_BACKOFF_EXPONENTIAL,
};

enum keel_jitter {
	KEEL_JITTER_NONE = 0,
	KEEL_JITTER_FULL,
	KEEL_JITTER_EQUAL,
	KEEL_JITTER_DECORRELATED,
	KEEL_JITTER_PLUS_MINUS,
};

struct keel_backoff {
	enum keel_backoff_kind kind; /* default KEEL_BACKOFF_EXPONENTIAL */
	int64_t initial;      /* ns, the first delay; default 100 ms */
	double multiplier;    /* exponential growth per retry, >= 1; default 2 */
	int64_t step;         /* linear: added per retry, 0 = initial; default 0 */
	int64_t max;          /* ns, cap on every delay, 0 = none; default 10 s */
	enum keel_jitter jitter; /* default KEEL_JITTER_FULL */
	double jitter_factor; /* plus-minus: f in [0, 1]; default 0.2 */
};

/*
 * keel_backoff_init - fills b with the defaults above: exponential from
 * 100 ms, doubling, capped at 10 s, with full jitter (AWS found full jitter
 * does the least total work when many clients retry against one server).
 */
KEEL_API void keel_backoff_init(struct keel_backoff *b);

/*
 * keel_backoff_check - 0 when b is a valid configuration, else -EINVAL:
 * an unknown kind or jitter, a negative initial, step or max, a multiplier
 * below 1 (or NaN) for the exponential kind, a jitter_factor outside
 * [0, 1], or an initial above a non-zero max.
 */
KEEL_API int keel_backoff_check(const struct keel_backoff *b);

/*
 * keel_backoff_delay - the delay in ns before retry number attempt (1 for
 * the first retry), given the previous delay (0 before the first retry;
 * only decorrelated jitter reads it). rng is the random state that jitter
 * advances (NULL: the calling thread's own, seeded from the time and the
 * thread on first use); with KEEL_JITTER_NONE it is not touched.
 * Deterministic for a given *rng; always in [0, max] (or [0, INT64_MAX]
 * without a cap), also for configurations keel_backoff_check refuses.
 */
KEEL_API int64_t keel_backoff_delay(const struct keel_backoff *b, int attempt,
				    int64_t prev_delay, uint64_t *rng);

/*
 * keel_backoff_rand - the next 64 random bits from *state (SplitMix64:
 * every state, 0 included, is a valid seed, and the sequence is the same
 * on every platform). NULL uses the calling thread's own state.
 * Not for cryptography.
 */
KEEL_API uint64_t keel_backoff_rand(uint64_t *state);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_BACKOFF_H */
