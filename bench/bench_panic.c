/*
 * bench/bench_panic.c - what keel's defer, panic and recover cost.
 *
 * Prints one line per case, "<case-name> <ns/op>", in the same format and
 * order as bench/go/panicbench, so that bench/run.sh can join the two:
 *
 *   scope_defer          keel_call on a function that defers one call
 *   panic_recover        panic and recover in the same function
 *   panic_recover_deep10 recover at the top, panic 10 calls below
 *   nil_deref            a recovered NULL dereference (a real SIGSEGV)
 *   div_zero             a recovered integer divide by zero (a real SIGFPE)
 *   scope_defer_block    scope_defer written as a KEEL_SCOPE block
 *
 * Each case is calibrated (which is also its warm-up) to run about
 * KEEL_BENCH_RUN_MS milliseconds (default 150), then timed 5 times with
 * CLOCK_MONOTONIC; the best (minimum) run is printed. Every loop and every
 * body is a separate noinline function called through a pointer, and the
 * recovering deferred call counts what it recovered: a run whose count is
 * not its iteration count aborts the program, so no case can quietly
 * measure nothing.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel.h>

#include "bench_util.h"

#define NOINLINE __attribute__((noinline))
#define NO_UBSAN __attribute__((no_sanitize("undefined")))

#define RUNS 5
#define DEEP 10

static unsigned long recovered_count;
static volatile int volatile_sink;
static volatile int panic_flag = 1;      /* the deep panic fires when set */
static volatile int *volatile nil_ptr;   /* stays NULL */
static volatile int zero_divisor;        /* stays 0 */
static volatile int dividend = 42;

/* ------------------------------------------------------------------------
 * Deferred functions
 * ------------------------------------------------------------------------ */

static NOINLINE void nop(void *arg)
{
	(void)arg;
	__asm__ volatile("" ::: "memory");
}

static NOINLINE void recoverer(void *arg)
{
	(void)arg;
	if (keel_recover() != NULL)
		recovered_count++;
}

/* ------------------------------------------------------------------------
 * Case bodies
 * ------------------------------------------------------------------------ */

/* (a) a scope with one deferred call, normal path. */
static NOINLINE void body_defer(void *arg)
{
	keel_defer(nop, arg);
}

/* (a') the same with the block form. */
static NOINLINE void block_defer(void)
{
	KEEL_SCOPE {
		keel_defer(nop, NULL);
	}
}

/* (b) panic and recover in the same function. */
static NOINLINE void body_panic(void *arg)
{
	keel_defer(recoverer, arg);
	keel_panic("x");
}

/* (c) panic 10 frames below the recovering function. The volatile flag
 * keeps the compiler from seeing that deep() never returns, and the work
 * after the recursive call keeps each frame a real call (no tail call). */
static NOINLINE void deep(int n)
{
	if (n <= 1) {
		if (panic_flag)
			keel_panic("x");
		return;
	}
	deep(n - 1);
	volatile_sink = n;
}

static NOINLINE void body_deep(void *arg)
{
	keel_defer(recoverer, arg);
	deep(DEEP);
	volatile_sink = 0;
}

/* (d) a NULL dereference: a real load from address 0. */
static NOINLINE NO_UBSAN void fault_nil(void)
{
	volatile_sink = *nil_ptr;
}

static NOINLINE void body_nil(void *arg)
{
	keel_defer(recoverer, arg);
	fault_nil();
	volatile_sink = 0;
}

/* (e) an integer divide by zero: a real idiv by a zero register. */
static NOINLINE NO_UBSAN void fault_div(void)
{
	volatile_sink = dividend / zero_divisor;
}

static NOINLINE void body_div(void *arg)
{
	keel_defer(recoverer, arg);
	fault_div();
	volatile_sink = 0;
}

/* ------------------------------------------------------------------------
 * Loops: one per case, each timed as a whole.
 * ------------------------------------------------------------------------ */

static NOINLINE void loop_scope_defer(long n)
{
	for (long i = 0; i < n; i++)
		keel_call(body_defer, NULL);
}

static NOINLINE void loop_scope_defer_block(long n)
{
	for (long i = 0; i < n; i++)
		block_defer();
}

static NOINLINE void loop_panic_recover(long n)
{
	for (long i = 0; i < n; i++)
		keel_call(body_panic, NULL);
}

static NOINLINE void loop_panic_deep(long n)
{
	for (long i = 0; i < n; i++)
		keel_call(body_deep, NULL);
}

static NOINLINE void loop_nil_deref(long n)
{
	for (long i = 0; i < n; i++)
		keel_call(body_nil, NULL);
}

static NOINLINE void loop_div_zero(long n)
{
	for (long i = 0; i < n; i++)
		keel_call(body_div, NULL);
}

struct bench_case {
	const char *name;
	void (*loop)(long n);
	int recovers; /* every iteration recovers one panic */
};

static const struct bench_case cases[] = {
	{ "scope_defer", loop_scope_defer, 0 },
	{ "panic_recover", loop_panic_recover, 1 },
	{ "panic_recover_deep10", loop_panic_deep, 1 },
	{ "nil_deref", loop_nil_deref, 1 },
	{ "div_zero", loop_div_zero, 1 },
	{ "scope_defer_block", loop_scope_defer_block, 0 },
};

/* ------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------ */

/* Runs the loop n times through the table's pointer; returns the ns taken. */
static double run_once(const struct bench_case *c, long n)
{
	void (*volatile loop)(long) = c->loop;
	unsigned long before = recovered_count;
	double t0, t1;

	t0 = bench_now_ns();
	loop(n);
	t1 = bench_now_ns();
	if (c->recovers && recovered_count - before != (unsigned long)n) {
		fprintf(stderr, "bench_panic: %s: %lu panics recovered, %ld expected\n",
			c->name, recovered_count - before, n);
		exit(1);
	}
	return t1 - t0;
}

/* Doubles n until a run takes 1/4 of the run time (this is the warm-up),
 * then scales it to the run time. */
static long calibrate(const struct bench_case *c, double run_ns)
{
	long n = 100;
	double t;

	for (;;) {
		t = run_once(c, n);
		if (t >= run_ns / 4 || n >= (1L << 40))
			break;
		n *= 2;
	}
	n = (long)((double)n * run_ns / (t > 1 ? t : 1));
	return n > 100 ? n : 100;
}

static double bench(const struct bench_case *c, double run_ns)
{
	long n = calibrate(c, run_ns);
	double best = 0;

	for (int r = 0; r < RUNS; r++) {
		double per_op = run_once(c, n) / (double)n;

		if (r == 0 || per_op < best)
			best = per_op;
	}
	return best;
}

int main(int argc, char **argv)
{
	double run_ms = bench_run_ms();
	size_t ncases = sizeof(cases) / sizeof(cases[0]);

	if (keel_init() != 0) {
		fprintf(stderr, "bench_panic: keel_init failed\n");
		return 1;
	}
	for (size_t i = 0; i < ncases; i++) {
		const struct bench_case *c = &cases[i];
		if (!bench_selected(argc, argv, c->name))
			continue;
		printf("%s %.2f\n", c->name, bench(c, run_ms * 1e6));
		fflush(stdout);
	}
	return 0;
}
