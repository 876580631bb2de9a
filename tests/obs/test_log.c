/*
 * tests/obs/test_log.c - the structured logger: every record read back by
 * an independent JSON parser (jansson), the console format, levels, sinks,
 * concurrency without torn lines, SIGHUP reopen, the async queue's drop
 * accounting, and panics as records.
 */
/* KEEL_TEST_LABELS: threads */
#include "keel_test.h"

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <keel/log.h>
#include <keel/trace.h>

#include <math.h>

#include "../../src/obs/json.h"

/* ------------------------------------------------------------------------
 * Helpers: a logger into a pipe or a memory sink, and reading it back
 * ------------------------------------------------------------------------ */

struct mem {
	pthread_mutex_t mu;
	char *buf;
	size_t len, cap;
	int calls;
	enum keel_log_level last_level;
	int bad_calls; /* a call whose text was not exactly one line */
};

static void mem_sink(void *ud, enum keel_log_level level, const char *line,
		     size_t len)
{
	struct mem *m = ud;

	pthread_mutex_lock(&m->mu);
	if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
		m->bad_calls++;
	if (m->len + len + 1 > m->cap) {
		m->cap = (m->len + len + 1) * 2;
		m->buf = realloc(m->buf, m->cap);
	}
	memcpy(m->buf + m->len, line, len);
	m->len += len;
	m->buf[m->len] = '\0';
	m->calls++;
	m->last_level = level;
	pthread_mutex_unlock(&m->mu);
}

static struct keel_logger *mem_logger(struct mem *m, enum keel_log_level level)
{
	struct keel_log_config cfg;
	struct keel_logger *lg = NULL;

	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->mu, NULL);
	keel_log_config_init(&cfg);
	cfg.level = level;
	cfg.sink = mem_sink;
	cfg.sink_ud = m;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	return lg;
}

/* The n-th line (0-based) of text, parsed; fails the test if not JSON. */
static json_t *line_json(const char *text, int n)
{
	const char *p = text, *nl;
	json_error_t err;
	json_t *v;

	while (n-- > 0) {
		p = strchr(p, '\n');
		CHECK(p != NULL);
		p++;
	}
	nl = strchr(p, '\n');
	CHECK(nl != NULL);
	v = json_loadb(p, (size_t)(nl - p), 0, &err);
	if (v == NULL)
		KEEL_TEST_FAIL("not JSON (%s at %d): %.*s", err.text, err.position,
			       (int)(nl - p), p);
	return v;
}

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------ */

TEST(record_has_the_standard_fields)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);
	regex_t re;
	json_t *v;

	keel_log_error(lg, "payment-service", "Payment validation failed",
		       KEEL_OBJ("details"), KEEL_STR("error_code", "PAY_4001"),
		       KEEL_OBJ_END());
	v = line_json(m.buf, 0);
	CHECK_STR(jstr(v, "level"), "ERROR");
	CHECK_STR(jstr(v, "module"), "payment-service");
	CHECK_STR(jstr(v, "message"), "Payment validation failed");
	CHECK_STR(jstr(json_object_get(v, "details"), "error_code"), "PAY_4001");
	/* RFC 3339, UTC, milliseconds. */
	CHECK_INT(regcomp(&re, "^[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{3}Z$",
			  REG_EXTENDED | REG_NOSUB), ==, 0);
	CHECK(jstr(v, "timestamp") != NULL);
	CHECK_INT(regexec(&re, jstr(v, "timestamp"), 0, NULL, 0), ==, 0);
	/* No trace context on this thread: no ids. */
	CHECK(json_object_get(v, "trace_id") == NULL);
	CHECK_INT(m.calls, ==, 1);
	CHECK_INT(m.bad_calls, ==, 0);
	CHECK_INT(m.last_level, ==, KEEL_LOG_ERROR);
	regfree(&re);
	json_decref(v);
	keel_log_free(lg);
}

TEST(timestamp_is_now_in_utc)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);
	struct tm tm;
	time_t before = time(NULL), at;
	json_t *v;

	keel_log_info(lg, NULL, "now");
	v = line_json(m.buf, 0);
	memset(&tm, 0, sizeof(tm));
	CHECK(strptime(jstr(v, "timestamp"), "%Y-%m-%dT%H:%M:%S", &tm) != NULL);
	at = timegm(&tm);
	CHECK(at >= before && at <= time(NULL));
	json_decref(v);
	keel_log_free(lg);
}

TEST(typed_fields_read_back)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_DEBUG);
	struct keel_error *e = keel_error_wrap(keel_error_new(-ECONNREFUSED, "dial db"),
					       0, "load user %d", 7);
	json_t *v, *err;

	keel_log_debug(lg, "m", "fields", KEEL_STR("s", "text"),
		       KEEL_STRN("sn", "abcdef", 3), KEEL_INT("i", INT64_MIN),
		       KEEL_UINT("u", INT64_MAX), KEEL_FLOAT("f", 0.1),
		       KEEL_FLOAT("nan", 0.0 / 0.0), KEEL_BOOL("b", 5),
		       KEEL_NULL("z"), KEEL_STR("nullstr", NULL), KEEL_ERR("err", e),
		       KEEL_OBJ("a"), KEEL_OBJ("b2"), KEEL_INT("deep", 1),
		       KEEL_OBJ_END(), KEEL_INT("x", 2), KEEL_OBJ_END(),
		       KEEL_INT("after", 3));
	v = line_json(m.buf, 0);
	CHECK_STR(jstr(v, "s"), "text");
	CHECK_STR(jstr(v, "sn"), "abc");
	CHECK(json_integer_value(json_object_get(v, "i")) == INT64_MIN);
	CHECK(json_integer_value(json_object_get(v, "u")) == INT64_MAX);
	/* jansson keeps integers in json_int_t (long long): UINT64_MAX is
	 * outside it, so check that one as text. */
	keel_log_info(lg, "m", "big", KEEL_UINT("u", UINT64_MAX));
	CHECK_CONTAINS(m.buf, "\"u\":18446744073709551615}");
	CHECK(json_real_value(json_object_get(v, "f")) == 0.1);
	CHECK(json_is_null(json_object_get(v, "nan")));
	CHECK(json_is_true(json_object_get(v, "b")));
	CHECK(json_is_null(json_object_get(v, "z")));
	CHECK(json_is_null(json_object_get(v, "nullstr")));
	err = json_object_get(v, "err");
	CHECK_STR(jstr(err, "message"), "load user 7");
	CHECK_INT(json_integer_value(json_object_get(err, "code")), ==, -ECONNREFUSED);
	CHECK_STR(jstr(json_object_get(err, "cause"), "message"), "dial db");
	CHECK_INT(json_integer_value(json_object_get(
			  json_object_get(json_object_get(v, "a"), "b2"), "deep")),
		  ==, 1);
	CHECK_INT(json_integer_value(json_object_get(json_object_get(v, "a"), "x")), ==, 2);
	CHECK_INT(json_integer_value(json_object_get(v, "after")), ==, 3);
	keel_error_free(e);
	json_decref(v);
	keel_log_free(lg);
}

