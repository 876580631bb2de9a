/*
 * tests/http/http_client.h - what the http tests share: a server on
 * 127.0.0.1 with a kernel-chosen port, requests with libcurl (the real
 * client), raw sockets for what curl will not send (malformed requests,
 * slow clients), and jansson checks of the standard error body.
 */
#ifndef KEEL_TEST_HTTP_CLIENT_H
#define KEEL_TEST_HTTP_CLIENT_H

#define _GNU_SOURCE
#include <keel.h>
#include <keel/http.h>
#include "keel_test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------------
 * Server
 * ------------------------------------------------------------------------ */

/* A started server on 127.0.0.1 with a kernel-chosen port for rt; cfg_fn,
 * when not NULL, changes the config first (limits, a logger, TLS). */
static __attribute__((unused)) struct keel_http_server *
srv_start(struct keel_http_router *rt,
	  void (*cfg_fn)(struct keel_http_config *))
{
	struct keel_http_config cfg;
	struct keel_http_server *s;

	keel_http_config_init(&cfg);
	cfg.port = 0;
	cfg.router = rt;
	if (cfg_fn != NULL)
		cfg_fn(&cfg);
	CHECK_INT(keel_http_server_new(&cfg, &s), ==, 0);
	CHECK_INT(keel_http_server_start(s), ==, 0);
	CHECK(keel_http_server_port(s) != 0);
	return s;
}

/* ------------------------------------------------------------------------
 * libcurl
 * ------------------------------------------------------------------------ */

/* A response. The body is NUL-terminated and never NULL: it lives in
 * `small` up to its size (nothing to free), on the heap beyond (hres_free).
 * Do not copy a struct hres by value. */
struct hres {
	long status;
	char *body;
	size_t len;
	size_t cap; /* of body once on the heap */
	char small[16384];
	char headers[8192];
	size_t hlen;
	CURLcode rc;
	double total; /* seconds */
};

static size_t hres_body(char *p, size_t sz, size_t n, void *ud)
{
	struct hres *r = ud;
	size_t k = sz * n;

	/* Doubling: an 8 MiB body comes in some 500 pieces, and growing to
	 * the exact size each time copied gigabytes (seconds under ASan,
	 * past the transfer's timeout). */
	if (r->len + k + 1 > (r->body == r->small ? sizeof(r->small) : r->cap)) {
		size_t cap = 2 * sizeof(r->small);
		char *nb;

		while (cap < r->len + k + 1)
			cap *= 2;
		nb = r->body == r->small ? malloc(cap) : realloc(r->body, cap);
		if (nb == NULL)
			return 0;
		if (r->body == r->small)
			memcpy(nb, r->small, r->len);
		r->body = nb;
		r->cap = cap;
	}
	memcpy(r->body + r->len, p, k);
	r->len += k;
	r->body[r->len] = '\0';
	return k;
}

static size_t hres_header(char *p, size_t sz, size_t n, void *ud)
{
	struct hres *r = ud;
	size_t k = sz * n;

	if (r->hlen + k < sizeof(r->headers)) {
		memcpy(r->headers + r->hlen, p, k);
		r->hlen += k;
		r->headers[r->hlen] = '\0';
	}
	return k;
}

/* An empty response, ready for a transfer. */
static __attribute__((unused)) void hres_init(struct hres *r)
{
	memset(r, 0, sizeof(*r));
	r->body = r->small;
}

static __attribute__((unused)) void hres_free(struct hres *r)
{
	if (r->body != r->small)
		free(r->body);
	r->body = r->small;
	r->len = 0;
	r->small[0] = '\0';
}

/* The value of response header name (case-insensitive) in r, copied into
 * buf; NULL when absent. */
static __attribute__((unused)) const char *
hres_header_get(const struct hres *r, const char *name, char *buf, size_t n)
{
	const char *p = r->headers;
	size_t nl = strlen(name);

	while (p != NULL && *p) {
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1, *e;

			while (*v == ' ')
				v++;
			e = strpbrk(v, "\r\n");
			if (e == NULL)
				e = v + strlen(v);
			snprintf(buf, n, "%.*s", (int)(e - v), v);
			return buf;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return NULL;
}

/* One request with a fresh easy handle. hdrs: NULL-terminated "Name: v"
 * list or NULL. body NULL: no body. */
static __attribute__((unused)) void http_req(uint16_t port, const char *method,
					     const char *path, const char *body,
					     const char *const *hdrs,
					     struct hres *r)
{
	char url[1024];
	CURL *c = curl_easy_init();
	struct curl_slist *sl = NULL;

	hres_init(r);
	CHECK(c != NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hres_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hres_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	for (; hdrs != NULL && *hdrs != NULL; hdrs++)
		sl = curl_slist_append(sl, *hdrs);
	sl = curl_slist_append(sl, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
	r->rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &r->total);
	curl_slist_free_all(sl);
	curl_easy_cleanup(c);
}

static __attribute__((unused)) void http_get(uint16_t port, const char *path,
					     struct hres *r)
{
	http_req(port, "GET", path, NULL, NULL, r);
}

/* Checks r is the standard error body for status (code, message,
 * timestamp, trace_id present), and returns the parsed object (caller
 * decrefs). */
static __attribute__((unused)) json_t *check_error_body(const struct hres *r,
							long status)
{
	char ct[128];
	json_error_t e;
	json_t *o, *v;

	CHECK_INT(r->status, ==, status);
	CHECK(hres_header_get(r, "Content-Type", ct, sizeof(ct)) != NULL);
	CHECK_STR(ct, "application/json");
	CHECK(r->body != NULL);
	o = json_loads(r->body, 0, &e);
	if (o == NULL)
		KEEL_TEST_FAIL("not JSON: %s (%s)", r->body, e.text);
	CHECK(json_is_object(o));
	CHECK_INT(json_integer_value(json_object_get(o, "code")), ==, status);
	CHECK_STR(json_string_value(json_object_get(o, "message")),
		  keel_http_reason((int)status));
	v = json_object_get(o, "timestamp");
	CHECK(json_is_string(v));
	CHECK_INT(strlen(json_string_value(v)), ==, 24);
	CHECK(json_object_get(o, "trace_id") != NULL);
	return o;
}

/* ------------------------------------------------------------------------
 * Raw sockets
 * ------------------------------------------------------------------------ */

static __attribute__((unused)) int raw_connect(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	CHECK(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -errno;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static __attribute__((unused)) void raw_write(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the server may close early: not an error */
		c += w;
		n -= (size_t)w;
	}
}

/* Reads until the peer closes or timeout_ms passes with nothing new.
 * Returns the bytes read (NUL-terminated in buf); *closed says whether the
 * peer closed. */
static __attribute__((unused)) size_t raw_read(int fd, char *buf, size_t cap,
					       int timeout_ms, int *closed)
{
	size_t n = 0;

	*closed = 0;
	while (n + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*closed = 1;
			break;
		}
		n += (size_t)r;
	}
	buf[n] = '\0';
	return n;
}

/* Sends req on a new connection and reads the answer (until close or
 * timeout_ms of silence). */
static __attribute__((unused)) size_t raw_exchange(uint16_t port,
						   const char *req, size_t len,
						   char *buf, size_t cap,
						   int timeout_ms, int *closed)
{
	int fd = raw_connect(port);
	size_t n;

	CHECK(fd >= 0);
	raw_write(fd, req, len);
	n = raw_read(fd, buf, cap, timeout_ms, closed);
	close(fd);
	return n;
}

#endif /* KEEL_TEST_HTTP_CLIENT_H */
