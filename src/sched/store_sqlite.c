/*
 * src/sched/store_sqlite.c - keeld's embedded store on SQLite
 * (keel_store_sqlite_open in keel/store.h): everything SQLite-specific is
 * here, the rules all engines share are in store.c.
 *
 * Files: dir/keeld.lock, held with flock for as long as the store is open
 * (its text is the holder's pid, for the message a second keeld gets);
 * dir/keeld.db in WAL mode, so readers never wait for the writer.
 *
 * Two connections, each used under its own mutex (opened NOMUTEX: SQLite's
 * own locking would only repeat ours): the writer does every write, one
 * operation at a time, each operation one BEGIN IMMEDIATE ... COMMIT; the
 * reader does the reads that come from the API, which in WAL mode see the
 * last commit without waiting for a write in progress. A read that must be
 * consistent with a write (job_put's "unchanged?") is made on the writer,
 * inside the write's transaction.
 *
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT)
 * on first use and reset after each use, which also ends the reader's
 * snapshot, so no read holds back a checkpoint.
 *
 * Schema versions are PRAGMA user_version; steps[] holds the SQL that takes
 * a database from version i to i + 1, each applied in its own transaction
 * together with the version bump. Version 1 is the whole first schema; a
 * change is a new entry at the end, never an edit of an old one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include <keel/store.h>

#include "store_internal.h"

/* ------------------------------------------------------------------------
 * Schema
 * ------------------------------------------------------------------------ */

/*
 * runs.state and runs.trigger are the names of keel/run.h ("queued",
 * "schedule"): the file outlives the enums' numbering, and an operator
 * reading it with sqlite3 sees words. runs.origin is the trigger of the
 * run's first attempt ("schedule", "missed" or "manual"; a retry inherits
 * its predecessor's): it is what makes a tick's runs unique, retries
 * included, while manual runs, which may share a millisecond, are not.
 * ids are AUTOINCREMENT so that an id is never given twice, even after
 * the newest runs were pruned: the API's paging (before_id) relies on it.
 */
static const char schema_v1[] =
	"CREATE TABLE jobs("
	" name TEXT PRIMARY KEY NOT NULL,"
	" spec TEXT NOT NULL,"
	" paused INTEGER NOT NULL DEFAULT 0,"
	" last_tick INTEGER NOT NULL,"
	" created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL);"
	"CREATE TABLE runs("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,"
	" state TEXT NOT NULL,"
	" trigger TEXT NOT NULL,"
	" origin TEXT NOT NULL,"
	" attempt INTEGER NOT NULL,"
	" scheduled_at INTEGER NOT NULL,"
	" created_at INTEGER NOT NULL,"
	" not_before INTEGER NOT NULL DEFAULT 0,"
	" started_at INTEGER NOT NULL DEFAULT 0,"
	" finished_at INTEGER NOT NULL DEFAULT 0,"
	" exit_code INTEGER NOT NULL DEFAULT -1,"
	" signal INTEGER NOT NULL DEFAULT 0,"
	" http_status INTEGER NOT NULL DEFAULT 0,"
	" error TEXT,"
	" output TEXT,"
	" trace_id TEXT NOT NULL DEFAULT '',"
	" node TEXT);"
	"CREATE UNIQUE INDEX runs_tick ON runs(job, scheduled_at, attempt)"
	" WHERE origin IN ('schedule', 'missed');"
	/* A job's runs newest first, and the cascade of a job's delete. */
	"CREATE INDEX runs_job ON runs(job, id);"
	/* Active runs, counts, lists filtered by state. */
	"CREATE INDEX runs_state ON runs(state, id);"
	"CREATE TABLE events("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" at INTEGER NOT NULL,"
	" level TEXT NOT NULL,"
	" kind TEXT NOT NULL,"
	" job TEXT,"
	" run_id INTEGER NOT NULL DEFAULT 0,"
	" message TEXT NOT NULL);";

/*
 * Version 2, the cluster (keel/store.h's last section): the lease (one
 * row, id 1), the nodes, a run's claim token and heartbeat, and what the
 * claim needs of a job without reading its spec: its tags (a JSON array)
 * and concurrency, filled from the spec for the jobs there are (a corrupt
 * spec keeps the defaults: it is reported when read, and repaired by a
 * put, which sets them). Queued runs by due time for the claim, running
 * ones by job for "forbid".
 */
static const char schema_v2[] =
	"CREATE TABLE lease("
	" id INTEGER PRIMARY KEY CHECK (id = 1),"
	" holder TEXT NOT NULL,"
	" term INTEGER NOT NULL,"
	" expires_at INTEGER NOT NULL);"
	"CREATE TABLE nodes("
	" id TEXT PRIMARY KEY NOT NULL,"
	" last_heartbeat INTEGER NOT NULL,"
	" started_at INTEGER NOT NULL,"
	" running INTEGER NOT NULL DEFAULT 0,"
	" tags TEXT NOT NULL DEFAULT '[]');"
	"ALTER TABLE runs ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE runs ADD COLUMN heartbeat INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';"
	"ALTER TABLE jobs ADD COLUMN concurrency TEXT NOT NULL "
	" DEFAULT 'forbid';"
	"UPDATE jobs SET"
	" tags = CASE WHEN json_type(spec, '$.tags') = 'array'"
	"  THEN json_extract(spec, '$.tags') ELSE '[]' END,"
	" concurrency = CASE WHEN json_type(spec, '$.concurrency') = 'text'"
	"  THEN json_extract(spec, '$.concurrency') ELSE 'forbid' END"
	" WHERE json_valid(spec);"
	"CREATE INDEX runs_due ON runs(not_before, id) WHERE state = 'queued';"
	"CREATE INDEX runs_running ON runs(job) WHERE state = 'running';";

/* Version 3: a job's due queued runs in order (the claim looks them up
 * job by job). */
static const char schema_v3[] =
	"CREATE INDEX runs_queued ON runs(job, not_before, id)"
	" WHERE state = 'queued';";

static const char *const steps[] = {
	schema_v1,
	schema_v2,
	schema_v3,
};
#define N_STEPS (sizeof(steps) / sizeof(steps[0]))

int keel_store_schema_version(void)
{
	return (int)N_STEPS;
}

const char *const *keel__store_sqlite_steps(size_t *n)
{
	if (n != NULL)
		*n = N_STEPS;
	return steps;
}

/* ------------------------------------------------------------------------
 * Statements
 * ------------------------------------------------------------------------ */

#define RUN_COLS                                                              \
	"id, job, state, trigger, attempt, scheduled_at, created_at, "        \
	"not_before, started_at, finished_at, exit_code, signal, "            \
	"http_status, error, output, trace_id, node, claim"
/* The same, output only when :out is true (a list leaves it unread). */
#define RUN_COLS_LIST                                                         \
	"id, job, state, trigger, attempt, scheduled_at, created_at, "        \
	"not_before, started_at, finished_at, exit_code, signal, "            \
	"http_status, error, CASE WHEN :out THEN output END, trace_id, node, " \
	"claim"
/* RUN_COLS's count: a column after them (origin) is the next. */
#define N_RUN_COLS 18
#define FINAL_STATE "state NOT IN ('queued', 'running')"
#define JOB_TAGS "coalesce(json_extract(?2, '$.tags'), '[]')"
#define JOB_CONCURRENCY "coalesce(json_extract(?2, '$.concurrency'), 'forbid')"

enum sid {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_SAVEPOINT,
	S_RELEASE,
	S_ROLLBACK_TO,
	S_JOB_GET_W,
	S_JOB_INSERT,
	S_JOB_UPDATE,
	S_JOB_DELETE,
	S_JOB_PAUSE,
	S_JOB_RESUME,
	S_JOB_EXISTS,
	S_JOB_GET,
	S_JOB_LIST,
	S_TICK_JOB,
	S_RUN_INSERT,
	S_RUN_STATE_W,
	S_RUN_PREV_ORIGIN,
	S_RUN_START,
	S_RUN_FINISH,
	S_RUN_RUNNING_W,
	S_RUN_RUNNING_NODE_W,
	S_RUN_CRASH,
	S_RUN_GET,
	S_RUN_LIST,
	S_RUN_LIST_JOB,
	S_RUN_LIST_STATE,
	S_RUN_LIST_JOB_STATE,
	S_RUN_ACTIVE,
	S_PRUNE,
	S_COUNTS,
	S_COUNTS_JOB,
	S_EVENT_ADD,
	S_EVENT_TRIM,
	S_EVENT_LIST,
	S_LEASE_TAKE,
	S_LEASE_GET,
	S_LEASE_RELEASE,
	S_LEASE_CHECK,
	S_NODE_BEAT,
	S_NODE_FORGET,
	S_NODE_LIST,
	S_CLAIM,
	S_RUN_BEAT,
	S_RUN_STALE_W,
	S_RUN_RESCUE,
	N_SID
};

