/*
 * tests/core/test_alloc.c - rule 7: the allocation helpers work like their
 * libc twins and panic, recoverably, instead of returning NULL.
 */
#include <stdint.h>

#include <keel.h>
#include "keel_test.h"

/* Sizes that no allocator grants, hidden from the optimiser so that no
 * call is folded or warned about at compile time. */
static volatile size_t huge = SIZE_MAX / 2;
static volatile size_t half_max = SIZE_MAX / 2 + 1;

/* ------------------------------------------------------------------------
 * The last recovered panic
 * ------------------------------------------------------------------------ */

static char last_msg[256];
static int last_kind = -1, last_runtime = -1, reached;

static void d_capture(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	if (p == NULL)
		return;
	snprintf(last_msg, sizeof(last_msg), "%s", keel_panic_message(p));
	last_kind = (int)keel_panic_kind(p);
	last_runtime = keel_panic_is_runtime(p);
}

struct guarded {
	void (*fn)(void *);
	void *arg;
};

static void capture_body(void *arg)
{
	struct guarded *g = arg;

	keel_defer(d_capture, NULL);
	g->fn(g->arg);
	reached = 1;
}

/* Runs fn(arg) in a scope that recovers; returns keel_call's result. */
static int call_capturing(void (*fn)(void *), void *arg)
{
	struct guarded g = { fn, arg };

	last_msg[0] = '\0';
	last_kind = last_runtime = -1;
	reached = 0;
	return keel_call(capture_body, &g);
}

/* ------------------------------------------------------------------------
 * Normal operation
 * ------------------------------------------------------------------------ */

TEST(malloc_works)
{
	char *p = keel_malloc(100), *z1 = keel_malloc(0), *z2 = keel_malloc(0);

	CHECK(p != NULL);
	memset(p, 'x', 100);
	CHECK(p[99] == 'x');
	/* Size 0 is 1: distinct, usable pointers. */
	CHECK(z1 != NULL && z2 != NULL && z1 != z2);
	z1[0] = 'a';
	z2[0] = 'b';
	free(p);
	free(z1);
	free(z2);
	keel_test_leak_check();
}

TEST(calloc_zeroes)
{
	unsigned char *p = keel_calloc(1000, 8);
	char *z = keel_calloc(0, 16), *w = keel_calloc(16, 0);
	size_t i;

	CHECK(p != NULL);
	for (i = 0; i < 8000; i++)
		CHECK_INT(p[i], ==, 0);
	CHECK(z != NULL && w != NULL && z != w);
	z[0] = 1;
	w[0] = 1;
	free(p);
	free(z);
	free(w);
}

TEST(realloc_grows_and_keeps_content)
{
	char *p = keel_realloc(NULL, 8), *q;
	int i;

	CHECK(p != NULL);
	memcpy(p, "abcdefg", 8);
	p = keel_realloc(p, 1 << 20);
	CHECK_STR(p, "abcdefg");
	p[(1 << 20) - 1] = 'z';
	p = keel_realloc(p, 4);
	CHECK(memcmp(p, "abcd", 4) == 0);
	/* Size 0 is 1: a live pointer, not a free. */
	q = keel_realloc(p, 0);
	CHECK(q != NULL);
	q[0] = 'k';
	for (i = 0; i < 10; i++)
		q = keel_realloc(q, (size_t)(i + 1) * 1000);
	CHECK(q[0] == 'k');
	free(q);
	keel_test_leak_check();
}

TEST(reallocarray_works)
{
	int *a = keel_reallocarray(NULL, 10, sizeof(int)), i;

	for (i = 0; i < 10; i++)
		a[i] = i * i;
	a = keel_reallocarray(a, 100000, sizeof(int));
	for (i = 0; i < 10; i++)
		CHECK_INT(a[i], ==, i * i);
	a[99999] = 1;
	a = keel_reallocarray(a, 0, sizeof(int));
	CHECK(a != NULL);
	a = keel_reallocarray(a, 5, 0);
	CHECK(a != NULL);
	free(a);
}

