/*
 * bench/bench_pool.c - how many empty tasks a second go through keel's
 * worker pool, next to a plain pthread pool measured in the same run.
 *
 * Prints one line per case, "<case-name> <tasks/s>":
 *
 *   keel_pool_1p   keel_pool_submit from 1 thread
 *   keel_pool_2p   keel_pool_submit from 2 threads at once
 *   plain_pool_1p  the plain pool below, submitted to from 1 thread
 *   plain_pool_2p  the plain pool below, from 2 threads
 *
 * Both pools have 2 worker threads and a bounded queue of 1024 tasks, and a
 * submit to a full queue blocks (keel: KEEL_POOL_BLOCK). The plain pool is
 * the ordinary design: one ring buffer, one mutex, a "not empty" and a "not
 * full" condition variable, no panic isolation, no statistics. It is what a
 * C programmer writes when a pool need not survive its tasks.
 *
 * One timed run: the pool is created and its workers started (not timed),
 * then the clock starts, the submitting threads submit n tasks between
 * them, and the pool is shut down draining its queue; the clock stops when
 * every worker has finished, so every task submitted ran inside the timed
 * interval. Each task bumps a counter owned by the worker thread that runs
 * it; a run whose counters do not add up to n stops the program, so no case
 * can quietly measure nothing. Each case is calibrated (also its warm-up)
 * to run about KEEL_BENCH_RUN_MS milliseconds (default 150), then timed 5
 * times; the best run is printed.
 *
 *   bench_pool                     every case
 *   bench_pool keel_pool_1p ...    the cases named
 *   KEEL_BENCH_VERBOSE=1           also every timed run, on stderr
 *   KEEL_BENCH_TASKS=n             no calibration: 5 runs of n tasks (for
 *                                  profilers: perf stat, callgrind)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel.h>

#include "bench_util.h"
#include <keel/pool.h>

#define NOINLINE __attribute__((noinline))

#define RUNS 5
#define WORKERS 2
#define QUEUE_SIZE 1024
#define MAX_PRODUCERS 2

static int verbose; /* KEEL_BENCH_VERBOSE: every run on stderr */

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_pool: %s: %s\n", what,
		strerror(err < 0 ? -err : err));
	exit(1);
}

/* ------------------------------------------------------------------------
 * Completion counters: one cache line per worker thread, so that counting
 * adds no sharing between the workers. A thread takes its slot at its
 * first task; the slots are cleared between runs, when no worker is alive.
 * ------------------------------------------------------------------------ */

#define MAX_COUNTERS 16

struct counter {
	_Alignas(64) unsigned long n;
};

static struct counter counters[MAX_COUNTERS];
static atomic_int ncounters;
static __thread struct counter *my_counter;

static NOINLINE struct counter *counter_register(void)
{
	int i = atomic_fetch_add(&ncounters, 1);

	if (i >= MAX_COUNTERS) {
		fprintf(stderr, "bench_pool: more than %d worker threads\n",
			MAX_COUNTERS);
		exit(1);
	}
	my_counter = &counters[i];
	return my_counter;
}

static void counters_reset(void)
{
	memset(counters, 0, sizeof(counters));
	atomic_store(&ncounters, 0);
}

static unsigned long counters_sum(void)
{
	int n = atomic_load(&ncounters);
	unsigned long sum = 0;

	for (int i = 0; i < n && i < MAX_COUNTERS; i++)
		sum += counters[i].n;
	return sum;
}

/* The task body shared by both pools: count one completion. */
static NOINLINE void count_task(void)
{
	struct counter *c = my_counter;

	if (__builtin_expect(c == NULL, 0))
		c = counter_register();
	c->n++;
}

/* ------------------------------------------------------------------------
 * The plain pool: bounded ring, one mutex, two condition variables.
 * ------------------------------------------------------------------------ */

struct plain_job {
	void (*fn)(void *arg);
	void *arg;
};

struct plain_pool {
	pthread_mutex_t lock;
	pthread_cond_t not_empty;
	pthread_cond_t not_full;
	struct plain_job *ring;
	size_t cap, head, count;
	int stopping;
	int nthreads;
	pthread_t threads[WORKERS];
};

