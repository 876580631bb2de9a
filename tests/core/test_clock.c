/* KEEL_TEST_LABELS: threads */
/*
 * tests/core/test_clock.c - the system clock, the virtual clock and cancel
 * tokens: every wait ends at its deadline or at a cancel, whichever first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>

#include <keel.h>
#include "keel_test.h"

TEST(system_clock_moves_forward)
{
	const struct keel_clock *c = keel_clock_system();
	int64_t a = keel_clock_now(c), b;

	CHECK_INT(keel_clock_sleep(NULL, 2 * KEEL_MSEC, NULL), ==, 0);
	b = keel_clock_now(NULL);
	CHECK(b - a >= 2 * KEEL_MSEC);
}

TEST(vclock_auto_advance_jumps_to_deadline)
{
	struct keel_vclock vc;

	keel_vclock_init(&vc, 1000);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 1000);
	CHECK_INT(keel_clock_sleep(&vc.clock, 5 * KEEL_SEC, NULL), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 1000 + 5 * KEEL_SEC);
	CHECK_INT(keel_vclock_slept(&vc), ==, 5 * KEEL_SEC);
	CHECK_INT(keel_vclock_waits(&vc), ==, 1);
	/* A deadline in the past returns at once and moves nothing. */
	CHECK_INT(keel_clock_wait_until(&vc.clock, 0, NULL), ==, 0);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 1000 + 5 * KEEL_SEC);
	keel_vclock_advance(&vc, 7);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 1007 + 5 * KEEL_SEC);
	keel_vclock_destroy(&vc);
}

struct waiter {
	struct keel_vclock *vc;
	struct keel_cancel *cancel;
	int64_t until;
	int rc;
	int64_t woke_at;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;

	w->rc = keel_clock_wait_until(&w->vc->clock, w->until, w->cancel);
	w->woke_at = keel_clock_now(&w->vc->clock);
	return NULL;
}

TEST(vclock_manual_wait_ends_when_advanced)
{
	struct keel_vclock vc;
	struct waiter w;
	pthread_t th;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	w = (struct waiter){ &vc, NULL, 100, -1, 0 };
	CHECK_INT(pthread_create(&th, NULL, wait_thread, &w), ==, 0);
	keel_vclock_advance(&vc, 60); /* not enough */
	usleep(20000);
	keel_vclock_advance(&vc, 60);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(w.rc, ==, 0);
	CHECK(w.woke_at >= 100);
	keel_vclock_destroy(&vc);
}

TEST(cancel_wakes_a_manual_vclock_wait)
{
	struct keel_vclock vc;
	struct keel_cancel tok;
	struct waiter w;
	pthread_t th;

	keel_vclock_init(&vc, 0);
	keel_vclock_set_auto(&vc, 0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	w = (struct waiter){ &vc, &tok, KEEL_NEVER, 1, 0 };
	CHECK_INT(pthread_create(&th, NULL, wait_thread, &w), ==, 0);
	usleep(10000);
	keel_cancel_cancel(&tok, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(w.rc, ==, -ECANCELED);
	keel_cancel_destroy(&tok);
	keel_vclock_destroy(&vc);
}

TEST(token_deadline_on_vclock)
{
	struct keel_vclock vc;
	struct keel_cancel tok;

	keel_vclock_init(&vc, 0);
	keel_cancel_init(&tok, &vc.clock, NULL);
	keel_cancel_set_deadline(&tok, 50);
	CHECK_INT(keel_cancel_deadline(&tok), ==, 50);
	keel_cancel_set_deadline(&tok, 80); /* later: ignored */
	CHECK_INT(keel_cancel_deadline(&tok), ==, 50);
	CHECK_INT(keel_cancel_err(&tok), ==, 0);
	/* A wait past the token's deadline ends at it, timed out. */
	CHECK_INT(keel_clock_wait_until(&vc.clock, 1000, &tok), ==, -ETIMEDOUT);
	CHECK_INT(keel_clock_now(&vc.clock), ==, 50);
	CHECK_INT(keel_cancel_err(&tok), ==, -ETIMEDOUT);
	keel_cancel_destroy(&tok);
	keel_vclock_destroy(&vc);
}

TEST(cancel_is_once_and_reaches_children)
{
	struct keel_cancel *parent = keel_cancel_new(NULL, NULL);
	struct keel_cancel *child = keel_cancel_new(NULL, parent);
	struct keel_cancel *grandchild = keel_cancel_new(NULL, child);

	CHECK(parent && child && grandchild);
	CHECK_INT(keel_cancel_err(NULL), ==, 0);
	keel_cancel_set_deadline(parent, keel_clock_now(NULL) + 3600 * KEEL_SEC);
	CHECK_INT(keel_cancel_deadline(grandchild), ==, keel_cancel_deadline(parent));
	keel_cancel_cancel(child, -EPIPE);
	CHECK_INT(keel_cancel_err(child), ==, -EPIPE);
	CHECK_INT(keel_cancel_err(grandchild), ==, -EPIPE);
	CHECK_INT(keel_cancel_err(parent), ==, 0);
	keel_cancel_cancel(parent, 0);
	CHECK_INT(keel_cancel_err(parent), ==, -ECANCELED);
	CHECK_INT(keel_cancel_err(child), ==, -EPIPE); /* first reason stays */
	keel_cancel_free(grandchild);
	keel_cancel_free(child);
	keel_cancel_free(parent);
	keel_test_leak_check();
}

struct sys_waiter {
	struct keel_cancel *tok;
	int rc;
	double took;
};

static void *sys_wait_thread(void *arg)
{
	struct sys_waiter *w = arg;
	double t0 = keel_test_now();

	w->rc = keel_clock_sleep(NULL, 60 * KEEL_SEC, w->tok);
	w->took = keel_test_now() - t0;
	return NULL;
}

TEST(cancel_wakes_a_system_clock_wait_at_once)
{
	struct keel_cancel tok;
	struct sys_waiter w;
	pthread_t th;

	keel_cancel_init(&tok, NULL, NULL);
	w.tok = &tok;
	CHECK_INT(pthread_create(&th, NULL, sys_wait_thread, &w), ==, 0);
	usleep(20000);
	keel_cancel_cancel(&tok, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(w.rc, ==, -ECANCELED);
	CHECK(w.took < 30.0); /* not the 60 s it asked for */
	keel_cancel_destroy(&tok);
}

TEST(system_token_deadline_times_out)
{
	struct keel_cancel tok;

	keel_cancel_init(&tok, NULL, NULL);
	keel_cancel_set_deadline(&tok, keel_clock_now(NULL) + 5 * KEEL_MSEC);
	CHECK_INT(keel_clock_sleep(NULL, 60 * KEEL_SEC, &tok), ==, -ETIMEDOUT);
	CHECK_INT(keel_cancel_err(&tok), ==, -ETIMEDOUT);
	keel_cancel_destroy(&tok);
}
