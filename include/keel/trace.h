/*
 * keel/trace.h - trace context: which request (trace) and which step of it
 * (span) the current thread is working for.
 *
 * The context follows the W3C Trace Context recommendation: a 16-byte trace
 * id shared by every service a request crosses, an 8-byte span id for the
 * current unit of work, and 8 flag bits (bit 0: sampled). It travels between
 * services in the `traceparent` header:
 *
 *     00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
 *     version-trace_id-parent_id-flags
 *
 * Each thread has a current context, which keel's logger stamps on every
 * line (trace_id, span_id) and its reporters put on every error report. The
 * context does not follow work to another thread by itself: start threads
 * and pool tasks through keel_trace_go and keel_trace_pool_submit, which
 * carry the submitter's context into the new thread or task.
 *
 * Ids are drawn from a per-thread generator seeded by getrandom(2): unique
 * for tracing, not for cryptography.
 */
#ifndef KEEL_TRACE_H
#define KEEL_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>
#include <keel/go.h>
#include <keel/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_trace {
	uint8_t trace_id[16]; /* all zero: no trace */
	uint8_t span_id[8];
	uint8_t flags;        /* KEEL_TRACE_SAMPLED, ... */
};

#define KEEL_TRACE_SAMPLED 0x01
/* Length of a version-00 traceparent, without the NUL. */
#define KEEL_TRACEPARENT_LEN 55

/* 1 when both ids are non-zero, else 0. */
KEEL_API int keel_trace_valid(const struct keel_trace *t);

/* A new trace: random trace and span ids, flags KEEL_TRACE_SAMPLED. */
KEEL_API void keel_trace_new(struct keel_trace *t);

/* A child span: the parent's trace id and flags, a new span id. With a
 * NULL or invalid parent, a new trace. parent and child may be the same. */
KEEL_API void keel_trace_child(const struct keel_trace *parent,
			       struct keel_trace *child);

/*
 * keel_traceparent_parse - reads a traceparent header value (len bytes, no
 * NUL needed; surrounding spaces and tabs are ignored). Returns 0, or
 * -EINVAL and leaves *out untouched when the value is not valid by the
 * recommendation: wrong length or separators, a version of "ff" or not two
 * lowercase hex digits, an all-zero trace or parent id, upper-case or
 * non-hex digits, or a version-00 header with anything after the flags. A
 * later version may carry more fields after a '-': they are ignored.
 */
KEEL_API int keel_traceparent_parse(const char *s, size_t len,
				    struct keel_trace *out);

/* Writes "00-<trace>-<span>-<flags>" and a NUL into buf (at least
 * KEEL_TRACEPARENT_LEN + 1 bytes). Returns KEEL_TRACEPARENT_LEN. */
KEEL_API size_t keel_traceparent_format(const struct keel_trace *t, char *buf);

/* Lowercase hex of the ids, NUL-terminated: buf of 33 and 17 bytes. */
KEEL_API void keel_trace_id_hex(const struct keel_trace *t, char buf[33]);
KEEL_API void keel_span_id_hex(const struct keel_trace *t, char buf[17]);

/* ------------------------------------------------------------------------
 * The calling thread's current context
 * ------------------------------------------------------------------------ */

/* The current context, or NULL when the thread has none. Valid until the
 * thread changes it. */
KEEL_API const struct keel_trace *keel_trace_current(void);

/* Makes a copy of *t the current context (NULL or an invalid context
 * clears it). When old is not NULL it receives the previous context (all
 * zero when there was none), so a caller can restore it afterwards:
 *
 *     struct keel_trace req, saved;
 *     keel_traceparent_parse(hdr, len, &req) == 0 ? keel_trace_child(&req, &req)
 *                                                 : keel_trace_new(&req);
 *     keel_trace_set(&req, &saved);
 *     handle(request);
 *     keel_trace_set(&saved, NULL);
 */
KEEL_API void keel_trace_set(const struct keel_trace *t, struct keel_trace *old);

/* ------------------------------------------------------------------------
 * Carrying the context to other threads
 * ------------------------------------------------------------------------ */

/*
 * keel_trace_go - keel_go(fn, arg, opt, out), with the new thread's current
 * context set to a child span of the caller's (none when the caller has
 * none). Same returns as keel_go.
 */
KEEL_API int keel_trace_go(void (*fn)(void *arg), void *arg,
			   const struct keel_go_options *opt,
			   struct keel_thread **out);

/*
 * keel_trace_pool_submit - keel_pool_submit(pool, fn, arg, opt), with the
 * task running under a child span of the submitter's current context; the
 * worker's own context is restored after the task, panic or not. Same
 * returns as keel_pool_submit (-ENOMEM too).
 */
KEEL_API int keel_trace_pool_submit(struct keel_pool *pool, keel_task_fn fn,
				    void *arg,
				    const struct keel_task_options *opt);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_TRACE_H */
