/* KEEL_TEST_LABELS: threads */
/*
 * tests/core/test_memory.c - panics leave nothing behind: a million
 * panic/recover cycles of every kind do not grow the process, and locals
 * declared volatile keep their values across a recovered panic.
 */
#include <pthread.h>
#include <stdint.h>

#include <keel.h>
#include "keel_test.h"

/* ------------------------------------------------------------------------
 * Resident set size
 * ------------------------------------------------------------------------ */

#ifdef KEEL_TEST_ASAN
void __asan_get_shadow_mapping(size_t *shadow_scale, size_t *shadow_offset);

/*
 * Under ASan, the resident memory of the program itself: every mapping but
 * ASan's shadow. ASan unpoisons the signal stack at each noreturn call, and
 * the shadow of a thread's alternate stack stays resident after the stack
 * is unmapped, so a thread that panicked leaves a few KiB of shadow behind
 * that is no memory of the program's.
 */
static size_t rss_bytes(void)
{
	size_t scale, offset, lo, hi, total = 0;
	uintptr_t start = 0, end = 0;
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "r");
	int shadow = 0;

	__asan_get_shadow_mapping(&scale, &offset);
	lo = offset;
	hi = offset + ((uintptr_t)0x7fffffffffff >> scale);
	CHECK(f != NULL);
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long kb;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			shadow = start >= lo && start <= hi;
			continue;
		}
		if (!shadow && sscanf(line, "Rss: %lu kB", &kb) == 1)
			total += (size_t)kb * 1024;
	}
	fclose(f);
	(void)end;
	return total;
}
#else
static size_t rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	CHECK(f != NULL);
	CHECK_INT(fscanf(f, "%lu %lu", &size, &resident), ==, 2);
	fclose(f);
	return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

/*
 * ASan's quarantine holds on to freed blocks (up to 256 MiB), which would
 * read as growth. Under ASan, the RSS tests re-run themselves in a fresh
 * process with the quarantine off; LeakSanitizer still checks that process
 * for leaks when it exits.
 */
static int rerun_without_quarantine(const char *name)
{
#ifdef KEEL_TEST_ASAN
	pid_t pid;
	int status;

	if (getenv("KEEL_TEST_MEMORY_RERUN") != NULL)
		return 0; /* this is the re-run: measure here */
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char opts[1024];
		const char *old = getenv("ASAN_OPTIONS");

		snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=0:"
			 "thread_local_quarantine_size_kb=0",
			 old ? old : "", old && *old ? ":" : "");
		setenv("ASAN_OPTIONS", opts, 1);
		setenv("KEEL_TEST_MEMORY_RERUN", "1", 1);
		setenv("KEEL_TEST_NOFORK", "1", 1);
		/* Keep the re-run's "1 passed" line out of our output. */
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(127);
		execl("/proc/self/exe", "test_memory", name, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	CHECK(WIFEXITED(status));
	CHECK_INT(WEXITSTATUS(status), ==, 0);
	return 1;
#else
	(void)name;
	return 0;
#endif
}

/* ------------------------------------------------------------------------
 * One panic/recover cycle of each kind
 * ------------------------------------------------------------------------ */

static char long_text[301];
static unsigned long payloads_made, payloads_destroyed, recovered, wrong;

static void destroy_payload(void *p)
{
	payloads_destroyed++;
	free(p);
}

struct cycle {
	unsigned long i;
	const char *want_prefix;
};

static void d_recover_check(void *arg)
{
	struct cycle *c = arg;
	const struct keel_panic *p = keel_recover();

	if (p == NULL) {
		wrong++;
		return;
	}
	recovered++;
	if (strncmp(keel_panic_message(p), c->want_prefix,
		    strlen(c->want_prefix)) != 0)
		wrong++;
}

static void d_nothing(void *arg)
{
	(void)arg;
}

static void d_panic(void *arg)
{
	keel_panic(arg);
}

static void nested_panic(void *arg)
{
	keel_defer(d_nothing, arg);
	KEEL_SCOPE {
		keel_defer(free, keel_malloc(64));
		keel_panic("nested");
	}
}

static void cycle_body(void *arg)
{
	struct cycle *c = arg;
	unsigned long *pl;

	keel_defer(d_recover_check, c);
	/* A deferred free on every path, as real code has. */
	keel_defer(free, keel_malloc(32 + c->i % 64));
	switch (c->i % 7) {
	case 0:
		c->want_prefix = "short";
		keel_panic("short");
	case 1:
		/* Longer than the inline buffer: the heap path. */
		c->want_prefix = "long";
		keel_panicf("long %lu %s", c->i, long_text);
	case 2:
		c->want_prefix = "panic: cycle value";
		pl = keel_malloc(sizeof(*pl));
		*pl = c->i;
		payloads_made++;
		keel_panic_payload("cycle", pl, destroy_payload, NULL);
	case 3:
		c->want_prefix = "error";
		keel_panic_error(keel_error_wrap(keel_error_new(-EIO, "io"),
						 -EINVAL, "error %lu", c->i));
	case 4:
		c->want_prefix = "runtime error: index out of range";
		(void)keel_index((int64_t)c->i, 3);
		keel_panic("index in range?");
	case 5:
		c->want_prefix = "nested";
		keel_call(nested_panic, NULL);
		keel_panic("not reached");
	default:
		/* A panic replaced by a newer one in a deferred call. */
		c->want_prefix = "replacement";
		keel_defer(d_panic, "replacement");
		keel_panicf("replaced %lu %s", c->i, long_text);
	}
}

