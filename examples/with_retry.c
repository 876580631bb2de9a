/*
 * examples/with_retry.c - the design notes' withRetry wrapper (chapter 3.2),
 * in C: run a call up to N times with a growing delay, where a crash in the
 * call is a failure like any other.
 *
 * The flaky "service" below refuses the first connection, dereferences a
 * NULL pointer on the second try (a real SIGSEGV), and answers on the third.
 * withRetry turns all of that into one successful call, after running the
 * call's own deferred cleanup every time.
 *
 * Exits 0 when the call succeeded on the third attempt with two retries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <keel.h>
#include <keel/retry.h>

const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allow_user_segv_handler=1";
}

struct conn {
	int open;
	const char *answer;
};

static struct conn *volatile broken_conn; /* NULL: the bug */
static int calls, closed;

static void close_conn(void *arg)
{
	struct conn *c = arg;

	c->open = 0;
	closed++;
}

__attribute__((noinline, no_sanitize("undefined")))
static const char *read_answer(struct conn *c)
{
	return c->answer;
}

/* The protected call: one attempt to fetch a greeting. */
static int fetch_greeting(struct keel_exec *x, void *arg)
{
	static struct conn conn = { 0, "hello from the service" };
	struct conn *c = &conn;

	(void)arg;
	calls++;
	conn.open = 1;
	keel_defer(close_conn, &conn); /* released on every path */
	printf("  attempt %d: ", x->attempt);
	switch (calls) {
	case 1:
		printf("connection refused\n");
		return -ECONNREFUSED;
	case 2:
		printf("dereferencing a NULL connection...\n");
		c = broken_conn;
		break;
	default:
		printf("ok\n");
		break;
	}
	x->result = (void *)read_answer(c);
	return 0;
}

static void on_retry(int attempt, int64_t delay, const struct keel_outcome *o,
		     void *ud)
{
	(void)ud;
	printf("  retry after attempt %d (%s%s%s), waiting %lld ms\n", attempt,
	       o->panicked ? "panic: " : "", o->panicked ? o->panic_msg : "",
	       o->panicked ? "" : keel_strerror(o->code),
	       (long long)(delay / KEEL_MSEC));
}

/*
 * with_retry - the seed's withRetry(fn, retries, delay): up to `attempts`
 * attempts, the delay doubling after each failure. The policy is built once
 * and can be shared by every caller and thread.
 */
static struct keel_policy *with_retry(int attempts, int64_t delay)
{
	struct keel_retry_config cfg;
	struct keel_policy *p;

	keel_retry_config_init(&cfg);
	cfg.name = "withRetry";
	cfg.max_attempts = attempts;
	cfg.backoff.kind = KEEL_BACKOFF_EXPONENTIAL;
	cfg.backoff.initial = delay;
	cfg.backoff.multiplier = 2;
	cfg.backoff.jitter = KEEL_JITTER_NONE;
	cfg.on_retry = on_retry;
	if (keel_retry_new(&cfg, &p) != 0)
		return NULL;
	return p;
}

int main(void)
{
	struct keel_policy *retry = with_retry(3, 10 * KEEL_MSEC);
	struct keel_outcome out;
	int ok;

	if (retry == NULL)
		return 1;
	puts("withRetry(fetch_greeting, 3 attempts, 10 ms doubling):");
	keel_policy_execute(retry, fetch_greeting, NULL, NULL, &out);
	if (out.code == 0)
		printf("result: \"%s\" after %d attempts\n",
		       (const char *)out.result, out.attempts);
	else
		printf("failed: %s after %d attempts\n", keel_strerror(out.code),
		       out.attempts);
	printf("connection closed %d times, open now: %s\n", closed,
	       calls > 0 ? "no" : "?");
	ok = out.code == 0 && out.attempts == 3 && closed == 3 &&
	     strcmp(out.result, "hello from the service") == 0;
	keel_policy_free(retry);
	return ok ? 0 : 1;
}
