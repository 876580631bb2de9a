/*
 * keel/chaos.h - inject failures on purpose, to prove the policies around a
 * call handle them (in tests and on game days).
 *
 * A chaos policy decides per call, with probability `rate`, whether to
 * inject, and then does one `kind` of harm:
 *
 *   KEEL_CHAOS_ERROR    the call fails with error_code (default KEEL_ECHAOS)
 *                       without running;
 *   KEEL_CHAOS_PANIC    the call panics with panic_msg without running;
 *   KEEL_CHAOS_FAULT    a real hardware fault: a NULL dereference where the
 *                       call would run. keel's fault handling turns it into
 *                       a panic ("runtime error: invalid memory address or
 *                       nil pointer dereference", KEEL_PANIC_NIL_DEREF), so
 *                       this exercises the signal path end to end;
 *   KEEL_CHAOS_LATENCY  waits `latency` ns on the policy clock, then runs
 *                       the call. The latency is the call's own time (a
 *                       timeout around it sees a slow call, and x->start is
 *                       left alone). The wait observes the call's cancel token
 *                       (a cancelled wait ends the call with the token's
 *                       reason, the call not run) and its deadline (a
 *                       deadline before the end of the latency ends the
 *                       wait there with -ETIMEDOUT, the call not run: what a
 *                       real slow dependency honouring the deadline would
 *                       produce);
 *   KEEL_CHAOS_RESULT   runs the call, then change(x, code, ud) returns the
 *                       code to report and may change x->result.
 *
 * The harm is done inside the call's own panic-catching scope (the policy
 * substitutes a wrapper for the call at the innermost layer, wherever the
 * chaos policy sits in a pipeline), so an injected failure is
 * indistinguishable from the call's own: the same outcome, the same
 * counters in the policies around it, out->attempts counts it, decided_by
 * is KEEL_POLICY_NONE. With PANIC and FAULT (and ERROR, and an interrupted
 * LATENCY) the real call never starts, so none of its deferred cleanups run:
 * it registered none.
 *
 * Randomness: a xorshift generator per thread and per policy, seeded from
 * cfg.seed (and the order in which threads first use the policy), so a
 * single-threaded test sees the same decisions on every run. Each call
 * through an enabled policy draws one number; a disabled policy draws none.
 *
 * Switching at run time: keel_chaos_enable and keel_chaos_set_rate may be
 * called from any thread while calls run (relaxed atomics: a call in
 * progress sees the old or the new setting).
 *
 * Events and counters: an injection adds 1 to `injected` and emits
 * KEEL_EV_INJECTED after the call, with ev.code the outcome's code, ev.delay
 * the latency (LATENCY) and ev.from the enum keel_chaos_kind; every call is
 * then counted as success, failure or panic as usual.
 *
 * FAULT and sanitizers: under ASan the program needs
 * allow_user_segv_handler=1 (docs/panic.md); TSan cannot follow the jump
 * out of a signal handler, so do not inject faults in a TSan build.
 *
 * Thread-safety: shared by any number of threads; nothing is allocated per
 * call. change() is called concurrently and must be safe for that.
 */
#ifndef KEEL_CHAOS_H
#define KEEL_CHAOS_H

#include <keel/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_chaos_kind {
	KEEL_CHAOS_ERROR = 0,
	KEEL_CHAOS_PANIC,
	KEEL_CHAOS_FAULT,
	KEEL_CHAOS_LATENCY,
	KEEL_CHAOS_RESULT,
};

/*
 * For KEEL_CHAOS_RESULT: called after the real call returned code (it is
 * not called when the call panicked). Returns the code to report; may set
 * x->result.
 */
typedef int (*keel_chaos_change_fn)(struct keel_exec *x, int code, void *ud);

struct keel_chaos_config {
	const char *name;               /* default "chaos"; copied */
	const struct keel_clock *clock; /* default NULL: the system clock */
	keel_event_fn on_event;         /* default NULL: no listener */
	void *event_ud;
	enum keel_chaos_kind kind;      /* default KEEL_CHAOS_ERROR */
	double rate;                    /* per call, 0..1; default 0.1 */
	int enabled;                    /* default 1 */
	uint64_t seed;                  /* default 0 (any value is fine) */
	const char *panic_msg;          /* PANIC; default "chaos: injected
					 * panic"; copied */
	int error_code;                 /* ERROR; default KEEL_ECHAOS; < 0 */
	int64_t latency;                /* LATENCY, ns; default 100 ms; > 0 */
	keel_chaos_change_fn change;    /* RESULT; required */
	void *change_ud;
};

/* Fills cfg with the defaults above. */
KEEL_API void keel_chaos_config_init(struct keel_chaos_config *cfg);

/*
 * keel_chaos_new - builds a chaos policy from cfg (not kept: name and
 * panic_msg are copied; the clock, event_ud and change_ud must outlive the
 * policy). Returns 0 and sets *out; -EINVAL for a bad config (an unknown
 * kind, rate outside 0..1 or NaN, error_code >= 0, latency <= 0 with
 * LATENCY, no change function with RESULT), with nothing allocated and *out
 * NULL; or -ENOMEM. Free with keel_policy_free().
 */
KEEL_API int keel_chaos_new(const struct keel_chaos_config *cfg,
			    struct keel_policy **out);

/*
 * Run-time switches, from any thread.
 * keel_chaos_enable - on != 0 enables injection, 0 disables it (calls then
 * pass straight through). Returns 0, or -EINVAL when p is not a chaos
 * policy.
 * keel_chaos_set_rate - sets the probability (0..1): 0, or -EINVAL (bad
 * rate, or p is not a chaos policy).
 */
KEEL_API int keel_chaos_enable(struct keel_policy *p, int on);
KEEL_API int keel_chaos_set_rate(struct keel_policy *p, double rate);

/* The current settings: 1/0 (-EINVAL for a non-chaos p), and the rate
 * (-1.0 for a non-chaos p). */
KEEL_API int keel_chaos_enabled(const struct keel_policy *p);
KEEL_API double keel_chaos_rate(const struct keel_policy *p);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_CHAOS_H */
