/*
 * tests/sched/test_sched.c - the scheduler (keel/sched.h) on a real SQLite
 * store with in-process handlers: ticks become runs exactly once, retries
 * follow the job's policy, a panicking handler fails its run only, the
 * concurrency policies (forbid, replace, allow), the missed-tick policies
 * (skip, once, all, bounded by missed_max), recovery of runs left running
 * by a dead keeld, run now, cancel, pause, resume, delete, and a restart
 * over the same store that creates no tick twice. test_sched_cluster.c
 * runs them all again on the cluster's code path, with cases of its own
 * at the end.
 */
/* KEEL_TEST_LABELS: threads */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>
#include <sqlite3.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/exec.h>
#include <keel/job.h>
#include <keel/log.h>
#include <keel/metrics.h>
#include <keel/panic.h>
#include <keel/sched.h>
#include <keel/store.h>
#include "keel_test.h"

#define SEC KEEL_SEC

struct env {
	char dir[128];
	char spool[160];      /* "" = none */
	int64_t busy_timeout; /* 0 = the store's default */
	struct keel_store *st;
	struct keel_executor *ex;
	struct keel_sched *s;
	struct keel_logger *log;
};

static int calls_ok;

static int h_ok(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	__atomic_add_fetch(&calls_ok, 1, __ATOMIC_RELAXED);
	return 0;
}

static int h_fail(struct keel_exec_call *call, void *ud)
{
	(void)ud;
	snprintf(call->error, call->errlen, "failed attempt %d", call->attempt);
	return 1;
}

static int h_panic(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	keel_panic("handler exploded");
}

/* Runs until canceled or 3 s pass. */
static int h_slow(struct keel_exec_call *call, void *ud)
{
	int64_t end = keel_clock_now(NULL) + 3 * SEC;

	(void)ud;
	while (keel_clock_now(NULL) < end) {
		if (keel_cancel_err(call->cancel) != 0)
			return 1;
		usleep(5000);
	}
	return 0;
}

/* Runs until gate_open is set (or canceled). */
static int gate_open;

