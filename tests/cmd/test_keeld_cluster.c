/* KEEL_TEST_LABELS: cluster */
/*
 * tests/cmd/test_keeld_cluster.c - keeld's cluster mode end to end: real
 * keeld processes (keeld_proc.h) on one throwaway PostgreSQL
 * (sched/pg_server.h, started before the cases and shared by them, a
 * database per case), their REST API through libcurl and the tables
 * through libpq.
 *
 *   election        three nodes held at the lease by a table lock and let
 *                   go at once: one leader, term 1, every node names it.
 *   failover        the leader SIGKILLed: another node leads with term + 1,
 *                   the dead node's run is rescued and its retry waits for
 *                   a node with the job's tag, then runs there.
 *   paused_leader   the leader SIGSTOPped inside its tick's transaction
 *                   (the lease row locked) past its lease: the server
 *                   ends the session, a new leader; SIGCONT: the old one
 *                   steps down; every tick of an "@every 1s" job has
 *                   exactly one first attempt.
 *   fencing         a follower SIGSTOPped past rescue-after: its run is
 *                   rescued; SIGCONT: it stops the run, and its late result
 *                   changes nothing in the row.
 *   tags            a job's runs go only to nodes with all its tags.
 *   graceful_stop   SIGTERM on the leader: the lease is given up (the next
 *                   leader takes it before the old lease's end), the
 *                   running run drains and is stored succeeded.
 *   operations      a job made on node A is seen, paused, its runs
 *                   canceled and the job deleted through node B.
 *   pg_outage       PostgreSQL stopped for 3 s under running runs: all
 *                   reach a final state, none rescued, a leader again, no
 *                   tick lost.
 *   bad_input       cluster options keeld must refuse (exit 2, nothing
 *                   written).
 *
 * Timings are small to keep the run short: --heartbeat 100ms, --lease-ttl
 * 600ms, --rescue-after 1s. Nothing asserts speed beyond a generous bound
 * (20 s): failover and rescue times are printed, the benchmarks and the
 * chaos harness own the targets. Every wait is a poll with a deadline; on
 * a failure the nodes' logs are printed and their directories kept.
 *
 * The long runs are shell scripts that write their pid to a file before
 * they exec sleep 30: the test sees whether a node stopped the process,
 * and kills what a SIGKILLed keeld left behind (a run's process has a
 * session of its own and outlives its keeld).
 */
#include "http/http_client.h"
#include "keeld_proc.h"
#include "sched/pg_server.h"
#include "sched/pg_test.h"

#include <keel/store.h>
#include <libpq-fe.h>

#define BEAT_MS 100
#define TTL_MS 600
#define RESCUE_MS 1000
#define MAX_NODES 4
/* The bound of every wait for the cluster to do something. */
#define WAIT_S 20.0

/* ------------------------------------------------------------------------
 * The case's cluster: a database, up to four nodes n1..n4, a pid file.
 * One per case process, so a global.
 * ------------------------------------------------------------------------ */

static struct {
	struct pg_server *pg;
	char db[64];
	char uri[512];
	PGconn *sql;
	struct keeld_proc node[MAX_NODES];
	char id[MAX_NODES][8];
	char pids[PATH_MAX]; /* the long runs write their pid here */
} cl;

/* Prints every started node's log (the end of it) before a failure. */
static void dump_logs(void)
{
	for (int i = 0; i < MAX_NODES; i++)
		if (cl.node[i].log_path[0] != '\0')
			keeld_proc_dump_log(&cl.node[i]);
}

#define EXPECT(cond, ...)                                                      \
	do {                                                                   \
		if (!(cond)) {                                                 \
			dump_logs();                                           \
			KEEL_TEST_FAIL(__VA_ARGS__);                           \
		}                                                              \
	} while (0)

/* Polls cond every 10 ms until it holds; fails the case (with the logs)
 * when secs pass first. */
#define WAIT(secs, cond, ...)                                                  \
	do {                                                                   \
		double end_ = keel_test_now() + (secs);                        \
		while (!(cond)) {                                              \
			if (keel_test_now() > end_) {                          \
				dump_logs();                                   \
				KEEL_TEST_FAIL(__VA_ARGS__);                   \
			}                                                      \
			usleep(10 * 1000);                                     \
		}                                                              \
	} while (0)


/* A database of the case's own on pg, its URI, the nodes' directories. */
static void cl_open(struct pg_server *pg, const char *name)
{
	char sql[160];
	PGconn *admin;

	memset(&cl, 0, sizeof(cl));
	cl.pg = pg;
	snprintf(cl.db, sizeof(cl.db), "kc_%s_%d", name, (int)getpid());
	admin = pg_test_connect(pg, "postgres");
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", cl.db);
	pg_test_exec(admin, sql);
	PQfinish(admin);
	snprintf(cl.uri, sizeof(cl.uri),
		 "postgresql:///%s?host=%s&port=%d&user=" PG_SERVER_USER, cl.db,
		 pg->dir, pg->port);
	cl.sql = pg_test_connect(pg, cl.db);
	for (int i = 0; i < MAX_NODES; i++) {
		keeld_proc_init(&cl.node[i]);
		snprintf(cl.id[i], sizeof(cl.id[i]), "n%d", i + 1);
	}
	snprintf(cl.pids, sizeof(cl.pids), "%s/pids", cl.node[0].dir);
}

/* The pids the long runs wrote, in order; how many. */
static int pids_read(pid_t *out, int max)
{
	FILE *f = fopen(cl.pids, "re");
	int n = 0, v;

	if (f == NULL)
		return 0;
	while (n < max && fscanf(f, "%d", &v) == 1)
		out[n++] = (pid_t)v;
	fclose(f);
	return n;
}

/* Whether pid runs and is a sleep (a zombie is not running, a recycled
 * pid is not ours). */
static int sleep_alive(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (strstr(buf, "(sleep)") == NULL)
		return 0;
	p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Kills the nodes and what their runs left, drops the database. */
static void cl_close(void)
{
	pid_t pids[64];
	int n = pids_read(pids, 64);
	char sql[160];
	PGconn *admin;

	for (int i = 0; i < MAX_NODES; i++)
		if (cl.node[i].pid > 0)
			keeld_proc_kill(&cl.node[i]);
	for (int i = 0; i < n; i++)
		if (sleep_alive(pids[i]))
			kill(pids[i], SIGKILL);
	for (int i = 0; i < MAX_NODES; i++)
		keeld_proc_cleanup(&cl.node[i]);
	if (cl.sql == NULL) { /* no database (bad_input without a server) */
		keel_test_leak_check();
		return;
	}
	PQfinish(cl.sql);
	cl.sql = NULL;
	admin = pg_test_connect(cl.pg, "postgres");
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)",
		 cl.db);
	pg_test_exec(admin, sql);
	PQfinish(admin);
	keel_test_leak_check();
}

