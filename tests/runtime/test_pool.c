/* KEEL_TEST_LABELS: threads */
/*
 * tests/runtime/test_pool.c - the worker pool: every accepted task runs
 * exactly once (or is counted cancelled by a cancelling shutdown); a task
 * that panics, dereferences NULL, divides by zero or overflows its stack is
 * a failed task reported to the handler, and the same worker threads go on
 * serving; the watchdog reports a task past its deadline once and cancels
 * its token; a full queue blocks, rejects or runs the task on the caller;
 * tasks submit to their own pool; shutdown drains or cancels, also while
 * other threads submit; an elastic pool grows to max_threads and shrinks
 * back; the statistics add up; a task costs no allocation.
 */
#define _GNU_SOURCE
#define KEEL_TEST_COUNT_ALLOCATIONS
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include <keel.h>
#include <keel/pool.h>
#include "keel_test.h"

#define NIL_MSG                                                               \
	"runtime error: invalid memory address or nil pointer dereference"
#define DIV_MSG "runtime error: integer divide by zero"
#define STACK_MSG "runtime error: stack overflow"

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Polls cond every millisecond for up to 5 s, then checks it. */
#define WAIT_FOR(cond)                                                        \
	do {                                                                  \
		int wait_i_;                                                  \
		for (wait_i_ = 0; wait_i_ < 5000 && !(cond); wait_i_++)       \
			sleep_ms(1);                                          \
		CHECK(cond);                                                  \
	} while (0)

static struct keel_pool_stats stats_of(struct keel_pool *p)
{
	struct keel_pool_stats s;

	keel_pool_stats(p, &s);
	return s;
}

static struct keel_pool *make(const struct keel_pool_config *cfg)
{
	struct keel_pool *p = NULL;

	CHECK_INT(keel_pool_new(cfg, &p), ==, 0);
	CHECK(p != NULL);
	return p;
}

/* A fixed pool of n workers with a queue of qsize, everything else default. */
static void config(struct keel_pool_config *cfg, const char *name, int n,
		   size_t qsize, enum keel_pool_full full)
{
	keel_pool_config_init(cfg);
	cfg->name = name;
	cfg->min_threads = n;
	cfg->queue_size = qsize;
	cfg->when_full = full;
}

static void check_books(struct keel_pool *p)
{
	struct keel_pool_stats s = stats_of(p);

	CHECK_INT(s.submitted, ==, s.completed + s.panicked + s.cancelled +
					   s.queued + s.running);
	/* A fast pool times one task in a few (see stats_*). */
	CHECK_INT(s.latency_count, <=, s.completed + s.panicked);
	CHECK(s.latency_count > 0 || s.completed + s.panicked == 0);
}

/* ------------------------------------------------------------------------
 * A gate that tasks wait at until the test opens it.
 * ------------------------------------------------------------------------ */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_opened, gate_waiting;

static void gate_pass(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_waiting++;
	while (!gate_opened)
		pthread_cond_wait(&gate_cv, &gate_mu);
	gate_waiting--;
	pthread_mutex_unlock(&gate_mu);
}

