/*
 * src/core/panic.c - scopes, defer, panic and recover.
 *
 * Each thread keeps a stack of deferred calls (one array, grown on demand) and
 * a chain of open scopes; a scope remembers where its deferred calls start.
 * A panic runs the deferred calls itself, on the panicking stack, innermost
 * scope first. Only when a deferred call recovers does it jump: to the
 * recovering scope's jmp_buf, after that scope's remaining deferred calls
 * have run. Scopes use _setjmp, which saves no signal mask: sigsetjmp(env, 1)
 * would cost a system call per scope, and the fault handler restores the mask
 * by returning through sigreturn instead (see signal.c).
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* ------------------------------------------------------------------------
 * Panic records
 * ------------------------------------------------------------------------ */

static struct keel_panic *record_get(struct keel__thread *t)
{
	struct keel_panic *p = t->free;

	if (KEEL_LIKELY(p != NULL)) {
		t->free = p->link;
	} else {
		p = malloc(sizeof(*p));
		if (p != NULL) {
			p->from_pool = 1;
		} else if (t->emergency.msg == NULL) {
			p = &t->emergency; /* out of memory: the spare */
		} else {
			keel__fatal("keel: out of memory for a panic record");
		}
	}
	p->link = NULL;
	p->recovered = 0;
	p->aborted = 0;
	p->depth = 0;
	p->err = NULL;
	p->ptype = NULL;
	p->payload = NULL;
	p->destroy = NULL;
	p->nframes = 0;
	memset(&p->fault, 0, sizeof(p->fault));
	p->msg = p->inline_msg;
	p->inline_msg[0] = '\0';
	return p;
}

static void record_put(struct keel__thread *t, struct keel_panic *p)
{
	if (p->destroy != NULL)
		p->destroy(p->payload);
	keel_error_free(p->err);
	if (p->msg != p->inline_msg)
		free(p->msg);
	p->msg = NULL;
	if (p->from_pool == 2)
		return; /* the emergency record is free again (msg == NULL) */
	p->link = t->free;
	t->free = p;
}

static void record_set_msg(struct keel_panic *p, const char *msg)
{
	size_t n = strlen(msg);

	if (n >= sizeof(p->inline_msg)) {
		char *copy = malloc(n + 1);
		if (copy != NULL) {
			memcpy(copy, msg, n + 1);
			p->msg = copy;
			return;
		}
		n = sizeof(p->inline_msg) - 1; /* truncate rather than fail */
	}
	memcpy(p->inline_msg, msg, n);
	p->inline_msg[n] = '\0';
}

KEEL_PRINTF(2, 0)
static void record_vformat(struct keel_panic *p, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(p->inline_msg, sizeof(p->inline_msg), fmt, ap);
	if (n >= (int)sizeof(p->inline_msg)) {
		char *big = malloc((size_t)n + 1);
		if (big != NULL) {
			vsnprintf(big, (size_t)n + 1, fmt, ap2);
			p->msg = big;
		}
	} else if (n < 0) {
		record_set_msg(p, "panic: bad format");
	}
	va_end(ap2);
}

/* Release recovered records whose scope (at depth or deeper) has ended. */
static void release_pending(struct keel__thread *t, unsigned depth)
{
	struct keel_panic **pp = &t->pending;

	while (*pp != NULL) {
		struct keel_panic *p = *pp;
		if (p->depth >= depth) {
			*pp = p->link;
			record_put(t, p);
		} else {
			pp = &p->link;
		}
	}
}

/* ------------------------------------------------------------------------
 * Scopes and defer
 * ------------------------------------------------------------------------ */

static inline void scope_open(struct keel__thread *t, struct keel__scope *sc,
			      int libc_jmp)
{
	struct keel__scope *top = t->top;

	sc->parent = top;
	sc->base = t->ndefers;
	sc->depth = top != NULL ? top->depth + 1 : 1;
	sc->done = 0;
	sc->libc_jmp = libc_jmp;
	sc->dpanic = t->dpanic;
	t->top = sc;
}

struct keel__scope *keel__scope_open(struct keel__scope *sc, int libc_jmp)
{
	scope_open(keel__self(), sc, libc_jmp);
	return sc;
}

static inline void run_defer(struct keel__thread *t, struct keel_panic *as)
{
	struct keel__defer d = t->defers[--t->ndefers];

	t->dpanic = as;
	d.fn(d.arg);
}

