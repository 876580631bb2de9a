/*
 * tests/core/test_defer.c - rule 1: deferred calls run last-in, first-out
 * when a scope ends, normally or while a panic unwinds through it, and the
 * resources they release are released on every path.
 */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>

#include <keel.h>
#include "keel_test.h"

/* ------------------------------------------------------------------------
 * An event log: every deferred call appends its name, tests compare the
 * whole sequence.
 * ------------------------------------------------------------------------ */

static void d_log(void *arg)
{
	keel_test_ev_add(arg);
}

/* Recovers and logs "rec:<message>" (or "rec:none"). */
static void d_recover(void *arg)
{
	const struct keel_panic *p = keel_recover();
	char buf[256];

	(void)arg;
	snprintf(buf, sizeof(buf), "rec:%s", p ? keel_panic_message(p) : "none");
	keel_test_ev_add(buf);
}

static void panic_boom(void)
{
	keel_panic("boom");
}

/* ------------------------------------------------------------------------
 * keel_call: LIFO on both paths
 * ------------------------------------------------------------------------ */

static void body_three_defers(void *arg)
{
	keel_defer(d_log, "a");
	keel_defer(d_log, "b");
	keel_defer(d_log, "c");
	keel_test_ev_add("body");
	if (arg != NULL)
		panic_boom();
}

TEST(defer_lifo_on_normal_end)
{
	CHECK_INT(keel_call(body_three_defers, NULL), ==, 0);
	CHECK_STR(keel_test_ev, "body,c,b,a");
}

static void body_recover_then_three(void *arg)
{
	keel_defer(d_recover, NULL);
	body_three_defers(arg);
	keel_test_ev_add("not reached");
}

TEST(defer_lifo_on_panic)
{
	CHECK_INT(keel_call(body_recover_then_three, (void *)1), ==, 1);
	CHECK_STR(keel_test_ev, "body,c,b,a,rec:boom");
}

/* A panic unwinds through scopes that do not recover: each one's deferred
 * calls run, innermost scope first. */
static void scope_inner(void *arg)
{
	keel_defer(d_log, "inner1");
	keel_defer(d_log, "inner2");
	panic_boom();
	(void)arg;
}

static void scope_middle(void *arg)
{
	keel_defer(d_log, "middle");
	keel_call(scope_inner, arg);
	keel_test_ev_add("middle not reached");
}

static void scope_outer(void *arg)
{
	keel_defer(d_recover, NULL);
	keel_defer(d_log, "outer");
	keel_call(scope_middle, arg);
	keel_test_ev_add("outer not reached");
}

TEST(defer_runs_in_every_scope_a_panic_unwinds)
{
	CHECK_INT(keel_call(scope_outer, NULL), ==, 1);
	CHECK_STR(keel_test_ev, "inner2,inner1,middle,outer,rec:boom");
}

/* Far more deferred calls than the initial defer stack holds. */
static int lifo_seen[1000], lifo_n;

static void d_index(void *arg)
{
	lifo_seen[lifo_n++] = (int)(intptr_t)arg;
}

static void body_many(void *arg)
{
	int i;

	for (i = 0; i < 1000; i++)
		keel_defer(d_index, (void *)(intptr_t)i);
	if (arg != NULL)
		panic_boom();
}

static void body_many_recover(void *arg)
{
	keel_defer(d_recover, NULL);
	body_many(arg);
}

TEST(defer_many_lifo_both_paths)
{
	int i;

	CHECK_INT(keel_call(body_many, NULL), ==, 0);
	CHECK_INT(lifo_n, ==, 1000);
	for (i = 0; i < 1000; i++)
		CHECK_INT(lifo_seen[i], ==, 999 - i);

	lifo_n = 0;
	CHECK_INT(keel_call(body_many_recover, (void *)1), ==, 1);
	CHECK_INT(lifo_n, ==, 1000);
	for (i = 0; i < 1000; i++)
		CHECK_INT(lifo_seen[i], ==, 999 - i);
	CHECK_STR(keel_test_ev, "rec:boom");
}

/* ------------------------------------------------------------------------
 * Deferred calls run on the panicking stack, before any jump
 * ------------------------------------------------------------------------ */

static const volatile int *panicker_local;
static uintptr_t panicker_frame;
static volatile int resumed;
static int frame_checks;

/* Called from a deferred call: the panicking function's frame must still be
 * live (its local readable, unchanged) and below us on the stack. */