static void gate_open(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_opened = 1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

static int gate_waiters(void)
{
	int n;

	pthread_mutex_lock(&gate_mu);
	n = gate_waiting;
	pthread_mutex_unlock(&gate_mu);
	return n;
}

static void task_gate(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
	gate_pass();
}

/* Counts its runs in runs[(intptr_t)arg]. */
#define MAX_IDS 40000
static int runs[MAX_IDS];

static void task_count(struct keel_task *t, void *arg)
{
	(void)t;
	__atomic_add_fetch(&runs[(intptr_t)arg], 1, __ATOMIC_RELAXED);
}

static int runs_of(int id)
{
	return __atomic_load_n(&runs[id], __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

static void expect_einval(const struct keel_pool_config *cfg)
{
	struct keel_pool *p = (void *)1;

	CHECK_INT(keel_pool_new(cfg, &p), ==, -EINVAL);
	CHECK(p == NULL);
}

TEST(config_defaults_and_bad_config)
{
	struct keel_pool_config cfg, bad;
	struct keel_pool_stats s;
	struct keel_task_options opt = { .name = NULL, .deadline = -1, .cancel = NULL };
	struct keel_pool *p;

	keel_pool_config_init(&cfg);
	CHECK_STR(cfg.name, "pool");
	CHECK_INT(cfg.min_threads, ==, 2);
	CHECK_INT(cfg.max_threads, ==, 0); /* = min_threads */
	CHECK_INT(cfg.idle_timeout, ==, 10 * KEEL_SEC);
	CHECK_INT(cfg.queue_size, ==, 1024);
	CHECK_INT(cfg.when_full, ==, KEEL_POOL_BLOCK);
	CHECK_INT(cfg.block_timeout, ==, 0);
	CHECK_INT(cfg.task_deadline, ==, 0);
	CHECK_INT(cfg.watchdog_interval, ==, 100 * KEEL_MSEC);
	CHECK(cfg.on_panic == NULL && cfg.on_overdue == NULL);
	CHECK(cfg.clock == NULL);

	expect_einval(NULL);
	CHECK_INT(keel_pool_new(&cfg, NULL), ==, -EINVAL);
#define BAD(field, value)                                                     \
	do {                                                                  \
		bad = cfg;                                                    \
		bad.field = value;                                            \
		expect_einval(&bad);                                          \
	} while (0)
	BAD(min_threads, -1);
	BAD(min_threads, 0); /* and max_threads 0: no thread at all */
	BAD(max_threads, 1); /* below min_threads */
	BAD(max_threads, -3);
	BAD(idle_timeout, -1);
	BAD(queue_size, 0);
	BAD(when_full, (enum keel_pool_full)7);
	BAD(block_timeout, -1);
	BAD(task_deadline, -1);
	BAD(watchdog_interval, 0);
	BAD(watchdog_interval, -KEEL_MSEC);
#undef BAD
	keel_test_leak_check();

	p = make(&cfg);
	s = stats_of(p);
	CHECK_INT(s.threads, ==, 2);
	CHECK_INT(s.submitted + s.queued + s.running, ==, 0);
	CHECK_INT(keel_pool_submit(NULL, task_count, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_pool_submit(p, NULL, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_pool_submit(p, task_count, NULL, &opt), ==, -EINVAL);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, -1), ==, -EINVAL);
	CHECK_INT(keel_pool_shutdown(p, (enum keel_pool_stop)9, 0), ==,
		  -EINVAL);
	CHECK_INT(keel_pool_shutdown(NULL, KEEL_POOL_DRAIN, 0), ==, -EINVAL);
	CHECK_INT(stats_of(p).submitted, ==, 0);
	keel_pool_free(p);
	keel_pool_free(NULL);
	keel_pool_stats(NULL, &s);
	CHECK_INT(s.submitted + s.threads, ==, 0);

	/* min_threads 0 with a max: an elastic pool that starts empty. */
	cfg.min_threads = 0;
	cfg.max_threads = 1;
	p = make(&cfg);
	CHECK_INT(stats_of(p).threads, ==, 0);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, NULL), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(runs_of(1), ==, 1);
	keel_pool_free(p);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Exactly once under load
 * ------------------------------------------------------------------------ */

#define LOAD_THREADS 4
#define LOAD_TASKS 5000

struct submitter {
	struct keel_pool *pool;
	int base, n;
	int failed;
};

static void *submit_range(void *arg)
{
	struct submitter *s = arg;
	int i;

	for (i = 0; i < s->n; i++) {
		void *id = (void *)(intptr_t)(s->base + i);

		if (keel_pool_submit(s->pool, task_count, id, NULL) != 0)
			s->failed++;
	}
	return NULL;
}

TEST(every_task_runs_exactly_once_under_load)
{
	struct keel_pool_config cfg;
	struct submitter sub[LOAD_THREADS];
	pthread_t th[LOAD_THREADS];
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i;

	/* A small queue, so submitters block and wake all the time. */
	config(&cfg, "load", 3, 64, KEEL_POOL_BLOCK);
	p = make(&cfg);
	for (i = 0; i < LOAD_THREADS; i++) {
		sub[i] = (struct submitter){ p, i * LOAD_TASKS, LOAD_TASKS, 0 };
		CHECK_INT(pthread_create(&th[i], NULL, submit_range, &sub[i]),
			  ==, 0);
	}
	for (i = 0; i < LOAD_THREADS; i++) {
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
		CHECK_INT(sub[i].failed, ==, 0);
	}
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	for (i = 0; i < LOAD_THREADS * LOAD_TASKS; i++)
		if (runs_of(i) != 1)
			KEEL_TEST_FAIL("task %d ran %d times", i, runs_of(i));
	s = stats_of(p);
	CHECK_INT(s.submitted, ==, LOAD_THREADS * LOAD_TASKS);
	CHECK_INT(s.completed, ==, LOAD_THREADS * LOAD_TASKS);
	CHECK_INT(s.panicked + s.rejected + s.cancelled + s.caller_runs, ==, 0);
	CHECK_INT(s.queued + s.running + s.threads, ==, 0);
	CHECK_INT(s.latency_count, >, 0);
	CHECK_INT(s.latency_count, <=, LOAD_THREADS * LOAD_TASKS);
	CHECK(s.latency_avg_ns > 0 && s.latency_max_ns >= s.latency_avg_ns);
	check_books(p);
	keel_pool_free(p);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * What a task sees
 * ------------------------------------------------------------------------ */

struct seen {
	char name[32];
	char thread[16];
	int cancelled;
	int64_t deadline;
	int has_token;
};

static void task_look(struct keel_task *t, void *arg)
{
	struct seen *s = arg;

	snprintf(s->name, sizeof(s->name), "%s", keel_task_name(t));
	pthread_getname_np(pthread_self(), s->thread, sizeof(s->thread));
	s->cancelled = keel_task_cancelled(t);
	s->deadline = keel_task_deadline(t);
	s->has_token = keel_task_token(t) != NULL &&
		       keel_cancel_err(keel_task_token(t)) == 0;
}

static struct keel_vclock vc;

TEST(task_context_and_thread_names)
{
	struct keel_pool_config cfg;
	struct keel_task_options opt = { .name = "fetch", .deadline = 0, .cancel = NULL };
	struct seen a, b, c;
	struct keel_pool *p;

	keel_vclock_init(&vc, 1000);
	keel_vclock_set_auto(&vc, 0); /* the watchdog waits on it */
	config(&cfg, "ctx", 1, 8, KEEL_POOL_BLOCK);
	cfg.clock = &vc.clock;
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_look, &a, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_look, &b, &opt), ==, 0);
	opt.deadline = 500;
	CHECK_INT(keel_pool_submit(p, task_look, &c, &opt), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	keel_pool_free(p);

	CHECK_STR(a.name, "");
	CHECK_STR(b.name, "fetch");
	CHECK_STR(a.thread, "ctx-0");
	CHECK_INT(a.cancelled, ==, 0);
	CHECK_INT(a.has_token, ==, 1);
	CHECK_INT(a.deadline, ==, KEEL_NEVER);
	CHECK_INT(b.deadline, ==, KEEL_NEVER);
	CHECK_INT(c.deadline, ==, 1500); /* started at 1000, 500 ns to go */
	CHECK_INT(c.cancelled, ==, 0);

	/* A long name keeps its worker number in the kernel's 15 bytes. */
	config(&cfg, "a-very-long-pool-name", 1, 8, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_look, &a, NULL), ==, 0);
	keel_pool_free(p);
	CHECK_STR(a.thread, "a-very-long-p-0");
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Panics and faults are failed tasks
 * ------------------------------------------------------------------------ */

static int *volatile nil_int;
static volatile int vzero, vone = 1, never;
static volatile int vsink;

KEEL_TEST_NO_SANITIZE static void deref_nil(void)
{
	vsink = *nil_int;
}

KEEL_TEST_NO_SANITIZE static void divide_zero(void)
{
	vsink = vone / vzero;
}

/* Small frames, each touching its page, so the recursion walks into the
 * guard page rather than over it. */
KEEL_TEST_NO_SANITIZE static int recurse(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (never)
		return pad[0];
	return recurse(depth + 1) + pad[0];
}

enum { K_OK, K_PANIC, K_NIL, K_DIV, K_STACK };

#define BAD_MAX 2000
static char bad_names[BAD_MAX][16];
static int bad_nkinds;
static int bad_ran[BAD_MAX], bad_deferred[BAD_MAX], bad_saw[BAD_MAX];
static int bad_kind[BAD_MAX], bad_worker[BAD_MAX];
static size_t bad_frames[BAD_MAX];
static char bad_msg[BAD_MAX][80];
static int bad_pool_name_ok = 1;

/* One in ten tasks is bad, cycling through the kinds. */
static int kind_of(int i)
{
	return i % 10 == 9 ? 1 + (i / 10) % bad_nkinds : K_OK;
}

/* The worker threads that ran tasks (kernel thread ids: a replaced worker
 * would show up as a new one). */
static pthread_mutex_t tids_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t tids[64];
static int ntids;

static void note_tid(void)
{
	pid_t me = gettid();
	int i;

	pthread_mutex_lock(&tids_mu);
	for (i = 0; i < ntids && tids[i] != me; i++)
		;
	if (i == ntids && ntids < 64)
		tids[ntids++] = me;
	pthread_mutex_unlock(&tids_mu);
}

static void bump(void *arg)
{
	__atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
}

static void task_maybe_bad(struct keel_task *t, void *arg)
{
	int i = (int)(intptr_t)arg;

	(void)t;
	keel_defer(bump, &bad_deferred[i]); /* runs however the task ends */
	switch (kind_of(i)) {
	case K_PANIC:
		keel_panicf("task %d exploded", i);
	case K_NIL:
		deref_nil();
		break;
	case K_DIV:
		divide_zero();
		break;
	case K_STACK:
		vsink = recurse(0);
		break;
	default:
		note_tid();
		bump(&bad_ran[i]);
	}
}

static void on_bad_panic(const struct keel_task_panic *info, void *ud)
{
	int i = atoi(info->task + 1);
	void *const *frames;

	(void)ud;
	if (strcmp(info->pool, "iso") != 0)
		bad_pool_name_ok = 0;
	bump(&bad_saw[i]);
	bad_kind[i] = (int)keel_panic_kind(info->panic);
	bad_worker[i] = info->worker;
	bad_frames[i] = keel_panic_stack(info->panic, &frames);
	snprintf(bad_msg[i], sizeof(bad_msg[i]), "%s",
		 keel_panic_message(info->panic));
}

static void submit_bad_range(struct keel_pool *p, int from, int to)
{
	struct keel_task_options opt = { .name = NULL, .deadline = 0, .cancel = NULL };
	int i;

	for (i = from; i < to; i++) {
		snprintf(bad_names[i], sizeof(bad_names[i]), "t%d", i);
		opt.name = bad_names[i];
		CHECK_INT(keel_pool_submit(p, task_maybe_bad,
					   (void *)(intptr_t)i, &opt), ==, 0);
	}
}

static void run_isolation(int nkinds, int n)
{
	static const enum keel_panic_kind kinds[] = {
		[K_PANIC] = KEEL_PANIC_MESSAGE,
		[K_NIL] = KEEL_PANIC_NIL_DEREF,
		[K_DIV] = KEEL_PANIC_DIVIDE,
		[K_STACK] = KEEL_PANIC_STACK_OVERFLOW,
	};
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i, nbad = 0, seen[K_STACK + 1] = { 0 };

	bad_nkinds = nkinds;
	config(&cfg, "iso", 3, 256, KEEL_POOL_BLOCK);
	cfg.on_panic = on_bad_panic;
	p = make(&cfg);
	submit_bad_range(p, 0, n);
	WAIT_FOR(stats_of(p).completed + stats_of(p).panicked == (uint64_t)n);

	for (i = 0; i < n; i++) {
		int k = kind_of(i);
		char want[96];

		CHECK_INT(bad_deferred[i], ==, 1);
		seen[k]++;
		if (k == K_OK) {
			CHECK_INT(bad_ran[i], ==, 1);
			CHECK_INT(bad_saw[i], ==, 0);
			continue;
		}
		nbad++;
		CHECK_INT(bad_ran[i], ==, 0);
		CHECK_INT(bad_saw[i], ==, 1);
		CHECK_INT(bad_kind[i], ==, kinds[k]);
		CHECK(bad_frames[i] > 0);
		CHECK(bad_worker[i] >= 0 && bad_worker[i] < 3);
		if (k == K_PANIC)
			snprintf(want, sizeof(want), "task %d exploded", i);
		else
			snprintf(want, sizeof(want), "%s",
				 k == K_NIL ? NIL_MSG : k == K_DIV ? DIV_MSG
								   : STACK_MSG);
		CHECK_STR(bad_msg[i], want);
	}
	for (i = 1; i <= nkinds; i++)
		CHECK_INT(seen[i], >, 0);
	CHECK(bad_pool_name_ok);
	s = stats_of(p);
	CHECK_INT(s.panicked, ==, nbad);
	CHECK_INT(s.completed, ==, n - nbad);
	CHECK_INT(s.threads, ==, 3);

	/* The same three threads go on serving. */
	bad_nkinds = 1; /* only panics from here: the tids are the point */
	submit_bad_range(p, n, 2 * n);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	for (i = n; i < 2 * n; i++)
		CHECK_INT(bad_ran[i] + bad_saw[i], ==, 1);
	CHECK_INT(ntids, >=, 1);
	CHECK_INT(ntids, <=, 3);
	s = stats_of(p);
	CHECK_INT(s.completed + s.panicked, ==, 2 * n);
	check_books(p);
	keel_pool_free(p);
}

TEST(panics_and_faults_are_failed_tasks)
{
	run_isolation(3, 1000); /* panic, nil dereference, divide by zero */
	keel_test_leak_check();
}

TEST(stack_overflow_is_a_failed_task)
{
	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();
	run_isolation(4, 200);
}

static int handler_calls;

static void on_panic_panics(const struct keel_task_panic *info, void *ud)
{
	(void)info;
	(void)ud;
	__atomic_add_fetch(&handler_calls, 1, __ATOMIC_RELAXED);
	keel_panic("the handler itself is broken");
}

static void task_panic(struct keel_task *t, void *arg)
{
	(void)t;
	keel_panic(arg);
}

TEST(panicking_handler_costs_only_its_report)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i;

	config(&cfg, "hp", 2, 64, KEEL_POOL_BLOCK);
	cfg.on_panic = on_panic_panics;
	p = make(&cfg);
	for (i = 0; i < 20; i++) {
		CHECK_INT(keel_pool_submit(p, task_panic, "boom", NULL), ==, 0);
		CHECK_INT(keel_pool_submit(p, task_count, (void *)(intptr_t)i,
					   NULL), ==, 0);
	}
	WAIT_FOR(stats_of(p).completed + stats_of(p).panicked == 40);
	s = stats_of(p);
	CHECK_INT(s.panicked, ==, 20);
	CHECK_INT(s.threads, ==, 2);
	CHECK_INT(handler_calls, ==, 20);
	keel_pool_free(p);
	for (i = 0; i < 20; i++)
		CHECK_INT(runs_of(i), ==, 1);
}

/* ------------------------------------------------------------------------
 * Deadlines and the watchdog
 * ------------------------------------------------------------------------ */

static pthread_mutex_t od_mu = PTHREAD_MUTEX_INITIALIZER;
static struct keel_task_overdue od_info;
static char od_task[32];
static int od_calls;

static void on_overdue(const struct keel_task_overdue *info, void *ud)
{
	(void)ud;
	pthread_mutex_lock(&od_mu);
	od_info = *info;
	snprintf(od_task, sizeof(od_task), "%s", info->task);
	od_calls++;
	pthread_mutex_unlock(&od_mu);
}

static int overdue_calls(void)
{
	int n;

	pthread_mutex_lock(&od_mu);
	n = od_calls;
	pthread_mutex_unlock(&od_mu);
	return n;
}

static int slow_started, slow_reason, slow_err, slow_release;

/* Waits (real time) for its token to be cancelled, reading the token's
 * state directly: keel_cancel_err would cancel an expired token itself,
 * and the point is that the watchdog does. */
static void task_slow(struct keel_task *t, void *arg)
{
	struct keel_cancel *tok = keel_task_token(t);
	int i;

	(void)arg;
	__atomic_store_n(&slow_started, 1, __ATOMIC_RELEASE);
	for (i = 0; i < 5000 && !__atomic_load_n(&tok->reason,
						 __ATOMIC_ACQUIRE); i++)
		sleep_ms(1);
	__atomic_store_n(&slow_reason, tok->reason, __ATOMIC_RELEASE);
	slow_err = keel_task_cancelled(t);
	for (i = 0; i < 5000 && !__atomic_load_n(&slow_release,
						 __ATOMIC_ACQUIRE); i++)
		sleep_ms(1);
}

TEST(overdue_task_reported_once_and_cancelled)
{
	struct keel_pool_config cfg;
	struct keel_task_options opt = { .name = "slow", .deadline = 0, .cancel = NULL };
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i;

	keel_vclock_init(&vc, 1000);
	keel_vclock_set_auto(&vc, 0);
	config(&cfg, "wd", 1, 8, KEEL_POOL_BLOCK);
	cfg.clock = &vc.clock;
	cfg.task_deadline = 50 * KEEL_MSEC;
	cfg.watchdog_interval = 10 * KEEL_MSEC;
	cfg.on_overdue = on_overdue;
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_slow, NULL, &opt), ==, 0);
	WAIT_FOR(__atomic_load_n(&slow_started, __ATOMIC_ACQUIRE));
	keel_vclock_advance(&vc, 40 * KEEL_MSEC); /* not yet */
	sleep_ms(30);
	CHECK_INT(overdue_calls(), ==, 0);
	CHECK_INT(__atomic_load_n(&slow_reason, __ATOMIC_ACQUIRE), ==, 0);
	keel_vclock_advance(&vc, 20 * KEEL_MSEC);
	WAIT_FOR(overdue_calls() == 1);
	WAIT_FOR(__atomic_load_n(&slow_reason, __ATOMIC_ACQUIRE) != 0);
	/* Still running, still past its deadline: no second report. */
	for (i = 0; i < 5; i++) {
		keel_vclock_advance(&vc, 20 * KEEL_MSEC);
		sleep_ms(10);
	}
	CHECK_INT(overdue_calls(), ==, 1);
	__atomic_store_n(&slow_release, 1, __ATOMIC_RELEASE);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);

	CHECK_INT(slow_reason, ==, -ETIMEDOUT);
	CHECK_INT(slow_err, ==, -ETIMEDOUT);
	CHECK_STR(od_info.pool, "wd");
	CHECK_STR(od_task, "slow");
	CHECK_INT(od_info.worker, ==, 0);
	CHECK_INT(od_info.started, ==, 1000);
	CHECK_INT(od_info.deadline, ==, 1000 + 50 * KEEL_MSEC);
	CHECK_INT(od_info.now, >=, od_info.deadline);
	s = stats_of(p);
	CHECK_INT(s.overdue, ==, 1);
	CHECK_INT(s.completed, ==, 1);
	keel_pool_free(p);
	keel_vclock_destroy(&vc);
	keel_test_leak_check();
}

