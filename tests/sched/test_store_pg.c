/* KEEL_TEST_LABELS: threads */
/*
 * tests/sched/test_store_pg.c - keeld's PostgreSQL store (keel/store.h,
 * src/sched/store_pg.c) against a real server: one started for this
 * program (pg_server.h) before its cases run, each case on a database of
 * its own (CREATE DATABASE keel_t<pid>), dropped at the end; skipped where
 * no PostgreSQL is installed.
 *
 * The same behaviour as the SQLite store's tests (test_store.c), case for
 * case where it applies: data surviving a reopen; the rules of job put /
 * delete / pause / resume; tick batches that are all or nothing; the run
 * state machine (-ESTALE), finish + retry and recover written atomically;
 * group commit (each item's own answer; a refused follow-up undoing only
 * its own finish); lists, paging, counts, prune, events and their
 * trimming; schema versions (a newer database refused, a new step applied
 * in its transaction, a failing step leaving the database as it was); a
 * corrupt job definition as -EIO; invalid UTF-8 cleaned (and refused by
 * PostgreSQL if it were not); a writer killed mid-way; four threads and a
 * reader.
 *
 * And what only a server store has: several stores (nodes) on one
 * database, seeing each other's writes, racing on the same tick, job and
 * run, and migrating a new database together; the server restarted or
 * stopped under a store, and a session ended by an administrator, even in
 * the middle of a transaction (-EIO, then working again, nothing
 * half-written); a row lock held too long (-EBUSY, a batch failing as a
 * whole and writing nothing); connection strings that are wrong, and
 * databases that are not UTF8.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include <keel/job.h>
#include <keel/run.h>
#include <keel/store.h>
#include "keel_test.h"
#include "pg_server.h"
#include "pg_test.h"

#include "../../src/sched/store_internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static char dbname[64];	 /* the case's database */
static char conninfo[512]; /* and how to reach it */

static long long sql_int(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	long long v;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		KEEL_TEST_FAIL("%s: %s", sql, PQerrorMessage(c));
	v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* A statement on the server's own database (CREATE / DROP DATABASE). */
static void admin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void admin(const char *fmt, ...)
{
	char sql[256];
	PGconn *c = pg_test_connect(&server, "postgres");
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	pg_test_exec(c, sql);
	PQfinish(c);
}

/* A database of the case's own (the case is a process: its pid). */
static void db_setup(void)
{
	need_server();
	snprintf(dbname, sizeof(dbname), "keel_t%ld", (long)getpid());
	admin("CREATE DATABASE %s", dbname);
	pg_server_conninfo(&server, dbname, conninfo, sizeof(conninfo));
}

static void db_cleanup(void)
{
	admin("DROP DATABASE %s WITH (FORCE)", dbname);
}

/* A connection of libpq's own to the case's database, for what keel's API
 * does not show (and to corrupt it). */
static PGconn *db_open(void)
{
	return pg_test_connect(&server, dbname);
}

static struct keel_store *open_info(const char *info)
{
	char err[512] = "";
	struct keel_store *st = NULL;
	int rc = keel_store_pg_open(info, NULL, &st, err, sizeof(err));

	if (rc != 0)
		KEEL_TEST_FAIL("open: %d: %s", rc, err);
	CHECK(st != NULL);
	return st;
}

static struct keel_store *open_ok(void)
{
	return open_info(conninfo);
}

static struct keel_job *job_json(const char *text)
{
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_error_t je;
	json_t *v = json_loads(text, 0, &je);

	if (v == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s", je.text);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("job refused: %s", err);
	json_decref(v);
	return j;
}

/* A job named name; extra is more JSON members (may be ""). */
static struct keel_job *job_make(const char *name, const char *schedule,
				 const char *extra)
{
	char text[1024];

	snprintf(text, sizeof(text),
		 "{\"name\": \"%s\", \"schedule\": \"%s\", "
		 "\"executor\": {\"type\": \"shell\", \"command\": [\"true\"]}%s%s}",
		 name, schedule, extra[0] ? ", " : "", extra);
	return job_json(text);
}

static void put_job(struct keel_store *st, const char *name, int64_t now_s)
{
	struct keel_job *j = job_make(name, "@every 1m", "");
	enum keel_store_put res;

	CHECK_INT(keel_store_job_put(st, j, now_s, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_CREATED);
	keel_job_free(j);
}

/* A run for a tick or an insert; its job is borrowed (never cleared). */
static struct keel_run mkrun(const char *job, enum keel_run_trigger trig,
			     int attempt, int64_t scheduled_at)
{
	struct keel_run r;

	memset(&r, 0, sizeof(r));
	r.job = (char *)job;
	r.state = KEEL_RUN_QUEUED;
	r.trigger = trig;
	r.attempt = attempt;
	r.scheduled_at = scheduled_at;
	r.created_at = scheduled_at + 1;
	r.exit_code = -1;
	snprintf(r.trace_id, sizeof(r.trace_id), "%032x", (unsigned)attempt);
	return r;
}

static int64_t insert(struct keel_store *st, const char *job,
		      enum keel_run_trigger trig, int attempt, int64_t at)
{
	struct keel_run r = mkrun(job, trig, attempt, at);

	CHECK_INT(keel_store_run_insert(st, &r), ==, 0);
	CHECK_INT(r.id, >, 0);
	return r.id;
}

/* One tick of one job with one scheduled run at tick_s; its run's id. */
static int tick1(struct keel_store *st, const char *job, int64_t tick_s,
		 int64_t *id)
{
	struct keel_run r = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, tick_s * 1000);
	struct keel_store_tick t = { job, tick_s, &r, 1 };
	int rc = keel_store_ticks(st, &t, 1);

	if (id != NULL)
		*id = r.id;
	return rc;
}

static void finish(struct keel_store *st, int64_t id, enum keel_run_state s,
		   int64_t at)
{
	struct keel_run r;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.state = s;
	r.finished_at = at;
	r.exit_code = s == KEEL_RUN_SUCCEEDED ? 0 : 1;
	CHECK_INT(keel_store_run_finish(st, &r, NULL), ==, 0);
}

static enum keel_run_state state_of(struct keel_store *st, int64_t id)
{
	struct keel_run r;
	enum keel_run_state s;

	CHECK_INT(keel_store_run_get(st, id, &r), ==, 0);
	s = r.state;
	keel_run_clear(&r);
	return s;
}

static int64_t count_of(struct keel_store *st, const char *job,
			enum keel_run_state s)
{
	int64_t c[KEEL_RUN_NSTATES];

	CHECK_INT(keel_store_run_counts(st, job, c), ==, 0);
	return c[s];
}

static int64_t count_all(struct keel_store *st, const char *job)
{
	int64_t c[KEEL_RUN_NSTATES], t = 0;

	CHECK_INT(keel_store_run_counts(st, job, c), ==, 0);
	for (int i = 0; i < KEEL_RUN_NSTATES; i++)
		t += c[i];
	return t;
}

static struct keel_store_job get_job(struct keel_store *st, const char *name)
{
	struct keel_store_job sj;

	CHECK_INT(keel_store_job_get(st, name, &sj), ==, 0);
	CHECK(sj.job != NULL);
	CHECK_STR(sj.job->name, name);
	return sj;
}

static int64_t last_tick_of(struct keel_store *st, const char *name)
{
	struct keel_store_job sj = get_job(st, name);
	int64_t t = sj.last_tick;

	keel_store_job_clear(&sj);
	return t;
}

/* ------------------------------------------------------------------------
 * Opening, persistence
 * ------------------------------------------------------------------------ */

TEST(open_creates_the_schema)
{
	char info[700], err[512];
	struct keel_store *st, *other = NULL;
	PGconn *db;

	db_setup();
	st = open_ok();
	db = db_open();
	CHECK_INT(sql_int(db, "SELECT version FROM schema_version"), ==,
		  keel_store_schema_version());
	CHECK_INT(sql_int(db, "SELECT count(*) FROM schema_version"), ==, 1);
	CHECK_INT(keel_store_schema_version(), ==, 3);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM pg_tables WHERE tablename "
			      "IN ('jobs', 'runs', 'events', 'schema_version')"),
		  ==, 4);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM pg_indexes WHERE "
			      "indexname = 'runs_tick'"),
		  ==, 1);
	keel_store_close(st);
	keel_store_close(NULL);
	/* Opening again changes nothing. */
	st = open_ok();
	keel_store_close(st);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM schema_version"), ==, 1);
	PQfinish(db);

	/* A database that does not exist. */
	pg_server_conninfo(&server, "nosuchdb", info, sizeof(info));
	CHECK_INT(keel_store_pg_open(info, NULL, &other, err, sizeof(err)), ==,
		  -EIO);
	CHECK(other == NULL);
	CHECK_CONTAINS(err, "nosuchdb");
	CHECK_CONTAINS(err, "does not exist");
	/* No server there; the password is never shown. */
	snprintf(info, sizeof(info),
		 "host=%s port=1 user=keel dbname=x password=sekrit",
		 server.dir);
	CHECK_INT(keel_store_pg_open(info, NULL, &other, err, sizeof(err)), ==,
		  -EIO);
	CHECK_CONTAINS(err, "failed");
	CHECK(strstr(err, "sekrit") == NULL);
	db_cleanup();
	keel_test_leak_check();
}

/* Needs no server (so this program passes something where PostgreSQL is
 * not installed and every other case skips). */
TEST(open_refuses_bad_arguments)
{
	char err[512];
	struct keel_store *other = NULL;

	/* Connection strings libpq cannot read, and whose parts (here the
	 * password) its complaint quotes. */
	CHECK_INT(keel_store_pg_open("postgresql://keel:sek%zzrit@localhost/x",
				     NULL, &other, err, sizeof(err)),
		  ==, -EINVAL);
	CHECK(other == NULL);
	CHECK_CONTAINS(err, "connection string is not valid");
	CHECK_CONTAINS(err, "percent-encoded");
	CHECK(strstr(err, "sek") == NULL);
	CHECK_INT(keel_store_pg_open("postgresql://keel:sekrit@[::1/x", NULL,
				     &other, err, sizeof(err)),
		  ==, -EINVAL);
	CHECK(strstr(err, "sekrit") == NULL);
	CHECK_INT(keel_store_pg_open("nosuchoption=1", NULL, &other, err,
				     sizeof(err)),
		  ==, -EINVAL);
	CHECK_CONTAINS(err, "invalid connection option");
	CHECK_INT(keel_store_pg_open(NULL, NULL, &other, err, sizeof(err)), ==,
		  -EINVAL);
	CHECK_INT(keel_store_pg_open("dbname=x", NULL, NULL, NULL, 0), ==,
		  -EINVAL);
	keel_test_leak_check();
}

TEST(database_must_be_utf8)
{
	char info[600], err[512], name[80];
	struct keel_store *st = NULL;
	PGconn *c;
	PGresult *r;

	db_setup();
	snprintf(name, sizeof(name), "%s_ascii", dbname);
	c = pg_test_connect(&server, "postgres");
	{
		char sql[256];

		/* A libc locale: an ICU one needs UTF8. */
		snprintf(sql, sizeof(sql),
			 "CREATE DATABASE %s TEMPLATE template0 ENCODING "
			 "'SQL_ASCII' LOCALE_PROVIDER libc LOCALE 'C'",
			 name);
		r = PQexec(c, sql);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			/* Before PostgreSQL 15: no LOCALE_PROVIDER. */
			PQclear(r);
			snprintf(sql, sizeof(sql),
				 "CREATE DATABASE %s TEMPLATE template0 "
				 "ENCODING 'SQL_ASCII' LOCALE 'C'",
				 name);
			r = PQexec(c, sql);
		}
		CHECK_INT(PQresultStatus(r), ==, PGRES_COMMAND_OK);
		PQclear(r);
	}
	pg_server_conninfo(&server, name, info, sizeof(info));
	CHECK_INT(keel_store_pg_open(info, NULL, &st, err, sizeof(err)), ==,
		  -EIO);
	CHECK(st == NULL);
	CHECK_CONTAINS(err, "encoding is SQL_ASCII");
	CHECK_CONTAINS(err, name);
	/* Refused before anything was written. */
	PQfinish(c);
	c = pg_test_connect(&server, name);
	CHECK_INT(sql_int(c, "SELECT count(*) FROM pg_tables WHERE "
			     "schemaname = 'public'"),
		  ==, 0);
	PQfinish(c);
	admin("DROP DATABASE %s", name);
	db_cleanup();
	keel_test_leak_check();
}

