/* KEEL_TEST_LABELS: threads */
/*
 * tests/sched/test_exec_http.c - the http executor (keel/exec.h) against
 * real servers on 127.0.0.1: keel's own HTTP server as the target (it
 * records what it received), raw sockets for refused connections and for
 * proving that an open breaker sends nothing. Cases: the status decides
 * the run (default and given ranges, redirects not followed); the request
 * is what the job says (method, headers, body, traceparent, user agent);
 * the body is captured from its start, capped, as valid UTF-8; the job's
 * timeout, a refused connection and a cancel from another thread end the
 * run as they should; the per-host breaker opens after refusals and 5xx
 * (not 4xx), fails fast without connecting, and closes again after a
 * successful probe; runs from four threads at once.
 */
#include "http/http_client.h"

#include <keel/exec.h>
#include <keel/job.h>

/* ------------------------------------------------------------------------
 * The target server
 * ------------------------------------------------------------------------ */

/* What the /echo handler last received. */
struct got {
	char method[16];
	char xtest[64];
	char traceparent[80];
	char ua[64];
	char ctype[64];
	char clen[16];
	int has_ctype, has_traceparent, has_clen;
	char body[256];
	size_t body_len;
};
static pthread_mutex_t got_mu = PTHREAD_MUTEX_INITIALIZER;
static struct got got;
static atomic_int echo_hits, status_hits;

static void copy_hdr(const struct keel_http_req *rq, const char *name,
		     char *dst, size_t n, int *has)
{
	const char *v = keel_http_header(rq, name);

	if (has != NULL)
		*has = v != NULL;
	snprintf(dst, n, "%s", v != NULL ? v : "");
}

static void h_echo(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	size_t blen;
	const char *body = keel_http_body(rq, &blen);

	(void)ud;
	pthread_mutex_lock(&got_mu);
	memset(&got, 0, sizeof(got));
	snprintf(got.method, sizeof(got.method), "%s", keel_http_method(rq));
	copy_hdr(rq, "X-Test", got.xtest, sizeof(got.xtest), NULL);
	copy_hdr(rq, "traceparent", got.traceparent, sizeof(got.traceparent),
		 &got.has_traceparent);
	copy_hdr(rq, "User-Agent", got.ua, sizeof(got.ua), NULL);
	copy_hdr(rq, "Content-Type", got.ctype, sizeof(got.ctype),
		 &got.has_ctype);
	copy_hdr(rq, "Content-Length", got.clen, sizeof(got.clen),
		 &got.has_clen);
	got.body_len =
	    blen < sizeof(got.body) - 1 ? blen : sizeof(got.body) - 1;
	if (body != NULL)
		memcpy(got.body, body, got.body_len);
	pthread_mutex_unlock(&got_mu);
	atomic_fetch_add(&echo_hits, 1);
	keel_http_printf(rs, "echoed");
}

static void h_status(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	int code = atoi(keel_http_param(rq, "code"));

	(void)ud;
	atomic_fetch_add(&status_hits, 1);
	keel_http_status(rs, code);
	keel_http_printf(rs, "status %d", code);
}

static void h_redirect(struct keel_http_req *rq, struct keel_http_resp *rs,
		       void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_status(rs, 302);
	keel_http_set_header(rs, "Location", "/echo");
}

/* 100 KiB that starts with a marker, then bytes no JSON string may hold. */
static void h_big(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	static const char chunk[8] = {'a', 'b',	   '\0',   '\xff',
				      'c', '\xc3', '\xa9', '\n'};
	static char buf[100 * 1024];
	size_t i;

	(void)rq;
	(void)ud;
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = chunk[i % sizeof(chunk)];
	memcpy(buf, "HEAD-START", 10);
	keel_http_write(rs, buf, sizeof(buf));
}

/* 65535 'a', then an 'é' that the 64 KiB cap cuts in two, then more. */
static void h_cut(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	static char buf[70000];

	(void)rq;
	(void)ud;
	memset(buf, 'a', sizeof(buf));
	buf[65535] = '\xc3';
	buf[65536] = '\xa9';
	keel_http_write(rs, buf, sizeof(buf));
}

/* Waits {ms} milliseconds, or until the case releases it. */
static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cv = PTHREAD_COND_INITIALIZER;
static int slow_released;

static void h_slow(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	int ms = atoi(keel_http_param(rq, "ms"));
	struct timespec end;

	(void)ud;
	clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += ms / 1000;
	end.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&slow_mu);
	while (!slow_released &&
	       pthread_cond_timedwait(&slow_cv, &slow_mu, &end) == 0)
		;
	pthread_mutex_unlock(&slow_mu);
	keel_http_printf(rs, "slow");
}

