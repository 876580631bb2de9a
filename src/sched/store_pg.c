/*
 * src/sched/store_pg.c - keeld's store on PostgreSQL (keel_store_pg_open in
 * keel/store.h), with the semantics of the SQLite store (store_sqlite.c);
 * the rules all engines share are in store.c.
 *
 * Connections: a small pool (POOL_SIZE) of libpq connections, each used by
 * one thread at a time; a call takes a free one (waiting when every one is
 * busy) and gives it back at its end. The first is opened by open (which
 * migrates the schema on it), the others when first needed, so an idle
 * keeld holds one session. PostgreSQL's MVCC lets reads run beside writes,
 * and writes beside each other: the database, not a mutex of ours, orders
 * them, which is also what a second keeld on the same database (a cluster
 * node) needs.
 *
 * Each call is one statement (autocommit) or one BEGIN ... COMMIT, rolled
 * back on any error, at PostgreSQL's default READ COMMITTED. Where a call
 * reads before it writes, the read locks what it depends on (job_put's
 * SELECT ... FOR UPDATE), or the write checks the state itself (UPDATE ...
 * WHERE state = 'queued'), so two stores on one database cannot both win.
 *
 * Statements are prepared once per connection (PQprepare, on first use) and
 * take their parameters as text. A connection that breaks (a server restart,
 * an administrator's pg_terminate_backend, a network failure) fails its call
 * with -EIO and is reset (PQreset) at its next use, which prepares again.
 * Before a call, an idle connection reads what the server may have sent
 * meanwhile without blocking: a server that shut down has said so and
 * closed the socket, so the reset happens then and the call succeeds.
 *
 * Schema versions are the one row of table schema_version; steps[] holds
 * the SQL that takes a database from version i to i + 1, each applied in
 * its own transaction together with the version bump, under a transaction
 * advisory lock so that nodes starting together migrate one at a time (the
 * second sees the first's result). Version 1 is the whole first schema; a
 * change is a new entry at the end, never an edit of an old one. The
 * cluster's columns (a run's claim token and heartbeat) and tables (the
 * leader's lease) are such later steps: ALTER TABLE ... ADD COLUMN ... NOT
 * NULL DEFAULT 0 is instant since PostgreSQL 11.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include <keel/store.h>

#include "store_internal.h"

/* ------------------------------------------------------------------------
 * Schema
 * ------------------------------------------------------------------------ */

/*
 * As the SQLite schema (see store_sqlite.c for the why of each column):
 * states and triggers as words, origin making a tick's runs (retries
 * included) unique while manual runs are not, times as BIGINT ms (last_tick
 * s). Ids are identity columns: a sequence never gives an id twice, even
 * after the newest runs were pruned (it may skip some: a rolled-back insert
 * consumes its id). Text, not jsonb, for a job's spec: it is stored as the
 * exact bytes store.c made, so an unchanged job compares equal, and a
 * corrupt one can still be read (and reported) as text.
 */
static const char schema_v1[] =
	"CREATE TABLE jobs("
	" name TEXT PRIMARY KEY,"
	" spec TEXT NOT NULL,"
	" paused BOOLEAN NOT NULL DEFAULT false,"
	" last_tick BIGINT NOT NULL,"
	" created_at BIGINT NOT NULL,"
	" updated_at BIGINT NOT NULL);"
	"CREATE TABLE runs("
	" id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,"
	" state TEXT NOT NULL,"
	" trigger TEXT NOT NULL,"
	" origin TEXT NOT NULL,"
	" attempt INTEGER NOT NULL,"
	" scheduled_at BIGINT NOT NULL,"
	" created_at BIGINT NOT NULL,"
	" not_before BIGINT NOT NULL DEFAULT 0,"
	" started_at BIGINT NOT NULL DEFAULT 0,"
	" finished_at BIGINT NOT NULL DEFAULT 0,"
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
	" id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" at BIGINT NOT NULL,"
	" level TEXT NOT NULL,"
	" kind TEXT NOT NULL,"
	" job TEXT,"
	" run_id BIGINT NOT NULL DEFAULT 0,"
	" message TEXT NOT NULL);";

/*
 * Version 2, the cluster (keel/store.h's last section): the lease (one
 * row, id 1), the nodes, a run's claim token and heartbeat, and what the
 * claim needs of a job without reading its spec: its tags and concurrency,
 * filled from the spec for the jobs there are. A spec that is not JSON
 * would fail the cast, so each job is filled on its own, under an
 * exception handler: a corrupt one keeps the defaults (it is reported when
 * read, and repaired by a put, which sets them). Queued runs by due time
 * for the claim, running ones by job for "forbid".
 */
static const char schema_v2[] =
	"CREATE TABLE lease("
	" id INTEGER PRIMARY KEY CHECK (id = 1),"
	" holder TEXT NOT NULL,"
	" term BIGINT NOT NULL,"
	" expires_at BIGINT NOT NULL);"
	"CREATE TABLE nodes("
	" id TEXT PRIMARY KEY,"
	" last_heartbeat BIGINT NOT NULL,"
	" started_at BIGINT NOT NULL,"
	" running INTEGER NOT NULL DEFAULT 0,"
	" tags TEXT[] NOT NULL DEFAULT '{}');"
	"ALTER TABLE runs ADD COLUMN claim BIGINT NOT NULL DEFAULT 0,"
	" ADD COLUMN heartbeat BIGINT NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN tags TEXT[] NOT NULL DEFAULT '{}',"
	" ADD COLUMN concurrency TEXT NOT NULL DEFAULT 'forbid';"
	"DO $$ DECLARE j record; BEGIN"
	" FOR j IN SELECT name, spec FROM jobs LOOP"
	"  BEGIN"
	"   UPDATE jobs SET tags = ARRAY(SELECT jsonb_array_elements_text("
	"    COALESCE(j.spec::jsonb -> 'tags', '[]'))),"
	"    concurrency = COALESCE(j.spec::jsonb ->> 'concurrency', 'forbid')"
	"    WHERE name = j.name;"
	"  EXCEPTION WHEN others THEN NULL;"
	"  END;"
	" END LOOP;"
	"END $$;"
	"CREATE INDEX runs_due ON runs(not_before, id) WHERE state = 'queued';"
	"CREATE INDEX runs_running ON runs(job) WHERE state = 'running';";

/* Version 3: a job's due queued runs in order, for the claim's first
 * step, which looks them up job by job. */
/*
 * Version 3: a job's due queued runs in order, for the claim's first
 * step, which looks them up job by job; and statistics kept closer to
 * the runs table's churn (the default analyzes after 10 % of it changed):
 * the claim's plan depends on how many runs are queued, and a plan made
 * while few were, used on a burst of thousands, sorts them all each call.
 */
static const char schema_v3[] =
	"CREATE INDEX runs_queued ON runs(job, not_before, id)"
	" WHERE state = 'queued';"
	"ALTER TABLE runs SET (autovacuum_analyze_scale_factor = 0.01,"
	" autovacuum_analyze_threshold = 500);";

static const char *const steps[] = {
	schema_v1,
	schema_v2,
	schema_v3,
};
#define N_STEPS (sizeof(steps) / sizeof(steps[0]))

/* The advisory lock that migrations take ("keel_sch"): one key per
 * database, so nodes of other databases on the server do not wait. */
#define MIGRATE_LOCK "7738135649813800808"

const char *const *keel__store_pg_steps(size_t *n)
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
/* The same, output only when $3 is true (a list leaves it unread). */
#define RUN_COLS_LIST                                                         \
	"id, job, state, trigger, attempt, scheduled_at, created_at, "        \
	"not_before, started_at, finished_at, exit_code, signal, "            \
	"http_status, error, CASE WHEN $3::boolean THEN output END, "         \
	"trace_id, node, claim"
/* RUN_COLS's count: a column after them (origin) is the next. */
#define N_RUN_COLS 18
#define FINAL_STATE "state NOT IN ('queued', 'running')"
/* The store's clock, in ms: the server's, so that nodes agree. NOW_MS is
 * the moment of the call (the lease); TX_NOW_MS the transaction's start,
 * one value for all its statements and rows (a claim, a rescue). */
#define NOW_MS "(floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint"
#define TX_NOW_MS "(floor(extract(epoch FROM now()) * 1000))::bigint"
/* A JSON array of strings ($n, made by store.c) as a text[]. */
#define TEXT_ARRAY(n) "ARRAY(SELECT jsonb_array_elements_text(" n "::jsonb))"
/* Parameters are cast where PostgreSQL would otherwise guess a type too
 * small (a bare "$3 > 0" would be an integer, and 2^31 ms is 25 days). */

#define JOB_TAGS                                                              \
	"ARRAY(SELECT jsonb_array_elements_text($2::text::jsonb -> 'tags'))"
#define JOB_CONCURRENCY "COALESCE($2::text::jsonb ->> 'concurrency', 'forbid')"

enum sid {
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
	S_RUN_STATE,
	S_RUN_START,
	S_RUN_FINISH,
	S_RUN_CRASH_ALL,
	S_RUN_CRASH_NODE,
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
	S_EVENT_LIST,
	S_LEASE_TAKE,
	S_LEASE_GET,
	S_LEASE_RELEASE,
	S_LEASE_CHECK,
	S_NODE_BEAT,
	S_NODE_FORGET,
	S_NODE_LIST,
	S_CLAIM_LOCK,
	S_CLAIM,
	S_RUNS_BEAT,
	S_RUN_RESCUE,
	N_SID
};

