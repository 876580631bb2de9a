/*
 * src/obs/log.c - structured logging (see keel/log.h).
 *
 * A record is formatted by the calling thread into a stack buffer (a heap
 * buffer for the rare record that does not fit), so loggers share no
 * formatting state and a disabled level costs nothing but the check in the
 * header. Delivery is where threads meet:
 *
 * - synchronous: the logger's mutex is held around one write loop of the
 *   whole record, so records never interleave, even records longer than
 *   PIPE_BUF on a pipe;
 * - asynchronous: two buffers. Callers append whole records to the filling
 *   one under the mutex (a memcpy, never I/O); the writer thread swaps the
 *   buffers and writes the full one with the mutex released. A record that
 *   does not fit is dropped and counted: the caller never waits for I/O.
 *   A deferred record (keel_log_write_deferred) is appended unformatted,
 *   with its timestamp and trace context, and formatted by the writer: on
 *   a hot path the caller then pays for a copy, not for the JSON.
 *
 * logrotate: a SIGHUP handler only bumps a generation counter; a path logger
 * that sees a new generation reopens its file (dup2 over the same
 * descriptor, so the writer thread needs no new state) before its next
 * write.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <keel/go.h>
#include <keel/log.h>
#include <keel/report.h>
#include <keel/trace.h>

#include "json.h"

#define STACK_LINE 2048
#define MIN_ASYNC (4 * 1024)

/*
 * Three groups, each on cache lines of its own: a caller that queues a
 * record reads the first and takes the second; the writer thread, while it
 * writes a batch, touches only the third. Sharing a line with what the
 * writer stores for every record it writes (out_len) made every caller's
 * read of `async` and `stop` a miss, about a third of what queuing a
 * record cost.
 */
struct keel_logger {
	/* Set up by keel_log_new and read-only after (head.level aside). */
	struct keel__log_head head; /* first: read by keel_log_enabled */
	enum keel_log_format format; /* JSON or CONSOLE once resolved */
	int color;
	int fd;
	int own_fd;        /* fd was opened from path */
	int async;
	int report_level;
	char *path;
	keel_log_sink_fn sink;
	void *sink_ud;
	char *module;
	char *service;
	struct keel_reporter *reporter;
	size_t half;        /* async: the size of each buffer */
	size_t threshold;   /* a batch this full is written without lingering */
	pthread_t writer;

	/* Under mu: delivery, the async buffers and counters. The first line
	 * holds everything a caller queuing a record reads or writes. */
	_Alignas(64) pthread_mutex_t mu;
	size_t fill_len;
	char *fill;         /* callers append to fill; the writer owns spare */
	unsigned char stop, waiting, lingering; /* lingering: the writer
						 * waits a little for a
						 * fuller batch */
	unsigned char busy;
	int flushers;       /* threads in keel_log_flush */
	unsigned hup_seen;
	char *spare;
	uint64_t written, dropped, write_errors, reopened;
	uint64_t drop_told;
	pthread_cond_t wake;    /* the writer waits for records */
	pthread_cond_t drained; /* flush waits for an empty queue */

	/* The writer thread's alone. */
	_Alignas(64) char *out; /* its output (descriptor sinks) */
	size_t out_len;
	uint64_t out_records;
};

static atomic_uint hup_gen;

static struct keel_logger std_logger = {
	.head = { KEEL_LOG_INFO },
	.format = KEEL_LOG_FORMAT_JSON,
	.color = 0,
	.fd = 2,
	.report_level = KEEL_LOG_ERROR,
	.mu = PTHREAD_MUTEX_INITIALIZER,
};

struct keel_logger *keel__log_default = &std_logger;

static const char *const level_names[] = {
	"DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF",
};

const char *keel_log_level_name(enum keel_log_level level)
{
	if ((unsigned)level > KEEL_LOG_OFF)
		return NULL;
	return level_names[level];
}