static const char *const sql[N_SID] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_SAVEPOINT] = "SAVEPOINT item",
	[S_RELEASE] = "RELEASE item",
	[S_ROLLBACK_TO] = "ROLLBACK TO item",
	[S_JOB_GET_W] = "SELECT spec, last_tick FROM jobs WHERE name = ?1",
	/* tags and concurrency, for the claim, from the spec (which store.c
	 * made: valid JSON with both). */
	[S_JOB_INSERT] = "INSERT INTO jobs(name, spec, paused, last_tick, "
			 "created_at, updated_at, tags, concurrency) "
			 "VALUES(?1, ?2, 0, ?3, ?4, ?4, " JOB_TAGS ", "
			 JOB_CONCURRENCY ")",
	[S_JOB_UPDATE] = "UPDATE jobs SET spec = ?2, last_tick = ?3, "
			 "updated_at = ?4, tags = " JOB_TAGS ", concurrency = "
			 JOB_CONCURRENCY " WHERE name = ?1",
	[S_JOB_DELETE] = "DELETE FROM jobs WHERE name = ?1",
	[S_JOB_PAUSE] = "UPDATE jobs SET paused = 1, updated_at = ?2 "
			"WHERE name = ?1 AND paused = 0",
	[S_JOB_RESUME] = "UPDATE jobs SET paused = 0, last_tick = ?3, "
			 "updated_at = ?2 WHERE name = ?1 AND paused <> 0",
	[S_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE name = ?1",
	[S_JOB_GET] = "SELECT name, spec, paused, last_tick, created_at, "
		      "updated_at FROM jobs WHERE name = ?1",
	[S_JOB_LIST] = "SELECT name, spec, paused, last_tick, created_at, "
		       "updated_at FROM jobs ORDER BY name",
	/* last_tick never moves back: a batch computed before a resume or a
	 * schedule change cannot undo it. */
	[S_TICK_JOB] = "UPDATE jobs SET last_tick = max(last_tick, ?2) "
		       "WHERE name = ?1",
	[S_RUN_INSERT] = "INSERT INTO runs(job, state, trigger, origin, attempt, "
			 "scheduled_at, created_at, not_before, started_at, "
			 "finished_at, exit_code, signal, http_status, error, "
			 "output, trace_id, node) VALUES(?1, ?2, ?3, ?4, ?5, "
			 "?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
			 "?17)",
	[S_RUN_STATE_W] = "SELECT state, origin, claim FROM runs WHERE id = ?1",
	[S_RUN_PREV_ORIGIN] = "SELECT origin FROM runs WHERE job = ?1 AND "
			      "scheduled_at = ?2 AND attempt = ?3 "
			      "ORDER BY id DESC LIMIT 1",
	[S_RUN_START] = "UPDATE runs SET state = 'running', started_at = ?2, "
			"node = ?3 WHERE id = ?1 AND state = 'queued'",
	/* ?9: the finisher's claim token, 0 = not checked. */
	[S_RUN_FINISH] = "UPDATE runs SET state = ?2, finished_at = ?3, "
			 "exit_code = ?4, signal = ?5, http_status = ?6, "
			 "error = ?7, output = ?8 WHERE id = ?1 AND "
			 "state IN ('queued', 'running') AND "
			 "(?9 = 0 OR claim = ?9)",
	[S_RUN_RUNNING_W] = "SELECT " RUN_COLS ", origin FROM runs "
			    "WHERE state = 'running' ORDER BY id",
	[S_RUN_RUNNING_NODE_W] = "SELECT " RUN_COLS ", origin FROM runs "
				 "WHERE state = 'running' AND node = ?1 "
				 "ORDER BY id",
	[S_RUN_CRASH] = "UPDATE runs SET state = 'crashed', finished_at = ?2, "
			"error = ?3 WHERE id = ?1 AND state = 'running'",
	[S_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
	[S_RUN_LIST] = "SELECT " RUN_COLS_LIST " FROM runs WHERE id < :before "
		       "ORDER BY id DESC LIMIT :limit",
	[S_RUN_LIST_JOB] = "SELECT " RUN_COLS_LIST " FROM runs WHERE "
			   "job = :job AND id < :before ORDER BY id DESC "
			   "LIMIT :limit",
	[S_RUN_LIST_STATE] = "SELECT " RUN_COLS_LIST " FROM runs WHERE "
			     "state = :state AND id < :before ORDER BY id DESC "
			     "LIMIT :limit",
	[S_RUN_LIST_JOB_STATE] = "SELECT " RUN_COLS_LIST " FROM runs WHERE "
				 "job = :job AND state = :state AND "
				 "id < :before ORDER BY id DESC LIMIT :limit",
	[S_RUN_ACTIVE] = "SELECT " RUN_COLS " FROM runs WHERE state IN "
			 "('queued', 'running') ORDER BY id",
	/* Finished runs beyond the newest ?2, or finished (skipped runs that
	 * never ran: created) before ?3 when ?3 > 0. */
	[S_PRUNE] = "DELETE FROM runs WHERE job = ?1 AND " FINAL_STATE " AND ("
		    "id IN (SELECT id FROM runs WHERE job = ?1 AND " FINAL_STATE
		    " ORDER BY id DESC LIMIT -1 OFFSET ?2) OR (?3 > 0 AND "
		    "CASE WHEN finished_at > 0 THEN finished_at "
		    "ELSE created_at END < ?3))",
	[S_COUNTS] = "SELECT state, count(*) FROM runs GROUP BY state",
	[S_COUNTS_JOB] = "SELECT state, count(*) FROM runs WHERE job = ?1 "
			 "GROUP BY state",
	[S_EVENT_ADD] = "INSERT INTO events(at, level, kind, job, run_id, "
			"message) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
	[S_EVENT_TRIM] = "DELETE FROM events WHERE id <= ?1",
	[S_EVENT_LIST] = "SELECT id, at, level, kind, job, run_id, message "
			 "FROM events WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
	/* The cluster. The store's clock (this process's wall clock) is a
	 * parameter, read once per transaction (?2 here). The lease is
	 * taken when there is no row, or it is free (holder ''), expired,
	 * or ?1's; the term moves on when the holder changes. The answer is
	 * read after it, in the same transaction. */
	[S_LEASE_TAKE] = "INSERT INTO lease(id, holder, term, expires_at) "
			 "VALUES(1, ?1, 1, ?2 + ?3) ON CONFLICT(id) DO UPDATE "
			 "SET term = CASE WHEN holder = excluded.holder THEN "
			 "term ELSE term + 1 END, holder = excluded.holder, "
			 "expires_at = excluded.expires_at WHERE holder = "
			 "excluded.holder OR holder = '' OR expires_at <= ?2",
	[S_LEASE_GET] = "SELECT holder, term, expires_at FROM lease "
			"WHERE id = 1",
	[S_LEASE_RELEASE] = "UPDATE lease SET holder = '', expires_at = ?3 "
			    "WHERE id = 1 AND holder = ?1 AND term = ?2",
	[S_LEASE_CHECK] = "SELECT 1 FROM lease WHERE id = 1 AND term = ?1 AND "
			  "holder <> '' AND expires_at > ?2",
	[S_NODE_BEAT] = "INSERT INTO nodes(id, last_heartbeat, started_at, "
			"running, tags) VALUES(?1, ?2, ?2, ?3, ?4) "
			"ON CONFLICT(id) DO UPDATE SET last_heartbeat = "
			"excluded.last_heartbeat, running = excluded.running, "
			"tags = excluded.tags",
	[S_NODE_FORGET] = "DELETE FROM nodes WHERE last_heartbeat < ?1",
	[S_NODE_LIST] = "SELECT id, last_heartbeat, started_at, running, tags "
			"FROM nodes ORDER BY id",
	/*
	 * Due queued runs whose job's tags (?3, JSON) are all the node's,
	 * oldest due first; of a forbid or replace job only its first, and
	 * none while one runs. One statement in the writer's transaction:
	 * SQLite has one writer, nobody claims beside it.
	 */
	[S_CLAIM] = "UPDATE runs SET state = 'running', node = ?1, "
		    "started_at = ?2, heartbeat = ?2, "
		    "claim = max(random() & 9223372036854775807, 1) "
		    "WHERE id IN (SELECT id FROM (SELECT r.id, r.not_before, "
		    "j.concurrency AS conc, row_number() OVER (PARTITION BY "
		    "r.job ORDER BY r.not_before, r.id) AS k FROM runs r "
		    "JOIN jobs j ON j.name = r.job WHERE r.state = 'queued' "
		    "AND r.not_before <= ?2 AND NOT EXISTS (SELECT 1 FROM "
		    "json_each(j.tags) t WHERE t.value NOT IN (SELECT value "
		    "FROM json_each(?3))) AND (j.concurrency = 'allow' OR "
		    "NOT EXISTS (SELECT 1 FROM runs x WHERE x.job = r.job AND "
		    "x.state = 'running'))) WHERE conc = 'allow' OR k = 1 "
		    "ORDER BY not_before, id LIMIT ?4) RETURNING " RUN_COLS,
	[S_RUN_BEAT] = "UPDATE runs SET heartbeat = ?3 WHERE id = ?1 AND "
		       "claim = ?2 AND state = 'running'",
	/* Not beaten since ?1 (never beaten: started before ?1). */
	[S_RUN_STALE_W] = "SELECT " RUN_COLS ", origin FROM runs WHERE "
			  "state = 'running' AND CASE WHEN heartbeat > 0 THEN "
			  "heartbeat ELSE started_at END < ?1 ORDER BY id",
	[S_RUN_RESCUE] = "UPDATE runs SET state = 'crashed', finished_at = ?2, "
			 "error = ?3, claim = 0 WHERE id = ?1 AND "
			 "state = 'running'",
};

/* ------------------------------------------------------------------------
 * The store
 * ------------------------------------------------------------------------ */

struct conn {
	sqlite3 *db;
	pthread_mutex_t mu;
	int mu_ok;
	sqlite3_stmt *stmt[N_SID];
};

struct sq {
	struct keel_store base; /* first: a struct keel_store * is a sq */
	struct conn w;		/* the writer */
	struct conn r;		/* the reader */
	int lock_fd;
};

static struct sq *SQ(struct keel_store *st)
{
	return (struct sq *)st;
}

/* SQLite's result code as an errno, with the text kept for
 * keel_store_errmsg. Call before the statement is reset (its message is
 * the connection's last). */
static int fail(struct sq *s, sqlite3 *db, int rc, const char *what)
{
	const char *msg = sqlite3_errmsg(db);

	if ((rc & ~0xff) == 0)
		rc = sqlite3_extended_errcode(db);

	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		keel__store_errf(&s->base, "sqlite: %s: database is busy (%s)",
				 what, msg);
		return -EBUSY;
	case SQLITE_NOMEM:
		keel__store_errf(&s->base, "sqlite: %s: out of memory", what);
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		keel__store_errf(&s->base, "sqlite: %s: %s", what, msg);
		if (rc == SQLITE_CONSTRAINT_UNIQUE ||
		    rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return -EEXIST;
		if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
			return -ENOENT;
		return -EIO;
	default:
		keel__store_errf(&s->base, "sqlite: %s: %s (%s)", what, msg,
				 sqlite3_errstr(rc));
		return -EIO;
	}
}

static sqlite3_stmt *prep(struct sq *s, struct conn *c, enum sid id, int *err)
{
	int rc;

	if (c->stmt[id] != NULL)
		return c->stmt[id];
	rc = sqlite3_prepare_v3(c->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT,
				&c->stmt[id], NULL);
	if (rc != SQLITE_OK) {
		*err = fail(s, c->db, rc, "prepare");
		c->stmt[id] = NULL;
		return NULL;
	}
	return c->stmt[id];
}

/* Back to ready: ends the statement's (and a reader's) snapshot, drops
 * the bindings, which may point at the caller's strings. */
static void done(sqlite3_stmt *q)
{
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
}

static int bind_text(sqlite3_stmt *q, int i, const char *s)
{
	if (s == NULL)
		return sqlite3_bind_null(q, i);
	return sqlite3_bind_text(q, i, s, -1, SQLITE_STATIC);
}

static int bind_named_text(sqlite3_stmt *q, const char *name, const char *s)
{
	int i = sqlite3_bind_parameter_index(q, name);

	return i > 0 ? bind_text(q, i, s) : SQLITE_OK;
}

static int bind_named_int(sqlite3_stmt *q, const char *name, int64_t v)
{
	int i = sqlite3_bind_parameter_index(q, name);

	return i > 0 ? sqlite3_bind_int64(q, i, v) : SQLITE_OK;
}

/* Runs a statement without results (or whose rows are not wanted). */
static int exec_stmt(struct sq *s, struct conn *c, sqlite3_stmt *q,
		     const char *what)
{
	int rc = sqlite3_step(q);
	int out = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		out = fail(s, c->db, rc, what);
	done(q);
	return out;
}

static int exec_id(struct sq *s, struct conn *c, enum sid id)
{
	int err = 0;
	sqlite3_stmt *q = prep(s, c, id, &err);

	if (q == NULL)
		return err;
	return exec_stmt(s, c, q, sql[id]);
}

static int tx_begin(struct sq *s)
{
	return exec_id(s, &s->w, S_BEGIN);
}

/* Commits when rc is 0, else (or when the commit fails) rolls back;
 * returns rc or the commit's error. Nothing is ever half-written. */
static int tx_end(struct sq *s, int rc)
{
	if (rc == 0) {
		rc = exec_id(s, &s->w, S_COMMIT);
		if (rc == 0)
			return 0;
	}
	/* After some errors (I/O, full disk) SQLite has rolled back itself. */
	if (!sqlite3_get_autocommit(s->w.db)) {
		char keep[1024];

		/* The rollback must not hide the reason of the failure. */
		snprintf(keep, sizeof(keep), "%s", keel__store_errmsg(&s->base));
		(void)exec_id(s, &s->w, S_ROLLBACK);
		keel__store_errf(&s->base, "%s", keep);
	}
	return rc;
}

/* A copy of a text column; NULL for SQL NULL (or no memory: *oom). */
static char *col_str(sqlite3_stmt *q, int i, int *oom)
{
	const unsigned char *t;

	if (sqlite3_column_type(q, i) == SQLITE_NULL)
		return NULL;
	t = sqlite3_column_text(q, i);
	if (t == NULL) {
		*oom = 1;
		return NULL;
	}
	return keel__store_strndup((const char *)t,
				   (size_t)sqlite3_column_bytes(q, i), oom);
}

/* A row of RUN_COLS (or RUN_COLS_LIST) into *r. */
static int read_run(struct sq *s, sqlite3_stmt *q, struct keel_run *r)
{
	const char *state = (const char *)sqlite3_column_text(q, 2);
	const char *trig = (const char *)sqlite3_column_text(q, 3);
	const char *trace;
	int oom = 0;

	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(q, 0);
	if (state == NULL || keel_run_state_parse(state, &r->state) != 0 ||
	    trig == NULL || keel_run_trigger_parse(trig, &r->trigger) != 0) {
		keel__store_errf(&s->base,
				 "run %lld: unknown state '%s' or trigger '%s'",
				 (long long)r->id, state ? state : "",
				 trig ? trig : "");
		return -EIO;
	}
	r->job = col_str(q, 1, &oom);
	r->attempt = sqlite3_column_int(q, 4);
	r->scheduled_at = sqlite3_column_int64(q, 5);
	r->created_at = sqlite3_column_int64(q, 6);
	r->not_before = sqlite3_column_int64(q, 7);
	r->started_at = sqlite3_column_int64(q, 8);
	r->finished_at = sqlite3_column_int64(q, 9);
	r->exit_code = sqlite3_column_int(q, 10);
	r->signal = sqlite3_column_int(q, 11);
	r->http_status = sqlite3_column_int(q, 12);
	r->error = col_str(q, 13, &oom);
	r->output = col_str(q, 14, &oom);
	trace = (const char *)sqlite3_column_text(q, 15);
	if (trace != NULL)
		snprintf(r->trace_id, sizeof(r->trace_id), "%s", trace);
	r->node = col_str(q, 16, &oom);
	r->claim = (uint64_t)sqlite3_column_int64(q, 17);
	if (oom || r->job == NULL) {
		keel_run_clear(r);
		keel__store_errf(&s->base, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Steps q to the end, appending each row (read_run) to *out. */
static int read_runs(struct sq *s, struct conn *c, sqlite3_stmt *q,
		     struct keel_run **out, size_t *n)
{
	struct keel_run *v = NULL;
	size_t len = 0, cap = 0;
	int rc, err = 0;

	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct keel_run *nv = realloc(v, ncap * sizeof(*v));

			if (nv == NULL) {
				keel__store_errf(&s->base, "out of memory");
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		err = read_run(s, q, &v[len]);
		if (err != 0)
			break;
		len++;
	}
	if (err == 0 && rc != SQLITE_DONE)
		err = fail(s, c->db, rc, "read runs");
	done(q);
	if (err != 0) {
		keel_store_runs_free(v, len);
		return err;
	}
	*out = v;
	*n = len;
	return 0;
}

/* ------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------ */

static int streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* In the writer's transaction: the stored job (NULL when there is none or
 * its text is corrupt: *corrupt), and its last_tick. */
static int job_get_w(struct sq *s, const char *name, int *exists,
		     struct keel_job **old, int64_t *last_tick)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_JOB_GET_W, &err);

	*exists = 0;
	*old = NULL;
	if (q == NULL)
		return err;
	bind_text(q, 1, name);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		*exists = 1;
		*last_tick = sqlite3_column_int64(q, 1);
		err = keel__store_job_decode(
			&s->base, name, (const char *)sqlite3_column_text(q, 0),
			old);
		/* A corrupt definition is replaced by the new one: putting
		 * the job again is how an operator repairs it. */
		if (err == -EIO)
			err = 0;
	} else if (rc != SQLITE_DONE) {
		err = fail(s, s->w.db, rc, "read job");
	}
	done(q);
	return err;
}

