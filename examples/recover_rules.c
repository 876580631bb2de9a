/*
 * examples/recover_rules.c - where keel_recover() stops a panic and where it
 * returns NULL: the seed's table of recover rules (chapters 2.2 and 2.4),
 * each row checked by a real call.
 *
 * The seed's rules, for Go:
 *   - recover only works in a deferred function; called directly it
 *     returns nil;
 *   - it does not cross goroutines: each one needs its own defer;
 *   - after a panic it is the place to log and clean up.
 * keel follows them, with one difference: keel_recover() works anywhere in
 * the dynamic extent of the deferred call, so a helper that the deferred
 * function calls can recover (Go allows only the deferred function's own
 * body; in C, inlining decides what is a separate function, so keel cannot
 * draw that line).
 *
 * Prints one row per rule and exits 1 if any row differs from the expected
 * result.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <keel.h>

/* Each probe reports what keel_recover() gave it. */
enum got { GOT_NOTHING_YET, GOT_NULL, GOT_PANIC };

static enum got probe(void)
{
	return keel_recover() != NULL ? GOT_PANIC : GOT_NULL;
}

static const char *got_name(enum got g)
{
	return g == GOT_PANIC ? "panic" : g == GOT_NULL ? "NULL" : "(not run)";
}

/*
 * A deferred call that recovers, and stores what it got.
 *
 * The locals it stores into are volatile: they change between the scope's
 * setjmp and the panic's longjmp, so C11 7.13.2.1 leaves them indeterminate
 * otherwise (clang -O2 really does read back the initial value).
 */
static void deferred_probe(void *arg)
{
	*(volatile enum got *)arg = probe();
}

/* ------------------------------------------------------------------------
 * The rows
 * ------------------------------------------------------------------------ */

static const char *direct_call(void)
{
	return got_name(probe());
}

static const char *deferred_during_panic(void)
{
	volatile enum got g = GOT_NOTHING_YET;

	KEEL_SCOPE {
		keel_defer(deferred_probe, (void *)&g);
		keel_panic("row 2");
	}
	return got_name(g);
}

static const char *deferred_normal_end(void)
{
	volatile enum got g = GOT_NOTHING_YET;

	KEEL_SCOPE {
		keel_defer(deferred_probe, (void *)&g);
	}
	return got_name(g);
}

/* The first recover stops the panic; there is nothing left for a second. */
struct twice {
	volatile enum got first, second;
};

static void recover_twice(void *arg)
{
	struct twice *t = arg;

	t->first = probe();
	t->second = probe();
}

static const char *second_recover(void)
{
	struct twice t = { GOT_NOTHING_YET, GOT_NOTHING_YET };

	KEEL_SCOPE {
		keel_defer(recover_twice, &t);
		keel_panic("row 4");
	}
	return t.first == GOT_PANIC ? got_name(t.second) : "first failed";
}

/* noinline: the row is about a real call below the deferred function. */
static __attribute__((noinline)) void helper_recovers(volatile enum got *g)
{
	*g = probe();
}

static void deferred_calls_helper(void *arg)
{
	helper_recovers(arg);
}

static const char *helper_of_deferred(void)
{
	volatile enum got g = GOT_NOTHING_YET;

	KEEL_SCOPE {
		keel_defer(deferred_calls_helper, (void *)&g);
		keel_panic("row 5");
	}
	return got_name(g);
}

/*
 * A deferred call that opens a scope of its own: that scope's deferred
 * calls run because the scope ended normally, not because of the panic, so
 * they cannot recover it (Go agrees). The outer deferred call still can.
 */
struct nested {
	volatile enum got inner, outer;
};

static void deferred_with_nested_scope(void *arg)
{
	struct nested *n = arg;

	KEEL_SCOPE {
		keel_defer(deferred_probe, (void *)&n->inner);
	}
	n->outer = probe();
}

static const char *nested_scope_in_deferred(void)
{
	struct nested n = { GOT_NOTHING_YET, GOT_NOTHING_YET };

	KEEL_SCOPE {
		keel_defer(deferred_with_nested_scope, &n);
		keel_panic("row 6");
	}
	return n.outer == GOT_PANIC ? got_name(n.inner) : "outer failed";
}

/* A panic belongs to its thread: another thread cannot recover it. */
struct cross {
	volatile enum got other, own;
};

static void *other_thread_probe(void *arg)
{
	*(volatile enum got *)arg = probe();
	return NULL;
}

static void deferred_asks_other_thread(void *arg)
{
	struct cross *x = arg;
	pthread_t th;

	if (pthread_create(&th, NULL, other_thread_probe,
			   (void *)&x->other) == 0)
		pthread_join(th, NULL);
	x->own = probe(); /* stop the panic here, where it belongs */
}

static const char *other_thread(void)
{
	struct cross x = { GOT_NOTHING_YET, GOT_NOTHING_YET };

	KEEL_SCOPE {
		keel_defer(deferred_asks_other_thread, &x);
		keel_panic("row 7");
	}
	return x.own == GOT_PANIC ? got_name(x.other) : "own failed";
}

