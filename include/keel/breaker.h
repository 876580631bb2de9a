/*
 * keel/breaker.h - a circuit breaker: stop calling a dependency that keeps
 * failing, and find out cheaply when it has recovered.
 *
 *	struct keel_breaker_config cfg;
 *	struct keel_policy *br;
 *
 *	keel_breaker_config_init(&cfg);      (50% of >= 10 of the last 100)
 *	cfg.name = "payments";
 *	cfg.consecutive_failures = 5;
 *	if (keel_breaker_new(&cfg, &br) != 0)
 *		...
 *	rc = keel_policy_execute(br, charge, &req, NULL, &out);
 *	if (rc == KEEL_EBREAKER_OPEN)
 *		...                               (rejected: charge did not run)
 *	keel_policy_free(br);
 *
 * The state machine:
 *
 *	             trip                    open duration over,
 *	  CLOSED ------------> OPEN ------------------------------+
 *	    ^                   ^                  next call       |
 *	    |                   | a probe failed (or too many      v
 *	    |                   +----- slow probes) ------- HALF_OPEN
 *	    |                                                      |
 *	    +------------ every probe finished, none failed -------+
 *
 *	  FORCED_OPEN and DISABLED: only keel_breaker_force_open,
 *	  keel_breaker_force_closed and keel_breaker_reset enter or leave them.
 *
 *   CLOSED     every call runs; outcomes are recorded in a sliding window
 *              and a consecutive-failure counter. After each outcome the
 *              breaker trips (goes OPEN) when any enabled condition holds:
 *                - consecutive_failures failures in a row;
 *                - the window holds at least min_calls calls and at least
 *                  failure_rate_threshold percent of them failed;
 *                - the window holds at least min_calls calls and at least
 *                  slow_rate_threshold percent of them were slow.
 *   OPEN       every call is rejected with KEEL_EBREAKER_OPEN, without
 *              running, for the open duration. The move to HALF_OPEN is
 *              lazy: the first call after the open duration makes it, so
 *              keel_breaker_state() says OPEN until a call arrives
 *              (keel_breaker_view's until_half_open is 0 by then).
 *   HALF_OPEN  a round of half_open_calls probe calls is admitted; every
 *              other call is rejected. The first probe that fails (as the
 *              classifier sees it) reopens the breaker at once. When every
 *              probe has finished and none failed, the breaker closes,
 *              unless slow calls are tracked and at least
 *              slow_rate_threshold percent of the probes were slow: then it
 *              reopens, as soon as that share is certain. The failure-rate
 *              threshold does not apply to probes: a failure among a
 *              handful of probes says more than a percentage of them does.
 *              Stuck half-open: a probe that is admitted but never finishes
 *              (a call that hangs, a hand-guarded call that forgets to
 *              record) would hold the breaker half-open for ever. So when
 *              every probe of a round has been admitted but not every one
 *              has finished within one open duration (the last one) of the
 *              round's start, the next call starts a new round with fresh
 *              permits. The abandoned probes' outcomes, should they come,
 *              are counted in the statistics and decide nothing.
 *   FORCED_OPEN  keel_breaker_force_open(): every call is rejected.
 *   DISABLED   keel_breaker_force_closed(): every call runs, nothing is
 *              recorded in the window, the breaker never trips.
 *
 * Entering CLOSED (from HALF_OPEN, or by keel_breaker_reset) empties the
 * window and the consecutive-failure counter, so the failures that tripped
 * the breaker cannot trip it again. While OPEN the window keeps the numbers
 * that tripped it, for keel_breaker_view.
 *
 * Open duration: open_duration after a trip from CLOSED. Each reopening
 * from HALF_OPEN multiplies the previous duration by open_multiplier, up to
 * open_max_duration, so a dependency that stays down is probed less and
 * less often. The default multiplier, 1, keeps the duration fixed.
 *
 * Outcomes of calls admitted under an earlier state (a call admitted while
 * CLOSED that finishes after the breaker opened, a probe of an abandoned
 * round) are counted in the statistics and ignored by the state machine.
 *
 * Time: open durations, half-open rounds and the time window run on the
 * policy clock (config.clock); a slow call is measured around the rest of
 * the chain. Tests give a struct keel_vclock and never sleep.
 *
 * Thread-safety: a breaker is shared by any number of threads. While it is
 * CLOSED, admitting a call is one atomic load, and recording its outcome
 * takes no lock (atomic updates of the window; the time window takes a
 * short lock once per second, to move to a new bucket). Transitions, which
 * are rare, take a mutex. State events are emitted with that mutex held,
 * so a listener sees transitions in the order they happened, and must not
 * call keel_breaker_force_open, _force_closed, _reset or _view on the same
 * breaker. A listener that panics does not leave the mutex locked: the
 * transition is complete, and the panic goes on to the caller. Nothing is
 * allocated after keel_breaker_new.
 *
 * Statistics (keel_policy_stats): calls counts every call that asked the
 * breaker (through the policy or keel_breaker_allow); each ends as exactly
 * one of successes, failures, panics (a call that ran, by its code, whatever
 * the classifier says) or rejections. transitions counts state changes.
 * Events: KEEL_EV_SUCCESS, _FAILURE or _PANIC per call that ran,
 * KEEL_EV_REJECTED (code KEEL_EBREAKER_OPEN) per rejection, KEEL_EV_STATE
 * (from, to: enum keel_breaker_state; code: the outcome that caused it, or
 * 0) per state change.
 */
