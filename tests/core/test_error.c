/*
 * tests/core/test_error.c - rule 10: error values, error codes, and errors
 * made from recovered panics (the seed's safeDivide pattern).
 */
#include <signal.h>
#include <stdint.h>

#include <keel.h>
#include "keel_test.h"

/* ------------------------------------------------------------------------
 * Constructors and accessors
 * ------------------------------------------------------------------------ */

TEST(error_new_formats_message)
{
	struct keel_error *e = keel_error_new(-ENOENT, "open %s: %d", "x.conf", 3);

	CHECK(e != NULL);
	CHECK_INT(keel_error_code(e), ==, -ENOENT);
	CHECK_STR(keel_error_message(e), "open x.conf: 3");
	CHECK(keel_error_cause(e) == NULL);
	CHECK_INT(keel_error_panic_kind(e), ==, -1);
	CHECK_INT(keel_error_signo(e), ==, 0);
	CHECK(keel_error_fault_addr(e) == NULL);
	keel_error_free(e);
	keel_test_leak_check();
}

TEST(error_new_code_zero_is_unknown)
{
	struct keel_error *e = keel_error_new(0, "%s", "");

	CHECK_INT(keel_error_code(e), ==, KEEL_EUNKNOWN);
	CHECK_STR(keel_error_message(e), "");
	keel_error_free(e);
}

