/*
 * keel/sched.h - keeld's scheduler: turns schedules into runs, runs them
 * on a panic-isolated pool, and keeps every step in a store.
 *
 *   tick      Each enabled, unpaused job fires at keel_cron_next of its
 *             last_tick. Due ticks of every job are materialised together,
 *             one store transaction per pass (keel_store_ticks), before
 *             anything runs: a tick is stored exactly once whatever
 *             crashes.
 *   missed    A tick materialised more than `late` after its time (keeld
 *             was down, the host slept) is missed and handled by the job's
 *             missed policy: skip (each recorded as a skipped run), once
 *             (the newest one runs, the others are skipped), all (each
 *             runs, one after another); at most missed_max of them are
 *             recorded, the rest are counted in a ticks.missed event.
 *   overlap   A tick of a job with runs still queued or running: forbid
 *             records it as skipped, replace cancels those runs and
 *             queues the new one, allow queues it. Runs of a forbid or
 *             replace job never run at the same time.
 *   attempt   A queued run is started on the pool (store: running), runs
 *             through the executor and is stored final; a failed or
 *             timed-out run with attempts left is followed by attempt + 1
 *             after the job's backoff, in the same transaction.
 *   restart   keel_sched_new recovers: runs left running by a dead keeld
 *             become crashed (and retried per policy), queued runs are
 *             picked up, and the ticks owed since last_tick follow the
 *             rules above.
 *   store     Every store call goes through a retry policy (busy or
 *             failing database) and a breaker; while it is open nothing
 *             new is ticked, results that could not be stored are kept in
 *             memory (and in cfg.spool, rewritten at each change) and
 *             written when the store answers again; a keeld starting on a
 *             spool writes its results first, before it recovers runs.
 *   cluster   With cfg.cluster, several keelds share one store. Every
 *             heartbeat each node takes or renews the lease (keel/store.h:
 *             the holder is the leader, its term the fencing token),
 *             beats its node row and the runs it executes, and reloads
 *             the jobs that changed. Only the leader ticks (fenced by its
 *             term; it stops the moment a renewal fails or its lease runs
 *             out on its own monotonic clock) and rescues the runs whose
 *             heartbeat is older than rescue_after. Every node claims due
 *             queued runs (FOR UPDATE SKIP LOCKED) for its free workers,
 *             and stores results with the claim token: a node presumed
 *             dead cannot overwrite a rescued run, and a run that is no
 *             longer its own (rescued, canceled by another node, deleted)
 *             is stopped at its next beat. Times written are on the
 *             store's clock. A node starting marks its own runs left
 *             running crashed (keel_store_recover_node) before it claims.
 *             A node that cannot reach the store keeps running what it
 *             holds and keeps their results (beating them) until it can;
 *             a leader that was cut off for rescue_after/4 or more waits
 *             rescue_after/2 after it reaches the store again before it
 *             rescues anything, so the other nodes can beat first.
 *
 * Each run has a trace id (new per tick, kept by its retries), current on
 * the thread while it runs, so every log line about it carries it.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef KEEL_SCHED_H
#define KEEL_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <keel/common.h>
#include <keel/exec.h>
#include <keel/job.h>
#include <keel/run.h>
#include <keel/store.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_sched;
struct keel_logger;
struct keel_metrics;

struct keel_sched_config {
	struct keel_store *store;    /* required; not owned */
	struct keel_executor *exec;  /* required; not owned */
	struct keel_logger *log;     /* NULL: the default logger */
	struct keel_metrics *metrics; /* NULL: none; else keeld_* families
					 are registered in it */
	const char *node;	     /* stamped on runs; default the host
					name */
	int workers;		     /* runs at once; default 16 */
	int64_t late;		     /* ns after which a tick is missed;
					default 10 s */
	int64_t prune_interval;	     /* ns between history prunes; default
					1 min */
	int64_t store_retry;	     /* ns between tries to write results
					the store refused; default 1 s */

	/* Cluster mode: several keelds share the store (PostgreSQL). See
	 * "cluster" above. The store must support the cluster calls. */
	int cluster;
	const char *const *tags;     /* this node's tags (copied); a job
					with tags runs only on nodes that
					have all of them */
	size_t n_tags;
	int64_t lease_ttl;	     /* ns a leader's lease lasts unrenewed;
					default 3 s */
	int64_t heartbeat;	     /* ns between beats: lease renewal,
					node and run heartbeats, job reload;
					default 500 ms; at most lease_ttl/2 */
	int64_t rescue_after;	     /* ns without a run heartbeat after
					which the leader rescues the run;
					default 6 s; at least 2 heartbeats */

	const char *spool;	     /* a file that keeps the results the
					store refused, so that they survive
					this process too (see "store");
					NULL: memory only */
};

KEEL_API void keel_sched_config_init(struct keel_sched_config *cfg);

/*
 * keel_sched_new - loads the jobs, recovers what a previous keeld left
 * (see above) and returns a scheduler that does not tick yet. err (may be
 * NULL) gets the reason of a failure: -EINVAL (config), -EIO (the store),
 * -ENOMEM.
 */
