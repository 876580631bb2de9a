/*
 * examples/deferred_result.c - a deferred call changes the result after the
 * function body is done (seed chapter 2.1).
 *
 * Go:
 *	func example() (x int) {
 *		defer func() { x++ }()
 *		x = 5
 *		return x // returns 6
 *	}
 *
 * C has no named results. The equivalent: the result is a local declared
 * outside the scope, the deferred call gets its address, and the function
 * returns it after the scope, that is after the deferred calls have run.
 * The result is volatile because the panic path reads it after a recovered
 * panic has jumped back to the scope (C11 7.13.2.1).
 *
 * Three runs:
 *   example()          normal path                    6
 *   example_panics()   x = 5, panic, the deferred     6
 *                      call recovers and increments
 *   example_early()    "return x" inside the scope    5: C reads the value
 *                      before the deferred calls run, unlike Go's named
 *                      results, so return after the scope instead.
 *
 * Exits 0 when all three return what is written above.
 */
#include <stdio.h>

#include <keel.h>

static void increment(void *arg)
{
	volatile int *x = arg;

	(*x)++;
}

static int example(void)
{
	volatile int x = 0;

	KEEL_SCOPE {
		keel_defer(increment, (void *)&x);
		x = 5;
	}
	return x;
}

/*
 * Go:
 *	defer func() {
 *		if r := recover(); r != nil { log(r) }
 *		x++
 *	}()
 */
static void recover_and_increment(void *arg)
{
	volatile int *x = arg;
	const struct keel_panic *p = keel_recover();

	if (p != NULL)
		printf("  deferred call recovered \"%s\" with x = %d\n",
		       keel_panic_message(p), *x);
	(*x)++;
}

static int example_panics(void)
{
	volatile int x = 0;

	KEEL_SCOPE {
		keel_defer(recover_and_increment, (void *)&x);
		x = 5;
		keel_panic("failure after x = 5");
	}
	return x;
}

static int example_early(void)
{
	volatile int x = 0;

	KEEL_SCOPE {
		keel_defer(increment, (void *)&x);
		x = 5;
		/* The 5 is taken here; the increment runs afterwards. */
		return x;
	}
	return -1; /* not reached */
}

static int check(const char *call, const char *path, int got, int want)
{
	printf("%-17s %-24s returns %d (expected %d) %s\n", call, path, got,
	       want, got == want ? "ok" : "MISMATCH");
	return got == want;
}

int main(void)
{
	int ok = 1, x;

	ok &= check("example()", "normal path", example(), 6);
	x = example_panics();
	ok &= check("example_panics()", "panic path", x, 6);
	ok &= check("example_early()", "return inside the scope",
		    example_early(), 5);
	return ok ? 0 : 1;
}
