/*
 * keel/log.h - structured, leveled logging: one JSON object per line.
 *
 *     keel_log_error(NULL, "payment-service", "Payment validation failed",
 *                    KEEL_OBJ("details"), KEEL_STR("error_code", "PAY_4001"),
 *                    KEEL_OBJ_END());
 *
 * writes (one line; NULL is the process's default logger, on stderr):
 *
 *     {"timestamp":"2026-11-26T10:00:00.123Z","level":"ERROR",
 *      "module":"payment-service","message":"Payment validation failed",
 *      "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",
 *      "details":{"error_code":"PAY_4001"}}
 *
 * Every record has timestamp (RFC 3339, UTC, milliseconds), level (DEBUG,
 * INFO, WARN, ERROR, FATAL), message, and, when set, module, service, and the
 * calling thread's trace_id and span_id (keel/trace.h); then the record's
 * own fields, typed (string, integer, float, bool, null, keel_error, nested
 * object). Any bytes are escaped into valid JSON: control characters,
 * quotes, and invalid UTF-8 (each bad byte becomes U+FFFD), so one record is
 * always exactly one line that a JSON parser accepts.
 *
 * On a terminal the default format is a console line for people instead:
 *
 *     10:00:00.123 ERROR payment-service: Payment validation failed details.error_code=PAY_4001 trace_id=4bf9...
 *
 * A disabled level costs one load and compare: the macros check the level
 * before any argument is evaluated or anything is formatted.
 *
 * Sinks: a file descriptor (stderr by default), a file by path (appended;
 * reopened by keel_log_reopen, or on SIGHUP after keel_log_reopen_on_sighup,
 * for logrotate), or a function. Records from many threads never interleave:
 * each is formatted apart and written whole. In the default synchronous mode
 * the record is written before the call returns. In asynchronous mode a
 * call copies the record into a bounded in-memory queue and returns; a
 * writer thread writes it out. A full queue never blocks the caller: the
 * record is dropped and counted, and the writer says how many were dropped
 * in a WARN record of its own as soon as it can.
 *
 * Records at or above a level (ERROR by default) can also go to an error
 * reporter (keel/report.h), with their fields as the report's extra data.
 *
 * Thread-safety: everything here may be called from any thread. Nothing here
 * is async-signal-safe: do not log from a signal handler (use the crash hook
 * and the spool of keel/report.h for crashes).
 */
#ifndef KEEL_LOG_H
#define KEEL_LOG_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>
#include <keel/error.h>
#include <keel/panic.h>
#include <keel/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_log_level {
	KEEL_LOG_DEBUG = 0,
	KEEL_LOG_INFO,
	KEEL_LOG_WARN,
	KEEL_LOG_ERROR,
	KEEL_LOG_FATAL, /* a severity only: the call returns (and flushes) */
	KEEL_LOG_OFF,   /* as a threshold: nothing is written */
};

enum keel_log_format {
	KEEL_LOG_FORMAT_AUTO = 0, /* console on a terminal, else JSON */
	KEEL_LOG_FORMAT_JSON,
	KEEL_LOG_FORMAT_CONSOLE,
};

/* "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"; NULL for a bad value. */
KEEL_API const char *keel_log_level_name(enum keel_log_level level);
/* Reads a level name, any case ("warning" too). 0 or -EINVAL. */
KEEL_API int keel_log_level_parse(const char *name, enum keel_log_level *out);

/* ------------------------------------------------------------------------
 * Fields
 * ------------------------------------------------------------------------ */

enum keel_field_type {
	KEEL_FIELD_STR = 1,
	KEEL_FIELD_INT,
	KEEL_FIELD_UINT,
	KEEL_FIELD_FLOAT,  /* NaN and infinities are written as null */
	KEEL_FIELD_BOOL,
	KEEL_FIELD_NULL,
	KEEL_FIELD_ERROR,  /* a keel_error: {"message","code","cause":{...}} */
	KEEL_FIELD_OBJECT, /* the fields up to the matching OBJECT_END nest */
	KEEL_FIELD_OBJECT_END,
};