static int job_write(struct sq *s, enum sid id, const char *name,
		     const char *spec, int64_t last_tick, int64_t now_ms)
{
	int err = 0;
	sqlite3_stmt *q = prep(s, &s->w, id, &err);

	if (q == NULL)
		return err;
	bind_text(q, 1, name);
	bind_text(q, 2, spec);
	sqlite3_bind_int64(q, 3, last_tick);
	sqlite3_bind_int64(q, 4, now_ms);
	return exec_stmt(s, &s->w, q, "write job");
}

static int sq_job_put(struct keel_store *st, const struct keel_job *j,
		      int64_t now_s, enum keel_store_put *result)
{
	struct sq *s = SQ(st);
	struct keel_job *old = NULL;
	int64_t last_tick = 0;
	char *spec = NULL;
	int rc, exists = 0;

	rc = keel__store_job_encode(st, j, &spec);
	if (rc != 0)
		return rc;
	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc != 0)
		goto out;
	rc = job_get_w(s, j->name, &exists, &old, &last_tick);
	if (rc == 0 && !exists) {
		rc = job_write(s, S_JOB_INSERT, j->name, spec, now_s,
			       now_s * 1000);
		*result = KEEL_STORE_CREATED;
	} else if (rc == 0 && old != NULL && keel_job_equal(old, j)) {
		*result = KEEL_STORE_UNCHANGED;
		rc = tx_end(s, -ECANCELED); /* nothing to write */
		goto out;
	} else if (rc == 0) {
		/* The ticks of the old schedule are not owed by the new one. */
		if (old == NULL || !streq(old->schedule, j->schedule) ||
		    !streq(old->timezone, j->timezone))
			last_tick = now_s;
		rc = job_write(s, S_JOB_UPDATE, j->name, spec, last_tick,
			       now_s * 1000);
		*result = KEEL_STORE_REPLACED;
	}
	rc = tx_end(s, rc);
out:
	pthread_mutex_unlock(&s->w.mu);
	if (rc == -ECANCELED)
		rc = 0;
	keel_job_free(old);
	free(spec);
	return rc;
}

static int job_exists_w(struct sq *s, const char *name)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_JOB_EXISTS, &err);

	if (q == NULL)
		return err;
	bind_text(q, 1, name);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		err = 1;
	else if (rc != SQLITE_DONE)
		err = fail(s, s->w.db, rc, "read job");
	done(q);
	return err;
}

static int no_job(struct sq *s, const char *name)
{
	keel__store_errf(&s->base, "no job '%s'", name);
	return -ENOENT;
}

static int sq_job_delete(struct keel_store *st, const char *name)
{
	struct sq *s = SQ(st);
	int rc, err = 0;
	sqlite3_stmt *q;

	pthread_mutex_lock(&s->w.mu);
	q = prep(s, &s->w, S_JOB_DELETE, &err);
	if (q == NULL) {
		rc = err;
	} else {
		bind_text(q, 1, name);
		/* One statement: the job and (cascade) its runs go together. */
		rc = exec_stmt(s, &s->w, q, "delete job");
		if (rc == 0 && sqlite3_changes(s->w.db) == 0)
			rc = no_job(s, name);
	}
	pthread_mutex_unlock(&s->w.mu);
	return rc;
}

static int sq_job_pause(struct keel_store *st, const char *name, int paused,
			int64_t now_s)
{
	struct sq *s = SQ(st);
	int rc, err = 0;
	sqlite3_stmt *q;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc != 0)
		goto out;
	q = prep(s, &s->w, paused ? S_JOB_PAUSE : S_JOB_RESUME, &err);
	if (q == NULL) {
		rc = err;
	} else {
		bind_text(q, 1, name);
		sqlite3_bind_int64(q, 2, now_s * 1000);
		if (!paused)
			sqlite3_bind_int64(q, 3, now_s);
		rc = exec_stmt(s, &s->w, q, paused ? "pause job" : "resume job");
	}
	/* Nothing changed: no such job, or already in that state (which
	 * changes nothing, last_tick included). */
	if (rc == 0 && sqlite3_changes(s->w.db) == 0) {
		rc = job_exists_w(s, name);
		rc = rc == 1 ? 0 : rc == 0 ? no_job(s, name) : rc;
	}
	rc = tx_end(s, rc);
out:
	pthread_mutex_unlock(&s->w.mu);
	return rc;
}

