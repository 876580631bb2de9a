/*
 * src/resilience/policy.c - what every policy shares: running the protected
 * call so that a panic is an ordinary failure, counters and events.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <keel/policy.h>

/* ------------------------------------------------------------------------
 * The innermost layer: the call itself, in a scope
 * ------------------------------------------------------------------------ */

struct op_call {
	keel_op_fn fn;
	void *arg;
	struct keel_exec *x;
	struct keel_outcome *out;
	int code;
};

static void op_recover(void *arg)
{
	struct op_call *c = arg;
	const struct keel_panic *p = keel_recover();
	size_t n;

	if (p == NULL)
		return;
	c->out->panicked = 1;
	c->out->panic_kind = keel_panic_kind(p);
	n = strnlen(keel_panic_message(p), KEEL_OUTCOME_MSG - 1);
	memcpy(c->out->panic_msg, keel_panic_message(p), n);
	c->out->panic_msg[n] = '\0';
}

static void op_run(void *arg)
{
	struct op_call *c = arg;

	keel_defer(op_recover, c);
	c->code = c->fn(c->x, c->arg);
}

void keel__chain_next(struct keel__chain *c, struct keel_exec *x,
		      struct keel_outcome *out)
{
	struct op_call call;

	if (c->n > 0) {
		struct keel__chain rest = { c->policies + 1, c->n - 1, c->fn,
					    c->arg };
		struct keel_policy *p = c->policies[0];

		p->ops->execute(p, &rest, x, out);
		return;
	}
	x->result = NULL;
	x->retry_after = 0;
	out->panicked = 0;
	out->panic_msg[0] = '\0';
	call.fn = c->fn;
	call.arg = c->arg;
	call.x = x;
	call.out = out;
	call.code = 0;
	if (keel_call(op_run, &call) != 0 || out->panicked)
		out->code = KEEL_EPANIC;
	else
		out->code = call.code;
	if (x->timed)
		x->end = x->clock->now(x->clock);
	out->result = x->result;
	out->retry_after = x->retry_after;
	out->attempts++;
	out->decided_by = KEEL_POLICY_NONE;
}

/* ------------------------------------------------------------------------
 * Policy objects
 * ------------------------------------------------------------------------ */

void keel__policy_init(struct keel_policy *p, const struct keel_policy_ops *ops,
		       const char *name, const struct keel_clock *clock,
		       keel_event_fn on_event, void *event_ud)
{
	memset(p->stats, 0, sizeof(p->stats));
	p->needs_time = 0;
	p->ops = ops;
	p->name = name != NULL ? name : keel_policy_kind_name(ops->kind);
	p->clock = clock != NULL ? clock : keel_clock_system();
	p->on_event = on_event;
	p->event_ud = event_ud;
}

void *keel__policy_alloc(size_t size, size_t extra,
			 const struct keel_policy_ops *ops, const char *name,
			 const struct keel_clock *clock, keel_event_fn on_event,
			 void *event_ud)
{
	size_t len;
	char *mem;

	if (name == NULL)
		name = keel_policy_kind_name(ops->kind);
	len = strlen(name) + 1;
	mem = calloc(1, size + extra + len);
	if (mem == NULL)
		return NULL;
	memcpy(mem + size + extra, name, len);
	keel__policy_init((struct keel_policy *)(void *)mem, ops,
			  mem + size + extra, clock, on_event, event_ud);
	return mem;
}

void keel_policy_free(struct keel_policy *p)
{
	if (p != NULL)
		p->ops->destroy(p);
}

/* The calling thread's counter row, cached per thread. */
static __thread int my_slot __attribute__((tls_model("initial-exec"))) = -2;

void keel__policy_add(struct keel_policy *p, unsigned field)
{
	int s = my_slot;

	if (KEEL_UNLIKELY(s == -2))
		s = my_slot = keel__thread_slot();
	if (KEEL_LIKELY(s >= 0)) {
		uint64_t *c = &p->stats[s][field];

		__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1,
				 __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&p->stats[KEEL__SLOTS][field], 1,
				   __ATOMIC_RELAXED);
	}
}

void keel_policy_stats(const struct keel_policy *p, struct keel_policy_stats *out)
{
	uint64_t *dst = (uint64_t *)(void *)out;
	size_t i, row, n = sizeof(*out) / sizeof(uint64_t);

	_Static_assert(sizeof(struct keel_policy_stats) / sizeof(uint64_t) <=
			       sizeof(((struct keel_policy *)0)->stats[0]) /
				       sizeof(uint64_t),
		       "a stats row is too small for struct keel_policy_stats");
	for (i = 0; i < n; i++) {
		dst[i] = 0;
		for (row = 0; row <= KEEL__SLOTS; row++)
			dst[i] += __atomic_load_n(&p->stats[row][i],
						  __ATOMIC_RELAXED);
	}
}

enum keel_policy_kind keel_policy_kind(const struct keel_policy *p)
{
	return p != NULL ? p->ops->kind : KEEL_POLICY_NONE;
}

const char *keel_policy_name(const struct keel_policy *p)
{
	return p != NULL ? p->name : "";
}

void keel_policy_on_event(struct keel_policy *p, keel_event_fn fn, void *ud)
{
	p->on_event = fn;
	p->event_ud = ud;
}

