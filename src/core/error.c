/*
 * src/core/error.c - error codes and error values.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct keel_error {
	int code;
	int panic_kind;           /* -1: not made from a panic */
	int signo;
	void *fault_addr;
	struct keel_error *cause; /* owned */
	char msg[];               /* NUL-terminated */
};

/* Returned when an error cannot be allocated; freeing it is a no-op. */
static struct keel_error oom_error = { .code = -ENOMEM, .panic_kind = -1 };
static const char oom_text[] = "out of memory";

const char *keel_strerror(int code)
{
	switch (code) {
	case KEEL_OK:
		return "success";
	case KEEL_EPANIC:
		return "recovered panic";
	case KEEL_EUNKNOWN:
		return "unknown error";
	case KEEL_EBREAKER_OPEN:
		return "circuit breaker open";
	case KEEL_EBULKHEAD_FULL:
		return "bulkhead full";
	case KEEL_ERATE_LIMITED:
		return "rate limited";
	case KEEL_EBUDGET:
		return "retry budget exhausted";
	case KEEL_ECHAOS:
		return "error injected by chaos policy";
	default:
		break;
	}
	if (code < 0 && code > KEEL_ERR_BASE)
		return strerrordesc_np(-code) ? strerrordesc_np(-code)
					      : "unknown error";
	return "unknown error";
}

KEEL_PRINTF(2, 0)
static struct keel_error *error_alloc(int code, const char *fmt, va_list ap)
{
	va_list ap2;
	struct keel_error *e;
	int n;

	n = 0;
	if (fmt != NULL) {
		va_copy(ap2, ap);
		n = vsnprintf(NULL, 0, fmt, ap2);
		va_end(ap2);
		if (n < 0)
			n = 0;
	}
	e = malloc(sizeof(*e) + (size_t)n + 1);
	if (e == NULL)
		return &oom_error;
	e->code = code != 0 ? code : KEEL_EUNKNOWN;
	e->panic_kind = -1;
	e->signo = 0;
	e->fault_addr = NULL;
	e->cause = NULL;
	if (n > 0)
		vsnprintf(e->msg, (size_t)n + 1, fmt, ap);
	else
		e->msg[0] = '\0';
	return e;
}

struct keel_error *keel_error_newv(int code, const char *fmt, va_list ap)
{
	return error_alloc(code, fmt, ap);
}

struct keel_error *keel_error_new(int code, const char *fmt, ...)
{
	struct keel_error *e;
	va_list ap;

	va_start(ap, fmt);
	e = keel_error_newv(code, fmt, ap);
	va_end(ap);
	return e;
}

struct keel_error *keel_error_wrap(struct keel_error *cause, int code,
				  const char *fmt, ...)
{
	struct keel_error *e;
	va_list ap;

	if (code == 0 && cause != NULL)
		code = cause->code;
	va_start(ap, fmt);
	e = keel_error_newv(code, fmt, ap);
	va_end(ap);
	if (e == &oom_error) {
		keel_error_free(cause);
		return e;
	}
	e->cause = cause;
	return e;
}

static struct keel_error *error_copy(const struct keel_error *src)
{
	struct keel_error *e;

	if (src == NULL)
		return NULL;
	e = keel_error_new(src->code, "%s", keel_error_message(src));
	if (e == &oom_error)
		return e;
	e->panic_kind = src->panic_kind;
	e->signo = src->signo;
	e->fault_addr = src->fault_addr;
	e->cause = error_copy(src->cause);
	return e;
}

struct keel_error *keel_error_from_panic(const struct keel_panic *p)
{
	struct keel_error *e;

	if (p == NULL)
		return NULL;
	e = keel_error_new(KEEL_EPANIC, "%s", keel_panic_message(p));
	if (e == &oom_error)
		return e;
	e->panic_kind = (int)keel_panic_kind(p);
	e->signo = keel_panic_fault(p)->signo;
	e->fault_addr = keel_panic_fault(p)->addr;
	e->cause = error_copy(keel_panic_error_value(p));
	return e;
}

int keel_error_code(const struct keel_error *e)
{
	return e != NULL ? e->code : 0;
}

const char *keel_error_message(const struct keel_error *e)
{
	if (e == NULL)
		return "";
	return e == &oom_error ? oom_text : e->msg;
}

const struct keel_error *keel_error_cause(const struct keel_error *e)
{
	return e != NULL ? e->cause : NULL;
}

int keel_error_is(const struct keel_error *e, int code)
{
	for (; e != NULL; e = e->cause)
		if (e->code == code)
			return 1;
	return 0;
}

int keel_error_panic_kind(const struct keel_error *e)
{
	return e != NULL ? e->panic_kind : -1;
}

int keel_error_signo(const struct keel_error *e)
{
	return e != NULL ? e->signo : 0;
}

void *keel_error_fault_addr(const struct keel_error *e)
{
	return e != NULL ? e->fault_addr : NULL;
}

/* Appends s at offset len of buf (capacity n), truncating like snprintf and
 * keeping buf NUL-terminated; returns the length the full text needs. */
static size_t append(char *buf, size_t n, size_t len, const char *s)
{
	size_t k = strlen(s);

	if (len + 1 < n) {
		size_t room = n - len - 1, c = k < room ? k : room;

		memcpy(buf + len, s, c);
		buf[len + c] = '\0';
	}
	return len + k;
}

size_t keel_error_format(const struct keel_error *e, char *buf, size_t n)
{
	size_t len = 0;

	if (n > 0)
		buf[0] = '\0';
	for (; e != NULL; e = e->cause) {
		if (len > 0)
			len = append(buf, n, len, ": ");
		len = append(buf, n, len, keel_error_message(e));
	}
	return len;
}

void keel_error_free(struct keel_error *e)
{
	while (e != NULL && e != &oom_error) {
		struct keel_error *cause = e->cause;
		free(e);
		e = cause;
	}
}
