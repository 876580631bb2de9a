/* KEEL_TEST_LABELS: threads */
/*
 * tests/core/test_recover.c - where keel_recover works (rule 2), what
 * happens after a recovery (rule 3), panics raised while panicking (rule 4),
 * the panic values and their accessors (rule 9), and per-thread panics
 * (rule 5).
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include <keel.h>
#include "keel_test.h"

/* ------------------------------------------------------------------------
 * Event log
 * ------------------------------------------------------------------------ */

static void d_log(void *arg)
{
	keel_test_ev_add(arg);
}

/* Recovers and logs "<arg>:<message>" or "<arg>:none". */
static void d_recover(void *arg)
{
	const struct keel_panic *p = keel_recover();

	keel_test_ev_addf("%s:%s", arg ? (const char *)arg : "rec",
		p ? keel_panic_message(p) : "none");
}

static void panic_arg(void *arg)
{
	keel_panic(arg);
}

/* Runs fn(arg) in a scope that recovers; returns keel_call's result. */
struct guarded {
	void (*fn)(void *);
	void *arg;
};

static void guarded_body(void *arg)
{
	struct guarded *g = arg;

	keel_defer(d_recover, NULL);
	g->fn(g->arg);
}

static int call_recovering(void (*fn)(void *), void *arg)
{
	struct guarded g = { fn, arg };

	return keel_call(guarded_body, &g);
}

/* The last recovered panic's details, copied while still valid. */
static char last_msg[8192];
static enum keel_panic_kind last_kind;
static int last_runtime;
static int last_has_error;

static void d_capture(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	if (p == NULL)
		return;
	snprintf(last_msg, sizeof(last_msg), "%s", keel_panic_message(p));
	last_kind = keel_panic_kind(p);
	last_runtime = keel_panic_is_runtime(p);
	last_has_error = keel_panic_error_value(p) != NULL;
}

static void capture_body(void *arg)
{
	struct guarded *g = arg;

	keel_defer(d_capture, NULL);
	g->fn(g->arg);
}

static int call_capturing(void (*fn)(void *), void *arg)
{
	struct guarded g = { fn, arg };

	last_msg[0] = '\0';
	last_kind = (enum keel_panic_kind)-1;
	last_runtime = -1;
	last_has_error = -1;
	return keel_call(capture_body, &g);
}

/* ========================================================================
 * Rule 2: where keel_recover returns the panic
 * ======================================================================== */

TEST(recover_directly_in_deferred_call)
{
	CHECK_INT(call_recovering(panic_arg, "boom"), ==, 1);
	CHECK_STR(keel_test_ev, "rec:boom");
}

static __attribute__((noinline)) void recover_helper(void)
{
	const struct keel_panic *p = keel_recover();

	keel_test_ev_addf("helper:%s", p ? keel_panic_message(p) : "none");
}

static __attribute__((noinline)) void recover_helper_deeper(void)
{
	recover_helper();
}

static void d_calls_helper(void *arg)
{
	(void)arg;
	recover_helper_deeper();
}

static void body_helper_recovers(void *arg)
{
	keel_defer(d_calls_helper, NULL);
	keel_panic(arg);
}

TEST(recover_in_helper_called_by_deferred_call)
{
	CHECK_INT(keel_call(body_helper_recovers, "boom"), ==, 1);
	CHECK_STR(keel_test_ev, "helper:boom");
}

TEST(recover_null_without_panic)
{
	/* No keel state on this thread yet. */
	CHECK(keel_recover() == NULL);
	CHECK_INT(keel_panicking(), ==, 0);

	KEEL_SCOPE {
		CHECK(keel_recover() == NULL);
		keel_defer(d_recover, "normal");
	}
	CHECK(keel_recover() == NULL);
	CHECK_STR(keel_test_ev, "normal:none");
}

/* Not in a deferred call: the panicking function's own code and the body
 * of the scope cannot recover, even once a panic has happened before. */
static void body_recover_before_panic(void *arg)
{
	(void)arg;
	keel_defer(d_recover, NULL);
	CHECK(keel_recover() == NULL);
	keel_panic("boom");
}

TEST(recover_null_outside_deferred_calls)
{
	CHECK_INT(keel_call(body_recover_before_panic, NULL), ==, 1);
	CHECK(keel_recover() == NULL);
	CHECK_INT(keel_call(body_recover_before_panic, NULL), ==, 1);
	CHECK_STR(keel_test_ev, "rec:boom,rec:boom");
}

static void d_recover_twice(void *arg)
{
	const struct keel_panic *p1 = keel_recover();
	const struct keel_panic *p2 = keel_recover();

	(void)arg;
	CHECK(p1 != NULL);
	CHECK(p2 == NULL);
	keel_test_ev_addf("twice:%s", keel_panic_message(p1));
}

