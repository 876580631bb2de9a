/*
 * tests/keel_test.h - keel's test harness (one header, no dependencies).
 *
 * Each test file is one program; TEST(name) { ... } registers a case. As in
 * libuv, every case runs in a child process of its own, so a crash, an abort
 * or a sanitizer report fails that case and not the whole run. A case that
 * does not end within KEEL_TEST_TIMEOUT seconds (default 120) fails.
 *
 *   ./test_panic              run every case
 *   ./test_panic name...      run the named cases
 *   KEEL_TEST_NOFORK=1        run in-process (for gdb)
 *
 * The last line is "N passed, N failed, N skipped"; the exit status is 0 only
 * when nothing failed and something passed. KEEL_TEST_SKIP(why) skips a case
 * that cannot run in this build (say, under a sanitizer), giving the reason.
 *
 * Helpers: CHECK(cond), CHECK_INT(a, op, b), CHECK_STR(a, b),
 * CHECK_CONTAINS(haystack, needle), and keel_test_run_child() to run a
 * function in a child and capture its stderr and exit status.
 */
#ifndef KEEL_TEST_H
#define KEEL_TEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct keel_test_case {
	const char *name;
	void (*fn)(void);
};

#define KEEL_TEST_MAX 256
static struct keel_test_case keel_test_cases[KEEL_TEST_MAX];
static int keel_test_count;

#define TEST(name)                                                            \
	static void test_##name(void);                                        \
	__attribute__((constructor)) static void test_register_##name(void)   \
	{                                                                     \
		if (keel_test_count < KEEL_TEST_MAX)                          \
			keel_test_cases[keel_test_count++] =                  \
				(struct keel_test_case){ #name, test_##name }; \
	}                                                                     \
	static void test_##name(void)

#define KEEL_TEST_FAIL(...)                                                   \
	do {                                                                  \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);               \
		fprintf(stderr, __VA_ARGS__);                                 \
		fprintf(stderr, "\n");                                        \
		fflush(stderr);                                               \
		_exit(1);                                                     \
	} while (0)

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond))                                                  \
			KEEL_TEST_FAIL("CHECK(%s) failed", #cond);            \
	} while (0)