TEST(unbalanced_objects_still_make_json)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);
	json_t *v;

	keel_log_info(lg, "m", "open", KEEL_OBJ("a"), KEEL_OBJ("b"), KEEL_INT("x", 1));
	keel_log_info(lg, "m", "close", KEEL_OBJ_END(), KEEL_INT("y", 2), KEEL_OBJ_END());
	v = line_json(m.buf, 0);
	CHECK_INT(json_integer_value(json_object_get(json_object_get(json_object_get(v, "a"), "b"), "x")), ==, 1);
	json_decref(v);
	v = line_json(m.buf, 1);
	CHECK_INT(json_integer_value(json_object_get(v, "y")), ==, 2);
	json_decref(v);
	keel_log_free(lg);
}

/* What the JSON writer promises for any input bytes: decoded text equals
 * the input with each invalid UTF-8 byte replaced by U+FFFD. */
TEST(any_bytes_are_escaped_to_valid_json)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);
	unsigned char raw[256];
	char key[4] = "k\x01";
	int i, round;
	unsigned seed = 12345;

	for (i = 0; i < 255; i++)
		raw[i] = (unsigned char)(i + 1);
	raw[255] = 0;
	keel_log_info(lg, "m\xc3\x28", (const char *)raw, KEEL_STR(key, "v\xe2\x80\xa8"));
	for (round = 0; round < 2000; round++) {
		char msg[64];
		int len = (int)(rand_r(&seed) % 63);

		for (i = 0; i < len; i++)
			msg[i] = (char)(1 + rand_r(&seed) % 255);
		msg[len] = '\0';
		keel_log_info(lg, msg, msg, KEEL_STR(msg, msg));
	}
	CHECK_INT(count_lines(m.buf), ==, 2001);
	for (i = 0; i < 2001; i++) {
		json_t *v = line_json(m.buf, i); /* jansson rejects bad UTF-8 */

		CHECK(jstr(v, "message") != NULL);
		if (i == 0) {
			const char *msg = jstr(v, "message");

			/* 0x01..0x7f unchanged, then 0x80..0xff each U+FFFD. */
			CHECK_INT(strncmp(msg, (const char *)raw, 127), ==, 0);
			CHECK_INT(strlen(msg), ==, 127 + 128 * 3);
			CHECK_STR(jstr(v, "module"), "m\xef\xbf\xbd(");
			CHECK_STR(jstr(v, "k\x01"), "v\xe2\x80\xa8");
		}
		json_decref(v);
	}
	/* U+2028 is written escaped, so the line is also valid JavaScript. */
	CHECK_CONTAINS(m.buf, "v\\u2028");
	keel_log_free(lg);
}

/* ------------------------------------------------------------------------
 * Levels
 * ------------------------------------------------------------------------ */

static int evaluated;

static const char *side_effect(void)
{
	evaluated++;
	return "x";
}

TEST(disabled_level_evaluates_nothing)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_WARN);

	evaluated = 0;
	keel_log_info(lg, "m", "hidden", KEEL_STR("k", side_effect()));
	keel_log_debug(lg, "m", "hidden", KEEL_STR("k", side_effect()));
	CHECK_INT(evaluated, ==, 0);
	CHECK_INT(m.calls, ==, 0);
	CHECK(!keel_log_enabled(lg, KEEL_LOG_INFO));
	CHECK(keel_log_enabled(lg, KEEL_LOG_WARN));
	keel_log_warn(lg, "m", "shown", KEEL_STR("k", side_effect()));
	CHECK_INT(evaluated, ==, 1);
	CHECK_INT(m.calls, ==, 1);
	keel_log_set_level(lg, KEEL_LOG_DEBUG);
	keel_log_debug(lg, "m", "now shown");
	CHECK_INT(m.calls, ==, 2);
	keel_log_set_level(lg, KEEL_LOG_OFF);
	keel_log_fatal(lg, "m", "off means off");
	keel_logf(lg, KEEL_LOG_FATAL, "m", "%s", "off");
	CHECK_INT(m.calls, ==, 2);
	keel_log_set_level(lg, (enum keel_log_level)99); /* ignored */
	CHECK(!keel_log_enabled(lg, KEEL_LOG_FATAL));
	keel_log_free(lg);
}

TEST(level_names_parse_and_print)
{
	enum keel_log_level l;

	CHECK_STR(keel_log_level_name(KEEL_LOG_DEBUG), "DEBUG");
	CHECK_STR(keel_log_level_name(KEEL_LOG_FATAL), "FATAL");
	CHECK(keel_log_level_name((enum keel_log_level)17) == NULL);
	CHECK_INT(keel_log_level_parse("warning", &l), ==, 0);
	CHECK_INT(l, ==, KEEL_LOG_WARN);
	CHECK_INT(keel_log_level_parse("Error", &l), ==, 0);
	CHECK_INT(l, ==, KEEL_LOG_ERROR);
	CHECK_INT(keel_log_level_parse("off", &l), ==, 0);
	CHECK_INT(l, ==, KEEL_LOG_OFF);
	l = KEEL_LOG_INFO;
	CHECK_INT(keel_log_level_parse("verbose", &l), ==, -EINVAL);
	CHECK_INT(keel_log_level_parse(NULL, &l), ==, -EINVAL);
	CHECK_INT(l, ==, KEEL_LOG_INFO);
}

TEST(printf_records_of_any_length)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);
	char big[5000];
	json_t *v;

	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	keel_logf(lg, KEEL_LOG_WARN, "fmt", "n=%d s=%s", 42, "ok");
	keel_logf(lg, KEEL_LOG_WARN, "fmt", "%s!", big);
	v = line_json(m.buf, 0);
	CHECK_STR(jstr(v, "message"), "n=42 s=ok");
	json_decref(v);
	v = line_json(m.buf, 1);
	CHECK_INT(strlen(jstr(v, "message")), ==, sizeof(big));
	json_decref(v);
	keel_log_free(lg);
}

/* ------------------------------------------------------------------------
 * Trace context
 * ------------------------------------------------------------------------ */

