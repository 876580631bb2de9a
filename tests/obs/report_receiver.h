/*
 * tests/obs/report_receiver.h - what the reporter's tests share: a small
 * HTTP/1.1 server on 127.0.0.1 (the kernel picks the port) run on a thread,
 * which keeps connections alive, records each request (method, path,
 * headers, body) and answers from a script of status codes (200 once the
 * script is used up), or never answers (stall); and helpers that build a
 * reporter pointed at it and read what it received back with jansson.
 * Included by test_report.c and test_spool.c.
 */
#ifndef KEEL_TEST_REPORT_RECEIVER_H
#define KEEL_TEST_REPORT_RECEIVER_H

#define _GNU_SOURCE
#include <keel.h>
#include <keel/report.h>
#include <keel/trace.h>
#include "keel_test.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>

#define NIL_MSG "runtime error: invalid memory address or nil pointer dereference"

/* ------------------------------------------------------------------------
 * The receiver
 * ------------------------------------------------------------------------ */

#define RX_MAX_REQ 64
#define RX_MAX_CONN 8
#define RX_BUF (1024 * 1024)

struct rx_req {
	char method[16];
	char path[512];
	char headers[8192]; /* raw header lines, CRLF-separated */
	char *body;
	size_t len;
	double at;          /* keel_test_now() when it arrived */
};

struct rx_conn {
	int fd;
	char *buf;
	size_t n;
};

struct rx {
	int lfd, port;
	pthread_t th;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rx_req req[RX_MAX_REQ];
	int nreq;
	int conns;            /* connections accepted */
	int script[32];       /* status codes to answer, in order */
	int nscript;
	const char *retry_after; /* sent with 429 and 503 when set */
	int stall;            /* never answer */
	int hangup;           /* close the connection instead of answering */
	struct rx_conn c[RX_MAX_CONN];
};

static __attribute__((unused)) void rx_answer(struct rx *rx, int fd, int idx)
{
	char resp[256];
	int status = idx < rx->nscript ? rx->script[idx] : 200;
	int n = snprintf(resp, sizeof(resp),
			 "HTTP/1.1 %d X\r\nContent-Length: 2\r\n%s%s%s\r\nok",
			 status,
			 (status == 429 || status == 503) && rx->retry_after
				 ? "Retry-After: " : "",
			 (status == 429 || status == 503) && rx->retry_after
				 ? rx->retry_after : "",
			 (status == 429 || status == 503) && rx->retry_after
				 ? "\r\n" : "");

	(void)!send(fd, resp, (size_t)n, MSG_NOSIGNAL);
}

/* Takes every complete request out of c's buffer. 0, or -1 to close. */
static __attribute__((unused)) int rx_parse(struct rx *rx, struct rx_conn *c)
{
	for (;;) {
		char *end = memmem(c->buf, c->n, "\r\n\r\n", 4), *p, *line;
		size_t hlen, clen = 0;
		struct rx_req *q;
		int idx;

		if (end == NULL)
			return 0;
		hlen = (size_t)(end - c->buf) + 4;
		*end = '\0';
		for (p = c->buf; (p = strcasestr(p, "\r\ncontent-length:"));) {
			clen = strtoul(p + 17, NULL, 10);
			break;
		}
		*end = '\r';
		if (c->n < hlen + clen)
			return 0;
		pthread_mutex_lock(&rx->mu);
		idx = rx->nreq;
		if (idx < RX_MAX_REQ) {
			q = &rx->req[idx];
			memset(q, 0, sizeof(*q));
			line = memchr(c->buf, '\r', hlen);
			sscanf(c->buf, "%15s %511s", q->method, q->path);
			if (line != NULL) {
				size_t k = hlen - (size_t)(line - c->buf);

				if (k >= sizeof(q->headers))
					k = sizeof(q->headers) - 1;
				memcpy(q->headers, line, k);
			}
			q->body = malloc(clen + 1);
			memcpy(q->body, c->buf + hlen, clen);
			q->body[clen] = '\0';
			q->len = clen;
			q->at = keel_test_now();
			rx->nreq++;
		}
		pthread_cond_broadcast(&rx->cv);
		pthread_mutex_unlock(&rx->mu);
		memmove(c->buf, c->buf + hlen + clen, c->n - hlen - clen);
		c->n -= hlen + clen;
		if (rx->hangup)
			return -1;
		if (!rx->stall)
			rx_answer(rx, c->fd, idx);
	}
}

