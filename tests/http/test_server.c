/* KEEL_TEST_LABELS: threads */
/*
 * tests/http/test_server.c - the server core against real clients: libcurl
 * for ordinary requests, raw sockets for malformed and slow ones. Every
 * case starts its own server on 127.0.0.1 (the kernel picks the port) with
 * no middleware unless it says so: what is checked here is what the server
 * itself does (routing answers, the bare 500 of a panic nobody recovered,
 * limits, offloading, the graceful stop, TLS).
 */
#include "http/http_client.h"

#include <sys/stat.h>

/* ------------------------------------------------------------------------
 * Handlers
 * ------------------------------------------------------------------------ */

static void h_hello(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_set_header(rs, "Content-Type", "text/plain");
	keel_http_printf(rs, "hello");
}

/* Everything a handler can read, as JSON. */
static void h_echo(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	const char *q_a = keel_http_query(rq, "a");
	const char *q_flag = keel_http_query(rq, "flag");
	const char *hx = keel_http_header(rq, "x-test");
	size_t blen;
	const char *body = keel_http_body(rq, &blen);
	json_t *o = json_pack(
	    "{s:s, s:s, s:s?, s:s, s:s?, s:s?, s:s?, s:s?, s:s#, s:b, s:s?, "
	    "s:b, s:b}",
	    "method", keel_http_method(rq), "path", keel_http_path(rq), "route",
	    keel_http_route_pattern(rq), "remote", keel_http_remote_addr(rq),
	    "name", keel_http_param(rq, "name"), "a", q_a, "flag", q_flag,
	    "x_test", hx, "body", body, (int)blen, "offloaded",
	    keel_http_offloaded(rq), "missing", keel_http_query(rq, "missing"),
	    "started", keel_http_started(rq) > 0, "nohdr",
	    keel_http_header(rq, "x-none") == NULL);

	(void)ud;
	CHECK(o != NULL);
	CHECK_INT(keel_http_json(rs, 200, o), ==, 0);
	json_decref(o);
}

static void h_panic(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_printf(rs, "never sent");
	keel_panic("handler exploded");
}

void nil_site(struct keel_http_resp *rs);
static int *volatile nil_ptr;

KEEL_TEST_NO_SANITIZE void nil_site(struct keel_http_resp *rs)
{
	keel_http_printf(rs, "%d", *nil_ptr);
}

static void h_nil(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)ud;
	nil_site(rs);
}

static void h_commit_panic(struct keel_http_req *rq, struct keel_http_resp *rs,
			   void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_write_header(rs, 200);
	keel_http_printf(rs, "partial");
	keel_panic("after the commit");
}

static void h_json(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	json_t *v;

	if (keel_http_read_json(rq, rs, ud != NULL, &v) < 0)
		return;
	keel_http_json(rs, 201, v);
	json_decref(v);
}

/* Sleeps ud milliseconds (an offloaded, blocking handler). */
static void h_slow(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	(void)rq;
	usleep((useconds_t)(uintptr_t)ud * 1000);
	keel_http_printf(rs, "slow %s",
			 keel_http_offloaded(rq) ? "pool" : "event");
}

/* Blocks until the case lets it go (held_release), 10 s at most: an
 * offloaded handler that overruns a stop however slow the machine. */
static int held_release;

static void h_held(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	(void)ud;
	for (int i = 0; i < 1000 && !__atomic_load_n(&held_release,
						      __ATOMIC_ACQUIRE);
	     i++)
		usleep(10 * 1000);
	keel_http_printf(rs, "held %s",
			 keel_http_offloaded(rq) ? "pool" : "event");
}

/* 8 MiB of body. */
static void h_big(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	static char chunk[65536];
	int i;

	(void)rq;
	(void)ud;
	memset(chunk, 'x', sizeof(chunk));
	for (i = 0; i < 128; i++)
		CHECK_INT(keel_http_write(rs, chunk, sizeof(chunk)), ==, 0);
}

/* A logger that keeps its lines, to see what the server logged. */
static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static char cap_buf[1 << 16];
static size_t cap_len;

static void cap_sink(void *ud, enum keel_log_level level, const char *line,
		     size_t len)
{
	(void)ud;
	(void)level;
	pthread_mutex_lock(&cap_mu);
	if (cap_len + len < sizeof(cap_buf)) {
		memcpy(cap_buf + cap_len, line, len);
		cap_len += len;
		cap_buf[cap_len] = '\0';
	}
	pthread_mutex_unlock(&cap_mu);
}

static struct keel_logger *cap_logger(void)
{
	struct keel_log_config lc;
	struct keel_logger *lg;

	keel_log_config_init(&lc);
	lc.format = KEEL_LOG_FORMAT_JSON;
	lc.sink = cap_sink;
	lc.level = KEEL_LOG_DEBUG;
	CHECK_INT(keel_log_new(&lc, &lg), ==, 0);
	return lg;
}

static struct keel_logger *test_lg;

/* For the cases that crash handlers on several threads at once: their
 * panic records name stack frames on several threads at once too. */
static struct keel_logger *load_logger(void)
{
	return cap_logger();
}

static void cfg_cap(struct keel_http_config *c)
{
	c->logger = test_lg;
}

static struct keel_http_router *std_router(void)
{
	struct keel_http_router *rt;

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/hello", h_hello, NULL, 0), ==,
		  0);
	CHECK_INT(keel_http_route(rt, "GET", "/echo/{name}", h_echo, NULL, 0),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "POST", "/echo/{name}", h_echo, NULL, 0),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool/{name}", h_echo, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/panic", h_panic, NULL, 0), ==,
		  0);
	CHECK_INT(keel_http_route(rt, "GET", "/nil", h_nil, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool-panic", h_panic, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool-nil", h_nil, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/commit-panic", h_commit_panic,
				  NULL, 0),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "POST", "/json", h_json, NULL, 0), ==, 0);
	CHECK_INT(
	    keel_http_route(rt, "POST", "/json-object", h_json, (void *)1, 0),
	    ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/slow", h_slow, (void *)300,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/held", h_held, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/big", h_big, NULL, 0), ==, 0);
	return rt;
}

/* libmicrohttpd reports a request complete just after its last byte is
 * sent: a client can see the response a moment before active drops. */
static void wait_idle(struct keel_http_server *s)
{
	struct keel_http_stats st;
	double t0 = keel_test_now();

	do {
		keel_http_server_stats(s, &st);
		if (st.active == 0)
			return;
		usleep(2000);
	} while (keel_test_now() - t0 < 10);
	KEEL_TEST_FAIL("%llu requests still active",
		       (unsigned long long)st.active);
}

