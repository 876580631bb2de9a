/*
 * src/resilience/breaker.c - the circuit breaker (see keel/breaker.h for
 * the state machine and what each option means).
 *
 * The shape of the concurrency:
 *   - One 64-bit state word holds the state, the number of probes admitted
 *     in the current half-open round and an epoch that every transition
 *     bumps. Admitting a call while CLOSED is one load of it; admitting a
 *     probe is one CAS on it, so a round admits exactly half_open_calls
 *     probes however many threads race for them, and a permit can never be
 *     counted against a round other than the one it was issued in. A call
 *     remembers the word it was admitted under, and its outcome counts
 *     only if the epoch is still the same.
 *   - The count window is a ring of one-byte slots written by exchange: the
 *     writer learns exactly what it replaced and fixes the aggregate counts
 *     by the difference, so the aggregates equal the ring's contents
 *     whenever nobody is between the exchange and the adds.
 *   - The time window is one bucket per second; adding to the current
 *     bucket is lock-free, moving to a new second takes the mutex. Buckets
 *     are emptied by exchange for the same reason as the ring's slots.
 *   - Transitions, and everything of the half-open round except the probe
 *     count, happen under the mutex; they are rare.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <keel/breaker.h>

/* The state word: state in bits 0-2, probes admitted in bits 3-18, epoch
 * above. The epoch starts at 1 so that no live word is 0, the empty
 * permit. */
#define SW_STATE_MASK ((uint64_t)7)
#define SW_ISSUED_SHIFT 3
#define SW_ISSUED_ONE ((uint64_t)1 << SW_ISSUED_SHIFT)
#define SW_ISSUED_MASK ((uint64_t)0xffff << SW_ISSUED_SHIFT)
#define SW_EPOCH_SHIFT 19
#define SW_EPOCH_ONE ((uint64_t)1 << SW_EPOCH_SHIFT)

/* A count-window slot. */
#define SLOT_USED 1u
#define SLOT_FAIL 2u
#define SLOT_SLOW 4u

#define CACHELINE 64

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_RELAXED)

struct bucket {
	int64_t calls, fails, slows;
};

struct breaker {
	struct keel_policy base;

	/* Config, immutable after new; on a line of its own, so that the
	 * counters written by every call never share it. */
	_Alignas(CACHELINE) keel_classify_fn classify;
	void *classify_ud;
	unsigned consec_max;
	unsigned fail_pct, slow_pct;
	unsigned min_calls;
	unsigned probes;
	unsigned wsize;       /* 0: no window */
	uint64_t wsize_inv;   /* for fastmod by wsize */
	int time_window;
	int timed;            /* slow calls are tracked */
	int64_t slow_ns;
	int64_t base_open, max_open;
	double mult;
	uint8_t *slots;       /* count window */
	struct bucket *buckets; /* time window */

	/* Read by every call; written only at transitions (under mu, before
	 * sw is published with release). */
	_Alignas(CACHELINE) uint64_t sw;
	int64_t open_until;
	int64_t open_dur;     /* of the current or last open period */
	int64_t ho_since;     /* when the current half-open round began */

	/* Written by every call while CLOSED. */
	_Alignas(CACHELINE) uint32_t head; /* count window: next slot */
	int64_t calls, fails, slows;        /* the window's aggregates */
	int64_t cur_sec;                    /* time window: newest second */
	uint32_t cur_idx;                   /* ... and its bucket */
	unsigned consec;

	/* Guarded by mu. */
	_Alignas(CACHELINE) pthread_mutex_t mu;
	unsigned ho_done, ho_slow;
	uint64_t trips;
	uint64_t abandoned;
};

static const struct keel_policy_ops breaker_ops;

static inline enum keel_breaker_state sw_state(uint64_t sw)
{
	return (enum keel_breaker_state)(sw & SW_STATE_MASK);
}

static inline unsigned sw_issued(uint64_t sw)
{
	return (unsigned)((sw & SW_ISSUED_MASK) >> SW_ISSUED_SHIFT);
}