static void *rx_main(void *arg)
{
	struct rx *rx = arg;
	int i;

	while (!atomic_load(&rx->stop)) {
		struct pollfd pf[RX_MAX_CONN + 1];
		int map[RX_MAX_CONN + 1], n = 0;

		pf[n].fd = rx->lfd;
		pf[n].events = POLLIN;
		map[n++] = -1;
		for (i = 0; i < RX_MAX_CONN; i++)
			if (rx->c[i].fd >= 0) {
				pf[n].fd = rx->c[i].fd;
				pf[n].events = POLLIN;
				map[n++] = i;
			}
		if (poll(pf, (nfds_t)n, 20) <= 0)
			continue;
		for (i = 0; i < n; i++) {
			struct rx_conn *c;
			ssize_t r;

			if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (map[i] < 0) {
				int fd = accept(rx->lfd, NULL, NULL), k;

				for (k = 0; k < RX_MAX_CONN && fd >= 0; k++)
					if (rx->c[k].fd < 0) {
						rx->c[k].fd = fd;
						rx->c[k].n = 0;
						fd = -1;
						pthread_mutex_lock(&rx->mu);
						rx->conns++;
						pthread_mutex_unlock(&rx->mu);
					}
				if (fd >= 0)
					close(fd);
				continue;
			}
			c = &rx->c[map[i]];
			r = recv(c->fd, c->buf + c->n, RX_BUF - c->n, 0);
			if (r > 0)
				c->n += (size_t)r;
			if (r <= 0 || rx_parse(rx, c) != 0 || c->n == RX_BUF) {
				close(c->fd);
				c->fd = -1;
			}
		}
	}
	for (i = 0; i < RX_MAX_CONN; i++)
		if (rx->c[i].fd >= 0)
			close(rx->c[i].fd);
	return NULL;
}

static __attribute__((unused)) struct rx *rx_start(const int *script, int nscript)
{
	struct rx *rx = calloc(1, sizeof(*rx));
	struct sockaddr_in a = { 0 };
	socklen_t alen = sizeof(a);
	int i, one = 1;

	CHECK(rx != NULL);
	pthread_mutex_init(&rx->mu, NULL);
	pthread_cond_init(&rx->cv, NULL);
	for (i = 0; i < nscript && i < 32; i++)
		rx->script[i] = script[i];
	rx->nscript = nscript;
	for (i = 0; i < RX_MAX_CONN; i++) {
		rx->c[i].fd = -1;
		rx->c[i].buf = malloc(RX_BUF);
		CHECK(rx->c[i].buf != NULL);
	}
	rx->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(rx->lfd >= 0);
	setsockopt(rx->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(bind(rx->lfd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	CHECK_INT(listen(rx->lfd, 16), ==, 0);
	CHECK_INT(getsockname(rx->lfd, (struct sockaddr *)&a, &alen), ==, 0);
	rx->port = ntohs(a.sin_port);
	return rx;
}

/* Start serving (after the test set stall/hangup/retry_after). */
static __attribute__((unused)) void rx_run(struct rx *rx)
{
	CHECK_INT(pthread_create(&rx->th, NULL, rx_main, rx), ==, 0);
}

static __attribute__((unused)) void rx_stop(struct rx *rx)
{
	int i;

	atomic_store(&rx->stop, 1);
	pthread_join(rx->th, NULL);
	close(rx->lfd);
	for (i = 0; i < rx->nreq; i++)
		free(rx->req[i].body);
	for (i = 0; i < RX_MAX_CONN; i++)
		free(rx->c[i].buf);
	pthread_mutex_destroy(&rx->mu);
	pthread_cond_destroy(&rx->cv);
	free(rx);
}

/* Waits (up to 20 s) until n requests arrived; returns how many did. */
static __attribute__((unused)) int rx_wait(struct rx *rx, int n)
{
	double until = keel_test_now() + 20;
	int got;

	pthread_mutex_lock(&rx->mu);
	while (rx->nreq < n && keel_test_now() < until) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&rx->cv, &rx->mu, &ts);
	}
	got = rx->nreq;
	pthread_mutex_unlock(&rx->mu);
	return got;
}

static __attribute__((unused)) int rx_count(struct rx *rx)
{
	int n;

	pthread_mutex_lock(&rx->mu);
	n = rx->nreq;
	pthread_mutex_unlock(&rx->mu);
	return n;
}

/* The value of header name in q, or NULL (static buffer). */
static __attribute__((unused)) const char *rx_header(const struct rx_req *q, const char *name)
{
	static char val[1024];
	const char *p = q->headers;
	size_t n = strlen(name);

	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1, *e;

			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			n = e ? (size_t)(e - v) : strlen(v);
			if (n >= sizeof(val))
				n = sizeof(val) - 1;
			memcpy(val, v, n);
			val[n] = '\0';
			return val;
		}
	}
	return NULL;
}

