/*
 * keel/store.h - where keeld keeps its state: jobs, runs and an event log.
 *
 * keeld reaches its store only through these functions, so the embedded
 * SQLite store (keel_store_sqlite_open) and a server store for a cluster
 * implement one contract:
 *
 *   - A job is stored with its definition (keel_job_to_json), a paused
 *     flag and last_tick: the latest scheduled time (s) that has been
 *     materialised. Ticks after last_tick are the scheduler's to create.
 *   - keel_store_ticks materialises ticks: in one transaction it inserts
 *     their runs and moves each job's last_tick forward. A scheduled or
 *     missed run is unique per (job, scheduled_at, attempt), and so are
 *     the retries of such a run (a retry belongs to its first attempt's
 *     tick): a tick that was already stored is refused as a whole batch
 *     (-EEXIST), so no crash, restart or race creates a tick twice. Manual
 *     runs, and their retries, are not unique (two may share a ms).
 *   - A run moves queued -> running (keel_store_run_start, refused with
 *     -ESTALE unless it is queued) -> final (keel_store_run_finish, refused
 *     with -ESTALE unless it is queued or running: a queued run can be
 *     canceled or skipped without running). keel_store_run_finish stores
 *     the follow-up attempt, if any, in the same transaction, so a failed
 *     run and its retry are never half-written.
 *   - keel_store_recover, called once at start, turns every running run
 *     (its keeld died) into crashed, with the retries the caller decides,
 *     in one transaction.
 *
 * Times: scheduled_at and every *_at in struct keel_run are ms since the
 * epoch; last_tick is seconds (the schedule's unit).
 *
 * Errors: 0 or a negative errno: -ENOENT (no such job or run), -EEXIST,
 * -ESTALE (a run not in the state the call expects), -EBUSY (the database
 * is locked: retry), -EIO (the database failed, or a stored job
 * definition is corrupt; keel_store_errmsg has the text), -ENOMEM,
 * -EINVAL (bad arguments). Every failed call sets the calling thread's
 * keel_store_errmsg, and writes nothing: each call is one transaction.
 *
 * Text: what the store keeps is valid UTF-8 (JSON is made from it): a
 * run's error, output and node, and an event's strings, are stored with
 * each byte that is not valid UTF-8 replaced by U+FFFD.
 *
 * Thread-safety: a store is used by any number of threads at once. With
 * SQLite, reads (gets, lists, counts) do not wait for writes in progress;
 * writes are made one at a time.
 * Ownership: lists and records returned are the caller's, freed with the
 * matching _free; the store keeps no pointer to what the caller passes.
 */
#ifndef KEEL_STORE_H
#define KEEL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>
#include <keel/job.h>
#include <keel/run.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_store;

struct keel_store_config {
	/* SQLite: "full" syncs the WAL on every commit (survives power
	 * loss); "normal" (the default) syncs at checkpoints only: a commit
	 * survives keeld being killed, the last commits may be lost if the
	 * machine loses power. */
	int sync_full;
	int64_t busy_timeout; /* ns to wait for a lock; default 5 s */
};

KEEL_API void keel_store_config_init(struct keel_store_config *cfg);

/*
 * keel_store_sqlite_open - opens (creating if needed) the store in
 * directory dir (created with mode 0700 if missing): dir/keeld.db in WAL
 * mode, and dir/keeld.lock held with an exclusive lock for as long as the
 * store is open, so a second keeld on the same directory is refused with
 * -EBUSY and err says which pid holds it (the kernel releases the lock
 * however keeld ends). dir's parent must exist. The schema is created or
 * migrated to this version, each migration step in one transaction with
 * its version number; a database written by a newer keeld is refused
 * (-EPROTO). err (may be NULL) gets the reason of any failure: -ENOTDIR,
 * -EBUSY, -EPROTO, -EIO (not a database, a failed step), -errno of the
 * file system. cfg NULL = defaults. The store's descriptors are
 * close-on-exec; a child made by fork must not use the store.
 */
