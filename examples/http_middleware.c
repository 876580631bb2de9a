/*
 * examples/http_middleware.c - the design notes' chapter 4.1: one
 * middleware catches whatever goes wrong below it and answers a standard
 * error, so no failure reaches the client as a dropped connection.
 *
 * The seed's Koa middleware wraps `await next()` in try/catch and answers
 * { code, message, timestamp } with err.status or 500. keel's recover
 * middleware is the same idea in C, and it also catches what C has and
 * JavaScript does not: a NULL dereference (SIGSEGV) in a handler, on the
 * event thread or on a pool worker, becomes the same JSON 500 and the
 * server goes on serving. The trace middleware puts a trace id on every
 * answer, log line and error body, and the access log writes one JSON line
 * per request.
 *
 * The example starts the server on a port the kernel picks, calls it with
 * libcurl as a client would, and checks each answer against the seed's
 * table of errors:
 *
 *   GET  /v1/hello        200 {"message":"hello"}
 *   POST /v1/orders       201 with the order; 400 "Invalid input" (client
 *                         error) for a body that is not a JSON object
 *   GET  /v1/admin        401 "Unauthorized" without a token
 *   GET  /v1/panic        keel_panic in the handler: 500
 *   GET  /v1/crash        a NULL dereference on the event thread: 500
 *   GET  /v1/report/{id}  a NULL dereference on a pool worker: 500
 *
 * then that the server still answers, that the panics were logged with the
 * trace id the client sent, and that the server counted three. Log lines
 * go to stdout; the example prints what it checked and exits 0 only when
 * everything was as described.
 *
 * Run: ./build/examples/example_http_middleware
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include <keel.h>
#include <keel/http.h>

#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define TRACEPARENT "00-" TRACE_ID "-00f067aa0ba902b7-01"

/* ------------------------------------------------------------------------
 * The log: every line to stdout, and kept, so the example can check the
 * panic records
 * ------------------------------------------------------------------------ */

static struct {
	pthread_mutex_t mu;
	char text[64 * 1024];
	size_t len;
} logbuf = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_sink(void *ud, enum keel_log_level level, const char *line,
		     size_t len)
{
	(void)ud;
	(void)level;
	fwrite(line, 1, len, stdout);
	fflush(stdout);
	pthread_mutex_lock(&logbuf.mu);
	if (logbuf.len + len < sizeof(logbuf.text)) {
		memcpy(logbuf.text + logbuf.len, line, len);
		logbuf.len += len;
		logbuf.text[logbuf.len] = '\0';
	}
	pthread_mutex_unlock(&logbuf.mu);
}

/* The number of records (lines) that are JSON objects with level ERROR, a
 * "panic" object and, in some field, the trace id the client sent. */
static int panic_records(void)
{
	char *copy, *line, *save = NULL;
	int n = 0;

	pthread_mutex_lock(&logbuf.mu);
	copy = strdup(logbuf.text);
	pthread_mutex_unlock(&logbuf.mu);
	if (copy == NULL)
		return -1;
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		json_t *rec = json_loads(line, 0, NULL);
		const char *level;

		if (rec == NULL)
			continue;
		level = json_string_value(json_object_get(rec, "level"));
		if (level != NULL && strcmp(level, "ERROR") == 0 &&
		    json_is_object(json_object_get(rec, "panic")) &&
		    strstr(line, "\"" TRACE_ID "\"") != NULL)
			n++;
		json_decref(rec);
	}
	free(copy);
	return n;
}

/* ------------------------------------------------------------------------
 * The service
 * ------------------------------------------------------------------------ */

struct report {
	const char *title; /* NULL: the bug below */
};

/* no_sanitize: under UBSan (make asan) the NULL load is the point here. */
static __attribute__((noinline, no_sanitize("undefined"))) size_t
title_length(const struct report *r)
{
	return strlen(r->title);
}

static void on_hello(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	json_t *v = json_pack("{s:s}", "message", "hello");

	(void)rq;
	(void)ud;
	if (v == NULL)
		keel_panic("out of memory");
	keel_http_json(rs, 200, v);
	json_decref(v);
}

/* A client error is an error, not a panic: keel_http_read_json answers 400
 * with the reason and the position by itself. */
static void on_order(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	json_t *order, *item;

	(void)ud;
	if (keel_http_read_json(rq, rs, 1, &order) != 0)
		return;
	item = json_object_get(order, "item");
	if (!json_is_string(item))
		keel_http_error(rs, 400,
				"Invalid input: \"item\" must be a string");
	else
		keel_http_json(rs, 201, order);
	json_decref(order);
}

static void on_admin(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	(void)ud;
	if (keel_http_header(rq, "Authorization") == NULL) {
		keel_http_error(rs, 401, NULL);
		return;
	}
	keel_http_printf(rs, "welcome\n");
}

