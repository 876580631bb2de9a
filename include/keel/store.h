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
	/* PostgreSQL: ns a transaction of the store may sit idle between
	 * two of its statements before the server ends the session, and
	 * with it the transaction and its locks (the server's
	 * idle_in_transaction_session_timeout); default 5 s, 0 = never.
	 * The store's own transactions never wait between statements: only
	 * a process that is paused in one (SIGSTOP, a frozen VM) does, and
	 * its locks would otherwise hold everyone else off until it wakes.
	 * A keeld cluster node uses its lease ttl. SQLite ignores it. */
	int64_t idle_timeout;
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
 * holds; idle_timeout is the session's idle_in_transaction_session_timeout
 * (a call whose session the server ended meanwhile fails with -EIO).
 * err (may be NULL) gets the reason of a failed open (-EIO for a
 * server that cannot be reached, -EPROTO, -EINVAL, -ENOMEM); it never
 * shows conninfo, which may hold a password. The connections' sockets are
 * close-on-exec; a child made by fork must not use the store.
 */
KEEL_API int keel_store_pg_open(const char *conninfo,
				const struct keel_store_config *cfg,
				struct keel_store **out, char *err,
				size_t errlen);

/* 0 when conninfo is a URI or keyword string libpq can read (nothing is
 * connected), else -EINVAL and err says what is wrong (never the
 * password). */