static void body_recover_twice(void *arg)
{
	/* Runs after the recovery, in the same scope: nothing to recover. */
	keel_defer(d_recover, "later");
	keel_defer(d_recover_twice, NULL);
	keel_panic(arg);
}

TEST(recover_second_call_returns_null)
{
	CHECK_INT(keel_call(body_recover_twice, "boom"), ==, 1);
	CHECK_STR(keel_test_ev, "twice:boom,later:none");
}

/* Inside the panic's deferred call, a nested scope that ends normally runs
 * its own deferred calls: those cannot recover the outer panic. */
static void d_nested_sees_null(void *arg)
{
	(void)arg;
	CHECK(keel_recover() == NULL);
	CHECK_INT(keel_panicking(), ==, 1);
	keel_test_ev_add("nested:null");
}

static void nested_normal_body(void *arg)
{
	(void)arg;
	keel_defer(d_nested_sees_null, NULL);
	keel_test_ev_add("nested_body");
}

static void d_nested_then_recover(void *arg)
{
	(void)arg;
	CHECK_INT(keel_call(nested_normal_body, NULL), ==, 0);
	KEEL_SCOPE {
		keel_defer(d_nested_sees_null, NULL);
	}
	d_recover("outer");
}

static void body_nested_then_recover(void *arg)
{
	keel_defer(d_nested_then_recover, NULL);
	keel_panic(arg);
}

TEST(recover_null_in_nested_scope_during_panic)
{
	CHECK_INT(keel_call(body_nested_then_recover, "boom"), ==, 1);
	CHECK_STR(keel_test_ev, "nested_body,nested:null,nested:null,outer:boom");
	CHECK_INT(keel_panicking(), ==, 0);
}

/* ========================================================================
 * Rule 3: after recovery
 * ======================================================================== */

static void body_remaining_defers(void *arg)
{
	keel_defer(d_log, "a");
	keel_defer(d_recover, NULL);
	keel_defer(d_log, "b");
	keel_defer(d_log, "c");
	keel_panic(arg);
	keel_test_ev_add("not reached");
}

TEST(recover_remaining_defers_run_then_call_returns_1)
{
	int r = keel_call(body_remaining_defers, "boom");

	keel_test_ev_add("returned");
	CHECK_INT(r, ==, 1);
	CHECK_STR(keel_test_ev, "c,b,rec:boom,a,returned");
}

TEST(recover_remaining_defers_run_then_block_resumes)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_defer(d_recover, NULL);
		keel_defer(d_log, "b");
		keel_panic("boom");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "b,rec:boom,a,after");
}

/* A panic recovered deeper down is invisible to the enclosing keel_call. */
static void body_recovers_inside(void *arg)
{
	CHECK_INT(call_recovering(panic_arg, arg), ==, 1);
	keel_test_ev_add("inner done");
}

TEST(recover_call_returns_0_when_panic_recovered_inside)
{
	CHECK_INT(keel_call(body_recovers_inside, "boom"), ==, 0);
	CHECK_STR(keel_test_ev, "rec:boom,inner done");
}

/* Go's named results: the deferred function sets the caller's result on
 * both paths. func half(x int) (n int) { defer ...; if odd, panic }. */
struct half_call {
	int x;
	int n;
};

static void d_set_result(void *arg)
{
	struct half_call *hc = arg;

	if (keel_recover() != NULL)
		hc->n = -1;
	else
		hc->n += 1000;
}

static void half_body(void *arg)
{
	struct half_call *hc = arg;

	keel_defer(d_set_result, hc);
	if (hc->x % 2 != 0)
		keel_panicf("odd: %d", hc->x);
	hc->n = hc->x / 2;
}

static int half(int x)
{
	struct half_call hc = { x, 0 };

	keel_call(half_body, &hc);
	return hc.n;
}

static void d_set_int_result(void *arg)
{
	volatile int *n = arg;

	if (keel_recover() != NULL)
		*n = -1;
	else
		*n += 1000;
}

static int half_block(int x)
{
	volatile int n = 0;

	KEEL_SCOPE {
		keel_defer(d_set_int_result, (void *)&n);
		if (x % 2 != 0)
			keel_panicf("odd: %d", x);
		n = x / 2;
	}
	return n;
}

TEST(recover_deferred_sets_named_result)
{
	CHECK_INT(half(10), ==, 1005);
	CHECK_INT(half(7), ==, -1);
	CHECK_INT(half_block(10), ==, 1005);
	CHECK_INT(half_block(7), ==, -1);
}

/* A deferred call that panics while the scope ends normally is recovered by
 * a deferred call registered before it: keel_call then returns 1. */
