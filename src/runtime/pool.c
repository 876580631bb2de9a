/*
 * src/runtime/pool.c - a worker pool where a crashing task is just a failed
 * task (keel/pool.h).
 *
 * One mutex guards everything: a ring of task slots allocated with the
 * pool (tasks are stored by value, so a submit allocates nothing), the
 * thread and idle counts, the statistics. Workers wait on not_empty,
 * blocked submitters on not_full, shutdown on done. A condition variable is
 * signalled only when someone waits on it, and with the mutex held: glibc's
 * condition variables make a signaller wait for the waiters it woke before
 * to leave (the group switch in pthread_cond_signal), and signalling after
 * the unlock ran into that wait so often that it halved the throughput of
 * empty tasks with two submitters on this project's 2-core machine.
 *
 * A worker runs each task in keel_call with a deferred call that recovers,
 * so a panic or a fault ends the task and not the thread. The running task's
 * context (struct keel_task, with its cancel token) lives on the worker's
 * stack; the worker publishes a pointer to it in its slot so that the
 * watchdog and a cancelling shutdown can reach the token. Publishing is an
 * atomic store, not a lock: a worker takes the mutex once per task, to
 * account for the task it finished and take the next one in the same
 * critical section. Only clearing the pointer needs the mutex, since every
 * reader holds it: once a worker has cleared its slot under the mutex, no
 * one can reach its token any more, and it may destroy it.
 *
 * Timed waits on the pool's own condition variables (block_timeout,
 * idle_timeout, shutdown's timeout) are real CLOCK_MONOTONIC time: only the
 * thread that changes the pool's state can end them, and a clock's
 * wait_until waits on a token, not on the pool. The pool's clock times what
 * the user reads back: deadlines, the watchdog's period, the latencies.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel/pool.h>

enum worker_state {
	W_UNUSED = 0, /* no thread */
	W_LIVE,       /* started, counted in threads */
	W_EXITED,     /* returned or returning: join before reuse */
};

/* A queued task, by value. */
struct slot {
	keel_task_fn fn;
	void *arg;
	void (*on_drop)(void *arg);
	const char *name;
	struct keel_cancel *parent;
	int64_t deadline;  /* ns from start; 0: the pool's default */
	int64_t submitted; /* pool clock, when timed */
	int timed;         /* latency measured (see sample_*) */
};

struct keel_task {
	struct keel_cancel tok;
	keel_task_fn fn;
	void *arg;
	const char *name;
	struct keel_pool *pool;
	int worker;          /* -1: runs on a submitting thread */
	int overdue;         /* reported by the watchdog; guarded by mu */
	int64_t started;     /* pool clock; 0 when there is no deadline */
	int64_t deadline;    /* KEEL_NEVER: none */
	struct keel_task *next, *prev; /* pool->inline_tasks */
	struct keel_task *outer; /* the caller-runs task it runs in, if any */
};

struct worker {
	struct keel_pool *pool;
	pthread_t thread;
	int index;
	enum worker_state state; /* guarded by mu */
	struct keel_task *cur;   /* atomic; cleared under mu */
};

struct keel_pool {
	pthread_mutex_t mu;
	pthread_cond_t not_empty; /* workers wait for a task */
	pthread_cond_t not_full;  /* BLOCK submitters wait for room */
	pthread_cond_t done;      /* shutdown waits for the workers */

	struct slot *ring;
	size_t size, head, count;
	size_t drop_head, drop_count; /* dropped by a cancel, not yet told */

	struct worker *workers;   /* max_threads of them */
	int min_threads, max_threads;
	int threads;              /* live workers */
	int idle;                 /* workers waiting on not_empty */
	int signalled;            /* of those, already sent a wake-up */
	int blocked;              /* submitters waiting on not_full */
	int room_signalled;       /* of those, already sent a wake-up */
	int blocked_workers;      /* of those, this pool's own workers */

	int stopping;             /* shutdown began: submit refuses */
	int cancelling;           /* atomic: a cancelling shutdown began */
	int reaping, reaped;      /* a shutdown is joining / has joined */

	struct keel_task *inline_tasks; /* caller-runs tasks running now */
	int inline_running;

	int wd_started;
	pthread_t wd_thread;
	struct keel_cancel wd_stop;

