/*
 * examples/safe_divide.c - the seed's safeDivide: a panic inside becomes an
 * error value for the caller (seed chapter 2.3).
 *
 * Go:
 *	func safeDivide(a, b int) (result int, err error) {
 *		defer func() {
 *			if r := recover(); r != nil {
 *				err = fmt.Errorf("panic occurred: %v", r)
 *			}
 *		}()
 *		return a / b, nil
 *	}
 *
 * Here the division is real: b reaches the CPU's divide instruction, and
 * b == 0 raises SIGFPE, which keel turns into an ordinary panic. The
 * ready-made deferred function keel_recover_error() recovers it and stores
 * keel_error_from_panic() of it in err.
 *
 * Exits 0 when b == 0 came back as an error and the others as results.
 */
#include <signal.h>
#include <stdio.h>

#include <keel.h>

/* Under ASan, let keel own SIGFPE and SIGSEGV instead of ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allow_user_segv_handler=1";
}

/*
 * The fault site: not inlined, not instrumented by UBSan (its divide-by-zero
 * check would abort before the CPU traps), and the divisor is volatile so
 * the compiler cannot fold or test it away.
 */
static __attribute__((noinline, no_sanitize("undefined")))
int divide(int a, int b)
{
	volatile int divisor = b;

	return a / divisor;
}

/* Returns a / b, or 0 with *errp set when the division panicked. */
static int safe_divide(int a, int b, struct keel_error **errp)
{
	/* Written inside the scope, read after a recovered panic: volatile. */
	volatile int result = 0;
	struct keel_error *volatile err = NULL;

	KEEL_SCOPE {
		keel_defer(keel_recover_error, (void *)&err);
		result = divide(a, b);
	}
	if (err != NULL)
		err = keel_error_wrap(err, 0, "panic occurred");
	*errp = err;
	return result;
}

int main(void)
{
	static const int cases[][2] = { { 10, 2 }, { 10, 0 }, { -7, 2 } };
	int ok = 1;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int a = cases[i][0], b = cases[i][1];
		struct keel_error *err;
		const struct keel_error *cause;
		int q = safe_divide(a, b, &err);
		char text[160];

		if (err == NULL) {
			printf("safe_divide(%d, %d) = %d, err = <nil>\n",
			       a, b, q);
			ok &= b != 0 && q == a / b;
			continue;
		}
		keel_error_format(err, text, sizeof(text));
		printf("safe_divide(%d, %d) = %d, err = \"%s\"\n",
		       a, b, q, text);
		/* The panic's details live on the wrapped error, the cause. */
		cause = keel_error_cause(err);
		printf("  code %s (%s); the cause was a %s panic, signal %s\n",
		       keel_error_is(err, KEEL_EPANIC) ? "KEEL_EPANIC" : "?",
		       keel_strerror(keel_error_code(err)),
		       keel_panic_kind_name(keel_error_panic_kind(cause)),
		       keel_error_signo(cause) == SIGFPE ? "SIGFPE" : "?");
		ok &= b == 0 && q == 0 && keel_error_is(err, KEEL_EPANIC) &&
		      keel_error_panic_kind(cause) == KEEL_PANIC_DIVIDE &&
		      keel_error_signo(cause) == SIGFPE;
		keel_error_free(err);
	}
	puts(ok ? "no crash: the division by zero came back as an error: ok"
		: "FAILED: unexpected results");
	return ok ? 0 : 1;
}