static void srv_done(struct keel_http_server *s, struct keel_http_router *rt)
{
	keel_http_server_free(s);
	keel_http_router_free(rt);
	if (test_lg != NULL) {
		keel_log_free(test_lg);
		test_lg = NULL;
	}
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Basics
 * ------------------------------------------------------------------------ */

TEST(hello)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	struct keel_http_stats st;
	struct hres r;
	char ct[64];

	http_get(keel_http_server_port(s), "/hello", &r);
	CHECK_INT(r.rc, ==, CURLE_OK);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(r.body, "hello");
	CHECK_STR(hres_header_get(&r, "Content-Type", ct, sizeof(ct)),
		  "text/plain");
	hres_free(&r);
	wait_idle(s);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.requests, ==, 1);
	CHECK_INT(st.active, ==, 0);
	CHECK_INT(keel_http_server_stop(s, KEEL_SEC), ==, 0);
	CHECK_INT(keel_http_server_stop(s, KEEL_SEC), ==, 0); /* idempotent */
	srv_done(s, rt);
}

static void check_echo(const char *body, const char *path, const char *name,
		       int offloaded)
{
	json_t *o = json_loads(body, 0, NULL);

	CHECK(o != NULL);
	CHECK_STR(json_string_value(json_object_get(o, "method")), "GET");
	CHECK_STR(json_string_value(json_object_get(o, "path")), path);
	CHECK_STR(json_string_value(json_object_get(o, "name")), name);
	CHECK_STR(json_string_value(json_object_get(o, "a")), "1&2=3");
	CHECK_STR(json_string_value(json_object_get(o, "flag")), "");
	CHECK(json_is_null(json_object_get(o, "missing")));
	CHECK_STR(json_string_value(json_object_get(o, "x_test")),
		  "yes please");
	CHECK_STR(json_string_value(json_object_get(o, "remote")), "127.0.0.1");
	CHECK(json_is_true(json_object_get(o, "started")));
	CHECK(json_is_true(json_object_get(o, "nohdr")));
	CHECK_INT(json_is_true(json_object_get(o, "offloaded")), ==, offloaded);
	json_decref(o);
}

TEST(params_query_headers)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	const char *hdrs[] = {"X-Test: yes please", NULL};
	struct hres r;
	json_t *o;

	/* Event thread: values read from the connection. */
	http_req(keel_http_server_port(s), "GET",
		 "/echo/b%20c?a=1%262%3D3&flag", NULL, hdrs, &r);
	CHECK_INT(r.status, ==, 200);
	check_echo(r.body, "/echo/b c", "b c", 0);
	hres_free(&r);
	/* Pool: the same, read from the copies. */
	http_req(keel_http_server_port(s), "GET",
		 "/pool/%C3%A9t%C3%A9?flag&a=1%262%3D3", NULL, hdrs, &r);
	CHECK_INT(r.status, ==, 200);
	check_echo(r.body, "/pool/\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9", 1);
	hres_free(&r);
	/* "%00" is not decoded (it would cut the path short); '+' is a
	 * space in the query only; bad escapes stay as they are. */
	http_req(keel_http_server_port(s), "GET",
		 "/echo/adm%00in+x%zz?a=1+2%2B%00&flag", NULL, hdrs, &r);
	CHECK_INT(r.status, ==, 200);
	o = json_loads(r.body, 0, NULL);
	CHECK(o != NULL);
	CHECK_STR(json_string_value(json_object_get(o, "path")), "/echo/adm%00in+x%zz");
	CHECK_STR(json_string_value(json_object_get(o, "name")), "adm%00in+x%zz");
	CHECK_STR(json_string_value(json_object_get(o, "a")), "1 2+%00");
	json_decref(o);
	hres_free(&r);
	/* A body, and the route pattern. */
	http_req(keel_http_server_port(s), "POST", "/echo/x", "abc\0def", NULL,
		 &r);
	CHECK_INT(r.status, ==, 200);
	o = json_loads(r.body, 0, NULL);
	CHECK(o != NULL);
	CHECK_STR(json_string_value(json_object_get(o, "body")), "abc");
	CHECK_STR(json_string_value(json_object_get(o, "route")),
		  "/echo/{name}");
	CHECK_STR(json_string_value(json_object_get(o, "method")), "POST");
	json_decref(o);
	hres_free(&r);
	srv_done(s, rt);
}

TEST(not_found_and_method_not_allowed)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	struct keel_http_stats st;
	struct hres r;
	char allow[128];
	json_t *o;

	http_get(keel_http_server_port(s), "/nope", &r);
	o = check_error_body(&r, 404);
	CHECK(json_is_null(json_object_get(o, "trace_id")));
	CHECK(json_object_get(o, "reason") == NULL);
	json_decref(o);
	hres_free(&r);

	http_req(keel_http_server_port(s), "DELETE", "/hello", NULL, NULL, &r);
	o = check_error_body(&r, 405);
	json_decref(o);
	CHECK(hres_header_get(&r, "Allow", allow, sizeof(allow)) != NULL);
	CHECK_CONTAINS(allow, "GET");
	CHECK_CONTAINS(allow, "HEAD");
	hres_free(&r);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.requests, ==, 2);
	srv_done(s, rt);
}

TEST(options_and_head)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	struct hres r;
	char allow[128], cl[32], buf[4096];
	int closed;
	size_t n;

	http_req(keel_http_server_port(s), "OPTIONS", "/echo/x", NULL, NULL,
		 &r);
	CHECK_INT(r.status, ==, 204);
	CHECK(hres_header_get(&r, "Allow", allow, sizeof(allow)) != NULL);
	CHECK_CONTAINS(allow, "GET");
	CHECK_CONTAINS(allow, "POST");
	CHECK(r.len == 0);
	hres_free(&r);

	http_req(keel_http_server_port(s), "HEAD", "/hello", NULL, NULL, &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(hres_header_get(&r, "Content-Length", cl, sizeof(cl)), "5");
	hres_free(&r);
	/* On the wire: the headers and not one byte of body. */
	n = raw_exchange(
	    keel_http_server_port(s),
	    "HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 52,
	    buf, sizeof(buf), 2000, &closed);
	CHECK(n > 4);
	CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	CHECK_INT(strstr(buf, "\r\n\r\n") + 4 - buf, ==, n);
	srv_done(s, rt);
}

/* ------------------------------------------------------------------------
 * Panics that nobody recovered
 * ------------------------------------------------------------------------ */

