/*
 * src/obs/json_keel.c - keel's own values (errors, panics, stacks) as JSON,
 * one shape for log records, error reports and crash records.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <time.h>

#include <keel/error.h>
#include <keel/panic.h>

#include "json.h"

static __thread KEEL__IE time_t stamp_sec = -1;
static __thread KEEL__IE char stamp_text[20]; /* 2026-11-26T10:00:00 */

static void put_digits(char *p, int v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

void keel__rfc3339(const struct timespec *ts, char out[25])
{
	time_t sec = ts->tv_sec;
	int ms = (int)(ts->tv_nsec / 1000000);

	if (sec < 0 || sec > 253402300799LL || ms < 0 || ms > 999) {
		sec = 0;
		ms = 0;
	}
	if (sec != stamp_sec) {
		struct tm tm;

		gmtime_r(&sec, &tm);
		put_digits(stamp_text, tm.tm_year + 1900, 4);
		stamp_text[4] = '-';
		put_digits(stamp_text + 5, tm.tm_mon + 1, 2);
		stamp_text[7] = '-';
		put_digits(stamp_text + 8, tm.tm_mday, 2);
		stamp_text[10] = 'T';
		put_digits(stamp_text + 11, tm.tm_hour, 2);
		stamp_text[13] = ':';
		put_digits(stamp_text + 14, tm.tm_min, 2);
		stamp_text[16] = ':';
		put_digits(stamp_text + 17, tm.tm_sec, 2);
		stamp_sec = sec;
	}
	memcpy(out, stamp_text, 19);
	out[19] = '.';
	put_digits(out + 20, ms, 3);
	out[23] = 'Z';
	out[24] = '\0';
}

const char *keel__signal_name(int signo)
{
	switch (signo) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGFPE: return "SIGFPE";
	case SIGILL: return "SIGILL";
	case SIGABRT: return "SIGABRT";
	case SIGTRAP: return "SIGTRAP";
	case SIGSYS: return "SIGSYS";
	default: return "SIG?";
	}
}

void keel__json_fault(struct keel__json *j, const struct keel_fault *f)
{
	keel__json_obj(j);
	keel__json_key(j, "signo");
	keel__json_int(j, f->signo);
	keel__json_key(j, "name");
	keel__json_str(j, keel__signal_name(f->signo));
	keel__json_key(j, "code");
	keel__json_int(j, f->code);
	keel__json_key(j, "addr");
	keel__json_ptr(j, f->addr);
	keel__json_key(j, "pc");
	keel__json_ptr(j, f->pc);
	keel__json_obj_end(j);
}

void keel__json_error(struct keel__json *j, const struct keel_error *e)
{
	int depth = 0;

	if (e == NULL) {
		keel__json_null(j);
		return;
	}
	/* The cause chain nests: {"message":..,"cause":{"message":..}}. */
	for (; e != NULL && depth < 32; e = keel_error_cause(e), depth++) {
		if (depth > 0)
			keel__json_key(j, "cause");
		keel__json_obj(j);
		keel__json_key(j, "message");
		keel__json_str(j, keel_error_message(e));
		keel__json_key(j, "code");
		keel__json_int(j, keel_error_code(e));
		keel__json_key(j, "error");
		keel__json_str(j, keel_strerror(keel_error_code(e)));
	}
	while (depth-- > 0)
		keel__json_obj_end(j);
}

static void frame(struct keel__json *j, void *pc, const void *fault_pc)
{
	struct keel_frame f;

	keel__frame_resolve(pc, pc == fault_pc, &f);
	keel__json_obj(j);
	if (f.function != NULL) {
		keel__json_key(j, "function");
		keel__json_str(j, f.function);
	}
	if (f.file != NULL) {
		keel__json_key(j, "file");
		keel__json_str(j, f.file);
		keel__json_key(j, "line");
		keel__json_int(j, f.line);
	}
	keel__json_key(j, "pc");
	keel__json_ptr(j, pc);
	keel__json_obj_end(j);
}

void keel__json_panic(struct keel__json *j, const struct keel_panic *p,
		      void *const *frames, size_t n)
{
	const struct keel_fault *f = keel_panic_fault(p);
	const struct keel_error *e = keel_panic_error_value(p);
	size_t i;

	keel__json_obj(j);
	keel__json_key(j, "message");
	keel__json_str(j, keel_panic_message(p));
	keel__json_key(j, "kind");
	keel__json_str(j, keel_panic_kind_name(keel_panic_kind(p)));
	keel__json_key(j, "runtime");
	keel__json_bool(j, keel_panic_is_runtime(p));
	if (f != NULL && f->signo != 0) {
		keel__json_key(j, "signal");
		keel__json_fault(j, f);
	}
	if (e != NULL) {
		keel__json_key(j, "error");
		keel__json_error(j, e);
	}
	keel__json_key(j, "stack");
	keel__json_arr(j);
	for (i = keel__stack_skip(frames, n); i < n; i++)
		frame(j, frames[i], f != NULL ? f->pc : NULL);
	keel__json_arr_end(j);
	keel__json_obj_end(j);
}