	/* Configuration. */
	char *name;
	enum keel_pool_full when_full;
	int64_t idle_timeout, block_timeout, task_deadline, wd_interval;
	const struct keel_clock *clock;
	void (*on_panic)(const struct keel_task_panic *info, void *ud);
	void *panic_ud;
	void (*on_overdue)(const struct keel_task_overdue *info, void *ud);
	void *overdue_ud;

	/* Statistics. */
	uint64_t submitted, rejected, completed, panicked, cancelled;
	uint64_t caller_runs, overdue, running;
	uint64_t lat_count;
	double lat_sum, lat_max;

	/* Latency sampling: one task in `stride` is timed (see sample_*). */
	int time_next;            /* atomic: the next submit reads the clock */
	unsigned stride, countdown;
	uint64_t win_n;           /* tasks finished at the last timed finish */
	int64_t win_t;            /* and its time; 0: none yet */
};

/* The pool whose worker this thread is, for the self-deadlock check (slow
 * paths only), and the caller-runs tasks running on this thread. */
static __thread struct worker *self_worker;
static __thread struct keel_task *self_inline;

/* ------------------------------------------------------------------------
 * Time
 * ------------------------------------------------------------------------ */

static int64_t real_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * KEEL_SEC + ts.tv_nsec;
}

static struct timespec to_ts(int64_t ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / KEEL_SEC);
	ts.tv_nsec = (long)(ns % KEEL_SEC);
	return ts;
}

static int64_t add_sat(int64_t t, int64_t d)
{
	return t > KEEL_NEVER - d ? KEEL_NEVER : t + d;
}

/* Waits on cv until the real-time deadline (KEEL_NEVER: no limit). */
static int cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
			   int64_t until)
{
	struct timespec ts;

	if (until == KEEL_NEVER)
		return pthread_cond_wait(cv, mu);
	ts = to_ts(until);
	return pthread_cond_timedwait(cv, mu, &ts);
}

static int cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t attr;
	int err;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	err = pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
	return err;
}

/* "<base>-<suffix>" in the kernel's 15 bytes, keeping the suffix whole. */
static void set_thread_name(const char *base, const char *suffix)
{
	char buf[16];
	int room = (int)sizeof(buf) - 2 - (int)strlen(suffix);

	if (room < 1)
		room = 1;
	snprintf(buf, sizeof(buf), "%.*s-%s", room, base, suffix);
	pthread_setname_np(pthread_self(), buf);
}

/* ------------------------------------------------------------------------
 * Running one task
 * ------------------------------------------------------------------------ */

struct handler_call {
	struct keel_pool *pool;
	const struct keel_task_panic *info;
};

static void swallow(void *arg)
{
	(void)arg;
	(void)keel_recover();
}

static void handler_body(void *arg)
{
	struct handler_call *h = arg;

	keel_defer(swallow, NULL);
	h->pool->on_panic(h->info, h->pool->panic_ud);
}

/* The task's deferred call: stops a panic and hands it to the handler
 * while the panic record is still valid. The handler runs in a scope of
 * its own, so a handler that panics costs that report, not the worker. */
static void task_recover(void *arg)
{
	struct keel_task *t = arg;
	struct keel_pool *p = t->pool;
	const struct keel_panic *pn = keel_recover();
	struct keel_task_panic info;
	struct handler_call h;

	if (pn == NULL || p->on_panic == NULL)
		return;
	info.pool = p->name;
	info.task = t->name;
	info.panic = pn;
	info.worker = t->worker;
	h.pool = p;
	h.info = &info;
	(void)keel_call(handler_body, &h);
}

static void task_body(void *arg)
{
	struct keel_task *t = arg;

	keel_defer(task_recover, t);
	t->fn(t, t->arg);
}

/*
 * Fills t from s; t is not yet visible to anyone. With fresh_token 0, t's
 * token is one a previous task left untouched (see token_reusable), which
 * saves initialising and destroying a mutex and a condition variable per
 * task, about a tenth of an empty task's cost.
 */
static void task_init(struct keel_pool *p, struct keel_task *t,
		      const struct slot *s, int worker, int fresh_token)
{
	int64_t rel = s->deadline != 0 ? s->deadline : p->task_deadline;

	t->fn = s->fn;
	t->arg = s->arg;
	t->name = s->name != NULL ? s->name : "";
	t->pool = p;
	t->worker = worker;
	t->overdue = 0;
	t->outer = NULL;
	if (fresh_token)
		keel_cancel_init(&t->tok, p->clock, s->parent);
	if (rel > 0) {
		t->started = p->clock->now(p->clock);
		t->deadline = add_sat(t->started, rel);
		keel_cancel_set_deadline(&t->tok, t->deadline);
	} else {
		t->started = 0;
		t->deadline = KEEL_NEVER;
	}
}

