/*
 * bench/bench_keeld.c - keeld's scheduler end to end, in process, on its
 * real SQLite store (bench/run-keeld.sh runs it beside bench_store's bare
 * SQLite loop and prints the ratios).
 *
 *   bench_keeld throughput handler|shell RUNS
 *       RUNS ticks of 10 jobs are all due at once (the jobs' last tick lies
 *       in the past, missed "all", concurrency "allow"): the time from the
 *       scheduler's start until every run is stored final, as runs/s. Each
 *       run is three store transactions (materialised with its batch,
 *       started, finished), as in keeld.
 *   bench_keeld spawn RUNS
 *       the floor for shell runs: fork, execve /bin/true and waitpid, RUNS
 *       times, from as many threads as the machine has CPUs.
 *   bench_keeld latency JOBS SECONDS
 *       JOBS jobs firing every second ("* * * * * *") for SECONDS: the
 *       scheduling latency of each run (its start minus its tick), p50, p99
 *       and max in ms, read back from the store.
 *
 * Output: "name value" lines. No targets here: figures only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <sys/wait.h>

#include <jansson.h>
#include <keel/clock.h>
#include <keel/exec.h>
#include <keel/job.h>
#include <keel/log.h>
#include <keel/sched.h>
#include <keel/store.h>

static char dir[64];
static struct keel_store *st;
static struct keel_executor *ex;
static struct keel_sched *sc;
static struct keel_logger *lg;

static int h_ok(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	return 0;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench_keeld: %s: %s\n", what, why);
	exit(1);
}

static int rm_one(const char *p, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void setup(void)
{
	struct keel_exec_config ec;
	struct keel_log_config lc;
	char err[512];

	snprintf(dir, sizeof(dir), "/tmp/keel-bench-XXXXXX");
	if (mkdtemp(dir) == NULL)
		die("mkdtemp", strerror(errno));
	keel_log_config_init(&lc);
	lc.level = KEEL_LOG_ERROR;
	if (keel_log_new(&lc, &lg) != 0)
		die("logger", "failed");
	keel_exec_config_init(&ec);
	ec.log = lg;
	if (keel_exec_new(&ec, &ex) != 0 ||
	    keel_exec_handler_register(ex, "ok", h_ok, NULL) != 0)
		die("executor", "failed");
	if (keel_store_sqlite_open(dir, NULL, &st, err, sizeof(err)) != 0)
		die("store", err);
}

static void sched_open(void)
{
	struct keel_sched_config cfg;
	char err[512];

	keel_sched_config_init(&cfg);
	cfg.store = st;
	cfg.exec = ex;
	cfg.log = lg;
	cfg.node = "bench";
	if (keel_sched_new(&cfg, &sc, err, sizeof(err)) != 0)
		die("scheduler", err);
}

static void teardown(void)
{
	keel_sched_free(sc);
	keel_store_close(st);
	keel_exec_free(ex);
	keel_log_free(lg);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void put_job(const char *text, int64_t last_tick)
{
	json_error_t je;
	json_t *v = json_loads(text, 0, &je);
	struct keel_job *j = NULL;
	char err[KEEL_JOB_ERR_MAX];

	if (v == NULL)
		die("job JSON", je.text);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		die("job", err);
	json_decref(v);
	if (keel_store_job_put(st, j, last_tick, NULL) != 0)
		die("job put", keel_store_errmsg(st));
	keel_job_free(j);
}

static int64_t final_runs(void)
{
	int64_t c[KEEL_RUN_NSTATES], n = 0;

	if (keel_store_run_counts(st, NULL, c) != 0)
		die("counts", keel_store_errmsg(st));
	for (int i = 0; i < KEEL_RUN_NSTATES; i++)
		if (keel_run_state_final(i))
			n += c[i];
	return n;
}

static void throughput(const char *kind, long runs)
{
	const int jobs = 10;
	long per = runs / jobs;
	int64_t now = time(NULL), t0, t1, done;
	char text[512];

	if (per < 1 || per > 10000)
		die("throughput", "RUNS must be 10..100000");
	setup();
	for (int i = 0; i < jobs; i++) {
		snprintf(text, sizeof(text),
			 "{\"name\":\"j%d\",\"schedule\":\"@every 1s\","
			 "\"missed\":\"all\",\"missed_max\":%ld,"
			 "\"concurrency\":\"allow\",\"history\":{\"keep_runs\":1000000},"
			 "\"executor\":%s}",
			 i, per,
			 strcmp(kind, "shell") == 0
				 ? "{\"type\":\"shell\",\"command\":[\"/bin/true\"]}"
				 : "{\"type\":\"handler\",\"name\":\"ok\"}");
		/* per missed ticks, ending well before the late edge */
		put_job(text, now - 60 - per);
	}
	sched_open();
	t0 = keel_clock_now(NULL);
	if (keel_sched_start(sc) != 0)
		die("start", "failed");
	if (keel_sched_idle_wait(sc, 600 * KEEL_SEC) != 0)
		die("idle", "timed out");
	/* Idle means nothing queued or running: the last finish is stored. */
	t1 = keel_clock_now(NULL);
	keel_sched_stop(sc, KEEL_SEC);
	done = final_runs();
	printf("%s_runs %lld\n", kind, (long long)done);
	printf("%s_seconds %.3f\n", kind, (double)(t1 - t0) / 1e9);
	printf("%s_runs_per_s %.0f\n", kind, (double)done / ((double)(t1 - t0) / 1e9));
	teardown();
}