/* Starts node i (n<i+1>) on the case's database; tags may be NULL. */
static void node_start(int i, const char *tags)
{
	/* clang-format off */
	const char *args[] = {
		"--store", cl.uri, "--node-id", cl.id[i],
		"--heartbeat", "100ms", "--lease-ttl", "600ms",
		"--rescue-after", "1s", "--demo",
		tags != NULL ? "--tags" : NULL, tags, NULL,
	};
	/* clang-format on */

	keeld_proc_start_ok(&cl.node[i], args);
}

static char *node_log(int i)
{
	return keeld_proc_log(&cl.node[i]);
}

static int log_has(int i, const char *needle)
{
	char *log = node_log(i);
	int has = strstr(log, needle) != NULL;

	free(log);
	return has;
}

/* ---- SQL: the case's database ------------------------------------------- */

static PGresult *sql_query(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static PGresult *sql_query(const char *fmt, ...)
{
	char sql[2048];
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	/* After a restart of the server the connection is a dead one. */
	if (PQstatus(cl.sql) != CONNECTION_OK)
		PQreset(cl.sql);
	r = PQexec(cl.sql, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK &&
	    PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		PQreset(cl.sql);
		r = PQexec(cl.sql, sql);
	}
	if (PQresultStatus(r) != PGRES_TUPLES_OK &&
	    PQresultStatus(r) != PGRES_COMMAND_OK)
		EXPECT(0, "%s: %s", sql, PQerrorMessage(cl.sql));
	return r;
}

/* The first column of the only row, as a number (NULL as -1). */
static long long sql_int(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static long long sql_int(const char *fmt, ...)
{
	char sql[2048];
	va_list ap;
	PGresult *r;
	long long v;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	r = sql_query("%s", sql);
	EXPECT(PQntuples(r) == 1, "%s: %d rows", sql, PQntuples(r));
	v = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* The store's clock, in ms (as the store's NOW_MS). */
static long long db_now(void)
{
	return sql_int("SELECT floor(extract(epoch FROM clock_timestamp()) "
		       "* 1000)::bigint");
}

struct lease {
	char holder[128];
	long long term, expires_at, now;
};

/* The lease row and the store's clock; 0, or -1 when there is no row. */
static int lease_get(struct lease *l)
{
	PGresult *r = sql_query(
	    "SELECT holder, term, expires_at, floor(extract(epoch FROM "
	    "clock_timestamp()) * 1000)::bigint FROM lease WHERE id = 1");
	int rc = PQntuples(r) == 1 ? 0 : -1;

	memset(l, 0, sizeof(*l));
	if (rc == 0) {
		snprintf(l->holder, sizeof(l->holder), "%s",
			 PQgetvalue(r, 0, 0));
		l->term = atoll(PQgetvalue(r, 0, 1));
		l->expires_at = atoll(PQgetvalue(r, 0, 2));
		l->now = atoll(PQgetvalue(r, 0, 3));
	}
	PQclear(r);
	return rc;
}

/* Whether node i holds an unexpired lease, by the store. */
static int leads(int i)
{
	struct lease l;

	return lease_get(&l) == 0 && strcmp(l.holder, cl.id[i]) == 0 &&
	       l.expires_at > l.now;
}

struct run_row {
	char state[16], node[16], trigger[16], error[256];
	int attempt;
	long long scheduled_at, finished_at, claim;
};

static void run_get(long long id, struct run_row *w)
{
	PGresult *r = sql_query("SELECT state, COALESCE(node, ''), trigger, "
				"COALESCE(error, ''), attempt, scheduled_at, "
				"finished_at, claim FROM runs WHERE id = %lld",
				id);

	EXPECT(PQntuples(r) == 1, "run %lld: not in the table", id);
	snprintf(w->state, sizeof(w->state), "%s", PQgetvalue(r, 0, 0));
	snprintf(w->node, sizeof(w->node), "%s", PQgetvalue(r, 0, 1));
	snprintf(w->trigger, sizeof(w->trigger), "%s", PQgetvalue(r, 0, 2));
	snprintf(w->error, sizeof(w->error), "%s", PQgetvalue(r, 0, 3));
	w->attempt = atoi(PQgetvalue(r, 0, 4));
	w->scheduled_at = atoll(PQgetvalue(r, 0, 5));
	w->finished_at = atoll(PQgetvalue(r, 0, 6));
	w->claim = atoll(PQgetvalue(r, 0, 7));
	PQclear(r);
}

static int run_is(long long id, const char *state, const char *node)
{
	struct run_row w;

	run_get(id, &w);
	return strcmp(w.state, state) == 0 &&
	       (node == NULL || strcmp(w.node, node) == 0);
}

/*
 * Every tick of job from its first to its last has exactly one first
 * attempt (origin schedule or missed): none twice, none missing, all on
 * the second. Returns how many there are; *first and *last (ms) get the
 * range.
 */
static long long ticks_check(const char *job, long long *first, long long *last)
{
	PGresult *r = sql_query(
	    "SELECT count(*), count(DISTINCT scheduled_at), "
	    "min(scheduled_at), max(scheduled_at), "
	    "count(*) FILTER (WHERE scheduled_at %% 1000 <> 0) FROM runs "
	    "WHERE job = '%s' AND attempt = 1 AND origin IN ('schedule', "
	    "'missed')",
	    job);
	long long n = atoll(PQgetvalue(r, 0, 0));
	long long distinct = atoll(PQgetvalue(r, 0, 1));
	long long lo = atoll(PQgetvalue(r, 0, 2));
	long long hi = atoll(PQgetvalue(r, 0, 3));
	long long off = atoll(PQgetvalue(r, 0, 4));

	PQclear(r);
	EXPECT(n > 0, "%s: no tick was stored", job);
	EXPECT(n == distinct,
	       "%s: %lld first attempts for %lld ticks "
	       "(a tick ran twice)",
	       job, n, distinct);
	EXPECT(off == 0, "%s: %lld ticks off the second", job, off);
	EXPECT((hi - lo) / 1000 + 1 == n,
	       "%s: %lld ticks from %lld to %lld: %lld missing", job, n, lo, hi,
	       (hi - lo) / 1000 + 1 - n);
	*first = lo;
	*last = hi;
	return n;
}

/* ---- HTTP: the nodes' API ------------------------------------------------ */

/* method path [body] on node i -> the parsed answer, which must have
 * status want (NULL for an empty body). json_decref it. */
static json_t *api(int i, const char *method, const char *path,
		   const char *body, long want)
{
	struct hres r;
	json_t *v = NULL;
	json_error_t e;

	http_req((uint16_t)cl.node[i].port, method, path, body, NULL, &r);
	EXPECT(r.rc == CURLE_OK, "%s %s on %s: curl: %s", method, path,
	       cl.id[i], curl_easy_strerror(r.rc));
	EXPECT(r.status == want, "%s %s on %s: status %ld, want %ld: %s",
	       method, path, cl.id[i], r.status, want, r.body);
	if (r.len > 0) {
		v = json_loads(r.body, JSON_REJECT_DUPLICATES, &e);
		EXPECT(v != NULL, "%s %s: not JSON (%s): %s", method, path,
		       e.text, r.body);
	}
	hres_free(&r);
	return v;
}

/* The status of method path on node i (0 when it did not answer). */
static long api_status(int i, const char *method, const char *path)
{
	struct hres r;
	long status;

	http_req((uint16_t)cl.node[i].port, method, path, NULL, NULL, &r);
	status = r.rc == CURLE_OK ? r.status : 0;
	hres_free(&r);
	return status;
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* a and b are the same string (NULL is none). */
static int streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static long long num(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static void job_post(int i, const char *json)
{
	json_decref(api(i, "POST", "/v1/jobs", json, 201));
}

/* POST /v1/jobs/NAME/run on node i: the queued run's id. */
static long long run_now(int i, const char *job)
{
	char path[160];
	json_t *r;
	long long id;

	snprintf(path, sizeof(path), "/v1/jobs/%s/run", job);
	r = api(i, "POST", path, NULL, 202);
	EXPECT(str(r, "id") != NULL, "no run id");
	id = atoll(str(r, "id"));
	json_decref(r);
	return id;
}

/* A job that runs on nodes with tag (NULL: any) a script writing its pid
 * to the pid file, then sleeping 30 s; every hour, runs started by hand.
 * attempts: retry.max_attempts, retried at once. */
static void job_post_long(int i, const char *name, const char *tag,
			  int attempts)
{
	char body[PATH_MAX + 512], tags[96] = "";

	if (tag != NULL)
		snprintf(tags, sizeof(tags), ",\"tags\":[\"%s\"]", tag);
	snprintf(body, sizeof(body),
		 "{\"name\":\"%s\",\"schedule\":\"@every 1h\"%s,"
		 "\"executor\":{\"type\":\"shell\",\"shell\":true,"
		 "\"command\":[\"echo $$ >> %s; exec sleep 30\"]},"
		 "\"retry\":{\"max_attempts\":%d,\"initial\":\"1ms\","
		 "\"jitter\":false}}",
		 name, tags, cl.pids, attempts);
	job_post(i, body);
}

/* Waits until the long runs wrote n pids; the n-th. */
static pid_t pid_wait(int n)
{
	pid_t pids[64];

	WAIT(WAIT_S, pids_read(pids, 64) >= n, "run %d never started", n);
	return pids[n - 1];
}

/* What a node's GET /v1/cluster says. */
struct view {
	char leader[64];
	long long term, lost, rescued, elected;
	int leads, alive, listed;
	json_t *nodes; /* borrowed from o; o is kept until view_free */
	json_t *o;
};

/* Node i's view: its leader ("" for none), term, whether it leads, its
 * counters, how many nodes it lists and how many alive. 0, or -1 when it
 * did not answer (stopped, or not running); view_free it. */
static int view_get(int i, struct view *v)
{
	struct hres r;
	json_t *o;
	size_t k;
	json_t *n;

	memset(v, 0, sizeof(*v));
	if (cl.node[i].pid <= 0)
		return -1;
	http_req((uint16_t)cl.node[i].port, "GET", "/v1/cluster", NULL, NULL,
		 &r);
	if (r.rc != CURLE_OK || r.status != 200) {
		hres_free(&r);
		return -1;
	}
	o = json_loads(r.body, 0, NULL);
	hres_free(&r);
	EXPECT(o != NULL, "GET /v1/cluster on %s: not JSON", cl.id[i]);
	EXPECT(streq(str(o, "mode"), "cluster"), "%s: mode %s", cl.id[i],
	       str(o, "mode"));
	EXPECT(streq(str(o, "node"), cl.id[i]), "%s: node %s", cl.id[i],
	       str(o, "node"));
	if (str(o, "leader") != NULL)
		snprintf(v->leader, sizeof(v->leader), "%s", str(o, "leader"));
	v->term = num(o, "term");
	v->leads = json_is_true(json_object_get(o, "this_node_leads"));
	v->lost = num(o, "lost");
	v->rescued = num(o, "rescued");
	v->elected = num(o, "elected");
	v->nodes = json_object_get(o, "nodes");
	json_array_foreach(v->nodes, k, n)
	{
		v->listed++;
		v->alive += json_is_true(json_object_get(n, "alive"));
	}
	v->o = o;
	return 0;
}

static void view_free(struct view *v)
{
	json_decref(v->o);
	v->o = NULL;
}

/* The entry of node id in a view's list, or NULL. */
static json_t *view_node(const struct view *v, const char *id)
{
	size_t k;
	json_t *n;

	json_array_foreach(v->nodes, k,
			   n) if (streq(str(n, "id"), id)) return n;
	return NULL;
}

/* Node i's view names leader with term, and at least alive nodes alive. */
static int view_is(int i, const char *leader, long long term, int alive)
{
	struct view v;
	int ok;

	if (view_get(i, &v) != 0)
		return 0;
	ok =
	    strcmp(v.leader, leader) == 0 && v.term == term && v.alive >= alive;
	view_free(&v);
	return ok;
}

/* Node i's view names a leader, and exactly alive nodes alive. */
static int view_ready(int i, int alive)
{
	struct view v;
	int ok;

	if (view_get(i, &v) != 0)
		return 0;
	ok = v.leader[0] != '\0' && v.alive == alive;
	view_free(&v);
	return ok;
}

/* How many runs node i counts lost (-1: it did not answer). */
static long long view_lost(int i)
{
	struct view v;
	long long lost;

	if (view_get(i, &v) != 0)
		return -1;
	lost = v.lost;
	view_free(&v);
	return lost;
}

/* The running count node id reports in its beats (the nodes table). */
static long long node_running(int i)
{
	return sql_int("SELECT running FROM nodes WHERE id = '%s'", cl.id[i]);
}

static void start_leader(int i, const char *tags)
{
	node_start(i, tags);
	WAIT(WAIT_S, leads(i), "%s, alone, did not take the lease", cl.id[i]);
}

/* ========================================================================
 * 1. Election
 * ======================================================================== */

/* The schema, made as a node makes it at its start. */
static void migrate(void)
{
	struct keel_store *st = NULL;
	char err[512];

	EXPECT(keel_store_pg_open(cl.uri, NULL, &st, err, sizeof(err)) == 0,
	       "open the store: %s", err);
	keel_store_close(st);
}

/* Sessions of the case's database waiting for a lock. */
static long long lock_waiters(void)
{
	return sql_int("SELECT count(*) FROM pg_stat_activity WHERE datname = "
		       "current_database() AND wait_event_type = 'Lock'");
}

TEST(election)
{
	PGconn *lock;
	struct lease l;
	int leaders = 0, elected_logs = 0;
	double t0;
	char leader[128] = "";

	need_server();
	cl_open(&server, "election");
	/* A real race: the three nodes' first lease takes wait behind a lock
	 * on the table, then all go at the same moment. */
	migrate();
	lock = pg_test_connect(cl.pg, cl.db);
	pg_test_exec(lock, "BEGIN; LOCK TABLE lease IN SHARE MODE");
	for (int i = 0; i < 3; i++)
		node_start(i, NULL);
	WAIT(WAIT_S, lock_waiters() >= 3,
	     "the three nodes never waited for the lease together");
	EXPECT(lease_get(&l) != 0, "someone took the lease through the lock");
	t0 = keel_test_now();
	pg_test_exec(lock, "COMMIT");
	PQfinish(lock);

	/* Every node learns the outcome at its next beat. */
	for (int i = 0; i < 3; i++)
		WAIT(WAIT_S, view_ready(i, 3),
		     "%s never saw a leader and three nodes alive", cl.id[i]);
	printf("  elected and known by all in %.0f ms\n",
	       (keel_test_now() - t0) * 1e3);

	/* And it holds: the same answer everywhere for ten beats. */
	for (int round = 0; round < 10; round++) {
		EXPECT(lease_get(&l) == 0, "no lease row");
		EXPECT(l.term == 1, "term %lld: the lease changed hands (%s)",
		       l.term, l.holder);
		leaders = 0;
		for (int i = 0; i < 3; i++) {
			struct view v;

			EXPECT(view_get(i, &v) == 0, "%s did not answer",
			       cl.id[i]);
			EXPECT(strcmp(v.leader, l.holder) == 0 && v.term == 1,
			       "%s names %s term %lld; the lease says %s term "
			       "%lld",
			       cl.id[i], v.leader, v.term, l.holder, l.term);
			EXPECT(v.listed == 3 && v.alive == 3,
			       "%s lists %d nodes, %d alive", cl.id[i],
			       v.listed, v.alive);
			for (int j = 0; j < 3; j++) {
				json_t *n = view_node(&v, cl.id[j]);

				EXPECT(n != NULL, "%s does not list %s",
				       cl.id[i], cl.id[j]);
				EXPECT(json_is_true(
					   json_object_get(n, "leader")) ==
					   (strcmp(cl.id[j], l.holder) == 0),
				       "%s flags %s as leader wrongly",
				       cl.id[i], cl.id[j]);
			}
			if (v.leads) {
				leaders++;
				EXPECT(strcmp(cl.id[i], l.holder) == 0,
				       "%s says it leads; the lease is %s's",
				       cl.id[i], l.holder);
				EXPECT(v.elected == 1, "%s elected %lld times",
				       cl.id[i], v.elected);
			}
			view_free(&v);
		}
		EXPECT(leaders == 1, "%d nodes say they lead", leaders);
		usleep(BEAT_MS * 1000);
	}
	snprintf(leader, sizeof(leader), "%s", l.holder);
	for (int i = 0; i < 3; i++)
		elected_logs += log_has(i, "this node leads");
	EXPECT(elected_logs == 1, "%d nodes logged that they lead",
	       elected_logs);
	printf("  leader %s, term 1\n", leader);
	cl_close();
}

/* ========================================================================
 * 2. Failover: the leader killed
 * ======================================================================== */

TEST(failover)
{
	struct lease l, l2;
	struct run_row w, retry;
	double t0, t_fail = 0, t_rescue = 0;
	long long id, retry_id;
	struct view v;
	int next = -1;

	need_server();
	cl_open(&server, "failover");
	start_leader(0, "pin");
	node_start(1, NULL);
	node_start(2, NULL);
	WAIT(WAIT_S, sql_int("SELECT count(*) FROM nodes") == 3,
	     "the followers never beat");
	job_post_long(0, "pinned", "pin", 2);
	id = run_now(0, "pinned");
	pid_wait(1);
	EXPECT(run_is(id, "running", "n1"), "the run is not running on n1");
	EXPECT(lease_get(&l) == 0 && strcmp(l.holder, "n1") == 0,
	       "n1 lost the lease before the kill (%s)", l.holder);

	t0 = keel_test_now();
	keeld_proc_kill(&cl.node[0]);
	while (t_fail == 0 || t_rescue == 0) {
		EXPECT(
		    keel_test_now() -
			    t0<WAIT_S, "after %.0f s: failover %s, rescue %s",
			       WAIT_S, t_fail> 0
			? "done"
			: "not done",
		    t_rescue > 0 ? "done" : "not done");
		if (t_fail == 0 && lease_get(&l2) == 0 && l2.term > l.term &&
		    strcmp(l2.holder, "n1") != 0 && l2.holder[0] != '\0')
			t_fail = keel_test_now() - t0;
		if (t_rescue == 0 && !run_is(id, "running", NULL))
			t_rescue = keel_test_now() - t0;
		usleep(5 * 1000);
	}
	printf("  failover %.0f ms, rescue %.0f ms (lease-ttl %d ms, "
	       "rescue-after %d ms, heartbeat %d ms)\n",
	       t_fail * 1e3, t_rescue * 1e3, TTL_MS, RESCUE_MS, BEAT_MS);

	/* One new term, one new holder, which says so. */
	EXPECT(lease_get(&l2) == 0 && l2.term == l.term + 1,
	       "term %lld after %lld", l2.term, l.term);
	next = strcmp(l2.holder, "n2") == 0 ? 1 : 2;
	EXPECT(strcmp(l2.holder, cl.id[next]) == 0, "the lease is %s's",
	       l2.holder);
	WAIT(WAIT_S, view_is(next, l2.holder, l2.term, 2),
	     "%s does not name itself leader", l2.holder);
	EXPECT(view_get(next, &v) == 0 && v.leads && v.rescued == 1,
	       "the new leader rescued %lld runs", v.rescued);
	view_free(&v);

	/* The orphan: crashed with the rescue's reason, its claim void. */
	run_get(id, &w);
	EXPECT(strcmp(w.state, "crashed") == 0, "the run is %s", w.state);
	EXPECT(strncmp(w.error, "rescued: ", 9) == 0 &&
		   strstr(w.error, "n1") != NULL,
	       "error \"%s\"", w.error);
	EXPECT(strcmp(w.node, "n1") == 0 && w.finished_at > 0 && w.claim == 0,
	       "node %s finished_at %lld claim %lld", w.node, w.finished_at,
	       w.claim);

	/* Its retry, attempt 2 of the same tick, waits for a node tagged
	 * "pin": the untagged ones leave it. */
	retry_id = sql_int("SELECT id FROM runs WHERE job = 'pinned' AND "
			   "attempt = 2");
	EXPECT(retry_id > 0, "no retry of the rescued run");
	usleep(5 * BEAT_MS * 1000);
	run_get(retry_id, &retry);
	EXPECT(strcmp(retry.state, "queued") == 0 && retry.node[0] == '\0' &&
		   strcmp(retry.trigger, "retry") == 0 &&
		   retry.scheduled_at == w.scheduled_at,
	       "the retry: %s on '%s', trigger %s, scheduled_at %lld vs %lld",
	       retry.state, retry.node, retry.trigger, retry.scheduled_at,
	       w.scheduled_at);
	/* A node with the tag comes: it runs the retry. */
	node_start(3, "pin");
	pid_wait(2);
	WAIT(WAIT_S, run_is(retry_id, "running", "n4"),
	     "the retry does not run on n4");
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'pinned'") == 2,
	       "more runs than the rescued one and its retry");
	cl_close();
}

/* ========================================================================
 * 3. A paused leader
 * ======================================================================== */

/* A fenced transaction (the leader's) waiting for a lock: a session that
 * holds the lease row FOR SHARE (RowShareLock on the table; renewals and
 * takeovers hold RowExclusiveLock) and waits. */
static int fenced_waiting(void)
{
	return sql_int("SELECT count(*) FROM pg_stat_activity a WHERE "
		       "a.datname = current_database() AND "
		       "a.wait_event_type = 'Lock' AND EXISTS (SELECT 1 FROM "
		       "pg_locks k WHERE k.pid = a.pid AND k.granted AND "
		       "k.relation = 'lease'::regclass AND "
		       "k.mode = 'RowShareLock')") > 0;
}

TEST(paused_leader)
{
	struct lease l, l2;
	double t0, stopped;
	long long resumed_at, first, last, n;
	struct view v;
	PGconn *lock;

	need_server();
	cl_open(&server, "paused");
	start_leader(0, NULL);
	node_start(1, NULL);
	/* "allow" and "all": every tick is a first attempt, whatever runs
	 * and whatever was missed. */
	job_post(0, "{\"name\":\"tick\",\"schedule\":\"@every 1s\","
		    "\"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"},"
		    "\"concurrency\":\"allow\",\"missed\":\"all\","
		    "\"missed_max\":10000}");
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'tick' "
		     "AND state = 'succeeded'") >= 2,
	     "the job does not tick");
	EXPECT(lease_get(&l) == 0 && strcmp(l.holder, "n1") == 0,
	       "n1 does not lead");

	/* Stopped where it hurts most: inside its tick pass's fenced
	 * transaction, which keeps the lease row locked. The job's row held
	 * (claims of an "allow" job leave it alone), n1's next tick waits to
	 * move its last_tick; n1 stopped there and the row let go, its
	 * session sits idle in the transaction until the server ends it
	 * (keeld's idle timeout, the lease ttl). */
	lock = pg_test_connect(cl.pg, cl.db);
	pg_test_exec(lock, "BEGIN; SELECT 1 FROM jobs WHERE name = 'tick' "
			   "FOR NO KEY UPDATE");
	WAIT(WAIT_S, fenced_waiting(), "n1's tick never waited for the job");
	t0 = keel_test_now();
	kill(cl.node[0].pid, SIGSTOP);
	pg_test_exec(lock, "COMMIT");
	PQfinish(lock);
	WAIT(WAIT_S, lease_get(&l2) == 0 && strcmp(l2.holder, "n2") == 0,
	     "n2 never took the lease from the stopped n1");
	printf("  n2 took over %.0f ms after SIGSTOP\n",
	       (keel_test_now() - t0) * 1e3);
	EXPECT(l2.term == l.term + 1, "term %lld after %lld", l2.term, l.term);
	/* n2 ticks while n1 sleeps: a tick after the takeover. */
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'tick' "
		     "AND scheduled_at > %lld",
		     l2.now) > 0,
	     "n2 does not tick");
	stopped = keel_test_now() - t0;
	EXPECT(stopped * 1e3 > TTL_MS, "stopped %.0f ms only", stopped * 1e3);
	kill(cl.node[0].pid, SIGCONT);
	resumed_at = db_now();

	/* The old leader learns it lost at its next beat and steps down. */
	WAIT(WAIT_S, view_is(0, "n2", l2.term, 2),
	     "n1 does not name n2 (term %lld) leader", l2.term);
	EXPECT(view_get(0, &v) == 0 && !v.leads, "n1 still says it leads");
	view_free(&v);
	/* Whichever saw it first: its beat ("no longer the leader") or its
	 * tick pass, refused ("...; stepping down"). */
	WAIT(WAIT_S,
	     log_has(0, "no longer the leader") || log_has(0, "stepping down"),
	     "n1 did not log that it stepped down");

	/* Two more ticks with both awake, then: one first attempt a tick
	 * from before the pause to now, and n2 still leads at term + 1. */
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'tick' "
		     "AND scheduled_at >= %lld",
		     resumed_at + 2000) > 0,
	     "no tick 2 s after n1 resumed");
	n = ticks_check("tick", &first, &last);
	EXPECT(first < l2.now - 1000 && last >= resumed_at + 2000,
	       "ticks %lld..%lld do not cover the pause", first, last);
	EXPECT(lease_get(&l) == 0 && strcmp(l.holder, "n2") == 0 &&
		   l.term == l2.term,
	       "the lease is %s's at term %lld", l.holder, l.term);
	printf("  %lld ticks, each run once; n1 stopped %.1f s\n", n, stopped);
	cl_close();
}

