/*
 * examples/pool_crashes.c - a worker pool where a crashing task is just a
 * failed task (the design notes' "worker pool: each worker recovers on its
 * own", chapter 4.2).
 *
 * 10,000 tasks go through a pool of 4 workers. One task in a hundred
 * crashes, in turn by keel_panic, by dereferencing a NULL pointer (a real
 * SIGSEGV) and by dividing by zero (a real SIGFPE). Every task defers a
 * cleanup, which runs whether the task finished or crashed. The pool's
 * panic handler receives each crash with the stack captured where it
 * happened; the first few are printed (message, frame count, and the crash
 * site named from the stack), the rest only counted. The workers never
 * stop.
 *
 * Exits 0 when the pool reports 9,900 tasks completed and 100 panicked, the
 * handler saw the 100 (34 panics, 33 NULL dereferences, 33 divisions by
 * zero) each with a stack that names its crash site, and all 10,000
 * cleanups ran.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel.h>
#include <keel/pool.h>

const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allow_user_segv_handler=1";
}

#define NTASKS 10000
#define CRASH_EVERY 100 /* task i crashes when i % CRASH_EVERY == CRASH_AT */
#define CRASH_AT 42
#define SHOWN 4         /* crash reports printed */
#define NAME_LEN 16

/* ------------------------------------------------------------------------
 * The crash sites. Not static, so that dladdr can name them
 * (the example is linked with -rdynamic); the operands are volatile so the
 * compiler cannot see the fault coming.
 * ------------------------------------------------------------------------ */

int parse_header(const int *volatile *field);
int scale_price(int price, volatile int *quantity);
void check_invariant(int task);

static volatile int zero;
static const int *volatile no_field; /* NULL */

__attribute__((noinline, no_sanitize("undefined")))
int parse_header(const int *volatile *field)
{
	return *(const volatile int *)*field;
}

__attribute__((noinline, no_sanitize("undefined")))
int scale_price(int price, volatile int *quantity)
{
	return price / *quantity;
}

__attribute__((noinline))
void check_invariant(int task)
{
	keel_panicf("invariant broken in task %d", task);
}

/* ------------------------------------------------------------------------
 * The tasks
 * ------------------------------------------------------------------------ */

enum crash { CRASH_NONE, CRASH_PANIC, CRASH_NIL, CRASH_DIVIDE };

static atomic_long cleanups, finished;
static __thread volatile int sink; /* keeps each task's result */
static char names[NTASKS / CRASH_EVERY][NAME_LEN]; /* of the crashing tasks */

static enum crash crash_of(int i)
{
	if (i % CRASH_EVERY != CRASH_AT)
		return CRASH_NONE;
	switch (i / CRASH_EVERY % 3) {
	case 0:
		return CRASH_PANIC;
	case 1:
		return CRASH_NIL;
	default:
		return CRASH_DIVIDE;
	}
}

static void cleanup(void *arg)
{
	(void)arg;
	atomic_fetch_add_explicit(&cleanups, 1, memory_order_relaxed);
}

