/*
 * src/core/crash.c - the crash report of an unrecovered panic.
 *
 * Written like Go's: the panic chain ("panic: <msg> [recovered]" lines, the
 * newer ones tab-indented), the signal line for a fault, the thread, then the
 * stack. It may run inside a signal handler (a fault with no scope open), so
 * everything here uses write(2) and formats numbers by hand. As Redis'
 * debug.c does, backtrace() is called once at start-up so the first real
 * crash does not have to load libgcc's unwinder from a handler. Symbols come
 * from libbacktrace (function, file:line from the debug info; it allocates
 * with mmap, not malloc) where the build found it, and from
 * backtrace_symbols_fd() otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef KEEL_HAVE_LIBBACKTRACE
#include <backtrace.h>
#endif

#include "internal.h"

static _Atomic(keel_crash_hook_fn) crash_hook;
static _Atomic(void *) crash_hook_ud;
static atomic_int crashing;
static pthread_once_t crash_once = PTHREAD_ONCE_INIT;
#ifdef KEEL_HAVE_LIBBACKTRACE
static struct backtrace_state *bt_state;
#endif

static void crash_init_once(void)
{
	void *frame[2];

	(void)backtrace(frame, 2);
#ifdef KEEL_HAVE_LIBBACKTRACE
	bt_state = backtrace_create_state(NULL, 1, NULL, NULL);
#endif
}

void keel__crash_init(void)
{
	pthread_once(&crash_once, crash_init_once);
}

void keel_crash_hook_set(keel_crash_hook_fn fn, void *ud)
{
	atomic_store(&crash_hook_ud, ud);
	atomic_store(&crash_hook, fn);
}

/* ------------------------------------------------------------------------
 * Async-signal-safe output
 * ------------------------------------------------------------------------ */

struct out {
	int fd;
	size_t n;
	char buf[512];
};