static void on_panic(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	(void)rq;
	(void)rs;
	(void)ud;
	keel_panic("order book corrupted");
}

/* volatile: the compiler must not see that the report is NULL. */
static struct report *volatile no_report;

static void on_crash(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_printf(rs, "%zu\n", title_length(no_report));
}

static void on_report(struct keel_http_req *rq, struct keel_http_resp *rs,
		      void *ud)
{
	(void)ud;
	keel_http_printf(rs, "report %s: %zu\n", keel_http_param(rq, "id"),
			 title_length(no_report));
}

/* ------------------------------------------------------------------------
 * The client
 * ------------------------------------------------------------------------ */

struct answer {
	long status;
	char body[4096];
	size_t len;
	char traceparent[128];
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	struct answer *a = ud;
	size_t len = size * n, room = sizeof(a->body) - 1 - a->len;

	if (len > room)
		len = room;
	memcpy(a->body + a->len, data, len);
	a->len += len;
	a->body[a->len] = '\0';
	return size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
	struct answer *a = ud;
	size_t len = size * n;
	static const char name[] = "traceparent:";

	if (len > sizeof(name) &&
	    strncasecmp(data, name, sizeof(name) - 1) == 0) {
		const char *v = data + sizeof(name) - 1;
		size_t vlen = len - (sizeof(name) - 1);

		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
			vlen--;
		if (vlen < sizeof(a->traceparent)) {
			memcpy(a->traceparent, v, vlen);
			a->traceparent[vlen] = '\0';
		}
	}
	return len;
}

static int port;

/* One request; body NULL for GET. 0, or -1 when the request failed. */
static int call(const char *method, const char *path, const char *body,
		struct answer *a)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char url[256];
	CURLcode rc;

	memset(a, 0, sizeof(*a));
	if (c == NULL)
		return -1;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	h = curl_slist_append(h, "traceparent: " TRACEPARENT);
	if (body != NULL)
		h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (body != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
	else
		printf("  %s %s: %s\n", method, path, curl_easy_strerror(rc));
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return rc == CURLE_OK ? 0 : -1;
}

static int failures;

static void check(int ok, const char *what)
{
	printf("  [%s] %s\n", ok ? "ok" : "FAILED", what);
	if (!ok)
		failures++;
}

/* The standard error body: {"code", "message", "timestamp", "trace_id"},
 * with the status' code and reason and the client's trace id. */
static int is_error_body(const struct answer *a, int code, const char *message)
{
	json_t *v = json_loads(a->body, 0, NULL);
	const char *ts, *msg, *trace;
	int ok;

	if (v == NULL)
		return 0;
	ts = json_string_value(json_object_get(v, "timestamp"));
	msg = json_string_value(json_object_get(v, "message"));
	trace = json_string_value(json_object_get(v, "trace_id"));
	ok = json_integer_value(json_object_get(v, "code")) == code &&
	     msg != NULL && strcmp(msg, message) == 0 && ts != NULL &&
	     strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z' &&
	     trace != NULL && strcmp(trace, TRACE_ID) == 0;
	json_decref(v);
	return ok;
}

/* The answer's traceparent continues the client's trace. */
static int continues_trace(const struct answer *a)
{
	return strncmp(a->traceparent, "00-" TRACE_ID "-", 36) == 0;
}

static void expect_500(const char *path, const char *what)
{
	struct answer a;
	char line[256];

	snprintf(line, sizeof(line), "GET %s (%s): 500 in the standard format",
		 path, what);
	check(call("GET", path, NULL, &a) == 0 && a.status == 500 &&
		  is_error_body(&a, 500, "Internal Server Error") &&
		  continues_trace(&a),
	      line);
	printf("      %s\n", a.body);
}