KEEL_API int keel_store_sqlite_open(const char *dir,
				    const struct keel_store_config *cfg,
				    struct keel_store **out, char *err,
				    size_t errlen);

/*
 * keel_store_pg_open - opens the store in the PostgreSQL database that
 * conninfo names (libpq's "host=... dbname=..." or a postgresql:// URI;
 * what it leaves out comes from libpq's PG* environment variables; a
 * connect_timeout of 10 s unless it says otherwise). The database must
 * exist and be UTF8-encoded (-EIO otherwise); the tables (jobs, runs,
 * events, schema_version) are made in the first schema of the session's
 * search_path, so a database shared with other programs can keep keel's
 * apart with "options=-csearch_path=keel". The schema is created or
 * migrated as with SQLite, each step in one transaction with its version
 * number, under an advisory lock, so keelds starting together migrate
 * once; a database written by a newer keeld is refused (-EPROTO).
 *
 * Several stores may be open on one database, in this process or in
 * others (the nodes of a cluster): there is no lock as with SQLite's data
 * directory; each call is one transaction, and the rules above (unique
 * ticks, run states) hold between stores too. A store keeps up to 4
 * connections, opened as calls need them, and reconnects by itself: a
 * call that meets a broken connection fails with -EIO and the next one
 * reconnects. cfg (NULL = defaults): busy_timeout is the session's
 * lock_timeout (a call waiting that long for a row another transaction
 * holds fails with -EBUSY, as do deadlocks and serialization failures);
 * sync_full sets synchronous_commit = on, else the server's setting
 * holds. err (may be NULL) gets the reason of a failed open (-EIO for a
 * server that cannot be reached, -EPROTO, -EINVAL, -ENOMEM); it never
 * shows conninfo, which may hold a password. The connections' sockets are
 * close-on-exec; a child made by fork must not use the store.
 */
KEEL_API int keel_store_pg_open(const char *conninfo,
				const struct keel_store_config *cfg,
				struct keel_store **out, char *err,
				size_t errlen);

/* Closes the store and releases the directory lock. NULL is a no-op. */
KEEL_API void keel_store_close(struct keel_store *st);

/* The reason of the last failed call this thread made on st ("" if
 * none), valid until this thread's next call on st. */
KEEL_API const char *keel_store_errmsg(struct keel_store *st);

/* The schema version this build writes. */
KEEL_API int keel_store_schema_version(void);

/* ---- jobs --------------------------------------------------------------- */

struct keel_store_job {
	struct keel_job *job; /* owned */
	int paused;
	int64_t last_tick;  /* s */
	int64_t created_at; /* ms: now_s of the put that created it */
	int64_t updated_at; /* ms: now_s of the last put or pause that
			       changed it */
};

enum keel_store_put {
	KEEL_STORE_CREATED = 0,
	KEEL_STORE_REPLACED,
	KEEL_STORE_UNCHANGED, /* keel_job_equal to the stored one: nothing
				 written */
};

/*
 * keel_store_job_put - creates or replaces j (by name). A new job gets
 * last_tick = now_s and paused 0. A replaced job keeps paused; its
 * last_tick becomes now_s when the schedule or time zone changed (ticks of
 * the old schedule are not owed by the new one), else is kept. *result
 * (may be NULL) says which happened. -EINVAL when j would not read back
 * (a job not made by keel_job_from_json that fails its checks: the
 * message says why). A stored definition that is corrupt
 * is replaced (REPLACED, last_tick = now_s): putting the job again is how
 * it is repaired.
 */
KEEL_API int keel_store_job_put(struct keel_store *st, const struct keel_job *j,
				int64_t now_s, enum keel_store_put *result);

/* Deletes the job and all its runs; -ENOENT. */
KEEL_API int keel_store_job_delete(struct keel_store *st, const char *name);