/*
 * After the task, with t unreachable by others again: can the next task on
 * this worker have the same token? Yes when it is exactly what
 * keel_cancel_init would make: no parent (a parent's cancel could still
 * reach it), never cancelled, no deadline. Its children list is empty too,
 * since children must not outlive their parent (keel/cancel.h), and the
 * parent died, for the task, when it returned.
 */
static int token_reusable(struct keel_task *t)
{
	return t->tok.parent == NULL &&
	       __atomic_load_n(&t->tok.reason, __ATOMIC_ACQUIRE) == 0 &&
	       keel_cancel_deadline(&t->tok) == KEEL_NEVER;
}

/* Once t is where a cancelling shutdown looks for it: if the shutdown
 * began before, it may have looked already, so cancel here. Both sides
 * store, then load (sequentially consistent): one of them sees the other. */
static void task_check_cancelling(struct keel_pool *p, struct keel_task *t)
{
	if (__atomic_load_n(&p->cancelling, __ATOMIC_SEQ_CST))
		keel_cancel_cancel(&t->tok, -ECANCELED);
}

/*
 * Latency sampling. Timing a task costs two clock reads (about 25 ns each
 * here), one of them on the submitting thread, and with tasks of a few
 * hundred nanoseconds that alone halves a pool's throughput: the submitter
 * becomes the bottleneck and the workers starve. So the pool times every
 * task while it runs fewer than SAMPLE_SLOW_NS apart, and above about one
 * task per SAMPLE_FAST_NS it times one in `stride` (doubled or halved at
 * each timed finish, up to SAMPLE_MAX), which keeps the cost of timing
 * below a few per cent. Rates come from the timed tasks' own clock reads;
 * a clock that does not move (a virtual one) never raises the stride.
 */
#define SAMPLE_FAST_NS 1000
#define SAMPLE_SLOW_NS 4000
#define SAMPLE_MAX 64

/* Under mu, for each task queued: schedules the next timed submit. The
 * hint is read without the lock, so two submits may both be timed now and
 * then; each task is either timed with a real stamp or not timed. */
static void sample_submit(struct keel_pool *p, int timed)
{
	if (p->stride == 1)
		return;
	if (timed)
		p->countdown = p->stride;
	if (p->countdown > 0)
		p->countdown--;
	__atomic_store_n(&p->time_next, p->countdown == 0, __ATOMIC_RELAXED);
}

/* Under mu, at a timed finish: adapts the stride to the rate since the
 * previous timed finish. Finishes on different workers may come out of
 * order; a window that does not move forward is skipped. */
static void sample_adapt(struct keel_pool *p, int64_t end)
{
	uint64_t n = p->completed + p->panicked;
	int64_t dt = end - p->win_t;
	double per = dt / (double)(n - p->win_n > 0 ? n - p->win_n : 1);

	if (p->win_t != 0 && dt > 0) {
		if (per < SAMPLE_FAST_NS && p->stride < SAMPLE_MAX) {
			p->stride *= 2;
		} else if (per > SAMPLE_SLOW_NS && p->stride > 1) {
			p->stride /= 2;
			if (p->stride == 1)
				__atomic_store_n(&p->time_next, 1,
						 __ATOMIC_RELAXED);
		}
	}
	p->win_n = n;
	p->win_t = end;
}

/* Under mu: the books for a task that ran. */
static void task_account(struct keel_pool *p, const struct slot *s,
			 int panicked, int64_t end)
{
	double lat;

	if (panicked)
		p->panicked++;
	else
		p->completed++;
	p->running--;
	if (!s->timed)
		return;
	lat = (double)(end - s->submitted);
	p->lat_count++;
	p->lat_sum += lat;
	if (lat > p->lat_max)
		p->lat_max = lat;
	sample_adapt(p, end);
}

/* ------------------------------------------------------------------------
 * Workers
 * ------------------------------------------------------------------------ */

static void *worker_main(void *arg);
static void watchdog_start(struct keel_pool *p);

/* Under mu: joins a worker that has exited, so its slot can be reused. Its
 * last touch of the pool was under mu, before it let go of it. */
