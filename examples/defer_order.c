/*
 * examples/defer_order.c - deferred calls run last-in, first-out, and they
 * release resources on every way out of a scope (seed chapter 2.1).
 *
 * Go:
 *	defer fmt.Println(1)
 *	defer fmt.Println(2)
 *	defer fmt.Println(3)    // prints 3 2 1
 *
 *	f, _ := os.Create(path); defer f.Close()
 *	mu.Lock();               defer mu.Unlock()
 *
 * Part 1 registers three deferred calls and records the order they run in,
 * once on the normal path and once while a panic unwinds.
 * Part 2 opens a file, takes a lock and allocates memory, deferring the
 * release of each with keel's ready-made deferred functions, then ends the
 * scope normally or by panicking halfway; afterwards the file must be
 * closed and the lock free. (The memory is checked by LeakSanitizer in the
 * ASan build.)
 *
 * Exits 0 when the order was 3 2 1 and the cleanups happened on both paths.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <keel.h>

/* ------------------------------------------------------------------------
 * Part 1: LIFO order
 * ------------------------------------------------------------------------ */

static char trace[32];

static void record(void *arg)
{
	size_t n = strlen(trace);

	snprintf(trace + n, sizeof(trace) - n, "%s%d", n ? " " : "",
		 (int)(intptr_t)arg);
}

static void swallow(void *arg)
{
	(void)arg;
	(void)keel_recover();
}

static int order(int panics)
{
	int i;

	trace[0] = '\0';
	KEEL_SCOPE {
		/* First in, so it runs last: after 3 2 1, it ends the panic. */
		keel_defer(swallow, NULL);
		for (i = 1; i <= 3; i++)
			keel_defer(record, (void *)(intptr_t)i);
		if (panics)
			keel_panic("unwinding");
	}
	printf("%-13s registered 1 2 3, ran %-6s %s\n",
	       panics ? "panic path:" : "normal path:", trace,
	       strcmp(trace, "3 2 1") == 0 ? "ok" : "MISMATCH");
	return strcmp(trace, "3 2 1") == 0;
}

/* ------------------------------------------------------------------------
 * Part 2: resources
 * ------------------------------------------------------------------------ */

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

struct job {
	int panics;     /* panic halfway through the write */
	int fd;         /* the file's descriptor, to check it was closed */
	int recovered;
};

/* Prints whether the file is closed and the lock free; 1 if both. */
static int released(const struct job *j, const char *when)
{
	int closed, unlocked;

	closed = fcntl(j->fd, F_GETFD) == -1 && errno == EBADF;
	unlocked = pthread_mutex_trylock(&report_lock) == 0;
	if (unlocked)
		pthread_mutex_unlock(&report_lock);
	printf("  %s: file %s, lock %s\n", when,
	       closed ? "closed" : "STILL OPEN",
	       unlocked ? "free" : "STILL HELD");
	return closed && unlocked;
}

/*
 * Registered first, so it runs last: by the time it recovers, the deferred
 * cleanups have already run, during the panic.
 */
static void recover_job(void *arg)
{
	struct job *j = arg;
	const struct keel_panic *p = keel_recover();

	if (p != NULL) {
		printf("  recovered \"%s\"\n", keel_panic_message(p));
		j->recovered = released(j, "in the deferred recover");
	}
}

static void write_report(void *arg)
{
	struct job *j = arg;
	char path[] = "/tmp/keel-defer-XXXXXX";
	FILE *f;
	char *buf;
	int fd;

	keel_defer(recover_job, j);

	fd = mkstemp(path);
	if (fd < 0)
		keel_panicf("mkstemp: %s", strerror(errno));
	unlink(path); /* the file disappears with its last descriptor */
	f = fdopen(fd, "w");
	if (f == NULL) {
		close(fd);
		keel_panicf("fdopen: %s", strerror(errno));
	}
	j->fd = fd;
	keel_defer(keel_defer_fclose, f);

	pthread_mutex_lock(&report_lock);
	keel_defer(keel_defer_mutex_unlock, &report_lock);

	buf = keel_malloc(4096);
	keel_defer(free, buf);

	printf("  opened a file (fd %d), took the lock, allocated 4096 bytes\n",
	       fd);
	snprintf(buf, 4096, "report line 1\n");
	fputs(buf, f);
	if (j->panics)
		keel_panic("disk full");
	fputs("report line 2\n", f);
	puts("  wrote the report");
}

static int resources(int panics)
{
	struct job j = { panics, -1, 0 };
	int ret, ok;

	printf("%s:\n", panics ? "panic path" : "normal path");
	ret = keel_call(write_report, &j);
	ok = released(&j, "after the scope");
	return ok && ret == panics && j.recovered == panics;
}

int main(void)
{
	int ok = 1;

	puts("LIFO order of deferred calls:");
	ok &= order(0);
	ok &= order(1);
	puts("\nfile, lock and memory released by deferred calls:");
	ok &= resources(0);
	ok &= resources(1);
	puts(ok ? "\nok" : "\nFAILED");
	return ok ? 0 : 1;
}