/* Sets paused; resuming (paused 0) a paused job also sets last_tick =
 * now_s, so the ticks of the pause are not owed. Pausing a paused job or
 * resuming one that is not paused changes nothing. -ENOENT. */
KEEL_API int keel_store_job_pause(struct keel_store *st, const char *name,
				  int paused, int64_t now_s);

/* One job into *out (caller clears with keel_store_job_clear); -ENOENT;
 * -EIO when its stored definition is corrupt (the message names it). */
KEEL_API int keel_store_job_get(struct keel_store *st, const char *name,
				struct keel_store_job *out);

/* Every job, sorted by name, into a new array (keel_store_jobs_free).
 * One corrupt definition fails the whole list with -EIO naming the job:
 * keeld must not start with a job silently missing. */
KEEL_API int keel_store_job_list(struct keel_store *st,
				 struct keel_store_job **out, size_t *n);

KEEL_API void keel_store_job_clear(struct keel_store_job *j);
KEEL_API void keel_store_jobs_free(struct keel_store_job *jobs, size_t n);

/* ---- runs --------------------------------------------------------------- */

/* The ticks of one job in a keel_store_ticks batch. */
struct keel_store_tick {
	const char *job;
	int64_t last_tick;     /* the job's new last_tick (s) */
	struct keel_run *runs; /* n_runs runs to insert (job, state, trigger,
				  attempt, scheduled_at, created_at,
				  trace_id, error set by the caller); their
				  ids are written back */
	size_t n_runs;
};

/*
 * keel_store_ticks - in one transaction, for each tick: checks that the
 * job exists (-ENOENT), sets its last_tick (which never moves back: the
 * larger of the stored and the given one is kept), inserts its runs (a
 * run's job may be NULL: the tick's). All or nothing: on any error no run
 * is inserted, no last_tick moved, and the runs' ids are left 0; -EEXIST
 * when a scheduled/missed run of the same (job, scheduled_at, attempt)
 * already exists.
 */
KEEL_API int keel_store_ticks(struct keel_store *st,
			      struct keel_store_tick *ticks, size_t n);

/* Inserts one run (manual runs, retries), writes r->id; -ENOENT when the
 * job does not exist; -EEXIST for a second retry of a tick's run (same
 * job, scheduled_at, attempt). */
KEEL_API int keel_store_run_insert(struct keel_store *st, struct keel_run *r);

/* queued -> running with started_at and node (NULL = none);
 * -ESTALE when the run is not queued (canceled meanwhile), -ENOENT. */
KEEL_API int keel_store_run_start(struct keel_store *st, int64_t id,
				  int64_t started_at, const char *node);

/*
 * keel_store_run_finish - stores r's final state, finished_at, exit_code,
 * signal, http_status, error, output (by r->id; r->state must be final),
 * refused with -ESTALE unless the run is queued or running (-ENOENT: no
 * such run; -EINVAL: r->state not final). When next is not NULL it is
 * inserted in the same transaction (next->id written); if it cannot be
 * (-EEXIST, -ENOENT), r is not finished either.
 */
KEEL_API int keel_store_run_finish(struct keel_store *st,
				   const struct keel_run *r,
				   struct keel_run *next);

/*
 * Group commit: many starts, or many finishes (each with its follow-up
 * attempt), in one transaction. rcs[i] gets each item's own answer as the
 * single calls would give it (0, -ESTALE, -ENOENT, -EEXIST); an item
 * refused leaves no trace and does not stop the others. The return value is
 * 0, or the error that failed the transaction as a whole, in which case
 * nothing of the batch is written (rcs then all hold that error).
 */
KEEL_API int keel_store_runs_start(struct keel_store *st, const int64_t *ids,
				   size_t n, int64_t started_at,
				   const char *node, int *rcs);

struct keel_store_finish {
	const struct keel_run *run; /* final state, by run->id */
	struct keel_run *next;	    /* NULL, or inserted with it (id set) */
};
KEEL_API int keel_store_runs_finish(struct keel_store *st,
				    struct keel_store_finish *items, size_t n,
				    int *rcs);

