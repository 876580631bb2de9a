/*
 * src/runtime/group.c - task groups: errgroup with panics as failures.
 *
 * Each task gets a keel_go thread named "<name>-<n>" and runs in a scope
 * whose first deferred call recovers: a panic becomes the task's failure
 * with its stack (copied out of the panic before the scope ends and the
 * record goes back to its thread's pool). The first failure, a non-zero
 * return or a panic, is recorded under the group's mutex and cancels the
 * group's token; later failures only count if they are the first panic,
 * which keel_group_wait_or_panic re-raises (a panic is a bug and must not
 * hide behind an earlier error, as in conc).
 *
 * Counting. `running` is the number of tasks on threads of their own, which
 * the limit bounds; `live` is the number of tasks whose threads wait has not
 * joined yet, counted from the moment keel_group_go reserves the task, under
 * the lock, until the join. A task can only add tasks while it runs, that
 * is while it is live itself, so once wait sees live == 0 (and no handle
 * queued) no task is left that could add one; an outside thread adding at
 * the same time is ordered by the lock: either wait sees its reservation,
 * or the adder sees `waited` and gets -EINVAL. A start that fails gives the
 * reservation back. Wait joins every handle, so when it returns no task
 * thread of the group exists any more and the group can be freed.
 *
 * A task that adds a task while `limit` tasks run does not block: it runs
 * the new task itself, in the same kind of scope (as a pool's caller-runs
 * does). Blocking there deadlocks as soon as every running task does it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/go.h>
#include <keel/group.h>

/* The stack kept of a task's panic: as many frames as a panic captures. */
#define GROUP_MAX_FRAMES 64

struct task {
	struct task *next;        /* in the join queue */
	struct keel_group *g;
	keel_group_fn fn;
	void *arg;
	int idx;
	struct keel_thread *th;
};

struct keel_group {
	pthread_mutex_t mu;
	pthread_cond_t cv;        /* a task ended, a handle was queued, a
				   * start failed, or the group was cancelled */
	struct keel_cancel token;
	int limit;
	int running;
	int live;
	int next_idx;
	int waited;               /* wait returned: the group takes no tasks */
	struct task *joinq;       /* started, not joined yet, oldest first: */
	struct task **joinq_tail; /* the oldest has most likely ended */

	/* The first failure: what wait reports. */
	int fail_code;
	int fail_idx;
	int fail_given;           /* the original went to a waiter */
	struct keel_error *fail_err;

	/* The first panic: what wait_or_panic re-raises. */
	int panicked;
	int panic_idx;
	struct keel_error *panic_err; /* message, kind, carried error */
	size_t nframes;
	void *frames[GROUP_MAX_FRAMES];

	char name[];
};

/* The group whose task the calling thread runs, if any. */
static __thread struct keel_group *cur_group;

void keel_group_config_init(struct keel_group_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->name = "group";
}

int keel_group_new(const struct keel_group_config *cfg, struct keel_group **out)
{
	struct keel_group_config defaults;
	struct keel_group *g;
	const char *name;
	size_t len;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL) {
		keel_group_config_init(&defaults);
		cfg = &defaults;
	}
	if (cfg->limit < 0)
		return -EINVAL;
	name = cfg->name != NULL ? cfg->name : "group";
	len = strlen(name);
	g = calloc(1, sizeof(*g) + len + 1);
	if (g == NULL)
		return -ENOMEM;
	memcpy(g->name, name, len + 1);
	g->limit = cfg->limit;
	g->joinq_tail = &g->joinq;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	keel_cancel_init(&g->token, cfg->clock, cfg->parent);
	*out = g;
	return 0;
}

struct keel_cancel *keel_group_token(struct keel_group *g)
{
	return g != NULL ? &g->token : NULL;
}