static void run_client(struct keel_http_server *srv)
{
	struct answer a;
	struct keel_http_stats st;

	printf("1. requests that work\n");
	check(
	    call("GET", "/v1/hello", NULL, &a) == 0 && a.status == 200 &&
		strstr(a.body, "\"hello\"") != NULL && continues_trace(&a),
	    "GET /v1/hello: 200 {\"message\":\"hello\"}, traceparent answered");
	check(call("POST", "/v1/orders", "{\"item\":\"book\",\"qty\":2}", &a) ==
		      0 &&
		  a.status == 201 && strstr(a.body, "\"book\"") != NULL,
	      "POST /v1/orders: 201 with the order (on the pool)");

	printf("2. client errors: the handler answers them, nothing panics\n");
	check(call("POST", "/v1/orders", "{\"item\": ", &a) == 0 &&
		  a.status == 400 && is_error_body(&a, 400, "Bad Request") &&
		  strstr(a.body, "\"reason\"") != NULL,
	      "POST /v1/orders with broken JSON: 400 with the reason");
	printf("      %s\n", a.body);
	check(call("POST", "/v1/orders", "{\"item\":42}", &a) == 0 &&
		  a.status == 400 && strstr(a.body, "Invalid input") != NULL,
	      "POST /v1/orders with a bad field: 400 \"Invalid input\"");
	check(call("GET", "/v1/admin", NULL, &a) == 0 && a.status == 401 &&
		  is_error_body(&a, 401, "Unauthorized"),
	      "GET /v1/admin without a token: 401 Unauthorized");
	check(call("GET", "/v1/nowhere", NULL, &a) == 0 && a.status == 404 &&
		  is_error_body(&a, 404, "Not Found"),
	      "GET /v1/nowhere: 404 in the same format");

	printf("3. bugs: the recover middleware turns each into a 500\n");
	expect_500("/v1/panic", "keel_panic");
	expect_500("/v1/crash", "NULL dereference, event thread");
	expect_500("/v1/report/7", "NULL dereference, pool worker");

	printf("4. the server goes on\n");
	check(call("GET", "/v1/hello", NULL, &a) == 0 && a.status == 200,
	      "GET /v1/hello after three crashes: 200");
	keel_http_server_stats(srv, &st);
	printf("      stats: requests %llu, offloaded %llu, panics %llu\n",
	       (unsigned long long)st.requests,
	       (unsigned long long)st.offloaded, (unsigned long long)st.panics);
	check(st.panics == 3, "the server counted 3 panics");
}

/* ------------------------------------------------------------------------
 * Wiring
 * ------------------------------------------------------------------------ */

static int serve(struct keel_logger *lg)
{
	struct keel_http_router *rt = NULL;
	struct keel_http_server *srv = NULL;
	struct keel_http_config cfg;
	int err;

	if ((err = keel_http_router_new(&rt)) != 0 ||
	    (err = keel_http_route(rt, "GET", "/v1/hello", on_hello, NULL,
				   0)) != 0 ||
	    (err = keel_http_route(rt, "POST", "/v1/orders", on_order, NULL,
				   KEEL_HTTP_BLOCKING)) != 0 ||
	    (err = keel_http_route(rt, "GET", "/v1/admin", on_admin, NULL,
				   0)) != 0 ||
	    (err = keel_http_route(rt, "GET", "/v1/panic", on_panic, NULL,
				   0)) != 0 ||
	    (err = keel_http_route(rt, "GET", "/v1/crash", on_crash, NULL,
				   0)) != 0 ||
	    (err = keel_http_route(rt, "GET", "/v1/report/{id}", on_report,
				   NULL, KEEL_HTTP_BLOCKING)) != 0)
		goto out;

	keel_http_config_init(&cfg);
	cfg.port = 0; /* the kernel picks */
	cfg.router = rt;
	cfg.logger = lg;
	if ((err = keel_http_server_new(&cfg, &srv)) != 0)
		goto out;
	/* The outermost first: recover wraps everything, trace gives the log
	 * lines and the error bodies their trace id, then the access log. */
	if ((err = keel_http_use(srv, keel_http_mw_recover, lg)) != 0 ||
	    (err = keel_http_use(srv, keel_http_mw_trace, NULL)) != 0 ||
	    (err = keel_http_use(srv, keel_http_mw_access_log, lg)) != 0 ||
	    (err = keel_http_server_start(srv)) != 0)
		goto out;
	port = keel_http_server_port(srv);
	printf("server on 127.0.0.1:%d\n", port);

	run_client(srv);

	printf("5. the log\n");
	/* stop first: it finishes the requests in flight and their log lines */
	err = keel_http_server_stop(srv, 5 * KEEL_SEC);
	check(err == 0, "the server stopped with nothing in flight");
	check(panic_records() == 3,
	      "3 panic records (ERROR, \"panic\", the client's trace id)");
out:
	if (err != 0 && port == 0)
		fprintf(stderr, "http_middleware: setting up: %s\n",
			strerror(-err));
	keel_http_server_free(srv);
	keel_http_router_free(rt);
	return err;
}

int main(void)
{
	struct keel_log_config lc;
	struct keel_logger *lg;
	int err;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	keel_log_config_init(&lc);
	lc.format = KEEL_LOG_FORMAT_JSON;
	lc.sink = log_sink;
	lc.service = "orders";
	if (keel_log_new(&lc, &lg) != 0) {
		curl_global_cleanup();
		return 1;
	}
	err = serve(lg);
	keel_log_free(lg);
	curl_global_cleanup();
	if (err != 0 || failures != 0) {
		printf("FAILED: %d check(s) did not hold\n", failures);
		return 1;
	}
	printf(
	    "all as described: every failure became an answer, and the server"
	    " kept serving\n");
	return 0;
}