/* One typed key/value. Nothing is copied: pointers must stay valid for the
 * call only. Build them with the macros below. */
struct keel_field {
	const char *key;
	enum keel_field_type type;
	size_t len; /* STR: length, or SIZE_MAX for a NUL-terminated string */
	union {
		const char *s;
		int64_t i;
		uint64_t u;
		double f;
		int b;
		const struct keel_error *e;
	} v;
};

#define KEEL__FIELD(k_, t_, l_, member_, x_) \
	((struct keel_field){ .key = (k_), .type = (t_), .len = (l_), .v.member_ = (x_) })
#define KEEL_STR(k_, x_) KEEL__FIELD(k_, KEEL_FIELD_STR, SIZE_MAX, s, (x_))
#define KEEL_STRN(k_, x_, n_) KEEL__FIELD(k_, KEEL_FIELD_STR, (n_), s, (x_))
#define KEEL_INT(k_, x_) KEEL__FIELD(k_, KEEL_FIELD_INT, 0, i, (int64_t)(x_))
#define KEEL_UINT(k_, x_) KEEL__FIELD(k_, KEEL_FIELD_UINT, 0, u, (uint64_t)(x_))
#define KEEL_FLOAT(k_, x_) KEEL__FIELD(k_, KEEL_FIELD_FLOAT, 0, f, (double)(x_))
#define KEEL_BOOL(k_, x_) KEEL__FIELD(k_, KEEL_FIELD_BOOL, 0, b, !!(x_))
#define KEEL_NULL(k_) KEEL__FIELD(k_, KEEL_FIELD_NULL, 0, i, 0)
#define KEEL_ERR(k_, x_) KEEL__FIELD(k_, KEEL_FIELD_ERROR, 0, e, (x_))
#define KEEL_OBJ(k_) KEEL__FIELD(k_, KEEL_FIELD_OBJECT, 0, i, 0)
#define KEEL_OBJ_END() KEEL__FIELD(NULL, KEEL_FIELD_OBJECT_END, 0, i, 0)

/* ------------------------------------------------------------------------
 * Loggers
 * ------------------------------------------------------------------------ */

struct keel_logger;
struct keel_reporter;

/* A sink function: gets each record as one line (len bytes, the newline
 * included, not NUL-terminated). Calls are serialised per logger; in async
 * mode they come from the writer thread. It must not log to the same
 * logger. */
typedef void (*keel_log_sink_fn)(void *ud, enum keel_log_level level,
				 const char *line, size_t len);

struct keel_log_config {
	enum keel_log_level level;   /* threshold; default KEEL_LOG_INFO */
	enum keel_log_format format; /* default AUTO */
	int color;                   /* console format: -1 (default) when the
				      * sink is a terminal and NO_COLOR is
				      * unset, 0 never, 1 always */
	/* The sink: the function if set, else the path if set, else fd. */
	int fd;                      /* default 2 (stderr); never closed by keel */
	const char *path;            /* opened O_APPEND|O_CREAT, mode 0644 */
	keel_log_sink_fn sink;
	void *sink_ud;
	int async;                   /* 1: queue + writer thread; default 0 */
	size_t async_buffer;         /* queue bytes; default 1 MiB, min 4 KiB */
	const char *module;          /* for records whose module is NULL */
	const char *service;         /* "service" in every record; default none */
	struct keel_reporter *reporter; /* default NULL; not owned */
	enum keel_log_level report_level; /* default KEEL_LOG_ERROR */
};

KEEL_API void keel_log_config_init(struct keel_log_config *cfg);

/*
 * keel_log_new - a logger. Copies the strings of cfg. Returns 0, -EINVAL
 * for a bad config, -errno when the file cannot be opened, -ENOMEM, or
 * -EAGAIN when the writer thread cannot start. Nothing is left open on
 * failure.
 */
KEEL_API int keel_log_new(const struct keel_log_config *cfg,
			  struct keel_logger **out);