/* Busy for ms (or us) of real time without looking at its token. */
static void task_busy(struct keel_task *t, void *arg)
{
	double end = keel_test_now() + (double)(intptr_t)arg / 1e3;

	(void)t;
	while (keel_test_now() < end)
		;
}

static void task_busy_us(struct keel_task *t, void *arg)
{
	double end = keel_test_now() + (double)(intptr_t)arg / 1e6;

	(void)t;
	while (keel_test_now() < end)
		;
}

TEST(per_task_deadline_starts_the_watchdog)
{
	struct keel_pool_config cfg;
	struct keel_task_options opt = { .name = "late", .deadline = 20 * KEEL_MSEC, .cancel = NULL };
	struct keel_pool *p;
	int i;

	/* No pool default: the first task with a deadline starts it. */
	config(&cfg, "lazy", 2, 64, KEEL_POOL_BLOCK);
	cfg.watchdog_interval = 5 * KEEL_MSEC;
	cfg.on_overdue = on_overdue;
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_busy, (void *)(intptr_t)150, NULL),
		  ==, 0); /* no deadline: never reported */
	CHECK_INT(keel_pool_submit(p, task_busy, (void *)(intptr_t)150, &opt),
		  ==, 0);
	opt.name = "quick";
	opt.deadline = 5 * KEEL_SEC;
	for (i = 0; i < 20; i++)
		CHECK_INT(keel_pool_submit(p, task_count, (void *)(intptr_t)i,
					   &opt), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(overdue_calls(), ==, 1);
	CHECK_STR(od_task, "late");
	CHECK_INT(od_info.deadline - od_info.started, ==, 20 * KEEL_MSEC);
	CHECK_INT(stats_of(p).overdue, ==, 1);
	CHECK_INT(stats_of(p).completed, ==, 22);
	keel_pool_free(p);
}