/* Same state and epoch: the probe count may differ. */
static inline int sw_same_round(uint64_t a, uint64_t b)
{
	return (a & ~SW_ISSUED_MASK) == (b & ~SW_ISSUED_MASK);
}

static inline int64_t now_of(const struct breaker *b)
{
	return b->base.clock->now(b->base.clock);
}

static int64_t sat_add(int64_t t, int64_t d)
{
	return t > KEEL_NEVER - d ? KEEL_NEVER : t + d;
}

/* Floor division, so negative virtual times still map to whole seconds. */
static int64_t sec_of(int64_t t)
{
	int64_t s = t / KEEL_SEC;

	return (t % KEEL_SEC < 0) ? s - 1 : s;
}

static struct breaker *to_breaker(const struct keel_policy *p)
{
	if (p == NULL || p->ops != &breaker_ops)
		keel_panic("keel_breaker: not a circuit breaker policy");
	return (struct breaker *)p;
}

/* ------------------------------------------------------------------------
 * The sliding window
 * ------------------------------------------------------------------------ */

/*
 * a % d by multiplication (Lemire, "Faster remainder by direct
 * computation", 2019): a 64-bit division is the slowest instruction of a
 * call otherwise. inv is UINT64_MAX / d + 1.
 */
static inline uint32_t fastmod(uint32_t a, uint64_t inv, uint32_t d)
{
	return (uint32_t)(((__uint128_t)(inv * a) * d) >> 64);
}

static struct bucket *bucket_at(struct breaker *b, int64_t sec)
{
	int64_t i = sec % (int64_t)b->wsize;

	return &b->buckets[i < 0 ? i + (int64_t)b->wsize : i];
}

static void bucket_clear(struct breaker *b, struct bucket *bk)
{
	int64_t n;

	if ((n = XCHG(&bk->calls, 0)) != 0)
		ADD(&b->calls, -n);
	if ((n = XCHG(&bk->fails, 0)) != 0)
		ADD(&b->fails, -n);
	if ((n = XCHG(&bk->slows, 0)) != 0)
		ADD(&b->slows, -n);
}

/* Moves the time window forward to second s, emptying the buckets of the
 * seconds it skips over. mu held. */
static void rotate_locked(struct breaker *b, int64_t s)
{
	int64_t cur = LOAD(&b->cur_sec), n, i;

	if (s <= cur)
		return;
	n = s - cur < (int64_t)b->wsize ? s - cur : (int64_t)b->wsize;
	for (i = 1; i <= n; i++)
		bucket_clear(b, bucket_at(b, cur + i));
	STORE(&b->cur_idx, (uint32_t)(bucket_at(b, s) - b->buckets));
	__atomic_store_n(&b->cur_sec, s, __ATOMIC_RELEASE);
}

static KEEL_COLD void rotate(struct breaker *b, int64_t s)
{
	pthread_mutex_lock(&b->mu);
	rotate_locked(b, s);
	pthread_mutex_unlock(&b->mu);
}

static void time_add(struct breaker *b, unsigned v, int64_t now)
{
	int64_t s = sec_of(now);
	struct bucket *bk;

	if (KEEL_UNLIKELY(s > __atomic_load_n(&b->cur_sec, __ATOMIC_ACQUIRE)))
		rotate(b, s);
	/* An outcome measured before the window moved on lands in the newest
	 * bucket: it is recent, and a bucket of its own second is gone. If
	 * the window moves on between this load and the adds, it lands in a
	 * newer bucket; the aggregates stay equal to the buckets' sum. */
	bk = &b->buckets[LOAD(&b->cur_idx)];
	ADD(&bk->calls, 1);
	ADD(&b->calls, 1);
	if (v & SLOT_FAIL) {
		ADD(&bk->fails, 1);
		ADD(&b->fails, 1);
	}
	if (v & SLOT_SLOW) {
		ADD(&bk->slows, 1);
		ADD(&b->slows, 1);
	}
}