KEEL_API int keel_store_pg_conninfo_check(const char *conninfo, char *err,
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

/* ---- cluster: leadership, nodes, claims, rescue ----------------------- */
/*
 * Several keelds (nodes) share one store. One of them, the leader, holds
 * the lease and materialises ticks; every node claims queued runs and
 * executes them. Every time below is the store's own clock (the database
 * server's), never a node's, so nodes with skewed clocks agree; a node
 * learns it from keel_store_node_beat (*now_ms) and from the lease (now),
 * and should compute what the store compares with it (a retry's
 * not_before) on that clock.
 *
 *   lease   one row: holder, term, expires_at. A node takes it when it is
 *           free (never held, released) or expired (expires_at <= now),
 *           or renews it when it holds it; the term increases at every
 *           change of holder and is the fencing token:
 *           keel_store_ticks_fenced and keel_store_rescue are refused
 *           (-ESTALE) unless the caller's term still holds the lease, so a
 *           leader that was paused past its lease cannot write ticks or
 *           rescue after a new leader took over. Their check and their
 *           writes are one transaction, which a takeover waits for: a new
 *           leader's term begins after the old one's last write.
 *   nodes   each node beats (upsert: last_heartbeat, running, tags), for
 *           GET /v1/cluster.
 *   claims  keel_store_claim moves queued runs that are due (not_before
 *           <= now) to running for one node, each with a fresh claim token
 *           (struct keel_run's claim, never 0), skipping rows other nodes
 *           are claiming at the same moment (FOR UPDATE SKIP LOCKED),
 *           never making two running runs of a "forbid" or "replace" job
 *           (not even when nodes claim at the same moment), and only runs
 *           whose job's tags are all among the node's tags. A node beats
 *           its claimed runs (keel_store_runs_beat); a finish
 *           (keel_store_run_finish, keel_store_runs_finish) that carries a
 *           claim token (run->claim != 0) is refused with -ESTALE unless
 *           the row still has that token: a node presumed dead that comes
 *           back cannot overwrite a rescued run. A finish with claim 0 is
 *           not checked (one node; an operator's cancel).
 *   rescue  the leader turns running runs whose heartbeat is older than
 *           stale_ms into crashed, with their retries (decide, as in
 *           keel_store_recover), in one transaction; their token is reset
 *           to 0, so the old node's beats and finish are refused.
 *
 * The SQLite store implements all of it with the same rules, for the one
 * keeld that can open its directory (its lease is its own unless it asks
 * under two names), so keeld has one code path. A store that has no
 * cluster support answers -ENOTSUP. Besides the errors above: -EINVAL for
 * a node that is not 1..127 bytes of UTF-8, a ttl, term, stale_ms or max
 * out of range.
 */

struct keel_store_lease {
	char holder[128];   /* the node holding it, "" when nobody does (never
			       held, or released) */
	int64_t term;	    /* the holder's term, 0 when never held */
	int64_t expires_at; /* ms, store clock; the holder leads while
			       now < expires_at */
	int64_t now;	    /* ms, store clock at the answer */
};

/*
 * Takes or renews the lease for node until now + ttl_ms (ttl_ms > 0), if
 * it is free, expired or node's; *out gets the lease as it stands after
 * the call either way (out->holder equals node when node leads; else the
 * other holder, who leads until out->expires_at). A renewal keeps the
 * term, also when node's own lease had expired and nobody took it
 * meanwhile. Race-free between stores: of nodes asking at once, one wins.
 */
KEEL_API int keel_store_lease_acquire(struct keel_store *st, const char *node,
				      int64_t ttl_ms,
				      struct keel_store_lease *out);
/* Gives the lease up if node holds it at term (a graceful stop: the next
 * leader need not wait for it to expire, and gets term + 1); -ESTALE when
 * node did not hold it at term (nothing changed). */
KEEL_API int keel_store_lease_release(struct keel_store *st, const char *node,
				      int64_t term);

struct keel_store_node {
	char *id;
	int64_t last_heartbeat; /* ms, store clock */
	int64_t started_at;	/* ms, store clock of its first beat */
	int running;		/* runs it said it was running */
	char **tags;
	size_t n_tags;
};

/* Records node's heartbeat (and running count and tags: n_tags strings of
 * UTF-8, not NULL); *now_ms (may be NULL) gets the store clock. */
KEEL_API int keel_store_node_beat(struct keel_store *st, const char *node,
				  int running, const char *const *tags,
				  size_t n_tags, int64_t *now_ms);
/* Every node that ever beat, sorted by id (bytes), into a new array
 * (keel_store_nodes_free). Nodes that have not beaten for longer than
 * forget_ms (0 = never) are deleted first. */
KEEL_API int keel_store_node_list(struct keel_store *st, int64_t forget_ms,
				  struct keel_store_node **out, size_t *n);
KEEL_API void keel_store_nodes_free(struct keel_store_node *nodes, size_t n);

/*
 * Claims up to max (1..1000) queued, due runs for node, whose tags (n_tags
 * strings) must include every tag of a run's job, in one transaction,
 * oldest due first; *out (keel_store_runs_free) gets them as they now
 * are: running, with node, started_at (store clock) and claim set; *n may
 * be 0. Of a "forbid" or "replace" job, one run at most, and none while
 * one is running.
 */
KEEL_API int keel_store_claim(struct keel_store *st, const char *node,
			      const char *const *tags, size_t n_tags, int max,
			      struct keel_run **out, size_t *n);

/* Beats n claimed runs (ids[i] with claims[i], not 0) in one transaction:
 * rcs[i] is 0, or -ESTALE when run i is no longer running with that claim
 * (rescued, finished, deleted: the node should stop it). The return value
 * is 0 or the error that failed the whole call (rcs then all hold it). */
KEEL_API int keel_store_runs_beat(struct keel_store *st, const int64_t *ids,
				  const uint64_t *claims, size_t n, int *rcs);

/* keel_store_ticks, fenced: -ESTALE and nothing written unless term holds
 * the lease (held, not expired) when the transaction begins. */
KEEL_API int keel_store_ticks_fenced(struct keel_store *st, int64_t term,
				     struct keel_store_tick *ticks, size_t n);

/*
 * The leader at term: running runs whose heartbeat is older than stale_ms
 * (> 0) (or, never beaten, that started longer ago: runs started with
 * keel_store_run_start, which nobody beats, too) become crashed, with
 * finished_at now (store clock), error "rescued: node <node> stopped
 * beating" and claim 0, and decide's retries (as in keel_store_recover),
 * in one transaction; *n_rescued (may be NULL) gets the count. -ESTALE
 * and nothing written when term no longer holds the lease.
 */
KEEL_API int keel_store_rescue(struct keel_store *st, int64_t term,
			       int64_t stale_ms,
			       int (*decide)(const struct keel_run *crashed,
					     struct keel_run *next, void *ud),
			       void *ud, size_t *n_rescued);

/* keel_store_recover for one node of a cluster, at its start: only the
 * running runs of node (run->node) become crashed; the other nodes' runs
 * are theirs, or the leader's to rescue. */
KEEL_API int keel_store_recover_node(struct keel_store *st, const char *node,
				     int64_t now_ms,
				     int (*decide)(const struct keel_run *crashed,
						   struct keel_run *next,
						   void *ud),
				     void *ud, size_t *n_crashed);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_STORE_H */
