/*
 * tests/http/test_middleware.c - keel's middleware on a real server
 * (127.0.0.1, a port the kernel picks) with libcurl as the client: recover
 * (panics and faults become the standard 500 with the response's trace
 * id, logged with their stack; a panic after the commit closes the
 * connection), trace, access_log, metrics (checked with the independent
 * exposition parser), auth, body_limit, policy (rate limit, bulkhead,
 * breaker), and all of them together under concurrent load.
 */
/* KEEL_TEST_LABELS: threads */
#define _GNU_SOURCE
#include <keel.h>
#include <keel/breaker.h>
#include <keel/bulkhead.h>
#include <keel/http.h>
#include <keel/ratelimit.h>
#include "../../src/http/internal.h"
#include "keel_test.h"
#include "http/http_client.h"
#include "obs/expo_check.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>

/* expo_check.h's helpers this file does not call. */
static void (*const expo_unused[])(void) __attribute__((unused)) = {
	(void (*)(void))expo_find,
};
#include <stdatomic.h>
#include <strings.h>

/* ------------------------------------------------------------------------
 * The client
 * ------------------------------------------------------------------------ */

/* The shared client (http_client.h), in this file's argument order. */
static void http_do(int port, const char *method, const char *path,
		    const char *const *headers, const char *body,
		    struct hres *r)
{
	http_req((uint16_t)port, method, path, body, headers, r);
}

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* The shared check of the standard error body, and its trace_id ("" when
 * null) in tid. */
static void check_error_tid(const struct hres *r, int status, char tid[33])
{
	json_t *v = check_error_body(r, status);
	const char *t = jstr(v, "trace_id");

	snprintf(tid, 33, "%s", t != NULL ? t : "");
	json_decref(v);
}

/* The trace id of a traceparent header of r ("" when none). */
static void resp_trace(const struct hres *r, char tid[33], char sid[17])
{
	char tp[128];

	tid[0] = sid[0] = '\0';
	if (hres_header_get(r, "traceparent", tp, sizeof(tp)) == NULL)
		return;
	CHECK_INT(strlen(tp), ==, KEEL_TRACEPARENT_LEN);
	snprintf(tid, 33, "%.32s", tp + 3);
	snprintf(sid, 17, "%.16s", tp + 36);
}

/* ------------------------------------------------------------------------
 * Captured logs
 * ------------------------------------------------------------------------ */

struct logcap {
	pthread_mutex_t mu;
	char *buf;
	size_t len, cap;
	struct keel_logger *lg;
};

static void cap_sink(void *ud, enum keel_log_level level, const char *line,
		     size_t len)
{
	struct logcap *c = ud;

	(void)level;
	pthread_mutex_lock(&c->mu);
	if (c->len + len + 1 > c->cap) {
		c->cap = (c->len + len + 1) * 2;
		c->buf = realloc(c->buf, c->cap);
	}
	memcpy(c->buf + c->len, line, len);
	c->len += len;
	c->buf[c->len] = '\0';
	pthread_mutex_unlock(&c->mu);
}

static void logcap_init(struct logcap *c)
{
	struct keel_log_config cfg;

	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	keel_log_config_init(&cfg);
	cfg.level = KEEL_LOG_DEBUG;
	cfg.format = KEEL_LOG_FORMAT_JSON;
	cfg.sink = cap_sink;
	cfg.sink_ud = c;
	CHECK_INT(keel_log_new(&cfg, &c->lg), ==, 0);
}

static void logcap_free(struct logcap *c)
{
	keel_log_free(c->lg);
	free(c->buf);
	pthread_mutex_destroy(&c->mu);
}

/* The records (a JSON array) whose key equals value; all if key NULL. */
static json_t *logcap_find(struct logcap *c, const char *key,
			   const char *value)
{
	json_t *all = json_array();
	char *p, *save = NULL, *copy;

	pthread_mutex_lock(&c->mu);
	copy = strdup(c->buf != NULL ? c->buf : "");
	pthread_mutex_unlock(&c->mu);
	for (p = strtok_r(copy, "\n", &save); p != NULL;
	     p = strtok_r(NULL, "\n", &save)) {
		json_error_t err;
		json_t *v = json_loads(p, 0, &err);

		if (v == NULL)
			KEEL_TEST_FAIL("log line is not JSON: %s", p);
		if (key == NULL || (jstr(v, key) != NULL &&
				    strcmp(jstr(v, key), value) == 0))
			json_array_append(all, v);
		json_decref(v);
	}
	free(copy);
	return all;
}

/* ------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------ */

struct mwdef {
	keel_http_middleware_fn fn;
	void *ud;
};

struct tsrv {
	struct keel_http_router *rt;
	struct keel_http_server *s;
	int port;
};

static void tsrv_start(struct tsrv *t, struct keel_http_router *rt,
		       const struct mwdef *mws, size_t n)
{
	struct keel_http_config cfg;
	size_t i;

	keel_http_config_init(&cfg);
	cfg.port = 0;
	cfg.router = rt;
	cfg.pool_threads = 4;
	t->rt = rt;
	CHECK_INT(keel_http_server_new(&cfg, &t->s), ==, 0);
	for (i = 0; i < n; i++)
		CHECK_INT(keel_http_use(t->s, mws[i].fn, mws[i].ud), ==, 0);
	CHECK_INT(keel_http_server_start(t->s), ==, 0);
	t->port = keel_http_server_port(t->s);
	CHECK(t->port > 0);
}

static void tsrv_stop(struct tsrv *t)
{
	CHECK_INT(keel_http_server_stop(t->s, 5 * KEEL_SEC), ==, 0);
	keel_http_server_free(t->s);
	keel_http_router_free(t->rt);
}

/* ------------------------------------------------------------------------
 * Handlers
 * ------------------------------------------------------------------------ */

static atomic_int calls;

static void h_ok(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)ud;
	atomic_fetch_add(&calls, 1);
	keel_http_printf(rs, "ok");
}

static void h_panic(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	(void)rq;
	(void)rs;
	(void)ud;
	atomic_fetch_add(&calls, 1);
	keel_panic("boom in the handler");
}

KEEL_TEST_NO_SANITIZE static void h_nil(struct keel_http_req *rq,
					struct keel_http_resp *rs, void *ud)
{
	int *volatile p = ud; /* NULL, unseen by the compiler */

	(void)rq;
	atomic_fetch_add(&calls, 1);
	keel_http_printf(rs, "%d", *p);
}

static volatile int zero;

KEEL_TEST_NO_SANITIZE static void h_div(struct keel_http_req *rq,
					struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)ud;
	atomic_fetch_add(&calls, 1);
	keel_http_printf(rs, "%d", 7 / zero);
}

static void h_commit_panic(struct keel_http_req *rq,
			   struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_write_header(rs, 200);
	keel_http_printf(rs, "partial");
	keel_panic("after the commit");
}

/* Answers the handler's trace context: "<trace> <span>", or "none". */
static void h_trace(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	const struct keel_trace *t = keel_trace_current();
	char tid[33], sid[17];

	(void)rq;
	(void)ud;
	if (t == NULL || !keel_trace_valid(t)) {
		keel_http_printf(rs, "none");
		return;
	}
	keel_trace_id_hex(t, tid);
	keel_span_id_hex(t, sid);
	keel_http_printf(rs, "%s %s", tid, sid);
}