/* ========================================================================
 * 4. Fencing: a follower presumed dead comes back
 * ======================================================================== */

TEST(fencing)
{
	struct run_row before, after;
	long long id;
	pid_t pid;
	double t0;

	need_server();
	cl_open(&server, "fencing");
	start_leader(0, NULL);
	node_start(1, "far");
	job_post_long(0, "long", "far", 1);
	id = run_now(0, "long");
	pid = pid_wait(1);
	WAIT(WAIT_S, run_is(id, "running", "n2"), "the run is not on n2");

	t0 = keel_test_now();
	kill(cl.node[1].pid, SIGSTOP);
	WAIT(WAIT_S, !run_is(id, "running", NULL),
	     "the leader never rescued the stopped node's run");
	printf("  rescued %.0f ms after SIGSTOP\n",
	       (keel_test_now() - t0) * 1e3);
	run_get(id, &before);
	EXPECT(strcmp(before.state, "crashed") == 0 &&
		   strncmp(before.error, "rescued: ", 9) == 0 &&
		   before.claim == 0,
	       "the run is %s (%s), claim %lld", before.state, before.error,
	       before.claim);
	EXPECT(sleep_alive(pid),
	       "the run's process ended under a stopped node");

	kill(cl.node[1].pid, SIGCONT);
	/* n2 learns at its next beat that the run is not its own: it stops
	 * the process and its result is refused. */
	WAIT(WAIT_S, !sleep_alive(pid), "n2 did not stop the rescued run");
	WAIT(WAIT_S, log_has(1, "no longer this node's"),
	     "n2 did not log why it stopped the run");
	WAIT(WAIT_S, view_lost(1) == 1, "n2 does not count the run lost");
	/* Its attempt ended and it beat since: it tried to store it. */
	WAIT(WAIT_S, node_running(1) == 0, "n2 still reports a running run");
	usleep(3 * BEAT_MS * 1000);
	run_get(id, &after);
	EXPECT(strcmp(after.state, before.state) == 0 &&
		   after.finished_at == before.finished_at &&
		   strcmp(after.error, before.error) == 0 &&
		   strcmp(after.node, before.node) == 0 &&
		   after.claim == before.claim,
	       "the rescued row changed: %s/%lld/\"%s\"/%s -> "
	       "%s/%lld/\"%s\"/%s",
	       before.state, before.finished_at, before.error, before.node,
	       after.state, after.finished_at, after.error, after.node);
	EXPECT(sql_int("SELECT count(*) FROM runs") == 1,
	       "a run was added (the job has no retry)");
	/* n2 is a healthy follower again. */
	WAIT(WAIT_S, view_is(1, "n1", 1, 2), "n2 does not follow n1");
	cl_close();
}

