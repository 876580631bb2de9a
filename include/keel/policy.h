/*
 * keel/policy.h - what every resilience policy shares: the protected call,
 * its outcome, events and counters, and how policies nest.
 *
 * A protected call is a function that returns 0 on success or a negative
 * error code, and may set a result and a server-supplied retry delay through
 * the struct keel_exec it receives. A panic or hardware fault inside it is
 * not a crash: the innermost layer runs it in a keel scope, so the panic
 * becomes an ordinary failure (code KEEL_EPANIC, outcome.panicked = 1) that
 * policies count, retry and fall back from, after the call's own deferred
 * cleanups ran.
 *
 * Policies (keel/retry.h, breaker.h, fallback.h, timeout.h, bulkhead.h,
 * ratelimit.h, budget.h, chaos.h) are built once from plain config structs
 * and then shared by any number of threads; executing a call through them
 * allocates nothing. keel/pipeline.h nests several around one call.
 */
#ifndef KEEL_POLICY_H
#define KEEL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/common.h>
#include <keel/error.h>
#include <keel/panic.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_policy_kind {
	KEEL_POLICY_NONE = 0, /* the call itself */
	KEEL_POLICY_RETRY,
	KEEL_POLICY_BREAKER,
	KEEL_POLICY_FALLBACK,
	KEEL_POLICY_TIMEOUT,
	KEEL_POLICY_BULKHEAD,
	KEEL_POLICY_RATELIMIT,
	KEEL_POLICY_BUDGET,
	KEEL_POLICY_CHAOS,
	KEEL_POLICY__COUNT
};
KEEL_API const char *keel_policy_kind_name(enum keel_policy_kind kind);

/*
 * struct keel_exec - what a protected call receives. The policies fill the
 * "in" fields; the call may fill the "out" ones.
 */
struct keel_exec {
	/* in */
	const struct keel_clock *clock; /* never NULL */
	struct keel_cancel *cancel;     /* observe it in blocking work; may be NULL */
	int64_t deadline;               /* the earliest deadline of all timeouts, or KEEL_NEVER */
	int attempt;                    /* 1 for the first attempt */
	/*
	 * Timing, shared by every policy of the chain so that a call costs two
	 * clock reads however many policies look at time (a clock read is
	 * about 24 ns on a VM). Only kept when `timed` is set, which the
	 * engine does when some policy of the chain has needs_time; else 0.
	 *   start: when the current attempt began, and fresh: no wait has
	 *          happened since it was read (a policy that waits, or
	 *          retries, sets it again after its wait), so a policy may use
	 *          it as "now" on its way in;
	 *   end:   when the call last returned (set by the innermost layer).
	 */
	int timed;
	int64_t start;
	int64_t end;
	/* out */
	void *result;                   /* what the call produced, if anything */
	int64_t retry_after;            /* delay the server asked for (ns), 0 = none */
};

/* The protected call: 0 on success, a negative error code on failure. */
typedef int (*keel_op_fn)(struct keel_exec *x, void *arg);

#define KEEL_OUTCOME_MSG 120

/*
 * struct keel_outcome - how a call through policies ended.
 */
struct keel_outcome {
	int code;               /* 0, or the failure's negative code */
	void *result;           /* the call's x->result (or a fallback's) */
	int panicked;           /* the call panicked or faulted (code KEEL_EPANIC) */
	enum keel_panic_kind panic_kind;
	char panic_msg[KEEL_OUTCOME_MSG]; /* the panic's message, truncated */
	int64_t retry_after;    /* the last attempt's server-supplied delay */
	int attempts;           /* calls actually made */
	enum keel_policy_kind decided_by; /* who decided the final outcome */
	int64_t elapsed;        /* ns on the clock, when some policy keeps
				 * time (x->timed), else 0 */
};

/* 1 when o is a failure (code != 0). */
static inline int keel_outcome_failed(const struct keel_outcome *o)
{
	return o->code != 0;
}

