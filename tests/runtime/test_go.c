/* KEEL_TEST_LABELS: threads */
/*
 * tests/runtime/test_go.c - keel_go: named, panic-isolated threads.
 *
 * A thread with a panic handler survives its own panics and faults (the
 * handler gets the message, kind, fault and stack after every deferred call
 * ran; the rest of the process never notices); a thread without one ends
 * the process with the crash report naming it, and exit status 2. Fault
 * sites are KEEL_TEST_NO_SANITIZE and read their operands from volatile
 * globals, as in tests/core/test_fault.c.
 */
#define _GNU_SOURCE
#include <keel.h>
#include <keel/go.h>
#include "keel_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define NIL_MSG "runtime error: invalid memory address or nil pointer dereference"
#define DIV_MSG "runtime error: integer divide by zero"
#define STACK_MSG "runtime error: stack overflow"

static int *volatile nil_int;
static volatile int vzero, vone = 1;
static volatile int vsink;
static volatile int never;

static int self_tid(void)
{
	return (int)syscall(SYS_gettid);
}

/* The calling thread's name as the kernel shows it in /proc. */
static void read_comm(char *buf, size_t n)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", self_tid());
	f = fopen(path, "r");
	CHECK(f != NULL);
	CHECK(fgets(buf, (int)n, f) != NULL);
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

/* ------------------------------------------------------------------------
 * Fault sites
 * ------------------------------------------------------------------------ */

void go_nil_site(void);
void go_divide_site(void);
int go_recurse(int depth);

KEEL_TEST_NO_SANITIZE void go_nil_site(void)
{
	vsink = *nil_int;
}

KEEL_TEST_NO_SANITIZE void go_divide_site(void)
{
	vsink = vone / vzero;
}

KEEL_TEST_NO_SANITIZE int go_recurse(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (never)
		return pad[0];
	return go_recurse(depth + 1) + pad[0];
}

/* ------------------------------------------------------------------------
 * Running and joining
 * ------------------------------------------------------------------------ */

struct plain {
	int ran;
	int tid;
	char comm[32];
	char pname[32];
	int deferred;
};

static void mark_deferred(void *arg)
{
	((struct plain *)arg)->deferred++;
}

static void plain_fn(void *arg)
{
	struct plain *p = arg;

	/* fn runs in a scope: it can defer at its top level. */
	keel_defer(mark_deferred, p);
	p->ran = 1;
	p->tid = self_tid();
	read_comm(p->comm, sizeof(p->comm));
	CHECK_INT(pthread_getname_np(pthread_self(), p->pname, sizeof(p->pname)),
		  ==, 0);
}

TEST(runs_and_joins)
{
	struct keel_go_options opt;
	struct keel_thread *t = NULL;
	struct plain p;

	memset(&p, 0, sizeof(p));
	keel_go_options_init(&opt);
	opt.name = "runner";
	CHECK_INT(keel_go(plain_fn, &p, &opt, &t), ==, 0);
	CHECK(t != NULL);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_INT(p.ran, ==, 1);
	CHECK_INT(p.deferred, ==, 1);
	CHECK_INT(p.tid, !=, self_tid());
	CHECK_STR(p.comm, "runner");
	CHECK_STR(p.pname, "runner");
	keel_test_leak_check();
}