/* ========================================================================
 * 5. Tags
 * ======================================================================== */

TEST(tags)
{
	struct view v;
	json_t *n;

	need_server();
	cl_open(&server, "tags");
	start_leader(0, NULL);
	node_start(1, "gpu");
	node_start(2, "cpu,ssd");
	job_post(0,
		 "{\"name\":\"g\",\"schedule\":\"@every 1s\","
		 "\"tags\":[\"gpu\"],\"concurrency\":\"allow\","
		 "\"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"}}");
	/* No node has both. */
	job_post(0,
		 "{\"name\":\"gc\",\"schedule\":\"@every 1s\","
		 "\"tags\":[\"gpu\",\"cpu\"],\"concurrency\":\"allow\","
		 "\"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"}}");
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'g' AND "
		     "state = 'succeeded'") >= 4,
	     "the gpu job does not run");
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'g' AND "
		       "state <> 'queued' AND node IS DISTINCT FROM 'n2'") == 0,
	       "a gpu run went to a node without the tag");
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'gc' AND "
		       "node IS NOT NULL") == 0,
	       "a gpu+cpu run went to a node without both tags");
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'gc' AND "
		       "state = 'queued'") >= 3,
	       "the gpu+cpu job's ticks are not waiting");
	/* The nodes' tags, as the cluster view shows them. */
	EXPECT(view_get(0, &v) == 0, "n1 did not answer");
	n = view_node(&v, "n3");
	EXPECT(n != NULL && json_array_size(json_object_get(n, "tags")) == 2 &&
		   strcmp(json_string_value(
			      json_array_get(json_object_get(n, "tags"), 1)),
			  "ssd") == 0,
	       "n3's tags are not listed");
	n = view_node(&v, "n1");
	EXPECT(n != NULL && json_array_size(json_object_get(n, "tags")) == 0,
	       "n1 has tags");
	view_free(&v);
	cl_close();
}