TEST(reopen_keeps_everything)
{
	struct keel_store *st;
	struct keel_store_job sj;
	struct keel_store_event *ev;
	struct keel_run r;
	int64_t id;
	size_t n;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &id), ==, 0);
	CHECK_INT(keel_store_run_start(st, id, 1060500, "node-1"), ==, 0);
	CHECK_INT(keel_store_event_add(st, 5, "info", "job.created", "a", 0,
				       "job a created"),
		  ==, 0);
	CHECK_INT(keel_store_job_pause(st, "a", 1, 1100), ==, 0);
	keel_store_close(st);

	st = open_ok();
	sj = get_job(st, "a");
	CHECK_INT(sj.paused, ==, 1);
	CHECK_INT(sj.last_tick, ==, 1060);
	CHECK_STR(sj.job->schedule, "@every 1m");
	keel_store_job_clear(&sj);
	CHECK_INT(keel_store_run_get(st, id, &r), ==, 0);
	CHECK_INT(r.state, ==, KEEL_RUN_RUNNING);
	CHECK_INT(r.started_at, ==, 1060500);
	CHECK_STR(r.node, "node-1");
	CHECK_STR(r.job, "a");
	keel_run_clear(&r);
	CHECK_INT(keel_store_event_list(st, 0, 10, &ev, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(ev[0].message, "job a created");
	keel_store_events_free(ev, n);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------ */

TEST(job_put_created_replaced_unchanged)
{
	struct keel_store *st;
	struct keel_store_job sj;
	struct keel_job *j;
	enum keel_store_put res;

	db_setup();
	st = open_ok();
	j = job_make("a", "@every 1m", "");
	CHECK_INT(keel_store_job_put(st, j, 1000, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_CREATED);
	sj = get_job(st, "a");
	CHECK(keel_job_equal(sj.job, j));
	CHECK_INT(sj.paused, ==, 0);
	CHECK_INT(sj.last_tick, ==, 1000);
	CHECK_INT(sj.created_at, ==, 1000000);
	CHECK_INT(sj.updated_at, ==, 1000000);
	keel_store_job_clear(&sj);

	/* The same job later: nothing written, not even updated_at. */
	CHECK_INT(keel_store_job_put(st, j, 2000, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_UNCHANGED);
	CHECK_INT(keel_store_job_put(st, j, 2000, NULL), ==, 0);
	sj = get_job(st, "a");
	CHECK_INT(sj.last_tick, ==, 1000);
	CHECK_INT(sj.updated_at, ==, 1000000);
	keel_store_job_clear(&sj);
	keel_job_free(j);

	/* Another field, same schedule: replaced, last_tick kept. */
	CHECK_INT(keel_store_job_pause(st, "a", 1, 2500), ==, 0);
	j = job_make("a", "@every 1m", "\"tags\": [\"x\"]");
	CHECK_INT(keel_store_job_put(st, j, 3000, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_REPLACED);
	sj = get_job(st, "a");
	CHECK(keel_job_equal(sj.job, j));
	CHECK_INT(sj.last_tick, ==, 1000);
	CHECK_INT(sj.paused, ==, 1); /* kept */
	CHECK_INT(sj.created_at, ==, 1000000);
	CHECK_INT(sj.updated_at, ==, 3000000);
	keel_store_job_clear(&sj);
	keel_job_free(j);

	/* Another schedule: the old one's ticks are not owed. */
	j = job_make("a", "@every 5m", "\"tags\": [\"x\"]");
	CHECK_INT(keel_store_job_put(st, j, 4000, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_REPLACED);
	CHECK_INT(last_tick_of(st, "a"), ==, 4000);
	keel_job_free(j);

	/* Another time zone: the same. */
	j = job_make("a", "@every 5m",
		     "\"tags\": [\"x\"], \"timezone\": \"Europe/Berlin\"");
	CHECK_INT(keel_store_job_put(st, j, 5000, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_REPLACED);
	sj = get_job(st, "a");
	CHECK_INT(sj.last_tick, ==, 5000);
	CHECK_STR(sj.job->timezone, "Europe/Berlin");
	keel_store_job_clear(&sj);
	keel_job_free(j);

	CHECK_INT(keel_store_job_get(st, "nope", &sj), ==, -ENOENT);
	CHECK_CONTAINS(keel_store_errmsg(st), "nope");
	CHECK_INT(keel_store_job_put(st, NULL, 1, &res), ==, -EINVAL);
	/* A job changed by hand into one that would not read back. */
	j = job_make("a", "@every 5m", "");
	j->retry.max_attempts = 0;
	CHECK_INT(keel_store_job_put(st, j, 6000, &res), ==, -EINVAL);
	CHECK_CONTAINS(keel_store_errmsg(st), "retry.max_attempts");
	keel_job_free(j);
	CHECK_INT(last_tick_of(st, "a"), ==, 5000);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(job_list_sorted_by_bytes)
{
	struct keel_store *st;
	struct keel_store_job *jobs;
	PGconn *db;
	size_t n;

	db_setup();
	st = open_ok();
	CHECK_INT(keel_store_job_list(st, &jobs, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	keel_store_jobs_free(jobs, n);
	put_job(st, "zeta", 1);
	put_job(st, "alpha", 2);
	put_job(st, "Mid", 3);
	CHECK_INT(keel_store_job_list(st, &jobs, &n), ==, 0);
	CHECK_INT(n, ==, 3);
	/* As with SQLite, whatever the database's collation: the test
	 * server's (ICU, when it has it) puts "alpha" first. */
	CHECK_STR(jobs[0].job->name, "Mid");
	CHECK_STR(jobs[1].job->name, "alpha");
	CHECK_STR(jobs[2].job->name, "zeta");
	CHECK_INT(jobs[1].last_tick, ==, 2);
	keel_store_jobs_free(jobs, n);
	keel_store_jobs_free(NULL, 0);
	db = db_open();
	if (sql_int(db, "SELECT count(*) FROM pg_database WHERE datname = "
			"current_database() AND datlocprovider = 'i'") == 1)
		CHECK_INT(sql_int(db, "SELECT ('Mid' < 'alpha')::int"), ==, 0);
	PQfinish(db);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(job_delete_cascades_runs)
{
	struct keel_store *st;
	struct keel_store_job sj;
	struct keel_run r;
	int64_t a1, a2, b1;
	PGconn *db;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	put_job(st, "b", 1);
	a1 = insert(st, "a", KEEL_RUN_MANUAL, 1, 10);
	a2 = insert(st, "a", KEEL_RUN_MANUAL, 1, 20);
	b1 = insert(st, "b", KEEL_RUN_MANUAL, 1, 10);
	CHECK_INT(keel_store_job_delete(st, "a"), ==, 0);
	CHECK_INT(keel_store_job_get(st, "a", &sj), ==, -ENOENT);
	CHECK_INT(keel_store_run_get(st, a1, &r), ==, -ENOENT);
	CHECK_INT(keel_store_run_get(st, a2, &r), ==, -ENOENT);
	CHECK_INT(state_of(st, b1), ==, KEEL_RUN_QUEUED);
	CHECK_INT(count_all(st, "a"), ==, 0);
	CHECK_INT(count_all(st, NULL), ==, 1);
	db = db_open();
	CHECK_INT(sql_int(db, "SELECT count(*) FROM runs WHERE job = 'a'"), ==,
		  0);
	PQfinish(db);
	CHECK_INT(keel_store_job_delete(st, "a"), ==, -ENOENT);
	CHECK_CONTAINS(keel_store_errmsg(st), "no job 'a'");
	/* Runs of a job that does not exist are refused. */
	r = mkrun("a", KEEL_RUN_MANUAL, 1, 1);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -ENOENT);
	CHECK_CONTAINS(keel_store_errmsg(st), "no job 'a'");
	CHECK_INT(r.id, ==, 0);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(pause_and_resume)
{
	struct keel_store *st;
	struct keel_store_job sj;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	CHECK_INT(keel_store_job_pause(st, "a", 1, 1100), ==, 0);
	sj = get_job(st, "a");
	CHECK_INT(sj.paused, ==, 1);
	CHECK_INT(sj.last_tick, ==, 1000);
	CHECK_INT(sj.updated_at, ==, 1100000);
	keel_store_job_clear(&sj);
	/* Pausing a paused job changes nothing. */
	CHECK_INT(keel_store_job_pause(st, "a", 1, 1200), ==, 0);
	sj = get_job(st, "a");
	CHECK_INT(sj.updated_at, ==, 1100000);
	keel_store_job_clear(&sj);
	/* Resuming skips the pause's ticks. */
	CHECK_INT(keel_store_job_pause(st, "a", 0, 1500), ==, 0);
	sj = get_job(st, "a");
	CHECK_INT(sj.paused, ==, 0);
	CHECK_INT(sj.last_tick, ==, 1500);
	keel_store_job_clear(&sj);
	/* Resuming a running job owes nothing less: last_tick stays. */
	CHECK_INT(tick1(st, "a", 1560, NULL), ==, 0);
	CHECK_INT(keel_store_job_pause(st, "a", 0, 9000), ==, 0);
	CHECK_INT(last_tick_of(st, "a"), ==, 1560);
	CHECK_INT(keel_store_job_pause(st, "nope", 1, 1), ==, -ENOENT);
	CHECK_INT(keel_store_job_pause(st, "nope", 0, 1), ==, -ENOENT);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Ticks
 * ------------------------------------------------------------------------ */

TEST(ticks_batch_all_or_nothing)
{
	struct keel_store *st;
	struct keel_run ra[2], rb[1], r;
	struct keel_store_tick t[2];

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	put_job(st, "b", 1000);
	CHECK_INT(keel_store_ticks(st, NULL, 0), ==, 0);

	ra[0] = mkrun(NULL, KEEL_RUN_MISSED, 1, 1060000);
	ra[1] = mkrun("a", KEEL_RUN_SCHEDULE, 1, 1120000);
	ra[1].state = KEEL_RUN_SKIPPED;
	rb[0] = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, 1120000);
	t[0] = (struct keel_store_tick){ "a", 1120, ra, 2 };
	t[1] = (struct keel_store_tick){ "b", 1120, rb, 1 };
	CHECK_INT(keel_store_ticks(st, t, 2), ==, 0);
	CHECK_INT(ra[0].id, >, 0);
	CHECK_INT(ra[1].id, >, ra[0].id);
	CHECK_INT(rb[0].id, >, ra[1].id);
	CHECK_INT(last_tick_of(st, "a"), ==, 1120);
	CHECK_INT(keel_store_run_get(st, ra[0].id, &r), ==, 0);
	CHECK_STR(r.job, "a");
	CHECK_INT(r.trigger, ==, KEEL_RUN_MISSED);
	CHECK_INT(r.state, ==, KEEL_RUN_QUEUED);
	CHECK_INT(r.scheduled_at, ==, 1060000);
	CHECK_INT(r.created_at, ==, 1060001);
	CHECK_INT(r.exit_code, ==, -1);
	CHECK_STR(r.trace_id, "00000000000000000000000000000001");
	CHECK(r.node == NULL && r.error == NULL && r.output == NULL);
	keel_run_clear(&r);
	CHECK_INT(state_of(st, ra[1].id), ==, KEEL_RUN_SKIPPED);

	/* A fresh tick of a and a tick of b that is stored already: the
	 * whole batch is refused, a's tick included. */
	ra[0] = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, 1180000);
	rb[0] = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, 1120000);
	t[0] = (struct keel_store_tick){ "a", 1180, ra, 1 };
	t[1] = (struct keel_store_tick){ "b", 1180, rb, 1 };
	CHECK_INT(keel_store_ticks(st, t, 2), ==, -EEXIST);
	CHECK_CONTAINS(keel_store_errmsg(st), "already exists");
	CHECK_INT(ra[0].id, ==, 0); /* not a real id: rolled back */
	CHECK_INT(last_tick_of(st, "a"), ==, 1120);
	CHECK_INT(last_tick_of(st, "b"), ==, 1120);
	CHECK_INT(count_all(st, "a"), ==, 2);
	CHECK_INT(count_all(st, "b"), ==, 1);

	/* The same tick as missed is the same tick. */
	rb[0] = mkrun(NULL, KEEL_RUN_MISSED, 1, 1120000);
	t[0] = (struct keel_store_tick){ "b", 1180, rb, 1 };
	CHECK_INT(keel_store_ticks(st, t, 1), ==, -EEXIST);

	/* An unknown job fails the batch too. */
	ra[0] = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, 1180000);
	t[0] = (struct keel_store_tick){ "a", 1180, ra, 1 };
	t[1] = (struct keel_store_tick){ "ghost", 1180, NULL, 0 };
	CHECK_INT(keel_store_ticks(st, t, 2), ==, -ENOENT);
	CHECK_CONTAINS(keel_store_errmsg(st), "ghost");
	CHECK_INT(count_all(st, "a"), ==, 2);
	/* So does a name that is not UTF-8 (no such job, not a server
	 * error). */
	t[1] = (struct keel_store_tick){ "gh\xffost", 1180, NULL, 0 };
	CHECK_INT(keel_store_ticks(st, t, 2), ==, -ENOENT);
	CHECK_INT(count_all(st, "a"), ==, 2);

	/* A tick without runs moves last_tick alone; it never moves back. */
	t[0] = (struct keel_store_tick){ "a", 1300, NULL, 0 };
	CHECK_INT(keel_store_ticks(st, t, 1), ==, 0);
	t[0] = (struct keel_store_tick){ "a", 1200, NULL, 0 };
	CHECK_INT(keel_store_ticks(st, t, 1), ==, 0);
	CHECK_INT(last_tick_of(st, "a"), ==, 1300);

	/* A run of another job in a's tick is a caller's bug. */
	ra[0] = mkrun("b", KEEL_RUN_SCHEDULE, 1, 1360000);
	t[0] = (struct keel_store_tick){ "a", 1360, ra, 1 };
	CHECK_INT(keel_store_ticks(st, t, 1), ==, -EINVAL);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(tick_uniqueness_covers_retries_not_manual_runs)
{
	struct keel_store *st;
	struct keel_run r;
	int64_t id;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &id), ==, 0);
	/* A retry of the tick's run, inserted on its own, then again. */
	insert(st, "a", KEEL_RUN_RETRY, 2, 1060000);
	r = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EEXIST);
	CHECK_CONTAINS(keel_store_errmsg(st), "already exists");
	CHECK_INT(r.id, ==, 0);
	/* And its retry: the origin passes down the attempts. */
	insert(st, "a", KEEL_RUN_RETRY, 3, 1060000);
	r = mkrun("a", KEEL_RUN_RETRY, 3, 1060000);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EEXIST);
	/* Two manual runs in the same millisecond, and their retries. */
	insert(st, "a", KEEL_RUN_MANUAL, 1, 5000);
	insert(st, "a", KEEL_RUN_MANUAL, 1, 5000);
	insert(st, "a", KEEL_RUN_RETRY, 2, 5000);
	insert(st, "a", KEEL_RUN_RETRY, 2, 5000);
	/* A manual run at a tick's time does not block the tick. */
	insert(st, "a", KEEL_RUN_MANUAL, 1, 1120000);
	CHECK_INT(tick1(st, "a", 1120, NULL), ==, 0);
	CHECK_INT(count_all(st, "a"), ==, 9);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* A retry in a tick batch is its tick's, as one inserted on its own or
 * with its run's finish is (keel/store.h: "the retries of such a run"),
 * and as the SQLite store has it: unique with its tick. */
TEST(retry_in_a_tick_batch_takes_its_tick_origin)
{
	struct keel_store *st;
	struct keel_run ra[3], rb[1], r;
	struct keel_store_tick t[2];
	char text[96];
	PGconn *db;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	put_job(st, "b", 1000);
	/* A tick's run and its retries in one batch (the retry of attempt
	 * 3 follows one earlier in the same batch); and a lone retry whose
	 * first attempt is nowhere: its origin is "manual". */
	ra[0] = mkrun(NULL, KEEL_RUN_MISSED, 1, 1060000);
	ra[1] = mkrun(NULL, KEEL_RUN_RETRY, 2, 1060000);
	ra[2] = mkrun(NULL, KEEL_RUN_RETRY, 3, 1060000);
	rb[0] = mkrun(NULL, KEEL_RUN_RETRY, 2, 7000);
	t[0] = (struct keel_store_tick){ "a", 1060, ra, 3 };
	t[1] = (struct keel_store_tick){ "b", 1060, rb, 1 };
	CHECK_INT(keel_store_ticks(st, t, 2), ==, 0);
	db = db_open();
	snprintf(text, sizeof(text),
		 "SELECT count(*) FROM runs WHERE id IN (%lld, %lld) AND "
		 "origin = 'missed'",
		 (long long)ra[1].id, (long long)ra[2].id);
	CHECK_INT(sql_int(db, text), ==, 2);
	snprintf(text, sizeof(text),
		 "SELECT count(*) FROM runs WHERE id = %lld AND "
		 "origin = 'manual'",
		 (long long)rb[0].id);
	CHECK_INT(sql_int(db, text), ==, 1);
	PQfinish(db);
	/* So the tick's retries are unique: a second attempt 2 or 3 of it,
	 * on its own or in a batch, is refused. */
	r = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EEXIST);
	ra[0] = mkrun(NULL, KEEL_RUN_RETRY, 3, 1060000);
	t[0] = (struct keel_store_tick){ "a", 1120, ra, 1 };
	CHECK_INT(keel_store_ticks(st, t, 1), ==, -EEXIST);
	CHECK_INT(ra[0].id, ==, 0);
	/* The lone retry is not a tick's: another may follow. */
	rb[0] = mkrun(NULL, KEEL_RUN_RETRY, 2, 7000);
	t[0] = (struct keel_store_tick){ "b", 1060, rb, 1 };
	CHECK_INT(keel_store_ticks(st, t, 1), ==, 0);
	CHECK_INT(count_all(st, "a"), ==, 3);
	CHECK_INT(count_all(st, "b"), ==, 2);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The run state machine
 * ------------------------------------------------------------------------ */

TEST(run_start_only_from_queued)
{
	struct keel_store *st;
	struct keel_run r;
	int64_t id, id2;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	id = insert(st, "a", KEEL_RUN_MANUAL, 1, 10);
	CHECK_INT(keel_store_run_start(st, id, 20, "host:8080"), ==, 0);
	CHECK_INT(keel_store_run_get(st, id, &r), ==, 0);
	CHECK_INT(r.state, ==, KEEL_RUN_RUNNING);
	CHECK_INT(r.started_at, ==, 20);
	CHECK_STR(r.node, "host:8080");
	keel_run_clear(&r);
	CHECK_INT(keel_store_run_start(st, id, 30, NULL), ==, -ESTALE);
	CHECK_CONTAINS(keel_store_errmsg(st), "is running, not queued");
	CHECK_INT(keel_store_run_start(st, 999999, 30, NULL), ==, -ENOENT);
	CHECK_INT(keel_store_run_start(st, 0, 30, NULL), ==, -EINVAL);
	/* Canceled while queued: cannot start any more. */
	id2 = insert(st, "a", KEEL_RUN_MANUAL, 1, 11);
	finish(st, id2, KEEL_RUN_CANCELED, 40);
	CHECK_INT(keel_store_run_start(st, id2, 50, NULL), ==, -ESTALE);
	CHECK_INT(keel_store_run_get(st, id2, &r), ==, 0);
	CHECK_INT(r.state, ==, KEEL_RUN_CANCELED);
	CHECK_INT(r.started_at, ==, 0);
	CHECK(r.node == NULL);
	keel_run_clear(&r);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(run_finish_rules_and_next_atomic)
{
	struct keel_store *st;
	struct keel_run r, next, got;
	int64_t id, dup, retry_id;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &id), ==, 0);
	CHECK_INT(keel_store_run_start(st, id, 1060100, NULL), ==, 0);

	/* Not final: refused. */
	memset(&r, 0, sizeof(r));
	r.id = id;
	r.state = KEEL_RUN_RUNNING;
	CHECK_INT(keel_store_run_finish(st, &r, NULL), ==, -EINVAL);

	/* Failed, with its retry. */
	r.state = KEEL_RUN_FAILED;
	r.finished_at = 1060900;
	r.exit_code = 3;
	r.signal = 0;
	r.http_status = 502;
	r.error = (char *)"exit status 3";
	r.output = (char *)"out\nerr\n";
	next = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	next.not_before = 1061900;
	CHECK_INT(keel_store_run_finish(st, &r, &next), ==, 0);
	CHECK_INT(next.id, >, id);
	retry_id = next.id;
	CHECK_INT(keel_store_run_get(st, id, &got), ==, 0);
	CHECK_INT(got.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(got.started_at, ==, 1060100);
	CHECK_INT(got.finished_at, ==, 1060900);
	CHECK_INT(got.exit_code, ==, 3);
	CHECK_INT(got.http_status, ==, 502);
	CHECK_STR(got.error, "exit status 3");
	CHECK_STR(got.output, "out\nerr\n");
	keel_run_clear(&got);
	CHECK_INT(keel_store_run_get(st, next.id, &got), ==, 0);
	CHECK_INT(got.state, ==, KEEL_RUN_QUEUED);
	CHECK_INT(got.trigger, ==, KEEL_RUN_RETRY);
	CHECK_INT(got.attempt, ==, 2);
	CHECK_INT(got.not_before, ==, 1061900);
	keel_run_clear(&got);

	/* Finished already: refused, and its next is not inserted. */
	next = mkrun("a", KEEL_RUN_RETRY, 3, 1060000);
	CHECK_INT(keel_store_run_finish(st, &r, &next), ==, -ESTALE);
	CHECK_CONTAINS(keel_store_errmsg(st), "is failed");
	CHECK_INT(next.id, ==, 0);
	CHECK_INT(count_all(st, "a"), ==, 2);
	r.id = 424242;
	CHECK_INT(keel_store_run_finish(st, &r, NULL), ==, -ENOENT);
	CHECK_INT(keel_store_run_finish(st, &r, &next), ==, -ENOENT);

	/* The next cannot be inserted: the finish is undone too. */
	dup = retry_id;
	CHECK_INT(keel_store_run_start(st, dup, 1061950, NULL), ==, 0);
	memset(&r, 0, sizeof(r));
	r.id = dup;
	r.state = KEEL_RUN_TIMED_OUT;
	r.finished_at = 1062000;
	next = mkrun("a", KEEL_RUN_RETRY, 2, 1060000); /* exists: attempt 2 */
	CHECK_INT(keel_store_run_finish(st, &r, &next), ==, -EEXIST);
	CHECK_INT(next.id, ==, 0);
	CHECK_INT(state_of(st, dup), ==, KEEL_RUN_RUNNING);
	next = mkrun("ghost", KEEL_RUN_MANUAL, 1, 1);
	CHECK_INT(keel_store_run_finish(st, &r, &next), ==, -ENOENT);
	CHECK_INT(state_of(st, dup), ==, KEEL_RUN_RUNNING);
	/* And now it can: attempt 3 follows attempt 2 of the same tick. */
	next = mkrun("a", KEEL_RUN_RETRY, 3, 1060000);
	CHECK_INT(keel_store_run_finish(st, &r, &next), ==, 0);
	CHECK_INT(state_of(st, dup), ==, KEEL_RUN_TIMED_OUT);
	got = mkrun("a", KEEL_RUN_RETRY, 3, 1060000);
	CHECK_INT(keel_store_run_insert(st, &got), ==, -EEXIST);
	/* Queued runs can be finished (canceled, skipped) directly. */
	id = insert(st, "a", KEEL_RUN_MANUAL, 1, 7);
	finish(st, id, KEEL_RUN_SKIPPED, 8);
	CHECK_INT(state_of(st, id), ==, KEEL_RUN_SKIPPED);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* Group commit: each item answers for itself; the others go through. */
TEST(runs_start_and_finish_in_batches)
{
	struct keel_store *st;
	int64_t a, b, c, ids[4];
	int rcs[4];
	struct keel_run ra, rb, rc_, next, dupnext;
	struct keel_store_finish items[3];

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &a), ==, 0);
	CHECK_INT(tick1(st, "a", 1120, &b), ==, 0);
	c = insert(st, "a", KEEL_RUN_MANUAL, 1, 5);
	finish(st, c, KEEL_RUN_CANCELED, 6); /* no longer queued */

	ids[0] = a;
	ids[1] = c;
	ids[2] = 999999;
	ids[3] = b;
	CHECK_INT(keel_store_runs_start(st, ids, 4, 1130000, "n1", rcs), ==, 0);
	CHECK_INT(rcs[0], ==, 0);
	CHECK_INT(rcs[1], ==, -ESTALE);
	CHECK_INT(rcs[2], ==, -ENOENT);
	CHECK_INT(rcs[3], ==, 0);
	CHECK_INT(state_of(st, a), ==, KEEL_RUN_RUNNING);
	CHECK_INT(state_of(st, b), ==, KEEL_RUN_RUNNING);
	CHECK_INT(state_of(st, c), ==, KEEL_RUN_CANCELED);
	CHECK_INT(keel_store_runs_start(st, ids, 0, 1, NULL, rcs), ==, 0);
	ids[0] = 0;
	CHECK_INT(keel_store_runs_start(st, ids, 1, 1, NULL, rcs), ==, -EINVAL);

	/* a fails with its retry, b's follow-up clashes (so b stays
	 * running), c is final already: only a and its retry are written.
	 * In PostgreSQL the clash aborts the transaction: the savepoint of
	 * b's item is what lets a and c go on. */
	memset(&ra, 0, sizeof(ra));
	ra.id = a;
	ra.state = KEEL_RUN_FAILED;
	ra.finished_at = 1131000;
	next = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	memset(&rb, 0, sizeof(rb));
	rb.id = b;
	rb.state = KEEL_RUN_SUCCEEDED;
	rb.finished_at = 1131000;
	dupnext = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, 1060000); /* a's tick */
	dupnext.job = (char *)"a";
	memset(&rc_, 0, sizeof(rc_));
	rc_.id = c;
	rc_.state = KEEL_RUN_SUCCEEDED;
	rc_.finished_at = 1131000;
	items[0].run = &ra;
	items[0].next = &next;
	items[1].run = &rb;
	items[1].next = &dupnext;
	items[2].run = &rc_;
	items[2].next = NULL;
	CHECK_INT(keel_store_runs_finish(st, items, 3, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, 0);
	CHECK_INT(rcs[1], ==, -EEXIST);
	CHECK_INT(rcs[2], ==, -ESTALE);
	CHECK(next.id > 0);
	CHECK_INT(dupnext.id, ==, 0);
	CHECK_INT(state_of(st, a), ==, KEEL_RUN_FAILED);
	CHECK_INT(state_of(st, next.id), ==, KEEL_RUN_QUEUED);
	CHECK_INT(state_of(st, b), ==, KEEL_RUN_RUNNING); /* undone with it */
	CHECK_INT(state_of(st, c), ==, KEEL_RUN_CANCELED);
	CHECK_INT(count_all(st, "a"), ==, 4);
	/* The retry got its tick's origin: the same retry is refused. */
	ra = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	CHECK_INT(keel_store_run_insert(st, &ra), ==, -EEXIST);

	/* A refused follow-up first, then items that go through. */
	rb.state = KEEL_RUN_SUCCEEDED;
	dupnext = mkrun("ghost", KEEL_RUN_MANUAL, 1, 1);
	items[0].run = &rb;
	items[0].next = &dupnext;
	memset(&rc_, 0, sizeof(rc_));
	rc_.id = next.id;
	rc_.state = KEEL_RUN_CANCELED;
	rc_.finished_at = 1132000;
	items[1].run = &rc_;
	items[1].next = NULL;
	CHECK_INT(keel_store_runs_finish(st, items, 2, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, -ENOENT);
	CHECK_INT(rcs[1], ==, 0);
	CHECK_INT(state_of(st, b), ==, KEEL_RUN_RUNNING);
	CHECK_INT(state_of(st, next.id), ==, KEEL_RUN_CANCELED);
	items[0].run = NULL;
	CHECK_INT(keel_store_runs_finish(st, items, 1, rcs), ==, -EINVAL);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

static int decide_calls;

static int decide_first_retries(const struct keel_run *crashed,
				struct keel_run *next, void *ud)
{
	int64_t *first = ud;

	decide_calls++;
	if (crashed->state != KEEL_RUN_CRASHED ||
	    crashed->finished_at != 777000 ||
	    strcmp(crashed->error, "keeld stopped while the run was running"))
		return -EPROTO; /* the test checks this cannot happen */
	if (crashed->id != *first)
		return 0;
	next->state = KEEL_RUN_QUEUED;
	next->trigger = KEEL_RUN_RETRY;
	next->attempt = crashed->attempt + 1;
	next->scheduled_at = crashed->scheduled_at;
	next->created_at = 777000;
	next->not_before = 778000;
	next->error = strdup("owned by the store"); /* freed by it */
	return 1;
}

static int decide_fails(const struct keel_run *crashed, struct keel_run *next,
			void *ud)
{
	(void)crashed;
	(void)next;
	(void)ud;
	return -EIO;
}

TEST(recover_crashes_running_runs_with_retries)
{
	struct keel_store *st;
	struct keel_run *runs, got;
	int64_t q, r1, r2, done_id;
	size_t n, crashed = 99;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	put_job(st, "b", 1000);
	q = insert(st, "a", KEEL_RUN_MANUAL, 1, 10);
	CHECK_INT(tick1(st, "a", 1060, &r1), ==, 0);
	CHECK_INT(tick1(st, "b", 1060, &r2), ==, 0);
	done_id = insert(st, "b", KEEL_RUN_MANUAL, 1, 20);
	CHECK_INT(keel_store_run_start(st, r1, 1060001, "n"), ==, 0);
	CHECK_INT(keel_store_run_start(st, r2, 1060002, "n"), ==, 0);
	CHECK_INT(keel_store_run_start(st, done_id, 21, "n"), ==, 0);
	finish(st, done_id, KEEL_RUN_SUCCEEDED, 22);

	/* decide fails: nothing happens. */
	CHECK_INT(keel_store_recover(st, 777000, decide_fails, NULL, &crashed),
		  ==, -EIO);
	CHECK_INT(crashed, ==, 0);
	CHECK_INT(state_of(st, r1), ==, KEEL_RUN_RUNNING);
	CHECK_INT(state_of(st, r2), ==, KEEL_RUN_RUNNING);

	keel_store_close(st);
	st = open_ok(); /* as keeld's start would */
	decide_calls = 0;
	CHECK_INT(keel_store_recover(st, 777000, decide_first_retries, &r1,
				     &crashed),
		  ==, 0);
	CHECK_INT(crashed, ==, 2);
	CHECK_INT(decide_calls, ==, 2);
	CHECK_INT(keel_store_run_get(st, r1, &got), ==, 0);
	CHECK_INT(got.state, ==, KEEL_RUN_CRASHED);
	CHECK_INT(got.finished_at, ==, 777000);
	CHECK_STR(got.error, "keeld stopped while the run was running");
	keel_run_clear(&got);
	CHECK_INT(state_of(st, r2), ==, KEEL_RUN_CRASHED);
	CHECK_INT(state_of(st, q), ==, KEEL_RUN_QUEUED);
	CHECK_INT(state_of(st, done_id), ==, KEEL_RUN_SUCCEEDED);

	/* The active runs: the queued one and the retry, oldest first. */
	CHECK_INT(keel_store_run_active(st, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 2);
	CHECK_INT(runs[0].id, ==, q);
	CHECK_INT(runs[1].id, >, done_id);
	CHECK_STR(runs[1].job, "a"); /* decide left job NULL: the crashed's */
	CHECK_INT(runs[1].trigger, ==, KEEL_RUN_RETRY);
	CHECK_INT(runs[1].attempt, ==, 2);
	CHECK_INT(runs[1].not_before, ==, 778000);
	CHECK_INT(runs[1].scheduled_at, ==, 1060000);
	CHECK_STR(runs[1].error, "owned by the store");
	keel_store_runs_free(runs, n);

	/* The retry belongs to the tick: the same retry is refused. */
	got = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	CHECK_INT(keel_store_run_insert(st, &got), ==, -EEXIST);

	/* Nothing running any more. */
	CHECK_INT(keel_store_recover(st, 888000, NULL, NULL, &crashed), ==, 0);
	CHECK_INT(crashed, ==, 0);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Reads: lists, counts
 * ------------------------------------------------------------------------ */

TEST(run_list_paging_filters_output)
{
	struct keel_store_run_query q;
	struct keel_store *st;
	struct keel_run *runs, r;
	int64_t ids[30], c[KEEL_RUN_NSTATES];
	size_t n;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	put_job(st, "b", 1);
	for (int i = 0; i < 30; i++) {
		ids[i] = insert(st, i % 3 == 0 ? "b" : "a", KEEL_RUN_MANUAL, 1,
				100 + i);
		if (i % 2 == 0) {
			memset(&r, 0, sizeof(r));
			r.id = ids[i];
			r.state = KEEL_RUN_SUCCEEDED;
			r.finished_at = 200 + i;
			r.output = (char *)"the output";
			CHECK_INT(keel_store_run_finish(st, &r, NULL), ==, 0);
		}
	}
	memset(&q, 0, sizeof(q));
	q.limit = 7;
	q.state = -1;
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 7);
	for (size_t i = 0; i < n; i++) {
		CHECK_INT(runs[i].id, ==, ids[29 - i]);
		CHECK(runs[i].output == NULL);
	}
	q.before_id = runs[6].id;
	keel_store_runs_free(runs, n);
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 7);
	CHECK_INT(runs[0].id, ==, ids[22]);
	keel_store_runs_free(runs, n);

	/* Every page of job a's succeeded runs, with output. */
	q.before_id = 0;
	q.job = "a";
	q.state = KEEL_RUN_SUCCEEDED;
	q.with_output = 1;
	q.limit = 4;
	{
		int seen = 0;

		for (;;) {
			CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
			for (size_t i = 0; i < n; i++) {
				CHECK_STR(runs[i].job, "a");
				CHECK_INT(runs[i].state, ==, KEEL_RUN_SUCCEEDED);
				CHECK_STR(runs[i].output, "the output");
				CHECK(q.before_id == 0 ||
				      runs[i].id < q.before_id);
			}
			seen += (int)n;
			if (n == 0) {
				keel_store_runs_free(runs, n);
				break;
			}
			q.before_id = runs[n - 1].id;
			keel_store_runs_free(runs, n);
		}
		/* i even and i % 3 != 0: 10 of 30. */
		CHECK_INT(seen, ==, 10);
	}
	/* State alone. */
	q.job = NULL;
	q.before_id = 0;
	q.state = KEEL_RUN_QUEUED;
	q.limit = 1000;
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 15);
	keel_store_runs_free(runs, n);
	/* Job alone. */
	q.job = "b";
	q.state = -1;
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 10);
	keel_store_runs_free(runs, n);
	q.job = "nobody";
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	keel_store_runs_free(runs, n);
	/* A job name that is not UTF-8 has no runs (not a server error). */
	q.job = "no\xc3";
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	CHECK_INT(keel_store_run_counts(st, "no\xc3", c), ==, 0);
	CHECK_INT(c[KEEL_RUN_QUEUED], ==, 0);

	q.limit = 0;
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, -EINVAL);
	q.limit = 1001;
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, -EINVAL);
	q.limit = 1;
	q.state = KEEL_RUN_NSTATES;
	CHECK_INT(keel_store_run_list(st, &q, &runs, &n), ==, -EINVAL);
	CHECK(runs == NULL && n == 0);

	CHECK_INT(count_of(st, "a", KEEL_RUN_SUCCEEDED), ==, 10);
	CHECK_INT(count_of(st, "a", KEEL_RUN_QUEUED), ==, 10);
	CHECK_INT(count_of(st, "b", KEEL_RUN_SUCCEEDED), ==, 5);
	CHECK_INT(count_of(st, NULL, KEEL_RUN_QUEUED), ==, 15);
	CHECK_INT(count_all(st, NULL), ==, 30);
	CHECK_INT(count_all(st, "nobody"), ==, 0);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Prune
 * ------------------------------------------------------------------------ */

TEST(prune_keeps_newest_and_active)
{
	struct keel_store *st;
	struct keel_run r;
	int64_t ids[12], queued, running, newest;
	size_t deleted;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	put_job(st, "b", 1);
	queued = insert(st, "a", KEEL_RUN_MANUAL, 1, 1);
	running = insert(st, "a", KEEL_RUN_MANUAL, 1, 2);
	CHECK_INT(keel_store_run_start(st, running, 3, NULL), ==, 0);
	for (int i = 0; i < 10; i++) {
		ids[i] = insert(st, "a", KEEL_RUN_MANUAL, 1, 10 + i);
		finish(st, ids[i], i % 2 ? KEEL_RUN_FAILED : KEEL_RUN_SUCCEEDED,
		       1000 + i);
	}
	/* Skipped without finished_at: its age is created_at. */
	ids[10] = insert(st, "b", KEEL_RUN_MANUAL, 1, 50);
	{
		struct keel_run k;

		memset(&k, 0, sizeof(k));
		k.id = ids[10];
		k.state = KEEL_RUN_SKIPPED;
		CHECK_INT(keel_store_run_finish(st, &k, NULL), ==, 0);
	}
	ids[11] = insert(st, "b", KEEL_RUN_MANUAL, 1, 60);

	CHECK_INT(keel_store_prune(st, "a", 3, 0, &deleted), ==, 0);
	CHECK_INT(deleted, ==, 7);
	for (int i = 0; i < 7; i++)
		CHECK_INT(keel_store_run_get(st, ids[i], &r), ==, -ENOENT);
	for (int i = 7; i < 10; i++)
		CHECK_INT(state_of(st, ids[i]), !=, KEEL_RUN_QUEUED);
	CHECK_INT(state_of(st, queued), ==, KEEL_RUN_QUEUED);
	CHECK_INT(state_of(st, running), ==, KEEL_RUN_RUNNING);
	CHECK_INT(count_all(st, "b"), ==, 2); /* another job: untouched */

	/* By age: finished before 1009 (ids 7, 8), keep_runs no limit. */
	CHECK_INT(keel_store_prune(st, "a", -1, 1009, &deleted), ==, 0);
	CHECK_INT(deleted, ==, 2);
	CHECK_INT(state_of(st, ids[9]), ==, KEEL_RUN_FAILED);
	CHECK_INT(keel_store_prune(st, "b", 100, 52, &deleted), ==, 0);
	CHECK_INT(deleted, ==, 1);
	CHECK_INT(state_of(st, ids[11]), ==, KEEL_RUN_QUEUED);

	/* Everything finished goes; active runs never do. */
	newest = ids[9];
	CHECK_INT(keel_store_prune(st, "a", 0, INT64_MAX, &deleted), ==, 0);
	CHECK_INT(deleted, ==, 1);
	CHECK_INT(count_all(st, "a"), ==, 2);
	CHECK_INT(keel_store_prune(st, "a", 0, INT64_MAX, NULL), ==, 0);
	CHECK_INT(keel_store_prune(st, "a\xff", 0, INT64_MAX, &deleted), ==, 0);
	CHECK_INT(deleted, ==, 0);
	/* An id is never given again, even after the newest were pruned. */
	CHECK_INT(insert(st, "a", KEEL_RUN_MANUAL, 1, 99), >, ids[11]);
	CHECK_INT(newest, <, ids[11]);
	CHECK_INT(keel_store_prune(st, NULL, 1, 1, NULL), ==, -EINVAL);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

TEST(events_list_and_trim)
{
	struct keel_store *st;
	struct keel_store_event *ev;
	PGconn *db;
	size_t n;
	int64_t last = 0;

	db_setup();
	st = open_ok();
	CHECK_INT(keel_store_event_add(st, 1, "info", "job.created", "a", 0,
				       "one"),
		  ==, 0);
	CHECK_INT(keel_store_event_add(st, 2, "warn", "run.crashed", NULL, 42,
				       "two"),
		  ==, 0);
	CHECK_INT(keel_store_event_list(st, 0, 10, &ev, &n), ==, 0);
	CHECK_INT(n, ==, 2);
	CHECK_STR(ev[0].message, "two");
	CHECK_STR(ev[0].level, "warn");
	CHECK_STR(ev[0].kind, "run.crashed");
	CHECK(ev[0].job == NULL);
	CHECK_INT(ev[0].run_id, ==, 42);
	CHECK_INT(ev[0].at, ==, 2);
	CHECK_STR(ev[1].job, "a");
	CHECK_INT(ev[1].id, <, ev[0].id);
	last = ev[0].id;
	keel_store_events_free(ev, n);
	CHECK_INT(keel_store_event_list(st, last, 10, &ev, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(ev[0].message, "one");
	keel_store_events_free(ev, n);
	CHECK_INT(keel_store_event_list(st, 1, 10, &ev, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	CHECK(ev == NULL);
	CHECK_INT(keel_store_event_list(st, 0, 0, &ev, &n), ==, -EINVAL);
	CHECK_INT(keel_store_event_add(st, 1, "info", "k", NULL, 0, NULL), ==,
		  -EINVAL);

	/* Past 10000 events the oldest go, a hundred at a time. */
	for (int i = 0; i < 10200; i++)
		CHECK_INT(keel_store_event_add(st, i, "info", "tick", NULL, 0,
					       "x"),
			  ==, 0);
	db = db_open();
	last = sql_int(db, "SELECT max(id) FROM events");
	CHECK_INT(last, ==, 10202);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM events"), <=, 10100);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM events"), >=, 10000);
	CHECK_INT(sql_int(db, "SELECT min(id) FROM events"), >, 2);
	PQfinish(db);
	CHECK_INT(keel_store_event_list(st, 0, 1000, &ev, &n), ==, 0);
	CHECK_INT(n, ==, 1000);
	CHECK_INT(ev[0].id, ==, last);
	CHECK_INT(ev[999].id, ==, last - 999);
	keel_store_events_free(ev, n);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Schema versions
 * ------------------------------------------------------------------------ */

TEST(newer_schema_is_refused)
{
	char err[512];
	struct keel_store *st = NULL;
	PGconn *db;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	keel_store_close(st);
	db = db_open();
	pg_test_exec(db, "UPDATE schema_version SET version = 9");
	st = NULL;
	CHECK_INT(keel_store_pg_open(conninfo, NULL, &st, err, sizeof(err)), ==,
		  -EPROTO);
	CHECK(st == NULL);
	CHECK_CONTAINS(err,
		       "database schema version 9 is newer than this keeld (3)");
	CHECK_CONTAINS(err, dbname);
	/* Nothing was changed. */
	CHECK_INT(sql_int(db, "SELECT version FROM schema_version"), ==, 9);
	pg_test_exec(db, "UPDATE schema_version SET version = 3");
	PQfinish(db);
	st = open_ok();
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(migration_steps_apply_in_their_transaction)
{
	const char *const *mine;
	const char *more[16];
	char err[512], info[600], want[64];
	struct keel_store *st = NULL;
	struct keel_store_job sj;
	size_t n;
	PGconn *db;

	db_setup();
	mine = keel__store_pg_steps(&n);
	CHECK_INT(n, ==, keel_store_schema_version());
	CHECK(n + 2 <= sizeof(more) / sizeof(more[0]));
	for (size_t i = 0; i < n; i++)
		more[i] = mine[i];
	st = open_ok();
	put_job(st, "a", 1);
	keel_store_close(st);

	/* A version n + 1 is one more entry: applied to this build's
	 * database. */
	more[n] = "CREATE TABLE extra(x INTEGER); INSERT INTO extra VALUES(42);";
	CHECK_INT(keel__store_pg_open_steps(conninfo, NULL, more, n + 1, &st,
					    err, sizeof(err)),
		  ==, 0);
	sj = get_job(st, "a");
	keel_store_job_clear(&sj);
	keel_store_close(st);
	db = db_open();
	CHECK_INT(sql_int(db, "SELECT version FROM schema_version"), ==, n + 1);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM schema_version"), ==, 1);
	CHECK_INT(sql_int(db, "SELECT x FROM extra"), ==, 42);

	/* A step that fails half-way leaves the database at n + 1. */
	more[n + 1] = "CREATE TABLE t3(x INTEGER); INSERT INTO nosuch VALUES(1);";
	st = NULL;
	CHECK_INT(keel__store_pg_open_steps(conninfo, NULL, more, n + 2, &st,
					    err, sizeof(err)),
		  ==, -EIO);
	CHECK(st == NULL);
	snprintf(want, sizeof(want), "migration to version %zu failed", n + 2);
	CHECK_CONTAINS(err, want);
	CHECK_CONTAINS(err, "nosuch");
	CHECK_INT(sql_int(db, "SELECT version FROM schema_version"), ==, n + 1);
	CHECK_INT(sql_int(db, "SELECT count(*) FROM pg_tables WHERE "
			      "tablename = 't3'"),
		  ==, 0);
	PQfinish(db);

	/* This build (n steps) refuses the version n + 1 database. */
	CHECK_INT(keel_store_pg_open(conninfo, NULL, &st, err, sizeof(err)), ==,
		  -EPROTO);
	snprintf(want, sizeof(want), "version %zu is newer than this keeld (%zu)",
		 n + 1, n);
	CHECK_CONTAINS(err, want);

	/* A new database gets every step in order. */
	{
		char fresh[80];

		snprintf(fresh, sizeof(fresh), "%s_fresh", dbname);
		admin("CREATE DATABASE %s", fresh);
		pg_server_conninfo(&server, fresh, info, sizeof(info));
		CHECK_INT(keel__store_pg_open_steps(info, NULL, more, n + 1,
						    &st, err, sizeof(err)),
			  ==, 0);
		keel_store_close(st);
		db = pg_test_connect(&server, fresh);
		CHECK_INT(sql_int(db, "SELECT version FROM schema_version"),
			  ==, n + 1);
		CHECK_INT(sql_int(db, "SELECT count(*) FROM pg_tables WHERE "
				      "tablename IN ('jobs', 'lease', 'extra')"),
			  ==, 3);
		PQfinish(db);
		admin("DROP DATABASE %s WITH (FORCE)", fresh);
	}
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Bad data
 * ------------------------------------------------------------------------ */

TEST(corrupt_definition_is_eio_not_a_crash)
{
	static const char *const bad[] = {
		"{not json",
		"{\"name\": \"a\"}",
		"[]",
		("{\"name\": \"other\", \"schedule\": \"@daily\", "
		 "\"executor\": {\"type\": \"shell\", \"command\": "
		 "[\"true\"]}}"),
	};
	struct keel_store *st;
	struct keel_store_job sj, *jobs;
	struct keel_job *j;
	enum keel_store_put res;
	PGconn *db;
	size_t n;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	put_job(st, "b", 1);
	db = db_open();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *v[1] = { bad[i] };
		PGresult *r = PQexecParams(db,
					   "UPDATE jobs SET spec = $1 "
					   "WHERE name = 'a'",
					   1, NULL, v, NULL, NULL, 0);

		CHECK_INT(PQresultStatus(r), ==, PGRES_COMMAND_OK);
		PQclear(r);
		CHECK_INT(keel_store_job_get(st, "a", &sj), ==, -EIO);
		CHECK(sj.job == NULL);
		CHECK_CONTAINS(keel_store_errmsg(st), "job 'a'");
		CHECK_CONTAINS(keel_store_errmsg(st), "corrupt");
		CHECK_INT(keel_store_job_list(st, &jobs, &n), ==, -EIO);
		CHECK(jobs == NULL && n == 0);
		sj = get_job(st, "b");
		keel_store_job_clear(&sj);
	}
	PQfinish(db);
	/* Putting the job again repairs it. */
	j = job_make("a", "@every 1m", "");
	CHECK_INT(keel_store_job_put(st, j, 50, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_REPLACED);
	keel_job_free(j);
	CHECK_INT(last_tick_of(st, "a"), ==, 50);
	CHECK_INT(keel_store_job_list(st, &jobs, &n), ==, 0);
	CHECK_INT(n, ==, 2);
	keel_store_jobs_free(jobs, n);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(invalid_utf8_is_stored_clean)
{
	struct keel_store *st;
	struct keel_store_event *ev;
	struct keel_store_job sj;
	struct keel_run r, got;
	json_t *js;
	int64_t id;
	size_t n;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	id = insert(st, "a", KEEL_RUN_MANUAL, 1, 1);
	CHECK_INT(keel_store_run_start(st, id, 2, "n\xc3"), ==, 0);
	memset(&r, 0, sizeof(r));
	r.id = id;
	r.state = KEEL_RUN_FAILED;
	r.finished_at = 3;
	r.output = (char *)"ok \xff\xfe end \xe2\x82\xac";
	r.error = (char *)"\xc0\xaf";
	CHECK_INT(keel_store_run_finish(st, &r, NULL), ==, 0);
	CHECK_INT(keel_store_run_get(st, id, &got), ==, 0);
	CHECK_STR(got.output, "ok \xef\xbf\xbd\xef\xbf\xbd end \xe2\x82\xac");
	CHECK_STR(got.error, "\xef\xbf\xbd\xef\xbf\xbd");
	CHECK_STR(got.node, "n\xef\xbf\xbd");
	js = keel_run_to_json(&got); /* jansson refuses invalid UTF-8 */
	CHECK(js != NULL);
	json_decref(js);
	keel_run_clear(&got);
	/* Inserted runs too. */
	r = mkrun("a", KEEL_RUN_MANUAL, 1, 4);
	r.error = (char *)"bad \xed\xa0\x80 surrogate";
	r.node = (char *)"\xf8";
	CHECK_INT(keel_store_run_insert(st, &r), ==, 0);
	CHECK_INT(keel_store_run_get(st, r.id, &got), ==, 0);
	CHECK_STR(got.error, "bad \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
			     "surrogate");
	CHECK_STR(got.node, "\xef\xbf\xbd");
	keel_run_clear(&got);
	CHECK_INT(keel_store_event_add(st, 1, "info", "k", "j\xfe", 0, "m\x80"),
		  ==, 0);
	CHECK_INT(keel_store_event_list(st, 0, 1, &ev, &n), ==, 0);
	CHECK_STR(ev[0].message, "m\xef\xbf\xbd");
	CHECK_STR(ev[0].job, "j\xef\xbf\xbd");
	keel_store_events_free(ev, n);
	/* Looked up by a name that is not UTF-8: no such job, as SQLite
	 * answers (the server would refuse the bytes). */
	CHECK_INT(keel_store_job_get(st, "a\xff", &sj), ==, -ENOENT);
	CHECK_INT(keel_store_job_delete(st, "a\xff"), ==, -ENOENT);
	CHECK_INT(keel_store_job_pause(st, "a\xff", 1, 5), ==, -ENOENT);
	r = mkrun("a\xff", KEEL_RUN_MANUAL, 1, 4);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -ENOENT);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

TEST(bad_arguments)
{
	struct keel_store *st;
	struct keel_run r, *runs;
	struct keel_store_tick t;
	int64_t c[KEEL_RUN_NSTATES];
	size_t n;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	r = mkrun(NULL, KEEL_RUN_MANUAL, 1, 1);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EINVAL);
	CHECK_CONTAINS(keel_store_errmsg(st), "no job");
	r = mkrun("a", KEEL_RUN_MANUAL, 0, 1);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EINVAL);
	r = mkrun("a", (enum keel_run_trigger)9, 1, 1);
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EINVAL);
	r = mkrun("a", KEEL_RUN_MANUAL, 1, 1);
	r.state = (enum keel_run_state)8;
	CHECK_INT(keel_store_run_insert(st, &r), ==, -EINVAL);
	t = (struct keel_store_tick){ NULL, 1, NULL, 0 };
	CHECK_INT(keel_store_ticks(st, &t, 1), ==, -EINVAL);
	t = (struct keel_store_tick){ "a", 1, NULL, 1 };
	CHECK_INT(keel_store_ticks(st, &t, 1), ==, -EINVAL);
	CHECK_INT(keel_store_run_counts(st, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_store_run_active(st, NULL, &n), ==, -EINVAL);
	CHECK_INT(keel_store_run_get(st, -1, &r), ==, -ENOENT);
	CHECK_INT(keel_store_run_counts(NULL, NULL, c), ==, -EINVAL);
	CHECK_INT(keel_store_run_active(NULL, &runs, &n), ==, -EINVAL);
	CHECK_STR(keel_store_errmsg(NULL), "");
	/* Times at the edges of BIGINT go through the text parameters. */
	r = mkrun("a", KEEL_RUN_MANUAL, 1, INT64_MAX - 1);
	r.not_before = INT64_MAX;
	CHECK_INT(keel_store_run_insert(st, &r), ==, 0);
	{
		struct keel_run got;

		CHECK_INT(keel_store_run_get(st, r.id, &got), ==, 0);
		CHECK_INT(got.scheduled_at, ==, INT64_MAX - 1);
		CHECK_INT(got.not_before, ==, INT64_MAX);
		keel_run_clear(&got);
	}
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

static void *other_thread_errmsg(void *arg)
{
	struct keel_store *st = arg;
	const char *m = keel_store_errmsg(st);

	return (void *)(uintptr_t)(m[0] == '\0');
}

TEST(errmsg_is_per_thread)
{
	struct keel_store *st;
	struct keel_store_job sj;
	pthread_t th;
	void *empty;

	db_setup();
	st = open_ok();
	CHECK_INT(keel_store_job_get(st, "missing", &sj), ==, -ENOENT);
	CHECK_CONTAINS(keel_store_errmsg(st), "missing");
	CHECK_INT(pthread_create(&th, NULL, other_thread_errmsg, st), ==, 0);
	CHECK_INT(pthread_join(th, &empty), ==, 0);
	CHECK(empty == (void *)1);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Killed mid-way
 * ------------------------------------------------------------------------ */

#define KILL_BASE 1000000

/* The child: ticks of two jobs in one batch, forever, reporting each
 * committed tick on fd; killed by the parent. */
static void writer_child(int fd)
{
	char err[512];
	struct keel_store *st = NULL;
	int64_t tick = KILL_BASE;

	if (keel_store_pg_open(conninfo, NULL, &st, err, sizeof(err)) != 0)
		_exit(3);
	for (;;) {
		struct keel_run ra[2], rb[1];
		struct keel_store_tick t[2];

		tick++;
		ra[0] = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, tick * 1000);
		ra[1] = mkrun(NULL, KEEL_RUN_RETRY, 2, tick * 1000);
		rb[0] = mkrun(NULL, KEEL_RUN_SCHEDULE, 1, tick * 1000);
		t[0] = (struct keel_store_tick){ "a", tick, ra, 2 };
		t[1] = (struct keel_store_tick){ "b", tick, rb, 1 };
		if (keel_store_ticks(st, t, 2) != 0)
			_exit(4);
		/* Some traffic of other kinds between the batches. */
		if (keel_store_run_start(st, ra[0].id, tick, "n") != 0)
			_exit(5);
		if (keel_store_event_add(st, tick, "info", "tick", "a",
					 ra[0].id, "a tick") != 0)
			_exit(6);
		if (write(fd, &tick, sizeof(tick)) != (ssize_t)sizeof(tick))
			_exit(7);
	}
}

TEST(killed_writer_leaves_a_consistent_database)
{
	struct keel_store *st;
	int64_t reported = 0, got, last_a, last_b;
	struct pollfd pfd;
	double t0;
	int p[2], status;
	pid_t pid;
	PGconn *db;

	db_setup();
	st = open_ok();
	put_job(st, "a", KILL_BASE);
	put_job(st, "b", KILL_BASE);

	CHECK_INT(pipe(p), ==, 0);
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		writer_child(p[1]);
	}
	close(p[1]);
	/* Let it commit a thousand batches (or whatever 20 s give). */
	t0 = keel_test_now();
	pfd.fd = p[0];
	pfd.events = POLLIN;
	while (reported < KILL_BASE + 1000 && keel_test_now() - t0 < 20) {
		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		if (read(p[0], &got, sizeof(got)) != (ssize_t)sizeof(got))
			break;
		reported = got;
	}
	CHECK_INT(kill(pid, SIGKILL), ==, 0);
	CHECK_INT(waitpid(pid, &status, 0), ==, pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	while (read(p[0], &got, sizeof(got)) == (ssize_t)sizeof(got))
		reported = got;
	close(p[0]);
	CHECK_INT(reported, >, KILL_BASE);

	/* The server rolls back what the dead writer had begun; its
	 * session ends (soon) on its own. */
	last_a = last_tick_of(st, "a");
	last_b = last_tick_of(st, "b");
	/* Every reported commit is there; batches are whole. */
	CHECK_INT(last_a, >=, reported);
	CHECK_INT(last_a, ==, last_b);
	CHECK_INT(count_all(st, "a"), ==, 2 * (last_a - KILL_BASE));
	CHECK_INT(count_all(st, "b"), ==, last_b - KILL_BASE);
	db = db_open();
	/* Each tick has its runs: no tick after last_tick, none missing. */
	CHECK_INT(sql_int(db, "SELECT count(*) FROM runs r JOIN jobs j ON "
			      "j.name = r.job WHERE r.scheduled_at / 1000 > "
			      "j.last_tick"),
		  ==, 0);
	CHECK_INT(sql_int(db, "SELECT count(DISTINCT scheduled_at) FROM runs "
			      "WHERE job = 'a'"),
		  ==, last_a - KILL_BASE);
	PQfinish(db);
	/* And the store goes on from there. */
	CHECK_INT(tick1(st, "b", last_b + 1, NULL), ==, 0);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------ */

#define THREADS 4
#define PER_THREAD 60

struct worker {
	struct keel_store *st;
	int64_t ids[PER_THREAD];
	int errors;
};

static void *work(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < PER_THREAD; i++) {
		struct keel_run r;

		if (keel_store_run_start(w->st, w->ids[i], 10 + i, "t") != 0) {
			w->errors++;
			continue;
		}
		memset(&r, 0, sizeof(r));
		r.id = w->ids[i];
		r.state = KEEL_RUN_SUCCEEDED;
		r.finished_at = 20 + i;
		r.exit_code = 0;
		r.output = (char *)"done";
		if (keel_store_run_finish(w->st, &r, NULL) != 0)
			w->errors++;
		/* A second finish of the same run loses. */
		if (keel_store_run_finish(w->st, &r, NULL) != -ESTALE)
			w->errors++;
	}
	return NULL;
}

struct reader {
	struct keel_store *st;
	int stop;
	int errors, lists;
};

static void *read_loop(void *arg)
{
	struct reader *rd = arg;

	do {
		struct keel_store_run_query q;
		struct keel_run *runs;
		int64_t c[KEEL_RUN_NSTATES], total = 0;
		size_t n;

		memset(&q, 0, sizeof(q));
		q.state = -1;
		q.limit = 1000;
		q.with_output = 1;
		if (keel_store_run_list(rd->st, &q, &runs, &n) != 0) {
			rd->errors++;
			break;
		}
		if (n != THREADS * PER_THREAD)
			rd->errors++;
		for (size_t i = 0; i < n; i++) {
			/* Whole rows only: a succeeded run has all of its
			 * finish, a running one none of it. */
			if (runs[i].state == KEEL_RUN_SUCCEEDED &&
			    (runs[i].output == NULL ||
			     runs[i].finished_at == 0 || runs[i].started_at == 0))
				rd->errors++;
			if (runs[i].state == KEEL_RUN_RUNNING &&
			    (runs[i].output != NULL || runs[i].finished_at != 0))
				rd->errors++;
			if (i > 0 && runs[i].id >= runs[i - 1].id)
				rd->errors++;
		}
		keel_store_runs_free(runs, n);
		if (keel_store_run_counts(rd->st, NULL, c) != 0)
			rd->errors++;
		for (int i = 0; i < KEEL_RUN_NSTATES; i++)
			total += c[i];
		if (total != THREADS * PER_THREAD)
			rd->errors++;
		rd->lists++;
	} while (!__atomic_load_n(&rd->stop, __ATOMIC_ACQUIRE));
	return NULL;
}

TEST(four_writers_and_a_reader)
{
	struct worker w[THREADS];
	struct reader rd;
	pthread_t th[THREADS], rt;
	struct keel_store *st;
	PGconn *db;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1);
	memset(w, 0, sizeof(w));
	for (int t = 0; t < THREADS; t++) {
		w[t].st = st;
		for (int i = 0; i < PER_THREAD; i++)
			w[t].ids[i] = insert(st, "a", KEEL_RUN_MANUAL, 1,
					     t * 1000 + i);
	}
	memset(&rd, 0, sizeof(rd));
	rd.st = st;
	CHECK_INT(pthread_create(&rt, NULL, read_loop, &rd), ==, 0);
	for (int t = 0; t < THREADS; t++)
		CHECK_INT(pthread_create(&th[t], NULL, work, &w[t]), ==, 0);
	for (int t = 0; t < THREADS; t++)
		CHECK_INT(pthread_join(th[t], NULL), ==, 0);
	__atomic_store_n(&rd.stop, 1, __ATOMIC_RELEASE);
	CHECK_INT(pthread_join(rt, NULL), ==, 0);
	for (int t = 0; t < THREADS; t++)
		CHECK_INT(w[t].errors, ==, 0);
	CHECK_INT(rd.errors, ==, 0);
	CHECK_INT(rd.lists, >, 0);
	CHECK_INT(count_of(st, "a", KEEL_RUN_SUCCEEDED), ==,
		  THREADS * PER_THREAD);
	/* Five threads, and the store never held more than its 4
	 * connections. */
	db = db_open();
	CHECK_INT(sql_int(db, "SELECT count(*) FROM pg_stat_activity WHERE "
			      "datname = current_database() AND "
			      "application_name = 'keeld'"),
		  <=, 4);
	PQfinish(db);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Several stores on one database (the nodes of a cluster)
 * ------------------------------------------------------------------------ */

struct putter {
	struct keel_store *st;
	pthread_barrier_t *go;
	int created, errors;
};

#define RACE_JOBS 40

static void *put_all(void *arg)
{
	struct putter *pu = arg;

	for (int i = 0; i < RACE_JOBS; i++) {
		char name[32];
		struct keel_job *j;
		enum keel_store_put res;

		snprintf(name, sizeof(name), "race-%02d", i);
		j = job_make(name, "@every 1m", "");
		/* In step, so that the two puts of a job overlap. */
		pthread_barrier_wait(pu->go);
		if (keel_store_job_put(pu->st, j, 100, &res) != 0)
			pu->errors++;
		else if (res == KEEL_STORE_CREATED)
			pu->created++;
		else if (res != KEEL_STORE_UNCHANGED)
			pu->errors++;
		keel_job_free(j);
	}
	return NULL;
}

TEST(two_stores_share_the_database)
{
	struct keel_store *a, *b;
	struct keel_store_job sj;
	struct keel_run r;
	struct putter pa, pb;
	pthread_barrier_t go;
	pthread_t ta, tb;
	int64_t id, id2;
	size_t n;

	db_setup();
	a = open_ok();
	b = open_ok(); /* no lock: a second node is welcome */

	/* Each sees the other's writes. */
	put_job(a, "a", 1000);
	sj = get_job(b, "a");
	CHECK_INT(sj.last_tick, ==, 1000);
	keel_store_job_clear(&sj);
	CHECK_INT(tick1(a, "a", 1060, &id), ==, 0);
	CHECK_INT(last_tick_of(b, "a"), ==, 1060);

	/* The same tick from the second node is refused, whole. */
	CHECK_INT(tick1(b, "a", 1060, &id2), ==, -EEXIST);
	CHECK_CONTAINS(keel_store_errmsg(b), "already exists");
	CHECK_INT(id2, ==, 0);
	CHECK_STR(keel_store_errmsg(a), ""); /* b's failure, not a's */
	CHECK_INT(count_all(a, "a"), ==, 1);

	/* One run, two nodes: one starts it, one finishes it. */
	CHECK_INT(keel_store_run_start(b, id, 1060100, "node-b"), ==, 0);
	CHECK_INT(keel_store_run_start(a, id, 1060100, "node-a"), ==, -ESTALE);
	CHECK_CONTAINS(keel_store_errmsg(a), "is running, not queued");
	finish(b, id, KEEL_RUN_SUCCEEDED, 1060200);
	memset(&r, 0, sizeof(r));
	r.id = id;
	r.state = KEEL_RUN_FAILED;
	CHECK_INT(keel_store_run_finish(a, &r, NULL), ==, -ESTALE);
	CHECK_INT(keel_store_run_get(a, id, &r), ==, 0);
	CHECK_STR(r.node, "node-b");
	CHECK_INT(r.state, ==, KEEL_RUN_SUCCEEDED);
	keel_run_clear(&r);

	/* Two nodes putting the same new jobs at once: each created once,
	 * the other put finds it unchanged; nothing fails. */
	memset(&pa, 0, sizeof(pa));
	memset(&pb, 0, sizeof(pb));
	CHECK_INT(pthread_barrier_init(&go, NULL, 2), ==, 0);
	pa.st = a;
	pb.st = b;
	pa.go = pb.go = &go;
	CHECK_INT(pthread_create(&ta, NULL, put_all, &pa), ==, 0);
	CHECK_INT(pthread_create(&tb, NULL, put_all, &pb), ==, 0);
	CHECK_INT(pthread_join(ta, NULL), ==, 0);
	CHECK_INT(pthread_join(tb, NULL), ==, 0);
	pthread_barrier_destroy(&go);
	CHECK_INT(pa.errors + pb.errors, ==, 0);
	CHECK_INT(pa.created + pb.created, ==, RACE_JOBS);
	{
		struct keel_store_job *jobs;

		CHECK_INT(keel_store_job_list(b, &jobs, &n), ==, 0);
		CHECK_INT(n, ==, RACE_JOBS + 1);
		keel_store_jobs_free(jobs, n);
	}
	/* Deleted on one node: gone on the other. */
	CHECK_INT(keel_store_job_delete(a, "a"), ==, 0);
	CHECK_INT(keel_store_job_get(b, "a", &sj), ==, -ENOENT);
	keel_store_close(a);
	keel_store_close(b);
	db_cleanup();
	keel_test_leak_check();
}

struct opener {
	const char *info;
	struct keel_store *st;
	int rc;
	char err[512];
};

static void *open_one(void *arg)
{
	struct opener *o = arg;

	o->rc = keel_store_pg_open(o->info, NULL, &o->st, o->err,
				   sizeof(o->err));
	return NULL;
}

TEST(nodes_starting_together_migrate_once)
{
	struct opener o[4];
	pthread_t th[4];
	PGconn *db;

	db_setup();
	/* A new database, four nodes at once: the advisory lock makes them
	 * take turns; the first creates the schema, the others find it. */
	for (int i = 0; i < 4; i++) {
		memset(&o[i], 0, sizeof(o[i]));
		o[i].info = conninfo;
		CHECK_INT(pthread_create(&th[i], NULL, open_one, &o[i]), ==, 0);
	}
	for (int i = 0; i < 4; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	for (int i = 0; i < 4; i++) {
		if (o[i].rc != 0)
			KEEL_TEST_FAIL("open %d: %d: %s", i, o[i].rc, o[i].err);
		CHECK(o[i].st != NULL);
	}
	put_job(o[0].st, "a", 1);
	CHECK_INT(last_tick_of(o[3].st, "a"), ==, 1);
	for (int i = 0; i < 4; i++)
		keel_store_close(o[i].st);
	db = db_open();
	CHECK_INT(sql_int(db, "SELECT count(*) FROM schema_version"), ==, 1);
	CHECK_INT(sql_int(db, "SELECT version FROM schema_version"), ==,
		  keel_store_schema_version());
	PQfinish(db);
	db_cleanup();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Locks, lost connections, restarts
 * ------------------------------------------------------------------------ */

TEST(row_lock_held_too_long_is_busy)
{
	struct keel_store_config cfg;
	struct keel_store *st = NULL;
	struct keel_job *j;
	enum keel_store_put res;
	char err[512];
	double t0;
	PGconn *db;

	db_setup();
	keel_store_config_init(&cfg);
	cfg.busy_timeout = INT64_C(200000000); /* 200 ms */
	CHECK_INT(keel_store_pg_open(conninfo, &cfg, &st, err, sizeof(err)), ==,
		  0);
	put_job(st, "a", 1000);
	/* Another session (an operator, another node) holds a's row. */
	db = db_open();
	pg_test_exec(db, "BEGIN");
	pg_test_exec(db, "SELECT * FROM jobs WHERE name = 'a' FOR UPDATE");
	j = job_make("a", "@every 5m", "");
	t0 = keel_test_now();
	CHECK_INT(keel_store_job_put(st, j, 2000, &res), ==, -EBUSY);
	CHECK_CONTAINS(keel_store_errmsg(st), "busy");
	CHECK_INT(keel_store_job_pause(st, "a", 1, 2000), ==, -EBUSY);
	CHECK(keel_test_now() - t0 < 30); /* waited, but not for ever */
	/* Reads do not wait for it. */
	CHECK_INT(last_tick_of(st, "a"), ==, 1000);
	pg_test_exec(db, "ROLLBACK");
	/* Released: the same calls work, and the failed ones wrote
	 * nothing. */
	CHECK_INT(keel_store_job_put(st, j, 3000, &res), ==, 0);
	CHECK_INT(res, ==, KEEL_STORE_REPLACED);
	CHECK_INT(last_tick_of(st, "a"), ==, 3000);
	keel_job_free(j);
	PQfinish(db);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* A batch that fails as a whole (here a row another session holds too
 * long) writes nothing of any item. */
TEST(batch_failing_as_a_whole_writes_nothing)
{
	struct keel_store_config cfg;
	struct keel_store *st = NULL;
	struct keel_store_finish items[2];
	struct keel_run ra, rb, next;
	char err[512], sql[128];
	int64_t a, b, ids[2];
	int rcs[2];
	PGconn *db;

	db_setup();
	keel_store_config_init(&cfg);
	cfg.busy_timeout = INT64_C(200000000); /* 200 ms */
	CHECK_INT(keel_store_pg_open(conninfo, &cfg, &st, err, sizeof(err)), ==,
		  0);
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &a), ==, 0);
	CHECK_INT(tick1(st, "a", 1120, &b), ==, 0);
	db = db_open();
	pg_test_exec(db, "BEGIN");
	snprintf(sql, sizeof(sql),
		 "SELECT * FROM runs WHERE id = %lld FOR UPDATE", (long long)b);
	pg_test_exec(db, sql);
	ids[0] = a;
	ids[1] = b;
	CHECK_INT(keel_store_runs_start(st, ids, 2, 1130000, "n", rcs), ==,
		  -EBUSY);
	CHECK_INT(rcs[0], ==, -EBUSY);
	CHECK_INT(rcs[1], ==, -EBUSY);
	CHECK_INT(state_of(st, a), ==, KEEL_RUN_QUEUED);

	memset(&ra, 0, sizeof(ra));
	ra.id = a;
	ra.state = KEEL_RUN_FAILED;
	ra.finished_at = 1131000;
	next = mkrun("a", KEEL_RUN_RETRY, 2, 1060000);
	memset(&rb, 0, sizeof(rb));
	rb.id = b;
	rb.state = KEEL_RUN_CANCELED;
	rb.finished_at = 1131000;
	items[0] = (struct keel_store_finish){ &ra, &next };
	items[1] = (struct keel_store_finish){ &rb, NULL };
	CHECK_INT(keel_store_runs_finish(st, items, 2, rcs), ==, -EBUSY);
	CHECK_INT(rcs[0], ==, -EBUSY);
	CHECK_INT(rcs[1], ==, -EBUSY);
	CHECK_INT(next.id, ==, 0);
	CHECK_INT(state_of(st, a), ==, KEEL_RUN_QUEUED);
	CHECK_INT(count_all(st, "a"), ==, 2);
	pg_test_exec(db, "ROLLBACK");
	/* Released: the same batch goes through. */
	CHECK_INT(keel_store_runs_finish(st, items, 2, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, 0);
	CHECK_INT(rcs[1], ==, 0);
	CHECK_INT(next.id, >, b);
	CHECK_INT(state_of(st, b), ==, KEEL_RUN_CANCELED);
	PQfinish(db);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

/* Ends every session of the store (an administrator's
 * pg_terminate_backend), waiting up to 30 s for each to be gone; how many
 * were ended. */
static long long end_sessions(PGconn *db)
{
	return sql_int(db, "SELECT count(pg_terminate_backend(pid, 30000)) "
			   "FROM pg_stat_activity WHERE datname = "
			   "current_database() AND pid <> pg_backend_pid() AND "
			   "application_name = 'keeld'");
}

/* rc of the first call after the sessions were ended: 0, since the store
 * finds the session dead (the server said so and closed it) before it
 * sends anything, and reconnects. */
static void works_after_loss(int rc, struct keel_store *st)
{
	if (rc != 0)
		KEEL_TEST_FAIL("the first call after a lost connection: %d: %s",
			       rc, keel_store_errmsg(st));
}

TEST(sessions_ended_by_an_administrator)
{
	struct keel_store_config cfg;
	struct keel_store *st = NULL;
	struct keel_store_job sj;
	char err[512];
	int64_t id;
	PGconn *db;

	db_setup();
	keel_store_config_init(&cfg);
	cfg.busy_timeout = INT64_C(200000000); /* 200 ms */
	CHECK_INT(keel_store_pg_open(conninfo, &cfg, &st, err, sizeof(err)), ==,
		  0);
	put_job(st, "a", 1000);
	db = db_open();
	CHECK_INT(end_sessions(db), >=, 1);
	/* The store notices before it sends, reconnects, and the call
	 * succeeds. */
	works_after_loss(keel_store_job_get(st, "a", &sj), st);
	keel_store_job_clear(&sj);
	/* The same for a write. */
	CHECK_INT(end_sessions(db), >=, 1);
	works_after_loss(tick1(st, "a", 1060, &id), st);
	CHECK_INT(id, >, 0);
	CHECK_INT(last_tick_of(st, "a"), ==, 1060);
	/* The new session has the store's settings again: a lock held
	 * elsewhere still ends in -EBUSY, not in a wait without end. */
	CHECK_INT(end_sessions(db), >=, 1);
	pg_test_exec(db, "SET application_name = 'holder'");
	pg_test_exec(db, "BEGIN");
	pg_test_exec(db, "SELECT * FROM jobs WHERE name = 'a' FOR UPDATE");
	CHECK_INT(keel_store_job_pause(st, "a", 1, 2000), ==, -EBUSY);
	pg_test_exec(db, "ROLLBACK");
	CHECK_INT(keel_store_job_pause(st, "a", 1, 2000), ==, 0);
	PQfinish(db);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

static PGconn *killer_db;

/* decide, inside recover's transaction: the store's session is ended
 * there, half-way. */
static int decide_and_kill(const struct keel_run *crashed,
			   struct keel_run *next, void *ud)
{
	(void)ud;
	if (end_sessions(killer_db) < 1)
		return -EPROTO; /* the test checks it was ended */
	next->state = KEEL_RUN_QUEUED;
	next->trigger = KEEL_RUN_RETRY;
	next->attempt = crashed->attempt + 1;
	next->scheduled_at = crashed->scheduled_at;
	next->created_at = 1;
	return 1;
}

TEST(connection_lost_mid_transaction_writes_nothing)
{
	struct keel_store *st;
	struct keel_run *runs;
	size_t n, crashed = 9;
	int64_t id;

	db_setup();
	st = open_ok();
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &id), ==, 0);
	CHECK_INT(keel_store_run_start(st, id, 1060001, "n"), ==, 0);
	killer_db = db_open();
	/* Crashed in the transaction, then the session ends: -EIO, and the
	 * server rolled the crash back. */
	CHECK_INT(keel_store_recover(st, 5000, decide_and_kill, NULL, &crashed),
		  ==, -EIO);
	CHECK_CONTAINS(keel_store_errmsg(st), "connection");
	CHECK_INT(crashed, ==, 0);
	CHECK_INT(state_of(st, id), ==, KEEL_RUN_RUNNING); /* reconnected */
	CHECK_INT(count_all(st, "a"), ==, 1);
	/* And recovery works on the new session. */
	CHECK_INT(keel_store_recover(st, 5000, NULL, NULL, &crashed), ==, 0);
	CHECK_INT(crashed, ==, 1);
	CHECK_INT(state_of(st, id), ==, KEEL_RUN_CRASHED);
	CHECK_INT(keel_store_run_active(st, &runs, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	PQfinish(killer_db);
	keel_store_close(st);
	db_cleanup();
	keel_test_leak_check();
}

struct poker {
	struct keel_store *st;
	int ok, eio, other;
	char err[512];
};

static void *poke(void *arg)
{
	struct poker *pk = arg;
	struct keel_store_job sj;
	int rc = keel_store_job_get(pk->st, "a", &sj);

	if (rc == 0) {
		keel_store_job_clear(&sj);
		pk->ok++;
	} else if (rc == -EIO) {
		pk->eio++;
	} else {
		pk->other++;
	}
	if (rc != 0)
		snprintf(pk->err, sizeof(pk->err), "%d: %s", rc,
			 keel_store_errmsg(pk->st));
	return NULL;
}

/* Four calls at once, so that every connection of the pool is used. */
static void poke4(struct keel_store *st, struct poker pk[4])
{
	pthread_t th[4];

	for (int i = 0; i < 4; i++) {
		memset(&pk[i], 0, sizeof(pk[i]));
		pk[i].st = st;
		CHECK_INT(pthread_create(&th[i], NULL, poke, &pk[i]), ==, 0);
	}
	for (int i = 0; i < 4; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
}

TEST(server_restarted_or_stopped_under_the_store)
{
	struct pg_server own;
	struct keel_store *st;
	struct keel_store_job sj;
	struct poker pk[4];
	char why[2048], info[600];
	int64_t id;
	double t0;
	int rc;

	need_server();
	/* A server of its own: the others' cases keep theirs running. In
	 * the shared server's dir, which the main process removes even if
	 * this case fails half-way (its postmaster ends with it). */
	rc = pg_server_start(&own, server.dir, why, sizeof(why));
	if (rc == 1)
		KEEL_TEST_SKIP(why);
	if (rc != 0)
		KEEL_TEST_FAIL("own server: %s", why);
	pg_server_conninfo(&own, "postgres", info, sizeof(info));
	st = open_info(info);
	put_job(st, "a", 1000);
	CHECK_INT(tick1(st, "a", 1060, &id), ==, 0);
	poke4(st, pk); /* open the pool's connections */

	/* Restarted: every session is gone, and each connection finds it
	 * out before its call and reconnects. */
	if (pg_server_restart(&own, why, sizeof(why)) != 0)
		KEEL_TEST_FAIL("restart: %s", why);
	works_after_loss(keel_store_job_get(st, "a", &sj), st);
	keel_store_job_clear(&sj);
	poke4(st, pk);
	for (int i = 0; i < 4; i++)
		if (pk[i].ok != 1)
			KEEL_TEST_FAIL("call %d after the restart: %s", i,
				       pk[i].err);
	CHECK_INT(last_tick_of(st, "a"), ==, 1060);

	/* Stopped: calls fail with -EIO, promptly, and write nothing. */
	pg_server_stop(&own);
	t0 = keel_test_now();
	CHECK_INT(keel_store_job_get(st, "a", &sj), ==, -EIO);
	CHECK_CONTAINS(keel_store_errmsg(st), "connection");
	CHECK_INT(tick1(st, "a", 1120, &id), ==, -EIO);
	CHECK_INT(id, ==, 0);
	poke4(st, pk);
	for (int i = 0; i < 4; i++)
		CHECK_INT(pk[i].eio, ==, 1);
	CHECK(keel_test_now() - t0 < 30);

	/* Started again: the store goes on by itself. */
	if (pg_server_restart(&own, why, sizeof(why)) != 0)
		KEEL_TEST_FAIL("start: %s", why);
	works_after_loss(tick1(st, "a", 1120, &id), st);
	CHECK_INT(id, >, 0);
	CHECK_INT(last_tick_of(st, "a"), ==, 1120);
	CHECK_INT(state_of(st, id), ==, KEEL_RUN_QUEUED);
	poke4(st, pk);
	for (int i = 0; i < 4; i++)
		CHECK_INT(pk[i].ok, ==, 1);
	keel_store_close(st);
	pg_server_destroy(&own);
	keel_test_leak_check();
}