/* Answers ?s=<status> in the standard format. */
static void h_status(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	const char *s = keel_http_query(rq, "s");

	(void)ud;
	atomic_fetch_add(&calls, 1);
	keel_http_error(rs, s != NULL ? atoi(s) : 500, NULL);
}

static void h_slow(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	(void)rq;
	(void)ud;
	atomic_fetch_add(&calls, 1);
	usleep(400 * 1000);
	keel_http_printf(rs, "slow");
}

/*
 * A middleware put outside everything else: after the rest of the chain
 * (panic or not), the serving thread must have the context it had before
 * (the server starts each request with none). Counts violations.
 */
static atomic_int leaked;

static void mw_probe(struct keel_http_req *rq, struct keel_http_resp *rs,
		     const struct keel_http_next *next, void *ud)
{
	const struct keel_trace *t;

	(void)ud;
	keel_http_next(next, rq, rs);
	t = keel_trace_current();
	if (t != NULL && keel_trace_valid(t))
		atomic_fetch_add(&leaked, 1);
}

/* ------------------------------------------------------------------------
 * recover
 * ------------------------------------------------------------------------ */

static json_t *stack_of(json_t *rec)
{
	return json_object_get(json_object_get(rec, "panic"), "stack");
}

static int stack_has(json_t *rec, const char *fn)
{
	json_t *st = stack_of(rec);
	size_t i;

	for (i = 0; i < json_array_size(st); i++) {
		const char *f = jstr(json_array_get(st, i), "function");

		if (f != NULL && strcmp(f, fn) == 0)
			return 1;
	}
	return 0;
}

/* Serves path, expects the 500 with the response's trace id, and returns
 * the one panic record (the caller decrefs). */
static json_t *expect_recovered(struct tsrv *t, struct logcap *lc,
				const char *path, const char *kind)
{
	struct hres r;
	char tid[33], sid[17], btid[33], rid[80];
	json_t *recs, *rec;

	http_do(t->port, "GET", path,
		(const char *const[]){ "X-Request-Id: req-42", NULL }, NULL, &r);
	CHECK_INT(r.rc, ==, CURLE_OK);
	CHECK_INT(r.status, ==, 500);
	check_error_tid(&r, 500, btid);
	resp_trace(&r, tid, sid);
	CHECK_INT(strlen(tid), ==, 32);
	CHECK_STR(btid, tid);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), "req-42");
	recs = logcap_find(lc, "path", path);
	CHECK_INT(json_array_size(recs), ==, 1);
	rec = json_incref(json_array_get(recs, 0));
	json_decref(recs);
	CHECK_STR(jstr(rec, "level"), "ERROR");
	CHECK_STR(jstr(rec, "module"), "http");
	CHECK_STR(jstr(rec, "method"), "GET");
	CHECK_STR(jstr(rec, "route"), path);
	CHECK_STR(jstr(rec, "request_id"), "req-42");
	CHECK_STR(jstr(rec, "trace_id"), tid);
	CHECK_STR(jstr(json_object_get(rec, "panic"), "kind"), kind);
	return rec;
}

static void recover_server(struct tsrv *t, struct logcap *lc)
{
	struct keel_http_router *rt;
	const struct mwdef mws[] = {
		{ mw_probe, NULL },
		{ keel_http_mw_recover, lc->lg },
		{ keel_http_mw_trace, NULL },
	};

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/ok", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/nil", h_nil, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/div", h_div, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool-panic", h_panic, NULL,
				  KEEL_HTTP_BLOCKING), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/commit", h_commit_panic, NULL,
				  0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/trace", h_trace, NULL, 0), ==, 0);
	tsrv_start(t, rt, mws, sizeof(mws) / sizeof(mws[0]));
}