/* ========================================================================
 * 6. A graceful stop of the leader
 * ======================================================================== */

TEST(graceful_stop)
{
	struct lease l, l2;
	struct run_row w;
	long long id, taken_at = 0;
	double t0;
	int saw_free = 0;

	need_server();
	cl_open(&server, "graceful");
	start_leader(0, "a");
	node_start(1, NULL);
	WAIT(WAIT_S, sql_int("SELECT count(*) FROM nodes") == 2,
	     "n2 never beat");
	/* Longer than rescue-after: n1 must go on beating it while it
	 * drains, or the new leader would rescue it. */
	job_post(0, "{\"name\":\"drain\",\"schedule\":\"@every 1h\","
		    "\"tags\":[\"a\"],\"executor\":{\"type\":\"shell\","
		    "\"command\":[\"sleep\",\"2\"]}}");
	id = run_now(0, "drain");
	WAIT(WAIT_S, run_is(id, "running", "n1"), "the run does not start");

	EXPECT(lease_get(&l) == 0 && strcmp(l.holder, "n1") == 0,
	       "n1 does not lead");
	t0 = keel_test_now();
	kill(cl.node[0].pid, SIGTERM);
	for (;;) {
		EXPECT(keel_test_now() - t0 < WAIT_S,
		       "n2 never took the lease");
		EXPECT(lease_get(&l2) == 0, "the lease row is gone");
		saw_free |= l2.holder[0] == '\0';
		if (strcmp(l2.holder, "n2") == 0) {
			taken_at = l2.now;
			break;
		}
		usleep(2 * 1000);
	}
	/* l.expires_at was read before SIGTERM: the lease n1 gave up lasted
	 * at least that long. */
	printf("  n2 led %.0f ms after SIGTERM, %lld ms before n1's lease "
	       "would have ended%s\n",
	       (keel_test_now() - t0) * 1e3, l.expires_at - taken_at,
	       saw_free ? " (seen released)" : "");
	EXPECT(l2.term == l.term + 1, "term %lld after %lld", l2.term, l.term);
	EXPECT(taken_at < l.expires_at,
	       "n2 took the lease at %lld, not before n1's expired (%lld): "
	       "it was not released",
	       taken_at, l.expires_at);

	EXPECT(keeld_proc_wait(&cl.node[0], WAIT_S) == 0,
	       "n1 did not exit after its drain");
	EXPECT(cl.node[0].exited && cl.node[0].code == 0,
	       "n1: exit %d signal %d", cl.node[0].code, cl.node[0].signo);
	EXPECT(log_has(0, "draining"), "n1 did not drain");
	run_get(id, &w);
	EXPECT(strcmp(w.state, "succeeded") == 0 && strcmp(w.node, "n1") == 0,
	       "the drained run is %s on %s (%s)", w.state, w.node, w.error);
	WAIT(WAIT_S, log_has(1, "this node leads"), "n2 did not log it leads");
	cl_close();
}