/* A row of S_JOB_GET / S_JOB_LIST into *out. */
static int read_job(struct sq *s, sqlite3_stmt *q, struct keel_store_job *out)
{
	const char *name = (const char *)sqlite3_column_text(q, 0);
	int rc;

	memset(out, 0, sizeof(*out));
	rc = keel__store_job_decode(&s->base, name ? name : "",
				    (const char *)sqlite3_column_text(q, 1),
				    &out->job);
	if (rc != 0)
		return rc;
	out->paused = sqlite3_column_int(q, 2) != 0;
	out->last_tick = sqlite3_column_int64(q, 3);
	out->created_at = sqlite3_column_int64(q, 4);
	out->updated_at = sqlite3_column_int64(q, 5);
	return 0;
}

static int sq_job_get(struct keel_store *st, const char *name,
		      struct keel_store_job *out)
{
	struct sq *s = SQ(st);
	int rc, err = 0;
	sqlite3_stmt *q;

	pthread_mutex_lock(&s->r.mu);
	q = prep(s, &s->r, S_JOB_GET, &err);
	if (q == NULL) {
		rc = err;
	} else {
		bind_text(q, 1, name);
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW)
			rc = read_job(s, q, out);
		else if (rc == SQLITE_DONE)
			rc = no_job(s, name);
		else
			rc = fail(s, s->r.db, rc, "read job");
		done(q);
	}
	pthread_mutex_unlock(&s->r.mu);
	return rc;
}

static int sq_job_list(struct keel_store *st, struct keel_store_job **out,
		       size_t *n)
{
	struct sq *s = SQ(st);
	struct keel_store_job *v = NULL;
	size_t len = 0, cap = 0;
	int rc, err = 0;
	sqlite3_stmt *q;

	pthread_mutex_lock(&s->r.mu);
	q = prep(s, &s->r, S_JOB_LIST, &err);
	if (q == NULL) {
		pthread_mutex_unlock(&s->r.mu);
		return err;
	}
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct keel_store_job *nv = realloc(v, ncap * sizeof(*v));

			if (nv == NULL) {
				keel__store_errf(st, "out of memory");
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		/* One corrupt row fails the list (-EIO naming the job):
		 * keeld must not run with a job silently missing. */
		err = read_job(s, q, &v[len]);
		if (err != 0)
			break;
		len++;
	}
	if (err == 0 && rc != SQLITE_DONE)
		err = fail(s, s->r.db, rc, "list jobs");
	done(q);
	pthread_mutex_unlock(&s->r.mu);
	if (err != 0) {
		keel_store_jobs_free(v, len);
		return err;
	}
	*out = v;
	*n = len;
	return 0;
}

/* ------------------------------------------------------------------------
 * Runs: writes
 * ------------------------------------------------------------------------ */

/* In the writer's transaction: the state, origin and claim token of run
 * id; -ENOENT. */
static int run_state_w(struct sq *s, int64_t id, enum keel_run_state *state,
		       char *origin, size_t origin_len, uint64_t *claim)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_RUN_STATE_W, &err);

	if (q == NULL)
		return err;
	sqlite3_bind_int64(q, 1, id);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(q, 0);
		const char *o = (const char *)sqlite3_column_text(q, 1);

		if (t == NULL || keel_run_state_parse(t, state) != 0) {
			keel__store_errf(&s->base, "run %lld: unknown state '%s'",
					 (long long)id, t ? t : "");
			err = -EIO;
		}
		snprintf(origin, origin_len, "%s", o ? o : "manual");
		*claim = (uint64_t)sqlite3_column_int64(q, 2);
	} else if (rc == SQLITE_DONE) {
		keel__store_errf(&s->base, "no run %lld", (long long)id);
		err = -ENOENT;
	} else {
		err = fail(s, s->w.db, rc, "read run");
	}
	done(q);
	return err;
}

/* -ENOENT or -ESTALE for a run that an UPDATE ... WHERE state ... (and
 * claim, when claim is not 0) missed. */
static int run_not_in(struct sq *s, int64_t id, const char *want,
		      uint64_t claim)
{
	enum keel_run_state state;
	char origin[16];
	uint64_t now_claim = 0;
	int rc = run_state_w(s, id, &state, origin, sizeof(origin), &now_claim);

	if (rc != 0)
		return rc;
	if (claim != 0 && now_claim != claim &&
	    (state == KEEL_RUN_QUEUED || state == KEEL_RUN_RUNNING))
		keel__store_errf(&s->base,
				 "run %lld: claim %llu is stale (the run's "
				 "claim is %llu)",
				 (long long)id, (unsigned long long)claim,
				 (unsigned long long)now_claim);
	else
		keel__store_errf(&s->base, "run %lld is %s, not %s",
				 (long long)id, keel_run_state_name(state),
				 want);
	return -ESTALE;
}

/* The origin of a retry of job (NULL: r's) inserted without the run it
 * follows at hand: its predecessor's (same job, tick, attempt - 1);
 * "manual" when there is none. */
static int prev_origin_w(struct sq *s, const struct keel_run *r,
			 const char *job, char *origin, size_t len)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_RUN_PREV_ORIGIN, &err);

	snprintf(origin, len, "manual");
	if (q == NULL)
		return err;
	bind_text(q, 1, job != NULL ? job : r->job);
	sqlite3_bind_int64(q, 2, r->scheduled_at);
	sqlite3_bind_int(q, 3, r->attempt - 1);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *o = (const char *)sqlite3_column_text(q, 0);

		if (o != NULL)
			snprintf(origin, len, "%s", o);
	} else if (rc != SQLITE_DONE) {
		err = fail(s, s->w.db, rc, "read run");
	}
	done(q);
	return err;
}

/*
 * Inserts r (of job, which overrides r->job when not NULL) with origin
 * (NULL: the run's own trigger) and writes its id. Texts that are not
 * valid UTF-8 are stored cleaned (U+FFFD), so whatever reads them back as
 * JSON can.
 */
static int insert_run(struct sq *s, struct keel_run *r, const char *job,
		      const char *origin)
{
	const char *error, *output, *node, *trace;
	char *t_error = NULL, *t_output = NULL, *t_node = NULL, *t_trace = NULL;
	int rc, err = 0;
	sqlite3_stmt *q;

	if (job == NULL)
		job = r->job;
	if (origin == NULL)
		origin = keel_run_trigger_name(r->trigger);
	if (keel__store_utf8(r->error, &error, &t_error) != 0 ||
	    keel__store_utf8(r->output, &output, &t_output) != 0 ||
	    keel__store_utf8(r->node, &node, &t_node) != 0 ||
	    keel__store_utf8(r->trace_id, &trace, &t_trace) != 0) {
		keel__store_errf(&s->base, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	q = prep(s, &s->w, S_RUN_INSERT, &err);
	if (q == NULL) {
		rc = err;
		goto out;
	}
	bind_text(q, 1, job);
	bind_text(q, 2, keel_run_state_name(r->state));
	bind_text(q, 3, keel_run_trigger_name(r->trigger));
	bind_text(q, 4, origin);
	sqlite3_bind_int(q, 5, r->attempt);
	sqlite3_bind_int64(q, 6, r->scheduled_at);
	sqlite3_bind_int64(q, 7, r->created_at);
	sqlite3_bind_int64(q, 8, r->not_before);
	sqlite3_bind_int64(q, 9, r->started_at);
	sqlite3_bind_int64(q, 10, r->finished_at);
	sqlite3_bind_int(q, 11, r->exit_code);
	sqlite3_bind_int(q, 12, r->signal);
	sqlite3_bind_int(q, 13, r->http_status);
	bind_text(q, 14, error);
	bind_text(q, 15, output);
	bind_text(q, 16, trace);
	bind_text(q, 17, node);
	rc = exec_stmt(s, &s->w, q, "insert run");
	if (rc == -EEXIST)
		keel__store_errf(&s->base,
				 "job '%s': the run of the tick at %lld ms, "
				 "attempt %d, already exists",
				 job, (long long)r->scheduled_at, r->attempt);
	else if (rc == -ENOENT)
		rc = no_job(s, job);
	else if (rc == 0)
		r->id = sqlite3_last_insert_rowid(s->w.db);
out:
	free(t_error);
	free(t_output);
	free(t_node);
	free(t_trace);
	return rc;
}

static int tick_job(struct sq *s, const struct keel_store_tick *t)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_TICK_JOB, &err);

	if (q == NULL)
		return err;
	bind_text(q, 1, t->job);
	sqlite3_bind_int64(q, 2, t->last_tick);
	rc = exec_stmt(s, &s->w, q, "move last_tick");
	if (rc == 0 && sqlite3_changes(s->w.db) == 0)
		rc = no_job(s, t->job);
	return rc;
}

/* One run of a tick: a retry takes its predecessor's origin (an earlier
 * run of the batch, or one stored before), as a retry inserted on its own
 * does, so the retries of a tick are unique with it. */
static int tick_run(struct sq *s, struct keel_run *r, const char *job)
{
	char origin[16];
	int rc;

	if (r->trigger != KEEL_RUN_RETRY)
		return insert_run(s, r, job, NULL);
	rc = prev_origin_w(s, r, job, origin, sizeof(origin));
	return rc != 0 ? rc : insert_run(s, r, job, origin);
}

/* The ticks, in the writer's transaction. */
static int ticks_w(struct sq *s, struct keel_store_tick *ticks, size_t n)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = tick_job(s, &ticks[i]);
		for (size_t k = 0; rc == 0 && k < ticks[i].n_runs; k++)
			rc = tick_run(s, &ticks[i].runs[k], ticks[i].job);
	}
	return rc;
}

/* A failed batch: no id written is real. */
static void ticks_undo_ids(struct keel_store_tick *ticks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < ticks[i].n_runs; k++)
			ticks[i].runs[k].id = 0;
}

static int sq_ticks(struct keel_store *st, struct keel_store_tick *ticks,
		    size_t n)
{
	struct sq *s = SQ(st);
	int rc;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc == 0)
		rc = ticks_w(s, ticks, n);
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0) /* rolled back */
		ticks_undo_ids(ticks, n);
	return rc;
}

