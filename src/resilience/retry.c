/*
 * src/resilience/retry.c - the retry policy.
 *
 * One call is a loop over attempts; between two attempts, plan() decides
 * whether to go on and how long to wait. Everything a call needs lives on
 * its stack, and the policy object is read-only after keel_retry_new (its
 * counters aside), so threads share a policy without locks and a call
 * allocates nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/retry.h>

struct keel_retry {
	struct keel_policy base; /* first: the contract of keel/policy.h */
	int max_attempts;
	int honour_retry_after;
	struct keel_backoff backoff;
	int64_t max_duration;
	int64_t max_retry_after;
	keel_classify_fn retry_if;
	void *retry_if_ud;
	keel_classify_fn abort_if;
	void *abort_if_ud;
	keel_retry_hook_fn on_retry;
	void *on_retry_ud;
	uint64_t seed;
	uint64_t streams; /* atomic: seeded jitter streams handed out */
};

/* What one call keeps between its attempts. */
struct retry_call {
	struct keel_cancel *cancel;
	int64_t deadline;  /* the exec deadline on entry */
	int64_t end;       /* start + max_duration, or KEEL_NEVER */
	int64_t prev;      /* the previous backoff delay (decorrelated jitter) */
	uint64_t rng;      /* seeded stream, drawn on first use */
	int have_rng;
};

static int64_t sat_add(int64_t a, int64_t b)
{
	int64_t r;

	return __builtin_add_overflow(a, b, &r) ? KEEL_NEVER : r;
}

int keel_retry_retryable(const struct keel_outcome *o, void *ud)
{
	(void)ud;
	switch (o->code) {
	case 0:
	case KEEL_EBREAKER_OPEN:
	case KEEL_EBUDGET:
	case -ECANCELED:
		return 0;
	default:
		return 1;
	}
}

/* A cancelled token or a passed deadline: the reason, else 0. */
static int stopped(const struct keel_clock *clock, struct keel_cancel *cancel,
		   int64_t deadline)
{
	int err = keel_cancel_err(cancel);

	if (err != 0)
		return err;
	if (deadline != KEEL_NEVER && clock->now(clock) >= deadline)
		return -ETIMEDOUT;
	return 0;
}

/* Where jitter draws from: the thread's own state (NULL), or with a seed a
 * stream of the policy's own, one per call, so seeded runs repeat. */
static uint64_t *rng_of(struct keel_retry *r, struct retry_call *c)
{
	uint64_t k;

	if (r->seed == 0 || r->backoff.jitter == KEEL_JITTER_NONE)
		return NULL;
	if (!c->have_rng) {
		k = __atomic_fetch_add(&r->streams, 1, __ATOMIC_RELAXED);
		c->rng = r->seed + k * 0x9e3779b97f4a7c15ULL;
		c->rng = keel_backoff_rand(&c->rng);
		c->have_rng = 1;
	}
	return &c->rng;
}

/*
 * plan - after attempt ended with an outcome to retry: 0 to go on, with
 * the wait in *delay and its end in *until; or 1 to give up, with the wait
 * refused for time reasons in *delay (0 when the reason was another).
 */
static int plan(struct keel_retry *r, struct retry_call *c,
		const struct keel_exec *x, const struct keel_outcome *out,
		int attempt, int64_t *delay, int64_t *until)
{
	int64_t now, d, deadline;

	*delay = 0;
	if (r->abort_if != NULL && r->abort_if(out, r->abort_if_ud))
		return 1;
	if (attempt >= r->max_attempts)
		return 1;
	if (keel_cancel_err(c->cancel) != 0)
		return 1;
	now = x->clock->now(x->clock);
	d = keel_backoff_delay(&r->backoff, attempt, c->prev, rng_of(r, c));
	c->prev = d;
	if (r->honour_retry_after && out->retry_after > d) {
		d = out->retry_after;
		if (r->max_retry_after > 0 && d > r->max_retry_after) {
			*delay = d;
			return 1;
		}
	}
	*delay = d;
	*until = sat_add(now, d);
	deadline = keel_cancel_deadline(c->cancel);
	if (c->deadline < deadline)
		deadline = c->deadline;
	/* A wait that cannot end, or whose attempt would start with no time
	 * left, only delays the failure the caller will get anyway. */
	return *until == KEEL_NEVER || *until >= c->end || *until >= deadline;
}


static int classify(struct keel_retry *r, const struct keel_outcome *out)
{
	if (r->retry_if != NULL)
		return r->retry_if(out, r->retry_if_ud) != 0;
	return keel_retry_retryable(out, NULL);
}

static void give_up(struct keel_retry *r, struct keel_exec *x,
		    struct keel_outcome *out, int64_t refused)
{
	if (x->attempt > 1)
		out->decided_by = KEEL_POLICY_RETRY;
	keel__policy_emit(&r->base, KEEL_EV_GIVE_UP, x, out, refused, 0, 0);
}

