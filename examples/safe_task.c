/*
 * examples/safe_task.c - the design notes' safeTask (chapter 4.2), in C: a
 * panic in one thread stays in that thread.
 *
 * The seed's Go:
 *
 *     func safeTask() {
 *             defer func() {
 *                     if r := recover(); r != nil {
 *                             log.Printf("recover from panic: %v", r)
 *                     }
 *             }()
 *             panic("something went wrong")
 *     }
 *
 * main starts four threads with keel_go, each with a panic handler of its
 * own that logs what reaches it:
 *
 *   safeTask   the seed's function: it defers a recovering logger and
 *              panics, in a scope of its own (keel_call); it recovers its
 *              own panic and returns normally, so its thread's handler has
 *              nothing to do;
 *   faulty     dereferences a NULL pointer (a real SIGSEGV) and recovers
 *              nothing: its thread's handler receives the panic after the
 *              thread's deferred calls ran, logs it, and the thread ends -
 *              the process does not;
 *   worker-1,  add up numbers, but only after both crashes were handled,
 *   worker-2   which shows they were running all along and never noticed.
 *
 * main joins the four and prints a summary. Exits 0 only when it went as
 * told here.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <keel.h>
#include <keel/go.h>

const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allow_user_segv_handler=1";
}

struct task {
	const char *name;
	void (*fn)(void *arg);
	struct keel_thread *thread;
	int joined;          /* keel_go_join: 0 returned, 1 ended by a panic */
	int handled;         /* panics its keel_go handler received */
	int recovered;       /* panics it recovered itself */
	int cleaned_up;      /* its deferred cleanup ran */
	int cleaned_first;   /* ... before its keel_go handler was called */
	char message[128];   /* what its handlers logged */
	enum keel_panic_kind kind;
	long sum;            /* a worker's result */
	int saw_crashes;     /* a worker finished after both crashes */
};

static atomic_int crashes_handled;

static void logf_task(const struct task *t, const char *what, const char *msg)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	printf("%02d:%02d:%02d.%03ld [%s] %s: %s\n", tm.tm_hour, tm.tm_min,
	       tm.tm_sec, ts.tv_nsec / 1000000, t->name, what, msg);
	fflush(stdout);
}

static void keep_panic(struct task *t, const struct keel_panic *p)
{
	snprintf(t->message, sizeof(t->message), "%s", keel_panic_message(p));
	t->kind = keel_panic_kind(p);
}

/* The panic handler given to keel_go, one task (ud) per thread. */
static void on_thread_panic(const struct keel_panic *p, void *ud)
{
	struct task *t = ud;

	t->handled++;
	t->cleaned_first = t->cleaned_up;
	keep_panic(t, p);
	logf_task(t, "thread panic handler", keel_panic_message(p));
	atomic_fetch_add(&crashes_handled, 1);
}

/* ------------------------------------------------------------------------
 * safeTask: the seed's function, recovering its own panic
 * ------------------------------------------------------------------------ */

static void recover_and_log(void *arg)
{
	struct task *t = arg;
	const struct keel_panic *p = keel_recover();

	if (p == NULL)
		return;
	t->recovered++;
	keep_panic(t, p);
	logf_task(t, "recover from panic", keel_panic_message(p));
	atomic_fetch_add(&crashes_handled, 1);
}

static void safe_task_body(void *arg)
{
	keel_defer(recover_and_log, arg);
	keel_panic("something went wrong");
}

/*
 * A Go defer belongs to its function; a keel_defer to the innermost open
 * scope. keel_call gives safeTask a scope of its own, as a Go function has,
 * so its recover stops the panic inside it and the thread's function
 * returns normally. (Without it the defer would join the thread's outermost
 * scope, and the thread would end by a recovered panic, not by returning.)
 */
static void safe_task(void *arg)
{
	keel_call(safe_task_body, arg);
}

/* ------------------------------------------------------------------------
 * faulty: a NULL dereference nobody in the thread recovers
 * ------------------------------------------------------------------------ */

struct record {
	int id;
};

static struct record *volatile missing_record; /* NULL: the bug */

__attribute__((noinline, no_sanitize("undefined")))
static int record_id(const struct record *r)
{
	return *(const volatile int *)&r->id;
}