void keel__policy_emit(struct keel_policy *p, enum keel_event_type type,
		       const struct keel_exec *x, const struct keel_outcome *out,
		       int64_t delay, int from, int to)
{
	struct keel_event ev;

	if (p->on_event == NULL)
		return;
	ev.type = type;
	ev.kind = p->ops->kind;
	ev.name = p->name;
	ev.attempt = x != NULL ? x->attempt : 0;
	ev.code = out != NULL ? out->code : 0;
	ev.delay = delay;
	ev.from = from;
	ev.to = to;
	ev.at = p->clock->now(p->clock);
	p->on_event(&ev, p->event_ud);
}

void keel__policy_count(struct keel_policy *p, const struct keel_exec *x,
			const struct keel_outcome *out)
{
	enum keel_event_type type;

	if (out->code == 0) {
		keel__policy_add(p, KEEL__STAT(successes));
		type = KEEL_EV_SUCCESS;
	} else if (out->panicked) {
		keel__policy_add(p, KEEL__STAT(panics));
		type = KEEL_EV_PANIC;
	} else {
		keel__policy_add(p, KEEL__STAT(failures));
		type = KEEL_EV_FAILURE;
	}
	keel__policy_emit(p, type, x, out, 0, 0, 0);
}

int keel__classify(keel_classify_fn fn, void *ud, const struct keel_outcome *o)
{
	if (fn != NULL)
		return fn(o, ud) != 0;
	return o->code != 0;
}

void keel__outcome_clear(struct keel_outcome *out)
{
	out->code = 0;
	out->result = NULL;
	out->panicked = 0;
	out->panic_kind = KEEL_PANIC_MESSAGE;
	out->panic_msg[0] = '\0';
	out->retry_after = 0;
	out->decided_by = KEEL_POLICY_NONE;
}

void keel__outcome_reject(struct keel_outcome *out, enum keel_policy_kind by,
			  int code)
{
	keel__outcome_clear(out);
	out->code = code;
	out->decided_by = by;
}

/* ------------------------------------------------------------------------
 * Executing through one policy
 * ------------------------------------------------------------------------ */

static void outcome_init(struct keel_outcome *out)
{
	keel__outcome_clear(out);
	out->attempts = 0;
	out->elapsed = 0;
}

int keel__execute(struct keel_policy *const *policies, int n,
		  const struct keel_clock *clock, keel_op_fn fn, void *arg,
		  struct keel_cancel *cancel, struct keel_outcome *out)
{
	struct keel__chain chain = { policies, n, fn, arg };
	struct keel_exec x;
	int i;

	if (clock == NULL)
		clock = keel_clock_system();
	x.clock = clock;
	x.cancel = cancel;
	x.deadline = keel_cancel_deadline(cancel);
	x.attempt = 1;
	x.result = NULL;
	x.retry_after = 0;
	x.timed = 0;
	for (i = 0; i < n; i++)
		x.timed |= policies[i]->needs_time;
	x.start = x.timed ? clock->now(clock) : 0;
	x.end = x.start;
	outcome_init(out);
	/* A call whose token is already cancelled (or past its deadline) never
	 * starts: no attempt, no policy sees it. */
	out->code = keel_cancel_err(cancel);
	if (out->code != 0)
		return out->code;
	{
		int64_t t0 = x.start;

		keel__chain_next(&chain, &x, out);
		out->elapsed = x.end > t0 ? x.end - t0 : 0;
	}
	return out->code;
}

int keel_policy_execute(struct keel_policy *p, keel_op_fn fn, void *arg,
			struct keel_cancel *cancel, struct keel_outcome *out)
{
	struct keel_outcome local;

	if (out == NULL)
		out = &local;
	return keel__execute(&p, 1, p->clock, fn, arg, cancel, out);
}

/* ------------------------------------------------------------------------
 * Names
 * ------------------------------------------------------------------------ */

const char *keel_policy_kind_name(enum keel_policy_kind kind)
{
	static const char *const names[] = {
		[KEEL_POLICY_NONE] = "call",
		[KEEL_POLICY_RETRY] = "retry",
		[KEEL_POLICY_BREAKER] = "breaker",
		[KEEL_POLICY_FALLBACK] = "fallback",
		[KEEL_POLICY_TIMEOUT] = "timeout",
		[KEEL_POLICY_BULKHEAD] = "bulkhead",
		[KEEL_POLICY_RATELIMIT] = "ratelimit",
		[KEEL_POLICY_BUDGET] = "budget",
		[KEEL_POLICY_CHAOS] = "chaos",
	};
	if ((unsigned)kind >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[kind];
}

const char *keel_event_type_name(enum keel_event_type type)
{
	static const char *const names[] = {
		[KEEL_EV_SUCCESS] = "success",
		[KEEL_EV_FAILURE] = "failure",
		[KEEL_EV_PANIC] = "panic",
		[KEEL_EV_RETRY] = "retry",
		[KEEL_EV_GIVE_UP] = "give-up",
		[KEEL_EV_REJECTED] = "rejected",
		[KEEL_EV_STATE] = "state",
		[KEEL_EV_TIMEOUT] = "timeout",
		[KEEL_EV_FALLBACK] = "fallback",
		[KEEL_EV_INJECTED] = "injected",
	};
	if ((unsigned)type >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[type];
}