static void d_panic(void *arg)
{
	keel_panic(arg);
}

static void body_defer_panics_on_normal_end(void *arg)
{
	keel_defer(d_log, "a");
	keel_defer(d_recover, NULL);
	keel_defer(d_log, "b");
	keel_defer(d_panic, arg);
	keel_test_ev_add("body");
}

TEST(recover_panic_from_deferred_call_on_normal_end)
{
	CHECK_INT(keel_call(body_defer_panics_on_normal_end, "late"), ==, 1);
	CHECK_STR(keel_test_ev, "body,b,rec:late,a");
}

TEST(recover_panic_from_deferred_call_on_block_end)
{
	KEEL_SCOPE {
		keel_defer(d_log, "a");
		keel_defer(d_recover, NULL);
		keel_defer(d_panic, "late");
		keel_test_ev_add("body");
	}
	keel_test_ev_add("after");
	CHECK_STR(keel_test_ev, "body,rec:late,a,after");
}

/* The block was left by return, then a deferred call panicked and another
 * recovered: as documented, execution resumes right after the block, so
 * the function goes on past it. */
static int return_then_late_panic(void)
{
	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(d_panic, "late");
		keel_test_ev_add("body");
		return 1;
	}
	keel_test_ev_add("after");
	return 2;
}

TEST(recover_panic_from_deferred_call_after_return)
{
	CHECK_INT(return_then_late_panic(), ==, 2);
	CHECK_STR(keel_test_ev, "body,rec:late,after");
}

/* After a recovery, a panic raised by one of the scope's remaining deferred
 * calls is a new panic that leaves the scope. */
static void body_panic_after_recovery(void *arg)
{
	(void)arg;
	keel_defer(d_log, "a");
	keel_defer(d_panic, "second");
	keel_defer(d_recover, "inner");
	keel_panic("first");
}

static void body_outer_of_panic_after_recovery(void *arg)
{
	keel_defer(d_recover, "outer");
	keel_call(body_panic_after_recovery, arg);
	keel_test_ev_add("not reached");
}

TEST(recover_then_remaining_deferred_call_panics)
{
	CHECK_INT(keel_call(body_outer_of_panic_after_recovery, NULL), ==, 1);
	CHECK_STR(keel_test_ev, "inner:first,a,outer:second");
	CHECK_INT(keel_panicking(), ==, 0);
}

/* ========================================================================
 * Rule 4: panics raised while panicking
 * ======================================================================== */

static void body_defer_replaces(void *arg)
{
	(void)arg;
	keel_defer(d_recover, NULL);
	keel_defer(d_log, "a");
	keel_defer(d_panic, "second");
	keel_defer(d_log, "b");
	keel_panic("first");
}

TEST(panic_in_deferred_call_replaces_current)
{
	CHECK_INT(keel_call(body_defer_replaces, NULL), ==, 1);
	CHECK_STR(keel_test_ev, "b,a,rec:second");
	/* The first panic was aborted, not left in flight. */
	CHECK_INT(keel_panicking(), ==, 0);
	CHECK(keel_recover() == NULL);
}

/* Three panics in a row: recover sees the newest. */
TEST(panic_in_deferred_call_replaces_twice)
{
	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(d_panic, "third");
		keel_defer(d_panic, "second");
		keel_panic("first");
	}
	CHECK_STR(keel_test_ev, "rec:third");
	CHECK_INT(keel_panicking(), ==, 0);
}

static void d_recover_and_repanic(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	CHECK(p != NULL);
	keel_test_ev_addf("repanic:%s", keel_panic_message(p));
	keel_panicf("re: %s", keel_panic_message(p));
}

static void body_repanic(void *arg)
{
	keel_defer(d_log, "inner_a");
	keel_defer(d_recover_and_repanic, NULL);
	keel_panic(arg);
}

static void body_outer_repanic(void *arg)
{
	keel_defer(d_recover, "outer");
	keel_defer(d_log, "outer_a");
	keel_call(body_repanic, arg);
	keel_test_ev_add("not reached");
}

TEST(recover_and_repanic_outer_recovers_new)
{
	CHECK_INT(keel_call(body_outer_repanic, "first"), ==, 1);
	CHECK_STR(keel_test_ev, "repanic:first,inner_a,outer_a,outer:re: first");
	CHECK_INT(keel_panicking(), ==, 0);
}

static void child_repanic_unrecovered(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(d_recover_and_repanic, NULL);
		keel_panic("first");
	}
}

TEST(repanic_unrecovered_report_shows_both)
{
	struct keel_child c;

	keel_test_run_child(child_repanic_unrecovered, NULL, &c);
	CHECK_INT(c.code, ==, 2);
	CHECK_CONTAINS(c.out, "panic: first [recovered]\n\tpanic: re: first\n");
}