#ifndef KEEL_BREAKER_H
#define KEEL_BREAKER_H

#include <stdint.h>

#include <keel/common.h>
#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_breaker_state {
	KEEL_BREAKER_CLOSED = 0,  /* calls run, outcomes recorded */
	KEEL_BREAKER_OPEN,        /* calls rejected for the open duration */
	KEEL_BREAKER_HALF_OPEN,   /* a few probes run, the rest rejected */
	KEEL_BREAKER_FORCED_OPEN, /* calls rejected until reset */
	KEEL_BREAKER_DISABLED,    /* forced closed: calls run, none recorded */
};

/* "closed", "open", "half-open", "forced-open", "disabled", or "unknown". */
KEEL_API const char *keel_breaker_state_name(enum keel_breaker_state s);

enum keel_breaker_window {
	KEEL_BREAKER_WINDOW_COUNT = 0, /* the last window_size calls */
	KEEL_BREAKER_WINDOW_TIME,      /* the calls of the last window_size s */
};

/* Largest window_size of each window type, and largest half_open_calls. */
#define KEEL_BREAKER_MAX_COUNT_WINDOW (1u << 20)
#define KEEL_BREAKER_MAX_TIME_WINDOW 3600u
#define KEEL_BREAKER_MAX_HALF_OPEN 65535u

/*
 * struct keel_breaker_config - fill with keel_breaker_config_init, change
 * what you need, pass to keel_breaker_new. The breaker copies what it keeps
 * (the name too), so the config may be discarded afterwards. Durations are
 * nanoseconds (KEEL_SEC, KEEL_MSEC in keel/clock.h).
 */
struct keel_breaker_config {
	const char *name;               /* default NULL: "breaker"; copied */
	const struct keel_clock *clock; /* default NULL: the system clock */
	keel_event_fn on_event;         /* default NULL: no events */
	void *event_ud;

	/*
	 * Which outcomes are failures. Default NULL: any non-zero code,
	 * panics and faults (KEEL_EPANIC) included. It runs on every finished
	 * call, on the caller's thread, so it must be quick and thread-safe.
	 */
	keel_classify_fn classify;
	void *classify_ud;

	/* Trip after this many failures in a row. Default 0: off. */
	unsigned consecutive_failures;