static void release(void *arg)
{
	struct task *t = arg;

	t->cleaned_up = 1;
}

static void faulty_task(void *arg)
{
	struct task *t = arg;

	keel_defer(release, t); /* runs before the handler is called */
	logf_task(t, "loading record", "id of a record that is not there");
	printf("never printed: id %d\n", record_id(missing_record));
}

/* ------------------------------------------------------------------------
 * Workers: real work, finished after the crashes
 * ------------------------------------------------------------------------ */

static void worker_task(void *arg)
{
	struct task *t = arg;
	struct timespec ms = { 0, 1000000 };
	char line[64];

	for (int waited = 0; waited < 5000; waited++) {
		if (atomic_load(&crashes_handled) == 2) {
			t->saw_crashes = 1;
			break;
		}
		nanosleep(&ms, NULL);
	}
	for (long i = 1; i <= 1000; i++)
		t->sum += i;
	snprintf(line, sizeof(line), "sum(1..1000) = %ld", t->sum);
	logf_task(t, t->saw_crashes ? "finished after both crashes" :
				      "finished (crashes not seen in 5 s)",
		  line);
}

int main(void)
{
	struct task tasks[] = {
		{ .name = "worker-1", .fn = worker_task },
		{ .name = "worker-2", .fn = worker_task },
		{ .name = "safeTask", .fn = safe_task },
		{ .name = "faulty", .fn = faulty_task },
	};
	const size_t n = sizeof(tasks) / sizeof(tasks[0]);
	struct task *safe = &tasks[2], *faulty = &tasks[3];
	int finished = 0, ok;

	if (keel_init() != 0)
		return 1;
	puts("main: starting 4 threads, each with its own panic handler");
	for (size_t i = 0; i < n; i++) {
		struct keel_go_options opt;
		int err;

		keel_go_options_init(&opt);
		opt.name = tasks[i].name;
		opt.on_panic = on_thread_panic;
		opt.panic_ud = &tasks[i];
		err = keel_go(tasks[i].fn, &tasks[i], &opt, &tasks[i].thread);
		if (err != 0) {
			fprintf(stderr, "keel_go(%s): %s\n", tasks[i].name,
				keel_strerror(err));
			return 1;
		}
	}
	for (size_t i = 0; i < n; i++)
		tasks[i].joined = keel_go_join(tasks[i].thread);

	puts("main: all 4 threads joined");
	for (size_t i = 0; i < 2; i++) {
		printf("  %-9s returned, sum = %ld, %s\n", tasks[i].name,
		       tasks[i].sum, tasks[i].saw_crashes ?
		       "after both crashes" : "without seeing the crashes");
		finished += tasks[i].joined == 0 && tasks[i].sum == 500500 &&
			    tasks[i].saw_crashes;
	}
	printf("  %-9s returned, recovered its own panic \"%s\"\n", safe->name,
	       safe->message);
	printf("  %-9s ended by a panic (%s) \"%s\"; its deferred cleanup %s\n",
	       faulty->name, keel_panic_kind_name(faulty->kind),
	       faulty->message, faulty->cleaned_first ?
	       "ran before its handler" : "did NOT run first");
	printf("main: 2 threads crashed, %d of 2 finished their work, and main "
	       "carries on\n", finished);

	if (safe->joined != 0 || safe->recovered != 1 || safe->handled != 0)
		printf("unexpected: safeTask joined %d, recovered %d, "
		       "handled %d\n", safe->joined, safe->recovered,
		       safe->handled);
	if (faulty->joined != 1 || faulty->handled != 1 || faulty->recovered)
		printf("unexpected: faulty joined %d, recovered %d, "
		       "handled %d\n", faulty->joined, faulty->recovered,
		       faulty->handled);
	ok = finished == 2 &&
	     safe->joined == 0 && safe->recovered == 1 && safe->handled == 0 &&
	     strcmp(safe->message, "something went wrong") == 0 &&
	     faulty->joined == 1 && faulty->handled == 1 &&
	     faulty->recovered == 0 && faulty->cleaned_first &&
	     faulty->kind == KEEL_PANIC_NIL_DEREF &&
	     atomic_load(&crashes_handled) == 2;
	return ok ? 0 : 1;
}