void keel_group_cancel(struct keel_group *g)
{
	if (g == NULL)
		return;
	keel_cancel_cancel(&g->token, 0);
	/* Wakes adders blocked on the limit: they now get -ECANCELED. */
	pthread_mutex_lock(&g->mu);
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* ------------------------------------------------------------------------
 * Recording failures (on the task's thread)
 * ------------------------------------------------------------------------ */

/* Called from the task's deferred call, while the panic record is alive. */
static void record_panic(struct keel_group *g, const struct keel_panic *p,
			 int idx)
{
	void *const *frames;
	size_t n = keel_panic_stack(p, &frames);
	int first = 0;

	if (n > GROUP_MAX_FRAMES)
		n = GROUP_MAX_FRAMES;
	pthread_mutex_lock(&g->mu);
	if (!g->panicked) {
		g->panicked = 1;
		g->panic_idx = idx;
		g->panic_err = keel_error_from_panic(p);
		memcpy(g->frames, frames, n * sizeof(frames[0]));
		g->nframes = n;
	}
	if (g->fail_code == 0) {
		g->fail_code = KEEL_EPANIC;
		g->fail_idx = idx;
		g->fail_err = keel_error_from_panic(p);
		first = 1;
	}
	pthread_mutex_unlock(&g->mu);
	if (first)
		keel_cancel_cancel(&g->token, 0);
}

static void record_error(struct keel_group *g, int code, int idx)
{
	int first = 0;

	pthread_mutex_lock(&g->mu);
	if (g->fail_code == 0) {
		g->fail_code = code;
		g->fail_idx = idx;
		g->fail_err = keel_error_new(code, "%s", keel_strerror(code));
		first = 1;
	}
	pthread_mutex_unlock(&g->mu);
	if (first)
		keel_cancel_cancel(&g->token, 0);
}

struct run {
	struct keel_group *g;
	keel_group_fn fn;
	void *arg;
	int idx;
	int rc;
};

/* The task scope's first deferred call, so the last to run. */
static void run_recover(void *arg)
{
	struct run *r = arg;
	const struct keel_panic *p = keel_recover();

	if (p != NULL)
		record_panic(r->g, p, r->idx);
}

static void run_body(void *arg)
{
	struct run *r = arg;

	keel_defer(run_recover, r);
	r->rc = r->fn(&r->g->token, r->arg);
}

static void task_run(struct keel_group *g, keel_group_fn fn, void *arg,
		     int idx)
{
	struct run r = { g, fn, arg, idx, 0 };

	if (keel_call(run_body, &r) == 0 && r.rc != 0)
		record_error(g, r.rc, idx);
}

static void task_main(void *arg)
{
	struct task *tk = arg;
	struct keel_group *g = tk->g;

	cur_group = g;
	keel_panic_capture_stacks(1);
	task_run(g, tk->fn, tk->arg, tk->idx);
	cur_group = NULL;
	/* After this unlock the thread touches neither tk nor g: wait may
	 * join it, free tk and return at once. */
	pthread_mutex_lock(&g->mu);
	g->running--;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* ------------------------------------------------------------------------
 * Adding tasks
 * ------------------------------------------------------------------------ */

/* "<name>-<n>", cutting the name rather than the number to fit 15 bytes. */
static void task_name(char buf[16], const char *name, int idx)
{
	char suffix[16];
	size_t k = (size_t)snprintf(suffix, sizeof(suffix), "-%d", idx);
	size_t n = strnlen(name, 15 - k);

	memcpy(buf, name, n);
	memcpy(buf + n, suffix, k + 1);
}

int keel_group_go(struct keel_group *g, keel_group_fn fn, void *arg)
{
	struct keel_go_options opt;
	struct task *tk;
	char name[16];
	int idx, rc;

	if (g == NULL || fn == NULL)
		return -EINVAL;
	pthread_mutex_lock(&g->mu);
	for (;;) {
		if (g->waited) {
			rc = -EINVAL;
			goto refuse;
		}
		if (keel_cancel_err(&g->token) != 0) {
			rc = -ECANCELED;
			goto refuse;
		}
		if (g->limit == 0 || g->running < g->limit)
			break;
		if (cur_group == g) {
			/* Caller-runs, in this task's slot (see the top). */
			idx = g->next_idx++;
			pthread_mutex_unlock(&g->mu);
			task_run(g, fn, arg, idx);
			return 0;
		}
		pthread_cond_wait(&g->cv, &g->mu);
	}
	idx = g->next_idx++;
	g->running++;
	g->live++;
	pthread_mutex_unlock(&g->mu);

	tk = calloc(1, sizeof(*tk));
	rc = -EAGAIN;
	if (tk != NULL) {
		tk->g = g;
		tk->fn = fn;
		tk->arg = arg;
		tk->idx = idx;
		keel_go_options_init(&opt);
		task_name(name, g->name, idx);
		opt.name = name;
		rc = keel_go(task_main, tk, &opt, &tk->th);
	}

	pthread_mutex_lock(&g->mu);
	if (rc != 0) {
		g->running--;
		g->live--;
		rc = -EAGAIN;
	} else {
		*g->joinq_tail = tk;
		g->joinq_tail = &tk->next;
		tk = NULL;
	}
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
	free(tk);
	return rc;

refuse:
	pthread_mutex_unlock(&g->mu);
	return rc;
}

/* ------------------------------------------------------------------------
 * Waiting
 * ------------------------------------------------------------------------ */

static void join_all(struct keel_group *g)
{
	pthread_mutex_lock(&g->mu);
	for (;;) {
		struct task *tk = g->joinq;

		if (tk != NULL) {
			g->joinq = tk->next;
			if (g->joinq == NULL)
				g->joinq_tail = &g->joinq;
			pthread_mutex_unlock(&g->mu);
			(void)keel_go_join(tk->th);
			free(tk);
			pthread_mutex_lock(&g->mu);
			g->live--;
			continue;
		}
		if (g->live == 0)
			break;
		pthread_cond_wait(&g->cv, &g->mu);
	}
	g->waited = 1;
	pthread_mutex_unlock(&g->mu);
}

/* A copy through the public API: codes and messages of the whole chain,
 * not the panic details, which keel_error has no setter for. */
static struct keel_error *error_dup(const struct keel_error *e)
{
	if (e == NULL)
		return NULL;
	return keel_error_wrap(error_dup(keel_error_cause(e)),
			       keel_error_code(e), "%s", keel_error_message(e));
}

int keel_group_wait(struct keel_group *g, struct keel_error **err)
{
	int code;

	if (err != NULL)
		*err = NULL;
	if (g == NULL)
		return -EINVAL;
	if (cur_group == g)
		return -EDEADLK; /* a task would wait for itself */
	join_all(g);

	pthread_mutex_lock(&g->mu);
	code = g->fail_code;
	if (code != 0 && err != NULL) {
		/* The first waiter gets the recorded error itself, with the
		 * panic's kind and fault details; a later call, a copy. */
		if (!g->fail_given) {
			*err = g->fail_err;
			g->fail_err = error_dup(*err);
			g->fail_given = 1;
		} else {
			*err = error_dup(g->fail_err);
		}
	} else if (code == 0) {
		/* Cancelled from outside with no task failing. The reason
		 * as stored: a deadline that passed unobserved after every
		 * task succeeded is not a failure. */
		code = __atomic_load_n(&g->token.reason, __ATOMIC_ACQUIRE);
		if (code != 0 && err != NULL)
			*err = keel_error_new(code, "%s", keel_strerror(code));
	}
	pthread_mutex_unlock(&g->mu);
	return code;
}

/* The task's panic again, on this thread: kind and message kept, with
 * "[task <n>]" added. A fault's signal details stay in the task's error
 * (keel_group_wait): this panic is not a fault of the waiting thread. */
static KEEL_NORETURN void reraise(const struct keel_error *pe, int idx)
{
	const char *msg = keel_error_message(pe);
	int kind = keel_error_panic_kind(pe);
	char buf[256];

	switch (kind) {
	case KEEL_PANIC_ERROR: {
		/* The carried error again, under the new message: its code
		 * is the panic's error value's code, as in the task. */
		const struct keel_error *cause = keel_error_cause(pe);

		keel_panic_error(keel_error_wrap(error_dup(cause),
						 cause != NULL ? 0 : KEEL_EPANIC,
						 "%s [task %d]", msg, idx));
	}
	case KEEL_PANIC_NIL_ARGUMENT:
	case KEEL_PANIC_INDEX:
	case KEEL_PANIC_OUT_OF_MEMORY:
	case KEEL_PANIC_NIL_DEREF:
	case KEEL_PANIC_DIVIDE:
	case KEEL_PANIC_FLOAT:
	case KEEL_PANIC_STACK_OVERFLOW:
	case KEEL_PANIC_BAD_ADDRESS:
		/* Runtime errors: short, fixed messages. */
		snprintf(buf, sizeof(buf), "%s [task %d]", msg, idx);
		keel__panic_as((enum keel_panic_kind)kind, buf);
	default:
		/* A message, or a payload, which ended with the task's
		 * panic: its text is what is left of it. */
		keel_panicf("%s [task %d]", msg, idx);
	}
}

int keel_group_wait_or_panic(struct keel_group *g)
{
	const struct keel_error *pe = NULL;
	int rc, idx = 0;

	rc = keel_group_wait(g, NULL);
	if (g == NULL || rc == -EDEADLK)
		return rc;
	pthread_mutex_lock(&g->mu);
	if (g->panicked) {
		pe = g->panic_err;
		idx = g->panic_idx;
	}
	pthread_mutex_unlock(&g->mu);
	if (pe != NULL)
		reraise(pe, idx);
	return rc;
}

size_t keel_group_panic_stack(const struct keel_group *g, void *const **frames)
{
	if (g == NULL || !g->panicked) {
		if (frames != NULL)
			*frames = NULL;
		return 0;
	}
	if (frames != NULL)
		*frames = g->frames;
	return g->nframes;
}

void keel_group_free(struct keel_group *g)
{
	if (g == NULL)
		return;
	/* Freed without a wait: join first, rather than free under the
	 * feet of running tasks (after a wait this returns at once). */
	if (cur_group != g)
		join_all(g);
	keel_cancel_destroy(&g->token);
	keel_error_free(g->fail_err);
	keel_error_free(g->panic_err);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
	free(g);
}
