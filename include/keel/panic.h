/*
 * keel/panic.h - Go's defer / panic / recover for C, hardware faults included.
 *
 * The model in one paragraph. Code runs inside scopes (keel_call or the
 * KEEL_SCOPE block). keel_defer() registers a cleanup on the innermost open
 * scope of the calling thread; a scope runs its deferred calls last-in,
 * first-out when it ends, normally or because a panic unwinds through it.
 * keel_panic() starts a panic: the thread runs the deferred calls of every
 * open scope, innermost first, on the panicking stack. A deferred call (or
 * anything it calls) may stop the panic with keel_recover(); the scope that
 * owns that deferred call then finishes its remaining deferred calls and
 * control resumes after it: keel_call returns 1, or execution continues right
 * after the KEEL_SCOPE block. A panic that no deferred call recovers prints a
 * crash report and exits the process with status 2, as Go does.
 *
 * Hardware faults are panics too: a NULL (or near-NULL) dereference, an
 * integer division by zero and a stack overflow raise ordinary panics in the
 * faulting thread, with Go's messages, whenever that thread has a scope open.
 * See docs/panic.md for what is and is not safe to recover.
 *
 * Thread-safety: every thread has its own scopes, deferred calls and panics.
 * Nothing in this header is shared between threads except the crash hook and
 * the signal handlers, which are process-wide.
 */
#ifndef KEEL_PANIC_H
#define KEEL_PANIC_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_error;

/* A panic in flight or recovered. Opaque: read it with the accessors below. */
struct keel_panic;

/* What raised a panic. */
enum keel_panic_kind {
	KEEL_PANIC_MESSAGE = 0,  /* keel_panic / keel_panicf */
	KEEL_PANIC_ERROR,        /* keel_panic_error: carries a keel_error */
	KEEL_PANIC_PAYLOAD,      /* keel_panic_payload: carries a typed value */
	KEEL_PANIC_NIL_ARGUMENT, /* keel_panic(NULL) */
	KEEL_PANIC_INDEX,        /* keel_index out of range */
	KEEL_PANIC_OUT_OF_MEMORY, /* keel_malloc and friends */
	KEEL_PANIC_NIL_DEREF,    /* SIGSEGV/SIGBUS below 64 KiB */
	KEEL_PANIC_DIVIDE,       /* SIGFPE: integer divide by zero or overflow */
	KEEL_PANIC_FLOAT,        /* SIGFPE: a trapping floating point error */
	KEEL_PANIC_STACK_OVERFLOW, /* guard page hit, caught on the alt stack */
	KEEL_PANIC_BAD_ADDRESS,  /* SIGSEGV/SIGBUS elsewhere, with panic-on-fault */
};

/* ------------------------------------------------------------------------
 * Scopes
 * ------------------------------------------------------------------------ */

/*
 * keel_call - runs fn(arg) in a new scope.
 * Returns 0 when fn returned normally (its deferred calls have run), 1 when a
 * panic raised inside was recovered by one of this scope's deferred calls.
 * A panic that this scope's deferred calls do not recover keeps unwinding
 * through the enclosing scopes; keel_call does not return then.
 */
KEEL_API int keel_call(void (*fn)(void *arg), void *arg);

/*
 * KEEL_SCOPE { ... } - the block form of a scope (GCC and Clang).
 * The deferred calls registered inside run when the block is left in any
 * way: by reaching its end, return, break, continue, goto, or a panic. When
 * one of them recovers a panic, execution resumes right after the block.
 *
 * Internally the block is the body of a one-pass loop: break and continue
 * leave the scope, not a loop around it.
 *
 * The block starts with a setjmp, so C11 7.13.2.1 applies: a local of the
 * enclosing function that is changed after the block starts, and read after
 * a recovered panic, must be volatile. That includes a local that a deferred
 * call changes through a pointer (keel_defer(fn, &local)): Clang at -O2
 * really does read the old value there, and no compiler warns about it
 * (GCC's -Wclobbered sees only direct assignments). keel_call has no such
 * rule: its function's locals are gone when it returns.
 */
#define KEEL_SCOPE KEEL__SCOPE_I(__COUNTER__)

/*
 * keel_defer - registers fn(arg) on the innermost open scope of the calling
 * thread. Calls run last-in, first-out. Called with no scope open, it panics.
 * A deferred call that registers another deferred call adds it to the scope
 * it is running for, where it runs next.
 */
KEEL_API void (keel_defer)(void (*fn)(void *arg), void *arg);
/* (A function-like macro below makes direct calls inline; &keel_defer and
 * (keel_defer)(fn, arg) reach the exported function.) */

