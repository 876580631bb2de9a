/*
 * src/http/response.c - the response a handler builds: status, headers and
 * a body in memory, sent by server.c when the chain returns.
 *
 * Nothing here talks to libmicrohttpd: the response is plain data until
 * the server turns it into an MHD response (and takes the body buffer
 * without copying it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

void keel__http_resp_init(struct keel_http_resp *rs)
{
	/* Field by field: the arena needs no zeroing. */
	rs->status = 200;
	rs->committed = 0;
	rs->abort = 0;
	rs->headers = rs->hinline;
	rs->nheaders = 0;
	rs->cap_headers = KEEL__HTTP_INLINE_HEADERS;
	rs->arena_used = 0;
	rs->body = NULL;
	rs->len = rs->cap = 0;
}

static void headers_clear(struct keel_http_resp *rs)
{
	size_t i;

	for (i = 0; i < rs->nheaders; i++) {
		if (rs->headers[i].own_name)
			free(rs->headers[i].name);
		if (rs->headers[i].own_value)
			free(rs->headers[i].value);
	}
	rs->nheaders = 0;
	rs->arena_used = 0;
}

void keel__http_resp_release(struct keel_http_resp *rs)
{
	headers_clear(rs);
	if (rs->headers != rs->hinline)
		free(rs->headers);
	free(rs->body);
	keel__http_resp_init(rs);
}

/* A copy of s (n bytes and a NUL) in the arena, or on the heap (*own = 1)
 * when it is full. */
static char *str_copy(struct keel_http_resp *rs, const char *s, size_t n,
		      unsigned char *own)
{
	char *p;

	if (n < sizeof(rs->arena) - rs->arena_used) {
		p = rs->arena + rs->arena_used;
		rs->arena_used += n + 1;
		memcpy(p, s, n);
		p[n] = '\0';
		*own = 0;
		return p;
	}
	p = malloc(n + 1);
	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	*own = 1;
	return p;
}

/* A status MHD can send: three digits, 1xx to 5xx (and the 6xx-9xx some
 * private protocols use). */
static int status_ok(int status)
{
	return status >= 100 && status <= 999;
}

void keel_http_status(struct keel_http_resp *rs, int status)
{
	if (rs == NULL || rs->committed || !status_ok(status))
		return;
	rs->status = status;
}

void keel_http_write_header(struct keel_http_resp *rs, int status)
{
	if (rs == NULL || rs->committed)
		return;
	if (status_ok(status))
		rs->status = status;
	rs->committed = 1;
}

int keel_http_committed(const struct keel_http_resp *rs)
{
	return rs != NULL && rs->committed;
}

int keel_http_resp_status(const struct keel_http_resp *rs)
{
	return rs != NULL ? rs->status : 0;
}

size_t keel_http_resp_size(const struct keel_http_resp *rs)
{
	return rs != NULL ? rs->len : 0;
}

/* RFC 9110 token characters: a table, as every header name set is
 * checked. */
static const unsigned char tchar[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
};

/* The length of s when it is a non-empty token, else 0. (The table has
 * 0 for the NUL: one test per byte ends the loop at either.) */
static size_t token_len(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (tchar[p[i]])
		i++;
	return p[i] == '\0' ? i : 0;
}

/* Exported for server.c and the middleware (a token check is needed for
 * methods as well). */
int keel__http_token(const char *s)
{
	return s != NULL && token_len(s) > 0;
}

/* A field value: visible characters, spaces and tabs; no CR, LF or other
 * controls (a header injection is a CR LF in a value). vstop has 1 for the
 * bytes that end the scan: the NUL, and the ones not allowed. */
static const unsigned char vstop[256] = {
	[0x00 ... 0x08] = 1, [0x0a ... 0x1f] = 1, [0x7f] = 1,
};

/* 1 and the length of v in *len when it is a valid value. */
static int value_ok(const char *v, size_t *len)
{
	const unsigned char *s = (const unsigned char *)v;
	size_t i = 0;

	while (!vstop[s[i]])
		i++;
	*len = i;
	return s[i] == '\0';
}

static uint16_t name_len16(size_t n)
{
	return n < UINT16_MAX ? (uint16_t)n : UINT16_MAX;
}

/* The header called name (nlen: its name_len16), any case. Names of
 * another length, or whose first letters differ (X-Request-Id and
 * Content-Type have the same length), are passed over without a call. */
static struct keel__http_header *header_find(const struct keel_http_resp *rs,
					     const char *name, uint16_t nlen)
{
	unsigned char c0 = (unsigned char)name[0] | 0x20;
	size_t i;

	for (i = 0; i < rs->nheaders; i++)
		if (rs->headers[i].name_len == nlen &&
		    ((unsigned char)rs->headers[i].name[0] | 0x20) == c0 &&
		    strcasecmp(rs->headers[i].name, name) == 0)
			return &rs->headers[i];
	return NULL;
}