TEST(records_carry_the_current_trace)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);
	struct keel_trace t;
	char tid[33], sid[17];
	json_t *v;

	CHECK_INT(keel_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
					 55, &t), ==, 0);
	keel_trace_set(&t, NULL);
	keel_log_info(lg, "m", "traced");
	keel_trace_set(NULL, NULL);
	keel_log_info(lg, "m", "untraced");
	v = line_json(m.buf, 0);
	keel_trace_id_hex(&t, tid);
	keel_span_id_hex(&t, sid);
	CHECK_STR(jstr(v, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK_STR(jstr(v, "span_id"), "00f067aa0ba902b7");
	json_decref(v);
	v = line_json(m.buf, 1);
	CHECK(json_object_get(v, "trace_id") == NULL);
	json_decref(v);
	keel_log_free(lg);
}

static struct keel_logger *pool_lg;

static void traced_task(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
	keel_log_info(pool_lg, "task", "in the task");
}

TEST(pool_tasks_log_the_submitters_trace)
{
	struct mem m;
	struct keel_pool_config pc;
	struct keel_pool *pool;
	struct keel_trace t;
	char tid[33];
	json_t *v;

	pool_lg = mem_logger(&m, KEEL_LOG_INFO);
	keel_pool_config_init(&pc);
	pc.min_threads = 1;
	CHECK_INT(keel_pool_new(&pc, &pool), ==, 0);
	keel_trace_new(&t);
	keel_trace_set(&t, NULL);
	CHECK_INT(keel_trace_pool_submit(pool, traced_task, NULL, NULL), ==, 0);
	CHECK_INT(keel_pool_shutdown(pool, KEEL_POOL_DRAIN, 0), ==, 0);
	keel_pool_free(pool);
	v = line_json(m.buf, 0);
	keel_trace_id_hex(&t, tid);
	CHECK_STR(jstr(v, "trace_id"), tid);
	json_decref(v);
	keel_log_free(pool_lg);
}

/* ------------------------------------------------------------------------
 * Console format
 * ------------------------------------------------------------------------ */

static char *read_fd_all(int fd)
{
	static char buf[1 << 20];
	size_t n = 0;
	ssize_t r;

	while ((r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	return buf;
}

TEST(console_format_for_people)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	regex_t re;
	int fds[2];
	char *out;

	CHECK_INT(pipe(fds), ==, 0);
	keel_log_config_init(&cfg);
	cfg.fd = fds[1];
	cfg.format = KEEL_LOG_FORMAT_CONSOLE;
	cfg.color = 0;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_warn(lg, "disk", "almost full", KEEL_INT("free_mb", 12),
		      KEEL_STR("path", "/var/lib/x y"), KEEL_OBJ("d"),
		      KEEL_BOOL("ok", 0), KEEL_OBJ_END());
	cfg.color = 1;
	keel_log_free(lg);
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_error(lg, "disk", "full");
	keel_log_free(lg);
	close(fds[1]);
	out = read_fd_all(fds[0]);
	close(fds[0]);
	CHECK_INT(regcomp(&re, "^[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{3} WARN  disk: almost full "
			      "free_mb=12 path=\"/var/lib/x y\" d\\.ok=false\n",
			  REG_EXTENDED | REG_NOSUB), ==, 0);
	CHECK_INT(regexec(&re, out, 0, NULL, 0), ==, 0);
	regfree(&re);
	CHECK_CONTAINS(out, "\033[31mERROR\033[0m disk: full\n");
}

TEST(auto_format_is_json_on_a_pipe_and_console_on_a_terminal)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	int fds[2], master, slave;
	char buf[512];
	ssize_t n;

	CHECK_INT(pipe(fds), ==, 0);
	keel_log_config_init(&cfg);
	cfg.fd = fds[1];
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_info(lg, "m", "to a pipe");
	keel_log_free(lg);
	n = read(fds[0], buf, sizeof(buf) - 1);
	CHECK(n > 0);
	buf[n] = '\0';
	CHECK(buf[0] == '{');

	master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
		KEEL_TEST_SKIP("no pseudo-terminals here");
	slave = open(ptsname(master), O_RDWR | O_NOCTTY);
	CHECK(slave >= 0);
	cfg.fd = slave;
	setenv("NO_COLOR", "1", 1);
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_info(lg, "m", "to a terminal");
	keel_log_free(lg);
	n = read(master, buf, sizeof(buf) - 1);
	CHECK(n > 0);
	buf[n] = '\0';
	CHECK(buf[0] != '{');
	CHECK_CONTAINS(buf, "INFO  m: to a terminal");
	CHECK(strchr(buf, '\033') == NULL); /* NO_COLOR */
}

/* ------------------------------------------------------------------------
 * Concurrency: no torn or interleaved records
 * ------------------------------------------------------------------------ */

#define THREADS 8
#define PER_THREAD 3000

struct writer_arg {
	struct keel_logger *lg;
	int id;
	int deferred; /* every other record through keel_log_write_deferred */
};

/* A deferred "rec" record: its values, then the pad bytes. */
struct rec_block {
	int64_t thread, seq;
	uint64_t padlen;
	char pad[];
};

static size_t rec_fields(const void *data, size_t len, struct keel_field *f,
			 size_t max)
{
	const struct rec_block *b = data;

	CHECK(((uintptr_t)data & 7) == 0);
	CHECK_INT(len, ==, sizeof(*b) + b->padlen);
	CHECK(max >= 3);
	f[0] = KEEL_INT("thread", b->thread);
	f[1] = KEEL_INT("seq", b->seq);
	f[2] = KEEL_STRN("pad", b->pad, b->padlen);
	return 3;
}

static void *writer(void *p)
{
	struct writer_arg *a = p;
	char pad[6000];
	union {
		struct rec_block b;
		char bytes[sizeof(struct rec_block) + 6000];
	} u;
	int i;

	memset(pad, 'p', sizeof(pad));
	memset(u.b.pad, 'p', 6000);
	for (i = 0; i < PER_THREAD; i++) {
		/* Every 50th record is longer than PIPE_BUF. */
		size_t padlen = i % 50 == 0 ? 5000 : (size_t)(i % 97);

		if (a->deferred && i % 2 == 1) {
			u.b.thread = a->id;
			u.b.seq = i;
			u.b.padlen = padlen;
			keel_log_write_deferred(a->lg, KEEL_LOG_INFO, "w", "rec",
						rec_fields, &u.b,
						sizeof(u.b) + padlen);
			continue;
		}
		keel_log_info(a->lg, "w", "rec", KEEL_INT("thread", a->id),
			      KEEL_INT("seq", i), KEEL_STRN("pad", pad, padlen));
	}
	return NULL;
}

struct drain {
	int fd;
	char *buf;
	size_t len, cap;
};

static void *drainer(void *p)
{
	struct drain *d = p;
	ssize_t r;

	for (;;) {
		if (d->cap - d->len < 65536) {
			d->cap = d->cap * 2 + 65536;
			d->buf = realloc(d->buf, d->cap);
		}
		r = read(d->fd, d->buf + d->len, d->cap - d->len - 1);
		if (r <= 0)
			break;
		d->len += (size_t)r;
	}
	d->buf[d->len] = '\0';
	return NULL;
}

static void check_concurrent_output(const char *buf)
{
	int next[THREADS] = { 0 }, lines = 0;
	const char *p = buf;

	while (*p) {
		const char *nl = strchr(p, '\n');
		json_error_t err;
		json_t *v;
		int id, seq;

		CHECK(nl != NULL);
		v = json_loadb(p, (size_t)(nl - p), 0, &err);
		if (v == NULL)
			KEEL_TEST_FAIL("torn line %d: %s", lines, err.text);
		id = (int)json_integer_value(json_object_get(v, "thread"));
		seq = (int)json_integer_value(json_object_get(v, "seq"));
		CHECK(id >= 0 && id < THREADS);
		CHECK_INT(seq, ==, next[id]); /* each thread's records in order */
		next[id]++;
		json_decref(v);
		lines++;
		p = nl + 1;
	}
	CHECK_INT(lines, ==, THREADS * PER_THREAD);
}

static void concurrent(int async, int deferred)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct writer_arg a[THREADS];
	pthread_t th[THREADS], dr;
	struct drain d = { 0 };
	struct keel_log_stats st;
	int fds[2], i;

	CHECK_INT(pipe(fds), ==, 0);
	d.fd = fds[0];
	CHECK_INT(pthread_create(&dr, NULL, drainer, &d), ==, 0);
	keel_log_config_init(&cfg);
	cfg.fd = fds[1];
	cfg.async = async;
	cfg.async_buffer = 64 << 20; /* large enough: this test drops nothing */
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	for (i = 0; i < THREADS; i++) {
		a[i].lg = lg;
		a[i].id = i;
		a[i].deferred = deferred;
		CHECK_INT(pthread_create(&th[i], NULL, writer, &a[i]), ==, 0);
	}
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	keel_log_flush(lg);
	keel_log_stats(lg, &st);
	keel_log_free(lg);
	close(fds[1]);
	pthread_join(dr, NULL);
	close(fds[0]);
	CHECK_INT(st.written, ==, THREADS * PER_THREAD);
	CHECK_INT(st.dropped, ==, 0);
	check_concurrent_output(d.buf);
	free(d.buf);
}