TEST(panic_is_bare_500)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	struct keel_http_stats st;
	const char *paths[] = {"/panic", "/nil", "/pool-panic", "/pool-nil"};
	struct hres r;
	json_t *o;
	size_t i;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_cap);
	for (i = 0; i < 4; i++) {
		http_get(keel_http_server_port(s), paths[i], &r);
		o = check_error_body(&r, 500);
		CHECK(json_object_get(o, "reason") == NULL);
		json_decref(o);
		hres_free(&r);
		/* The thread that crashed goes on serving. */
		http_get(keel_http_server_port(s), "/hello", &r);
		CHECK_INT(r.status, ==, 200);
		CHECK_STR(r.body, "hello");
		hres_free(&r);
	}
	keel_http_server_stats(s, &st);
	CHECK_INT(st.panics, ==, 4);
	CHECK_INT(st.requests, ==, 8);
	CHECK_INT(st.offloaded, ==, 2);
	pthread_mutex_lock(&cap_mu);
	CHECK_CONTAINS(cap_buf, "handler exploded");
	CHECK_CONTAINS(cap_buf, "nil pointer dereference");
	CHECK_CONTAINS(cap_buf, "\"route\":\"/pool-nil\"");
	pthread_mutex_unlock(&cap_mu);
	srv_done(s, rt);
}

TEST(committed_then_panic_closes)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	struct keel_http_stats st;
	struct hres r;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_cap);
	http_get(keel_http_server_port(s), "/commit-panic", &r);
	CHECK_INT(r.rc, ==, CURLE_GOT_NOTHING);
	CHECK(r.len == 0);
	hres_free(&r);
	http_get(keel_http_server_port(s), "/hello", &r);
	CHECK_INT(r.status, ==, 200);
	hres_free(&r);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.panics, ==, 1);
	CHECK_INT(st.requests, ==, 1);
	srv_done(s, rt);
}

struct load_arg {
	uint16_t port;
	int id;
	int wrong;
};

static void *load_thread(void *p)
{
	struct load_arg *a = p;
	static const char *const paths[] = {"/hello", "/panic", "/echo/x",
					    "/hello", "/pool/y"};
	int i;

	for (i = 0; i < 200; i++) {
		/* one in five crashes, alternating panic and fault, on the
		 * event thread and on the pool */
		int k = (i + a->id) % 10;
		const char *path = k == 1   ? "/panic"
				   : k == 6 ? (i % 2 ? "/nil" : "/pool-nil")
					    : paths[(k % 5 == 1) ? 0 : k % 5];
		int want = (k == 1 || k == 6) ? 500 : 200;
		struct hres r;

		http_get(a->port, path, &r);
		if (r.status != want)
			a->wrong++;
		hres_free(&r);
	}
	return NULL;
}

TEST(crashes_under_concurrent_load)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	struct keel_http_stats st;
	struct load_arg a[4];
	pthread_t th[4];
	int i;

	test_lg = load_logger();
	s = srv_start(rt, cfg_cap);
	for (i = 0; i < 4; i++) {
		a[i] = (struct load_arg){keel_http_server_port(s), i, 0};
		CHECK_INT(pthread_create(&th[i], NULL, load_thread, &a[i]), ==,
			  0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(a[i].wrong, ==, 0);
	}
	wait_idle(s);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.requests, ==, 800);
	CHECK_INT(st.panics, ==, 160);
	CHECK_INT(st.active, ==, 0);
	srv_done(s, rt);
}

/* ------------------------------------------------------------------------
 * Malformed and hostile requests
 * ------------------------------------------------------------------------ */

static void cfg_limits(struct keel_http_config *c)
{
	c->max_header_size = 2048;
	c->max_body_size = 1000;
	c->idle_timeout = KEEL_SEC;
	c->logger = test_lg;
}

