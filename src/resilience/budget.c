/*
 * src/resilience/budget.c - a retry budget (keel/budget.h): gRPC's token
 * bucket or Envoy's share of attempts in flight.
 *
 * The tokens are an integer count of thousandths, changed by compare-and-
 * swap loops that clamp to 0..max. A plain fetch_add would be cheaper but
 * would let the count leave its range under a race, and a bucket that
 * briefly holds -3 tokens needs 30 more successes to recover than it should.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/budget.h>

#define MILLI 1000

struct budget {
	struct keel_policy base;
	enum keel_budget_mode mode;
	keel_classify_fn classify;
	void *classify_ud;
	int64_t max_milli;   /* max_tokens * MILLI */
	int64_t ratio_milli; /* token_ratio * MILLI */
	int64_t bp;          /* budget_percent in hundredths of a percent */
	int min_retries;
	int64_t tokens;      /* atomic, thousandths */
	int active;          /* atomic: attempts in flight (PERCENT) */
	int retries;         /* atomic: retries in flight (PERCENT) */
};

static const struct keel_policy_ops budget_ops;

static struct budget *to_budget(const struct keel_policy *p)
{
	if (p == NULL || p->ops != &budget_ops)
		return NULL;
	return (struct budget *)(void *)p;
}

/* Adds delta to the tokens, clamped to 0..max. */
static void tokens_add(struct budget *b, int64_t delta)
{
	int64_t t = __atomic_load_n(&b->tokens, __ATOMIC_RELAXED), nt;

	do {
		nt = t + delta;
		if (nt > b->max_milli)
			nt = b->max_milli;
		if (nt < 0)
			nt = 0;
		if (nt == t)
			return;
	} while (!__atomic_compare_exchange_n(&b->tokens, &t, nt, 1,
					      __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
}

static int tokens_allow(const struct budget *b)
{
	return __atomic_load_n(&b->tokens, __ATOMIC_RELAXED) > b->max_milli / 2;
}

/* The retries allowed in flight with `active` attempts in flight. */
static int percent_limit(const struct budget *b, int active)
{
	int64_t lim = (int64_t)active * b->bp / 10000;

	return lim > b->min_retries ? (int)lim : b->min_retries;
}

static int percent_allow(const struct budget *b)
{
	int active = __atomic_load_n(&b->active, __ATOMIC_RELAXED);

	return __atomic_load_n(&b->retries, __ATOMIC_RELAXED) <
	       percent_limit(b, active);
}

/* Counts a retry in flight if the budget allows one more. */
static int percent_take_retry(struct budget *b)
{
	int r = __atomic_load_n(&b->retries, __ATOMIC_RELAXED);

	do {
		if (r >= percent_limit(b, __atomic_load_n(&b->active,
							  __ATOMIC_RELAXED)))
			return 0;
	} while (!__atomic_compare_exchange_n(&b->retries, &r, r + 1, 1,
					      __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	return 1;
}

static int enter(struct budget *b, int retry)
{
	if (b->mode == KEEL_BUDGET_TOKENS)
		return !retry || tokens_allow(b) ? 0 : KEEL_EBUDGET;
	if (retry && !percent_take_retry(b))
		return KEEL_EBUDGET;
	__atomic_fetch_add(&b->active, 1, __ATOMIC_RELAXED);
	return 0;
}

static void leave(struct budget *b, int retry, int success)
{
	if (b->mode == KEEL_BUDGET_TOKENS) {
		tokens_add(b, success ? b->ratio_milli : -MILLI);
		return;
	}
	__atomic_fetch_sub(&b->active, 1, __ATOMIC_RELAXED);
	if (retry)
		__atomic_fetch_sub(&b->retries, 1, __ATOMIC_RELAXED);
}

static void budget_execute(struct keel_policy *p, struct keel__chain *next,
			   struct keel_exec *x, struct keel_outcome *out)
{
	struct budget *b = (struct budget *)(void *)p;
	int retry = x->attempt > 1;
	int err;

	keel__policy_add(p, KEEL__STAT(calls));
	err = enter(b, retry);
	if (KEEL_UNLIKELY(err != 0)) {
		keel__outcome_reject(out, KEEL_POLICY_BUDGET, err);
		keel__policy_add(p, KEEL__STAT(rejections));
		keel__policy_emit(p, KEEL_EV_REJECTED, x, out, 0, 0, 0);
		return;
	}
	keel__chain_next(next, x, out);
	leave(b, retry, !keel__classify(b->classify, b->classify_ud, out));
	keel__policy_count(p, x, out);
}

static void budget_destroy(struct keel_policy *p)
{
	free(p);
}

static const struct keel_policy_ops budget_ops = {
	KEEL_POLICY_BUDGET, budget_execute, budget_destroy
};

void keel_budget_config_init(struct keel_budget_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = KEEL_BUDGET_TOKENS;
	cfg->max_tokens = 10;
	cfg->token_ratio = 0.1;
	cfg->budget_percent = 20.0;
	cfg->min_retry_concurrency = 3;
}

static int config_ok(const struct keel_budget_config *cfg)
{
	switch (cfg->mode) {
	case KEEL_BUDGET_TOKENS:
		/* !(x >= a) also refuses NaN. */
		return cfg->max_tokens >= 1 && cfg->max_tokens <= 1000000 &&
		       cfg->token_ratio >= 0.001 &&
		       !(cfg->token_ratio > cfg->max_tokens);
	case KEEL_BUDGET_PERCENT:
		return cfg->budget_percent >= 0.0 &&
		       cfg->budget_percent <= 100.0 &&
		       cfg->min_retry_concurrency >= 0;
	default:
		return 0;
	}
}

int keel_budget_new(const struct keel_budget_config *cfg,
		    struct keel_policy **out)
{
	struct budget *b;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL || !config_ok(cfg))
		return -EINVAL;
	b = keel__policy_alloc(sizeof(*b), 0, &budget_ops, cfg->name, cfg->clock,
			      cfg->on_event, cfg->event_ud);
	if (b == NULL)
		return -ENOMEM;
	b->mode = cfg->mode;
	b->classify = cfg->classify;
	b->classify_ud = cfg->classify_ud;
	/* Rounded by hand: libkeel does not link libm. */
	b->max_milli = (int64_t)cfg->max_tokens * MILLI;
	b->ratio_milli = (int64_t)(cfg->token_ratio * MILLI + 0.5);
	b->bp = (int64_t)(cfg->budget_percent * 100.0 + 0.5);
	b->min_retries = cfg->min_retry_concurrency;
	b->tokens = b->max_milli;
	*out = &b->base;
	return 0;
}

int keel_budget_allow_retry(struct keel_policy *p)
{
	struct budget *b = to_budget(p);

	if (b == NULL)
		return -EINVAL;
	return b->mode == KEEL_BUDGET_TOKENS ? tokens_allow(b)
					     : percent_allow(b);
}

void keel_budget_record(struct keel_policy *p, int success)
{
	struct budget *b = to_budget(p);

	if (b != NULL && b->mode == KEEL_BUDGET_TOKENS)
		tokens_add(b, success ? b->ratio_milli : -MILLI);
}

int keel_budget_enter(struct keel_policy *p, int retry)
{
	struct budget *b = to_budget(p);

	return b != NULL ? enter(b, retry != 0) : -EINVAL;
}

void keel_budget_leave(struct keel_policy *p, int retry, int success)
{
	struct budget *b = to_budget(p);

	if (b != NULL)
		leave(b, retry != 0, success);
}

double keel_budget_tokens(const struct keel_policy *p)
{
	struct budget *b = to_budget(p);

	if (b == NULL || b->mode != KEEL_BUDGET_TOKENS)
		return -1.0;
	return (double)__atomic_load_n(&b->tokens, __ATOMIC_RELAXED) / MILLI;
}

int keel_budget_in_flight(const struct keel_policy *p, int *retries)
{
	struct budget *b = to_budget(p);

	if (b == NULL)
		return -EINVAL;
	if (retries != NULL)
		*retries = __atomic_load_n(&b->retries, __ATOMIC_RELAXED);
	return __atomic_load_n(&b->active, __ATOMIC_RELAXED);
}