static void task(struct keel_task *t, void *arg)
{
	int i = (int)(intptr_t)arg;
	int value = i;

	(void)t;
	keel_defer(cleanup, NULL);
	switch (crash_of(i)) {
	case CRASH_PANIC:
		check_invariant(i);
		break;
	case CRASH_NIL:
		value = parse_header(&no_field);
		break;
	case CRASH_DIVIDE:
		value = scale_price(i, &zero);
		break;
	case CRASH_NONE:
		break;
	}
	sink = value;
	atomic_fetch_add_explicit(&finished, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * The panic handler: runs on the worker, after the task's deferred calls
 * ------------------------------------------------------------------------ */

struct crash_log {
	pthread_mutex_t lock;
	int count;
	int by_kind[3]; /* message, nil-dereference, divide-by-zero */
	int other;      /* any other kind: not expected */
	int no_stack;   /* reports without a captured stack */
	int site_named; /* reports whose stack names the crash site */
};

static const char *const crash_sites[] = {
	"check_invariant", "parse_header", "scale_price",
};

/*
 * The innermost frame that is one of the crash sites above, named with
 * dladdr (what backtrace_symbols uses); frames in libkeel, libc or a
 * sanitizer's runtime come first and are passed over. A return address is
 * looked up one byte back, so that a call that ends its function (to a
 * noreturn keel_panicf) is named after its caller, not the next function;
 * the faulting instruction itself, keel_panic_fault()->pc, is looked up as
 * it is.
 */
static const char *crash_site(const struct keel_panic *p, void *const *frames,
			      size_t n, size_t *where)
{
	void *pc = keel_panic_fault(p)->pc;

	for (size_t i = 0; i < n; i++) {
		char *addr = frames[i];
		Dl_info dl;

		if (addr != pc)
			addr--;
		if (dladdr(addr, &dl) == 0 || dl.dli_sname == NULL)
			continue;
		for (size_t k = 0; k < 3; k++) {
			if (strcmp(dl.dli_sname, crash_sites[k]) == 0) {
				*where = i;
				return crash_sites[k];
			}
		}
	}
	return NULL;
}

static void on_panic(const struct keel_task_panic *info, void *ud)
{
	struct crash_log *log = ud;
	const struct keel_panic *p = info->panic;
	void *const *frames;
	size_t nframes = keel_panic_stack(p, &frames);
	size_t where = 0;
	const char *site;
	int n, kind;

	pthread_mutex_lock(&log->lock);
	n = ++log->count;
	switch (keel_panic_kind(p)) {
	case KEEL_PANIC_MESSAGE:
		kind = 0;
		break;
	case KEEL_PANIC_NIL_DEREF:
		kind = 1;
		break;
	case KEEL_PANIC_DIVIDE:
		kind = 2;
		break;
	default:
		kind = -1;
		break;
	}
	site = crash_site(p, frames, nframes, &where);
	if (kind < 0) {
		log->other++;
	} else {
		log->by_kind[kind]++;
		log->site_named += site == crash_sites[kind];
	}
	log->no_stack += nframes == 0;
	if (n <= SHOWN) {
		printf("  crash %d: pool %s, task %s, worker %d: %s (%s)\n", n,
		       info->pool, info->task, info->worker,
		       keel_panic_message(p),
		       keel_panic_kind_name(keel_panic_kind(p)));
		printf("    stack: %zu frames, crash site: %s (frame %zu)\n",
		       nframes, site != NULL ? site : "not found", where);
	} else if (n == SHOWN + 1) {
		printf("  (the other crashes are counted, not printed)\n");
	}
	pthread_mutex_unlock(&log->lock);
}

int main(void)
{
	static struct crash_log log = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct keel_pool_config cfg;
	struct keel_pool_stats s;
	struct keel_pool *pool;
	int err, ok;

	if (keel_init() != 0)
		return 1;
	keel_pool_config_init(&cfg);
	cfg.name = "crashy";
	cfg.min_threads = 4;
	cfg.max_threads = 4;
	cfg.queue_size = 256;
	cfg.when_full = KEEL_POOL_BLOCK;
	cfg.on_panic = on_panic;
	cfg.panic_ud = &log;
	err = keel_pool_new(&cfg, &pool);
	if (err != 0) {
		fprintf(stderr, "keel_pool_new: %s\n", keel_strerror(err));
		return 1;
	}

	printf("submitting %d tasks to 4 workers; one in %d crashes\n", NTASKS,
	       CRASH_EVERY);
	for (int i = 0; i < NTASKS; i++) {
		struct keel_task_options opt = { 0 };

		if (crash_of(i) != CRASH_NONE) {
			char *name = names[i / CRASH_EVERY];

			snprintf(name, NAME_LEN, "task-%d", i);
			opt.name = name;
		}
		err = keel_pool_submit(pool, task, (void *)(intptr_t)i, &opt);
		if (err != 0) {
			fprintf(stderr, "keel_pool_submit: %s\n",
				keel_strerror(err));
			return 1;
		}
	}
	err = keel_pool_shutdown(pool, KEEL_POOL_DRAIN, 0);
	if (err != 0) {
		fprintf(stderr, "keel_pool_shutdown: %s\n", keel_strerror(err));
		return 1;
	}
	keel_pool_stats(pool, &s);
	keel_pool_free(pool);

	printf("pool stats: submitted %llu, completed %llu, panicked %llu, "
	       "rejected %llu, threads now %llu\n",
	       (unsigned long long)s.submitted, (unsigned long long)s.completed,
	       (unsigned long long)s.panicked, (unsigned long long)s.rejected,
	       (unsigned long long)s.threads);
	if (s.latency_count > 0)
		printf("latency, submit to finish: avg %.1f us, max %.1f us "
		       "(%llu tasks timed)\n", s.latency_avg_ns / 1e3,
		       s.latency_max_ns / 1e3,
		       (unsigned long long)s.latency_count);
	printf("panic handler: %d crashes (%d panics, %d NULL dereferences, %d "
	       "divisions by zero, %d other), %d without a stack,\n"
	       "               crash site named in %d stacks\n", log.count,
	       log.by_kind[0], log.by_kind[1], log.by_kind[2], log.other,
	       log.no_stack, log.site_named);
	printf("tasks: %ld finished, %ld cleanups ran\n",
	       atomic_load(&finished), atomic_load(&cleanups));

	ok = s.submitted == NTASKS && s.completed == 9900 &&
	     s.panicked == 100 && log.count == 100 && log.by_kind[0] == 34 &&
	     log.by_kind[1] == 33 && log.by_kind[2] == 33 && log.other == 0 &&
	     log.site_named == 100 && atomic_load(&finished) == 9900 &&
	     atomic_load(&cleanups) == NTASKS;
	puts(ok ? "ok: every crash was one failed task; the pool kept working" :
		  "FAILED: the numbers are not as expected");
	return ok ? 0 : 1;
}