static KEEL_COLD KEEL_NORETURN void scope_misuse(void)
{
	keel__fatal("keel: scope closed out of order (a longjmp or goto "
		    "jumped over a scope?)");
}

/* The normal end of a scope. Deferred calls that run because a scope ended
 * normally cannot recover, even while an outer panic's deferred call is
 * running. */
static inline void scope_close(struct keel__thread *t, struct keel__scope *sc)
{
	if (KEEL_UNLIKELY(t == NULL || t->top != sc))
		scope_misuse();
	while (t->ndefers > sc->base)
		run_defer(t, NULL);
	t->dpanic = sc->dpanic;
	t->top = sc->parent;
}

void keel__scope_close(struct keel__scope *sc)
{
	if (sc->done)
		return; /* ended already: a recovered panic landed here */
	scope_close(keel__cur(), sc);
	sc->done = 1;
}

void keel__defer_slow(void (*fn)(void *), void *arg)
{
	struct keel__thread *t = keel__self();
	struct keel__defer *d;
	unsigned cap;

	if (t->top == NULL)
		keel_panic("keel_defer called with no scope open");
	if (t->ndefers < t->capdefers)
		goto push;
	cap = t->capdefers ? t->capdefers * 2 : 32;
	d = realloc(t->defers, cap * sizeof(*d));
	if (d == NULL) {
		/* The panic below skips the rest of the scope, so running the
		 * cleanup now is what the scope's end would have done. */
		fn(arg);
		keel__panic_kind(KEEL_PANIC_OUT_OF_MEMORY,
				 "runtime error: out of memory");
	}
	t->defers = d;
	t->capdefers = cap;
push:
	t->defers[t->ndefers].fn = fn;
	t->defers[t->ndefers].arg = arg;
	t->ndefers++;
}

/* The exported keel_defer, for &keel_defer and (keel_defer)(fn, arg); a
 * plain keel_defer(fn, arg) call runs the header's inline copy. */
void (keel_defer)(void (*fn)(void *), void *arg)
{
	keel__defer_inline(fn, arg);
}

int keel_call(void (*fn)(void *), void *arg)
{
	struct keel__thread *t = keel__self();
	struct keel__scope sc;

	scope_open(t, &sc, KEEL__JMP_LIBC);
	if (KEEL__SETJMP(sc) != 0)
		return 1;
	fn(arg);
	scope_close(t, &sc);
	return 0;
}

/* ------------------------------------------------------------------------
 * Panicking
 * ------------------------------------------------------------------------ */

static KEEL_NORETURN void recovered(struct keel__thread *t,
				    struct keel_panic *p,
				    struct keel__scope *s)
{
	struct keel_panic **pp;

	/* p is the newest panic: anything newer raised in its deferred call
	 * was recovered before that call returned. Retire p, and every older
	 * panic that a newer one had already unwound past. */
	t->panic = p->link;
	p->depth = s->depth;
	p->link = t->pending;
	t->pending = p;
	pp = &t->panic;
	while (*pp != NULL) {
		struct keel_panic *q = *pp;
		if (q->aborted) {
			*pp = q->link;
			q->depth = s->depth;
			q->link = t->pending;
			t->pending = q;
		} else {
			pp = &q->link;
		}
	}
	/* The recovering scope finishes its deferred calls as at a normal
	 * end; a panic raised by one of them starts afresh from here. */
	while (t->ndefers > s->base)
		run_defer(t, NULL);
	t->dpanic = s->dpanic;
	t->top = s->parent;
	s->done = 1;
	release_pending(t, s->depth);
	if (s->libc_jmp)
		longjmp(s->env.libc, 1);
#ifdef KEEL__ASAN
	__asan_handle_no_return(); /* the jump ASan cannot see */
#endif
	__builtin_longjmp(s->env.fast, 1);
}

static KEEL_NORETURN void panic_run(struct keel__thread *t,
				    struct keel_panic *p)
{
	p->link = t->panic;
	t->panic = p;
	if (t->capture_stacks)
		p->nframes = (size_t)backtrace(p->frames, KEEL__MAX_FRAMES);

