/*
 * src/resilience/timeout.c - a deadline told to the call, and the verdict
 * after it (see keel/timeout.h for what can and cannot be interrupted).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/timeout.h>

struct timeout {
	struct keel_policy base;
	int64_t timeout;
	int keep_late_success;
};

static void timeout_execute(struct keel_policy *p, struct keel__chain *next,
			    struct keel_exec *x, struct keel_outcome *out)
{
	struct timeout *t = (struct timeout *)p;
	int64_t saved = x->deadline, now = x->start;
	int64_t deadline = now > KEEL_NEVER - t->timeout ? KEEL_NEVER
							 : now + t->timeout;

	keel__policy_add(p, KEEL__STAT(calls));
	if (deadline < x->deadline)
		x->deadline = deadline;
	keel__chain_next(next, x, out);
	x->deadline = saved;
	/* x->end is when the call returned, or, when a policy inside rejected
	 * it after a wait, when that wait ended (x->start). */
	if ((x->end > x->start ? x->end : x->start) >= deadline &&
	    !(out->code == 0 && t->keep_late_success)) {
		keel__outcome_reject(out, KEEL_POLICY_TIMEOUT, -ETIMEDOUT);
		keel__policy_add(p, KEEL__STAT(timeouts));
		keel__policy_emit(p, KEEL_EV_TIMEOUT, x, out, 0, 0, 0);
	}
	keel__policy_count(p, x, out);
}

static void timeout_destroy(struct keel_policy *p)
{
	free(p);
}

static const struct keel_policy_ops timeout_ops = {
	KEEL_POLICY_TIMEOUT, timeout_execute, timeout_destroy
};

void keel_timeout_config_init(struct keel_timeout_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->timeout = KEEL_SEC;
}

int keel_timeout_new(const struct keel_timeout_config *cfg,
		     struct keel_policy **out)
{
	struct timeout *t;

	*out = NULL;
	if (cfg == NULL || cfg->timeout <= 0)
		return -EINVAL;
	t = keel__policy_alloc(sizeof(*t), 0, &timeout_ops, cfg->name, cfg->clock,
			      cfg->on_event, cfg->event_ud);
	if (t == NULL)
		return -ENOMEM;
	t->timeout = cfg->timeout;
	t->keep_late_success = cfg->keep_late_success;
	t->base.needs_time = 1;
	*out = &t->base;
	return 0;
}

int keel_exec_expired(const struct keel_exec *x)
{
	if (keel_cancel_err(x->cancel) != 0)
		return 1;
	return x->deadline != KEEL_NEVER && x->clock->now(x->clock) >= x->deadline;
}

int keel_exec_wait(const struct keel_exec *x, int64_t until)
{
	int err;

	if (x->deadline < until) {
		err = keel_clock_wait_until(x->clock, x->deadline, x->cancel);
		return err != 0 ? err : -ETIMEDOUT;
	}
	return keel_clock_wait_until(x->clock, until, x->cancel);
}