TEST(many_threads_no_torn_lines_sync)
{
	concurrent(0, 0);
}

TEST(many_threads_no_torn_lines_async)
{
	concurrent(1, 0);
}

/* Deferred records among the others: each thread's records still come out
 * whole and in the order they were logged. */
TEST(many_threads_no_torn_lines_async_deferred)
{
	concurrent(1, 1);
}

TEST(many_threads_no_torn_lines_sync_deferred)
{
	concurrent(0, 1);
}

/* ------------------------------------------------------------------------
 * Files and SIGHUP
 * ------------------------------------------------------------------------ */

static char *slurp(const char *path)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

TEST(file_sink_reopens_on_sighup)
{
	char dir[] = "/tmp/keel-log-XXXXXX", path[128], rotated[128];
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct keel_log_stats st;
	struct stat sb;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/app.log", dir);
	snprintf(rotated, sizeof(rotated), "%s/app.log.1", dir);
	keel_log_config_init(&cfg);
	cfg.path = path;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	CHECK_INT(stat(path, &sb), ==, 0);
	CHECK_INT(sb.st_mode & 0777, ==, 0644 & ~umask(022));
	keel_log_info(lg, "m", "before rotation");
	CHECK_INT(rename(path, rotated), ==, 0); /* what logrotate does */
	keel_log_info(lg, "m", "still the old file");
	CHECK_INT(keel_log_reopen_on_sighup(), ==, 0);
	CHECK_INT(keel_log_reopen_on_sighup(), ==, 0); /* idempotent */
	CHECK_INT(raise(SIGHUP), ==, 0);
	keel_log_info(lg, "m", "after rotation");
	keel_log_stats(lg, &st);
	CHECK_INT(st.reopened, ==, 1);
	CHECK_INT(st.written, ==, 3);
	keel_log_free(lg);
	CHECK_CONTAINS(slurp(rotated), "before rotation");
	CHECK_CONTAINS(slurp(rotated), "still the old file");
	CHECK(strstr(slurp(rotated), "after rotation") == NULL);
	CHECK_CONTAINS(slurp(path), "after rotation");
	CHECK_INT(count_lines(slurp(path)), ==, 1);
}

static volatile sig_atomic_t prev_handler_ran;

static void prev_handler(int sig)
{
	(void)sig;
	prev_handler_ran = 1;
}

TEST(sighup_keeps_the_previous_handler)
{
	signal(SIGHUP, prev_handler);
	CHECK_INT(keel_log_reopen_on_sighup(), ==, 0);
	raise(SIGHUP);
	CHECK_INT(prev_handler_ran, ==, 1);
}

TEST(reopen_failure_keeps_the_old_file)
{
	char dir[] = "/tmp/keel-log-XXXXXX", path[160], moved[64];
	struct keel_log_config cfg;
	struct keel_logger *lg;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/sub", dir);
	CHECK_INT(mkdir(path, 0755), ==, 0);
	snprintf(path, sizeof(path), "%s/sub/app.log", dir);
	snprintf(moved, sizeof(moved), "%s/moved", dir);
	keel_log_config_init(&cfg);
	cfg.path = path;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	snprintf(path, sizeof(path), "%s/sub", dir);
	CHECK_INT(rename(path, moved), ==, 0); /* the directory is gone */
	CHECK_INT(keel_log_reopen(lg), ==, -ENOENT);
	keel_log_info(lg, "m", "kept");
	keel_log_free(lg);
	snprintf(path, sizeof(path), "%s/app.log", moved);
	CHECK_CONTAINS(slurp(path), "kept");
}

TEST(bad_configs_are_refused)
{
	struct keel_log_config cfg;
	struct keel_logger *lg = (struct keel_logger *)0x1;

	keel_log_config_init(&cfg);
	cfg.level = (enum keel_log_level)9;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, -EINVAL);
	keel_log_config_init(&cfg);
	cfg.format = (enum keel_log_format)7;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, -EINVAL);
	keel_log_config_init(&cfg);
	cfg.color = 2;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, -EINVAL);
	keel_log_config_init(&cfg);
	cfg.fd = -1;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, -EINVAL);
	keel_log_config_init(&cfg);
	cfg.path = "";
	CHECK_INT(keel_log_new(&cfg, &lg), ==, -EINVAL);
	cfg.path = "/nonexistent-dir/x.log";
	CHECK_INT(keel_log_new(&cfg, &lg), ==, -ENOENT);
	CHECK(access("/nonexistent-dir", F_OK) != 0);
	CHECK(lg == (struct keel_logger *)0x1); /* untouched */
	CHECK_INT(keel_log_new(NULL, &lg), ==, -EINVAL);
	keel_log_free(NULL);
	keel_log_free(keel_log_default()); /* the built-in one: a no-op */
}

/* ------------------------------------------------------------------------
 * Async mode: never blocks, counts drops, says so
 * ------------------------------------------------------------------------ */

static sem_t sink_gate;
static struct mem gated;

static void gated_sink(void *ud, enum keel_log_level level, const char *line,
		       size_t len)
{
	static int first = 1;

	if (first) {
		first = 0;
		sem_wait(&sink_gate); /* the writer is stuck in the sink */
	}
	mem_sink(ud, level, line, len);
}

TEST(async_full_queue_drops_counts_and_says_so)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct keel_log_stats st;
	json_t *v;
	int i, dropped_lines = 0, normal = 0;
	double t0;

	memset(&gated, 0, sizeof(gated));
	pthread_mutex_init(&gated.mu, NULL);
	sem_init(&sink_gate, 0, 0);
	keel_log_config_init(&cfg);
	cfg.sink = gated_sink;
	cfg.sink_ud = &gated;
	cfg.async = 1;
	cfg.async_buffer = 16 * 1024;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_info(lg, "m", "first");
	usleep(50 * 1000); /* let the writer take it and block in the sink */
	alarm(20); /* a caller that blocked would hang here */
	t0 = keel_test_now();
	for (i = 0; i < 10000; i++)
		keel_log_info(lg, "m", "flood", KEEL_INT("i", i));
	(void)t0;
	keel_log_stats(lg, &st);
	CHECK(st.dropped > 0);
	CHECK(st.dropped < 10000);
	sem_post(&sink_gate);
	keel_log_flush(lg);
	keel_log_info(lg, "m", "after");
	keel_log_flush(lg);
	keel_log_stats(lg, &st);
	alarm(0);
	CHECK_INT(gated.bad_calls, ==, 0);
	for (i = 0; i < count_lines(gated.buf); i++) {
		v = line_json(gated.buf, i);
		if (strcmp(jstr(v, "message"), "log records dropped: queue full") == 0) {
			dropped_lines++;
			CHECK_STR(jstr(v, "level"), "WARN");
			CHECK_STR(jstr(v, "module"), "keel.log");
			CHECK_INT(json_integer_value(json_object_get(v, "dropped")), ==, (long long)st.dropped);
		} else {
			normal++;
		}
		json_decref(v);
	}
	CHECK_INT(dropped_lines, ==, 1);
	/* Everything not dropped arrived: first, the flood's kept part, after. */
	CHECK_INT(normal, ==, 1 + 10000 - (int)st.dropped + 1);
	CHECK_INT(st.written, ==, (uint64_t)normal + 1);
	keel_log_free(lg);
}