TEST(recover_panic_is_500_with_trace_and_log)
{
	struct logcap lc;
	struct tsrv t;
	struct keel_http_stats st;
	struct hres r;
	json_t *rec;

	logcap_init(&lc);
	recover_server(&t, &lc);
	rec = expect_recovered(&t, &lc, "/panic", "message");
	CHECK_STR(jstr(json_object_get(rec, "panic"), "message"),
		  "boom in the handler");
	CHECK(stack_has(rec, "h_panic"));
	CHECK_INT(json_integer_value(json_object_get(rec, "status")), ==, 500);
	json_decref(rec);
	/* On the pool too. */
	rec = expect_recovered(&t, &lc, "/pool-panic", "message");
	CHECK(stack_has(rec, "h_panic"));
	json_decref(rec);
	/* The threads go on serving. */
	http_get(t.port, "/ok", &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(r.body, "ok");
	keel_http_server_stats(t.s, &st);
	CHECK_INT(st.panics, ==, 2);
	CHECK_INT(atomic_load(&leaked), ==, 0);
	tsrv_stop(&t);
	logcap_free(&lc);
	keel_test_leak_check();
}

TEST(recover_faults)
{
	struct logcap lc;
	struct tsrv t;
	struct hres r;
	json_t *rec;

#ifdef KEEL_TEST_TSAN
	KEEL_TEST_SKIP("TSan cannot follow a jump out of a signal handler");
#endif
	logcap_init(&lc);
	recover_server(&t, &lc);
	rec = expect_recovered(&t, &lc, "/nil", "nil-dereference");
	CHECK(stack_has(rec, "h_nil"));
	CHECK_STR(jstr(json_array_get(stack_of(rec), 0), "function"), "h_nil");
	json_decref(rec);
	rec = expect_recovered(&t, &lc, "/div", "divide-by-zero");
	CHECK_STR(jstr(json_array_get(stack_of(rec), 0), "function"), "h_div");
	json_decref(rec);
	/* Twice more: a fault handled once does not leave the signal
	 * blocked. */
	http_get(t.port, "/nil", &r);
	CHECK_INT(r.status, ==, 500);
	http_get(t.port, "/div", &r);
	CHECK_INT(r.status, ==, 500);
	http_get(t.port, "/ok", &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_INT(atomic_load(&leaked), ==, 0);
	tsrv_stop(&t);
	logcap_free(&lc);
}

TEST(recover_after_commit_closes_the_connection)
{
	struct logcap lc;
	struct tsrv t;
	struct hres r;
	json_t *recs, *rec;

	logcap_init(&lc);
	recover_server(&t, &lc);
	http_get(t.port, "/commit", &r);
	CHECK(r.rc != CURLE_OK); /* nothing came back */
	CHECK(r.status == 0);
	recs = logcap_find(&lc, "path", "/commit");
	CHECK_INT(json_array_size(recs), ==, 1);
	rec = json_array_get(recs, 0);
	CHECK(json_is_true(json_object_get(rec, "committed")));
	CHECK_INT(json_integer_value(json_object_get(rec, "status")), ==, 200);
	CHECK_STR(jstr(json_object_get(rec, "panic"), "message"),
		  "after the commit");
	json_decref(recs);
	http_get(t.port, "/ok", &r);
	CHECK_INT(r.status, ==, 200);
	tsrv_stop(&t);
	logcap_free(&lc);
}

/* ------------------------------------------------------------------------
 * trace
 * ------------------------------------------------------------------------ */

TEST(trace_context_and_request_id)
{
	struct logcap lc;
	struct tsrv t;
	struct hres r;
	char tid[33], sid[17], rid[128], b1[64], b2[64];
	static const char in_tp[] =
		"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	char long_id[100];

	logcap_init(&lc);
	recover_server(&t, &lc);

	/* An incoming trace is continued: same trace, a new span, which is
	 * the handler's current context and the response's parent id. */
	http_do(t.port, "GET", "/trace",
		(const char *const[]){ in_tp, "X-Request-Id: abc-123_x", NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 200);
	resp_trace(&r, tid, sid);
	CHECK_STR(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK(strcmp(sid, "00f067aa0ba902b7") != 0);
	CHECK(sscanf(r.body, "%63s %63s", b1, b2) == 2);
	CHECK_STR(b1, tid);
	CHECK_STR(b2, sid);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), "abc-123_x");

	/* An invalid one (upper-case hex) starts a new trace; a request id
	 * with a space is replaced by the trace id. */
	http_do(t.port, "GET", "/trace",
		(const char *const[]){
			"traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
			"X-Request-Id: has space", NULL },
		NULL, &r);
	resp_trace(&r, tid, sid);
	CHECK_INT(strlen(tid), ==, 32);
	CHECK(strcmp(tid, "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
	CHECK(strcasecmp(tid, "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
	CHECK(sscanf(r.body, "%63s", b1) == 1);
	CHECK_STR(b1, tid);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), tid);

	/* No headers: a new trace each time, id from it. 65 chars: too
	 * long. */
	memset(long_id, 'a', sizeof(long_id));
	memcpy(long_id, "X-Request-Id: ", 14);
	long_id[14 + 65] = '\0';
	http_do(t.port, "GET", "/trace",
		(const char *const[]){ long_id, NULL }, NULL, &r);
	resp_trace(&r, tid, sid);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), tid);
	long_id[14 + 64] = '\0'; /* 64: fine */
	http_do(t.port, "GET", "/trace",
		(const char *const[]){ long_id, NULL }, NULL, &r);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), long_id + 14);

	/* Without one: the trace id is the request's id (the handler's
	 * keel_http_request_id), carried by traceparent; nothing to echo. */
	http_get(t.port, "/trace", &r);
	CHECK_INT(r.status, ==, 200);
	resp_trace(&r, tid, sid);
	CHECK_INT(strlen(tid), ==, 32);
	CHECK(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)) == NULL);

	/* Errors carry the trace too (404 through the chain). */
	http_get(t.port, "/missing", &r);
	CHECK_INT(r.status, ==, 404);
	resp_trace(&r, tid, sid);
	check_error_tid(&r, 404, b1);
	CHECK_STR(b1, tid);
	CHECK(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)) == NULL);
	/* A recovered panic's 500 gets both back, the id as it came. */
	http_do(t.port, "GET", "/panic",
		(const char *const[]){ "X-Request-Id: p-1", NULL }, NULL, &r);
	CHECK_INT(r.status, ==, 500);
	resp_trace(&r, tid, sid);
	CHECK_INT(strlen(tid), ==, 32);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), "p-1");

	/* Nothing was left on the serving threads, panics included. */
	http_get(t.port, "/panic", &r);
	CHECK_INT(r.status, ==, 500);
	http_get(t.port, "/pool-panic", &r);
	CHECK_INT(r.status, ==, 500);
	CHECK_INT(atomic_load(&leaked), ==, 0);
	tsrv_stop(&t);
	logcap_free(&lc);
}

/* With always_request_id, a made-up id (the trace id) is sent too, on
 * answers and on a recovered panic's 500; one that came is echoed. */
TEST(trace_request_id_always)
{
	static const struct keel_http_trace_options always = { 1 };
	struct logcap lc;
	struct tsrv t;
	struct keel_http_router *rt;
	struct hres r;
	char tid[33], sid[17], rid[128];
	struct mwdef mws[2];

	logcap_init(&lc);
	mws[0] = (struct mwdef){ keel_http_mw_recover, lc.lg };
	mws[1] = (struct mwdef){ keel_http_mw_trace, (void *)&always };
	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/trace", h_trace, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	tsrv_start(&t, rt, mws, sizeof(mws) / sizeof(mws[0]));
	http_get(t.port, "/trace", &r);
	CHECK_INT(r.status, ==, 200);
	resp_trace(&r, tid, sid);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), tid);
	http_get(t.port, "/panic", &r);
	CHECK_INT(r.status, ==, 500);
	resp_trace(&r, tid, sid);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), tid);
	http_do(t.port, "GET", "/trace",
		(const char *const[]){ "X-Request-Id: mine", NULL }, NULL, &r);
	CHECK_STR(hres_header_get(&r, "X-Request-Id", rid, sizeof(rid)), "mine");
	tsrv_stop(&t);
	logcap_free(&lc);
}

/* ------------------------------------------------------------------------
 * access_log
 * ------------------------------------------------------------------------ */