/* Ready-made deferred functions for the usual resources. */
KEEL_API void keel_defer_fclose(void *file);         /* FILE *          */
KEEL_API void keel_defer_close(void *fd);            /* (void *)(intptr_t)fd */
KEEL_API void keel_defer_mutex_unlock(void *mutex);  /* pthread_mutex_t * */
/* For memory, defer free itself: keel_defer(free, p). */

/* ------------------------------------------------------------------------
 * Panic and recover
 * ------------------------------------------------------------------------ */

/*
 * keel_panic - starts a panic with a copy of msg as its message.
 * keel_panic(NULL) panics with "panic called with nil argument".
 * A message of up to 127 bytes is kept in the panic record, which comes from
 * a per-thread pool, so a warm thread panics without allocating; a longer
 * message is copied to the heap (truncated to 127 bytes if that fails).
 */
KEEL_API KEEL_NORETURN void keel_panic(const char *msg);
KEEL_API KEEL_NORETURN void keel_panicf(const char *fmt, ...) KEEL_PRINTF(1, 2);

/*
 * keel_panic_error - panics with an error value; the panic owns err from now
 * on (it is freed when the panic is done). The message is the error's text.
 */
KEEL_API KEEL_NORETURN void keel_panic_error(struct keel_error *err);

/*
 * keel_panic_payload - panics with a typed value. type is a tag compared with
 * strcmp by keel_panic_payload_get (keep it a string literal); destroy, when
 * not NULL, is called on payload once the panic is done. msg is the printable
 * text (NULL: "panic: <type> value").
 */
KEEL_API KEEL_NORETURN void keel_panic_payload(const char *type, void *payload,
					       void (*destroy)(void *),
					       const char *msg);

/*
 * keel_recover - returns the current panic and stops it, or NULL.
 *
 * It returns the panic only while a deferred call that this panic is running
 * is on the stack: inside that deferred function or in anything it calls
 * (Go limits recover to the deferred function's own body; C cannot, because
 * inlining decides what is a separate call, so keel allows the whole dynamic
 * extent of the deferred call). It returns NULL when no panic is in flight,
 * when the panic was already recovered, and inside a deferred call that runs
 * because a nested scope ended normally.
 *
 * The returned panic stays valid until the scope that recovered it has ended
 * (keel_call returned, or control left the KEEL_SCOPE block). Copy what you
 * need to keep, for example with keel_error_from_panic().
 */
KEEL_API const struct keel_panic *keel_recover(void);

/*
 * keel_recover_error - a deferred function: if a panic can be recovered
 * here, recovers it and stores keel_error_from_panic() of it in
 * *(struct keel_error **)errp. The seed's safeDivide pattern:
 *
 *     struct keel_error *volatile err = NULL;
 *     KEEL_SCOPE {
 *             keel_defer(keel_recover_error, (void *)&err);
 *             q = a / b;
 *     }
 */
KEEL_API void keel_recover_error(void *errp);

/* keel_panicking - 1 while a panic that is not yet recovered is in flight on
 * this thread (even where keel_recover would return NULL), else 0. */
KEEL_API int keel_panicking(void);

/* ------------------------------------------------------------------------
 * Reading a panic
 * ------------------------------------------------------------------------ */

/* The message: always a printable, NUL-terminated text, never NULL
 * ("<nil>" for a NULL panic). */
KEEL_API const char *keel_panic_message(const struct keel_panic *p);
KEEL_API enum keel_panic_kind keel_panic_kind(const struct keel_panic *p);
/* The kind's name: "message", "error", "nil-dereference", "divide-by-zero",
 * "stack-overflow", ... (a static string; "unknown" for a bad value). */
KEEL_API const char *keel_panic_kind_name(enum keel_panic_kind kind);
/* 1 for what Go calls a runtime.Error: faults, index, nil argument, OOM. */
KEEL_API int keel_panic_is_runtime(const struct keel_panic *p);
/* The error carried by keel_panic_error, else NULL. */
KEEL_API const struct keel_error *keel_panic_error_value(const struct keel_panic *p);
/* The payload when p carries one tagged type, else NULL. */
KEEL_API void *keel_panic_payload_get(const struct keel_panic *p, const char *type);

/* Fault details; all 0 for a panic that is not a hardware fault. */
struct keel_fault {
	int signo;     /* SIGSEGV, SIGBUS, SIGFPE */
	int code;      /* si_code */
	void *addr;    /* si_addr: the faulting address */
	void *pc;      /* the faulting instruction */
};
KEEL_API const struct keel_fault *keel_panic_fault(const struct keel_panic *p);