static void *plain_worker(void *arg)
{
	struct plain_pool *p = arg;
	struct plain_job job;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->count == 0 && !p->stopping)
			pthread_cond_wait(&p->not_empty, &p->lock);
		if (p->count == 0)
			break; /* stopping and drained */
		job = p->ring[p->head];
		p->head = (p->head + 1) % p->cap;
		p->count--;
		pthread_cond_signal(&p->not_full);
		pthread_mutex_unlock(&p->lock);
		job.fn(job.arg);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void plain_pool_shutdown(struct plain_pool *p);

static int plain_pool_new(int nthreads, size_t cap, struct plain_pool **out)
{
	struct plain_pool *p = calloc(1, sizeof(*p));
	int err;

	if (p == NULL)
		return -ENOMEM;
	p->ring = calloc(cap, sizeof(*p->ring));
	if (p->ring == NULL) {
		free(p);
		return -ENOMEM;
	}
	p->cap = cap;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->not_empty, NULL);
	pthread_cond_init(&p->not_full, NULL);
	for (int i = 0; i < nthreads; i++) {
		err = pthread_create(&p->threads[i], NULL, plain_worker, p);
		if (err != 0) {
			plain_pool_shutdown(p);
			free(p->ring);
			free(p);
			return -err;
		}
		p->nthreads++;
	}
	*out = p;
	return 0;
}

/* Blocks while the queue is full; -ESHUTDOWN once shutdown began. */
static int plain_pool_submit(struct plain_pool *p, void (*fn)(void *),
			     void *arg)
{
	pthread_mutex_lock(&p->lock);
	while (p->count == p->cap && !p->stopping)
		pthread_cond_wait(&p->not_full, &p->lock);
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		return -ESHUTDOWN;
	}
	p->ring[(p->head + p->count) % p->cap] = (struct plain_job){ fn, arg };
	p->count++;
	pthread_cond_signal(&p->not_empty);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* Drains the queue and joins the workers. */
static void plain_pool_shutdown(struct plain_pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->not_empty);
	pthread_cond_broadcast(&p->not_full);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	p->nthreads = 0;
}

static void plain_pool_free(struct plain_pool *p)
{
	pthread_cond_destroy(&p->not_full);
	pthread_cond_destroy(&p->not_empty);
	pthread_mutex_destroy(&p->lock);
	free(p->ring);
	free(p);
}

/* ------------------------------------------------------------------------
 * The two pools behind one interface
 * ------------------------------------------------------------------------ */

struct pool_ops {
	void *(*open)(void);
	void (*submit)(void *pool);
	void (*close)(void *pool, unsigned long n); /* drain, check, free */
};

static void keel_empty_task(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
	count_task();
}

static void *keel_open(void)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;
	int err;

	keel_pool_config_init(&cfg);
	cfg.name = "bench";
	cfg.min_threads = WORKERS;
	cfg.max_threads = WORKERS;
	cfg.queue_size = QUEUE_SIZE;
	cfg.when_full = KEEL_POOL_BLOCK;
	err = keel_pool_new(&cfg, &p);
	if (err != 0)
		die("keel_pool_new", err);
	return p;
}

static void keel_submit(void *pool)
{
	int err = keel_pool_submit(pool, keel_empty_task, NULL, NULL);

	if (err != 0)
		die("keel_pool_submit", err);
}

static void keel_close(void *pool, unsigned long n)
{
	struct keel_pool_stats s;
	int err = keel_pool_shutdown(pool, KEEL_POOL_DRAIN, 0);

	if (err != 0)
		die("keel_pool_shutdown", err);
	keel_pool_stats(pool, &s);
	if (s.completed != n || s.panicked != 0) {
		fprintf(stderr, "bench_pool: keel pool completed %llu tasks "
			"(%llu panicked), %lu expected\n",
			(unsigned long long)s.completed,
			(unsigned long long)s.panicked, n);
		exit(1);
	}
	keel_pool_free(pool);
}

static const struct pool_ops keel_ops = { keel_open, keel_submit, keel_close };

static void plain_empty_task(void *arg)
{
	(void)arg;
	count_task();
}

static void *plain_open(void)
{
	struct plain_pool *p;
	int err = plain_pool_new(WORKERS, QUEUE_SIZE, &p);

	if (err != 0)
		die("plain_pool_new", err);
	return p;
}

static void plain_submit(void *pool)
{
	int err = plain_pool_submit(pool, plain_empty_task, NULL);

	if (err != 0)
		die("plain_pool_submit", err);
}

static void plain_close(void *pool, unsigned long n)
{
	(void)n;
	plain_pool_shutdown(pool);
	plain_pool_free(pool);
}

