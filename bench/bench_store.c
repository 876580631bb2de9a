/*
 * bench/bench_store.c - the ceiling of SQLite for keeld's per-run
 * transactions, and how close keel's store gets to it.
 *
 * A run is three transactions, as keeld makes them: materialise it
 * (queued), start it (running), finish it (succeeded). Cases:
 *
 *   sqlite_bare   sqlite3 alone, three one-statement transactions per run:
 *                 INSERT the queued run; UPDATE to running; UPDATE to final
 *   sqlite_same   sqlite3 alone, exactly the statements keel's store runs:
 *                 BEGIN IMMEDIATE, UPDATE jobs.last_tick, INSERT, COMMIT;
 *                 UPDATE to running; BEGIN IMMEDIATE, UPDATE to final,
 *                 COMMIT
 *   keel          keel_store_ticks, keel_store_run_start,
 *                 keel_store_run_finish
 *   keel_full     the same with sync_full (fsync at every commit)
 *
 * Every case works on a database of its own made by keel_store_sqlite_open
 * (same schema, indexes and foreign keys), in WAL mode, synchronous=NORMAL
 * but for keel_full, with prepared statements. The cases take turns: five
 * rounds of one timed run each (KEEL_BENCH_RUN_MS, default 150 ms) after a
 * warm-up run; each prints its best round as "<case> <runs/s>".
 * bench/run-store.sh turns this into the table.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include <keel/job.h>
#include <keel/store.h>

#include "bench_util.h"

static char tmpdir[] = "/tmp/keel-bench-store-XXXXXX";

#define TICK0 INT64_C(1800000000) /* s: far from any real tick */

static void die(const char *what, const char *why)
	__attribute__((noreturn));
static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench_store: %s: %s\n", what, why);
	exit(1);
}

/* A store in tmpdir/name with one job "bench": the schema every case uses. */
static struct keel_store *make_store(const char *name, int sync_full,
				     char *dir, size_t len)
{
	static const char spec[] =
		"{\"name\": \"bench\", \"schedule\": \"@every 1s\", "
		"\"executor\": {\"type\": \"shell\", \"command\": [\"true\"]}}";
	struct keel_store_config cfg;
	struct keel_store *st;
	struct keel_job *j = NULL;
	char err[512] = "";
	json_t *v;

	snprintf(dir, len, "%s/%s", tmpdir, name);
	keel_store_config_init(&cfg);
	cfg.sync_full = sync_full;
	if (keel_store_sqlite_open(dir, &cfg, &st, err, sizeof(err)) != 0)
		die("open", err);
	v = json_loads(spec, 0, NULL);
	if (v == NULL)
		die("job", "bad JSON");
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		die("job", err);
	json_decref(v);
	if (keel_store_job_put(st, j, TICK0, NULL) != 0)
		die("job_put", keel_store_errmsg(st));
	keel_job_free(j);
	return st;
}

/* ------------------------------------------------------------------------
 * SQLite alone
 * ------------------------------------------------------------------------ */

enum { B_BEGIN, B_COMMIT, B_TICK, B_INSERT, B_START, B_FINISH, B_N };

static const char *const bare_sql[B_N] = {
	[B_BEGIN] = "BEGIN IMMEDIATE",
	[B_COMMIT] = "COMMIT",
	[B_TICK] = "UPDATE jobs SET last_tick = max(last_tick, ?2) "
		   "WHERE name = ?1",
	[B_INSERT] = "INSERT INTO runs(job, state, trigger, origin, attempt, "
		     "scheduled_at, created_at, not_before, started_at, "
		     "finished_at, exit_code, signal, http_status, error, "
		     "output, trace_id, node) VALUES(?1, 'queued', 'schedule', "
		     "'schedule', 1, ?2, ?3, 0, 0, 0, -1, 0, 0, NULL, NULL, "
		     "?4, NULL)",
	[B_START] = "UPDATE runs SET state = 'running', started_at = ?2, "
		    "node = ?3 WHERE id = ?1 AND state = 'queued'",
	[B_FINISH] = "UPDATE runs SET state = ?2, finished_at = ?3, "
		     "exit_code = ?4, signal = ?5, http_status = ?6, "
		     "error = ?7, output = ?8 WHERE id = ?1 AND "
		     "state IN ('queued', 'running')",
};

