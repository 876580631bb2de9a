/*
 * src/core/internal.h - state shared by the core's source files.
 * Nothing here is visible outside libkeel.
 */
#ifndef KEEL_CORE_INTERNAL_H
#define KEEL_CORE_INTERNAL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <keel/error.h>
#include <keel/panic.h>

#define KEEL__HIDDEN __attribute__((visibility("hidden")))

#if defined(__SANITIZE_ADDRESS__)
#define KEEL__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEL__ASAN 1
#endif
#endif
#ifdef KEEL__ASAN
void __asan_handle_no_return(void);
#endif

/* Go's limit for a nil dereference: Linux's default vm.mmap_min_addr. */
#define KEEL__NIL_LIMIT ((uintptr_t)64 * 1024)
#define KEEL__MSG_INLINE 128
#define KEEL__MAX_FRAMES 64

struct keel_panic {
	struct keel_panic *link;  /* next older in flight, or next in a list */
	enum keel_panic_kind kind;
	int recovered;            /* keel_recover returned it */
	int aborted;              /* a newer panic unwound past its scope */
	unsigned depth;           /* depth of the scope it is unwinding */
	int from_pool;            /* 1: a per-thread record, 2: the emergency one */
	char *msg;                /* inline_msg or a heap copy */
	struct keel_error *err;   /* KEEL_PANIC_ERROR: owned */
	const char *ptype;        /* KEEL_PANIC_PAYLOAD */
	void *payload;
	void (*destroy)(void *);
	struct keel_fault fault;
	size_t nframes;
	void *frames[KEEL__MAX_FRAMES];
	char inline_msg[KEEL__MSG_INLINE];
};

struct keel__thread {
	/* First, the fields of struct keel__hot (keel/panic.h), in its order:
	 * the header's inline fast paths read them. */
	struct keel__scope *top;      /* innermost open scope */
	struct keel__defer *defers;   /* this thread's defer stack */
	unsigned ndefers, capdefers;
	struct keel_panic *dpanic;    /* panic whose deferred call is running */
	struct keel_panic *panic;     /* newest panic in flight */
	struct keel_panic *pending;   /* recovered, freed when their scope ends */
	struct keel_panic *free;      /* record pool */
	int capture_stacks;
	int panic_on_fault;
	int in_crash;
	int slot;                     /* keel__thread_slot(), -1 for none */

	/* Fault machinery. */
	char *altstack;               /* usable alternate stack ... */
	size_t altsize;               /* ... and its size; a guard page below */
	size_t altguard;              /* size of that guard page */
	uintptr_t stack_lo, stack_hi; /* this thread's stack */
	struct keel_fault fault;      /* handed from the handler to sigpanic */
	enum keel_panic_kind fault_kind;
	struct keel_panic emergency;  /* used when no record can be allocated */
};

/* thread.c */
KEEL__HIDDEN struct keel__thread *keel__self_slow(void);
#define KEEL__HOT_FIELD(f)                                                    \
	_Static_assert(offsetof(struct keel__thread, f) ==                    \
			       offsetof(struct keel__hot, f),                 \
		       "struct keel__thread must start like struct keel__hot")
KEEL__HOT_FIELD(top);
KEEL__HOT_FIELD(defers);
KEEL__HOT_FIELD(ndefers);
KEEL__HOT_FIELD(capdefers);
KEEL__HOT_FIELD(dpanic);

/* The calling thread's state, or NULL before its first scope. */
static inline struct keel__thread *keel__cur(void)
{
	return (struct keel__thread *)(void *)keel__tls;
}

static inline struct keel__thread *keel__self(void)
{
	struct keel__thread *t = keel__cur();
	return KEEL_LIKELY(t != NULL) ? t : keel__self_slow();
}

/* panic.c */
KEEL__HIDDEN KEEL_NORETURN void keel__panic_kind(enum keel_panic_kind kind,
						  const char *msg);
KEEL__HIDDEN KEEL_NORETURN void keel__sigpanic(void);
KEEL__HIDDEN const char *keel__fault_message(enum keel_panic_kind kind,
					     int signo, int code);

/* signal.c */
KEEL__HIDDEN int keel__signals_install(void);

/* crash.c */
KEEL__HIDDEN void keel__crash_init(void);
KEEL__HIDDEN KEEL_NORETURN void keel__crash(struct keel__thread *t,
					     const struct keel_panic *newest,
					     int in_handler);
KEEL__HIDDEN KEEL_NORETURN void keel__fatal(const char *msg);

#endif /* KEEL_CORE_INTERNAL_H */