/* A worker that defers its own recover keeps its panic to itself. */
static void *worker_with_own_defer(void *arg)
{
	KEEL_SCOPE {
		keel_defer(deferred_probe, arg);
		keel_panic("row 8");
	}
	return NULL;
}

static const char *worker_own_recover(void)
{
	enum got g = GOT_NOTHING_YET;
	pthread_t th;

	if (pthread_create(&th, NULL, worker_with_own_defer, &g) != 0)
		return "pthread_create failed";
	pthread_join(th, NULL);
	return got_name(g);
}

/*
 * A worker with no recover of its own panics while main has one deferred:
 * main's recover cannot help, the panic is unrecovered and the process exits
 * with status 2. Run in a child so that this process survives; the child's
 * crash report is read from a pipe and checked, not shown.
 */
static void *worker_without_defer(void *arg)
{
	(void)arg;
	keel_panic("worker failed");
}

static void child_main_has_recover(void)
{
	volatile enum got g = GOT_NOTHING_YET;
	pthread_t th;

	KEEL_SCOPE {
		keel_defer(deferred_probe, (void *)&g);
		if (pthread_create(&th, NULL, worker_without_defer, NULL) == 0)
			pthread_join(th, NULL);
	}
	_exit(g == GOT_PANIC ? 10 : 11); /* only if the worker was rescued */
}

static const char *worker_no_recover(void)
{
	static char got[32];
	char report[4096];
	size_t n = 0;
	int fds[2], status;
	pid_t pid;

	if (pipe(fds) != 0)
		return "pipe failed";
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return "fork failed";
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		child_main_has_recover();
	}
	close(fds[1]);
	for (;;) {
		ssize_t r = read(fds[0], report + n, sizeof(report) - 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == sizeof(report) - 1)
			break;
	}
	report[n] = '\0';
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(status))
		snprintf(got, sizeof(got), "signal %d", WTERMSIG(status));
	else if (WEXITSTATUS(status) == 2 &&
		 strstr(report, "panic: worker failed") == NULL)
		snprintf(got, sizeof(got), "exit 2, no report");
	else
		snprintf(got, sizeof(got), "exit %d", WEXITSTATUS(status));
	return got;
}

/* After a recover: log, and the cleanups deferred before have all run. */
struct aftermath {
	volatile int cleaned;
	volatile enum got g;
	volatile int logged;  /* it had the panic's message to log */
};

static void release_connection(void *arg)
{
	((struct aftermath *)arg)->cleaned = 1;
}

static void log_and_recover(void *arg)
{
	struct aftermath *a = arg;
	const struct keel_panic *p = keel_recover();

	a->g = p != NULL ? GOT_PANIC : GOT_NULL;
	if (p != NULL)
		a->logged = strcmp(keel_panic_message(p),
				   "lost connection") == 0;
}

static const char *log_and_clean_up(void)
{
	struct aftermath a = { 0, GOT_NOTHING_YET, 0 };

	KEEL_SCOPE {
		keel_defer(log_and_recover, &a);
		keel_defer(release_connection, &a);
		keel_panic("lost connection");
	}
	if (a.g != GOT_PANIC)
		return got_name(a.g);
	if (!a.cleaned || !a.logged)
		return "panic, no cleanup/log";
	return "panic + cleanup";
}

/* ------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------ */

struct row {
	const char *scenario;
	const char *(*run)(void);
	const char *expected;
};

static const struct row rows[] = {
	{ "called directly, no panic in flight", direct_call, "NULL" },
	{ "in a deferred call, during a panic", deferred_during_panic,
	  "panic" },
	{ "in a deferred call, scope ended normally", deferred_normal_end,
	  "NULL" },
	{ "second call in the same deferred call", second_recover, "NULL" },
	{ "in a helper the deferred call calls (*)", helper_of_deferred,
	  "panic" },
	{ "in a nested scope's defer, inside a defer", nested_scope_in_deferred,
	  "NULL" },
	{ "on another thread, while this one panics", other_thread, "NULL" },
	{ "worker thread with its own deferred recover", worker_own_recover,
	  "panic" },
	{ "worker panics, only main has a recover (+)", worker_no_recover,
	  "exit 2" },
	{ "deferred log after deferred cleanup", log_and_clean_up,
	  "panic + cleanup" },
};

int main(void)
{
	size_t i, bad = 0;

	printf("%-44s %-16s %s\n", "scenario", "recover returned", "expected");
	printf("%-44s %-16s %s\n", "--------", "----------------", "--------");
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *got = rows[i].run();
		int same = strcmp(got, rows[i].expected) == 0;

		printf("%-44s %-16s %-16s %s\n", rows[i].scenario, got,
		       rows[i].expected, same ? "ok" : "MISMATCH");
		bad += !same;
	}
	puts("\n(*) keel's rule is the whole dynamic extent of the deferred call;");
	puts("    Go's recover returns nil there (only the deferred function's");
	puts("    own body counts).");
	puts("(+) the worker's panic ends the process (crash report, status 2)");
	puts("    before main's deferred recover could ever run.");
	if (bad) {
		printf("%zu row(s) differ\n", bad);
		return 1;
	}
	return 0;
}