/* One panic unwinds three scopes (each runs its deferred calls, in order)
 * to the fourth, which recovers. */
static void level3(void *arg)
{
	keel_defer(d_log, "l3a");
	keel_defer(d_log, "l3b");
	keel_panic(arg);
}

static void level2(void *arg)
{
	keel_defer(d_log, "l2a");
	keel_call(level3, arg);
	keel_test_ev_add("l2 not reached");
}

static void level1(void *arg)
{
	keel_defer(d_log, "l1a");
	KEEL_SCOPE {
		keel_defer(d_log, "l1s");
		keel_call(level2, arg);
	}
	keel_test_ev_add("l1 not reached");
}

static void level0(void *arg)
{
	keel_defer(d_log, "l0a");
	keel_defer(d_recover, NULL);
	keel_defer(d_log, "l0b");
	keel_call(level1, arg);
	keel_test_ev_add("l0 not reached");
}

TEST(unrecovered_panic_unwinds_several_scopes)
{
	CHECK_INT(keel_call(level0, "deep"), ==, 1);
	CHECK_STR(keel_test_ev, "l3b,l3a,l2a,l1s,l1a,l0b,rec:deep,l0a");
}

static void d_print(void *arg)
{
	fprintf(stderr, "deferred %s\n", (const char *)arg);
}

static void child_unrecovered(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(d_print, "outer");
		KEEL_SCOPE {
			keel_defer(d_print, "inner");
			keel_panic("nobody catches this");
		}
	}
	fprintf(stderr, "not reached\n");
}

TEST(unrecovered_panic_runs_defers_then_exits_2)
{
	struct keel_child c;
	const char *inner, *outer, *report;

	keel_test_run_child(child_unrecovered, NULL, &c);
	CHECK_INT(c.exited, ==, 1);
	CHECK_INT(c.code, ==, 2);
	inner = strstr(c.out, "deferred inner\n");
	outer = strstr(c.out, "deferred outer\n");
	report = strstr(c.out, "panic: nobody catches this\n");
	CHECK(inner != NULL && outer != NULL && report != NULL);
	CHECK(inner < outer && outer < report);
	CHECK(strstr(c.out, "not reached") == NULL);
}

/* Inside the outer panic's deferred call, a nested scope panics and
 * recovers on its own; the outer panic goes on. */
/* Runs after the nested scope recovered: neither the nested panic (done)
 * nor the outer one (not its deferred call) can be recovered here. */
static void d_after_nested_recovery(void *arg)
{
	(void)arg;
	CHECK(keel_recover() == NULL);
	CHECK_INT(keel_panicking(), ==, 1);
	keel_test_ev_add("e:null");
}

static void nested_panic_body(void *arg)
{
	keel_defer(d_after_nested_recovery, NULL);
	keel_defer(d_recover, NULL);
	keel_panic(arg);
}

static void d_nested_panic_recovered(void *arg)
{
	CHECK_INT(keel_call(nested_panic_body, "nested"), ==, 1);
	CHECK_INT(keel_panicking(), ==, 1);
	if (arg != NULL)
		d_recover("d");
}

static void body_nested_panic(void *arg)
{
	keel_defer(d_log, "a");
	keel_defer(d_nested_panic_recovered, arg);
	keel_panic("outer");
}

static void body_outer_nested_panic(void *arg)
{
	keel_defer(d_recover, "top");
	keel_call(body_nested_panic, arg);
	keel_test_ev_add("after inner call");
}

TEST(nested_recovered_panic_lets_outer_continue)
{
	/* The deferred call does not recover: the outer panic reaches the
	 * enclosing scope, which sees the outer panic, not the nested one. */
	CHECK_INT(keel_call(body_outer_nested_panic, NULL), ==, 1);
	CHECK_STR(keel_test_ev, "rec:nested,e:null,a,top:outer");
}

TEST(nested_recovered_panic_then_outer_recover_sees_outer)
{
	CHECK_INT(keel_call(body_outer_nested_panic, (void *)1), ==, 0);
	CHECK_STR(keel_test_ev, "rec:nested,e:null,d:outer,a,after inner call,top:none");
}

/* A nested scope in a deferred call whose panic nobody in the nested scope
 * recovers: it replaces the outer panic. */
static void d_nested_panic_escapes(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(d_log, "nested_a");
		keel_panic("nested");
	}
}

TEST(nested_unrecovered_panic_replaces_outer)
{
	KEEL_SCOPE {
		keel_defer(d_recover, NULL);
		keel_defer(d_log, "a");
		keel_defer(d_nested_panic_escapes, NULL);
		keel_panic("outer");
	}
	CHECK_STR(keel_test_ev, "nested_a,a,rec:nested");
	CHECK_INT(keel_panicking(), ==, 0);
}