static const char *const sql[N_SID] = {
	/* Locked until the put commits: a second put of the same job (from
	 * another node) waits, then sees this one's result. */
	[S_JOB_GET_W] = "SELECT spec, last_tick FROM jobs WHERE name = $1 "
			"FOR UPDATE",
	/* tags and concurrency, for the claim, from the spec (which store.c
	 * made: valid JSON with both). */
	[S_JOB_INSERT] = "INSERT INTO jobs(name, spec, paused, last_tick, "
			 "created_at, updated_at, tags, concurrency) "
			 "VALUES($1, $2::text, false, $3::bigint, $4::bigint, "
			 "$4::bigint, " JOB_TAGS ", " JOB_CONCURRENCY ")",
	[S_JOB_UPDATE] = "UPDATE jobs SET spec = $2::text, last_tick = "
			 "$3::bigint, updated_at = $4::bigint, tags = " JOB_TAGS
			 ", concurrency = " JOB_CONCURRENCY " WHERE name = $1",
	[S_JOB_DELETE] = "DELETE FROM jobs WHERE name = $1",
	[S_JOB_PAUSE] = "UPDATE jobs SET paused = true, updated_at = $2::bigint "
			"WHERE name = $1 AND NOT paused",
	[S_JOB_RESUME] = "UPDATE jobs SET paused = false, last_tick = "
			 "$3::bigint, updated_at = $2::bigint WHERE name = $1 "
			 "AND paused",
	[S_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE name = $1",
	[S_JOB_GET] = "SELECT name, spec, paused, last_tick, created_at, "
		      "updated_at FROM jobs WHERE name = $1",
	/* "Sorted by name" is byte order, as with SQLite, whatever the
	 * database's collation ("Mid" before "alpha"). */
	[S_JOB_LIST] = "SELECT name, spec, paused, last_tick, created_at, "
		       "updated_at FROM jobs ORDER BY name COLLATE \"C\"",
	/* last_tick never moves back: a batch computed before a resume or a
	 * schedule change cannot undo it. */
	[S_TICK_JOB] = "UPDATE jobs SET last_tick = GREATEST(last_tick, "
		       "$2::bigint) WHERE name = $1",
	/* $4 NULL: a retry, whose origin is its predecessor's (same job,
	 * tick, attempt - 1), "manual" when there is none; looked up in the
	 * insert itself, so it needs no transaction of its own. */
	[S_RUN_INSERT] = "INSERT INTO runs(job, state, trigger, origin, attempt, "
			 "scheduled_at, created_at, not_before, started_at, "
			 "finished_at, exit_code, signal, http_status, error, "
			 "output, trace_id, node) VALUES($1, $2, $3, "
			 "COALESCE($4, (SELECT p.origin FROM runs p WHERE "
			 "p.job = $1 AND p.scheduled_at = $6::bigint AND "
			 "p.attempt = $5::integer - 1 ORDER BY p.id DESC "
			 "LIMIT 1), 'manual'), $5::integer, $6::bigint, "
			 "$7::bigint, $8::bigint, $9::bigint, $10::bigint, "
			 "$11::integer, $12::integer, $13::integer, $14, $15, "
			 "$16, $17) RETURNING id",
	[S_RUN_STATE] = "SELECT state, claim FROM runs WHERE id = $1::bigint",
	[S_RUN_START] = "UPDATE runs SET state = 'running', started_at = "
			"$2::bigint, node = $3 WHERE id = $1::bigint AND "
			"state = 'queued'",
	/* The origin comes back for the retry that may follow, in the same
	 * transaction. $9: the finisher's claim token, 0 = not checked. */
	[S_RUN_FINISH] = "UPDATE runs SET state = $2, finished_at = $3::bigint, "
			 "exit_code = $4::integer, signal = $5::integer, "
			 "http_status = $6::integer, error = $7, output = $8 "
			 "WHERE id = $1::bigint AND state IN ('queued', "
			 "'running') AND ($9::bigint = 0 OR claim = "
			 "$9::bigint) RETURNING origin",
	[S_RUN_CRASH_ALL] = "UPDATE runs SET state = 'crashed', finished_at = "
			    "$1::bigint, error = $2 WHERE state = 'running' "
			    "RETURNING " RUN_COLS ", origin",
	[S_RUN_CRASH_NODE] = "UPDATE runs SET state = 'crashed', finished_at = "
			     "$1::bigint, error = $2 WHERE state = 'running' "
			     "AND node = $3 RETURNING " RUN_COLS ", origin",
	[S_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = $1::bigint",
	/* One statement per filter combination, so each has a plan that
	 * uses its index (a "$4 IS NULL OR job = $4" would not). */
	[S_RUN_LIST] = "SELECT " RUN_COLS_LIST " FROM runs WHERE id < "
		       "$1::bigint ORDER BY id DESC LIMIT $2::bigint",
	[S_RUN_LIST_JOB] = "SELECT " RUN_COLS_LIST " FROM runs WHERE job = $4 "
			   "AND id < $1::bigint ORDER BY id DESC "
			   "LIMIT $2::bigint",
	[S_RUN_LIST_STATE] = "SELECT " RUN_COLS_LIST " FROM runs WHERE "
			     "state = $4 AND id < $1::bigint ORDER BY id DESC "
			     "LIMIT $2::bigint",
	[S_RUN_LIST_JOB_STATE] = "SELECT " RUN_COLS_LIST " FROM runs WHERE "
				 "job = $4 AND state = $5 AND id < $1::bigint "
				 "ORDER BY id DESC LIMIT $2::bigint",
	[S_RUN_ACTIVE] = "SELECT " RUN_COLS " FROM runs WHERE state IN "
			 "('queued', 'running') ORDER BY id",
	/* Finished runs beyond the newest $2, or finished (skipped runs that
	 * never ran: created) before $3 when $3 > 0. */
	[S_PRUNE] = "DELETE FROM runs WHERE job = $1 AND " FINAL_STATE " AND ("
		    "id IN (SELECT id FROM runs WHERE job = $1 AND " FINAL_STATE
		    " ORDER BY id DESC OFFSET $2::bigint) OR ($3::bigint > 0 "
		    "AND CASE WHEN finished_at > 0 THEN finished_at "
		    "ELSE created_at END < $3::bigint))",
	[S_COUNTS] = "SELECT state, count(*) FROM runs GROUP BY state",
	[S_COUNTS_JOB] = "SELECT state, count(*) FROM runs WHERE job = $1 "
			 "GROUP BY state",
	/* The insert and, on ids that are multiples of $8, the trim, in one
	 * statement: one round trip, one transaction. Trimming there makes
	 * one delete per $8 events and needs no counter a restart would
	 * reset. */
	[S_EVENT_ADD] = "WITH ins AS (INSERT INTO events(at, level, kind, job, "
			"run_id, message) VALUES($1::bigint, $2, $3, $4, "
			"$5::bigint, $6) RETURNING id), old AS (DELETE FROM "
			"events WHERE (SELECT id FROM ins) % $8::bigint = 0 AND "
			"(SELECT id FROM ins) > $7::bigint AND id <= "
			"(SELECT id FROM ins) - $7::bigint) SELECT id FROM ins",
	[S_EVENT_LIST] = "SELECT id, at, level, kind, job, run_id, message "
			 "FROM events WHERE id < $1::bigint ORDER BY id DESC "
			 "LIMIT $2::bigint",

	/*
	 * The lease: taken when there is no row, or it is free (holder ''),
	 * expired, or $1's; the term moves on when the holder changes. One
	 * statement: ON CONFLICT DO UPDATE locks the row and evaluates its
	 * WHERE on the latest version, so of nodes asking at once one wins
	 * and the others see its row. A node that did not win reads the
	 * lease with S_LEASE_GET (a new snapshot: this statement's may
	 * predate the winner's commit). The update reads the clock once it
	 * holds the row, not at the statement's start: a call that waited
	 * for the lock behind another (the same node's, or a takeover)
	 * would otherwise renew from a moment before that one's, moving the
	 * expiry back or starting a term before the last one ended.
	 */
	[S_LEASE_TAKE] = "WITH t AS (SELECT " NOW_MS " AS now) "
			 "INSERT INTO lease AS l (id, holder, term, expires_at) "
			 "SELECT 1, $1, 1, t.now + $2::bigint FROM t "
			 "ON CONFLICT (id) DO UPDATE SET term = CASE WHEN "
			 "l.holder = EXCLUDED.holder THEN l.term ELSE "
			 "l.term + 1 END, holder = EXCLUDED.holder, "
			 "expires_at = " NOW_MS " + $2::bigint WHERE l.holder = "
			 "EXCLUDED.holder OR l.holder = '' OR l.expires_at <= "
			 NOW_MS " RETURNING holder, term, expires_at, "
			 /* the now the expiry was made from */
			 "expires_at - $2::bigint",
	[S_LEASE_GET] = "SELECT holder, term, expires_at, " NOW_MS " FROM lease "
			"WHERE id = 1",
	[S_LEASE_RELEASE] = "UPDATE lease SET holder = '', expires_at = " NOW_MS
			    " WHERE id = 1 AND holder = $1 AND term = "
			    "$2::bigint",
	/* The fence: the row stays locked (FOR SHARE) until the caller's
	 * transaction ends, so a takeover (which updates it) waits for its
	 * writes; a takeover in progress is waited for, and then the term
	 * no longer matches. */
	[S_LEASE_CHECK] = "SELECT 1 FROM lease WHERE id = 1 AND term = "
			  "$1::bigint AND holder <> '' AND expires_at > " NOW_MS
			  " FOR SHARE",
	[S_NODE_BEAT] = "WITH t AS (SELECT " NOW_MS " AS now) "
			"INSERT INTO nodes(id, last_heartbeat, started_at, "
			"running, tags) SELECT $1, t.now, t.now, $2::integer, "
			TEXT_ARRAY("$3") " FROM t ON CONFLICT (id) DO UPDATE "
			"SET last_heartbeat = EXCLUDED.last_heartbeat, "
			"running = EXCLUDED.running, tags = EXCLUDED.tags "
			"RETURNING last_heartbeat",
	[S_NODE_FORGET] = "DELETE FROM nodes WHERE last_heartbeat < " NOW_MS
			  " - $1::bigint",
	[S_NODE_LIST] = "SELECT id, last_heartbeat, started_at, running, "
			"to_json(tags)::text FROM nodes ORDER BY id COLLATE \"C\"",
	/*
	 * The claim, first step: lock (FOR NO KEY UPDATE, which inserting a
	 * job's runs does not wait for) up to $2 "forbid"/"replace" jobs
	 * that have a due queued run and none running, skipping those that
	 * another claimer has locked. The second step checks "none running"
	 * again in a snapshot taken after these locks: a claimer that ran
	 * one of these jobs committed before it let go of the job, so the
	 * check sees its run. (The run rows' own SKIP LOCKED does not stop
	 * two claimers from each taking a different run of one job, and a
	 * check in the same statement as the lock would use a snapshot from
	 * before it.)
	 */
	/* Job by job (runs_queued), so its cost follows the number of
	 * forbid and replace jobs, not of queued runs. */
	[S_CLAIM_LOCK] = "SELECT j.name FROM jobs j CROSS JOIN LATERAL "
			 "(SELECT r.not_before AS due, r.id AS first FROM runs r "
			 "WHERE r.job = j.name AND r.state = 'queued' AND "
			 "r.not_before <= " TX_NOW_MS " ORDER BY r.not_before, "
			 "r.id LIMIT 1) q "
			 "WHERE j.concurrency <> 'allow' AND j.tags <@ "
			 TEXT_ARRAY("$1") " AND NOT EXISTS (SELECT 1 FROM runs "
			 "x WHERE x.job = j.name AND x.state = 'running') "
			 "ORDER BY q.due, q.first LIMIT $2::bigint "
			 "FOR NO KEY UPDATE OF j SKIP LOCKED",
	/*
	 * The second step: due queued runs of "allow" jobs whose tags are
	 * all the node's (a), and the first due run of each job locked by
	 * the first step ($4, JSON) if none of it runs (f), each row locked
	 * or skipped (SKIP LOCKED: another claimer has it, or it is being
	 * finished), the oldest due $3 of them made running with a token
	 * each (63 random bits, never 0).
	 */
	[S_CLAIM] = "WITH t AS (SELECT " TEXT_ARRAY("$2") " AS tags, "
		    TX_NOW_MS " AS now), "
		    /* Walks runs_due in order, each run's job checked as it
		     * comes: a join with the values of t would hide them from
		     * the planner, which then sorts every queued run. */
		    "a AS (SELECT r.id, r.not_before FROM runs r WHERE "
		    "r.state = 'queued' AND r.not_before <= " TX_NOW_MS
		    " AND EXISTS (SELECT 1 FROM jobs j WHERE j.name = r.job "
		    "AND j.concurrency = 'allow' AND j.tags <@ "
		    TEXT_ARRAY("$2") ") ORDER BY r.not_before, r.id LIMIT "
		    "$3::bigint FOR UPDATE OF r SKIP LOCKED), "
		    "f AS (SELECT f.id, f.not_before FROM "
		    "jsonb_array_elements_text($4::jsonb) AS l(job), "
		    "LATERAL (SELECT r.id, r.not_before FROM runs r WHERE "
		    "r.job = l.job AND r.state = 'queued' AND r.not_before <= "
		    TX_NOW_MS " ORDER BY r.not_before, r.id LIMIT 1 FOR UPDATE "
		    "SKIP LOCKED) f WHERE NOT EXISTS (SELECT 1 FROM runs x "
		    "WHERE x.job = l.job AND x.state = 'running')), "
		    "pick AS (SELECT id FROM (SELECT * FROM a UNION ALL "
		    "SELECT * FROM f) c ORDER BY not_before, id LIMIT "
		    "$3::bigint) "
		    "UPDATE runs SET state = 'running', node = $1, started_at = "
		    "(SELECT now FROM t), heartbeat = (SELECT now FROM t), "
		    "claim = GREATEST((floor(random() * 2147483648)::bigint "
		    "<< 32) | floor(random() * 4294967296)::bigint, 1) "
		    "WHERE id IN (SELECT id FROM pick) AND state = 'queued' "
		    "RETURNING " RUN_COLS,
	/* $1, $2: arrays of ids and their tokens. */
	[S_RUNS_BEAT] = "UPDATE runs r SET heartbeat = " NOW_MS " FROM "
			"unnest($1::bigint[], $2::bigint[]) AS b(id, claim) "
			"WHERE r.id = b.id AND r.claim = b.claim AND "
			"r.state = 'running' RETURNING r.id, r.claim",
	/* Not beaten for $1 ms (never beaten: started longer ago). */
	[S_RUN_RESCUE] = "UPDATE runs SET state = 'crashed', finished_at = "
			 TX_NOW_MS ", error = '" KEEL__STORE_RESCUED_ERROR
			 "' || COALESCE(node, '(none)') || '"
			 KEEL__STORE_RESCUED_END "', claim = 0 WHERE "
			 "state = 'running' AND CASE WHEN heartbeat > 0 THEN "
			 "heartbeat ELSE started_at END < " TX_NOW_MS
			 " - $1::bigint RETURNING " RUN_COLS ", origin",
};

/* ------------------------------------------------------------------------
 * The store
 * ------------------------------------------------------------------------ */

/* Connections per store: reads beside a write or two, without holding
 * many sessions of a server that all nodes share. */
#define POOL_SIZE 4

struct conn {
	PGconn *pg;  /* NULL until first needed */
	int busy;    /* a call has it (under pg.mu) */
	int broken;  /* a connection error was seen: reset before next use */
	unsigned char prepared[N_SID];
};

struct pgs {
	struct keel_store base; /* first: a struct keel_store * is a pgs */
	pthread_mutex_t mu;	/* the pool's busy flags */
	pthread_cond_t freed;
	struct conn conns[POOL_SIZE];
	char *conninfo;
	char label[256]; /* "database 'x' on host:port", for messages */
	long lock_timeout_ms;
	long idle_timeout_ms; /* 0: never */
	int sync_full;
};

static struct pgs *PGS(struct keel_store *st)
{
	return (struct pgs *)st;
}

/* ---- errors ------------------------------------------------------------- */

/* msg on one line: libpq's texts end in newlines and may hold tabs. */
static void flat(char *out, size_t len, const char *msg)
{
	size_t n;

	snprintf(out, len, "%s", msg != NULL ? msg : "");
	for (char *p = out; *p != '\0'; p++)
		if (*p == '\n' || *p == '\t' || *p == '\r')
			*p = ' ';
	n = strlen(out);
	while (n > 0 && out[n - 1] == ' ')
		out[--n] = '\0';
}

static int sqlstate_errno(const char *state)
{
	static const struct {
		const char *state;
		int err;
	} map[] = {
		{ "23505", -EEXIST }, /* unique_violation */
		{ "23503", -ENOENT }, /* foreign_key_violation: no such job */
		{ "40001", -EBUSY },  /* serialization_failure: retry */
		{ "40P01", -EBUSY },  /* deadlock_detected: retry */
		{ "55P03", -EBUSY },  /* lock_not_available: lock_timeout */
		{ "53300", -EBUSY },  /* too_many_connections */
		{ "53200", -ENOMEM }, /* out_of_memory */
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(state, map[i].state) == 0)
			return map[i].err;
	return -EIO;
}

/*
 * The failure of a statement on c (res may be NULL: libpq could not even
 * make a result) as an errno, with the text kept for keel_store_errmsg. A
 * lost connection (no SQLSTATE, class 08, or the server ending the
 * session: 57P0x, and 25P03 for idle_timeout) is -EIO and marks c to be
 * reset at its next use.
 */
static int pg_fail(struct pgs *p, struct conn *c, const PGresult *res,
		   const char *what)
{
	const char *state = NULL, *primary = NULL;
	char msg[512];
	int rc;

	if (res != NULL) {
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	}
	flat(msg, sizeof(msg),
	     primary != NULL ? primary : PQerrorMessage(c->pg));
	if (PQstatus(c->pg) != CONNECTION_OK || state == NULL ||
	    strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
	    strcmp(state, "25P03") == 0) {
		c->broken = 1;
		keel__store_errf(&p->base,
				 "postgresql: %s: connection to %s failed: %s",
				 what, p->label, msg[0] ? msg : "no answer");
		return -EIO;
	}
	rc = sqlstate_errno(state);
	if (rc == -EBUSY)
		keel__store_errf(&p->base,
				 "postgresql: %s: database is busy (%s; "
				 "SQLSTATE %s)",
				 what, msg, state);
	else if (rc == -ENOMEM)
		keel__store_errf(&p->base, "postgresql: %s: out of memory (%s)",
				 what, msg);
	else
		keel__store_errf(&p->base, "postgresql: %s: %s (SQLSTATE %s)",
				 what, msg, state);
	return rc;
}

static int oom(struct pgs *p)
{
	keel__store_errf(&p->base, "out of memory");
	return -ENOMEM;
}

static int no_job(struct pgs *p, const char *name)
{
	keel__store_errf(&p->base, "no job '%s'", name);
	return -ENOENT;
}

/* 1 when s is valid UTF-8 (NULL is). A job name that is not cannot be
 * stored, so a lookup by it finds nothing; PostgreSQL would refuse the
 * parameter (22021) where SQLite answers "no such job". */
static int utf8_ok(const char *s)
{
	const char *clean;
	char *tmp = NULL;

	if (keel__store_utf8(s, &clean, &tmp) != 0)
		return 0; /* only a bad string needs memory */
	free(tmp);
	return tmp == NULL;
}

/* ---- the pool ----------------------------------------------------------- */

static void ignore_notice(void *arg, const char *message)
{
	/* Notices ("relation already exists, skipping") and the error a
	 * server sends an idle session it ends would go to stderr. */
	(void)arg;
	(void)message;
}

/* libpq's defaults for what conninfo does not say; keys after dbname are
 * what it cannot change (keel reads and writes UTF-8). */
static PGconn *pg_connect(const char *conninfo)
{
	static const char *const keys[] = {
		"connect_timeout", "application_name", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "dbname",
		"client_encoding", NULL,
	};
	const char *vals[] = {
		"10", "keeld", "30", "10", "3", conninfo, "UTF8", NULL,
	};

	return PQconnectdbParams(keys, vals, 1);
}

/* PQerrorMessage of a failed connect or reset. */
static int conn_failed(struct pgs *p, struct conn *c, const char *what)
{
	char msg[512];

	flat(msg, sizeof(msg), c->pg ? PQerrorMessage(c->pg) : "out of memory");
	keel__store_errf(&p->base, "postgresql: %s to %s failed: %s", what,
			 p->label, msg);
	c->broken = 1;
	return -EIO;
}

static int simple(struct pgs *p, struct conn *c, const char *text,
		  const char *what)
{
	PGresult *r = PQexec(c->pg, text);
	ExecStatusType s = PQresultStatus(r);
	int rc = 0;

	if (r == NULL || (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK))
		rc = pg_fail(p, c, r, what);
	PQclear(r);
	return rc;
}

/* A new session (a connect or a reset): nothing prepared, the session's
 * settings made again. */
static int conn_setup(struct pgs *p, struct conn *c)
{
	char text[192];

	PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
	memset(c->prepared, 0, sizeof(c->prepared));
	c->broken = 0;
	/* busy_timeout: how long a statement waits for a row another
	 * transaction holds (-EBUSY after). idle_timeout: how long the
	 * server lets this session sit in a transaction waiting for its next
	 * statement, which only a paused process does: ending the session
	 * frees the rows it locked (a fenced transaction's lease row, which
	 * a takeover needs). sync_full: commits wait for the WAL flush
	 * whatever the server's default; else the server's own
	 * synchronous_commit holds. */
	snprintf(text, sizeof(text),
		 "SET lock_timeout = %ld; "
		 "SET idle_in_transaction_session_timeout = %ld%s",
		 p->lock_timeout_ms, p->idle_timeout_ms,
		 p->sync_full ? "; SET synchronous_commit = on" : "");
	return simple(p, c, text, "set up the session");
}

/*
 * Reads what arrived on an idle session, without blocking. A server that
 * shut down, or an administrator who ended the session, sent an error and
 * closed the socket: libpq sees the error on one read and the end of the
 * stream on the next, which makes the status bad here, before a statement
 * is lost on the dead session. Nothing to read (the usual case) costs one
 * poll.
 */
static void drain_idle(PGconn *pg)
{
	for (int i = 0; i < 4 && PQstatus(pg) == CONNECTION_OK; i++) {
		struct pollfd pfd = { .fd = PQsocket(pg), .events = POLLIN };

		if (pfd.fd < 0 || poll(&pfd, 1, 0) != 1)
			break;
		if (!PQconsumeInput(pg))
			break; /* the end, or an error: the status says */
	}
}

static int conn_ready(struct pgs *p, struct conn *c)
{
	if (c->pg == NULL) {
		c->pg = pg_connect(p->conninfo);
		if (c->pg == NULL)
			return oom(p);
		if (PQstatus(c->pg) != CONNECTION_OK)
			return conn_failed(p, c, "connection");
		return conn_setup(p, c);
	}
	if (!c->broken && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
		drain_idle(c->pg);
	if (!c->broken && PQstatus(c->pg) == CONNECTION_OK)
		return 0;
	PQreset(c->pg);
	if (PQstatus(c->pg) != CONNECTION_OK)
		return conn_failed(p, c, "reconnection");
	return conn_setup(p, c);
}

/* A connection for one call (waits while all are busy), ready to use;
 * NULL with *rc when it cannot be (re)connected. conn_put gives it back. */
static struct conn *conn_get(struct pgs *p, int *rc)
{
	struct conn *c = NULL;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		/* An open one first: opening costs a round trip or more. */
		for (int i = 0; c == NULL && i < POOL_SIZE; i++)
			if (!p->conns[i].busy && p->conns[i].pg != NULL)
				c = &p->conns[i];
		for (int i = 0; c == NULL && i < POOL_SIZE; i++)
			if (!p->conns[i].busy)
				c = &p->conns[i];
		if (c != NULL)
			break;
		pthread_cond_wait(&p->freed, &p->mu);
	}
	c->busy = 1;
	pthread_mutex_unlock(&p->mu);
	/* Outside the pool's mutex: a connect may take a while. */
	*rc = conn_ready(p, c);
	if (*rc != 0) {
		pthread_mutex_lock(&p->mu);
		c->busy = 0;
		pthread_cond_signal(&p->freed);
		pthread_mutex_unlock(&p->mu);
		return NULL;
	}
	return c;
}

static void conn_put(struct pgs *p, struct conn *c)
{
	pthread_mutex_lock(&p->mu);
	c->busy = 0;
	pthread_cond_signal(&p->freed);
	pthread_mutex_unlock(&p->mu);
}

/* ---- statements ---------------------------------------------------------- */

#define MAX_PARAMS 17

/* Parameters as text (NULL = SQL NULL); numbers are kept in num. */
struct params {
	int n;
	const char *v[MAX_PARAMS];
	char num[MAX_PARAMS][24];
};

static void p_init(struct params *a)
{
	a->n = 0;
}

static void p_str(struct params *a, const char *s)
{
	a->v[a->n++] = s;
}

static void p_int(struct params *a, int64_t x)
{
	snprintf(a->num[a->n], sizeof(a->num[a->n]), "%" PRId64, x);
	a->v[a->n] = a->num[a->n];
	a->n++;
}

/*
 * Runs statement id on c with a's parameters; the result (the caller's to
 * PQclear) or NULL with *rc set. what names the operation in messages.
 */
static PGresult *run(struct pgs *p, struct conn *c, enum sid id,
		     const struct params *a, const char *what, int *rc)
{
	char name[16];
	PGresult *r;
	ExecStatusType s;

	snprintf(name, sizeof(name), "keel_%d", (int)id);
	if (!c->prepared[id]) {
		r = PQprepare(c->pg, name, sql[id], 0, NULL);
		if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) {
			*rc = pg_fail(p, c, r, "prepare");
			PQclear(r);
			return NULL;
		}
		PQclear(r);
		c->prepared[id] = 1;
	}
	r = PQexecPrepared(c->pg, name, a ? a->n : 0, a ? a->v : NULL, NULL,
			   NULL, 0);
	s = PQresultStatus(r);
	if (r != NULL && (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)) {
		*rc = 0;
		return r;
	}
	*rc = pg_fail(p, c, r, what);
	PQclear(r);
	return NULL;
}

/* Runs a statement whose rows are not wanted; *changed (may be NULL) gets
 * the number of rows it touched. */
static int run_cmd(struct pgs *p, struct conn *c, enum sid id,
		   const struct params *a, const char *what, int64_t *changed)
{
	int rc;
	PGresult *r = run(p, c, id, a, what, &rc);

	if (r == NULL)
		return rc;
	if (changed != NULL)
		*changed = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return 0;
}

static int tx_begin(struct pgs *p, struct conn *c)
{
	return simple(p, c, "BEGIN", "begin");
}

/* Commits when rc is 0, else (or when the commit fails) rolls back;
 * returns rc or the commit's error. Nothing is ever half-written. */
static int tx_end(struct pgs *p, struct conn *c, int rc)
{
	if (rc == 0) {
		rc = simple(p, c, "COMMIT", "commit");
		if (rc == 0)
			return 0;
	}
	if (PQstatus(c->pg) == CONNECTION_OK &&
	    PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
		char keep[1024];

		/* The rollback must not hide the reason of the failure. */
		snprintf(keep, sizeof(keep), "%s", keel__store_errmsg(&p->base));
		(void)simple(p, c, "ROLLBACK", "rollback");
		keel__store_errf(&p->base, "%s", keep);
	}
	return rc;
}

/* ---- reading rows --------------------------------------------------------- */

static int64_t get_i64(const PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static char *get_str(const PGresult *r, int row, int col, int *oomp)
{
	if (PQgetisnull(r, row, col))
		return NULL;
	return keel__store_strndup(PQgetvalue(r, row, col),
				   (size_t)PQgetlength(r, row, col), oomp);
}

/* A row of RUN_COLS (or RUN_COLS_LIST) into *r. */
static int read_run(struct pgs *p, const PGresult *res, int row,
		    struct keel_run *r)
{
	const char *state = PQgetvalue(res, row, 2);
	const char *trig = PQgetvalue(res, row, 3);
	int bad = 0;

	memset(r, 0, sizeof(*r));
	r->id = get_i64(res, row, 0);
	if (keel_run_state_parse(state, &r->state) != 0 ||
	    keel_run_trigger_parse(trig, &r->trigger) != 0) {
		keel__store_errf(&p->base,
				 "run %lld: unknown state '%s' or trigger '%s'",
				 (long long)r->id, state, trig);
		return -EIO;
	}
	r->job = get_str(res, row, 1, &bad);
	r->attempt = (int)get_i64(res, row, 4);
	r->scheduled_at = get_i64(res, row, 5);
	r->created_at = get_i64(res, row, 6);
	r->not_before = get_i64(res, row, 7);
	r->started_at = get_i64(res, row, 8);
	r->finished_at = get_i64(res, row, 9);
	r->exit_code = (int)get_i64(res, row, 10);
	r->signal = (int)get_i64(res, row, 11);
	r->http_status = (int)get_i64(res, row, 12);
	r->error = get_str(res, row, 13, &bad);
	r->output = get_str(res, row, 14, &bad);
	snprintf(r->trace_id, sizeof(r->trace_id), "%s",
		 PQgetvalue(res, row, 15));
	r->node = get_str(res, row, 16, &bad);
	r->claim = (uint64_t)get_i64(res, row, 17);
	if (bad || r->job == NULL) {
		keel_run_clear(r);
		return oom(p);
	}
	return 0;
}

/* Every row of res (RUN_COLS) into a new array. */
static int read_runs(struct pgs *p, const PGresult *res, struct keel_run **out,
		     size_t *n)
{
	int rows = PQntuples(res), rc = 0, i;
	struct keel_run *v;

	if (rows == 0)
		return 0;
	v = calloc((size_t)rows, sizeof(*v));
	if (v == NULL)
		return oom(p);
	for (i = 0; i < rows && rc == 0; i++)
		rc = read_run(p, res, i, &v[i]);
	if (rc != 0) {
		/* calloc'd: the rows not read are empty runs. */
		keel_store_runs_free(v, (size_t)rows);
		return rc;
	}
	*out = v;
	*n = (size_t)rows;
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

/* In the put's transaction, locking the row: the stored job (NULL when
 * there is none or its text is corrupt) and its last_tick. */
static int job_get_w(struct pgs *p, struct conn *c, const char *name,
		     int *exists, struct keel_job **old, int64_t *last_tick)
{
	struct params a;
	PGresult *r;
	int rc;

	*exists = 0;
	*old = NULL;
	p_init(&a);
	p_str(&a, name);
	r = run(p, c, S_JOB_GET_W, &a, "read job", &rc);
	if (r == NULL)
		return rc;
	if (PQntuples(r) > 0) {
		*exists = 1;
		*last_tick = get_i64(r, 0, 1);
		rc = keel__store_job_decode(&p->base, name,
					    PQgetvalue(r, 0, 0), old);
		/* A corrupt definition is replaced by the new one: putting
		 * the job again is how an operator repairs it. */
		if (rc == -EIO)
			rc = 0;
	}
	PQclear(r);
	return rc;
}

static int job_write(struct pgs *p, struct conn *c, enum sid id,
		     const char *name, const char *spec, int64_t last_tick,
		     int64_t now_ms)
{
	struct params a;

	p_init(&a);
	p_str(&a, name);
	p_str(&a, spec);
	p_int(&a, last_tick);
	p_int(&a, now_ms);
	return run_cmd(p, c, id, &a, "write job", NULL);
}

/* One attempt at job_put, in one transaction; -ECANCELED: unchanged. */
static int job_put_once(struct pgs *p, struct conn *c, const struct keel_job *j,
			const char *spec, int64_t now_s,
			enum keel_store_put *result)
{
	struct keel_job *old = NULL;
	int64_t last_tick = 0;
	int rc, exists = 0;

	rc = tx_begin(p, c);
	if (rc != 0)
		return rc;
	rc = job_get_w(p, c, j->name, &exists, &old, &last_tick);
	if (rc == 0 && !exists) {
		rc = job_write(p, c, S_JOB_INSERT, j->name, spec, now_s,
			       now_s * 1000);
		*result = KEEL_STORE_CREATED;
	} else if (rc == 0 && old != NULL && keel_job_equal(old, j)) {
		*result = KEEL_STORE_UNCHANGED;
		rc = -ECANCELED; /* nothing to write: rolled back */
	} else if (rc == 0) {
		/* The ticks of the old schedule are not owed by the new one. */
		if (old == NULL || !streq(old->schedule, j->schedule) ||
		    !streq(old->timezone, j->timezone))
			last_tick = now_s;
		rc = job_write(p, c, S_JOB_UPDATE, j->name, spec, last_tick,
			       now_s * 1000);
		*result = KEEL_STORE_REPLACED;
	}
	keel_job_free(old);
	return tx_end(p, c, rc);
}

static int pg_job_put(struct keel_store *st, const struct keel_job *j,
		      int64_t now_s, enum keel_store_put *result)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	char *spec = NULL;
	int rc;

	rc = keel__store_job_encode(st, j, &spec);
	if (rc != 0)
		return rc;
	c = conn_get(p, &rc);
	if (c != NULL) {
		/* Two nodes creating the same job at once: the second's
		 * insert meets the first's row (-EEXIST) once the first
		 * commits; again, it finds the row and is a replace. */
		for (int i = 0; i < 3; i++) {
			rc = job_put_once(p, c, j, spec, now_s, result);
			if (rc != -EEXIST)
				break;
		}
		conn_put(p, c);
	}
	free(spec);
	return rc == -ECANCELED ? 0 : rc;
}

static int pg_job_delete(struct keel_store *st, const char *name)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	int64_t n = 0;
	int rc;

	if (!utf8_ok(name))
		return no_job(p, name);
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, name);
	/* One statement: the job and (cascade) its runs go together. */
	rc = run_cmd(p, c, S_JOB_DELETE, &a, "delete job", &n);
	conn_put(p, c);
	if (rc == 0 && n == 0)
		rc = no_job(p, name);
	return rc;
}