static int od_panics;

static void on_overdue_panics(const struct keel_task_overdue *info, void *ud)
{
	(void)info;
	(void)ud;
	__atomic_add_fetch(&od_panics, 1, __ATOMIC_RELAXED);
	keel_panic("the overdue handler is broken");
}

/* The watchdog survives its handler panicking, and goes on reporting. */
TEST(panicking_overdue_handler)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;

	config(&cfg, "odp", 2, 8, KEEL_POOL_BLOCK);
	cfg.task_deadline = 10 * KEEL_MSEC;
	cfg.watchdog_interval = 5 * KEEL_MSEC;
	cfg.on_overdue = on_overdue_panics;
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_busy, (void *)(intptr_t)60, NULL),
		  ==, 0);
	CHECK_INT(keel_pool_submit(p, task_busy, (void *)(intptr_t)60, NULL),
		  ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(od_panics, ==, 2);
	CHECK_INT(stats_of(p).overdue, ==, 2);
	CHECK_INT(stats_of(p).completed, ==, 2);
	keel_pool_free(p);
}

struct waited {
	int started;
	int at_start;
	int reason;
};

/* Waits for its token (up to 5 s) and says how it ended. */
static void task_wait_token(struct keel_task *t, void *arg)
{
	struct waited *w = arg;

	w->at_start = keel_task_cancelled(t);
	__atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
	w->reason = keel_clock_sleep(NULL, 5 * KEEL_SEC, keel_task_token(t));
}

static int has_started(struct waited *w)
{
	return __atomic_load_n(&w->started, __ATOMIC_ACQUIRE);
}

TEST(parent_token_cancels_the_task)
{
	struct keel_pool_config cfg;
	struct keel_cancel parent, dead;
	struct keel_task_options opt = { .name = "child", .deadline = 0, .cancel = &parent };
	struct waited a = { 0 }, b = { 0 };
	struct keel_pool *p;

	keel_cancel_init(&parent, NULL, NULL);
	keel_cancel_init(&dead, NULL, NULL);
	keel_cancel_cancel(&dead, -EPIPE);
	config(&cfg, "par", 1, 8, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_wait_token, &a, &opt), ==, 0);
	WAIT_FOR(has_started(&a));
	keel_cancel_cancel(&parent, 0);
	opt.cancel = &dead; /* cancelled before the task starts */
	CHECK_INT(keel_pool_submit(p, task_wait_token, &b, &opt), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(a.at_start, ==, 0);
	CHECK_INT(a.reason, ==, -ECANCELED);
	CHECK_INT(b.at_start, ==, -EPIPE);
	CHECK_INT(b.reason, ==, -EPIPE);
	keel_pool_free(p);
	keel_cancel_destroy(&dead);
	keel_cancel_destroy(&parent);
	keel_test_leak_check();
}

/* A worker reuses an untouched token; whatever one task did to its token
 * (cancel it, give it a deadline, a parent) the next task does not see. */
struct tok_seen {
	int err;
	int64_t deadline;
	int has_parent;
};

static void task_spoil_token(struct keel_task *t, void *arg)
{
	(void)arg;
	keel_cancel_cancel(keel_task_token(t), -EPIPE);
}

static void task_deadline_token(struct keel_task *t, void *arg)
{
	(void)arg;
	keel_cancel_set_deadline(keel_task_token(t), 12345);
}

static void task_see_token(struct keel_task *t, void *arg)
{
	struct tok_seen *s = arg;

	s->err = keel_task_cancelled(t);
	s->deadline = keel_task_deadline(t);
	s->has_parent = keel_task_token(t)->parent != NULL;
}

TEST(every_task_gets_a_fresh_token)
{
	struct keel_pool_config cfg;
	struct keel_cancel parent;
	struct keel_task_options opt = { .name = NULL, .deadline = 0, .cancel = &parent };
	struct tok_seen seen[4];
	struct keel_pool *p;
	int i;

	memset(seen, 0x55, sizeof(seen));
	keel_cancel_init(&parent, NULL, NULL);
	config(&cfg, "tok", 1, 16, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_see_token, &seen[0], NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_spoil_token, NULL, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_see_token, &seen[1], NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_deadline_token, NULL, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_see_token, &seen[2], NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)5, &opt), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_see_token, &seen[3], NULL), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	for (i = 0; i < 4; i++) {
		CHECK_INT(seen[i].err, ==, 0);
		CHECK_INT(seen[i].deadline, ==, KEEL_NEVER);
		CHECK_INT(seen[i].has_parent, ==, 0);
	}
	CHECK_INT(runs_of(5), ==, 1);
	keel_cancel_cancel(&parent, 0); /* reaches no dead token */
	keel_pool_free(p);
	keel_cancel_destroy(&parent);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * A full queue
 * ------------------------------------------------------------------------ */