static int sq_run_insert(struct keel_store *st, struct keel_run *r)
{
	struct sq *s = SQ(st);
	char origin[16];
	int rc;

	pthread_mutex_lock(&s->w.mu);
	if (r->trigger != KEEL_RUN_RETRY) {
		rc = insert_run(s, r, NULL, NULL);
	} else {
		rc = tx_begin(s);
		if (rc == 0)
			rc = prev_origin_w(s, r, NULL, origin, sizeof(origin));
		if (rc == 0)
			rc = insert_run(s, r, NULL, origin);
		rc = tx_end(s, rc);
		if (rc != 0)
			r->id = 0;
	}
	pthread_mutex_unlock(&s->w.mu);
	return rc;
}

static int sq_run_start(struct keel_store *st, int64_t id, int64_t started_at,
			const char *node)
{
	struct sq *s = SQ(st);
	const char *clean;
	char *tmp = NULL;
	int rc, err = 0;
	sqlite3_stmt *q;

	if (keel__store_utf8(node, &clean, &tmp) != 0) {
		keel__store_errf(st, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&s->w.mu);
	q = prep(s, &s->w, S_RUN_START, &err);
	if (q == NULL) {
		rc = err;
	} else {
		sqlite3_bind_int64(q, 1, id);
		sqlite3_bind_int64(q, 2, started_at);
		bind_text(q, 3, clean);
		rc = exec_stmt(s, &s->w, q, "start run");
		/* Under the writer's mutex nothing changes the run between the
		 * update and this look at why it did not apply. */
		if (rc == 0 && sqlite3_changes(s->w.db) == 0)
			rc = run_not_in(s, id, "queued", 0);
	}
	pthread_mutex_unlock(&s->w.mu);
	free(tmp);
	return rc;
}

static int finish_run(struct sq *s, const struct keel_run *r)
{
	const char *error, *output;
	char *t_error = NULL, *t_output = NULL;
	int rc, err = 0;
	sqlite3_stmt *q;

	if (keel__store_utf8(r->error, &error, &t_error) != 0 ||
	    keel__store_utf8(r->output, &output, &t_output) != 0) {
		keel__store_errf(&s->base, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	q = prep(s, &s->w, S_RUN_FINISH, &err);
	if (q == NULL) {
		rc = err;
		goto out;
	}
	sqlite3_bind_int64(q, 1, r->id);
	bind_text(q, 2, keel_run_state_name(r->state));
	sqlite3_bind_int64(q, 3, r->finished_at);
	sqlite3_bind_int(q, 4, r->exit_code);
	sqlite3_bind_int(q, 5, r->signal);
	sqlite3_bind_int(q, 6, r->http_status);
	bind_text(q, 7, error);
	bind_text(q, 8, output);
	sqlite3_bind_int64(q, 9, (int64_t)r->claim);
	rc = exec_stmt(s, &s->w, q, "finish run");
	if (rc == 0 && sqlite3_changes(s->w.db) == 0)
		rc = run_not_in(s, r->id, "queued or running", r->claim);
out:
	free(t_error);
	free(t_output);
	return rc;
}

/* One finish and its follow-up inside a transaction. */
static int finish_one(struct sq *s, const struct keel_run *r,
		      struct keel_run *next)
{
	enum keel_run_state state;
	char origin[16];
	uint64_t claim;
	int rc = finish_run(s, r);

	if (rc == 0 && next != NULL) {
		/* A retry belongs to the same tick as the run it follows. */
		if (next->trigger == KEEL_RUN_RETRY)
			rc = run_state_w(s, r->id, &state, origin,
					 sizeof(origin), &claim);
		if (rc == 0)
			rc = insert_run(s, next, NULL,
					next->trigger == KEEL_RUN_RETRY ? origin
									: NULL);
	}
	return rc;
}

static int sq_run_finish(struct keel_store *st, const struct keel_run *r,
			 struct keel_run *next)
{
	struct sq *s = SQ(st);
	int rc;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc == 0)
		rc = finish_one(s, r, next);
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0 && next != NULL)
		next->id = 0;
	return rc;
}

/* One start inside a transaction: 0, -ESTALE, -ENOENT or the error. */
static int start_one(struct sq *s, int64_t id, int64_t started_at,
		     const char *node)
{
	int rc, err = 0;
	sqlite3_stmt *q = prep(s, &s->w, S_RUN_START, &err);

	if (q == NULL)
		return err;
	sqlite3_bind_int64(q, 1, id);
	sqlite3_bind_int64(q, 2, started_at);
	bind_text(q, 3, node);
	rc = exec_stmt(s, &s->w, q, "start run");
	if (rc == 0 && sqlite3_changes(s->w.db) == 0)
		rc = run_not_in(s, id, "queued", 0);
	return rc;
}

/* An item's own refusal, as opposed to a failure of the transaction. */
static int item_refusal(int rc)
{
	return rc == -ESTALE || rc == -ENOENT || rc == -EEXIST;
}

static int sq_runs_start(struct keel_store *st, const int64_t *ids, size_t n,
			 int64_t started_at, const char *node, int *rcs)
{
	struct sq *s = SQ(st);
	const char *clean;
	char *tmp = NULL;
	int rc;

	if (keel__store_utf8(node, &clean, &tmp) != 0) {
		keel__store_errf(st, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	/* An update that changes nothing changes nothing: no savepoint. */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		rcs[i] = start_one(s, ids[i], started_at, clean);
		if (!item_refusal(rcs[i]))
			rc = rcs[i];
	}
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	free(tmp);
	if (rc != 0)
		for (size_t i = 0; i < n; i++)
			rcs[i] = rc;
	return rc;
}

static int sq_runs_finish(struct keel_store *st,
			  struct keel_store_finish *items, size_t n, int *rcs)
{
	struct sq *s = SQ(st);
	int rc;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		/* A savepoint per item: a refused follow-up takes its
		 * finish back with it, and only that. */
		rc = exec_id(s, &s->w, S_SAVEPOINT);
		if (rc != 0)
			break;
		rcs[i] = finish_one(s, items[i].run, items[i].next);
		if (rcs[i] == 0) {
			rc = exec_id(s, &s->w, S_RELEASE);
		} else if (item_refusal(rcs[i])) {
			rc = exec_id(s, &s->w, S_ROLLBACK_TO);
			if (rc == 0)
				rc = exec_id(s, &s->w, S_RELEASE);
			if (items[i].next != NULL)
				items[i].next->id = 0;
		} else {
			rc = rcs[i];
		}
	}
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0) {
		for (size_t i = 0; i < n; i++) {
			rcs[i] = rc;
			if (items[i].next != NULL)
				items[i].next->id = 0;
		}
	}
	return rc;
}

/* A running run as recover and rescue read it, with its origin. */
struct crashed {
	struct keel_run run;
	char origin[16];
};

/* The rows of q (RUN_COLS, origin; bound by the caller) into a new array. */
static int read_crashed_w(struct sq *s, sqlite3_stmt *q, struct crashed **out,
			  size_t *n)
{
	struct crashed *v = NULL;
	size_t len = 0, cap = 0;
	int rc, err = 0;

	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		const char *o;

		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct crashed *nv = realloc(v, ncap * sizeof(*v));

			if (nv == NULL) {
				keel__store_errf(&s->base, "out of memory");
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		err = read_run(s, q, &v[len].run);
		if (err != 0)
			break;
		o = (const char *)sqlite3_column_text(q, N_RUN_COLS);
		snprintf(v[len].origin, sizeof(v[len].origin), "%s",
			 o ? o : "manual");
		len++;
	}
	if (err == 0 && rc != SQLITE_DONE)
		err = fail(s, s->w.db, rc, "read running runs");
	done(q);
	*out = v;
	*n = len;
	return err;
}

/* Running runs (of node, when not NULL), for recover. */
static int read_running_w(struct sq *s, const char *node, struct crashed **out,
			  size_t *n)
{
	int err = 0;
	sqlite3_stmt *q = prep(s, &s->w,
			       node ? S_RUN_RUNNING_NODE_W : S_RUN_RUNNING_W,
			       &err);

	*out = NULL;
	*n = 0;
	if (q == NULL)
		return err;
	if (node != NULL)
		bind_text(q, 1, node);
	return read_crashed_w(s, q, out, n);
}

/* Makes r crashed with error (what the row gets, claim 0 included, and r
 * as it now is, for decide). */
static int crash_run(struct sq *s, enum sid id, struct keel_run *r,
		     int64_t now_ms, const char *error)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, id, &err);
	char *msg;

	if (q == NULL)
		return err;
	sqlite3_bind_int64(q, 1, r->id);
	sqlite3_bind_int64(q, 2, now_ms);
	bind_text(q, 3, error);
	rc = exec_stmt(s, &s->w, q, "crash run");
	if (rc != 0)
		return rc;
	msg = strdup(error);
	if (msg == NULL) {
		keel__store_errf(&s->base, "out of memory");
		return -ENOMEM;
	}
	free(r->error);
	r->error = msg;
	r->state = KEEL_RUN_CRASHED;
	r->finished_at = now_ms;
	if (id == S_RUN_RESCUE)
		r->claim = 0;
	return 0;
}

/* decide's answer for c, inserted when it asked for a retry; what names
 * the call in messages. */
static int decide_next(struct sq *s, struct crashed *c,
		       int (*decide)(const struct keel_run *crashed,
				     struct keel_run *next, void *ud),
		       void *ud, const char *what)
{
	struct keel_run next;
	int rc = keel__store_decide(&s->base, &c->run, decide, ud, what, &next);

	if (rc <= 0)
		return rc;
	rc = insert_run(s, &next, NULL,
			next.trigger == KEEL_RUN_RETRY ? c->origin : NULL);
	keel_run_clear(&next);
	return rc;
}

static void crashed_free(struct crashed *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		keel_run_clear(&v[i].run);
	free(v);
}

static int sq_recover(struct keel_store *st, const char *node, int64_t now_ms,
		      int (*decide)(const struct keel_run *crashed,
				    struct keel_run *next, void *ud),
		      void *ud, size_t *n_crashed)
{
	struct sq *s = SQ(st);
	struct crashed *v = NULL;
	size_t n = 0, i;
	int rc;

	/* decide runs under the writer's mutex, inside the transaction: it
	 * must not call the store (keel/store.h says so). */
	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc == 0)
		rc = read_running_w(s, node, &v, &n);
	for (i = 0; rc == 0 && i < n; i++) {
		rc = crash_run(s, S_RUN_CRASH, &v[i].run, now_ms,
			       KEEL__STORE_CRASHED_ERROR);
		if (rc == 0 && decide != NULL)
			rc = decide_next(s, &v[i], decide, ud, "recover");
	}
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	crashed_free(v, n);
	if (rc == 0)
		*n_crashed = n;
	return rc;
}