	/*
	 * Trip when at least this percentage (1..100) of the calls in the
	 * window failed. Default 50; 0: off.
	 */
	unsigned failure_rate_threshold;

	/*
	 * Trip when at least this percentage (1..100) of the calls in the
	 * window were slow: took slow_call_duration or longer, measured
	 * around the rest of the chain (a slow failure counts as both).
	 * Default 0: off, and then a call through a COUNT window breaker
	 * reads no clock at all.
	 */
	unsigned slow_rate_threshold;
	int64_t slow_call_duration;     /* default 10 s; > 0 with the rate */

	/*
	 * The sliding window the rates are computed over.
	 * COUNT: the outcomes of the last window_size calls.
	 * TIME: the outcomes of the last window_size seconds, kept in
	 * one-second buckets, so an outcome leaves the window between
	 * window_size - 1 and window_size seconds after it was recorded.
	 * Default COUNT, 100. window_size may be 0 (no window) only when both
	 * rate thresholds are 0.
	 */
	enum keel_breaker_window window;
	unsigned window_size;

	/*
	 * The rates are evaluated only once the window holds at least this
	 * many calls, so that a few early failures cannot trip the breaker.
	 * Default 10; 0 is taken as 1. May not exceed a COUNT window's size.
	 */
	unsigned min_calls;

	/* How long the breaker stays OPEN after a trip. Default 10 s; > 0. */
	int64_t open_duration;
	/*
	 * Each reopening from HALF_OPEN multiplies the previous open duration
	 * by this; >= 1. Default 1.0: a fixed duration.
	 */
	double open_multiplier;
	/*
	 * Where the growth stops. Default 5 min. A value below open_duration
	 * (0 included) means no growth beyond open_duration.
	 */
	int64_t open_max_duration;

	/* Probe calls admitted per HALF_OPEN round. Default 3; 1..65535. */
	unsigned half_open_calls;
};

/* Fills cfg with the defaults documented above. */
KEEL_API void keel_breaker_config_init(struct keel_breaker_config *cfg);

/*
 * keel_breaker_new - builds a breaker, CLOSED, and stores it in *out.
 * Returns 0; -EINVAL for a bad config: out or cfg NULL, a rate threshold
 * above 100, a rate threshold with window_size 0, window_size above its
 * type's maximum, an unknown window type, min_calls above a COUNT window's
 * size, a slow-rate threshold with slow_call_duration <= 0,
 * open_duration <= 0, open_multiplier below 1 or not a number,
 * half_open_calls 0 or above KEEL_BREAKER_MAX_HALF_OPEN; or -ENOMEM. On
 * failure *out is NULL (when out is not) and nothing stays allocated.
 *
 * The caller owns the breaker and frees it with keel_policy_free() once no
 * call is running through it. Use it with keel_policy_execute(), in a
 * pipeline (keel/pipeline.h; one breaker may serve many pipelines), or by
 * hand with keel_breaker_allow and keel_breaker_record.
 */
KEEL_API int keel_breaker_new(const struct keel_breaker_config *cfg,
			      struct keel_policy **out);

/*
 * Guarding a call by hand, for code that cannot run it through a policy:
 *
 *	struct keel_breaker_permit pm;
 *
 *	if (keel_breaker_allow(br, &pm) != 0)
 *		return KEEL_EBREAKER_OPEN;    (rejected: do not call)
 *	rc = call_the_dependency();
 *	keel_breaker_record(br, &pm, rc, KEEL_BREAKER_MEASURE);
 *
 * Record every admitted permit once. One never recorded costs nothing while
 * CLOSED; in HALF_OPEN it holds a probe permit until the stuck-half-open
 * rule gives its round up.
 */
struct keel_breaker_permit {
	uint64_t token; /* internal: the state the call was admitted under */
	int64_t start;  /* clock time at admission, when slow calls count */
};

/* keel_breaker_record's duration: measure from keel_breaker_allow. */
#define KEEL_BREAKER_MEASURE ((int64_t)-1)