/* One worker held at the gate, queue_size tasks queued behind it. */
static struct keel_pool *full_pool(struct keel_pool_config *cfg)
{
	struct keel_pool *p = make(cfg);
	size_t i;

	CHECK_INT(keel_pool_submit(p, task_gate, NULL, NULL), ==, 0);
	WAIT_FOR(gate_waiters() == 1);
	for (i = 0; i < cfg->queue_size; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(100 + i), NULL),
			  ==, 0);
	CHECK_INT(stats_of(p).queued, ==, cfg->queue_size);
	return p;
}

TEST(full_queue_rejects)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;

	config(&cfg, "rej", 1, 2, KEEL_POOL_REJECT);
	p = full_pool(&cfg);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, NULL), ==,
		  -EAGAIN);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, NULL), ==,
		  -EAGAIN);
	s = stats_of(p);
	CHECK_INT(s.rejected, ==, 2);
	CHECK_INT(s.submitted, ==, 3);
	CHECK_INT(s.running, ==, 1);
	gate_open();
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(runs_of(1), ==, 0);
	CHECK_INT(runs_of(100) + runs_of(101), ==, 2);
	CHECK_INT(stats_of(p).completed, ==, 3);
	check_books(p);
	keel_pool_free(p);
}

struct blocked_submit {
	struct keel_pool *pool;
	int rc, done;
};

static void *submit_one(void *arg)
{
	struct blocked_submit *b = arg;

	b->rc = keel_pool_submit(b->pool, task_count, (void *)7, NULL);
	__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

TEST(full_queue_blocks_until_room)
{
	struct keel_pool_config cfg;
	struct blocked_submit b = { NULL, -1, 0 };
	struct keel_pool *p;
	pthread_t th;

	config(&cfg, "blk", 1, 1, KEEL_POOL_BLOCK);
	p = full_pool(&cfg);
	b.pool = p;
	CHECK_INT(pthread_create(&th, NULL, submit_one, &b), ==, 0);
	sleep_ms(50);
	CHECK_INT(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE), ==, 0);
	gate_open();
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(b.rc, ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(runs_of(7), ==, 1);
	CHECK_INT(stats_of(p).completed, ==, 3);
	CHECK_INT(stats_of(p).rejected, ==, 0);
	keel_pool_free(p);
}

TEST(full_queue_block_timeout)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;
	double t0, waited;

	config(&cfg, "blkt", 1, 1, KEEL_POOL_BLOCK);
	cfg.block_timeout = 30 * KEEL_MSEC;
	p = full_pool(&cfg);
	t0 = keel_test_now();
	CHECK_INT(keel_pool_submit(p, task_count, (void *)7, NULL), ==,
		  -EAGAIN);
	waited = keel_test_now() - t0;
	CHECK(waited >= 0.029);
	CHECK(waited < 2.0);
	CHECK_INT(stats_of(p).rejected, ==, 1);
	gate_open();
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(runs_of(7), ==, 0);
	CHECK_INT(stats_of(p).completed, ==, 2);
	keel_pool_free(p);
}

static pthread_t ran_on;
static int caller_worker = 99;
static char caller_msg[64];

static void task_where(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
	ran_on = pthread_self();
}

static void on_caller_panic(const struct keel_task_panic *info, void *ud)
{
	(void)ud;
	caller_worker = info->worker;
	snprintf(caller_msg, sizeof(caller_msg), "%s",
		 keel_panic_message(info->panic));
}

TEST(full_queue_caller_runs)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;

	config(&cfg, "cr", 1, 1, KEEL_POOL_CALLER_RUNS);
	cfg.on_panic = on_caller_panic;
	p = full_pool(&cfg);
	CHECK_INT(keel_pool_submit(p, task_where, NULL, NULL), ==, 0);
	CHECK(pthread_equal(ran_on, pthread_self())); /* ran before returning */
	/* The same isolation as on a worker. */
	CHECK_INT(keel_pool_submit(p, task_panic, "caller boom", NULL), ==, 0);
	CHECK_INT(caller_worker, ==, -1);
	CHECK_STR(caller_msg, "caller boom");
	s = stats_of(p);
	CHECK_INT(s.caller_runs, ==, 2);
	CHECK_INT(s.panicked, ==, 1);
	CHECK_INT(s.completed, ==, 1);
	CHECK_INT(s.submitted, ==, 4);
	CHECK_INT(s.queued, ==, 1);
	gate_open();
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	s = stats_of(p);
	CHECK_INT(s.completed, ==, 3);
	check_books(p);
	keel_pool_free(p);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Tasks that submit to their own pool
 * ------------------------------------------------------------------------ */

static struct keel_pool *tree_pool;
static int tree_fanout, tree_depth, tree_runs, tree_failed;

static void task_tree(struct keel_task *t, void *arg)
{
	int depth = (int)(intptr_t)arg, i;

	(void)t;
	__atomic_add_fetch(&tree_runs, 1, __ATOMIC_RELAXED);
	if (depth == tree_depth)
		return;
	for (i = 0; i < tree_fanout; i++)
		if (keel_pool_submit(tree_pool, task_tree,
				     (void *)(intptr_t)(depth + 1), NULL) != 0)
			__atomic_add_fetch(&tree_failed, 1, __ATOMIC_RELAXED);
}

static int tree_size(int fanout, int depth)
{
	int n = 1, level = 1, i;

	for (i = 0; i < depth; i++) {
		level *= fanout;
		n += level;
	}
	return n;
}

static void run_tree(enum keel_pool_full full, size_t qsize, int fanout,
		     int depth)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	int n = tree_size(fanout, depth);

	config(&cfg, "tree", 2, qsize, full);
	tree_pool = make(&cfg);
	tree_fanout = fanout;
	tree_depth = depth;
	tree_runs = tree_failed = 0;
	CHECK_INT(keel_pool_submit(tree_pool, task_tree, (void *)0, NULL), ==,
		  0);
	WAIT_FOR(stats_of(tree_pool).completed == (uint64_t)n);
	CHECK_INT(keel_pool_shutdown(tree_pool, KEEL_POOL_DRAIN, 0), ==, 0);
	s = stats_of(tree_pool);
	CHECK_INT(tree_failed, ==, 0);
	CHECK_INT(tree_runs, ==, n);
	CHECK_INT(s.submitted, ==, n);
	CHECK_INT(s.completed, ==, n);
	check_books(tree_pool);
	keel_pool_free(tree_pool);
}

TEST(tasks_submit_to_their_own_pool)
{
	run_tree(KEEL_POOL_BLOCK, 1024, 2, 10); /* room for all */
	run_tree(KEEL_POOL_CALLER_RUNS, 2, 4, 4);
}

/* BLOCK with a queue of 1 and both workers submitting: each would wait for
 * room that only the other could make. The last worker to find the queue
 * full runs the task itself instead of waiting for ever. */
TEST(tasks_submitting_into_a_full_queue_do_not_deadlock)
{
	run_tree(KEEL_POOL_BLOCK, 1, 4, 4);
}

static int from_task_rc = 1, free_rc = 1;

static void task_shutdown_self(struct keel_task *t, void *arg)
{
	(void)t;
	from_task_rc = keel_pool_shutdown(arg, KEEL_POOL_DRAIN, 0);
}

