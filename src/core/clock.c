/*
 * src/core/clock.c - the system clock and the virtual clock for tests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <keel/cancel.h>
#include <keel/clock.h>

#include "internal.h"

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * KEEL_SEC + ts->tv_nsec;
}

static struct timespec ns_ts(int64_t ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / KEEL_SEC);
	ts.tv_nsec = (long)(ns % KEEL_SEC);
	return ts;
}

static int64_t sys_now(const struct keel_clock *c)
{
	struct timespec ts;

	(void)c;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts_ns(&ts);
}

/* Waits on the token's condition variable (CLOCK_MONOTONIC), so a cancel
 * wakes the wait at once. */
static int sys_wait_until(const struct keel_clock *c, int64_t deadline,
			  struct keel_cancel *cancel)
{
	int err;

	if (cancel == NULL) {
		struct timespec ts;

		if (deadline == KEEL_NEVER)
			return -EINVAL; /* would never return */
		ts = ns_ts(deadline);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts,
				       NULL) == EINTR)
			;
		return 0;
	}
	pthread_mutex_lock(&cancel->mu);
	for (;;) {
		int64_t now, until;
		struct timespec ts;

		if ((err = __atomic_load_n(&cancel->reason, __ATOMIC_ACQUIRE)))
			break;
		now = sys_now(c);
		until = deadline < cancel->deadline ? deadline : cancel->deadline;
		if (now >= until) {
			if (until == deadline) {
				err = 0;
				break;
			}
			pthread_mutex_unlock(&cancel->mu);
			keel_cancel_cancel(cancel, -ETIMEDOUT);
			return keel_cancel_err(cancel);
		}
		if (until == KEEL_NEVER) {
			pthread_cond_wait(&cancel->cv, &cancel->mu);
			continue;
		}
		ts = ns_ts(until);
		pthread_cond_timedwait(&cancel->cv, &cancel->mu, &ts);
	}
	pthread_mutex_unlock(&cancel->mu);
	return err;
}

static const struct keel_clock system_clock = { sys_now, sys_wait_until };

static int64_t coarse_now(const struct keel_clock *c)
{
	struct timespec ts;

	(void)c;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts_ns(&ts);
}

/* Waits are the system clock's: CLOCK_MONOTONIC_COARSE never runs ahead of
 * CLOCK_MONOTONIC, so a deadline taken from it is never late, only up to
 * one tick early. */
static const struct keel_clock coarse_clock = { coarse_now, sys_wait_until };

const struct keel_clock *keel_clock_system(void)
{
	return &system_clock;
}

const struct keel_clock *keel_clock_coarse(void)
{
	return &coarse_clock;
}

int64_t keel_clock_now(const struct keel_clock *c)
{
	if (c == NULL)
		c = &system_clock;
	return c->now(c);
}

int keel_clock_wait_until(const struct keel_clock *c, int64_t deadline,
			  struct keel_cancel *cancel)
{
	if (c == NULL)
		c = &system_clock;
	return c->wait_until(c, deadline, cancel);
}

int keel_clock_sleep(const struct keel_clock *c, int64_t ns,
		     struct keel_cancel *cancel)
{
	int64_t now = keel_clock_now(c);

	if (ns <= 0)
		return keel_cancel_err(cancel);
	return keel_clock_wait_until(c, ns > KEEL_NEVER - now ? KEEL_NEVER
							      : now + ns,
				     cancel);
}

/* ------------------------------------------------------------------------
 * Virtual clock
 * ------------------------------------------------------------------------ */

static int64_t v_now(const struct keel_clock *c)
{
	struct keel_vclock *vc = (struct keel_vclock *)(void *)c;
	int64_t t;

	pthread_mutex_lock(&vc->mu);
	t = vc->t;
	pthread_mutex_unlock(&vc->mu);
	return t;
}

static int v_wait_until(const struct keel_clock *c, int64_t deadline,
			struct keel_cancel *cancel)
{
	struct keel_vclock *vc = (struct keel_vclock *)(void *)c;
	int64_t tok = KEEL_NEVER, until, t;
	int err = 0;

	/* The token may run on this very clock, so nothing here may call
	 * keel_cancel_err (which reads the clock) while vc->mu is held. */
	pthread_mutex_lock(&vc->mu);
	vc->waits++;
	for (;;) {
		if (cancel != NULL) {
			err = __atomic_load_n(&cancel->reason, __ATOMIC_ACQUIRE);
			tok = keel_cancel_deadline(cancel);
		}
		if (err != 0)
			break;
		until = deadline < tok ? deadline : tok;
		if (vc->t >= until)
			break;
		if (vc->auto_advance && until != KEEL_NEVER) {
			vc->slept += until - vc->t;
			vc->t = until;
			pthread_cond_broadcast(&vc->cv);
			break;
		}
		/* Manual mode: another thread moves time. Poll the token every
		 * few real milliseconds, since a cancel does not signal vc->cv. */
		{
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts = ns_ts(ts_ns(&ts) + 5 * KEEL_MSEC);
			pthread_cond_timedwait(&vc->cv, &vc->mu, &ts);
		}
	}
	t = vc->t;
	pthread_mutex_unlock(&vc->mu);
	if (err != 0)
		return err;
	if (t >= deadline && deadline <= tok)
		return 0;
	/* The token's deadline came first. */
	keel_cancel_cancel(cancel, -ETIMEDOUT);
	return __atomic_load_n(&cancel->reason, __ATOMIC_ACQUIRE);
}

void keel_vclock_init(struct keel_vclock *vc, int64_t start)
{
	pthread_condattr_t attr;

	memset(vc, 0, sizeof(*vc));
	vc->clock.now = v_now;
	vc->clock.wait_until = v_wait_until;
	vc->t = start;
	vc->auto_advance = 1;
	pthread_mutex_init(&vc->mu, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&vc->cv, &attr);
	pthread_condattr_destroy(&attr);
}

void keel_vclock_destroy(struct keel_vclock *vc)
{
	pthread_cond_destroy(&vc->cv);
	pthread_mutex_destroy(&vc->mu);
}

void keel_vclock_advance(struct keel_vclock *vc, int64_t ns)
{
	pthread_mutex_lock(&vc->mu);
	vc->t += ns;
	pthread_cond_broadcast(&vc->cv);
	pthread_mutex_unlock(&vc->mu);
}

void keel_vclock_set_auto(struct keel_vclock *vc, int on)
{
	pthread_mutex_lock(&vc->mu);
	vc->auto_advance = on != 0;
	pthread_mutex_unlock(&vc->mu);
}

int64_t keel_vclock_slept(struct keel_vclock *vc)
{
	int64_t s;

	pthread_mutex_lock(&vc->mu);
	s = vc->slept;
	pthread_mutex_unlock(&vc->mu);
	return s;
}

unsigned keel_vclock_waits(struct keel_vclock *vc)
{
	unsigned w;

	pthread_mutex_lock(&vc->mu);
	w = vc->waits;
	pthread_mutex_unlock(&vc->mu);
	return w;
}
