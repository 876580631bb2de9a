/* KEEL_TEST_LABELS: threads */
/*
 * tests/runtime/test_group.c - task groups: wait for all, first failure
 * cancels the rest, panics become failures or are re-raised in the waiter.
 *
 * Tasks that wait for cancellation loop on keel_cancel_err with a short
 * sleep and give up after 10 s, so a group that fails to cancel them fails
 * the case (by its timing check) instead of hanging it.
 */
#define _GNU_SOURCE
#include <keel.h>
#include <keel/go.h>
#include <keel/group.h>
#include "keel_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>

#define NIL_MSG "runtime error: invalid memory address or nil pointer dereference"
#define DIV_MSG "runtime error: integer divide by zero"

static int *volatile nil_int;
static volatile int vzero, vone = 1;
static volatile int vsink;

void group_nil_site(void);
void group_divide_site(void);

KEEL_TEST_NO_SANITIZE void group_nil_site(void)
{
	vsink = *nil_int;
}

KEEL_TEST_NO_SANITIZE void group_divide_site(void)
{
	vsink = vone / vzero;
}

static struct keel_group *new_group(const char *name, int limit,
				    struct keel_cancel *parent)
{
	struct keel_group_config cfg;
	struct keel_group *g = NULL;

	keel_group_config_init(&cfg);
	cfg.name = name;
	cfg.limit = limit;
	cfg.parent = parent;
	CHECK_INT(keel_group_new(&cfg, &g), ==, 0);
	CHECK(g != NULL);
	return g;
}

/* Loops until the token is cancelled; returns its reason (or 0 after 10 s,
 * which the callers' timing checks turn into a failure). */
static int until_cancelled(struct keel_cancel *cancel)
{
	double t0 = keel_test_now();
	int rc;

	while ((rc = keel_cancel_err(cancel)) == 0 && keel_test_now() - t0 < 10)
		usleep(500);
	return rc;
}

/* ------------------------------------------------------------------------
 * Success
 * ------------------------------------------------------------------------ */

#define NTASKS 10

struct named {
	atomic_int ran;
	char names[32][16];
	atomic_int next;
};

static int name_task(struct keel_cancel *cancel, void *arg)
{
	struct named *n = arg;
	int i = atomic_fetch_add(&n->next, 1);
	char buf[16];

	CHECK(cancel != NULL);
	CHECK_INT(keel_cancel_err(cancel), ==, 0);
	CHECK_INT(pthread_getname_np(pthread_self(), buf, sizeof(buf)), ==, 0);
	memcpy(n->names[i], buf, sizeof(buf));
	atomic_fetch_add(&n->ran, 1);
	return 0;
}

static int has_name(struct named *n, const char *name)
{
	int i;

	for (i = 0; i < atomic_load(&n->next); i++)
		if (strcmp(n->names[i], name) == 0)
			return 1;
	return 0;
}

TEST(all_succeed)
{
	struct keel_group *g = new_group("grp", 0, NULL);
	struct keel_error *err = (struct keel_error *)&err; /* must be reset */
	struct named n;
	char want[16];
	int i;

	memset(&n, 0, sizeof(n));
	for (i = 0; i < NTASKS; i++)
		CHECK_INT(keel_group_go(g, name_task, &n), ==, 0);
	CHECK_INT(keel_group_wait(g, &err), ==, 0);
	CHECK(err == NULL);
	CHECK_INT(atomic_load(&n.ran), ==, NTASKS);
	/* Thread names "<name>-<n>", n = 0, 1, ... in the order added. */
	for (i = 0; i < NTASKS; i++) {
		snprintf(want, sizeof(want), "grp-%d", i);
		CHECK(has_name(&n, want));
	}
	CHECK_INT(keel_group_panic_stack(g, NULL), ==, 0);
	CHECK_INT(keel_cancel_err(keel_group_token(g)), ==, 0);
	CHECK_INT(keel_group_wait_or_panic(g), ==, 0);
	keel_group_free(g);
	keel_test_leak_check();
}

TEST(empty_group_and_defaults)
{
	struct keel_group_config cfg;
	struct keel_group *g = NULL;
	struct keel_error *err;
	struct named n;
	void *const *frames = (void *const *)&frames;

	keel_group_config_init(&cfg);
	CHECK_STR(cfg.name, "group");
	CHECK_INT(cfg.limit, ==, 0);
	CHECK(cfg.parent == NULL);
	CHECK(cfg.clock == NULL);

	CHECK_INT(keel_group_new(NULL, &g), ==, 0);
	CHECK_INT(keel_group_wait(g, &err), ==, 0);
	CHECK(err == NULL);
	CHECK_INT(keel_group_panic_stack(g, &frames), ==, 0);
	CHECK(frames == NULL);
	keel_group_free(g);

	/* Default name. */
	memset(&n, 0, sizeof(n));
	CHECK_INT(keel_group_new(NULL, &g), ==, 0);
	CHECK_INT(keel_group_go(g, name_task, &n), ==, 0);
	CHECK_INT(keel_group_wait(g, NULL), ==, 0);
	CHECK_STR(n.names[0], "group-0");
	keel_group_free(g);

	keel_group_free(NULL);
	keel_test_leak_check();
}