/* Writes out what is queued (async), then frees. The fd is not closed. Not
 * while other threads still log through it. NULL is a no-op; so is the
 * default logger. */
KEEL_API void keel_log_free(struct keel_logger *lg);

/* Changes the threshold at run time (any thread). */
KEEL_API void keel_log_set_level(struct keel_logger *lg, enum keel_log_level level);

/*
 * The default logger, used wherever a keel_logger argument is NULL: stderr,
 * format AUTO, level INFO, synchronous. At start-up it reads KEEL_LOG_LEVEL
 * (debug..fatal, off) and KEEL_LOG_FORMAT (json, console). set_default
 * makes lg the default (NULL restores the built-in one); the caller keeps
 * ownership and must not free it while it is the default.
 */
KEEL_API struct keel_logger *keel_log_default(void);
KEEL_API void keel_log_set_default(struct keel_logger *lg);

/* Waits until every queued record is written (async); no-op otherwise. */
KEEL_API void keel_log_flush(struct keel_logger *lg);

/* Reopens the file of a path logger (after logrotate moved it): 0, or the
 * -errno of open, in which case the old file stays in use. */
KEEL_API int keel_log_reopen(struct keel_logger *lg);

/* Installs a SIGHUP handler (once per process; 0 or -errno) after which
 * every path logger reopens its file before its next record. A handler
 * that was installed before is still called. */
KEEL_API int keel_log_reopen_on_sighup(void);

struct keel_log_stats {
	uint64_t written;      /* records handed to the sink */
	uint64_t dropped;      /* async: records dropped because the queue was full */
	uint64_t write_errors; /* records the sink could not take (write failed) */
	uint64_t reopened;     /* successful reopens */
};
KEEL_API void keel_log_stats(struct keel_logger *lg, struct keel_log_stats *s);

/* ------------------------------------------------------------------------
 * Writing records
 * ------------------------------------------------------------------------ */

/* 1 when a record at level would be written. */
static inline int keel_log_enabled(struct keel_logger *lg, enum keel_log_level level);

/* The record: message and n fields (fields may be NULL when n is 0). module
 * NULL: the logger's. Normally called through the macros below. */
KEEL_API void keel_log_write(struct keel_logger *lg, enum keel_log_level level,
			     const char *module, const char *msg,
			     const struct keel_field *fields, size_t n);

/*
 * Deferred records: for a hot path that logs on every call (an HTTP access
 * log), the JSON formatting can move to an asynchronous logger's writer
 * thread. The caller queues its raw values as one self-contained block of
 * bytes (a small struct and the strings it needs, copied: no pointer into
 * the caller's memory may be in it); later, on the writer thread, a
 * function of the caller's turns that block back into fields, and the
 * record is formatted exactly as keel_log_write would have formatted it at
 * the time of the call: the timestamp and the calling thread's trace
 * context are taken by keel_log_write_deferred, not by the writer.
 *
 * keel_log_fields_fn - fills out[0..max) with the record's fields from the
 * block and returns how many; the fields' strings may point into data,
 * which stays valid during the call only. data is the queued copy, at an
 * address aligned to 8 bytes, or, when the record is not queued (see
 * below), the caller's own block. It runs on the writer thread (or in the
 * caller), must not log to the same logger, must not fail (it cannot
 * refuse the record), and must stay callable until the record is written
 * (keel_log_flush, keel_log_free).
 */
#define KEEL_LOG_DEFERRED_MAX_FIELDS 32
typedef size_t (*keel_log_fields_fn)(const void *data, size_t len,
				     struct keel_field *out, size_t max);

/*
 * keel_log_write_deferred - queues a record whose fields fields_fn makes
 * from data (len bytes, copied). module and msg are copied too (module
 * NULL: the logger's). Nothing happens when the level is disabled, or
 * fields_fn is NULL. On a synchronous logger, for FATAL, when the logger's
 * reporter takes the level, or for a block over 64 KiB, fields_fn is
 * called before this returns and the record is written as keel_log_write
 * writes it. A full queue drops the record and counts it, as for any other
 * record. At most KEEL_LOG_DEFERRED_MAX_FIELDS fields. Any thread.
 */