TEST(default_options)
{
	struct keel_go_options opt;
	struct keel_thread *t;
	struct plain p;

	keel_go_options_init(&opt);
	CHECK_STR(opt.name, "keel-go");
	CHECK(opt.on_panic == NULL);
	CHECK(opt.panic_ud == NULL);
	CHECK_INT(opt.stack_size, ==, 0);

	memset(&p, 0, sizeof(p));
	CHECK_INT(keel_go(plain_fn, &p, NULL, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_STR(p.comm, "keel-go");
	CHECK_STR(p.pname, "keel-go");
}

TEST(long_name_is_truncated_to_15_bytes)
{
	struct keel_go_options opt;
	struct keel_thread *t;
	struct plain p;

	memset(&p, 0, sizeof(p));
	keel_go_options_init(&opt);
	opt.name = "a-very-long-thread-name";
	CHECK_INT(keel_go(plain_fn, &p, &opt, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_STR(p.comm, "a-very-long-thr");
	CHECK_STR(p.pname, "a-very-long-thr");
}

static void rename_fn(void *arg)
{
	struct plain *p = arg;

	keel_thread_set_name("renamed-myself-and-more");
	read_comm(p->comm, sizeof(p->comm));
	keel_thread_set_name(NULL); /* ignored */
	read_comm(p->pname, sizeof(p->pname));
}

TEST(thread_set_name)
{
	struct keel_thread *t;
	struct plain p;
	char comm[32];

	memset(&p, 0, sizeof(p));
	CHECK_INT(keel_go(rename_fn, &p, NULL, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_STR(p.comm, "renamed-myself-");
	CHECK_STR(p.pname, "renamed-myself-");

	keel_thread_set_name("main-x");
	read_comm(comm, sizeof(comm));
	CHECK_STR(comm, "main-x");
}

struct stack_probe {
	size_t size;
};

static void stack_fn(void *arg)
{
	struct stack_probe *s = arg;
	pthread_attr_t attr;
	void *addr;

	CHECK_INT(pthread_getattr_np(pthread_self(), &attr), ==, 0);
	CHECK_INT(pthread_attr_getstack(&attr, &addr, &s->size), ==, 0);
	pthread_attr_destroy(&attr);
}

TEST(stack_size)
{
	struct keel_go_options opt;
	struct keel_thread *t;
	struct stack_probe s = { 0 };

	keel_go_options_init(&opt);
	opt.stack_size = 3 * 1024 * 1024;
	CHECK_INT(keel_go(stack_fn, &s, &opt, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_INT(s.size, >=, 3 * 1024 * 1024);
	CHECK_INT(s.size, <, 4 * 1024 * 1024);

	/* Below PTHREAD_STACK_MIN: refused, nothing started. */
	opt.stack_size = 1;
	t = NULL;
	CHECK_INT(keel_go(stack_fn, &s, &opt, &t), ==, -EINVAL);
	CHECK(t == NULL);
}

TEST(bad_arguments)
{
	struct keel_thread *t = NULL;

	CHECK_INT(keel_go(NULL, NULL, NULL, &t), ==, -EINVAL);
	CHECK(t == NULL);
	CHECK_INT(keel_go_join(NULL), ==, -EINVAL);
}

static void count_fn(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

/* Handles are freed by join; run under ASan this finds a leak per thread. */
TEST(many_threads_no_leak)
{
	struct keel_thread *t[16];
	atomic_int n = 0;
	int round, i;

	for (round = 0; round < 20; round++) {
		for (i = 0; i < 16; i++)
			CHECK_INT(keel_go(count_fn, &n, NULL, &t[i]), ==, 0);
		for (i = 0; i < 16; i++)
			CHECK_INT(keel_go_join(t[i]), ==, 0);
	}
	CHECK_INT(atomic_load(&n), ==, 20 * 16);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * A thread with a panic handler
 * ------------------------------------------------------------------------ */

struct caught {
	int calls;
	int on_tid;               /* the thread the handler ran on */
	int fn_tid;
	char msg[160];
	enum keel_panic_kind kind;
	struct keel_fault fault;
	size_t nframes;
	int frames_nonnull;
	struct keel_error *err;   /* kept past the handler */
	char ev[256];             /* the order things happened in */
};

static void ev(struct caught *c, const char *what)
{
	size_t n = strlen(c->ev);

	snprintf(c->ev + n, sizeof(c->ev) - n, "%s%s", n ? "," : "", what);
}

static void handler(const struct keel_panic *p, void *ud)
{
	struct caught *c = ud;
	void *const *frames;
	size_t i;

	c->calls++;
	c->on_tid = self_tid();
	snprintf(c->msg, sizeof(c->msg), "%s", keel_panic_message(p));
	c->kind = keel_panic_kind(p);
	c->fault = *keel_panic_fault(p);
	c->nframes = keel_panic_stack(p, &frames);
	c->frames_nonnull = 1;
	for (i = 0; i < c->nframes; i++)
		if (frames[i] == NULL)
			c->frames_nonnull = 0;
	c->err = keel_error_from_panic(p);
	ev(c, "handler");
}

static void ev_deferred(void *arg)
{
	ev(arg, "deferred");
}

static void ev_inner(void *arg)
{
	ev(arg, "inner");
}

static void start_with_handler(void (*fn)(void *), struct caught *c,
			       const char *name, struct keel_thread **t)
{
	struct keel_go_options opt;

	keel_go_options_init(&opt);
	opt.name = name;
	opt.on_panic = handler;
	opt.panic_ud = c;
	CHECK_INT(keel_go(fn, c, &opt, t), ==, 0);
}

static void check_caught(struct caught *c, enum keel_panic_kind kind,
			 const char *msg)
{
	CHECK_INT(c->calls, ==, 1);
	CHECK_STR(c->msg, msg);
	CHECK_INT(c->kind, ==, kind);
	CHECK_INT(c->nframes, >, 0);
	CHECK(c->frames_nonnull);
	/* The handler runs on the dying thread, after its deferred calls. */
	CHECK_INT(c->on_tid, ==, c->fn_tid);
	CHECK_STR(c->ev, "inner,deferred,handler");
	CHECK_INT(keel_error_code(c->err), ==, KEEL_EPANIC);
	CHECK_STR(keel_error_message(c->err), msg);
	CHECK_INT(keel_error_panic_kind(c->err), ==, (int)kind);
	keel_error_free(c->err);
	c->err = NULL;
}

static void panics_fn(void *arg)
{
	struct caught *c = arg;

	c->fn_tid = self_tid();
	keel_defer(ev_deferred, c);
	KEEL_SCOPE {
		keel_defer(ev_inner, c);
		keel_panic("boom in thread");
	}
	ev(c, "not reached");
}

TEST(handler_receives_panic)
{
	struct keel_thread *t;
	struct caught c;

	memset(&c, 0, sizeof(c));
	start_with_handler(panics_fn, &c, "panicky", &t);
	CHECK_INT(keel_go_join(t), ==, 1);
	check_caught(&c, KEEL_PANIC_MESSAGE, "boom in thread");
	CHECK_INT(c.fault.signo, ==, 0);
	keel_test_leak_check();
}

static void returns_fn(void *arg)
{
	struct caught *c = arg;

	c->fn_tid = self_tid();
	keel_defer(ev_deferred, c);
}

TEST(handler_not_called_without_panic)
{
	struct keel_thread *t;
	struct caught c;

	memset(&c, 0, sizeof(c));
	start_with_handler(returns_fn, &c, "calm", &t);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_INT(c.calls, ==, 0);
	CHECK_STR(c.ev, "deferred");
}

static void nil_fn(void *arg)
{
	struct caught *c = arg;

	c->fn_tid = self_tid();
	keel_defer(ev_deferred, c);
	KEEL_SCOPE {
		keel_defer(ev_inner, c);
		go_nil_site();
	}
}

TEST(handler_receives_nil_dereference)
{
	struct keel_thread *t;
	struct caught c;

	memset(&c, 0, sizeof(c));
	start_with_handler(nil_fn, &c, "nil-deref", &t);
	CHECK_INT(keel_go_join(t), ==, 1);
	check_caught(&c, KEEL_PANIC_NIL_DEREF, NIL_MSG);
	CHECK_INT(c.fault.signo, ==, SIGSEGV);
	CHECK(c.fault.addr == NULL);
	keel_test_leak_check();
}

static void divide_fn(void *arg)
{
	struct caught *c = arg;

	c->fn_tid = self_tid();
	keel_defer(ev_deferred, c);
	KEEL_SCOPE {
		keel_defer(ev_inner, c);
		go_divide_site();
	}
}

TEST(handler_receives_divide_by_zero)
{
	struct keel_thread *t;
	struct caught c;

	memset(&c, 0, sizeof(c));
	start_with_handler(divide_fn, &c, "divider", &t);
	CHECK_INT(keel_go_join(t), ==, 1);
	check_caught(&c, KEEL_PANIC_DIVIDE, DIV_MSG);
	CHECK_INT(c.fault.signo, ==, SIGFPE);
}

static void overflow_fn(void *arg)
{
	struct caught *c = arg;

	c->fn_tid = self_tid();
	keel_defer(ev_deferred, c);
	KEEL_SCOPE {
		keel_defer(ev_inner, c);
		vsink = go_recurse(0);
	}
}

TEST(handler_receives_stack_overflow)
{
	struct keel_go_options opt;
	struct keel_thread *t;
	struct caught c;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	memset(&c, 0, sizeof(c));
	start_with_handler(overflow_fn, &c, "deep", &t);
	CHECK_INT(keel_go_join(t), ==, 1);
	check_caught(&c, KEEL_PANIC_STACK_OVERFLOW, STACK_MSG);
	CHECK_INT(c.fault.signo, ==, SIGSEGV);

	/* And on a small stack of the caller's choosing. */
	memset(&c, 0, sizeof(c));
	keel_go_options_init(&opt);
	opt.on_panic = handler;
	opt.panic_ud = &c;
	opt.stack_size = 256 * 1024;
	CHECK_INT(keel_go(overflow_fn, &c, &opt, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 1);
	check_caught(&c, KEEL_PANIC_STACK_OVERFLOW, STACK_MSG);
}

/* The same thread faults again and again: each fault is caught (the signal
 * is not left blocked by the first). */
static void repeat_fn(void *arg)
{
	int *n = arg;
	int i;

	for (i = 0; i < 5; i++)
		KEEL_SCOPE {
			keel_defer(keel_recover_error, NULL);
			go_nil_site();
		}
	(*n)++;
	go_divide_site();
}

static void count_handler(const struct keel_panic *p, void *ud)
{
	if (keel_panic_kind(p) == KEEL_PANIC_DIVIDE)
		(*(int *)ud)++;
}

TEST(recovered_faults_inside_then_handler)
{
	struct keel_go_options opt;
	struct keel_thread *t;
	int n = 0;

	keel_go_options_init(&opt);
	opt.on_panic = count_handler;
	opt.panic_ud = &n;
	CHECK_INT(keel_go(repeat_fn, &n, &opt, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 1);
	CHECK_INT(n, ==, 2);
}

/* ------------------------------------------------------------------------
 * The rest of the process does not notice
 * ------------------------------------------------------------------------ */

struct spinner {
	atomic_int stop;
	atomic_long count;
};

static void spin_fn(void *arg)
{
	struct spinner *s = arg;

	while (!atomic_load(&s->stop)) {
		atomic_fetch_add(&s->count, 1);
		usleep(100);
	}
}

TEST(other_threads_keep_running)
{
	struct keel_thread *spin, *t;
	struct spinner s;
	struct caught c;
	long before;
	double t0;

	atomic_init(&s.stop, 0);
	atomic_init(&s.count, 0);
	CHECK_INT(keel_go(spin_fn, &s, NULL, &spin), ==, 0);
	while (atomic_load(&s.count) == 0)
		usleep(100);

	memset(&c, 0, sizeof(c));
	start_with_handler(nil_fn, &c, "nil-deref", &t);
	CHECK_INT(keel_go_join(t), ==, 1);
	memset(&c, 0, sizeof(c));
	start_with_handler(panics_fn, &c, "panicky", &t);
	CHECK_INT(keel_go_join(t), ==, 1);

	/* The spinner is still alive and counting. */
	before = atomic_load(&s.count);
	t0 = keel_test_now();
	while (atomic_load(&s.count) < before + 10 && keel_test_now() - t0 < 10)
		usleep(100);
	CHECK_INT(atomic_load(&s.count), >=, before + 10);
	atomic_store(&s.stop, 1);
	CHECK_INT(keel_go_join(spin), ==, 0);
}

#define NFAULTERS 8

static pthread_barrier_t fault_start;

struct faulter {
	int id;
	int fn_tid;
	int handler_tid;
	int handler_id;           /* the ud the handler got */
	enum keel_panic_kind kind;
	size_t nframes;
	int deferred;
};

static void faulter_deferred(void *arg)
{
	((struct faulter *)arg)->deferred = 1;
}

static void faulter_fn(void *arg)
{
	struct faulter *f = arg;

	f->fn_tid = self_tid();
	keel_defer(faulter_deferred, f);
	pthread_barrier_wait(&fault_start);
	if (f->id % 3 == 0)
		go_nil_site();
	else if (f->id % 3 == 1)
		go_divide_site();
	else
		keel_panicf("panic %d", f->id);
}

static void faulter_handler(const struct keel_panic *p, void *ud)
{
	struct faulter *f = ud;

	f->handler_tid = self_tid();
	f->handler_id = f->id;
	f->kind = keel_panic_kind(p);
	f->nframes = keel_panic_stack(p, NULL);
}

TEST(eight_threads_fault_at_once)
{
	static const enum keel_panic_kind want[3] = {
		KEEL_PANIC_NIL_DEREF, KEEL_PANIC_DIVIDE, KEEL_PANIC_MESSAGE
	};
	struct keel_thread *t[NFAULTERS];
	struct faulter f[NFAULTERS];
	struct keel_go_options opt;
	char name[16];
	int round, i;

	for (round = 0; round < 5; round++) {
		memset(f, 0, sizeof(f));
		pthread_barrier_init(&fault_start, NULL, NFAULTERS);
		for (i = 0; i < NFAULTERS; i++) {
			f[i].id = i;
			snprintf(name, sizeof(name), "faulter-%d", i);
			keel_go_options_init(&opt);
			opt.name = name;
			opt.on_panic = faulter_handler;
			opt.panic_ud = &f[i];
			CHECK_INT(keel_go(faulter_fn, &f[i], &opt, &t[i]), ==, 0);
		}
		for (i = 0; i < NFAULTERS; i++)
			CHECK_INT(keel_go_join(t[i]), ==, 1);
		pthread_barrier_destroy(&fault_start);
		for (i = 0; i < NFAULTERS; i++) {
			CHECK_INT(f[i].handler_id, ==, i);
			CHECK_INT(f[i].handler_tid, ==, f[i].fn_tid);
			CHECK_INT(f[i].kind, ==, want[i % 3]);
			CHECK_INT(f[i].nframes, >, 0);
			CHECK_INT(f[i].deferred, ==, 1);
		}
	}
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Detached threads
 * ------------------------------------------------------------------------ */

struct detached {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int tid;
	char comm[32];
	char msg[64];
};

static void detached_signal(struct detached *d)
{
	pthread_mutex_lock(&d->mu);
	d->done++;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

static void detached_fn(void *arg)
{
	struct detached *d = arg;

	d->tid = self_tid();
	read_comm(d->comm, sizeof(d->comm));
	detached_signal(d);
}

static void detached_panic_fn(void *arg)
{
	struct detached *d = arg;

	d->tid = self_tid();
	keel_panic("detached boom");
}

static void detached_handler(const struct keel_panic *p, void *ud)
{
	struct detached *d = ud;

	snprintf(d->msg, sizeof(d->msg), "%s", keel_panic_message(p));
	detached_signal(d);
}

static void detached_wait(struct detached *d, int n)
{
	pthread_mutex_lock(&d->mu);
	while (d->done < n)
		pthread_cond_wait(&d->cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
}

/* A detached thread's task disappears on its own; nothing to join. */
static void wait_task_gone(int tid)
{
	char path[64];
	struct stat st;
	double t0 = keel_test_now();

	snprintf(path, sizeof(path), "/proc/self/task/%d", tid);
	while (stat(path, &st) == 0) {
		CHECK(keel_test_now() - t0 < 10);
		usleep(1000);
	}
}

TEST(detached_threads)
{
	struct keel_go_options opt;
	struct detached d;
	int tid;

	memset(&d, 0, sizeof(d));
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);

	keel_go_options_init(&opt);
	opt.name = "loose";
	CHECK_INT(keel_go(detached_fn, &d, &opt, NULL), ==, 0);
	detached_wait(&d, 1);
	CHECK_STR(d.comm, "loose");
	pthread_mutex_lock(&d.mu);
	tid = d.tid;
	pthread_mutex_unlock(&d.mu);
	wait_task_gone(tid);

	/* A detached thread with a handler survives its panic, too. */
	opt.name = "loose-panic";
	opt.on_panic = detached_handler;
	opt.panic_ud = &d;
	CHECK_INT(keel_go(detached_panic_fn, &d, &opt, NULL), ==, 0);
	detached_wait(&d, 2);
	CHECK_STR(d.msg, "detached boom");
	pthread_mutex_lock(&d.mu);
	tid = d.tid;
	pthread_mutex_unlock(&d.mu);
	wait_task_gone(tid);

	/* Each detached thread freed its own handle and keel state. */
	keel_test_leak_check();
	pthread_cond_destroy(&d.cv);
	pthread_mutex_destroy(&d.mu);
}

/* ------------------------------------------------------------------------
 * No handler: the crash report, exit 2
 * ------------------------------------------------------------------------ */

/* Memory the child writes and the parent reads after the child is gone. */
struct shared {
	int tid;
	int deferred;
};

static struct shared *shared_page(void)
{
	void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED);
	memset(p, 0, sizeof(struct shared));
	return p;
}

static void shared_deferred(void *arg)
{
	((struct shared *)arg)->deferred = 1;
}

static void unhandled_panic_fn(void *arg)
{
	struct shared *sh = arg;

	sh->tid = self_tid();
	keel_defer(shared_deferred, sh);
	keel_panic("nobody recovers this");
}

static void unhandled_nil_fn(void *arg)
{
	struct shared *sh = arg;

	sh->tid = self_tid();
	keel_defer(shared_deferred, sh);
	go_nil_site();
}

struct crash_case {
	void (*fn)(void *);
	struct shared *sh;
};

static void crash_child_main(void *arg)
{
	struct crash_case *cc = arg;
	struct keel_go_options opt;
	struct keel_thread *t;

	keel_thread_set_name("main-thread");
	keel_go_options_init(&opt);
	opt.name = "doomed-worker-7";
	if (keel_go(cc->fn, cc->sh, &opt, &t) != 0)
		_exit(5);
	(void)keel_go_join(t);
	printf("survived\n");
}

static void run_crash(void (*fn)(void *), struct keel_child *ch,
		      struct shared *sh)
{
	struct crash_case cc = { fn, sh };

	keel_test_run_child(crash_child_main, &cc, ch);
	if (!ch->exited || ch->code != 2)
		KEEL_TEST_FAIL("child: exited %d, code %d, signal %d, output:\n%s",
			       ch->exited, ch->code, ch->signo, ch->out);
	CHECK(strstr(ch->out, "survived") == NULL);
	CHECK_INT(sh->tid, >, 0);
	/* As in Go, an unrecovered panic runs the deferred calls first. */
	CHECK_INT(sh->deferred, ==, 1);
}

TEST(no_handler_panic_crashes_with_report)
{
	struct shared *sh = shared_page();
	struct keel_child ch;
	char want[160];

	run_crash(unhandled_panic_fn, &ch, sh);
	snprintf(want, sizeof(want),
		 "panic: nobody recovers this\n\nthread %d \"doomed-worker-7\" "
		 "[running]:\n", sh->tid);
	if (strncmp(ch.out, want, strlen(want)) != 0)
		KEEL_TEST_FAIL("report does not start with:\n%s--- got:\n%s",
			       want, ch.out);
	CHECK_CONTAINS(ch.out, "unhandled_panic_fn");
	CHECK(strstr(ch.out, "main-thread") == NULL);
}

TEST(no_handler_fault_crashes_with_report)
{
	struct shared *sh = shared_page();
	struct keel_child ch;
	char want[160];

	run_crash(unhandled_nil_fn, &ch, sh);
	CHECK_CONTAINS(ch.out, "panic: " NIL_MSG "\n[signal SIGSEGV: "
			       "segmentation violation code=0x1 addr=0x0 pc=0x");
	snprintf(want, sizeof(want),
		 "]\n\nthread %d \"doomed-worker-7\" [running]:\n", sh->tid);
	CHECK_CONTAINS(ch.out, want);
	CHECK_CONTAINS(ch.out, "go_nil_site");
}

static void handler_panics(const struct keel_panic *p, void *ud)
{
	(void)p;
	(void)ud;
	keel_panic("the handler itself");
}

static void handler_panics_child(void *arg)
{
	struct keel_go_options opt;
	struct keel_thread *t;

	keel_go_options_init(&opt);
	opt.name = "bad-handler";
	opt.on_panic = handler_panics;
	if (keel_go(unhandled_panic_fn, arg, &opt, &t) != 0)
		_exit(5);
	(void)keel_go_join(t);
	printf("survived\n");
}

/* A handler that panics has nobody above it: the crash report shows both
 * panics, the first one recovered by the handler's scope. */
TEST(handler_that_panics_crashes)
{
	struct shared *sh = shared_page();
	struct keel_child ch;
	char want[200];

	keel_test_run_child(handler_panics_child, sh, &ch);
	if (!ch.exited || ch.code != 2)
		KEEL_TEST_FAIL("child: exited %d, code %d, signal %d, output:\n%s",
			       ch.exited, ch.code, ch.signo, ch.out);
	snprintf(want, sizeof(want),
		 "panic: nobody recovers this [recovered]\n"
		 "\tpanic: the handler itself\n\nthread %d \"bad-handler\" "
		 "[running]:\n", sh->tid);
	if (strncmp(ch.out, want, strlen(want)) != 0)
		KEEL_TEST_FAIL("report does not start with:\n%s--- got:\n%s",
			       want, ch.out);
}

/* fn recovers its own panic in a deferred call of its own: the thread
 * returned normally as far as join and the handler are concerned. */
static int self_handler_calls;

static void self_handler(const struct keel_panic *p, void *ud)
{
	(void)p;
	(void)ud;
	self_handler_calls++;
}

static void self_recover(void *arg)
{
	(void)arg;
	(void)keel_recover();
}

static void recovers_itself(void *arg)
{
	(void)arg;
	keel_defer(self_recover, NULL);
	keel_panic("handled inside fn");
}

TEST(join_counts_only_panics_the_handler_got)
{
	struct keel_go_options opt;
	struct keel_thread *t;

	keel_go_options_init(&opt);
	opt.on_panic = self_handler;
	CHECK_INT(keel_go(recovers_itself, NULL, &opt, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 0);
	CHECK_INT(self_handler_calls, ==, 0);
}