/* One run; -ENOENT. keel_run_clear(out) after. */
KEEL_API int keel_store_run_get(struct keel_store *st, int64_t id,
				struct keel_run *out);

/* Query for keel_store_run_list. Ids are never given twice (not even
 * after the newest runs were pruned), so before_id pages are stable. */
struct keel_store_run_query {
	const char *job;      /* NULL = every job */
	int64_t before_id;    /* 0 = from the newest; else ids < before_id */
	int limit;	      /* 1..1000 */
	int state;	      /* -1 = any, else an enum keel_run_state */
	int with_output;      /* 0: output left NULL (lists are light) */
};

/* Runs matching q, newest (highest id) first, into a new array
 * (keel_store_runs_free). */
KEEL_API int keel_store_run_list(struct keel_store *st,
				 const struct keel_store_run_query *q,
				 struct keel_run **out, size_t *n);

/* Every queued and running run, oldest first (the scheduler's work at
 * start). */
KEEL_API int keel_store_run_active(struct keel_store *st,
				   struct keel_run **out, size_t *n);

KEEL_API void keel_store_runs_free(struct keel_run *runs, size_t n);

/*
 * keel_store_recover - for keeld's start: every running run becomes
 * crashed (finished_at = now_ms, error = "keeld stopped while the run was
 * running"). For each, decide(run, &next, ud) (decide may be NULL: no
 * retries) is called with the crashed run and a zeroed next; returning 1
 * with next filled inserts next (a retry) in the same transaction;
 * next->job NULL means the crashed run's job. The strings decide puts in
 * next are heap copies the store frees (keel_run_clear), whatever it
 * returns. Returning 0 inserts nothing; a negative errno undoes the whole
 * recovery and is returned. decide runs inside the store's write
 * transaction: it must not call the store. *n_crashed (may be NULL) gets
 * the count.
 */
KEEL_API int keel_store_recover(struct keel_store *st, int64_t now_ms,
				int (*decide)(const struct keel_run *crashed,
					      struct keel_run *next, void *ud),
				void *ud, size_t *n_crashed);

/* Deletes the finished runs of job (not NULL) beyond its newest
 * keep_runs (by id; < 0 = no count limit) and those finished before
 * before_ms (<= 0 = no age limit; a run that never ran, such as a skipped
 * one, counts from its created_at); queued and running runs are never
 * deleted. *deleted (may be NULL) gets the count. */
KEEL_API int keel_store_prune(struct keel_store *st, const char *job,
			      int keep_runs, int64_t before_ms,
			      size_t *deleted);

/* Number of runs of job (NULL = all) in each state: counts[state]. */
KEEL_API int keel_store_run_counts(struct keel_store *st, const char *job,
				   int64_t counts[KEEL_RUN_NSTATES]);

/* ---- events ------------------------------------------------------------- */

struct keel_store_event {
	int64_t id;
	int64_t at;    /* ms */
	char *level;   /* "info", "warn", "error" */
	char *kind;    /* "job.created", "run.crashed", "ticks.missed", ... */
	char *job;     /* NULL = none */
	int64_t run_id; /* 0 = none */
	char *message;
};

/* Appends an event (its id is assigned); level, kind and message are
 * required, job may be NULL. Events older than the newest 10000 are
 * deleted as new ones come (in steps of 100, so up to 10100 are kept). */
KEEL_API int keel_store_event_add(struct keel_store *st, int64_t at_ms,
				  const char *level, const char *kind,
				  const char *job, int64_t run_id,
				  const char *message);

/* Newest first, ids < before_id (0 = newest), at most limit (1..1000). */
KEEL_API int keel_store_event_list(struct keel_store *st, int64_t before_id,
				   int limit, struct keel_store_event **out,
				   size_t *n);
KEEL_API void keel_store_events_free(struct keel_store_event *ev, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_STORE_H */
