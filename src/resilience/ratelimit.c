/*
 * src/resilience/ratelimit.c - a token bucket as GCRA (keel/ratelimit.h).
 *
 * GCRA keeps one number, the theoretical arrival time (tat): when the
 * bucket would be full again if nobody took anything. Taking n permits at
 * `now` moves it to max(tat, now) + n * interval; that is allowed when the
 * new tat is at most `span` = burst * interval ahead of now. So the time at
 * which a reservation becomes allowed is new_tat - span, and "wait for a
 * permit" is nothing more than reserving one whose time is in the future
 * and sleeping until then. One compare-and-swap on tat does it all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/ratelimit.h>

struct ratelimit {
	struct keel_policy base;
	int64_t interval; /* ns per permit */
	int64_t burst;
	int64_t span;     /* burst * interval */
	int64_t max_wait;
	int64_t tat;      /* atomic */
};

#define REFUSED INT64_MIN

static const struct keel_policy_ops ratelimit_ops;

static struct ratelimit *to_ratelimit(const struct keel_policy *p)
{
	if (p == NULL || p->ops != &ratelimit_ops)
		return NULL;
	return (struct ratelimit *)(void *)p;
}

static int64_t add_sat(int64_t a, int64_t b)
{
	return a > KEEL_NEVER - b ? KEEL_NEVER : a + b;
}

/*
 * Reserves n permits at `now` if their time is no later than `latest`.
 * Returns that time (<= now: available at once), or REFUSED with nothing
 * reserved. Relaxed ordering: tat is the only shared state and publishes
 * nothing else.
 */
