/*
 * src/resilience/bulkhead.c - at most N calls at once (keel/bulkhead.h).
 *
 * The fast path is one compare-and-swap on the in-flight counter. Waiting
 * calls queue on a mutex-guarded list of entries that live on their own
 * stacks. Each entry carries a cancel token, a child of the call's token:
 * a clock's wait_until is the only wait that every clock (system or
 * virtual) offers, and it ends when its token is cancelled, so handing a
 * slot to a waiter is "cancel its token with the reason GRANTED". The
 * token being a child of the call's own token means the call's
 * cancellation and deadline end the wait too, with no extra machinery.
 *
 * No lost wake-ups: a waiter first counts itself in `waiting` and then
 * tries the counter once more; a releaser first decrements the counter and
 * then reads `waiting`. Both are sequentially consistent, so at least one
 * of them sees the other: either the waiter gets the slot itself, or the
 * releaser sees it waiting and, under the mutex (which the waiter held
 * while it queued), hands it a slot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <keel/bulkhead.h>

/* The reason a waiter's token is "cancelled" with when it got a slot. Real
 * reasons are negative, so this one cannot be mistaken for them. */
#define GRANTED 1

struct waiter {
	struct waiter *prev, *next;
	struct keel_cancel tok; /* child of the call's; a grant wakes it */
	int granted;            /* guarded by mu */
};

struct bulkhead {
	struct keel_policy base;
	int max_concurrent;
	int max_waiting;
	int64_t max_wait;
	int in_flight;          /* atomic */
	int waiting;            /* atomic reads; written under mu */
	pthread_mutex_t mu;
	struct waiter *head, *tail;
};

static const struct keel_policy_ops bulkhead_ops;

static struct bulkhead *to_bulkhead(const struct keel_policy *p)
{
	if (p == NULL || p->ops != &bulkhead_ops)
		return NULL;
	return (struct bulkhead *)(void *)p;
}