static void release_slow(void)
{
	pthread_mutex_lock(&slow_mu);
	slow_released = 1;
	pthread_cond_broadcast(&slow_cv);
	pthread_mutex_unlock(&slow_mu);
}

struct target {
	struct keel_http_router *rt;
	struct keel_http_server *srv;
	uint16_t port;
};

static void target_start(struct target *t)
{
	CHECK_INT(keel_http_router_new(&t->rt), ==, 0);
	CHECK_INT(keel_http_route(t->rt, "*", "/echo", h_echo, NULL, 0), ==, 0);
	CHECK_INT(
	    keel_http_route(t->rt, "*", "/status/{code}", h_status, NULL, 0),
	    ==, 0);
	CHECK_INT(
	    keel_http_route(t->rt, "GET", "/redirect", h_redirect, NULL, 0), ==,
	    0);
	CHECK_INT(keel_http_route(t->rt, "GET", "/big", h_big, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(t->rt, "GET", "/cut", h_cut, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(t->rt, "GET", "/slow/{ms}", h_slow, NULL,
				  KEEL_HTTP_BLOCKING),
		  ==, 0);
	t->srv = srv_start(t->rt, NULL);
	t->port = keel_http_server_port(t->srv);
}

static void target_stop(struct target *t)
{
	release_slow();
	CHECK_INT(keel_http_server_stop(t->srv, 10 * KEEL_SEC), ==, 0);
	keel_http_server_free(t->srv);
	keel_http_router_free(t->rt);
}

/* ------------------------------------------------------------------------
 * Jobs and runs
 * ------------------------------------------------------------------------ */

/* An http job; extra is more "executor" members (", \"method\": ..."). */
static struct keel_job *http_job(uint16_t port, const char *path,
				 const char *extra)
{
	char text[2048], err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_error_t e;
	json_t *v;

	snprintf(text, sizeof(text),
		 "{\"name\": \"web\", \"schedule\": \"@manual\", "
		 "\"executor\": {\"type\": \"http\", "
		 "\"url\": \"http://127.0.0.1:%u%s\"%s}}",
		 port, path, extra != NULL ? extra : "");
	v = json_loads(text, JSON_REJECT_DUPLICATES, &e);
	if (v == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s: %s", e.text, text);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("job refused: %s\n  %s", err, text);
	json_decref(v);
	return j;
}

static struct keel_executor *new_exec(int failures, int64_t open)
{
	struct keel_exec_config cfg;
	struct keel_executor *ex = NULL;

	keel_exec_config_init(&cfg);
	if (failures > 0)
		cfg.breaker_failures = failures;
	if (open > 0)
		cfg.breaker_open = open;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, 0);
	return ex;
}

/* One run of a fresh job; *res must be cleared by the caller. */
static void run(struct keel_executor *ex, uint16_t port, const char *path,
		const char *extra, const struct keel_exec_req *rq,
		struct keel_exec_result *res)
{
	struct keel_job *j = http_job(port, path, extra);

	CHECK_INT(keel_exec_run(ex, j, rq, res), ==, 0);
	keel_job_free(j);
}

/* The state keel_exec_breakers reports for host, or "" when absent. */
struct find_host {
	const char *host;
	char state[32];
	int hosts;
};

static void on_breaker(const char *host, const char *state, void *ud)
{
	struct find_host *f = ud;

	f->hosts++;
	if (strcmp(host, f->host) == 0)
		snprintf(f->state, sizeof(f->state), "%s", state);
}

static const char *breaker_state(struct keel_executor *ex, uint16_t port,
				 char *buf, size_t n)
{
	char host[64];
	struct find_host f;

	snprintf(host, sizeof(host), "http://127.0.0.1:%u", port);
	memset(&f, 0, sizeof(f));
	f.host = host;
	keel_exec_breakers(ex, on_breaker, &f);
	snprintf(buf, n, "%s", f.state);
	return buf;
}

/* ------------------------------------------------------------------------
 * Raw sockets: a port nobody listens on, and a listener that counts
 * ------------------------------------------------------------------------ */

static int listen_on(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	socklen_t len = sizeof(sa);

	CHECK(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)),
		  ==, 0);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		KEEL_TEST_FAIL("bind 127.0.0.1:%u: %s", port, strerror(errno));
	CHECK_INT(listen(fd, 16), ==, 0);
	CHECK_INT(getsockname(fd, (struct sockaddr *)&sa, &len), ==, 0);
	return fd;
}