KEEL_API int keel_sched_new(const struct keel_sched_config *cfg,
			    struct keel_sched **out, char *err, size_t errlen);

/* Starts ticking and running. 0, -EALREADY, -EAGAIN (threads). */
KEEL_API int keel_sched_start(struct keel_sched *s);

/*
 * keel_sched_stop - stops ticking at once, lets running runs finish for
 * up to timeout ns (0 = no wait), then cancels the rest (stored as
 * canceled) and waits for them. Queued runs stay queued in the store for
 * the next start. 0, or -ETIMEDOUT when runs had to be canceled.
 * Idempotent.
 */
KEEL_API int keel_sched_stop(struct keel_sched *s, int64_t timeout);

/* Stops (no wait) if needed and frees. NULL is a no-op. */
KEEL_API void keel_sched_free(struct keel_sched *s);

/* 1 while started and not stopping, and the store breaker is closed. */
KEEL_API int keel_sched_ready(struct keel_sched *s);

/* ---- operations behind the REST API ------------------------------------ */

/* Creates or replaces j (copied). -EINVAL with err when the job names a
 * handler this keeld does not have; store errors. */
KEEL_API int keel_sched_job_put(struct keel_sched *s, const struct keel_job *j,
				enum keel_store_put *result, char *err,
				size_t errlen);
/* Deletes the job: its queued and running runs are canceled first. */
KEEL_API int keel_sched_job_delete(struct keel_sched *s, const char *name);
KEEL_API int keel_sched_job_pause(struct keel_sched *s, const char *name,
				  int paused);
/* Queues a manual run now; *out (may be NULL) gets it. -ENOENT. */
KEEL_API int keel_sched_run_now(struct keel_sched *s, const char *name,
				struct keel_run *out);
/* Cancels a run: queued -> canceled at once, running -> killed (stored
 * canceled when it ends). -ENOENT, -EALREADY when it is final. */
KEEL_API int keel_sched_run_cancel(struct keel_sched *s, int64_t id);

/* The next fire time of a job (s), KEEL_CRON_NEVER when none (paused,
 * disabled, finished @at, @manual), and how many runs it has queued or
 * running. -ENOENT. */
KEEL_API int keel_sched_job_state(struct keel_sched *s, const char *name,
				  int64_t *next_s, int *active);

struct keel_sched_stats {
	uint64_t jobs;
	uint64_t queued;  /* waiting to start (retries in backoff included) */
	uint64_t running;
	uint64_t started; /* since keel_sched_new */
	uint64_t finished;
	uint64_t panics;  /* handler panics recovered */
	uint64_t unsaved; /* results waiting for the store */
	uint64_t store_errors;
	int64_t started_at; /* ms */
	int64_t loop_at;    /* keel_clock_now of the loop's latest pass: the
			       loop passes at least once a second, so an old
			       value means a hung scheduler (the watchdog
			       reads it) */
};
KEEL_API void keel_sched_stats(struct keel_sched *s,
			       struct keel_sched_stats *out);

/* ns since the loop's latest pass (it passes at least once a second), or
 * -1 before start. Lock-free: a watchdog can read it while the scheduler
 * is stuck. */
KEEL_API int64_t keel_sched_loop_age(struct keel_sched *s);

/* Renames the node before keel_sched_start (keeld learns its port only
 * once it listens). 0, -EINVAL, -EBUSY once started. */
KEEL_API int keel_sched_set_node(struct keel_sched *s, const char *node);

/* The node name runs are stamped with. */
KEEL_API const char *keel_sched_node(struct keel_sched *s);

/* What this node knows of the cluster, from its latest beat. */
struct keel_sched_cluster {
	int cluster;	    /* cfg.cluster */
	int leader;	    /* 1 when this node leads now */
	char holder[128];   /* the lease's holder at the latest beat, "" when
			       none (or unknown: the store did not answer) */
	int64_t term;	    /* the holder's term */
	int64_t expires_at; /* ms, store clock: the lease's end */
	int64_t beat_at;    /* ms, store clock: the latest good beat; 0 none */
	int64_t skew;	    /* ms: store clock - this host's clock */
	uint64_t rescued;   /* runs this node rescued as leader */
	uint64_t lost;	    /* runs it stopped: no longer its own */
	uint64_t elected;   /* times it became leader */
	int64_t heartbeat;  /* ms: cfg.heartbeat */
	int64_t rescue_after; /* ms: cfg.rescue_after */
	int node_conflict;  /* another live process beats as this node: this
			       scheduler does nothing (no beat, claim or
			       lease) and should be stopped */
};
/* Without cfg.cluster: cluster 0, leader 1, holder the node. */
KEEL_API void keel_sched_cluster_info(struct keel_sched *s,
				      struct keel_sched_cluster *out);

/* Waits until the loop has ticked what was due at the call and no run is
 * queued or running, or timeout ns pass (tests, benchmarks). 0 or
 * -ETIMEDOUT. */
KEEL_API int keel_sched_idle_wait(struct keel_sched *s, int64_t timeout);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_SCHED_H */
