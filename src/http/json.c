/*
 * src/http/json.c - JSON in and out (jansson), the one error body every
 * http answer uses, and the reason phrases.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel/trace.h>

#include "internal.h"
#include "../obs/json.h"

const char *keel_http_reason(int status)
{
	/* one line per code: the table it is */
	/* clang-format off */
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 418: return "I'm a teapot";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 423: return "Locked";
	case 424: return "Failed Dependency";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	case 508: return "Loop Detected";
	case 511: return "Network Authentication Required";
	default: return "Unknown";
	}
	/* clang-format on */
}

/* Replaces the body with the text of v. The dump goes straight into the
 * body buffer (json_dumpb): no intermediate string. */
static int put_json(struct keel_http_resp *rs, const json_t *v)
{
	size_t n;

	n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
	if (n == 0)
		return -EINVAL;
	if (rs->cap < n + 1) {
		char *nb = realloc(rs->body, n + 1);

		if (nb == NULL)
			return -ENOMEM;
		rs->body = nb;
		rs->cap = n + 1;
	}
	if (json_dumpb(v, rs->body, n, JSON_COMPACT | JSON_ENCODE_ANY) != n)
		return -ENOMEM;
	rs->len = n;
	rs->body[n] = '\0';
	return 0;
}

int keel_http_json(struct keel_http_resp *rs, int status, const json_t *v)
{
	int rc;

	if (rs == NULL || v == NULL)
		return -EINVAL;
	if (rs->committed)
		return -EBUSY;
	rc = put_json(rs, v);
	if (rc < 0)
		return rc;
	rc = keel_http_set_header(rs, "Content-Type", "application/json");
	if (rc < 0)
		return rc;
	keel_http_status(rs, status);
	return 0;
}

int keel_http_error(struct keel_http_resp *rs, int status, const char *reason)
{
	char ts[32], tid[33];
	struct timespec now;
	const struct keel_trace *t = keel_trace_current();
	json_t *o;
	int rc;

	if (rs == NULL || status < 100 || status > 999)
		return -EINVAL;
	if (rs->committed)
		return -EBUSY;
	clock_gettime(CLOCK_REALTIME, &now);
	keel__rfc3339(&now, ts);
	o = json_object();
	if (o == NULL)
		return -ENOMEM;
	rc = json_object_set_new(o, "code", json_integer(status));
	rc |= json_object_set_new(o, "message",
				  json_string(keel_http_reason(status)));
	rc |= json_object_set_new(o, "timestamp", json_string(ts));
	if (t != NULL && keel_trace_valid(t)) {
		keel_trace_id_hex(t, tid);
		rc |= json_object_set_new(o, "trace_id", json_string(tid));
	} else {
		rc |= json_object_set_new(o, "trace_id", json_null());
	}
	/* A reason that is not UTF-8 is dropped by jansson (NULL value):
	 * keep its bytes readable instead of losing the answer. */
	if (reason != NULL) {
		json_t *r = json_string(reason);

		if (r == NULL)
			r = json_string("(reason is not valid UTF-8)");
		rc |= json_object_set_new(o, "reason", r);
	}
	if (rc != 0) {
		json_decref(o);
		return -ENOMEM;
	}
	keel_http_reset(rs);
	rc = keel_http_json(rs, status, o);
	json_decref(o);
	return rc;
}

int keel_http_errorf(struct keel_http_resp *rs, int status, const char *fmt,
		     ...)
{
	char buf[512];
	va_list ap;

	if (fmt == NULL)
		return keel_http_error(rs, status, NULL);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return keel_http_error(rs, status, buf);
}

int keel_http_read_json(struct keel_http_req *rq, struct keel_http_resp *rs,
			int want_object, json_t **out)
{
	json_error_t err;
	json_t *v;

	if (out != NULL)
		*out = NULL;
	if (rq == NULL || rs == NULL || out == NULL)
		return -EINVAL;
	if (rq->body_len == 0) {
		keel_http_error(rs, 400,
				"empty body: a JSON value is required");
		return -EINVAL;
	}
	v = json_loadb(rq->body, rq->body_len,
		       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
	if (v == NULL) {
		keel_http_errorf(rs, 400,
				 "invalid JSON at line %d, column %d: %s",
				 err.line, err.column, err.text);
		return -EINVAL;
	}
	if (want_object && !json_is_object(v)) {
		json_decref(v);
		keel_http_error(rs, 400, "the body must be a JSON object");
		return -EINVAL;
	}
	*out = v;
	return 0;
}