/* 1 when job name exists, 0 when not, or a negative errno. */
static int job_exists(struct pgs *p, struct conn *c, const char *name)
{
	struct params a;
	PGresult *r;
	int rc;

	p_init(&a);
	p_str(&a, name);
	r = run(p, c, S_JOB_EXISTS, &a, "read job", &rc);
	if (r == NULL)
		return rc;
	rc = PQntuples(r) > 0;
	PQclear(r);
	return rc;
}

static int pg_job_pause(struct keel_store *st, const char *name, int paused,
			int64_t now_s)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	int64_t n = 0;
	int rc;

	if (!utf8_ok(name))
		return no_job(p, name);
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, name);
	p_int(&a, now_s * 1000);
	if (!paused)
		p_int(&a, now_s);
	/* One statement; the look that follows only says why it changed
	 * nothing: no such job, or already in that state (which changes
	 * nothing, last_tick included). */
	rc = run_cmd(p, c, paused ? S_JOB_PAUSE : S_JOB_RESUME, &a,
		     paused ? "pause job" : "resume job", &n);
	if (rc == 0 && n == 0) {
		rc = job_exists(p, c, name);
		rc = rc == 1 ? 0 : rc == 0 ? no_job(p, name) : rc;
	}
	conn_put(p, c);
	return rc;
}