TEST(malformed_requests)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	char buf[8192];
	struct hres r;
	int closed;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_limits);
	/* A request line that is not one. */
	raw_exchange(keel_http_server_port(s), "GARBAGE\r\n\r\n", 11, buf,
		     sizeof(buf), 3000, &closed);
	/* libmicrohttpd 0.9.75 hangs up without an answer */
	CHECK_STR(buf, "");
	CHECK(closed);
	/* HTTP/1.1 without Host: the standard 400, closed. */
	raw_exchange(keel_http_server_port(s), "GET /hello HTTP/1.1\r\n\r\n",
		     23, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0);
	CHECK_CONTAINS(
	    buf, "\"reason\":\"an HTTP/1.1 request needs a Host header\"");
	CHECK(closed);
	/* HTTP/1.0 needs none. */
	raw_exchange(keel_http_server_port(s), "GET /hello HTTP/1.0\r\n\r\n",
		     23, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	/* An unknown HTTP version. */
	raw_exchange(keel_http_server_port(s),
		     "GET /hello HTTP/9.1\r\nHost: x\r\n\r\n", 32, buf,
		     sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 505", 12) == 0); /* libmicrohttpd's */
	CHECK(closed);
	/* A Content-Length that is not a number. */
	raw_exchange(
	    keel_http_server_port(s),
	    "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n{}",
	    55, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0);
	/* The server is fine. */
	http_get(keel_http_server_port(s), "/hello", &r);
	CHECK_INT(r.status, ==, 200);
	hres_free(&r);
	srv_done(s, rt);
}

/* req (n bytes) on a new connection is answered 200. */
static void expect_served(uint16_t port, const char *req, size_t n)
{
	static char buf[8192];
	int closed;

	raw_exchange(port, req, n, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
}

/* req (n bytes) on a new connection gets the server's JSON 431 and the
 * connection is closed after it. */
static void expect_json_431(uint16_t port, const char *req, size_t n)
{
	static char buf[8192];
	int closed;
	json_t *o;

	raw_exchange(port, req, n, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 431", 12) == 0);
	CHECK(closed);
	o = json_loads(strstr(buf, "\r\n\r\n") + 4, 0, NULL);
	CHECK(o != NULL);
	CHECK_INT(json_integer_value(json_object_get(o, "code")), ==, 431);
	json_decref(o);
}

TEST(header_limit)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	static char req[200000], buf[8192];
	struct keel_http_stats st;
	int closed, n;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_limits);
	/* Just under the limit: served. */
	n = snprintf(req, sizeof(req),
		     "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: "
		     "%01900d\r\nConnection: close\r\n\r\n",
		     0);
	expect_served(keel_http_server_port(s), req, (size_t)n);
	/* Over it, within what libmicrohttpd buffers: the standard 431. */
	n = snprintf(req, sizeof(req),
		     "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: %03000d\r\n\r\n",
		     0);
	expect_json_431(keel_http_server_port(s), req, (size_t)n);
	/* Far over it: libmicrohttpd's own answer (its buffer is full). */
	n = snprintf(
	    req, sizeof(req),
	    "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: %0150000d\r\n\r\n", 0);
	raw_exchange(keel_http_server_port(s), req, (size_t)n, buf, sizeof(buf),
		     3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 431", 12) == 0);
	CHECK(closed);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.rejected, >=, 1);
	srv_done(s, rt);
}

/* What the server counts against max_header_size: the request line's
 * three parts with 4 bytes, each header's name and value with 4 (as they
 * are on the wire: ": " and CRLF). A request of many_headers has
 * HDR_BASE (GET /hello HTTP/1.1, Host: x) and HDR_CLOSE (Connection:
 * close) besides its X-H headers. */
#define HDR_BASE (3 + 6 + 8 + 4 + 4 + 1 + 4)
#define HDR_CLOSE (10 + 5 + 4)

/* A request whose headers, as counted, come to at most `upto`: X-H
 * headers of `each` bytes each ("X-H-0001: 000...0" and CRLF), as many as
 * fit. */
static size_t many_headers(char *req, size_t cap, size_t each, size_t upto)
{
	size_t len, counted = HDR_BASE + HDR_CLOSE;
	int i = 0;

	len = (size_t)snprintf(req, cap, "GET /hello HTTP/1.1\r\nHost: x\r\n");
	while (counted + each <= upto && len + each + 64 < cap) {
		len += (size_t)snprintf(req + len, cap - len, "X-H-%04d: %0*d\r\n",
					i++, (int)(each - 12), 0);
		counted += each;
	}
	len += (size_t)snprintf(req + len, cap - len, "Connection: close\r\n\r\n");
	return len;
}

/* A request with one header, name, whose value takes it to upto bytes as
 * the server counts them (with many_headers' base). */
static size_t one_header(char *req, size_t cap, const char *name, size_t upto)
{
	size_t value = upto - HDR_BASE - HDR_CLOSE - strlen(name) - 4;
	int n = snprintf(req, cap, "GET /hello HTTP/1.1\r\nHost: x\r\n%s: %0*d"
				   "\r\nConnection: close\r\n\r\n",
			 name, (int)value, 0);

	CHECK(n > 0 && (size_t)n < cap);
	return (size_t)n;
}

/* The default limit (8 KiB) in the pool the server gives libmicrohttpd
 * for it: requests up to the limit are served, in one big header (a
 * cookie too) or in a hundred (Apache's and Tomcat's limit on their
 * number); over it, the standard 431. Hundreds of small headers do not
 * fit in the pool with their list: libmicrohttpd's own 431. */
TEST(header_limit_default)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	static char req[32768], buf[8192];
	const size_t limit = 8192;
	size_t n, each[] = { limit - HDR_BASE - HDR_CLOSE, 81 };
	unsigned i;
	int closed;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_cap);
	/* One header that takes the request to the limit exactly; a hundred
	 * of 81 bytes (8,149 of it). */
	for (i = 0; i < sizeof(each) / sizeof(each[0]); i++) {
		n = many_headers(req, sizeof(req), each[i], limit);
		expect_served(keel_http_server_port(s), req, n);
	}
	/* A byte over: the standard 431. */
	n = many_headers(req, sizeof(req), limit + 1 - HDR_BASE - HDR_CLOSE,
			 limit + 1);
	expect_json_431(keel_http_server_port(s), req, n);
	/* The same with a cookie, which libmicrohttpd also copies into the
	 * pool to parse it. */
	n = one_header(req, sizeof(req), "Cookie", limit);
	expect_served(keel_http_server_port(s), req, n);
	n = one_header(req, sizeof(req), "Cookie", limit + 1);
	expect_json_431(keel_http_server_port(s), req, n);
	/* 254 headers of 32 bytes, under the limit: libmicrohttpd's 431. */
	n = many_headers(req, sizeof(req), 32, limit);
	raw_exchange(keel_http_server_port(s), req, n, buf, sizeof(buf), 3000,
		     &closed);
	CHECK(strncmp(buf, "HTTP/1.1 431", 12) == 0);
	CHECK(closed);
	/* The server is fine. */
	n = many_headers(req, sizeof(req), 81, 1024);
	expect_served(keel_http_server_port(s), req, n);
	srv_done(s, rt);
}

TEST(body_limit)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	static char req[20000], buf[8192], body[5000];
	struct keel_http_stats st;
	struct hres r;
	int closed, n;
	json_t *o;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_limits);
	memset(body, '1', sizeof(body) - 1);
	/* Declared too large: answered before the body is read. */
	n = snprintf(
	    req, sizeof(req),
	    "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 4999\r\n\r\n%s",
	    body);
	raw_exchange(keel_http_server_port(s), req, (size_t)n, buf, sizeof(buf),
		     3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 413", 12) == 0);
	CHECK(closed);
	o = json_loads(strstr(buf, "\r\n\r\n") + 4, 0, NULL);
	CHECK(o != NULL);
	CHECK_STR(json_string_value(json_object_get(o, "message")),
		  "Content Too Large");
	json_decref(o);
	/* Chunked, grows over the limit: read, dropped, 413, closed. */
	n = snprintf(req, sizeof(req),
		     "POST /json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
		     "chunked\r\n\r\n"
		     "258\r\n%.600s\r\n258\r\n%.600s\r\n0\r\n\r\n",
		     body, body);
	raw_exchange(keel_http_server_port(s), req, (size_t)n, buf, sizeof(buf),
		     3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 413", 12) == 0);
	CHECK(closed);
	/* Far past it: cut off without an answer once 1 MiB more than
	 * the limit was read. */
	{
		static char chunk[70000];
		int fd = raw_connect(keel_http_server_port(s)), i;
		const char *hdr = "POST /json HTTP/1.1\r\nHost: x\r\n"
				  "Transfer-Encoding: chunked\r\n\r\n";

		n = snprintf(chunk, 16, "10000\r\n");
		memset(chunk + n, 'a', 0x10000);
		memcpy(chunk + n + 0x10000, "\r\n", 2);
		raw_write(fd, hdr, strlen(hdr));
		for (i = 0; i < 40; i++) /* 2.5 MiB */
			raw_write(fd, chunk, (size_t)n + 0x10000 + 2);
		raw_write(fd, "0\r\n\r\n", 5); /* complete: no 413 though */
		raw_read(fd, buf, sizeof(buf), 3000, &closed);
		CHECK(closed);
		CHECK(strstr(buf, "HTTP/1.1") == NULL);
		close(fd);
	}
	/* At the limit: served (a JSON string of 1000 bytes). */
	body[0] = body[999] = '"';
	body[1000] = '\0';
	http_req(keel_http_server_port(s), "POST", "/json", body, NULL, &r);
	CHECK_INT(r.status, ==, 201);
	hres_free(&r);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.rejected, ==, 3);
	srv_done(s, rt);
}

