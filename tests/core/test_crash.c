/* KEEL_TEST_LABELS: threads */
/*
 * tests/core/test_crash.c - the crash report of an unrecovered panic (rule 8).
 *
 * Every case crashes a child process (keel_test_run_child) and reads what it
 * wrote: Go's layout ("panic: <msg>", nested panics tab-indented, the
 * "[signal ...]" line of a fault, a blank line, "thread <tid> "<name>"
 * [running]:" and the stack), exit status 2, the crash hook's output after
 * the report, and the program's own output and deferred calls before it.
 */
#define _GNU_SOURCE
#include <keel.h>
#include "keel_test.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define NIL_MSG "runtime error: invalid memory address or nil pointer dereference"
#define DIV_MSG "runtime error: integer divide by zero"

static int *volatile nil_int;
static volatile int vzero, vone = 1;
static volatile int vsink;
static volatile int do_panic = 1;
static volatile int never;

/* Memory the child writes and the parent reads after the child is gone. */
struct shared {
	int tid;
	int main_tid;
};

static struct shared *shared_page(void)
{
	void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED);
	memset(p, 0, sizeof(struct shared));
	return p;
}

static int self_tid(void)
{
	return (int)syscall(SYS_gettid);
}

#define CHECK_PREFIX(s, prefix)                                               \
	do {                                                                  \
		const char *s_ = (s), *p_ = (prefix);                         \
		if (strncmp(s_, p_, strlen(p_)) != 0)                         \
			KEEL_TEST_FAIL("output does not start with:\n%s\n"    \
				       "--- got:\n%s", p_, s_);               \
	} while (0)

/* Runs fn in a child that must crash the keel way: exit status 2. */
static void crash_child(void (*fn)(void *), void *arg, struct keel_child *ch)
{
	keel_test_run_child(fn, arg, ch);
	if (!ch->exited || ch->code != 2)
		KEEL_TEST_FAIL("child: exited %d, code %d, signal %d, output:\n%s",
			       ch->exited, ch->code, ch->signo, ch->out);
	CHECK(strstr(ch->out, "survived") == NULL);
}

/* Checks that the needles appear in hay in this order. */
static void check_in_order(const char *hay, const char *const *needles,
			   size_t n)
{
	const char *at = hay;
	size_t i;

	for (i = 0; i < n; i++) {
		const char *next = strstr(at, needles[i]);

		if (next == NULL)
			KEEL_TEST_FAIL("\"%s\" missing (or out of order) in:\n%s",
				       needles[i], hay);
		at = next + strlen(needles[i]);
	}
}