TEST(async_fatal_is_written_before_the_call_returns)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	char dir[] = "/tmp/keel-log-XXXXXX", path[128];

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/app.log", dir);
	keel_log_config_init(&cfg);
	cfg.path = path;
	cfg.async = 1;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_fatal(lg, "m", "last words");
	/* No flush, no free: the record is in the file already. */
	CHECK_CONTAINS(slurp(path), "last words");
	keel_log_free(lg);
}

TEST(async_free_writes_everything_queued)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	char dir[] = "/tmp/keel-log-XXXXXX", path[128];
	int i;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/app.log", dir);
	keel_log_config_init(&cfg);
	cfg.path = path;
	cfg.async = 1;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	for (i = 0; i < 500; i++)
		keel_log_info(lg, "m", "queued", KEEL_INT("i", i));
	keel_log_free(lg);
	CHECK_INT(count_lines(slurp(path)), ==, 500);
}

/* ------------------------------------------------------------------------
 * Deferred records: formatted by the writer, the same bytes
 * ------------------------------------------------------------------------ */

/* The raw values of a record with every kind of field the formatter
 * treats apart: escapes, invalid UTF-8, U+2028, numbers the fast path and
 * snprintf format, NaN, null strings, nested objects. */
struct mix_block {
	int64_t i;
	uint64_t u;
	double f1, f2, f3;
	int32_t b;
	uint32_t slen;
	char s[48];
};

static const struct mix_block mix = {
	-42, 9007199254740993ULL, 12.345, 1.0 / 3.0, 0.0 / 0.0, 1, 15,
	"q\"\\\n\t\xff\xe2\x80\xa8" "caf\xc3\xa9!",
};

static pthread_t fields_thread;
static int fields_calls;

static size_t mix_fields(const void *data, size_t len, struct keel_field *f,
			 size_t max)
{
	const struct mix_block *b = data;
	size_t n = 0;

	CHECK_INT(len, ==, sizeof(*b));
	CHECK(max >= 14);
	fields_thread = pthread_self();
	__atomic_add_fetch(&fields_calls, 1, __ATOMIC_RELAXED);
	f[n++] = KEEL_STRN("s", b->s, b->slen);
	f[n++] = KEEL_STR("cs", b->s);
	f[n++] = KEEL_INT("i", b->i);
	f[n++] = KEEL_UINT("u", b->u);
	f[n++] = KEEL_FLOAT("f1", b->f1);
	f[n++] = KEEL_FLOAT("f2", b->f2);
	f[n++] = KEEL_FLOAT("nan", b->f3);
	f[n++] = KEEL_BOOL("b", b->b);
	f[n++] = KEEL_NULL("z");
	f[n++] = KEEL_STR("nullstr", NULL);
	f[n++] = KEEL_OBJ("o");
	f[n++] = KEEL_INT("deep", b->i * 2);
	f[n++] = KEEL_OBJ_END();
	f[n++] = KEEL_STR("after", "end");
	return n;
}

/* Line n of text without its timestamp (the one thing that may differ
 * between two records): JSON's value, or the console's first 12 bytes. */
static char *untimed_line(const char *text, int n, int console)
{
	const char *p = text, *nl;
	char *out;

	while (n-- > 0) {
		p = strchr(p, '\n');
		CHECK(p != NULL);
		p++;
	}
	nl = strchr(p, '\n');
	CHECK(nl != NULL);
	if (console) {
		CHECK(nl - p > 12);
		p += 12;
		return strndup(p, (size_t)(nl - p));
	}
	CHECK_INT(strncmp(p, "{\"timestamp\":\"", 14), ==, 0);
	CHECK(nl - p > 14 + 24);
	out = strndup(p + 14 + 24, (size_t)(nl - p - 14 - 24));
	CHECK(out != NULL);
	return out;
}

/* Logs the mix with keel_log_write, then with keel_log_write_deferred, and
 * compares the two lines. */
static void same_bytes(enum keel_log_format format, int async, int use_sink)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct keel_field f[KEEL_LOG_DEFERRED_MAX_FIELDS];
	struct keel_trace t;
	struct mem m;
	int fds[2] = { -1, -1 };
	const char *text;
	char *a, *b;
	size_t n;

	memset(&m, 0, sizeof(m));
	pthread_mutex_init(&m.mu, NULL);
	keel_log_config_init(&cfg);
	cfg.level = KEEL_LOG_DEBUG;
	cfg.format = format;
	cfg.color = 0;
	cfg.async = async;
	cfg.service = "svc";
	if (use_sink) {
		cfg.sink = mem_sink;
		cfg.sink_ud = &m;
	} else {
		CHECK_INT(pipe(fds), ==, 0);
		cfg.fd = fds[1];
	}
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_trace_new(&t);
	keel_trace_set(&t, NULL);
	n = mix_fields(&mix, sizeof(mix), f, KEEL_LOG_DEFERRED_MAX_FIELDS);
	keel_log_write(lg, KEEL_LOG_WARN, "mod\xff", "the message\n", f, n);
	keel_log_write_deferred(lg, KEEL_LOG_WARN, "mod\xff", "the message\n",
				mix_fields, &mix, sizeof(mix));
	/* NULL module (the logger's) and message. */
	keel_log_write(lg, KEEL_LOG_INFO, NULL, NULL, f, n);
	keel_log_write_deferred(lg, KEEL_LOG_INFO, NULL, NULL, mix_fields, &mix,
				sizeof(mix));
	keel_trace_set(NULL, NULL);
	keel_log_free(lg);
	if (use_sink) {
		text = m.buf;
		CHECK_INT(m.calls, ==, 4);
		CHECK_INT(m.bad_calls, ==, 0);
	} else {
		close(fds[1]);
		text = read_fd_all(fds[0]);
		close(fds[0]);
	}
	CHECK_INT(count_lines(text), ==, 4);
	a = untimed_line(text, 0, format == KEEL_LOG_FORMAT_CONSOLE);
	b = untimed_line(text, 1, format == KEEL_LOG_FORMAT_CONSOLE);
	CHECK_STR(b, a);
	free(a);
	free(b);
	a = untimed_line(text, 2, format == KEEL_LOG_FORMAT_CONSOLE);
	b = untimed_line(text, 3, format == KEEL_LOG_FORMAT_CONSOLE);
	CHECK_STR(b, a);
	free(a);
	free(b);
	if (format == KEEL_LOG_FORMAT_JSON) {
		char tid[33];
		json_t *v = line_json(text, 1);

		keel_trace_id_hex(&t, tid);
		CHECK_STR(jstr(v, "trace_id"), tid);
		CHECK_STR(jstr(v, "service"), "svc");
		CHECK_STR(jstr(v, "s"),
			  "q\"\\\n\t\xef\xbf\xbd\xe2\x80\xa8" "caf\xc3\xa9!");
		CHECK(json_is_null(json_object_get(v, "nan")));
		json_decref(v);
	}
	free(m.buf);
	pthread_mutex_destroy(&m.mu);
}

