/*
 * src/obs/json.h - the JSON writer that keel's log lines, error reports and
 * crash records are made with. Internal to libkeel (keel__ names), exported
 * only so that the tests and keel's upper layers can use it.
 *
 * It writes into a caller's fixed buffer or a growing heap buffer. Strings
 * are escaped for any input bytes: quotes, backslashes and control
 * characters are escaped, U+2028 and U+2029 too (so a line is also valid
 * JavaScript), and each byte that is not part of valid UTF-8 becomes U+FFFD,
 * as Go's encoding/json does, so the output is always valid UTF-8 JSON.
 *
 * Commas are placed by the writer: call key() then a value inside objects,
 * values alone inside arrays. When a fixed buffer runs out, or the heap
 * cannot grow, the writer stops writing and sets `failed`; it never writes
 * past cap.
 *
 * With a fixed buffer every function except keel__json_double only copies
 * bytes and formats integers by hand: it is async-signal-safe (the crash
 * spool writes its records from a fault handler with it).
 */
#ifndef KEEL_OBS_JSON_H
#define KEEL_OBS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>

/* Thread-locals of libkeel: initial-exec, so reading one is a load, not a
 * call to __tls_get_addr (as keel__tls in keel/panic.h). */
#define KEEL__IE __attribute__((tls_model("initial-exec")))

struct keel__json {
	char *buf;
	size_t len, cap;
	unsigned heap : 1;      /* buf is malloc'd and grows */
	unsigned failed : 1;    /* out of room: output is incomplete */
	unsigned after_key : 1; /* the next value follows a key: no comma */
	int depth;              /* open objects and arrays (at most 64) */
	uint64_t nonempty;      /* bit d: the container at depth d has a member */
};

/* mem == NULL: a heap buffer with cap as its first size (0 = 256). */
KEEL_API void keel__json_init(struct keel__json *j, char *mem, size_t cap);
/* Frees a heap buffer (not a caller's). */
KEEL_API void keel__json_free(struct keel__json *j);
/* Back to empty, keeping the buffer. */
KEEL_API void keel__json_reset(struct keel__json *j);

KEEL_API void keel__json_obj(struct keel__json *j);     /* { */
KEEL_API void keel__json_obj_end(struct keel__json *j); /* } */
KEEL_API void keel__json_arr(struct keel__json *j);     /* [ */
KEEL_API void keel__json_arr_end(struct keel__json *j); /* ] */

KEEL_API void keel__json_key(struct keel__json *j, const char *key);
KEEL_API void keel__json_keyn(struct keel__json *j, const char *key, size_t n);

KEEL_API void keel__json_str(struct keel__json *j, const char *s); /* NULL: null */
KEEL_API void keel__json_strn(struct keel__json *j, const char *s, size_t n);
KEEL_API void keel__json_int(struct keel__json *j, int64_t v);
KEEL_API void keel__json_uint(struct keel__json *j, uint64_t v);
/* NaN and infinities have no JSON form: null. Shortest text that reads
 * back as the same double. */
KEEL_API void keel__json_double(struct keel__json *j, double v);
KEEL_API void keel__json_bool(struct keel__json *j, int v);
KEEL_API void keel__json_null(struct keel__json *j);
/* "0x..." lowercase hex of an address, as a string. */
KEEL_API void keel__json_ptr(struct keel__json *j, const void *p);
/* Text that is already JSON, as one value (not checked). */
KEEL_API void keel__json_raw(struct keel__json *j, const char *s, size_t n);

/* Bytes outside any value (a newline after a record). */
KEEL_API void keel__json_append(struct keel__json *j, const char *s, size_t n);

/* The escaped body of a string, without quotes, for writers that build
 * their own text (the console log format). */
KEEL_API void keel__json_escape(struct keel__json *j, const char *s, size_t n);

/* Length of the valid UTF-8 sequence at s (n >= 1 bytes left), or 0 for
 * a byte that does not start one: overlong forms, surrogates and code
 * points above U+10FFFF are not valid. */
KEEL_API size_t keel__utf8_len(const unsigned char *s, size_t n);

/* ------------------------------------------------------------------------
 * keel's own values, written the same way wherever they appear (log
 * records, error reports, crash records)
 * ------------------------------------------------------------------------ */

struct keel_error;
struct keel_panic;

/* {"message","code","error":"<keel_strerror>","cause":{...}}; null for NULL. */
KEEL_API void keel__json_error(struct keel__json *j, const struct keel_error *e);

/*
 * The panic object: {"message","kind","runtime", "signal":{"signo","name",
 * "code","addr","pc"} (faults only), "error":{...} (keel_error panics
 * only), "stack":[{"function","file","line","pc"},...]}. frames/n is the
 * stack to write (innermost first; a panic's own is keel_panic_stack), each
 * named with keel_frame_resolve; unknown parts are left out of a frame.
 * With a fixed buffer it is async-signal-safe as long as the panic carries
 * no keel_error (whose code text comes from keel_strerror).
 */
KEEL_API void keel__json_panic(struct keel__json *j, const struct keel_panic *p,
			       void *const *frames, size_t n);

/*
 * keel__rfc3339 - "2026-11-26T10:00:00.123Z" (24 characters and a NUL):
 * UTC, milliseconds, as every record, report and error body of keel
 * writes it. Times before 1970 or after 9999 are written as the epoch. The
 * date part is formatted once per second per thread (the logger calls it
 * for every record).
 */
struct timespec;
KEEL_API void keel__rfc3339(const struct timespec *ts, char out[25]);

/* "SIGSEGV", "SIGBUS", "SIGFPE", ... (static), "SIG?" for others. */
KEEL_API const char *keel__signal_name(int signo);

/* A fault as {"signo","name","code","addr","pc"}. Async-signal-safe. */
struct keel_fault;
KEEL_API void keel__json_fault(struct keel__json *j, const struct keel_fault *f);

#endif /* KEEL_OBS_JSON_H */