/* A row of S_JOB_GET / S_JOB_LIST into *out. */
static int read_job(struct pgs *p, const PGresult *r, int row,
		    struct keel_store_job *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	rc = keel__store_job_decode(&p->base, PQgetvalue(r, row, 0),
				    PQgetvalue(r, row, 1), &out->job);
	if (rc != 0)
		return rc;
	out->paused = PQgetvalue(r, row, 2)[0] == 't';
	out->last_tick = get_i64(r, row, 3);
	out->created_at = get_i64(r, row, 4);
	out->updated_at = get_i64(r, row, 5);
	return 0;
}

static int pg_job_get(struct keel_store *st, const char *name,
		      struct keel_store_job *out)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	PGresult *r;
	int rc;

	if (!utf8_ok(name))
		return no_job(p, name);
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, name);
	r = run(p, c, S_JOB_GET, &a, "read job", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	rc = PQntuples(r) > 0 ? read_job(p, r, 0, out) : no_job(p, name);
	PQclear(r);
	return rc;
}

static int pg_job_list(struct keel_store *st, struct keel_store_job **out,
		       size_t *n)
{
	struct pgs *p = PGS(st);
	struct keel_store_job *v;
	struct conn *c;
	PGresult *r;
	int rc = 0, rows, i;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	r = run(p, c, S_JOB_LIST, NULL, "list jobs", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	rows = PQntuples(r);
	v = rows > 0 ? calloc((size_t)rows, sizeof(*v)) : NULL;
	if (rows > 0 && v == NULL) {
		PQclear(r);
		return oom(p);
	}
	/* One corrupt row fails the list (-EIO naming the job): keeld must
	 * not run with a job silently missing. */
	for (i = 0; i < rows && rc == 0; i++)
		rc = read_job(p, r, i, &v[i]);
	PQclear(r);
	if (rc != 0) {
		keel_store_jobs_free(v, (size_t)rows);
		return rc;
	}
	*out = v;
	*n = (size_t)rows;
	return 0;
}

/* ------------------------------------------------------------------------
 * Runs: writes
 * ------------------------------------------------------------------------ */

/* -ENOENT or -ESTALE for a run that an UPDATE ... WHERE state ... (and
 * claim, when claim is not 0) missed. The state read is the latest
 * committed one: a run never goes back to queued or running, so the
 * answer stays true. */
static int run_not_in(struct pgs *p, struct conn *c, int64_t id,
		      const char *want, uint64_t claim)
{
	struct params a;
	PGresult *r;
	int rc;

	p_init(&a);
	p_int(&a, id);
	r = run(p, c, S_RUN_STATE, &a, "read run", &rc);
	if (r == NULL)
		return rc;
	if (PQntuples(r) == 0) {
		keel__store_errf(&p->base, "no run %lld", (long long)id);
		rc = -ENOENT;
	} else {
		const char *state = PQgetvalue(r, 0, 0);
		uint64_t now_claim = (uint64_t)get_i64(r, 0, 1);

		if (claim != 0 && now_claim != claim &&
		    (strcmp(state, "queued") == 0 ||
		     strcmp(state, "running") == 0))
			keel__store_errf(&p->base,
					 "run %lld: claim %llu is stale (the "
					 "run's claim is %llu)",
					 (long long)id,
					 (unsigned long long)claim,
					 (unsigned long long)now_claim);
		else
			keel__store_errf(&p->base, "run %lld is %s, not %s",
					 (long long)id, state, want);
		rc = -ESTALE;
	}
	PQclear(r);
	return rc;
}

/*
 * Inserts r (of job, which overrides r->job when not NULL) and writes its
 * id. origin: the run's origin; NULL means its own trigger, except for a
 * retry, whose origin is its predecessor's (the statement looks it up).
 * Texts that are not valid UTF-8 are stored cleaned (U+FFFD).
 */
static int insert_run(struct pgs *p, struct conn *c, struct keel_run *r,
		      const char *job, const char *origin)
{
	const char *error, *output, *node, *trace;
	char *t_error = NULL, *t_output = NULL, *t_node = NULL, *t_trace = NULL;
	struct params a;
	PGresult *res;
	int rc;

	if (job == NULL)
		job = r->job;
	if (!utf8_ok(job))
		return no_job(p, job);
	if (origin == NULL && r->trigger != KEEL_RUN_RETRY)
		origin = keel_run_trigger_name(r->trigger);
	if (keel__store_utf8(r->error, &error, &t_error) != 0 ||
	    keel__store_utf8(r->output, &output, &t_output) != 0 ||
	    keel__store_utf8(r->node, &node, &t_node) != 0 ||
	    keel__store_utf8(r->trace_id, &trace, &t_trace) != 0) {
		rc = oom(p);
		goto out;
	}
	p_init(&a);
	p_str(&a, job);
	p_str(&a, keel_run_state_name(r->state));
	p_str(&a, keel_run_trigger_name(r->trigger));
	p_str(&a, origin);
	p_int(&a, r->attempt);
	p_int(&a, r->scheduled_at);
	p_int(&a, r->created_at);
	p_int(&a, r->not_before);
	p_int(&a, r->started_at);
	p_int(&a, r->finished_at);
	p_int(&a, r->exit_code);
	p_int(&a, r->signal);
	p_int(&a, r->http_status);
	p_str(&a, error);
	p_str(&a, output);
	p_str(&a, trace);
	p_str(&a, node);
	res = run(p, c, S_RUN_INSERT, &a, "insert run", &rc);
	if (res != NULL) {
		r->id = get_i64(res, 0, 0);
		PQclear(res);
	} else if (rc == -EEXIST) {
		keel__store_errf(&p->base,
				 "job '%s': the run of the tick at %lld ms, "
				 "attempt %d, already exists",
				 job, (long long)r->scheduled_at, r->attempt);
	} else if (rc == -ENOENT) {
		rc = no_job(p, job);
	}
out:
	free(t_error);
	free(t_output);
	free(t_node);
	free(t_trace);
	return rc;
}

static int tick_job(struct pgs *p, struct conn *c,
		    const struct keel_store_tick *t)
{
	struct params a;
	int64_t n = 0;
	int rc;

	if (!utf8_ok(t->job))
		return no_job(p, t->job);
	p_init(&a);
	p_str(&a, t->job);
	p_int(&a, t->last_tick);
	rc = run_cmd(p, c, S_TICK_JOB, &a, "move last_tick", &n);
	if (rc == 0 && n == 0)
		rc = no_job(p, t->job);
	return rc;
}

/* The ticks, in the caller's transaction. A retry's origin is looked up
 * by the insert (its predecessor's, stored before or earlier in the
 * batch). */
static int ticks_tx(struct pgs *p, struct conn *c,
		    struct keel_store_tick *ticks, size_t n)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = tick_job(p, c, &ticks[i]);
		for (size_t k = 0; rc == 0 && k < ticks[i].n_runs; k++)
			rc = insert_run(p, c, &ticks[i].runs[k], ticks[i].job,
					NULL);
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

static int pg_ticks(struct keel_store *st, struct keel_store_tick *ticks,
		    size_t n)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	int rc;

	c = conn_get(p, &rc);
	if (c != NULL) {
		rc = tx_begin(p, c);
		if (rc == 0)
			rc = ticks_tx(p, c, ticks, n);
		rc = tx_end(p, c, rc);
		conn_put(p, c);
	}
	if (rc != 0) /* rolled back */
		ticks_undo_ids(ticks, n);
	return rc;
}