static void check_panicker_frame_live(void)
{
	volatile int probe = 0;

	CHECK(panicker_local != NULL);
	CHECK_INT(*panicker_local, ==, 0x5eed);
	CHECK((uintptr_t)&probe < (uintptr_t)panicker_local);
	CHECK((uintptr_t)__builtin_frame_address(0) < panicker_frame);
	/* No longjmp has happened yet. */
	CHECK_INT(resumed, ==, 0);
	CHECK_INT(probe, ==, 0);
	frame_checks++;
}

static void d_check_frame(void *arg)
{
	(void)arg;
	check_panicker_frame_live();
}

static void d_check_frame_and_recover(void *arg)
{
	check_panicker_frame_live();
	d_recover(arg);
}

static __attribute__((noinline)) void panicker(void)
{
	volatile int canary = 0x5eed;

	panicker_local = &canary;
	panicker_frame = (uintptr_t)__builtin_frame_address(0);
	keel_panic("boom");
}

static void frame_inner(void *arg)
{
	(void)arg;
	keel_defer(d_check_frame, NULL);
	panicker();
}

static void frame_outer(void *arg)
{
	(void)arg;
	keel_defer(d_check_frame_and_recover, NULL);
	keel_call(frame_inner, NULL);
}

TEST(defer_runs_on_panicking_stack_before_jump)
{
	CHECK_INT(keel_call(frame_outer, NULL), ==, 1);
	resumed = 1;
	CHECK_INT(frame_checks, ==, 2);
	CHECK_STR(keel_test_ev, "rec:boom");
}

TEST(defer_runs_on_panicking_stack_block_form)
{
	KEEL_SCOPE {
		keel_defer(d_check_frame_and_recover, NULL);
		KEEL_SCOPE {
			keel_defer(d_check_frame, NULL);
			panicker();
		}
	}
	resumed = 1;
	CHECK_INT(frame_checks, ==, 2);
	CHECK_STR(keel_test_ev, "rec:boom");
}

/* ------------------------------------------------------------------------
 * Resources: locks, files, descriptors, memory
 * ------------------------------------------------------------------------ */

static pthread_mutex_t lock;

static void init_errorcheck_mutex(void)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	CHECK_INT(pthread_mutex_init(&lock, &a), ==, 0);
	pthread_mutexattr_destroy(&a);
}

static void locked_section(void *arg)
{
	CHECK_INT(pthread_mutex_lock(&lock), ==, 0);
	keel_defer(keel_defer_mutex_unlock, &lock);
	/* Held here: an error-checking mutex refuses a second lock. */
	CHECK_INT(pthread_mutex_trylock(&lock), ==, EBUSY);
	if (arg != NULL)
		panic_boom();
}

static void locked_section_recover(void *arg)
{
	keel_defer(d_recover, NULL);
	keel_call(locked_section, arg);
}

TEST(defer_mutex_unlocked_on_every_path)
{
	init_errorcheck_mutex();

	CHECK_INT(keel_call(locked_section, NULL), ==, 0);
	CHECK_INT(pthread_mutex_trylock(&lock), ==, 0);
	CHECK_INT(pthread_mutex_unlock(&lock), ==, 0);

	CHECK_INT(keel_call(locked_section_recover, (void *)1), ==, 1);
	CHECK_INT(pthread_mutex_trylock(&lock), ==, 0);
	CHECK_INT(pthread_mutex_unlock(&lock), ==, 0);

	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		locked_section((void *)1);
	}
	CHECK_INT(pthread_mutex_trylock(&lock), ==, 0);
	CHECK_INT(pthread_mutex_unlock(&lock), ==, 0);
	CHECK_STR(keel_test_ev, "rec:boom,rec:boom");
}

/* A pipe tells whether the write end was flushed and closed: the read end
 * sees the data and then end-of-file. */
struct pipe_pair {
	int rd, wr;
};

static void pipe_open(struct pipe_pair *pp)
{
	int fds[2];

	CHECK_INT(pipe(fds), ==, 0);
	CHECK_INT(fcntl(fds[0], F_SETFL, O_NONBLOCK), ==, 0);
	pp->rd = fds[0];
	pp->wr = fds[1];
}