TEST(deferred_record_is_the_same_bytes)
{
	int async, sink;

	for (async = 0; async <= 1; async++)
		for (sink = 0; sink <= 1; sink++) {
			same_bytes(KEEL_LOG_FORMAT_JSON, async, sink);
			same_bytes(KEEL_LOG_FORMAT_CONSOLE, async, sink);
		}
}

/* The writer formats later, but the record says when and under which trace
 * it was logged, not when it was formatted. */
TEST(deferred_record_keeps_the_time_and_trace_of_the_call)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct keel_trace t, other;
	struct timespec before, after;
	struct tm tm;
	char tid[33];
	const char *ts;
	json_t *v;
	long long at_ms, before_ms, after_ms;

	memset(&gated, 0, sizeof(gated));
	pthread_mutex_init(&gated.mu, NULL);
	sem_init(&sink_gate, 0, 0);
	keel_log_config_init(&cfg);
	cfg.sink = gated_sink;
	cfg.sink_ud = &gated;
	cfg.async = 1;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_info(lg, "m", "first");
	usleep(50 * 1000); /* the writer takes it and blocks in the sink */
	keel_trace_new(&t);
	keel_trace_new(&other);
	keel_trace_set(&t, NULL);
	fields_calls = 0;
	clock_gettime(CLOCK_REALTIME, &before);
	keel_log_write_deferred(lg, KEEL_LOG_INFO, "m", "deferred", mix_fields,
				&mix, sizeof(mix));
	clock_gettime(CLOCK_REALTIME, &after);
	keel_trace_set(&other, NULL);
	CHECK_INT(__atomic_load_n(&fields_calls, __ATOMIC_RELAXED), ==, 0);
	usleep(300 * 1000); /* formatted at least this much later */
	sem_post(&sink_gate);
	keel_log_flush(lg);
	keel_trace_set(NULL, NULL);
	CHECK_INT(fields_calls, ==, 1);
	CHECK(!pthread_equal(fields_thread, pthread_self()));
	CHECK_INT(count_lines(gated.buf), ==, 2);
	v = line_json(gated.buf, 1);
	CHECK_STR(jstr(v, "message"), "deferred");
	keel_trace_id_hex(&t, tid);
	CHECK_STR(jstr(v, "trace_id"), tid);
	ts = jstr(v, "timestamp");
	memset(&tm, 0, sizeof(tm));
	CHECK(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm) != NULL);
	at_ms = (long long)timegm(&tm) * 1000 + atoi(ts + 20);
	before_ms = (long long)before.tv_sec * 1000 + before.tv_nsec / 1000000;
	after_ms = (long long)after.tv_sec * 1000 + after.tv_nsec / 1000000;
	CHECK_INT(at_ms, >=, before_ms);
	CHECK_INT(at_ms, <=, after_ms);
	json_decref(v);
	keel_log_free(lg);
	free(gated.buf);
}

/* Where the record cannot wait for a writer, the fields are made and the
 * record written before the call returns; a disabled level makes nothing. */
TEST(deferred_record_written_at_once_when_it_cannot_wait)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct mem m;
	char dir[] = "/tmp/keel-log-XXXXXX", path[128];

	lg = mem_logger(&m, KEEL_LOG_INFO);
	fields_calls = 0;
	keel_log_write_deferred(lg, KEEL_LOG_DEBUG, "m", "hidden", mix_fields,
				&mix, sizeof(mix));
	CHECK_INT(fields_calls, ==, 0);
	CHECK_INT(m.calls, ==, 0);
	keel_log_write_deferred(lg, KEEL_LOG_INFO, "m", "sync", mix_fields,
				&mix, sizeof(mix));
	CHECK_INT(fields_calls, ==, 1);
	CHECK(pthread_equal(fields_thread, pthread_self()));
	CHECK_INT(m.calls, ==, 1);
	CHECK_CONTAINS(m.buf, "\"message\":\"sync\"");
	/* Bad arguments: nothing. */
	keel_log_write_deferred(lg, KEEL_LOG_INFO, "m", "x", NULL, &mix,
				sizeof(mix));
	keel_log_write_deferred(lg, KEEL_LOG_INFO, "m", "x", mix_fields, NULL,
				sizeof(mix));
	keel_log_write_deferred(lg, KEEL_LOG_OFF, "m", "x", mix_fields, &mix,
				sizeof(mix));
	CHECK_INT(m.calls, ==, 1);
	keel_log_free(lg);
	free(m.buf);

	/* FATAL on an async logger: in the file before the call returns. */
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/app.log", dir);
	keel_log_config_init(&cfg);
	cfg.path = path;
	cfg.async = 1;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_write_deferred(lg, KEEL_LOG_FATAL, "m", "last words",
				mix_fields, &mix, sizeof(mix));
	CHECK_CONTAINS(slurp(path), "last words");
	keel_log_free(lg);
	unlink(path);
	rmdir(dir);
}

/* Blocks of any size, and records longer than the writer's output
 * buffer, arrive whole. */
struct big_block {
	uint64_t n;
	char s[];
};

static size_t big_fields(const void *data, size_t len, struct keel_field *f,
			 size_t max)
{
	const struct big_block *b = data;

	(void)max;
	CHECK_INT(len, ==, sizeof(*b) + b->n);
	f[0] = KEEL_STRN("s", b->s, b->n);
	f[1] = KEEL_UINT("n", b->n);
	return 2;
}

TEST(deferred_records_of_any_size)
{
	static const size_t sizes[] = { 0, 1, 7, 8, 9, 2000, 40000, 70000, 200000 };
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct drain d = { 0 };
	struct keel_log_stats st;
	struct big_block *b = malloc(sizeof(*b) + 200000);
	pthread_t dr;
	int fds[2];
	size_t i, k;

	CHECK(b != NULL);
	CHECK_INT(pipe(fds), ==, 0);
	d.fd = fds[0];
	CHECK_INT(pthread_create(&dr, NULL, drainer, &d), ==, 0);
	keel_log_config_init(&cfg);
	cfg.fd = fds[1];
	cfg.format = KEEL_LOG_FORMAT_JSON;
	cfg.async = 1;
	cfg.async_buffer = 4 << 20;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* Quotes escape to two bytes: 40000 of them make a line
		 * longer than the writer's 64 KiB buffer. */
		for (k = 0; k < sizes[i]; k++)
			b->s[k] = (char)(k % 3 == 0 ? '"' : 'a' + k % 26);
		b->n = sizes[i];
		keel_log_write_deferred(lg, KEEL_LOG_INFO, "m", "big",
					big_fields, b, sizeof(*b) + sizes[i]);
		keel_log_info(lg, "m", "between", KEEL_UINT("i", i));
	}
	keel_log_flush(lg);
	keel_log_stats(lg, &st);
	keel_log_free(lg);
	close(fds[1]);
	pthread_join(dr, NULL);
	close(fds[0]);
	CHECK_INT(st.dropped, ==, 0);
	CHECK_INT(st.write_errors, ==, 0);
	CHECK_INT(st.written, ==, 2 * sizeof(sizes) / sizeof(sizes[0]));
	CHECK_INT(count_lines(d.buf), ==, 2 * sizeof(sizes) / sizeof(sizes[0]));
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		json_t *v = line_json(d.buf, (int)(2 * i));
		const char *s = jstr(v, "s");

		CHECK_STR(jstr(v, "message"), "big");
		CHECK(s != NULL);
		CHECK_INT(strlen(s), ==, sizes[i]);
		CHECK_INT(json_integer_value(json_object_get(v, "n")), ==, sizes[i]);
		for (k = 0; k < sizes[i]; k++)
			CHECK(s[k] == (char)(k % 3 == 0 ? '"' : 'a' + k % 26));
		json_decref(v);
		v = line_json(d.buf, (int)(2 * i + 1));
		CHECK_INT(json_integer_value(json_object_get(v, "i")), ==, i);
		json_decref(v);
	}
	free(d.buf);
	free(b);
}