static void worker_reap(struct worker *w)
{
	if (w->state == W_EXITED) {
		pthread_join(w->thread, NULL);
		w->state = W_UNUSED;
	}
}

/* Under mu: starts a worker in the lowest free slot. */
static int worker_spawn(struct keel_pool *p)
{
	int i, err;

	if (p->stopping)
		return -ESHUTDOWN;
	for (i = 0; i < p->max_threads; i++)
		if (p->workers[i].state != W_LIVE)
			break;
	if (i == p->max_threads)
		return -EAGAIN;
	worker_reap(&p->workers[i]);
	p->workers[i].state = W_LIVE;
	p->workers[i].cur = NULL;
	err = pthread_create(&p->workers[i].thread, NULL, worker_main,
			     &p->workers[i]);
	if (err != 0) {
		p->workers[i].state = W_UNUSED;
		return -err;
	}
	p->threads++;
	return 0;
}

/* Under mu: this worker leaves. After this it touches nothing of the pool
 * but the mutex it is about to release. */
static void worker_leave(struct keel_pool *p, struct worker *w)
{
	w->state = W_EXITED;
	p->threads--;
	if (p->threads == 0 && p->stopping)
		pthread_cond_broadcast(&p->done);
}

/*
 * Under mu: takes the next task into *s, waiting for one. Returns 0 when
 * this worker should leave instead: the pool is stopping and the queue is
 * empty, or the worker is above min_threads and was idle idle_timeout long.
 * *wake is set when a blocked submitter should be told about the room.
 */
static int worker_next(struct keel_pool *p, struct slot *s, int *wake)
{
	int64_t idle_until = KEEL_NEVER;

	while (p->count == 0) {
		int err;

		if (p->stopping)
			return 0;
		if (p->threads > p->min_threads && idle_until == KEEL_NEVER)
			idle_until = add_sat(real_now(), p->idle_timeout);
		p->idle++;
		err = cond_wait_until(&p->not_empty, &p->mu, idle_until);
		p->idle--;
		if (p->signalled > 0)
			p->signalled--;
		if (err == ETIMEDOUT && p->count == 0 && !p->stopping &&
		    p->threads > p->min_threads)
			return 0;
	}
	*s = p->ring[p->head];
	if (++p->head == p->size)
		p->head = 0;
	p->count--;
	p->running++;
	/* One wake-up per waiter: glibc's pthread_cond_signal gets slow
	 * when it signals waiters that were signalled already. */
	*wake = p->blocked > p->room_signalled;
	p->room_signalled += *wake;
	return 1;
}

static void nothing(void *arg)
{
	(void)arg;
}