/* Sets (replaces) name (nlen bytes): value (vlen bytes), both already
 * checked. A static name (one that outlives the response) is not copied. */
static int header_put(struct keel_http_resp *rs, const char *name,
		      size_t nlen, const char *value, size_t vlen,
		      int static_name)
{
	struct keel__http_header *h = header_find(rs, name, name_len16(nlen));
	unsigned char own;
	char *v;

	if (h == NULL && rs->nheaders == rs->cap_headers) {
		size_t cap = 2 * rs->cap_headers;
		struct keel__http_header *nh = malloc(cap * sizeof(*nh));

		if (nh == NULL)
			return -ENOMEM;
		memcpy(nh, rs->headers, rs->nheaders * sizeof(*nh));
		if (rs->headers != rs->hinline)
			free(rs->headers);
		rs->headers = nh;
		rs->cap_headers = cap;
	}
	v = str_copy(rs, value, vlen, &own);
	if (v == NULL)
		return -ENOMEM;
	if (h != NULL) {
		/* A replaced value's arena bytes stay unused until reset. */
		if (h->own_value)
			free(h->value);
		h->value = v;
		h->own_value = own;
		return 0;
	}
	h = &rs->headers[rs->nheaders];
	h->value = v;
	h->own_value = own;
	h->name_len = name_len16(nlen);
	if (static_name) {
		h->name = (char *)name; /* never written nor freed */
		h->own_name = 0;
	} else {
		h->name = str_copy(rs, name, nlen, &h->own_name);
	}
	if (h->name == NULL) {
		if (own)
			free(v);
		return -ENOMEM;
	}
	rs->nheaders++;
	return 0;
}

int keel_http_set_header(struct keel_http_resp *rs, const char *name,
			 const char *value)
{
	size_t nlen, vlen;

	if (rs == NULL || name == NULL || (nlen = token_len(name)) == 0 ||
	    value == NULL || !value_ok(value, &vlen))
		return -EINVAL;
	return header_put(rs, name, nlen, value, vlen, 0);
}

int keel__http_set_header_checked(struct keel_http_resp *rs, const char *name,
				  size_t nlen, const char *value, size_t vlen)
{
	return header_put(rs, name, nlen, value, vlen, 1);
}

const char *keel_http_resp_header(const struct keel_http_resp *rs,
				  const char *name)
{
	const struct keel__http_header *h;

	if (rs == NULL || name == NULL)
		return NULL;
	h = header_find(rs, name, name_len16(strlen(name)));
	return h != NULL ? h->value : NULL;
}

/* Makes room for n more bytes and the NUL kept after the body. */
static int reserve(struct keel_http_resp *rs, size_t n)
{
	size_t need, cap;
	char *nb;

	if (n > SIZE_MAX - rs->len - 1)
		return -ENOMEM;
	need = rs->len + n + 1;
	if (need <= rs->cap)
		return 0;
	cap = rs->cap ? rs->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
	nb = realloc(rs->body, cap);
	if (nb == NULL)
		return -ENOMEM;
	rs->body = nb;
	rs->cap = cap;
	return 0;
}

int keel_http_write(struct keel_http_resp *rs, const void *data, size_t len)
{
	int rc;

	if (rs == NULL || (data == NULL && len > 0))
		return -EINVAL;
	if (len == 0)
		return 0;
	rc = reserve(rs, len);
	if (rc < 0)
		return rc;
	memcpy(rs->body + rs->len, data, len);
	rs->len += len;
	rs->body[rs->len] = '\0';
	return 0;
}

int keel__http_vprintf(struct keel_http_resp *rs, const char *fmt, va_list ap)
{
	va_list aq;
	int n, rc;

	if (rs == NULL || fmt == NULL)
		return -EINVAL;
	/* Try in the room there is; grow once to the exact size if short. */
	if (reserve(rs, 0) < 0)
		return -ENOMEM;
	va_copy(aq, ap);
	n = vsnprintf(rs->body + rs->len, rs->cap - rs->len, fmt, aq);
	va_end(aq);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= rs->cap - rs->len) {
		rc = reserve(rs, (size_t)n);
		if (rc < 0) {
			rs->body[rs->len] = '\0';
			return rc;
		}
		vsnprintf(rs->body + rs->len, rs->cap - rs->len, fmt, ap);
	}
	rs->len += (size_t)n;
	return 0;
}

int keel_http_printf(struct keel_http_resp *rs, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = keel__http_vprintf(rs, fmt, ap);
	va_end(ap);
	return rc;
}

void keel_http_reset(struct keel_http_resp *rs)
{
	if (rs == NULL || rs->committed)
		return;
	headers_clear(rs);
	rs->len = 0;
	if (rs->body != NULL)
		rs->body[0] = '\0';
	rs->status = 200;
}