TEST(content_length_lies)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	char buf[8192];
	double t0;
	int closed;
	const char *second;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_limits);
	/* Says 100, sends 2, then silence: closed after the idle timeout,
	 * no handler ran. */
	t0 = keel_test_now();
	raw_exchange(
	    keel_http_server_port(s),
	    "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
	    55, buf, sizeof(buf), 5000, &closed);
	CHECK(closed);
	CHECK_STR(buf, "");
	CHECK(keel_test_now() - t0 < 4.5);
	/* Says 2, sends more: the body is the 2 bytes, and what follows is
	 * read as the next request on the connection. */
	raw_exchange(
	    keel_http_server_port(s),
	    "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
	    "GET /hello HTTP/1.0\r\n\r\n",
	    76, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 201", 12) == 0);
	CHECK_CONTAINS(buf, "\r\n\r\n{}HTTP/1.1 ");
	second = strstr(buf + 12, "HTTP/1.1 ");
	CHECK(second != NULL);
	CHECK(strncmp(second, "HTTP/1.1 200", 12) == 0);
	CHECK(closed);
	/* ... and garbage after the body: answered, then hung up on. */
	raw_exchange(keel_http_server_port(s),
		     "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: "
		     "2\r\n\r\n{}XYZ\r\n\r\n",
		     58, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 201", 12) == 0);
	CHECK(strstr(buf + 12, "HTTP/1.1 ") == NULL);
	CHECK(closed);
	srv_done(s, rt);
}

TEST(slow_client_closed_after_idle_timeout)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	const char *req = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[256];
	int fd, closed = 0, sent = 0;
	double t0;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_limits);
	fd = raw_connect(keel_http_server_port(s));
	CHECK(fd >= 0);
	t0 = keel_test_now();
	/* One byte, then a pause longer than the 1 s timeout, and so on:
	 * the server hangs up before the request is complete. */
	while (!closed && keel_test_now() - t0 < 6) {
		raw_write(fd, req + sent, 1);
		sent++;
		raw_read(fd, buf, sizeof(buf), 1500, &closed);
	}
	CHECK(closed);
	CHECK_INT(sent, <=, 2);
	CHECK_STR(buf, "");
	close(fd);
	srv_done(s, rt);
}

TEST(client_gone_mid_response_no_sigpipe)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	struct linger lg = {1, 0};
	char buf[4096];
	struct hres r;
	int i, fd, closed;

	/* SIGPIPE is left to libmicrohttpd: the default action (kill the
	 * process) stays in place here, so a stray one fails this case. */
	signal(SIGPIPE, SIG_DFL);
	test_lg = cap_logger();
	s = srv_start(rt, cfg_cap);
	for (i = 0; i < 5; i++) {
		fd = raw_connect(keel_http_server_port(s));
		raw_write(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", 30);
		raw_read(fd, buf, sizeof(buf), 2000, &closed);
		CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd); /* RST with 8 MiB still to send */
	}
	usleep(200 * 1000);
	http_get(keel_http_server_port(s), "/hello", &r);
	CHECK_INT(r.status, ==, 200);
	hres_free(&r);
	http_get(keel_http_server_port(s), "/big", &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_INT(r.len, ==, 8 * 1024 * 1024);
	hres_free(&r);
	/* libmicrohttpd's message went to the server's logger, as routine */
	pthread_mutex_lock(&cap_mu);
	CHECK_CONTAINS(cap_buf, "\"level\":\"DEBUG\",\"module\":\"http\","
				"\"message\":\"Failed to send the response body");
	pthread_mutex_unlock(&cap_mu);
	srv_done(s, rt);
}

/* ------------------------------------------------------------------------
 * JSON
 * ------------------------------------------------------------------------ */

TEST(read_json)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	struct hres r;
	json_t *o;

	http_req(keel_http_server_port(s), "POST", "/json", "{\"a\": }", NULL,
		 &r);
	o = check_error_body(&r, 400);
	CHECK_CONTAINS(json_string_value(json_object_get(o, "reason")),
		       "invalid JSON at line 1, column 7: ");
	json_decref(o);
	hres_free(&r);

	http_req(keel_http_server_port(s), "POST", "/json",
		 "{\"a\":1,\n\"a\":2}", NULL, &r);
	o = check_error_body(&r, 400);
	CHECK_CONTAINS(json_string_value(json_object_get(o, "reason")),
		       "invalid JSON at line 2");
	CHECK_CONTAINS(json_string_value(json_object_get(o, "reason")),
		       "duplicate");
	json_decref(o);
	hres_free(&r);

	http_req(keel_http_server_port(s), "POST", "/json", "", NULL, &r);
	o = check_error_body(&r, 400);
	CHECK_CONTAINS(json_string_value(json_object_get(o, "reason")),
		       "empty");
	json_decref(o);
	hres_free(&r);

	http_req(keel_http_server_port(s), "POST", "/json-object", "[1,2]",
		 NULL, &r);
	o = check_error_body(&r, 400);
	CHECK_CONTAINS(json_string_value(json_object_get(o, "reason")),
		       "object");
	json_decref(o);
	hres_free(&r);

	http_req(keel_http_server_port(s), "POST", "/json-object",
		 "{\"k\": [1, \"\\u00e9\"]}", NULL, &r);
	CHECK_INT(r.status, ==, 201);
	CHECK_STR(r.body, "{\"k\":[1,\"\xc3\xa9\"]}");
	hres_free(&r);
	srv_done(s, rt);
}

/* ------------------------------------------------------------------------
 * Offloading and the graceful stop
 * ------------------------------------------------------------------------ */

struct bg_req {
	uint16_t port;
	const char *path;
	struct hres r;
	double done_at;
	pthread_t th;
};

static void *bg_run(void *p)
{
	struct bg_req *b = p;

	http_get(b->port, b->path, &b->r);
	b->done_at = keel_test_now();
	return NULL;
}

static void bg_start(struct bg_req *b, uint16_t port, const char *path)
{
	memset(b, 0, sizeof(*b));
	b->port = port;
	b->path = path;
	CHECK_INT(pthread_create(&b->th, NULL, bg_run, b), ==, 0);
}

static void wait_active(struct keel_http_server *s, uint64_t n)
{
	struct keel_http_stats st;
	double t0 = keel_test_now();

	do {
		keel_http_server_stats(s, &st);
		if (st.active >= n)
			return;
		usleep(5000);
	} while (keel_test_now() - t0 < 10);
	KEEL_TEST_FAIL("never %llu active requests", (unsigned long long)n);
}

TEST(offloaded_handler_does_not_block_others)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	struct bg_req slow;
	double last_fast = 0;
	struct hres r;
	int i;

	bg_start(&slow, keel_http_server_port(s), "/slow");
	wait_active(s, 1);
	for (i = 0; i < 20; i++) {
		http_get(keel_http_server_port(s), "/hello", &r);
		CHECK_INT(r.status, ==, 200);
		hres_free(&r);
		last_fast = keel_test_now();
	}
	pthread_join(slow.th, NULL);
	CHECK_INT(slow.r.status, ==, 200);
	CHECK_STR(slow.r.body, "slow pool");
	/* All 20 were answered while the slow one was still running. */
	CHECK(last_fast < slow.done_at);
	hres_free(&slow.r);
	srv_done(s, rt);
}