static size_t count_of(const char *hay, const char *needle)
{
	size_t n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

/* ------------------------------------------------------------------------
 * The panicking path: named, non-static, never inlined and never a tail
 * call, so that each has a frame of its own in the trace.
 * ------------------------------------------------------------------------ */

int crash_level1(void);
int crash_level2(void);
int crash_level3(void);
void crash_nil_site(void);
void crash_divide_site(void);
int crash_recurse(int depth);

__attribute__((noinline)) int crash_level3(void)
{
	char msg[16];

	/* The message lives in this frame: keel_panic cannot be a tail call. */
	snprintf(msg, sizeof(msg), "%s", "boom");
	if (do_panic)
		keel_panic(msg);
	return vsink;
}

__attribute__((noinline)) int crash_level2(void)
{
	int r = crash_level3();

	return r + vsink;
}

__attribute__((noinline)) int crash_level1(void)
{
	int r = crash_level2();

	return r + vsink;
}

KEEL_TEST_NO_SANITIZE void crash_nil_site(void)
{
	vsink = *nil_int;
}

KEEL_TEST_NO_SANITIZE void crash_divide_site(void)
{
	vsink = vone / vzero;
}

KEEL_TEST_NO_SANITIZE int crash_recurse(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (never)
		return pad[0];
	return crash_recurse(depth + 1) + pad[0];
}

/* ------------------------------------------------------------------------
 * keel_panic
 * ------------------------------------------------------------------------ */

static void panic_report_child(void *arg)
{
	struct shared *sh = arg;

	pthread_setname_np(pthread_self(), "keel-crash");
	sh->tid = self_tid();
	KEEL_SCOPE {
		crash_level1();
	}
	printf("survived\n");
}

TEST(panic_report)
{
	static const char *const path[] = { "crash_level3", "crash_level2",
					    "crash_level1" };
	struct shared *sh = shared_page();
	struct keel_child ch;
	char want[128];

	crash_child(panic_report_child, sh, &ch);
	CHECK_INT(sh->tid, >, 0);
	snprintf(want, sizeof(want),
		 "panic: boom\n\nthread %d \"keel-crash\" [running]:\n", sh->tid);
	CHECK_PREFIX(ch.out, want);
	/* Innermost first, as Go prints a goroutine's stack. */
	check_in_order(ch.out + strlen(want), path, 3);
}

static void panic_no_scope_child(void *arg)
{
	(void)arg;
	crash_level1();
	printf("survived\n");
}

TEST(panic_without_scope)
{
	static const char *const path[] = { "crash_level3", "crash_level2",
					    "crash_level1" };
	struct keel_child ch;

	crash_child(panic_no_scope_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: boom\n\nthread ");
	CHECK_CONTAINS(ch.out, "[running]:\n");
	check_in_order(ch.out, path, 3);
}

static void *crash_thread_main(void *arg)
{
	struct shared *sh = arg;

	pthread_setname_np(pthread_self(), "worker-7");
	sh->tid = self_tid();
	KEEL_SCOPE {
		crash_level1();
	}
	return NULL;
}

static void panic_in_thread_child(void *arg)
{
	struct shared *sh = arg;
	pthread_t th;

	pthread_setname_np(pthread_self(), "main-thread");
	sh->main_tid = self_tid();
	pthread_create(&th, NULL, crash_thread_main, arg);
	pthread_join(th, NULL);
	printf("survived\n");
}

/* The report names the panicking thread, not the process's first one. */
TEST(panic_report_names_thread)
{
	struct shared *sh = shared_page();
	struct keel_child ch;
	char want[128];

	crash_child(panic_in_thread_child, sh, &ch);
	CHECK_INT(sh->tid, >, 0);
	CHECK_INT(sh->tid, !=, sh->main_tid);
	snprintf(want, sizeof(want),
		 "panic: boom\n\nthread %d \"worker-7\" [running]:\n", sh->tid);
	CHECK_PREFIX(ch.out, want);
	CHECK_CONTAINS(ch.out, "crash_thread_main");
	CHECK(strstr(ch.out, "main-thread") == NULL);
}

/* ------------------------------------------------------------------------
 * Nested panics
 * ------------------------------------------------------------------------ */

static void recover_then_panic(void *arg)
{
	(void)arg;
	if (keel_recover() == NULL)
		printf("nothing to recover\n");
	keel_panic("second");
}

static void panic_again(void *arg)
{
	keel_panic(arg);
}

static void nested_recovered_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(recover_then_panic, NULL);
		keel_panic("first");
	}
	printf("survived\n");
}

static void nested_unrecovered_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(panic_again, "second");
		keel_panic("first");
	}
	printf("survived\n");
}

static void nested_three_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(panic_again, "third");
		KEEL_SCOPE {
			keel_defer(panic_again, "second");
			keel_panic("first");
		}
	}
	printf("survived\n");
}

TEST(nested_panic_recovered)
{
	struct keel_child ch;

	crash_child(nested_recovered_child, NULL, &ch);
	CHECK_PREFIX(ch.out,
		     "panic: first [recovered]\n\tpanic: second\n\nthread ");
}