static int sq_prune(struct keel_store *st, const char *job, int keep_runs,
		    int64_t before_ms, size_t *deleted)
{
	struct sq *s = SQ(st);
	int rc, err = 0;
	sqlite3_stmt *q;

	pthread_mutex_lock(&s->w.mu);
	q = prep(s, &s->w, S_PRUNE, &err);
	if (q == NULL) {
		rc = err;
	} else {
		bind_text(q, 1, job);
		sqlite3_bind_int64(q, 2, keep_runs < 0 ? INT64_MAX : keep_runs);
		sqlite3_bind_int64(q, 3, before_ms);
		/* One statement: all of it or none. */
		rc = exec_stmt(s, &s->w, q, "prune runs");
		if (rc == 0)
			*deleted = (size_t)sqlite3_changes64(s->w.db);
	}
	pthread_mutex_unlock(&s->w.mu);
	return rc;
}

/* ------------------------------------------------------------------------
 * Runs: reads (the reader connection)
 * ------------------------------------------------------------------------ */

static int sq_run_get(struct keel_store *st, int64_t id, struct keel_run *out)
{
	struct sq *s = SQ(st);
	int rc, err = 0;
	sqlite3_stmt *q;

	pthread_mutex_lock(&s->r.mu);
	q = prep(s, &s->r, S_RUN_GET, &err);
	if (q == NULL) {
		rc = err;
	} else {
		sqlite3_bind_int64(q, 1, id);
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW) {
			rc = read_run(s, q, out);
		} else if (rc == SQLITE_DONE) {
			keel__store_errf(st, "no run %lld", (long long)id);
			rc = -ENOENT;
		} else {
			rc = fail(s, s->r.db, rc, "read run");
		}
		done(q);
	}
	pthread_mutex_unlock(&s->r.mu);
	return rc;
}

static int sq_run_list(struct keel_store *st,
		       const struct keel_store_run_query *q,
		       struct keel_run **out, size_t *n)
{
	struct sq *s = SQ(st);
	enum sid id;
	sqlite3_stmt *stmt;
	int rc, err = 0;

	/* One statement per filter combination, so each has a plan that
	 * uses its index (a "?job IS NULL OR job = ?job" would not). */
	if (q->job != NULL)
		id = q->state >= 0 ? S_RUN_LIST_JOB_STATE : S_RUN_LIST_JOB;
	else
		id = q->state >= 0 ? S_RUN_LIST_STATE : S_RUN_LIST;
	pthread_mutex_lock(&s->r.mu);
	stmt = prep(s, &s->r, id, &err);
	if (stmt == NULL) {
		rc = err;
	} else {
		bind_named_int(stmt, ":before",
			       q->before_id > 0 ? q->before_id : INT64_MAX);
		bind_named_int(stmt, ":limit", q->limit);
		bind_named_int(stmt, ":out", q->with_output != 0);
		bind_named_text(stmt, ":job", q->job);
		if (q->state >= 0)
			bind_named_text(stmt, ":state",
					keel_run_state_name(
						(enum keel_run_state)q->state));
		rc = read_runs(s, &s->r, stmt, out, n);
	}
	pthread_mutex_unlock(&s->r.mu);
	return rc;
}

static int sq_run_active(struct keel_store *st, struct keel_run **out,
			 size_t *n)
{
	struct sq *s = SQ(st);
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->r.mu);
	q = prep(s, &s->r, S_RUN_ACTIVE, &err);
	rc = q != NULL ? read_runs(s, &s->r, q, out, n) : err;
	pthread_mutex_unlock(&s->r.mu);
	return rc;
}

static int sq_run_counts(struct keel_store *st, const char *job,
			 int64_t counts[KEEL_RUN_NSTATES])
{
	struct sq *s = SQ(st);
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->r.mu);
	q = prep(s, &s->r, job != NULL ? S_COUNTS_JOB : S_COUNTS, &err);
	if (q == NULL) {
		pthread_mutex_unlock(&s->r.mu);
		return err;
	}
	if (job != NULL)
		bind_text(q, 1, job);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(q, 0);
		enum keel_run_state state;

		if (t == NULL || keel_run_state_parse(t, &state) != 0) {
			keel__store_errf(st, "runs with an unknown state '%s'",
					 t ? t : "");
			err = -EIO;
			break;
		}
		counts[state] = sqlite3_column_int64(q, 1);
	}
	if (err == 0 && rc != SQLITE_DONE)
		err = fail(s, s->r.db, rc, "count runs");
	done(q);
	pthread_mutex_unlock(&s->r.mu);
	return err;
}

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

static int event_insert(struct sq *s, int64_t at_ms, const char *level,
			const char *kind, const char *job, int64_t run_id,
			const char *message)
{
	int rc, err = 0;
	sqlite3_stmt *q = prep(s, &s->w, S_EVENT_ADD, &err);
	int64_t id;

	if (q == NULL)
		return err;
	sqlite3_bind_int64(q, 1, at_ms);
	bind_text(q, 2, level);
	bind_text(q, 3, kind);
	bind_text(q, 4, job);
	sqlite3_bind_int64(q, 5, run_id);
	bind_text(q, 6, message);
	rc = exec_stmt(s, &s->w, q, "add event");
	if (rc != 0)
		return rc;
	id = sqlite3_last_insert_rowid(s->w.db);
	/* Trimming on every insert would be a second write each time; on
	 * ids that are multiples of TRIM it is one per TRIM events, and
	 * needs no counter that a restart would reset. */
	if (id % KEEL__STORE_EVENTS_TRIM != 0 || id <= KEEL__STORE_EVENTS_KEEP)
		return 0;
	q = prep(s, &s->w, S_EVENT_TRIM, &err);
	if (q == NULL)
		return err;
	sqlite3_bind_int64(q, 1, id - KEEL__STORE_EVENTS_KEEP);
	return exec_stmt(s, &s->w, q, "trim events");
}

static int sq_event_add(struct keel_store *st, int64_t at_ms,
			const char *level, const char *kind, const char *job,
			int64_t run_id, const char *message)
{
	struct sq *s = SQ(st);
	const char *c[4];
	char *tmp[4] = { NULL, NULL, NULL, NULL };
	int rc = 0;

	if (keel__store_utf8(level, &c[0], &tmp[0]) != 0 ||
	    keel__store_utf8(kind, &c[1], &tmp[1]) != 0 ||
	    keel__store_utf8(job, &c[2], &tmp[2]) != 0 ||
	    keel__store_utf8(message, &c[3], &tmp[3]) != 0) {
		keel__store_errf(st, "out of memory");
		rc = -ENOMEM;
	}
	if (rc == 0) {
		pthread_mutex_lock(&s->w.mu);
		rc = tx_begin(s);
		if (rc == 0)
			rc = event_insert(s, at_ms, c[0], c[1], c[2], run_id,
					  c[3]);
		rc = tx_end(s, rc);
		pthread_mutex_unlock(&s->w.mu);
	}
	for (int i = 0; i < 4; i++)
		free(tmp[i]);
	return rc;
}

static int read_event(struct sq *s, sqlite3_stmt *q, struct keel_store_event *e)
{
	int oom = 0;

	memset(e, 0, sizeof(*e));
	e->id = sqlite3_column_int64(q, 0);
	e->at = sqlite3_column_int64(q, 1);
	e->level = col_str(q, 2, &oom);
	e->kind = col_str(q, 3, &oom);
	e->job = col_str(q, 4, &oom);
	e->run_id = sqlite3_column_int64(q, 5);
	e->message = col_str(q, 6, &oom);
	if (oom) {
		free(e->level);
		free(e->kind);
		free(e->job);
		free(e->message);
		keel__store_errf(&s->base, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int sq_event_list(struct keel_store *st, int64_t before_id, int limit,
			 struct keel_store_event **out, size_t *n)
{
	struct sq *s = SQ(st);
	struct keel_store_event *v = NULL;
	size_t len = 0;
	sqlite3_stmt *q;
	int rc = SQLITE_DONE, err = 0;

	/* limit <= 1000: one allocation for the most there can be. */
	v = calloc((size_t)limit, sizeof(*v));
	if (v == NULL) {
		keel__store_errf(st, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&s->r.mu);
	q = prep(s, &s->r, S_EVENT_LIST, &err);
	if (q == NULL) {
		pthread_mutex_unlock(&s->r.mu);
		free(v);
		return err;
	}
	sqlite3_bind_int64(q, 1, before_id > 0 ? before_id : INT64_MAX);
	sqlite3_bind_int(q, 2, limit);
	while (len < (size_t)limit && (rc = sqlite3_step(q)) == SQLITE_ROW) {
		err = read_event(s, q, &v[len]);
		if (err != 0)
			break;
		len++;
	}
	if (err == 0 && len < (size_t)limit && rc != SQLITE_DONE)
		err = fail(s, s->r.db, rc, "list events");
	done(q);
	pthread_mutex_unlock(&s->r.mu);
	if (err != 0) {
		keel_store_events_free(v, len);
		return err;
	}
	*out = v;
	*n = len;
	return 0;
}

/* ------------------------------------------------------------------------
 * The cluster, for the one keeld that opens the directory
 * ------------------------------------------------------------------------ */

/* The store's clock: this process's wall clock, in ms. */
static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* In the writer's transaction: the lease as it is at now. */
static int lease_get_w(struct sq *s, int64_t now, struct keel_store_lease *out)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_LEASE_GET, &err);

	memset(out, 0, sizeof(*out));
	out->now = now;
	if (q == NULL)
		return err;
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *h = (const char *)sqlite3_column_text(q, 0);

		snprintf(out->holder, sizeof(out->holder), "%s", h ? h : "");
		out->term = sqlite3_column_int64(q, 1);
		out->expires_at = sqlite3_column_int64(q, 2);
	} else if (rc != SQLITE_DONE) {
		err = fail(s, s->w.db, rc, "read the lease");
	}
	done(q);
	return err;
}

static int sq_lease_acquire(struct keel_store *st, const char *node,
			    int64_t ttl_ms, struct keel_store_lease *out)
{
	struct sq *s = SQ(st);
	int64_t now;
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	/* Read under the writer's lock: nobody moves the lease meanwhile. */
	now = wall_ms();
	if (rc == 0) {
		q = prep(s, &s->w, S_LEASE_TAKE, &err);
		if (q == NULL) {
			rc = err;
		} else {
			bind_text(q, 1, node);
			sqlite3_bind_int64(q, 2, now);
			sqlite3_bind_int64(q, 3, ttl_ms);
			rc = exec_stmt(s, &s->w, q, "take the lease");
		}
	}
	if (rc == 0)
		rc = lease_get_w(s, now, out);
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

static int sq_lease_release(struct keel_store *st, const char *node,
			    int64_t term)
{
	struct sq *s = SQ(st);
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	q = prep(s, &s->w, S_LEASE_RELEASE, &err);
	if (q == NULL) {
		rc = err;
	} else {
		bind_text(q, 1, node);
		sqlite3_bind_int64(q, 2, term);
		sqlite3_bind_int64(q, 3, wall_ms());
		rc = exec_stmt(s, &s->w, q, "release the lease");
		if (rc == 0 && sqlite3_changes(s->w.db) == 0) {
			keel__store_errf(st,
					 "node '%s' does not hold the lease at "
					 "term %lld",
					 node, (long long)term);
			rc = -ESTALE;
		}
	}
	pthread_mutex_unlock(&s->w.mu);
	return rc;
}

/* In the writer's transaction: term holds the lease at now, else
 * -ESTALE. SQLite's one writer keeps it so until the commit. */
static int fence_w(struct sq *s, int64_t term, int64_t now)
{
	int err = 0, rc;
	sqlite3_stmt *q = prep(s, &s->w, S_LEASE_CHECK, &err);

	if (q == NULL)
		return err;
	sqlite3_bind_int64(q, 1, term);
	sqlite3_bind_int64(q, 2, now);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		err = 0;
	} else if (rc == SQLITE_DONE) {
		keel__store_errf(&s->base,
				 "term %lld no longer holds the lease",
				 (long long)term);
		err = -ESTALE;
	} else {
		err = fail(s, s->w.db, rc, "check the lease");
	}
	done(q);
	return err;
}

static int sq_ticks_fenced(struct keel_store *st, int64_t term,
			   struct keel_store_tick *ticks, size_t n)
{
	struct sq *s = SQ(st);
	int rc;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc == 0)
		rc = fence_w(s, term, wall_ms());
	if (rc == 0)
		rc = ticks_w(s, ticks, n);
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0)
		ticks_undo_ids(ticks, n);
	return rc;
}

