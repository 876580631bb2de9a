/*
 * src/runtime/go.c - keel_go: threads whose function runs inside a scope.
 *
 * The start routine prepares the thread for faults first (alternate signal
 * stack, stack bounds), so even a stack overflow in fn's first frame is a
 * panic, then names the thread from inside: naming it from the creator
 * after pthread_create would race with a thread that crashes at once, and
 * the crash report reads the name of the thread it runs on.
 *
 * With a panic handler, fn runs in a scope whose first deferred call (so
 * the last to run) recovers and hands the panic to the handler: by then
 * every deferred call fn registered has run, as the header promises.
 * Without one, fn still runs in a scope (so it can keel_defer at its top
 * level) but nothing recovers: the panic leaves the thread's outermost
 * scope and keel_panic's own machinery writes the crash report, naming
 * this thread, and exits 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <keel/go.h>

/* The kernel keeps 16 bytes of a thread's name, the NUL included. */
#define NAME_MAX_LEN 15

struct keel_thread {
	pthread_t th;
	void (*fn)(void *arg);
	void *arg;
	keel_panic_handler_fn on_panic;
	void *panic_ud;
	int detached;  /* the thread frees this struct itself */
	int panicked;  /* written by the thread, read after pthread_join */
	char name[NAME_MAX_LEN + 1];
};

static void name_copy(char *dst, const char *src)
{
	size_t n = strnlen(src, NAME_MAX_LEN);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

void keel_thread_set_name(const char *name)
{
	char buf[NAME_MAX_LEN + 1];

	if (name == NULL)
		return;
	/* pthread_setname_np refuses (ERANGE) what the kernel would cut. */
	name_copy(buf, name);
	(void)pthread_setname_np(pthread_self(), buf);
}

void keel_go_options_init(struct keel_go_options *opt)
{
	memset(opt, 0, sizeof(*opt));
	opt->name = "keel-go";
}

/* The outermost scope's first deferred call: runs after all of fn's. */
static void go_recover(void *arg)
{
	struct keel_thread *t = arg;
	const struct keel_panic *p = keel_recover();

	if (p != NULL) {
		/* Only a panic the handler got counts: fn's own deferred
		 * calls may recover one, and then fn simply returned. */
		t->panicked = 1;
		t->on_panic(p, t->panic_ud);
	}
}

static void go_guarded(void *arg)
{
	struct keel_thread *t = arg;

	keel_defer(go_recover, t);
	t->fn(t->arg);
}

static void go_plain(void *arg)
{
	struct keel_thread *t = arg;

	t->fn(t->arg);
}

static void *go_main(void *arg)
{
	struct keel_thread *t = arg;

	/* Without an alternate stack only a stack overflow goes uncaught
	 * (it then crashes with a report); not a reason to skip fn. */
	(void)keel_thread_prepare();
	keel_thread_set_name(t->name);
	if (t->on_panic != NULL) {
		/* The handler is promised the stack where the panic began. */
		keel_panic_capture_stacks(1);
		(void)keel_call(go_guarded, t);
	} else {
		(void)keel_call(go_plain, t);
	}
	if (t->detached)
		free(t);
	return NULL;
}

int keel_go(void (*fn)(void *arg), void *arg,
	    const struct keel_go_options *opt, struct keel_thread **out)
{
	struct keel_go_options defaults;
	struct keel_thread *t;
	pthread_attr_t attr;
	pthread_t th;
	int rc;

	if (fn == NULL)
		return -EINVAL;
	if (opt == NULL) {
		keel_go_options_init(&defaults);
		opt = &defaults;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->on_panic = opt->on_panic;
	t->panic_ud = opt->panic_ud;
	t->detached = out == NULL;
	name_copy(t->name, opt->name != NULL ? opt->name : "keel-go");

	rc = pthread_attr_init(&attr);
	if (rc != 0) {
		free(t);
		return -rc;
	}
	if (opt->stack_size != 0)
		rc = pthread_attr_setstacksize(&attr, opt->stack_size);
	if (rc == 0 && t->detached)
		rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* A detached thread may end and free t before pthread_create
	 * returns, so the id goes to a local first. */
	if (rc == 0)
		rc = pthread_create(&th, &attr, go_main, t);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		free(t);
		return rc == EPERM ? -EAGAIN : -rc;
	}
	if (out != NULL) {
		t->th = th;
		*out = t;
	}
	return 0;
}

int keel_go_join(struct keel_thread *t)
{
	int panicked, rc;

	if (t == NULL)
		return -EINVAL;
	rc = pthread_join(t->th, NULL);
	if (rc != 0)
		return -rc; /* -EDEADLK: t is the calling thread; t stays valid */
	panicked = t->panicked;
	free(t);
	return panicked;
}