/*
 * Classifiers decide whether an outcome counts as a failure for a policy
 * (breaker, budget) or should be retried (retry). NULL means the default:
 * any non-zero code, panics included, is a failure.
 */
typedef int (*keel_classify_fn)(const struct keel_outcome *o, void *ud);

/* ------------------------------------------------------------------------
 * Events and counters
 * ------------------------------------------------------------------------ */

enum keel_event_type {
	KEEL_EV_SUCCESS = 0,  /* a call through the policy succeeded */
	KEEL_EV_FAILURE,      /* ... failed (error code, not a panic) */
	KEEL_EV_PANIC,        /* ... panicked or faulted */
	KEEL_EV_RETRY,        /* retry: another attempt after delay */
	KEEL_EV_GIVE_UP,      /* retry: attempts or time exhausted, or aborted */
	KEEL_EV_REJECTED,     /* breaker open, bulkhead full, rate limited, budget empty */
	KEEL_EV_STATE,        /* breaker state change: from, to */
	KEEL_EV_TIMEOUT,      /* a timeout fired */
	KEEL_EV_FALLBACK,     /* a fallback produced the outcome */
	KEEL_EV_INJECTED,     /* chaos injected a fault */
	KEEL_EV__COUNT
};
KEEL_API const char *keel_event_type_name(enum keel_event_type type);

struct keel_policy;

struct keel_event {
	enum keel_event_type type;
	enum keel_policy_kind kind;
	const char *name;       /* the policy's name (config.name) */
	int attempt;
	int code;               /* the outcome's code, where there is one */
	int64_t delay;          /* RETRY: the wait before the next attempt */
	int from, to;           /* STATE: enum keel_breaker_state values;
				 * INJECTED: from is the enum keel_chaos_kind */
	int64_t at;             /* clock time */
};

/*
 * An event listener. Called synchronously on the calling thread, so it must
 * be quick and must not call back into the same policy. It may be NULL.
 */
typedef void (*keel_event_fn)(const struct keel_event *ev, void *ud);

/*
 * Counters every policy keeps (read with keel_policy_stats). Each call that
 * enters a policy ends in exactly one of successes, failures, panics and
 * rejections, so calls == successes + failures + panics + rejections once
 * no call is in flight; retries, timeouts, fallbacks, injected and
 * transitions count events on top of that (a timeout's -ETIMEDOUT is also a
 * failure: the call ran).
 */
struct keel_policy_stats {
	uint64_t calls;       /* calls that entered the policy */
	uint64_t successes;
	uint64_t failures;    /* error codes, panics excluded */
	uint64_t panics;
	uint64_t rejections;
	uint64_t retries;     /* retry: extra attempts made */
	uint64_t timeouts;
	uint64_t fallbacks;
	uint64_t injected;    /* chaos */
	uint64_t transitions; /* breaker */
};

/* ------------------------------------------------------------------------
 * The policy object and nesting
 * ------------------------------------------------------------------------ */

struct keel__chain;

/*
 * Every policy type starts with this struct. Policies are created by their
 * own module's _new function and freed with keel_policy_free.
 */
struct keel_policy_ops {
	enum keel_policy_kind kind;
	/* Runs the rest of the chain (keel__chain_next) under this policy. */
	void (*execute)(struct keel_policy *p, struct keel__chain *next,
			struct keel_exec *x, struct keel_outcome *out);
	void (*destroy)(struct keel_policy *p);
};

/*
 * One clock per chain: the per-call timing (x->start, x->end, x->deadline)
 * is on the pipeline's clock (keel_policy_execute: the policy's), and
 * policies wait on x->clock. Give a pipeline and its policies the same
 * clock; a policy's own clock serves only what happens outside calls.
 */
struct keel_policy {
	const struct keel_policy_ops *ops;
	const char *name;
	const struct keel_clock *clock;
	int needs_time;       /* the policy reads x->start / x->end */
	keel_event_fn on_event;
	void *event_ud;
	/* struct keel_policy_stats, sharded: row i belongs to the thread that
	 * owns slot i (plain relaxed load + store, no lock prefix); the last
	 * row is shared by threads without a slot (atomic add). Rows are two
	 * cache lines apart, so threads never share a line. */
	uint64_t stats[KEEL__SLOTS + 1][16];
};

