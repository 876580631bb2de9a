/*
 * keel/report.h - error reporting: events sent to a JSON webhook, to Sentry
 * or to a function of yours, from a background thread, with retries and a
 * bounded queue; and a crash spool, so that even a crash that kills the
 * process is reported (by the next start).
 *
 *	struct keel_reporter_config cfg;
 *	struct keel_reporter *rep;
 *
 *	keel_reporter_config_init(&cfg);
 *	cfg.sentry_dsn = "https://0123abcd@sentry.example.com/42";
 *	cfg.service = "billing";
 *	cfg.release = "billing@1.4.2";
 *	cfg.spool_dir = "/var/lib/billing/crashes";
 *	if (keel_reporter_new(&cfg, &rep) != 0)     (also sends old crashes)
 *		...
 *	keel_reporter_crash_hook(rep);              (spool the next crash)
 *	...
 *	struct keel_report_event ev = { .message = "payment failed",
 *					.panic = p };  (p from keel_recover)
 *	keel_reporter_send(rep, &ev);               (copies, never blocks)
 *	...
 *	keel_reporter_free(rep);                    (bounded wait, then stop)
 *
 * Delivery. keel_reporter_send copies the event into a bounded queue and
 * returns; one background thread ("keel-report") takes events in order and
 * delivers each to every destination configured: the webhook (a JSON object,
 * see docs/observability.md), Sentry (an envelope holding one event), the
 * sink function. A destination that fails with a network error, a timeout,
 * an HTTP 5xx or a 429 is tried again after a backoff (exponential with
 * jitter; a server's Retry-After is honoured), up to max_attempts; any
 * other answer (4xx) ends that event for that destination. A full queue
 * drops the new event and counts it: reporting never slows the caller.
 *
 * The crash spool. keel_reporter_crash_hook installs keel's crash hook
 * (keel_crash_hook_set): when a panic goes unrecovered or a fault kills the
 * process, the hook writes a crash record (message, kind, signal, the
 * stack with function names, trace id, service, release) into spool_dir
 * with async-signal-safe calls only, under a temporary name renamed into
 * place when complete. The next keel_reporter_new on that directory queues
 * every record as a "fatal" event and deletes each once every destination
 * took it; a record that could not be delivered stays for the next start,
 * a record that cannot be read is renamed *.bad (and said so on stderr).
 *
 * Thread-safety: keel_reporter_send, _flush, _stats and _send_spool may be
 * called from any thread at once. keel_reporter_free must not race with
 * other calls on the same reporter. Nothing here is async-signal-safe
 * except the crash hook itself.
 *
 * libcurl: the reporter calls curl_global_init once per process (under
 * pthread_once; libcurl 7.88 is built thread-safe here, so this is also safe
 * against other libraries' calls) and never curl_global_cleanup. Transfers
 * set CURLOPT_NOSIGNAL and the background thread blocks SIGPIPE, so a
 * closed connection never raises SIGPIPE in the process. Proxies follow
 * libcurl's usual environment variables (http_proxy, no_proxy, ...).
 */
#ifndef KEEL_REPORT_H
#define KEEL_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>
#include <keel/panic.h>
#include <keel/trace.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * struct keel_report_event - what one report says. Everything but message
 * is optional (NULL / 0). keel_reporter_send copies all of it: nothing
 * needs to outlive the call.
 */
struct keel_report_event {
	/* "fatal", "error", "warning", "info" or "debug"; NULL: "error". */
	const char *level;
	/* The text of the report. Required. */
	const char *message;
	/* Where it comes from (Sentry's "logger"). */
	const char *module;
	/*
	 * A panic (from keel_recover, a pool's or a thread's panic handler):
	 * reported as the exception. Its message, kind, runtime flag and
	 * fault details are copied, and its stack (keel_panic_stack; only
	 * when the thread captures stacks) unless frames is set.
	 */
	const struct keel_panic *panic;
	/* A stack to report (innermost first, return addresses as from
	 * keel_panic_stack or backtrace(3)); at most 128 are kept. */
	void *const *frames;
	size_t nframes;
	/* The trace context; NULL: the calling thread's keel_trace_current(). */
	const struct keel_trace *trace;
	/* Tags: "key", "value", "key", "value", ..., NULL. */
	const char *const *tags;
	/* Extra context: the text of one JSON object (the logger passes a
	 * record's fields here). extra_len 0 means strlen(extra_json). */
	const char *extra_json;
	size_t extra_len;
	/* When it happened, ns since the epoch (CLOCK_REALTIME); 0: now. */
	int64_t timestamp;
};