/* A full queue drops deferred records like the others, and counts them. */
TEST(deferred_records_dropped_when_the_queue_is_full)
{
	struct keel_log_config cfg;
	struct keel_logger *lg;
	struct keel_log_stats st;
	int i, lines;

	memset(&gated, 0, sizeof(gated));
	pthread_mutex_init(&gated.mu, NULL);
	sem_init(&sink_gate, 0, 0);
	keel_log_config_init(&cfg);
	cfg.sink = gated_sink;
	cfg.sink_ud = &gated;
	cfg.async = 1;
	cfg.async_buffer = 16 * 1024;
	CHECK_INT(keel_log_new(&cfg, &lg), ==, 0);
	keel_log_info(lg, "m", "first");
	usleep(50 * 1000);
	for (i = 0; i < 1000; i++)
		keel_log_write_deferred(lg, KEEL_LOG_INFO, "m", "flood",
					mix_fields, &mix, sizeof(mix));
	keel_log_stats(lg, &st);
	CHECK(st.dropped > 0);
	CHECK(st.dropped < 1000);
	sem_post(&sink_gate);
	keel_log_flush(lg);
	keel_log_stats(lg, &st);
	lines = count_lines(gated.buf);
	/* first, the kept part of the flood, the "dropped" record */
	CHECK_INT(lines, ==, 1 + 1000 - (int)st.dropped + 1);
	CHECK_INT(st.written, ==, (uint64_t)lines);
	CHECK_INT(gated.bad_calls, ==, 0);
	keel_log_free(lg);
	free(gated.buf);
}

/* ------------------------------------------------------------------------
 * Numbers: the writer's short form for decimals (durations in ms) must
 * stay what it was, the fewest of 0..6 decimals that read back
 * ------------------------------------------------------------------------ */

/* The reference: the fewest decimals (0..6) that read back, by trying each;
 * else the shortest %.17g-or-less that does, as keel's writer always did. */
static void ref_double(double v, char *out, size_t len)
{
	static const double pow10[] = { 1, 10, 100, 1e3, 1e4, 1e5, 1e6 };
	double a = v < 0 ? -v : v;
	int64_t n = 0;
	int k = 7, prec;

	if (a < 9007199254.0 && (a == 0 || a >= 1e-6))
		for (k = 0; k <= 6; k++) {
			n = (int64_t)(a * pow10[k] + 0.5);
			if ((double)n / pow10[k] == a)
				break;
		}
	if (k <= 6) {
		int64_t p = 1;
		int i;

		for (i = 0; i < k; i++)
			p *= 10;
		if (k == 0)
			snprintf(out, len, "%s%lld", signbit(v) ? "-" : "",
				 (long long)n);
		else
			snprintf(out, len, "%s%lld.%0*lld",
				 signbit(v) ? "-" : "", (long long)(n / p), k,
				 (long long)(n % p));
		return;
	}
	for (prec = 15; prec <= 17; prec++) {
		snprintf(out, len, "%.*g", prec, v);
		if (prec == 17 || strtod(out, NULL) == v)
			break;
	}
}

static void check_double(double v)
{
	char want[64], got[64];
	struct keel__json j;

	ref_double(v, want, sizeof(want));
	keel__json_init(&j, got, sizeof(got) - 1);
	keel__json_double(&j, v);
	CHECK(!j.failed);
	got[j.len] = '\0';
	if (strcmp(got, want) != 0)
		KEEL_TEST_FAIL("%.17g: written %s, expected %s", v, got, want);
}

TEST(decimals_are_written_in_the_fewest_digits)
{
	static const double edges[] = {
		0, 1e-6, 0.5, 1, 1.5, 0.1, 0.2, 0.3, 123.456, 0.000001,
		4294967295.999999, 4294967296.0, 4294967296.000001,
		4294967295.5, 8589934591.999999, 8589934592.000001,
		9007199253.999999, 9007199254.0, 1e-7, 2.5e-6, 999999.999999,
	};
	unsigned seed = 42;
	size_t i;
	int64_t ns;

	for (i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		check_double(edges[i]);
		check_double(-edges[i]);
	}
	/* Durations as the access log makes them: ns / 1e6. */
	for (ns = 0; ns < 300000; ns++)
		check_double((double)ns / 1e6);
	for (i = 0; i < 300000; i++) {
		int64_t big = ((int64_t)rand_r(&seed) << 31 | rand_r(&seed)) %
			      (int64_t)9e15;

		check_double((double)big / 1e6);
		check_double((double)(rand_r(&seed) % 100000000) / 1e3);
		check_double((double)rand_r(&seed) / (double)(1 + rand_r(&seed)));
		/* near the fast path's 2^32 bound */
		check_double(4294967296.0 + ((double)(rand_r(&seed) % 2000000) - 1e6) / 1e6);
	}
}

/* ------------------------------------------------------------------------
 * Panics as records
 * ------------------------------------------------------------------------ */

static struct mem panic_mem;
static struct keel_logger *panic_lg;

KEEL_TEST_NO_SANITIZE static void crash_here(int *volatile p)
{
	*(volatile int *)p = 1;
}

static void log_recovered(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	if (p != NULL)
		keel_log_panic(panic_lg, KEEL_LOG_ERROR, "worker", NULL, p,
			       (struct keel_field[]){ KEEL_STR("job", "backup") }, 1);
}

static void faulting_body(void *arg)
{
	(void)arg;
	keel_defer(log_recovered, NULL);
	crash_here(NULL);
}

