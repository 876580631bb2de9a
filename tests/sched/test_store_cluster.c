/* KEEL_TEST_LABELS: threads */
/*
 * tests/sched/test_store_cluster.c - the cluster's part of keeld's store
 * (keel/store.h's last section): the same cases against the SQLite store
 * (one keeld, so one handle: its "nodes" are names) and the PostgreSQL
 * store (a real server, pg_server.h, started before the cases; two handles
 * on one database are two nodes), each case on a data directory or a
 * database of its own. PostgreSQL cases skip where it is not installed.
 *
 *   election   two nodes racing for the lease from 8 threads, leaders
 *              pausing: one holder per term, a new term only after the
 *              last one's expiry, terms 1, 2, 3... with no gap; a paused
 *              leader loses the lease after its ttl, the other takes it
 *              with term + 1, and the old term's ticks and rescue are
 *              refused (-ESTALE) and write nothing; a release lets the
 *              other take it at once; a fenced transaction holds a
 *              takeover off, until the server ends it when its process
 *              is paused inside it (PostgreSQL).
 *   claims     8 claimers (4 threads x 2 handles) on 1000 queued runs:
 *              each claimed exactly once; tags, not_before (store clock),
 *              max, order; "forbid" and "replace" jobs never running
 *              twice at once under concurrent claimers, "allow" jobs
 *              running many.
 *   beats      a claimed run not beaten for stale_ms is rescued (crashed,
 *              its retry queued, in one transaction), its old claimer's
 *              beats and finishes are refused and change nothing;
 *              recover_node crashes only its node's runs.
 *   nodes      beats, the list, forgetting.
 *   schema     a version 1 store migrated: jobs' tags and concurrency
 *              filled from their specs, a corrupt spec left to defaults.
 *   restart    PostgreSQL restarted under a claim holder: -EIO, then the
 *              same claim beats and finishes.
 *
 * Timings: leases of 300-400 ms, stale_ms of 1 s (each slept past with
 * margin); every wait for something to happen is a poll bounded by 10 s
 * or more.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include <keel/job.h>
#include <keel/run.h>
#include <keel/store.h>
#include "keel_test.h"
#include "pg_server.h"
#include "pg_test.h"

#include "../../src/sched/store_internal.h"

/* ------------------------------------------------------------------------
 * The engine of the case
 * ------------------------------------------------------------------------ */

enum engine { SQLITE, PG };

static enum engine engine;
static char base[256];	   /* SQLite: the case's temp dir */
static char data[300];	   /* and its store's dir */
static char dbname[64];	   /* PostgreSQL: the case's database */
static char conninfo[512]; /* and how to reach it */

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void pg_admin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pg_admin(const char *fmt, ...)
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

static void setup(enum engine e)
{
	const char *t = getenv("TMPDIR");

	engine = e;
	if (e == SQLITE) {
		snprintf(base, sizeof(base), "%s/keel-cluster-XXXXXX",
			 t != NULL && t[0] != '\0' ? t : "/tmp");
		CHECK(mkdtemp(base) != NULL);
		snprintf(data, sizeof(data), "%s/data", base);
		return;
	}
	if (server_state == 1)
		KEEL_TEST_SKIP(server_why);
	if (server_state != 0)
		KEEL_TEST_FAIL("the test server did not start: %s", server_why);
	snprintf(dbname, sizeof(dbname), "keel_c%ld", (long)getpid());
	pg_admin("CREATE DATABASE %s", dbname);
	pg_server_conninfo(&server, dbname, conninfo, sizeof(conninfo));
}

static void cleanup(void)
{
	if (engine == SQLITE)
		CHECK_INT(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS), ==, 0);
	else
		pg_admin("DROP DATABASE %s WITH (FORCE)", dbname);
	keel_test_leak_check();
}

/* The same case on both engines: TEST(sqlite_x) and TEST(pg_x). */
#define BOTH(name)                                                            \
	static void case_##name(void);                                        \
	TEST(sqlite_##name)                                                   \
	{                                                                     \
		setup(SQLITE);                                                \
		case_##name();                                                \
		cleanup();                                                    \
	}                                                                     \
	TEST(pg_##name)                                                       \
	{                                                                     \
		setup(PG);                                                    \
		case_##name();                                                \
		cleanup();                                                    \
	}                                                                     \
	static void case_##name(void)

static struct keel_store *open_cfg(const struct keel_store_config *cfg)
{
	char err[512] = "";
	struct keel_store *st = NULL;
	int rc = engine == SQLITE
			 ? keel_store_sqlite_open(data, cfg, &st, err, sizeof(err))
			 : keel_store_pg_open(conninfo, cfg, &st, err, sizeof(err));

	if (rc != 0)
		KEEL_TEST_FAIL("open: %d: %s", rc, err);
	return st;
}

/*
 * Two nodes' handles: two stores on one PostgreSQL database; with SQLite,
 * which one keeld opens, the one store twice (its nodes are names).
 */
static void open_pair(struct keel_store *h[2])
{
	h[0] = open_cfg(NULL);
	h[1] = engine == SQLITE ? h[0] : open_cfg(NULL);
}

static void close_pair(struct keel_store *h[2])
{
	if (h[1] != h[0])
		keel_store_close(h[1]);
	keel_store_close(h[0]);
}

/* A statement on the store's database, outside keel (both engines'
 * SQL). */
static long long raw_int(const char *sql)
{
	long long v;

	if (engine == SQLITE) {
		char path[400];
		sqlite3 *db = NULL;
		sqlite3_stmt *q = NULL;

		snprintf(path, sizeof(path), "%s/keeld.db", data);
		CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE,
					  NULL),
			  ==, SQLITE_OK);
		sqlite3_busy_timeout(db, 30000);
		if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
			KEEL_TEST_FAIL("%s: %s", sql, sqlite3_errmsg(db));
		if (sqlite3_step(q) != SQLITE_ROW)
			KEEL_TEST_FAIL("%s: no row (%s)", sql,
				       sqlite3_errmsg(db));
		v = sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
		sqlite3_close(db);
	} else {
		PGconn *c = pg_test_connect(&server, dbname);
		PGresult *r = PQexec(c, sql);

		if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
			KEEL_TEST_FAIL("%s: %s", sql, PQerrorMessage(c));
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
		PQfinish(c);
	}
	return v;
}

static void raw_exec(const char *sql)
{
	if (engine == SQLITE) {
		char path[400], *msg = NULL;
		sqlite3 *db = NULL;

		snprintf(path, sizeof(path), "%s/keeld.db", data);
		CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE,
					  NULL),
			  ==, SQLITE_OK);
		sqlite3_busy_timeout(db, 30000);
		if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
			KEEL_TEST_FAIL("%s: %s", sql, msg);
		sqlite3_close(db);
	} else {
		PGconn *c = pg_test_connect(&server, dbname);

		pg_test_exec(c, sql);
		PQfinish(c);
	}
}

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static void sleep_ms(long ms)
{
	pg_server_sleep_ms(ms);
}