static int64_t reserve(struct ratelimit *rl, int64_t n, int64_t now,
		       int64_t latest)
{
	int64_t tat = __atomic_load_n(&rl->tat, __ATOMIC_RELAXED);
	int64_t ntat, at;

	do {
		ntat = (tat > now ? tat : now) + n * rl->interval;
		at = ntat - rl->span;
		if (at > latest)
			return REFUSED;
	} while (!__atomic_compare_exchange_n(&rl->tat, &tat, ntat, 1,
					      __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	return at;
}

/*
 * Takes n permits at `now`, waiting for them within max_wait and before
 * deadline. *waited is set when it slept.
 */
static int take(struct ratelimit *rl, int64_t n, int64_t now,
		struct keel_cancel *cancel, int64_t deadline, int *waited)
{
	int64_t latest, at;
	int err;

	latest = add_sat(now, rl->max_wait);
	/* A permit at the deadline is too late; but the deadline limits
	 * waiting only, never a permit that is free now. */
	if (deadline <= latest)
		latest = deadline - 1;
	if (latest < now)
		latest = now;
	at = reserve(rl, n, now, latest);
	if (at == REFUSED)
		return KEEL_ERATE_LIMITED;
	if (KEEL_LIKELY(at <= now))
		return 0;
	*waited = 1;
	err = keel_clock_wait_until(rl->base.clock, at, cancel);
	if (err != 0) {
		/* Give the permits back: pulling tat in by what we added
		 * returns exactly our share, whoever reserved after us. */
		__atomic_fetch_sub(&rl->tat, n * rl->interval,
				   __ATOMIC_RELAXED);
		return err;
	}
	return 0;
}

static void ratelimit_execute(struct keel_policy *p, struct keel__chain *next,
			      struct keel_exec *x, struct keel_outcome *out)
{
	struct ratelimit *rl = (struct ratelimit *)(void *)p;
	const struct keel_clock *clk = p->clock;
	int64_t now;
	int err, waited = 0;

	keel__policy_add(p, KEEL__STAT(calls));
	/* When the chain keeps time on this same clock, x->start was read
	 * just now (only policies that do not wait run before us, and those
	 * that wait reset it): use it and save a clock read. */
	now = x->timed && x->clock == clk ? x->start : clk->now(clk);
	err = take(rl, 1, now, x->cancel, x->deadline, &waited);
	if (waited && x->timed) /* the attempt starts after the wait */
		x->start = x->clock->now(x->clock);
	if (KEEL_UNLIKELY(err != 0)) {
		keel__outcome_reject(out, KEEL_POLICY_RATELIMIT, err);
		if (err == KEEL_ERATE_LIMITED) {
			/* When one permit will be there: what an HTTP 429's
			 * Retry-After says. */
			int64_t tat = __atomic_load_n(&rl->tat, __ATOMIC_RELAXED);
			int64_t at = (tat > now ? tat : now) + rl->interval - rl->span;

			out->retry_after = at > now ? at - now : 0;
		}
		keel__policy_add(p, KEEL__STAT(rejections));
		keel__policy_emit(p, KEEL_EV_REJECTED, x, out, 0, 0, 0);
		return;
	}
	keel__chain_next(next, x, out);
	keel__policy_count(p, x, out);
}

static void ratelimit_destroy(struct keel_policy *p)
{
	free(p);
}

static const struct keel_policy_ops ratelimit_ops = {
	KEEL_POLICY_RATELIMIT, ratelimit_execute, ratelimit_destroy
};

void keel_ratelimit_config_init(struct keel_ratelimit_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->rate = 100;
	cfg->period = KEEL_SEC;
	cfg->mode = KEEL_RATELIMIT_SMOOTH;
}

int keel_ratelimit_new(const struct keel_ratelimit_config *cfg,
		       struct keel_policy **out)
{
	struct ratelimit *rl;
	int64_t interval, burst;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL || cfg->rate < 1 || cfg->period <= 0 ||
	    cfg->rate > cfg->period || cfg->burst < 0 || cfg->max_wait < 0)
		return -EINVAL;
	interval = cfg->period / cfg->rate;
	switch (cfg->mode) {
	case KEEL_RATELIMIT_SMOOTH:
		if (cfg->burst > 1)
			return -EINVAL;
		burst = 1;
		break;
	case KEEL_RATELIMIT_BURSTY:
		burst = cfg->burst > 0 ? cfg->burst : cfg->rate;
		break;
	default:
		return -EINVAL;
	}
	/* span, and tat's lead over now, must stay far from overflow. */
	if (burst > (KEEL_NEVER / 4) / interval)
		return -EINVAL;
	rl = keel__policy_alloc(sizeof(*rl), 0, &ratelimit_ops, cfg->name, cfg->clock,
			      cfg->on_event, cfg->event_ud);
	if (rl == NULL)
		return -ENOMEM;
	rl->interval = interval;
	rl->burst = burst;
	rl->span = burst * interval;
	rl->max_wait = cfg->max_wait;
	/* Far in the past, so the bucket starts full on any clock; max(tat,
	 * now) keeps it from ever mattering beyond that. */
	rl->tat = INT64_MIN / 2;
	*out = &rl->base;
	return 0;
}

int keel_ratelimit_try_acquire(struct keel_policy *p, int64_t n)
{
	struct ratelimit *rl = to_ratelimit(p);
	int64_t now;

	if (rl == NULL || n < 1 || n > rl->burst)
		return -EINVAL;
	now = rl->base.clock->now(rl->base.clock);
	return reserve(rl, n, now, now) != REFUSED ? 0 : KEEL_ERATE_LIMITED;
}

int keel_ratelimit_acquire(struct keel_policy *p, int64_t n,
			   struct keel_cancel *cancel)
{
	struct ratelimit *rl = to_ratelimit(p);
	int err, waited = 0;

	if (rl == NULL || n < 1 || n > rl->burst)
		return -EINVAL;
	if ((err = keel_cancel_err(cancel)) != 0)
		return err;
	return take(rl, n, rl->base.clock->now(rl->base.clock), cancel,
		    keel_cancel_deadline(cancel), &waited);
}

int64_t keel_ratelimit_available(const struct keel_policy *p)
{
	struct ratelimit *rl = to_ratelimit(p);
	int64_t now, tat, n;

	if (rl == NULL)
		return -EINVAL;
	now = rl->base.clock->now(rl->base.clock);
	tat = __atomic_load_n(&rl->tat, __ATOMIC_RELAXED);
	if (tat < now)
		tat = now;
	/* k more permits fit while tat + k * interval - span <= now. */
	n = (now + rl->span - tat) / rl->interval;
	return n < 0 ? 0 : n > rl->burst ? rl->burst : n;
}