TEST(graceful_stop_finishes_in_flight)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	uint16_t port = keel_http_server_port(s);
	struct keel_http_stats st;
	struct bg_req b[5];
	int i, fd;

	for (i = 0; i < 5; i++)
		bg_start(&b[i], port, "/slow");
	wait_active(s, 5);
	CHECK_INT(keel_http_server_stop(s, 5 * KEEL_SEC), ==, 0);
	for (i = 0; i < 5; i++) {
		pthread_join(b[i].th, NULL);
		CHECK_INT(b[i].r.rc, ==, CURLE_OK);
		CHECK_INT(b[i].r.status, ==, 200);
		CHECK_STR(b[i].r.body, "slow pool");
		hres_free(&b[i].r);
	}
	fd = raw_connect(port);
	CHECK_INT(fd, ==, -ECONNREFUSED);
	keel_http_server_stats(s, &st);
	CHECK_INT(st.requests, ==, 5);
	CHECK_INT(st.offloaded, ==, 5);
	CHECK_INT(keel_http_server_start(s), ==, -EBUSY);
	srv_done(s, rt);
}

struct stop_arg {
	struct keel_http_server *s;
	int64_t timeout;
	int rc;
};

static void *stop_run(void *p)
{
	struct stop_arg *a = p;

	a->rc = keel_http_server_stop(a->s, a->timeout);
	return NULL;
}

TEST(keepalive_request_during_stop_gets_503)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	uint16_t port = keel_http_server_port(s);
	const char *req = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
	struct stop_arg sa = {s, 5 * KEEL_SEC, 1};
	struct bg_req slow;
	char buf[4096], conn_hdr[32];
	struct hres fake;
	pthread_t th;
	int fd, closed;
	json_t *o;

	fd = raw_connect(port);
	raw_write(fd, req, strlen(req));
	raw_read(fd, buf, sizeof(buf), 300, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	CHECK(!closed);
	bg_start(&slow, port, "/slow");
	wait_active(s, 1);
	CHECK_INT(pthread_create(&th, NULL, stop_run, &sa), ==, 0);
	usleep(100 * 1000); /* stop is waiting for /slow */
	raw_write(fd, req, strlen(req));
	raw_read(fd, buf, sizeof(buf), 3000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 503", 12) == 0);
	CHECK(closed);
	/* The body and the Connection header, through the same parser. */
	memset(&fake, 0, sizeof(fake));
	snprintf(fake.headers, sizeof(fake.headers), "%s", buf);
	CHECK_STR(
	    hres_header_get(&fake, "Connection", conn_hdr, sizeof(conn_hdr)),
	    "close");
	o = json_loads(strstr(buf, "\r\n\r\n") + 4, 0, NULL);
	CHECK(o != NULL);
	CHECK_INT(json_integer_value(json_object_get(o, "code")), ==, 503);
	json_decref(o);
	close(fd);
	pthread_join(th, NULL);
	CHECK_INT(sa.rc, ==, 0);
	pthread_join(slow.th, NULL);
	CHECK_INT(slow.r.status, ==, 200);
	hres_free(&slow.r);
	srv_done(s, rt);
}

TEST(stop_timeout_cuts_overrunning_handler)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s = srv_start(rt, NULL);
	struct bg_req slow;
	double t0;

	bg_start(&slow, keel_http_server_port(s), "/held");
	wait_active(s, 1);
	t0 = keel_test_now();
	CHECK_INT(keel_http_server_stop(s, 200 * KEEL_MSEC), ==, -ETIMEDOUT);
	CHECK(keel_test_now() - t0 < 1.4); /* did not wait for the handler */
	CHECK_INT(keel_http_server_stop(s, KEEL_SEC), ==, -ETIMEDOUT);
	__atomic_store_n(&held_release, 1, __ATOMIC_RELEASE);
	pthread_join(slow.th, NULL);
	CHECK(slow.r.rc != CURLE_OK); /* connection closed, no response */
	hres_free(&slow.r);
	/* free waits for the task, which still uses the server */
	srv_done(s, rt);
}

/* ------------------------------------------------------------------------
 * TLS, addresses, configuration
 * ------------------------------------------------------------------------ */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	static char tmp[16384];
	size_t n;

	if (f == NULL)
		return NULL;
	n = fread(tmp, 1, sizeof(tmp) - 1, f);
	fclose(f);
	tmp[n] = '\0';
	return strdup(tmp);
}

static char *tls_cert, *tls_key;

static void cfg_tls(struct keel_http_config *c)
{
	c->tls_cert_pem = tls_cert;
	c->tls_key_pem = tls_key;
}

TEST(tls)
{
	char dir[] = "/tmp/keel-tls-XXXXXX", cmd[1024], path[128], url[128];
	struct keel_http_router *rt;
	struct keel_http_server *s;
	struct hres r;
	CURL *c;

	if (system("command -v openssl >/dev/null 2>&1") != 0)
		KEEL_TEST_SKIP("the openssl command is not installed");
	CHECK(mkdtemp(dir) != NULL);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
		 "/CN=localhost "
		 "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
		 dir, dir);
	CHECK_INT(system(cmd), ==, 0);
	snprintf(path, sizeof(path), "%s/cert.pem", dir);
	tls_cert = slurp(path);
	unlink(path);
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	tls_key = slurp(path);
	unlink(path);
	rmdir(dir);
	CHECK(tls_cert != NULL && tls_key != NULL);

	rt = std_router();
	s = srv_start(rt, cfg_tls);
	hres_init(&r);
	c = curl_easy_init();
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/hello",
		 keel_http_server_port(s));
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hres_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	CHECK_INT(curl_easy_perform(c), ==, CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_easy_cleanup(c);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(r.body, "hello");
	hres_free(&r);
	/* Plain HTTP to the TLS port: no answer a client could take. */
	http_get(keel_http_server_port(s), "/hello", &r);
	CHECK(r.status != 200);
	hres_free(&r);
	srv_done(s, rt);
	/* A key that is not a key: -EIO from start. */
	free(tls_key);
	tls_key = strdup("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END "
			 "PRIVATE KEY-----\n");
	{
		struct keel_http_config cfg;

		rt = std_router();
		keel_http_config_init(&cfg);
		cfg.port = 0;
		cfg.router = rt;
		cfg_tls(&cfg);
		test_lg = cap_logger();
		cfg.logger = test_lg;
		CHECK_INT(keel_http_server_new(&cfg, &s), ==, 0);
		CHECK_INT(keel_http_server_start(s), ==, -EIO);
		CHECK_INT(keel_http_server_port(s), ==, 0);
		srv_done(s, rt);
	}
	free(tls_cert);
	free(tls_key);
	keel_test_leak_check();
}

static void cfg_v6(struct keel_http_config *c)
{
	c->address = "::1";
}

