/*
 * examples/tiers.c - the design notes' three tiers of calls (chapter 3.2's
 * table), as keel's pipeline presets, each run against the same failing
 * service:
 *
 *   light requests     2 attempts, a fixed 500 ms apart, no breaker
 *   core services      3 attempts, exponential backoff, breaker on
 *   read-only queries  1 retry, no delay
 *
 * A virtual clock stands in for time, so the delays show exactly and the
 * program runs in milliseconds. Exits 0 when every tier behaved as its row
 * of the table says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>

#include <keel.h>
#include <keel/breaker.h>
#include <keel/pipeline.h>

static int calls;

static int service_down(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	calls++;
	return -ECONNREFUSED;
}

struct row {
	enum keel_tier tier;
	const char *name;
	int want_attempts;
	int64_t want_wait_min, want_wait_max; /* virtual time waited */
};

static int run(const struct row *r)
{
	struct keel_vclock vc;
	struct keel_pipeline *pl;
	struct keel_outcome o;
	int64_t t0;
	int ok, rejected = 0, i;

	keel_vclock_init(&vc, 0);
	if (keel_pipeline_preset(r->tier, r->name, &vc.clock, &pl) != 0)
		return 0;
	calls = 0;
	t0 = keel_clock_now(&vc.clock);
	keel_pipeline_execute(pl, service_down, NULL, NULL, &o);
	ok = o.attempts == r->want_attempts && o.code == -ECONNREFUSED;
	ok = ok && keel_clock_now(&vc.clock) - t0 >= r->want_wait_min &&
	     keel_clock_now(&vc.clock) - t0 <= r->want_wait_max;
	printf("%-18s %8d %10lld ms", r->name, o.attempts,
	       (long long)((keel_clock_now(&vc.clock) - t0) / KEEL_MSEC));
	/* Keep calling the dead service: only the core tier stops calling. */
	for (i = 0; i < 10; i++) {
		keel_pipeline_execute(pl, service_down, NULL, NULL, &o);
		if (o.decided_by == KEEL_POLICY_BREAKER ||
		    o.code == KEEL_EBREAKER_OPEN)
			rejected++;
	}
	printf(" %12s %10d\n", rejected ? "opened" : "-", calls);
	if (r->tier == KEEL_TIER_CORE)
		ok = ok && rejected > 0;
	else
		ok = ok && rejected == 0;
	keel_pipeline_free(pl);
	keel_vclock_destroy(&vc);
	return ok;
}

int main(void)
{
	static const struct row rows[] = {
		{ KEEL_TIER_LIGHT, "light request", 2, 500 * KEEL_MSEC,
		  500 * KEEL_MSEC },
		/* Full jitter: each wait is somewhere in [0, 100 ms], [0, 200 ms]. */
		{ KEEL_TIER_CORE, "core service", 3, 0, 300 * KEEL_MSEC },
		{ KEEL_TIER_READONLY, "read-only query", 2, 0, 0 },
	};
	size_t i;
	int ok = 1;

	printf("%-18s %8s %13s %12s %10s\n", "tier", "attempts", "waited",
	       "breaker", "calls made");
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok &= run(&rows[i]);
	puts(ok ? "every tier behaved as the table says"
		: "a tier did not behave as the table says");
	return ok ? 0 : 1;
}