/*
 * keel_breaker_allow - asks to make one call. Returns 0 and fills *permit
 * when the call may go ahead, or KEEL_EBREAKER_OPEN when the breaker
 * rejects it (the permit is then empty: recording it does nothing). Counts
 * the call, and a rejection with its event. Lock-free while CLOSED.
 */
KEEL_API int keel_breaker_allow(struct keel_policy *p,
				struct keel_breaker_permit *permit);

/*
 * keel_breaker_record - how an admitted call ended: code is 0 or the call's
 * negative code (KEEL_EPANIC for one that panicked). The classifier sees a
 * struct keel_outcome with code, panicked (code == KEEL_EPANIC), attempts
 * (1) and elapsed set. duration is how long the call took, in ns on the
 * policy clock, or KEEL_BREAKER_MEASURE for the time since
 * keel_breaker_allow; it only matters when slow calls are tracked.
 * Lock-free while CLOSED, except for a transition it causes.
 */
KEEL_API void keel_breaker_record(struct keel_policy *p,
				  const struct keel_breaker_permit *permit,
				  int code, int64_t duration);

/*
 * keel_breaker_force_open - FORCED_OPEN: reject every call until
 * keel_breaker_reset or keel_breaker_force_closed.
 * keel_breaker_force_closed - DISABLED: admit every call, record nothing,
 * never trip, until keel_breaker_reset or keel_breaker_force_open.
 * keel_breaker_reset - CLOSED, from any state, with an empty window and no
 * consecutive failures; the next trip opens for open_duration. The trip
 * count and the policy statistics are kept.
 * Each emits KEEL_EV_STATE when the state changes. Thread-safe.
 */
KEEL_API void keel_breaker_force_open(struct keel_policy *p);
KEEL_API void keel_breaker_force_closed(struct keel_policy *p);
KEEL_API void keel_breaker_reset(struct keel_policy *p);

/* The current state: one atomic load (OPEN is left lazily, see above). */
KEEL_API enum keel_breaker_state
keel_breaker_state(const struct keel_policy *p);

/*
 * struct keel_breaker_view - a snapshot for health checks and dashboards.
 * The window's numbers are exact when no call is finishing at the same
 * time, and off by at most the calls finishing concurrently otherwise.
 */
struct keel_breaker_view {
	enum keel_breaker_state state;
	/*
	 * Percent (0..100) of the calls in the window that failed / were
	 * slow; -1 while the window holds fewer than min_calls calls (the
	 * breaker does not evaluate them yet). slow_rate is also -1 when
	 * slow calls are not tracked.
	 */
	double failure_rate;
	double slow_rate;
	uint64_t calls;                /* outcomes in the window */
	uint64_t failures;             /* ... that were failures */
	uint64_t slow_calls;           /* ... that were slow */
	unsigned consecutive_failures; /* the current run of failures */
	uint64_t trips;                /* automatic openings since new */
	uint64_t abandoned_rounds;     /* half-open rounds given up as stuck */
	int64_t open_duration;         /* of the current or last open period */
	/*
	 * ns until a call may start a half-open round: > 0 only while OPEN,
	 * 0 once one may; KEEL_NEVER while FORCED_OPEN; 0 otherwise.
	 */
	int64_t until_half_open;
	unsigned half_open_permits;    /* HALF_OPEN: probes running */
	unsigned half_open_done;       /* HALF_OPEN: probes finished */
};

/*
 * keel_breaker_view - fills *v. Takes the transition mutex briefly (and
 * moves a TIME window up to the current second, expiring old buckets).
 */
KEEL_API void keel_breaker_view(struct keel_policy *p,
				struct keel_breaker_view *v);

/*
 * Every function above that takes a policy expects one made by
 * keel_breaker_new: passing NULL or another kind of policy is a bug, and
 * panics.
 */

#ifdef __cplusplus
}
#endif

#endif /* KEEL_BREAKER_H */