TEST(recovered_fault_is_one_record_with_its_stack)
{
	json_t *v, *p, *sig, *stack;
	size_t i;
	int found = 0;

	panic_lg = mem_logger(&panic_mem, KEEL_LOG_INFO);
	keel_panic_capture_stacks(1);
	CHECK_INT(keel_call(faulting_body, NULL), ==, 1);
	CHECK_INT(count_lines(panic_mem.buf), ==, 1);
	v = line_json(panic_mem.buf, 0);
	CHECK_STR(jstr(v, "message"), "panic recovered");
	CHECK_STR(jstr(v, "job"), "backup");
	p = json_object_get(v, "panic");
	CHECK_CONTAINS(jstr(p, "message"), "nil pointer dereference");
	CHECK_STR(jstr(p, "kind"), "nil-dereference");
	CHECK(json_is_true(json_object_get(p, "runtime")));
	sig = json_object_get(p, "signal");
	CHECK_STR(jstr(sig, "name"), "SIGSEGV");
	CHECK_INT(json_integer_value(json_object_get(sig, "signo")), ==, SIGSEGV);
	CHECK_STR(jstr(sig, "addr"), "0x0");
	stack = json_object_get(p, "stack");
	CHECK(json_array_size(stack) >= 2);
	/* The stack starts at the faulting function, not in keel's machinery. */
	CHECK_STR(jstr(json_array_get(stack, 0), "function"), "crash_here");
	for (i = 0; i < json_array_size(stack); i++) {
		const char *fn = jstr(json_array_get(stack, i), "function");

		/* faulting_body tail-calls crash_here: keel_call comes next. */
		found |= fn != NULL && strcmp(fn, "keel_call") == 0;
		CHECK(jstr(json_array_get(stack, i), "pc") != NULL);
	}
	CHECK(found);
	CHECK_CONTAINS(jstr(json_array_get(stack, 0), "file"), "test_log.c");
	json_decref(v);
	keel_log_free(panic_lg);
}

static void error_body(void *arg)
{
	(void)arg;
	keel_defer(log_recovered, NULL);
	keel_panic_error(keel_error_new(-EIO, "disk on fire"));
}

TEST(error_panic_record_without_stack_capture)
{
	json_t *v, *p;

	panic_lg = mem_logger(&panic_mem, KEEL_LOG_INFO);
	keel_panic_capture_stacks(0);
	CHECK_INT(keel_call(error_body, NULL), ==, 1);
	v = line_json(panic_mem.buf, 0);
	p = json_object_get(v, "panic");
	CHECK_STR(jstr(p, "kind"), "error");
	CHECK(json_is_false(json_object_get(p, "runtime")));
	CHECK(json_object_get(p, "signal") == NULL);
	CHECK_STR(jstr(json_object_get(p, "error"), "message"), "disk on fire");
	CHECK_INT(json_integer_value(json_object_get(json_object_get(p, "error"), "code")), ==, -EIO);
	CHECK_INT(json_array_size(json_object_get(p, "stack")), ==, 0);
	json_decref(v);
	keel_log_free(panic_lg);
}

/* ------------------------------------------------------------------------
 * The default logger
 * ------------------------------------------------------------------------ */

static void default_logger_child(void *arg)
{
	(void)arg;
	keel_log_info(NULL, "m", "to stderr");
	keel_log_debug(NULL, "m", "not at INFO");
}

TEST(default_logger_writes_json_to_stderr)
{
	struct keel_child c;
	json_t *v;

	keel_test_run_child(default_logger_child, NULL, &c);
	CHECK_INT(c.code, ==, 0);
	CHECK_INT(count_lines(c.out), ==, 1);
	v = line_json(c.out, 0);
	CHECK_STR(jstr(v, "message"), "to stderr");
	json_decref(v);
}

TEST(default_logger_reads_the_environment)
{
	char cmd[512];
	FILE *f;
	char out[4096];
	size_t n;

	/* The probe case below runs in a fresh process with the variables set,
	 * since the default logger reads them once, at load. */
	snprintf(cmd, sizeof(cmd),
		 "KEEL_LOG_LEVEL=debug KEEL_LOG_FORMAT=console NO_COLOR=1 "
		 "/proc/%d/exe default_logger_env_probe 2>&1",
		 (int)getpid());
	f = popen(cmd, "r");
	CHECK(f != NULL);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	CHECK_INT(pclose(f), ==, 0);
	CHECK_CONTAINS(out, "DEBUG probe: visible at debug");
	CHECK_CONTAINS(out, "1 passed");
}

TEST(default_logger_env_probe)
{
	if (getenv("KEEL_LOG_LEVEL") == NULL)
		KEEL_TEST_SKIP("run by default_logger_reads_the_environment");
	CHECK(keel_log_enabled(NULL, KEEL_LOG_DEBUG));
	keel_log_debug(NULL, "probe", "visible at debug");
}

TEST(set_default_and_restore)
{
	struct mem m;
	struct keel_logger *lg = mem_logger(&m, KEEL_LOG_INFO);

	keel_log_set_default(lg);
	CHECK(keel_log_default() == lg);
	keel_log_info(NULL, "m", "through the default");
	CHECK_INT(m.calls, ==, 1);
	keel_log_free(lg); /* freeing the default restores the built-in one */
	CHECK(keel_log_default() != lg);
	keel_log_set_default(NULL);
	CHECK(keel_log_default() != NULL);
}

/* ------------------------------------------------------------------------
 * Ready-made panic handlers
 * ------------------------------------------------------------------------ */

static void crashing_task(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
	crash_here(NULL);
}

TEST(pool_panic_handler_logs_each_crash)
{
	struct keel_pool_config pc;
	struct keel_pool *pool;
	struct keel_task_options opt = { .name = "import" };
	json_t *v, *stack;
	int i;

	panic_lg = mem_logger(&panic_mem, KEEL_LOG_INFO);
	keel_pool_config_init(&pc);
	pc.name = "workers";
	pc.min_threads = 1;
	pc.on_panic = keel_log_task_panic;
	pc.panic_ud = panic_lg;
	CHECK_INT(keel_pool_new(&pc, &pool), ==, 0);
	for (i = 0; i < 3; i++)
		CHECK_INT(keel_pool_submit(pool, crashing_task, NULL, &opt), ==, 0);
	CHECK_INT(keel_pool_shutdown(pool, KEEL_POOL_DRAIN, 0), ==, 0);
	keel_pool_free(pool);
	CHECK_INT(count_lines(panic_mem.buf), ==, 3);
	for (i = 0; i < 3; i++) {
		v = line_json(panic_mem.buf, i);
		CHECK_STR(jstr(v, "module"), "keel.pool");
		CHECK_STR(jstr(v, "pool"), "workers");
		CHECK_STR(jstr(v, "task"), "import");
		CHECK_INT(json_integer_value(json_object_get(v, "worker")), ==, 0);
		CHECK_STR(jstr(json_object_get(v, "panic"), "kind"), "nil-dereference");
		/* Pool workers capture stacks: the crash site is named. */
		stack = json_object_get(json_object_get(v, "panic"), "stack");
		CHECK_STR(jstr(json_array_get(stack, 0), "function"), "crash_here");
		json_decref(v);
	}
	keel_log_free(panic_lg);
}

static void crashing_thread(void *arg)
{
	(void)arg;
	keel_panic("thread gave up");
}

TEST(thread_panic_handler_logs_the_panic)
{
	struct keel_go_options o;
	struct keel_thread *t;
	json_t *v;

	panic_lg = mem_logger(&panic_mem, KEEL_LOG_INFO);
	keel_go_options_init(&o);
	o.name = "ingest";
	o.on_panic = keel_log_thread_panic;
	o.panic_ud = panic_lg;
	CHECK_INT(keel_go(crashing_thread, NULL, &o, &t), ==, 0);
	CHECK_INT(keel_go_join(t), ==, 1);
	v = line_json(panic_mem.buf, 0);
	CHECK_STR(jstr(v, "module"), "keel.thread");
	CHECK_STR(jstr(v, "thread"), "ingest");
	CHECK_STR(jstr(json_object_get(v, "panic"), "message"), "thread gave up");
	json_decref(v);
	keel_log_free(panic_lg);
}