TEST(ipv6)
{
	struct keel_http_router *rt;
	struct keel_http_server *s;
	struct hres r;
	char url[128];
	CURL *c;
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		KEEL_TEST_SKIP("no IPv6 loopback here");
	close(fd);
	rt = std_router();
	s = srv_start(rt, cfg_v6);
	hres_init(&r);
	c = curl_easy_init();
	snprintf(url, sizeof(url), "http://[::1]:%u/echo/v6?a=1%%262%%3D3&flag",
		 keel_http_server_port(s));
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hres_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	CHECK_INT(curl_easy_perform(c), ==, CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_easy_cleanup(c);
	CHECK_INT(r.status, ==, 200);
	CHECK_CONTAINS(r.body, "\"remote\":\"::1\"");
	hres_free(&r);
	srv_done(s, rt);
}

TEST(config_errors)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_config cfg, bad;
	struct keel_http_server *s = (struct keel_http_server *)&cfg;

	memset(&cfg, 0x5a, sizeof(cfg));
	keel_http_config_init(&cfg);
	CHECK_STR(cfg.address, "127.0.0.1");
	CHECK_INT(cfg.port, ==, 8080);
	CHECK(cfg.router == NULL && cfg.pool == NULL && cfg.logger == NULL);
	CHECK_INT(cfg.threads, ==, 1);
	CHECK_INT(cfg.max_connections, ==, 1024);
	CHECK_INT(cfg.per_ip_connections, ==, 0);
	CHECK_INT(cfg.idle_timeout, ==, 30 * KEEL_SEC);
	CHECK_INT(cfg.max_header_size, ==, 8192);
	CHECK_INT(cfg.max_body_size, ==, 1048576);
	CHECK(cfg.tls_cert_pem == NULL && cfg.tls_key_pem == NULL);
	CHECK_INT(cfg.pool_threads, ==, 4);
	cfg.port = 0;

	CHECK_INT(keel_http_server_new(&cfg, &s), ==, -EINVAL); /* no router */
	CHECK(s == NULL);
	cfg.router = rt;
	CHECK_INT(keel_http_server_new(NULL, &s), ==, -EINVAL);
	CHECK_INT(keel_http_server_new(&cfg, NULL), ==, -EINVAL);
#define BAD(field, value)                                                      \
	do {                                                                   \
		bad = cfg;                                                     \
		bad.field = value;                                             \
		s = (struct keel_http_server *)&cfg;                           \
		CHECK_INT(keel_http_server_new(&bad, &s), ==, -EINVAL);        \
		CHECK(s == NULL);                                              \
	} while (0)
	BAD(address, "localhost");
	BAD(address, "1.2.3");
	BAD(address, NULL);
	BAD(threads, 0);
	BAD(max_connections, 0);
	BAD(idle_timeout, -1);
	BAD(max_header_size, 100);
	BAD(tls_cert_pem, "x");
	BAD(tls_key_pem, "x");
	BAD(pool_threads, 0);
#undef BAD
	CHECK_INT(keel_http_server_new(&cfg, &s), ==, 0);
	CHECK_INT(keel_http_use(s, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_http_use(NULL, keel_http_mw_recover, NULL), ==, -EINVAL);
	CHECK_INT(keel_http_server_port(s), ==, 0);
	CHECK_INT(keel_http_server_start(s), ==, 0);
	CHECK_INT(keel_http_use(s, keel_http_mw_recover, NULL), ==, -EBUSY);
	CHECK_INT(keel_http_server_start(s), ==, -EBUSY);
	CHECK_INT(keel_http_server_stop(s, -1), ==, -EINVAL);
	CHECK_INT(keel_http_server_start(NULL), ==, -EINVAL);
	CHECK_INT(keel_http_server_stop(NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_http_server_port(NULL), ==, 0);
	keel_http_server_free(NULL);
	/* A server that never started frees cleanly. */
	keel_http_server_free(s);
	CHECK_INT(keel_http_server_new(&cfg, &s), ==, 0);
	keel_http_server_free(s);
	keel_http_router_free(rt);
	keel_test_leak_check();
}

TEST(port_in_use_and_port_zero)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *a = srv_start(rt, NULL), *b;
	struct keel_http_config cfg;
	struct hres r;

	keel_http_config_init(&cfg);
	cfg.router = rt;
	cfg.port = keel_http_server_port(a);
	CHECK_INT(keel_http_server_new(&cfg, &b), ==, 0);
	CHECK_INT(keel_http_server_start(b), ==, -EADDRINUSE);
	CHECK_INT(keel_http_server_port(b), ==, 0);
	keel_http_server_free(b);
	/* a is unaffected */
	http_get(keel_http_server_port(a), "/hello", &r);
	CHECK_INT(r.status, ==, 200);
	hres_free(&r);
	srv_done(a, rt);
}

static void cfg_threads(struct keel_http_config *c)
{
	c->threads = 3;
	c->pool_threads = 2;
	c->logger = test_lg;
}

TEST(thread_pool_of_event_threads)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	struct load_arg a[4];
	pthread_t th[4];
	int i;

	test_lg = load_logger();
	s = srv_start(rt, cfg_threads);
	keel_http_server_free(s);
	s = srv_start(rt, cfg_threads);
	for (i = 0; i < 4; i++) {
		a[i] = (struct load_arg){keel_http_server_port(s), i, 0};
		CHECK_INT(pthread_create(&th[i], NULL, load_thread, &a[i]), ==,
			  0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(a[i].wrong, ==, 0);
	}
	srv_done(s, rt);
}

static void cfg_per_ip(struct keel_http_config *c)
{
	c->per_ip_connections = 2;
	c->logger = test_lg;
}

static void cfg_max_conn(struct keel_http_config *c)
{
	c->max_connections = 2;
	c->logger = test_lg;
}

/* With room for two connections from an address, the third is accepted
 * and closed at once; the first two are served. */
static void check_two_connections(void (*cfg_fn)(struct keel_http_config *))
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	const char *req = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[1024];
	int fd[3], i, closed;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_fn);
	for (i = 0; i < 3; i++) {
		fd[i] = raw_connect(keel_http_server_port(s));
		CHECK(fd[i] >= 0);
		usleep(50 * 1000); /* accepted in this order */
	}
	raw_write(fd[2], req, strlen(req));
	raw_read(fd[2], buf, sizeof(buf), 3000, &closed);
	CHECK(closed);
	CHECK_STR(buf, "");
	for (i = 0; i < 2; i++) {
		raw_write(fd[i], req, strlen(req));
		raw_read(fd[i], buf, sizeof(buf), 300, &closed);
		CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
		CHECK(!closed);
	}
	for (i = 0; i < 3; i++)
		close(fd[i]);
	srv_done(s, rt);
}

TEST(per_ip_connection_limit)
{
	check_two_connections(cfg_per_ip);
}