/* ========================================================================
 * Rule 9: panic values
 * ======================================================================== */

TEST(panic_nil_argument)
{
	CHECK_INT(call_capturing(panic_arg, NULL), ==, 1);
	CHECK_STR(last_msg, "panic called with nil argument");
	CHECK_INT(last_kind, ==, KEEL_PANIC_NIL_ARGUMENT);
	CHECK_INT(last_runtime, ==, 1);
}

static void panic_error_null(void *arg)
{
	(void)arg;
	keel_panic_error(NULL);
}

TEST(panic_error_nil_argument)
{
	CHECK_INT(call_capturing(panic_error_null, NULL), ==, 1);
	CHECK_STR(last_msg, "panic called with nil argument");
	CHECK_INT(last_kind, ==, KEEL_PANIC_NIL_ARGUMENT);
}

static void panicf_small(void *arg)
{
	(void)arg;
	keel_panicf("%s=%d (%05.1f%%)", "answer", 42, 12.5);
}

TEST(panicf_formats)
{
	CHECK_INT(call_capturing(panicf_small, NULL), ==, 1);
	CHECK_STR(last_msg, "answer=42 (012.5%)");
	CHECK_INT(last_kind, ==, KEEL_PANIC_MESSAGE);
	CHECK_INT(last_runtime, ==, 0);
}

static char long_text[5001];

static void fill_long_text(size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		long_text[i] = (char)('a' + i % 26);
	long_text[n] = '\0';
}

static void panicf_long(void *arg)
{
	keel_panicf("%s", (const char *)arg);
}

/* Around the inline buffer's size and well past it, both entry points. */
TEST(panic_long_messages_kept_whole)
{
	static const size_t lens[] = { 0, 1, 126, 127, 128, 129, 255, 256, 5000 };
	size_t i;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		fill_long_text(lens[i]);
		CHECK_INT(call_capturing(panic_arg, long_text), ==, 1);
		CHECK_INT(strlen(last_msg), ==, lens[i]);
		CHECK_STR(last_msg, long_text);
		CHECK_INT(call_capturing(panicf_long, long_text), ==, 1);
		CHECK_INT(strlen(last_msg), ==, lens[i]);
		CHECK_STR(last_msg, long_text);
	}
	keel_test_leak_check();
}

static void panicf_long_formatted(void *arg)
{
	(void)arg;
	keel_panicf("head %s tail %d", long_text, 7);
}

TEST(panicf_long_message_with_conversions)
{
	char want[6000];

	fill_long_text(5000);
	snprintf(want, sizeof(want), "head %s tail %d", long_text, 7);
	CHECK_INT(call_capturing(panicf_long_formatted, NULL), ==, 1);
	CHECK_STR(last_msg, want);
}

/* keel_panic copies its message: the caller's buffer may change at once. */
static char scribble_buf[32];

static void d_scribble(void *arg)
{
	(void)arg;
	strcpy(scribble_buf, "XXXXXXXX");
}

static void body_copy_check(void *arg)
{
	(void)arg;
	KEEL_SCOPE {
		keel_defer(d_capture, NULL);
		keel_defer(d_scribble, NULL);
		strcpy(scribble_buf, "original");
		keel_panic(scribble_buf);
	}
}

TEST(panic_message_is_copied)
{
	CHECK_INT(keel_call(body_copy_check, NULL), ==, 0);
	CHECK_STR(last_msg, "original");
}

static struct keel_error *raised_err;
static const struct keel_error *seen_err;
static char seen_err_msg[128];
static int seen_err_code;

static void d_read_error(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	CHECK(p != NULL);
	CHECK_INT(keel_panic_kind(p), ==, KEEL_PANIC_ERROR);
	CHECK_INT(keel_panic_is_runtime(p), ==, 0);
	CHECK_STR(keel_panic_message(p), "bad input 7");
	seen_err = keel_panic_error_value(p);
	CHECK(seen_err != NULL);
	seen_err_code = keel_error_code(seen_err);
	snprintf(seen_err_msg, sizeof(seen_err_msg), "%s",
		 keel_error_message(seen_err));
}

static void body_panic_error(void *arg)
{
	(void)arg;
	keel_defer(d_read_error, NULL);
	raised_err = keel_error_new(-EINVAL, "bad input %d", 7);
	keel_panic_error(raised_err);
}

TEST(panic_error_carries_error_value)
{
	CHECK_INT(keel_call(body_panic_error, NULL), ==, 1);
	CHECK(seen_err == raised_err);
	CHECK_INT(seen_err_code, ==, -EINVAL);
	CHECK_STR(seen_err_msg, "bad input 7");
	/* The panic owned the error and freed it. */
	keel_test_leak_check();
}