static long spawn_left;

static void *spawner(void *arg)
{
	char *const argv[] = { (char *)"/bin/true", NULL };
	extern char **environ;

	(void)arg;
	while (__atomic_sub_fetch(&spawn_left, 1, __ATOMIC_RELAXED) >= 0) {
		int status;
		pid_t pid = fork();

		if (pid == 0) {
			execve(argv[0], argv, environ);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0)
			die("spawn", "fork/exec/wait of /bin/true failed");
	}
	return NULL;
}

static void spawn(long runs)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t th[64];
	int64_t t0, t1;

	if (cpus < 1)
		cpus = 1;
	if (cpus > 64)
		cpus = 64;
	spawn_left = runs;
	t0 = keel_clock_now(NULL);
	for (long i = 0; i < cpus; i++)
		if (pthread_create(&th[i], NULL, spawner, NULL) != 0)
			die("spawn", "pthread_create failed");
	for (long i = 0; i < cpus; i++)
		pthread_join(th[i], NULL);
	t1 = keel_clock_now(NULL);
	printf("spawn_runs_per_s %.0f\n", (double)runs / ((double)(t1 - t0) / 1e9));
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void latency(int jobs, int seconds)
{
	struct keel_store_run_query q;
	struct keel_run *runs;
	size_t n, k = 0, cap = (size_t)jobs * (size_t)(seconds + 2);
	int64_t *lat = malloc(cap * sizeof(*lat)), before = 0;
	char text[256];

	if (lat == NULL)
		die("latency", "out of memory");
	setup();
	for (int i = 0; i < jobs; i++) {
		snprintf(text, sizeof(text),
			 "{\"name\":\"l%04d\",\"schedule\":\"* * * * * *\","
			 "\"history\":{\"keep_runs\":1000000},"
			 "\"executor\":{\"type\":\"handler\",\"name\":\"ok\"}}",
			 i);
		put_job(text, time(NULL));
	}
	sched_open();
	if (keel_sched_start(sc) != 0)
		die("start", "failed");
	sleep((unsigned)seconds);
	keel_sched_stop(sc, 5 * KEEL_SEC);
	memset(&q, 0, sizeof(q));
	q.limit = 1000;
	q.state = KEEL_RUN_SUCCEEDED;
	for (;;) {
		q.before_id = before;
		if (keel_store_run_list(st, &q, &runs, &n) != 0)
			die("list", keel_store_errmsg(st));
		for (size_t i = 0; i < n && k < cap; i++)
			lat[k++] = runs[i].started_at - runs[i].scheduled_at;
		if (n > 0)
			before = runs[n - 1].id;
		keel_store_runs_free(runs, n);
		if (n < (size_t)q.limit)
			break;
	}
	if (k == 0)
		die("latency", "no runs");
	qsort(lat, k, sizeof(*lat), cmp64);
	printf("latency_jobs %d\n", jobs);
	printf("latency_runs %zu\n", k);
	printf("latency_runs_per_s %.0f\n", (double)k / seconds);
	printf("latency_p50_ms %lld\n", (long long)lat[k / 2]);
	printf("latency_p99_ms %lld\n", (long long)lat[k * 99 / 100]);
	printf("latency_max_ms %lld\n", (long long)lat[k - 1]);
	free(lat);
	teardown();
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "throughput") == 0 &&
	    (strcmp(argv[2], "handler") == 0 || strcmp(argv[2], "shell") == 0)) {
		throughput(argv[2], atol(argv[3]));
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "spawn") == 0) {
		spawn(atol(argv[2]));
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "latency") == 0) {
		latency(atoi(argv[2]), atoi(argv[3]));
		return 0;
	}
	fprintf(stderr, "usage: bench_keeld throughput handler|shell RUNS\n"
			"       bench_keeld spawn RUNS\n"
			"       bench_keeld latency JOBS SECONDS\n");
	return 2;
}