/*
 * A destination of your own. Called on the background thread with each
 * event as the webhook's JSON object (len bytes, not NUL-terminated). Return
 * 0 when delivered; -EAGAIN, -EBUSY, -EIO, -ETIMEDOUT, -ECONNREFUSED,
 * -ECONNRESET, -EHOSTUNREACH or -ENETUNREACH to have it tried again (with
 * the backoff, up to max_attempts); any other negative code gives up on
 * that event. It must not call into the same reporter except for _stats.
 */
typedef int (*keel_report_sink_fn)(void *ud, const char *json, size_t len);

struct keel_reporter_config {
	/* Destinations: at least one. Strings are copied. */
	const char *webhook_url; /* http:// or https://: POST application/json */
	/* https://<public_key>@<host>[:<port>][/<path>]/<project_id>
	 * (http:// allowed too, e.g. for a relay on localhost). */
	const char *sentry_dsn;
	keel_report_sink_fn sink;
	void *sink_ud;
	/* Extra request headers for the webhook, "Name: value", NULL-ended
	 * (e.g. "Authorization: Bearer x"). Default NULL. */
	const char *const *headers;
	/* Stamped on every event; default NULL (left out), server_name
	 * defaults to the host name. */
	const char *service;
	const char *environment;
	const char *release;
	const char *server_name;
	/* Events waiting, >= 1; default 256. When full, new events are
	 * dropped and counted; send never blocks. */
	size_t queue_size;
	/* Tries per event and destination, >= 1; default 5. */
	int max_attempts;
	/* Backoff between tries, ns: exponential from backoff_initial,
	 * doubling, at most backoff_max, with equal jitter (each wait in
	 * [d/2, d]). Defaults 100 ms and 10 s. A server's Retry-After up to
	 * retry_after_max (default 60 s) replaces the backoff; asking for
	 * longer gives up on the event. */
	int64_t backoff_initial;
	int64_t backoff_max;
	int64_t retry_after_max;
	/* One HTTP request, connection included, ns, > 0; default 5 s. */
	int64_t timeout;
	/* How long keel_reporter_free waits for the queue to empty before it
	 * stops the thread (abandoning a transfer within about a second and
	 * dropping what is left), ns, >= 0; default 2 s. */
	int64_t shutdown_timeout;
	/* The crash spool directory (created, mode 0700, if missing; its
	 * parent must exist). NULL (default): no spool. */
	const char *spool_dir;
};

struct keel_reporter_stats {
	uint64_t queued;    /* events accepted (send and spool) */
	uint64_t pending;   /* accepted and not yet done (in the queue or
			     * being delivered) */
	uint64_t sent;      /* delivered to every destination */
	uint64_t failed;    /* given up on (for one destination or more) */
	uint64_t dropped;   /* refused by a full queue or out of memory, or
			     * abandoned by keel_reporter_free */
	uint64_t retried;   /* tries after the first, all destinations */
	uint64_t spooled;   /* crash records read from the spool and queued */
	uint64_t spool_bad; /* unreadable crash records renamed *.bad */
};

struct keel_reporter;

/* Fills cfg with the defaults above (no destination). */
KEEL_API void keel_reporter_config_init(struct keel_reporter_config *cfg);