static uint16_t port_of(int fd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	CHECK_INT(getsockname(fd, (struct sockaddr *)&sa, &len), ==, 0);
	return ntohs(sa.sin_port);
}

/* A port that was just bound and closed: connections to it are refused. */
static uint16_t closed_port(void)
{
	int fd = listen_on(0);
	uint16_t port = port_of(fd);

	close(fd);
	return port;
}

/* 1 when a connection is waiting on the listener within ms. */
static int pending(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, ms) == 1;
}

/* Accepts one connection, reads the request head, answers 200 "ok". */
static void *answer_once(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd;
	char buf[4096];
	size_t n = 0;
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
				   "Connection: close\r\n\r\nok";

	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	while (n < sizeof(buf) - 1) {
		ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);

		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = '\0';
		if (strstr(buf, "\r\n\r\n") != NULL)
			break;
	}
	raw_write(fd, resp, sizeof(resp) - 1);
	close(fd);
	return NULL;
}

/* ------------------------------------------------------------------------
 * The status decides
 * ------------------------------------------------------------------------ */

TEST(status_200_succeeds_with_body)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;

	target_start(&t);
	run(ex, t.port, "/status/200", NULL, NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.http_status, ==, 200);
	CHECK_STR(res.error, "");
	CHECK_STR(res.output, "status 200");
	CHECK_INT(res.output_len, ==, 10);
	CHECK_INT(res.exit_code, ==, -1);
	CHECK_INT(res.signal, ==, 0);
	CHECK_INT(res.panicked, ==, 0);
	keel_exec_result_clear(&res);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

TEST(status_503_fails)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;

	target_start(&t);
	run(ex, t.port, "/status/503", NULL, NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.http_status, ==, 503);
	CHECK_STR(res.error, "unexpected status 503 (expected 200-299)");
	CHECK_STR(res.output, "status 503");
	keel_exec_result_clear(&res);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

