/*
 * src/obs/json_keel.c - keel's own values (errors, panics, stacks) as JSON,
 * one shape for log records, error reports and crash records.
 */
#define _GNU_SOURCE
#include <signal.h>

#include <keel/error.h>
#include <keel/panic.h>

#include "json.h"

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
