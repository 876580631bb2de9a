/*
 * src/resilience/chaos.c - failures injected on purpose (keel/chaos.h).
 *
 * The harm has to happen where the call would run, inside the innermost
 * layer's scope, or an injected panic would escape the policies instead of
 * becoming the outcome they handle. So the policy leaves the chain of
 * policies as it is and only swaps the call: a struct keel__chain with the
 * same remaining policies, whose fn is chaos_op and whose arg (on this
 * stack) holds the real fn and arg.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel/chaos.h>

#define DEFAULT_PANIC_MSG "chaos: injected panic"
#define ALWAYS ((uint64_t)1 << 32) /* threshold for rate 1.0 */

struct chaos {
	struct keel_policy base;
	enum keel_chaos_kind kind;
	int enabled;          /* atomic */
	uint64_t threshold;   /* atomic: inject when a 32-bit draw is below */
	uint64_t rate_bits;   /* atomic: the rate as set, for reading back */
	uint64_t id;          /* tells this policy's per-thread state apart */
	uint64_t seed;
	unsigned streams;     /* atomic: threads that seeded a generator */
	int error_code;
	int64_t latency;
	keel_chaos_change_fn change;
	void *change_ud;
	const char *panic_msg;
	char strings[];       /* name and panic_msg */
};

static const struct keel_policy_ops chaos_ops;

static struct chaos *to_chaos(const struct keel_policy *p)
{
	if (p == NULL || p->ops != &chaos_ops)
		return NULL;
	return (struct chaos *)(void *)p;
}

/* ------------------------------------------------------------------------
 * Randomness: xorshift64* per thread and policy
 * ------------------------------------------------------------------------ */

/*
 * A few per-thread generator states, direct-mapped by policy id. A thread
 * alternating between colliding policies reseeds on each switch; it then
 * takes a fresh stream (streams counts up), so its draws stay random, just
 * no longer reproducible. Initial-exec TLS, as the core's, so a draw costs
 * no __tls_get_addr call.
 */
#define RNG_SLOTS 8
struct rng {
	uint64_t id; /* 0: never used */
	uint64_t s;
};
static __thread struct rng rng_tls[RNG_SLOTS]
	__attribute__((tls_model("initial-exec")));
static uint64_t chaos_ids; /* atomic */

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint32_t draw(struct chaos *c)
{
	struct rng *r = &rng_tls[c->id % RNG_SLOTS];
	uint64_t x;

	if (KEEL_UNLIKELY(r->id != c->id)) {
		unsigned k = __atomic_fetch_add(&c->streams, 1,
						__ATOMIC_RELAXED);

		r->id = c->id;
		r->s = splitmix64(c->seed ^ splitmix64(k));
		if (r->s == 0) /* xorshift's one fixed point */
			r->s = 0x9e3779b97f4a7c15ULL;
	}
	x = r->s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return (uint32_t)((x * 0x2545f4914f6cdd1dULL) >> 32);
}

/* ------------------------------------------------------------------------
 * The harm, done in place of the call
 * ------------------------------------------------------------------------ */

static int *volatile chaos_nil; /* never set: the optimiser cannot know */

/*
 * A real NULL dereference: the CPU faults, and keel's handler turns the
 * fault into a panic in this thread. noinline keeps it a distinct frame in
 * stack traces; no_sanitize keeps UBSan from reporting the NULL store
 * before the CPU can fault.
 */
static __attribute__((noinline, no_sanitize("undefined"))) void
chaos_fault(void)
{
	*chaos_nil = 1;
}

struct chaos_call {
	struct chaos *c;
	keel_op_fn fn;
	void *arg;
};

/* Injected latency, ending early at the call's deadline or cancellation. */
static int chaos_sleep(struct chaos *c, struct keel_exec *x)
{
	const struct keel_clock *clk = c->base.clock;
	int64_t now = clk->now(clk), until;
	int err;

	until = now > KEEL_NEVER - c->latency ? KEEL_NEVER : now + c->latency;
	if (x->deadline < until) {
		err = keel_clock_wait_until(clk, x->deadline, x->cancel);
		return err != 0 ? err : -ETIMEDOUT;
	}
	return keel_clock_wait_until(clk, until, x->cancel);
}

static int chaos_op(struct keel_exec *x, void *arg)
{
	struct chaos_call *cc = arg;
	struct chaos *c = cc->c;
	int code;

	switch (c->kind) {
	case KEEL_CHAOS_PANIC:
		keel_panic(c->panic_msg);
	case KEEL_CHAOS_FAULT:
		chaos_fault();
		return c->error_code; /* not reached: the store faults */
	case KEEL_CHAOS_LATENCY:
		code = chaos_sleep(c, x);
		return code != 0 ? code : cc->fn(x, cc->arg);
	case KEEL_CHAOS_RESULT:
		code = cc->fn(x, cc->arg);
		return c->change(x, code, c->change_ud);
	case KEEL_CHAOS_ERROR:
	default:
		return c->error_code;
	}
}

static void chaos_execute(struct keel_policy *p, struct keel__chain *next,
			  struct keel_exec *x, struct keel_outcome *out)
{
	struct chaos *c = (struct chaos *)(void *)p;
	struct chaos_call cc;
	struct keel__chain wrapped;

