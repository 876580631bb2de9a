/*
 * tests/chaos/chaos.c - the chaos harness of keeld's cluster mode (issue 8).
 *
 * Starts a throwaway PostgreSQL (tests/sched/pg_server.h) and N keeld nodes
 * on it (tests/cmd/keeld_proc.h), creates jobs that fire every second, and
 * then, for --duration seconds, SIGKILLs nodes at random moments (the
 * leader and a follower by turns), restarts them 1-12 s later (some before
 * the leader's rescue-after, some after), and stops PostgreSQL for 2-6 s
 * now and then. Then it ends the chaos (every node and the database up,
 * every job paused, nothing queued or running) and checks from the
 * database, with an audit trigger of its own on runs and lease:
 *
 *   1. every due tick produced exactly one first attempt (no gap, none
 *      twice), from each job's first tick to the pause;
 *   2. every run reached a final state;
 *   3. no result was written by a stale claim: no final run was changed
 *      again, no running run changed hands, no run was deleted, every
 *      rescued run still says so;
 *   4. every failed, timed out or crashed run with attempts left has its
 *      retry (and no retry lacks its reason);
 *   5. runs of tagged jobs ran only on nodes with the tags;
 *   6. the lease's term grew at every change of holder;
 *   7. no keeld died on its own, and GET /v1/cluster on every node names
 *      the lease's leader and term.
 *
 * It prints what it measured itself: the failover time of each leader kill
 * (kill -> a new term held by another node, polling the lease every 25 ms),
 * the rescue time of each run that was running on a killed node (kill ->
 * its finished_at as crashed: by the leader's rescue, or by the node's own
 * recovery when it restarted first), as count, p50, p99 and max; runs per
 * second; what it did. Exit status: 0 when every check passed, 1 when one
 * failed (the logs and the database stay, their paths are printed), 77
 * when this machine cannot run PostgreSQL.
 *
 *   keel-chaos [--nodes 3] [--jobs 300] [--kills 60] [--pg-stops 5]
 *              [--duration 420] [--seed N] [--keeld PATH] [--workers 64]
 *              [--rescue-after 6] [--log-level info] [--keep]
 *
 * docs/cluster.md says how to run it and how to read what it prints.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

/*
 * keeld_proc.h brings keel_test.h, whose main() runs TEST() cases. This
 * program has no cases and options of its own: its main is renamed away.
 */
#define main keel_test_main_unused
#include "keeld_proc.h"
#undef main
#include "pg_server.h"

/* How far behind the pause a job's last tick may be (check 1). */
#define PAUSE_SLACK_MS 5000

#define MAX_NODES 9
#define DB_NAME "chaos"
#define FINAL_STATES                                                           \
	"('succeeded','failed','timed_out','canceled','crashed','skipped')"
#define TICK_ORIGIN "origin IN ('schedule','missed')"
/* The tag that nodes 2.. have and the "tag" jobs need. */
#define TAG "blue"

struct opts {
	int nodes;
	int jobs;
	int kills;
	int pg_stops;
	double duration; /* s of chaos */
	uint64_t seed;
	const char *keeld;
	int workers;
	double rescue_after;   /* s: keeld's default, or what we pass */
	int pass_rescue_after; /* given on our command line: pass it on */
	const char *log_level;
	int keep;
	const char *check; /* only the checks, on this database */
};

struct node {
	struct keeld_proc p;
	char id[16];
	char url[512];
	const char *args[24];
	int up;
	double killed_at;  /* monotonic s of the last kill */
	double restart_at; /* when to start it again; 0: not planned */
	int restart_fails;
	int self_exits; /* died without our kill */
};

struct kill {
	int node;
	int leader;	  /* the leader was killed */
	double at;	  /* monotonic s */
	int64_t at_ms;	  /* wall ms = the database's clock (same host) */
	int64_t term;	  /* the lease's term at the kill */
	double failover;  /* s until another node held a new term; <0 none */
	int64_t *orphans; /* ids of its runs that were running */
	size_t n_orphans;
};

struct chaos {
	struct opts o;
	struct pg_server pg;
	char conninfo[512];
	PGconn *db;
	struct node nodes[MAX_NODES];
	struct kill *kills;
	size_t n_kills;
	double stops[64]; /* s each PostgreSQL stop lasted */
	int n_stops;
	int restarts, restarts_before, restarts_after;
	double t0; /* monotonic s at the start */
	uint64_t rng;
	int pending;  /* index of the kill whose failover is being
			 measured, or -1 */
	int failures; /* checks failed */
	char *ex;     /* examples of the check being made, printed
			 after its verdict */
	size_t ex_len;
	FILE *ex_f;
	int64_t pause_ms; /* the database's clock when pausing began */
};

/* ---- small things ------------------------------------------------------- */

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_s(double s)
{
	if (s > 0)
		pg_server_sleep_ms((long)(s * 1000));
}