static int pg_run_insert(struct keel_store *st, struct keel_run *r)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	/* One statement, a retry's origin looked up inside it. */
	rc = insert_run(p, c, r, NULL, NULL);
	conn_put(p, c);
	if (rc != 0)
		r->id = 0;
	return rc;
}

/* queued -> running for run id; -ESTALE, -ENOENT. */
static int start_one(struct pgs *p, struct conn *c, int64_t id,
		     int64_t started_at, const char *node)
{
	struct params a;
	int64_t n = 0;
	int rc;

	p_init(&a);
	p_int(&a, id);
	p_int(&a, started_at);
	p_str(&a, node);
	rc = run_cmd(p, c, S_RUN_START, &a, "start run", &n);
	if (rc == 0 && n == 0)
		rc = run_not_in(p, c, id, "queued", 0);
	return rc;
}

static int pg_run_start(struct keel_store *st, int64_t id, int64_t started_at,
			const char *node)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	const char *clean;
	char *tmp = NULL;
	int rc;

	if (keel__store_utf8(node, &clean, &tmp) != 0)
		return oom(p);
	c = conn_get(p, &rc);
	if (c != NULL) {
		/* One statement; the look that may follow only says why it
		 * changed nothing (a run never goes back to queued). */
		rc = start_one(p, c, id, started_at, clean);
		conn_put(p, c);
	}
	free(tmp);
	return rc;
}

/* An item's own refusal in a batch (the single call's answer): the others
 * go on. Anything else fails the batch as a whole. */
static int item_refusal(int rc)
{
	return rc == -ESTALE || rc == -ENOENT || rc == -EEXIST;
}

static int pg_runs_start(struct keel_store *st, const int64_t *ids, size_t n,
			 int64_t started_at, const char *node, int *rcs)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	const char *clean;
	char *tmp = NULL;
	int rc;

	if (keel__store_utf8(node, &clean, &tmp) != 0)
		return oom(p);
	c = conn_get(p, &rc);
	if (c != NULL) {
		rc = tx_begin(p, c);
		/* An update that changes nothing is no error, and aborts
		 * nothing: no savepoint needed. */
		for (size_t i = 0; rc == 0 && i < n; i++) {
			rcs[i] = start_one(p, c, ids[i], started_at, clean);
			if (!item_refusal(rcs[i]))
				rc = rcs[i];
		}
		rc = tx_end(p, c, rc);
		conn_put(p, c);
	}
	free(tmp);
	if (rc != 0)
		for (size_t i = 0; i < n; i++)
			rcs[i] = rc;
	return rc;
}

/* The finish of r; *origin (16 bytes) gets the run's origin. */
static int finish_run(struct pgs *p, struct conn *c, const struct keel_run *r,
		      char *origin, size_t origin_len)
{
	const char *error, *output;
	char *t_error = NULL, *t_output = NULL;
	struct params a;
	PGresult *res;
	int rc;

	if (keel__store_utf8(r->error, &error, &t_error) != 0 ||
	    keel__store_utf8(r->output, &output, &t_output) != 0) {
		rc = oom(p);
		goto out;
	}
	p_init(&a);
	p_int(&a, r->id);
	p_str(&a, keel_run_state_name(r->state));
	p_int(&a, r->finished_at);
	p_int(&a, r->exit_code);
	p_int(&a, r->signal);
	p_int(&a, r->http_status);
	p_str(&a, error);
	p_str(&a, output);
	p_int(&a, (int64_t)r->claim);
	res = run(p, c, S_RUN_FINISH, &a, "finish run", &rc);
	if (res != NULL) {
		if (PQntuples(res) == 0)
			rc = run_not_in(p, c, r->id, "queued or running",
					r->claim);
		else
			snprintf(origin, origin_len, "%s",
				 PQgetvalue(res, 0, 0));
		PQclear(res);
	}
out:
	free(t_error);
	free(t_output);
	return rc;
}

/* One finish and its follow-up, in the caller's transaction. */
static int finish_one(struct pgs *p, struct conn *c, const struct keel_run *r,
		      struct keel_run *next)
{
	char origin[16];
	int rc = finish_run(p, c, r, origin, sizeof(origin));

	/* A retry belongs to the same tick as the run it follows. */
	if (rc == 0 && next != NULL)
		rc = insert_run(p, c, next, NULL,
				next->trigger == KEEL_RUN_RETRY ? origin : NULL);
	return rc;
}