static void run_cycles(unsigned long from, unsigned long to)
{
	unsigned long i;

	for (i = from; i < to; i++) {
		struct cycle c = { i, "" };

		if (keel_call(cycle_body, &c) != 1)
			wrong++;
	}
}

TEST(million_panic_cycles_no_growth)
{
	size_t warm, end;

	if (rerun_without_quarantine("million_panic_cycles_no_growth"))
		return;
	memset(long_text, 'L', sizeof(long_text) - 1);
	run_cycles(0, 10000);
	warm = rss_bytes();
	run_cycles(10000, 1000000);
	end = rss_bytes();
	CHECK_INT(wrong, ==, 0);
	CHECK_INT(recovered, ==, 1000000);
	CHECK_INT(payloads_destroyed, ==, payloads_made);
	CHECK(payloads_made > 100000);
	if (end > warm + (1 << 20))
		KEEL_TEST_FAIL("RSS grew by %zu KiB over 990000 cycles",
			       (end - warm) / 1024);
}

/* The block form, with deferred calls and nested scopes, in a loop. */
static void d_recover_quiet(void *arg)
{
	if (keel_recover() != NULL)
		(*(unsigned long *)arg)++;
}

/* One pass in a function of its own: no local of the loop lives across
 * the scope's setjmp. */
static void scope_cycle(unsigned long *n)
{
	KEEL_SCOPE {
		keel_defer(d_recover_quiet, n);
		KEEL_SCOPE {
			keel_defer(free, keel_strdup(long_text));
			if (*n % 2)
				keel_panicf("%s", long_text);
			keel_panic("short");
		}
	}
}

TEST(scope_panic_cycles_no_growth)
{
	unsigned long n = 0, i;
	size_t warm = 0, end;

	if (rerun_without_quarantine("scope_panic_cycles_no_growth"))
		return;
	memset(long_text, 'L', sizeof(long_text) - 1);
	for (i = 0; i < 200000; i++) {
		if (i == 10000)
			warm = rss_bytes();
		scope_cycle(&n);
	}
	end = rss_bytes();
	CHECK_INT(n, ==, 200000);
	if (end > warm + (1 << 20))
		KEEL_TEST_FAIL("RSS grew by %zu KiB", (end - warm) / 1024);
}

/* Threads that panic and exit give their keel state back. */
static void *thread_panics(void *arg)
{
	int i;

	for (i = 0; i < 10; i++) {
		struct cycle c = { (unsigned long)i, "" };

		if (keel_call(cycle_body, &c) != 1)
			__atomic_add_fetch((unsigned long *)arg, 1,
					   __ATOMIC_RELAXED);
	}
	return NULL;
}

static void spawn_threads(int n, unsigned long *bad)
{
	int i;

	for (i = 0; i < n; i++) {
		pthread_t th;

		CHECK_INT(pthread_create(&th, NULL, thread_panics, bad), ==, 0);
		CHECK_INT(pthread_join(th, NULL), ==, 0);
	}
}

TEST(thread_churn_no_growth)
{
	static unsigned long bad;
	size_t warm, end;

	if (rerun_without_quarantine("thread_churn_no_growth"))
		return;
	memset(long_text, 'L', sizeof(long_text) - 1);
	spawn_threads(100, &bad);
	warm = rss_bytes();
	spawn_threads(1000, &bad);
	end = rss_bytes();
	CHECK_INT(bad, ==, 0);
	if (end > warm + (1 << 20))
		KEEL_TEST_FAIL("RSS grew by %zu KiB over 1000 threads",
			       (end - warm) / 1024);
}

/* ------------------------------------------------------------------------
 * Volatile locals across a recovered panic (the -Wclobbered pitfall)
 * ------------------------------------------------------------------------ */

static void d_recover_flag(void *arg)
{
	*(volatile int *)arg = keel_recover() != NULL;
}

TEST(scope_volatile_locals_survive_recovered_panic)
{
	volatile int count = 0;
	volatile int got = 0;
	char *volatile buf = NULL;
	volatile double ratio = 0.0;
	struct {
		int a;
		long b;
	} volatile pair = { 0, 0 };

	KEEL_SCOPE {
		keel_defer(d_recover_flag, (void *)&got);
		count = 41;
		count++;
		buf = keel_strdup("kept");
		ratio = 0.5;
		pair.a = 7;
		pair.b = 1L << 40;
		keel_panic("boom");
	}
	CHECK_INT(got, ==, 1);
	CHECK_INT(count, ==, 42);
	CHECK(buf != NULL);
	CHECK_STR(buf, "kept");
	CHECK(ratio == 0.5);
	CHECK_INT(pair.a, ==, 7);
	CHECK_INT(pair.b, ==, 1L << 40);
	free(buf);
}

/* In a loop, with the value changing on every pass. */
TEST(scope_volatile_counter_in_loop)
{
	volatile int sum = 0;
	volatile int i;
	volatile int got = 0;

	for (i = 0; i < 1000; i++) {
		KEEL_SCOPE {
			keel_defer(d_recover_flag, (void *)&got);
			sum += i;
			if (i % 3 == 0)
				keel_panic("third");
			sum += 1;
		}
	}
	/* 0..999 plus one for every pass that did not panic. */
	CHECK_INT(sum, ==, 999 * 1000 / 2 + 666);
}