struct bare {
	sqlite3 *db;
	sqlite3_stmt *q[B_N];
	int same; /* the store's statements, not the minimum */
};

static void bare_open(struct bare *b, const char *dir, int same)
{
	char path[256];
	int i;

	memset(b, 0, sizeof(*b));
	b->same = same;
	snprintf(path, sizeof(path), "%s/keeld.db", dir);
	if (sqlite3_open_v2(path, &b->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK)
		die("sqlite3_open", sqlite3_errmsg(b->db));
	sqlite3_busy_timeout(b->db, 5000);
	if (sqlite3_exec(b->db,
			 "PRAGMA journal_mode = WAL; PRAGMA synchronous = "
			 "NORMAL; PRAGMA foreign_keys = ON;",
			 NULL, NULL, NULL) != SQLITE_OK)
		die("pragmas", sqlite3_errmsg(b->db));
	for (i = 0; i < B_N; i++)
		if (sqlite3_prepare_v3(b->db, bare_sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &b->q[i],
				       NULL) != SQLITE_OK)
			die("prepare", sqlite3_errmsg(b->db));
}

static void bare_close(struct bare *b)
{
	for (int i = 0; i < B_N; i++)
		sqlite3_finalize(b->q[i]);
	sqlite3_close(b->db);
}

static void step(struct bare *b, int i)
{
	int rc = sqlite3_step(b->q[i]);

	if (rc != SQLITE_DONE)
		die(bare_sql[i], sqlite3_errmsg(b->db));
	sqlite3_reset(b->q[i]);
}

static void bare_run(void *ctx, int64_t i)
{
	static const char trace[] = "4bf92f3577b34da6a3ce929d0e0e4736";
	struct bare *b = ctx;
	int64_t tick = TICK0 + 1 + i, id;

	if (b->same) {
		step(b, B_BEGIN);
		sqlite3_bind_text(b->q[B_TICK], 1, "bench", -1, SQLITE_STATIC);
		sqlite3_bind_int64(b->q[B_TICK], 2, tick);
		step(b, B_TICK);
	}
	sqlite3_bind_text(b->q[B_INSERT], 1, "bench", -1, SQLITE_STATIC);
	sqlite3_bind_int64(b->q[B_INSERT], 2, tick * 1000);
	sqlite3_bind_int64(b->q[B_INSERT], 3, tick * 1000 + 1);
	sqlite3_bind_text(b->q[B_INSERT], 4, trace, -1, SQLITE_STATIC);
	step(b, B_INSERT);
	if (b->same)
		step(b, B_COMMIT);
	id = sqlite3_last_insert_rowid(b->db);

	sqlite3_bind_int64(b->q[B_START], 1, id);
	sqlite3_bind_int64(b->q[B_START], 2, tick * 1000 + 2);
	sqlite3_bind_null(b->q[B_START], 3);
	step(b, B_START);

	if (b->same)
		step(b, B_BEGIN);
	sqlite3_bind_int64(b->q[B_FINISH], 1, id);
	sqlite3_bind_text(b->q[B_FINISH], 2, "succeeded", -1, SQLITE_STATIC);
	sqlite3_bind_int64(b->q[B_FINISH], 3, tick * 1000 + 3);
	sqlite3_bind_int(b->q[B_FINISH], 4, 0);
	sqlite3_bind_int(b->q[B_FINISH], 5, 0);
	sqlite3_bind_int(b->q[B_FINISH], 6, 0);
	sqlite3_bind_null(b->q[B_FINISH], 7);
	sqlite3_bind_null(b->q[B_FINISH], 8);
	step(b, B_FINISH);
	if (b->same)
		step(b, B_COMMIT);
	if (sqlite3_changes(b->db) != 1)
		die("finish", "no row changed");
}

/* ------------------------------------------------------------------------
 * keel's store
 * ------------------------------------------------------------------------ */

static void keel_run(void *ctx, int64_t i)
{
	struct keel_store *st = ctx;
	int64_t tick = TICK0 + 1 + i;
	struct keel_run r;
	struct keel_store_tick t;

	memset(&r, 0, sizeof(r));
	r.state = KEEL_RUN_QUEUED;
	r.trigger = KEEL_RUN_SCHEDULE;
	r.attempt = 1;
	r.scheduled_at = tick * 1000;
	r.created_at = tick * 1000 + 1;
	r.exit_code = -1;
	memcpy(r.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", 33);
	t.job = "bench";
	t.last_tick = tick;
	t.runs = &r;
	t.n_runs = 1;
	if (keel_store_ticks(st, &t, 1) != 0)
		die("ticks", keel_store_errmsg(st));
	if (keel_store_run_start(st, r.id, tick * 1000 + 2, NULL) != 0)
		die("run_start", keel_store_errmsg(st));
	r.state = KEEL_RUN_SUCCEEDED;
	r.finished_at = tick * 1000 + 3;
	r.exit_code = 0;
	if (keel_store_run_finish(st, &r, NULL) != 0)
		die("run_finish", keel_store_errmsg(st));
}

/* ------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------ */

struct bcase {
	const char *name;
	void (*run)(void *ctx, int64_t i);
	void *ctx;
	int64_t next; /* runs made so far: the next tick */
	double best;  /* runs/s */
};

/* Runs for run_ns; runs/s. */
static double timed(struct bcase *c, double run_ns)
{
	double t0 = bench_now_ns(), t;
	int64_t n = 0;

	do {
		c->run(c->ctx, c->next++);
		n++;
		t = bench_now_ns() - t0;
	} while (t < run_ns);
	return (double)n / (t / 1e9);
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(int argc, char **argv)
{
	double run_ns = bench_run_ms() * 1e6;
	struct keel_store *st_bare, *st_same, *st_keel, *st_full;
	struct bare bare, same;
	struct bcase cases[4];
	char dir[256];
	size_t i, nc = 0;
	int any = 0;

	if (mkdtemp(tmpdir) == NULL) {
		perror("bench_store: mkdtemp");
		return 1;
	}
	/* The bare cases' databases are made by the store, then used by
	 * SQLite alone (the store closed: nothing else holds them). */
	st_bare = make_store("bare", 0, dir, sizeof(dir));
	keel_store_close(st_bare);
	bare_open(&bare, dir, 0);
	st_same = make_store("same", 0, dir, sizeof(dir));
	keel_store_close(st_same);
	bare_open(&same, dir, 1);
	st_keel = make_store("keel", 0, dir, sizeof(dir));
	st_full = make_store("keel_full", 1, dir, sizeof(dir));

	cases[nc++] = (struct bcase){ "sqlite_bare", bare_run, &bare, 0, 0 };
	cases[nc++] = (struct bcase){ "sqlite_same", bare_run, &same, 0, 0 };
	cases[nc++] = (struct bcase){ "keel", keel_run, st_keel, 0, 0 };
	cases[nc++] = (struct bcase){ "keel_full", keel_run, st_full, 0, 0 };
	for (i = 0; i < nc; i++)
		if (bench_selected(argc, argv, cases[i].name))
			(void)timed(&cases[i], run_ns); /* warm-up */
	/* Turns, so that a neighbour's burst of I/O hits every case. */
	for (int round = 0; round < 5; round++)
		for (i = 0; i < nc; i++) {
			double v;

			if (!bench_selected(argc, argv, cases[i].name))
				continue;
			v = timed(&cases[i], run_ns);
			if (v > cases[i].best)
				cases[i].best = v;
		}
	for (i = 0; i < nc; i++) {
		if (!bench_selected(argc, argv, cases[i].name))
			continue;
		printf("%s %.0f\n", cases[i].name, cases[i].best);
		any = 1;
	}
	bare_close(&bare);
	bare_close(&same);
	keel_store_close(st_keel);
	keel_store_close(st_full);
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (!any) {
		fprintf(stderr, "bench_store: no such case\n");
		return 2;
	}
	return 0;
}
