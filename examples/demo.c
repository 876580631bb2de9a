/*
 * examples/demo.c - keel in one screen: hardware faults that become
 * recoverable panics, and what a panic that nobody recovers looks like.
 *
 *   1. a NULL pointer dereference (a real SIGSEGV), recovered;
 *   2. an integer division by zero (a real SIGFPE), recovered;
 *   3. a stack overflow, recovered;
 *   4. a panic with no recover, in a child process: Go's crash report on
 *      stderr and exit status 2.
 *
 * The demo checks each result and exits 0 only when all four behaved as the
 * narration says, so it doubles as a test (ctest -R examples/demo).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <keel.h>

/*
 * Under ASan, ASan's own SIGSEGV handler would report the faults below as
 * crashes; this lets keel install its handler instead.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allow_user_segv_handler=1";
}

/*
 * Fault sites are never inlined, so the fault happens in the function the
 * narration names, and never instrumented by UBSan, which would otherwise
 * abort on the NULL or the zero before the CPU gets to trap.
 */
#define FAULT_SITE __attribute__((noinline, no_sanitize("undefined")))

/*
 * What the recovering deferred call saw. A recovered panic is only valid
 * until its scope has ended, so the deferred call copies what main needs.
 *
 * It lives in static storage on purpose: a local that a deferred call
 * changes through a pointer is "changed between setjmp and longjmp", so
 * after a recovered panic it is indeterminate unless volatile (C11
 * 7.13.2.1), and clang -O2 does read back the stale value. A volatile
 * struct could not be handed to snprintf, hence static.
 */
static struct caught {
	int recovered;
	enum keel_panic_kind kind;
	int signo;
	void *addr;
	char msg[128];
} caught;

static void recover_into(void *arg)
{
	struct caught *c = arg;
	const struct keel_panic *p = keel_recover();

	if (p == NULL)
		return;
	c->recovered = 1;
	c->kind = keel_panic_kind(p);
	c->signo = keel_panic_fault(p)->signo;
	c->addr = keel_panic_fault(p)->addr;
	snprintf(c->msg, sizeof(c->msg), "%s", keel_panic_message(p));
}

static int failed(const char *what)
{
	fflush(stdout);
	fprintf(stderr, "demo: FAILED: %s\n", what);
	return 1;
}

/* ------------------------------------------------------------------------
 * 1. NULL pointer dereference
 * ------------------------------------------------------------------------ */

struct session {
	int fd;
	char user[32];
	long requests;
};

/*
 * The session comes from somewhere the compiler cannot see into: with a
 * NULL it could prove, GCC would replace the load by a trap instruction
 * (SIGILL), which is not the fault this section is about.
 */
static struct session *volatile current_session;

static FAULT_SITE long count_request(struct session *s)
{
	return ++s->requests;
}

static int demo_nil_deref(void)
{
	struct caught *c = &caught;

	memset(c, 0, sizeof(*c));
	puts("1. NULL pointer dereference (a real SIGSEGV)");
	puts("   count_request(session) with session == NULL ...");
	KEEL_SCOPE {
		keel_defer(recover_into, c);
		printf("   not reached: %ld\n", count_request(current_session));
	}
	if (!c->recovered || c->kind != KEEL_PANIC_NIL_DEREF ||
	    c->signo != SIGSEGV ||
	    c->addr != (void *)offsetof(struct session, requests))
		return failed("the NULL dereference was not recovered as expected");
	printf("   recovered: %s\n", c->msg);
	printf("   kind %s, SIGSEGV at address %p = offsetof(struct session, requests)\n",
	       keel_panic_kind_name(c->kind), c->addr);
	return 0;
}

/* ------------------------------------------------------------------------
 * 2. Integer division by zero
 * ------------------------------------------------------------------------ */

/* Zero, but only at run time: a constant zero would be folded away. */
static volatile int no_samples;

static FAULT_SITE int average(int total, int count)
{
	return total / count;
}