TEST(nested_panic_unrecovered)
{
	struct keel_child ch;

	crash_child(nested_unrecovered_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: first\n\tpanic: second\n\nthread ");

	crash_child(nested_three_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: first\n\tpanic: second\n\tpanic: third\n"
			     "\nthread ");
}

/* ------------------------------------------------------------------------
 * Faults
 * ------------------------------------------------------------------------ */

/* After prefix: "<hex pc>]\n\nthread "; returns the pc. */
static uintptr_t check_signal_line(const char *out, const char *prefix)
{
	const char *s = strstr(out, prefix);
	char *end;
	uintptr_t pc;

	if (s == NULL)
		KEEL_TEST_FAIL("\"%s\" missing in:\n%s", prefix, out);
	s += strlen(prefix);
	pc = (uintptr_t)strtoull(s, &end, 16);
	if (end == s || strncmp(end, "]\n\nthread ", 10) != 0)
		KEEL_TEST_FAIL("bad signal line in:\n%s", out);
	return pc;
}

static void nil_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		crash_nil_site();
	}
	printf("survived\n");
}

static void nil_no_scope_child(void *arg)
{
	(void)arg;
	keel_init();
	crash_nil_site();
	printf("survived\n");
}

static void check_nil_report(void (*fn)(void *))
{
	struct keel_child ch;
	uintptr_t pc, site = (uintptr_t)crash_nil_site;

	crash_child(fn, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: " NIL_MSG "\n"
		     "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x");
	pc = check_signal_line(ch.out, "addr=0x0 pc=0x");
	/* The child is a fork: same addresses. The pc is in the (small)
	 * faulting function, which the trace shows too. */
	CHECK(pc >= site && pc < site + 512);
	CHECK_CONTAINS(ch.out, "crash_nil_site");
}

TEST(nil_deref_report)
{
	check_nil_report(nil_child);
	check_nil_report(nil_no_scope_child);
}

static void divide_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		crash_divide_site();
	}
	printf("survived\n");
}

TEST(divide_report)
{
	struct keel_child ch;
	uintptr_t pc, site = (uintptr_t)crash_divide_site;

	crash_child(divide_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: " DIV_MSG "\n"
		     "[signal SIGFPE: floating-point exception code=0x1 addr=0x");
	pc = check_signal_line(ch.out, " pc=0x");
	CHECK(pc >= site && pc < site + 512);
	CHECK_CONTAINS(ch.out, "crash_divide_site");
}

static void overflow_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		vsink = crash_recurse(0);
	}
	printf("survived\n");
}

/* The report of an overflow is written from the alternate stack; its trace
 * still reaches the recursion on the thread's stack. */
TEST(stack_overflow_report)
{
	struct keel_child ch;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	crash_child(overflow_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: runtime error: stack overflow\n"
			     "[signal SIGSEGV: segmentation violation code=");
	check_signal_line(ch.out, " pc=0x");
	CHECK_CONTAINS(ch.out, "crash_recurse");
}

/* ------------------------------------------------------------------------
 * The crash hook
 * ------------------------------------------------------------------------ */

static void put(int fd, const char *s)
{
	(void)!write(fd, s, strlen(s));
}

/* Async-signal-safe: write(2) and strlen only. */
static void hook(const struct keel_panic *p, int fd, void *ud)
{
	char num[2] = { (char)('0' + fd % 10), '\0' };

	put(fd, "hook: ");
	put(fd, ud);
	put(fd, " msg=");
	put(fd, keel_panic_message(p));
	put(fd, " kind=");
	put(fd, keel_panic_kind_name(keel_panic_kind(p)));
	put(fd, " fd=");
	put(fd, num);
	put(fd, "\n");
}

static void hook_child(void *arg)
{
	(void)arg;
	keel_crash_hook_set(hook, "ud-7");
	KEEL_SCOPE {
		crash_level1();
	}
	printf("survived\n");
}

static void hook_fault_no_scope_child(void *arg)
{
	(void)arg;
	keel_init();
	keel_crash_hook_set(hook, "ud-8");
	crash_nil_site(); /* the report comes from the signal handler */
	printf("survived\n");
}

static void hook_removed_child(void *arg)
{
	(void)arg;
	keel_crash_hook_set(hook, "ud-9");
	keel_crash_hook_set(NULL, NULL);
	KEEL_SCOPE {
		crash_level1();
	}
	printf("survived\n");
}

static const char *ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0 ? s + n - k : NULL;
}