TEST(panic_error_value_null_for_other_kinds)
{
	CHECK(keel_panic_error_value(NULL) == NULL);
	CHECK_INT(call_capturing(panic_arg, "plain"), ==, 1);
	CHECK_STR(last_msg, "plain");
	CHECK_INT(last_has_error, ==, 0);
}

struct point {
	int x, y;
};

static int destroyed;
static struct point *destroyed_ptr;

static void destroy_point(void *p)
{
	destroyed++;
	destroyed_ptr = p;
	free(p);
}

static struct point *raised_point;
static int payload_checks;

static void d_read_payload(void *arg)
{
	const struct keel_panic *p = keel_recover();
	struct point *pt;

	CHECK(p != NULL);
	CHECK_INT(keel_panic_kind(p), ==, KEEL_PANIC_PAYLOAD);
	CHECK_INT(keel_panic_is_runtime(p), ==, 0);
	CHECK_STR(keel_panic_message(p), (const char *)arg);
	pt = keel_panic_payload_get(p, "point");
	CHECK(pt == raised_point);
	CHECK_INT(pt->x, ==, 3);
	CHECK_INT(pt->y, ==, 4);
	CHECK(keel_panic_payload_get(p, "rect") == NULL);
	CHECK(keel_panic_payload_get(p, "poin") == NULL);
	CHECK(keel_panic_payload_get(p, NULL) == NULL);
	/* Still owned by the panic while it is being handled. */
	CHECK_INT(destroyed, ==, 0);
	payload_checks++;
}

static void body_payload(void *arg)
{
	struct point *pt = malloc(sizeof(*pt));

	CHECK(pt != NULL);
	pt->x = 3;
	pt->y = 4;
	raised_point = pt;
	keel_defer(d_read_payload, arg);
	keel_panic_payload("point", pt, destroy_point,
			   strcmp(arg, "panic: point value") == 0 ? NULL : arg);
}

TEST(panic_payload_typed_and_destroyed_once)
{
	CHECK_INT(keel_call(body_payload, "panic: point value"), ==, 1);
	CHECK_INT(payload_checks, ==, 1);
	CHECK_INT(destroyed, ==, 1);
	CHECK(destroyed_ptr == raised_point);

	destroyed = 0;
	CHECK_INT(keel_call(body_payload, "a point escaped"), ==, 1);
	CHECK_INT(payload_checks, ==, 2);
	CHECK_INT(destroyed, ==, 1);

	/* Nothing later destroys it a second time. */
	CHECK_INT(call_recovering(panic_arg, "unrelated"), ==, 1);
	KEEL_SCOPE {
		keel_defer(d_log, "x");
	}
	CHECK_INT(destroyed, ==, 1);
	keel_test_leak_check();
}

static void body_payload_no_destroy(void *arg)
{
	static struct point pt = { 1, 2 };

	(void)arg;
	keel_panic_payload("point", &pt, NULL, NULL);
}

static void *got_payload;

static void d_get_point(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	got_payload = keel_panic_payload_get(p, "point");
}

TEST(panic_payload_without_destroy)
{
	KEEL_SCOPE {
		keel_defer(d_get_point, NULL);
		body_payload_no_destroy(NULL);
	}
	CHECK(got_payload != NULL);
	CHECK_INT(((struct point *)got_payload)->y, ==, 2);
}

/* A payload panic replaced by a newer panic is still destroyed, once. */
static void body_payload_replaced(void *arg)
{
	struct point *pt = malloc(sizeof(*pt));

	(void)arg;
	CHECK(pt != NULL);
	keel_defer(d_recover, NULL);
	keel_defer(d_panic, "newer");
	keel_panic_payload("point", pt, destroy_point, NULL);
}

TEST(panic_payload_destroyed_once_when_replaced)
{
	CHECK_INT(keel_call(body_payload_replaced, NULL), ==, 1);
	CHECK_STR(keel_test_ev, "rec:newer");
	CHECK_INT(destroyed, ==, 1);
	CHECK_INT(call_recovering(panic_arg, "unrelated"), ==, 1);
	CHECK_INT(destroyed, ==, 1);
	keel_test_leak_check();
}

static void d_payload_get_on_message(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	CHECK(p != NULL);
	CHECK(keel_panic_payload_get(p, "point") == NULL);
	CHECK(keel_panic_payload_get(p, "") == NULL);
	keel_test_ev_add("checked");
}