TEST(expect_status)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;

	target_start(&t);
	run(ex, t.port, "/status/201", ", \"expect_status\": 201", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	keel_exec_result_clear(&res);
	run(ex, t.port, "/status/200", ", \"expect_status\": 201", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "unexpected status 200 (expected 201)");
	keel_exec_result_clear(&res);
	run(ex, t.port, "/status/204", ", \"expect_status\": \"200-204\"", NULL,
	    &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.http_status, ==, 204);
	CHECK(res.output == NULL); /* no body */
	keel_exec_result_clear(&res);
	run(ex, t.port, "/status/205", ", \"expect_status\": \"200-204\"", NULL,
	    &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "unexpected status 205 (expected 200-204)");
	keel_exec_result_clear(&res);
	/* A 5xx the job expects is a success. */
	run(ex, t.port, "/status/503", ", \"expect_status\": 503", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	keel_exec_result_clear(&res);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

TEST(redirect_not_followed)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;

	target_start(&t);
	atomic_store(&echo_hits, 0);
	run(ex, t.port, "/redirect", NULL, NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.http_status, ==, 302);
	CHECK_STR(res.error, "unexpected status 302 (expected 200-299)");
	CHECK_INT(atomic_load(&echo_hits), ==, 0);
	keel_exec_result_clear(&res);
	keel_exec_free(ex);
	target_stop(&t);
}

/* ------------------------------------------------------------------------
 * The request is the job's
 * ------------------------------------------------------------------------ */

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TEST(request_as_the_job_says)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;
	struct keel_exec_req rq;

	memset(&rq, 0, sizeof(rq));
	rq.traceparent = TP;
	target_start(&t);

	run(ex, t.port, "/echo",
	    ", \"method\": \"POST\", \"headers\": {\"X-Test\": \"yes please\", "
	    "\"Content-Type\": \"application/json\"}, "
	    "\"body\": \"{\\\"a\\\": 1}\"",
	    &rq, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "echoed");
	keel_exec_result_clear(&res);
	pthread_mutex_lock(&got_mu);
	CHECK_STR(got.method, "POST");
	CHECK_STR(got.xtest, "yes please");
	CHECK_STR(got.ctype, "application/json");
	CHECK_INT(got.body_len, ==, 8);
	CHECK_STR(got.body, "{\"a\": 1}");
	CHECK_STR(got.traceparent, TP);
	CHECK(strncmp(got.ua, "keeld/", 6) == 0);
	pthread_mutex_unlock(&got_mu);

	/* A body without a Content-Type goes without one (not as a form). */
	run(ex, t.port, "/echo", ", \"method\": \"PATCH\", \"body\": \"x=1\"",
	    NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	pthread_mutex_lock(&got_mu);
	CHECK_STR(got.method, "PATCH");
	CHECK_STR(got.body, "x=1");
	CHECK_INT(got.has_ctype, ==, 0);
	CHECK_INT(got.has_traceparent, ==, 0); /* none asked for */
	pthread_mutex_unlock(&got_mu);
	keel_exec_result_clear(&res);

	/* PUT without a body still says how long it is. */
	run(ex, t.port, "/echo", ", \"method\": \"PUT\"", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	pthread_mutex_lock(&got_mu);
	CHECK_STR(got.method, "PUT");
	CHECK_INT(got.has_clen, ==, 1);
	CHECK_STR(got.clen, "0");
	CHECK_INT(got.body_len, ==, 0);
	pthread_mutex_unlock(&got_mu);
	keel_exec_result_clear(&res);

	/* The default method, and DELETE. */
	run(ex, t.port, "/echo", NULL, &rq, &res);
	pthread_mutex_lock(&got_mu);
	CHECK_STR(got.method, "GET");
	CHECK_INT(got.body_len, ==, 0);
	pthread_mutex_unlock(&got_mu);
	keel_exec_result_clear(&res);
	run(ex, t.port, "/echo", ", \"method\": \"DELETE\"", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	pthread_mutex_lock(&got_mu);
	CHECK_STR(got.method, "DELETE");
	pthread_mutex_unlock(&got_mu);
	keel_exec_result_clear(&res);

	/* The job's own traceparent and User-Agent win over keeld's. */
	run(ex, t.port, "/echo",
	    ", \"headers\": {\"traceparent\": "
	    "\"00-11111111111111111111111111111111-2222222222222222-00\", "
	    "\"User-Agent\": \"mine/1\"}",
	    &rq, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	pthread_mutex_lock(&got_mu);
	CHECK_STR(got.traceparent,
		  "00-11111111111111111111111111111111-2222222222222222-00");
	CHECK_STR(got.ua, "mine/1");
	pthread_mutex_unlock(&got_mu);
	keel_exec_result_clear(&res);

	/* HEAD: a status, no body. */
	run(ex, t.port, "/status/200", ", \"method\": \"HEAD\"", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.http_status, ==, 200);
	CHECK(res.output == NULL);
	keel_exec_result_clear(&res);

	CHECK_INT(atomic_load(&echo_hits), ==, 6);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The captured body
 * ------------------------------------------------------------------------ */

TEST(body_capped_and_clean)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;
	json_t *s;
	size_t i;

	target_start(&t);
	run(ex, t.port, "/big", NULL, NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(res.output != NULL);
	CHECK(strncmp(res.output, "HEAD-START", 10) == 0); /* the head */
	CHECK_INT(strlen(res.output), ==, res.output_len); /* no NUL */
	/* 64 KiB of input, with NUL and 0xff each 3 bytes of U+FFFD. */
	CHECK_INT(res.output_len, >=, 64 * 1024);
	CHECK_INT(res.output_len, <=, 64 * 1024 + 2 * 64 * 1024 / 8 * 2 + 8);
	s = json_string(res.output); /* jansson refuses invalid UTF-8 */
	CHECK(s != NULL);
	json_decref(s);
	CHECK(strstr(res.output, "ab\xef\xbf\xbd\xef\xbf\xbd"
				 "c\xc3\xa9\n") != NULL);
	keel_exec_result_clear(&res);

	/* A character cut by the cap is dropped, not mangled. */
	run(ex, t.port, "/cut", NULL, NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.output_len, ==, 65535);
	for (i = 0; i < res.output_len; i++)
		if (res.output[i] != 'a')
			KEEL_TEST_FAIL("byte %zu is 0x%02x", i,
				       (unsigned char)res.output[i]);
	keel_exec_result_clear(&res);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Timeouts, refusals, cancellation
 * ------------------------------------------------------------------------ */

TEST(timeout)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;
	double t0;

	target_start(&t);
	t0 = keel_test_now();
	run(ex, t.port, "/slow/2000", ", \"timeout\": \"200ms\"", NULL, &res);
	CHECK(keel_test_now() - t0 >= 0.19);
	CHECK(keel_test_now() - t0 < 1.9); /* did not wait for the answer */
	CHECK_INT(res.state, ==, KEEL_RUN_TIMED_OUT);
	CHECK_STR(res.error, "timed out after 200ms");
	CHECK_INT(res.http_status, ==, 0);
	CHECK(res.output == NULL);
	keel_exec_result_clear(&res);
	/* Within its time the same request succeeds. */
	run(ex, t.port, "/slow/10", ", \"timeout\": \"30s\"", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "slow");
	keel_exec_result_clear(&res);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

TEST(connection_refused)
{
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;
	uint16_t port = closed_port();
	json_t *s;

	run(ex, port, "/x", ", \"timeout\": \"30s\"", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.http_status, ==, 0);
	CHECK(res.output == NULL);
	CHECK(res.error[0] != '\0');
	CHECK(strcasestr(res.error, "connect") != NULL);
	CHECK(strchr(res.error, '\n') == NULL);
	s = json_string(res.error);
	CHECK(s != NULL);
	json_decref(s);
	keel_exec_free(ex);
	keel_test_leak_check();
}

struct canceller {
	struct keel_cancel *tok;
	int ms;
};

static void *cancel_later(void *arg)
{
	struct canceller *c = arg;

	usleep((useconds_t)c->ms * 1000);
	keel_cancel_cancel(c->tok, 0);
	return NULL;
}

TEST(cancel_during_request)
{
	struct target t;
	struct keel_executor *ex = new_exec(1, 0);
	struct keel_exec_result res;
	struct keel_exec_req rq;
	struct keel_cancel *tok = keel_cancel_new(NULL, NULL);
	struct canceller c = {tok, 300};
	char st[32];
	pthread_t th;
	double t0;

	target_start(&t);
	memset(&rq, 0, sizeof(rq));
	rq.cancel = tok;
	CHECK_INT(pthread_create(&th, NULL, cancel_later, &c), ==, 0);
	t0 = keel_test_now();
	run(ex, t.port, "/slow/8000", ", \"timeout\": \"1m\"", &rq, &res);
	/* libcurl asks at least once a second: well before the answer. */
	CHECK(keel_test_now() - t0 < 6);
	pthread_join(th, NULL);
	CHECK_INT(res.state, ==, KEEL_RUN_CANCELED);
	CHECK_STR(res.error, "canceled");
	keel_exec_result_clear(&res);
	/* Not the host's fault: its breaker (1 failure opens it) is closed. */
	CHECK_STR(breaker_state(ex, t.port, st, sizeof(st)), "closed");

	/* Cancelled before it starts: nothing is sent. */
	atomic_store(&echo_hits, 0);
	run(ex, t.port, "/echo", NULL, &rq, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_CANCELED);
	CHECK_INT(atomic_load(&echo_hits), ==, 0);
	keel_exec_result_clear(&res);
	keel_cancel_free(tok);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The breaker
 * ------------------------------------------------------------------------ */

TEST(breaker_opens_after_refusals_and_fails_fast)
{
	struct keel_executor *ex = new_exec(5, 60 * KEEL_SEC);
	struct keel_exec_result res;
	uint16_t port = closed_port();
	char want[128], st[32];
	int i, lfd;
	double t0;

	for (i = 0; i < 5; i++) {
		run(ex, port, "/x", NULL, NULL, &res);
		CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
		CHECK(strcasestr(res.error, "connect") != NULL);
		CHECK(strstr(res.error, "circuit breaker") == NULL);
	}
	CHECK_STR(breaker_state(ex, port, st, sizeof(st)), "open");
	/* Someone listens again, but the breaker does not let the run try. */
	lfd = listen_on(port);
	t0 = keel_test_now();
	run(ex, port, "/x", NULL, NULL, &res);
	CHECK(keel_test_now() - t0 < 1);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.http_status, ==, 0);
	snprintf(want, sizeof(want),
		 "circuit breaker open for http://127.0.0.1:%u: last failure: ",
		 port);
	CHECK(strncmp(res.error, want, strlen(want)) == 0);
	CHECK(strcasestr(res.error, "connect") != NULL);
	CHECK_CONTAINS(res.error, "; next try in ");
	CHECK_INT(pending(lfd, 300), ==, 0); /* no connection was made */
	CHECK_STR(breaker_state(ex, port, st, sizeof(st)), "open");
	close(lfd);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(breaker_probe_closes_it_again)
{
	struct keel_executor *ex = new_exec(2, 300 * KEEL_MSEC);
	struct keel_exec_result res;
	uint16_t port = closed_port();
	char st[32];
	pthread_t th;
	int i, lfd;

	for (i = 0; i < 2; i++) {
		run(ex, port, "/x", NULL, NULL, &res);
		CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	}
	run(ex, port, "/x", NULL, NULL, &res);
	CHECK_CONTAINS(res.error, "circuit breaker open");
	/* The host comes back; after the open time one probe goes. */
	lfd = listen_on(port);
	CHECK_INT(pthread_create(&th, NULL, answer_once, (void *)(intptr_t)lfd),
		  ==, 0);
	usleep(500 * 1000);
	run(ex, port, "/x", ", \"timeout\": \"30s\"", NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "ok");
	keel_exec_result_clear(&res);
	pthread_join(th, NULL);
	close(lfd);
	CHECK_STR(breaker_state(ex, port, st, sizeof(st)), "closed");
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(breaker_counts_5xx_not_4xx)
{
	struct target t;
	struct keel_executor *ex = new_exec(3, 60 * KEEL_SEC);
	struct keel_exec_result res;
	char st[32];
	int i;

	target_start(&t);
	atomic_store(&status_hits, 0);
	for (i = 0; i < 10; i++) {
		run(ex, t.port, "/status/404", NULL, NULL, &res);
		CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
		CHECK_STR(res.error,
			  "unexpected status 404 (expected 200-299)");
		keel_exec_result_clear(&res);
	}
	CHECK_STR(breaker_state(ex, t.port, st, sizeof(st)), "closed");
	for (i = 0; i < 3; i++) {
		run(ex, t.port, "/status/500", NULL, NULL, &res);
		CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
		CHECK_INT(res.http_status, ==, 500);
		keel_exec_result_clear(&res);
	}
	CHECK_STR(breaker_state(ex, t.port, st, sizeof(st)), "open");
	run(ex, t.port, "/status/200", NULL, NULL, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.http_status, ==, 0);
	CHECK_CONTAINS(res.error, "circuit breaker open for http://127.0.0.1:");
	CHECK_CONTAINS(
	    res.error,
	    "last failure: unexpected status 500 (expected 200-299)");
	keel_exec_result_clear(&res);
	CHECK_INT(atomic_load(&status_hits), ==, 13); /* not 14 */
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

/* One breaker per scheme://host:port; localhost and 127.0.0.1 differ. */
TEST(breakers_per_host)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct keel_exec_result res;
	struct find_host f;
	char host[64];

	target_start(&t);
	run(ex, t.port, "/status/200", NULL, NULL, &res);
	keel_exec_result_clear(&res);
	run(ex, t.port, "/status/201", NULL, NULL, &res);
	keel_exec_result_clear(&res);
	memset(&f, 0, sizeof(f));
	snprintf(host, sizeof(host), "http://127.0.0.1:%u", t.port);
	f.host = host;
	keel_exec_breakers(ex, on_breaker, &f);
	CHECK_INT(f.hosts, ==, 1);
	CHECK_STR(f.state, "closed");
	keel_exec_breakers(ex, NULL, NULL);
	keel_exec_breakers(NULL, on_breaker, &f);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Many threads
 * ------------------------------------------------------------------------ */

#define THREADS 4
#define RUNS 25

struct worker {
	struct keel_executor *ex;
	uint16_t port;
	int ok;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct keel_job *j =
	    http_job(w->port, "/status/200", ", \"timeout\": \"30s\"");
	struct keel_exec_result res;
	int i;

	for (i = 0; i < RUNS; i++) {
		if (keel_exec_run(w->ex, j, NULL, &res) == 0 &&
		    res.state == KEEL_RUN_SUCCEEDED && res.output != NULL &&
		    strcmp(res.output, "status 200") == 0)
			w->ok++;
		keel_exec_result_clear(&res);
	}
	keel_job_free(j);
	return NULL;
}

TEST(many_threads)
{
	struct target t;
	struct keel_executor *ex = new_exec(0, 0);
	struct worker w[THREADS];
	pthread_t th[THREADS];
	int i, ok = 0;

	target_start(&t);
	atomic_store(&status_hits, 0);
	for (i = 0; i < THREADS; i++) {
		w[i].ex = ex;
		w[i].port = t.port;
		w[i].ok = 0;
		CHECK_INT(pthread_create(&th[i], NULL, worker_main, &w[i]), ==,
			  0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		ok += w[i].ok;
	}
	CHECK_INT(ok, ==, THREADS * RUNS);
	CHECK_INT(atomic_load(&status_hits), ==, THREADS * RUNS);
	keel_exec_free(ex);
	target_stop(&t);
	keel_test_leak_check();
}
