/* KEEL_TEST_LABELS: threads */
/*
 * tests/obs/test_report.c - the error reporter against a real HTTP server
 * started by each case: the webhook body and the Sentry envelope read back
 * with jansson field by field, retries (5xx, 429 with Retry-After, giving
 * up), the bounded queue, a shutdown that does not wait for a server that
 * never answers, the sink, and every refused configuration and event.
 *
 * The receiver is a small HTTP/1.1 server on 127.0.0.1 (the kernel picks
 * the port) run on a thread: it keeps connections alive, records each
 * request (method, path, headers, body) and answers from a script of
 * status codes (200 once the script is used up), or never answers (stall).
 * The receiver and the helpers are in report_receiver.h.
 */
#include "obs/report_receiver.h"

/* A recovered NULL dereference, reported from the deferred call while the
 * panic is still valid. */
static int *volatile nil_int;
static volatile int vsink;

void report_nil_site(void);
void report_caller(struct keel_reporter *r, struct keel_report_event *ev);

KEEL_TEST_NO_SANITIZE void report_nil_site(void)
{
	vsink = *nil_int;
}

struct rec_ctx {
	struct keel_reporter *r;
	struct keel_report_event *ev;
	int rc;
};

static void recover_and_send(void *arg)
{
	struct rec_ctx *c = arg;
	const struct keel_panic *p = keel_recover();

	if (p == NULL)
		return;
	c->ev->panic = p;
	c->rc = keel_reporter_send(c->r, c->ev);
}

__attribute__((noinline)) void report_caller(struct keel_reporter *r,
					     struct keel_report_event *ev)
{
	static struct rec_ctx c;

	c.r = r;
	c.ev = ev;
	c.rc = -1;
	keel_panic_capture_stacks(1);
	KEEL_SCOPE {
		keel_defer(recover_and_send, &c);
		report_nil_site();
	}
	CHECK_INT(c.rc, ==, 0);
}

static const char *const test_tags[] = { "region", "eu-1", "shard", "7", NULL };
#define TEST_EXTRA "{\"user\":\"ana\",\"n\":3,\"nested\":{\"ok\":true}}"
#define TEST_TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
/* 2023-11-14T22:13:20.123Z */
#define TEST_TS 1700000000123456789LL

static void set_test_trace(void)
{
	struct keel_trace t;

	CHECK_INT(keel_traceparent_parse(TEST_TRACEPARENT,
					 strlen(TEST_TRACEPARENT), &t), ==, 0);
	keel_trace_set(&t, NULL);
}

static void test_event(struct keel_report_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->level = "error";
	ev->message = "payment failed";
	ev->module = "billing";
	ev->tags = test_tags;
	ev->extra_json = TEST_EXTRA;
	ev->timestamp = TEST_TS;
}

/* ------------------------------------------------------------------------
 * Configuration and refused input
 * ------------------------------------------------------------------------ */

TEST(config_defaults)
{
	struct keel_reporter_config cfg;

	memset(&cfg, 0x5a, sizeof(cfg));
	keel_reporter_config_init(&cfg);
	CHECK(cfg.webhook_url == NULL && cfg.sentry_dsn == NULL && cfg.sink == NULL);
	CHECK(cfg.headers == NULL && cfg.spool_dir == NULL && cfg.service == NULL);
	CHECK_INT(cfg.queue_size, ==, 256);
	CHECK_INT(cfg.max_attempts, ==, 5);
	CHECK_INT(cfg.backoff_initial, ==, 100 * KEEL_MSEC);
	CHECK_INT(cfg.backoff_max, ==, 10 * KEEL_SEC);
	CHECK_INT(cfg.retry_after_max, ==, 60 * KEEL_SEC);
	CHECK_INT(cfg.timeout, ==, 5 * KEEL_SEC);
	CHECK_INT(cfg.shutdown_timeout, ==, 2 * KEEL_SEC);
}

static int bad_config(void (*change)(struct keel_reporter_config *))
{
	struct keel_reporter_config cfg;
	struct keel_reporter *r = (struct keel_reporter *)&cfg;

	base_config(&cfg);
	cfg.webhook_url = "http://127.0.0.1:9/x";
	change(&cfg);
	int rc = keel_reporter_new(&cfg, &r);
	CHECK(r == NULL);
	return rc;
}