TEST(panic_payload_get_on_other_kinds_is_null)
{
	KEEL_SCOPE {
		keel_defer(d_payload_get_on_message, NULL);
		keel_panic("plain");
	}
	CHECK(keel_panic_payload_get(NULL, "point") == NULL);
	CHECK_STR(keel_test_ev, "checked");
}

TEST(panic_message_never_null)
{
	CHECK_STR(keel_panic_message(NULL), "<nil>");
	CHECK_INT(call_capturing(panic_arg, ""), ==, 1);
	CHECK_STR(last_msg, "");
}

static void index_body(void *arg)
{
	const int64_t *args = arg;

	(void)keel_index(args[0], args[1]);
	keel_test_ev_add("not reached");
}

TEST(index_in_range_returns_i)
{
	CHECK_INT(keel_index(0, 3), ==, 0);
	CHECK_INT(keel_index(2, 3), ==, 2);
	CHECK_INT(keel_index(INT64_MAX - 1, INT64_MAX), ==, INT64_MAX - 1);
	CHECK(keel_recover() == NULL);
}

TEST(index_out_of_range_panics)
{
	int64_t past[2] = { 5, 3 }, at_len[2] = { 3, 3 }, neg[2] = { -1, 3 };
	int64_t empty[2] = { 0, 0 };

	CHECK_INT(call_capturing(index_body, past), ==, 1);
	CHECK_STR(last_msg, "runtime error: index out of range [5] with length 3");
	CHECK_INT(last_kind, ==, KEEL_PANIC_INDEX);
	CHECK_INT(last_runtime, ==, 1);

	CHECK_INT(call_capturing(index_body, at_len), ==, 1);
	CHECK_STR(last_msg, "runtime error: index out of range [3] with length 3");

	CHECK_INT(call_capturing(index_body, neg), ==, 1);
	CHECK_STR(last_msg, "runtime error: index out of range [-1]");
	CHECK_INT(last_kind, ==, KEEL_PANIC_INDEX);

	CHECK_INT(call_capturing(index_body, empty), ==, 1);
	CHECK_STR(last_msg, "runtime error: index out of range [0] with length 0");
	CHECK(strstr(keel_test_ev, "not reached") == NULL);
}

TEST(panic_is_runtime_by_kind)
{
	CHECK_INT(keel_panic_is_runtime(NULL), ==, 0);
	CHECK_INT(call_capturing(panic_arg, "plain"), ==, 1);
	CHECK_INT(last_runtime, ==, 0);
	CHECK_INT(call_capturing(panic_arg, NULL), ==, 1);
	CHECK_INT(last_runtime, ==, 1);
}

/* The names the header documents. */
TEST(panic_kind_names)
{
	CHECK_STR(keel_panic_kind_name(KEEL_PANIC_MESSAGE), "message");
	CHECK_STR(keel_panic_kind_name(KEEL_PANIC_ERROR), "error");
	CHECK_STR(keel_panic_kind_name(KEEL_PANIC_STACK_OVERFLOW),
		  "stack-overflow");
	CHECK_STR(keel_panic_kind_name((enum keel_panic_kind)999), "unknown");
	CHECK_STR(keel_panic_kind_name(KEEL_PANIC_NIL_DEREF), "nil-dereference");
	CHECK_STR(keel_panic_kind_name(KEEL_PANIC_DIVIDE), "divide-by-zero");
}

static int panicking_seen[4];

static void d_panicking_probe(void *arg)
{
	panicking_seen[(intptr_t)arg] = keel_panicking();
}

static void d_panicking_recover(void *arg)
{
	(void)arg;
	/* In flight: the nested scope's deferred call cannot recover it, but
	 * keel_panicking still says so. */
	KEEL_SCOPE {
		keel_defer(d_panicking_probe, (void *)1);
	}
	panicking_seen[2] = keel_recover() != NULL;
	panicking_seen[3] = keel_panicking();
}

TEST(panicking_reports_panic_in_flight)
{
	CHECK_INT(keel_panicking(), ==, 0);
	KEEL_SCOPE {
		CHECK_INT(keel_panicking(), ==, 0);
		keel_defer(d_panicking_recover, NULL);
		keel_defer(d_panicking_probe, (void *)0);
		keel_panic("boom");
	}
	CHECK_INT(panicking_seen[0], ==, 1);
	CHECK_INT(panicking_seen[1], ==, 1);
	CHECK_INT(panicking_seen[2], ==, 1);
	CHECK_INT(panicking_seen[3], ==, 0);
	CHECK_INT(keel_panicking(), ==, 0);
}

/* ========================================================================
 * Rule 5: panics are per thread
 * ======================================================================== */

#define NTHREADS 4
#define NCYCLES 20000

struct worker {
	int id;
	int recovered;
	int wrong;
	char expect[64];
	char got[64];
};