TEST(strdup_and_strndup)
{
	static char src[] = "hello";
	char *a = keel_strdup(src), *b = keel_strdup("");
	char *c = keel_strndup("hello", 3), *d = keel_strndup("hi", 10);
	char *e = keel_strndup("hello", 0);
	/* Not NUL-terminated: strndup must read at most n bytes. */
	char *raw = keel_malloc(4), *f;

	memcpy(raw, "abcd", 4);
	f = keel_strndup(raw, 4);
	CHECK_STR(a, "hello");
	CHECK_STR(b, "");
	CHECK_STR(c, "hel");
	CHECK_STR(d, "hi");
	CHECK_STR(e, "");
	CHECK_STR(f, "abcd");
	CHECK(a != src);
	free(a);
	free(b);
	free(c);
	free(d);
	free(e);
	free(f);
	free(raw);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Out of memory and size overflow
 * ------------------------------------------------------------------------ */

static void malloc_huge(void *arg)
{
	(void)arg;
	(void)keel_malloc(huge);
}

TEST(malloc_out_of_memory_panics)
{
	CHECK_INT(call_capturing(malloc_huge, NULL), ==, 1);
	CHECK_INT(reached, ==, 0);
	CHECK_STR(last_msg, "runtime error: out of memory");
	CHECK_INT(last_kind, ==, KEEL_PANIC_OUT_OF_MEMORY);
	CHECK_INT(last_runtime, ==, 1);
	/* Recovered for good: allocation and panics still work. */
	CHECK_INT(keel_panicking(), ==, 0);
	free(keel_strdup("still fine"));
	CHECK_INT(call_capturing(malloc_huge, NULL), ==, 1);
	CHECK_STR(last_msg, "runtime error: out of memory");
	keel_test_leak_check();
}

static void calloc_huge(void *arg)
{
	(void)arg;
	(void)keel_calloc(huge, 1);
}

static void calloc_overflow(void *arg)
{
	(void)arg;
	(void)keel_calloc(half_max, 2);
}

TEST(calloc_out_of_memory_and_overflow)
{
	CHECK_INT(call_capturing(calloc_huge, NULL), ==, 1);
	CHECK_STR(last_msg, "runtime error: out of memory");
	CHECK_INT(last_kind, ==, KEEL_PANIC_OUT_OF_MEMORY);

	CHECK_INT(call_capturing(calloc_overflow, NULL), ==, 1);
	CHECK_INT(reached, ==, 0);
	CHECK_STR(last_msg, "runtime error: allocation size overflow");
	CHECK_INT(last_runtime, ==, 1);
}

static char *kept;

static void realloc_huge(void *arg)
{
	(void)arg;
	kept = keel_realloc(kept, huge);
}

/* On a panic, the old block is left as it was. */
TEST(realloc_out_of_memory_keeps_block)
{
	kept = keel_strdup("precious");
	CHECK_INT(call_capturing(realloc_huge, NULL), ==, 1);
	CHECK_STR(last_msg, "runtime error: out of memory");
	CHECK_INT(last_kind, ==, KEEL_PANIC_OUT_OF_MEMORY);
	CHECK_STR(kept, "precious");
	free(kept);
	keel_test_leak_check();
}

static void reallocarray_overflow(void *arg)
{
	(void)arg;
	kept = keel_reallocarray(kept, half_max, 4);
}

static void reallocarray_huge(void *arg)
{
	(void)arg;
	kept = keel_reallocarray(kept, huge / 8, 4);
}

TEST(reallocarray_overflow_and_out_of_memory)
{
	kept = keel_strdup("precious");
	CHECK_INT(call_capturing(reallocarray_overflow, NULL), ==, 1);
	CHECK_STR(last_msg, "runtime error: allocation size overflow");
	CHECK_INT(last_runtime, ==, 1);
	CHECK_STR(kept, "precious");

	CHECK_INT(call_capturing(reallocarray_huge, NULL), ==, 1);
	CHECK_STR(last_msg, "runtime error: out of memory");
	CHECK_INT(last_kind, ==, KEEL_PANIC_OUT_OF_MEMORY);
	CHECK_STR(kept, "precious");
	free(kept);
	keel_test_leak_check();
}

/* An out-of-memory panic runs the deferred calls like any other. */
static int freed;

static void d_free_count(void *p)
{
	free(p);
	freed++;
}

static void alloc_then_huge(void *arg)
{
	(void)arg;
	keel_defer(d_free_count, keel_strdup("a"));
	keel_defer(d_free_count, keel_malloc(1000));
	(void)keel_malloc(huge);
}

TEST(out_of_memory_runs_deferred_calls)
{
	CHECK_INT(call_capturing(alloc_then_huge, NULL), ==, 1);
	CHECK_INT(freed, ==, 2);
	CHECK_STR(last_msg, "runtime error: out of memory");
	keel_test_leak_check();
}

static void child_unrecovered_oom(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		(void)keel_malloc(huge);
	}
	fprintf(stderr, "not reached\n");
}

TEST(out_of_memory_unrecovered_exits_2)
{
	struct keel_child c;

	keel_test_run_child(child_unrecovered_oom, NULL, &c);
	CHECK_INT(c.code, ==, 2);
	CHECK_CONTAINS(c.out, "panic: runtime error: out of memory\n");
	CHECK(strstr(c.out, "not reached") == NULL);
}