static void no_dest(struct keel_reporter_config *c) { c->webhook_url = NULL; }
static void ftp_url(struct keel_reporter_config *c) { c->webhook_url = "ftp://h/x"; }
static void no_host(struct keel_reporter_config *c) { c->webhook_url = "http:///x"; }
static void space_url(struct keel_reporter_config *c) { c->webhook_url = "http://h/a b"; }
static void bad_dsn(struct keel_reporter_config *c) { c->sentry_dsn = "https://sentry.io/42"; }
static void hdr_nocolon(struct keel_reporter_config *c)
{
	static const char *const h[] = { "Authorization Bearer x", NULL };
	c->headers = h;
}
static void hdr_crlf(struct keel_reporter_config *c)
{
	static const char *const h[] = { "X-A: 1\r\nX-Evil: 2", NULL };
	c->headers = h;
}
static void hdr_empty_name(struct keel_reporter_config *c)
{
	static const char *const h[] = { ": v", NULL };
	c->headers = h;
}
static void queue0(struct keel_reporter_config *c) { c->queue_size = 0; }
static void queue_huge(struct keel_reporter_config *c) { c->queue_size = 1 << 21; }
static void attempts0(struct keel_reporter_config *c) { c->max_attempts = 0; }
static void neg_backoff(struct keel_reporter_config *c) { c->backoff_initial = -1; }
static void backoff_order(struct keel_reporter_config *c)
{
	c->backoff_initial = 2 * KEEL_SEC;
	c->backoff_max = KEEL_SEC;
}
static void timeout0(struct keel_reporter_config *c) { c->timeout = 0; }
static void neg_shutdown(struct keel_reporter_config *c) { c->shutdown_timeout = -1; }
static void neg_retry_after(struct keel_reporter_config *c) { c->retry_after_max = -1; }
static void empty_spool(struct keel_reporter_config *c) { c->spool_dir = ""; }
static void file_spool(struct keel_reporter_config *c) { c->spool_dir = "/etc/hostname"; }

TEST(config_refused)
{
	struct keel_reporter_config cfg;
	struct keel_reporter *r = NULL;

	CHECK_INT(keel_reporter_new(NULL, &r), ==, -EINVAL);
	keel_reporter_config_init(&cfg);
	cfg.webhook_url = "http://127.0.0.1:9/x";
	CHECK_INT(keel_reporter_new(&cfg, NULL), ==, -EINVAL);
	CHECK_INT(bad_config(no_dest), ==, -EINVAL);
	CHECK_INT(bad_config(ftp_url), ==, -EINVAL);
	CHECK_INT(bad_config(no_host), ==, -EINVAL);
	CHECK_INT(bad_config(space_url), ==, -EINVAL);
	CHECK_INT(bad_config(bad_dsn), ==, -EINVAL);
	CHECK_INT(bad_config(hdr_nocolon), ==, -EINVAL);
	CHECK_INT(bad_config(hdr_crlf), ==, -EINVAL);
	CHECK_INT(bad_config(hdr_empty_name), ==, -EINVAL);
	CHECK_INT(bad_config(queue0), ==, -EINVAL);
	CHECK_INT(bad_config(queue_huge), ==, -EINVAL);
	CHECK_INT(bad_config(attempts0), ==, -EINVAL);
	CHECK_INT(bad_config(neg_backoff), ==, -EINVAL);
	CHECK_INT(bad_config(backoff_order), ==, -EINVAL);
	CHECK_INT(bad_config(timeout0), ==, -EINVAL);
	CHECK_INT(bad_config(neg_shutdown), ==, -EINVAL);
	CHECK_INT(bad_config(neg_retry_after), ==, -EINVAL);
	CHECK_INT(bad_config(empty_spool), ==, -EINVAL);
	CHECK_INT(bad_config(file_spool), ==, -ENOTDIR);
	keel_reporter_free(NULL);
	keel_test_leak_check();
}