/*
 * keel_reporter_new - creates a reporter and starts its thread; with a
 * spool_dir, then calls keel_reporter_send_spool. cfg may be discarded
 * afterwards (its strings are copied; sink_ud is not owned). Returns 0 and
 * sets *out, else *out = NULL (out not NULL) and nothing is left behind:
 *   -EINVAL   cfg or out NULL; no destination; a webhook URL that is not
 *             http(s)://; a bad DSN (no key, host or project id, another
 *             scheme, a bad port, a query or fragment); a header without
 *             "Name:" or with CR/LF; a limit out of range (queue_size 0 or
 *             above 1,048,576, max_attempts < 1, negative times, timeout 0,
 *             backoff_initial > backoff_max)
 *   -ENOMEM, -EAGAIN (no thread), or -errno when spool_dir cannot be
 *             created or is not a directory
 * A spool that cannot be read does not fail the call (see _send_spool).
 */
KEEL_API int keel_reporter_new(const struct keel_reporter_config *cfg,
			       struct keel_reporter **out);

/*
 * keel_reporter_send - copies ev into the queue and returns at once (it
 * never waits for the network or for room). Returns 0, or:
 *   -EINVAL   r or ev NULL, no message, an unknown level, a tag list with a
 *             key and no value, extra_json that is not one JSON object
 *   -EAGAIN   the queue is full: the event is dropped (and counted)
 *   -ENOMEM   (counted as dropped)
 *   -ESHUTDOWN keel_reporter_free has begun
 * The cost on the caller: a few allocations and copies, and one getrandom
 * for the event id; frames are named later, on the background thread.
 */
KEEL_API int keel_reporter_send(struct keel_reporter *r,
				const struct keel_report_event *ev);

/*
 * keel_reporter_flush - waits until every event accepted so far is done
 * (delivered or given up), at most timeout ns (< 0: no limit). Returns 0,
 * -ETIMEDOUT, or -EINVAL for a NULL reporter.
 */
KEEL_API int keel_reporter_flush(struct keel_reporter *r, int64_t timeout);

/* A snapshot of the counters (all zero for a NULL reporter). */
KEEL_API void keel_reporter_stats(struct keel_reporter *r,
				  struct keel_reporter_stats *s);

/*
 * keel_reporter_free - waits up to cfg.shutdown_timeout for the queue to
 * empty, then cancels: a backoff wait ends at once, a transfer is abandoned
 * within about a second, events still queued are dropped (crash records
 * among them stay in the spool). Joins the thread and frees everything.
 * The crash hook, if installed, stays installed: it keeps no pointer to r.
 * NULL is a no-op.
 */
KEEL_API void keel_reporter_free(struct keel_reporter *r);

/*
 * keel_reporter_crash_hook - makes keel's crash hook write a crash record
 * into r's spool_dir (see the top of this header). Everything the hook
 * needs is computed now into static buffers (directory, service, release,
 * environment, server name, an event id), so the hook itself only formats
 * and writes; it then prints the record's path on the crash report's
 * stream. It also calls keel_init(), so that a fault before the program's
 * first scope is caught and spooled too. One crash hook per process: this replaces any other, and a later
 * call (from any reporter) replaces this one's settings; remove it with
 * keel_crash_hook_set(NULL, NULL). Returns 0, -EINVAL (r NULL or without
 * spool_dir), -ENAMETOOLONG (a path or string longer than the static
 * buffers: 3,799 bytes for the directory, 255 for the strings), or
 * keel_init's error.
 */
KEEL_API int keel_reporter_crash_hook(struct keel_reporter *r);

/*
 * keel_reporter_send_spool - queues every complete crash record of r's
 * spool_dir (crash-*.json) that is not queued already, as a "fatal" event
 * (Sentry: an unhandled exception, with the event id written at the crash,
 * so a record sent twice is one event). Each file is deleted once every
 * destination took it; a record given up on stays for the next time. A
 * record that cannot be read or parsed is renamed to <name>.bad with one
 * line on stderr. keel_reporter_new calls it; call it again to retry
 * records that failed. Returns the number of records queued, or -EINVAL (r
 * NULL or without spool_dir) or -errno when the directory cannot be read.
 * Records beyond the queue's room stay on disk.
 */
KEEL_API int keel_reporter_send_spool(struct keel_reporter *r);

/* ------------------------------------------------------------------------
 * Internals shared by src/obs/report.c, report_sentry.c and spool.c, and
 * exported for keel's tests. Not part of the API.
 * ------------------------------------------------------------------------ */

