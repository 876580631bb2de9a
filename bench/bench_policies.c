/*
 * bench/bench_policies.c - what a call through each resilience policy costs,
 * and through a 4-policy pipeline, next to a bare function call measured in
 * the same run. One thread, then two threads sharing the same policies.
 *
 * Prints one line per case:
 *   <case> <ns/op 1 thread> <ns/op 2 threads>
 * where "ns/op 2 threads" is wall time per call made by each thread while
 * both run at once (so equal to the 1-thread figure means perfect scaling).
 * bench/run-policies.sh turns this into the table with targets.
 *
 * The protected call returns 0 at once; every policy is set up so that the
 * call goes through (a breaker that stays closed, a bulkhead with room, a
 * rate limit far above the call rate, chaos enabled at rate 0): the cost of
 * a policy on the path every healthy call takes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel.h>

#define NOINLINE __attribute__((noinline))

static __thread long sink; /* per thread: nothing shared by the op */

static NOINLINE int op(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	sink++;
	__asm__ volatile("" ::: "memory"); /* keep the increment */
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------
 * Policies, each built the way a healthy call passes through it
 * ------------------------------------------------------------------------ */

static const struct keel_clock *clock_for_policies; /* NULL: the system clock */

static struct keel_policy *retry(void)
{
	struct keel_retry_config c;
	struct keel_policy *p;

	keel_retry_config_init(&c);
	c.clock = clock_for_policies;
	return keel_retry_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *breaker(void)
{
	struct keel_breaker_config c;
	struct keel_policy *p;

	keel_breaker_config_init(&c);
	c.clock = clock_for_policies; /* count window of 100, 50 % */
	return keel_breaker_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *fallback(void)
{
	static char value[] = "fallback";
	struct keel_fallback_config c;
	struct keel_policy *p;

	keel_fallback_config_init(&c);
	c.clock = clock_for_policies;
	keel_fallback_config_value(&c, value);
	return keel_fallback_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *timeout(void)
{
	struct keel_timeout_config c;
	struct keel_policy *p;

	keel_timeout_config_init(&c);
	c.clock = clock_for_policies;
	return keel_timeout_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *bulkhead(void)
{
	struct keel_bulkhead_config c;
	struct keel_policy *p;

	keel_bulkhead_config_init(&c);
	c.clock = clock_for_policies;
	return keel_bulkhead_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *ratelimit(void)
{
	struct keel_ratelimit_config c;
	struct keel_policy *p;

	keel_ratelimit_config_init(&c);
	c.clock = clock_for_policies;
	c.rate = KEEL_SEC; /* one permit per ns: far above any call rate */
	c.period = KEEL_SEC;
	c.mode = KEEL_RATELIMIT_BURSTY;
	return keel_ratelimit_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *budget(void)
{
	struct keel_budget_config c;
	struct keel_policy *p;

	keel_budget_config_init(&c);
	c.clock = clock_for_policies;
	return keel_budget_new(&c, &p) == 0 ? p : NULL;
}

static struct keel_policy *chaos(void)
{
	struct keel_chaos_config c;
	struct keel_policy *p;

	keel_chaos_config_init(&c);
	c.clock = clock_for_policies;
	c.rate = 0; /* enabled, never injecting */
	return keel_chaos_new(&c, &p) == 0 ? p : NULL;
}

/* ------------------------------------------------------------------------
 * Cases
 * ------------------------------------------------------------------------ */

struct bench_case {
	const char *name;
	struct keel_policy *(*make[4])(void);
	int bare;   /* the op called directly, no keel at all */
	int coarse; /* the pipeline and its policies on keel_clock_coarse */
};


static const struct bench_case cases[] = {
	{ "bare_call", { NULL }, 1, 0 },
	{ "engine", { NULL }, 0, 0 },
	{ "retry", { retry }, 0, 0 },
	{ "breaker", { breaker }, 0, 0 },
	{ "fallback", { fallback }, 0, 0 },
	{ "timeout", { timeout }, 0, 0 },
	{ "bulkhead", { bulkhead }, 0, 0 },
	{ "ratelimit", { ratelimit }, 0, 0 },
	{ "budget", { budget }, 0, 0 },
	{ "chaos", { chaos }, 0, 0 },
	{ "pipeline4", { retry, breaker, bulkhead, timeout }, 0, 0 },
	{ "pipeline4_untimed", { fallback, retry, breaker, bulkhead }, 0, 0 },
	{ "timeout_coarse", { timeout }, 0, 1 },
	{ "pipeline4_coarse", { retry, breaker, bulkhead, timeout }, 0, 1 },
};

struct runner {
	const struct bench_case *c;
	struct keel_pipeline *pl;
	long n;
	pthread_barrier_t *start;
	double seconds;
};

static NOINLINE void loop(const struct bench_case *c, struct keel_pipeline *pl,
			  long n)
{
	struct keel_outcome o;
	int (*volatile direct)(struct keel_exec *, void *) = op;
	struct keel_exec x;
	long i;

	memset(&x, 0, sizeof(x));
	if (c->bare) {
		for (i = 0; i < n; i++)
			direct(&x, NULL);
		return;
	}
	for (i = 0; i < n; i++)
		if (keel_pipeline_execute(pl, op, NULL, NULL, &o) != 0)
			abort(); /* a healthy call must go through */
}

static void *run_thread(void *arg)
{
	struct runner *r = arg;
	double t0;

	pthread_barrier_wait(r->start);
	t0 = now_s();
	loop(r->c, r->pl, r->n);
	r->seconds = now_s() - t0;
	return NULL;
}

/* Best of 5 runs of ns/op with `threads` threads sharing the pipeline. */
static double measure(const struct bench_case *c, struct keel_pipeline *pl,
		      long n, int threads)
{
	double best = 1e30;
	int run, i;

	for (run = 0; run < 5; run++) {
		struct runner r[2];
		pthread_t th[2];
		pthread_barrier_t start;
		double worst = 0;

		pthread_barrier_init(&start, NULL, (unsigned)threads);
		for (i = 0; i < threads; i++) {
			r[i] = (struct runner){ c, pl, n, &start, 0 };
			pthread_create(&th[i], NULL, run_thread, &r[i]);
		}
		for (i = 0; i < threads; i++) {
			pthread_join(th[i], NULL);
			if (r[i].seconds > worst)
				worst = r[i].seconds;
		}
		pthread_barrier_destroy(&start);
		if (worst / (double)n * 1e9 < best)
			best = worst / (double)n * 1e9;
	}
	return best;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000000;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bench_case *c = &cases[i];
		struct keel_pipeline_config cfg;
		struct keel_pipeline *pl = NULL;
		int k;

		keel_pipeline_config_init(&cfg);
		cfg.owns_policies = 1;
		clock_for_policies = c->coarse ? keel_clock_coarse() : NULL;
		cfg.clock = clock_for_policies;
		for (k = 0; k < 4 && c->make[k] != NULL; k++) {
			struct keel_policy *p = c->make[k]();

			if (p == NULL || keel_pipeline_config_add(&cfg, p) != 0) {
				fprintf(stderr, "bench: cannot build %s\n", c->name);
				return 1;
			}
		}
		if (keel_pipeline_new(&cfg, &pl) != 0)
			return 1;
		loop(c, pl, n / 10); /* warm up */
		printf("%s %.2f %.2f\n", c->name, measure(c, pl, n, 1),
		       measure(c, pl, n, 2));
		fflush(stdout);
		keel_pipeline_free(pl);
	}
	return 0;
}