static int sq_node_beat(struct keel_store *st, const char *node, int running,
			const char *tags_json, int64_t *now_ms)
{
	struct sq *s = SQ(st);
	int64_t now = wall_ms();
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	q = prep(s, &s->w, S_NODE_BEAT, &err);
	if (q == NULL) {
		rc = err;
	} else {
		bind_text(q, 1, node);
		sqlite3_bind_int64(q, 2, now);
		sqlite3_bind_int(q, 3, running);
		bind_text(q, 4, tags_json);
		rc = exec_stmt(s, &s->w, q, "beat");
	}
	pthread_mutex_unlock(&s->w.mu);
	if (rc == 0)
		*now_ms = now;
	return rc;
}

/* A row of S_NODE_LIST into *nd. */
static int read_node(struct sq *s, sqlite3_stmt *q, struct keel_store_node *nd)
{
	int oom = 0, rc;

	memset(nd, 0, sizeof(*nd));
	nd->id = col_str(q, 0, &oom);
	nd->last_heartbeat = sqlite3_column_int64(q, 1);
	nd->started_at = sqlite3_column_int64(q, 2);
	nd->running = sqlite3_column_int(q, 3);
	if (oom || nd->id == NULL) {
		free(nd->id);
		nd->id = NULL;
		keel__store_errf(&s->base, "out of memory");
		return -ENOMEM;
	}
	rc = keel__store_tags_parse(&s->base,
				    (const char *)sqlite3_column_text(q, 4),
				    &nd->tags, &nd->n_tags);
	if (rc != 0) {
		free(nd->id);
		nd->id = NULL;
	}
	return rc;
}

/* In the writer's transaction: every node into a new array. */
static int node_list_w(struct sq *s, struct keel_store_node **out, size_t *n)
{
	struct keel_store_node *v = NULL;
	size_t len = 0, cap = 0;
	int rc, err = 0;
	sqlite3_stmt *q = prep(s, &s->w, S_NODE_LIST, &err);

	if (q == NULL)
		return err;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct keel_store_node *nv =
				realloc(v, ncap * sizeof(*v));

			if (nv == NULL) {
				keel__store_errf(&s->base, "out of memory");
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		err = read_node(s, q, &v[len]);
		if (err != 0)
			break;
		len++;
	}
	if (err == 0 && rc != SQLITE_DONE)
		err = fail(s, s->w.db, rc, "list nodes");
	done(q);
	if (err != 0) {
		keel_store_nodes_free(v, len);
		return err;
	}
	*out = v;
	*n = len;
	return 0;
}

static int sq_node_list(struct keel_store *st, int64_t forget_ms,
			struct keel_store_node **out, size_t *n)
{
	struct sq *s = SQ(st);
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc == 0 && forget_ms > 0) {
		q = prep(s, &s->w, S_NODE_FORGET, &err);
		if (q == NULL) {
			rc = err;
		} else {
			sqlite3_bind_int64(q, 1, wall_ms() - forget_ms);
			rc = exec_stmt(s, &s->w, q, "forget nodes");
		}
	}
	if (rc == 0)
		rc = node_list_w(s, out, n);
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0 && *out != NULL) {
		keel_store_nodes_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

/* Claimed runs in the order they were due. */
static int by_due(const void *a, const void *b)
{
	const struct keel_run *x = a, *y = b;

	if (x->not_before != y->not_before)
		return x->not_before < y->not_before ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int sq_claim(struct keel_store *st, const char *node,
		    const char *tags_json, int max, struct keel_run **out,
		    size_t *n)
{
	struct sq *s = SQ(st);
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	if (rc == 0) {
		q = prep(s, &s->w, S_CLAIM, &err);
		if (q == NULL) {
			rc = err;
		} else {
			bind_text(q, 1, node);
			sqlite3_bind_int64(q, 2, wall_ms());
			bind_text(q, 3, tags_json);
			sqlite3_bind_int(q, 4, max);
			rc = read_runs(s, &s->w, q, out, n);
		}
	}
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0) {
		keel_store_runs_free(*out, *n);
		*out = NULL;
		*n = 0;
		return rc;
	}
	if (*n > 1)
		qsort(*out, *n, sizeof(**out), by_due);
	return 0;
}

static int sq_runs_beat(struct keel_store *st, const int64_t *ids,
			const uint64_t *claims, size_t n, int *rcs)
{
	struct sq *s = SQ(st);
	int64_t now = wall_ms();
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		q = prep(s, &s->w, S_RUN_BEAT, &err);
		if (q == NULL) {
			rc = err;
			break;
		}
		sqlite3_bind_int64(q, 1, ids[i]);
		sqlite3_bind_int64(q, 2, (int64_t)claims[i]);
		sqlite3_bind_int64(q, 3, now);
		rc = exec_stmt(s, &s->w, q, "beat runs");
		rcs[i] = rc == 0 && sqlite3_changes(s->w.db) == 0 ? -ESTALE : 0;
	}
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	if (rc != 0)
		for (size_t i = 0; i < n; i++)
			rcs[i] = rc;
	else
		for (size_t i = 0; i < n; i++)
			if (rcs[i] != 0) {
				keel__store_errf(st,
						 "run %lld is no longer running "
						 "with claim %llu",
						 (long long)ids[i],
						 (unsigned long long)claims[i]);
				break;
			}
	return rc;
}

/* "rescued: node <node> stopped beating", malloc'd; NULL: no memory. */
static char *rescued_error(const char *node)
{
	char *msg = NULL;

	if (asprintf(&msg, "%s%s%s", KEEL__STORE_RESCUED_ERROR,
		     node != NULL ? node : "(none)",
		     KEEL__STORE_RESCUED_END) < 0)
		return NULL;
	return msg;
}

static int sq_rescue(struct keel_store *st, int64_t term, int64_t stale_ms,
		     int (*decide)(const struct keel_run *crashed,
				   struct keel_run *next, void *ud),
		     void *ud, size_t *n_rescued)
{
	struct sq *s = SQ(st);
	struct crashed *v = NULL;
	size_t n = 0, i;
	int64_t now;
	sqlite3_stmt *q;
	int rc, err = 0;

	pthread_mutex_lock(&s->w.mu);
	rc = tx_begin(s);
	now = wall_ms();
	if (rc == 0)
		rc = fence_w(s, term, now);
	if (rc == 0) {
		q = prep(s, &s->w, S_RUN_STALE_W, &err);
		if (q == NULL) {
			rc = err;
		} else {
			sqlite3_bind_int64(q, 1, now - stale_ms);
			rc = read_crashed_w(s, q, &v, &n);
		}
	}
	for (i = 0; rc == 0 && i < n; i++) {
		char *msg = rescued_error(v[i].run.node);

		if (msg == NULL) {
			keel__store_errf(st, "out of memory");
			rc = -ENOMEM;
			break;
		}
		rc = crash_run(s, S_RUN_RESCUE, &v[i].run, now, msg);
		free(msg);
		if (rc == 0 && decide != NULL)
			rc = decide_next(s, &v[i], decide, ud, "rescue");
	}
	rc = tx_end(s, rc);
	pthread_mutex_unlock(&s->w.mu);
	crashed_free(v, n);
	if (rc == 0)
		*n_rescued = n;
	return rc;
}

/* ------------------------------------------------------------------------
 * Open and close
 * ------------------------------------------------------------------------ */

static void conn_close(struct conn *c)
{
	for (int i = 0; i < N_SID; i++)
		sqlite3_finalize(c->stmt[i]);
	memset(c->stmt, 0, sizeof(c->stmt));
	/* The last connection to close checkpoints the WAL into the
	 * database and removes it. */
	sqlite3_close_v2(c->db);
	c->db = NULL;
	if (c->mu_ok)
		pthread_mutex_destroy(&c->mu);
	c->mu_ok = 0;
}

static void sq_close(struct keel_store *st)
{
	struct sq *s = SQ(st);

	conn_close(&s->r);
	conn_close(&s->w);
	/* Closing the descriptor releases the lock; the file stays (deleting
	 * it would let two keelds lock two different files). */
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s);
}