#define CHECK_INT(a, op, b)                                                   \
	do {                                                                  \
		long long keel_a_ = (long long)(a), keel_b_ = (long long)(b); \
		if (!(keel_a_ op keel_b_))                                    \
			KEEL_TEST_FAIL("CHECK_INT(%s %s %s) failed: %lld vs %lld", \
				       #a, #op, #b, keel_a_, keel_b_);        \
	} while (0)

#define CHECK_STR(a, b)                                                       \
	do {                                                                  \
		const char *keel_a_ = (a), *keel_b_ = (b);                    \
		if (keel_a_ == NULL || keel_b_ == NULL ||                     \
		    strcmp(keel_a_, keel_b_) != 0)                            \
			KEEL_TEST_FAIL("CHECK_STR(%s, %s) failed:\n  got:  \"%s\"\n  want: \"%s\"", \
				       #a, #b, keel_a_ ? keel_a_ : "(null)",  \
				       keel_b_ ? keel_b_ : "(null)");         \
	} while (0)

#define CHECK_CONTAINS(hay, needle)                                           \
	do {                                                                  \
		const char *keel_h_ = (hay), *keel_n_ = (needle);             \
		if (keel_h_ == NULL || strstr(keel_h_, keel_n_) == NULL)      \
			KEEL_TEST_FAIL("CHECK_CONTAINS(%s, \"%s\") failed in:\n%s", \
				       #hay, keel_n_, keel_h_ ? keel_h_ : "(null)"); \
	} while (0)

/* KEEL_TEST_SKIP(why): ends the case as skipped (a reason is required). */
#define KEEL_TEST_SKIP_STATUS 77
#define KEEL_TEST_SKIP(why)                                                   \
	do {                                                                  \
		printf("  skipped: %s\n", why);                               \
		fflush(stdout);                                               \
		_exit(KEEL_TEST_SKIP_STATUS);                                 \
	} while (0)

/* Which sanitizer the test was built with. */
#if defined(__SANITIZE_THREAD__)
#define KEEL_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEEL_TEST_TSAN 1
#endif
#endif

/*
 * KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN() - for the stack-overflow cases.
 * TSan keeps a shadow call stack of 64K frames per thread; recursion deep
 * enough to exhaust an 8 MiB stack overflows that first, and TSan faults
 * inside its own __tsan_func_entry, in the handler too (seen in a core
 * dump). The overflow cases run in every other build.
 */
#ifdef KEEL_TEST_TSAN
#define KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN()                            \
	KEEL_TEST_SKIP("TSan's 64K-frame shadow stack overflows before the "  \
		       "thread stack does")
#else
#define KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN() ((void)0)
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KEEL_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEL_TEST_ASAN 1
#endif
#endif

#ifdef KEEL_TEST_ASAN
int __lsan_do_recoverable_leak_check(void);
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* Under ASan, fails the case if anything allocated is unreachable now (each
 * case ends with _exit, which skips LeakSanitizer's own check). */
static inline void keel_test_leak_check(void)
{
#ifdef KEEL_TEST_ASAN
	CHECK_INT(__lsan_do_recoverable_leak_check(), ==, 0);
#endif
}

/*
 * An event log: deferred calls append names, cases compare the whole
 * sequence, e.g. CHECK_STR(keel_test_ev, "b,a,rec:boom").
 */
static char keel_test_ev[8192] __attribute__((unused));

static inline void keel_test_ev_add(const char *s)
{
	size_t n = strlen(keel_test_ev);

	snprintf(keel_test_ev + n, sizeof(keel_test_ev) - n, "%s%s",
		 n > 0 ? "," : "", s);
}

static inline void keel_test_ev_addf(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline void keel_test_ev_addf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	keel_test_ev_add(buf);
}

/*
 * Allocation counting, for tests that prove a path allocates nothing. A test
 * file that defines KEEL_TEST_COUNT_ALLOCATIONS before including this header
 * replaces malloc, calloc and realloc for the whole process (libkeel's calls
 * included) with versions that count while keel_test_counting is set.
 * Sanitizer builds own malloc, so there KEEL_TEST_CAN_COUNT is 0 and such
 * tests skip.
 */
#if defined(KEEL_TEST_COUNT_ALLOCATIONS) && !defined(KEEL_TEST_ASAN) &&       \
	!defined(KEEL_TEST_TSAN)
#define KEEL_TEST_CAN_COUNT 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
static int keel_test_counting;
static unsigned long keel_test_allocations;

static inline void keel_test_count_one(void)
{
	if (__atomic_load_n(&keel_test_counting, __ATOMIC_RELAXED))
		__atomic_add_fetch(&keel_test_allocations, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
	keel_test_count_one();
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	keel_test_count_one();
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	keel_test_count_one();
	return __libc_realloc(p, n);
}
#else
#define KEEL_TEST_CAN_COUNT 0
#endif

/* What a child run produced. */
struct keel_child {
	int status;     /* raw wait status */
	int exited;     /* WIFEXITED */
	int code;       /* WEXITSTATUS, or -1 */
	int signo;      /* WTERMSIG, or 0 */
	char out[65536]; /* stdout and stderr, NUL-terminated */
};

/* Runs fn(arg) in a child with stdout and stderr captured into c->out. The
 * child exits 0 if fn returns. */
static inline void keel_test_run_child(void (*fn)(void *), void *arg,
				       struct keel_child *c)
{
	int fds[2];
	pid_t pid;
	size_t n = 0;

	memset(c, 0, sizeof(*c));
	if (pipe(fds) != 0)
		KEEL_TEST_FAIL("pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		KEEL_TEST_FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		close(fds[1]);
		fn(arg);
		fflush(NULL);
		_exit(0);
	}
	close(fds[1]);
	for (;;) {
		ssize_t r = read(fds[0], c->out + n, sizeof(c->out) - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == sizeof(c->out) - 1)
			break;
	}
	c->out[n] = '\0';
	close(fds[0]);
	while (waitpid(pid, &c->status, 0) < 0 && errno == EINTR)
		;
	c->exited = WIFEXITED(c->status);
	c->code = c->exited ? WEXITSTATUS(c->status) : -1;
	c->signo = WIFSIGNALED(c->status) ? WTERMSIG(c->status) : 0;
}

static inline double keel_test_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int keel_test_selected(const struct keel_test_case *t, int argc,
			      char **argv)
{
	int i;

	if (argc < 2)
		return 1;
	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], t->name) == 0)
			return 1;
	return 0;
}

static int keel_test_run_one(const struct keel_test_case *t)
{
	int status;
	pid_t pid;
	const char *tmo = getenv("KEEL_TEST_TIMEOUT");
	unsigned timeout = tmo ? (unsigned)atoi(tmo) : 120;

	if (getenv("KEEL_TEST_NOFORK")) {
		t->fn();
		return 0;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		alarm(timeout);
		t->fn();
		fflush(NULL);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == KEEL_TEST_SKIP_STATUS)
		return KEEL_TEST_SKIP_STATUS;
	if (WIFSIGNALED(status))
		fprintf(stderr, "  killed by signal %d%s\n", WTERMSIG(status),
			WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
	else
		fprintf(stderr, "  exit status %d\n", WEXITSTATUS(status));
	return 1;
}

int main(int argc, char **argv)
{
	int i, passed = 0, failed = 0, skipped = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 0; i < keel_test_count; i++) {
		const struct keel_test_case *t = &keel_test_cases[i];
		double t0;

		if (!keel_test_selected(t, argc, argv))
			continue;
		t0 = keel_test_now();
		switch (keel_test_run_one(t)) {
		case 0:
			passed++;
			printf("ok   %-40s %8.1f ms\n", t->name,
			       (keel_test_now() - t0) * 1e3);
			break;
		case KEEL_TEST_SKIP_STATUS:
			skipped++;
			printf("skip %s\n", t->name);
			break;
		default:
			failed++;
			printf("FAIL %s\n", t->name);
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed == 0 && passed > 0 ? 0 : 1;
}

/* Under ASan, let keel own SIGSEGV/SIGBUS/SIGFPE (docs/panic.md). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allow_user_segv_handler=1:detect_leaks=1:allocator_may_return_null=1";
}

/* Fault sites in tests: opaque to the optimiser, invisible to UBSan. */
#define KEEL_TEST_NO_SANITIZE                                                 \
	__attribute__((noinline, no_sanitize("undefined")))

#endif /* KEEL_TEST_H */