TEST(access_log_records)
{
	struct logcap lc;
	struct tsrv t;
	struct keel_http_router *rt;
	struct hres r;
	json_t *recs, *rec;
	char tid[33], sid[17];
	const struct mwdef mws[] = {
		{ keel_http_mw_recover, NULL },
		{ keel_http_mw_trace, NULL },
		{ keel_http_mw_access_log, NULL },
	};
	struct mwdef m2[3];

	logcap_init(&lc);
	memcpy(m2, mws, sizeof(m2));
	m2[0].ud = lc.lg;
	m2[2].ud = lc.lg;
	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/jobs/{name}", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "POST", "/slow", h_slow, NULL,
				  KEEL_HTTP_BLOCKING), ==, 0);
	tsrv_start(&t, rt, m2, 3);

	http_do(t.port, "GET", "/jobs/nightly",
		(const char *const[]){ "X-Request-Id: r1", NULL }, NULL, &r);
	CHECK_INT(r.status, ==, 200);
	resp_trace(&r, tid, sid);
	recs = logcap_find(&lc, "request_id", "r1");
	CHECK_INT(json_array_size(recs), ==, 1);
	rec = json_array_get(recs, 0);
	CHECK_STR(jstr(rec, "level"), "INFO");
	CHECK_STR(jstr(rec, "module"), "http");
	CHECK_STR(jstr(rec, "method"), "GET");
	CHECK_STR(jstr(rec, "path"), "/jobs/nightly");
	CHECK_STR(jstr(rec, "route"), "/jobs/{name}");
	CHECK_INT(json_integer_value(json_object_get(rec, "status")), ==, 200);
	CHECK_INT(json_integer_value(json_object_get(rec, "bytes")), ==, 2);
	CHECK(json_is_number(json_object_get(rec, "duration_ms")));
	CHECK(json_number_value(json_object_get(rec, "duration_ms")) >= 0);
	CHECK_STR(jstr(rec, "remote"), "127.0.0.1");
	CHECK_STR(jstr(rec, "trace_id"), tid);
	CHECK_STR(jstr(rec, "span_id"), sid);
	CHECK(json_object_get(rec, "panicked") == NULL);
	json_decref(recs);

	/* 404: WARN, no route. */
	http_do(t.port, "GET", "/nope",
		(const char *const[]){ "X-Request-Id: r2", NULL }, NULL, &r);
	CHECK_INT(r.status, ==, 404);
	recs = logcap_find(&lc, "request_id", "r2");
	CHECK_INT(json_array_size(recs), ==, 1);
	rec = json_array_get(recs, 0);
	CHECK_STR(jstr(rec, "level"), "WARN");
	CHECK(json_is_null(json_object_get(rec, "route")));
	CHECK_INT(json_integer_value(json_object_get(rec, "status")), ==, 404);
	json_decref(recs);

	/* A panic: ERROR, status 500, panicked; and the recover record. */
	http_do(t.port, "GET", "/panic",
		(const char *const[]){ "X-Request-Id: r3", NULL }, NULL, &r);
	CHECK_INT(r.status, ==, 500);
	recs = logcap_find(&lc, "request_id", "r3");
	CHECK_INT(json_array_size(recs), ==, 2);
	rec = json_array_get(recs, 0); /* access_log's runs first */
	CHECK_STR(jstr(rec, "message"), "request");
	CHECK_STR(jstr(rec, "level"), "ERROR");
	CHECK_INT(json_integer_value(json_object_get(rec, "status")), ==, 500);
	CHECK(json_is_true(json_object_get(rec, "panicked")));
	resp_trace(&r, tid, sid);
	CHECK_STR(jstr(rec, "trace_id"), tid);
	CHECK(json_object_get(json_array_get(recs, 1), "panic") != NULL);
	json_decref(recs);

	/* Offloaded, with a measurable duration. */
	http_do(t.port, "POST", "/slow",
		(const char *const[]){ "X-Request-Id: r4", NULL }, "x", &r);
	CHECK_INT(r.status, ==, 200);
	recs = logcap_find(&lc, "request_id", "r4");
	CHECK_INT(json_array_size(recs), ==, 1);
	CHECK(json_number_value(json_object_get(json_array_get(recs, 0),
						"duration_ms")) >= 390);
	json_decref(recs);
	tsrv_stop(&t);
	logcap_free(&lc);
}

/* One request from the source address src (any 127.x.y.z is this host),
 * with X-Request-Id id; the status line's code. */
static int get_from(uint16_t port, const char *src, const char *id)
{
	struct sockaddr_in me = {.sin_family = AF_INET};
	struct sockaddr_in to = {.sin_family = AF_INET,
				 .sin_port = htons(port)};
	char req[256], buf[4096];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), n, closed;

	CHECK(fd >= 0);
	CHECK_INT(inet_pton(AF_INET, src, &me.sin_addr), ==, 1);
	CHECK_INT(bind(fd, (struct sockaddr *)&me, sizeof(me)), ==, 0);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(connect(fd, (struct sockaddr *)&to, sizeof(to)), ==, 0);
	n = snprintf(req, sizeof(req),
		     "GET /jobs/x HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n"
		     "Connection: close\r\n\r\n",
		     id);
	raw_write(fd, req, (size_t)n);
	raw_read(fd, buf, sizeof(buf), 3000, &closed);
	close(fd);
	return strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : -1;
}

/* The client's address in the access log, from clients at different
 * addresses in turn: the event thread keeps the text of the last address
 * it formatted, which must never answer for another one. */
TEST(access_log_remote_per_client)
{
	static const char *const src[] = {
	    "127.0.0.2", "127.0.0.1", "127.0.0.1", "127.1.2.3", "127.0.0.2",
	};
	struct logcap lc;
	struct tsrv t;
	struct keel_http_router *rt;
	const struct mwdef mws[] = {
	    {keel_http_mw_trace, NULL},
	    {keel_http_mw_access_log, NULL},
	};
	struct mwdef m2[2];
	size_t i;

	logcap_init(&lc);
	memcpy(m2, mws, sizeof(m2));
	m2[1].ud = lc.lg;
	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/jobs/{name}", h_ok, NULL, 0), ==,
		  0);
	tsrv_start(&t, rt, m2, 2);
	for (i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
		char id[16];
		json_t *recs;

		snprintf(id, sizeof(id), "c%zu", i);
		CHECK_INT(get_from((uint16_t)t.port, src[i], id), ==, 200);
		recs = logcap_find(&lc, "request_id", id);
		CHECK_INT(json_array_size(recs), ==, 1);
		CHECK_STR(jstr(json_array_get(recs, 0), "remote"), src[i]);
		json_decref(recs);
	}
	tsrv_stop(&t);
	logcap_free(&lc);
}

/* An asynchronous logger into a logcap: the access log's records are then
 * formatted on its writer thread (keel_log_write_deferred). */
static void logcap_init_async(struct logcap *c)
{
	struct keel_log_config cfg;

	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	keel_log_config_init(&cfg);
	cfg.level = KEEL_LOG_DEBUG;
	cfg.format = KEEL_LOG_FORMAT_JSON;
	cfg.sink = cap_sink;
	cfg.sink_ud = c;
	cfg.async = 1;
	CHECK_INT(keel_log_new(&cfg, &c->lg), ==, 0);
}

/* The line of buf whose request_id is id, without its timestamp (the
 * one thing two loggers may see differently); NULL when none. */
static char *line_by_id(const char *buf, const char *id)
{
	char key[160];
	const char *p = buf, *nl, *hit;

	snprintf(key, sizeof(key), "\"request_id\":\"%s\"", id);
	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		CHECK(nl != NULL);
		hit = strstr(p, key);
		if (hit != NULL && hit < nl &&
		    strncmp(p, "{\"timestamp\":\"", 14) == 0 && nl - p > 38 &&
		    strstr(p, "\"message\":\"request\"") < nl)
			return strndup(p + 38, (size_t)(nl - p - 38));
		p = nl + 1;
	}
	return NULL;
}

/*
 * The access log with an asynchronous logger writes its records from the
 * logger's writer thread: they must be the very bytes a synchronous logger
 * writes (both loggers see the same request here, and the same duration:
 * the clock is read once per request). Unusual paths (escapes, invalid
 * UTF-8, longer than the record's stack block), panics, 404, offloaded.
 */