/* A second keeld started with a live node's --node-id (a copy-pasted unit
 * file, a restart script that did not wait) sees that node's heartbeat
 * move before its own first beat, exits 1 saying so, and leaves the live
 * node's running run alone: recovered as crashed, it would run twice. */
TEST(duplicate_node_id)
{
	struct lease l, l2;
	struct run_row w;
	long long id;

	need_server();
	cl_open(&server, "dupid");
	start_leader(0, "a");
	job_post(0, "{\"name\":\"busy\",\"schedule\":\"@every 1h\","
		    "\"executor\":{\"type\":\"shell\","
		    "\"command\":[\"sleep\",\"3\"]}}");
	id = run_now(0, "busy");
	WAIT(WAIT_S, run_is(id, "running", "n1"), "the run does not start");
	EXPECT(lease_get(&l) == 0, "no lease row");

	/* n1 again, from another data directory */
	snprintf(cl.id[1], sizeof(cl.id[1]), "%s", cl.id[0]);
	node_start(1, NULL);
	EXPECT(keeld_proc_wait(&cl.node[1], WAIT_S) == 0,
	       "the second n1 did not exit");
	EXPECT(cl.node[1].exited && cl.node[1].code == 1,
	       "the second n1: exit %d signal %d", cl.node[1].code,
	       cl.node[1].signo);
	EXPECT(log_has(1, "another keeld is running as node n1"),
	       "the second n1 did not say why it stopped");
	/* Its beat would have put its own (empty) tags on n1's row. */
	EXPECT(sql_int("SELECT count(*) FROM nodes WHERE id = 'n1' AND "
		       "'a' = ANY(tags)") == 1,
	       "the second n1 beat: n1's row lost its tags");
	run_get(id, &w);
	EXPECT(strcmp(w.state, "running") == 0 && strcmp(w.node, "n1") == 0,
	       "the live node's run is %s on %s (%s)", w.state, w.node,
	       w.error);
	EXPECT(lease_get(&l2) == 0 && strcmp(l2.holder, "n1") == 0 &&
		       l2.term == l.term,
	       "the lease moved: %s term %lld, was term %lld", l2.holder,
	       l2.term, l.term);
	WAIT(WAIT_S, run_is(id, "succeeded", "n1"),
	     "the live node's run did not succeed");
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'busy'") == 1,
	       "the run ran twice");
	cl_close();
}