/* A port where nothing listens (bound, then closed). */
static __attribute__((unused)) int dead_port(void)
{
	struct sockaddr_in a = { 0 };
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &alen), ==, 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static __attribute__((unused)) char url_buf[256], dsn_buf[256];

static __attribute__((unused)) void no_proxy(void)
{
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
}

static __attribute__((unused)) void base_config(struct keel_reporter_config *cfg)
{
	no_proxy();
	keel_reporter_config_init(cfg);
	cfg->backoff_initial = 1 * KEEL_MSEC;
	cfg->backoff_max = 5 * KEEL_MSEC;
	cfg->service = "svc";
	cfg->environment = "test";
	cfg->release = "svc@1.2.3";
	cfg->server_name = "host-1";
}

static __attribute__((unused)) const char *webhook(struct rx *rx, const char *path)
{
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d%s", rx->port,
		 path);
	return url_buf;
}

static __attribute__((unused)) struct keel_reporter *new_reporter(const struct keel_reporter_config *cfg)
{
	struct keel_reporter *r = NULL;

	CHECK_INT(keel_reporter_new(cfg, &r), ==, 0);
	CHECK(r != NULL);
	return r;
}

static __attribute__((unused)) json_t *parse(const char *s, size_t n)
{
	json_error_t err;
	json_t *v = json_loadb(s, n, 0, &err);

	if (v == NULL)
		KEEL_TEST_FAIL("bad JSON (%s at %d): %.*s", err.text,
			       err.position, (int)n, s);
	return v;
}

static __attribute__((unused)) const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_string(v))
		KEEL_TEST_FAIL("\"%s\" is not a string", key);
	return json_string_value(v);
}

static __attribute__((unused)) long long jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		KEEL_TEST_FAIL("\"%s\" is not an integer", key);
	return json_integer_value(v);
}

static __attribute__((unused)) int is_hex(const char *s, size_t n)
{
	size_t i;

	if (strlen(s) != n)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* Index of the first frame whose "function" is fn, or -1. */
static __attribute__((unused)) int frame_index(json_t *frames, const char *fn)
{
	size_t i;

	for (i = 0; i < json_array_size(frames); i++) {
		json_t *f = json_object_get(json_array_get(frames, i), "function");

		if (json_is_string(f) && strcmp(json_string_value(f), fn) == 0)
			return (int)i;
	}
	return -1;
}

/* The envelope's three lines: header, item header, payload. */
static __attribute__((unused)) void split_envelope(const struct rx_req *q, json_t **h, json_t **ih,
			   json_t **ev, size_t *ev_len)
{
	const char *nl1 = memchr(q->body, '\n', q->len), *nl2, *nl3;

	CHECK(nl1 != NULL);
	nl2 = memchr(nl1 + 1, '\n', q->len - (size_t)(nl1 + 1 - q->body));
	CHECK(nl2 != NULL);
	nl3 = memchr(nl2 + 1, '\n', q->len - (size_t)(nl2 + 1 - q->body));
	CHECK(nl3 != NULL);
	CHECK(nl3 == q->body + q->len - 1); /* nothing after the event */
	*h = parse(q->body, (size_t)(nl1 - q->body));
	*ih = parse(nl1 + 1, (size_t)(nl2 - nl1 - 1));
	*ev_len = (size_t)(nl3 - nl2 - 1);
	*ev = parse(nl2 + 1, *ev_len);
}

#endif /* KEEL_TEST_REPORT_RECEIVER_H */