/* Frees any policy (NULL is a no-op). Not while calls are running through it. */
KEEL_API void keel_policy_free(struct keel_policy *p);
KEEL_API void keel_policy_stats(const struct keel_policy *p,
				struct keel_policy_stats *out);
KEEL_API enum keel_policy_kind keel_policy_kind(const struct keel_policy *p);
KEEL_API const char *keel_policy_name(const struct keel_policy *p);
/* Replaces the event listener (not thread-safe against running calls). */
KEEL_API void keel_policy_on_event(struct keel_policy *p, keel_event_fn fn,
				   void *ud);

/*
 * keel_policy_execute - runs fn(x, arg) under one policy. cancel may be
 * NULL. Returns out->code. Same as a pipeline of one. A call whose token is
 * already cancelled, or past its deadline, never starts: the outcome is the
 * token's reason with attempts 0.
 */
KEEL_API int keel_policy_execute(struct keel_policy *p, keel_op_fn fn,
				 void *arg, struct keel_cancel *cancel,
				 struct keel_outcome *out);

/* ------------------------------------------------------------------------
 * For implementers of policies (src/resilience/)
 * ------------------------------------------------------------------------ */

struct keel__chain {
	struct keel_policy *const *policies; /* the rest, outermost first */
	int n;
	keel_op_fn fn;
	void *arg;
};

/* Runs the rest of the chain: the next policy, or the call itself in a
 * panic-catching scope. Resets *out before the call. */
KEEL_API void keel__chain_next(struct keel__chain *c, struct keel_exec *x,
			       struct keel_outcome *out);
/*
 * keel__policy_alloc - zeroed memory for a policy struct of `size` bytes
 * (struct keel_policy first), `extra` bytes after it for the policy's own
 * use, then a copy of the name (NULL: the kind's name); the base is
 * initialised. NULL when out of memory. Freed with free().
 */
KEEL_API void *keel__policy_alloc(size_t size, size_t extra,
				  const struct keel_policy_ops *ops,
				  const char *name,
				  const struct keel_clock *clock,
				  keel_event_fn on_event, void *event_ud);
KEEL_API void keel__policy_init(struct keel_policy *p,
				const struct keel_policy_ops *ops,
				const char *name, const struct keel_clock *clock,
				keel_event_fn on_event, void *event_ud);
KEEL_API void keel__policy_emit(struct keel_policy *p, enum keel_event_type type,
				const struct keel_exec *x,
				const struct keel_outcome *out, int64_t delay,
				int from, int to);
/* Counts a finished call: success, failure or panic (and emits the event). */
KEEL_API void keel__policy_count(struct keel_policy *p, const struct keel_exec *x,
				 const struct keel_outcome *out);
/* Adds 1 to one counter (the index of its field in keel_policy_stats). */
KEEL_API void keel__policy_add(struct keel_policy *p, unsigned field);
KEEL_API int keel__classify(keel_classify_fn fn, void *ud,
			    const struct keel_outcome *o);
/* Clears what one attempt left in *out (code, result, panic, retry_after,
 * decided_by); attempts and elapsed carry on. */
KEEL_API void keel__outcome_clear(struct keel_outcome *out);
/* Sets *out to a rejection by policy kind with code. */
KEEL_API void keel__outcome_reject(struct keel_outcome *out,
				   enum keel_policy_kind by, int code);

/* Runs fn under policies[0..n) (outermost first): the pipeline's engine. */
KEEL_API int keel__execute(struct keel_policy *const *policies, int n,
			   const struct keel_clock *clock, keel_op_fn fn,
			   void *arg, struct keel_cancel *cancel,
			   struct keel_outcome *out);

#define KEEL__STAT(field) (offsetof(struct keel_policy_stats, field) / sizeof(uint64_t))

#ifdef __cplusplus
}
#endif

#endif /* KEEL_POLICY_H */