/* ========================================================================
 * 7. Operations through another node
 * ======================================================================== */

TEST(operations)
{
	json_t *j;
	long long p1, ticks, id, last, fin;
	pid_t pid;
	struct run_row w;

	need_server();
	cl_open(&server, "ops");
	start_leader(0, "a"); /* A */
	node_start(1, NULL);  /* B */

	/* Made on A, seen on B at once (both read the store). */
	job_post(0,
		 "{\"name\":\"op\",\"schedule\":\"@every 1s\","
		 "\"concurrency\":\"allow\","
		 "\"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"}}");
	j = api(1, "GET", "/v1/jobs/op", NULL, 200);
	EXPECT(strcmp(str(j, "schedule"), "@every 1s") == 0 &&
		   !json_is_true(json_object_get(j, "paused")),
	       "B sees another job");
	json_decref(j);
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'op' AND "
		     "state = 'succeeded'") >= 2,
	     "the job does not run");

	/* Paused on B a third of a second past a tick: the next one is
	 * 0.7 s away, far beyond the heartbeat it takes to reach A. */
	WAIT(WAIT_S, db_now() % 1000 >= 200 && db_now() % 1000 < 400,
	     "the store's clock stands still");
	j = api(1, "POST", "/v1/jobs/op/pause", NULL, 200);
	EXPECT(json_is_true(json_object_get(j, "paused")), "not paused");
	json_decref(j);
	p1 = db_now();
	ticks = sql_int("SELECT count(*) FROM runs WHERE job = 'op'");
	WAIT(WAIT_S, db_now() > p1 + 2500, "the store's clock stands still");
	last = sql_int("SELECT max(scheduled_at) FROM runs WHERE job = 'op'");
	EXPECT(last <= p1 + BEAT_MS, "a tick at %lld, %lld ms after the pause",
	       last, last - p1);
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'op'") == ticks,
	       "runs were added after the pause");
	j = api(0, "GET", "/v1/jobs/op", NULL, 200);
	EXPECT(json_is_true(json_object_get(j, "paused")), "A: not paused");
	json_decref(j);

	/* A run on A (the only node tagged "a") canceled through B. */
	job_post_long(1, "long", "a", 1);
	id = run_now(1, "long");
	pid = pid_wait(1);
	WAIT(WAIT_S, run_is(id, "running", "n1"), "the run is not on A");
	{
		char path[64];

		snprintf(path, sizeof(path), "/v1/runs/%lld/cancel", id);
		j = api(1, "POST", path, NULL, 200);
	}
	EXPECT(strcmp(str(j, "state"), "canceled") == 0, "cancel: %s",
	       str(j, "state"));
	json_decref(j);
	run_get(id, &w);
	fin = w.finished_at;
	EXPECT(strcmp(w.state, "canceled") == 0 && fin > 0,
	       "the canceled run is %s, finished at %lld", w.state, fin);
	WAIT(WAIT_S, !sleep_alive(pid), "A did not stop the canceled run");
	WAIT(WAIT_S, log_has(0, "no longer this node's"),
	     "A did not log why it stopped the run");
	/* A's attempt ended and A beat since: its result was refused. */
	WAIT(WAIT_S, node_running(0) == 0, "A still reports a running run");
	usleep(3 * BEAT_MS * 1000);
	run_get(id, &w);
	EXPECT(strcmp(w.state, "canceled") == 0 && w.finished_at == fin &&
		   strcmp(w.error, "canceled through the API") == 0,
	       "the canceled run became %s at %lld (%s)", w.state,
	       w.finished_at, w.error);

	/* The job deleted through B while A runs it. */
	id = run_now(1, "long");
	pid = pid_wait(2);
	WAIT(WAIT_S, run_is(id, "running", "n1"), "the run is not on A");
	json_decref(api(1, "DELETE", "/v1/jobs/long", NULL, 204));
	EXPECT(api_status(0, "GET", "/v1/jobs/long") == 404,
	       "A still serves the deleted job");
	WAIT(WAIT_S, !sleep_alive(pid), "A did not stop the deleted job's run");
	WAIT(WAIT_S, api_status(0, "POST", "/v1/jobs/long/run") == 404,
	     "A still runs the deleted job by hand");
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE job = 'long'") == 0,
	       "the deleted job's runs are still stored");
	EXPECT(sql_int("SELECT count(*) FROM jobs") == 1, "jobs left: not 1");
	cl_close();
}

/* ========================================================================
 * 8. PostgreSQL stopped under the cluster
 * ======================================================================== */

