/*
 * src/obs/report_sentry.c - the Sentry side of the reporter: DSN parsing and
 * the envelope that carries one event.
 *
 * Protocol references (Sentry's developer documentation, develop.sentry.dev):
 *  - "Envelopes": newline-separated JSON; an envelope header (event_id, dsn,
 *    sent_at as RFC 3339), then per item a header whose "length" is the
 *    payload's size in bytes, then the payload; POSTed to
 *    /api/<project_id>/envelope/ as application/x-sentry-envelope.
 *  - "SDK Overview", section Authentication: the X-Sentry-Auth header with
 *    sentry_version=7, sentry_key (the DSN's public key) and sentry_client;
 *    the DSN's form {PROTOCOL}://{PUBLIC_KEY}[:{SECRET}]@{HOST}{PATH}/{PROJECT_ID}.
 *  - "Event Payloads": event_id (32 hex digits, a UUID v4 without dashes),
 *    timestamp, platform, level, logger, server_name, release, environment,
 *    tags, extra, contexts.trace (trace_id, span_id), the exception interface
 *    (type, value, stacktrace, mechanism with "handled" and signal meta) and
 *    the stack trace interface, whose frames go oldest first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/report.h>

#include "json.h"

/* ------------------------------------------------------------------------
 * DSN
 * ------------------------------------------------------------------------ */