static void out_flush(struct out *o)
{
	size_t off = 0;

	while (off < o->n) {
		ssize_t w = write(o->fd, o->buf + off, o->n - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	o->n = 0;
}

static void out_mem(struct out *o, const char *s, size_t len)
{
	while (len > 0) {
		size_t room = sizeof(o->buf) - o->n;
		size_t k = len < room ? len : room;

		memcpy(o->buf + o->n, s, k);
		o->n += k;
		s += k;
		len -= k;
		if (o->n == sizeof(o->buf))
			out_flush(o);
	}
}

static void out_str(struct out *o, const char *s)
{
	out_mem(o, s, strlen(s));
}

static void out_hex(struct out *o, uintptr_t v)
{
	char tmp[2 + 2 * sizeof(v)];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v != 0);
	tmp[--i] = 'x';
	tmp[--i] = '0';
	out_mem(o, tmp + i, sizeof(tmp) - i);
}

static void out_dec(struct out *o, long v)
{
	char tmp[24];
	size_t i = sizeof(tmp);
	unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;

	do {
		tmp[--i] = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		tmp[--i] = '-';
	out_mem(o, tmp + i, sizeof(tmp) - i);
}

/* ------------------------------------------------------------------------
 * The report
 * ------------------------------------------------------------------------ */

static const char *signal_name(int sig, const char **what)
{
	switch (sig) {
	case SIGSEGV:
		*what = "segmentation violation";
		return "SIGSEGV";
	case SIGBUS:
		*what = "bus error";
		return "SIGBUS";
	case SIGFPE:
		*what = "floating-point exception";
		return "SIGFPE";
	default:
		*what = "signal";
		return "SIG?";
	}
}

static void report_signal(struct out *o, const struct keel_panic *newest);

static void report_panics(struct out *o, struct keel__thread *t,
			  const struct keel_panic *newest)
{
	const struct keel_panic *chain[32];
	const struct keel_panic *q;
	size_t n = 0, i;

	if (t == NULL || newest != t->panic)
		chain[n++] = newest;
	for (q = t != NULL ? t->panic : NULL; q != NULL && n < 32; q = q->link)
		chain[n++] = q;
	for (i = n; i-- > 0;) {
		if (i != n - 1)
			out_str(o, "\t");
		out_str(o, "panic: ");
		out_str(o, keel_panic_message(chain[i]));
		if (chain[i]->recovered)
			out_str(o, " [recovered]");
		out_str(o, "\n");
	}
	report_signal(o, newest);
}

static void report_signal(struct out *o, const struct keel_panic *newest)
{
	if (newest->fault.signo != 0) {
		const char *what, *name = signal_name(newest->fault.signo, &what);

		out_str(o, "[signal ");
		out_str(o, name);
		out_str(o, ": ");
		out_str(o, what);
		out_str(o, " code=");
		out_hex(o, (uintptr_t)(unsigned)newest->fault.code);
		out_str(o, " addr=");
		out_hex(o, (uintptr_t)newest->fault.addr);
		out_str(o, " pc=");
		out_hex(o, (uintptr_t)newest->fault.pc);
		out_str(o, "]\n");
	}
}

static void report_thread(struct out *o)
{
	char name[17];

	memset(name, 0, sizeof(name));
	(void)prctl(PR_GET_NAME, name, 0, 0, 0);
	out_str(o, "\nthread ");
	out_dec(o, (long)syscall(SYS_gettid));
	out_str(o, " \"");
	out_str(o, name);
	out_str(o, "\" [running]:\n");
}

/* The frames of the panic machinery itself lead every report; like Go, which
 * starts at panic(), the report starts at the public entry point (keel_panic,
 * keel_index, ...) or, for a fault, at the faulting function. */
static int is_machinery(const char *fn)
{
	static const char *const names[] = {
		"keel__crash", "keel__fatal", "keel__panic_kind",
		"keel__sigpanic", "keel__sigtramp", "panic_run",
		"report_stack", "recovered", "on_fault",
		/* the sanitizers intercept backtrace() */
		"__interceptor_backtrace", "backtrace",
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(fn, names[i]) == 0)
			return 1;
	return 0;
}

#ifdef KEEL_HAVE_LIBBACKTRACE
struct frame_ctx {
	struct out *o;
	uintptr_t pc;
	int printed;
	int *leading; /* still inside the leading machinery frames */
};

static int on_pcinfo(void *data, uintptr_t pc, const char *file, int line,
		     const char *fn)
{
	struct frame_ctx *c = data;

	(void)pc;
	if (fn == NULL)
		return 0;
	if (*c->leading && is_machinery(fn)) {
		c->printed = 1;
		return 0;
	}
	*c->leading = 0;
	out_str(c->o, fn);
	out_str(c->o, "()\n\t");
	out_str(c->o, file != NULL ? file : "?");
	out_str(c->o, ":");
	out_dec(c->o, line);
	out_str(c->o, " pc=");
	out_hex(c->o, c->pc);
	out_str(c->o, "\n");
	c->printed = 1;
	return 0;
}

static void on_syminfo(void *data, uintptr_t pc, const char *sym,
		       uintptr_t symval, uintptr_t symsize)
{
	struct frame_ctx *c = data;

	(void)symsize;
	if (sym == NULL)
		return;
	c->printed = 1;
	if (*c->leading && is_machinery(sym))
		return;
	*c->leading = 0;
	out_str(c->o, sym);
	out_str(c->o, "()\n\t+");
	out_hex(c->o, pc - symval);
	out_str(c->o, " pc=");
	out_hex(c->o, c->pc);
	out_str(c->o, "\n");
}

static void on_bterror(void *data, const char *msg, int errnum)
{
	(void)data;
	(void)msg;
	(void)errnum;
}
#endif

/* The stack of the crash report, kept for keel_crash_stack. Only the thread
 * that won `crashing` writes it. */
static void *crash_frames[KEEL__MAX_FRAMES];
static int crash_nframes, crash_first;

static void report_stack(struct out *o, int skip)
{
	void **frames = crash_frames;
	int n = backtrace(frames, KEEL__MAX_FRAMES), i, leading = 1;

	crash_nframes = n;
	crash_first = n;
	for (i = skip; i < n; i++) {
		uintptr_t pc = (uintptr_t)frames[i];

		if (leading)
			crash_first = i;
#ifdef KEEL_HAVE_LIBBACKTRACE
		struct frame_ctx c = { o, pc, 0, &leading };

		if (bt_state != NULL) {
			/* A return address is one past its call instruction. */
			backtrace_pcinfo(bt_state, pc - 1, on_pcinfo, on_bterror, &c);
			if (!c.printed)
				backtrace_syminfo(bt_state, pc - 1, on_syminfo,
						  on_bterror, &c);
		}
		if (c.printed)
			continue;
#endif
		leading = 0;
		out_flush(o);
		backtrace_symbols_fd(&frames[i], 1, o->fd);
	}
	if (n == KEEL__MAX_FRAMES)
		out_str(o, "...additional frames elided...\n");
}

static KEEL_NORETURN void crash_enter_or_wait(struct keel__thread *t)
{
	/* A second thread crashing at the same time waits for the first to
	 * end the process; a fault inside the report itself ends it now. */
	if (t != NULL && t->in_crash) {
		static const char msg[] = "fatal error: fault while writing the "
					  "crash report\n";
		(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
		_exit(2);
	}
	for (;;)
		pause();
}

void keel__crash(struct keel__thread *t, const struct keel_panic *newest,
		 int in_handler)
{
	struct out o;
	keel_crash_hook_fn hook;

	if (atomic_exchange(&crashing, 1) != 0)
		crash_enter_or_wait(t);
	if (t != NULL)
		t->in_crash = 1;
	/* Outside a handler, keep the program's own buffered output ahead of
	 * the report, unless the fault left stdout's lock held. */
	if (!in_handler && ftrylockfile(stdout) == 0) {
		fflush_unlocked(stdout);
		funlockfile(stdout);
	}
	o.fd = STDERR_FILENO;
	o.n = 0;
	if (newest->kind == KEEL_PANIC_BAD_ADDRESS && in_handler) {
		/* Not a panic: memory is corrupt (see keel_panic_on_fault).
		 * Go words it the same way. */
		out_str(&o, "unexpected fault address ");
		out_hex(&o, (uintptr_t)newest->fault.addr);
		out_str(&o, "\nfatal error: fault\n");
		report_signal(&o, newest);
	} else {
		report_panics(&o, t, newest);
	}
	report_thread(&o);
	report_stack(&o, 1);
	out_flush(&o);
	hook = atomic_load(&crash_hook);
	if (hook != NULL)
		hook(newest, STDERR_FILENO, atomic_load(&crash_hook_ud));
	_exit(2);
}

size_t keel_crash_stack(void *const **frames)
{
	if (atomic_load(&crashing) == 0 || crash_first >= crash_nframes) {
		*frames = NULL;
		return 0;
	}
	*frames = crash_frames + crash_first;
	return (size_t)(crash_nframes - crash_first);
}

#ifdef KEEL_HAVE_LIBBACKTRACE
static int on_resolve_pc(void *data, uintptr_t pc, const char *file, int line,
			 const char *fn)
{
	struct keel_frame *f = data;

	(void)pc;
	if (fn == NULL || f->function != NULL)
		return 0;
	f->function = fn; /* the innermost (inlined) function comes first */
	f->file = file;
	f->line = file != NULL ? line : 0;
	return 0;
}

static void on_resolve_sym(void *data, uintptr_t pc, const char *sym,
			   uintptr_t symval, uintptr_t symsize)
{
	struct keel_frame *f = data;

	(void)pc;
	(void)symval;
	(void)symsize;
	if (sym != NULL && f->function == NULL)
		f->function = sym;
}
#endif

size_t keel__stack_skip(void *const *frames, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct keel_frame f;

		if (!keel_frame_resolve(frames[i], &f) || !is_machinery(f.function))
			break;
	}
	return i < n ? i : 0;
}

int keel_frame_resolve(void *pc, struct keel_frame *out)
{
	return keel__frame_resolve(pc, 0, out);
}

int keel__frame_resolve(void *pc, int exact, struct keel_frame *out)
{
	uintptr_t at = (uintptr_t)pc;

	memset(out, 0, sizeof(*out));
	out->pc = pc;
	if (at == 0)
		return 0;
	keel__crash_init();
	/* A return address is one past its call instruction; a faulting
	 * instruction's address is the instruction itself. */
	if (!exact)
		at -= 1;
#ifdef KEEL_HAVE_LIBBACKTRACE
	if (bt_state != NULL) {
		/* libbacktrace reads its debug info lazily and publishes it
		 * with atomics that a sanitizer cannot see (libbacktrace.a is
		 * not instrumented), and two first lookups race to fill the
		 * same tables: one lookup at a time. A crashing process may
		 * have died holding the lock, so the crash hook goes without. */
		static pthread_mutex_t bt_mu = PTHREAD_MUTEX_INITIALIZER;
		int locked = atomic_load(&crashing) == 0 &&
			     pthread_mutex_lock(&bt_mu) == 0;

		backtrace_pcinfo(bt_state, at, on_resolve_pc, on_bterror, out);
		if (out->function == NULL)
			backtrace_syminfo(bt_state, at, on_resolve_sym,
					  on_bterror, out);
		if (locked)
			pthread_mutex_unlock(&bt_mu);
	}
#endif
	if (out->function == NULL) {
		Dl_info info;

		if (dladdr((void *)at, &info) != 0 && info.dli_sname != NULL)
			out->function = info.dli_sname;
	}
	return out->function != NULL;
}

void keel__fatal(const char *msg)
{
	struct out o;

	o.fd = STDERR_FILENO;
	o.n = 0;
	out_str(&o, "fatal error: ");
	out_str(&o, msg);
	out_str(&o, "\n");
	report_thread(&o);
	report_stack(&o, 1);
	out_flush(&o);
	_exit(2);
}