static int pg_run_finish(struct keel_store *st, const struct keel_run *r,
			 struct keel_run *next)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		goto out;
	if (next == NULL) {
		/* One statement: no transaction of its own needed. */
		rc = finish_one(p, c, r, NULL);
		conn_put(p, c);
		return rc;
	}
	rc = tx_begin(p, c);
	if (rc == 0)
		rc = finish_one(p, c, r, next);
	rc = tx_end(p, c, rc);
	conn_put(p, c);
out:
	if (rc != 0 && next != NULL)
		next->id = 0;
	return rc;
}

/*
 * Item i of a batch, under a savepoint when it has a follow-up: a refused
 * follow-up (a unique or foreign key violation aborts the whole
 * transaction in PostgreSQL, unlike SQLite) takes its own finish back with
 * it, and only that. Without one, a refusal is an update that changed
 * nothing: nothing to take back.
 */
static int finish_item(struct pgs *p, struct conn *c,
		       struct keel_store_finish *it, int *rc_item)
{
	int sp = it->next != NULL, rc = 0;

	if (sp)
		rc = simple(p, c, "SAVEPOINT keel_item", "savepoint");
	if (rc != 0)
		return rc;
	*rc_item = finish_one(p, c, it->run, it->next);
	if (*rc_item != 0 && !item_refusal(*rc_item))
		return *rc_item;
	if (*rc_item != 0 && it->next != NULL)
		it->next->id = 0;
	if (!sp)
		return 0;
	if (*rc_item != 0) {
		char keep[1024];

		/* The item's reason stays the thread's message. */
		snprintf(keep, sizeof(keep), "%s", keel__store_errmsg(&p->base));
		rc = simple(p, c, "ROLLBACK TO SAVEPOINT keel_item",
			    "rollback to savepoint");
		if (rc != 0)
			return rc;
		keel__store_errf(&p->base, "%s", keep);
	}
	return simple(p, c, "RELEASE SAVEPOINT keel_item", "release savepoint");
}

static int pg_runs_finish(struct keel_store *st,
			  struct keel_store_finish *items, size_t n, int *rcs)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	int rc;

	c = conn_get(p, &rc);
	if (c != NULL) {
		rc = tx_begin(p, c);
		for (size_t i = 0; rc == 0 && i < n; i++)
			rc = finish_item(p, c, &items[i], &rcs[i]);
		rc = tx_end(p, c, rc);
		conn_put(p, c);
	}
	if (rc != 0) {
		for (size_t i = 0; i < n; i++) {
			rcs[i] = rc;
			if (items[i].next != NULL)
				items[i].next->id = 0;
		}
	}
	return rc;
}

/* A run as recover crashed it, with its origin. */
struct crashed {
	struct keel_run run;
	char origin[16];
};

static int by_id(const void *a, const void *b)
{
	const struct crashed *x = a, *y = b;

	return x->run.id < y->run.id ? -1 : x->run.id > y->run.id;
}

/* The runs statement id crashed (one statement; RUN_COLS, origin), as
 * they now are, oldest first. */
static int crash_rows(struct pgs *p, struct conn *c, enum sid id,
		      const struct params *a, struct crashed **out, size_t *n)
{
	struct crashed *v = NULL;
	PGresult *r;
	int rc = 0, rows, i;

	r = run(p, c, id, a, "crash running runs", &rc);
	if (r == NULL)
		return rc;
	rows = PQntuples(r);
	if (rows > 0) {
		v = calloc((size_t)rows, sizeof(*v));
		if (v == NULL)
			rc = oom(p);
	}
	for (i = 0; rc == 0 && i < rows; i++) {
		rc = read_run(p, r, i, &v[i].run);
		if (rc == 0)
			snprintf(v[i].origin, sizeof(v[i].origin), "%s",
				 PQgetvalue(r, i, N_RUN_COLS));
	}
	PQclear(r);
	if (rc != 0) {
		for (int k = 0; v != NULL && k < rows; k++)
			keel_run_clear(&v[k].run);
		free(v);
		return rc;
	}
	if (rows > 1)
		qsort(v, (size_t)rows, sizeof(*v), by_id);
	*out = v;
	*n = (size_t)rows;
	return 0;
}

/* decide's answer for k, inserted when it asked for a retry; what names
 * the call in messages. */
static int decide_next(struct pgs *p, struct conn *c, struct crashed *k,
		       int (*decide)(const struct keel_run *crashed,
				     struct keel_run *next, void *ud),
		       void *ud, const char *what)
{
	struct keel_run next;
	int rc = keel__store_decide(&p->base, &k->run, decide, ud, what, &next);

	if (rc <= 0)
		return rc;
	rc = insert_run(p, c, &next, NULL,
			next.trigger == KEEL_RUN_RETRY ? k->origin : NULL);
	keel_run_clear(&next);
	return rc;
}

static void crashed_free(struct crashed *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		keel_run_clear(&v[i].run);
	free(v);
}

static int pg_recover(struct keel_store *st, const char *node, int64_t now_ms,
		      int (*decide)(const struct keel_run *crashed,
				    struct keel_run *next, void *ud),
		      void *ud, size_t *n_crashed)
{
	struct pgs *p = PGS(st);
	struct crashed *v = NULL;
	struct params a;
	struct conn *c;
	size_t n = 0, i;
	int rc;

	if (node != NULL && !utf8_ok(node))
		return 0; /* no such node, no runs */
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_int(&a, now_ms);
	p_str(&a, KEEL__STORE_CRASHED_ERROR);
	if (node != NULL)
		p_str(&a, node);
	/* decide runs inside the transaction, with this connection taken:
	 * it must not call the store (keel/store.h says so). */
	rc = tx_begin(p, c);
	if (rc == 0)
		rc = crash_rows(p, c,
				node != NULL ? S_RUN_CRASH_NODE : S_RUN_CRASH_ALL,
				&a, &v, &n);
	for (i = 0; rc == 0 && decide != NULL && i < n; i++)
		rc = decide_next(p, c, &v[i], decide, ud, "recover");
	rc = tx_end(p, c, rc);
	conn_put(p, c);
	crashed_free(v, n);
	if (rc == 0)
		*n_crashed = n;
	return rc;
}

static int pg_prune(struct keel_store *st, const char *job, int keep_runs,
		    int64_t before_ms, size_t *deleted)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	int64_t n = 0;
	int rc;

	if (!utf8_ok(job))
		return 0; /* no such job, no runs */
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, job);
	p_int(&a, keep_runs < 0 ? INT64_MAX : keep_runs);
	p_int(&a, before_ms);
	/* One statement: all of it or none. */
	rc = run_cmd(p, c, S_PRUNE, &a, "prune runs", &n);
	conn_put(p, c);
	if (rc == 0)
		*deleted = (size_t)n;
	return rc;
}

/* ------------------------------------------------------------------------
 * Runs: reads
 * ------------------------------------------------------------------------ */

static int pg_run_get(struct keel_store *st, int64_t id, struct keel_run *out)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	PGresult *r;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_int(&a, id);
	r = run(p, c, S_RUN_GET, &a, "read run", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	if (PQntuples(r) > 0) {
		rc = read_run(p, r, 0, out);
	} else {
		keel__store_errf(st, "no run %lld", (long long)id);
		rc = -ENOENT;
	}
	PQclear(r);
	return rc;
}

static int pg_run_list(struct keel_store *st,
		       const struct keel_store_run_query *q,
		       struct keel_run **out, size_t *n)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	enum sid id;
	PGresult *r;
	int rc;

	if (q->job != NULL && !utf8_ok(q->job))
		return 0; /* no such job, no runs */
	if (q->job != NULL)
		id = q->state >= 0 ? S_RUN_LIST_JOB_STATE : S_RUN_LIST_JOB;
	else
		id = q->state >= 0 ? S_RUN_LIST_STATE : S_RUN_LIST;
	p_init(&a);
	p_int(&a, q->before_id > 0 ? q->before_id : INT64_MAX);
	p_int(&a, q->limit);
	p_str(&a, q->with_output ? "true" : "false");
	if (q->job != NULL)
		p_str(&a, q->job);
	if (q->state >= 0)
		p_str(&a, keel_run_state_name((enum keel_run_state)q->state));
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	r = run(p, c, id, &a, "list runs", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	rc = read_runs(p, r, out, n);
	PQclear(r);
	return rc;
}

static int pg_run_active(struct keel_store *st, struct keel_run **out,
			 size_t *n)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	PGresult *r;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	r = run(p, c, S_RUN_ACTIVE, NULL, "list active runs", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	rc = read_runs(p, r, out, n);
	PQclear(r);
	return rc;
}

static int pg_run_counts(struct keel_store *st, const char *job,
			 int64_t counts[KEEL_RUN_NSTATES])
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	PGresult *r;
	int rc;

	if (job != NULL && !utf8_ok(job))
		return 0; /* no such job, no runs */
	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	if (job != NULL)
		p_str(&a, job);
	r = run(p, c, job != NULL ? S_COUNTS_JOB : S_COUNTS, &a, "count runs",
		&rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
		const char *t = PQgetvalue(r, i, 0);
		enum keel_run_state state;

		if (keel_run_state_parse(t, &state) != 0) {
			keel__store_errf(st, "runs with an unknown state '%s'",
					 t);
			rc = -EIO;
			break;
		}
		counts[state] = get_i64(r, i, 1);
	}
	PQclear(r);
	return rc;
}

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

static int pg_event_add(struct keel_store *st, int64_t at_ms,
			const char *level, const char *kind, const char *job,
			int64_t run_id, const char *message)
{
	struct pgs *p = PGS(st);
	const char *t[4];
	char *tmp[4] = { NULL, NULL, NULL, NULL };
	struct params a;
	struct conn *c = NULL;
	int rc = 0;

	if (keel__store_utf8(level, &t[0], &tmp[0]) != 0 ||
	    keel__store_utf8(kind, &t[1], &tmp[1]) != 0 ||
	    keel__store_utf8(job, &t[2], &tmp[2]) != 0 ||
	    keel__store_utf8(message, &t[3], &tmp[3]) != 0)
		rc = oom(p);
	if (rc == 0)
		c = conn_get(p, &rc);
	if (rc == 0) {
		p_init(&a);
		p_int(&a, at_ms);
		p_str(&a, t[0]);
		p_str(&a, t[1]);
		p_str(&a, t[2]);
		p_int(&a, run_id);
		p_str(&a, t[3]);
		p_int(&a, KEEL__STORE_EVENTS_KEEP);
		p_int(&a, KEEL__STORE_EVENTS_TRIM);
		rc = run_cmd(p, c, S_EVENT_ADD, &a, "add event", NULL);
		conn_put(p, c);
	}
	for (int i = 0; i < 4; i++)
		free(tmp[i]);
	return rc;
}

static int read_event(struct pgs *p, const PGresult *r, int row,
		      struct keel_store_event *e)
{
	int bad = 0;

	memset(e, 0, sizeof(*e));
	e->id = get_i64(r, row, 0);
	e->at = get_i64(r, row, 1);
	e->level = get_str(r, row, 2, &bad);
	e->kind = get_str(r, row, 3, &bad);
	e->job = get_str(r, row, 4, &bad);
	e->run_id = get_i64(r, row, 5);
	e->message = get_str(r, row, 6, &bad);
	if (bad) {
		free(e->level);
		free(e->kind);
		free(e->job);
		free(e->message);
		memset(e, 0, sizeof(*e));
		return oom(p);
	}
	return 0;
}