static void d_worker_recover(void *arg)
{
	struct worker *w = arg;
	const struct keel_panic *p = keel_recover();

	if (p == NULL) {
		w->wrong++;
		return;
	}
	w->recovered++;
	if (strcmp(keel_panic_message(p), w->expect) != 0) {
		w->wrong++;
		snprintf(w->got, sizeof(w->got), "%s", keel_panic_message(p));
	}
}

static void worker_body(void *arg)
{
	struct worker *w = arg;

	keel_defer(d_worker_recover, w);
	keel_panic(w->expect);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < NCYCLES; i++) {
		snprintf(w->expect, sizeof(w->expect), "thread %d cycle %d",
			 w->id, i);
		if (keel_call(worker_body, w) != 1)
			w->wrong++;
		if (keel_recover() != NULL || keel_panicking())
			w->wrong++;
	}
	return NULL;
}

TEST(threads_panic_and_recover_concurrently)
{
	pthread_t th[NTHREADS];
	struct worker w[NTHREADS];
	int i;

	memset(w, 0, sizeof(w));
	for (i = 0; i < NTHREADS; i++) {
		w[i].id = i;
		CHECK_INT(pthread_create(&th[i], NULL, worker_main, &w[i]), ==, 0);
	}
	for (i = 0; i < NTHREADS; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	for (i = 0; i < NTHREADS; i++) {
		if (w[i].wrong != 0)
			KEEL_TEST_FAIL("thread %d: %d wrong, last got \"%s\"",
				       i, w[i].wrong, w[i].got);
		CHECK_INT(w[i].recovered, ==, NCYCLES);
	}
}

/* Thread A sits inside a deferred call of its own panic while thread B
 * tries to recover: B must never see A's panic. */
static sem_t a_in_defer, b_done;
static char a_msg[64], b_msg[64];
static int b_saw_null_bare, b_saw_null_in_defer, b_panicking_in_defer;
static int b_saw_null_in_body;

static void d_a_wait_then_recover(void *arg)
{
	const struct keel_panic *p;

	(void)arg;
	sem_post(&a_in_defer);
	while (sem_wait(&b_done) != 0)
		;
	p = keel_recover();
	snprintf(a_msg, sizeof(a_msg), "%s", p ? keel_panic_message(p) : "none");
}

static void a_body(void *arg)
{
	(void)arg;
	keel_defer(d_a_wait_then_recover, NULL);
	keel_panic("panic of A");
}

static void *thread_a(void *arg)
{
	(void)arg;
	if (keel_call(a_body, NULL) != 1)
		snprintf(a_msg, sizeof(a_msg), "keel_call did not return 1");
	return NULL;
}

static void d_b_normal(void *arg)
{
	(void)arg;
	b_saw_null_in_defer = keel_recover() == NULL;
	b_panicking_in_defer = keel_panicking();
}

static void d_b_recover(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	snprintf(b_msg, sizeof(b_msg), "%s", p ? keel_panic_message(p) : "none");
}

static void b_body(void *arg)
{
	(void)arg;
	keel_defer(d_b_recover, NULL);
	b_saw_null_in_body = keel_recover() == NULL;
	keel_panic("panic of B");
}

static void *thread_b(void *arg)
{
	(void)arg;
	while (sem_wait(&a_in_defer) != 0)
		;
	/* A thread that never used keel. */
	b_saw_null_bare = keel_recover() == NULL && keel_panicking() == 0;
	KEEL_SCOPE {
		keel_defer(d_b_normal, NULL);
	}
	if (keel_call(b_body, NULL) != 1)
		snprintf(b_msg, sizeof(b_msg), "keel_call did not return 1");
	sem_post(&b_done);
	return NULL;
}

TEST(threads_recover_never_sees_other_threads_panic)
{
	pthread_t ta, tb;

	CHECK_INT(sem_init(&a_in_defer, 0, 0), ==, 0);
	CHECK_INT(sem_init(&b_done, 0, 0), ==, 0);
	CHECK_INT(pthread_create(&ta, NULL, thread_a, NULL), ==, 0);
	CHECK_INT(pthread_create(&tb, NULL, thread_b, NULL), ==, 0);
	CHECK_INT(pthread_join(tb, NULL), ==, 0);
	CHECK_INT(pthread_join(ta, NULL), ==, 0);
	CHECK_INT(b_saw_null_bare, ==, 1);
	CHECK_INT(b_saw_null_in_defer, ==, 1);
	CHECK_INT(b_panicking_in_defer, ==, 0);
	CHECK_INT(b_saw_null_in_body, ==, 1);
	CHECK_STR(b_msg, "panic of B");
	CHECK_STR(a_msg, "panic of A");
}