static void task_free_self(struct keel_task *t, void *arg)
{
	(void)t;
	free_rc = 0;
	keel_pool_free(arg); /* panics: it would free the pool under itself */
	free_rc = 2;
}

TEST(shutdown_from_own_task)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;

	config(&cfg, "self", 1, 8, KEEL_POOL_BLOCK);
	cfg.on_panic = on_caller_panic;
	p = make(&cfg);
	/* Both queued before either runs: the first one stops the pool. */
	CHECK_INT(keel_pool_submit(p, task_gate, NULL, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_free_self, p, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_shutdown_self, p, NULL), ==, 0);
	gate_open();
	WAIT_FOR(stats_of(p).completed + stats_of(p).panicked == 3);
	CHECK_INT(free_rc, ==, 0);
	CHECK_STR(caller_msg,
		  "keel_pool_free called from a task of the same pool");
	CHECK_INT(from_task_rc, ==, -EDEADLK); /* it cannot wait for itself */
	CHECK_INT(keel_pool_submit(p, task_count, NULL, NULL), ==, -ESHUTDOWN);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	keel_pool_free(p);
}

/* ------------------------------------------------------------------------
 * Shutdown
 * ------------------------------------------------------------------------ */

TEST(shutdown_drain_runs_every_queued_task)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i;

	config(&cfg, "drain", 1, 64, KEEL_POOL_BLOCK);
	p = full_pool(&cfg);
	/* The gate holds the worker: the wait times out, the pool stops. */
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 20 * KEEL_MSEC), ==,
		  -ETIMEDOUT);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, NULL), ==,
		  -ESHUTDOWN);
	CHECK_INT(stats_of(p).queued, ==, 64);
	gate_open();
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	for (i = 0; i < 64; i++)
		CHECK_INT(runs_of(100 + i), ==, 1);
	CHECK_INT(runs_of(1), ==, 0);
	s = stats_of(p);
	CHECK_INT(s.completed, ==, 65);
	CHECK_INT(s.cancelled, ==, 0);
	CHECK_INT(s.rejected, ==, 1);
	CHECK_INT(s.threads + s.queued + s.running, ==, 0);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, NULL), ==,
		  -ESHUTDOWN);
	check_books(p);
	keel_pool_free(p);
	keel_test_leak_check();
}

TEST(shutdown_cancel_drops_queued_and_cancels_running)
{
	struct keel_pool_config cfg;
	struct waited w[2] = { { 0 }, { 0 } };
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i;

	config(&cfg, "cancel", 2, 64, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_wait_token, &w[0], NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_wait_token, &w[1], NULL), ==, 0);
	WAIT_FOR(has_started(&w[0]) && has_started(&w[1]));
	for (i = 0; i < 30; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(100 + i), NULL),
			  ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(w[0].reason, ==, -ECANCELED);
	CHECK_INT(w[1].reason, ==, -ECANCELED);
	for (i = 0; i < 30; i++)
		CHECK_INT(runs_of(100 + i), ==, 0);
	s = stats_of(p);
	CHECK_INT(s.cancelled, ==, 30);
	CHECK_INT(s.completed, ==, 2);
	CHECK_INT(s.submitted, ==, s.completed + s.panicked + s.cancelled);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, NULL), ==,
		  -ESHUTDOWN);
	keel_pool_free(p);
	keel_test_leak_check();
}

/* A drain that times out can still be turned into a cancel. */
TEST(shutdown_drain_then_cancel)
{
	struct keel_pool_config cfg;
	struct waited w = { 0 };
	struct keel_pool *p;

	config(&cfg, "dc", 1, 8, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_wait_token, &w, NULL), ==, 0);
	WAIT_FOR(has_started(&w));
	CHECK_INT(keel_pool_submit(p, task_count, (void *)3, NULL), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 10 * KEEL_MSEC), ==,
		  -ETIMEDOUT);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(w.reason, ==, -ECANCELED);
	CHECK_INT(runs_of(3), ==, 0);
	CHECK_INT(stats_of(p).cancelled, ==, 1);
	keel_pool_free(p);
}

/* Threads submit while another shuts the pool down: every accepted task
 * ran exactly once or was counted cancelled; nothing else ran. */
#define RACE_SUBMITTERS 3
#define RACE_PER 2000

static int race_accepted[RACE_SUBMITTERS * RACE_PER];

struct racer {
	struct keel_pool *pool;
	int base;
	int accepted, last_rc;
};

static void *race_submit(void *arg)
{
	struct racer *r = arg;
	int i, rc = 0;

	for (i = 0; i < RACE_PER; i++) {
		rc = keel_pool_submit(r->pool, task_count,
				      (void *)(intptr_t)(r->base + i), NULL);
		if (rc != 0)
			break;
		race_accepted[r->base + i] = 1;
		r->accepted++;
	}
	r->last_rc = rc;
	return NULL;
}

TEST(shutdown_races_with_submitters)
{
	int round, rounds = 200;

	for (round = 0; round < rounds; round++) {
		enum keel_pool_stop how = round % 2 ? KEEL_POOL_CANCEL
						     : KEEL_POOL_DRAIN;
		struct racer r[RACE_SUBMITTERS];
		pthread_t th[RACE_SUBMITTERS];
		struct keel_pool_config cfg;
		struct keel_pool_stats s;
		struct keel_pool *p;
		uint64_t accepted = 0, lost = 0, failed = 0;
		int i;

		memset(runs, 0, sizeof(runs));
		memset(race_accepted, 0, sizeof(race_accepted));
		config(&cfg, "race", 2, 16,
		       round % 3 == 2 ? KEEL_POOL_CALLER_RUNS
				      : KEEL_POOL_BLOCK);
		p = make(&cfg);
		for (i = 0; i < RACE_SUBMITTERS; i++) {
			r[i] = (struct racer){ p, i * RACE_PER, 0, 0 };
			CHECK_INT(pthread_create(&th[i], NULL, race_submit,
						 &r[i]), ==, 0);
		}
		if (round % 4)
			usleep((useconds_t)(round % 4) * 300);
		CHECK_INT(keel_pool_shutdown(p, how, 0), ==, 0);
		for (i = 0; i < RACE_SUBMITTERS; i++) {
			CHECK_INT(pthread_join(th[i], NULL), ==, 0);
			accepted += (uint64_t)r[i].accepted;
			if (r[i].last_rc != 0) {
				CHECK_INT(r[i].last_rc, ==, -ESHUTDOWN);
				failed++;
			}
		}
		for (i = 0; i < RACE_SUBMITTERS * RACE_PER; i++) {
			if (runs_of(i) > 1 || (runs_of(i) && !race_accepted[i]))
				KEEL_TEST_FAIL("round %d: task %d ran %d times "
					       "(accepted %d)", round, i,
					       runs_of(i), race_accepted[i]);
			if (race_accepted[i] && !runs_of(i))
				lost++;
		}
		s = stats_of(p);
		CHECK_INT(s.submitted, ==, accepted);
		CHECK_INT(s.cancelled, ==, lost);
		CHECK_INT(s.rejected, ==, failed);
		CHECK_INT(s.submitted, ==, s.completed + s.cancelled);
		if (how == KEEL_POOL_DRAIN)
			CHECK_INT(lost, ==, 0);
		keel_pool_free(p);
	}
}

/* ------------------------------------------------------------------------
 * Elastic pools
 * ------------------------------------------------------------------------ */