static void warm_up(void *arg)
{
	keel_defer(nothing, arg);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct keel_pool *p = w->pool;
	struct keel_task t;
	struct slot s;
	char idx[12];
	int live = 0, more, wake;

	snprintf(idx, sizeof(idx), "%d", w->index);
	set_thread_name(p->name, idx);
	keel_thread_prepare();
	keel_panic_capture_stacks(1);
	/* Grow the defer stack now, so that no task has to. */
	(void)keel_call(warm_up, NULL);
	self_worker = w;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		wake = 0;
		more = worker_next(p, &s, &wake);
		if (!more)
			worker_leave(p, w);
		if (wake)
			pthread_cond_signal(&p->not_full);
		pthread_mutex_unlock(&p->mu);
		/* t is unreachable by others since its slot was cleared. */
		if (live &&
		    (!more || s.parent != NULL || !token_reusable(&t))) {
			keel_cancel_destroy(&t.tok);
			live = 0;
		}
		if (!more)
			break;
		task_init(p, &t, &s, w->index, !live);
		live = 1;
		__atomic_store_n(&w->cur, &t, __ATOMIC_SEQ_CST);
		task_check_cancelling(p, &t);
		{
			int panicked = keel_call(task_body, &t);
			int64_t end = s.timed ? p->clock->now(p->clock) : 0;

			pthread_mutex_lock(&p->mu);
			__atomic_store_n(&w->cur, NULL, __ATOMIC_RELEASE);
			task_account(p, &s, panicked, end);
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------------
 * Caller-runs
 * ------------------------------------------------------------------------ */

/* Runs the task on this thread, with the same isolation and accounting as
 * on a worker. Called with mu held; returns with it released. */
static int run_inline(struct keel_pool *p, const struct slot *s)
{
	struct keel_task t;
	int panicked;
	int64_t end;

	p->submitted++;
	p->caller_runs++;
	p->running++;
	p->inline_running++;
	pthread_mutex_unlock(&p->mu);

	task_init(p, &t, s, -1, 1);
	pthread_mutex_lock(&p->mu);
	t.prev = NULL;
	t.next = p->inline_tasks;
	if (t.next != NULL)
		t.next->prev = &t;
	p->inline_tasks = &t;
	pthread_mutex_unlock(&p->mu);
	task_check_cancelling(p, &t);

	t.outer = self_inline;
	self_inline = &t;
	panicked = keel_call(task_body, &t);
	self_inline = t.outer;
	end = s->timed ? p->clock->now(p->clock) : 0;

	pthread_mutex_lock(&p->mu);
	if (t.prev != NULL)
		t.prev->next = t.next;
	else
		p->inline_tasks = t.next;
	if (t.next != NULL)
		t.next->prev = t.prev;
	task_account(p, s, panicked, end);
	p->inline_running--;
	if (p->inline_running == 0 && p->stopping)
		pthread_cond_broadcast(&p->done);
	pthread_mutex_unlock(&p->mu);
	keel_cancel_destroy(&t.tok);
	return 0;
}

/* 1 when this thread runs a task of p right now. */
static int in_own_task(struct keel_pool *p)
{
	const struct keel_task *t;

	if (self_worker != NULL && self_worker->pool == p)
		return 1;
	for (t = self_inline; t != NULL; t = t->outer)
		if (t->pool == p)
			return 1;
	return 0;
}

/* ------------------------------------------------------------------------
 * Submit
 * ------------------------------------------------------------------------ */

/*
 * Under mu, the queue full. Returns 1 when there is room now, or a
 * negative code, or 0 after running the task here (mu released then).
 *
 * BLOCK waits, except in one case: a worker of this pool that would wait
 * while every other worker waits in submit too. Nobody would ever make
 * room; the wait could only end in block_timeout or shutdown. That worker
 * runs the task itself instead, as CALLER_RUNS would.
 */
static KEEL_COLD int submit_full(struct keel_pool *p, const struct slot *s)
{
	int64_t until = KEEL_NEVER;
	int own = self_worker != NULL && self_worker->pool == p;

	if (p->threads < p->max_threads)
		(void)worker_spawn(p); /* more hands drain the queue sooner */
	if (p->when_full == KEEL_POOL_REJECT)
		return -EAGAIN;
	if (p->when_full == KEEL_POOL_CALLER_RUNS)
		return run_inline(p, s);
	if (p->block_timeout > 0)
		until = add_sat(real_now(), p->block_timeout);
	for (;;) {
		int err;

		/* Shutdown may have begun while this thread waited. */
		if (p->stopping)
			return -ESHUTDOWN;
		if (p->count < p->size)
			return 1;
		if (own && p->blocked_workers + 1 >= p->threads)
			return run_inline(p, s);
		p->blocked++;
		p->blocked_workers += own;
		err = cond_wait_until(&p->not_full, &p->mu, until);
		p->blocked--;
		if (p->room_signalled > 0)
			p->room_signalled--;
		p->blocked_workers -= own;
		if (err == ETIMEDOUT && p->count == p->size && !p->stopping)
			return -EAGAIN;
	}
}

int keel_pool_submit(struct keel_pool *p, keel_task_fn fn, void *arg,
		     const struct keel_task_options *opt)
{
	struct slot s;
	int wake = 0, err;
	size_t i;

	if (p == NULL || fn == NULL || (opt != NULL && opt->deadline < 0))
		return -EINVAL;
	s.fn = fn;
	s.arg = arg;
	s.name = opt != NULL ? opt->name : NULL;
	s.on_drop = opt != NULL ? opt->on_drop : NULL;
	s.parent = opt != NULL ? opt->cancel : NULL;
	s.deadline = opt != NULL ? opt->deadline : 0;
	s.timed = __atomic_load_n(&p->time_next, __ATOMIC_RELAXED);
	s.submitted = s.timed ? p->clock->now(p->clock) : 0;

	pthread_mutex_lock(&p->mu);
	if (KEEL_UNLIKELY(p->stopping)) {
		err = -ESHUTDOWN;
		goto reject;
	}
	if (KEEL_UNLIKELY(s.deadline > 0 && !p->wd_started))
		watchdog_start(p);
	if (KEEL_UNLIKELY(p->count == p->size)) {
		err = submit_full(p, &s);
		if (err == 0)
			return 0; /* ran here; mu released */
		if (err < 0)
			goto reject;
	}
	if (p->idle > p->signalled) {
		p->signalled++;
		wake = 1;
	} else if (p->threads < p->max_threads) {
		/* A min_threads = 0 pool with no thread to run the task
		 * must not queue it. */
		if (worker_spawn(p) != 0 && p->threads == 0) {
			err = -EAGAIN;
			goto reject;
		}
	}
	i = p->head + p->count;
	p->ring[i < p->size ? i : i - p->size] = s; /* no division held */
	p->count++;
	p->submitted++;
	sample_submit(p, s.timed);
	if (wake)
		pthread_cond_signal(&p->not_empty);
	pthread_mutex_unlock(&p->mu);
	return 0;

reject:
	p->rejected++;
	pthread_mutex_unlock(&p->mu);
	return err;
}

/* ------------------------------------------------------------------------
 * A running task's context
 * ------------------------------------------------------------------------ */

struct keel_cancel *keel_task_token(struct keel_task *t)
{
	return t != NULL ? &t->tok : NULL;
}

int keel_task_cancelled(struct keel_task *t)
{
	return t != NULL ? keel_cancel_err(&t->tok) : 0;
}

int64_t keel_task_deadline(struct keel_task *t)
{
	return t != NULL ? keel_cancel_deadline(&t->tok) : KEEL_NEVER;
}

const char *keel_task_name(struct keel_task *t)
{
	return t != NULL ? t->name : "";
}

/* ------------------------------------------------------------------------
 * The watchdog
 * ------------------------------------------------------------------------ */

/* Under mu: the first running task past its deadline and not yet reported;
 * marks it, cancels its token (it cannot go away while mu is held) and
 * copies what the handler is told. */
static int find_overdue(struct keel_pool *p, int64_t now,
			struct keel_task_overdue *info)
{
	struct keel_task *t = NULL, *it;
	int i;

	for (i = 0; i < p->max_threads && t == NULL; i++) {
		it = __atomic_load_n(&p->workers[i].cur, __ATOMIC_SEQ_CST);
		if (it != NULL && !it->overdue && now >= it->deadline)
			t = it;
	}
	for (it = p->inline_tasks; it != NULL && t == NULL; it = it->next)
		if (!it->overdue && now >= it->deadline)
			t = it;
	if (t == NULL)
		return 0;
	t->overdue = 1;
	p->overdue++;
	keel_cancel_cancel(&t->tok, -ETIMEDOUT);
	info->pool = p->name;
	info->task = t->name;
	info->worker = t->worker;
	info->started = t->started;
	info->deadline = t->deadline;
	info->now = now;
	return 1;
}

struct overdue_call {
	struct keel_pool *pool;
	const struct keel_task_overdue *info;
};

/* As for the panic handler: a handler that panics loses its report, and
 * the watchdog goes on. */
static void overdue_body(void *arg)
{
	struct overdue_call *h = arg;

	keel_defer(swallow, NULL);
	h->pool->on_overdue(h->info, h->pool->overdue_ud);
}

static void *watchdog_main(void *arg)
{
	struct keel_pool *p = arg;
	const struct keel_clock *c = p->clock;

	set_thread_name(p->name, "wd");
	for (;;) {
		struct keel_task_overdue info;
		int64_t now;

		keel_clock_wait_until(c, add_sat(c->now(c), p->wd_interval),
				      &p->wd_stop);
		if (__atomic_load_n(&p->wd_stop.reason, __ATOMIC_ACQUIRE))
			break;
		for (;;) {
			pthread_mutex_lock(&p->mu);
			now = c->now(c);
			if (!find_overdue(p, now, &info)) {
				pthread_mutex_unlock(&p->mu);
				break;
			}
			pthread_mutex_unlock(&p->mu);
			/* Outside mu, so the handler may use the pool. */
			if (p->on_overdue != NULL) {
				struct overdue_call h = { p, &info };

				(void)keel_call(overdue_body, &h);
			}
		}
	}
	return NULL;
}

/* Under mu. Without a watchdog, deadlines still cancel the tokens of the
 * tasks that poll them; only the reports are missed, so a failure here is
 * retried at the next submit with a deadline rather than returned. */
static void watchdog_start(struct keel_pool *p)
{
	if (pthread_create(&p->wd_thread, NULL, watchdog_main, p) == 0)
		p->wd_started = 1;
}

/* ------------------------------------------------------------------------
 * Creation, shutdown, statistics
 * ------------------------------------------------------------------------ */

void keel_pool_config_init(struct keel_pool_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->name = "pool";
	cfg->min_threads = 2;
	cfg->max_threads = 0; /* = min_threads */
	cfg->idle_timeout = 10 * KEEL_SEC;
	cfg->queue_size = 1024;
	cfg->when_full = KEEL_POOL_BLOCK;
	cfg->watchdog_interval = 100 * KEEL_MSEC;
}

static int config_ok(const struct keel_pool_config *cfg, int max)
{
	return cfg->min_threads >= 0 && max >= 1 && max >= cfg->min_threads &&
	       cfg->idle_timeout >= 0 && cfg->queue_size >= 1 &&
	       (cfg->when_full == KEEL_POOL_BLOCK ||
		cfg->when_full == KEEL_POOL_REJECT ||
		cfg->when_full == KEEL_POOL_CALLER_RUNS) &&
	       cfg->block_timeout >= 0 && cfg->task_deadline >= 0 &&
	       cfg->watchdog_interval > 0;
}

static void pool_destroy(struct keel_pool *p)
{
	keel_cancel_destroy(&p->wd_stop);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->not_full);
	pthread_cond_destroy(&p->not_empty);
	pthread_mutex_destroy(&p->mu);
	free(p->workers);
	free(p->ring);
	free(p->name);
	free(p);
}

int keel_pool_new(const struct keel_pool_config *cfg, struct keel_pool **out)
{
	struct keel_pool *p;
	int max, i, err = 0;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL)
		return -EINVAL;
	max = cfg->max_threads != 0 ? cfg->max_threads : cfg->min_threads;
	if (!config_ok(cfg, max))
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->name = strdup(cfg->name != NULL ? cfg->name : "pool");
	p->ring = calloc(cfg->queue_size, sizeof(*p->ring));
	p->workers = calloc((size_t)max, sizeof(*p->workers));
	if (p->name == NULL || p->ring == NULL || p->workers == NULL) {
		free(p->workers);
		free(p->ring);
		free(p->name);
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	cond_init_mono(&p->not_empty);
	cond_init_mono(&p->not_full);
	cond_init_mono(&p->done);
	p->size = cfg->queue_size;
	p->min_threads = cfg->min_threads;
	p->max_threads = max;
	p->when_full = cfg->when_full;
	p->idle_timeout = cfg->idle_timeout;
	p->block_timeout = cfg->block_timeout;
	p->task_deadline = cfg->task_deadline;
	p->wd_interval = cfg->watchdog_interval;
	p->clock = cfg->clock != NULL ? cfg->clock : keel_clock_system();
	p->on_panic = cfg->on_panic;
	p->panic_ud = cfg->panic_ud;
	p->on_overdue = cfg->on_overdue;
	p->overdue_ud = cfg->overdue_ud;
	p->stride = 1;
	p->time_next = 1;
	keel_cancel_init(&p->wd_stop, p->clock, NULL);
	for (i = 0; i < max; i++) {
		p->workers[i].pool = p;
		p->workers[i].index = i;
	}

	pthread_mutex_lock(&p->mu);
	for (i = 0; i < p->min_threads && err == 0; i++)
		err = worker_spawn(p);
	if (err == 0 && p->task_deadline > 0) {
		watchdog_start(p);
		if (!p->wd_started)
			err = -EAGAIN;
	}
	pthread_mutex_unlock(&p->mu);
	if (err != 0) {
		keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0);
		pool_destroy(p);
		return err == -ENOMEM ? -ENOMEM : -EAGAIN;
	}
	*out = p;
	return 0;
}