/* Reads what is in the pipe; returns 1 if the writer is gone (EOF). */
static int pipe_drain(struct pipe_pair *pp, char *buf, size_t n)
{
	size_t got = 0;

	for (;;) {
		ssize_t r = read(pp->rd, buf + got, n - 1 - got);

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		buf[got] = '\0';
		return r == 0;
	}
}

static void file_section(void *arg)
{
	struct pipe_pair *pp = arg;
	FILE *f = fdopen(pp->wr, "w");

	CHECK(f != NULL);
	keel_defer(keel_defer_fclose, f);
	/* Buffered: only fclose pushes it into the pipe. */
	CHECK(fputs("hello", f) >= 0);
	if (pp->rd < 0)
		panic_boom();
}

struct file_case {
	struct pipe_pair pp;
	int do_panic;
};

static void file_section_maybe_panic(void *arg)
{
	struct file_case *fc = arg;
	struct pipe_pair pp = fc->pp;

	keel_defer(d_recover, NULL);
	if (fc->do_panic)
		pp.rd = -1; /* tells file_section to panic */
	file_section(&pp);
}

TEST(defer_fclose_on_every_path)
{
	struct file_case fc;
	char buf[64];
	int do_panic;

	for (do_panic = 0; do_panic <= 1; do_panic++) {
		pipe_open(&fc.pp);
		fc.do_panic = do_panic;
		CHECK_INT(keel_call(file_section_maybe_panic, &fc), ==, do_panic);
		CHECK_INT(pipe_drain(&fc.pp, buf, sizeof(buf)), ==, 1);
		CHECK_STR(buf, "hello");
		close(fc.pp.rd);
	}
	CHECK_STR(keel_test_ev, "rec:none,rec:boom");
}

TEST(defer_close_fd_on_every_path)
{
	struct pipe_pair pp;
	char buf[16];

	pipe_open(&pp);
	KEEL_SCOPE {
		keel_defer(keel_defer_close, (void *)(intptr_t)pp.wr);
		CHECK_INT(pipe_drain(&pp, buf, sizeof(buf)), ==, 0);
	}
	CHECK_INT(pipe_drain(&pp, buf, sizeof(buf)), ==, 1);
	close(pp.rd);

	pipe_open(&pp);
	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(keel_defer_close, (void *)(intptr_t)pp.wr);
		panic_boom();
	}
	CHECK_INT(pipe_drain(&pp, buf, sizeof(buf)), ==, 1);
	close(pp.rd);
	CHECK_STR(keel_test_ev, "rec:boom");
}

/* Bytes the allocator has handed out and not had back. */
static size_t heap_in_use(void)
{
#ifdef KEEL_TEST_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
#endif
}

#define BIG_BLOCK ((size_t)4 << 20)

static size_t heap_during;

static void memory_section(void *arg)
{
	char *p = malloc(BIG_BLOCK);

	CHECK(p != NULL);
	keel_defer(free, p);
	memset(p, 0x5a, BIG_BLOCK);
	heap_during = heap_in_use();
	if (arg != NULL)
		panic_boom();
}

static void memory_section_recover(void *arg)
{
	keel_defer(d_recover, NULL);
	keel_call(memory_section, arg);
}

TEST(defer_free_on_every_path)
{
	size_t before;

	/* Warm up: the thread state and a panic record stay allocated. */
	CHECK_INT(keel_call(memory_section_recover, (void *)1), ==, 1);

	before = heap_in_use();
	CHECK_INT(keel_call(memory_section, NULL), ==, 0);
	CHECK(heap_during >= before + BIG_BLOCK);
	CHECK(heap_in_use() < before + BIG_BLOCK / 4);

	before = heap_in_use();
	CHECK_INT(keel_call(memory_section_recover, (void *)1), ==, 1);
	CHECK(heap_during >= before + BIG_BLOCK);
	CHECK(heap_in_use() < before + BIG_BLOCK / 4);
	CHECK_STR(keel_test_ev, "rec:boom,rec:boom");
}

/* ------------------------------------------------------------------------
 * KEEL_SCOPE: every way out of the block runs the deferred calls
 * ------------------------------------------------------------------------ */

TEST(scope_end_of_block)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_defer(d_log, "b");
		keel_test_ev_add("body");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "body,b,a,after");
}

static int return_from_scope(void)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_defer(d_log, "b");
		keel_test_ev_add("body");
		return 7;
	}
	keel_test_ev_add("not reached");
	return -1;
}

