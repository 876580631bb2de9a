/*
 * src/resilience/fallback.c - produce a result another way after a failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/fallback.h>

struct fallback {
	struct keel_policy base;
	keel_classify_fn handle_if;
	void *handle_ud;
	struct keel_fallback_step steps[KEEL_FALLBACK_MAX];
	int nsteps;
};

/* A step runs as the "call" of an empty chain, so it gets the same panic
 * capture as the protected call. */
struct step_call {
	const struct keel_fallback_step *step;
	const struct keel_outcome *failed;
};

static int step_op(struct keel_exec *x, void *arg)
{
	struct step_call *sc = arg;

	return sc->step->fn(sc->failed, x, sc->step->ud);
}

static void fallback_execute(struct keel_policy *p, struct keel__chain *next,
			     struct keel_exec *x, struct keel_outcome *out)
{
	struct fallback *f = (struct fallback *)p;
	struct keel_outcome prev;
	int i, attempts;

	keel__policy_add(p, KEEL__STAT(calls));
	keel__chain_next(next, x, out);
	if (out->code == 0 || !keel__classify(f->handle_if, f->handle_ud, out)) {
		keel__policy_count(p, x, out);
		return;
	}
	attempts = out->attempts;
	prev = *out; /* every step sees the call's own failure */
	for (i = 0; i < f->nsteps; i++) {
		const struct keel_fallback_step *st = &f->steps[i];

		if (st->fn == NULL) {
			out->code = 0;
			out->result = st->value;
			out->panicked = 0;
			out->panic_msg[0] = '\0';
			out->decided_by = KEEL_POLICY_FALLBACK;
			break;
		}
		{
			struct step_call sc = { st, &prev };
			struct keel__chain none = { NULL, 0, step_op, &sc };

			keel__chain_next(&none, x, out);
		}
		out->attempts = attempts;
		out->decided_by = KEEL_POLICY_FALLBACK;
		if (out->code == 0)
			break;
	}
	if (out->code == 0) {
		keel__policy_add(p, KEEL__STAT(fallbacks));
		keel__policy_emit(p, KEEL_EV_FALLBACK, x, out, 0, 0, 0);
	}
	keel__policy_count(p, x, out);
}

static void fallback_destroy(struct keel_policy *p)
{
	free(p);
}

static const struct keel_policy_ops fallback_ops = {
	KEEL_POLICY_FALLBACK, fallback_execute, fallback_destroy
};

void keel_fallback_config_init(struct keel_fallback_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
}

int keel_fallback_config_value(struct keel_fallback_config *cfg, void *value)
{
	if (cfg->nsteps >= KEEL_FALLBACK_MAX)
		return -ENOSPC;
	cfg->steps[cfg->nsteps].fn = NULL;
	cfg->steps[cfg->nsteps].ud = NULL;
	cfg->steps[cfg->nsteps].value = value;
	cfg->nsteps++;
	return 0;
}

int keel_fallback_config_fn(struct keel_fallback_config *cfg,
			    keel_fallback_fn fn, void *ud)
{
	if (fn == NULL)
		return -EINVAL;
	if (cfg->nsteps >= KEEL_FALLBACK_MAX)
		return -ENOSPC;
	cfg->steps[cfg->nsteps].fn = fn;
	cfg->steps[cfg->nsteps].ud = ud;
	cfg->steps[cfg->nsteps].value = NULL;
	cfg->nsteps++;
	return 0;
}

int keel_fallback_new(const struct keel_fallback_config *cfg,
		      struct keel_policy **out)
{
	struct fallback *f;

	*out = NULL;
	if (cfg == NULL || cfg->nsteps <= 0 || cfg->nsteps > KEEL_FALLBACK_MAX)
		return -EINVAL;
	f = keel__policy_alloc(sizeof(*f), 0, &fallback_ops, cfg->name, cfg->clock,
			      cfg->on_event, cfg->event_ud);
	if (f == NULL)
		return -ENOMEM;
	f->handle_if = cfg->handle_if;
	f->handle_ud = cfg->handle_ud;
	memcpy(f->steps, cfg->steps, sizeof(f->steps));
	f->nsteps = cfg->nsteps;
	*out = &f->base;
	return 0;
}