static void count_add(struct breaker *b, unsigned v)
{
	/* A 32-bit position: when it wraps, once in 2^32 calls, the ring
	 * overwrites a few slots out of turn, which no rate can notice. */
	uint32_t i = fastmod(ADD(&b->head, 1), b->wsize_inv, b->wsize);
	unsigned old;
	int df, ds;

	/* A slot that already holds this outcome needs no write: skipping it
	 * is the same as an exchange that found what it wrote, so a steady
	 * run of successes only reads the ring. */
	v |= SLOT_USED;
	if (LOAD(&b->slots[i]) == v)
		return;
	old = XCHG(&b->slots[i], (uint8_t)v);
	df = (int)!!(v & SLOT_FAIL) - (int)!!(old & SLOT_FAIL);
	ds = (int)!!(v & SLOT_SLOW) - (int)!!(old & SLOT_SLOW);
	if (!(old & SLOT_USED))
		ADD(&b->calls, 1);
	if (df != 0)
		ADD(&b->fails, df);
	if (ds != 0)
		ADD(&b->slows, ds);
}

/* Empties the window. mu held. */
static void window_clear(struct breaker *b, int64_t now)
{
	unsigned i;

	if (b->wsize == 0)
		return;
	if (b->time_window) {
		for (i = 0; i < b->wsize; i++)
			bucket_clear(b, &b->buckets[i]);
		STORE(&b->cur_idx,
		      (uint32_t)(bucket_at(b, sec_of(now)) - b->buckets));
		__atomic_store_n(&b->cur_sec, sec_of(now), __ATOMIC_RELEASE);
		return;
	}
	for (i = 0; i < b->wsize; i++) {
		unsigned old = XCHG(&b->slots[i], 0);

		if (old & SLOT_USED)
			ADD(&b->calls, -1);
		if (old & SLOT_FAIL)
			ADD(&b->fails, -1);
		if (old & SLOT_SLOW)
			ADD(&b->slows, -1);
	}
}

/* The window's counts. Between a writer's exchange and its adds they can
 * be off by one per writer in flight, in either direction, so clamp. */
static void window_counts(const struct breaker *b, int64_t *calls,
			  int64_t *fails, int64_t *slows)
{
	int64_t c = LOAD(&b->calls), f = LOAD(&b->fails), s = LOAD(&b->slows);

	c = c < 0 ? 0 : c;
	*calls = c;
	*fails = f < 0 ? 0 : f > c ? c : f;
	*slows = s < 0 ? 0 : s > c ? c : s;
}

static int rates_trip(const struct breaker *b)
{
	int64_t c, f, s;

	if (b->wsize == 0)
		return 0;
	window_counts(b, &c, &f, &s);
	if (c < (int64_t)b->min_calls)
		return 0;
	if (b->fail_pct && f * 100 >= (int64_t)b->fail_pct * c)
		return 1;
	if (b->slow_pct && s * 100 >= (int64_t)b->slow_pct * c)
		return 1;
	return 0;
}

/* ------------------------------------------------------------------------
 * Transitions (mu held)
 * ------------------------------------------------------------------------ */

/* Publishes a new state with a new epoch and no probes admitted. */
static void publish(struct breaker *b, uint64_t old, enum keel_breaker_state to)
{
	uint64_t sw = ((old >> SW_EPOCH_SHIFT) + 1) << SW_EPOCH_SHIFT;

	__atomic_store_n(&b->sw, sw | (uint64_t)to, __ATOMIC_RELEASE);
}

/*
 * State events are emitted with mu held, so that listeners see transitions
 * in order. A listener that panics must not leave mu locked for ever: the
 * emission runs in a scope whose deferred call unlocks mu when the listener
 * did not return, and the panic goes on to the caller with the breaker
 * consistent (the event is always the last step of a transition).
 */
struct state_event {
	struct breaker *b;
	const struct keel_exec *x;
	const struct keel_outcome *o;
	int from, to;
	int returned;
};

static void state_event_unlock(void *arg)
{
	struct state_event *e = arg;

	if (!e->returned)
		pthread_mutex_unlock(&e->b->mu);
}

static void state_event_emit(void *arg)
{
	struct state_event *e = arg;

	keel_defer(state_event_unlock, e);
	keel__policy_emit(&e->b->base, KEEL_EV_STATE, e->x, e->o, 0, e->from,
			  e->to);
	e->returned = 1;
}

