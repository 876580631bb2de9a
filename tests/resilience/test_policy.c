/*
 * tests/resilience/test_policy.c - what every policy shares: a panic or a
 * fault in the protected call is an ordinary failure, with the call's own
 * deferred cleanups run; results and server delays travel out; counters and
 * events.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>

#include <keel.h>
#include <keel/fallback.h>
#include <keel/timeout.h>
#include "keel_test.h"

static int *volatile nil_ptr;
static int cleaned;

static void cleanup(void *arg)
{
	(void)arg;
	cleaned++;
}

static int op_ok(struct keel_exec *x, void *arg)
{
	x->result = arg;
	return 0;
}

static int op_fail(struct keel_exec *x, void *arg)
{
	x->retry_after = 3 * KEEL_SEC;
	return (int)(intptr_t)arg;
}

static int op_panic(struct keel_exec *x, void *arg)
{
	(void)x;
	keel_defer(cleanup, NULL);
	keel_panic(arg);
}

KEEL_TEST_NO_SANITIZE static int op_fault(struct keel_exec *x, void *arg)
{
	(void)x;
	(void)arg;
	keel_defer(cleanup, NULL);
	return *nil_ptr;
}

static struct keel_policy *plain_timeout(void)
{
	struct keel_timeout_config cfg;
	struct keel_policy *p;

	keel_timeout_config_init(&cfg);
	cfg.timeout = 3600 * KEEL_SEC; /* never fires: a pass-through policy */
	CHECK_INT(keel_timeout_new(&cfg, &p), ==, 0);
	return p;
}

TEST(success_carries_result)
{
	struct keel_policy *p = plain_timeout();
	struct keel_outcome o;
	int value = 42;

	CHECK_INT(keel_policy_execute(p, op_ok, &value, NULL, &o), ==, 0);
	CHECK(o.result == &value);
	CHECK_INT(o.attempts, ==, 1);
	CHECK_INT(o.panicked, ==, 0);
	CHECK_INT(o.decided_by, ==, KEEL_POLICY_NONE);
	keel_policy_free(p);
}

TEST(failure_carries_code_and_retry_after)
{
	struct keel_policy *p = plain_timeout();
	struct keel_outcome o;

	CHECK_INT(keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, &o),
		  ==, -EIO);
	CHECK_INT(o.retry_after, ==, 3 * KEEL_SEC);
	CHECK_INT(o.panicked, ==, 0);
	keel_policy_free(p);
}

TEST(panic_is_an_ordinary_failure)
{
	struct keel_policy *p = plain_timeout();
	struct keel_policy_stats st;
	struct keel_outcome o;

	cleaned = 0;
	CHECK_INT(keel_policy_execute(p, op_panic, "db exploded", NULL, &o), ==,
		  KEEL_EPANIC);
	CHECK_INT(o.panicked, ==, 1);
	CHECK_INT(o.panic_kind, ==, KEEL_PANIC_MESSAGE);
	CHECK_STR(o.panic_msg, "db exploded");
	CHECK_INT(cleaned, ==, 1);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 1);
	CHECK_INT(st.panics, ==, 1);
	CHECK_INT(st.failures, ==, 0);
	keel_policy_free(p);
}

TEST(fault_is_an_ordinary_failure)
{
	struct keel_policy *p = plain_timeout();
	struct keel_outcome o;
	int i;

	cleaned = 0;
	for (i = 0; i < 100; i++) {
		CHECK_INT(keel_policy_execute(p, op_fault, NULL, NULL, &o), ==,
			  KEEL_EPANIC);
		CHECK_INT(o.panic_kind, ==, KEEL_PANIC_NIL_DEREF);
		CHECK_STR(o.panic_msg, "runtime error: invalid memory address "
				       "or nil pointer dereference");
	}
	CHECK_INT(cleaned, ==, 100);
	keel_policy_free(p);
}

TEST(long_panic_message_is_truncated_not_overrun)
{
	struct keel_policy *p = plain_timeout();
	struct keel_outcome o;
	char msg[1000];

	memset(msg, 'x', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	keel_policy_execute(p, op_panic, msg, NULL, &o);
	CHECK_INT(strlen(o.panic_msg), ==, KEEL_OUTCOME_MSG - 1);
	keel_policy_free(p);
}

static int events[KEEL_EV__COUNT];

static void count_events(const struct keel_event *ev, void *ud)
{
	(void)ud;
	events[ev->type]++;
}

TEST(events_and_names)
{
	struct keel_policy *p = plain_timeout();

	keel_policy_on_event(p, count_events, NULL);
	keel_policy_execute(p, op_ok, NULL, NULL, NULL);
	keel_policy_execute(p, op_fail, (void *)(intptr_t)-EIO, NULL, NULL);
	keel_policy_execute(p, op_panic, "x", NULL, NULL);
	CHECK_INT(events[KEEL_EV_SUCCESS], ==, 1);
	CHECK_INT(events[KEEL_EV_FAILURE], ==, 1);
	CHECK_INT(events[KEEL_EV_PANIC], ==, 1);
	CHECK_STR(keel_policy_name(p), "timeout");
	CHECK_INT(keel_policy_kind(p), ==, KEEL_POLICY_TIMEOUT);
	CHECK_STR(keel_policy_kind_name(KEEL_POLICY_BREAKER), "breaker");
	CHECK_STR(keel_event_type_name(KEEL_EV_REJECTED), "rejected");
	CHECK_STR(keel_event_type_name((enum keel_event_type)99), "unknown");
	CHECK_STR(keel_strerror(KEEL_EBREAKER_OPEN), "circuit breaker open");
	keel_policy_free(p);
}

TEST(cancelled_token_means_no_call)
{
	struct keel_policy *p = plain_timeout();
	struct keel_policy_stats st;
	struct keel_cancel tok;
	struct keel_outcome o;

	keel_cancel_init(&tok, NULL, NULL);
	keel_cancel_cancel(&tok, 0);
	CHECK_INT(keel_policy_execute(p, op_ok, NULL, &tok, &o), ==, -ECANCELED);
	CHECK_INT(o.attempts, ==, 0);
	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, 0);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}

/* The call polls its token between steps and stops when it is cancelled. */
static int op_cancel_midway(struct keel_exec *x, void *arg)
{
	int step;

	for (step = 0; step < 10; step++) {
		if (step == 3)
			keel_cancel_cancel(arg, 0); /* another thread would */
		if (keel_exec_expired(x))
			return keel_cancel_err(x->cancel);
	}
	return 0;
}

TEST(call_sees_cancel_through_exec)
{
	struct keel_policy *p = plain_timeout();
	struct keel_cancel tok;
	struct keel_outcome o;

	keel_cancel_init(&tok, NULL, NULL);
	CHECK_INT(keel_policy_execute(p, op_cancel_midway, &tok, &tok, &o), ==,
		  -ECANCELED);
	CHECK_INT(o.attempts, ==, 1);
	keel_cancel_destroy(&tok);
	keel_policy_free(p);
}
