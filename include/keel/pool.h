/*
 * keel/pool.h - a worker pool where a crashing task is just a failed task.
 *
 * Each task runs in a keel scope on one of the pool's threads. A task that
 * panics, dereferences NULL, divides by zero or overflows its stack is
 * recovered after its deferred calls ran; the panic (message, kind, fault
 * details, and the stack captured where it was raised) goes to the pool's
 * panic handler, is counted, and the worker thread goes on to the next task.
 * Workers set up their alternate signal stacks before their first task.
 *
 * The queue is bounded. When it is full, submit does what the config says:
 * block until there is room (optionally up to a timeout), reject at once, or
 * run the task on the submitting thread (caller-runs: back-pressure that
 * never drops work). The pool is fixed (min_threads == max_threads) or
 * bounded-elastic: it starts min_threads, adds threads up to max_threads
 * while tasks wait, and lets extra threads go after idle_timeout.
 *
 * Each task can have a deadline (its own, or the pool's default). A
 * watchdog reports every task still running past its deadline, once, to the
 * overdue handler, and cancels the task's token: C cannot stop a running
 * function, so a task that wants to stop early observes its token
 * (keel_task_cancelled). See docs/runtime.md.
 *
 * Shutdown either drains (every queued task still runs) or cancels (queued
 * tasks are dropped and counted, running ones see their token cancelled),
 * and waits up to a timeout for the workers. No task is lost or run twice:
 * a submit that returns 0 means the task will run exactly once (or be
 * counted as cancelled by a cancelling shutdown); any other return means it
 * will never run.
 *
 * Thread-safety: submit from any thread, tasks included. A task that
 * submits to its own pool cannot deadlock it: when the queue is full (BLOCK)
 * and every other worker is itself waiting in submit, the submitting worker
 * runs the task itself, as caller-runs does. Ownership: the pool owns
 * nothing the tasks point to; keel_pool_free after shutdown.
 */
#ifndef KEEL_POOL_H
#define KEEL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/common.h>
#include <keel/panic.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_pool;
struct keel_task; /* a running task's context */

/* A task. t is valid only while it runs. */
typedef void (*keel_task_fn)(struct keel_task *t, void *arg);

/* What happens when the queue is full. */
enum keel_pool_full {
	KEEL_POOL_BLOCK = 0,   /* wait for room (up to block_timeout) */
	KEEL_POOL_REJECT,      /* fail at once with -EAGAIN */
	KEEL_POOL_CALLER_RUNS, /* run the task on the submitting thread */
};

/* What the panic handler receives. Valid only during the call. */
struct keel_task_panic {
	const char *pool;            /* the pool's name */
	const char *task;            /* the task's name, or "" */
	const struct keel_panic *panic; /* message, kind, fault, stack */
	int worker;                  /* index of the worker thread ("<name>-<n>"),
				      * -1 on a submitting thread (caller-runs) */
};

/* What the overdue handler receives. */
struct keel_task_overdue {
	const char *pool;
	const char *task;
	int worker;
	int64_t started;             /* clock time the task started */
	int64_t deadline;            /* the deadline it passed */
	int64_t now;
};

struct keel_pool_config {
	const char *name;            /* threads are "<name>-<n>"; default "pool" */
	int min_threads;             /* default 2 */
	int max_threads;             /* 0 (default) = min_threads (fixed);
				      * min_threads may be 0 when this is not */
	int64_t idle_timeout;        /* elastic threads above min leave after
				      * this long idle; default 10 s. Real
				      * time, as are block_timeout and
				      * shutdown's timeout: the clock below
				      * times deadlines, watchdog, latency */
	size_t queue_size;           /* default 1024; >= 1 */
	enum keel_pool_full when_full; /* default KEEL_POOL_BLOCK */
	int64_t block_timeout;       /* BLOCK: ns to wait for room, 0 = forever;
				      * then -EAGAIN. Default 0 */
	int64_t task_deadline;       /* default per-task deadline (ns from start);
				      * 0 = none (default) */
	int64_t watchdog_interval;   /* how often deadlines are checked;
				      * default 100 ms */
	void (*on_panic)(const struct keel_task_panic *info, void *ud);
	void *panic_ud;              /* default handler: none (only counted) */
	void (*on_overdue)(const struct keel_task_overdue *info, void *ud);
	void *overdue_ud;
	const struct keel_clock *clock; /* default: the system clock */
};