/* A job named name; extra is more JSON members ("" for none). */
static void put_job(struct keel_store *st, const char *name, const char *extra)
{
	char text[1024], err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_error_t je;
	json_t *v;

	snprintf(text, sizeof(text),
		 "{\"name\": \"%s\", \"schedule\": \"@every 1m\", "
		 "\"executor\": {\"type\": \"shell\", \"command\": [\"true\"]}"
		 "%s%s}",
		 name, extra[0] ? ", " : "", extra);
	v = json_loads(text, 0, &je);
	if (v == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s", je.text);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("job refused: %s", err);
	json_decref(v);
	CHECK_INT(keel_store_job_put(st, j, 1000, NULL), ==, 0);
	keel_job_free(j);
}

/* A run for a tick; its job is the tick's. */
static struct keel_run mkrun(int64_t scheduled_at, int64_t not_before)
{
	struct keel_run r;

	memset(&r, 0, sizeof(r));
	r.state = KEEL_RUN_QUEUED;
	r.trigger = KEEL_RUN_SCHEDULE;
	r.attempt = 1;
	r.scheduled_at = scheduled_at;
	r.created_at = scheduled_at;
	r.not_before = not_before;
	r.exit_code = -1;
	return r;
}

/*
 * n queued runs of job in one batch (ticks at first_s, first_s + 1, ...
 * seconds), due at not_before; their ids into ids (may be NULL). Fenced
 * by term when term > 0.
 */
static int queue_runs_term(struct keel_store *st, int64_t term,
			   const char *job, int n, int64_t first_s,
			   int64_t not_before, int64_t *ids)
{
	struct keel_run *runs = calloc((size_t)n, sizeof(*runs));
	struct keel_store_tick t;
	int rc;

	CHECK(runs != NULL);
	for (int i = 0; i < n; i++)
		runs[i] = mkrun((first_s + i) * 1000, not_before);
	t = (struct keel_store_tick){ job, first_s + n - 1, runs, (size_t)n };
	rc = term > 0 ? keel_store_ticks_fenced(st, term, &t, 1)
		      : keel_store_ticks(st, &t, 1);
	for (int i = 0; ids != NULL && i < n; i++)
		ids[i] = runs[i].id;
	free(runs);
	return rc;
}

static void queue_runs(struct keel_store *st, const char *job, int n,
		       int64_t first_s, int64_t not_before, int64_t *ids)
{
	CHECK_INT(queue_runs_term(st, 0, job, n, first_s, not_before, ids), ==,
		  0);
}

/* The store's clock, through a beat of a node of the tests' own. */
static int64_t store_now(struct keel_store *st)
{
	int64_t now = 0;

	CHECK_INT(keel_store_node_beat(st, "probe", 0, NULL, 0, &now), ==, 0);
	CHECK_INT(now, >, 0);
	return now;
}

static struct keel_run get_run(struct keel_store *st, int64_t id)
{
	struct keel_run r;

	CHECK_INT(keel_store_run_get(st, id, &r), ==, 0);
	return r;
}

static enum keel_run_state state_of(struct keel_store *st, int64_t id)
{
	struct keel_run r = get_run(st, id);
	enum keel_run_state s = r.state;

	keel_run_clear(&r);
	return s;
}

static int64_t count_in(struct keel_store *st, const char *job,
			enum keel_run_state s)
{
	int64_t c[KEEL_RUN_NSTATES];

	CHECK_INT(keel_store_run_counts(st, job, c), ==, 0);
	return c[s];
}

/* A finish of a claimed run (r as claimed), with claim (0: unchecked). */
static int finish_claimed(struct keel_store *st, const struct keel_run *r,
			  uint64_t claim, enum keel_run_state state)
{
	struct keel_run f;

	memset(&f, 0, sizeof(f));
	f.id = r->id;
	f.state = state;
	f.finished_at = r->started_at + 1;
	f.exit_code = state == KEEL_RUN_SUCCEEDED ? 0 : 1;
	f.claim = claim;
	return keel_store_run_finish(st, &f, NULL);
}

static int claim(struct keel_store *st, const char *node,
		 const char *const *tags, size_t n_tags, int max,
		 struct keel_run **out, size_t *n)
{
	return keel_store_claim(st, node, tags, n_tags, max, out, n);
}

/* Waits until node holds the lease on st (10 s at most); the lease. */
static struct keel_store_lease wait_lease(struct keel_store *st,
					  const char *node, int64_t ttl)
{
	struct keel_store_lease l;
	double t0 = keel_test_now();

	for (;;) {
		CHECK_INT(keel_store_lease_acquire(st, node, ttl, &l), ==, 0);
		if (strcmp(l.holder, node) == 0)
			return l;
		if (keel_test_now() - t0 > 10)
			KEEL_TEST_FAIL("%s did not get the lease in 10 s "
				       "(holder %s, term %lld)",
				       node, l.holder, (long long)l.term);
		sleep_ms(20);
	}
}

/* ------------------------------------------------------------------------
 * Election
 * ------------------------------------------------------------------------ */

#define RACE_TTL 300

struct answer {
	int node;	/* who asked: 0, 1 */
	int holder;	/* 0, 1, or -1 for nobody */
	int64_t term, now, expires;
};

struct race {
	struct keel_store *st[2];
	pthread_mutex_t mu;
	struct answer *v;
	size_t n, cap;
	double paused_until[2]; /* keel_test_now() */
	int stop;
	int failed;
	char why[256];
};

struct racer {
	struct race *r;
	int index;
};

static const char *const race_names[2] = { "node-0", "node-1" };

static void *race_thread(void *arg)
{
	struct racer *me = arg;
	struct race *r = me->r;
	int node = me->index % 2;
	unsigned seed = (unsigned)me->index * 7919u + 1u;

	for (;;) {
		struct keel_store_lease l;
		struct answer a;
		double pause;
		int rc, stop;

		pthread_mutex_lock(&r->mu);
		stop = r->stop || r->failed;
		pause = r->paused_until[node];
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		if (keel_test_now() < pause) {
			/* A paused leader: all of its threads stop asking. */
			sleep_ms(5);
			continue;
		}
		rc = keel_store_lease_acquire(r->st[node], race_names[node],
					      RACE_TTL, &l);
		pthread_mutex_lock(&r->mu);
		if (rc != 0 && !r->failed) {
			r->failed = 1;
			snprintf(r->why, sizeof(r->why), "acquire: %d: %s", rc,
				 keel_store_errmsg(r->st[node]));
		}
		if (rc == 0 && r->n == r->cap) {
			size_t ncap = r->cap ? r->cap * 2 : 1024;
			struct answer *nv = realloc(r->v, ncap * sizeof(*nv));

			if (nv == NULL) {
				r->failed = 1;
				snprintf(r->why, sizeof(r->why), "no memory");
			} else {
				r->v = nv;
				r->cap = ncap;
			}
		}
		if (rc == 0 && !r->failed) {
			a.node = node;
			a.holder = strcmp(l.holder, race_names[0]) == 0	  ? 0
				   : strcmp(l.holder, race_names[1]) == 0 ? 1
									  : -1;
			a.term = l.term;
			a.now = l.now;
			a.expires = l.expires_at;
			r->v[r->n++] = a;
			/* Now and then the leader pauses past its lease. */
			if (a.holder == node && rand_r(&seed) % 30 == 0 &&
			    r->paused_until[node] < keel_test_now())
				r->paused_until[node] =
					keel_test_now() + RACE_TTL * 1.6 / 1000;
		}
		pthread_mutex_unlock(&r->mu);
		sleep_ms(1 + rand_r(&seed) % 8);
	}
	return NULL;
}

static int by_term(const void *a, const void *b)
{
	const struct answer *x = a, *y = b;

	if (x->term != y->term)
		return x->term < y->term ? -1 : 1;
	return x->now < y->now ? -1 : x->now > y->now;
}

BOTH(election_one_holder_per_term)
{
	struct race r;
	struct racer rc[8];
	pthread_t th[8];
	int64_t max_term = 0, prev_expires = 0;
	size_t i, grants = 0;
	int prev_holder = -1;
	double t0;

	memset(&r, 0, sizeof(r));
	pthread_mutex_init(&r.mu, NULL);
	open_pair(r.st);
	for (i = 0; i < 8; i++) {
		rc[i] = (struct racer){ &r, (int)i };
		CHECK_INT(pthread_create(&th[i], NULL, race_thread, &rc[i]), ==,
			  0);
	}
	/* At least 2.5 s, and until the lease changed hands a few times. */
	t0 = keel_test_now();
	for (;;) {
		int64_t terms = 0;

		sleep_ms(100);
		pthread_mutex_lock(&r.mu);
		for (i = 0; i < r.n; i++)
			if (r.v[i].term > terms)
				terms = r.v[i].term;
		if ((keel_test_now() - t0 > 2.5 && terms >= 4) ||
		    keel_test_now() - t0 > 20 || r.failed)
			r.stop = 1;
		pthread_mutex_unlock(&r.mu);
		if (r.stop)
			break;
	}
	for (i = 0; i < 8; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	if (r.failed)
		KEEL_TEST_FAIL("%s", r.why);
	CHECK(r.n > 100);

	/* By term: each term has one holder, who got it after every earlier
	 * term's last expiry (no two leaders at any store time), and terms
	 * follow each other with no gap, from 1. */
	qsort(r.v, r.n, sizeof(r.v[0]), by_term);
	for (i = 0; i < r.n;) {
		size_t k = i;
		int holder = r.v[i].holder;
		int64_t term = r.v[i].term, first = INT64_MAX, last = 0;

		CHECK(holder == 0 || holder == 1);
		CHECK_INT(term, ==, max_term + 1);
		for (; k < r.n && r.v[k].term == term; k++) {
			CHECK_INT(r.v[k].holder, ==, holder);
			if (r.v[k].holder == r.v[k].node) {
				grants++;
				if (r.v[k].now < first)
					first = r.v[k].now;
				/* A grant holds for its ttl at most: exactly
				 * when this call took or renewed it; less when
				 * the call lost the race to a thread of the
				 * same node and read the lease it took. */
				CHECK(r.v[k].expires <= r.v[k].now + RACE_TTL);
			}
			/* (Another's answer may show it expired a moment
			 * ago: nobody had taken it yet.) */
			if (r.v[k].expires > last)
				last = r.v[k].expires;
		}
		/* Each term was granted (to its holder) ... */
		CHECK(first != INT64_MAX);
		/* ... only once the previous term had expired, and only to
		 * another node (nobody releases here: a renewal keeps the
		 * term). */
		CHECK_INT(first, >=, prev_expires);
		CHECK(term == 1 || holder != prev_holder);
		prev_expires = last;
		prev_holder = holder;
		max_term = term;
		i = k;
	}
	CHECK_INT(max_term, >=, 2);
	CHECK(grants > 0);
	printf("  %zu answers, %zu grants, %lld terms\n", r.n, grants,
	       (long long)max_term);
	free(r.v);
	pthread_mutex_destroy(&r.mu);
	close_pair(r.st);
}

/* A running run of job "w" claimed by node "worker" (for rescue). */
static struct keel_run claim_one(struct keel_store *st, const char *node)
{
	struct keel_run *got = NULL, r;
	size_t n = 0;

	CHECK_INT(claim(st, node, NULL, 0, 1, &got, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	r = got[0];
	free(got);
	return r;
}

BOTH(paused_leader_is_fenced_and_release_hands_over)
{
	struct keel_store *h[2];
	struct keel_store_lease a, b, l;
	struct keel_run w;
	int64_t ids[2];
	size_t n = 9;

	open_pair(h);
	put_job(h[0], "j", "\"concurrency\": \"allow\"");
	/* A leads (term 1); B, asking, learns it. */
	a = wait_lease(h[0], "a", 400);
	CHECK_INT(a.term, ==, 1);
	CHECK_INT(a.expires_at, >=, a.now + 400);
	CHECK_INT(keel_store_lease_acquire(h[1], "b", 400, &l), ==, 0);
	CHECK_STR(l.holder, "a");
	CHECK_INT(l.term, ==, 1);
	/* A renews: same term, later expiry. */
	sleep_ms(20);
	CHECK_INT(keel_store_lease_acquire(h[0], "a", 400, &l), ==, 0);
	CHECK_STR(l.holder, "a");
	CHECK_INT(l.term, ==, 1);
	CHECK_INT(l.expires_at, >, a.expires_at);
	a = l;
	/* The leader writes ticks. */
	CHECK_INT(queue_runs_term(h[0], 1, "j", 1, 1000, 0, ids), ==, 0);
	CHECK_INT(ids[0], >, 0);
	/* A worker holds a run, and never beats it. */
	w = claim_one(h[1], "worker");

	/* A pauses (stops renewing); B takes over once A's lease expired,
	 * with the next term. */
	b = wait_lease(h[1], "b", 400);
	CHECK_INT(b.term, ==, 2);
	CHECK_INT(b.now, >=, a.expires_at);

	/* A comes back: its term's writes are refused and write nothing. */
	CHECK_INT(queue_runs_term(h[0], 1, "j", 2, 2000, 0, ids), ==, -ESTALE);
	CHECK_CONTAINS(keel_store_errmsg(h[0]), "term 1 no longer holds");
	CHECK_INT(ids[0], ==, 0);
	CHECK_INT(ids[1], ==, 0);
	CHECK_INT(count_in(h[0], "j", KEEL_RUN_QUEUED), ==, 0);
	CHECK_INT(raw_int("SELECT last_tick FROM jobs WHERE name = 'j'"), ==,
		  1000);
	CHECK_INT(keel_store_rescue(h[0], 1, 1, NULL, NULL, &n), ==, -ESTALE);
	CHECK_INT(n, ==, 0);
	CHECK_INT(state_of(h[0], w.id), ==, KEEL_RUN_RUNNING);
	/* Even with nothing to write, the old term learns it. */
	CHECK_INT(keel_store_ticks_fenced(h[0], 1, NULL, 0), ==, -ESTALE);
	/* And asking shows who leads. */
	CHECK_INT(keel_store_lease_acquire(h[0], "a", 400, &l), ==, 0);
	CHECK_STR(l.holder, "b");
	CHECK_INT(l.term, ==, 2);
	/* The new leader's term writes. */
	CHECK_INT(queue_runs_term(h[1], 2, "j", 2, 2000, 0, ids), ==, 0);
	CHECK_INT(count_in(h[1], "j", KEEL_RUN_QUEUED), ==, 2);
	CHECK_INT(keel_store_rescue(h[1], 2, 1, NULL, NULL, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_INT(state_of(h[1], w.id), ==, KEEL_RUN_CRASHED);
	keel_run_clear(&w);

	/* A release needs the holder and its term ... */
	CHECK_INT(keel_store_lease_release(h[0], "a", 1), ==, -ESTALE);
	CHECK_INT(keel_store_lease_release(h[1], "b", 1), ==, -ESTALE);
	CHECK_INT(keel_store_lease_release(h[1], "b", 2), ==, 0);
	/* ... and lets the other take the lease at once, before the
	 * released one's expiry, with the next term. */
	CHECK_INT(keel_store_lease_acquire(h[0], "a", 400, &l), ==, 0);
	CHECK_STR(l.holder, "a");
	CHECK_INT(l.term, ==, 3);
	CHECK_INT(keel_store_ticks_fenced(h[1], 2, NULL, 0), ==, -ESTALE);
	CHECK_INT(keel_store_ticks_fenced(h[0], 3, NULL, 0), ==, 0);

	/* A lease that expired with nobody taking it fences its term too;
	 * its holder renewing it keeps the term. */
	sleep_ms(500);
	CHECK_INT(keel_store_ticks_fenced(h[0], 3, NULL, 0), ==, -ESTALE);
	CHECK_INT(keel_store_lease_acquire(h[0], "a", 400, &l), ==, 0);
	CHECK_STR(l.holder, "a");
	CHECK_INT(l.term, ==, 3);
	CHECK_INT(keel_store_ticks_fenced(h[0], 3, NULL, 0), ==, 0);
	/* A release, then the same node again: a new holder, a new term. */
	CHECK_INT(keel_store_lease_release(h[0], "a", 3), ==, 0);
	CHECK_INT(keel_store_lease_acquire(h[0], "a", 400, &l), ==, 0);
	CHECK_INT(l.term, ==, 4);
	close_pair(h);
}

/* PostgreSQL: a fenced transaction keeps the lease row locked, so a
 * takeover (even of an expired lease) waits for it to end. */
TEST(pg_takeover_waits_for_a_fenced_transaction)
{
	struct keel_store_config cfg;
	struct keel_store *a, *b;
	struct keel_store_lease l;
	PGconn *db;

	setup(PG);
	keel_store_config_init(&cfg);
	cfg.busy_timeout = INT64_C(200000000); /* 200 ms */
	a = open_cfg(&cfg);
	b = open_cfg(&cfg);
	l = wait_lease(a, "a", 300);
	CHECK_INT(l.term, ==, 1);
	sleep_ms(400); /* expired */
	/* What S_LEASE_CHECK does, held open as a long tick batch would. */
	db = pg_test_connect(&server, dbname);
	pg_test_exec(db, "BEGIN");
	pg_test_exec(db, "SELECT 1 FROM lease WHERE id = 1 FOR SHARE");
	CHECK_INT(keel_store_lease_acquire(b, "b", 300, &l), ==, -EBUSY);
	pg_test_exec(db, "COMMIT");
	CHECK_INT(keel_store_lease_acquire(b, "b", 300, &l), ==, 0);
	CHECK_STR(l.holder, "b");
	CHECK_INT(l.term, ==, 2);
	PQfinish(db);
	keel_store_close(b);
	keel_store_close(a);
	cleanup();
}

/* 1 once a session waits for a lock (of `relation`, NULL for any),
 * within 10 s; else 0. */
static int lock_wait_seen(const char *relation)
{
	char sql[256];
	double t0 = keel_test_now();

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_locks WHERE NOT granted%s%s%s",
		 relation != NULL ? " AND relation = '" : "",
		 relation != NULL ? relation : "",
		 relation != NULL ? "'::regclass" : "");
	while (raw_int(sql) == 0) {
		if (keel_test_now() - t0 > 10)
			return 0;
		sleep_ms(5);
	}
	return 1;
}

struct renewal {
	struct keel_store *st;
	struct keel_store_lease l;
	int rc;
};

static void *renew_thread(void *arg)
{
	struct renewal *w = arg;

	w->rc = keel_store_lease_acquire(w->st, "a", 300, &w->l);
	return NULL;
}

/* PostgreSQL: a renewal that waited for the lease row (behind another
 * call, here a transaction of the test's) renews from the moment it got
 * it, not from when it was sent: its expiry never moves back, and a term
 * never starts before the last one's end. */
TEST(pg_a_renewal_that_waited_counts_from_when_it_got_the_row)
{
	struct keel_store *a;
	struct keel_store_lease l;
	struct renewal w;
	pthread_t th;
	PGconn *db;
	long long before;

	setup(PG);
	a = open_cfg(NULL);
	l = wait_lease(a, "a", 300);
	db = pg_test_connect(&server, dbname);
	pg_test_exec(db, "BEGIN");
	pg_test_exec(db, "SELECT 1 FROM lease WHERE id = 1 FOR UPDATE");
	memset(&w, 0, sizeof(w));
	w.st = a;
	CHECK_INT(pthread_create(&th, NULL, renew_thread, &w), ==, 0);
	if (!lock_wait_seen(NULL))
		KEEL_TEST_FAIL("the renewal never waited for the row");
	sleep_ms(100);
	before = raw_int("SELECT (floor(extract(epoch FROM "
			 "clock_timestamp()) * 1000))::bigint");
	pg_test_exec(db, "COMMIT");
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(w.rc, ==, 0);
	CHECK_STR(w.l.holder, "a");
	CHECK_INT(w.l.term, ==, l.term);
	CHECK_INT(w.l.now, >=, before);
	CHECK_INT(w.l.expires_at, ==, w.l.now + 300);
	PQfinish(db);
	keel_store_close(a);
	cleanup();
}

/*
 * PostgreSQL: a leader paused inside its fenced transaction (stopped
 * between two of its statements) would hold the lease row, and every
 * takeover off, until it wakes; the server ends its session after
 * idle_timeout instead, the takeover goes through, and the paused call
 * fails with -EIO when it wakes, having written nothing.
 */
TEST(pg_a_paused_fenced_transaction_is_ended)
{
	struct keel_store_config cfg;
	struct keel_store *b;
	struct keel_store_lease l;
	PGconn *db;
	pid_t pid;
	int status = 0, busy = 0;
	double t0;

	setup(PG);
	keel_store_config_init(&cfg);
	cfg.busy_timeout = INT64_C(200000000); /* 200 ms */
	cfg.idle_timeout = INT64_C(2000000000); /* 2 s */
	b = open_cfg(&cfg);
	put_job(b, "j", "");
	/* The runs table held: the leader's tick, once fenced, waits in
	 * its INSERT, where the test can stop it. */
	db = pg_test_connect(&server, dbname);
	pg_test_exec(db, "BEGIN");
	pg_test_exec(db, "LOCK TABLE runs IN SHARE MODE");
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct keel_store *a = open_cfg(&cfg);
		struct keel_store_lease la = wait_lease(a, "a", 300);
		int rc = queue_runs_term(a, la.term, "j", 1, 60, 0, NULL);

		if (rc != -EIO)
			fprintf(stderr, "the paused tick: %d (%s)\n", rc,
				keel_store_errmsg(a));
		_exit(rc == -EIO ? 0 : 1);
	}
	if (!lock_wait_seen("runs")) {
		kill(pid, SIGKILL);
		KEEL_TEST_FAIL("the fenced tick never waited for the runs "
			       "table");
	}
	kill(pid, SIGSTOP);
	/* Its INSERT ends; its transaction stays open, the lease row
	 * locked, the process asleep. */
	pg_test_exec(db, "COMMIT");
	t0 = keel_test_now();
	sleep_ms(400); /* the 300 ms lease has expired */
	for (;;) {
		int rc = keel_store_lease_acquire(b, "b", 300, &l);

		if (rc == 0 && strcmp(l.holder, "b") == 0)
			break;
		if (rc == -EBUSY)
			busy++;
		else
			CHECK_INT(rc, ==, 0);
		if (keel_test_now() - t0 > 15) {
			kill(pid, SIGKILL);
			KEEL_TEST_FAIL("b never took the lease held by a paused "
				       "transaction (%d tries busy)", busy);
		}
	}
	printf("  b took the lease %.0f ms after the pause (%d tries "
	       "busy)\n",
	       (keel_test_now() - t0) * 1e3, busy);
	/* The transaction held it off until the server ended it. */
	CHECK_INT(busy, >, 0);
	CHECK_INT(l.term, ==, 2);
	kill(pid, SIGCONT);
	CHECK_INT(waitpid(pid, &status, 0), ==, pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_INT(raw_int("SELECT count(*) FROM runs"), ==, 0);
	PQfinish(db);
	keel_store_close(b);
	cleanup();
}

/* ------------------------------------------------------------------------
 * Claims
 * ------------------------------------------------------------------------ */

#define N_CLAIM 1000

struct claimed {
	int64_t id;
	uint64_t claim;
	int who;
};

struct claimer {
	struct keel_store *st;
	int index;
	char node[16];
	struct claimed *got;
	size_t n;
	int rc;
	char why[256];
};

static void *claim_thread(void *arg)
{
	struct claimer *c = arg;
	int empty = 0;

	c->got = calloc(N_CLAIM, sizeof(*c->got));
	if (c->got == NULL) {
		c->rc = -ENOMEM;
		return NULL;
	}
	/* Until the queue stays empty. */
	while (empty < 3) {
		struct keel_run *v = NULL;
		size_t n = 0;
		int rc = claim(c->st, c->node, NULL, 0, 1 + c->index % 7, &v,
			       &n);

		if (rc != 0) {
			c->rc = rc;
			snprintf(c->why, sizeof(c->why), "%s",
				 keel_store_errmsg(c->st));
			return NULL;
		}
		empty = n == 0 ? empty + 1 : 0;
		for (size_t i = 0; i < n && c->n < N_CLAIM; i++)
			c->got[c->n++] = (struct claimed){ v[i].id, v[i].claim,
							   c->index };
		if (n > (size_t)(1 + c->index % 7))
			c->rc = -E2BIG;
		keel_store_runs_free(v, n);
	}
	return NULL;
}

static int by_id(const void *a, const void *b)
{
	const struct claimed *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int by_id_i64(const void *a, const void *b)
{
	const int64_t *x = a, *y = b;

	return *x < *y ? -1 : *x > *y;
}

BOTH(claims_every_run_exactly_once)
{
	struct keel_store *h[2];
	struct claimer c[8];
	pthread_t th[8];
	struct claimed *all;
	struct keel_store_run_query q;
	struct keel_run *runs = NULL;
	int64_t *ids = calloc(N_CLAIM, sizeof(*ids));
	size_t total = 0, n = 0;

	CHECK(ids != NULL);
	open_pair(h);
	for (int j = 0; j < 4; j++) {
		char name[8];

		snprintf(name, sizeof(name), "c%d", j);
		put_job(h[0], name, "\"concurrency\": \"allow\"");
		queue_runs(h[0], name, N_CLAIM / 4, 1000, 0,
			   ids + j * (N_CLAIM / 4));
	}
	for (int i = 0; i < 8; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].st = h[i % 2];
		c[i].index = i;
		snprintf(c[i].node, sizeof(c[i].node), "w%d", i);
		CHECK_INT(pthread_create(&th[i], NULL, claim_thread, &c[i]), ==,
			  0);
	}
	for (int i = 0; i < 8; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	all = calloc(N_CLAIM * 8, sizeof(*all));
	CHECK(all != NULL);
	for (int i = 0; i < 8; i++) {
		if (c[i].rc != 0)
			KEEL_TEST_FAIL("claimer %d: %d: %s", i, c[i].rc,
				       c[i].why);
		memcpy(all + total, c[i].got, c[i].n * sizeof(*all));
		total += c[i].n;
		free(c[i].got);
	}
	/* Each run once: as many claims as runs, no id twice, each one of
	 * the queued ones. */
	CHECK_INT(total, ==, N_CLAIM);
	qsort(all, total, sizeof(*all), by_id);
	qsort(ids, N_CLAIM, sizeof(*ids), by_id_i64);
	for (size_t i = 0; i < total; i++) {
		CHECK_INT(all[i].id, ==, ids[i]);
		CHECK(all[i].claim != 0);
	}
	/* And the store says so: running, for that node, with that token. */
	memset(&q, 0, sizeof(q));
	q.limit = 1000;
	q.state = KEEL_RUN_RUNNING;
	CHECK_INT(keel_store_run_list(h[0], &q, &runs, &n), ==, 0);
	CHECK_INT(n, ==, N_CLAIM);
	for (size_t i = 0; i < n; i++) {
		const struct keel_run *r = &runs[n - 1 - i]; /* newest first */
		char node[16];

		CHECK_INT(r->id, ==, all[i].id);
		CHECK_INT(r->claim, ==, all[i].claim);
		snprintf(node, sizeof(node), "w%d", all[i].who);
		CHECK_STR(r->node, node);
		CHECK(r->started_at > 0);
	}
	CHECK_INT(count_in(h[0], NULL, KEEL_RUN_QUEUED), ==, 0);
	for (int i = 0; i < 8; i++)
		printf("  %s: %zu", c[i].node, c[i].n);
	printf("\n");
	keel_store_runs_free(runs, n);
	free(all);
	free(ids);
	close_pair(h);
}

/* The ids of v (n runs) as a set of job names, e.g. "gpu,plain". */
static void jobs_of(const struct keel_run *v, size_t n, char *out, size_t len)
{
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t k = strlen(out);

		snprintf(out + k, len - k, "%s%s", k > 0 ? "," : "", v[i].job);
	}
}

BOTH(claim_rules_tags_due_time_max_forbid)
{
	static const char *const eu[] = { "eu" }, *const gpu[] = { "gpu" },
				 *const all3[] = { "eu", "x", "gpu" };
	struct keel_store *st = open_cfg(NULL);
	struct keel_run *v = NULL, got;
	int64_t now, far[1], soon[1], fb[3], rp[2], al[5];
	char names[256];
	size_t n = 0;
	double t0;

	put_job(st, "gpu", "\"concurrency\": \"allow\", \"tags\": [\"gpu\"]");
	put_job(st, "gpueu", "\"concurrency\": \"allow\", "
			     "\"tags\": [\"gpu\", \"eu\"]");
	put_job(st, "plain", "\"concurrency\": \"allow\"");
	put_job(st, "fb", ""); /* forbid: the default */
	put_job(st, "rp", "\"concurrency\": \"replace\"");
	queue_runs(st, "gpu", 1, 1000, 0, NULL);
	queue_runs(st, "gpueu", 1, 1000, 0, NULL);
	queue_runs(st, "plain", 1, 1000, 0, NULL);

	/* Tags: a job's tags must all be the node's. */
	CHECK_INT(claim(st, "n-eu", eu, 1, 10, &v, &n), ==, 0);
	jobs_of(v, n, names, sizeof(names));
	CHECK_STR(names, "plain");
	CHECK_INT(v[0].state, ==, KEEL_RUN_RUNNING);
	CHECK_STR(v[0].node, "n-eu");
	CHECK(v[0].claim != 0);
	CHECK(v[0].started_at > 0);
	got = get_run(st, v[0].id);
	CHECK_INT(got.claim, ==, v[0].claim);
	CHECK_INT(got.state, ==, KEEL_RUN_RUNNING);
	CHECK_STR(got.node, "n-eu");
	CHECK_INT(got.started_at, ==, v[0].started_at);
	keel_run_clear(&got);
	keel_store_runs_free(v, n);
	CHECK_INT(claim(st, "n-gpu", gpu, 1, 10, &v, &n), ==, 0);
	jobs_of(v, n, names, sizeof(names));
	CHECK_STR(names, "gpu");
	keel_store_runs_free(v, n);
	CHECK_INT(claim(st, "n-none", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	CHECK(v == NULL);
	CHECK_INT(claim(st, "n-all", all3, 3, 10, &v, &n), ==, 0);
	jobs_of(v, n, names, sizeof(names));
	CHECK_STR(names, "gpueu");
	keel_store_runs_free(v, n);

	/* Due time, on the store's clock: not before not_before. */
	now = store_now(st);
	queue_runs(st, "plain", 1, 2000, now + 600000, far);
	queue_runs(st, "plain", 1, 3000, now + 1500, soon);
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	t0 = keel_test_now();
	for (;;) {
		CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
		if (n > 0)
			break;
		if (keel_test_now() - t0 > 15)
			KEEL_TEST_FAIL("the run due in 1.5 s was not claimed "
				       "in 15 s");
		sleep_ms(50);
	}
	CHECK_INT(n, ==, 1);
	CHECK_INT(v[0].id, ==, soon[0]);
	CHECK_INT(v[0].started_at, >=, now + 1500);
	keel_store_runs_free(v, n);
	CHECK_INT(state_of(st, far[0]), ==, KEEL_RUN_QUEUED);

	/* max, and the oldest due first. */
	queue_runs(st, "plain", 5, 5000, 0, al);
	CHECK_INT(claim(st, "n", NULL, 0, 2, &v, &n), ==, 0);
	CHECK_INT(n, ==, 2);
	CHECK_INT(v[0].id, ==, al[0]);
	CHECK_INT(v[1].id, ==, al[1]);
	keel_store_runs_free(v, n);
	/* "allow": many of a job at once. */
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 3);
	keel_store_runs_free(v, n);

	/* "forbid" and "replace": one at a time, even in one claim. */
	queue_runs(st, "fb", 3, 1000, 0, fb);
	queue_runs(st, "rp", 2, 1000, 0, rp);
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	jobs_of(v, n, names, sizeof(names));
	CHECK_STR(names, "fb,rp");
	CHECK_INT(v[0].id, ==, fb[0]);
	CHECK_INT(v[1].id, ==, rp[0]);
	got = v[0];
	memset(&v[0], 0, sizeof(v[0]));
	keel_store_runs_free(v, n);
	/* None while one runs ... */
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	/* ... the next once it ended. */
	CHECK_INT(finish_claimed(st, &got, got.claim, KEEL_RUN_SUCCEEDED), ==,
		  0);
	keel_run_clear(&got);
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	jobs_of(v, n, names, sizeof(names));
	CHECK_STR(names, "fb");
	CHECK_INT(v[0].id, ==, fb[1]);
	keel_store_runs_free(v, n);
	keel_store_close(st);
}

/* Concurrent claimers never run two of a "forbid" or "replace" job. */

#define N_EACH 40

struct mix {
	struct keel_store *st[2];
	pthread_mutex_t mu;
	int running[3];	 /* fb, rp, al: claimed and not yet finished */
	int most[3];	 /* the most at once */
	int finished[3];
	int rc;
	char why[256];
};

struct mixer {
	struct mix *m;
	int index;
};

static int job_index(const char *job)
{
	return strcmp(job, "fb") == 0 ? 0 : strcmp(job, "rp") == 0 ? 1 : 2;
}

static void *mix_thread(void *arg)
{
	struct mixer *me = arg;
	struct mix *m = me->m;
	struct keel_store *st = m->st[me->index % 2];
	char node[16];
	int empty = 0;

	snprintf(node, sizeof(node), "m%d", me->index);
	while (empty < 20) {
		struct keel_run *v = NULL;
		size_t n = 0;
		int rc = claim(st, node, NULL, 0, 3, &v, &n);

		if (rc == 0 && n == 0) {
			empty++;
			sleep_ms(5);
			continue;
		}
		empty = 0;
		/* Counted after the claim (the store has them running) and
		 * uncounted before the finish (the store still has them):
		 * the count is never above what the store runs. */
		pthread_mutex_lock(&m->mu);
		if (rc != 0 && m->rc == 0) {
			m->rc = rc;
			snprintf(m->why, sizeof(m->why), "claim: %s",
				 keel_store_errmsg(st));
		}
		for (size_t i = 0; i < n; i++) {
			int k = job_index(v[i].job);

			if (++m->running[k] > m->most[k])
				m->most[k] = m->running[k];
		}
		pthread_mutex_unlock(&m->mu);
		if (rc != 0)
			break;
		sleep_ms(2);
		for (size_t i = 0; i < n; i++) {
			int k = job_index(v[i].job);

			pthread_mutex_lock(&m->mu);
			m->running[k]--;
			pthread_mutex_unlock(&m->mu);
			rc = finish_claimed(st, &v[i], v[i].claim,
					    KEEL_RUN_SUCCEEDED);
			pthread_mutex_lock(&m->mu);
			if (rc == 0)
				m->finished[k]++;
			else if (m->rc == 0) {
				m->rc = rc;
				snprintf(m->why, sizeof(m->why), "finish: %s",
					 keel_store_errmsg(st));
			}
			pthread_mutex_unlock(&m->mu);
		}
		keel_store_runs_free(v, n);
	}
	return NULL;
}

BOTH(forbid_never_twice_under_concurrent_claimers)
{
	struct mix m;
	struct mixer mx[8];
	pthread_t th[8];

	memset(&m, 0, sizeof(m));
	pthread_mutex_init(&m.mu, NULL);
	open_pair(m.st);
	put_job(m.st[0], "fb", "\"concurrency\": \"forbid\"");
	put_job(m.st[0], "rp", "\"concurrency\": \"replace\"");
	put_job(m.st[0], "al", "\"concurrency\": \"allow\"");
	queue_runs(m.st[0], "fb", N_EACH, 1000, 0, NULL);
	queue_runs(m.st[0], "rp", N_EACH, 1000, 0, NULL);
	queue_runs(m.st[0], "al", N_EACH, 1000, 0, NULL);
	for (int i = 0; i < 8; i++) {
		mx[i] = (struct mixer){ &m, i };
		CHECK_INT(pthread_create(&th[i], NULL, mix_thread, &mx[i]), ==,
			  0);
	}
	for (int i = 0; i < 8; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	if (m.rc != 0)
		KEEL_TEST_FAIL("%d: %s", m.rc, m.why);
	printf("  most at once: forbid %d, replace %d, allow %d\n", m.most[0],
	       m.most[1], m.most[2]);
	CHECK_INT(m.most[0], ==, 1);
	CHECK_INT(m.most[1], ==, 1);
	CHECK_INT(m.most[2], >=, 2);
	for (int k = 0; k < 3; k++)
		CHECK_INT(m.finished[k], ==, N_EACH);
	CHECK_INT(count_in(m.st[0], "fb", KEEL_RUN_SUCCEEDED), ==, N_EACH);
	CHECK_INT(count_in(m.st[0], "rp", KEEL_RUN_SUCCEEDED), ==, N_EACH);
	CHECK_INT(count_in(m.st[0], "al", KEEL_RUN_SUCCEEDED), ==, N_EACH);
	pthread_mutex_destroy(&m.mu);
	close_pair(m.st);
}

/* ------------------------------------------------------------------------
 * Beats, fencing of finishes, rescue
 * ------------------------------------------------------------------------ */

#define STALE_MS 1000

/* A retry of each crashed run up to attempt 3, due 10 ms after it. */
static int retry_decide(const struct keel_run *crashed, struct keel_run *next,
			void *ud)
{
	int *calls = ud;

	(*calls)++;
	if (crashed->attempt >= 3)
		return 0;
	next->state = KEEL_RUN_QUEUED;
	next->trigger = KEEL_RUN_RETRY;
	next->attempt = crashed->attempt + 1;
	next->scheduled_at = crashed->scheduled_at;
	next->created_at = crashed->finished_at;
	next->not_before = crashed->finished_at + 10;
	next->exit_code = -1;
	return 1;
}

static int failing_decide(const struct keel_run *crashed,
			  struct keel_run *next, void *ud)
{
	(void)crashed;
	(void)next;
	(void)ud;
	return -EIO;
}

BOTH(rescue_after_missed_beats_fences_the_old_claimer)
{
	struct keel_store *h[2];
	struct keel_store_lease l;
	struct keel_run *v = NULL, beaten, lost, got;
	struct keel_store_finish items[2];
	struct keel_store_run_query q;
	struct keel_run *retries = NULL;
	int64_t ids[2], now, old_id, fresh_id;
	uint64_t claims[2];
	int rcs[2], calls = 0;
	size_t n = 0, n_retries = 0;
	char want[128];

	open_pair(h);
	l = wait_lease(h[0], "leader", 60000);
	put_job(h[0], "j", "\"concurrency\": \"allow\"");
	put_job(h[0], "k", "\"concurrency\": \"allow\"");
	queue_runs(h[0], "j", 2, 1000, 0, NULL);
	/* The worker claims both; it will beat only the first. */
	CHECK_INT(claim(h[1], "worker", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 2);
	beaten = v[0];
	lost = v[1];
	free(v);
	ids[0] = beaten.id;
	ids[1] = lost.id;
	claims[0] = beaten.claim;
	claims[1] = lost.claim;
	CHECK_INT(keel_store_runs_beat(h[1], ids, claims, 2, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, 0);
	CHECK_INT(rcs[1], ==, 0);
	/* Two runs started the single-node way (never beaten): one long
	 * ago, one just now. */
	now = store_now(h[0]);
	queue_runs(h[0], "k", 2, 1000, 0, ids);
	old_id = ids[0];
	fresh_id = ids[1];
	CHECK_INT(keel_store_run_start(h[0], old_id, now - 10 * STALE_MS, "old"),
		  ==, 0);
	CHECK_INT(keel_store_run_start(h[0], fresh_id, now + 60000, "new"), ==,
		  0);

	/* Past stale_ms, with a beat of the first just before the rescue. */
	sleep_ms(STALE_MS + 300);
	ids[0] = beaten.id;
	ids[1] = lost.id;
	CHECK_INT(keel_store_runs_beat(h[1], ids, claims, 1, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, 0);

	/* A rescue whose decide fails writes nothing. */
	CHECK_INT(keel_store_rescue(h[0], l.term, STALE_MS, failing_decide,
				    NULL, &n),
		  ==, -EIO);
	CHECK_CONTAINS(keel_store_errmsg(h[0]), "rescue: decide failed");
	CHECK_INT(state_of(h[0], lost.id), ==, KEEL_RUN_RUNNING);
	CHECK_INT(state_of(h[0], old_id), ==, KEEL_RUN_RUNNING);

	CHECK_INT(keel_store_rescue(h[0], l.term, STALE_MS, retry_decide,
				    &calls, &n),
		  ==, 0);
	CHECK_INT(n, ==, 2);
	CHECK_INT(calls, ==, 2);
	/* The lost one is crashed, says why, has no claim any more ... */
	got = get_run(h[0], lost.id);
	CHECK_INT(got.state, ==, KEEL_RUN_CRASHED);
	CHECK_STR(got.error, "rescued: node worker stopped beating");
	CHECK_INT(got.claim, ==, 0);
	CHECK(got.finished_at >= lost.started_at + STALE_MS);
	keel_run_clear(&got);
	got = get_run(h[0], old_id);
	CHECK_INT(got.state, ==, KEEL_RUN_CRASHED);
	CHECK_STR(got.error, "rescued: node old stopped beating");
	keel_run_clear(&got);
	/* ... the beaten and the fresh ones run on. */
	CHECK_INT(state_of(h[0], beaten.id), ==, KEEL_RUN_RUNNING);
	CHECK_INT(state_of(h[0], fresh_id), ==, KEEL_RUN_RUNNING);
	/* The retry is queued, in the same transaction, and is its tick's
	 * (unique with it). */
	memset(&q, 0, sizeof(q));
	q.job = "j";
	q.limit = 10;
	q.state = KEEL_RUN_QUEUED;
	CHECK_INT(keel_store_run_list(h[0], &q, &retries, &n_retries), ==, 0);
	CHECK_INT(n_retries, ==, 1);
	CHECK_INT(retries[0].trigger, ==, KEEL_RUN_RETRY);
	CHECK_INT(retries[0].attempt, ==, 2);
	CHECK_INT(retries[0].scheduled_at, ==, lost.scheduled_at);
	CHECK_INT(retries[0].claim, ==, 0);
	got = retries[0];
	got.id = 0;
	got.job = (char *)"j";
	CHECK_INT(keel_store_run_insert(h[0], &got), ==, -EEXIST);
	keel_store_runs_free(retries, n_retries);

	/* The old claimer: its beat of the rescued run is refused ... */
	ids[0] = beaten.id;
	ids[1] = lost.id;
	CHECK_INT(keel_store_runs_beat(h[1], ids, claims, 2, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, 0);
	CHECK_INT(rcs[1], ==, -ESTALE);
	/* ... and so is its finish, which changes nothing. */
	CHECK_INT(finish_claimed(h[1], &lost, lost.claim, KEEL_RUN_SUCCEEDED),
		  ==, -ESTALE);
	got = get_run(h[0], lost.id);
	CHECK_INT(got.state, ==, KEEL_RUN_CRASHED);
	CHECK_STR(got.error, "rescued: node worker stopped beating");
	keel_run_clear(&got);
	/* A finish with a token that is not the run's is refused (and says
	 * so) while the run is running; the right one is taken. */
	CHECK_INT(finish_claimed(h[1], &beaten, beaten.claim ^ 1,
				 KEEL_RUN_FAILED),
		  ==, -ESTALE);
	snprintf(want, sizeof(want), "claim %llu is stale",
		 (unsigned long long)(beaten.claim ^ 1));
	CHECK_CONTAINS(keel_store_errmsg(h[1]), want);
	CHECK_INT(state_of(h[0], beaten.id), ==, KEEL_RUN_RUNNING);
	/* In a batch too: the stale item refused alone. */
	memset(items, 0, sizeof(items));
	{
		struct keel_run f[2];

		memset(f, 0, sizeof(f));
		f[0].id = lost.id;
		f[0].state = KEEL_RUN_FAILED;
		f[0].claim = lost.claim;
		f[1].id = beaten.id;
		f[1].state = KEEL_RUN_SUCCEEDED;
		f[1].claim = beaten.claim;
		items[0].run = &f[0];
		items[1].run = &f[1];
		CHECK_INT(keel_store_runs_finish(h[1], items, 2, rcs), ==, 0);
		CHECK_INT(rcs[0], ==, -ESTALE);
		CHECK_INT(rcs[1], ==, 0);
	}
	CHECK_INT(state_of(h[0], beaten.id), ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(state_of(h[0], lost.id), ==, KEEL_RUN_CRASHED);
	/* A finished run is no longer beaten either. */
	CHECK_INT(keel_store_runs_beat(h[1], ids, claims, 1, rcs), ==, 0);
	CHECK_INT(rcs[0], ==, -ESTALE);
	/* Claim 0 finishes without the check (one node, an operator). */
	memset(&got, 0, sizeof(got));
	got.id = fresh_id;
	got.started_at = now;
	CHECK_INT(finish_claimed(h[0], &got, 0, KEEL_RUN_CANCELED), ==, 0);
	CHECK_INT(state_of(h[0], fresh_id), ==, KEEL_RUN_CANCELED);
	keel_run_clear(&beaten);
	keel_run_clear(&lost);
	close_pair(h);
}

BOTH(recover_node_crashes_only_its_own_runs)
{
	struct keel_store *st = open_cfg(NULL);
	struct keel_run mine, theirs, got;
	int calls = 0;
	size_t n = 9;

	put_job(st, "j", "\"concurrency\": \"allow\"");
	queue_runs(st, "j", 2, 1000, 0, NULL);
	mine = claim_one(st, "me");
	theirs = claim_one(st, "them");
	CHECK_INT(keel_store_recover_node(st, "nobody", 5000, NULL, NULL, &n),
		  ==, 0);
	CHECK_INT(n, ==, 0);
	CHECK_INT(keel_store_recover_node(st, "me", 5000, retry_decide, &calls,
					  &n),
		  ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_INT(calls, ==, 1);
	got = get_run(st, mine.id);
	CHECK_INT(got.state, ==, KEEL_RUN_CRASHED);
	CHECK_INT(got.finished_at, ==, 5000);
	CHECK_STR(got.error, KEEL__STORE_CRASHED_ERROR);
	keel_run_clear(&got);
	CHECK_INT(state_of(st, theirs.id), ==, KEEL_RUN_RUNNING);
	CHECK_INT(count_in(st, "j", KEEL_RUN_QUEUED), ==, 1);
	/* Its old finish is refused. */
	CHECK_INT(finish_claimed(st, &mine, mine.claim, KEEL_RUN_SUCCEEDED), ==,
		  -ESTALE);
	keel_run_clear(&mine);
	keel_run_clear(&theirs);
	keel_store_close(st);
}

/* ------------------------------------------------------------------------
 * Nodes
 * ------------------------------------------------------------------------ */

BOTH(nodes_beat_list_and_forget)
{
	static const char *const tags[] = { "gpu", "eu" };
	struct keel_store *st = open_cfg(NULL);
	struct keel_store_node *v = NULL;
	int64_t t1 = 0, t2 = 0, t3 = 0;
	size_t n = 9;

	CHECK_INT(keel_store_node_list(st, 0, &v, &n), ==, 0);
	CHECK_INT(n, ==, 0);
	CHECK_INT(keel_store_node_beat(st, "b-node", 3, tags, 2, &t1), ==, 0);
	CHECK_INT(keel_store_node_beat(st, "a-node", 0, NULL, 0, NULL), ==, 0);
	sleep_ms(20);
	CHECK_INT(keel_store_node_beat(st, "b-node", 5, tags, 1, &t2), ==, 0);
	CHECK_INT(t2, >, t1);
	CHECK_INT(keel_store_node_list(st, 0, &v, &n), ==, 0);
	CHECK_INT(n, ==, 2);
	CHECK_STR(v[0].id, "a-node");
	CHECK_INT(v[0].n_tags, ==, 0);
	CHECK_STR(v[1].id, "b-node");
	CHECK_INT(v[1].running, ==, 5);
	CHECK_INT(v[1].last_heartbeat, ==, t2);
	CHECK_INT(v[1].started_at, ==, t1); /* its first beat */
	CHECK_INT(v[1].n_tags, ==, 1);
	CHECK_STR(v[1].tags[0], "gpu");
	keel_store_nodes_free(v, n);
	/* A node gone for longer than forget_ms is forgotten. */
	sleep_ms(1200);
	CHECK_INT(keel_store_node_beat(st, "b-node", 0, tags, 2, &t3), ==, 0);
	CHECK_INT(keel_store_node_list(st, 800, &v, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(v[0].id, "b-node");
	CHECK_INT(v[0].n_tags, ==, 2);
	CHECK_STR(v[0].tags[1], "eu");
	keel_store_nodes_free(v, n);
	keel_store_nodes_free(NULL, 0);
	keel_store_close(st);
}

/* ------------------------------------------------------------------------
 * Schema: a version 1 store migrated
 * ------------------------------------------------------------------------ */

/* Job name as a keeld of version 1 stored it (spec: keel_job_to_json,
 * compact, keys sorted). */
static void v1_job(const char *name, const char *extra)
{
	char text[1024], sql[3000], err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_error_t je;
	json_t *v;
	char *spec;

	snprintf(text, sizeof(text),
		 "{\"name\": \"%s\", \"schedule\": \"@every 1m\", "
		 "\"executor\": {\"type\": \"shell\", \"command\": [\"true\"]}"
		 "%s%s}",
		 name, extra[0] ? ", " : "", extra);
	v = json_loads(text, 0, &je);
	CHECK(v != NULL);
	CHECK_INT(keel_job_from_json(v, &j, err, sizeof(err)), ==, 0);
	json_decref(v);
	v = keel_job_to_json(j);
	spec = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	CHECK(spec != NULL && strchr(spec, '\'') == NULL);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO jobs(name, spec, paused, last_tick, created_at, "
		 "updated_at) VALUES('%s', '%s', %s, 1000, 1000000, 1000000)",
		 name, spec, engine == SQLITE ? "0" : "false");
	raw_exec(sql);
	free(spec);
	json_decref(v);
	keel_job_free(j);
}

BOTH(version_1_store_is_migrated)
{
	static const char *const gpu[] = { "gpu" };
	const char *const *steps;
	struct keel_store *st = NULL;
	struct keel_store_job sj;
	struct keel_run *v = NULL;
	char err[512];
	size_t n_steps, n = 0;
	int rc;

	steps = engine == SQLITE ? keel__store_sqlite_steps(&n_steps)
				 : keel__store_pg_steps(&n_steps);
	CHECK_INT(n_steps, >=, 2);
	/* A store of version 1 (this build's statements need version 2:
	 * its rows are written as a keeld of version 1 wrote them). */
	rc = engine == SQLITE
		     ? keel__store_sqlite_open_steps(data, NULL, steps, 1, &st,
						     err, sizeof(err))
		     : keel__store_pg_open_steps(conninfo, NULL, steps, 1, &st,
						 err, sizeof(err));
	if (rc != 0)
		KEEL_TEST_FAIL("open at version 1: %s", err);
	keel_store_close(st);
	v1_job("tagged", "\"concurrency\": \"allow\", \"tags\": [\"gpu\"]");
	v1_job("plain", "\"concurrency\": \"forbid\"");
	v1_job("broken", "");
	raw_exec("UPDATE jobs SET spec = 'not json' WHERE name = 'broken'");
	raw_exec("INSERT INTO runs(job, state, trigger, origin, attempt, "
		 "scheduled_at, created_at) VALUES "
		 "('tagged', 'queued', 'schedule', 'schedule', 1, 1000, 1000), "
		 "('plain', 'queued', 'schedule', 'schedule', 1, 1000, 1000), "
		 "('plain', 'queued', 'schedule', 'schedule', 1, 2000, 2000)");

	/* This build's open migrates it. */
	st = open_cfg(NULL);
	CHECK_INT(raw_int("SELECT count(*) FROM jobs WHERE name = 'tagged' AND "
			  "concurrency = 'allow'"),
		  ==, 1);
	CHECK_INT(raw_int("SELECT count(*) FROM jobs WHERE name = 'plain' AND "
			  "concurrency = 'forbid'"),
		  ==, 1);
	CHECK_INT(raw_int("SELECT count(*) FROM jobs WHERE name = 'broken' AND "
			  "concurrency = 'forbid'"),
		  ==, 1);
	CHECK_INT(raw_int("SELECT count(*) FROM runs WHERE claim = 0 AND "
			  "heartbeat = 0"),
		  ==, 3);
	/* The corrupt job is still reported, and repaired by a put. */
	CHECK_INT(keel_store_job_get(st, "broken", &sj), ==, -EIO);
	put_job(st, "broken", "\"concurrency\": \"allow\"");
	CHECK_INT(raw_int("SELECT count(*) FROM jobs WHERE name = 'broken' AND "
			  "concurrency = 'allow'"),
		  ==, 1);
	/* The claim reads what the migration filled: the tagged job is not
	 * for a node without the tag; of "plain" (forbid), one. */
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(v[0].job, "plain");
	keel_store_runs_free(v, n);
	CHECK_INT(claim(st, "n", gpu, 1, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(v[0].job, "tagged");
	keel_store_runs_free(v, n);
	/* A put that changes the tags changes what the claim sees. */
	put_job(st, "tagged", "\"concurrency\": \"allow\"");
	queue_runs(st, "tagged", 1, 5000, 0, NULL);
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(v[0].job, "tagged");
	keel_store_runs_free(v, n);
	keel_store_close(st);
}

/* ------------------------------------------------------------------------
 * Arguments, and an engine without a cluster
 * ------------------------------------------------------------------------ */

BOTH(bad_arguments_and_no_cluster_support)
{
	static const char *const bad_tags[] = { "a", NULL };
	struct keel_store *st = open_cfg(NULL);
	struct keel_store_ops ops;
	struct keel_store fake;
	struct keel_store_lease l;
	struct keel_store_node *nodes = NULL;
	struct keel_run *v = NULL;
	char long_name[200];
	int64_t id = 1;
	uint64_t zero = 0;
	size_t n = 0;
	int rc;

	memset(long_name, 'x', 128);
	long_name[128] = '\0';
	CHECK_INT(keel_store_lease_acquire(st, NULL, 100, &l), ==, -EINVAL);
	CHECK_INT(keel_store_lease_acquire(st, "", 100, &l), ==, -EINVAL);
	CHECK_INT(keel_store_lease_acquire(st, long_name, 100, &l), ==, -EINVAL);
	CHECK_CONTAINS(keel_store_errmsg(st), "128 bytes");
	long_name[127] = '\0';
	CHECK_INT(keel_store_lease_acquire(st, long_name, 100, &l), ==, 0);
	CHECK_STR(l.holder, long_name);
	CHECK_INT(keel_store_lease_acquire(st, "bad\xff", 100, &l), ==, -EINVAL);
	CHECK_CONTAINS(keel_store_errmsg(st), "UTF-8");
	CHECK_INT(keel_store_lease_acquire(st, "a", 0, &l), ==, -EINVAL);
	CHECK_INT(keel_store_lease_acquire(st, "a", 100, NULL), ==, -EINVAL);
	CHECK_INT(keel_store_lease_release(st, "a", 0), ==, -EINVAL);
	CHECK_INT(keel_store_ticks_fenced(st, 0, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_store_rescue(st, 1, 0, NULL, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_store_rescue(st, 0, 10, NULL, NULL, NULL), ==, -EINVAL);
	CHECK_INT(claim(st, "a", NULL, 0, 0, &v, &n), ==, -EINVAL);
	CHECK_INT(claim(st, "a", NULL, 0, 1001, &v, &n), ==, -EINVAL);
	CHECK_INT(claim(st, "a", bad_tags, 2, 1, &v, &n), ==, -EINVAL);
	CHECK_INT(claim(st, "a", NULL, 1, 1, &v, &n), ==, -EINVAL);
	CHECK_INT(claim(st, "a", NULL, 0, 1, NULL, &n), ==, -EINVAL);
	CHECK_INT(keel_store_node_beat(st, "a", -1, NULL, 0, NULL), ==, -EINVAL);
	CHECK_INT(keel_store_node_list(st, -1, &nodes, &n), ==, -EINVAL);
	CHECK_INT(keel_store_runs_beat(st, &id, &zero, 1, &rc), ==, -EINVAL);
	CHECK_INT(keel_store_runs_beat(st, NULL, NULL, 0, NULL), ==, 0);
	CHECK_INT(keel_store_recover_node(st, "", 1, NULL, NULL, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_store_lease_acquire(NULL, "a", 100, &l), ==, -EINVAL);
	CHECK_INT(keel_store_claim(NULL, "a", NULL, 0, 1, &v, &n), ==, -EINVAL);

	/* An engine without the cluster's ops. */
	ops = *st->ops;
	ops.lease_acquire = NULL;
	ops.lease_release = NULL;
	ops.node_beat = NULL;
	ops.node_list = NULL;
	ops.claim = NULL;
	ops.runs_beat = NULL;
	ops.ticks_fenced = NULL;
	ops.rescue = NULL;
	fake.ops = &ops;
	CHECK_INT(keel_store_lease_acquire(&fake, "a", 100, &l), ==, -ENOTSUP);
	CHECK_CONTAINS(keel_store_errmsg(&fake), "no cluster support");
	CHECK_INT(keel_store_lease_release(&fake, "a", 1), ==, -ENOTSUP);
	CHECK_INT(keel_store_node_beat(&fake, "a", 0, NULL, 0, NULL), ==,
		  -ENOTSUP);
	CHECK_INT(keel_store_node_list(&fake, 0, &nodes, &n), ==, -ENOTSUP);
	CHECK_INT(claim(&fake, "a", NULL, 0, 1, &v, &n), ==, -ENOTSUP);
	CHECK_INT(keel_store_runs_beat(&fake, NULL, NULL, 0, NULL), ==,
		  -ENOTSUP);
	CHECK_INT(keel_store_ticks_fenced(&fake, 1, NULL, 0), ==, -ENOTSUP);
	CHECK_INT(keel_store_rescue(&fake, 1, 10, NULL, NULL, NULL), ==,
		  -ENOTSUP);
	keel_store_close(st);
}

/* ------------------------------------------------------------------------
 * PostgreSQL restarted under a claim holder
 * ------------------------------------------------------------------------ */

static void works_after_loss(int rc, struct keel_store *st)
{
	if (rc != 0)
		KEEL_TEST_FAIL("the first call after a lost connection: %d: %s",
			       rc, keel_store_errmsg(st));
}

TEST(pg_restarted_under_a_claim_holder)
{
	struct pg_server own;
	struct keel_store *st;
	struct keel_store_lease l;
	struct keel_run run, *v = NULL;
	char why[2048], info[sizeof(conninfo)];
	int64_t id, term;
	size_t n = 0;
	int rc, rcs[1];

	if (server_state == 1)
		KEEL_TEST_SKIP(server_why);
	if (server_state != 0)
		KEEL_TEST_FAIL("the test server did not start: %s", server_why);
	/* A server of its own, in the shared server's dir (removed with it
	 * even if this case fails half-way). */
	rc = pg_server_start(&own, server.dir, why, sizeof(why));
	if (rc == 1)
		KEEL_TEST_SKIP(why);
	if (rc != 0)
		KEEL_TEST_FAIL("own server: %s", why);
	pg_server_conninfo(&own, "postgres", info, sizeof(info));
	engine = PG;
	snprintf(conninfo, sizeof(conninfo), "%s", info);
	st = open_cfg(NULL);
	put_job(st, "j", "\"concurrency\": \"allow\"");
	queue_runs(st, "j", 2, 1000, 0, NULL);
	l = wait_lease(st, "n", 60000);
	term = l.term;
	run = claim_one(st, "n");
	id = run.id;

	/* Stopped: every call of the claim holder fails with -EIO. */
	pg_server_stop(&own);
	CHECK_INT(keel_store_runs_beat(st, &id, &run.claim, 1, rcs), ==, -EIO);
	CHECK_INT(rcs[0], ==, -EIO);
	CHECK_INT(claim(st, "n", NULL, 0, 1, &v, &n), ==, -EIO);
	CHECK(v == NULL);
	CHECK_INT(keel_store_lease_acquire(st, "n", 60000, &l), ==, -EIO);
	CHECK_INT(keel_store_node_beat(st, "n", 1, NULL, 0, NULL), ==, -EIO);
	CHECK_INT(finish_claimed(st, &run, run.claim, KEEL_RUN_SUCCEEDED), ==,
		  -EIO);
	CHECK_INT(keel_store_ticks_fenced(st, term, NULL, 0), ==, -EIO);

	/* Started again: the same claim beats, the lease is still the
	 * node's (its ttl is long), and the finish goes in. */
	if (pg_server_restart(&own, why, sizeof(why)) != 0)
		KEEL_TEST_FAIL("start: %s", why);
	works_after_loss(keel_store_runs_beat(st, &id, &run.claim, 1, rcs), st);
	CHECK_INT(rcs[0], ==, 0);
	works_after_loss(keel_store_lease_acquire(st, "n", 60000, &l), st);
	CHECK_STR(l.holder, "n");
	CHECK_INT(l.term, ==, term);
	works_after_loss(keel_store_ticks_fenced(st, term, NULL, 0), st);
	works_after_loss(finish_claimed(st, &run, run.claim, KEEL_RUN_SUCCEEDED),
			 st);
	CHECK_INT(state_of(st, id), ==, KEEL_RUN_SUCCEEDED);
	keel_run_clear(&run);
	/* And the next claim takes the other run. */
	CHECK_INT(claim(st, "n", NULL, 0, 10, &v, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	keel_store_runs_free(v, n);
	keel_store_close(st);
	pg_server_destroy(&own);
	keel_test_leak_check();
}