static int try_take(struct bulkhead *b)
{
	int n = __atomic_load_n(&b->in_flight, __ATOMIC_SEQ_CST);

	while (n < b->max_concurrent)
		if (__atomic_compare_exchange_n(&b->in_flight, &n, n + 1, 1,
						__ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return 1;
	return 0;
}

static void enqueue(struct bulkhead *b, struct waiter *w)
{
	w->next = NULL;
	w->prev = b->tail;
	if (b->tail != NULL)
		b->tail->next = w;
	else
		b->head = w;
	b->tail = w;
	__atomic_store_n(&b->waiting, b->waiting + 1, __ATOMIC_SEQ_CST);
}

static void dequeue(struct bulkhead *b, struct waiter *w)
{
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		b->head = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	else
		b->tail = w->prev;
	__atomic_store_n(&b->waiting, b->waiting - 1, __ATOMIC_SEQ_CST);
}

/* Hands free slots to waiters, oldest first. The token is cancelled under
 * mu: once the waiter can see `granted` it may destroy its token. */
static KEEL_COLD void grant(struct bulkhead *b)
{
	pthread_mutex_lock(&b->mu);
	while (b->head != NULL && try_take(b)) {
		struct waiter *w = b->head;

		dequeue(b, w);
		w->granted = 1;
		keel_cancel_cancel(&w->tok, GRANTED);
	}
	pthread_mutex_unlock(&b->mu);
}

static void give_back(struct bulkhead *b)
{
	__atomic_fetch_sub(&b->in_flight, 1, __ATOMIC_SEQ_CST);
	if (KEEL_UNLIKELY(__atomic_load_n(&b->waiting, __ATOMIC_SEQ_CST) > 0))
		grant(b);
}

/* Waits for a slot until min(now + max_wait, deadline) or the token ends.
 * 0 with a slot taken, else the rejection's code. */
static KEEL_COLD int wait_slot(struct bulkhead *b, struct keel_cancel *cancel,
			       int64_t deadline)
{
	const struct keel_clock *clk = b->base.clock;
	struct waiter w;
	int64_t now, until;
	int got = 0, err;

	if (b->max_wait == 0)
		return KEEL_EBULKHEAD_FULL;
	now = clk->now(clk);
	until = now > KEEL_NEVER - b->max_wait ? KEEL_NEVER : now + b->max_wait;
	if (deadline < until)
		until = deadline;
	if (until <= now)
		return KEEL_EBULKHEAD_FULL; /* no time left to wait in */
	keel_cancel_init(&w.tok, clk, cancel);
	w.granted = 0;
	pthread_mutex_lock(&b->mu);
	if (b->max_waiting > 0 && b->waiting >= b->max_waiting) {
		pthread_mutex_unlock(&b->mu);
		keel_cancel_destroy(&w.tok);
		return KEEL_EBULKHEAD_FULL;
	}
	enqueue(b, &w);
	if (try_take(b)) { /* a slot freed before we were counted */
		dequeue(b, &w);
		got = 1;
	}
	pthread_mutex_unlock(&b->mu);
	if (!got) {
		keel_clock_wait_until(clk, until, &w.tok);
		pthread_mutex_lock(&b->mu);
		got = w.granted;
		if (!got)
			dequeue(b, &w);
		pthread_mutex_unlock(&b->mu);
	}
	keel_cancel_destroy(&w.tok);
	err = keel_cancel_err(cancel);
	if (got && err != 0)
		give_back(b); /* granted just as it was cancelled */
	else if (got)
		return 0;
	return err != 0 ? err : KEEL_EBULKHEAD_FULL;
}

static void bulkhead_execute(struct keel_policy *p, struct keel__chain *next,
			     struct keel_exec *x, struct keel_outcome *out)
{
	struct bulkhead *b = (struct bulkhead *)(void *)p;
	int err = 0;

	keel__policy_add(p, KEEL__STAT(calls));
	if (KEEL_UNLIKELY(!try_take(b))) {
		err = wait_slot(b, x->cancel, x->deadline);
		/* The attempt starts after the wait (keel/policy.h): a timeout
		 * inside bounds the call, not the queueing, and one outside
		 * sees when a rejected wait ended. */
		if (x->timed)
			x->start = x->clock->now(x->clock);
	}
	if (err != 0) {
		keel__outcome_reject(out, KEEL_POLICY_BULKHEAD, err);
		keel__policy_add(p, KEEL__STAT(rejections));
		keel__policy_emit(p, KEEL_EV_REJECTED, x, out, 0, 0, 0);
		return;
	}
	keel__chain_next(next, x, out);
	give_back(b);
	keel__policy_count(p, x, out);
}

static void bulkhead_destroy(struct keel_policy *p)
{
	struct bulkhead *b = (struct bulkhead *)(void *)p;

	pthread_mutex_destroy(&b->mu);
	free(b);
}

static const struct keel_policy_ops bulkhead_ops = {
	KEEL_POLICY_BULKHEAD, bulkhead_execute, bulkhead_destroy
};

void keel_bulkhead_config_init(struct keel_bulkhead_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_concurrent = 10;
}

int keel_bulkhead_new(const struct keel_bulkhead_config *cfg,
		      struct keel_policy **out)
{
	struct bulkhead *b;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL || cfg->max_concurrent < 1 || cfg->max_wait < 0 ||
	    cfg->max_waiting < 0)
		return -EINVAL;
	b = keel__policy_alloc(sizeof(*b), 0, &bulkhead_ops, cfg->name, cfg->clock,
			      cfg->on_event, cfg->event_ud);
	if (b == NULL)
		return -ENOMEM;
	b->max_concurrent = cfg->max_concurrent;
	b->max_wait = cfg->max_wait;
	b->max_waiting = cfg->max_waiting;
	pthread_mutex_init(&b->mu, NULL);
	*out = &b->base;
	return 0;
}

int keel_bulkhead_in_flight(const struct keel_policy *p)
{
	struct bulkhead *b = to_bulkhead(p);

	return b != NULL ? __atomic_load_n(&b->in_flight, __ATOMIC_RELAXED)
			 : -EINVAL;
}

int keel_bulkhead_waiting(const struct keel_policy *p)
{
	struct bulkhead *b = to_bulkhead(p);

	return b != NULL ? __atomic_load_n(&b->waiting, __ATOMIC_RELAXED)
			 : -EINVAL;
}

int keel_bulkhead_try_acquire(struct keel_policy *p)
{
	struct bulkhead *b = to_bulkhead(p);

	if (b == NULL)
		return -EINVAL;
	return try_take(b) ? 0 : KEEL_EBULKHEAD_FULL;
}

int keel_bulkhead_acquire(struct keel_policy *p, struct keel_cancel *cancel)
{
	struct bulkhead *b = to_bulkhead(p);
	int err;

	if (b == NULL)
		return -EINVAL;
	if (try_take(b))
		return 0;
	if ((err = keel_cancel_err(cancel)) != 0)
		return err;
	return wait_slot(b, cancel, keel_cancel_deadline(cancel));
}

int keel_bulkhead_release(struct keel_policy *p)
{
	struct bulkhead *b = to_bulkhead(p);
	int n;

	if (b == NULL)
		return -EINVAL;
	/* Refuse to release a slot nobody holds: a negative count would let
	 * more than max_concurrent calls in for good. */
	n = __atomic_load_n(&b->in_flight, __ATOMIC_RELAXED);
	do {
		if (n <= 0)
			return -EINVAL;
	} while (!__atomic_compare_exchange_n(&b->in_flight, &n, n - 1, 1,
					      __ATOMIC_SEQ_CST,
					      __ATOMIC_RELAXED));
	if (__atomic_load_n(&b->waiting, __ATOMIC_SEQ_CST) > 0)
		grant(b);
	return 0;
}
