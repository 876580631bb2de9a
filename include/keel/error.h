/*
 * keel/error.h - error codes and error values.
 *
 * keel separates two kinds of failure, as Go does:
 *   - expected failures (a refused connection, bad input, a timeout) are
 *     errors: functions return 0 on success or a negative code, and richer
 *     context travels in a struct keel_error;
 *   - bugs and faults (a NULL dereference, an index out of range) are panics
 *     (keel/panic.h).
 *
 * Codes: 0 is success. A failure is negative: -errno for failures that have
 * an errno name (-EINVAL, -ENOMEM, -ETIMEDOUT, ...), and keel's own codes
 * below KEEL_ERR_BASE. keel_strerror() names any of them.
 */
#ifndef KEEL_ERROR_H
#define KEEL_ERROR_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_panic;

/* keel's own error codes. They never collide with -errno values. */
enum keel_errcode {
	KEEL_OK = 0,
	KEEL_ERR_BASE = -20000,
	KEEL_EPANIC = -20001,   /* a panic was recovered and turned into an error */
	KEEL_EUNKNOWN = -20002, /* a failure with no better name */
	KEEL_EBREAKER_OPEN = -20003,  /* a circuit breaker refused the call */
	KEEL_EBULKHEAD_FULL = -20004, /* no bulkhead slot within the wait */
	KEEL_ERATE_LIMITED = -20005,  /* no rate-limiter permit within the wait */
	KEEL_EBUDGET = -20006,        /* the retry budget refused a retry */
	KEEL_ECHAOS = -20007,         /* an error injected by a chaos policy */
};
/* Timeouts and cancellation use the errno names: -ETIMEDOUT, -ECANCELED. */

/*
 * keel_strerror - a static, human-readable text for an error code: keel's own
 * codes, -errno values (as strerror would name them) and 0 ("success").
 * Thread-safe; the result is never NULL and never needs freeing.
 */
KEEL_API const char *keel_strerror(int code);

/*
 * struct keel_error - an error value: a code, a message, an optional cause
 * (the error this one wraps) and, when it was made from a recovered panic, a
 * copy of that panic's message, kind and fault details.
 *
 * Ownership: every constructor returns a new heap object that the caller owns
 * and releases with keel_error_free(), which frees the whole cause chain.
 * Constructors never return NULL: when memory runs out they return a static
 * "out of memory" error whose free is a no-op, so error paths cannot fail.
 */
struct keel_error;

/* A new error with code (0 becomes KEEL_EUNKNOWN) and a printf-style message. */
KEEL_API struct keel_error *keel_error_new(int code, const char *fmt, ...)
	KEEL_PRINTF(2, 3);
KEEL_API struct keel_error *keel_error_newv(int code, const char *fmt,
					    va_list ap) KEEL_PRINTF(2, 0);

/*
 * keel_error_wrap - a new error that wraps cause (taking ownership of it; NULL
 * is allowed and means no cause). The code of the new error is code, or the
 * cause's code when code is 0.
 */
KEEL_API struct keel_error *keel_error_wrap(struct keel_error *cause, int code,
					    const char *fmt, ...)
	KEEL_PRINTF(3, 4);

/*
 * keel_error_from_panic - an error with code KEEL_EPANIC whose message is the
 * panic's message; the panic's kind and fault details are copied too. When
 * the panic carried an error (keel_panic_error), that error is copied as the
 * cause. p may be NULL (returns NULL).
 */
KEEL_API struct keel_error *keel_error_from_panic(const struct keel_panic *p);

/* Accessors. All accept NULL (code 0, message "", cause NULL). */
KEEL_API int keel_error_code(const struct keel_error *e);
KEEL_API const char *keel_error_message(const struct keel_error *e);
KEEL_API const struct keel_error *keel_error_cause(const struct keel_error *e);

/* keel_error_is - 1 when e or any error in its cause chain has code. */
KEEL_API int keel_error_is(const struct keel_error *e, int code);

/*
 * keel_error_panic_kind - the enum keel_panic_kind of the panic this error
 * was made from, or -1 when it was not made from a panic.
 * keel_error_fault_addr / keel_error_signo - the fault details copied from
 * that panic (0 when none).
 */
KEEL_API int keel_error_panic_kind(const struct keel_error *e);
KEEL_API int keel_error_signo(const struct keel_error *e);
KEEL_API void *keel_error_fault_addr(const struct keel_error *e);

/*
 * keel_error_format - writes "message: cause message: ..." into buf (always
 * NUL-terminated when n > 0) and returns the length the full text needs, as
 * snprintf does.
 */
KEEL_API size_t keel_error_format(const struct keel_error *e, char *buf,
				  size_t n);

/* keel_error_free - frees e and its cause chain. NULL is a no-op. */
KEEL_API void keel_error_free(struct keel_error *e);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_ERROR_H */