KEEL_API void keel_log_write_deferred(struct keel_logger *lg,
				      enum keel_log_level level,
				      const char *module, const char *msg,
				      keel_log_fields_fn fields_fn,
				      const void *data, size_t len);

/* A record whose message is printf-formatted (no fields). */
KEEL_API void keel_logf(struct keel_logger *lg, enum keel_log_level level,
			const char *module, const char *fmt, ...) KEEL_PRINTF(4, 5);

/*
 * keel_log_panic - one record for a recovered panic: the message and fields,
 * then "panic": {"message", "kind", "runtime", "signal": {"signo", "name",
 * "code", "addr", "pc"} for a fault, "error" for a keel_error panic, and
 * "stack": [{"function", "file", "line", "pc"}, ...]} with the frames the
 * panic captured (innermost first; see keel_panic_capture_stacks: without
 * it the array is empty). msg NULL: "panic recovered".
 */
KEEL_API void keel_log_panic(struct keel_logger *lg, enum keel_log_level level,
			     const char *module, const char *msg,
			     const struct keel_panic *p,
			     const struct keel_field *fields, size_t n);

/*
 * Ready-made panic handlers that log the panic with keel_log_panic at
 * ERROR, module "keel.pool" / "keel.thread": give the logger (NULL: the
 * default) as the handler's user data.
 *
 *     pool_cfg.on_panic = keel_log_task_panic;  pool_cfg.panic_ud = lg;
 *     go_opt.on_panic = keel_log_thread_panic;  go_opt.panic_ud = lg;
 *
 * The task's record has "pool", "task" and "worker" fields; with a
 * reporter on the logger, each panic is reported too.
 */
KEEL_API void keel_log_task_panic(const struct keel_task_panic *info, void *logger);
KEEL_API void keel_log_thread_panic(const struct keel_panic *p, void *logger);

#define keel_log(lg, level, module, msg, ...)                                  \
	do {                                                                   \
		struct keel_logger *keel__lg = (lg);                           \
		if (keel_log_enabled(keel__lg, (level))) {                     \
			const struct keel_field keel__f[] = { KEEL_NULL(NULL), \
							      __VA_ARGS__ };   \
			keel_log_write(keel__lg, (level), (module), (msg),     \
				       keel__f + 1,                            \
				       sizeof(keel__f) / sizeof(keel__f[0]) -  \
					       1);                             \
		}                                                              \
	} while (0)

#define keel_log_debug(lg, module, ...) keel_log(lg, KEEL_LOG_DEBUG, module, __VA_ARGS__)
#define keel_log_info(lg, module, ...) keel_log(lg, KEEL_LOG_INFO, module, __VA_ARGS__)
#define keel_log_warn(lg, module, ...) keel_log(lg, KEEL_LOG_WARN, module, __VA_ARGS__)
#define keel_log_error(lg, module, ...) keel_log(lg, KEEL_LOG_ERROR, module, __VA_ARGS__)
#define keel_log_fatal(lg, module, ...) keel_log(lg, KEEL_LOG_FATAL, module, __VA_ARGS__)

/* ------------------------------------------------------------------------
 * Internals used by the inline function above. Not part of the API.
 * ------------------------------------------------------------------------ */

struct keel__log_head {
	int level; /* atomic: the threshold */
};
KEEL_API extern struct keel_logger *keel__log_default;

static inline int keel_log_enabled(struct keel_logger *lg, enum keel_log_level level)
{
	const struct keel__log_head *h =
		(const struct keel__log_head *)(lg != NULL ? lg : keel__log_default);

	return (int)level >= __atomic_load_n(&h->level, __ATOMIC_RELAXED);
}

#ifdef __cplusplus
}
#endif

#endif /* KEEL_LOG_H */