TEST(scope_return_from_block)
{
	CHECK_INT(return_from_scope(), ==, 7);
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "body,b,a,after");
}

TEST(scope_break_from_block)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_test_ev_add("body");
		if (keel_test_ev[0] != '\0')
			break;
		keel_test_ev_add("not reached");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "body,a,after");
}

TEST(scope_continue_from_block)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_test_ev_add("body");
		if (keel_test_ev[0] != '\0')
			continue;
		keel_test_ev_add("not reached");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "body,a,after");
}

/* break and continue leave the scope, not a loop around it. The loop's
 * variables are volatile: they live across the scope's setjmp. */
TEST(scope_break_inside_loop_leaves_only_the_scope)
{
	volatile int i, iterations = 0;

	for (i = 0; i < 3; i++) {
		KEEL_SCOPE {
			keel_defer(d_log, "d");
			if (i >= 0)
				break;
			keel_test_ev_add("not reached");
		}
		iterations++;
	}
	CHECK_INT(iterations, ==, 3);
	CHECK_STR(keel_test_ev, "d,d,d");
}

TEST(scope_continue_inside_loop_leaves_only_the_scope)
{
	volatile int i, iterations = 0;

	for (i = 0; i < 3; i++) {
		KEEL_SCOPE {
			keel_defer(d_log, "d");
			if (i >= 0)
				continue;
			keel_test_ev_add("not reached");
		}
		iterations++;
	}
	CHECK_INT(iterations, ==, 3);
	CHECK_STR(keel_test_ev, "d,d,d");
}

TEST(scope_goto_out_of_block)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_test_ev_add("body");
		if (keel_test_ev[0] != '\0')
			goto out;
		keel_test_ev_add("not reached");
	}
	keel_test_ev_add("skipped");
out:
	keel_test_ev_add("out");
	CHECK_STR(keel_test_ev, "body,a,out");
}

TEST(scope_goto_out_of_nested_blocks)
{
	KEEL_SCOPE {
		keel_defer(d_log, "outer");
		KEEL_SCOPE {
			keel_defer(d_log, "inner");
			if (keel_test_ev[0] == '\0')
				goto out;
		}
		keel_test_ev_add("not reached");
	}
	keel_test_ev_add("skipped");
out:
	keel_test_ev_add("out");
	CHECK_STR(keel_test_ev, "inner,outer,out");
}

static int return_from_nested_scopes(void)
{
	KEEL_SCOPE {
		keel_defer(d_log, "outer");
		KEEL_SCOPE {
			keel_defer(d_log, "inner");
			return 3;
		}
	}
	return -1;
}

TEST(scope_return_from_nested_blocks)
{
	CHECK_INT(return_from_nested_scopes(), ==, 3);
	CHECK_STR(keel_test_ev, "inner,outer");
}

TEST(scope_panic_recovered_resumes_after_block)
{
	static volatile int reached;

	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(d_log, "a");
		keel_defer(d_log, "b");
		panic_boom();
		reached = 1;
	}
	keel_test_ev_add("after");
	CHECK_INT(reached, ==, 0);
	CHECK_STR(keel_test_ev, "b,a,rec:boom,after");
}

TEST(scope_nested_normal)
{
	KEEL_SCOPE {
		keel_defer(d_log, "outer_a");
		KEEL_SCOPE {
			keel_defer(d_log, "inner_a");
			keel_test_ev_add("inner_body");
		}
		keel_test_ev_add("between");
		keel_defer(d_log, "outer_b");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "inner_body,inner_a,between,outer_b,outer_a,after");
}

TEST(scope_nested_panic_recovered_by_outer)
{
	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(d_log, "outer_a");
		KEEL_SCOPE {
			keel_defer(d_log, "inner_a");
			panic_boom();
		}
		keel_test_ev_add("not reached");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "inner_a,outer_a,rec:boom,after");
}

TEST(scope_nested_panic_recovered_by_inner)
{
	KEEL_SCOPE {
		keel_defer(d_log, "outer_a");
		KEEL_SCOPE {
			keel_defer(d_recover, NULL);
			keel_defer(d_log, "inner_a");
			panic_boom();
		}
		keel_test_ev_add("between");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "inner_a,rec:boom,between,outer_a,after");
}

/* A scope inside keel_call and a keel_call inside a scope mix freely. */
static void call_in_scope_body(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(d_log, "scope");
		panic_boom();
	}
	keel_test_ev_add("not reached");
}

