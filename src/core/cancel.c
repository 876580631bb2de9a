/*
 * src/core/cancel.c - cancel tokens.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <keel/cancel.h>

#include "internal.h"

void keel_cancel_init(struct keel_cancel *c, const struct keel_clock *clock,
		      struct keel_cancel *parent)
{
	pthread_condattr_t attr;

	memset(c, 0, sizeof(*c));
	c->clock = clock != NULL ? clock : keel_clock_system();
	c->deadline = KEEL_NEVER;
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &attr);
	pthread_condattr_destroy(&attr);
	if (parent == NULL)
		return;
	c->parent = parent;
	pthread_mutex_lock(&parent->mu);
	c->deadline = parent->deadline;
	c->reason = parent->reason;
	c->sibling = parent->children;
	parent->children = c;
	pthread_mutex_unlock(&parent->mu);
}

struct keel_cancel *keel_cancel_new(const struct keel_clock *clock,
				    struct keel_cancel *parent)
{
	struct keel_cancel *c = malloc(sizeof(*c));

	if (c == NULL)
		return NULL;
	keel_cancel_init(c, clock, parent);
	c->heap = 1;
	return c;
}

void keel_cancel_destroy(struct keel_cancel *c)
{
	if (c == NULL)
		return;
	if (c->parent != NULL) {
		struct keel_cancel **pp;

		pthread_mutex_lock(&c->parent->mu);
		for (pp = &c->parent->children; *pp != NULL; pp = &(*pp)->sibling)
			if (*pp == c) {
				*pp = c->sibling;
				break;
			}
		pthread_mutex_unlock(&c->parent->mu);
	}
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
}

void keel_cancel_free(struct keel_cancel *c)
{
	if (c == NULL)
		return;
	keel_cancel_destroy(c);
	if (c->heap)
		free(c);
}

void keel_cancel_cancel(struct keel_cancel *c, int reason)
{
	struct keel_cancel *child;

	if (c == NULL)
		return;
	if (reason == 0)
		reason = -ECANCELED;
	pthread_mutex_lock(&c->mu);
	if (c->reason != 0) {
		pthread_mutex_unlock(&c->mu);
		return;
	}
	__atomic_store_n(&c->reason, reason, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&c->cv);
	/* Children are only unlinked under this lock, so the list is stable. */
	for (child = c->children; child != NULL; child = child->sibling)
		keel_cancel_cancel(child, reason);
	pthread_mutex_unlock(&c->mu);
}

int keel_cancel_err(struct keel_cancel *c)
{
	int r;

	if (c == NULL)
		return 0;
	r = __atomic_load_n(&c->reason, __ATOMIC_ACQUIRE);
	if (r != 0)
		return r;
	if (c->deadline != KEEL_NEVER &&
	    c->clock->now(c->clock) >= __atomic_load_n(&c->deadline,
						       __ATOMIC_RELAXED)) {
		keel_cancel_cancel(c, -ETIMEDOUT);
		return __atomic_load_n(&c->reason, __ATOMIC_ACQUIRE);
	}
	return 0;
}

void keel_cancel_set_deadline(struct keel_cancel *c, int64_t deadline)
{
	struct keel_cancel *child;

	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	if (deadline < c->deadline) {
		__atomic_store_n(&c->deadline, deadline, __ATOMIC_RELAXED);
		pthread_cond_broadcast(&c->cv); /* waits recompute their end */
		for (child = c->children; child != NULL; child = child->sibling)
			keel_cancel_set_deadline(child, deadline);
	}
	pthread_mutex_unlock(&c->mu);
}

int64_t keel_cancel_deadline(const struct keel_cancel *c)
{
	return c != NULL ? __atomic_load_n(&c->deadline, __ATOMIC_RELAXED)
			 : KEEL_NEVER;
}