	keel__policy_add(p, KEEL__STAT(calls));
	if (!__atomic_load_n(&c->enabled, __ATOMIC_RELAXED) ||
	    draw(c) >= __atomic_load_n(&c->threshold, __ATOMIC_RELAXED)) {
		keel__chain_next(next, x, out);
		keel__policy_count(p, x, out);
		return;
	}
	cc.c = c;
	cc.fn = next->fn;
	cc.arg = next->arg;
	wrapped.policies = next->policies;
	wrapped.n = next->n;
	wrapped.fn = chaos_op;
	wrapped.arg = &cc;
	keel__chain_next(&wrapped, x, out);
	keel__policy_add(p, KEEL__STAT(injected));
	keel__policy_emit(p, KEEL_EV_INJECTED, x, out,
			  c->kind == KEEL_CHAOS_LATENCY ? c->latency : 0,
			  (int)c->kind, 0);
	keel__policy_count(p, x, out);
}

static void chaos_destroy(struct keel_policy *p)
{
	free(p);
}

static const struct keel_policy_ops chaos_ops = {
	KEEL_POLICY_CHAOS, chaos_execute, chaos_destroy
};

/* ------------------------------------------------------------------------
 * Building and switching
 * ------------------------------------------------------------------------ */

static int rate_ok(double rate)
{
	return rate >= 0.0 && rate <= 1.0; /* false for NaN */
}

static void store_rate(struct chaos *c, double rate)
{
	uint64_t bits;

	memcpy(&bits, &rate, sizeof(bits));
	__atomic_store_n(&c->rate_bits, bits, __ATOMIC_RELAXED);
	__atomic_store_n(&c->threshold,
			 (uint64_t)(rate * (double)ALWAYS + 0.5),
			 __ATOMIC_RELAXED);
}

void keel_chaos_config_init(struct keel_chaos_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->kind = KEEL_CHAOS_ERROR;
	cfg->rate = 0.1;
	cfg->enabled = 1;
	cfg->error_code = KEEL_ECHAOS;
	cfg->latency = 100 * KEEL_MSEC;
}

static int config_ok(const struct keel_chaos_config *cfg)
{
	if (!rate_ok(cfg->rate) || cfg->error_code >= 0)
		return 0;
	switch (cfg->kind) {
	case KEEL_CHAOS_ERROR:
	case KEEL_CHAOS_PANIC:
	case KEEL_CHAOS_FAULT:
		return 1;
	case KEEL_CHAOS_LATENCY:
		return cfg->latency > 0;
	case KEEL_CHAOS_RESULT:
		return cfg->change != NULL;
	default:
		return 0;
	}
}

int keel_chaos_new(const struct keel_chaos_config *cfg,
		   struct keel_policy **out)
{
	const char *msg;
	struct chaos *c;
	size_t nlen, mlen;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL || !config_ok(cfg))
		return -EINVAL;
	msg = cfg->panic_msg != NULL ? cfg->panic_msg : DEFAULT_PANIC_MSG;
	nlen = cfg->name != NULL ? strlen(cfg->name) + 1 : 0;
	mlen = strlen(msg) + 1;
	c = calloc(1, sizeof(*c) + nlen + mlen);
	if (c == NULL)
		return -ENOMEM;
	if (nlen > 0)
		memcpy(c->strings, cfg->name, nlen);
	memcpy(c->strings + nlen, msg, mlen);
	keel__policy_init(&c->base, &chaos_ops, nlen > 0 ? c->strings : NULL,
			  cfg->clock, cfg->on_event, cfg->event_ud);
	c->kind = cfg->kind;
	c->enabled = cfg->enabled != 0;
	store_rate(c, cfg->rate);
	c->id = __atomic_add_fetch(&chaos_ids, 1, __ATOMIC_RELAXED);
	c->seed = cfg->seed;
	c->error_code = cfg->error_code;
	c->latency = cfg->latency;
	c->change = cfg->change;
	c->change_ud = cfg->change_ud;
	c->panic_msg = c->strings + nlen;
	*out = &c->base;
	return 0;
}

int keel_chaos_enable(struct keel_policy *p, int on)
{
	struct chaos *c = to_chaos(p);

	if (c == NULL)
		return -EINVAL;
	__atomic_store_n(&c->enabled, on != 0, __ATOMIC_RELAXED);
	return 0;
}

int keel_chaos_set_rate(struct keel_policy *p, double rate)
{
	struct chaos *c = to_chaos(p);

	if (c == NULL || !rate_ok(rate))
		return -EINVAL;
	store_rate(c, rate);
	return 0;
}

int keel_chaos_enabled(const struct keel_policy *p)
{
	struct chaos *c = to_chaos(p);

	return c != NULL ? __atomic_load_n(&c->enabled, __ATOMIC_RELAXED)
			 : -EINVAL;
}

double keel_chaos_rate(const struct keel_policy *p)
{
	struct chaos *c = to_chaos(p);
	uint64_t bits;
	double rate;

	if (c == NULL)
		return -1.0;
	bits = __atomic_load_n(&c->rate_bits, __ATOMIC_RELAXED);
	memcpy(&rate, &bits, sizeof(rate));
	return rate;
}