TEST(error_long_message)
{
	char text[3001];
	struct keel_error *e;

	memset(text, 'q', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	e = keel_error_new(-EIO, "<%s>", text);
	CHECK_INT(strlen(keel_error_message(e)), ==, 3002);
	CHECK(strncmp(keel_error_message(e) + 1, text, 3000) == 0);
	keel_error_free(e);
}

static struct keel_error *newv_helper(int code, const char *fmt, ...)
	KEEL_PRINTF(2, 3);
static struct keel_error *newv_helper(int code, const char *fmt, ...)
{
	struct keel_error *e;
	va_list ap;

	va_start(ap, fmt);
	e = keel_error_newv(code, fmt, ap);
	va_end(ap);
	return e;
}

TEST(error_newv)
{
	struct keel_error *e = newv_helper(-EAGAIN, "try %d more", 2);

	CHECK_INT(keel_error_code(e), ==, -EAGAIN);
	CHECK_STR(keel_error_message(e), "try 2 more");
	keel_error_free(e);
}

TEST(error_accessors_accept_null)
{
	CHECK_INT(keel_error_code(NULL), ==, 0);
	CHECK_STR(keel_error_message(NULL), "");
	CHECK(keel_error_cause(NULL) == NULL);
	CHECK_INT(keel_error_is(NULL, 0), ==, 0);
	CHECK_INT(keel_error_is(NULL, -EINVAL), ==, 0);
	CHECK_INT(keel_error_panic_kind(NULL), ==, -1);
	CHECK_INT(keel_error_signo(NULL), ==, 0);
	CHECK(keel_error_fault_addr(NULL) == NULL);
	keel_error_free(NULL);
}

/* ------------------------------------------------------------------------
 * Wrapping, cause chains, keel_error_is, formatting
 * ------------------------------------------------------------------------ */

/* "start: load config: open x.conf", codes -EINVAL, -ENOENT, -ENOENT. */
static struct keel_error *make_chain(struct keel_error **mid,
				     struct keel_error **root)
{
	struct keel_error *e1 = keel_error_new(-ENOENT, "open %s", "x.conf");
	struct keel_error *e2 = keel_error_wrap(e1, 0, "load %s", "config");
	struct keel_error *e3 = keel_error_wrap(e2, -EINVAL, "start");

	if (mid)
		*mid = e2;
	if (root)
		*root = e1;
	return e3;
}

TEST(error_wrap_and_cause_chain)
{
	struct keel_error *mid, *root, *top = make_chain(&mid, &root);

	CHECK_INT(keel_error_code(top), ==, -EINVAL);
	CHECK_INT(keel_error_code(mid), ==, -ENOENT); /* inherited */
	CHECK_INT(keel_error_code(root), ==, -ENOENT);
	CHECK(keel_error_cause(top) == mid);
	CHECK(keel_error_cause(mid) == root);
	CHECK(keel_error_cause(root) == NULL);
	CHECK_STR(keel_error_message(top), "start");
	CHECK_STR(keel_error_message(mid), "load config");
	/* Frees the whole chain. */
	keel_error_free(top);
	keel_test_leak_check();
}

TEST(error_wrap_null_cause)
{
	struct keel_error *e = keel_error_wrap(NULL, 0, "alone");
	struct keel_error *f = keel_error_wrap(NULL, -EPERM, "alone %d", 2);

	CHECK_INT(keel_error_code(e), ==, KEEL_EUNKNOWN);
	CHECK(keel_error_cause(e) == NULL);
	CHECK_STR(keel_error_message(e), "alone");
	CHECK_INT(keel_error_code(f), ==, -EPERM);
	CHECK_STR(keel_error_message(f), "alone 2");
	keel_error_free(e);
	keel_error_free(f);
}

TEST(error_is_searches_chain)
{
	struct keel_error *mid, *top = make_chain(&mid, NULL);

	CHECK_INT(keel_error_is(top, -EINVAL), ==, 1);
	CHECK_INT(keel_error_is(top, -ENOENT), ==, 1);
	CHECK_INT(keel_error_is(top, -EIO), ==, 0);
	CHECK_INT(keel_error_is(top, 0), ==, 0);
	/* Only down the chain, never up. */
	CHECK_INT(keel_error_is(mid, -EINVAL), ==, 0);
	CHECK_INT(keel_error_is(mid, -ENOENT), ==, 1);
	keel_error_free(top);
}

TEST(error_format_full)
{
	struct keel_error *top = make_chain(NULL, NULL);
	struct keel_error *one = keel_error_new(-EIO, "just this");
	char buf[128];

	CHECK_INT(keel_error_format(top, buf, sizeof(buf)), ==,
		  strlen("start: load config: open x.conf"));
	CHECK_STR(buf, "start: load config: open x.conf");
	CHECK_INT(keel_error_format(one, buf, sizeof(buf)), ==, 9);
	CHECK_STR(buf, "just this");
	memset(buf, 'z', sizeof(buf));
	CHECK_INT(keel_error_format(NULL, buf, sizeof(buf)), ==, 0);
	CHECK_STR(buf, "");
	keel_error_free(top);
	keel_error_free(one);
}

/* For every buffer size, the result must be what snprintf gives for the
 * full text: the same return value and the same NUL-terminated prefix. */
TEST(error_format_truncates_like_snprintf)
{
	struct keel_error *top = make_chain(NULL, NULL);
	const char *full = "start: load config: open x.conf";
	size_t len = strlen(full), n;
	char got[64], want[64];

	CHECK_INT(keel_error_format(top, NULL, 0), ==, len);
	for (n = 0; n <= len + 2; n++) {
		size_t r;

		memset(got, '#', sizeof(got));
		memset(want, '#', sizeof(want));
		r = keel_error_format(top, got, n);
		CHECK_INT(snprintf(want, n, "%s", full), ==, len);
		if (r != len)
			KEEL_TEST_FAIL("n=%zu: returned %zu, want %zu", n, r, len);
		/* Nothing written past the buffer. */
		CHECK(got[n] == '#');
		if (n == 0) {
			CHECK(got[0] == '#');
			continue;
		}
		if (strcmp(got, want) != 0)
			KEEL_TEST_FAIL("n=%zu: got \"%s\", snprintf gives \"%s\"",
				       n, got, want);
	}
	keel_error_free(top);
}

/* ------------------------------------------------------------------------
 * Codes
 * ------------------------------------------------------------------------ */

TEST(strerror_names_codes)
{
	CHECK_STR(keel_strerror(0), "success");
	CHECK_STR(keel_strerror(KEEL_OK), "success");
	CHECK_STR(keel_strerror(-EINVAL), strerror(EINVAL));
	CHECK_STR(keel_strerror(-EINVAL), "Invalid argument");
	CHECK_STR(keel_strerror(-ENOMEM), strerror(ENOMEM));
	CHECK_STR(keel_strerror(-ETIMEDOUT), strerror(ETIMEDOUT));
	CHECK_STR(keel_strerror(KEEL_EPANIC), "recovered panic");
	CHECK_STR(keel_strerror(KEEL_EUNKNOWN), "unknown error");
	/* Never NULL, whatever the code. */
	CHECK(keel_strerror(12345) != NULL);
	CHECK(keel_strerror(-19999) != NULL);
	CHECK(keel_strerror(KEEL_ERR_BASE) != NULL);
	CHECK(keel_strerror(-30000) != NULL);
	CHECK(keel_strerror(INT32_MIN) != NULL);
}

/* ------------------------------------------------------------------------
 * Errors from panics
 * ------------------------------------------------------------------------ */

static struct keel_error *from_panic;

static void d_copy_panic(void *arg)
{
	(void)arg;
	from_panic = keel_error_from_panic(keel_recover());
}

static void body_message_panic(void *arg)
{
	keel_defer(d_copy_panic, NULL);
	keel_panicf("lost %s", (const char *)arg);
}

TEST(error_from_message_panic)
{
	CHECK(keel_error_from_panic(NULL) == NULL);
	CHECK_INT(keel_call(body_message_panic, "the plot"), ==, 1);
	/* The copy outlives the panic. */
	CHECK(from_panic != NULL);
	CHECK_INT(keel_error_code(from_panic), ==, KEEL_EPANIC);
	CHECK_STR(keel_error_message(from_panic), "lost the plot");
	CHECK_INT(keel_error_panic_kind(from_panic), ==, KEEL_PANIC_MESSAGE);
	CHECK_INT(keel_error_signo(from_panic), ==, 0);
	CHECK(keel_error_fault_addr(from_panic) == NULL);
	CHECK(keel_error_cause(from_panic) == NULL);
	CHECK_INT(keel_error_is(from_panic, KEEL_EPANIC), ==, 1);
	keel_error_free(from_panic);
	keel_test_leak_check();
}

static struct keel_error *raised;

static void body_error_panic(void *arg)
{
	(void)arg;
	keel_defer(d_copy_panic, NULL);
	raised = keel_error_wrap(keel_error_new(-ENOENT, "no file"), -EINVAL,
				 "bad config");
	keel_panic_error(raised);
}

TEST(error_from_error_panic_copies_cause)
{
	const struct keel_error *cause;
	char buf[128];

	CHECK_INT(keel_call(body_error_panic, NULL), ==, 1);
	CHECK(from_panic != NULL);
	CHECK_INT(keel_error_code(from_panic), ==, KEEL_EPANIC);
	CHECK_STR(keel_error_message(from_panic), "bad config");
	CHECK_INT(keel_error_panic_kind(from_panic), ==, KEEL_PANIC_ERROR);
	cause = keel_error_cause(from_panic);
	/* A copy: the panic freed the original with itself. */
	CHECK(cause != NULL);
	CHECK_INT(keel_error_code(cause), ==, -EINVAL);
	CHECK_STR(keel_error_message(cause), "bad config");
	CHECK_INT(keel_error_is(from_panic, -ENOENT), ==, 1);
	CHECK_INT(keel_error_is(from_panic, -EINVAL), ==, 1);
	keel_error_format(from_panic, buf, sizeof(buf));
	CHECK_STR(buf, "bad config: bad config: no file");
	keel_error_free(from_panic);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * keel_recover_error and the seed's safeDivide
 * ------------------------------------------------------------------------ */

/*
 * func safeDivide(a, b int) (q int, err error) {
 *         defer func() { if r := recover(); r != nil { err = ... } }()
 *         return a / b, nil
 * }
 * The division is real: a volatile divisor keeps the compiler from seeing
 * the zero, and no_sanitize keeps UBSan from reporting it first.
 */
static KEEL_TEST_NO_SANITIZE int safe_divide(int a, int b, int *result,
					     struct keel_error **errp)
{
	struct keel_error *volatile err = NULL;
	volatile int divisor = b;
	volatile int q = 0;

	KEEL_SCOPE {
		keel_defer(keel_recover_error, (void *)&err);
		q = a / divisor;
	}
	*result = q;
	*errp = err;
	return err != NULL ? keel_error_code(err) : 0;
}

TEST(safe_divide_returns_error_instead_of_crashing)
{
	struct keel_error *err = NULL;
	int q = -7;

	CHECK_INT(safe_divide(7, 2, &q, &err), ==, 0);
	CHECK_INT(q, ==, 3);
	CHECK(err == NULL);

	CHECK_INT(safe_divide(1, 0, &q, &err), ==, KEEL_EPANIC);
	CHECK_INT(q, ==, 0);
	CHECK(err != NULL);
	CHECK_STR(keel_error_message(err), "runtime error: integer divide by zero");
	CHECK_INT(keel_error_panic_kind(err), ==, KEEL_PANIC_DIVIDE);
	CHECK_INT(keel_error_signo(err), ==, SIGFPE);
	CHECK(keel_error_cause(err) == NULL);
	keel_error_free(err);
	keel_test_leak_check();
}

/* The handler is re-armed after each fault: the same fault in the same
 * thread is caught every time. */
TEST(safe_divide_repeatedly)
{
	int i, errors = 0;

	for (i = 0; i < 200; i++) {
		struct keel_error *err = NULL;
		int q = -1, b = i % 3 == 0 ? 0 : i;

		if (safe_divide(i * 10, b, &q, &err) != 0) {
			errors++;
			CHECK(b == 0);
			CHECK_INT(keel_error_signo(err), ==, SIGFPE);
			keel_error_free(err);
		} else {
			CHECK_INT(q, ==, 10);
			CHECK(err == NULL);
		}
	}
	CHECK_INT(errors, ==, 67);
	keel_test_leak_check();
}

static int *volatile bad_ptr = (int *)16;

static KEEL_TEST_NO_SANITIZE int read_bad(void)
{
	return *bad_ptr;
}

TEST(error_from_fault_copies_signo_and_address)
{
	struct keel_error *volatile err = NULL;
	volatile int v = 0;

	KEEL_SCOPE {
		keel_defer(keel_recover_error, (void *)&err);
		v = read_bad();
	}
	CHECK_INT(v, ==, 0);
	CHECK(err != NULL);
	CHECK_INT(keel_error_code(err), ==, KEEL_EPANIC);
	CHECK_STR(keel_error_message(err),
		  "runtime error: invalid memory address or nil pointer dereference");
	CHECK_INT(keel_error_panic_kind(err), ==, KEEL_PANIC_NIL_DEREF);
	CHECK_INT(keel_error_signo(err), ==, SIGSEGV);
	CHECK(keel_error_fault_addr(err) == (void *)16);
	keel_error_free(err);
}

static void body_no_panic(void *arg)
{
	keel_defer(keel_recover_error, arg);
}

TEST(recover_error_without_panic_leaves_slot)
{
	struct keel_error *err = NULL;
	struct keel_error *prev = keel_error_new(-EIO, "earlier");

	CHECK_INT(keel_call(body_no_panic, &err), ==, 0);
	CHECK(err == NULL);
	err = prev;
	CHECK_INT(keel_call(body_no_panic, &err), ==, 0);
	CHECK(err == prev);
	keel_error_free(err);
}

static void body_panic_into_slot(void *arg)
{
	keel_defer(keel_recover_error, arg);
	keel_panic("second");
}

/* An error already in the slot is replaced (and freed). */
TEST(recover_error_replaces_previous_error)
{
	struct keel_error *err = keel_error_new(-EIO, "earlier");

	CHECK_INT(keel_call(body_panic_into_slot, &err), ==, 1);
	CHECK_STR(keel_error_message(err), "second");
	CHECK_INT(keel_error_code(err), ==, KEEL_EPANIC);
	keel_error_free(err);
	keel_test_leak_check();
}

TEST(recover_error_null_slot_still_recovers)
{
	CHECK_INT(keel_call(body_panic_into_slot, NULL), ==, 1);
	CHECK_INT(keel_panicking(), ==, 0);
}

/* keel_panic_error + keel_recover_error: the caller gets the original
 * error as the cause. */
static void body_error_into_slot(void *arg)
{
	keel_defer(keel_recover_error, arg);
	keel_panic_error(keel_error_new(-ECONNREFUSED, "dial: refused"));
}

TEST(recover_error_of_error_panic)
{
	struct keel_error *err = NULL;

	CHECK_INT(keel_call(body_error_into_slot, &err), ==, 1);
	CHECK_INT(keel_error_code(err), ==, KEEL_EPANIC);
	CHECK_INT(keel_error_is(err, -ECONNREFUSED), ==, 1);
	CHECK_STR(keel_error_message(keel_error_cause(err)), "dial: refused");
	keel_error_free(err);
	keel_test_leak_check();
}