static void set_state(struct breaker *b, uint64_t old,
		      enum keel_breaker_state to, const struct keel_exec *x,
		      const struct keel_outcome *o)
{
	struct state_event e = { b, x, o, (int)sw_state(old), (int)to, 0 };

	publish(b, old, to);
	keel__policy_add(&b->base, KEEL__STAT(transitions));
	if (b->base.on_event != NULL)
		keel_call(state_event_emit, &e);
}

static int64_t grown(const struct breaker *b, int64_t prev)
{
	int64_t cap = b->max_open > b->base_open ? b->max_open : b->base_open;
	double d = (double)prev * b->mult;

	if (d >= (double)cap)
		return cap;
	return (int64_t)d > prev ? (int64_t)d : prev;
}

static void to_open(struct breaker *b, uint64_t old, int grow,
		    const struct keel_exec *x, const struct keel_outcome *o)
{
	int64_t dur = grow ? grown(b, LOAD(&b->open_dur)) : b->base_open;

	STORE(&b->open_dur, dur);
	STORE(&b->open_until, sat_add(now_of(b), dur));
	b->trips++;
	set_state(b, old, KEEL_BREAKER_OPEN, x, o);
}

static void new_round(struct breaker *b)
{
	b->ho_done = 0;
	b->ho_slow = 0;
	STORE(&b->ho_since, now_of(b));
}

static void to_half_open(struct breaker *b, uint64_t old)
{
	new_round(b);
	set_state(b, old, KEEL_BREAKER_HALF_OPEN, NULL, NULL);
}

/* Stuck half-open: same state, new epoch, so the abandoned round's probes
 * no longer count and their permits are free again. Not a state change:
 * no event. */
static void restart_round(struct breaker *b, uint64_t old)
{
	new_round(b);
	b->abandoned++;
	publish(b, old, KEEL_BREAKER_HALF_OPEN);
}

/* Empties what CLOSED decides on, so old failures cannot trip it again.
 * The open duration needs no reset: a trip from CLOSED always starts from
 * open_duration, only reopening from HALF_OPEN grows it. */
static void clear_counts(struct breaker *b)
{
	window_clear(b, now_of(b));
	STORE(&b->consec, 0);
}

static void to_closed(struct breaker *b, uint64_t old,
		      const struct keel_exec *x, const struct keel_outcome *o)
{
	clear_counts(b);
	set_state(b, old, KEEL_BREAKER_CLOSED, x, o);
}

/* ------------------------------------------------------------------------
 * Admission
 * ------------------------------------------------------------------------ */

/* One more probe admitted in sw's round, or 0 and *sw updated when the
 * word changed under us (another probe, or a new state). */