TEST(access_log_async_records_are_the_same_bytes)
{
	struct logcap sync_lc, async_lc;
	struct tsrv t;
	struct keel_http_router *rt;
	struct hres r;
	char long_path[1000], id[32];
	static const char *const paths[] = {
		"/jobs/plain", "/jobs/q%22b%5Cs%0Anl%09tab", "/jobs/%FF%C3%A9",
		"/nope", "/panic", "/slow", NULL, /* long_path */
	};
	size_t i, npaths = sizeof(paths) / sizeof(paths[0]);
	struct mwdef mws[4] = {
		{ keel_http_mw_recover, NULL },
		{ keel_http_mw_trace, NULL },
		{ keel_http_mw_access_log, NULL },
		{ keel_http_mw_access_log, NULL },
	};

	logcap_init(&sync_lc);
	logcap_init_async(&async_lc);
	mws[0].ud = sync_lc.lg;
	mws[2].ud = sync_lc.lg;
	mws[3].ud = async_lc.lg;
	memset(long_path, 'p', sizeof(long_path));
	memcpy(long_path, "/jobs/", 6);
	long_path[960] = '\0';
	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/jobs/{name}", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/slow", h_slow, NULL,
				  KEEL_HTTP_BLOCKING), ==, 0);
	tsrv_start(&t, rt, mws, 4);
	for (i = 0; i < npaths; i++) {
		char hdr[64];

		snprintf(id, sizeof(id), "async-%zu", i);
		snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", id);
		http_do(t.port, "GET", paths[i] != NULL ? paths[i] : long_path,
			(const char *const[]){ hdr, NULL }, NULL, &r);
		CHECK(r.status == 200 || r.status == 404 || r.status == 500);
	}
	tsrv_stop(&t);
	keel_log_flush(async_lc.lg);
	for (i = 0; i < npaths; i++) {
		char *a, *b;

		snprintf(id, sizeof(id), "async-%zu", i);
		a = line_by_id(sync_lc.buf, id);
		b = line_by_id(async_lc.buf, id);
		if (a == NULL || b == NULL)
			KEEL_TEST_FAIL("no access record for %s", id);
		CHECK_STR(b, a);
		free(a);
		free(b);
	}
	/* The one with the long path is all there. */
	snprintf(id, sizeof(id), "async-%zu", npaths - 1);
	{
		json_t *recs = logcap_find(&async_lc, "request_id", id), *rec;

		rec = json_array_get(recs, 0);
		CHECK(rec != NULL);
		CHECK_STR(jstr(rec, "path"), long_path);
		CHECK_STR(jstr(rec, "route"), "/jobs/{name}");
		CHECK_STR(jstr(rec, "remote"), "127.0.0.1");
		json_decref(recs);
	}
	logcap_free(&async_lc);
	logcap_free(&sync_lc);
}

/* ------------------------------------------------------------------------
 * metrics
 * ------------------------------------------------------------------------ */

TEST(metrics_counts_and_exposition)
{
	struct keel_metrics *reg;
	struct keel_http_metrics *hm;
	struct keel_http_router *rt;
	struct tsrv t;
	struct hres r;
	struct expo e;
	struct logcap lc;
	char *text;
	int i;

	CHECK_INT(keel_metrics_new(NULL, &reg), ==, 0);
	CHECK_INT(keel_http_metrics_new(NULL, &hm), ==, -EINVAL);
	CHECK_INT(keel_http_metrics_new(reg, &hm), ==, 0);
	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/jobs/{name}", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "POST", "/jobs/{name}", h_status, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	logcap_init(&lc);
	{
		const struct mwdef mws[] = {
			{ keel_http_mw_recover, lc.lg },
			{ keel_http_mw_trace, NULL },
			{ keel_http_mw_metrics, hm },
		};
		tsrv_start(&t, rt, mws, 3);
	}
	for (i = 0; i < 5; i++) {
		char path[64];

		snprintf(path, sizeof(path), "/jobs/j%d", i);
		http_get(t.port, path, &r);
		CHECK_INT(r.status, ==, 200);
	}
	http_do(t.port, "POST", "/jobs/a?s=409", NULL, "", &r);
	CHECK_INT(r.status, ==, 409);
	http_do(t.port, "POST", "/jobs/a?s=409", NULL, "", &r);
	http_do(t.port, "POST", "/jobs/a?s=503", NULL, "", &r);
	CHECK_INT(r.status, ==, 503);
	http_get(t.port, "/panic", &r);
	CHECK_INT(r.status, ==, 500);
	http_get(t.port, "/a/b/c", &r);
	http_get(t.port, "/x", &r);
	CHECK_INT(r.status, ==, 404);
	http_do(t.port, "DELETE", "/jobs/a", NULL, NULL, &r);
	CHECK_INT(r.status, ==, 405);

	memset(&e, 0, sizeof(e));
	text = render_checked(reg, &e);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/jobs/{name}", "status", "200", NULL), ==, 5);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "POST",
			     "route", "/jobs/{name}", "status", "409", NULL), ==, 2);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "POST",
			     "route", "/jobs/{name}", "status", "503", NULL), ==, 1);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/panic", "status", "500", NULL), ==, 1);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "<unmatched>", "status", "404", NULL), ==, 2);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "DELETE",
			     "route", "<unmatched>", "status", "405", NULL), ==, 1);
	CHECK_INT(EXPO_VALUE(&e, "http_request_duration_seconds_count",
			     "method", "GET", "route", "/jobs/{name}", NULL), ==, 5);
	CHECK_INT(EXPO_VALUE(&e, "http_request_duration_seconds_count",
			     "method", "POST", "route", "/jobs/{name}", NULL), ==, 3);
	CHECK_INT(EXPO_VALUE(&e, "http_request_duration_seconds_bucket",
			     "method", "GET", "route", "/panic", "le", "+Inf",
			     NULL), ==, 1);
	/* Never a raw path. */
	CHECK(strstr(text, "/a/b/c") == NULL);
	CHECK(strstr(text, "j3") == NULL);
	free(text);
	expo_free(&e);
	tsrv_stop(&t);
	keel_http_metrics_free(hm);
	keel_http_metrics_free(NULL);
	keel_metrics_free(reg);
	logcap_free(&lc);
}

/* The middleware's own cost per request, called directly on a made-up
 * request (no server): the cache keeps the families' locks off the path. */
TEST(metrics_hot_path_cost)
{
	struct keel_metrics *reg;
	struct keel_http_metrics *hm;
	struct keel_http_req *rq = calloc(1, sizeof(*rq));
	struct keel__http_route route = {
	    .method = "GET",
	    .pattern = (char *)"/v1/jobs/{name}",
	    .fn = h_ok,
	    .pattern_len = 15,
	    .id = 1,
	};
	struct keel__http_mw mw = { keel_http_mw_metrics, NULL };
	struct keel_http_next next = { &mw, 0, 1 };
	struct expo e;
	long i, n = 1000000;
	double t0, dt, base;

	CHECK(rq != NULL);
	CHECK_INT(keel_metrics_new(NULL, &reg), ==, 0);
	CHECK_INT(keel_http_metrics_new(reg, &hm), ==, 0);
	mw.ud = hm;
	snprintf(rq->method, sizeof(rq->method), "GET");
	rq->route = &route;
	keel__http_resp_init(&rq->resp);
#if defined(KEEL_TEST_ASAN) || defined(KEEL_TEST_TSAN)
	n = 50000;
#endif
	/* The same loop without the middleware, for the difference. */
	next.n = 0;
	t0 = keel_test_now();
	for (i = 0; i < n; i++) {
		keel_http_reset(&rq->resp);
		rq->resp.status = (i & 3) == 3 ? 404 : 200;
		keel_http_next(&next, rq, &rq->resp);
	}
	base = keel_test_now() - t0;
	next.n = 1;
	t0 = keel_test_now();
	for (i = 0; i < n; i++) {
		keel_http_reset(&rq->resp);
		rq->resp.status = (i & 3) == 3 ? 404 : 200;
		keel_http_next(&next, rq, &rq->resp);
	}
	dt = keel_test_now() - t0;
	printf("  metrics middleware: %.0f ns/request more than the bare "
	       "handler (%.0f ns)\n", (dt - base) * 1e9 / (double)n,
	       base * 1e9 / (double)n);
	memset(&e, 0, sizeof(e));
	free(render_checked(reg, &e));
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/v1/jobs/{name}", "status", "200", NULL),
		  ==, n - n / 4);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/v1/jobs/{name}", "status", "404", NULL),
		  ==, n / 4);
	expo_free(&e);
	keel__http_resp_release(&rq->resp);
	free(rq);
	keel_http_metrics_free(hm);
	keel_metrics_free(reg);
}