static int pg_event_list(struct keel_store *st, int64_t before_id, int limit,
			 struct keel_store_event **out, size_t *n)
{
	struct pgs *p = PGS(st);
	struct keel_store_event *v = NULL;
	struct params a;
	struct conn *c;
	PGresult *r;
	int rc = 0, rows, i;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_int(&a, before_id > 0 ? before_id : INT64_MAX);
	p_int(&a, limit);
	r = run(p, c, S_EVENT_LIST, &a, "list events", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	rows = PQntuples(r);
	if (rows > 0) {
		v = calloc((size_t)rows, sizeof(*v));
		if (v == NULL)
			rc = oom(p);
	}
	for (i = 0; rc == 0 && i < rows; i++)
		rc = read_event(p, r, i, &v[i]);
	PQclear(r);
	if (rc != 0) {
		keel_store_events_free(v, v != NULL ? (size_t)rows : 0);
		return rc;
	}
	*out = v;
	*n = (size_t)rows;
	return 0;
}

/* ------------------------------------------------------------------------
 * The cluster
 * ------------------------------------------------------------------------ */

/* Row 0 of S_LEASE_TAKE or S_LEASE_GET into *out. */
static void read_lease(const PGresult *r, struct keel_store_lease *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->holder, sizeof(out->holder), "%s", PQgetvalue(r, 0, 0));
	out->term = get_i64(r, 0, 1);
	out->expires_at = get_i64(r, 0, 2);
	out->now = get_i64(r, 0, 3);
}

static int pg_lease_acquire(struct keel_store *st, const char *node,
			    int64_t ttl_ms, struct keel_store_lease *out)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	PGresult *r;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, node);
	p_int(&a, ttl_ms);
	r = run(p, c, S_LEASE_TAKE, &a, "take the lease", &rc);
	if (r != NULL && PQntuples(r) == 0) {
		/* Another node holds it: as it is now. */
		PQclear(r);
		r = run(p, c, S_LEASE_GET, NULL, "read the lease", &rc);
	}
	conn_put(p, c);
	if (r == NULL)
		return rc;
	if (PQntuples(r) > 0)
		read_lease(r, out);
	PQclear(r);
	return 0;
}

static int pg_lease_release(struct keel_store *st, const char *node,
			    int64_t term)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	int64_t n = 0;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, node);
	p_int(&a, term);
	rc = run_cmd(p, c, S_LEASE_RELEASE, &a, "release the lease", &n);
	conn_put(p, c);
	if (rc == 0 && n == 0) {
		keel__store_errf(st, "node '%s' does not hold the lease at term "
				     "%lld",
				 node, (long long)term);
		rc = -ESTALE;
	}
	return rc;
}

/* In the caller's transaction: term holds the lease, and keeps it until
 * the transaction ends (the row stays locked); else -ESTALE. */
static int fence_tx(struct pgs *p, struct conn *c, int64_t term)
{
	struct params a;
	PGresult *r;
	int rc;

	p_init(&a);
	p_int(&a, term);
	r = run(p, c, S_LEASE_CHECK, &a, "check the lease", &rc);
	if (r == NULL)
		return rc;
	if (PQntuples(r) == 0) {
		keel__store_errf(&p->base, "term %lld no longer holds the lease",
				 (long long)term);
		rc = -ESTALE;
	}
	PQclear(r);
	return rc;
}

static int pg_ticks_fenced(struct keel_store *st, int64_t term,
			   struct keel_store_tick *ticks, size_t n)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	int rc;

	c = conn_get(p, &rc);
	if (c != NULL) {
		rc = tx_begin(p, c);
		if (rc == 0)
			rc = fence_tx(p, c, term);
		if (rc == 0)
			rc = ticks_tx(p, c, ticks, n);
		rc = tx_end(p, c, rc);
		conn_put(p, c);
	}
	if (rc != 0)
		ticks_undo_ids(ticks, n);
	return rc;
}