TEST(crash_hook)
{
	static const char *const order[] = { "panic: boom\n", "\nthread ",
					     "crash_level1", "hook: ud-7" };
	struct keel_child ch;
	const char *line;

	crash_child(hook_child, NULL, &ch);
	/* The hook's line comes last, after the whole report. */
	line = ends_with(ch.out, "hook: ud-7 msg=boom kind=message fd=2\n");
	if (line == NULL)
		KEEL_TEST_FAIL("hook line not at the end of:\n%s", ch.out);
	check_in_order(ch.out, order, 4);
	CHECK_INT(count_of(ch.out, "hook: "), ==, 1);

	crash_child(hook_fault_no_scope_child, NULL, &ch);
	line = ends_with(ch.out, "hook: ud-8 msg=" NIL_MSG
			 " kind=nil-dereference fd=2\n");
	if (line == NULL)
		KEEL_TEST_FAIL("hook line not at the end of:\n%s", ch.out);
	CHECK_PREFIX(ch.out, "panic: " NIL_MSG "\n[signal SIGSEGV");

	crash_child(hook_removed_child, NULL, &ch);
	CHECK(strstr(ch.out, "hook: ") == NULL);
}

/* ------------------------------------------------------------------------
 * What comes before the report
 * ------------------------------------------------------------------------ */

static void stdout_panic_child(void *arg)
{
	(void)arg;
	/* A pipe: stdout is fully buffered, nothing written yet. */
	printf("buffered-before-panic");
	KEEL_SCOPE {
		keel_panic("boom");
	}
	printf("survived\n");
}

static void stdout_fault_child(void *arg)
{
	(void)arg;
	printf("buffered-before-fault");
	KEEL_SCOPE {
		crash_nil_site();
	}
	printf("survived\n");
}

TEST(stdout_flushed_before_report)
{
	struct keel_child ch;

	crash_child(stdout_panic_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "buffered-before-panicpanic: boom\n\nthread ");

	crash_child(stdout_fault_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "buffered-before-faultpanic: " NIL_MSG "\n");
}

static void marker(void *arg)
{
	put(STDERR_FILENO, arg);
}

static void deferred_panic_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(marker, "outer-deferred\n");
		KEEL_SCOPE {
			keel_defer(marker, "inner-deferred-1\n");
			keel_defer(marker, "inner-deferred-2\n");
			crash_level1();
		}
	}
	printf("survived\n");
}

static void deferred_fault_child(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(marker, "outer-deferred\n");
		KEEL_SCOPE {
			keel_defer(marker, "inner-deferred\n");
			crash_nil_site();
		}
	}
	printf("survived\n");
}

/* As in Go, an unrecovered panic runs every deferred call first. */
TEST(deferred_calls_run_before_report)
{
	struct keel_child ch;

	crash_child(deferred_panic_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "inner-deferred-2\ninner-deferred-1\n"
			     "outer-deferred\npanic: boom\n\nthread ");

	crash_child(deferred_fault_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "inner-deferred\nouter-deferred\npanic: " NIL_MSG
			     "\n[signal SIGSEGV");
}

/* ------------------------------------------------------------------------
 * Several threads at once
 * ------------------------------------------------------------------------ */

static pthread_barrier_t crash_start;

static void *racing_panic(void *arg)
{
	char msg[16];

	snprintf(msg, sizeof(msg), "boom-%d", (int)(intptr_t)arg);
	pthread_barrier_wait(&crash_start);
	KEEL_SCOPE {
		keel_panic(msg);
	}
	return NULL;
}

static void racing_child(void *arg)
{
	pthread_t th[4];
	int i;

	(void)arg;
	pthread_barrier_init(&crash_start, NULL, 4);
	for (i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, racing_panic, (void *)(intptr_t)i);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	printf("survived\n");
}

/* One report, whole, even when threads panic together. */
TEST(one_report_when_threads_crash_together)
{
	struct keel_child ch;

	crash_child(racing_child, NULL, &ch);
	CHECK_PREFIX(ch.out, "panic: boom-");
	CHECK_INT(count_of(ch.out, "panic: boom-"), ==, 1);
	CHECK_INT(count_of(ch.out, "[running]:"), ==, 1);
}