TEST(dsn_parse)
{
	struct keel__sentry_dsn d;

	CHECK_INT(keel__sentry_dsn_parse("https://abc123@o1.ingest.sentry.io/42", &d), ==, 0);
	CHECK_STR(d.scheme, "https");
	CHECK_STR(d.public_key, "abc123");
	CHECK_STR(d.host, "o1.ingest.sentry.io");
	CHECK_STR(d.path, "");
	CHECK_STR(d.project_id, "42");
	CHECK_STR(d.envelope_url, "https://o1.ingest.sentry.io/api/42/envelope/");
	CHECK_STR(d.auth, "X-Sentry-Auth: Sentry sentry_version=7, "
			  "sentry_key=abc123, sentry_client=keel/0.1.0");
	/* Port, path prefix, a deprecated secret, plain http. */
	CHECK_INT(keel__sentry_dsn_parse("http://k:secret@127.0.0.1:9000/sentry/relay/7", &d), ==, 0);
	CHECK_STR(d.public_key, "k");
	CHECK_STR(d.host, "127.0.0.1:9000");
	CHECK_STR(d.path, "/sentry/relay");
	CHECK_STR(d.envelope_url, "http://127.0.0.1:9000/sentry/relay/api/7/envelope/");
	CHECK_INT(keel__sentry_dsn_parse("https://k@[::1]:8443/3", &d), ==, 0);
	CHECK_STR(d.envelope_url, "https://[::1]:8443/api/3/envelope/");

	static const char *const bad[] = {
		NULL, "", "https://", "https://@host/1", "https://host/1",
		"https://k@/1", "https://k@host", "https://k@host/",
		"https://k@host/1/", "ftp://k@host/1", "https://k@host:0/1",
		"https://k@host:65536/1", "https://k@host:12a/1",
		"https://k@host:/1", "https://k@host/1?x=1", "https://k@host/1#f",
		"https://k y@host/1", "https://k@ho st/1", "https://k@host//1",
		"https://k@host/a b", "https://k@[::1/1", "https://k\n@host/1",
		"HTTPS://k@host/1", "https://k@host/1\xc3\xa9",
	};
	size_t i;

	memset(&d, 0x5a, sizeof(d));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct keel__sentry_dsn before = d;

		if (keel__sentry_dsn_parse(bad[i], &d) != -EINVAL)
			KEEL_TEST_FAIL("DSN accepted: %s", bad[i] ? bad[i] : "NULL");
		CHECK(memcmp(&before, &d, sizeof(d)) == 0);
	}
}

TEST(event_refused)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev;
	struct keel_reporter *r;
	static const char *const odd[] = { "a", "1", "b", NULL };
	static const char *const empty_key[] = { "", "1", NULL };
	void *one_frame[1] = { NULL };
	struct rx *rx = rx_start(NULL, 0);

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/hook");
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(NULL, &ev), ==, -EINVAL);
	CHECK_INT(keel_reporter_send(r, NULL), ==, -EINVAL);
	test_event(&ev);
	ev.message = NULL;
	CHECK_INT(keel_reporter_send(r, &ev), ==, -EINVAL);
	test_event(&ev);
	ev.level = "critical";
	CHECK_INT(keel_reporter_send(r, &ev), ==, -EINVAL);
	test_event(&ev);
	ev.tags = odd;
	CHECK_INT(keel_reporter_send(r, &ev), ==, -EINVAL);
	ev.tags = empty_key;
	CHECK_INT(keel_reporter_send(r, &ev), ==, -EINVAL);
	test_event(&ev);
	ev.timestamp = -1;
	CHECK_INT(keel_reporter_send(r, &ev), ==, -EINVAL);
	test_event(&ev);
	ev.nframes = 1; /* frames NULL */
	CHECK_INT(keel_reporter_send(r, &ev), ==, -EINVAL);
	ev.frames = one_frame;
	ev.nframes = 0;
	static const char *const bad_extra[] = {
		"[1,2]", "\"s\"", "{", "{\"a\":1", "{\"a\":1}x", "{\"a\":1}{}",
		"{\"a\":\"\xff\"}", "{a:1}", "{\"a\":01}", "{\"a\":\"\t\"}",
		"{\"a\":1,}", "", "   ", "{\"a\":tru}", "{\"a\":\"\\x\"}",
	};
	size_t i;

	for (i = 0; i < sizeof(bad_extra) / sizeof(bad_extra[0]); i++) {
		ev.extra_json = bad_extra[i];
		ev.extra_len = 0;
		if (keel_reporter_send(r, &ev) != -EINVAL)
			KEEL_TEST_FAIL("extra accepted: %s", bad_extra[i]);
	}
	/* extra_len limits what is read: the object ends before the junk. */
	ev.extra_json = "{\"a\":1}JUNK";
	ev.extra_len = 7;
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.queued, ==, 1);
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(st.dropped, ==, 0);
	CHECK_INT(rx_count(rx), ==, 1);
	{
		json_t *b = parse(rx->req[0].body, rx->req[0].len);

		CHECK_INT(jint(json_object_get(b, "extra"), "a"), ==, 1);
		json_decref(b);
	}
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The webhook
 * ------------------------------------------------------------------------ */