TEST(scope_and_call_mixed)
{
	KEEL_SCOPE {
		keel_defer(d_log, "outer");
		CHECK_INT(keel_call(body_recover_then_three, (void *)1), ==, 1);
		keel_defer(d_recover, NULL);
		keel_call(call_in_scope_body, NULL);
		keel_test_ev_add("not reached");
	}
	CHECK_STR(keel_test_ev, "body,c,b,a,rec:boom,scope,rec:boom,outer");
}

/* ------------------------------------------------------------------------
 * A deferred call may defer more: the new call runs next
 * ------------------------------------------------------------------------ */

static void d_push(void *arg)
{
	keel_test_ev_add("push");
	keel_defer(d_log, arg);
}

static void body_push(void *arg)
{
	keel_defer(d_log, "a");
	keel_defer(d_push, "pushed");
	keel_defer(d_log, "b");
	if (arg != NULL)
		panic_boom();
}

static void body_push_recover(void *arg)
{
	keel_defer(d_recover, NULL);
	body_push(arg);
}

TEST(defer_from_deferred_runs_next_normal)
{
	CHECK_INT(keel_call(body_push, NULL), ==, 0);
	CHECK_STR(keel_test_ev, "b,push,pushed,a");
}

TEST(defer_from_deferred_runs_next_panic)
{
	CHECK_INT(keel_call(body_push_recover, (void *)1), ==, 1);
	CHECK_STR(keel_test_ev, "b,push,pushed,a,rec:boom");
}

/* The pushed call belongs to the scope being unwound, not to an outer one:
 * it runs before the outer scope's deferred calls. */
TEST(defer_from_deferred_runs_next_block_form)
{
	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(d_log, "outer");
		KEEL_SCOPE {
			keel_defer(d_push, "pushed");
			panic_boom();
		}
	}
	CHECK_STR(keel_test_ev, "push,pushed,outer,rec:boom");
}

/* Recovery happens in a deferred call; a call it defers still runs before
 * the scope's older deferred calls. */
static void d_recover_and_push(void *arg)
{
	d_recover(NULL);
	keel_defer(d_log, arg);
}

TEST(defer_from_recovering_deferred_runs_next)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_defer(d_recover_and_push, "pushed");
		panic_boom();
	}
	CHECK_STR(keel_test_ev, "rec:boom,pushed,a");
}

/* ------------------------------------------------------------------------
 * keel_defer with no scope open
 * ------------------------------------------------------------------------ */

static void d_print(void *arg)
{
	(void)arg;
	fprintf(stderr, "deferred call ran\n");
}

static void child_defer_no_scope(void *arg)
{
	(void)arg;
	keel_defer(d_print, NULL);
	fprintf(stderr, "keel_defer returned\n");
}

static void child_defer_after_scopes_closed(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(d_log, "x");
	}
	keel_defer(d_print, NULL);
	fprintf(stderr, "keel_defer returned\n");
}

TEST(defer_without_scope_panics)
{
	struct keel_child c;

	keel_test_run_child(child_defer_no_scope, NULL, &c);
	CHECK_INT(c.exited, ==, 1);
	CHECK_INT(c.code, ==, 2);
	CHECK_CONTAINS(c.out, "panic: keel_defer called with no scope open");
	CHECK(strstr(c.out, "keel_defer returned") == NULL);
	CHECK(strstr(c.out, "deferred call ran") == NULL);

	keel_test_run_child(child_defer_after_scopes_closed, NULL, &c);
	CHECK_INT(c.exited, ==, 1);
	CHECK_INT(c.code, ==, 2);
	CHECK_CONTAINS(c.out, "panic: keel_defer called with no scope open");
	CHECK(strstr(c.out, "keel_defer returned") == NULL);
	CHECK(strstr(c.out, "deferred call ran") == NULL);
}

/* keel_defer is also a real exported function: through a pointer (as a
 * binding from another language would call it) it registers the same way
 * as the inline fast path. */
TEST(defer_through_function_pointer)
{
	void (*defer_fn)(void (*)(void *), void *) = keel_defer;

	keel_test_ev[0] = '\0';
	KEEL_SCOPE {
		defer_fn(d_log, "a");
		(keel_defer)(d_log, "b");
		keel_defer(d_log, "c");
	}
	CHECK_STR(keel_test_ev, "c,b,a");
}