int keel_log_level_parse(const char *name, enum keel_log_level *out)
{
	int i;

	if (name == NULL || out == NULL)
		return -EINVAL;
	for (i = 0; i <= KEEL_LOG_OFF; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum keel_log_level)i;
			return 0;
		}
	}
	if (strcasecmp(name, "warning") == 0) {
		*out = KEEL_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

static int use_color(int color, int fd)
{
	const char *no = getenv("NO_COLOR");

	if (color >= 0)
		return color;
	return fd >= 0 && isatty(fd) && (no == NULL || no[0] == '\0');
}

static enum keel_log_format resolve_format(enum keel_log_format f, int fd)
{
	if (f != KEEL_LOG_FORMAT_AUTO)
		return f;
	return fd >= 0 && isatty(fd) ? KEEL_LOG_FORMAT_CONSOLE
				     : KEEL_LOG_FORMAT_JSON;
}

/* The default logger takes its settings from the environment. */
__attribute__((constructor)) static void std_logger_init(void)
{
	const char *lvl = getenv("KEEL_LOG_LEVEL");
	const char *fmt = getenv("KEEL_LOG_FORMAT");
	enum keel_log_level level;
	enum keel_log_format format = KEEL_LOG_FORMAT_AUTO;

	if (lvl != NULL && keel_log_level_parse(lvl, &level) == 0)
		std_logger.head.level = (int)level;
	if (fmt != NULL && strcasecmp(fmt, "json") == 0)
		format = KEEL_LOG_FORMAT_JSON;
	else if (fmt != NULL && strcasecmp(fmt, "console") == 0)
		format = KEEL_LOG_FORMAT_CONSOLE;
	std_logger.format = resolve_format(format, 2);
	std_logger.color = use_color(-1, 2);
}

static struct keel_logger *resolve(struct keel_logger *lg)
{
	return lg != NULL ? lg : keel__log_default;
}

struct keel_logger *keel_log_default(void)
{
	return keel__log_default;
}

void keel_log_set_default(struct keel_logger *lg)
{
	keel__log_default = lg != NULL ? lg : &std_logger;
}

void keel_log_set_level(struct keel_logger *lg, enum keel_log_level level)
{
	if ((unsigned)level <= KEEL_LOG_OFF)
		__atomic_store_n(&resolve(lg)->head.level, (int)level,
				 __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------
 * Timestamps
 * ------------------------------------------------------------------------ */

/* Formatting a date costs more than the rest of a short record, so each
 * thread keeps the text of the last second it formatted. */
static __thread KEEL__IE time_t local_sec = -1;
static __thread KEEL__IE char local_text[9]; /* 10:00:00 */

static void put2(char *p, int v)
{
	p[0] = (char)('0' + v / 10 % 10);
	p[1] = (char)('0' + v % 10);
}

static void put_ms(char *p, long nsec)
{
	int ms = (int)(nsec / 1000000);

	p[0] = '.';
	p[1] = (char)('0' + ms / 100);
	p[2] = (char)('0' + ms / 10 % 10);
	p[3] = (char)('0' + ms % 10);
}

/* "10:00:00.123" local time (12 bytes), for people. */
static void local_stamp(const struct timespec *ts, char out[12])
{
	if (ts->tv_sec != local_sec) {
		struct tm tm;

		localtime_r(&ts->tv_sec, &tm);
		put2(local_text, tm.tm_hour);
		local_text[2] = ':';
		put2(local_text + 3, tm.tm_min);
		local_text[5] = ':';
		put2(local_text + 6, tm.tm_sec);
		local_sec = ts->tv_sec;
	}
	memcpy(out, local_text, 8);
	put_ms(out + 8, ts->tv_nsec);
}

/* ------------------------------------------------------------------------
 * Formatting
 * ------------------------------------------------------------------------ */

struct record {
	enum keel_log_level level;
	const char *module;
	const char *msg;
	const struct keel_field *fields;
	size_t n;
	const struct keel_panic *panic;
	uint64_t dropped; /* the writer's own "dropped" record */
	struct timespec ts;             /* when it was logged */
	const struct keel_trace *trace; /* the logging thread's; NULL: none */
};

static void json_value(struct keel__json *j, const struct keel_field *f)
{
	switch (f->type) {
	case KEEL_FIELD_STR:
		if (f->v.s == NULL)
			keel__json_null(j);
		else if (f->len == SIZE_MAX)
			keel__json_str(j, f->v.s);
		else
			keel__json_strn(j, f->v.s, f->len);
		break;
	case KEEL_FIELD_INT: keel__json_int(j, f->v.i); break;
	case KEEL_FIELD_UINT: keel__json_uint(j, f->v.u); break;
	case KEEL_FIELD_FLOAT: keel__json_double(j, f->v.f); break;
	case KEEL_FIELD_BOOL: keel__json_bool(j, f->v.b); break;
	case KEEL_FIELD_ERROR: keel__json_error(j, f->v.e); break;
	default: keel__json_null(j); break;
	}
}

/* The fields as members of the object being written; unbalanced OBJECT and
 * OBJECT_END are closed or ignored, so bad input still makes valid JSON. */
static void json_fields(struct keel__json *j, const struct keel_field *f,
			size_t n)
{
	size_t i;
	int open = 0;

	for (i = 0; i < n; i++) {
		if (f[i].type == KEEL_FIELD_OBJECT_END) {
			if (open > 0) {
				keel__json_obj_end(j);
				open--;
			}
			continue;
		}
		keel__json_key(j, f[i].key != NULL ? f[i].key : "");
		if (f[i].type == KEEL_FIELD_OBJECT) {
			keel__json_obj(j);
			open++;
		} else {
			json_value(j, &f[i]);
		}
	}
	while (open-- > 0)
		keel__json_obj_end(j);
}

static void trace_ids(const struct keel_trace *t, char tid[33], char sid[17])
{
	if (t == NULL) {
		tid[0] = sid[0] = '\0';
		return;
	}
	keel_trace_id_hex(t, tid);
	keel_span_id_hex(t, sid);
}

static void format_json(struct keel_logger *lg, struct keel__json *j,
			const struct record *r)
{
	char stamp[25], tid[33], sid[17];
	void *const *frames;
	size_t nframes;

	static const char *const level_json[] = {
		"\",\"level\":\"DEBUG\"", "\",\"level\":\"INFO\"",
		"\",\"level\":\"WARN\"", "\",\"level\":\"ERROR\"",
		"\",\"level\":\"FATAL\"",
	};

	keel__rfc3339(&r->ts, stamp);
	trace_ids(r->trace, tid, sid);
	/* The fixed head in one go: {"timestamp":"...","level":"..." */
	keel__json_obj(j);
	keel__json_append(j, "\"timestamp\":\"", 13);
	keel__json_append(j, stamp, 24);
	keel__json_append(j, level_json[r->level], strlen(level_json[r->level]));
	j->nonempty |= 1; /* the object has members: commas from here on */
	if (r->module != NULL) {
		keel__json_key(j, "module");
		keel__json_str(j, r->module);
	}
	keel__json_key(j, "message");
	keel__json_str(j, r->msg != NULL ? r->msg : "");
	if (tid[0] != '\0') {
		keel__json_append(j, ",\"trace_id\":\"", 13);
		keel__json_append(j, tid, 32);
		keel__json_append(j, "\",\"span_id\":\"", 13);
		keel__json_append(j, sid, 16);
		keel__json_append(j, "\"", 1);
	}
	if (lg->service != NULL) {
		keel__json_key(j, "service");
		keel__json_str(j, lg->service);
	}
	if (r->dropped != 0) {
		keel__json_key(j, "dropped");
		keel__json_uint(j, r->dropped);
	}
	json_fields(j, r->fields, r->n);
	if (r->panic != NULL) {
		nframes = keel_panic_stack(r->panic, &frames);
		keel__json_key(j, "panic");
		keel__json_panic(j, r->panic, frames, nframes);
	}
	keel__json_obj_end(j);
	keel__json_append(j, "\n", 1);
}

/* Console values: bare when they are one plain word, else JSON-quoted. */
static void console_str(struct keel__json *j, const char *s, size_t n)
{
	size_t i;
	int bare = n > 0;

	for (i = 0; i < n && bare; i++) {
		unsigned char c = (unsigned char)s[i];

		bare = c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
	}
	if (bare) {
		keel__json_append(j, s, n);
		return;
	}
	keel__json_append(j, "\"", 1);
	keel__json_escape(j, s, n);
	keel__json_append(j, "\"", 1);
}

static void console_fields(struct keel__json *j, const struct keel_field *f,
			   size_t n)
{
	const char *path[8];
	size_t i, depth = 0, k;

	for (i = 0; i < n; i++) {
		if (f[i].type == KEEL_FIELD_OBJECT_END) {
			if (depth > 0)
				depth--;
			continue;
		}
		if (f[i].type == KEEL_FIELD_OBJECT) {
			if (depth < 8)
				path[depth] = f[i].key != NULL ? f[i].key : "";
			depth++;
			continue;
		}
		keel__json_append(j, " ", 1);
		for (k = 0; k < depth && k < 8; k++) {
			keel__json_escape(j, path[k], strlen(path[k]));
			keel__json_append(j, ".", 1);
		}
		keel__json_escape(j, f[i].key != NULL ? f[i].key : "",
				  f[i].key != NULL ? strlen(f[i].key) : 0);
		keel__json_append(j, "=", 1);
		switch (f[i].type) {
		case KEEL_FIELD_STR:
			if (f[i].v.s == NULL)
				keel__json_append(j, "null", 4);
			else
				console_str(j, f[i].v.s,
					    f[i].len == SIZE_MAX ? strlen(f[i].v.s)
								 : f[i].len);
			break;
		case KEEL_FIELD_ERROR: {
			char buf[512];
			size_t len = keel_error_format(f[i].v.e, buf, sizeof(buf));

			console_str(j, buf, len < sizeof(buf) ? len : sizeof(buf) - 1);
			break;
		}
		default:
			json_value(j, &f[i]);
		}
	}
}

static void format_console(struct keel_logger *lg, struct keel__json *j,
			   const struct record *r)
{
	static const char *const colors[] = {
		"\033[90m", "\033[32m", "\033[33m", "\033[31m", "\033[1;31m",
	};
	static const char *const padded[] = {
		"DEBUG", "INFO ", "WARN ", "ERROR", "FATAL",
	};
	char stamp[12], tid[33], sid[17];
	const char *msg = r->msg != NULL ? r->msg : "";

	local_stamp(&r->ts, stamp);
	keel__json_append(j, stamp, sizeof(stamp));
	keel__json_append(j, " ", 1);
	if (lg->color)
		keel__json_append(j, colors[r->level], strlen(colors[r->level]));
	keel__json_append(j, padded[r->level], 5);
	if (lg->color)
		keel__json_append(j, "\033[0m", 4);
	keel__json_append(j, " ", 1);
	if (r->module != NULL) {
		keel__json_escape(j, r->module, strlen(r->module));
		keel__json_append(j, ": ", 2);
	}
	keel__json_escape(j, msg, strlen(msg));
	console_fields(j, r->fields, r->n);
	if (r->dropped != 0) {
		keel__json_append(j, " dropped=", 9);
		keel__json_uint(j, r->dropped);
	}
	if (r->panic != NULL) {
		const char *pm = keel_panic_message(r->panic);
		const char *kind = keel_panic_kind_name(keel_panic_kind(r->panic));

		keel__json_append(j, " panic=", 7);
		console_str(j, pm, strlen(pm));
		keel__json_append(j, " kind=", 6);
		keel__json_append(j, kind, strlen(kind));
	}
	trace_ids(r->trace, tid, sid);
	if (tid[0] != '\0') {
		keel__json_append(j, " trace_id=", 10);
		keel__json_append(j, tid, 32);
	}
	if (r->panic != NULL) {
		void *const *frames;
		size_t n = keel_panic_stack(r->panic, &frames), i;

		/* A stack reads better on lines of its own. */
		for (i = keel__stack_skip(frames, n); i < n; i++) {
			struct keel_frame f;
			char tmp[32];
			int len;

			keel__frame_resolve(frames[i],
					    frames[i] == keel_panic_fault(r->panic)->pc,
					    &f);
			keel__json_append(j, "\n\t", 2);
			keel__json_escape(j, f.function ? f.function : "?",
					  strlen(f.function ? f.function : "?"));
			if (f.file != NULL) {
				keel__json_append(j, " ", 1);
				keel__json_escape(j, f.file, strlen(f.file));
				len = snprintf(tmp, sizeof(tmp), ":%d", f.line);
				keel__json_append(j, tmp, (size_t)len);
			}
		}
	}
	keel__json_append(j, "\n", 1);
}

static void format(struct keel_logger *lg, struct keel__json *j,
		   const struct record *r)
{
	if (lg->format == KEEL_LOG_FORMAT_CONSOLE)
		format_console(lg, j, r);
	else
		format_json(lg, j, r);
}

/* ------------------------------------------------------------------------
 * Delivery
 * ------------------------------------------------------------------------ */

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Under mu. */
static int reopen_locked(struct keel_logger *lg)
{
	int fd;

	if (lg->path == NULL)
		return -EINVAL;
	fd = open(lg->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (dup3(fd, lg->fd, O_CLOEXEC) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	close(fd);
	lg->reopened++;
	return 0;
}

static void check_hup(struct keel_logger *lg)
{
	unsigned gen = atomic_load_explicit(&hup_gen, memory_order_relaxed);

	if (lg->path != NULL && gen != lg->hup_seen) {
		lg->hup_seen = gen;
		(void)reopen_locked(lg);
	}
}

/*
 * The asynchronous queue. Every entry is a header and its bytes, padded to
 * a multiple of 8 so that the next header, and the block of a deferred
 * record, are aligned:
 * - Q_LINE: a record formatted by the caller, written as it is;
 * - Q_DEFERRED: a record whose formatting was left to the writer
 *   (keel_log_write_deferred): a struct qdef, the caller's block, then
 *   module and msg with their NULs.
 * The writer turns a batch into output in order: for a descriptor sink, it
 * copies or formats each record into its output buffer, written with one
 * write(2) per OUT_SIZE bytes; a function sink gets one call per record.
 */
enum { Q_LINE = 0, Q_DEFERRED = 1 };

struct qhdr {
	uint32_t len; /* bytes after the header, padding not included */
	uint8_t level;
	uint8_t kind;
	uint16_t unused;
};

struct qdef {
	struct timespec ts;      /* taken by the caller */
	struct keel_trace trace; /* the caller's context */
	uint8_t has_trace;
	uint16_t module_len;     /* with the NUL; 0: module NULL */
	uint16_t msg_len;        /* with the NUL; 0: msg NULL */
	uint32_t data_len;
	keel_log_fields_fn fn;
	/* then the block (data_len bytes), padding to 8, module, msg */
};

#define QPAD(n) (((n) + 7) & ~(size_t)7)
#define OUT_SIZE (64 * 1024)
#define DEFERRED_MAX_DATA (64 * 1024)

static void emit_fd(struct keel_logger *lg, const char *p, size_t n,
		    uint64_t records, uint64_t *written, uint64_t *errors)
{
	if (write_all(lg->fd, p, n) < 0)
		*errors += records;
	else
		*written += records;
}

/* Synchronous delivery of one record. */
static void deliver_sync(struct keel_logger *lg, enum keel_log_level level,
			 const char *p, size_t n)
{
	pthread_mutex_lock(&lg->mu);
	check_hup(lg);
	if (lg->sink != NULL) {
		lg->sink(lg->sink_ud, level, p, n);
		lg->written++;
	} else {
		emit_fd(lg, p, n, 1, &lg->written, &lg->write_errors);
	}
	pthread_mutex_unlock(&lg->mu);
}

/* Under mu: room for an entry of n bytes at the end of the filling buffer,
 * its header written; NULL when it does not fit or the logger stops (the
 * record is dropped and counted). Never waits for I/O. */
static char *q_push(struct keel_logger *lg, enum keel_log_level level,
		    int kind, size_t n)
{
	size_t need = sizeof(struct qhdr) + QPAD(n);
	struct qhdr h = { (uint32_t)n, (uint8_t)level, (uint8_t)kind, 0 };
	char *p;

	if (n > UINT32_MAX || need > lg->half - lg->fill_len || lg->stop) {
		lg->dropped++;
		return NULL;
	}
	p = lg->fill + lg->fill_len;
	memcpy(p, &h, sizeof(h));
	lg->fill_len += need;
	return p + sizeof(h);
}

/* Under mu, after a push: wakes the writer for the first record after it
 * went idle, then only for a full batch: one wake-up per batch, not per
 * record.
 *
 * Then asks for the next 256 bytes of the filling buffer, for writing.
 * The writer thread last read them (on another CPU, a batch ago), so a
 * caller storing its record there waits for each line to come back; those
 * stores then hold up the unlock that follows (a locked instruction waits
 * for them), on the caller's thread, once per record. Asked for now, the
 * lines come back while the caller does whatever it does before its next
 * record. */
static inline void prefetch_for_write(const char *p)
{
#if defined(__x86_64__) || defined(__i386__)
	/* GCC makes __builtin_prefetch(p, 1) a plain prefetcht0 unless
	 * built for a CPU with PRFCHW: that fetches the line shared, and the
	 * store still waits to own it. Processors without PREFETCHW run it
	 * as a NOP. */
	__asm__ volatile("prefetchw %0" : : "m"(*p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

static void q_wake(struct keel_logger *lg)
{
	size_t i;

	if (lg->waiting || (lg->lingering && lg->fill_len >= lg->threshold))
		pthread_cond_signal(&lg->wake);
	for (i = 0; i < 256 && lg->fill_len + i < lg->half; i += 64)
		prefetch_for_write(lg->fill + lg->fill_len + i);
}

static void deliver_async(struct keel_logger *lg, enum keel_log_level level,
			  const char *p, size_t n)
{
	char *dst;

	pthread_mutex_lock(&lg->mu);
	dst = q_push(lg, level, Q_LINE, n);
	if (dst != NULL) {
		memcpy(dst, p, n);
		q_wake(lg);
	}
	pthread_mutex_unlock(&lg->mu);
}

static void deliver(struct keel_logger *lg, enum keel_log_level level,
		    const char *p, size_t n)
{
	if (lg->async)
		deliver_async(lg, level, p, n);
	else
		deliver_sync(lg, level, p, n);
}

/* Formats r and delivers it: a stack buffer first, the heap for the rare
 * record that does not fit. */
static void log_record(struct keel_logger *lg, const struct record *r)
{
	char stack[STACK_LINE];
	struct keel__json j;

	keel__json_init(&j, stack, sizeof(stack));
	format(lg, &j, r);
	if (j.failed) {
		keel__json_init(&j, NULL, 4 * STACK_LINE);
		format(lg, &j, r);
	}
	if (!j.failed)
		deliver(lg, r->level, j.buf, j.len);
	else
		__atomic_add_fetch(&lg->write_errors, 1, __ATOMIC_RELAXED);
	if (j.heap)
		keel__json_free(&j);
}

/* ------------------------------------------------------------------------
 * The writer thread
 * ------------------------------------------------------------------------ */

/* The output buffer (descriptor sinks) to the descriptor. */
static void out_flush(struct keel_logger *lg, uint64_t *written,
		      uint64_t *errors)
{
	if (lg->out_len > 0)
		emit_fd(lg, lg->out, lg->out_len, lg->out_records, written,
			errors);
	lg->out_len = 0;
	lg->out_records = 0;
}

static void out_line(struct keel_logger *lg, const char *p, size_t n,
		     uint64_t *written, uint64_t *errors)
{
	if (n > OUT_SIZE - lg->out_len) {
		out_flush(lg, written, errors);
		if (n > OUT_SIZE) {
			emit_fd(lg, p, n, 1, written, errors);
			return;
		}
	}
	memcpy(lg->out + lg->out_len, p, n);
	lg->out_len += n;
	lg->out_records++;
}

/* A deferred record: its fields from the caller's function, then the same
 * formatting as log_record's, into the output buffer when it fits. */
static void emit_deferred(struct keel_logger *lg, enum keel_log_level level,
			  const char *p, uint64_t *written, uint64_t *errors)
{
	struct keel_field f[KEEL_LOG_DEFERRED_MAX_FIELDS];
	char stack[STACK_LINE];
	struct keel__json j;
	struct record r;
	struct qdef d;
	const char *data = p + sizeof(d), *module, *msg;
	size_t n;

	memcpy(&d, p, sizeof(d));
	module = data + QPAD((size_t)d.data_len);
	msg = module + d.module_len;
	n = d.fn(data, d.data_len, f, KEEL_LOG_DEFERRED_MAX_FIELDS);
	memset(&r, 0, sizeof(r));
	r.level = level;
	r.module = d.module_len != 0 ? module : lg->module;
	r.msg = d.msg_len != 0 ? msg : NULL;
	r.fields = f;
	r.n = n < KEEL_LOG_DEFERRED_MAX_FIELDS ? n : KEEL_LOG_DEFERRED_MAX_FIELDS;
	r.ts = d.ts;
	r.trace = d.has_trace ? &d.trace : NULL;
	if (lg->sink == NULL) {
		keel__json_init(&j, lg->out + lg->out_len, OUT_SIZE - lg->out_len);
		format(lg, &j, &r);
		if (j.failed && lg->out_len > 0) {
			out_flush(lg, written, errors);
			keel__json_init(&j, lg->out, OUT_SIZE);
			format(lg, &j, &r);
		}
		if (!j.failed) {
			lg->out_len += j.len;
			lg->out_records++;
			return;
		}
		/* Longer than the whole buffer: on its own. */
		keel__json_init(&j, NULL, 4 * STACK_LINE);
		format(lg, &j, &r);
		if (!j.failed)
			emit_fd(lg, j.buf, j.len, 1, written, errors);
		else
			(*errors)++;
		keel__json_free(&j);
		return;
	}
	keel__json_init(&j, stack, sizeof(stack));
	format(lg, &j, &r);
	if (j.failed) {
		keel__json_init(&j, NULL, 4 * STACK_LINE);
		format(lg, &j, &r);
	}
	if (!j.failed) {
		lg->sink(lg->sink_ud, level, j.buf, j.len);
		(*written)++;
	} else {
		(*errors)++;
	}
	if (j.heap)
		keel__json_free(&j);
}

/* A batch of queued entries, in order, to the sink. */
static void emit_batch(struct keel_logger *lg, const char *p, size_t n,
		       uint64_t *written, uint64_t *errors)
{
	while (n >= sizeof(struct qhdr)) {
		struct qhdr h;
		size_t step;

		memcpy(&h, p, sizeof(h));
		step = sizeof(h) + QPAD((size_t)h.len);
		if (h.kind == Q_DEFERRED) {
			emit_deferred(lg, (enum keel_log_level)h.level,
				      p + sizeof(h), written, errors);
		} else if (lg->sink != NULL) {
			lg->sink(lg->sink_ud, (enum keel_log_level)h.level,
				 p + sizeof(h), h.len);
			(*written)++;
		} else {
			out_line(lg, p + sizeof(h), h.len, written, errors);
		}
		p += step;
		n -= step;
	}
	if (lg->sink == NULL)
		out_flush(lg, written, errors);
}

/* Under mu, with records waiting: gives callers up to LINGER_NS to fill a
 * batch of `threshold` bytes before the writer takes what there is, unless
 * someone flushes or the logger stops. Each batch costs a wake-up of the
 * writer and a switch to it, paid on the callers' CPUs when they share
 * one: with 10 ms instead of 50, a server at a fifth of one CPU that logs
 * every request (the HTTP benchmark's paired runs) served 1.8 % fewer. */
#define LINGER_NS 50000000L

static void linger(struct keel_logger *lg)
{
	struct timespec until;

	if (lg->stop || lg->flushers != 0 || lg->fill_len >= lg->threshold)
		return;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += LINGER_NS;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	lg->lingering = 1;
	while (!lg->stop && lg->flushers == 0 && lg->fill_len < lg->threshold)
		if (pthread_cond_timedwait(&lg->wake, &lg->mu, &until) == ETIMEDOUT)
			break;
	lg->lingering = 0;
}

/* The writer thread: swaps the buffers and writes the full one out. */
static void *writer_main(void *arg)
{
	struct keel_logger *lg = arg;
	char stack[512];

	keel_thread_set_name("keel-log");
	pthread_mutex_lock(&lg->mu);
	for (;;) {
		char *batch;
		size_t len;
		uint64_t written = 0, errors = 0, dropped;

		while (lg->fill_len == 0 && !lg->stop) {
			pthread_cond_broadcast(&lg->drained);
			lg->waiting = 1;
			pthread_cond_wait(&lg->wake, &lg->mu);
			lg->waiting = 0;
		}
		if (lg->fill_len == 0 && lg->stop)
			break;
		linger(lg);
		batch = lg->fill;
		len = lg->fill_len;
		lg->fill = lg->spare;
		lg->spare = batch;
		lg->fill_len = 0;
		lg->busy = 1;
		check_hup(lg);
		pthread_mutex_unlock(&lg->mu);

		emit_batch(lg, batch, len, &written, &errors);

		pthread_mutex_lock(&lg->mu);
		lg->written += written;
		lg->write_errors += errors;
		lg->busy = 0;
		dropped = lg->dropped - lg->drop_told;
		if (dropped != 0) {
			/* Say so, in the logger's own format, straight to the
			 * sink: the queue may well be full again. */
			struct record r = { KEEL_LOG_WARN, "keel.log",
					    "log records dropped: queue full",
					    NULL, 0, NULL, dropped,
					    { 0, 0 }, NULL };
			struct keel__json j;

			lg->drop_told = lg->dropped;
			lg->busy = 1;
			pthread_mutex_unlock(&lg->mu);
			clock_gettime(CLOCK_REALTIME, &r.ts);
			keel__json_init(&j, stack, sizeof(stack));
			format(lg, &j, &r);
			written = errors = 0;
			if (lg->sink != NULL) {
				lg->sink(lg->sink_ud, KEEL_LOG_WARN, j.buf, j.len);
				written = 1;
			} else {
				emit_fd(lg, j.buf, j.len, 1, &written, &errors);
			}
			pthread_mutex_lock(&lg->mu);
			lg->written += written;
			lg->write_errors += errors;
			lg->busy = 0;
		}
	}
	lg->busy = 0;
	pthread_cond_broadcast(&lg->drained);
	pthread_mutex_unlock(&lg->mu);
	return NULL;
}

void keel_log_flush(struct keel_logger *lg)
{
	lg = resolve(lg);
	if (!lg->async)
		return;
	pthread_mutex_lock(&lg->mu);
	lg->flushers++;
	while ((lg->fill_len != 0 || lg->busy) && !lg->stop) {
		pthread_cond_signal(&lg->wake);
		pthread_cond_wait(&lg->drained, &lg->mu);
	}
	lg->flushers--;
	pthread_mutex_unlock(&lg->mu);
}

int keel_log_reopen(struct keel_logger *lg)
{
	int rc;

	lg = resolve(lg);
	pthread_mutex_lock(&lg->mu);
	rc = reopen_locked(lg);
	pthread_mutex_unlock(&lg->mu);
	return rc;
}

static struct sigaction prev_hup;

static void on_hup(int sig, siginfo_t *si, void *uc)
{
	atomic_fetch_add_explicit(&hup_gen, 1, memory_order_relaxed);
	if ((prev_hup.sa_flags & SA_SIGINFO) && prev_hup.sa_sigaction != NULL)
		prev_hup.sa_sigaction(sig, si, uc);
	else if (!(prev_hup.sa_flags & SA_SIGINFO) &&
		 prev_hup.sa_handler != SIG_DFL && prev_hup.sa_handler != SIG_IGN)
		prev_hup.sa_handler(sig);
}

int keel_log_reopen_on_sighup(void)
{
	static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
	static int installed;
	struct sigaction sa;
	int rc = 0;

	pthread_mutex_lock(&once);
	if (!installed) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_hup;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGHUP, &sa, &prev_hup) < 0)
			rc = -errno;
		else
			installed = 1;
	}
	pthread_mutex_unlock(&once);
	return rc;
}

void keel_log_stats(struct keel_logger *lg, struct keel_log_stats *s)
{
	lg = resolve(lg);
	pthread_mutex_lock(&lg->mu);
	s->written = lg->written;
	s->dropped = lg->dropped;
	s->write_errors = __atomic_load_n(&lg->write_errors, __ATOMIC_RELAXED);
	s->reopened = lg->reopened;
	pthread_mutex_unlock(&lg->mu);
}

/* ------------------------------------------------------------------------
 * Loggers
 * ------------------------------------------------------------------------ */

void keel_log_config_init(struct keel_log_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->level = KEEL_LOG_INFO;
	cfg->format = KEEL_LOG_FORMAT_AUTO;
	cfg->color = -1;
	cfg->fd = 2;
	cfg->async_buffer = 1024 * 1024;
	cfg->report_level = KEEL_LOG_ERROR;
}

static void logger_free_parts(struct keel_logger *lg)
{
	if (lg->own_fd)
		close(lg->fd);
	free(lg->path);
	free(lg->module);
	free(lg->service);
	free(lg->fill);
	free(lg->spare);
	free(lg->out);
	free(lg);
}

static int dup_str(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return 0;
	*out = strdup(s);
	return *out != NULL ? 0 : -ENOMEM;
}

int keel_log_new(const struct keel_log_config *cfg, struct keel_logger **out)
{
	struct keel_logger *lg;
	int rc;

	if (cfg == NULL || out == NULL || (unsigned)cfg->level > KEEL_LOG_OFF ||
	    (unsigned)cfg->format > KEEL_LOG_FORMAT_CONSOLE ||
	    (unsigned)cfg->report_level > KEEL_LOG_OFF ||
	    cfg->color < -1 || cfg->color > 1 ||
	    (cfg->sink == NULL && cfg->path == NULL && cfg->fd < 0) ||
	    (cfg->path != NULL && cfg->path[0] == '\0'))
		return -EINVAL;
	/* Aligned as its groups are (calloc's 16 bytes would not do). */
	if (posix_memalign((void **)&lg, _Alignof(struct keel_logger),
			   sizeof(*lg)) != 0)
		return -ENOMEM;
	memset(lg, 0, sizeof(*lg));
	lg->head.level = (int)cfg->level;
	lg->fd = -1;
	lg->sink = cfg->sink;
	lg->sink_ud = cfg->sink_ud;
	lg->reporter = cfg->reporter;
	lg->report_level = (int)cfg->report_level;
	lg->hup_seen = atomic_load(&hup_gen);
	rc = dup_str(cfg->module, &lg->module);
	if (rc == 0)
		rc = dup_str(cfg->service, &lg->service);
	if (rc == 0 && cfg->sink == NULL && cfg->path != NULL) {
		rc = dup_str(cfg->path, &lg->path);
		if (rc == 0) {
			lg->fd = open(cfg->path,
				      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
				      0644);
			if (lg->fd < 0)
				rc = -errno;
			else
				lg->own_fd = 1;
		}
	} else if (cfg->sink == NULL) {
		lg->fd = cfg->fd;
	}
	if (rc != 0) {
		logger_free_parts(lg);
		return rc;
	}
	/* A function sink is no terminal: AUTO means JSON there. */
	lg->format = resolve_format(cfg->format, lg->sink != NULL ? -1 : lg->fd);
	lg->color = use_color(cfg->color, lg->sink != NULL ? -1 : lg->fd);
	pthread_mutex_init(&lg->mu, NULL);
	if (cfg->async) {
		size_t size = cfg->async_buffer < MIN_ASYNC ? MIN_ASYNC
							    : cfg->async_buffer;
		pthread_condattr_t ca;

		lg->async = 1;
		lg->half = size / 2;
		lg->fill = malloc(lg->half);
		lg->spare = malloc(lg->half);
		lg->out = lg->sink == NULL ? malloc(OUT_SIZE) : NULL;
		lg->threshold = lg->half / 4;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&lg->wake, &ca);
		pthread_condattr_destroy(&ca);
		pthread_cond_init(&lg->drained, NULL);
		if (lg->fill == NULL || lg->spare == NULL ||
		    (lg->sink == NULL && lg->out == NULL))
			rc = -ENOMEM;
		else if ((rc = -pthread_create(&lg->writer, NULL, writer_main,
					       lg)) != 0)
			rc = rc == -EAGAIN ? -EAGAIN : rc;
		if (rc != 0) {
			pthread_cond_destroy(&lg->wake);
			pthread_cond_destroy(&lg->drained);
			pthread_mutex_destroy(&lg->mu);
			logger_free_parts(lg);
			return rc;
		}
	}
	*out = lg;
	return 0;
}

void keel_log_free(struct keel_logger *lg)
{
	if (lg == NULL || lg == &std_logger)
		return;
	if (keel__log_default == lg)
		keel__log_default = &std_logger;
	if (lg->async) {
		pthread_mutex_lock(&lg->mu);
		lg->stop = 1;
		pthread_cond_signal(&lg->wake);
		pthread_mutex_unlock(&lg->mu);
		pthread_join(lg->writer, NULL);
		pthread_cond_destroy(&lg->wake);
		pthread_cond_destroy(&lg->drained);
	}
	pthread_mutex_destroy(&lg->mu);
	logger_free_parts(lg);
}

/* ------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------ */

/* A record at or above report_level also goes to the reporter, its fields
 * as the report's extra object. The reporter copies what it keeps and never
 * waits, so the caller pays for one more formatting of the fields. */
static void report_record(struct keel_logger *lg, const struct record *r)
{
	static const char *const sentry_levels[] = {
		"debug", "info", "warning", "error", "fatal",
	};
	struct keel_report_event ev;
	char stack[STACK_LINE];
	struct keel__json j;

	keel__json_init(&j, stack, sizeof(stack));
	keel__json_obj(&j);
	json_fields(&j, r->fields, r->n);
	keel__json_obj_end(&j);
	if (j.failed) {
		keel__json_init(&j, NULL, 4 * STACK_LINE);
		keel__json_obj(&j);
		json_fields(&j, r->fields, r->n);
		keel__json_obj_end(&j);
	}
	memset(&ev, 0, sizeof(ev));
	ev.level = sentry_levels[r->level];
	ev.message = r->msg != NULL ? r->msg : "";
	ev.module = r->module;
	ev.panic = r->panic;
	if (!j.failed) {
		ev.extra_json = j.buf;
		ev.extra_len = j.len;
	}
	(void)keel_reporter_send(lg->reporter, &ev); /* counted there if refused */
	if (j.heap)
		keel__json_free(&j);
}

static void log_common(struct keel_logger *lg, enum keel_log_level level,
		       const char *module, const char *msg,
		       const struct keel_panic *p,
		       const struct keel_field *fields, size_t n)
{
	struct record r;

	if ((unsigned)level >= KEEL_LOG_OFF || !keel_log_enabled(lg, level))
		return;
	lg = resolve(lg);
	r.level = level;
	r.module = module != NULL ? module : lg->module;
	r.msg = msg;
	r.fields = fields;
	r.n = fields != NULL ? n : 0;
	r.panic = p;
	r.dropped = 0;
	clock_gettime(CLOCK_REALTIME, &r.ts);
	r.trace = keel_trace_current();
	log_record(lg, &r);
	if (lg->reporter != NULL && (int)level >= lg->report_level)
		report_record(lg, &r);
	if (level == KEEL_LOG_FATAL)
		keel_log_flush(lg);
}

void keel_log_write(struct keel_logger *lg, enum keel_log_level level,
		    const char *module, const char *msg,
		    const struct keel_field *fields, size_t n)
{
	log_common(lg, level, module, msg, NULL, fields, n);
}

/* Queues a deferred record (see keel/log.h), or formats it now when it
 * cannot wait for the writer. */
void keel_log_write_deferred(struct keel_logger *lg, enum keel_log_level level,
			     const char *module, const char *msg,
			     keel_log_fields_fn fields_fn, const void *data,
			     size_t len)
{
	size_t mlen, slen;
	struct qdef d;
	char *dst;

	if ((unsigned)level >= KEEL_LOG_OFF || !keel_log_enabled(lg, level) ||
	    fields_fn == NULL || (data == NULL && len > 0))
		return;
	lg = resolve(lg);
	mlen = module != NULL ? strlen(module) + 1 : 0;
	slen = msg != NULL ? strlen(msg) + 1 : 0;
	if (!lg->async || level == KEEL_LOG_FATAL ||
	    (lg->reporter != NULL && (int)level >= lg->report_level) ||
	    len > DEFERRED_MAX_DATA || mlen > UINT16_MAX || slen > UINT16_MAX) {
		struct keel_field f[KEEL_LOG_DEFERRED_MAX_FIELDS];
		size_t n = fields_fn(data, len, f, KEEL_LOG_DEFERRED_MAX_FIELDS);

		log_common(lg, level, module, msg, NULL, f,
			   n < KEEL_LOG_DEFERRED_MAX_FIELDS
				   ? n
				   : KEEL_LOG_DEFERRED_MAX_FIELDS);
		return;
	}
	memset(&d, 0, sizeof(d));
	clock_gettime(CLOCK_REALTIME, &d.ts);
	{
		const struct keel_trace *t = keel_trace_current();

		if (t != NULL) {
			d.trace = *t;
			d.has_trace = 1;
		}
	}
	d.module_len = (uint16_t)mlen;
	d.msg_len = (uint16_t)slen;
	d.data_len = (uint32_t)len;
	d.fn = fields_fn;
	pthread_mutex_lock(&lg->mu);
	dst = q_push(lg, level, Q_DEFERRED, sizeof(d) + QPAD(len) + mlen + slen);
	if (dst != NULL) {
		memcpy(dst, &d, sizeof(d));
		dst += sizeof(d);
		if (len > 0)
			memcpy(dst, data, len);
		dst += QPAD(len);
		if (mlen > 0)
			memcpy(dst, module, mlen);
		if (slen > 0)
			memcpy(dst + mlen, msg, slen);
		q_wake(lg);
	}
	pthread_mutex_unlock(&lg->mu);
}

void keel_log_panic(struct keel_logger *lg, enum keel_log_level level,
		    const char *module, const char *msg,
		    const struct keel_panic *p, const struct keel_field *fields,
		    size_t n)
{
	log_common(lg, level, module, msg != NULL ? msg : "panic recovered", p,
		   fields, n);
}

void keel_logf(struct keel_logger *lg, enum keel_log_level level,
	       const char *module, const char *fmt, ...)
{
	char stack[512], *msg = stack;
	va_list ap;
	int len;

	if (!keel_log_enabled(lg, level) || fmt == NULL)
		return;
	va_start(ap, fmt);
	len = vsnprintf(stack, sizeof(stack), fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(stack)) {
		msg = malloc((size_t)len + 1);
		if (msg == NULL) {
			msg = stack; /* cut, rather than lost */
		} else {
			va_start(ap, fmt);
			vsnprintf(msg, (size_t)len + 1, fmt, ap);
			va_end(ap);
		}
	}
	log_common(lg, level, module, msg, NULL, NULL, 0);
	if (msg != stack)
		free(msg);
}

void keel_log_task_panic(const struct keel_task_panic *info, void *logger)
{
	struct keel_field f[] = {
		KEEL_STR("pool", info->pool),
		KEEL_STR("task", info->task),
		KEEL_INT("worker", info->worker),
	};

	keel_log_panic(logger, KEEL_LOG_ERROR, "keel.pool", "task panicked",
		       info->panic, f, sizeof(f) / sizeof(f[0]));
}

void keel_log_thread_panic(const struct keel_panic *p, void *logger)
{
	char name[16] = "";

	(void)pthread_getname_np(pthread_self(), name, sizeof(name));
	keel_log_panic(logger, KEEL_LOG_ERROR, "keel.thread", "thread panicked",
		       p, (struct keel_field[]){ KEEL_STR("thread", name) }, 1);
}