TEST(webhook_body)
{
	static const char *const hdrs[] = { "Authorization: Bearer s3cret",
					    "X-Team: core", NULL };
	struct keel_reporter_config cfg;
	struct keel_report_event ev;
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	json_t *b, *p, *sig, *stack, *tags;
	char nilpc[32];

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/hooks/errors?src=keel");
	cfg.headers = hdrs;
	r = new_reporter(&cfg);
	set_test_trace();
	test_event(&ev);
	report_caller(r, &ev);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	CHECK_INT(rx_wait(rx, 1), ==, 1);
	CHECK_STR(rx->req[0].method, "POST");
	CHECK_STR(rx->req[0].path, "/hooks/errors?src=keel");
	CHECK_STR(rx_header(&rx->req[0], "Content-Type"), "application/json");
	CHECK_STR(rx_header(&rx->req[0], "Authorization"), "Bearer s3cret");
	CHECK_STR(rx_header(&rx->req[0], "X-Team"), "core");
	CHECK_STR(rx_header(&rx->req[0], "User-Agent"), "keel/0.1.0");
	CHECK(rx_header(&rx->req[0], "Expect") == NULL);

	b = parse(rx->req[0].body, rx->req[0].len);
	CHECK(is_hex(jstr(b, "event_id"), 32));
	CHECK_INT(jstr(b, "event_id")[12], ==, '4'); /* UUID v4 */
	CHECK_STR(jstr(b, "timestamp"), "2023-11-14T22:13:20.123Z");
	CHECK_STR(jstr(b, "level"), "error");
	CHECK_STR(jstr(b, "message"), "payment failed");
	CHECK_STR(jstr(b, "module"), "billing");
	CHECK_STR(jstr(b, "service"), "svc");
	CHECK_STR(jstr(b, "environment"), "test");
	CHECK_STR(jstr(b, "release"), "svc@1.2.3");
	CHECK_STR(jstr(b, "server_name"), "host-1");
	CHECK_STR(jstr(b, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK_STR(jstr(b, "span_id"), "00f067aa0ba902b7");
	tags = json_object_get(b, "tags");
	CHECK_INT(json_object_size(tags), ==, 2);
	CHECK_STR(jstr(tags, "region"), "eu-1");
	CHECK_STR(jstr(tags, "shard"), "7");
	CHECK_STR(jstr(json_object_get(b, "extra"), "user"), "ana");
	CHECK_INT(jint(json_object_get(b, "extra"), "n"), ==, 3);
	CHECK(json_is_true(json_object_get(
		json_object_get(json_object_get(b, "extra"), "nested"), "ok")));
	CHECK(json_object_get(b, "stack") == NULL); /* it is under panic */

	p = json_object_get(b, "panic");
	CHECK(json_is_object(p));
	CHECK_STR(jstr(p, "message"), NIL_MSG);
	CHECK_STR(jstr(p, "kind"), "nil-dereference");
	CHECK(json_is_true(json_object_get(p, "runtime")));
	CHECK(json_is_true(json_object_get(p, "handled")));
	sig = json_object_get(p, "signal");
	CHECK_INT(jint(sig, "signo"), ==, SIGSEGV);
	CHECK_STR(jstr(sig, "name"), "SIGSEGV");
	CHECK_INT(jint(sig, "code"), ==, SEGV_MAPERR);
	CHECK_STR(jstr(sig, "addr"), "0x0");
	CHECK(strncmp(jstr(sig, "pc"), "0x", 2) == 0);
	snprintf(nilpc, sizeof(nilpc), "%s", jstr(sig, "pc"));
	stack = json_object_get(p, "stack");
	CHECK(json_array_size(stack) > 2);
	/* Innermost first, from the fault site (keel's machinery left out). */
	CHECK_INT(frame_index(stack, "report_nil_site"), ==, 0);
	CHECK_INT(frame_index(stack, "report_caller"), >,
		  frame_index(stack, "report_nil_site"));
	{
		/* The caller's frame is a return address, so its line is
		 * known in every build (the faulting instruction itself may be
		 * sanitizer code at line 0). */
		json_t *f = json_array_get(stack, (size_t)frame_index(stack, "report_caller"));

		CHECK_CONTAINS(jstr(f, "file"), "test_report.c");
		CHECK_INT(jint(f, "line"), >, 0);
		CHECK(strncmp(jstr(f, "pc"), "0x", 2) == 0);
	}
	json_decref(b);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

TEST(webhook_minimal_event)
{
	struct keel_reporter_config cfg;
	struct keel_report_event ev = { .message = "just this" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	json_t *b;
	double before = (double)time(NULL);
	void *frames[2] = { (void *)&report_nil_site, (void *)&report_caller };

	rx_run(rx);
	base_config(&cfg);
	cfg.service = cfg.environment = cfg.release = NULL;
	cfg.webhook_url = webhook(rx, "/");
	r = new_reporter(&cfg);
	keel_trace_set(NULL, NULL);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	ev.message = "with frames";
	ev.level = "warning";
	ev.frames = frames;
	ev.nframes = 2;
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	CHECK_INT(rx_wait(rx, 2), ==, 2);
	b = parse(rx->req[0].body, rx->req[0].len);
	CHECK_STR(jstr(b, "level"), "error"); /* the default */
	CHECK_STR(jstr(b, "message"), "just this");
	CHECK(json_is_null(json_object_get(b, "module")));
	CHECK(json_is_null(json_object_get(b, "service")));
	CHECK(json_is_null(json_object_get(b, "release")));
	CHECK(json_is_null(json_object_get(b, "environment")));
	CHECK(json_is_null(json_object_get(b, "trace_id")));
	CHECK(json_is_null(json_object_get(b, "span_id")));
	CHECK_STR(jstr(b, "server_name"), "host-1");
	CHECK_INT(json_object_size(json_object_get(b, "tags")), ==, 0);
	CHECK_INT(json_object_size(json_object_get(b, "extra")), ==, 0);
	CHECK(json_object_get(b, "panic") == NULL);
	CHECK(json_object_get(b, "stack") == NULL);
	{
		/* timestamp 0 is now: the same second or the next. */
		struct tm tm = { 0 };
		const char *ts = jstr(b, "timestamp");

		CHECK_INT(strlen(ts), ==, 24);
		CHECK(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm) != NULL);
		CHECK_INT((double)timegm(&tm), >=, before - 1);
		CHECK_INT((double)timegm(&tm), <=, (double)time(NULL) + 1);
	}
	json_decref(b);
	b = parse(rx->req[1].body, rx->req[1].len);
	CHECK_STR(jstr(b, "level"), "warning");
	CHECK_INT(json_array_size(json_object_get(b, "stack")), ==, 2);
	json_decref(b);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Sentry
 * ------------------------------------------------------------------------ */

TEST(sentry_envelope)
{
	struct keel_reporter_config cfg;
	struct keel_report_event ev;
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	json_t *h, *ih, *e, *x, *frames, *mech, *tr;
	size_t elen;
	int top, site;

	rx_run(rx);
	base_config(&cfg);
	snprintf(dsn_buf, sizeof(dsn_buf), "http://pubkey42@127.0.0.1:%d/relay/42",
		 rx->port);
	cfg.sentry_dsn = dsn_buf;
	r = new_reporter(&cfg);
	set_test_trace();
	test_event(&ev);
	report_caller(r, &ev);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	CHECK_INT(rx_wait(rx, 1), ==, 1);
	CHECK_STR(rx->req[0].method, "POST");
	CHECK_STR(rx->req[0].path, "/relay/api/42/envelope/");
	CHECK_STR(rx_header(&rx->req[0], "Content-Type"),
		  "application/x-sentry-envelope");
	CHECK_STR(rx_header(&rx->req[0], "X-Sentry-Auth"),
		  "Sentry sentry_version=7, sentry_key=pubkey42, "
		  "sentry_client=keel/0.1.0");

	split_envelope(&rx->req[0], &h, &ih, &e, &elen);
	CHECK(is_hex(jstr(h, "event_id"), 32));
	CHECK_STR(jstr(h, "dsn"), dsn_buf);
	CHECK_INT(strlen(jstr(h, "sent_at")), ==, 24);
	CHECK_STR(jstr(json_object_get(h, "sdk"), "name"), "keel");
	CHECK_STR(jstr(ih, "type"), "event");
	CHECK_INT(jint(ih, "length"), ==, elen);

	CHECK_STR(jstr(e, "event_id"), jstr(h, "event_id"));
	CHECK_STR(jstr(e, "timestamp"), "2023-11-14T22:13:20.123Z");
	CHECK_STR(jstr(e, "platform"), "native");
	CHECK_STR(jstr(e, "level"), "error");
	CHECK_STR(jstr(e, "logger"), "billing");
	CHECK_STR(jstr(e, "server_name"), "host-1");
	CHECK_STR(jstr(e, "release"), "svc@1.2.3");
	CHECK_STR(jstr(e, "environment"), "test");
	CHECK_STR(jstr(json_object_get(e, "message"), "formatted"), "payment failed");
	x = json_array_get(json_object_get(json_object_get(e, "exception"), "values"), 0);
	CHECK(json_is_object(x));
	CHECK_STR(jstr(x, "type"), "nil-dereference");
	CHECK_STR(jstr(x, "value"), NIL_MSG);
	mech = json_object_get(x, "mechanism");
	CHECK_STR(jstr(mech, "type"), "keel");
	CHECK(json_is_true(json_object_get(mech, "handled")));
	CHECK_INT(jint(json_object_get(json_object_get(mech, "meta"), "signal"), "number"), ==, SIGSEGV);
	CHECK_STR(jstr(json_object_get(json_object_get(mech, "meta"), "signal"), "name"), "SIGSEGV");
	frames = json_object_get(json_object_get(x, "stacktrace"), "frames");
	CHECK(json_array_size(frames) > 2);
	/* Oldest first: the caller comes before the function that faulted. */
	site = frame_index(frames, "report_nil_site");
	top = frame_index(frames, "report_caller");
	CHECK_INT(site, ==, json_array_size(frames) - 1);
	CHECK_INT(top, >=, 0);
	CHECK_INT(top, <, site);
	{
		json_t *f = json_array_get(frames, (size_t)top);

		CHECK_CONTAINS(jstr(f, "filename"), "test_report.c");
		CHECK_INT(jint(f, "lineno"), >, 0);
		CHECK(strncmp(jstr(f, "instruction_addr"), "0x", 2) == 0);
	}
	CHECK_STR(jstr(json_object_get(e, "tags"), "region"), "eu-1");
	CHECK_STR(jstr(json_object_get(e, "tags"), "shard"), "7");
	CHECK_STR(jstr(json_object_get(e, "tags"), "service"), "svc");
	CHECK_STR(jstr(json_object_get(e, "tags"), "trace_id"),
		  "4bf92f3577b34da6a3ce929d0e0e4736");
	tr = json_object_get(json_object_get(e, "contexts"), "trace");
	CHECK_STR(jstr(tr, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK_STR(jstr(tr, "span_id"), "00f067aa0ba902b7");
	CHECK_STR(jstr(json_object_get(e, "extra"), "user"), "ana");
	json_decref(h);
	json_decref(ih);
	json_decref(e);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* The same event goes to every destination; one failing does not stop
 * the other, and the event counts as failed. */
TEST(two_destinations)
{
	int script[] = { 404 };
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "both" };
	struct keel_reporter *r;
	struct rx *hook = rx_start(script, 1), *sentry = rx_start(NULL, 0);
	json_t *h, *ih, *e, *b;
	size_t elen;

	rx_run(hook);
	rx_run(sentry);
	base_config(&cfg);
	cfg.webhook_url = webhook(hook, "/w");
	snprintf(dsn_buf, sizeof(dsn_buf), "http://k@127.0.0.1:%d/5", sentry->port);
	cfg.sentry_dsn = dsn_buf;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	ev.message = "both again";
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.queued, ==, 2);
	CHECK_INT(st.failed, ==, 1); /* the first: 404 from the webhook */
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(st.retried, ==, 0); /* a 404 is not retried */
	CHECK_INT(st.pending, ==, 0);
	CHECK_INT(rx_count(hook), ==, 2);
	CHECK_INT(rx_count(sentry), ==, 2);
	/* Both destinations got the same event id. */
	b = parse(hook->req[1].body, hook->req[1].len);
	split_envelope(&sentry->req[1], &h, &ih, &e, &elen);
	CHECK_STR(jstr(b, "event_id"), jstr(e, "event_id"));
	CHECK_STR(jstr(b, "message"), "both again");
	json_decref(b);
	json_decref(h);
	json_decref(ih);
	json_decref(e);
	keel_reporter_free(r);
	rx_stop(hook);
	rx_stop(sentry);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Retries
 * ------------------------------------------------------------------------ */

TEST(retry_after_5xx)
{
	int script[] = { 500, 503, 502, 200 };
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "retry me" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(script, 4);
	int i;

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(rx_count(rx), ==, 4);
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(st.failed, ==, 0);
	CHECK_INT(st.retried, ==, 3);
	/* Every try carried the same event. */
	for (i = 1; i < 4; i++)
		CHECK_STR(rx->req[i].body, rx->req[0].body);
	/* One kept-alive connection served all four tries. */
	CHECK_INT(rx->conns, ==, 1);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

TEST(give_up_after_max_attempts)
{
	int script[] = { 500, 500, 500, 500, 500, 500, 500, 500 };
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "never" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(script, 8);

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	cfg.max_attempts = 3;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(rx_count(rx), ==, 3);
	CHECK_INT(st.sent, ==, 0);
	CHECK_INT(st.failed, ==, 1);
	CHECK_INT(st.retried, ==, 2);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

TEST(no_retry_on_4xx)
{
	int script[] = { 400, 401, 413 };
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "refused" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(script, 3);
	int i;

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	r = new_reporter(&cfg);
	for (i = 0; i < 3; i++)
		CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(rx_count(rx), ==, 3);
	CHECK_INT(st.failed, ==, 3);
	CHECK_INT(st.retried, ==, 0);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* 429 with Retry-After: 1 waits that second although the backoff is 1 ms
 * (a lower bound on the wait, not a speed target). */
TEST(retry_after_429)
{
	int script[] = { 429, 200 };
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "slow down" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(script, 2);

	rx->retry_after = "1";
	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(rx_count(rx), ==, 2);
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(st.retried, ==, 1);
	CHECK(rx->req[1].at - rx->req[0].at >= 0.95);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* A server asking for a longer pause than retry_after_max: give up now. */
TEST(retry_after_too_long)
{
	int script[] = { 429, 200 };
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "go away" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(script, 2);

	rx->retry_after = "120";
	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	cfg.retry_after_max = 30 * KEEL_SEC;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(rx_count(rx), ==, 1);
	CHECK_INT(st.failed, ==, 1);
	CHECK_INT(st.retried, ==, 0);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* Connection refused is a network error: retried, then given up. */
TEST(connection_refused)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "nobody home" };
	struct keel_reporter *r;

	base_config(&cfg);
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d/", dead_port());
	cfg.webhook_url = url_buf;
	cfg.max_attempts = 4;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.failed, ==, 1);
	CHECK_INT(st.retried, ==, 3);
	keel_reporter_free(r);
	keel_test_leak_check();
}

/* A server that hangs up without answering: retried, and no SIGPIPE
 * (the default action would kill this process). */
TEST(hangup_no_sigpipe)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "hung up on" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	int i;

	signal(SIGPIPE, SIG_DFL);
	rx->hangup = 1;
	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	cfg.max_attempts = 3;
	r = new_reporter(&cfg);
	for (i = 0; i < 3; i++)
		CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.failed, ==, 3);
	CHECK_INT(st.retried, ==, 6);
	CHECK_INT(rx_count(rx), ==, 9);
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The queue and shutdown
 * ------------------------------------------------------------------------ */

TEST(queue_full_drops)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "flood" };
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	double t0;
	int i, ok = 0, full = 0;

	rx->stall = 1;
	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/r");
	cfg.queue_size = 4;
	cfg.timeout = 60 * KEEL_SEC;
	cfg.shutdown_timeout = 100 * KEEL_MSEC;
	r = new_reporter(&cfg);
	/* The first is taken by the thread and stalls in its request. */
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(rx_wait(rx, 1), ==, 1);
	for (i = 0; i < 1000; i++) {
		int rc = keel_reporter_send(r, &ev);

		if (rc == 0)
			ok++;
		else if (rc == -EAGAIN)
			full++;
		else
			KEEL_TEST_FAIL("send returned %d", rc);
	}
	CHECK_INT(ok, ==, 4);
	CHECK_INT(full, ==, 996);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.queued, ==, 5);
	CHECK_INT(st.dropped, ==, 996);
	CHECK_INT(st.pending, ==, 5);
	CHECK_INT(keel_reporter_flush(r, 50 * KEEL_MSEC), ==, -ETIMEDOUT);
	/* free gives up on the stalled request (its timeout is a minute). */
	t0 = keel_test_now();
	keel_reporter_free(r);
	CHECK(keel_test_now() - t0 < 10);
	CHECK_INT(rx_count(rx), ==, 1);
	rx_stop(rx);
	keel_test_leak_check();
}

/* A backoff wait ends at once when free gives up waiting. */
TEST(free_during_backoff)
{
	struct keel_reporter_config cfg;
	struct keel_report_event ev = { .message = "pending" };
	struct keel_reporter *r;
	double t0;

	base_config(&cfg);
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d/", dead_port());
	cfg.webhook_url = url_buf;
	cfg.backoff_initial = 30 * KEEL_SEC;
	cfg.backoff_max = 30 * KEEL_SEC;
	cfg.shutdown_timeout = 50 * KEEL_MSEC;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	t0 = keel_test_now();
	keel_reporter_free(r);
	CHECK(keel_test_now() - t0 < 10);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The sink
 * ------------------------------------------------------------------------ */

struct sink_state {
	atomic_int calls;
	int fail_first;   /* return this code on the first call */
	char last[4096];
};

static int test_sink(void *ud, const char *json, size_t len)
{
	struct sink_state *s = ud;
	int n = atomic_fetch_add(&s->calls, 1);

	if (len < sizeof(s->last)) {
		memcpy(s->last, json, len);
		s->last[len] = '\0';
	}
	return n == 0 ? s->fail_first : 0;
}

TEST(sink_destination)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_report_event ev = { .message = "to my sink", .level = "info" };
	struct keel_reporter *r;
	struct sink_state s = { .fail_first = -EAGAIN };
	json_t *b;

	base_config(&cfg);
	cfg.sink = test_sink;
	cfg.sink_ud = &s;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(atomic_load(&s.calls), ==, 2);
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(st.retried, ==, 1);
	b = parse(s.last, strlen(s.last));
	CHECK_STR(jstr(b, "message"), "to my sink");
	CHECK_STR(jstr(b, "level"), "info");
	json_decref(b);
	keel_reporter_free(r);

	/* A code outside the retryable set gives up at once. */
	memset(&s, 0, sizeof(s));
	s.fail_first = -EPERM;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_send(r, &ev), ==, 0);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(atomic_load(&s.calls), ==, 1);
	CHECK_INT(st.failed, ==, 1);
	keel_reporter_free(r);
	keel_test_leak_check();
}

/* Many threads sending at once: every event arrives exactly once. */
struct sender {
	struct keel_reporter *r;
	int id;
};

static void *send_many(void *arg)
{
	struct sender *s = arg;
	char msg[32];
	int i;

	for (i = 0; i < 50; i++) {
		struct keel_report_event ev = { .message = msg };

		snprintf(msg, sizeof(msg), "t%d-%d", s->id, i);
		CHECK_INT(keel_reporter_send(s->r, &ev), ==, 0);
	}
	return NULL;
}

TEST(concurrent_senders)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	struct sender s[4];
	pthread_t th[4];
	char seen[4][50];
	int i;

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/c");
	cfg.queue_size = 200;
	r = new_reporter(&cfg);
	for (i = 0; i < 4; i++) {
		s[i] = (struct sender){ r, i };
		CHECK_INT(pthread_create(&th[i], NULL, send_many, &s[i]), ==, 0);
	}
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK_INT(keel_reporter_flush(r, 60 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.sent, ==, 200);
	CHECK_INT(rx_count(rx), ==, RX_MAX_REQ); /* it keeps the first 64 */
	memset(seen, 0, sizeof(seen));
	for (i = 0; i < 64; i++) {
		json_t *b = parse(rx->req[i].body, rx->req[i].len);
		int t, k;

		CHECK_INT(sscanf(jstr(b, "message"), "t%d-%d", &t, &k), ==, 2);
		CHECK(t >= 0 && t < 4 && k >= 0 && k < 50);
		CHECK_INT(seen[t][k], ==, 0);
		seen[t][k] = 1;
		json_decref(b);
	}
	keel_reporter_free(r);
	rx_stop(rx);
	keel_test_leak_check();
}