TEST(elastic_pool_grows_to_max_and_shrinks_to_min)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;
	int i;

	config(&cfg, "el", 1, 16, KEEL_POOL_BLOCK);
	cfg.max_threads = 4;
	cfg.idle_timeout = 30 * KEEL_MSEC;
	p = make(&cfg);
	CHECK_INT(stats_of(p).threads, ==, 1);
	for (i = 0; i < 4; i++)
		CHECK_INT(keel_pool_submit(p, task_gate, NULL, NULL), ==, 0);
	WAIT_FOR(gate_waiters() == 4); /* four at once: four threads */
	for (i = 0; i < 6; i++)
		CHECK_INT(keel_pool_submit(p, task_count, (void *)(intptr_t)i,
					   NULL), ==, 0);
	CHECK_INT(stats_of(p).threads, ==, 4); /* and no more */
	CHECK_INT(stats_of(p).queued, ==, 6);
	gate_open();
	WAIT_FOR(stats_of(p).completed == 10);
	WAIT_FOR(stats_of(p).threads == 1);
	sleep_ms(60); /* min_threads stay */
	CHECK_INT(stats_of(p).threads, ==, 1);

	/* And it grows again. */
	pthread_mutex_lock(&gate_mu);
	gate_opened = 0;
	pthread_mutex_unlock(&gate_mu);
	for (i = 0; i < 3; i++)
		CHECK_INT(keel_pool_submit(p, task_gate, NULL, NULL), ==, 0);
	WAIT_FOR(gate_waiters() == 3);
	CHECK_INT(stats_of(p).threads, ==, 3);
	gate_open();
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(stats_of(p).completed, ==, 13);
	CHECK_INT(stats_of(p).threads, ==, 0);
	keel_pool_free(p);
	keel_test_leak_check();
}

TEST(elastic_pool_from_zero_threads)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;
	int i;

	config(&cfg, "zero", 0, 16, KEEL_POOL_BLOCK);
	cfg.max_threads = 2;
	cfg.idle_timeout = 10 * KEEL_MSEC;
	p = make(&cfg);
	CHECK_INT(stats_of(p).threads, ==, 0);
	for (i = 0; i < 3; i++) {
		CHECK_INT(keel_pool_submit(p, task_count, (void *)(intptr_t)i,
					   NULL), ==, 0);
		WAIT_FOR(runs_of(i) == 1);
		WAIT_FOR(stats_of(p).threads == 0);
	}
	CHECK_INT(stats_of(p).completed, ==, 3);
	keel_pool_free(p);
}

/* ------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------ */

/* Moves the virtual clock by arg ns: the task's latency, to the ns. */
static void task_takes(struct keel_task *t, void *arg)
{
	(void)t;
	keel_vclock_advance(&vc, (int64_t)(intptr_t)arg);
}

TEST(stats_latency_on_the_pool_clock)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	config(&cfg, "lat", 1, 8, KEEL_POOL_BLOCK);
	cfg.clock = &vc.clock;
	p = make(&cfg);
	s = stats_of(p);
	CHECK_INT(s.latency_count, ==, 0);
	CHECK(s.latency_avg_ns == 0 && s.latency_max_ns == 0);
	CHECK_INT(keel_pool_submit(p, task_takes,
				   (void *)(intptr_t)(7 * KEEL_MSEC), NULL),
		  ==, 0);
	WAIT_FOR(stats_of(p).completed == 1);
	CHECK_INT(keel_pool_submit(p, task_takes,
				   (void *)(intptr_t)(3 * KEEL_MSEC), NULL),
		  ==, 0);
	WAIT_FOR(stats_of(p).completed == 2);
	s = stats_of(p);
	CHECK_INT(s.latency_count, ==, 2);
	CHECK(s.latency_avg_ns == 5.0 * KEEL_MSEC);
	CHECK(s.latency_max_ns == 7.0 * KEEL_MSEC);
	CHECK_INT(s.submitted, ==, 2);
	CHECK_INT(s.running + s.queued, ==, 0);
	CHECK_INT(s.threads, ==, 1);
	keel_pool_free(p);
	keel_vclock_destroy(&vc);
}

/* Tasks that come microseconds apart are all timed; only a pool running
 * more than about a million tasks a second samples. */
TEST(stats_time_every_task_of_a_slow_pool)
{
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *p;
	int i;

	config(&cfg, "slow", 1, 256, KEEL_POOL_BLOCK);
	p = make(&cfg);
	for (i = 0; i < 200; i++)
		CHECK_INT(keel_pool_submit(p, task_busy_us,
					   (void *)(intptr_t)20, NULL), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	s = stats_of(p);
	CHECK_INT(s.completed, ==, 200);
	CHECK_INT(s.latency_count, ==, 200);
	CHECK(s.latency_avg_ns >= 20 * KEEL_USEC);
	CHECK(s.latency_max_ns >= 200 * 20 * KEEL_USEC / 2); /* the last one */
	keel_pool_free(p);
}

TEST(a_task_allocates_nothing)
{
	struct keel_pool_config cfg;
	struct keel_pool *p;
	int i;

	if (!KEEL_TEST_CAN_COUNT)
		KEEL_TEST_SKIP("sanitizers own malloc");
#if KEEL_TEST_CAN_COUNT
	config(&cfg, "alloc", 2, 1024, KEEL_POOL_BLOCK);
	cfg.task_deadline = 10 * KEEL_SEC; /* the watchdog runs too */
	p = make(&cfg);
	/* Both workers past their start-up (which allocates: the thread's
	 * keel state, its defer stack): hold both at the gate at once. */
	CHECK_INT(keel_pool_submit(p, task_gate, NULL, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_gate, NULL, NULL), ==, 0);
	WAIT_FOR(gate_waiters() == 2);
	gate_open();
	for (i = 0; i < 98; i++)
		CHECK_INT(keel_pool_submit(p, task_count, (void *)(intptr_t)i,
					   NULL), ==, 0);
	WAIT_FOR(stats_of(p).completed == 100);
	__atomic_store_n(&keel_test_counting, 1, __ATOMIC_SEQ_CST);
	for (i = 0; i < 10000; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(i % 100), NULL),
			  ==, 0);
	WAIT_FOR(stats_of(p).completed == 10100);
	__atomic_store_n(&keel_test_counting, 0, __ATOMIC_SEQ_CST);
	CHECK_INT(keel_test_allocations, ==, 0);
	keel_pool_free(p);
#else
	(void)cfg;
	(void)p;
	(void)i;
#endif
}

/* ------------------------------------------------------------------------
 * on_drop: the owner of a task dropped unrun hears of it once
 * ------------------------------------------------------------------------ */

static int dropped[MAX_IDS];
static int drop_elsewhere, drop_wrong;
static pthread_t drop_thread; /* where on_drop is expected to run */

static void on_drop_count(void *arg)
{
	__atomic_add_fetch(&dropped[(intptr_t)arg], 1, __ATOMIC_SEQ_CST);
	if (!pthread_equal(pthread_self(), drop_thread))
		__atomic_store_n(&drop_elsewhere, 1, __ATOMIC_SEQ_CST);
}

/* For tasks that must run, never be dropped. */
static void on_drop_wrong(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&drop_wrong, 1, __ATOMIC_SEQ_CST);
}

static int dropped_of(int id)
{
	return __atomic_load_n(&dropped[id], __ATOMIC_SEQ_CST);
}