/* Past the cache: more routes than its table holds, more statuses than an
 * entry keeps, methods outside the standard ones. Every count is still
 * exact (the rest go through the families' locks). */
TEST(metrics_beyond_the_cache)
{
	enum { NROUTES = 450, NSTATUS = 12 };
	struct keel_metrics *reg;
	struct keel_http_metrics *hm;
	struct keel_http_req *rq = calloc(1, sizeof(*rq));
	struct keel__http_route *routes = calloc(NROUTES, sizeof(*routes));
	struct keel__http_mw mw = { keel_http_mw_metrics, NULL };
	struct keel_http_next next = { &mw, 0, 1 };
	char (*pats)[32] = calloc(NROUTES, 32);
	struct keel_family *tot, *dur;
	char *text;
	int i, k;

	CHECK(rq != NULL && routes != NULL && pats != NULL);
	CHECK_INT(keel_metrics_new(NULL, &reg), ==, 0);
	CHECK_INT(keel_http_metrics_new(reg, &hm), ==, 0);
	mw.ud = hm;
	keel__http_resp_init(&rq->resp);
	for (i = 0; i < NROUTES; i++) {
		snprintf(pats[i], 32, "/r/%d", i);
		snprintf(routes[i].method, sizeof(routes[i].method), "GET");
		routes[i].pattern = pats[i];
		routes[i].pattern_len = strlen(pats[i]);
		routes[i].fn = h_status;
		/* Ids as a router gives them (the cache's key), but for the
		 * last route: 0, one made by hand, which is counted through
		 * the families without the cache. */
		routes[i].id = i < NROUTES - 1 ? 1000000 + (uint64_t)i : 0;
	}
	snprintf(rq->method, sizeof(rq->method), "GET");
	for (k = 0; k < 2; k++)
		for (i = 0; i < NROUTES; i++) {
			rq->route = &routes[i];
			keel_http_next(&next, rq, &rq->resp);
		}
	rq->route = &routes[0];
	for (k = 0; k < 3; k++)
		for (i = 0; i < NSTATUS; i++) {
			char q[16];

			/* h_status answers ?s=, read from the copied query. */
			snprintf(q, sizeof(q), "%d", 400 + i);
			rq->query = (struct keel__http_kv[]){ { (char *)"s", q } };
			rq->nquery = 1;
			keel_http_next(&next, rq, &rq->resp);
		}
	rq->query = NULL;
	rq->nquery = 0;
	snprintf(rq->method, sizeof(rq->method), "BREW");
	rq->route = NULL;
	keel_http_next(&next, rq, &rq->resp); /* 404 through the chain */
	/* Read back through the families (the same definitions register
	 * again as the same families); rendering 450 histograms through the
	 * exposition checker would be quadratic. */
	CHECK_INT(keel_metrics_counter(reg, "http_requests_total",
				       "HTTP requests answered, by method, route and status.",
				       KEEL_LABELS("method", "route", "status"),
				       &tot), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "http_request_duration_seconds",
					 "Time from a complete request to its response, by method and route.",
					 KEEL_LABELS("method", "route"), NULL, 0,
					 &dur), ==, 0);
	for (i = 0; i < NROUTES; i++) {
		uint64_t cnt = 0;

		CHECK_INT(keel_counter_value(keel_counter_with(tot, "GET", pats[i],
							       "500")), ==, 2);
		keel_histogram_read(keel_histogram_with(dur, "GET", pats[i]),
				    &cnt, NULL);
		CHECK_INT(cnt, ==, i == 0 ? 2 + 3 * NSTATUS : 2);
	}
	for (i = 0; i < NSTATUS; i++) {
		char st[16];

		snprintf(st, sizeof(st), "%d", 400 + i);
		CHECK_INT(keel_counter_value(keel_counter_with(tot, "GET", "/r/0",
							       st)), ==, 3);
	}
	CHECK_INT(keel_counter_value(keel_counter_with(tot, "OTHER",
						       "<unmatched>", "404")),
		  ==, 1);
	/* And the whole text is valid. */
	text = render(reg);
	CHECK(strstr(text, "# TYPE http_requests_total counter") != NULL);
	free(text);
	keel__http_resp_release(&rq->resp);
	free(rq);
	free(routes);
	free(pats);
	keel_http_metrics_free(hm);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* The chain's order and short cuts, called directly. */
static void mw_mark(struct keel_http_req *rq, struct keel_http_resp *rs,
		    const struct keel_http_next *next, void *ud)
{
	const char *name = ud;

	keel_http_printf(rs, "%s>", name);
	if (strcmp(name, "stop") != 0)
		keel_http_next(next, rq, rs);
	keel_http_printf(rs, "<%s", name);
}

static void h_mark(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_printf(rs, "H");
}

TEST(next_runs_the_chain_in_order)
{
	struct keel_http_req *rq = calloc(1, sizeof(*rq));
	struct keel__http_route route = {
	    .method = "GET",
	    .pattern = (char *)"/",
	    .fn = h_mark,
	    .pattern_len = 1,
	    .id = 1,
	};
	struct keel__http_mw mws[3] = {
		{ mw_mark, (void *)"a" }, { mw_mark, (void *)"b" },
		{ mw_mark, (void *)"c" },
	};
	struct keel_http_next next = { mws, 0, 3 };

	CHECK(rq != NULL);
	keel__http_resp_init(&rq->resp);
	rq->route = &route;
	keel_http_next(&next, rq, &rq->resp);
	CHECK_STR(rq->resp.body, "a>b>c>H<c<b<a");
	keel_http_reset(&rq->resp);
	mws[1].ud = (void *)"stop";
	keel_http_next(&next, rq, &rq->resp);
	CHECK_STR(rq->resp.body, "a>stop><stop<a");
	/* No middleware: the handler alone. NULLs do nothing. */
	keel_http_reset(&rq->resp);
	next.n = 0;
	keel_http_next(&next, rq, &rq->resp);
	CHECK_STR(rq->resp.body, "H");
	keel_http_next(NULL, rq, &rq->resp);
	keel_http_next(&next, NULL, &rq->resp);
	keel_http_next(&next, rq, NULL);
	CHECK_STR(rq->resp.body, "H");
	keel__http_resp_release(&rq->resp);
	free(rq);
}

/* ------------------------------------------------------------------------
 * auth and body_limit
 * ------------------------------------------------------------------------ */