static const struct pool_ops plain_ops = {
	plain_open, plain_submit, plain_close
};

struct bench_case {
	const char *name;
	const struct pool_ops *ops;
	int producers;
};

static const struct bench_case cases[] = {
	{ "keel_pool_1p", &keel_ops, 1 },
	{ "plain_pool_1p", &plain_ops, 1 },
	{ "keel_pool_2p", &keel_ops, 2 },
	{ "plain_pool_2p", &plain_ops, 2 },
};

/* ------------------------------------------------------------------------
 * One timed run
 * ------------------------------------------------------------------------ */

struct producer {
	const struct pool_ops *ops;
	void *pool;
	long n;
	pthread_barrier_t *start;
	pthread_t thread;
};

static void *producer_main(void *arg)
{
	struct producer *pr = arg;
	void (*submit)(void *) = pr->ops->submit;

	pthread_barrier_wait(pr->start);
	for (long i = 0; i < pr->n; i++)
		submit(pr->pool);
	return NULL;
}

/* Runs n tasks (a multiple of c->producers); returns the ns taken. */
static double run_once(const struct bench_case *c, long n)
{
	struct producer prod[MAX_PRODUCERS];
	pthread_barrier_t start;
	unsigned long done;
	double t0, t1;
	void *pool;
	int err;

	counters_reset();
	pool = c->ops->open();
	pthread_barrier_init(&start, NULL, (unsigned)c->producers + 1);
	for (int i = 0; i < c->producers; i++) {
		prod[i] = (struct producer){ c->ops, pool, n / c->producers,
					     &start, 0 };
		err = pthread_create(&prod[i].thread, NULL, producer_main,
				     &prod[i]);
		if (err != 0)
			die("pthread_create", err);
	}
	pthread_barrier_wait(&start);
	t0 = bench_now_ns();
	for (int i = 0; i < c->producers; i++)
		pthread_join(prod[i].thread, NULL);
	c->ops->close(pool, (unsigned long)n); /* drains: every task ran */
	t1 = bench_now_ns();
	pthread_barrier_destroy(&start);
	done = counters_sum();
	if (done != (unsigned long)n) {
		fprintf(stderr, "bench_pool: %s: %lu tasks ran, %ld expected\n",
			c->name, done, n);
		exit(1);
	}
	return t1 - t0;
}

static long round_n(const struct bench_case *c, long n)
{
	n -= n % c->producers;
	return n > 1000 ? n : 1000;
}

/* Doubles n until a run takes 1/4 of the run time (this is the warm-up),
 * then scales it to the run time. */
static long calibrate(const struct bench_case *c, double run_ns)
{
	long n = 1000;
	double t;

	for (;;) {
		t = run_once(c, n);
		if (t >= run_ns / 4 || n >= (1L << 34))
			break;
		n *= 2;
	}
	return round_n(c, (long)((double)n * run_ns / (t > 1 ? t : 1)));
}

/* Best of RUNS, in tasks per second. */
static double bench(const struct bench_case *c, double run_ns, long fixed_n)
{
	long n = fixed_n > 0 ? round_n(c, fixed_n) : calibrate(c, run_ns);
	double best = 0;

	for (int r = 0; r < RUNS; r++) {
		double rate = (double)n * 1e9 / run_once(c, n);

		if (verbose)
			fprintf(stderr, "%s: run %d: %ld tasks, %.0f tasks/s\n",
				c->name, r + 1, n, rate);
		if (rate > best)
			best = rate;
	}
	return best;
}

int main(int argc, char **argv)
{
	const char *tasks = getenv("KEEL_BENCH_TASKS");
	double run_ms = bench_run_ms();
	size_t ncases = sizeof(cases) / sizeof(cases[0]);
	int found = 0;
	long fixed_n = tasks != NULL ? atol(tasks) : 0;

	verbose = getenv("KEEL_BENCH_VERBOSE") != NULL;
	if (keel_init() != 0) {
		fprintf(stderr, "bench_pool: keel_init failed\n");
		return 1;
	}
	for (size_t i = 0; i < ncases; i++) {
		const struct bench_case *c = &cases[i];
		if (!bench_selected(argc, argv, c->name))
			continue;
		found++;
		printf("%s %.0f\n", c->name, bench(c, run_ms * 1e6, fixed_n));
		fflush(stdout);
	}
	if (found == 0) {
		fprintf(stderr, "bench_pool: no such case\n");
		return 1;
	}
	return 0;
}