/* Under mu: stop taking tasks; a cancelling stop also drops the queue and
 * cancels the running tasks' tokens. A drain may be turned into a cancel
 * by a later call, never the other way. */
static void begin_stop(struct keel_pool *p, enum keel_pool_stop how)
{
	struct keel_task *t;
	int i;

	if (!p->stopping) {
		p->stopping = 1;
		pthread_cond_broadcast(&p->not_empty);
		pthread_cond_broadcast(&p->not_full);
	}
	if (how != KEEL_POOL_CANCEL ||
	    __atomic_load_n(&p->cancelling, __ATOMIC_RELAXED))
		return;
	__atomic_store_n(&p->cancelling, 1, __ATOMIC_SEQ_CST);
	p->cancelled += p->count;
	/* No submit succeeds once stopping, so the dropped slots stay as they
	 * are until run_drops hands them to their owners. */
	p->drop_head = p->head;
	p->drop_count = p->count;
	p->count = 0;
	p->head = 0;
	for (i = 0; i < p->max_threads; i++) {
		t = __atomic_load_n(&p->workers[i].cur, __ATOMIC_SEQ_CST);
		if (t != NULL)
			keel_cancel_cancel(&t->tok, -ECANCELED);
	}
	for (t = p->inline_tasks; t != NULL; t = t->next)
		keel_cancel_cancel(&t->tok, -ECANCELED);
}