TEST(auth_bearer)
{
	static const char *const pub[] = { "/healthz", NULL };
	struct keel_http_auth auth = { "s3cret-token", pub };
	struct keel_http_router *rt;
	struct tsrv t;
	struct hres r;
	char buf[128], tid[33];

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/private", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/healthz", h_ok, NULL, 0), ==, 0);
	{
		const struct mwdef mws[] = { { keel_http_mw_auth, &auth } };
		tsrv_start(&t, rt, mws, 1);
	}
	atomic_store(&calls, 0);
	http_get(t.port, "/private", &r);
	CHECK_INT(r.status, ==, 401);
	CHECK_STR(hres_header_get(&r, "WWW-Authenticate", buf, sizeof(buf)), "Bearer");
	check_error_tid(&r, 401, tid);
	http_do(t.port, "GET", "/private",
		(const char *const[]){ "Authorization: Bearer s3cret-tokeN", NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 401);
	CHECK(strncmp(hres_header_get(&r, "WWW-Authenticate", buf, sizeof(buf)),
		      "Bearer", 6) == 0);
	http_do(t.port, "GET", "/private",
		(const char *const[]){ "Authorization: Bearer s3cret-token-and-more",
				       NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 401);
	http_do(t.port, "GET", "/private",
		(const char *const[]){ "Authorization: Bearer s3cret", NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 401);
	http_do(t.port, "GET", "/private",
		(const char *const[]){ "Authorization: Basic s3cret-token", NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 401);
	CHECK_INT(atomic_load(&calls), ==, 0); /* never reached */
	http_do(t.port, "GET", "/private",
		(const char *const[]){ "Authorization: Bearer s3cret-token", NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(r.body, "ok");
	http_do(t.port, "GET", "/private",
		(const char *const[]){ "Authorization: bearer s3cret-token", NULL },
		NULL, &r);
	CHECK_INT(r.status, ==, 200);
	http_get(t.port, "/healthz", &r);
	CHECK_INT(r.status, ==, 200);
	/* Public is exact. */
	http_get(t.port, "/healthz/", &r);
	CHECK_INT(r.status, ==, 401);
	tsrv_stop(&t);
}

TEST(body_limit_413)
{
	size_t limit = 10;
	struct keel_http_router *rt;
	struct tsrv t;
	struct hres r;
	char tid[33];

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "POST", "/up", h_ok, NULL, 0), ==, 0);
	{
		const struct mwdef mws[] = { { keel_http_mw_body_limit, &limit } };
		tsrv_start(&t, rt, mws, 1);
	}
	atomic_store(&calls, 0);
	http_do(t.port, "POST", "/up", NULL, "0123456789A", &r);
	CHECK_INT(r.status, ==, 413);
	check_error_tid(&r, 413, tid);
	CHECK_INT(atomic_load(&calls), ==, 0);
	http_do(t.port, "POST", "/up", NULL, "0123456789", &r);
	CHECK_INT(r.status, ==, 200);
	http_do(t.port, "POST", "/up", NULL, "", &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_INT(atomic_load(&calls), ==, 2);
	tsrv_stop(&t);
}

/* ------------------------------------------------------------------------
 * policy
 * ------------------------------------------------------------------------ */

static void policy_server(struct tsrv *t, struct keel_policy *p,
			  struct logcap *lc)
{
	struct keel_http_router *rt;
	const struct mwdef mws[] = {
		{ keel_http_mw_recover, lc->lg },
		{ keel_http_mw_trace, NULL },
		{ keel_http_mw_policy, p },
	};

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/ok", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/status", h_status, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/slow", h_slow, NULL,
				  KEEL_HTTP_BLOCKING), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	tsrv_start(t, rt, mws, 3);
}

TEST(policy_rate_limit_429)
{
	struct keel_ratelimit_config cfg;
	struct keel_policy *p;
	struct logcap lc;
	struct tsrv t;
	struct hres r;
	char buf[64], tid[33];
	int i, ok = 0, limited = 0;

	keel_ratelimit_config_init(&cfg);
	cfg.rate = 1;
	cfg.period = 60 * KEEL_SEC;
	CHECK_INT(keel_ratelimit_new(&cfg, &p), ==, 0);
	logcap_init(&lc);
	policy_server(&t, p, &lc);
	atomic_store(&calls, 0);
	for (i = 0; i < 4; i++) {
		http_get(t.port, "/ok", &r);
		if (r.status == 200) {
			ok++;
			continue;
		}
		CHECK_INT(r.status, ==, 429);
		limited++;
		check_error_tid(&r, 429, tid);
		CHECK_INT(strlen(tid), ==, 32);
		CHECK(hres_header_get(&r, "Retry-After", buf, sizeof(buf)) != NULL);
		CHECK(atoi(buf) >= 1);
	}
	CHECK_INT(ok, ==, 1);
	CHECK_INT(limited, ==, 3);
	CHECK_INT(atomic_load(&calls), ==, 1);
	tsrv_stop(&t);
	logcap_free(&lc);
	keel_policy_free(p);
}

struct bg {
	int port;
	const char *path;
	struct hres r;
};

static void *bg_get(void *arg)
{
	struct bg *b = arg;

	http_get(b->port, b->path, &b->r);
	return NULL;
}

TEST(policy_bulkhead_503)
{
	struct keel_bulkhead_config cfg;
	struct keel_policy *p;
	struct logcap lc;
	struct tsrv t;
	struct bg b = { 0, "/slow", { 0 } };
	pthread_t th;
	struct hres r;
	char tid[33];

	keel_bulkhead_config_init(&cfg);
	cfg.max_concurrent = 1;
	CHECK_INT(keel_bulkhead_new(&cfg, &p), ==, 0);
	logcap_init(&lc);
	policy_server(&t, p, &lc);
	b.port = t.port;
	CHECK_INT(pthread_create(&th, NULL, bg_get, &b), ==, 0);
	/* Wait until the slow request holds the one slot. */
	while (keel_bulkhead_in_flight(p) == 0)
		usleep(1000);
	http_get(t.port, "/slow", &r);
	CHECK_INT(r.status, ==, 503);
	check_error_tid(&r, 503, tid);
	/* The fast route shares the bulkhead: also refused meanwhile. */
	http_get(t.port, "/ok", &r);
	CHECK_INT(r.status, ==, 503);
	pthread_join(th, NULL);
	CHECK_INT(b.r.status, ==, 200);
	CHECK_STR(b.r.body, "slow");
	http_get(t.port, "/ok", &r);
	CHECK_INT(r.status, ==, 200);
	tsrv_stop(&t);
	logcap_free(&lc);
	keel_policy_free(p);
}

TEST(policy_breaker_opens_on_5xx)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_policy_stats st;
	struct logcap lc;
	struct tsrv t;
	struct hres r;
	char tid[33];
	int i;

	keel_breaker_config_init(&cfg);
	cfg.consecutive_failures = 3;
	cfg.open_duration = 60 * KEEL_SEC;
	CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
	logcap_init(&lc);
	policy_server(&t, p, &lc);
	atomic_store(&calls, 0);
	/* 4xx is the client's fault: not a failure. */
	for (i = 0; i < 5; i++) {
		http_get(t.port, "/status?s=404", &r);
		CHECK_INT(r.status, ==, 404);
	}
	for (i = 0; i < 3; i++) {
		http_get(t.port, "/status?s=502", &r);
		CHECK_INT(r.status, ==, 502);
	}
	CHECK_INT(atomic_load(&calls), ==, 8);
	http_get(t.port, "/status?s=200", &r);
	CHECK_INT(r.status, ==, 503);
	check_error_tid(&r, 503, tid);
	http_get(t.port, "/ok", &r);
	CHECK_INT(r.status, ==, 503);
	CHECK_INT(atomic_load(&calls), ==, 8); /* the handler was spared */
	keel_policy_stats(p, &st);
	CHECK_INT(st.failures, ==, 3);
	CHECK_INT(st.successes, ==, 5);
	CHECK_INT(st.rejections, ==, 2);
	tsrv_stop(&t);
	logcap_free(&lc);
	keel_policy_free(p);
}

TEST(policy_panic_reaches_recover)
{
	struct keel_breaker_config cfg;
	struct keel_policy *p;
	struct keel_policy_stats st;
	struct logcap lc;
	struct tsrv t;
	struct hres r;
	char tid[33], sid[17], btid[33];
	json_t *recs;

	keel_breaker_config_init(&cfg);
	cfg.consecutive_failures = 100;
	CHECK_INT(keel_breaker_new(&cfg, &p), ==, 0);
	logcap_init(&lc);
	policy_server(&t, p, &lc);
	http_get(t.port, "/panic", &r);
	CHECK_INT(r.status, ==, 500);
	check_error_tid(&r, 500, btid);
	resp_trace(&r, tid, sid);
	CHECK_STR(btid, tid);
	recs = logcap_find(&lc, "path", "/panic");
	CHECK_INT(json_array_size(recs), ==, 1);
	CHECK_STR(jstr(json_object_get(json_array_get(recs, 0), "panic"),
		       "message"), "boom in the handler");
	CHECK_STR(jstr(json_array_get(recs, 0), "trace_id"), tid);
	json_decref(recs);
	keel_policy_stats(p, &st);
	CHECK_INT(st.panics, ==, 1);
	tsrv_stop(&t);
	logcap_free(&lc);
	keel_policy_free(p);
}

/* ------------------------------------------------------------------------
 * Everything together, under load
 * ------------------------------------------------------------------------ */

#define LOAD_THREADS 4
#define LOAD_EACH 60

struct loader {
	int port, id, faults;
	int sent[5], bad;
};

static const char *const load_paths[5] = {
	"/ok", "/panic", "/nil", "/missing", "/pool",
};
static const int load_status[5] = { 200, 500, 500, 404, 200 };

static void *load_run(void *arg)
{
	struct loader *l = arg;
	static const char *const hdr[] = {
		"Authorization: Bearer tok", NULL,
	};
	struct hres *r = malloc(sizeof(*r));
	int i;

	for (i = 0; i < LOAD_EACH; i++) {
		int k = (i + l->id) % 5;

		if (k == 2 && !l->faults)
			k = 1;
		http_do(l->port, "GET", load_paths[k], hdr, NULL, r);
		l->sent[k]++;
		if (r->rc != CURLE_OK || r->status != load_status[k])
			l->bad++;
	}
	free(r);
	return NULL;
}

TEST(everything_under_concurrent_load)
{
	struct keel_metrics *reg;
	struct keel_http_metrics *hm;
	struct keel_http_auth auth = { "tok", NULL };
	size_t limit = 1024;
	struct keel_bulkhead_config bcfg;
	struct keel_policy *bh;
	struct keel_http_router *rt;
	struct logcap lc;
	struct tsrv t;
	struct loader ld[LOAD_THREADS];
	pthread_t th[LOAD_THREADS];
	struct expo e;
	char *text;
	int i, k, sent[5] = { 0 };
	double total = 0;
	json_t *recs;
	int faults = 1;

#ifdef KEEL_TEST_TSAN
	faults = 0; /* TSan cannot follow a jump out of a signal handler */
#endif
	keel_bulkhead_config_init(&bcfg);
	bcfg.max_concurrent = 64;
	CHECK_INT(keel_bulkhead_new(&bcfg, &bh), ==, 0);
	CHECK_INT(keel_metrics_new(NULL, &reg), ==, 0);
	CHECK_INT(keel_http_metrics_new(reg, &hm), ==, 0);
	logcap_init(&lc);
	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/ok", h_ok, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/nil", h_nil, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool", h_ok, NULL,
				  KEEL_HTTP_BLOCKING), ==, 0);
	{
		const struct mwdef mws[] = {
			{ mw_probe, NULL },
			{ keel_http_mw_recover, lc.lg },
			{ keel_http_mw_trace, NULL },
			{ keel_http_mw_access_log, lc.lg },
			{ keel_http_mw_metrics, hm },
			{ keel_http_mw_auth, &auth },
			{ keel_http_mw_body_limit, &limit },
			{ keel_http_mw_policy, bh },
		};
		tsrv_start(&t, rt, mws, sizeof(mws) / sizeof(mws[0]));
	}
	for (i = 0; i < LOAD_THREADS; i++) {
		memset(&ld[i], 0, sizeof(ld[i]));
		ld[i].port = t.port;
		ld[i].id = i;
		ld[i].faults = faults;
		CHECK_INT(pthread_create(&th[i], NULL, load_run, &ld[i]), ==, 0);
	}
	for (i = 0; i < LOAD_THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(ld[i].bad, ==, 0);
		for (k = 0; k < 5; k++)
			sent[k] += ld[i].sent[k];
	}
	memset(&e, 0, sizeof(e));
	text = render_checked(reg, &e);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/ok", "status", "200", NULL), ==, sent[0]);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/panic", "status", "500", NULL), ==, sent[1]);
	if (faults)
		CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
				     "route", "/nil", "status", "500", NULL),
			  ==, sent[2]);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "<unmatched>", "status", "404", NULL), ==,
		  sent[3]);
	CHECK_INT(EXPO_VALUE(&e, "http_requests_total", "method", "GET",
			     "route", "/pool", "status", "200", NULL), ==, sent[4]);
	for (i = 0; i < e.n; i++)
		if (strcmp(e.s[i].name, "http_requests_total") == 0)
			total += e.s[i].v;
	CHECK_INT(total, ==, LOAD_THREADS * LOAD_EACH);
	free(text);
	expo_free(&e);
	recs = logcap_find(&lc, "message", "request");
	CHECK_INT(json_array_size(recs), ==, LOAD_THREADS * LOAD_EACH);
	json_decref(recs);
	recs = logcap_find(&lc, "message", "panic serving request");
	CHECK_INT(json_array_size(recs), ==, sent[1] + sent[2]);
	json_decref(recs);
	CHECK_INT(atomic_load(&leaked), ==, 0);
	tsrv_stop(&t);
	keel_http_metrics_free(hm);
	keel_metrics_free(reg);
	logcap_free(&lc);
	keel_policy_free(bh);
	keel_test_leak_check();
}