#define KEEL__REPORT_MAX_FRAMES 128

struct keel__json; /* src/obs/json.h */

struct keel__report_frame {
	void *pc;
	const char *function; /* NULL: unknown */
	const char *file;
	int line;
};

/* One queued event: a deep copy of a keel_report_event, or a crash record
 * read back from the spool. */
struct keel__report_item {
	char event_id[33];       /* 32 lowercase hex digits (a UUID v4) */
	const char *level;       /* a static string */
	int64_t timestamp;       /* ns since the epoch */
	char *message;
	char *module;            /* may be NULL */
	int has_panic;
	char *panic_message;
	char *panic_kind;
	int panic_runtime;
	int handled;             /* 0 for crash records */
	struct keel_fault fault; /* signo 0: not a fault */
	struct keel__report_frame *frames; /* innermost first */
	size_t nframes;
	int frames_named;        /* function/file are set (named already) */
	int frames_owned;        /* and are this item's copies (a record) */
	int frames_raw;          /* a panic's own stack: starts with keel's
				  * machinery (keel__stack_skip drops it) */
	int has_trace;
	struct keel_trace trace;
	char **tags;             /* key, value, ..., ntags pairs */
	size_t ntags;
	char *extra;             /* one JSON object, or NULL */
	size_t extra_len;
	/* Crash records only. */
	char *service, *release, *environment, *server_name;
	int64_t pid;
	char *spool_path;        /* deleted once delivered */
	unsigned done;           /* destinations that took it (bit mask) */
};

/* What the reporter stamps on every event. */
struct keel__report_meta {
	const char *service, *environment, *release, *server_name;
};

KEEL_API void keel__report_item_free(struct keel__report_item *it);
/* Names the frames not yet named (keel_frame_resolve). */
KEEL_API void keel__report_name_frames(struct keel__report_item *it);
/* RFC 3339 UTC with milliseconds, "2006-01-02T15:04:05.000Z", and a NUL. */
KEEL_API void keel__report_rfc3339(int64_t ns, char buf[32]);
/* A new random event id (UUID v4 as 32 hex digits) into buf. */
KEEL_API void keel__report_event_id(char buf[33]);
/* The webhook body of it into j (a heap writer). */
KEEL_API void keel__report_webhook_json(struct keel__json *j,
					const struct keel__report_item *it,
					const struct keel__report_meta *m);

struct keel__sentry_dsn {
	char scheme[8];        /* "http" or "https" */
	char public_key[128];
	char host[256];        /* with ":port" when the DSN has one */
	char path[256];        /* "" or "/prefix" */
	char project_id[64];
	char envelope_url[1024]; /* scheme://host/path/api/project/envelope/ */
	char auth[512];        /* the X-Sentry-Auth header line */
};
/* Parses a DSN; 0, or -EINVAL with *out untouched. */
KEEL_API int keel__sentry_dsn_parse(const char *dsn,
				    struct keel__sentry_dsn *out);
/* The envelope (header, item header, event, newline-separated) into j. */
KEEL_API void keel__sentry_envelope(struct keel__json *j,
				    const struct keel__report_item *it,
				    const struct keel__report_meta *m,
				    const char *dsn, int64_t sent_at);

/* 0 when s[0..n) is exactly one JSON object (with nothing but white space
 * around it), else -EINVAL. */
KEEL_API int keel__report_json_object_check(const char *s, size_t n);

/* Spool (spool.c): computes the hook's static buffers and installs it. */
KEEL_API int keel__spool_install(const char *dir,
				 const struct keel__report_meta *m);
/* 1 when a directory entry's name is a complete record (crash-*.json). */
KEEL_API int keel__spool_is_record(const char *name);
/* Reads one record file into a new item (spool_path set). 0, -EINVAL for
 * a corrupt record, -errno when it cannot be read, -ENOMEM. */
KEEL_API int keel__spool_read(const char *path,
			      struct keel__report_item **out);
/* Renames a corrupt record to <path>.bad and says so on stderr. */
KEEL_API void keel__spool_set_aside(const char *path, int why);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_REPORT_H */