/* splitmix64: the same seed gives the same chaos plan. */
static uint64_t rnd(struct chaos *c)
{
	uint64_t z = (c->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rnd_range(struct chaos *c, double lo, double hi)
{
	return lo + (hi - lo) * (double)(rnd(c) >> 11) / 9007199254740992.0;
}

static void say(struct chaos *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(struct chaos *c, const char *fmt, ...)
{
	va_list ap;

	printf("[%7.1fs] ", mono() - c->t0);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void print_paths(struct chaos *c)
{
	printf("keeld logs (keeld-N.log: the N-th start of the node):\n");
	for (int i = 0; i < c->o.nodes; i++)
		if (c->nodes[i].p.dir[0] != '\0')
			printf("  %s: %s\n", c->nodes[i].id, c->nodes[i].p.dir);
	if (c->pg.dir[0] != '\0')
		printf("PostgreSQL: %s (data/, server.log; database " DB_NAME
		       ", tables runs, jobs, lease, chaos_audit, chaos_lease)\n"
		       "  restart it: %s/postgres -D %s/data -k %s -c "
		       "listen_addresses= ; psql -h %s -U keel " DB_NAME "\n",
		       c->pg.dir, c->pg.bin, c->pg.dir, c->pg.dir, c->pg.dir);
}

/* A harness failure (not a finding of a check): the state stays for a
 * look; keelds and PostgreSQL die with this process (PR_SET_PDEATHSIG). */
static void die(struct chaos *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void die(struct chaos *c, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "chaos: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	print_paths(c);
	printf("chaos: FAILED (seed %" PRIu64 ")\n", c->o.seed);
	fflush(NULL);
	exit(1);
}

/* ---- the database ---------------------------------------------------------
 */

/* Runs sql with text parameters; NULL (with the error printed) when it
 * failed. A connection lost to a PostgreSQL restart is made again once. */
static PGresult *db_try(struct chaos *c, const char *sql, int n,
			const char *const *params)
{
	PGresult *r = NULL;

	for (int attempt = 0; attempt < 2; attempt++) {
		ExecStatusType st;

		if (c->db == NULL || PQstatus(c->db) != CONNECTION_OK) {
			if (c->db == NULL)
				c->db = PQconnectdb(c->conninfo);
			else
				PQreset(c->db);
			if (PQstatus(c->db) != CONNECTION_OK)
				continue;
		}
		/* Without parameters, the simple protocol: several
		 * statements in one text (the audit's). */
		r = n == 0 ? PQexec(c->db, sql)
			   : PQexecParams(c->db, sql, n, NULL, params, NULL,
					  NULL, 0);
		st = PQresultStatus(r);
		if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
			return r;
		if (PQstatus(c->db) == CONNECTION_OK)
			break; /* an error of the statement: not worth again */
		PQclear(r);
		r = NULL;
	}
	fprintf(stderr, "chaos: %s\n  %s", sql,
		c->db != NULL ? PQerrorMessage(c->db) : "no connection\n");
	PQclear(r);
	return NULL;
}

static PGresult *db_must(struct chaos *c, const char *sql, int n,
			 const char *const *params)
{
	PGresult *r = db_try(c, sql, n, params);

	if (r == NULL)
		die(c, "a query of the harness failed (above)");
	return r;
}

static int64_t val(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col)
		   ? 0
		   : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* The first column of the first row as an integer (0 when NULL). */
static int64_t db_i64(struct chaos *c, const char *sql, int n,
		      const char *const *params)
{
	PGresult *r = db_must(c, sql, n, params);
	int64_t v = PQntuples(r) > 0 ? val(r, 0, 0) : 0;

	PQclear(r);
	return v;
}

#define NOW_MS "(floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint"

struct lease {
	char holder[128];
	int64_t term;
	int held; /* expires_at > now */
};

/* 0, or -1 when the table cannot be read (PostgreSQL down). */
static int lease_get(struct chaos *c, struct lease *l, int quiet)
{
	PGresult *r;

	memset(l, 0, sizeof(*l));
	if (quiet) {
		/* A connection that is down is an answer here, not an error
		 * to print: made again by the next db_try. */
		if (c->db == NULL || PQstatus(c->db) != CONNECTION_OK)
			return -1;
	}
	r = db_try(c,
		   "SELECT holder, term, expires_at > " NOW_MS
		   " FROM lease WHERE id = 1",
		   0, NULL);
	if (r == NULL)
		return -1;
	if (PQntuples(r) == 1) {
		snprintf(l->holder, sizeof(l->holder), "%s",
			 PQgetvalue(r, 0, 0));
		l->term = val(r, 0, 1);
		l->held = PQgetvalue(r, 0, 2)[0] == 't' && l->holder[0] != '\0';
	}
	PQclear(r);
	return 0;
}

static int node_index(struct chaos *c, const char *id)
{
	for (int i = 0; i < c->o.nodes; i++)
		if (strcmp(c->nodes[i].id, id) == 0)
			return i;
	return -1;
}

/*
 * The audit: every change of a run's state, claim, node, finished_at or
 * error, every update of a run that was final, and every delete, with the
 * database's clock, the writer's session (application_name: each node
 * names its own) and transaction; and every change of the lease. AFTER
 * triggers: what a transaction that rolled back did is not recorded.
 */
static const char audit_sql[] =
    "CREATE TABLE chaos_audit("
    " seq BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, op TEXT NOT NULL,"
    " id BIGINT NOT NULL, job TEXT NOT NULL, scheduled_at BIGINT NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " old_state TEXT, new_state TEXT, old_claim BIGINT, new_claim BIGINT,"
    " old_node TEXT, new_node TEXT, old_finished BIGINT,"
    " new_finished BIGINT, old_error TEXT, new_error TEXT,"
    " app TEXT, xid BIGINT);"
    "CREATE FUNCTION chaos_audit() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    " IF TG_OP = 'DELETE' THEN"
    "  INSERT INTO chaos_audit(at, op, id, job, scheduled_at, attempt,"
    "   old_state, old_claim, old_node, old_finished, old_error, app, xid)"
    "  VALUES (" NOW_MS ", TG_OP, OLD.id, OLD.job, OLD.scheduled_at,"
    "   OLD.attempt, OLD.state, OLD.claim, OLD.node, OLD.finished_at,"
    "   OLD.error, current_setting('application_name'), txid_current());"
    "  RETURN OLD;"
    " END IF;"
    " INSERT INTO chaos_audit(at, op, id, job, scheduled_at, attempt,"
    "  old_state, new_state, old_claim, new_claim, old_node, new_node,"
    "  old_finished, new_finished, old_error, new_error, app, xid)"
    " VALUES (" NOW_MS ", TG_OP, NEW.id, NEW.job, NEW.scheduled_at,"
    "  NEW.attempt, OLD.state, NEW.state, OLD.claim, NEW.claim, OLD.node,"
    "  NEW.node, OLD.finished_at, NEW.finished_at, OLD.error, NEW.error,"
    "  current_setting('application_name'), txid_current());"
    " RETURN NEW;"
    "END $$;"
    "CREATE TRIGGER chaos_audit_update AFTER UPDATE ON runs FOR EACH ROW"
    " WHEN (OLD.state IN " FINAL_STATES
    "  OR OLD.state IS DISTINCT FROM NEW.state"
    "  OR OLD.claim IS DISTINCT FROM NEW.claim"
    "  OR OLD.node IS DISTINCT FROM NEW.node"
    "  OR OLD.finished_at IS DISTINCT FROM NEW.finished_at"
    "  OR OLD.error IS DISTINCT FROM NEW.error)"
    " EXECUTE FUNCTION chaos_audit();"
    "CREATE TRIGGER chaos_audit_delete AFTER DELETE ON runs FOR EACH ROW"
    " EXECUTE FUNCTION chaos_audit();"
    "CREATE TABLE chaos_lease("
    " seq BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL,"
    " old_holder TEXT, old_term BIGINT, new_holder TEXT, new_term BIGINT,"
    " app TEXT);"
    "CREATE FUNCTION chaos_lease() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    " IF TG_OP = 'INSERT' THEN"
    "  INSERT INTO chaos_lease(at, new_holder, new_term, app) VALUES"
    "   (" NOW_MS ", NEW.holder, NEW.term,"
    "   current_setting('application_name'));"
    " ELSIF OLD.holder IS DISTINCT FROM NEW.holder"
    "  OR OLD.term IS DISTINCT FROM NEW.term THEN"
    "  INSERT INTO chaos_lease(at, old_holder, old_term, new_holder,"
    "   new_term, app) VALUES (" NOW_MS ", OLD.holder, OLD.term,"
    "   NEW.holder, NEW.term, current_setting('application_name'));"
    " END IF;"
    " RETURN NEW;"
    "END $$;"
    "CREATE TRIGGER chaos_lease AFTER INSERT OR UPDATE ON lease"
    " FOR EACH ROW EXECUTE FUNCTION chaos_lease();";

/* ---- HTTP (HTTP/1.0: one request a connection, no chunks) --------------- */

/* The status, with the body in out; -1 when keeld did not answer. */
static int http(const struct node *n, const char *method, const char *path,
		const char *body, char *out, size_t outlen)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {10, 0};
	size_t blen = body != NULL ? strlen(body) : 0, got = 0;
	char head[512], *buf, *p;
	int fd, status = -1, hl;
	size_t cap = 1 << 20;

	if (outlen > 0)
		out[0] = '\0';
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	sa.sin_port = htons((uint16_t)n->p.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	hl = snprintf(head, sizeof(head),
		      "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
		      "Content-Type: application/json\r\n"
		      "Content-Length: %zu\r\n\r\n",
		      method, path, blen);
	if (hl < 0 || (size_t)hl >= sizeof(head) ||
	    send(fd, head, (size_t)hl, MSG_NOSIGNAL) != hl ||
	    (blen > 0 && send(fd, body, blen, MSG_NOSIGNAL) != (ssize_t)blen)) {
		close(fd);
		return -1;
	}
	buf = malloc(cap);
	if (buf == NULL) {
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t r = recv(fd, buf + got, cap - 1 - got, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (got += (size_t)r) == cap - 1)
			break;
	}
	close(fd);
	buf[got] = '\0';
	if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1)
		status = -1;
	p = strstr(buf, "\r\n\r\n");
	if (p != NULL && outlen > 0)
		snprintf(out, outlen, "%s", p + 4);
	free(buf);
	return status;
}

/* The string value of "key" in a flat JSON text, or "" (enough for the
 * few answers read here: no escapes in node ids). */
static void json_str(const char *json, const char *key, char *out, size_t len)
{
	char pat[64];
	const char *p, *e;

	out[0] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\"", key);
	p = strstr(json, pat);
	if (p == NULL)
		return;
	p += strlen(pat);
	p += strspn(p, " \t\r\n:");
	if (*p != '"')
		return;
	e = strchr(++p, '"');
	if (e != NULL)
		snprintf(out, len, "%.*s", (int)(e - p), p);
}

static int64_t json_int(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\"", key);
	p = strstr(json, pat);
	if (p == NULL)
		return -1;
	p += strlen(pat);
	p += strspn(p, " \t\r\n:");
	return strtoll(p, NULL, 10);
}

/* ---- nodes ----------------------------------------------------------------
 */

static void node_setup(struct chaos *c, int i)
{
	static char workers[16], rescue[32];
	struct node *n = &c->nodes[i];
	int a = 0;

	snprintf(n->id, sizeof(n->id), "n%d", i + 1);
	/* application_name: the audit says whose session wrote each row. */
	snprintf(n->url, sizeof(n->url),
		 "postgresql:///" DB_NAME
		 "?host=%s&port=%d&user=" PG_SERVER_USER "&application_name=%s",
		 c->pg.dir, c->pg.port, n->id);
	snprintf(workers, sizeof(workers), "%d", c->o.workers);
	snprintf(rescue, sizeof(rescue), "%dms",
		 (int)(c->o.rescue_after * 1000));
	keeld_proc_init(&n->p);
	n->args[a++] = "--store";
	n->args[a++] = n->url;
	n->args[a++] = "--node-id";
	n->args[a++] = n->id;
	n->args[a++] = "--demo";
	n->args[a++] = "--workers";
	n->args[a++] = workers;
	n->args[a++] = "--log-level";
	n->args[a++] = c->o.log_level;
	if (c->o.pass_rescue_after) {
		n->args[a++] = "--rescue-after";
		n->args[a++] = rescue;
	}
	if (i > 0) {
		n->args[a++] = "--tags";
		n->args[a++] = TAG;
	}
	n->args[a] = NULL;
}

/* Starts node i: 0, or -1 (its log's end printed) when it did not listen. */
static int node_start(struct chaos *c, int i)
{
	struct node *n = &c->nodes[i];
	int rc = keeld_proc_start(&n->p, n->args, 60);

	if (rc == 0) {
		n->up = 1;
		n->restart_at = 0;
		n->restart_fails = 0;
		return 0;
	}
	say(c, "%s did not start (%s, exit %d, signal %d)", n->id,
	    rc == -ECHILD ? "it exited" : "timed out", n->p.code, n->p.signo);
	keeld_proc_dump_log(&n->p);
	return -1;
}

/* A node that ended without our kill is a finding (check 7): recorded,
 * then restarted as if killed. */
static void nodes_reap(struct chaos *c)
{
	for (int i = 0; i < c->o.nodes; i++) {
		struct node *n = &c->nodes[i];
		int status;

		if (!n->up || waitpid(n->p.pid, &status, WNOHANG) != n->p.pid)
			continue;
		keeld_proc__reaped(&n->p, status);
		n->up = 0;
		n->self_exits++;
		n->killed_at = mono();
		n->restart_at = mono() + 1;
		say(c, "%s EXITED BY ITSELF (exit %d, signal %d): %s", n->id,
		    n->p.code, n->p.signo, n->p.log_path);
		keeld_proc_dump_log(&n->p);
	}
}

static int nodes_up(struct chaos *c)
{
	int up = 0;

	for (int i = 0; i < c->o.nodes; i++)
		up += c->nodes[i].up;
	return up;
}

/* ---- jobs ------------------------------------------------------------------
 */

/*
 * The job mix, by index: instant handler runs (most of the load), shell
 * runs of 2 s (what a kill orphans), runs that fail and are retried, runs
 * without retries, and runs only the tagged nodes may take. Every job
 * fires every second, runs every missed tick ("all") and overlapping ones
 * ("allow"), and keeps its whole history: each tick is one first attempt
 * to count.
 */
static const char *job_kind(int i)
{
	static const char *const kinds[] = {
	    "ok",    "ok",   "ok",   "ok",   "sleep",
	    "sleep", "fail", "true", "once", "tag",
	};

	return kinds[i % 10];
}

static void job_json(int i, char *out, size_t len)
{
	const char *kind = job_kind(i);
	const char *exec, *retry, *tags = "";

	if (strcmp(kind, "sleep") == 0) {
		exec = "{\"type\":\"shell\",\"command\":[\"/bin/sleep\",\"2\"],"
		       "\"timeout\":\"1m\"}";
		retry = "{\"max_attempts\":3,\"backoff\":\"constant\","
			"\"initial\":\"200ms\",\"max\":\"200ms\","
			"\"jitter\":false}";
	} else if (strcmp(kind, "fail") == 0) {
		exec = "{\"type\":\"handler\",\"name\":\"demo.fail\"}";
		retry = "{\"max_attempts\":2,\"backoff\":\"constant\","
			"\"initial\":\"100ms\",\"max\":\"100ms\","
			"\"jitter\":false}";
	} else if (strcmp(kind, "true") == 0) {
		exec = "{\"type\":\"shell\",\"command\":[\"/bin/true\"]}";
		retry = "{\"max_attempts\":1}";
	} else if (strcmp(kind, "once") == 0) {
		exec = "{\"type\":\"handler\",\"name\":\"demo.ok\"}";
		retry = "{\"max_attempts\":1}";
	} else {
		exec = "{\"type\":\"handler\",\"name\":\"demo.ok\"}";
		retry = "{\"max_attempts\":2,\"backoff\":\"constant\","
			"\"initial\":\"100ms\",\"max\":\"100ms\","
			"\"jitter\":false}";
		if (strcmp(kind, "tag") == 0)
			tags = ",\"tags\":[\"" TAG "\"]";
	}
	snprintf(out, len,
		 "{\"name\":\"%s-%04d\",\"schedule\":\"@every 1s\","
		 "\"executor\":%s,\"retry\":%s,\"concurrency\":\"allow\","
		 "\"missed\":\"all\",\"missed_max\":10000,"
		 "\"history\":{\"keep_runs\":1000000,\"keep_days\":36500}%s}",
		 kind, i, exec, retry, tags);
}

static void jobs_create(struct chaos *c)
{
	char body[1024], out[2048];

	for (int i = 0; i < c->o.jobs; i++) {
		int st;

		job_json(i, body, sizeof(body));
		st = http(&c->nodes[0], "POST", "/v1/jobs", body, out,
			  sizeof(out));
		if (st != 201)
			die(c, "POST /v1/jobs answered %d: %s\n  job: %s", st,
			    out, body);
	}
}

/* ---- the chaos --------------------------------------------------------------
 */

static int orphan_known(const struct chaos *c, int64_t id)
{
	for (size_t i = 0; i < c->n_kills; i++)
		for (size_t j = 0; j < c->kills[i].n_orphans; j++)
			if (c->kills[i].orphans[j] == id)
				return 1;
	return 0;
}

/*
 * The ids of node's running runs, right after its kill: nothing but a
 * rescue or its own restart changes them now. A node killed again right
 * after a restart may still have the runs of its previous life (its
 * recovery had not run yet): they count for the first kill only.
 */
static void orphans_take(struct chaos *c, struct kill *k)
{
	const char *p[] = {c->nodes[k->node].id};
	PGresult *r = db_must(c,
			      "SELECT id FROM runs WHERE node = $1 AND "
			      "state = 'running' ORDER BY id",
			      1, p);
	int n = PQntuples(r);

	k->orphans = calloc((size_t)n + 1, sizeof(*k->orphans));
	if (k->orphans == NULL)
		die(c, "out of memory");
	for (int i = 0; i < n; i++)
		if (!orphan_known(c, val(r, i, 0)))
			k->orphans[k->n_orphans++] = val(r, i, 0);
	PQclear(r);
}

/*
 * Kills the leader (want_leader) or a follower: 0, or -EAGAIN when no
 * node fits now (the leader unknown, or the kill would leave nobody up,
 * or nobody to take over).
 */
static int kill_one(struct chaos *c, int want_leader)
{
	struct lease l;
	int cand[MAX_NODES], nc = 0, leader, victim, up = nodes_up(c);
	struct kill *k;
	struct node *n;
	double delay, lo, hi;

	if (up < 2 || lease_get(c, &l, 0) != 0)
		return -EAGAIN;
	leader = l.held ? node_index(c, l.holder) : -1;
	if (l.held && leader < 0)
		die(c, "the lease is held by \"%s\", not one of our nodes",
		    l.holder);
	if (want_leader) {
		if (leader < 0 || !c->nodes[leader].up)
			return -EAGAIN;
		victim = leader;
	} else {
		for (int i = 0; i < c->o.nodes; i++)
			if (c->nodes[i].up && i != leader)
				cand[nc++] = i;
		if (nc == 0)
			return -EAGAIN;
		victim = cand[rnd(c) % (uint64_t)nc];
	}

	k = realloc(c->kills, (c->n_kills + 1) * sizeof(*k));
	if (k == NULL)
		die(c, "out of memory");
	c->kills = k;
	k = &c->kills[c->n_kills];
	memset(k, 0, sizeof(*k));
	n = &c->nodes[victim];
	k->node = victim;
	k->leader = victim == leader;
	k->term = l.term;
	k->failover = -1;
	k->at_ms = wall_ms();
	k->at = mono();
	if (keeld_proc_kill(&n->p) != 0)
		die(c, "kill %s: not running", n->id);
	n->up = 0;
	n->killed_at = k->at;
	orphans_take(c, k);

	/*
	 * Restarts by turns before and after rescue-after, both for leader
	 * and follower kills (kills alternate between them): kill 0, 1
	 * before, 2, 3 after, ... Before: the node's own recovery crashes its
	 * runs; after: the leader's rescue does.
	 */
	if ((c->n_kills / 2) % 2 == 0) {
		lo = 1;
		hi = c->o.rescue_after - 1;
	} else {
		lo = c->o.rescue_after + 1;
		hi = fmax(12, lo + 1);
	}
	delay = rnd_range(c, lo, fmax(lo, hi));
	n->restart_at = k->at + delay;
	say(c,
	    "kill %s (%s, term %" PRId64 "): %zu runs running on it; "
	    "restart planned in %.1f s",
	    n->id, k->leader ? "the leader" : "a follower", l.term,
	    k->n_orphans, delay);
	if (k->leader)
		c->pending = (int)c->n_kills;
	c->n_kills++;
	return 0;
}

/* Polls the lease for the pending leader kill's failover. */
static void failover_poll(struct chaos *c)
{
	struct kill *k = &c->kills[c->pending];
	struct lease l;
	double now = mono();

	if (lease_get(c, &l, 1) == 0 && l.held && l.term > k->term &&
	    strcmp(l.holder, c->nodes[k->node].id) != 0) {
		k->failover = now - k->at;
		say(c,
		    "failover: %s leads at term %" PRId64
		    ", %.2f s after the kill",
		    l.holder, l.term, k->failover);
		c->pending = -1;
	} else if (now - k->at > 30) {
		say(c,
		    "NO FAILOVER within 30 s of killing %s (lease: \"%s\" "
		    "term %" PRId64 ", %s)",
		    c->nodes[k->node].id, l.holder, l.term,
		    l.held ? "held" : "not held");
		c->pending = -1;
	}
}

static void restart_due(struct chaos *c)
{
	double now = mono();

	for (int i = 0; i < c->o.nodes; i++) {
		struct node *n = &c->nodes[i];
		double down;

		if (n->up || n->restart_at == 0 || now < n->restart_at)
			continue;
		down = now - n->killed_at;
		if (node_start(c, i) != 0) {
			if (++n->restart_fails >= 5)
				die(c, "%s did not start 5 times in a row",
				    n->id);
			n->restart_at = mono() + 1;
			continue;
		}
		c->restarts++;
		if (down < c->o.rescue_after)
			c->restarts_before++;
		else
			c->restarts_after++;
		say(c, "restart %s after %.1f s down (%s rescue-after)", n->id,
		    down, down < c->o.rescue_after ? "before" : "after");
	}
}

static void progress(struct chaos *c)
{
	PGresult *r = db_try(c,
			     "SELECT count(*), count(*) FILTER (WHERE state = "
			     "'queued'), count(*) FILTER (WHERE state = "
			     "'running') FROM runs",
			     0, NULL);
	struct lease l;

	if (r == NULL)
		return;
	lease_get(c, &l, 1);
	say(c,
	    "runs %" PRId64 " (queued %" PRId64 ", running %" PRId64
	    "); nodes up %d/%d; leader %s term %" PRId64,
	    val(r, 0, 0), val(r, 0, 1), val(r, 0, 2), nodes_up(c), c->o.nodes,
	    l.held ? l.holder : "(none)", l.term);
	PQclear(r);
}

/*
 * The chaos loop, one step every 25 ms. Kills alternate between the
 * leader and a follower at random intervals spread over the duration; a
 * failover being measured holds back restarts (a leader restarted before
 * another node took over renews its own lease, and there is no failover
 * to measure) and the database's stops; a database stop waits until the
 * last kill's rescue is over and holds kills back until it is over, so
 * that the times measured are those of a kill, not of an outage.
 */
static void chaos_run(struct chaos *c)
{
	double start = mono(), end = start + c->o.duration, next_kill,
	       next_stop, pg_back = 0, last_kill = 0, last_progress = start,
	       deferred = 0, quiet = c->o.rescue_after + 5;
	int kills = 0, stops = 0, pg_up = 1, want_leader = 1;

	next_kill =
	    start + rnd_range(c, 0.5, 1.5) * c->o.duration / (c->o.kills + 1);
	next_stop = start + c->o.duration * rnd_range(c, 0.3, 0.7) /
				(c->o.pg_stops > 0 ? c->o.pg_stops : 1);
	c->pending = -1;
	while (mono() < end || kills < c->o.kills || stops < c->o.pg_stops ||
	       !pg_up || c->pending >= 0) {
		double now = mono();
		int stop_due =
		    pg_up && stops < c->o.pg_stops && now >= next_stop;

		if (now > end + fmax(120, c->o.duration))
			die(c,
			    "the chaos did not end: %d of %d kills, %d of %d "
			    "PostgreSQL stops made",
			    kills, c->o.kills, stops, c->o.pg_stops);
		nodes_reap(c);
		if (!pg_up && now >= pg_back) {
			char why[2048];
			double t = mono();

			if (pg_server_launch(&c->pg, why, sizeof(why)) != 0)
				die(c, "PostgreSQL did not start again: %s",
				    why);
			pg_up = 1;
			c->stops[c->n_stops - 1] =
			    mono() - c->stops[c->n_stops - 1];
			say(c,
			    "PostgreSQL started again (down %.1f s, start "
			    "%.2f s)",
			    c->stops[c->n_stops - 1], mono() - t);
			/* The next kill: not in the outage's wake. */
			if (next_kill < mono() + 1)
				next_kill = mono() + 1;
		}
		if (pg_up && c->pending >= 0)
			failover_poll(c);
		if (pg_up && c->pending < 0)
			restart_due(c);
		if (stop_due && c->pending < 0 && now - last_kill >= quiet &&
		    c->n_stops <
			(int)(sizeof(c->stops) / sizeof(c->stops[0]))) {
			double down = rnd_range(c, 2, 6);

			pg_server_stop(&c->pg);
			c->stops[c->n_stops++] = mono();
			pg_up = 0;
			pg_back = mono() + down;
			stops++;
			say(c, "PostgreSQL stopped, for %.1f s", down);
			next_stop = mono() + down +
				    (end - mono()) * rnd_range(c, 0.3, 1.0) /
					(c->o.pg_stops - stops + 1);
		}
		if (pg_up && !stop_due && c->pending < 0 &&
		    kills < c->o.kills && now >= next_kill) {
			int rc = kill_one(c, want_leader);

			if (rc == 0) {
				kills++;
				want_leader = !want_leader;
				last_kill = mono();
				deferred = 0;
				next_kill =
				    mono() +
				    fmax(1.0, (end - mono()) /
						  (c->o.kills - kills + 1) *
						  rnd_range(c, 0.5, 1.5));
			} else {
				/* No leader to kill for 5 s (an election
				 * after the database came back): a
				 * follower now, the leader next time. */
				if (deferred == 0) {
					deferred = now;
				} else if (now - deferred > 5) {
					want_leader = !want_leader;
					deferred = 0;
				}
				next_kill = now + 0.2;
			}
		}
		if (pg_up && now - last_progress >= 10) {
			last_progress = now;
			progress(c);
		}
		pg_server_sleep_ms(25);
	}
}

/* ---- the end
 * ------------------------------------------------------------------ */

/* Every node up, a leader, the ticks caught up; then every job paused and
 * nothing left queued or running. 0, or -1 when it did not drain. */
static int chaos_end(struct chaos *c)
{
	struct lease l;
	double t, shown, best_at;
	int64_t best = -1;
	int next = 0;
	char out[4096], path[128];
	PGresult *r;

	/* Restarts as planned: the last kills' runs are rescued or
	 * recovered as the others were. */
	say(c,
	    "ending the chaos: %d of %d nodes up, the others restart as "
	    "planned",
	    nodes_up(c), c->o.nodes);
	while (nodes_up(c) < c->o.nodes) {
		restart_due(c);
		nodes_reap(c);
		sleep_s(0.05);
	}
	for (t = mono(); lease_get(c, &l, 1) != 0 || !l.held; sleep_s(0.1))
		if (mono() - t > 30)
			die(c, "no leader 30 s after every node is up");
	/* The leader catches up on ticks owed from the last outage. */
	for (t = mono();; sleep_s(0.2)) {
		int64_t behind = db_i64(c,
					"SELECT count(*) FROM jobs WHERE "
					"last_tick * 1000 < " NOW_MS " - 2000",
					0, NULL);

		if (behind == 0)
			break;
		if (mono() - t > 60) {
			printf("  %" PRId64 " jobs are over 2 s behind\n",
			       behind);
			break; /* check 1 says which */
		}
	}
	c->pause_ms = db_i64(c, "SELECT " NOW_MS, 0, NULL);
	say(c, "pausing %d jobs through every node's API by turns", c->o.jobs);
	r = db_must(c, "SELECT name FROM jobs ORDER BY name", 0, NULL);
	for (int i = 0; i < PQntuples(r); i++, next = (next + 1) % c->o.nodes) {
		int st;

		snprintf(path, sizeof(path), "/v1/jobs/%s/pause",
			 PQgetvalue(r, i, 0));
		st =
		    http(&c->nodes[next], "POST", path, NULL, out, sizeof(out));
		if (st != 200)
			die(c, "POST %s on %s answered %d: %s", path,
			    c->nodes[next].id, st, out);
	}
	PQclear(r);

	/* A backlog (more runs due than the machine runs) takes its time:
	 * only a drain that stops going down for 60 s is a failure. */
	for (t = mono(), shown = 0, best_at = t;; sleep_s(0.5)) {
		PGresult *q;
		int64_t queued, running;

		nodes_reap(c);
		restart_due(c);
		q = db_must(
		    c,
		    "SELECT count(*) FILTER (WHERE state = 'queued'),"
		    " count(*) FILTER (WHERE state = 'running') FROM runs",
		    0, NULL);
		queued = val(q, 0, 0);
		running = val(q, 0, 1);
		PQclear(q);
		if (queued + running == 0) {
			say(c, "drained in %.1f s", mono() - t);
			return 0;
		}
		if (best < 0 || queued + running < best) {
			best = queued + running;
			best_at = mono();
		}
		if (mono() - shown >= 5) {
			shown = mono();
			say(c,
			    "draining: %" PRId64 " queued, %" PRId64 " running",
			    queued, running);
		}
		if (mono() - best_at > 60) {
			say(c,
			    "NOT DRAINED: %" PRId64 " queued, %" PRId64
			    " running, none fewer for 60 s",
			    queued, running);
			return -1;
		}
	}
}

/* ---- checks
 * ----------------------------------------------------------------------- */

static void check_result(struct chaos *c, int num, const char *name, int ok,
			 const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void check_result(struct chaos *c, int num, const char *name, int ok,
			 const char *fmt, ...)
{
	va_list ap;

	printf("  %d. %-38s %s  ", num, name, ok ? "ok    " : "FAILED");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (!ok)
		c->failures++;
	if (c->ex_f != NULL) {
		fclose(c->ex_f);
		c->ex_f = NULL;
		fputs(c->ex, stdout);
		free(c->ex);
		c->ex = NULL;
	}
}

/* Keeps the rows of r as examples (one a line, column=value), printed
 * under the check's verdict. */
static void examples(struct chaos *c, PGresult *r, const char *what)
{
	int n = PQntuples(r);
	FILE *f;

	if (n == 0)
		return;
	if (c->ex_f == NULL &&
	    (c->ex_f = open_memstream(&c->ex, &c->ex_len)) == NULL)
		die(c, "out of memory");
	f = c->ex_f;
	fprintf(f, "       %s:\n", what);
	for (int i = 0; i < n; i++) {
		fprintf(f, "        ");
		for (int j = 0; j < PQnfields(r); j++)
			fprintf(f, " %s=%s", PQfname(r, j),
				PQgetisnull(r, i, j) ? "NULL"
						     : PQgetvalue(r, i, j));
		fputc('\n', f);
	}
}

/* count(*) of sql's rows, and its first 10 rows as examples. */
static int64_t count_and_show(struct chaos *c, const char *sql,
			      const char *what)
{
	char wrapped[8192];
	int64_t n;
	PGresult *r;

	snprintf(wrapped, sizeof(wrapped), "SELECT count(*) FROM (%s) q", sql);
	n = db_i64(c, wrapped, 0, NULL);
	if (n > 0) {
		snprintf(wrapped, sizeof(wrapped), "%s LIMIT 10", sql);
		r = db_must(c, wrapped, 0, NULL);
		examples(c, r, what);
		PQclear(r);
	}
	return n;
}

#define FIRSTS "attempt = 1 AND " TICK_ORIGIN

static void check_ticks(struct chaos *c)
{
	char sql[2048];
	int64_t ticks, gaps, dups, off, late, early, none, behind;

	ticks = db_i64(c, "SELECT count(*) FROM runs WHERE " FIRSTS, 0, NULL);
	none =
	    count_and_show(c,
			   "SELECT name FROM jobs j WHERE NOT EXISTS (SELECT "
			   "1 FROM runs r WHERE r.job = j.name AND r." FIRSTS
			   ") ORDER BY name",
			   "jobs without a tick");
	/* Every second from the first tick to the job's last_tick. */
	gaps = count_and_show(
	    c,
	    "WITH b AS (SELECT r.job, min(r.scheduled_at) lo, "
	    "max(j.last_tick) * 1000 hi FROM runs r JOIN jobs j ON "
	    "j.name = r.job WHERE r." FIRSTS " GROUP BY r.job) "
	    "SELECT b.job, g.t AS scheduled_at FROM b, "
	    "generate_series(b.lo, b.hi, 1000) g(t) WHERE NOT EXISTS "
	    "(SELECT 1 FROM runs r WHERE r.job = b.job AND "
	    "r.scheduled_at = g.t AND r." FIRSTS ") ORDER BY 2, 1",
	    "ticks without a run (gaps)");
	dups =
	    count_and_show(c,
			   "SELECT job, scheduled_at, count(*) AS runs, "
			   "string_agg(id::text, ',' ORDER BY id) AS ids "
			   "FROM runs WHERE " FIRSTS
			   " GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 2, 1",
			   "ticks with two first attempts");
	off = count_and_show(
	    c,
	    "SELECT job, scheduled_at, id FROM runs WHERE " FIRSTS
	    " AND scheduled_at % 1000 <> 0 ORDER BY id",
	    "ticks off the second");
	/* A run beyond last_tick: a tick stored without its job's state. */
	late = count_and_show(c,
			      "SELECT r.job, r.scheduled_at, r.id, j.last_tick "
			      "FROM runs r JOIN jobs j ON j.name = r.job WHERE "
			      "r." FIRSTS " AND r.scheduled_at > j.last_tick * "
			      "1000 ORDER BY r.id",
			      "runs after their job's last_tick");
	/* The first tick is the first second after the job was created. */
	early =
	    count_and_show(c,
			   "SELECT j.name, j.created_at, min(r.scheduled_at) "
			   "AS first_tick FROM jobs j JOIN runs r ON r.job = "
			   "j.name WHERE r." FIRSTS " GROUP BY j.name, "
			   "j.created_at HAVING min(r.scheduled_at) > "
			   "j.created_at + 2000 ORDER BY 1",
			   "jobs whose first ticks are missing");
	/* Ticks up to the pause were materialised: the last ones within
	 * PAUSE_SLACK_MS, a leader's pass on a loaded machine (under ASan
	 * a pass of 40 jobs was seen 2.1 s behind). */
	snprintf(sql, sizeof(sql),
		 "SELECT name, last_tick * 1000 AS last_tick_ms, "
		 "%" PRId64 " AS pause_ms FROM jobs WHERE last_tick * 1000 < "
		 "%" PRId64 " ORDER BY name",
		 c->pause_ms, c->pause_ms - PAUSE_SLACK_MS);
	behind =
	    count_and_show(c, sql, "jobs whose ticks stop before the pause");
	check_result(
	    c, 1, "every due tick ran exactly once",
	    ticks > 0 && gaps + dups + off + late + early + none + behind == 0,
	    "%" PRId64 " ticks of %d jobs; gaps %" PRId64 ", twice %" PRId64
	    ", first missing %" PRId64 ", stopped early %" PRId64,
	    ticks, c->o.jobs, gaps, dups, early + none, behind);
}

static void check_final(struct chaos *c)
{
	int64_t open = count_and_show(
	    c,
	    "SELECT id, job, scheduled_at, attempt, "
	    "state, node FROM runs WHERE state NOT IN " FINAL_STATES
	    " ORDER BY id",
	    "runs not final");
	PGresult *r = db_must(c,
			      "SELECT state, count(*) FROM runs GROUP BY 1 "
			      "ORDER BY 1",
			      0, NULL);
	char by[512] = "";
	size_t len = 0;

	for (int i = 0; i < PQntuples(r) && len < sizeof(by); i++)
		len += (size_t)snprintf(by + len, sizeof(by) - len, "%s%s %s",
					i ? ", " : "", PQgetvalue(r, i, 0),
					PQgetvalue(r, i, 1));
	PQclear(r);
	check_result(c, 2, "every run reached a final state", open == 0, "%s",
		     by);
}

static void check_stale(struct chaos *c)
{
	int64_t changed, moved, reclaimed, back, deleted, unrescued, audited,
	    rescued;

	audited = db_i64(c, "SELECT count(*) FROM chaos_audit", 0, NULL);
	rescued = db_i64(c,
			 "SELECT count(DISTINCT id) FROM chaos_audit WHERE "
			 "new_error LIKE 'rescued:%'",
			 0, NULL);
	/* A final run changed again: a result over a rescue, or twice. */
	changed = count_and_show(
	    c,
	    "SELECT seq, at, id, job, scheduled_at, attempt, old_state, "
	    "new_state, old_node, new_node, old_claim, new_claim, "
	    "old_finished, new_finished, new_error, app FROM chaos_audit "
	    "WHERE op = 'UPDATE' AND old_state IN " FINAL_STATES
	    " AND (old_state IS DISTINCT FROM new_state OR old_finished IS "
	    "DISTINCT FROM new_finished OR old_node IS DISTINCT FROM "
	    "new_node OR old_claim IS DISTINCT FROM new_claim OR old_error "
	    "IS DISTINCT FROM new_error) ORDER BY seq",
	    "final runs changed again");
	/* A result stored under another node than the one that ran it. */
	moved = count_and_show(
	    c,
	    "SELECT seq, at, id, job, scheduled_at, old_node, new_node, "
	    "new_state, app FROM chaos_audit WHERE op = 'UPDATE' AND "
	    "old_state = 'running' AND new_state IN " FINAL_STATES
	    " AND old_node IS DISTINCT FROM new_node ORDER BY seq",
	    "results stored under another node");
	/* A running run claimed again without becoming final first. */
	reclaimed = count_and_show(
	    c,
	    "SELECT seq, at, id, job, old_node, new_node, old_claim, "
	    "new_claim, app FROM chaos_audit WHERE op = 'UPDATE' AND "
	    "old_state = 'running' AND new_state = 'running' AND "
	    "(old_claim IS DISTINCT FROM new_claim OR old_node IS DISTINCT "
	    "FROM new_node) ORDER BY seq",
	    "running runs that changed hands");
	back = count_and_show(
	    c,
	    "SELECT seq, at, id, job, old_state, new_state, app FROM "
	    "chaos_audit WHERE op = 'UPDATE' AND old_state = 'running' AND "
	    "new_state = 'queued' ORDER BY seq",
	    "running runs put back to queued");
	deleted = count_and_show(c,
				 "SELECT seq, at, id, job, scheduled_at, "
				 "old_state, app FROM chaos_audit WHERE op = "
				 "'DELETE' ORDER BY seq",
				 "runs deleted");
	unrescued = count_and_show(
	    c,
	    "SELECT a.id, a.job, a.scheduled_at, r.state, r.error FROM "
	    "(SELECT DISTINCT id, job, scheduled_at FROM chaos_audit WHERE "
	    "new_error LIKE 'rescued:%') a LEFT JOIN runs r ON r.id = a.id "
	    "WHERE r.id IS NULL OR r.state <> 'crashed' OR r.error IS NULL "
	    "OR r.error NOT LIKE 'rescued:%' ORDER BY a.id",
	    "rescued runs that no longer say so");
	check_result(c, 3, "no result written by a stale claim",
		     changed + moved + reclaimed + back + deleted + unrescued ==
			 0,
		     "%" PRId64 " changes audited, %" PRId64
		     " runs rescued; final changed %" PRId64 ", moved %" PRId64
		     ", reclaimed %" PRId64 ", requeued %" PRId64
		     ", deleted %" PRId64 ", unrescued %" PRId64,
		     audited, rescued, changed, moved, reclaimed, back, deleted,
		     unrescued);
}

#define MAX_ATTEMPTS                                                           \
	"COALESCE((j.spec::jsonb -> 'retry' ->> 'max_attempts')::int, 1)"

static void check_retries(struct chaos *c)
{
	int64_t owed, missing, orphan, retried;

	owed = db_i64(c,
		      "SELECT count(*) FROM runs r JOIN jobs j ON j.name = "
		      "r.job WHERE r." TICK_ORIGIN " AND r.state IN ('failed',"
		      "'timed_out','crashed') AND r.attempt < " MAX_ATTEMPTS,
		      0, NULL);
	retried = db_i64(c, "SELECT count(*) FROM runs WHERE state = 'crashed'",
			 0, NULL);
	missing = count_and_show(
	    c,
	    "SELECT r.job, r.scheduled_at, r.id, r.attempt, r.state, "
	    "r.error FROM runs r JOIN jobs j ON j.name = r.job WHERE "
	    "r." TICK_ORIGIN " AND r.state IN ('failed','timed_out','crashed') "
	    "AND r.attempt < " MAX_ATTEMPTS " AND NOT EXISTS (SELECT 1 "
	    "FROM runs n WHERE n.job = r.job AND n.scheduled_at = "
	    "r.scheduled_at AND n.attempt = r.attempt + 1 AND n." TICK_ORIGIN
	    ") ORDER BY r.id",
	    "failed or crashed runs with attempts left and no retry");
	/* A retry whose previous attempt did not fail: a run twice. */
	orphan = count_and_show(
	    c,
	    "SELECT n.job, n.scheduled_at, n.id, n.attempt, p.id AS "
	    "prev_id, p.state AS prev_state FROM runs n LEFT JOIN runs p "
	    "ON p.job = n.job AND p.scheduled_at = n.scheduled_at AND "
	    "p.attempt = n.attempt - 1 AND p." TICK_ORIGIN
	    " WHERE n." TICK_ORIGIN
	    " AND n.attempt > 1 AND (p.id IS NULL OR p.state "
	    "NOT IN ('failed','timed_out','crashed')) ORDER BY n.id",
	    "retries without a failed attempt before them");
	check_result(c, 4, "every failed or crashed run retried",
		     missing + orphan == 0,
		     "%" PRId64 " with attempts left (%" PRId64
		     " crashed runs in all); no retry %" PRId64
		     ", retry without cause %" PRId64,
		     owed, retried, missing, orphan);
}

static void check_tags(struct chaos *c)
{
	int64_t runs, wrong;

	runs = db_i64(c,
		      "SELECT count(*) FROM runs WHERE job LIKE 'tag-%' AND "
		      "started_at > 0",
		      0, NULL);
	wrong = count_and_show(c,
			       "SELECT id, job, scheduled_at, node FROM runs "
			       "WHERE job LIKE 'tag-%' AND started_at > 0 AND "
			       "(node IS NULL OR node = 'n1') ORDER BY id",
			       "runs of tagged jobs on a node without the tag");
	check_result(c, 5, "tagged jobs only on tagged nodes",
		     wrong == 0 && (c->o.jobs < 10 || runs > 0),
		     "%" PRId64 " runs of \"" TAG
		     "\" jobs, on n1 (untagged) %" PRId64,
		     runs, wrong);
}

static void check_lease(struct chaos *c)
{
	size_t failovers = 0;
	int64_t changes = db_i64(c,
				 "SELECT count(*) FROM chaos_lease WHERE "
				 "new_holder <> ''",
				 0, NULL);
	int64_t bad = count_and_show(
	    c,
	    "SELECT seq, at, old_holder, old_term, new_holder, new_term, "
	    "app FROM chaos_lease WHERE new_term < old_term OR (new_holder "
	    "<> '' AND new_holder IS DISTINCT FROM old_holder AND new_term "
	    "<= old_term) ORDER BY seq",
	    "lease changes without a new term");

	/* The audit missed the first leader (it came before it), not the
	 * takeovers the harness saw. */
	for (size_t i = 0; i < c->n_kills; i++)
		failovers += c->kills[i].failover >= 0;
	check_result(c, 6, "a new term at every new leader",
		     bad == 0 && changes >= (int64_t)failovers,
		     "%" PRId64 " lease changes, %" PRId64
		     " without a new term",
		     changes, bad);
}

static void check_nodes(struct chaos *c)
{
	int exits = 0, agree = 0, st = 0, who = 0;
	char body[8192] = "", leader[128] = "", mode[32];
	struct lease l = {.term = 0};
	double t = mono();

	for (int i = 0; i < c->o.nodes; i++)
		exits += c->nodes[i].self_exits;
	/* Views follow the lease within a beat or two. */
	while (!agree && mono() - t < 10) {
		if (lease_get(c, &l, 0) != 0 || !l.held) {
			sleep_s(0.2);
			continue;
		}
		agree = 1;
		for (who = 0; who < c->o.nodes && agree; who++) {
			st = http(&c->nodes[who], "GET", "/v1/cluster", NULL,
				  body, sizeof(body));
			json_str(body, "leader", leader, sizeof(leader));
			json_str(body, "mode", mode, sizeof(mode));
			agree = st == 200 && strcmp(mode, "cluster") == 0 &&
				strcmp(leader, l.holder) == 0 &&
				json_int(body, "term") == l.term;
		}
		if (!agree)
			sleep_s(0.2);
	}
	check_result(
	    c, 7, "nodes alive, agreeing on the leader", exits == 0 && agree,
	    "%d exits without a kill; /v1/cluster: leader %s term %" PRId64
	    " on every node: %s",
	    exits, l.holder, l.term, agree ? "yes" : "NO");
	if (!agree)
		printf("       %s: GET /v1/cluster %d: %.300s\n",
		       c->nodes[who - 1].id, st, body);
}

/* ---- the figures
 * -------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank. */
static double pct(const double *v, size_t n, double p)
{
	size_t i = (size_t)ceil(p * (double)n);

	return v[i > 0 ? i - 1 : 0];
}

static void stats(const char *name, double *v, size_t n, double target)
{
	if (n == 0) {
		printf("  %-10s n=0\n", name);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	printf("  %-10s n=%-4zu p50 %5.2f s   p99 %5.2f s   max %5.2f s   "
	       "(target %.0f s: %s)\n",
	       name, n, pct(v, n, 0.5), pct(v, n, 0.99), v[n - 1], target,
	       v[n - 1] <= target ? "met" : "NOT met");
}

static void report(struct chaos *c)
{
	double *fo = calloc(c->n_kills + 1, sizeof(double));
	double *rs = NULL, *rc = NULL;
	size_t nfo = 0, nrs = 0, nrc = 0, nother = 0, norph = 0, leaders = 0,
	       nofail = 0;
	PGresult *r;

	for (size_t i = 0; i < c->n_kills; i++)
		norph += c->kills[i].n_orphans;
	rs = calloc(norph + 1, sizeof(double));
	rc = calloc(norph + 1, sizeof(double));
	if (fo == NULL || rs == NULL || rc == NULL)
		die(c, "out of memory");
	for (size_t i = 0; i < c->n_kills; i++) {
		struct kill *k = &c->kills[i];

		if (k->leader) {
			leaders++;
			if (k->failover >= 0)
				fo[nfo++] = k->failover;
			else
				nofail++;
		}
		for (size_t j = 0; j < k->n_orphans; j++) {
			char id[32];
			const char *p[] = {id};
			double dt;

			snprintf(id, sizeof(id), "%" PRId64, k->orphans[j]);
			r = db_must(c,
				    "SELECT state, error LIKE 'rescued:%', "
				    "finished_at FROM runs WHERE id = $1",
				    1, p);
			if (PQntuples(r) != 1 ||
			    strcmp(PQgetvalue(r, 0, 0), "crashed") != 0) {
				nother++;
			} else {
				dt = (double)(val(r, 0, 2) - k->at_ms) / 1000;
				if (PQgetvalue(r, 0, 1)[0] == 't')
					rs[nrs++] = dt;
				else
					rc[nrc++] = dt;
			}
			PQclear(r);
		}
	}
	printf("\nwhat the harness did\n");
	printf("  kills      %zu: %zu of the leader, %zu of a follower\n",
	       c->n_kills, leaders, c->n_kills - leaders);
	printf("  restarts   %d: %d before rescue-after (%.0f s), %d after\n",
	       c->restarts, c->restarts_before, c->o.rescue_after,
	       c->restarts_after);
	printf("  PG stops   %d:", c->n_stops);
	for (int i = 0; i < c->n_stops; i++)
		printf(" %.1f s", c->stops[i]);
	printf("\n\nwhat it measured\n");
	stats("failover", fo, nfo, 5);
	if (nofail > 0)
		printf("  failover   %zu leader kills WITHOUT a new leader "
		       "within 30 s\n",
		       nofail);
	stats("rescue", rs, nrs, 10);
	stats("recovery", rc, nrc, 10);
	printf("  (of the %zu runs running on a node at its kill: rescue, "
	       "crashed by the leader; recovery, by the node's own restart; "
	       "%zu ended otherwise: a write of the node's landed after the "
	       "kill)\n",
	       norph, nother);
	r = db_must(c,
		    "SELECT count(*), min(started_at), max(finished_at) FROM "
		    "runs WHERE started_at > 0 AND state IN ('succeeded',"
		    "'failed','timed_out','crashed')",
		    0, NULL);
	{
		int64_t n = val(r, 0, 0);
		double span = (double)(val(r, 0, 2) - val(r, 0, 1)) / 1000;

		printf("  runs       %" PRId64 " executed in %.0f s: %.1f/s\n",
		       n, span, span > 0 ? (double)n / span : 0);
	}
	PQclear(r);
	r = db_must(c,
		    "SELECT node, count(*) FROM runs WHERE started_at > 0 "
		    "GROUP BY 1 ORDER BY 1",
		    0, NULL);
	printf("  by node   ");
	for (int i = 0; i < PQntuples(r); i++)
		printf(" %s %s", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
	printf("\n");
	PQclear(r);
	free(fo);
	free(rs);
	free(rc);
}

/*
 * The checks of the database (1-6) on the database of an earlier run, kept
 * by a failure or --keep, after a look or a repair by hand. Pausing a job
 * sets its updated_at: the last one is the pause.
 */
static int check_only(struct chaos *c)
{
	snprintf(c->conninfo, sizeof(c->conninfo), "%s", c->o.check);
	c->o.jobs = (int)db_i64(c, "SELECT count(*) FROM jobs", 0, NULL);
	c->pause_ms = db_i64(c, "SELECT max(updated_at) FROM jobs", 0, NULL);
	printf("checks (from the database)\n");
	check_ticks(c);
	check_final(c);
	check_stale(c);
	check_retries(c);
	check_tags(c);
	check_lease(c);
	PQfinish(c->db);
	printf("chaos: %s\n", c->failures == 0 ? "passed" : "FAILED");
	return c->failures == 0 ? 0 : 1;
}

/* ---- start
 * ------------------------------------------------------------------------- */

static void usage(int code)
{
	fprintf(
	    code ? stderr : stdout,
	    "usage: keel-chaos [--nodes N] [--jobs N] [--kills N] "
	    "[--pg-stops N]\n"
	    "                  [--duration S] [--seed N] [--keeld PATH] "
	    "[--workers N]\n"
	    "                  [--rescue-after S] [--log-level L] [--keep]\n"
	    "       keel-chaos --check CONNINFO   (the checks only, on a "
	    "kept database)\n"
	    "defaults: 3 nodes, 300 jobs, 60 kills, 5 PostgreSQL stops, "
	    "duration 7 s a kill\n");
	exit(code);
}

static void opts_parse(struct opts *o, int argc, char **argv)
{
	static const struct option longs[] = {
	    {"nodes", required_argument, NULL, 'n'},
	    {"jobs", required_argument, NULL, 'j'},
	    {"kills", required_argument, NULL, 'k'},
	    {"pg-stops", required_argument, NULL, 'p'},
	    {"duration", required_argument, NULL, 'd'},
	    {"seed", required_argument, NULL, 's'},
	    {"keeld", required_argument, NULL, 'K'},
	    {"workers", required_argument, NULL, 'w'},
	    {"rescue-after", required_argument, NULL, 'r'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"keep", no_argument, NULL, 'x'},
	    {"check", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	*o = (struct opts){.nodes = 3,
			   .jobs = 300,
			   .kills = 60,
			   .pg_stops = 5,
			   .duration = -1,
			   .seed = (uint64_t)wall_ms() ^ (uint64_t)getpid(),
			   .workers = 64,
			   .rescue_after = 6,
			   .log_level = "info"};
	while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (ch) {
		case 'n':
			o->nodes = atoi(optarg);
			break;
		case 'j':
			o->jobs = atoi(optarg);
			break;
		case 'k':
			o->kills = atoi(optarg);
			break;
		case 'p':
			o->pg_stops = atoi(optarg);
			break;
		case 'd':
			o->duration = atof(optarg);
			break;
		case 's':
			o->seed = strtoull(optarg, NULL, 10);
			break;
		case 'K':
			o->keeld = optarg;
			break;
		case 'w':
			o->workers = atoi(optarg);
			break;
		case 'r':
			o->rescue_after = atof(optarg);
			o->pass_rescue_after = 1;
			break;
		case 'l':
			o->log_level = optarg;
			break;
		case 'x':
			o->keep = 1;
			break;
		case 'c':
			o->check = optarg;
			break;
		case 'h':
			usage(0);
			break;
		default:
			usage(2);
		}
	}
	if (optind != argc || o->nodes < 2 || o->nodes > MAX_NODES ||
	    o->jobs < 1 || o->jobs > 9999 || o->kills < 0 || o->pg_stops < 0 ||
	    o->pg_stops > 60 || o->workers < 1 || o->rescue_after < 2 ||
	    o->rescue_after > 60) {
		fprintf(stderr,
			"keel-chaos: 2..%d nodes, 1..9999 jobs, 0..60 "
			"PostgreSQL stops, rescue-after 2..60 s\n",
			MAX_NODES);
		usage(2);
	}
	if (o->duration < 0)
		o->duration = 7.0 * o->kills + 10;
}

static void db_create(struct chaos *c)
{
	char info[512];
	PGconn *admin;
	PGresult *r;

	pg_server_conninfo(&c->pg, "postgres", info, sizeof(info));
	admin = PQconnectdb(info);
	r = PQexec(admin, "CREATE DATABASE " DB_NAME);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die(c, "CREATE DATABASE: %s", PQerrorMessage(admin));
	PQclear(r);
	PQfinish(admin);
	pg_server_conninfo(&c->pg, DB_NAME, c->conninfo, sizeof(c->conninfo));
}

/* The first node migrates the schema (at its start, before it listens);
 * the audit goes on before any run exists. */
static void audit_install(struct chaos *c)
{
	double t = mono();
	PGresult *r;

	while (db_i64(c,
		      "SELECT count(*) FROM information_schema.columns WHERE "
		      "table_name = 'runs' AND column_name = 'claim'",
		      0, NULL) == 0) {
		if (mono() - t > 30)
			die(c,
			    "no runs table with a claim column 30 s after "
			    "%s started: is keeld in cluster mode?",
			    c->nodes[0].id);
		sleep_s(0.1);
	}
	r = db_must(c, audit_sql, 0, NULL);
	PQclear(r);
}

/* Waits until the cluster leads and runs jobs. */
static void warm_up(struct chaos *c)
{
	double t = mono();
	struct lease l;

	for (;;) {
		int64_t done = db_i64(c,
				      "SELECT count(*) FROM runs WHERE state = "
				      "'succeeded'",
				      0, NULL);

		if (lease_get(c, &l, 0) == 0 && l.held && done > 0)
			break;
		if (mono() - t > 30)
			die(c,
			    "30 s after the start: leader \"%s\" (%s), %" PRId64
			    " runs succeeded",
			    l.holder, l.held ? "held" : "not held", done);
		sleep_s(0.2);
	}
	say(c, "%s leads at term %" PRId64 "; runs are running", l.holder,
	    l.term);
}

int main(int argc, char **argv)
{
	struct chaos c = {.pending = -1};
	char why[2048];
	int rc, drained;

	setvbuf(stdout, NULL, _IOLBF, 0);
	opts_parse(&c.o, argc, argv);
	if (c.o.check != NULL)
		return check_only(&c);
	c.rng = c.o.seed;
	c.t0 = mono();
	if (c.o.keeld != NULL)
		setenv("KEELD_PATH", c.o.keeld, 1);
	printf("chaos: seed %" PRIu64 ", %d nodes, %d jobs, %d kills, %d "
	       "PostgreSQL stops, %.0f s of chaos, rescue-after %.0f s\n"
	       "chaos: keeld %s\n",
	       c.o.seed, c.o.nodes, c.o.jobs, c.o.kills, c.o.pg_stops,
	       c.o.duration, c.o.rescue_after, keeld_proc_binary());

	rc = pg_server_start(&c.pg, NULL, why, sizeof(why));
	if (rc == 1) {
		printf("chaos: skipped: %s\n", why);
		return 77;
	}
	if (rc != 0)
		die(&c, "PostgreSQL did not start: %s", why);
	say(&c, "PostgreSQL %d on %s", c.pg.version, c.pg.dir);
	db_create(&c);
	for (int i = 0; i < c.o.nodes; i++)
		node_setup(&c, i);
	if (node_start(&c, 0) != 0)
		die(&c, "%s did not start", c.nodes[0].id);
	audit_install(&c);
	for (int i = 1; i < c.o.nodes; i++)
		if (node_start(&c, i) != 0)
			die(&c, "%s did not start", c.nodes[i].id);
	say(&c, "%d nodes up; creating %d jobs", c.o.nodes, c.o.jobs);
	jobs_create(&c);
	warm_up(&c);

	chaos_run(&c);
	drained = chaos_end(&c);

	report(&c);
	printf("\nchecks (from the database)\n");
	check_ticks(&c);
	check_final(&c);
	check_stale(&c);
	check_retries(&c);
	check_tags(&c);
	check_lease(&c);
	check_nodes(&c);
	if (drained != 0 && c.failures == 0)
		c.failures++; /* check 2 says what is left */

	for (int i = 0; i < c.o.nodes; i++) {
		struct node *n = &c.nodes[i];

		if (n->up &&
		    (keeld_proc_stop(&n->p, 60) != 0 || n->p.code != 0))
			printf("  %s: graceful stop: exit %d, signal %d (%s)\n",
			       n->id, n->p.code, n->p.signo, n->p.log_path);
		n->up = 0;
	}
	PQfinish(c.db);
	c.db = NULL;
	if (c.failures > 0 || c.o.keep) {
		print_paths(&c);
		pg_server_stop(&c.pg);
	} else {
		for (int i = 0; i < c.o.nodes; i++)
			keeld_proc_cleanup(&c.nodes[i].p);
		pg_server_destroy(&c.pg);
	}
	for (size_t i = 0; i < c.n_kills; i++)
		free(c.kills[i].orphans);
	free(c.kills);
	printf("chaos: %s (seed %" PRIu64 ")\n",
	       c.failures == 0 ? "passed" : "FAILED", c.o.seed);
	return c.failures == 0 ? 0 : 1;
}