static const struct keel_store_ops sqlite_ops = {
	.name = "sqlite",
	.close = sq_close,
	.errmsg = NULL,
	.job_put = sq_job_put,
	.job_delete = sq_job_delete,
	.job_pause = sq_job_pause,
	.job_get = sq_job_get,
	.job_list = sq_job_list,
	.ticks = sq_ticks,
	.run_insert = sq_run_insert,
	.run_start = sq_run_start,
	.run_finish = sq_run_finish,
	.runs_start = sq_runs_start,
	.runs_finish = sq_runs_finish,
	.run_get = sq_run_get,
	.run_list = sq_run_list,
	.run_active = sq_run_active,
	.recover = sq_recover,
	.prune = sq_prune,
	.run_counts = sq_run_counts,
	.event_add = sq_event_add,
	.event_list = sq_event_list,
	.lease_acquire = sq_lease_acquire,
	.lease_release = sq_lease_release,
	.node_beat = sq_node_beat,
	.node_list = sq_node_list,
	.claim = sq_claim,
	.runs_beat = sq_runs_beat,
	.ticks_fenced = sq_ticks_fenced,
	.rescue = sq_rescue,
};

static int seterr(char *err, size_t len, int rc, const char *fmt, ...)
	KEEL_PRINTF(4, 5);
static int seterr(char *err, size_t len, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && len > 0) {
		va_start(ap, fmt);
		vsnprintf(err, len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* dir exists as a directory afterwards (created 0700 if it did not). */
static int make_dir(const char *dir, char *err, size_t errlen)
{
	struct stat sb;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return seterr(err, errlen, -errno,
			      "cannot create data directory %s: %s", dir,
			      strerror(errno));
	if (stat(dir, &sb) != 0)
		return seterr(err, errlen, -errno,
			      "cannot use data directory %s: %s", dir,
			      strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return seterr(err, errlen, -ENOTDIR,
			      "data directory %s is not a directory", dir);
	return 0;
}

/*
 * Takes dir/keeld.lock: flock is held by the open file description, so a
 * second open of the same directory fails in this process too, and the
 * kernel releases it whatever way keeld ends. O_CLOEXEC keeps executors'
 * children (shell jobs) from inheriting it and outliving keeld with it.
 */
static int take_lock(const char *dir, int *fd_out, char *err, size_t errlen)
{
	char path[PATH_MAX], buf[32];
	int fd, rc;
	ssize_t got;

	if (snprintf(path, sizeof(path), "%s/keeld.lock", dir) >=
	    (int)sizeof(path))
		return seterr(err, errlen, -ENAMETOOLONG,
			      "data directory %s: path too long", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return seterr(err, errlen, -errno, "cannot open %s: %s", path,
			      strerror(errno));
	/*
	 * A keeld killed a moment ago may still have its lock held through a
	 * child it was forking for a job (the descriptor lives in the child
	 * until it closes it, before execve). When the pid in the file is
	 * dead, wait up to 2 s for that to pass; a live holder is refused at
	 * once.
	 */
	for (int tries = 0;; tries++) {
		long pid = 0;

		do
			rc = flock(fd, LOCK_EX | LOCK_NB);
		while (rc != 0 && errno == EINTR);
		if (rc == 0 || errno != EWOULDBLOCK)
			break;
		got = pread(fd, buf, sizeof(buf) - 1, 0);
		if (got > 0) {
			buf[got] = '\0';
			pid = strtol(buf, NULL, 10);
		}
		if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH &&
		    tries < 100) {
			usleep(20000);
			continue;
		}
		close(fd);
		if (pid > 0)
			return seterr(err, errlen, -EBUSY,
				      "data directory %s is in use by another "
				      "keeld (pid %ld)",
				      dir, pid);
		return seterr(err, errlen, -EBUSY,
			      "data directory %s is in use by another keeld",
			      dir);
	}
	if (rc != 0) {
		rc = -errno;
		close(fd);
		return seterr(err, errlen, rc, "cannot lock %s: %s", path,
			      strerror(-rc));
	}
	got = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)got, 0) != got) {
		rc = -errno;
		close(fd);
		return seterr(err, errlen, rc, "cannot write %s: %s", path,
			      strerror(-rc));
	}
	*fd_out = fd;
	return 0;
}

static int open_conn(struct conn *c, const char *path,
		     int flags, const struct keel_store_config *cfg, char *err,
		     size_t errlen)
{
	int64_t ms = cfg->busy_timeout / 1000000;
	int rc;

	if (pthread_mutex_init(&c->mu, NULL) != 0)
		return seterr(err, errlen, -ENOMEM, "out of memory");
	c->mu_ok = 1;
	rc = sqlite3_open_v2(path, &c->db,
			     flags | SQLITE_OPEN_NOMUTEX |
				     SQLITE_OPEN_PRIVATECACHE |
				     SQLITE_OPEN_EXRESCODE,
			     NULL);
	if (rc != SQLITE_OK)
		return seterr(err, errlen, rc == SQLITE_NOMEM ? -ENOMEM : -EIO,
			      "cannot open %s: %s", path,
			      c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
	sqlite3_busy_timeout(c->db, ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms);
	return 0;
}

/* One PRAGMA; its first result column into answer (may be NULL). */
static int pragma(sqlite3 *db, const char *text, char *answer, size_t len)
{
	sqlite3_stmt *q;
	int rc = sqlite3_prepare_v2(db, text, -1, &q, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW && answer != NULL) {
		const char *t = (const char *)sqlite3_column_text(q, 0);

		snprintf(answer, len, "%s", t ? t : "");
	}
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		rc = SQLITE_OK;
	sqlite3_finalize(q);
	return rc;
}

static int set_pragmas(sqlite3 *db, const char *path,
		       const struct keel_store_config *cfg, char *err,
		       size_t errlen)
{
	char mode[32] = "";
	int rc;

	rc = pragma(db, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
	if (rc == SQLITE_OK && strcmp(mode, "wal") != 0)
		return seterr(err, errlen, -EIO,
			      "%s: cannot use WAL mode (journal_mode is '%s')",
			      path, mode);
	if (rc == SQLITE_OK)
		rc = pragma(db,
			    cfg->sync_full ? "PRAGMA synchronous = FULL"
					   : "PRAGMA synchronous = NORMAL",
			    NULL, 0);
	if (rc == SQLITE_OK)
		rc = pragma(db, "PRAGMA foreign_keys = ON", NULL, 0);
	if (rc != SQLITE_OK)
		return seterr(err, errlen,
			      (rc & 0xff) == SQLITE_BUSY ||
					      (rc & 0xff) == SQLITE_LOCKED
				      ? -EBUSY
				      : -EIO,
			      "%s: %s", path, sqlite3_errmsg(db));
	return 0;
}

static int user_version(sqlite3 *db, int *v)
{
	char buf[32] = "";
	int rc = pragma(db, "PRAGMA user_version", buf, sizeof(buf));

	*v = atoi(buf);
	return rc;
}

/*
 * Brings the database to version n_steps, one step per transaction with
 * its version bump, so a crash between steps leaves a database at a
 * version that the next start continues from.
 */
static int migrate(sqlite3 *db, const char *path, const char *const *st,
		   size_t n_steps, char *err, size_t errlen)
{
	for (;;) {
		char bump[64], *msg = NULL;
		int rc, v = 0;

		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = user_version(db, &v);
		if (rc != SQLITE_OK) {
			seterr(err, errlen,
			       (rc & 0xff) == SQLITE_BUSY ? -EBUSY : -EIO,
			       "%s: %s", path, sqlite3_errmsg(db));
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return (rc & 0xff) == SQLITE_BUSY ? -EBUSY : -EIO;
		}
		if (v < 0 || (size_t)v >= n_steps) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			if ((size_t)v == n_steps)
				return 0;
			return seterr(err, errlen, -EPROTO,
				      "%s: database schema version %d is newer "
				      "than this keeld (%zu)",
				      path, v, n_steps);
		}
		snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
		rc = sqlite3_exec(db, st[v], NULL, NULL, &msg);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, bump, NULL, NULL, &msg);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, "COMMIT", NULL, NULL, &msg);
		if (rc != SQLITE_OK) {
			seterr(err, errlen, -EIO,
			       "%s: schema migration to version %d failed: %s",
			       path, v + 1, msg ? msg : sqlite3_errstr(rc));
			sqlite3_free(msg);
			if (!sqlite3_get_autocommit(db))
				sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -EIO;
		}
	}
}

int keel__store_sqlite_open_steps(const char *dir,
				  const struct keel_store_config *cfg,
				  const char *const *st, size_t n_steps,
				  struct keel_store **out, char *err,
				  size_t errlen)
{
	struct keel_store_config defaults;
	char path[PATH_MAX];
	struct sq *s;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL)
		return seterr(err, errlen, -EINVAL, "out is NULL");
	*out = NULL;
	if (dir == NULL || dir[0] == '\0')
		return seterr(err, errlen, -EINVAL, "no data directory");
	if (st == NULL || n_steps == 0 || n_steps > INT_MAX)
		return seterr(err, errlen, -EINVAL, "no schema");
	if (cfg == NULL) {
		keel_store_config_init(&defaults);
		cfg = &defaults;
	}
	if (snprintf(path, sizeof(path), "%s/keeld.db", dir) >=
	    (int)sizeof(path))
		return seterr(err, errlen, -ENAMETOOLONG,
			      "data directory %s: path too long", dir);
	rc = make_dir(dir, err, errlen);
	if (rc != 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return seterr(err, errlen, -ENOMEM, "out of memory");
	s->base.ops = &sqlite_ops;
	s->lock_fd = -1;
	rc = take_lock(dir, &s->lock_fd, err, errlen);
	if (rc == 0)
		rc = open_conn(&s->w, path,
			       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, cfg,
			       err, errlen);
	if (rc == 0)
		rc = set_pragmas(s->w.db, path, cfg, err, errlen);
	if (rc == 0)
		rc = migrate(s->w.db, path, st, n_steps, err, errlen);
	/* The reader opens a database that exists, in WAL mode, with its
	 * schema: it never writes, and READONLY makes sure of it. */
	if (rc == 0)
		rc = open_conn(&s->r, path, SQLITE_OPEN_READONLY, cfg, err,
			       errlen);
	if (rc != 0) {
		sq_close(&s->base);
		return rc;
	}
	*out = &s->base;
	return 0;
}

int keel_store_sqlite_open(const char *dir, const struct keel_store_config *cfg,
			   struct keel_store **out, char *err, size_t errlen)
{
	return keel__store_sqlite_open_steps(dir, cfg, steps, N_STEPS, out, err,
					     errlen);
}