	for (;;) {
		struct keel__scope *s = t->top;
		struct keel_panic *q;

		if (s == NULL)
			keel__crash(t, p, 0);
		/* Older panics whose scope this one reaches are aborted: their
		 * unwinding will never resume. */
		for (q = p->link; q != NULL; q = q->link)
			if (q->depth >= s->depth)
				q->aborted = 1;
		p->depth = s->depth;
		while (t->ndefers > s->base) {
			run_defer(t, p);
			if (p->recovered)
				recovered(t, p, s);
		}
		t->top = s->parent;
		s->done = 1;
		release_pending(t, s->depth);
	}
}

void keel__panic_kind(enum keel_panic_kind kind, const char *msg)
{
	struct keel__thread *t = keel__self();
	struct keel_panic *p = record_get(t);

	p->kind = kind;
	record_set_msg(p, msg);
	panic_run(t, p);
}

void keel__panic_as(enum keel_panic_kind kind, const char *msg)
{
	keel__panic_kind(kind, msg != NULL ? msg : "<nil>");
}

void keel_panic(const char *msg)
{
	if (msg == NULL)
		keel__panic_kind(KEEL_PANIC_NIL_ARGUMENT,
				 "panic called with nil argument");
	keel__panic_kind(KEEL_PANIC_MESSAGE, msg);
}

void keel_panicf(const char *fmt, ...)
{
	struct keel__thread *t = keel__self();
	struct keel_panic *p = record_get(t);
	va_list ap;

	if (fmt == NULL) {
		p->kind = KEEL_PANIC_NIL_ARGUMENT;
		record_set_msg(p, "panic called with nil argument");
		panic_run(t, p);
	}
	p->kind = KEEL_PANIC_MESSAGE;
	va_start(ap, fmt);
	record_vformat(p, fmt, ap);
	va_end(ap);
	panic_run(t, p);
}

void keel_panic_error(struct keel_error *err)
{
	struct keel__thread *t = keel__self();
	struct keel_panic *p = record_get(t);

	if (err == NULL) {
		p->kind = KEEL_PANIC_NIL_ARGUMENT;
		record_set_msg(p, "panic called with nil argument");
		panic_run(t, p);
	}
	p->kind = KEEL_PANIC_ERROR;
	p->err = err;
	record_set_msg(p, keel_error_message(err));
	panic_run(t, p);
}

void keel_panic_payload(const char *type, void *payload,
			void (*destroy)(void *), const char *msg)
{
	struct keel__thread *t = keel__self();
	struct keel_panic *p = record_get(t);

	p->kind = KEEL_PANIC_PAYLOAD;
	p->ptype = type != NULL ? type : "";
	p->payload = payload;
	p->destroy = destroy;
	if (msg != NULL)
		record_set_msg(p, msg);
	else
		snprintf(p->inline_msg, sizeof(p->inline_msg),
			 "panic: %s value", p->ptype);
	panic_run(t, p);
}

void keel__panic_index(int64_t i, int64_t len)
{
	char buf[96];

	if (i < 0)
		snprintf(buf, sizeof(buf),
			 "runtime error: index out of range [%" PRId64 "]", i);
	else
		snprintf(buf, sizeof(buf),
			 "runtime error: index out of range [%" PRId64
			 "] with length %" PRId64, i, len);
	keel__panic_kind(KEEL_PANIC_INDEX, buf);
}

const char *keel__fault_message(enum keel_panic_kind kind, int signo, int code)
{
	(void)signo;
	switch (kind) {
	case KEEL_PANIC_NIL_DEREF:
	case KEEL_PANIC_BAD_ADDRESS:
		return "runtime error: invalid memory address or nil pointer "
		       "dereference";
	case KEEL_PANIC_DIVIDE:
		return code == FPE_INTOVF ? "runtime error: integer overflow"
					  : "runtime error: integer divide by zero";
	case KEEL_PANIC_FLOAT:
		return "runtime error: floating point error";
	case KEEL_PANIC_STACK_OVERFLOW:
		return "runtime error: stack overflow";
	default:
		return "runtime error: unexpected signal";
	}
}

/* Where the fault trampoline lands: an ordinary function on an ordinary
 * stack (the thread's, or the alternate one after a stack overflow), with the
 * signal mask already restored by sigreturn. */
void keel__sigpanic(void)
{
	struct keel__thread *t = keel__cur();
	struct keel_panic *p = record_get(t);

	p->kind = t->fault_kind;
	p->fault = t->fault;
	record_set_msg(p, keel__fault_message(p->kind, p->fault.signo,
					      p->fault.code));
	panic_run(t, p);
}

