/*
 * keel/go.h - panic-isolated threads: Go's `go` statement for C.
 *
 * keel_go starts a thread whose function runs inside a keel scope, with a
 * name (visible in `top -H`, /proc, crash reports and logs) and an optional
 * panic handler:
 *   - without a handler, a panic the thread does not recover prints the
 *     crash report and exits the process with status 2, exactly as an
 *     unrecovered panic in a goroutine does;
 *   - with one, the handler receives the panic (message, kind, fault details
 *     and the stack captured where it was raised) on the dying thread, after
 *     every deferred call ran, and the thread ends cleanly; the other threads
 *     never notice.
 * The thread gets its alternate signal stack before fn runs, so a stack
 * overflow in it is a panic too.
 *
 * Ownership: keel_go returns a handle that must be given to keel_go_join
 * exactly once (or pass out = NULL for a detached thread, which frees
 * itself). Thread-safety: any thread may start threads.
 */
#ifndef KEEL_GO_H
#define KEEL_GO_H

#include <stddef.h>

#include <keel/common.h>
#include <keel/panic.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_thread;

/* Receives a panic that escaped the thread's function; p is valid only
 * during the call (copy what you keep, e.g. keel_error_from_panic). A panic
 * raised by the handler itself has nothing above it: crash report, exit 2. */
typedef void (*keel_panic_handler_fn)(const struct keel_panic *p, void *ud);

struct keel_go_options {
	const char *name;           /* thread name, at most 15 bytes shown; default "keel-go" */
	keel_panic_handler_fn on_panic; /* default NULL: crash report, exit 2 */
	void *panic_ud;
	size_t stack_size;          /* default 0: the system default */
};

KEEL_API void keel_go_options_init(struct keel_go_options *opt);

/*
 * keel_go - starts fn(arg) on a new thread (opt may be NULL for defaults).
 * Returns 0 and, when out is not NULL, a handle for keel_go_join; or a
 * negative error code (-EAGAIN, -ENOMEM, -EINVAL) with no thread started.
 */
KEEL_API int keel_go(void (*fn)(void *arg), void *arg,
		     const struct keel_go_options *opt, struct keel_thread **out);

/*
 * keel_go_join - waits for the thread to end and frees the handle. Returns
 * 0 when fn returned, 1 when it ended by a panic that its handler received;
 * -EINVAL for NULL, -EDEADLK when t is the calling thread (t stays valid).
 */
KEEL_API int keel_go_join(struct keel_thread *t);

/* Names the calling thread (truncated to the kernel's 15 bytes). */
KEEL_API void keel_thread_set_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_GO_H */
