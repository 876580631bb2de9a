/*
 * bench/bench_util.h - what keel's C benchmarks share: the clock they time
 * with, the length of one timed run, and picking cases from the command line.
 */
#ifndef KEEL_BENCH_UTIL_H
#define KEEL_BENCH_UTIL_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* KEEL_BENCH_RUN_MS, the length of one timed run: default 150 ms. */
static inline double bench_run_ms(void)
{
	const char *env = getenv("KEEL_BENCH_RUN_MS");
	double ms = env != NULL ? atof(env) : 150;

	return ms > 0 ? ms : 150;
}

/* With no arguments every case runs; otherwise the ones named. */
static inline int bench_selected(int argc, char **argv, const char *name)
{
	int a;

	if (argc < 2)
		return 1;
	for (a = 1; a < argc; a++)
		if (strcmp(argv[a], name) == 0)
			return 1;
	return 0;
}

#endif /* KEEL_BENCH_UTIL_H */