static int demo_divide(void)
{
	struct caught *c = &caught;

	memset(c, 0, sizeof(*c));
	puts("2. Integer division by zero (a real SIGFPE)");
	puts("   average(300, 0) ...");
	KEEL_SCOPE {
		keel_defer(recover_into, c);
		printf("   not reached: %d\n", average(300, no_samples));
	}
	if (!c->recovered || c->kind != KEEL_PANIC_DIVIDE || c->signo != SIGFPE)
		return failed("the division by zero was not recovered as expected");
	printf("   recovered: %s\n", c->msg);
	printf("   kind %s, SIGFPE at instruction %p\n",
	       keel_panic_kind_name(c->kind), c->addr);
	return 0;
}

/* ------------------------------------------------------------------------
 * 3. Stack overflow
 * ------------------------------------------------------------------------ */

static volatile unsigned long deepest;
/* Never reached; it keeps the recursion from being provably infinite. */
static volatile unsigned long depth_limit = ULONG_MAX;

/*
 * Each level hands its frame to the next one, so the frame must stay alive
 * across the call: no tail call, no loop, real stack used at every level.
 */
static FAULT_SITE unsigned long descend(unsigned long depth,
					 volatile char *parent)
{
	volatile char frame[512];

	frame[0] = (char)(parent[0] + 1);
	deepest = depth;
	if (depth == depth_limit)
		return 0;
	return descend(depth + 1, frame) + (unsigned char)frame[0];
}

static int demo_stack_overflow(void)
{
	struct caught *c = &caught;
	volatile char root[1] = { 0 };

	memset(c, 0, sizeof(*c));
	puts("3. Stack overflow");
	puts("   descend() calls itself with no end ...");
	KEEL_SCOPE {
		keel_defer(recover_into, c);
		printf("   not reached: %lu\n", descend(1, root));
	}
	if (!c->recovered || c->kind != KEEL_PANIC_STACK_OVERFLOW)
		return failed("the stack overflow was not recovered as expected");
	printf("   recovered: %s\n", c->msg);
	printf("   kind %s, after %lu nested calls; the stack is usable again\n",
	       keel_panic_kind_name(c->kind), deepest);
	return 0;
}

/* ------------------------------------------------------------------------
 * 4. A panic that nobody recovers
 * ------------------------------------------------------------------------ */

static void say(void *line)
{
	printf("   %s\n", (const char *)line);
}

static void parse_header(int lineno)
{
	keel_panicf("malformed header at line %d: missing ':'", lineno);
}

static void handle_request(void)
{
	KEEL_SCOPE {
		keel_defer(say, "deferred in handle_request: request buffer freed");
		parse_header(3);
	}
}

static void serve(void)
{
	KEEL_SCOPE {
		keel_defer(say, "deferred in serve: listener closed");
		handle_request();
	}
}

static int demo_unrecovered(void)
{
	int status;
	pid_t pid;

	puts("4. A panic that nobody recovers (in a child process)");
	puts("   serve() -> handle_request() -> parse_header() panics;");
	puts("   the deferred calls still run, then the crash report, on stderr:");
	/* The child inherits stdio buffers: empty them, or lines repeat. */
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return failed("fork");
	if (pid == 0) {
		serve();
		/* Not reached: an unrecovered panic ends the process. */
		fflush(stdout);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return failed("waitpid");
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 2) {
		if (WIFEXITED(status))
			printf("   child exited with status %d, not 2\n",
			       WEXITSTATUS(status));
		else
			printf("   child killed by signal %d\n",
			       WTERMSIG(status));
		return failed("an unrecovered panic must exit with status 2");
	}
	puts("   child exited with status 2, as Go would");
	return 0;
}

int main(void)
{
	int bad = 0;

	puts("keel demo: Go's defer/panic/recover in C, faults included\n");
	bad |= demo_nil_deref();
	puts("");
	bad |= demo_divide();
	puts("");
	bad |= demo_stack_overflow();
	puts("");
	bad |= demo_unrecovered();
	puts("");
	if (bad) {
		puts("demo: something did not behave as described (see stderr)");
		return 1;
	}
	puts("all four behaved as described; this process never crashed.");
	return 0;
}