/* Every worker has left and no caller-runs task runs: join the threads.
 * Nothing else touches the worker slots or the watchdog once stopping. */
static void reap_all(struct keel_pool *p)
{
	int i;

	if (p->wd_started) {
		keel_cancel_cancel(&p->wd_stop, -ECANCELED);
		pthread_join(p->wd_thread, NULL);
		p->wd_started = 0;
	}
	for (i = 0; i < p->max_threads; i++)
		worker_reap(&p->workers[i]);
}

/* Under mu, released around the calls: tells the owners of the tasks a
 * cancelling stop dropped (their on_drop), once each, outside the lock. */
static void run_drops(struct keel_pool *p)
{
	size_t head = p->drop_head, n = p->drop_count, i;

	if (n == 0)
		return;
	p->drop_count = 0;
	pthread_mutex_unlock(&p->mu);
	for (i = 0; i < n; i++) {
		const struct slot *s = &p->ring[(head + i) % p->size];

		if (s->on_drop != NULL)
			s->on_drop(s->arg);
	}
	pthread_mutex_lock(&p->mu);
}

int keel_pool_shutdown(struct keel_pool *p, enum keel_pool_stop how,
		       int64_t timeout)
{
	int64_t until = KEEL_NEVER;

	if (p == NULL || timeout < 0 ||
	    (how != KEEL_POOL_DRAIN && how != KEEL_POOL_CANCEL))
		return -EINVAL;
	if (timeout > 0)
		until = add_sat(real_now(), timeout);
	pthread_mutex_lock(&p->mu);
	begin_stop(p, how);
	run_drops(p);
	if (in_own_task(p)) {
		/* It would wait for itself. The pool stops all the same. */
		pthread_mutex_unlock(&p->mu);
		return -EDEADLK;
	}
	while (!p->reaped) {
		if (p->threads == 0 && p->inline_running == 0 && !p->reaping) {
			p->reaping = 1;
			pthread_mutex_unlock(&p->mu);
			/* The watchdog takes mu: join it outside. */
			reap_all(p);
			pthread_mutex_lock(&p->mu);
			p->reaped = 1;
			pthread_cond_broadcast(&p->done);
			break;
		}
		if (cond_wait_until(&p->done, &p->mu, until) == ETIMEDOUT &&
		    !p->reaped) {
			pthread_mutex_unlock(&p->mu);
			return -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return 0;
}

void keel_pool_stats(struct keel_pool *p, struct keel_pool_stats *s)
{
	memset(s, 0, sizeof(*s));
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	s->submitted = p->submitted;
	s->rejected = p->rejected;
	s->completed = p->completed;
	s->panicked = p->panicked;
	s->cancelled = p->cancelled;
	s->caller_runs = p->caller_runs;
	s->overdue = p->overdue;
	s->queued = p->count;
	s->running = p->running;
	s->threads = (uint64_t)p->threads;
	s->latency_count = p->lat_count;
	s->latency_avg_ns =
		p->lat_count ? p->lat_sum / (double)p->lat_count : 0;
	s->latency_max_ns = p->lat_max;
	pthread_mutex_unlock(&p->mu);
}

void keel_pool_free(struct keel_pool *p)
{
	if (p == NULL)
		return;
	if (keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0) == -EDEADLK)
		keel_panic("keel_pool_free called from a task of the same "
			   "pool");
	pool_destroy(p);
}
