/*
 * tests/cmd/test_keeld_crash.c - keeld is crash-only: it is killed with
 * SIGKILL at random moments, many times, with runs in flight, and started
 * again on the same data directory. Then, reading the database itself:
 *
 *   - it is intact (PRAGMA integrity_check);
 *   - every tick of every job, from the job's first to its last, has
 *     exactly one first attempt (ran, or recorded as skipped per the
 *     job's policy): none lost, none twice;
 *   - every run that was running when keeld died is "crashed", and is
 *     followed by its next attempt when the job's retry policy allows one;
 *   - after the final, graceful stop nothing is left "running".
 *
 * KEEL_CRASH_KILLS sets the number of kills (default 25).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel_test.h"
#include "keeld_proc.h"

static const char jobs_json[] =
	"{\"jobs\": ["
	/* every tick runs, even those keeld was down for */
	"{\"name\":\"tick\",\"schedule\":\"@every 1s\","
	" \"executor\":{\"type\":\"shell\",\"command\":[\"/bin/true\"]},"
	" \"missed\":\"all\",\"missed_max\":10000,\"concurrency\":\"allow\"},"
	/* often running when killed: crashed, then retried */
	"{\"name\":\"slow\",\"schedule\":\"@every 1s\","
	" \"executor\":{\"type\":\"shell\",\"command\":[\"/bin/sleep\",\"0.6\"]},"
	" \"retry\":{\"max_attempts\":3,\"backoff\":\"constant\","
	"   \"initial\":\"100ms\",\"max\":\"100ms\"},"
	" \"missed\":\"all\",\"missed_max\":10000,\"concurrency\":\"allow\"},"
	/* in-process */
	"{\"name\":\"hand\",\"schedule\":\"@every 1s\","
	" \"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"},"
	" \"missed\":\"once\"},"
	/* forbid: overlapping ticks are recorded as skipped */
	"{\"name\":\"long\",\"schedule\":\"@every 1s\","
	" \"executor\":{\"type\":\"shell\",\"command\":[\"/bin/sleep\",\"1.5\"]},"
	" \"concurrency\":\"forbid\",\"missed\":\"skip\"}"
	"]}";

static sqlite3 *db_open(const struct keeld_proc *k)
{
	char path[PATH_MAX + 16];
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/keeld.db", k->data_dir);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		KEEL_TEST_FAIL("open %s: %s", path, sqlite3_errmsg(db));
	return db;
}

static int64_t q_int(sqlite3 *db, const char *sql, const char *arg)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		KEEL_TEST_FAIL("%s: %s", sql, sqlite3_errmsg(db));
	if (arg != NULL)
		sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void check_ticks(sqlite3 *db, const char *job)
{
	int64_t first = q_int(db,
			      "SELECT min(scheduled_at) FROM runs WHERE job = ?1 "
			      "AND attempt = 1 AND origin IN ('schedule','missed')",
			      job);
	int64_t last = q_int(db,
			     "SELECT max(scheduled_at) FROM runs WHERE job = ?1 "
			     "AND attempt = 1 AND origin IN ('schedule','missed')",
			     job);
	int64_t n = q_int(db,
			  "SELECT count(*) FROM runs WHERE job = ?1 "
			  "AND attempt = 1 AND origin IN ('schedule','missed')",
			  job);
	int64_t distinct = q_int(db,
				 "SELECT count(DISTINCT scheduled_at) FROM runs "
				 "WHERE job = ?1 AND attempt = 1 AND "
				 "origin IN ('schedule','missed')",
				 job);

	printf("  %-5s ticks %lld (%lld .. %lld)\n", job, (long long)n,
	       (long long)first, (long long)last);
	CHECK(n > 10);
	CHECK_INT(distinct, ==, n);			 /* none twice */
	CHECK_INT((last - first) / 1000 + 1, ==, n); /* none lost */
}

TEST(sigkill_at_random_moments)
{
	struct keeld_proc k;
	const char *env = getenv("KEEL_CRASH_KILLS");
	int kills = env != NULL ? atoi(env) : 25;
	const char *args[] = { "--demo", "--jobs", NULL, "--drain-timeout",
			       "20s", "--log-level", "warn", NULL };
	char jobs[PATH_MAX];
	unsigned seed = (unsigned)time(NULL);
	sqlite3 *db;
	int64_t crashed, unretried, running, queued, total;

	printf("  seed %u, %d kills\n", seed, kills);
	srand(seed);
	keeld_proc_init(&k);
	keeld_proc_write_file(&k, "jobs.json", jobs_json, jobs, sizeof(jobs));
	args[2] = jobs;
	for (int i = 0; i < kills; i++) {
		keeld_proc_start_ok(&k, args);
		/* 0.2 .. 1.7 s: mid-tick, mid-run, mid-transaction */
		usleep(200000 + (unsigned)(rand() % 1500) * 1000);
		CHECK_INT(keeld_proc_kill(&k), ==, 0);
		CHECK_INT(k.signo, ==, SIGKILL);
	}
	/* A last life, then a graceful stop. */
	keeld_proc_start_ok(&k, args);
	sleep(3);
	if (keeld_proc_stop(&k, 60) != 0 || k.code != 0) {
		keeld_proc_dump_log(&k);
		KEEL_TEST_FAIL("graceful stop: exit %d, signal %d", k.code, k.signo);
	}

	db = db_open(&k);
	{
		sqlite3_stmt *st;

		CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1,
					     &st, NULL), ==, SQLITE_OK);
		CHECK_INT(sqlite3_step(st), ==, SQLITE_ROW);
		CHECK_STR((const char *)sqlite3_column_text(st, 0), "ok");
		sqlite3_finalize(st);
	}
	check_ticks(db, "tick");
	check_ticks(db, "slow");
	check_ticks(db, "hand");
	check_ticks(db, "long");
	total = q_int(db, "SELECT count(*) FROM runs", NULL);
	running = q_int(db, "SELECT count(*) FROM runs WHERE state = 'running'", NULL);
	queued = q_int(db, "SELECT count(*) FROM runs WHERE state = 'queued'", NULL);
	crashed = q_int(db, "SELECT count(*) FROM runs WHERE state = 'crashed'", NULL);
	/* A crashed attempt of "slow" (3 attempts) below the last one must
	 * have its successor. */
	unretried = q_int(db,
			  "SELECT count(*) FROM runs r WHERE r.job = 'slow' AND "
			  "r.state = 'crashed' AND r.attempt < 3 AND NOT EXISTS "
			  "(SELECT 1 FROM runs n WHERE n.job = r.job AND "
			  "n.scheduled_at = r.scheduled_at AND "
			  "n.attempt = r.attempt + 1)",
			  NULL);
	printf("  runs %lld: crashed %lld, queued at the end %lld\n",
	       (long long)total, (long long)crashed, (long long)queued);
	CHECK_INT(running, ==, 0);
	CHECK(crashed > 0); /* the kills did hit runs in flight */
	CHECK_INT(unretried, ==, 0);
	/* Only what became due during the final drain may wait. */
	CHECK(queued <= 8);
	sqlite3_close(db);
	keeld_proc_cleanup(&k);
}