static int h_gate(struct keel_exec_call *call, void *ud)
{
	(void)ud;
	while (!__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE)) {
		if (keel_cancel_err(call->cancel) != 0)
			return 1;
		usleep(2000);
	}
	return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void env_open(struct env *e)
{
	struct keel_store_config stc;
	struct keel_exec_config ec;
	struct keel_log_config lc;
	char err[512];

	keel_log_config_init(&lc);
	lc.level = KEEL_LOG_OFF;
	CHECK_INT(keel_log_new(&lc, &e->log), ==, 0);
	keel_exec_config_init(&ec);
	ec.log = e->log;
	CHECK_INT(keel_exec_new(&ec, &e->ex), ==, 0);
	CHECK_INT(keel_exec_handler_register(e->ex, "ok", h_ok, NULL), ==, 0);
	CHECK_INT(keel_exec_handler_register(e->ex, "fail", h_fail, NULL), ==, 0);
	CHECK_INT(keel_exec_handler_register(e->ex, "panic", h_panic, NULL), ==, 0);
	CHECK_INT(keel_exec_handler_register(e->ex, "slow", h_slow, NULL), ==, 0);
	CHECK_INT(keel_exec_handler_register(e->ex, "gate", h_gate, NULL), ==, 0);
	keel_store_config_init(&stc);
	if (e->busy_timeout > 0)
		stc.busy_timeout = e->busy_timeout;
	if (keel_store_sqlite_open(e->dir, &stc, &e->st, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("store: %s", err);
}

static void sched_open(struct env *e)
{
	struct keel_sched_config sc;
	char err[512];

	keel_sched_config_init(&sc);
	sc.store = e->st;
	sc.exec = e->ex;
	sc.log = e->log;
	sc.node = "test-node";
	sc.workers = 4;
	sc.spool = e->spool[0] != '\0' ? e->spool : NULL;
#ifdef TEST_SCHED_CLUSTER
	/* The cluster's code path (lease, beats, claims, rescue) alone on
	 * SQLite, with short timings. */
	sc.cluster = 1;
	sc.heartbeat = 50 * KEEL_MSEC;
	sc.lease_ttl = 200 * KEEL_MSEC;
	sc.rescue_after = 300 * KEEL_MSEC;
#endif
	if (keel_sched_new(&sc, &e->s, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("sched: %s", err);
}

static void env_new(struct env *e)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e->dir) != NULL);
	env_open(e);
	sched_open(e);
}

static void env_close(struct env *e, int remove_dir)
{
	keel_sched_free(e->s);
	e->s = NULL;
	keel_store_close(e->st);
	e->st = NULL;
	keel_exec_free(e->ex);
	e->ex = NULL;
	keel_log_free(e->log);
	e->log = NULL;
	if (remove_dir)
		nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static struct keel_job *job(const char *text)
{
	json_error_t je;
	json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	struct keel_job *j = NULL;
	char err[KEEL_JOB_ERR_MAX];

	if (v == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s", je.text);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("bad test job: %s", err);
	json_decref(v);
	return j;
}

static void put(struct env *e, const char *text)
{
	struct keel_job *j = job(text);
	char err[512];

	if (keel_sched_job_put(e->s, j, NULL, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("put: %s", err);
	keel_job_free(j);
}

/* Every run of a job, oldest first. */
static size_t runs_of(struct env *e, const char *name, struct keel_run **out)
{
	struct keel_store_run_query q;
	struct keel_run *r = NULL;
	size_t n = 0;

	memset(&q, 0, sizeof(q));
	q.job = name;
	q.limit = 1000;
	q.state = -1;
	q.with_output = 1;
	CHECK_INT(keel_store_run_list(e->st, &q, &r, &n), ==, 0);
	for (size_t i = 0; i < n / 2; i++) {
		struct keel_run t = r[i];

		r[i] = r[n - 1 - i];
		r[n - 1 - i] = t;
	}
	*out = r;
	return n;
}

static size_t count_state(struct keel_run *r, size_t n, enum keel_run_state s)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += r[i].state == s;
	return c;
}

/* Waits until the job has at least n final runs. */
static void wait_final(struct env *e, const char *name, size_t n,
		       int64_t timeout)
{
	int64_t end = keel_clock_now(NULL) + timeout;

	for (;;) {
		struct keel_run *r;
		size_t k = runs_of(e, name, &r), fin = 0;

		for (size_t i = 0; i < k; i++)
			fin += keel_run_state_final(r[i].state);
		keel_store_runs_free(r, k);
		if (fin >= n)
			return;
		if (keel_clock_now(NULL) > end)
			KEEL_TEST_FAIL("job %s: %zu of %zu runs final", name, fin, n);
		usleep(20000);
	}
}

/* Starts the scheduler with job g (a handler that runs until gate_open
 * is set) and waits until its one run is running. */
static void start_gated_run(struct env *e)
{
	int64_t t0;
	struct keel_run *r;
	size_t n;

	gate_open = 0;
	put(e, "{\"name\":\"g\",\"schedule\":\"@manual\","
	       "\"executor\":{\"type\":\"handler\",\"name\":\"gate\"}}");
	CHECK_INT(keel_sched_start(e->s), ==, 0);
	CHECK_INT(keel_sched_run_now(e->s, "g", NULL), ==, 0);
	t0 = keel_clock_now(NULL);
	for (;;) {
		n = runs_of(e, "g", &r);
		if (n == 1 && r[0].state == KEEL_RUN_RUNNING)
			break;
		keel_store_runs_free(r, n);
		CHECK(keel_clock_now(NULL) - t0 < 5 * SEC);
		usleep(10000);
	}
	keel_store_runs_free(r, n);
}

/* With the scheduler started: waits for the job's two runs, of which the
 * first crashed and the second, its retry, succeeded; returns them in *out
 * (oldest first; keel_store_runs_free(*out, 2)). */
static void wait_crashed_then_retried(struct env *e, const char *name,
				      struct keel_run **out)
{
	struct keel_run *r;
	size_t n;

	wait_final(e, name, 2, 10 * SEC);
	CHECK_INT(keel_sched_idle_wait(e->s, 5 * SEC), ==, 0);
	n = runs_of(e, name, &r);
	CHECK_INT(n, ==, 2);
	CHECK_STR(keel_run_state_name(r[0].state), "crashed");
	CHECK_STR(keel_run_state_name(r[1].state), "succeeded");
	CHECK_INT(r[1].attempt, ==, 2);
	*out = r;
}

TEST(every_second_ticks_once_each)
{
	struct env e;
	struct keel_run *r;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"tick\",\"schedule\":\"@every 1s\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_final(&e, "tick", 3, 10 * SEC);
	CHECK_INT(keel_sched_stop(e.s, 5 * SEC), ==, 0);
	n = runs_of(&e, "tick", &r);
	CHECK(n >= 3);
	for (size_t i = 0; i < n; i++) {
		CHECK_STR(keel_run_state_name(r[i].state), "succeeded");
		CHECK_INT(r[i].attempt, ==, 1);
		CHECK_STR(keel_run_trigger_name(r[i].trigger), "schedule");
		CHECK_INT(strlen(r[i].trace_id), ==, 32);
		CHECK_STR(r[i].node, "test-node");
		CHECK(r[i].started_at >= r[i].scheduled_at);
		CHECK(r[i].finished_at >= r[i].started_at);
		if (i > 0) /* one second apart, none twice */
			CHECK_INT(r[i].scheduled_at - r[i - 1].scheduled_at, ==, 1000);
	}
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

TEST(failed_run_retried_per_policy)
{
	struct env e;
	struct keel_run *r, *rn;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"f\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"fail\"},"
		"\"retry\":{\"max_attempts\":3,\"backoff\":\"constant\","
		"\"initial\":\"50ms\",\"max\":\"50ms\",\"jitter\":false}}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	rn = calloc(1, sizeof(*rn));
	CHECK_INT(keel_sched_run_now(e.s, "f", rn), ==, 0);
	CHECK_STR(keel_run_trigger_name(rn->trigger), "manual");
	wait_final(&e, "f", 3, 10 * SEC);
	CHECK_INT(keel_sched_idle_wait(e.s, 5 * SEC), ==, 0);
	n = runs_of(&e, "f", &r);
	CHECK_INT(n, ==, 3);
	for (size_t i = 0; i < n; i++) {
		CHECK_STR(keel_run_state_name(r[i].state), "failed");
		CHECK_INT(r[i].attempt, ==, (int)i + 1);
		CHECK_STR(r[i].trace_id, rn->trace_id); /* one trace */
		CHECK_INT(r[i].scheduled_at, ==, rn->scheduled_at);
		CHECK(r[i].error != NULL);
	}
	CHECK_STR(r[2].error, "failed attempt 3");
	CHECK_STR(keel_run_trigger_name(r[1].trigger), "retry");
	CHECK(r[1].started_at - r[0].finished_at >= 50);
	keel_store_runs_free(r, n);
	keel_run_free(rn);
	env_close(&e, 1);
}

TEST(panicking_handler_fails_its_run_only)
{
	struct env e;
	struct keel_run *r;
	struct keel_sched_stats st;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"p\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"panic\"}}");
	put(&e, "{\"name\":\"o\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	for (int i = 0; i < 5; i++) {
		CHECK_INT(keel_sched_run_now(e.s, "p", NULL), ==, 0);
		CHECK_INT(keel_sched_run_now(e.s, "o", NULL), ==, 0);
	}
	wait_final(&e, "p", 5, 10 * SEC);
	wait_final(&e, "o", 5, 10 * SEC);
	CHECK_INT(keel_sched_idle_wait(e.s, 5 * SEC), ==, 0);
	n = runs_of(&e, "p", &r);
	CHECK_INT(count_state(r, n, KEEL_RUN_FAILED), ==, 5);
	CHECK_CONTAINS(r[0].error, "handler exploded");
	keel_store_runs_free(r, n);
	n = runs_of(&e, "o", &r);
	CHECK_INT(count_state(r, n, KEEL_RUN_SUCCEEDED), ==, 5);
	keel_store_runs_free(r, n);
	keel_sched_stats(e.s, &st);
	CHECK_INT(st.panics, ==, 5);
	env_close(&e, 1);
}

TEST(forbid_skips_ticks_while_running)
{
	struct env e;
	struct keel_run *r;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"s\",\"schedule\":\"@every 1s\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"slow\"},"
		"\"concurrency\":\"forbid\"}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_final(&e, "s", 3, 15 * SEC); /* first run 3 s: >= 2 skipped */
	keel_sched_stop(e.s, 5 * SEC);
	n = runs_of(&e, "s", &r);
	CHECK(count_state(r, n, KEEL_RUN_SKIPPED) >= 2);
	for (size_t i = 0; i < n; i++)
		if (r[i].state == KEEL_RUN_SKIPPED)
			CHECK_CONTAINS(r[i].error, "forbid");
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

TEST(replace_cancels_the_running_one)
{
	struct env e;
	struct keel_run *r;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"r\",\"schedule\":\"@every 1s\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"slow\"},"
		"\"concurrency\":\"replace\"}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_final(&e, "r", 2, 15 * SEC);
	keel_sched_stop(e.s, 5 * SEC);
	n = runs_of(&e, "r", &r);
	CHECK(count_state(r, n, KEEL_RUN_CANCELED) >= 1);
	CHECK_INT(count_state(r, n, KEEL_RUN_SKIPPED), ==, 0);
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

/* A job whose last_tick is `ago` seconds in the past, as if keeld had been
 * down that long. */
static void put_old(struct env *e, const char *text, int64_t ago)
{
	struct keel_job *j = job(text);

	CHECK_INT(keel_store_job_put(e->st, j, time(NULL) - ago, NULL), ==, 0);
	keel_job_free(j);
}

static void missed_case(const char *policy, int missed_max, size_t want_rows,
			size_t want_queued)
{
	struct env e;
	struct keel_run *r;
	char text[512];
	size_t n;

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	env_open(&e);
	snprintf(text, sizeof(text),
		 "{\"name\":\"m\",\"schedule\":\"@every 10s\",\"missed\":\"%s\","
		 "\"missed_max\":%d,"
		 "\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}",
		 policy, missed_max);
	/* @every runs on multiples of the interval from the epoch: with
	 * last_tick 100 s before the latest multiple of 10, ten ticks are
	 * owed, of which the newest (2-7 s old) is on time and nine are
	 * missed (late by more than the default 10 s). */
	while (time(NULL) % 10 < 2 || time(NULL) % 10 > 7)
		usleep(100000);
	put_old(&e, text, time(NULL) - (time(NULL) / 10 * 10 - 100));
	sched_open(&e);
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_final(&e, "m", want_rows + 1, 10 * SEC);
	CHECK_INT(keel_sched_idle_wait(e.s, 5 * SEC), ==, 0);
	n = runs_of(&e, "m", &r);
	{
		size_t missed = 0, queued = 0;

		for (size_t i = 0; i < n; i++) {
			if (r[i].trigger != KEEL_RUN_MISSED)
				continue;
			missed++;
			queued += r[i].state == KEEL_RUN_SUCCEEDED;
		}
		CHECK_INT(missed, ==, want_rows);
		CHECK_INT(queued, ==, want_queued);
	}
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

TEST(missed_skip_records_each_tick)
{
	missed_case("skip", 100, 9, 0);
}

TEST(missed_once_runs_the_newest)
{
	missed_case("once", 100, 9, 1);
}

TEST(missed_all_runs_each_bounded)
{
	missed_case("all", 100, 9, 9);
	missed_case("all", 4, 4, 4);
}

TEST(restart_recovers_running_runs_and_ticks_once)
{
	struct env e;
	struct keel_run *r, run;
	size_t n;
	int64_t id;

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	env_open(&e);
	put_old(&e,
		"{\"name\":\"c\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"ok\"},"
		"\"retry\":{\"max_attempts\":2,\"initial\":\"10ms\"}}",
		0);
	/* A run left running by a keeld that died. */
	memset(&run, 0, sizeof(run));
	run.job = strdup("c");
	run.state = KEEL_RUN_QUEUED;
	run.trigger = KEEL_RUN_MANUAL;
	run.attempt = 1;
	run.scheduled_at = run.created_at = (int64_t)time(NULL) * 1000;
	run.exit_code = -1;
	CHECK_INT(keel_store_run_insert(e.st, &run), ==, 0);
	id = run.id;
	CHECK_INT(keel_store_run_start(e.st, id, run.created_at, "dead"), ==, 0);
	keel_run_clear(&run);
	sched_open(&e);
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_crashed_then_retried(&e, "c", &r);
	CHECK_INT(r[0].id, ==, id);
	keel_store_runs_free(r, 2);
	keel_sched_free(e.s);
	e.s = NULL;

	/* Ticks: stop and start again over the same store: no tick twice. */
	sched_open(&e);
	put(&e, "{\"name\":\"t\",\"schedule\":\"@every 1s\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_final(&e, "t", 2, 10 * SEC);
	keel_sched_free(e.s);
	e.s = NULL;
	sched_open(&e);
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	n = runs_of(&e, "t", &r);
	keel_store_runs_free(r, n);
	wait_final(&e, "t", n + 2, 10 * SEC);
	keel_sched_stop(e.s, 5 * SEC);
	n = runs_of(&e, "t", &r);
	for (size_t i = 1; i < n; i++)
		CHECK_INT(r[i].scheduled_at - r[i - 1].scheduled_at, ==, 1000);
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

TEST(pause_resume_cancel_delete)
{
	struct env e;
	struct keel_run *r, now;
	int64_t next;
	int active;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"x\",\"schedule\":\"*/1 * * * * *\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"slow\"},"
		"\"concurrency\":\"allow\"}");
	CHECK_INT(keel_sched_job_state(e.s, "x", &next, &active), ==, 0);
	CHECK(next > 0);
	CHECK_INT(keel_sched_job_pause(e.s, "x", 1), ==, 0);
	CHECK_INT(keel_sched_job_state(e.s, "x", &next, &active), ==, 0);
	CHECK(next == INT64_MIN); /* KEEL_CRON_NEVER */
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	usleep(1500000);
	n = runs_of(&e, "x", &r);
	CHECK_INT(n, ==, 0); /* paused: nothing ticked */
	keel_store_runs_free(r, n);

	/* Run now works while paused; cancel it while it runs. */
	memset(&now, 0, sizeof(now));
	CHECK_INT(keel_sched_run_now(e.s, "x", &now), ==, 0);
	for (int i = 0; i < 200; i++) {
		struct keel_run g;

		CHECK_INT(keel_store_run_get(e.st, now.id, &g), ==, 0);
		active = g.state == KEEL_RUN_RUNNING;
		keel_run_clear(&g);
		if (active)
			break;
		usleep(10000);
	}
	CHECK_INT(keel_sched_run_cancel(e.s, now.id), ==, 0);
	wait_final(&e, "x", 1, 5 * SEC);
	n = runs_of(&e, "x", &r);
	CHECK_STR(keel_run_state_name(r[0].state), "canceled");
	keel_store_runs_free(r, n);
	CHECK_INT(keel_sched_run_cancel(e.s, now.id), ==, -EALREADY);
	keel_run_clear(&now);

	CHECK_INT(keel_sched_job_pause(e.s, "x", 0), ==, 0);
	wait_final(&e, "x", 1, 5 * SEC);
	usleep(1500000); /* resumed: ticks again */
	n = runs_of(&e, "x", &r);
	CHECK(n >= 2);
	keel_store_runs_free(r, n);
	CHECK_INT(keel_sched_job_delete(e.s, "x"), ==, 0);
	CHECK_INT(keel_sched_job_delete(e.s, "x"), ==, -ENOENT);
	CHECK_INT(keel_sched_run_now(e.s, "x", NULL), ==, -ENOENT);
	CHECK_INT(keel_sched_idle_wait(e.s, 10 * SEC), ==, 0);
	n = runs_of(&e, "x", &r);
	CHECK_INT(n, ==, 0);
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

TEST(unknown_handler_refused)
{
	struct env e;
	struct keel_job *j;
	char err[512] = "";

	env_new(&e);
	j = job("{\"name\":\"u\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"nope\"}}");
	CHECK_INT(keel_sched_job_put(e.s, j, NULL, err, sizeof(err)), ==, -EINVAL);
	CHECK_CONTAINS(err, "nope");
	keel_job_free(j);
	CHECK_INT(keel_sched_job_state(e.s, "u", NULL, NULL), ==, -ENOENT);
	env_close(&e, 1);
}

/* A port nothing listens on: bound, then closed. */
static int closed_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &len), ==, 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

TEST(metrics_runs_panics_breakers)
{
	struct keel_metrics_config mc;
	struct keel_sched_config sc;
	struct keel_metrics *m;
	struct env e;
	char text[512], want[160], err[512], *buf;
	int port = closed_port();

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	env_open(&e);
	keel_metrics_config_init(&mc);
	CHECK_INT(keel_metrics_new(&mc, &m), ==, 0);
	keel_sched_config_init(&sc);
	sc.store = e.st;
	sc.exec = e.ex;
	sc.log = e.log;
	sc.metrics = m;
	if (keel_sched_new(&sc, &e.s, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("sched: %s", err);
	snprintf(text, sizeof(text),
		 "{\"name\":\"down\",\"schedule\":\"@manual\","
		 "\"concurrency\":\"allow\",\"executor\":{\"type\":\"http\","
		 "\"url\":\"http://127.0.0.1:%d/\",\"timeout\":\"2s\"}}",
		 port);
	put(&e, text);
	put(&e, "{\"name\":\"p\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"panic\"}}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	for (int i = 0; i < 6; i++) /* 5 refusals open the breaker */
		CHECK_INT(keel_sched_run_now(e.s, "down", NULL), ==, 0);
	CHECK_INT(keel_sched_run_now(e.s, "p", NULL), ==, 0);
	wait_final(&e, "down", 6, 20 * SEC);
	wait_final(&e, "p", 1, 10 * SEC);
	CHECK_INT(keel_sched_idle_wait(e.s, 10 * SEC), ==, 0);
	CHECK_INT(keel_metrics_render(m, &buf, NULL), ==, 0);
	snprintf(want, sizeof(want),
		 "keeld_breaker_state{host=\"http://127.0.0.1:%d\",state=\"open\"} 1",
		 port);
	CHECK_CONTAINS(buf, want);
	CHECK_CONTAINS(buf, "keeld_runs_total{job=\"down\",state=\"failed\"} 6");
	CHECK_CONTAINS(buf, "keeld_runs_total{job=\"p\",state=\"failed\"} 1");
	CHECK_CONTAINS(buf, "keeld_panics_recovered_total 1");
	CHECK_CONTAINS(buf, "keel_pool_tasks_submitted_total{pool=\"keeld-run\"} 7");
	CHECK_CONTAINS(buf, "keeld_queue_depth 0");
	free(buf);
	env_close(&e, 1);
	keel_metrics_free(m);
}

/* Two schedulers on one store (two keelds pointed at one database by
 * mistake): a tick the other stored is refused (-EEXIST) and skipped, the
 * other jobs go on ticking, and no tick runs twice. */
TEST(second_scheduler_on_the_store_ticks_nothing_twice)
{
	struct keel_sched_config sc;
	struct keel_sched *s2;
	struct env e;
	struct keel_run *r;
	char err[512];
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"t\",\"schedule\":\"@every 1s\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}");
	keel_sched_config_init(&sc);
	sc.store = e.st;
	sc.exec = e.ex;
	sc.log = e.log;
	sc.node = "other";
	sc.workers = 2;
	if (keel_sched_new(&sc, &s2, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("sched: %s", err);
	/* The second ticks while the first, loaded before, waits: the
	 * first's idea of last_tick is then stale, its first ticks are
	 * refused, and it must take the store's and go on. */
	CHECK_INT(keel_sched_start(s2), ==, 0);
	wait_final(&e, "t", 3, 15 * SEC);
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	usleep(1500000); /* both tick */
	keel_sched_free(s2);
	n = runs_of(&e, "t", &r);
	wait_final(&e, "t", n + 2, 10 * SEC); /* the first ticks alone */
	keel_sched_stop(e.s, 5 * SEC);
	keel_store_runs_free(r, n);
	n = runs_of(&e, "t", &r);
	for (size_t i = 0; i < n; i++) {
		CHECK_STR(keel_run_state_name(r[i].state), "succeeded");
		if (i > 0)
			CHECK_INT(r[i].scheduled_at - r[i - 1].scheduled_at, ==, 1000);
	}
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

#ifdef TEST_SCHED_CLUSTER
/* Claims the oldest due run of the store for node, as another keeld
 * would, and never beats it; returns its id. */
static int64_t claim_as(struct env *e, const char *node)
{
	struct keel_run *r = NULL;
	size_t n = 0;
	int64_t id;

	CHECK_INT(keel_store_claim(e->st, node, NULL, 0, 1, &r, &n), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK_STR(keel_run_state_name(r[0].state), "running");
	CHECK(r[0].claim != 0);
	id = r[0].id;
	keel_store_runs_free(r, n);
	return id;
}

/* A queued manual run of job, straight into the store. */
static void queue_run(struct env *e, const char *job)
{
	struct keel_run r;
	int64_t now = (int64_t)time(NULL) * 1000;

	memset(&r, 0, sizeof(r));
	r.job = (char *)job;
	r.state = KEEL_RUN_QUEUED;
	r.trigger = KEEL_RUN_MANUAL;
	r.attempt = 1;
	r.scheduled_at = now;
	r.created_at = now;
	r.exit_code = -1;
	CHECK_INT(keel_store_run_insert(e->st, &r), ==, 0);
}

/* Job j, manual, one retry at once; one run of it queued. */
static void put_queued_j(struct env *e)
{
	put(e, "{\"name\":\"j\",\"schedule\":\"@manual\","
	       "\"executor\":{\"type\":\"handler\",\"name\":\"ok\"},"
	       "\"retry\":{\"max_attempts\":2,\"initial\":\"1ms\","
	       "\"jitter\":false}}");
	queue_run(e, "j");
}

TEST(leader_rescues_a_silent_nodes_run_and_retries_it)
{
	struct env e;
	struct keel_sched_cluster ci;
	struct keel_run *r;
	int64_t id;

	env_new(&e);
	put_queued_j(&e);
	id = claim_as(&e, "ghost");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_crashed_then_retried(&e, "j", &r);
	CHECK_INT(r[0].id, ==, id);
	CHECK_STR(r[0].node, "ghost");
	CHECK_STR(r[0].error, "rescued: node ghost stopped beating");
	CHECK_INT(r[0].claim, ==, 0);
	CHECK_STR(r[1].node, "test-node");
	keel_store_runs_free(r, 2);
	keel_sched_cluster_info(e.s, &ci);
	CHECK_INT(ci.cluster, ==, 1);
	CHECK_INT(ci.leader, ==, 1);
	CHECK_STR(ci.holder, "test-node");
	CHECK(ci.term >= 1);
	CHECK(ci.elected >= 1);
	CHECK_INT(ci.rescued, ==, 1);
	CHECK(ci.beat_at > 0);
	env_close(&e, 1);
}

TEST(own_runs_of_a_previous_life_recovered_before_claiming)
{
	struct env e;
	struct keel_run *r;

	env_new(&e);
	put_queued_j(&e);
	(void)claim_as(&e, "test-node"); /* this node, before it died */
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	wait_crashed_then_retried(&e, "j", &r);
	CHECK(r[0].error == NULL || strncmp(r[0].error, "rescued", 7) != 0);
	keel_store_runs_free(r, 2);
	env_close(&e, 1);
}

/* A second scheduler given a live node's id (a keeld started twice with
 * one --node-id) finds the node's heartbeat moving before its own first
 * beat and does nothing: it does not take the node's row, does not lead,
 * and, above all, does not recover the live node's running run as
 * crashed (it would run twice). Once the first is gone, the same id
 * starts as usual. */
TEST(a_live_nodes_id_is_refused_to_a_second_scheduler)
{
	struct env e;
	struct keel_sched *first, *twin;
	struct keel_sched_cluster ci;
	struct keel_sched_stats ss;
	struct keel_run *r;
	int64_t t0;
	size_t n;

	env_new(&e);
	start_gated_run(&e);
	first = e.s;

	sched_open(&e); /* the same config: node "test-node" */
	twin = e.s;
	CHECK_INT(keel_sched_start(twin), ==, 0);
	t0 = keel_clock_now(NULL);
	for (;;) {
		keel_sched_cluster_info(twin, &ci);
		if (ci.node_conflict)
			break;
		CHECK(keel_clock_now(NULL) - t0 < 5 * SEC);
		usleep(10000);
	}
	CHECK_INT(ci.beat_at, ==, 0);
	CHECK_INT(ci.leader, ==, 0);
	CHECK_INT(ci.elected, ==, 0);
	/* Long enough for a recovery or a rescue to have happened. */
	usleep(600 * 1000);
	n = runs_of(&e, "g", &r);
	CHECK_INT(n, ==, 1);
	CHECK_STR(keel_run_state_name(r[0].state), "running");
	keel_store_runs_free(r, n);
	keel_sched_stats(twin, &ss);
	CHECK_INT(ss.started, ==, 0);
	keel_sched_cluster_info(first, &ci);
	CHECK_INT(ci.node_conflict, ==, 0);
	CHECK_INT(ci.leader, ==, 1);
	keel_sched_free(twin);

	/* The first one's run ends as it would have. */
	__atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
	e.s = first;
	wait_final(&e, "g", 1, 5 * SEC);
	n = runs_of(&e, "g", &r);
	CHECK_STR(keel_run_state_name(r[0].state), "succeeded");
	keel_store_runs_free(r, n);

	/* Gone (its row stays, and stops moving): the id is free again. */
	CHECK_INT(keel_sched_stop(first, 5 * SEC), ==, 0);
	keel_sched_free(first);
	sched_open(&e);
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	t0 = keel_clock_now(NULL);
	for (;;) {
		keel_sched_cluster_info(e.s, &ci);
		CHECK_INT(ci.node_conflict, ==, 0);
		if (ci.beat_at > 0 && ci.leader)
			break;
		CHECK(keel_clock_now(NULL) - t0 < 5 * SEC);
		usleep(10000);
	}
	env_close(&e, 1);
}

TEST(run_canceled_elsewhere_is_stopped_and_its_result_refused)
{
	struct env e;
	struct keel_sched_cluster ci;
	struct keel_run *r, run;
	int64_t t0;
	size_t n;

	env_new(&e);
	put(&e, "{\"name\":\"s\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"slow\"}}");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	CHECK_INT(keel_sched_run_now(e.s, "s", NULL), ==, 0);
	t0 = keel_clock_now(NULL);
	for (;;) { /* running, here */
		n = runs_of(&e, "s", &r);
		if (n == 1 && r[0].state == KEEL_RUN_RUNNING)
			break;
		keel_store_runs_free(r, n);
		CHECK(keel_clock_now(NULL) - t0 < 5 * SEC);
		usleep(10000);
	}
	CHECK(r[0].claim != 0);
	/* Another node's API cancels it: no claim check. */
	run = r[0];
	run.state = KEEL_RUN_CANCELED;
	run.finished_at = run.started_at + 1;
	run.claim = 0;
	run.error = (char *)"canceled through another node";
	CHECK_INT(keel_store_run_finish(e.st, &run, NULL), ==, 0);
	keel_store_runs_free(r, n);
	/* The handler would run 3 s; the next beat stops it. */
	CHECK_INT(keel_sched_idle_wait(e.s, 2 * SEC), ==, 0);
	keel_sched_cluster_info(e.s, &ci);
	CHECK_INT(ci.lost, ==, 1);
	n = runs_of(&e, "s", &r);
	CHECK_INT(n, ==, 1);
	CHECK_STR(keel_run_state_name(r[0].state), "canceled");
	CHECK_STR(r[0].error, "canceled through another node");
	keel_store_runs_free(r, n);
	env_close(&e, 1);
}

TEST(api_cancel_of_a_run_on_another_node)
{
	struct env e;
	struct keel_run got;
	int64_t id;

	env_new(&e);
	put(&e, "{\"name\":\"j\",\"schedule\":\"@manual\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}");
	queue_run(&e, "j");
	id = claim_as(&e, "elsewhere");
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	CHECK_INT(keel_sched_run_cancel(e.s, id), ==, 0);
	CHECK_INT(keel_store_run_get(e.st, id, &got), ==, 0);
	CHECK_STR(keel_run_state_name(got.state), "canceled");
	CHECK_STR(got.error, "canceled through the API");
	keel_run_clear(&got);
	CHECK_INT(keel_sched_run_cancel(e.s, id), ==, -EALREADY);
	env_close(&e, 1);
}

TEST(bad_cluster_settings_refused)
{
	struct env e;
	struct keel_sched_config sc;
	struct keel_sched *s = NULL;
	const char *tags[] = { "" };
	char err[256];

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	env_open(&e);
	keel_sched_config_init(&sc);
	sc.store = e.st;
	sc.exec = e.ex;
	sc.log = e.log;
	sc.cluster = 1;
	sc.lease_ttl = sc.heartbeat; /* less than two heartbeats */
	CHECK_INT(keel_sched_new(&sc, &s, err, sizeof(err)), ==, -EINVAL);
	CHECK_CONTAINS(err, "lease ttl must be at least two heartbeats");
	keel_sched_config_init(&sc);
	sc.store = e.st;
	sc.exec = e.ex;
	sc.cluster = 1;
	sc.rescue_after = sc.heartbeat;
	CHECK_INT(keel_sched_new(&sc, &s, err, sizeof(err)), ==, -EINVAL);
	CHECK_CONTAINS(err, "rescue-after must be at least two heartbeats");
	keel_sched_config_init(&sc);
	sc.store = e.st;
	sc.exec = e.ex;
	sc.cluster = 1;
	sc.tags = tags;
	sc.n_tags = 1;
	CHECK_INT(keel_sched_new(&sc, &s, err, sizeof(err)), ==, -EINVAL);
	CHECK_CONTAINS(err, "a tag is 1-64 characters of [A-Za-z0-9._:=/-]");
	CHECK(s == NULL);
	env_close(&e, 1);
}
#endif

TEST(results_the_store_refused_survive_in_the_spool)
{
	struct env e;
	struct keel_run *r;
	sqlite3 *db;
	char path[200];
	int64_t t0;
	size_t n;
	FILE *f;

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	snprintf(e.spool, sizeof(e.spool), "%s/spool.json", e.dir);
	e.busy_timeout = 20 * KEEL_MSEC;
	env_open(&e);
	sched_open(&e);
	start_gated_run(&e);
	/* Another writer holds the database: the result cannot be stored. */
	snprintf(path, sizeof(path), "%s/keeld.db", e.dir);
	CHECK_INT(sqlite3_open(path, &db), ==, SQLITE_OK);
	sqlite3_busy_timeout(db, 5000); /* the node beats meanwhile */
	CHECK_INT(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), ==,
		  SQLITE_OK);
	__atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
	t0 = keel_clock_now(NULL);
	while (access(e.spool, F_OK) != 0) {
		CHECK(keel_clock_now(NULL) - t0 < 10 * SEC);
		usleep(10000);
	}
	/* keeld dies with the result unstored (its last flush fails too). */
	keel_sched_free(e.s);
	e.s = NULL;
	keel_store_close(e.st);
	e.st = NULL;
	f = fopen(e.spool, "r");
	CHECK(f != NULL);
	fclose(f);
	CHECK_INT(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), ==, SQLITE_OK);
	sqlite3_close(db);

	/* The next keeld stores it before it recovers runs: succeeded, not
	 * crashed, and the spool is gone. */
	keel_exec_free(e.ex);
	keel_log_free(e.log);
	env_open(&e);
	sched_open(&e);
	CHECK_INT(keel_sched_start(e.s), ==, 0);
	CHECK_INT(keel_sched_idle_wait(e.s, 5 * SEC), ==, 0);
	n = runs_of(&e, "g", &r);
	CHECK_INT(n, ==, 1);
	CHECK_STR(keel_run_state_name(r[0].state), "succeeded");
	keel_store_runs_free(r, n);
	CHECK(access(e.spool, F_OK) != 0);
	env_close(&e, 1);
}

TEST(a_spool_that_is_not_one_stops_the_start)
{
	struct env e;
	struct keel_sched_config sc;
	struct keel_sched *s = NULL;
	char err[512];
	FILE *f;

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/keel-sched-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	snprintf(e.spool, sizeof(e.spool), "%s/spool.json", e.dir);
	env_open(&e);
	f = fopen(e.spool, "w");
	CHECK(f != NULL);
	fputs("[{\"run\": {\"id\": \"x\"}}]", f);
	fclose(f);
	keel_sched_config_init(&sc);
	sc.store = e.st;
	sc.exec = e.ex;
	sc.log = e.log;
	sc.spool = e.spool;
	CHECK_INT(keel_sched_new(&sc, &s, err, sizeof(err)), ==, -EIO);
	CHECK(s == NULL);
	CHECK_CONTAINS(err, "spool.json: result 1 is not a run");
	/* Left as it was, for the operator to look at. */
	f = fopen(e.spool, "r");
	CHECK(f != NULL);
	fclose(f);
	env_close(&e, 1);
}
