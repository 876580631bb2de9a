/*
 * examples/safe_operation.c - the seed's first example: a deferred function
 * recovers the panic, logs it, and the program carries on.
 *
 * Go:
 *	func safeOperation() {
 *		defer func() {
 *			if r := recover(); r != nil {
 *				fmt.Printf("caught panic: %v\n", r)
 *			}
 *		}()
 *		panic("simulated runtime error")
 *	}
 *
 * In C the function runs under keel_call(), which gives it the scope that
 * Go gives every function; keel_defer() registers on that scope.
 *
 * The second half uses the same pattern the way the seed's table of uses
 * suggests (one task crashing must not bring the others down): each job of a
 * batch runs under its own recover, and one of them indexes out of range.
 *
 * Exits 0 when the panics were logged and the program went on.
 */
#include <stdint.h>
#include <stdio.h>

#include <keel.h>

/* The deferred function: recover, log, swallow. */
static void log_panic(void *arg)
{
	int *caught = arg;
	const struct keel_panic *p = keel_recover();

	if (p != NULL) {
		printf("  caught panic: %s\n", keel_panic_message(p));
		(*caught)++;
	}
}

static void safe_operation(void *arg)
{
	keel_defer(log_panic, arg);

	/* Code that may panic. */
	keel_panic("simulated runtime error");
}

/* ------------------------------------------------------------------------
 * A batch of jobs, one of them buggy
 * ------------------------------------------------------------------------ */

struct job {
	int id;
	int64_t count;  /* how many samples the job sums */
	int64_t sum;
	int panicked;
};

static const int64_t samples[] = { 1, 2, 3 };

static void run_job(void *arg)
{
	struct job *j = arg;
	int64_t i;

	keel_defer(log_panic, &j->panicked);
	/* keel_index is the bounds check Go does on every slice access. */
	for (i = 0; i < j->count; i++)
		j->sum += samples[keel_index(i, 3)];
}

int main(void)
{
	struct job jobs[] = { { 1, 3, 0, 0 }, { 2, 4, 0, 0 }, { 3, 2, 0, 0 } };
	int caught = 0, ret, i, failed = 0;

	puts("calling safe_operation() ...");
	ret = keel_call(safe_operation, &caught);
	printf("safe_operation returned (keel_call: %d); the program continues\n\n",
	       ret);
	if (ret != 1 || caught != 1)
		failed = 1;

	puts("the same pattern around each job of a batch:");
	for (i = 0; i < 3; i++) {
		struct job *j = &jobs[i];

		printf("job %d: sum of %lld samples\n", j->id,
		       (long long)j->count);
		keel_call(run_job, j);
		if (!j->panicked)
			printf("  ok, sum = %lld\n", (long long)j->sum);
	}
	if (jobs[0].panicked || jobs[0].sum != 6 || !jobs[1].panicked ||
	    jobs[2].panicked || jobs[2].sum != 3)
		failed = 1;
	printf("3 jobs run, %d panicked, and the program is still here\n",
	       jobs[0].panicked + jobs[1].panicked + jobs[2].panicked);

	if (failed) {
		puts("FAILED: the panics were not recovered as expected");
		return 1;
	}
	puts("ok");
	return 0;
}