TEST(on_drop_once_per_dropped_task_never_for_run_ones)
{
	struct keel_task_options opt = { .name = "d", .on_drop = on_drop_count };
	struct keel_task_options must_run = { .on_drop = on_drop_wrong };
	struct keel_pool_config cfg;
	struct waited w = { 0 };
	struct keel_pool *p;
	int i;

	drop_thread = pthread_self();
	config(&cfg, "drop", 1, 64, KEEL_POOL_BLOCK);
	p = make(&cfg);
	for (i = 0; i < 5; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(200 + i), &opt),
			  ==, 0);
	WAIT_FOR(stats_of(p).completed == 5);
	CHECK_INT(keel_pool_submit(p, task_wait_token, &w, &must_run), ==, 0);
	WAIT_FOR(has_started(&w));
	/* Every other one with an on_drop: NULL must be fine too. */
	for (i = 0; i < 30; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(300 + i),
					   i % 2 ? NULL : &opt),
			  ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(w.reason, ==, -ECANCELED);
	for (i = 0; i < 30; i++) {
		CHECK_INT(runs_of(300 + i), ==, 0);
		CHECK_INT(dropped_of(300 + i), ==, i % 2 ? 0 : 1);
	}
	for (i = 0; i < 5; i++) {
		CHECK_INT(runs_of(200 + i), ==, 1);
		CHECK_INT(dropped_of(200 + i), ==, 0);
	}
	CHECK_INT(drop_wrong, ==, 0);
	CHECK(!drop_elsewhere);
	CHECK_INT(stats_of(p).cancelled, ==, 30);
	/* Shutting down again, or freeing, tells nobody twice. */
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	keel_pool_free(p);
	for (i = 0; i < 30; i++)
		CHECK_INT(dropped_of(300 + i), ==, i % 2 ? 0 : 1);
	/* A refused submit is not a drop either. */
	p = make(&cfg);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_count, (void *)1, &opt), ==,
		  -ESHUTDOWN);
	CHECK_INT(dropped_of(1), ==, 0);
	keel_pool_free(p);
}

TEST(on_drop_not_called_by_a_drain)
{
	struct keel_task_options opt = { .on_drop = on_drop_count };
	struct keel_pool_config cfg;
	struct keel_pool *p;
	int i;

	drop_thread = pthread_self();
	config(&cfg, "dd", 1, 32, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_gate, NULL, &opt), ==, 0);
	WAIT_FOR(gate_waiters() == 1);
	for (i = 0; i < 32; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(400 + i), &opt),
			  ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 10 * KEEL_MSEC), ==,
		  -ETIMEDOUT);
	gate_open();
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	for (i = 0; i < 32; i++) {
		CHECK_INT(runs_of(400 + i), ==, 1);
		CHECK_INT(dropped_of(400 + i), ==, 0);
	}
	CHECK_INT(dropped_of(0), ==, 0);
	keel_pool_free(p);
}

/* A drain that timed out, turned into a cancel: what is still queued is
 * dropped then, and told once. */
TEST(on_drop_after_drain_turns_into_cancel)
{
	struct keel_task_options opt = { .on_drop = on_drop_count };
	struct keel_pool_config cfg;
	struct waited w = { 0 };
	struct keel_pool *p;
	int i;

	drop_thread = pthread_self();
	config(&cfg, "ddc", 1, 16, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_wait_token, &w, NULL), ==, 0);
	WAIT_FOR(has_started(&w));
	for (i = 0; i < 10; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(500 + i), &opt),
			  ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 10 * KEEL_MSEC), ==,
		  -ETIMEDOUT);
	for (i = 0; i < 10; i++)
		CHECK_INT(dropped_of(500 + i), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	for (i = 0; i < 10; i++) {
		CHECK_INT(dropped_of(500 + i), ==, 1);
		CHECK_INT(runs_of(500 + i), ==, 0);
	}
	CHECK(!drop_elsewhere);
	keel_pool_free(p);
}

/* on_drop runs outside the pool's lock: it may read the pool's statistics
 * and submit (refused) to the same pool. A deadlock ends in SIGALRM. */
static struct keel_pool *drop_pool;
static struct keel_pool_stats drop_seen;
static int drop_submit_rc = 1, drop_calls;

static void on_drop_uses_pool(void *arg)
{
	keel_pool_stats(drop_pool, &drop_seen);
	drop_submit_rc = keel_pool_submit(drop_pool, task_count, arg, NULL);
	drop_calls++;
}

TEST(on_drop_runs_outside_the_lock)
{
	struct keel_task_options opt = { .on_drop = on_drop_uses_pool };
	struct keel_pool_config cfg;
	struct waited w = { 0 };
	int i;

	alarm(20);
	config(&cfg, "dl", 1, 8, KEEL_POOL_BLOCK);
	drop_pool = make(&cfg);
	CHECK_INT(keel_pool_submit(drop_pool, task_wait_token, &w, NULL), ==,
		  0);
	WAIT_FOR(has_started(&w));
	for (i = 0; i < 8; i++)
		CHECK_INT(keel_pool_submit(drop_pool, task_count,
					   (void *)(intptr_t)(600 + i), &opt),
			  ==, 0);
	CHECK_INT(keel_pool_shutdown(drop_pool, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(drop_calls, ==, 8);
	CHECK_INT(drop_submit_rc, ==, -ESHUTDOWN);
	CHECK_INT(drop_seen.cancelled, ==, 8);
	CHECK_INT(drop_seen.queued, ==, 0);
	CHECK_INT(stats_of(drop_pool).rejected, ==, 8);
	for (i = 0; i < 8; i++)
		CHECK_INT(runs_of(600 + i), ==, 0);
	keel_pool_free(drop_pool);
	alarm(0);
}

/* A task that cancels its own pool: the drops are told on its thread,
 * before its shutdown call returns -EDEADLK. */
static int self_cancel_go, self_cancel_rc, self_cancel_drops_seen;

static void task_cancel_own_pool(struct keel_task *t, void *arg)
{
	int i;

	(void)t;
	drop_thread = pthread_self();
	for (i = 0; i < 5000 && !__atomic_load_n(&self_cancel_go,
						 __ATOMIC_SEQ_CST); i++)
		sleep_ms(1);
	self_cancel_rc = keel_pool_shutdown(arg, KEEL_POOL_CANCEL, 0);
	self_cancel_drops_seen = dropped_of(700) + dropped_of(701) +
				 dropped_of(702);
}

TEST(on_drop_when_a_task_cancels_its_own_pool)
{
	struct keel_task_options opt = { .on_drop = on_drop_count };
	struct keel_pool_config cfg;
	struct keel_pool *p;
	int i;

	drop_thread = pthread_self(); /* until the task takes over */
	config(&cfg, "dself", 1, 8, KEEL_POOL_BLOCK);
	p = make(&cfg);
	CHECK_INT(keel_pool_submit(p, task_cancel_own_pool, p, NULL), ==, 0);
	for (i = 0; i < 3; i++)
		CHECK_INT(keel_pool_submit(p, task_count,
					   (void *)(intptr_t)(700 + i), &opt),
			  ==, 0);
	__atomic_store_n(&self_cancel_go, 1, __ATOMIC_SEQ_CST);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	CHECK_INT(self_cancel_rc, ==, -EDEADLK);
	CHECK_INT(self_cancel_drops_seen, ==, 3);
	CHECK(!drop_elsewhere);
	for (i = 0; i < 3; i++)
		CHECK_INT(runs_of(700 + i), ==, 0);
	CHECK_INT(stats_of(p).cancelled, ==, 3);
	keel_pool_free(p);
}