KEEL_API void keel_pool_config_init(struct keel_pool_config *cfg);

/* 0; -EINVAL for a bad config (nothing started); -ENOMEM or -EAGAIN when
 * threads or memory could not be had (nothing left running). */
KEEL_API int keel_pool_new(const struct keel_pool_config *cfg,
			   struct keel_pool **out);

/* Per-task options; NULL means all defaults. */
struct keel_task_options {
	const char *name;            /* shown to the handlers; not copied */
	int64_t deadline;            /* ns from start; 0 = the pool's default */
	struct keel_cancel *cancel;  /* a parent token for the task's own; may be
				      * NULL; must outlive the task */
	void (*on_drop)(void *arg);  /* called with arg, once, if the task is
				      * dropped unrun by a cancelling shutdown
				      * (from the thread that shut down), so
				      * whoever owns arg can free it; may be NULL */
};

/*
 * keel_pool_submit - queues fn(t, arg). Returns 0 (it will run exactly
 * once, or be counted cancelled by a cancelling shutdown); -EAGAIN when the
 * queue is full and the pool rejects (or a block timed out); -ESHUTDOWN
 * once shutdown began; -EINVAL for a NULL pool or fn or a negative
 * deadline. With CALLER_RUNS a full queue runs the task here, in a scope,
 * with the same panic isolation, and returns 0.
 */
KEEL_API int keel_pool_submit(struct keel_pool *pool, keel_task_fn fn,
			      void *arg, const struct keel_task_options *opt);

/* Inside a task: its token (cancelled at its deadline, by a cancelling
 * shutdown, or by its parent token), and shorthands. */
KEEL_API struct keel_cancel *keel_task_token(struct keel_task *t);
KEEL_API int keel_task_cancelled(struct keel_task *t);
/* The token's deadline: the earlier of the task's and its parent token's;
 * KEEL_NEVER for none. */
KEEL_API int64_t keel_task_deadline(struct keel_task *t);
KEEL_API const char *keel_task_name(struct keel_task *t);

enum keel_pool_stop {
	KEEL_POOL_DRAIN = 0, /* run every queued task, then stop */
	KEEL_POOL_CANCEL,    /* drop queued tasks, cancel running ones' tokens */
};

/*
 * keel_pool_shutdown - stops accepting tasks, then drains or cancels, and
 * waits up to timeout ns (0 = forever) for the workers to finish. Returns 0,
 * or -ETIMEDOUT with tasks still running (call it again to keep waiting; the
 * pool keeps stopping; a later CANCEL turns a drain into a cancel).
 * Idempotent. From one of the pool's own tasks it begins the shutdown and
 * returns -EDEADLK at once: it cannot wait for itself.
 */
KEEL_API int keel_pool_shutdown(struct keel_pool *pool, enum keel_pool_stop how,
				int64_t timeout);

struct keel_pool_stats {
	uint64_t submitted;   /* accepted by submit (caller-runs included) */
	uint64_t rejected;    /* refused by submit (full or shut down) */
	uint64_t completed;   /* ran to the end, panicked ones excluded */
	uint64_t panicked;    /* ended by a recovered panic or fault */
	uint64_t cancelled;   /* dropped from the queue by a cancelling shutdown */
	uint64_t caller_runs; /* run on the submitter's thread */
	uint64_t overdue;     /* reported by the watchdog */
	uint64_t queued;      /* waiting now */
	uint64_t running;     /* running now */
	uint64_t threads;     /* worker threads now */
	uint64_t latency_count;  /* tasks timed below: every task while the
				  * pool runs under about a million tasks
				  * a second, one in up to 64 above */
	double latency_avg_ns;   /* submit to finish, average */
	double latency_max_ns;
};
KEEL_API void keel_pool_stats(struct keel_pool *pool, struct keel_pool_stats *s);

/* Frees a pool; shuts it down first (drain, no timeout) if needed. Called
 * from one of the pool's own tasks it panics instead (a bug). */
KEEL_API void keel_pool_free(struct keel_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_POOL_H */