static int pg_node_beat(struct keel_store *st, const char *node, int running,
			const char *tags_json, int64_t *now_ms)
{
	struct pgs *p = PGS(st);
	struct params a;
	struct conn *c;
	PGresult *r;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_str(&a, node);
	p_int(&a, running);
	p_str(&a, tags_json);
	r = run(p, c, S_NODE_BEAT, &a, "beat", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	*now_ms = get_i64(r, 0, 0);
	PQclear(r);
	return 0;
}

static int pg_node_list(struct keel_store *st, int64_t forget_ms,
			struct keel_store_node **out, size_t *n)
{
	struct pgs *p = PGS(st);
	struct keel_store_node *v = NULL;
	struct params a;
	struct conn *c;
	PGresult *r = NULL;
	int rc, rows = 0, i;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	if (forget_ms > 0) {
		p_init(&a);
		p_int(&a, forget_ms);
		rc = run_cmd(p, c, S_NODE_FORGET, &a, "forget nodes", NULL);
	}
	if (rc == 0)
		r = run(p, c, S_NODE_LIST, NULL, "list nodes", &rc);
	conn_put(p, c);
	if (r == NULL)
		return rc;
	rows = PQntuples(r);
	if (rows > 0) {
		v = calloc((size_t)rows, sizeof(*v));
		if (v == NULL)
			rc = oom(p);
	}
	for (i = 0; rc == 0 && i < rows; i++) {
		int bad = 0;

		v[i].id = get_str(r, i, 0, &bad);
		v[i].last_heartbeat = get_i64(r, i, 1);
		v[i].started_at = get_i64(r, i, 2);
		v[i].running = (int)get_i64(r, i, 3);
		if (bad)
			rc = oom(p);
		else
			rc = keel__store_tags_parse(st, PQgetvalue(r, i, 4),
						    &v[i].tags, &v[i].n_tags);
	}
	PQclear(r);
	if (rc != 0) {
		keel_store_nodes_free(v, v != NULL ? (size_t)rows : 0);
		return rc;
	}
	*out = v;
	*n = (size_t)rows;
	return 0;
}

/* Claimed runs in the order they were due. */
static int by_due(const void *a, const void *b)
{
	const struct keel_run *x = a, *y = b;

	if (x->not_before != y->not_before)
		return x->not_before < y->not_before ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The claim's two steps (S_CLAIM_LOCK, S_CLAIM), in the caller's
 * transaction. */
static int claim_tx(struct pgs *p, struct conn *c, const char *node,
		    const char *tags_json, int max, struct keel_run **out,
		    size_t *n)
{
	const char **names = NULL;
	char *locked = NULL;
	struct params a;
	PGresult *jobs, *r;
	int rc, rows;

	p_init(&a);
	p_str(&a, tags_json);
	p_int(&a, max);
	jobs = run(p, c, S_CLAIM_LOCK, &a, "claim runs", &rc);
	if (jobs == NULL)
		return rc;
	rows = PQntuples(jobs);
	if (rows > 0 && (names = calloc((size_t)rows, sizeof(*names))) == NULL)
		rc = oom(p);
	for (int i = 0; rc == 0 && i < rows; i++)
		names[i] = PQgetvalue(jobs, i, 0);
	if (rc == 0)
		rc = keel__store_tags_json(&p->base, names, (size_t)rows,
					   &locked);
	free(names);
	PQclear(jobs);
	if (rc != 0)
		return rc;
	p_init(&a);
	p_str(&a, node);
	p_str(&a, tags_json);
	p_int(&a, max);
	p_str(&a, locked);
	r = run(p, c, S_CLAIM, &a, "claim runs", &rc);
	free(locked);
	if (r == NULL)
		return rc;
	rc = read_runs(p, r, out, n);
	PQclear(r);
	return rc;
}

static int pg_claim(struct keel_store *st, const char *node,
		    const char *tags_json, int max, struct keel_run **out,
		    size_t *n)
{
	struct pgs *p = PGS(st);
	struct conn *c;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	rc = tx_begin(p, c);
	if (rc == 0)
		rc = claim_tx(p, c, node, tags_json, max, out, n);
	rc = tx_end(p, c, rc);
	conn_put(p, c);
	if (rc != 0) {
		/* Rolled back: what was read is not claimed. */
		keel_store_runs_free(*out, *n);
		*out = NULL;
		*n = 0;
		return rc;
	}
	if (*n > 1)
		qsort(*out, *n, sizeof(**out), by_due);
	return 0;
}

/* n numbers as an array literal ("{1,2}"), malloc'd; NULL: no memory. */
static char *int_array(const int64_t *ids, const uint64_t *claims, size_t n)
{
	size_t cap = 2 + n * 21, len = 0;
	char *s = malloc(cap + 1);

	if (s == NULL)
		return NULL;
	s[len++] = '{';
	for (size_t i = 0; i < n; i++) {
		int64_t x = ids != NULL ? ids[i] : (int64_t)claims[i];

		len += (size_t)snprintf(s + len, cap + 1 - len, "%s%" PRId64,
					i > 0 ? "," : "", x);
	}
	s[len++] = '}';
	s[len] = '\0';
	return s;
}

static int pg_runs_beat(struct keel_store *st, const int64_t *ids,
			const uint64_t *claims, size_t n, int *rcs)
{
	struct pgs *p = PGS(st);
	char *ia = int_array(ids, NULL, n), *ca = int_array(NULL, claims, n);
	struct params a;
	struct conn *c = NULL;
	PGresult *r = NULL;
	int rc = 0;

	if (ia == NULL || ca == NULL)
		rc = oom(p);
	if (rc == 0)
		c = conn_get(p, &rc);
	if (c != NULL) {
		p_init(&a);
		p_str(&a, ia);
		p_str(&a, ca);
		/* One statement: every beat or none. */
		r = run(p, c, S_RUNS_BEAT, &a, "beat runs", &rc);
		conn_put(p, c);
	}
	free(ia);
	free(ca);
	if (r == NULL) {
		for (size_t i = 0; i < n; i++)
			rcs[i] = rc;
		return rc;
	}
	for (size_t i = 0; i < n; i++)
		rcs[i] = -ESTALE;
	for (int k = 0; k < PQntuples(r); k++) {
		int64_t id = get_i64(r, k, 0);
		uint64_t claim = (uint64_t)get_i64(r, k, 1);

		for (size_t i = 0; i < n; i++)
			if (ids[i] == id && claims[i] == claim)
				rcs[i] = 0;
	}
	PQclear(r);
	for (size_t i = 0; i < n; i++) {
		if (rcs[i] != 0) {
			keel__store_errf(st,
					 "run %lld is no longer running with "
					 "claim %llu",
					 (long long)ids[i],
					 (unsigned long long)claims[i]);
			break;
		}
	}
	return 0;
}

static int pg_rescue(struct keel_store *st, int64_t term, int64_t stale_ms,
		     int (*decide)(const struct keel_run *crashed,
				   struct keel_run *next, void *ud),
		     void *ud, size_t *n_rescued)
{
	struct pgs *p = PGS(st);
	struct crashed *v = NULL;
	struct params a;
	struct conn *c;
	size_t n = 0, i;
	int rc;

	c = conn_get(p, &rc);
	if (c == NULL)
		return rc;
	p_init(&a);
	p_int(&a, stale_ms);
	/* decide runs inside the transaction, with this connection taken:
	 * it must not call the store. */
	rc = tx_begin(p, c);
	if (rc == 0)
		rc = fence_tx(p, c, term);
	if (rc == 0)
		rc = crash_rows(p, c, S_RUN_RESCUE, &a, &v, &n);
	for (i = 0; rc == 0 && decide != NULL && i < n; i++)
		rc = decide_next(p, c, &v[i], decide, ud, "rescue");
	rc = tx_end(p, c, rc);
	conn_put(p, c);
	crashed_free(v, n);
	if (rc == 0)
		*n_rescued = n;
	return rc;
}

/* ------------------------------------------------------------------------
 * Open and close
 * ------------------------------------------------------------------------ */

static void pg_close(struct keel_store *st)
{
	struct pgs *p = PGS(st);

	for (int i = 0; i < POOL_SIZE; i++)
		if (p->conns[i].pg != NULL)
			PQfinish(p->conns[i].pg);
	pthread_cond_destroy(&p->freed);
	pthread_mutex_destroy(&p->mu);
	free(p->conninfo);
	free(p);
}

static const struct keel_store_ops pg_ops = {
	.name = "postgresql",
	.close = pg_close,
	.errmsg = NULL,
	.job_put = pg_job_put,
	.job_delete = pg_job_delete,
	.job_pause = pg_job_pause,
	.job_get = pg_job_get,
	.job_list = pg_job_list,
	.ticks = pg_ticks,
	.run_insert = pg_run_insert,
	.run_start = pg_run_start,
	.run_finish = pg_run_finish,
	.runs_start = pg_runs_start,
	.runs_finish = pg_runs_finish,
	.run_get = pg_run_get,
	.run_list = pg_run_list,
	.run_active = pg_run_active,
	.recover = pg_recover,
	.prune = pg_prune,
	.run_counts = pg_run_counts,
	.event_add = pg_event_add,
	.event_list = pg_event_list,
	.lease_acquire = pg_lease_acquire,
	.lease_release = pg_lease_release,
	.node_beat = pg_node_beat,
	.node_list = pg_node_list,
	.claim = pg_claim,
	.runs_beat = pg_runs_beat,
	.ticks_fenced = pg_ticks_fenced,
	.rescue = pg_rescue,
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

/* The version in schema_version (0 for none), in the migration's
 * transaction. */
static int read_version(struct pgs *p, struct conn *c, int *v)
{
	PGresult *r = PQexec(c->pg, "SELECT max(version) FROM schema_version");
	int rc = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		rc = pg_fail(p, c, r, "read the schema version");
	else
		*v = PQgetisnull(r, 0, 0) ? 0 : atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

/*
 * Brings the database to version n_steps, one step per transaction with
 * its version bump, so a failure between steps leaves a database at a
 * version that the next start continues from. The advisory lock makes
 * nodes that start together take turns; the lock waits without limit (a
 * migration may take longer than busy_timeout), and is released by the
 * commit, or by the server if this process dies.
 */
static int migrate(struct pgs *p, struct conn *c, const char *const *st,
		   size_t n_steps, char *err, size_t errlen)
{
	for (;;) {
		char bump[128];
		int rc, v = 0;

		rc = tx_begin(p, c);
		if (rc == 0)
			rc = simple(p, c, "SET LOCAL lock_timeout = 0",
				    "migrate");
		if (rc == 0)
			rc = simple(p, c,
				    "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK
				    ")",
				    "lock for the migration");
		if (rc == 0)
			rc = simple(p, c,
				    "CREATE TABLE IF NOT EXISTS schema_version("
				    "version INTEGER NOT NULL)",
				    "create schema_version");
		if (rc == 0)
			rc = read_version(p, c, &v);
		if (rc != 0) {
			rc = tx_end(p, c, rc);
			return seterr(err, errlen, rc, "%s",
				      keel__store_errmsg(&p->base));
		}
		if (v < 0 || (size_t)v >= n_steps) {
			(void)tx_end(p, c, -ECANCELED);
			if ((size_t)v == n_steps)
				return 0;
			return seterr(err, errlen, -EPROTO,
				      "%s: database schema version %d is newer "
				      "than this keeld (%zu)",
				      p->label, v, n_steps);
		}
		snprintf(bump, sizeof(bump),
			 "DELETE FROM schema_version; "
			 "INSERT INTO schema_version VALUES(%d)",
			 v + 1);
		rc = simple(p, c, st[v], "migrate");
		if (rc == 0)
			rc = simple(p, c, bump, "migrate");
		if (rc == 0)
			rc = simple(p, c, "COMMIT", "migrate");
		if (rc != 0) {
			char msg[1024];

			snprintf(msg, sizeof(msg), "%s",
				 keel__store_errmsg(&p->base));
			(void)tx_end(p, c, rc);
			return seterr(err, errlen, rc == -EBUSY ? -EBUSY : -EIO,
				      "%s: schema migration to version %d "
				      "failed: %s",
				      p->label, v + 1, msg);
		}
	}
}

/*
 * libpq's complaint about a connection string it cannot parse, without the
 * parts of the string it quotes: they may be a password (a URI with a
 * space is quoted whole).
 */
static void unquote(char *out, size_t len, const char *msg)
{
	size_t w = 0;
	int in = 0;

	for (const char *r = msg; *r != '\0' && w + 4 < len; r++) {
		if (*r == '"') {
			if (!in) {
				memcpy(out + w, "\"...", 4);
				w += 4;
			} else {
				out[w++] = '"';
			}
			in = !in;
		} else if (!in) {
			out[w++] = *r;
		}
	}
	out[w] = '\0';
}

/* conninfo is one libpq can use: -EINVAL with the reason if not. */
static int check_conninfo(const char *conninfo, char *err, size_t errlen)
{
	char *msg = NULL, clean[512], text[512];
	PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);

	if (opts != NULL) {
		PQconninfoFree(opts);
		return 0;
	}
	if (msg == NULL)
		return seterr(err, errlen, -ENOMEM, "out of memory");
	flat(text, sizeof(text), msg);
	PQfreemem(msg);
	unquote(clean, sizeof(clean), text);
	return seterr(err, errlen, -EINVAL,
		      "postgresql: the connection string is not valid: %s",
		      clean);
}

/* The first connection: the server must be one keel can use. */
static int first_conn(struct pgs *p, struct conn *c, char *err, size_t errlen)
{
	const char *enc;
	int rc;

	c->busy = 1;
	rc = conn_ready(p, c);
	c->busy = 0;
	if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK)
		snprintf(p->label, sizeof(p->label),
			 "postgresql database '%s' on %s:%s", PQdb(c->pg),
			 PQhost(c->pg), PQport(c->pg));
	if (rc != 0)
		return seterr(err, errlen, rc, "%s",
			      keel__store_errmsg(&p->base));
	if (PQserverVersion(c->pg) < 100000)
		return seterr(err, errlen, -EIO,
			      "%s: PostgreSQL %d is too old: keeld needs 10 or "
			      "later",
			      p->label, PQserverVersion(c->pg) / 10000);
	/* What keel stores is UTF-8 (JSON is made from it), and reads back
	 * as it wrote it: another encoding would convert or refuse it. */
	enc = PQparameterStatus(c->pg, "server_encoding");
	if (enc == NULL || strcmp(enc, "UTF8") != 0)
		return seterr(err, errlen, -EIO,
			      "%s: the database's encoding is %s; keeld needs "
			      "UTF8 (CREATE DATABASE ... ENCODING 'UTF8')",
			      p->label, enc ? enc : "unknown");
	return 0;
}

int keel__store_pg_open_steps(const char *conninfo,
			      const struct keel_store_config *cfg,
			      const char *const *st, size_t n_steps,
			      struct keel_store **out, char *err, size_t errlen)
{
	struct keel_store_config defaults;
	struct pgs *p;
	int64_t ms;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL)
		return seterr(err, errlen, -EINVAL, "out is NULL");
	*out = NULL;
	if (conninfo == NULL)
		return seterr(err, errlen, -EINVAL, "no connection string");
	if (st == NULL || n_steps == 0 || n_steps > INT_MAX)
		return seterr(err, errlen, -EINVAL, "no schema");
	rc = check_conninfo(conninfo, err, errlen);
	if (rc != 0)
		return rc;
	if (cfg == NULL) {
		keel_store_config_init(&defaults);
		cfg = &defaults;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return seterr(err, errlen, -ENOMEM, "out of memory");
	p->conninfo = strdup(conninfo);
	if (p->conninfo == NULL) {
		free(p);
		return seterr(err, errlen, -ENOMEM, "out of memory");
	}
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p->conninfo);
		free(p);
		return seterr(err, errlen, -ENOMEM, "out of memory");
	}
	if (pthread_cond_init(&p->freed, NULL) != 0) {
		pthread_mutex_destroy(&p->mu);
		free(p->conninfo);
		free(p);
		return seterr(err, errlen, -ENOMEM, "out of memory");
	}
	p->base.ops = &pg_ops;
	/* The connection string may hold a password: messages name the
	 * database by what the connection says, never by conninfo. */
	snprintf(p->label, sizeof(p->label), "the database");
	/* lock_timeout 0 would mean "wait for ever"; a busy_timeout of 0
	 * means "do not wait", the nearest being 1 ms. */
	ms = cfg->busy_timeout / 1000000;
	p->lock_timeout_ms = ms < 1 ? 1 : ms > INT_MAX ? INT_MAX : (long)ms;
	/* Here 0 is "never"; a positive one under a millisecond is 1 ms. */
	ms = cfg->idle_timeout <= 0 ? 0
				    : cfg->idle_timeout / 1000000 +
					      (cfg->idle_timeout % 1000000 != 0);
	p->idle_timeout_ms = ms > INT_MAX ? INT_MAX : (long)ms;
	p->sync_full = cfg->sync_full != 0;

	rc = first_conn(p, &p->conns[0], err, errlen);
	if (rc == 0)
		rc = migrate(p, &p->conns[0], st, n_steps, err, errlen);
	if (rc != 0) {
		/* Also forgets this thread's message about p. */
		keel_store_close(&p->base);
		return rc;
	}
	*out = &p->base;
	return 0;
}

int keel_store_pg_conninfo_check(const char *conninfo, char *err,
				 size_t errlen)
{
	PQconninfoOption *o;
	char *why = NULL;

	if (conninfo == NULL)
		return -EINVAL;
	o = PQconninfoParse(conninfo, &why);
	if (o == NULL) {
		/* libpq's reason ends by quoting the URI, and may quote a word
		 * of the string: cut both, a password may be there. */
		char text[256];
		char *cut;

		snprintf(text, sizeof(text), "%s",
			 why != NULL ? why : "out of memory");
		PQfreemem(why);
		if ((cut = strstr(text, " in URI")) != NULL ||
		    (cut = strstr(text, " in connection info string")) != NULL)
			*cut = '\0';
		if ((cut = strstr(text, " after \"")) != NULL)
			snprintf(cut, sizeof(text) - (size_t)(cut - text),
				 " after a word");
		cut = text + strcspn(text, "\n");
		*cut = '\0';
		if (err != NULL && errlen > 0)
			snprintf(err, errlen,
				 "the connection string is not valid (%s)", text);
		return -EINVAL;
	}
	PQconninfoFree(o);
	return 0;
}

int keel_store_pg_open(const char *conninfo,
		       const struct keel_store_config *cfg,
		       struct keel_store **out, char *err, size_t errlen)
{
	return keel__store_pg_open_steps(conninfo, cfg, steps, N_STEPS, out,
					 err, errlen);
}