/* Runs attempts until one is not to be retried, or retrying stops. */
static void run(struct keel_retry *r, struct retry_call *c,
		struct keel__chain *next, struct keel_exec *x,
		struct keel_outcome *out)
{
	int64_t delay, until;
	int attempt;
	struct keel_outcome prev;

	for (attempt = 1;; attempt++) {
		/* Inner policies may narrow these for their own attempt. */
		x->attempt = attempt;
		x->cancel = c->cancel;
		x->deadline = c->deadline;
		keel__chain_next(next, x, out);
		x->attempt = attempt;
		if (KEEL_UNLIKELY(attempt > 1 && out->code == KEEL_EBUDGET &&
				  out->decided_by == KEEL_POLICY_BUDGET)) {
			/* The budget refused this retry: the caller is better
			 * served by the last real failure than by "no budget";
			 * decided_by still says the budget ended it. */
			int attempts = out->attempts;

			*out = prev;
			out->attempts = attempts;
			out->decided_by = KEEL_POLICY_BUDGET;
			keel__policy_emit(&r->base, KEEL_EV_GIVE_UP, x, out, 0,
					  0, 0);
			return;
		}
		if (KEEL_LIKELY(!classify(r, out)))
			return;
		if (plan(r, c, x, out, attempt, &delay, &until)) {
			give_up(r, x, out, delay);
			return;
		}
		if (r->on_retry != NULL)
			r->on_retry(attempt, delay, out, r->on_retry_ud);
		keel__policy_emit(&r->base, KEEL_EV_RETRY, x, out, delay, 0, 0);
		if (delay > 0 &&
		    keel_clock_wait_until(x->clock, until, c->cancel) != 0) {
			give_up(r, x, out, 0);
			return;
		}
		/* Timeouts inside measure each attempt from its own start. */
		if (x->timed)
			x->start = x->clock->now(x->clock);
		prev = *out;
		keel__outcome_clear(out);
		keel__policy_add(&r->base, KEEL__STAT(retries));
	}
}

static void retry_execute(struct keel_policy *p, struct keel__chain *next,
			  struct keel_exec *x, struct keel_outcome *out)
{
	struct keel_retry *r = (struct keel_retry *)(void *)p;
	int entry_attempt = x->attempt;
	struct retry_call c;
	int err;

	keel__policy_add(p, KEEL__STAT(calls));
	c.cancel = x->cancel;
	c.deadline = x->deadline;
	err = stopped(x->clock, c.cancel, c.deadline);
	if (KEEL_UNLIKELY(err != 0)) {
		/* Nothing ran: the outcome is why. */
		keel__outcome_reject(out, KEEL_POLICY_RETRY, err);
		x->attempt = 0;
		keel__policy_count(p, x, out);
		x->attempt = entry_attempt;
		return;
	}
	c.end = KEEL_NEVER;
	if (r->max_duration > 0) /* x->start is now, when the chain keeps time */
		c.end = sat_add(x->timed ? x->start : x->clock->now(x->clock),
				r->max_duration);
	c.prev = 0;
	c.have_rng = 0;
	run(r, &c, next, x, out);
	keel__policy_count(p, x, out);
	x->attempt = entry_attempt;
	x->cancel = c.cancel;
	x->deadline = c.deadline;
}

static void retry_destroy(struct keel_policy *p)
{
	free(p);
}

static const struct keel_policy_ops retry_ops = {
	.kind = KEEL_POLICY_RETRY,
	.execute = retry_execute,
	.destroy = retry_destroy,
};

void keel_retry_config_init(struct keel_retry_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_attempts = 3;
	keel_backoff_init(&cfg->backoff);
	cfg->honour_retry_after = 1;
	cfg->max_retry_after = 60 * KEEL_SEC;
}

static int config_check(const struct keel_retry_config *cfg)
{
	if (cfg->max_attempts < 1)
		return -EINVAL;
	if (cfg->max_duration < 0 || cfg->max_retry_after < 0)
		return -EINVAL;
	return keel_backoff_check(&cfg->backoff);
}

int keel_retry_new(const struct keel_retry_config *cfg,
		   struct keel_policy **out)
{
	struct keel_retry *r;
	int err;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL)
		return -EINVAL;
	if ((err = config_check(cfg)) != 0)
		return err;
	r = keel__policy_alloc(sizeof(*r), 0, &retry_ops, cfg->name, cfg->clock,
			      cfg->on_event, cfg->event_ud);
	if (r == NULL)
		return -ENOMEM;
	r->max_attempts = cfg->max_attempts;
	r->honour_retry_after = cfg->honour_retry_after != 0;
	r->backoff = cfg->backoff;
	r->max_duration = cfg->max_duration;
	r->max_retry_after = cfg->max_retry_after;
	r->retry_if = cfg->retry_if;
	r->retry_if_ud = cfg->retry_if_ud;
	r->abort_if = cfg->abort_if;
	r->abort_if_ud = cfg->abort_if_ud;
	r->on_retry = cfg->on_retry;
	r->on_retry_ud = cfg->on_retry_ud;
	r->seed = cfg->seed;
	r->streams = 0;
	*out = &r->base;
	return 0;
}