TEST(bad_arguments)
{
	struct keel_group_config cfg;
	struct keel_group *g = (struct keel_group *)&g;

	keel_group_config_init(&cfg);
	cfg.limit = -1;
	CHECK_INT(keel_group_new(&cfg, &g), ==, -EINVAL);
	CHECK(g == NULL);
	CHECK_INT(keel_group_new(NULL, NULL), ==, -EINVAL);

	g = new_group("bad", 0, NULL);
	CHECK_INT(keel_group_go(g, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_group_go(NULL, name_task, NULL), ==, -EINVAL);
	CHECK_INT(keel_group_wait(NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_group_wait(g, NULL), ==, 0);
	keel_group_free(g);
}

/* A long name is cut, never the task number. */
TEST(long_group_name_keeps_the_number)
{
	struct keel_group *g = new_group("a-very-long-group-name", 0, NULL);
	struct named n;
	int i;

	memset(&n, 0, sizeof(n));
	for (i = 0; i < 12; i++)
		CHECK_INT(keel_group_go(g, name_task, &n), ==, 0);
	CHECK_INT(keel_group_wait(g, NULL), ==, 0);
	CHECK(has_name(&n, "a-very-long-g-0"));
	CHECK(has_name(&n, "a-very-long-g-9"));
	CHECK(has_name(&n, "a-very-long--10"));
	CHECK(has_name(&n, "a-very-long--11"));
	keel_group_free(g);
}

/* ------------------------------------------------------------------------
 * The first failure cancels the rest
 * ------------------------------------------------------------------------ */

struct fail_ctx {
	int code;                /* what the failing task returns */
	int delay_us;            /* before it fails */
	atomic_int saw_cancel;   /* waiting tasks that saw -ECANCELED */
	atomic_int deferred;     /* deferred calls of panicking tasks that ran */
	atomic_int waiters;
};

static int fail_task(struct keel_cancel *cancel, void *arg)
{
	struct fail_ctx *c = arg;

	(void)cancel;
	usleep((useconds_t)c->delay_us);
	return c->code;
}

static int waiting_task(struct keel_cancel *cancel, void *arg)
{
	struct fail_ctx *c = arg;
	int rc;

	atomic_fetch_add(&c->waiters, 1);
	rc = until_cancelled(cancel);
	if (rc == -ECANCELED)
		atomic_fetch_add(&c->saw_cancel, 1);
	return rc;
}

TEST(first_error_cancels_the_others)
{
	struct keel_group *g = new_group("errs", 0, NULL);
	struct keel_error *err = NULL;
	struct fail_ctx c;
	double t0;
	int i;

	memset(&c, 0, sizeof(c));
	c.code = -EIO;
	c.delay_us = 20000;
	t0 = keel_test_now();
	for (i = 0; i < 5; i++)
		CHECK_INT(keel_group_go(g, waiting_task, &c), ==, 0);
	CHECK_INT(keel_group_go(g, fail_task, &c), ==, 0);
	CHECK_INT(keel_group_wait(g, &err), ==, -EIO);
	CHECK_INT(keel_test_now() - t0, <, 5);
	CHECK_INT(atomic_load(&c.saw_cancel), ==, 5);
	CHECK_INT(keel_error_code(err), ==, -EIO);
	CHECK_STR(keel_error_message(err), keel_strerror(-EIO));
	CHECK_INT(keel_error_panic_kind(err), ==, -1);
	CHECK_INT(keel_cancel_err(keel_group_token(g)), ==, -ECANCELED);
	CHECK_INT(keel_group_panic_stack(g, NULL), ==, 0);
	/* No panic: wait_or_panic is wait. */
	CHECK_INT(keel_group_wait_or_panic(g), ==, -EIO);
	keel_error_free(err);
	keel_group_free(g);
	keel_test_leak_check();
}

/* Any non-zero return is a failure, with keel_strerror's text. */
TEST(own_error_codes)
{
	struct keel_group *g = new_group("own", 0, NULL);
	struct keel_error *err = NULL;
	struct fail_ctx c;

	memset(&c, 0, sizeof(c));
	c.code = KEEL_EBREAKER_OPEN;
	CHECK_INT(keel_group_go(g, fail_task, &c), ==, 0);
	CHECK_INT(keel_group_wait(g, &err), ==, KEEL_EBREAKER_OPEN);
	CHECK_STR(keel_error_message(err), "circuit breaker open");
	keel_error_free(err);
	keel_group_free(g);
}

/* Wait may be called again: the same code, and an error each time. */
TEST(wait_twice)
{
	struct keel_group *g = new_group("twice", 0, NULL);
	struct keel_error *e1 = NULL, *e2 = NULL;
	struct fail_ctx c;

	memset(&c, 0, sizeof(c));
	c.code = -EPIPE;
	CHECK_INT(keel_group_go(g, fail_task, &c), ==, 0);
	CHECK_INT(keel_group_wait(g, &e1), ==, -EPIPE);
	CHECK_INT(keel_group_wait(g, &e2), ==, -EPIPE);
	CHECK(e1 != NULL && e2 != NULL && e1 != e2);
	CHECK_INT(keel_error_code(e2), ==, -EPIPE);
	CHECK_STR(keel_error_message(e2), keel_error_message(e1));
	keel_error_free(e1);
	keel_error_free(e2);
	keel_group_free(g);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Panics and faults in tasks
 * ------------------------------------------------------------------------ */

static void mark_deferred(void *arg)
{
	atomic_fetch_add(&((struct fail_ctx *)arg)->deferred, 1);
}

static int panic_task(struct keel_cancel *cancel, void *arg)
{
	(void)cancel;
	keel_defer(mark_deferred, arg);
	usleep(10000);
	keel_panic("task exploded");
	return 0;
}

static int nil_task(struct keel_cancel *cancel, void *arg)
{
	(void)cancel;
	keel_defer(mark_deferred, arg);
	group_nil_site();
	return 0;
}

static int divide_task(struct keel_cancel *cancel, void *arg)
{
	(void)cancel;
	keel_defer(mark_deferred, arg);
	group_divide_site();
	return 0;
}

static void check_panic_failure(keel_group_fn fn, const char *msg,
				enum keel_panic_kind kind, int signo)
{
	struct keel_group *g = new_group("panics", 0, NULL);
	struct keel_error *err = NULL;
	void *const *frames = NULL;
	struct fail_ctx c;
	size_t n, i;
	int k;

	memset(&c, 0, sizeof(c));
	for (k = 0; k < 3; k++)
		CHECK_INT(keel_group_go(g, waiting_task, &c), ==, 0);
	CHECK_INT(keel_group_go(g, fn, &c), ==, 0);
	CHECK_INT(keel_group_wait(g, &err), ==, KEEL_EPANIC);
	CHECK_INT(keel_error_code(err), ==, KEEL_EPANIC);
	CHECK_STR(keel_error_message(err), msg);
	CHECK_INT(keel_error_panic_kind(err), ==, (int)kind);
	CHECK_INT(keel_error_signo(err), ==, signo);
	CHECK_INT(atomic_load(&c.deferred), ==, 1);
	CHECK_INT(atomic_load(&c.saw_cancel), ==, 3);
	n = keel_group_panic_stack(g, &frames);
	CHECK_INT(n, >, 0);
	CHECK(frames != NULL);
	for (i = 0; i < n; i++)
		CHECK(frames[i] != NULL);
	keel_error_free(err);
	keel_group_free(g);
	keel_test_leak_check();
}

TEST(panicking_task_is_the_failure)
{
	check_panic_failure(panic_task, "task exploded", KEEL_PANIC_MESSAGE, 0);
}

TEST(nil_dereference_in_task)
{
	check_panic_failure(nil_task, NIL_MSG, KEEL_PANIC_NIL_DEREF, SIGSEGV);
}

TEST(divide_by_zero_in_task)
{
	check_panic_failure(divide_task, DIV_MSG, KEEL_PANIC_DIVIDE, SIGFPE);
}

/* ------------------------------------------------------------------------
 * wait_or_panic: the task's panic again, in the waiter
 * ------------------------------------------------------------------------ */

struct reraised {
	struct keel_group *g;
	int rc;
	int returned;
	int caught;
	char msg[160];
	enum keel_panic_kind kind;
	int runtime;
	int err_code;      /* of the error a KEEL_PANIC_ERROR panic carries */
	int err_is_eio;
	char err_text[160];
};

static void catch_reraised(void *arg)
{
	struct reraised *r = arg;
	const struct keel_panic *p = keel_recover();
	const struct keel_error *e;

	if (p == NULL)
		return;
	r->caught = 1;
	snprintf(r->msg, sizeof(r->msg), "%s", keel_panic_message(p));
	r->kind = keel_panic_kind(p);
	r->runtime = keel_panic_is_runtime(p);
	e = keel_panic_error_value(p);
	r->err_code = keel_error_code(e);
	r->err_is_eio = keel_error_is(e, -EIO);
	keel_error_format(e, r->err_text, sizeof(r->err_text));
}

static void wait_or_panic_fn(void *arg)
{
	struct reraised *r = arg;

	keel_defer(catch_reraised, r);
	r->rc = keel_group_wait_or_panic(r->g);
	r->returned = 1;
}

static int ok_task(struct keel_cancel *cancel, void *arg)
{
	(void)cancel;
	(void)arg;
	return 0;
}

static int error_panic_task(struct keel_cancel *cancel, void *arg)
{
	(void)cancel;
	(void)arg;
	keel_panic_error(keel_error_new(-EIO, "disk gone"));
	return 0;
}

/* Runs ok tasks 0 .. idx-1 and then fn as task idx, and recovers what
 * wait_or_panic raises. */
static void reraise_case(keel_group_fn fn, int idx, struct reraised *r)
{
	struct fail_ctx c;
	int i;

	memset(r, 0, sizeof(*r));
	memset(&c, 0, sizeof(c));
	r->g = new_group("reraise", 0, NULL);
	for (i = 0; i < idx; i++)
		CHECK_INT(keel_group_go(r->g, ok_task, NULL), ==, 0);
	CHECK_INT(keel_group_go(r->g, fn, &c), ==, 0);
	CHECK_INT(keel_call(wait_or_panic_fn, r), ==, 1);
	CHECK_INT(r->caught, ==, 1);
	CHECK_INT(r->returned, ==, 0);
	/* The task's stack is still there for a report. */
	CHECK_INT(keel_group_panic_stack(r->g, NULL), >, 0);
	keel_group_free(r->g);
}

TEST(wait_or_panic_reraises_message)
{
	struct reraised r;

	reraise_case(panic_task, 2, &r);
	CHECK_STR(r.msg, "task exploded [task 2]");
	CHECK_INT(r.kind, ==, KEEL_PANIC_MESSAGE);
	CHECK_INT(r.runtime, ==, 0);
	keel_test_leak_check();
}

TEST(wait_or_panic_reraises_fault_kind)
{
	struct reraised r;

	reraise_case(nil_task, 0, &r);
	CHECK_STR(r.msg, NIL_MSG " [task 0]");
	CHECK_INT(r.kind, ==, KEEL_PANIC_NIL_DEREF);
	CHECK_INT(r.runtime, ==, 1);

	reraise_case(divide_task, 1, &r);
	CHECK_STR(r.msg, DIV_MSG " [task 1]");
	CHECK_INT(r.kind, ==, KEEL_PANIC_DIVIDE);
	keel_test_leak_check();
}

TEST(wait_or_panic_reraises_error_panic)
{
	struct reraised r;

	reraise_case(error_panic_task, 3, &r);
	CHECK_STR(r.msg, "disk gone [task 3]");
	CHECK_INT(r.kind, ==, KEEL_PANIC_ERROR);
	/* The error value keeps the task's code and text. */
	CHECK_INT(r.err_code, ==, -EIO);
	CHECK_INT(r.err_is_eio, ==, 1);
	CHECK_STR(r.err_text, "disk gone [task 3]: disk gone");
	keel_test_leak_check();
}

static int late_panic_task(struct keel_cancel *cancel, void *arg)
{
	(void)arg;
	(void)until_cancelled(cancel);
	keel_panic("late panic");
	return 0;
}

/* An error came first, so wait reports it; but a panic is a bug and is
 * never hidden: wait_or_panic raises it all the same. */
TEST(panic_after_error_still_reraised)
{
	struct keel_error *err = NULL;
	struct reraised r;
	struct fail_ctx c;

	memset(&r, 0, sizeof(r));
	memset(&c, 0, sizeof(c));
	c.code = -EIO;
	r.g = new_group("late", 0, NULL);
	CHECK_INT(keel_group_go(r.g, late_panic_task, NULL), ==, 0);
	CHECK_INT(keel_group_go(r.g, fail_task, &c), ==, 0);
	CHECK_INT(keel_group_wait(r.g, &err), ==, -EIO);
	CHECK_INT(keel_error_code(err), ==, -EIO);
	CHECK_INT(keel_group_panic_stack(r.g, NULL), >, 0);
	CHECK_INT(keel_call(wait_or_panic_fn, &r), ==, 1);
	CHECK_STR(r.msg, "late panic [task 0]");
	keel_error_free(err);
	keel_group_free(r.g);
	keel_test_leak_check();
}

static int panic_task_nodefer(struct keel_cancel *cancel, void *arg)
{
	(void)cancel;
	(void)arg;
	keel_panic("task exploded");
	return 0;
}

static void unrecovered_reraise_child(void *arg)
{
	struct keel_group *g;

	(void)arg;
	keel_thread_set_name("the-waiter");
	g = new_group("child", 0, NULL);
	(void)keel_group_go(g, ok_task, NULL);
	(void)keel_group_go(g, panic_task_nodefer, NULL);
	KEEL_SCOPE {
		keel_group_wait_or_panic(g);
	}
	printf("survived\n");
}

/* Not recovered in the waiter: the process crashes as if the waiter had
 * panicked itself, and the report names the waiter and the task. */
TEST(wait_or_panic_unrecovered_crashes)
{
	struct keel_child ch;

	keel_test_run_child(unrecovered_reraise_child, NULL, &ch);
	if (!ch.exited || ch.code != 2)
		KEEL_TEST_FAIL("child: exited %d, code %d, signal %d, output:\n%s",
			       ch.exited, ch.code, ch.signo, ch.out);
	CHECK(strstr(ch.out, "survived") == NULL);
	CHECK_CONTAINS(ch.out, "panic: task exploded [task 1]\n\nthread ");
	CHECK_CONTAINS(ch.out, "\"the-waiter\" [running]:");
}

/* ------------------------------------------------------------------------
 * The limit
 * ------------------------------------------------------------------------ */

struct limit_ctx {
	atomic_int running;
	atomic_int max;
	atomic_int ran;
	atomic_int gate;          /* tasks hold their slot until it opens */
	atomic_int adder_done;
	int adder_rc;
	struct keel_group *g;
};

static int limited_task(struct keel_cancel *cancel, void *arg)
{
	struct limit_ctx *c = arg;
	int now = atomic_fetch_add(&c->running, 1) + 1;
	int max = atomic_load(&c->max);
	double t0 = keel_test_now();

	(void)cancel;
	while (now > max && !atomic_compare_exchange_weak(&c->max, &max, now))
		;
	usleep(2000);
	while (!atomic_load(&c->gate) && keel_test_now() - t0 < 10)
		usleep(500);
	atomic_fetch_sub(&c->running, 1);
	atomic_fetch_add(&c->ran, 1);
	return 0;
}

static void check_limit(int limit, int ntasks)
{
	struct limit_ctx c;
	int i;

	memset(&c, 0, sizeof(c));
	atomic_store(&c.gate, 1);
	c.g = new_group("limited", limit, NULL);
	for (i = 0; i < ntasks; i++)
		CHECK_INT(keel_group_go(c.g, limited_task, &c), ==, 0);
	CHECK_INT(keel_group_wait(c.g, NULL), ==, 0);
	CHECK_INT(atomic_load(&c.ran), ==, ntasks);
	CHECK_INT(atomic_load(&c.max), <=, limit);
	CHECK_INT(atomic_load(&c.max), >=, 1);
	keel_group_free(c.g);
}

TEST(limit_respected)
{
	check_limit(3, 30);
	check_limit(1, 10);
	keel_test_leak_check();
}

static void *adder_main(void *arg)
{
	struct limit_ctx *c = arg;

	c->adder_rc = keel_group_go(c->g, limited_task, c);
	atomic_store(&c->adder_done, 1);
	return NULL;
}

/* keel_group_go really blocks while the limit is reached. */
TEST(go_blocks_at_the_limit)
{
	struct limit_ctx c;
	pthread_t th;
	int i;

	memset(&c, 0, sizeof(c));
	c.g = new_group("blocked", 2, NULL);
	for (i = 0; i < 2; i++)
		CHECK_INT(keel_group_go(c.g, limited_task, &c), ==, 0);
	CHECK_INT(pthread_create(&th, NULL, adder_main, &c), ==, 0);
	usleep(100000);
	CHECK_INT(atomic_load(&c.adder_done), ==, 0);
	atomic_store(&c.gate, 1);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(c.adder_rc, ==, 0);
	CHECK_INT(keel_group_wait(c.g, NULL), ==, 0);
	CHECK_INT(atomic_load(&c.ran), ==, 3);
	CHECK_INT(atomic_load(&c.max), <=, 2);
	keel_group_free(c.g);
}

static int blocking_until_cancel(struct keel_cancel *cancel, void *arg)
{
	(void)arg;
	(void)until_cancelled(cancel);
	return 0;
}

static void *cancelled_adder_main(void *arg)
{
	struct limit_ctx *c = arg;

	c->adder_rc = keel_group_go(c->g, ok_task, NULL);
	atomic_store(&c->adder_done, 1);
	return NULL;
}

/* An adder blocked on the limit gives up when the group is cancelled. */
TEST(cancel_releases_blocked_adder)
{
	struct limit_ctx c;
	pthread_t th;

	memset(&c, 0, sizeof(c));
	c.g = new_group("blocked", 1, NULL);
	CHECK_INT(keel_group_go(c.g, blocking_until_cancel, NULL), ==, 0);
	CHECK_INT(pthread_create(&th, NULL, cancelled_adder_main, &c), ==, 0);
	usleep(50000);
	CHECK_INT(atomic_load(&c.adder_done), ==, 0);
	keel_group_cancel(c.g);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(c.adder_rc, ==, -ECANCELED);
	CHECK_INT(keel_group_wait(c.g, NULL), ==, -ECANCELED);
	keel_group_free(c.g);
}

/* ------------------------------------------------------------------------
 * Tasks adding tasks
 * ------------------------------------------------------------------------ */

struct tree {
	struct keel_group *g;
	atomic_int ran;
	atomic_int failed_adds;
};

struct node {
	struct tree *t;
	int depth;
};

static struct node nodes[7][64];

static int tree_task(struct keel_cancel *cancel, void *arg)
{
	struct node *n = arg;
	int i;

	(void)cancel;
	atomic_fetch_add(&n->t->ran, 1);
	if (n->depth == 0)
		return 0;
	/* Each node's children are two fixed slots one level down. */
	for (i = 0; i < 2; i++) {
		struct node *child = &nodes[n->depth - 1]
					   [2 * (int)(n - nodes[n->depth]) + i];

		child->t = n->t;
		child->depth = n->depth - 1;
		if (keel_group_go(n->t->g, tree_task, child) != 0)
			atomic_fetch_add(&n->t->failed_adds, 1);
	}
	return 0;
}

static void run_tree(int limit)
{
	struct tree t;

	memset(&t, 0, sizeof(t));
	memset(nodes, 0, sizeof(nodes));
	t.g = new_group("tree", limit, NULL);
	nodes[5][0].t = &t;
	nodes[5][0].depth = 5;
	CHECK_INT(keel_group_go(t.g, tree_task, &nodes[5][0]), ==, 0);
	CHECK_INT(keel_group_wait(t.g, NULL), ==, 0);
	/* 1 + 2 + 4 + ... + 32: every task ran before wait returned. */
	CHECK_INT(atomic_load(&t.ran), ==, 63);
	CHECK_INT(atomic_load(&t.failed_adds), ==, 0);
	keel_group_free(t.g);
}

TEST(tasks_add_tasks)
{
	run_tree(0);
	keel_test_leak_check();
}

/* With a limit, a task at the limit runs what it adds itself: no
 * deadlock even when every running task adds. */
TEST(tasks_add_tasks_at_the_limit)
{
	run_tree(1);
	run_tree(2);
	keel_test_leak_check();
}

struct chain {
	struct keel_group *g;
	atomic_int links;
	int length;
	int sleep_us;
};

static int chain_task(struct keel_cancel *cancel, void *arg)
{
	struct chain *c = arg;

	(void)cancel;
	if (c->sleep_us)
		usleep((useconds_t)c->sleep_us);
	/* Add the next one last thing, so this task is about to end
	 * while the new one starts: wait must not slip between them. */
	if (atomic_fetch_add(&c->links, 1) + 1 < c->length)
		CHECK_INT(keel_group_go(c->g, chain_task, c), ==, 0);
	return 0;
}

TEST(wait_sees_tasks_added_while_waiting)
{
	struct chain c;
	int round;

	for (round = 0; round < 200; round++) {
		memset(&c, 0, sizeof(c));
		c.length = 6;
		c.sleep_us = round < 5 ? 10000 : 0;
		c.g = new_group("chain", 0, NULL);
		CHECK_INT(keel_group_go(c.g, chain_task, &c), ==, 0);
		CHECK_INT(keel_group_wait(c.g, NULL), ==, 0);
		CHECK_INT(atomic_load(&c.links), ==, c.length);
		keel_group_free(c.g);
	}
	keel_test_leak_check();
}

struct outside {
	struct keel_group *g;
	atomic_int ran;
	atomic_int adds_done;
	atomic_int wait_returned;
	atomic_int ran_after_wait;
	int accepted;
	int refused;
};

static int hold_until_adds_done(struct keel_cancel *cancel, void *arg)
{
	struct outside *o = arg;
	double t0 = keel_test_now();

	(void)cancel;
	while (!atomic_load(&o->adds_done) && keel_test_now() - t0 < 10)
		usleep(500);
	atomic_fetch_add(&o->ran, 1);
	return 0;
}

static int count_task(struct keel_cancel *cancel, void *arg)
{
	struct outside *o = arg;

	(void)cancel;
	if (atomic_load(&o->wait_returned))
		atomic_fetch_add(&o->ran_after_wait, 1);
	atomic_fetch_add(&o->ran, 1);
	return 0;
}

static void *outside_adder(void *arg)
{
	struct outside *o = arg;
	int i;

	for (i = 0; i < 20; i++) {
		if (keel_group_go(o->g, count_task, o) == 0)
			o->accepted++;
		else
			o->refused++;
	}
	atomic_store(&o->adds_done, 1);
	/* Race wait's end: every add is accepted, and its task runs before
	 * wait returns, or refused with -EINVAL; never lost. The pauses let
	 * wait finish between two adds (and bound the threads alive). */
	for (i = 0; i < 300; i++) {
		int rc = keel_group_go(o->g, count_task, o);

		if (rc == -EINVAL)
			break;
		CHECK_INT(rc, ==, 0);
		o->accepted++;
		usleep(20);
	}
	return NULL;
}

/* Another thread adds tasks while wait runs: each accepted task ran before
 * wait returned, and after it the group refuses with -EINVAL. */
TEST(outside_thread_adds_while_waiting)
{
	struct outside o;
	pthread_t th;
	int round;

	for (round = 0; round < 50; round++) {
		memset(&o, 0, sizeof(o));
		o.g = new_group("outside", 0, NULL);
		CHECK_INT(keel_group_go(o.g, hold_until_adds_done, &o), ==, 0);
		CHECK_INT(pthread_create(&th, NULL, outside_adder, &o), ==, 0);
		CHECK_INT(keel_group_wait(o.g, NULL), ==, 0);
		atomic_store(&o.wait_returned, 1);
		CHECK_INT(pthread_join(th, NULL), ==, 0);
		CHECK_INT(o.refused, ==, 0);
		CHECK_INT(o.accepted, >=, 20);
		CHECK_INT(atomic_load(&o.ran_after_wait), ==, 0);
		CHECK_INT(atomic_load(&o.ran), ==, 1 + o.accepted);
		keel_group_free(o.g);
	}
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Cancellation from outside
 * ------------------------------------------------------------------------ */

TEST(parent_cancel_cancels_the_group)
{
	struct keel_cancel *parent = keel_cancel_new(NULL, NULL);
	struct keel_group *g = new_group("child", 0, parent);
	struct keel_error *err = NULL;
	struct fail_ctx c;
	double t0 = keel_test_now();
	int i;

	memset(&c, 0, sizeof(c));
	for (i = 0; i < 4; i++)
		CHECK_INT(keel_group_go(g, waiting_task, &c), ==, 0);
	while (atomic_load(&c.waiters) < 4)
		usleep(500);
	keel_cancel_cancel(parent, 0);
	CHECK_INT(keel_group_wait(g, &err), ==, -ECANCELED);
	CHECK_INT(keel_test_now() - t0, <, 5);
	CHECK_INT(atomic_load(&c.saw_cancel), ==, 4);
	CHECK_INT(keel_error_code(err), ==, -ECANCELED);
	keel_error_free(err);
	keel_group_free(g);
	keel_cancel_free(parent);
	keel_test_leak_check();
}

/* A parent already cancelled: nothing starts, wait reports the reason. */
TEST(parent_cancelled_before)
{
	struct keel_cancel *parent = keel_cancel_new(NULL, NULL);
	struct keel_group *g;
	struct keel_error *err = NULL;

	keel_cancel_cancel(parent, 0);
	g = new_group("late", 0, parent);
	CHECK_INT(keel_group_go(g, ok_task, NULL), ==, -ECANCELED);
	CHECK_INT(keel_group_wait(g, &err), ==, -ECANCELED);
	CHECK_INT(keel_error_code(err), ==, -ECANCELED);
	keel_error_free(err);
	keel_group_free(g);
	keel_cancel_free(parent);
}

static int deadline_task(struct keel_cancel *cancel, void *arg)
{
	(void)arg;
	return until_cancelled(cancel);
}

/* The parent's deadline is the group's: tasks see -ETIMEDOUT. */
TEST(parent_deadline)
{
	struct keel_cancel *parent = keel_cancel_new(NULL, NULL);
	struct keel_group *g;
	double t0 = keel_test_now();

	keel_cancel_set_deadline(parent, keel_clock_now(keel_clock_system()) +
						 30 * KEEL_MSEC);
	g = new_group("deadline", 0, parent);
	CHECK_INT(keel_group_go(g, deadline_task, NULL), ==, 0);
	CHECK_INT(keel_group_go(g, deadline_task, NULL), ==, 0);
	CHECK_INT(keel_group_wait(g, NULL), ==, -ETIMEDOUT);
	CHECK_INT(keel_test_now() - t0, <, 5);
	keel_group_free(g);
	keel_cancel_free(parent);
}

TEST(go_after_cancel_and_after_wait)
{
	struct keel_group *g = new_group("closed", 0, NULL);
	struct keel_error *err = NULL;

	CHECK_INT(keel_group_go(g, ok_task, NULL), ==, 0);
	keel_group_cancel(g);
	CHECK_INT(keel_cancel_err(keel_group_token(g)), ==, -ECANCELED);
	CHECK_INT(keel_group_go(g, ok_task, NULL), ==, -ECANCELED);
	/* Cancelled from outside and no task failed. */
	CHECK_INT(keel_group_wait(g, &err), ==, -ECANCELED);
	CHECK_INT(keel_error_code(err), ==, -ECANCELED);
	CHECK_STR(keel_error_message(err), keel_strerror(-ECANCELED));
	keel_error_free(err);
	CHECK_INT(keel_group_go(g, ok_task, NULL), ==, -EINVAL);
	keel_group_free(g);

	/* After a wait that succeeded, too. */
	g = new_group("closed", 0, NULL);
	CHECK_INT(keel_group_wait(g, NULL), ==, 0);
	CHECK_INT(keel_group_go(g, ok_task, NULL), ==, -EINVAL);
	keel_group_free(g);
}

/* ------------------------------------------------------------------------
 * Misuse the group survives
 * ------------------------------------------------------------------------ */

struct self_wait {
	struct keel_group *g;
	int rc;
};

static int self_wait_task(struct keel_cancel *cancel, void *arg)
{
	struct self_wait *s = arg;

	(void)cancel;
	s->rc = keel_group_wait(s->g, NULL);
	return 0;
}

TEST(wait_inside_a_task_is_refused)
{
	struct self_wait s;

	s.g = new_group("self", 0, NULL);
	s.rc = 1;
	CHECK_INT(keel_group_go(s.g, self_wait_task, &s), ==, 0);
	CHECK_INT(keel_group_wait(s.g, NULL), ==, 0);
	CHECK_INT(s.rc, ==, -EDEADLK);
	keel_group_free(s.g);
}

/* Free without wait joins the tasks first. */
TEST(free_without_wait)
{
	struct limit_ctx c;
	int i;

	memset(&c, 0, sizeof(c));
	c.g = new_group("unwaited", 0, NULL);
	for (i = 0; i < 4; i++)
		CHECK_INT(keel_group_go(c.g, limited_task, &c), ==, 0);
	atomic_store(&c.gate, 1);
	keel_group_free(c.g);
	CHECK_INT(atomic_load(&c.ran), ==, 4);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Many groups
 * ------------------------------------------------------------------------ */

struct stress {
	int fail_at;             /* this task index fails ... */
	int panic_at;            /* ... and this one panics (-1: none) */
	atomic_int next;
	atomic_int ran;
};

static int stress_task(struct keel_cancel *cancel, void *arg)
{
	struct stress *s = arg;
	int i = atomic_fetch_add(&s->next, 1);
	int k;

	atomic_fetch_add(&s->ran, 1);
	for (k = 0; k < 10 && keel_cancel_err(cancel) == 0; k++)
		usleep(50);
	if (i == s->fail_at)
		return -EIO;
	if (i == s->panic_at)
		keel_panicf("stress panic %d", i);
	return 0;
}

TEST(hundred_groups_of_twenty)
{
	int round, i, rc;

	for (round = 0; round < 100; round++) {
		struct keel_group *g = new_group("stress", round % 3 == 0 ? 4 : 0,
						 NULL);
		struct keel_error *err = NULL;
		struct stress s;

		memset(&s, 0, sizeof(s));
		s.fail_at = round % 2 == 0 ? 7 : -1;
		s.panic_at = round % 4 < 2 ? 13 : -1;
		for (i = 0; i < 20; i++) {
			rc = keel_group_go(g, stress_task, &s);
			/* Once a task failed, the rest is refused. */
			CHECK(rc == 0 || rc == -ECANCELED);
		}
		rc = keel_group_wait(g, &err);
		if (s.fail_at < 0 && s.panic_at < 0) {
			CHECK_INT(rc, ==, 0);
			CHECK(err == NULL);
			CHECK_INT(atomic_load(&s.ran), ==, 20);
		} else {
			CHECK(rc == -EIO || rc == KEEL_EPANIC);
			CHECK_INT(keel_error_code(err), ==, rc);
		}
		if (s.panic_at >= 0 && rc == KEEL_EPANIC)
			CHECK_INT(keel_group_panic_stack(g, NULL), >, 0);
		keel_error_free(err);
		keel_group_free(g);
	}
	keel_test_leak_check();
}