/* At max_connections the server stops accepting: a further connection
 * waits in the kernel's backlog until one closes, then is served. */
TEST(connection_limit)
{
	struct keel_http_router *rt = std_router();
	struct keel_http_server *s;
	const char *req = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[1024];
	int fd[3], i, closed;

	test_lg = cap_logger();
	s = srv_start(rt, cfg_max_conn);
	for (i = 0; i < 3; i++) {
		fd[i] = raw_connect(keel_http_server_port(s));
		CHECK(fd[i] >= 0);
		usleep(50 * 1000);
	}
	raw_write(fd[2], req, strlen(req));
	raw_read(fd[2], buf, sizeof(buf), 500, &closed);
	CHECK(!closed);
	CHECK_STR(buf, "");
	for (i = 0; i < 2; i++) {
		raw_write(fd[i], req, strlen(req));
		raw_read(fd[i], buf, sizeof(buf), 300, &closed);
		CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	}
	close(fd[0]);
	raw_read(fd[2], buf, sizeof(buf), 1000, &closed);
	CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	close(fd[1]);
	close(fd[2]);
	srv_done(s, rt);
}

/* Sets a trace context on its thread and panics without restoring it. */
static void h_trace_panic(struct keel_http_req *rq, struct keel_http_resp *rs,
			  void *ud)
{
	struct keel_trace t;

	(void)rq;
	(void)rs;
	(void)ud;
	keel_trace_new(&t);
	keel_trace_set(&t, NULL);
	keel_panic("left a context behind");
}

/* Answers whether its thread has a trace context. */
static void h_trace_get(struct keel_http_req *rq, struct keel_http_resp *rs,
			void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_printf(rs, "%s", keel_trace_current() ? "context" : "none");
}

static void cfg_one_worker(struct keel_http_config *c)
{
	c->pool_threads = 1; /* the same worker runs every offloaded request */
	c->logger = test_lg;
}

/* Answers a body of ?n= bytes ('a' + i % 26), and the request headers the
 * server reads for the trace middleware, through the public lookup. */
static void h_sized(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	const char *n = keel_http_query(rq, "n");
	const char *tp = keel_http_header(rq, "traceparent");
	const char *id = keel_http_header(rq, "x-request-id");
	long i, len = n != NULL ? atol(n) : 0;

	(void)ud;
	keel_http_set_header(rs, "X-Saw-Traceparent", tp != NULL ? tp : "-");
	keel_http_set_header(rs, "X-Saw-Id", id != NULL ? id : "-");
	for (i = 0; i < len; i++) {
		char c = (char)('a' + i % 26);

		CHECK_INT(keel_http_write(rs, &c, 1), ==, 0);
	}
}

/*
 * The server keeps the state of finished requests (and their response
 * buffers) for the next ones: nothing of a request may show in the next.
 * Paths on both sides of the length kept inside the state (128), bodies of
 * every size one after the other, on the event thread and on the pool,
 * headers present then absent.
 */
TEST(request_state_is_reused_cleanly)
{
	struct keel_http_router *rt;
	struct keel_http_server *s;
	static const size_t plens[] = { 1, 100, 120, 121, 122, 123, 200, 900 };
	static const long blens[] = { 0, 5, 255, 256, 257, 4095, 4096, 5000, 70000, 3, 0 };
	char path[1024], want[1024], v[128];
	struct hres r;
	size_t i, k;
	int round;

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/echo/{name}", h_echo, NULL, 0),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool/{name}", h_echo, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/sized", h_sized, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool-sized", h_sized, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	s = srv_start(rt, NULL);
	for (round = 0; round < 2; round++) {
		const char *base = round ? "/pool/" : "/echo/";

		for (i = 0; i < sizeof(plens) / sizeof(plens[0]); i++) {
			/* the decoded path: "/echo/" and n name bytes, 126
			 * to 129 around the 128 kept in the state (the
			 * client's URL buffer takes about 1000) */
			size_t n = plens[i];

			snprintf(path, sizeof(path), "%s", base);
			for (k = 0; k < n; k++)
				path[strlen(base) + k] = (char)('a' + (i + k) % 26);
			path[strlen(base) + n] = '\0';
			memcpy(want, path, strlen(path) + 1);
			http_get(keel_http_server_port(s), path, &r);
			CHECK_INT(r.status, ==, 200);
			{
				json_t *o = json_loads(r.body, 0, NULL);

				CHECK(o != NULL);
				CHECK_STR(json_string_value(json_object_get(o, "path")), want);
				CHECK_STR(json_string_value(json_object_get(o, "name")),
					  want + strlen(base));
				CHECK_INT(json_is_true(json_object_get(o, "offloaded")), ==,
					  round);
				json_decref(o);
			}
			hres_free(&r);
		}
		for (i = 0; i < sizeof(blens) / sizeof(blens[0]); i++) {
			const char *with[] = {
				"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"X-Request-Id: id-1", NULL,
			};

			snprintf(path, sizeof(path), "%s?n=%ld",
				 round ? "/pool-sized" : "/sized", blens[i]);
			http_req(keel_http_server_port(s), "GET", path, NULL,
				 i % 2 ? with : NULL, &r);
			CHECK_INT(r.status, ==, 200);
			CHECK_INT(r.len, ==, blens[i]);
			for (k = 0; k < (size_t)blens[i]; k++)
				CHECK(r.body[k] == (char)('a' + k % 26));
			CHECK_STR(hres_header_get(&r, "X-Saw-Traceparent", v, sizeof(v)),
				  i % 2 ? "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
					: "-");
			CHECK_STR(hres_header_get(&r, "X-Saw-Id", v, sizeof(v)),
				  i % 2 ? "id-1" : "-");
			hres_free(&r);
		}
	}
	srv_done(s, rt);
}

TEST(trace_context_does_not_leak)
{
	struct keel_http_router *rt;
	struct keel_http_server *s;
	struct hres r;
	json_t *o;
	int i;

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/set", h_trace_panic, NULL, 0),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/get", h_trace_get, NULL, 0), ==,
		  0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool-set", h_trace_panic, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/pool-get", h_trace_get, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	test_lg = cap_logger();
	s = srv_start(rt, cfg_one_worker); /* one event thread, one worker */
	for (i = 0; i < 3; i++) {
		http_get(keel_http_server_port(s), i % 2 ? "/pool-set" : "/set",
			 &r);
		/* the bare 500 carries the trace id that was current when
		 * the panic was caught */
		o = check_error_body(&r, 500);
		CHECK(json_is_string(json_object_get(o, "trace_id")));
		json_decref(o);
		hres_free(&r);
		http_get(keel_http_server_port(s), i % 2 ? "/pool-get" : "/get",
			 &r);
		CHECK_STR(r.body, "none");
		hres_free(&r);
	}
	srv_done(s, rt);
}