/*
 * Stacks. Capturing the stack at each panic costs a few microseconds, so it
 * is off by default; a thread that wants panics with stacks (a worker pool,
 * a request handler) turns it on. keel_panic_stack returns the number of
 * captured return addresses (innermost first) and points *frames at them.
 */
KEEL_API int keel_panic_capture_stacks(int on); /* per thread; returns old */
KEEL_API size_t keel_panic_stack(const struct keel_panic *p, void *const **frames);

/*
 * keel_frame_resolve - names one address of a stack (from keel_panic_stack
 * or keel_crash_stack): function, and file:line where the program has debug
 * information (through libbacktrace when the build found it, else the
 * dynamic symbol table). The strings are keel's and live until exit.
 * Returns 1 when the function is known, else 0 (out->pc is always set, the
 * rest NULL/0). Thread-safe; usable from the crash hook (no malloc).
 */
struct keel_frame {
	void *pc;
	const char *function; /* NULL: unknown */
	const char *file;     /* NULL: unknown */
	int line;             /* 0: unknown */
};
KEEL_API int keel_frame_resolve(void *pc, struct keel_frame *out);

/*
 * keel_panic_on_fault - per-thread switch, returns the old value. A SIGSEGV or
 * SIGBUS at an address of 64 KiB or more is a sign of memory corruption, so,
 * as in Go, it crashes the process by default. With the switch on it becomes
 * a KEEL_PANIC_BAD_ADDRESS panic (Go's debug.SetPanicOnFault).
 */
KEEL_API int keel_panic_on_fault(int on);

/* ------------------------------------------------------------------------
 * Runtime checks
 * ------------------------------------------------------------------------ */

KEEL_API KEEL_NORETURN void keel__panic_index(int64_t i, int64_t len);
/* For keel's own layers: panics with msg and the given kind, as when a task
 * group re-raises a task's nil dereference in the waiter. */
KEEL_API KEEL_NORETURN void keel__panic_as(enum keel_panic_kind kind,
					   const char *msg);
/* The number of leading frames of a captured stack that are keel's panic
 * machinery (panic_run, the fault trampoline, ...), for printing a stack
 * that starts where the user's code panicked or faulted. */
KEEL_API size_t keel__stack_skip(void *const *frames, size_t n);
/* keel_frame_resolve, for an address that is an instruction (exact = 1: the
 * faulting pc of a fault's frame) rather than a return address. */
KEEL_API int keel__frame_resolve(void *pc, int exact, struct keel_frame *out);

/*
 * keel_index - returns i when 0 <= i < len, else panics with
 * "runtime error: index out of range [i] with length len"
 * ("index out of range [i]" for a negative i, as in Go).
 */
static inline int64_t keel_index(int64_t i, int64_t len)
{
	if (KEEL_UNLIKELY(i < 0 || i >= len))
		keel__panic_index(i, len);
	return i;
}

/* ------------------------------------------------------------------------
 * Process set-up and the crash report
 * ------------------------------------------------------------------------ */

/*
 * keel_init - installs keel's fault handlers (SIGSEGV, SIGBUS, SIGFPE) and
 * prepares the calling thread (alternate signal stack, stack bounds).
 * Idempotent and thread-safe; the first scope of any thread calls it, so a
 * program only needs it to get crash reports for faults that happen before
 * its first scope. Returns 0 or a negative error code.
 */
KEEL_API int keel_init(void);

/*
 * keel_thread_prepare - sets up the calling thread for faults: an alternate
 * signal stack sized from sysconf(_SC_SIGSTKSZ) (and large enough to run
 * deferred calls after a stack overflow) and the thread's stack bounds. Done
 * automatically at a thread's first scope; released at thread exit.
 */
KEEL_API int keel_thread_prepare(void);

/*
 * The crash hook runs after the crash report of an unrecovered panic has been
 * written to stderr and before the process exits with status 2. It receives
 * the panic and the report's file descriptor. It may run inside a signal
 * handler, so it must use async-signal-safe calls only. One hook per process;
 * NULL removes it.
 */
typedef void (*keel_crash_hook_fn)(const struct keel_panic *p, int fd, void *ud);
KEEL_API void keel_crash_hook_set(keel_crash_hook_fn fn, void *ud);
/* Inside the crash hook: the frames the crash report printed (innermost
 * first, keel's own machinery left out); 0 and NULL anywhere else. */
KEEL_API size_t keel_crash_stack(void *const **frames);

/* ------------------------------------------------------------------------
 * Internals used by the macros above. Not part of the API.
 * ------------------------------------------------------------------------ */

/*
 * keel__thread_slot - a small number in [0, KEEL__SLOTS) that the calling
 * thread owns alone until it exits (then it is given to a new thread), or
 * -1 when all are taken. Counters sharded by slot can then be bumped with a
 * plain load and store instead of a locked read-modify-write.
 */