static int take_probe(struct breaker *b, uint64_t *sw)
{
	return __atomic_compare_exchange_n(&b->sw, sw, *sw + SW_ISSUED_ONE, 0,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static KEEL_COLD int admit_slow(struct breaker *b, uint64_t sw, uint64_t *token)
{
	for (;;) {
		int64_t now;

		switch (sw_state(sw)) {
		case KEEL_BREAKER_CLOSED:
		case KEEL_BREAKER_DISABLED:
			*token = sw;
			return 0;
		case KEEL_BREAKER_OPEN:
			now = now_of(b);
			if (now < LOAD(&b->open_until))
				return KEEL_EBREAKER_OPEN;
			pthread_mutex_lock(&b->mu);
			if (LOAD(&b->sw) == sw)
				to_half_open(b, sw);
			pthread_mutex_unlock(&b->mu);
			break;
		case KEEL_BREAKER_HALF_OPEN:
			if (sw_issued(sw) < b->probes) {
				if (take_probe(b, &sw)) {
					*token = sw + SW_ISSUED_ONE;
					return 0;
				}
				continue; /* sw now holds the fresh word */
			}
			/* Every probe admitted, not all finished: wait for
			 * them for one open duration, then give up on them. */
			now = now_of(b);
			if (now - LOAD(&b->ho_since) < LOAD(&b->open_dur))
				return KEEL_EBREAKER_OPEN;
			pthread_mutex_lock(&b->mu);
			if (LOAD(&b->sw) == sw)
				restart_round(b, sw);
			pthread_mutex_unlock(&b->mu);
			break;
		case KEEL_BREAKER_FORCED_OPEN:
		default:
			return KEEL_EBREAKER_OPEN;
		}
		sw = __atomic_load_n(&b->sw, __ATOMIC_ACQUIRE);
	}
}

/* 0 and the word the call was admitted under, or KEEL_EBREAKER_OPEN. The
 * CLOSED case is the fast path: one load, no lock. */
static inline int admit(struct breaker *b, uint64_t *token)
{
	uint64_t sw = __atomic_load_n(&b->sw, __ATOMIC_ACQUIRE);

	if (KEEL_LIKELY(sw_state(sw) == KEEL_BREAKER_CLOSED)) {
		*token = sw;
		return 0;
	}
	return admit_slow(b, sw, token);
}

static KEEL_COLD void count_rejection(struct breaker *b,
				      const struct keel_exec *x,
				      const struct keel_outcome *o)
{
	keel__policy_add(&b->base, KEEL__STAT(rejections));
	keel__policy_emit(&b->base, KEEL_EV_REJECTED, x, o, 0, 0, 0);
}

/* ------------------------------------------------------------------------
 * Recording outcomes
 * ------------------------------------------------------------------------ */

static KEEL_COLD void trip(struct breaker *b, uint64_t token,
			  const struct keel_exec *x,
			  const struct keel_outcome *o)
{
	pthread_mutex_lock(&b->mu);
	if (LOAD(&b->sw) == token)
		to_open(b, token, 0, x, o);
	pthread_mutex_unlock(&b->mu);
}

static void record_closed(struct breaker *b, uint64_t token, int failed,
			  int slow, int64_t now, const struct keel_exec *x,
			  const struct keel_outcome *o)
{
	unsigned run = 0;

	/* Admitted under an earlier state: its outcome is history. */
	if (LOAD(&b->sw) != token)
		return;
	if (b->wsize != 0) {
		unsigned v = (failed ? SLOT_FAIL : 0) | (slow ? SLOT_SLOW : 0);

		if (b->time_window)
			time_add(b, v, now);
		else
			count_add(b, v);
	}
	if (failed)
		run = ADD(&b->consec, 1) + 1;
	else if (LOAD(&b->consec) != 0) /* load first: no write per success */
		STORE(&b->consec, 0);
	if ((b->consec_max && run >= b->consec_max) || rates_trip(b))
		trip(b, token, x, o);
}

static KEEL_COLD void record_half_open(struct breaker *b, uint64_t token,
				       int failed, int slow,
				       const struct keel_exec *x,
				       const struct keel_outcome *o)
{
	uint64_t sw;

	pthread_mutex_lock(&b->mu);
	sw = LOAD(&b->sw);
	if (!sw_same_round(sw, token)) {
		pthread_mutex_unlock(&b->mu); /* an abandoned round's probe */
		return;
	}
	if (failed) {
		to_open(b, sw, 1, x, o);
	} else {
		b->ho_done++;
		b->ho_slow += slow != 0;
		if (b->timed && (uint64_t)b->ho_slow * 100 >=
					(uint64_t)b->slow_pct * b->probes)
			to_open(b, sw, 1, x, o);
		else if (b->ho_done >= b->probes)
			to_closed(b, sw, x, o);
	}
	pthread_mutex_unlock(&b->mu);
}

/* Feeds one finished call to the state machine. now is the clock at the
 * end of the call, or 0 when it was not needed (count window, untimed). */
static void finish(struct breaker *b, uint64_t token, int failed,
		   int64_t dur, int64_t now, const struct keel_exec *x,
		   const struct keel_outcome *o)
{
	int slow = b->timed && dur >= b->slow_ns;

	switch (sw_state(token)) {
	case KEEL_BREAKER_CLOSED:
		record_closed(b, token, failed, slow, now, x, o);
		break;
	case KEEL_BREAKER_HALF_OPEN:
		record_half_open(b, token, failed, slow, x, o);
		break;
	default: /* DISABLED records nothing */
		break;
	}
}

/* ------------------------------------------------------------------------
 * The policy
 * ------------------------------------------------------------------------ */

/*
 * The breaker needs time only for slow calls and the time window
 * (base.needs_time). It takes it from the chain's shared readings
 * (x->start before the rest of the chain, x->end after) when they are on
 * its own clock, and reads its clock itself otherwise.
 */
static void breaker_execute(struct keel_policy *p, struct keel__chain *next,
			    struct keel_exec *x, struct keel_outcome *out)
{
	struct breaker *b = (struct breaker *)p;
	int shared = x->timed && x->clock == p->clock;
	int64_t t0 = 0, t1 = 0;
	uint64_t token;

	keel__policy_add(p, KEEL__STAT(calls));
	if (KEEL_UNLIKELY(admit(b, &token) != 0)) {
		keel__outcome_reject(out, KEEL_POLICY_BREAKER,
				     KEEL_EBREAKER_OPEN);
		count_rejection(b, x, out);
		return;
	}
	if (b->timed)
		t0 = shared ? x->start : now_of(b);
	keel__chain_next(next, x, out);
	/* x->end is stale when an inner policy rejected the attempt without
	 * running it; x->start then is the latest reading. */
	if (p->needs_time && !shared)
		t1 = now_of(b);
	else if (p->needs_time)
		t1 = x->end > x->start ? x->end : x->start;
	keel__policy_count(p, x, out);
	finish(b, token, keel__classify(b->classify, b->classify_ud, out),
	       t1 - t0, t1, x, out);
}

static void breaker_destroy(struct keel_policy *p)
{
	struct breaker *b = (struct breaker *)p;

	pthread_mutex_destroy(&b->mu);
	free(b);
}

static const struct keel_policy_ops breaker_ops = {
	KEEL_POLICY_BREAKER, breaker_execute, breaker_destroy
};

void keel_breaker_config_init(struct keel_breaker_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->failure_rate_threshold = 50;
	cfg->slow_call_duration = 10 * KEEL_SEC;
	cfg->window = KEEL_BREAKER_WINDOW_COUNT;
	cfg->window_size = 100;
	cfg->min_calls = 10;
	cfg->open_duration = 10 * KEEL_SEC;
	cfg->open_multiplier = 1.0;
	cfg->open_max_duration = 300 * KEEL_SEC;
	cfg->half_open_calls = 3;
}

static int config_ok(const struct keel_breaker_config *c)
{
	int rates = c->failure_rate_threshold || c->slow_rate_threshold;

	if (c->failure_rate_threshold > 100 || c->slow_rate_threshold > 100)
		return 0;
	if (c->window != KEEL_BREAKER_WINDOW_COUNT &&
	    c->window != KEEL_BREAKER_WINDOW_TIME)
		return 0;
	if (rates && c->window_size == 0)
		return 0;
	if (c->window_size > (c->window == KEEL_BREAKER_WINDOW_COUNT
				      ? KEEL_BREAKER_MAX_COUNT_WINDOW
				      : KEEL_BREAKER_MAX_TIME_WINDOW))
		return 0;
	if (c->window == KEEL_BREAKER_WINDOW_COUNT && c->window_size != 0 &&
	    c->min_calls > c->window_size)
		return 0;
	if (c->slow_rate_threshold && c->slow_call_duration <= 0)
		return 0;
	if (c->open_duration <= 0 || !(c->open_multiplier >= 1.0))
		return 0;
	if (c->half_open_calls == 0 ||
	    c->half_open_calls > KEEL_BREAKER_MAX_HALF_OPEN)
		return 0;
	return 1;
}

/* One allocation: the breaker, its window, its name. aligned_alloc wants
 * the size to be a multiple of the alignment. */
static size_t layout(const struct keel_breaker_config *c, size_t *win_off,
		     size_t *name_off)
{
	size_t n = sizeof(struct breaker), w = 0;

	if (c->window_size != 0)
		w = c->window == KEEL_BREAKER_WINDOW_TIME
			    ? (size_t)c->window_size * sizeof(struct bucket)
			    : (size_t)c->window_size;
	*win_off = n;
	*name_off = n + w;
	n += w + (c->name != NULL ? strlen(c->name) + 1 : 0);
	return (n + CACHELINE - 1) / CACHELINE * CACHELINE;
}

int keel_breaker_new(const struct keel_breaker_config *cfg,
		     struct keel_policy **out)
{
	size_t size, win_off, name_off;
	const char *name = NULL;
	struct breaker *b;
	char *mem;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL || !config_ok(cfg))
		return -EINVAL;
	size = layout(cfg, &win_off, &name_off);
	mem = aligned_alloc(CACHELINE, size);
	if (mem == NULL)
		return -ENOMEM;
	memset(mem, 0, size);
	b = (struct breaker *)(void *)mem;
	if (pthread_mutex_init(&b->mu, NULL) != 0) {
		free(mem);
		return -ENOMEM;
	}
	if (cfg->name != NULL) {
		name = mem + name_off;
		memcpy(mem + name_off, cfg->name, strlen(cfg->name) + 1);
	}
	keel__policy_init(&b->base, &breaker_ops, name, cfg->clock,
			  cfg->on_event, cfg->event_ud);
	b->classify = cfg->classify;
	b->classify_ud = cfg->classify_ud;
	b->consec_max = cfg->consecutive_failures;
	b->fail_pct = cfg->failure_rate_threshold;
	b->slow_pct = cfg->slow_rate_threshold;
	b->min_calls = cfg->min_calls ? cfg->min_calls : 1;
	b->probes = cfg->half_open_calls;
	b->wsize = cfg->window_size;
	b->time_window = cfg->window == KEEL_BREAKER_WINDOW_TIME;
	b->timed = cfg->slow_rate_threshold != 0;
	b->slow_ns = cfg->slow_call_duration;
	b->base_open = cfg->open_duration;
	b->max_open = cfg->open_max_duration;
	b->mult = cfg->open_multiplier;
	if (b->wsize != 0 && b->time_window) {
		b->buckets = (struct bucket *)(void *)(mem + win_off);
		b->cur_sec = sec_of(now_of(b));
		b->cur_idx = (uint32_t)(bucket_at(b, b->cur_sec) - b->buckets);
	} else if (b->wsize != 0) {
		b->slots = (uint8_t *)(mem + win_off);
		b->wsize_inv = UINT64_MAX / b->wsize + 1;
	}
	b->open_dur = b->base_open;
	b->base.needs_time = b->timed || (b->time_window && b->wsize != 0);
	b->sw = SW_EPOCH_ONE | KEEL_BREAKER_CLOSED;
	*out = &b->base;
	return 0;
}

/* ------------------------------------------------------------------------
 * Guarding calls by hand
 * ------------------------------------------------------------------------ */

int keel_breaker_allow(struct keel_policy *p,
		       struct keel_breaker_permit *permit)
{
	struct breaker *b = to_breaker(p);

	keel__policy_add(p, KEEL__STAT(calls));
	permit->start = 0;
	if (KEEL_UNLIKELY(admit(b, &permit->token) != 0)) {
		struct keel_outcome o;

		permit->token = 0;
		memset(&o, 0, sizeof(o));
		keel__outcome_reject(&o, KEEL_POLICY_BREAKER,
				     KEEL_EBREAKER_OPEN);
		count_rejection(b, NULL, &o);
		return KEEL_EBREAKER_OPEN;
	}
	if (b->timed)
		permit->start = now_of(b);
	return 0;
}

void keel_breaker_record(struct keel_policy *p,
			 const struct keel_breaker_permit *permit, int code,
			 int64_t duration)
{
	struct breaker *b = to_breaker(p);
	struct keel_outcome o;
	int64_t now = 0;

	if (permit == NULL || permit->token == 0)
		return;
	/* Every field, but not the whole message buffer: clearing its 120
	 * bytes would be the largest cost of a record. */
	o.code = code;
	o.result = NULL;
	o.panicked = code == KEEL_EPANIC;
	o.panic_kind = KEEL_PANIC_MESSAGE;
	o.panic_msg[0] = '\0';
	o.retry_after = 0;
	o.attempts = 1;
	o.decided_by = KEEL_POLICY_NONE;
	if (p->needs_time)
		now = now_of(b);
	if (duration < 0)
		duration = b->timed ? now - permit->start : 0;
	o.elapsed = duration;
	keel__policy_count(p, NULL, &o);
	finish(b, permit->token,
	       keel__classify(b->classify, b->classify_ud, &o), duration, now,
	       NULL, &o);
}

/* ------------------------------------------------------------------------
 * Operator controls and the view
 * ------------------------------------------------------------------------ */

static void force(struct keel_policy *p, enum keel_breaker_state to)
{
	struct breaker *b = to_breaker(p);
	uint64_t sw;

	pthread_mutex_lock(&b->mu);
	sw = LOAD(&b->sw);
	if (to == KEEL_BREAKER_CLOSED)
		clear_counts(b);
	if (sw_state(sw) != to)
		set_state(b, sw, to, NULL, NULL);
	pthread_mutex_unlock(&b->mu);
}

void keel_breaker_force_open(struct keel_policy *p)
{
	force(p, KEEL_BREAKER_FORCED_OPEN);
}

void keel_breaker_force_closed(struct keel_policy *p)
{
	force(p, KEEL_BREAKER_DISABLED);
}

void keel_breaker_reset(struct keel_policy *p)
{
	force(p, KEEL_BREAKER_CLOSED);
}

enum keel_breaker_state keel_breaker_state(const struct keel_policy *p)
{
	const struct breaker *b = to_breaker(p);

	return sw_state(__atomic_load_n(&b->sw, __ATOMIC_ACQUIRE));
}

static double rate(int64_t n, int64_t calls, unsigned min_calls)
{
	if (calls < (int64_t)min_calls)
		return -1;
	return 100.0 * (double)n / (double)calls;
}

void keel_breaker_view(struct keel_policy *p, struct keel_breaker_view *v)
{
	struct breaker *b = to_breaker(p);
	int64_t now = now_of(b), c, f, s;
	uint64_t sw;

	memset(v, 0, sizeof(*v));
	pthread_mutex_lock(&b->mu);
	if (b->time_window && b->wsize != 0)
		rotate_locked(b, sec_of(now));
	sw = LOAD(&b->sw);
	window_counts(b, &c, &f, &s);
	v->state = sw_state(sw);
	v->calls = (uint64_t)c;
	v->failures = (uint64_t)f;
	v->slow_calls = (uint64_t)s;
	v->failure_rate = rate(f, c, b->min_calls);
	v->slow_rate = b->timed ? rate(s, c, b->min_calls) : -1;
	v->consecutive_failures = LOAD(&b->consec);
	v->trips = b->trips;
	v->abandoned_rounds = b->abandoned;
	v->open_duration = LOAD(&b->open_dur);
	if (v->state == KEEL_BREAKER_OPEN) {
		int64_t left = LOAD(&b->open_until) - now;

		v->until_half_open = left > 0 ? left : 0;
	} else if (v->state == KEEL_BREAKER_FORCED_OPEN) {
		v->until_half_open = KEEL_NEVER;
	} else if (v->state == KEEL_BREAKER_HALF_OPEN) {
		v->half_open_done = b->ho_done;
		v->half_open_permits = sw_issued(sw) - b->ho_done;
	}
	pthread_mutex_unlock(&b->mu);
}

const char *keel_breaker_state_name(enum keel_breaker_state s)
{
	static const char *const names[] = {
		[KEEL_BREAKER_CLOSED] = "closed",
		[KEEL_BREAKER_OPEN] = "open",
		[KEEL_BREAKER_HALF_OPEN] = "half-open",
		[KEEL_BREAKER_FORCED_OPEN] = "forced-open",
		[KEEL_BREAKER_DISABLED] = "disabled",
	};

	if ((unsigned)s >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[s];
}