static int is_word(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int is_host(char c)
{
	return is_word(c) || c == '.';
}

static int copy_n(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return -EINVAL;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* host[:port] or [v6][:port] at s (n bytes). */
static int check_host(const char *s, size_t n)
{
	size_t i = 0;

	if (n == 0)
		return -EINVAL;
	if (s[0] == '[') {
		while (i < n && s[i] != ']') {
			if (i > 0 && !(s[i] == ':' || s[i] == '.' ||
				       (s[i] >= '0' && s[i] <= '9') ||
				       (s[i] >= 'a' && s[i] <= 'f') ||
				       (s[i] >= 'A' && s[i] <= 'F')))
				return -EINVAL;
			i++;
		}
		if (i >= n || i < 2)
			return -EINVAL;
		i++;
	} else {
		while (i < n && is_host(s[i]))
			i++;
		if (i == 0)
			return -EINVAL;
	}
	if (i == n)
		return 0;
	if (s[i] != ':' || i + 1 == n || n - i - 1 > 5)
		return -EINVAL;
	{
		long port = 0;
		size_t k;

		for (k = i + 1; k < n; k++) {
			if (s[k] < '0' || s[k] > '9')
				return -EINVAL;
			port = port * 10 + (s[k] - '0');
		}
		if (port < 1 || port > 65535)
			return -EINVAL;
	}
	return 0;
}

int keel__sentry_dsn_parse(const char *dsn, struct keel__sentry_dsn *out)
{
	struct keel__sentry_dsn d;
	const char *s, *at, *slash, *last, *key_end, *p;
	size_t i;
	int n;

	if (dsn == NULL)
		return -EINVAL;
	memset(&d, 0, sizeof(d));
	for (i = 0; dsn[i] != '\0'; i++)
		if ((unsigned char)dsn[i] <= ' ' || dsn[i] == '?' ||
		    dsn[i] == '#' || (unsigned char)dsn[i] >= 0x7f)
			return -EINVAL;
	if (strncmp(dsn, "https://", 8) == 0) {
		memcpy(d.scheme, "https", 6);
		s = dsn + 8;
	} else if (strncmp(dsn, "http://", 7) == 0) {
		memcpy(d.scheme, "http", 5);
		s = dsn + 7;
	} else {
		return -EINVAL;
	}
	slash = strchr(s, '/');
	at = strchr(s, '@');
	if (slash == NULL || at == NULL || at > slash)
		return -EINVAL;
	/* The public key, and a deprecated secret after ':' (ignored). */
	key_end = memchr(s, ':', (size_t)(at - s));
	if (key_end == NULL)
		key_end = at;
	if (key_end == s)
		return -EINVAL;
	for (p = s; p < key_end; p++)
		if (!is_word(*p))
			return -EINVAL;
	if (copy_n(d.public_key, sizeof(d.public_key), s, (size_t)(key_end - s)))
		return -EINVAL;
	if (check_host(at + 1, (size_t)(slash - at - 1)) != 0 ||
	    copy_n(d.host, sizeof(d.host), at + 1, (size_t)(slash - at - 1)))
		return -EINVAL;
	/* The path: an optional prefix, then the project id. */
	last = strrchr(slash, '/');
	if (last[1] == '\0')
		return -EINVAL;
	for (p = last + 1; *p != '\0'; p++)
		if (!is_word(*p))
			return -EINVAL;
	for (p = slash; p < last; p++)
		if (!(is_host(*p) || *p == '/') || (p[0] == '/' && p[1] == '/'))
			return -EINVAL;
	if (copy_n(d.path, sizeof(d.path), slash, (size_t)(last - slash)) ||
	    copy_n(d.project_id, sizeof(d.project_id), last + 1, strlen(last + 1)))
		return -EINVAL;
	n = snprintf(d.envelope_url, sizeof(d.envelope_url),
		     "%s://%s%s/api/%s/envelope/", d.scheme, d.host, d.path,
		     d.project_id);
	if (n < 0 || (size_t)n >= sizeof(d.envelope_url))
		return -EINVAL;
	n = snprintf(d.auth, sizeof(d.auth),
		     "X-Sentry-Auth: Sentry sentry_version=7, sentry_key=%s, "
		     "sentry_client=keel/" KEEL_VERSION_STRING,
		     d.public_key);
	if (n < 0 || (size_t)n >= sizeof(d.auth))
		return -EINVAL;
	*out = d;
	return 0;
}

/* ------------------------------------------------------------------------
 * The event and its envelope
 * ------------------------------------------------------------------------ */

static void kv(struct keel__json *j, const char *k, const char *v)
{
	if (v != NULL) {
		keel__json_key(j, k);
		keel__json_str(j, v);
	}
}

/* The stack trace interface: frames oldest first. */
static void stacktrace(struct keel__json *j, const struct keel__report_item *it)
{
	size_t i;

	keel__json_key(j, "stacktrace");
	keel__json_obj(j);
	keel__json_key(j, "frames");
	keel__json_arr(j);
	for (i = it->nframes; i-- > 0;) {
		const struct keel__report_frame *f = &it->frames[i];

		keel__json_obj(j);
		kv(j, "function", f->function);
		kv(j, "filename", f->file);
		if (f->line > 0) {
			keel__json_key(j, "lineno");
			keel__json_int(j, f->line);
		}
		keel__json_key(j, "instruction_addr");
		keel__json_ptr(j, f->pc);
		keel__json_obj_end(j);
	}
	keel__json_arr_end(j);
	keel__json_obj_end(j);
}

static void exception(struct keel__json *j, const struct keel__report_item *it)
{
	keel__json_key(j, "exception");
	keel__json_obj(j);
	keel__json_key(j, "values");
	keel__json_arr(j);
	keel__json_obj(j);
	kv(j, "type", it->panic_kind);
	kv(j, "value", it->panic_message);
	if (it->nframes > 0)
		stacktrace(j, it);
	keel__json_key(j, "mechanism");
	keel__json_obj(j);
	kv(j, "type", "keel");
	keel__json_key(j, "handled");
	keel__json_bool(j, it->handled);
	if (it->fault.signo != 0) {
		const char *name = keel__signal_name(it->fault.signo);

		keel__json_key(j, "meta");
		keel__json_obj(j);
		keel__json_key(j, "signal");
		keel__json_obj(j);
		keel__json_key(j, "number");
		keel__json_int(j, it->fault.signo);
		keel__json_key(j, "code");
		keel__json_int(j, it->fault.code);
		kv(j, "name", name);
		keel__json_obj_end(j);
		keel__json_obj_end(j);
		keel__json_key(j, "data");
		keel__json_obj(j);
		keel__json_key(j, "fault_addr");
		keel__json_ptr(j, it->fault.addr);
		keel__json_key(j, "fault_pc");
		keel__json_ptr(j, it->fault.pc);
		keel__json_key(j, "runtime");
		keel__json_bool(j, it->panic_runtime);
		keel__json_obj_end(j);
	}
	keel__json_obj_end(j);
	keel__json_obj_end(j);
	keel__json_arr_end(j);
	keel__json_obj_end(j);
}

static void event(struct keel__json *j, const struct keel__report_item *it,
		  const struct keel__report_meta *m)
{
	char ts[32], tid[33], sid[17];
	size_t i;

	keel__report_rfc3339(it->timestamp, ts);
	keel__json_obj(j);
	kv(j, "event_id", it->event_id);
	kv(j, "timestamp", ts);
	kv(j, "platform", "native");
	kv(j, "level", it->level);
	kv(j, "logger", it->module);
	kv(j, "server_name", it->server_name ? it->server_name : m->server_name);
	kv(j, "release", it->release ? it->release : m->release);
	kv(j, "environment",
	   it->environment ? it->environment : m->environment);
	keel__json_key(j, "message");
	keel__json_obj(j);
	kv(j, "formatted", it->message);
	keel__json_obj_end(j);
	if (it->has_panic) {
		exception(j, it);
	} else if (it->nframes > 0) {
		/* A stack without an exception: the current thread's. */
		keel__json_key(j, "threads");
		keel__json_obj(j);
		keel__json_key(j, "values");
		keel__json_arr(j);
		keel__json_obj(j);
		keel__json_key(j, "current");
		keel__json_bool(j, 1);
		stacktrace(j, it);
		keel__json_obj_end(j);
		keel__json_arr_end(j);
		keel__json_obj_end(j);
	}
	keel__json_key(j, "tags");
	keel__json_obj(j);
	for (i = 0; i < it->ntags; i++) {
		keel__json_key(j, it->tags[2 * i]);
		keel__json_str(j, it->tags[2 * i + 1]);
	}
	kv(j, "service", it->service ? it->service : m->service);
	if (it->has_trace) {
		keel_trace_id_hex(&it->trace, tid);
		keel_span_id_hex(&it->trace, sid);
		kv(j, "trace_id", tid);
	}
	keel__json_obj_end(j);
	if (it->has_trace) {
		keel__json_key(j, "contexts");
		keel__json_obj(j);
		keel__json_key(j, "trace");
		keel__json_obj(j);
		kv(j, "type", "trace");
		kv(j, "trace_id", tid);
		kv(j, "span_id", sid);
		keel__json_obj_end(j);
		keel__json_obj_end(j);
	}
	keel__json_key(j, "extra");
	if (it->extra != NULL)
		keel__json_raw(j, it->extra, it->extra_len);
	else
		keel__json_raw(j, "{}", 2);
	keel__json_key(j, "sdk");
	keel__json_obj(j);
	kv(j, "name", "keel");
	kv(j, "version", KEEL_VERSION_STRING);
	keel__json_obj_end(j);
	keel__json_obj_end(j);
}

void keel__sentry_envelope(struct keel__json *j,
			   const struct keel__report_item *it,
			   const struct keel__report_meta *m, const char *dsn,
			   int64_t sent_at)
{
	struct keel__json ev;
	char ts[32];

	keel__json_init(&ev, NULL, 1024);
	event(&ev, it, m);
	if (ev.failed) {
		keel__json_free(&ev);
		j->failed = 1;
		return;
	}
	keel__report_rfc3339(sent_at, ts);
	keel__json_obj(j);
	kv(j, "event_id", it->event_id);
	kv(j, "dsn", dsn);
	kv(j, "sent_at", ts);
	keel__json_key(j, "sdk");
	keel__json_obj(j);
	kv(j, "name", "keel");
	kv(j, "version", KEEL_VERSION_STRING);
	keel__json_obj_end(j);
	keel__json_obj_end(j);
	keel__json_append(j, "\n", 1);
	keel__json_obj(j);
	kv(j, "type", "event");
	keel__json_key(j, "length");
	keel__json_uint(j, ev.len);
	kv(j, "content_type", "application/json");
	keel__json_obj_end(j);
	keel__json_append(j, "\n", 1);
	keel__json_append(j, ev.buf, ev.len);
	keel__json_append(j, "\n", 1);
	keel__json_free(&ev);
}