TEST(pg_outage)
{
	struct pg_server own;
	char why[2048];
	struct lease l;
	long long back, first, last, n;
	double t0, t1;
	int rc;

	need_server();
	/* Its own server: only the process that started one may stop it. */
	rc = pg_server_start(&own, server.dir, why, sizeof(why));
	if (rc == 1)
		KEEL_TEST_SKIP(why);
	EXPECT(rc == 0, "the case's server: %s", why);
	cl_open(&own, "outage");
	start_leader(0, NULL);
	node_start(1, NULL);
	job_post(0,
		 "{\"name\":\"quick\",\"schedule\":\"@every 1s\","
		 "\"concurrency\":\"allow\",\"missed\":\"all\","
		 "\"missed_max\":10000,"
		 "\"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"}}");
	job_post(0, "{\"name\":\"slow\",\"schedule\":\"@every 1s\","
		    "\"concurrency\":\"allow\",\"missed\":\"all\","
		    "\"missed_max\":10000,"
		    "\"executor\":{\"type\":\"shell\","
		    "\"command\":[\"sleep\",\"1.5\"]}}");
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'slow' AND "
		     "state = 'succeeded'") >= 1 &&
		 sql_int("SELECT count(*) FROM runs WHERE job = "
			 "'slow' AND state = 'running'") >= 1,
	     "no slow run in flight");

	t0 = keel_test_now();
	pg_server_stop(&own);
	sleep(3);
	EXPECT(pg_server_launch(&own, why, sizeof(why)) == 0,
	       "PostgreSQL did not start again: %s", why);
	back = db_now();
	t1 = keel_test_now();
	printf("  PostgreSQL down %.1f s\n", t1 - t0);

	/* A leader again, known to both; ticks again. */
	WAIT(WAIT_S,
	     lease_get(&l) == 0 && l.holder[0] != '\0' && l.expires_at > l.now,
	     "no leader after the outage");
	WAIT(WAIT_S,
	     view_is(0, l.holder, l.term, 2) && view_is(1, l.holder, l.term, 2),
	     "the nodes do not agree on the leader %s", l.holder);
	printf("  a leader %.0f ms after PostgreSQL came back\n",
	       (keel_test_now() - t1) * 1e3);
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE job = 'quick' "
		     "AND state = 'succeeded' AND scheduled_at > %lld",
		     back + 1000) > 0,
	     "the ticks did not resume");
	printf("  ticks resumed %.0f ms after PostgreSQL came back\n",
	       (keel_test_now() - t1) * 1e3);
	for (int i = 0; i < 2; i++)
		EXPECT(log_has(i, "the store is unreachable"),
		       "%s did not notice the outage", cl.id[i]);

	/* Stop ticking, let everything end, then count. */
	json_decref(api(1, "POST", "/v1/jobs/quick/pause", NULL, 200));
	json_decref(api(1, "POST", "/v1/jobs/slow/pause", NULL, 200));
	WAIT(WAIT_S,
	     sql_int("SELECT count(*) FROM runs WHERE state IN "
		     "('queued', 'running')") == 0,
	     "runs still queued or running");
	printf("  all final %.0f ms after PostgreSQL came back\n",
	       (keel_test_now() - t1) * 1e3);
	EXPECT(sql_int("SELECT count(*) FROM runs WHERE state NOT IN "
		       "('succeeded')") == 0,
	       "%lld runs did not succeed (%lld rescued)",
	       sql_int("SELECT count(*) FROM runs WHERE state <> 'succeeded'"),
	       sql_int("SELECT count(*) FROM runs WHERE error LIKE "
		       "'rescued:%%'"));
	n = ticks_check("quick", &first, &last);
	EXPECT(last > back, "quick: the last tick is before the outage");
	n += ticks_check("slow", &first, &last);
	EXPECT(last > back, "slow: the last tick is before the outage");
	for (int i = 0; i < 2; i++)
		EXPECT(cl.node[i].pid > 0 &&
			   keeld_proc_wait(&cl.node[i], 0.001) == -ETIMEDOUT,
		       "%s ended", cl.id[i]);
	printf("  %lld ticks, every run succeeded, none rescued\n", n);
	cl_close();
	pg_server_destroy(&own);
}

/* ========================================================================
 * 9. Bad input
 * ======================================================================== */

/* keeld with args must exit with code (-1: any failure), saying want on its
 * first line, writing nothing to its data directory or to the database. */
static void refused(const char *const *args, int code, const char *want)
{
	struct keeld_proc *k = &cl.node[0];
	char *log, *nl;
	int rc = keeld_proc_start(k, args, 0);

	log = keeld_proc_log(k);
	nl = strchr(log, '\n');
	if (nl != NULL)
		*nl = '\0';
	EXPECT(rc == -ECHILD && k->exited &&
		   (code < 0 ? k->code != 0 : k->code == code),
	       "%s %s: rc %d, exit %d (want %d): %s", args[0], args[1], rc,
	       k->code, code, log);
	EXPECT(strncmp(log, "keeld: ", 7) == 0 && strstr(log, want) != NULL,
	       "%s %s: the message \"%s\" does not say \"%s\"", args[0],
	       args[1], log, want);
	free(log);
	EXPECT(keeld_proc_data_empty(k), "%s %s: the data dir was written",
	       args[0], args[1]);
	EXPECT(cl.sql == NULL ||
		   sql_int("SELECT count(*) FROM pg_tables WHERE schemaname = "
			   "'public'") == 0,
	       "%s %s: tables were made", args[0], args[1]);
}

/* "URI" stands for the case's database. */
/* clang-format off */
static const struct {
	const char *args[7];
	int code; /* -1: any failure */
	const char *want;
} bad[] = {
	{ { "--store", "mysql://localhost/keel" }, 2,
	  "--store: not a PostgreSQL URI" },
	{ { "--store", "/var/lib/keel.db" }, 2,
	  "--store: not a PostgreSQL URI" },
	{ { "--tags", "gpu" }, 2, "--tags needs a cluster" },
	{ { "--store", "URI", "--heartbeat", "0" }, 2, "--heartbeat" },
	{ { "--store", "URI", "--heartbeat", "0ms" }, 2,
	  "--heartbeat: duration must be at least 1ms" },
	{ { "--store", "URI", "--heartbeat", "100ms", "--lease-ttl", "150ms" },
	  2, "--lease-ttl and --rescue-after must be at least two "
	  "--heartbeat periods" },
	{ { "--store", "URI", "--heartbeat", "100ms", "--rescue-after",
	    "199ms" },
	  2, "--lease-ttl and --rescue-after must be at least two "
	  "--heartbeat periods" },
	/* A URI libpq cannot parse: refused when the store opens. */
	{ { "--store", "postgresql://[::1/keel" }, -1,
	  "the connection string is not valid" },
};
/* clang-format on */

TEST(bad_input)
{
	/* Refused before any connection: without a server too (a URI that
	 * names none; nothing to look at in a database then). */
	if (server_state == 0) {
		cl_open(&server, "bad");
	} else {
		memset(&cl, 0, sizeof(cl));
		keeld_proc_init(&cl.node[0]);
		snprintf(cl.uri, sizeof(cl.uri),
			 "postgresql:///keel?host=/nonexistent");
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[8] = {NULL};

		for (size_t k = 0; bad[i].args[k] != NULL; k++)
			args[k] = strcmp(bad[i].args[k], "URI") == 0
				      ? cl.uri
				      : bad[i].args[k];
		refused(args, bad[i].code, bad[i].want);
	}
	cl_close();
}