/* ------------------------------------------------------------------------
 * Recover and the accessors
 * ------------------------------------------------------------------------ */

const struct keel_panic *keel_recover(void)
{
	struct keel__thread *t = keel__cur();
	struct keel_panic *p;

	if (t == NULL)
		return NULL;
	p = t->dpanic;
	if (p == NULL || p->recovered || p->aborted)
		return NULL;
	p->recovered = 1;
	return p;
}

int keel_panicking(void)
{
	struct keel__thread *t = keel__cur();
	const struct keel_panic *p;

	if (t == NULL)
		return 0;
	for (p = t->panic; p != NULL; p = p->link)
		if (!p->recovered && !p->aborted)
			return 1;
	return 0;
}

void keel_recover_error(void *errp)
{
	const struct keel_panic *p = keel_recover();

	if (p != NULL && errp != NULL) {
		struct keel_error **slot = errp;
		keel_error_free(*slot);
		*slot = keel_error_from_panic(p);
	}
}

const char *keel_panic_message(const struct keel_panic *p)
{
	if (p == NULL || p->msg == NULL)
		return "<nil>";
	return p->msg;
}

enum keel_panic_kind keel_panic_kind(const struct keel_panic *p)
{
	return p != NULL ? p->kind : KEEL_PANIC_MESSAGE;
}

const char *keel_panic_kind_name(enum keel_panic_kind kind)
{
	static const char *const names[] = {
		[KEEL_PANIC_MESSAGE] = "message",
		[KEEL_PANIC_ERROR] = "error",
		[KEEL_PANIC_PAYLOAD] = "payload",
		[KEEL_PANIC_NIL_ARGUMENT] = "nil-argument",
		[KEEL_PANIC_INDEX] = "index-out-of-range",
		[KEEL_PANIC_OUT_OF_MEMORY] = "out-of-memory",
		[KEEL_PANIC_NIL_DEREF] = "nil-dereference",
		[KEEL_PANIC_DIVIDE] = "divide-by-zero",
		[KEEL_PANIC_FLOAT] = "floating-point",
		[KEEL_PANIC_STACK_OVERFLOW] = "stack-overflow",
		[KEEL_PANIC_BAD_ADDRESS] = "bad-address",
	};
	if ((unsigned)kind >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[kind];
}

int keel_panic_is_runtime(const struct keel_panic *p)
{
	if (p == NULL)
		return 0;
	switch (p->kind) {
	case KEEL_PANIC_MESSAGE:
	case KEEL_PANIC_ERROR:
	case KEEL_PANIC_PAYLOAD:
		return 0;
	default:
		return 1;
	}
}

const struct keel_error *keel_panic_error_value(const struct keel_panic *p)
{
	return p != NULL ? p->err : NULL;
}

void *keel_panic_payload_get(const struct keel_panic *p, const char *type)
{
	if (p == NULL || p->kind != KEEL_PANIC_PAYLOAD || type == NULL)
		return NULL;
	return strcmp(p->ptype, type) == 0 ? p->payload : NULL;
}

const struct keel_fault *keel_panic_fault(const struct keel_panic *p)
{
	static const struct keel_fault none;

	return p != NULL ? &p->fault : &none;
}

int keel_panic_capture_stacks(int on)
{
	struct keel__thread *t = keel__self();
	int old = t->capture_stacks;

	t->capture_stacks = on != 0;
	if (on)
		keel__crash_init(); /* loads the unwinder outside any handler */
	return old;
}

size_t keel_panic_stack(const struct keel_panic *p, void *const **frames)
{
	if (p == NULL) {
		if (frames)
			*frames = NULL;
		return 0;
	}
	if (frames)
		*frames = p->frames;
	return p->nframes;
}

int keel_panic_on_fault(int on)
{
	struct keel__thread *t = keel__self();
	int old = t->panic_on_fault;

	t->panic_on_fault = on != 0;
	return old;
}

/* ------------------------------------------------------------------------
 * Ready-made deferred functions
 * ------------------------------------------------------------------------ */

void keel_defer_fclose(void *file)
{
	if (file != NULL)
		fclose(file);
}

void keel_defer_close(void *fd)
{
	int n = (int)(intptr_t)fd;

	if (n >= 0)
		close(n);
}

void keel_defer_mutex_unlock(void *mutex)
{
	pthread_mutex_unlock(mutex);
}