#define KEEL__SLOTS 32
KEEL_API int keel__thread_slot(void);

/*
 * How a scope saves the point a recovered panic resumes at. By default the
 * compiler's own __builtin_setjmp (GCC and Clang share its buffer format):
 * it saves three words inline, where glibc's _setjmp is a call that also
 * mangles pointers, about 4 ns more per scope. Under ASan or TSan, whose
 * runtimes must see every jump, and when the program defines
 * KEEL_USE_LIBC_SETJMP, scopes use _setjmp/longjmp (which _FORTIFY_SOURCE
 * turns into __longjmp_chk). Each scope records which one it used, so code
 * built either way can be mixed.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KEEL__LIBC_JMP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KEEL__LIBC_JMP 1
#endif
#endif
#if defined(KEEL_USE_LIBC_SETJMP) && !defined(KEEL__LIBC_JMP)
#define KEEL__LIBC_JMP 1
#endif

struct keel__scope {
	struct keel__scope *parent;
	unsigned base;  /* first defer of this scope in the thread's defer stack */
	unsigned depth; /* 1 for a thread's outermost scope */
	int done;       /* set once the scope has ended */
	int libc_jmp;   /* env.libc (_setjmp) rather than env.fast */
	struct keel_panic *dpanic; /* recover context when the scope opened */
	union {
		void *fast[5];  /* __builtin_setjmp */
		jmp_buf libc;   /* _setjmp; never zeroed */
	} env;
};

KEEL_API struct keel__scope *keel__scope_open(struct keel__scope *sc,
					       int libc_jmp);
KEEL_API void keel__scope_close(struct keel__scope *sc);
KEEL_API void keel__defer_slow(void (*fn)(void *), void *arg);

/*
 * The start of each thread's keel state, read by the inline fast paths
 * below (as Go open-codes its defers, keel_defer and a scope's opening cost
 * no call into the library). The library's per-thread struct begins with
 * exactly these fields. The pointer is initial-exec TLS: one load from %fs.
 */
struct keel__defer {
	void (*fn)(void *);
	void *arg;
};
struct keel__hot {
	struct keel__scope *top;    /* innermost open scope */
	struct keel__defer *defers; /* the thread's defer stack */
	unsigned ndefers, capdefers;
	struct keel_panic *dpanic;  /* panic whose deferred call is running */
};
KEEL_API extern __thread struct keel__hot *keel__tls
	__attribute__((tls_model("initial-exec")));

static inline void keel__defer_inline(void (*fn)(void *), void *arg)
{
	struct keel__hot *h = keel__tls;

	if (KEEL_UNLIKELY(h == NULL || h->ndefers >= h->capdefers ||
			  h->top == NULL)) {
		keel__defer_slow(fn, arg);
		return;
	}
	h->defers[h->ndefers].fn = fn;
	h->defers[h->ndefers].arg = arg;
	h->ndefers++;
}
#define keel_defer(fn, arg) keel__defer_inline((fn), (arg))

static inline struct keel__scope *keel__scope_open_inline(struct keel__scope *sc,
							  int libc_jmp)
{
	struct keel__hot *h = keel__tls;
	struct keel__scope *top;

	if (KEEL_UNLIKELY(h == NULL))
		return keel__scope_open(sc, libc_jmp);
	top = h->top;
	sc->parent = top;
	sc->base = h->ndefers;
	sc->depth = top != NULL ? top->depth + 1 : 1;
	sc->done = 0;
	sc->libc_jmp = libc_jmp;
	sc->dpanic = h->dpanic;
	h->top = sc;
	return sc;
}

#ifdef KEEL__LIBC_JMP
#define KEEL__JMP_LIBC 1
#define KEEL__SETJMP(sc) _setjmp((sc).env.libc)
#else
#define KEEL__JMP_LIBC 0
#define KEEL__SETJMP(sc) __builtin_setjmp((sc).env.fast)
#endif

#define KEEL__SCOPE_I(n) KEEL__SCOPE_N(n)
#define KEEL__SCOPE_N(n)                                                        \
	for (struct keel__scope keel__sc##n                                     \
		     __attribute__((cleanup(keel__scope_close))),               \
	     *volatile keel__once##n =                                          \
		     keel__scope_open_inline(&keel__sc##n, KEEL__JMP_LIBC);     \
	     keel__once##n; keel__once##n = NULL)                               \
		if (KEEL__SETJMP(keel__sc##n) != 0) {                           \
		} else

#ifdef __cplusplus
}
#endif

#endif /* KEEL_PANIC_H */
