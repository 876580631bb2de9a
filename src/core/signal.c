/*
 * src/core/signal.c - hardware faults as panics.
 *
 * One process-wide handler for SIGSEGV, SIGBUS and SIGFPE, installed with
 * SA_SIGINFO | SA_ONSTACK so that it runs on the thread's alternate stack
 * (a stack overflow leaves no room on the thread's own). The handler only
 * classifies the fault and decides where it goes:
 *
 *   - no scope open on the thread, a non-nil bad address without
 *     panic-on-fault, or a fault inside the crash report itself: the crash
 *     report is written from the handler and the process exits with 2;
 *   - otherwise, on x86-64, the saved context is edited so that the thread
 *     resumes in keel__sigtramp (sigtramp_x86_64.S) and the handler returns.
 *     The kernel's sigreturn restores the signal mask, so the same fault in
 *     the same thread is caught again next time. After a stack overflow the
 *     trampoline starts at the top of the alternate stack, where the deferred
 *     calls then run; recovery jumps from there back to the thread's stack.
 *   - elsewhere (or with KEEL_GENERIC_FAULTS) the handler unblocks the signal
 *     and raises the panic directly, on the alternate stack.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h"

#if defined(__x86_64__) && !defined(KEEL_GENERIC_FAULTS)
#define KEEL_CONTEXT_TRAMPOLINE 1
extern void keel__sigtramp(void) KEEL__HIDDEN;
#endif

static const int fault_signals[] = { SIGSEGV, SIGBUS, SIGFPE };

/* A fault at or just below the thread's lowest stack address, or with the
 * stack pointer there, is a stack overflow (the kernel's guard gap below the
 * main stack is 1 MiB; a pthread guard is smaller). */
static int is_overflow(const struct keel__thread *t, uintptr_t addr,
		       uintptr_t sp)
{
	const uintptr_t below = (uintptr_t)1 << 20, above = 16 * 1024;
	uintptr_t alt = (uintptr_t)t->altstack;

	if (t->stack_lo == 0)
		return 0;
	/* A fault in a deferred call that runs on the alternate stack (after
	 * an overflow, or on the generic path) is not an overflow, although
	 * the kernel often maps that stack right below the thread's own. */
	if (alt != 0 && sp + t->altguard >= alt && sp < alt + t->altsize)
		return 0;
	if (addr + below >= t->stack_lo && addr < t->stack_lo + above)
		return 1;
	return sp < t->stack_lo + 256 && sp + below >= t->stack_lo;
}

static enum keel_panic_kind classify(const struct keel__thread *t, int sig,
				     const siginfo_t *si, uintptr_t sp)
{
	uintptr_t addr = (uintptr_t)si->si_addr;

	if (sig == SIGFPE) {
		if (si->si_code == FPE_INTDIV || si->si_code == FPE_INTOVF)
			return KEEL_PANIC_DIVIDE;
		return KEEL_PANIC_FLOAT;
	}
	if (t != NULL && is_overflow(t, addr, sp))
		return KEEL_PANIC_STACK_OVERFLOW;
	if (addr < KEEL__NIL_LIMIT)
		return KEEL_PANIC_NIL_DEREF;
	return KEEL_PANIC_BAD_ADDRESS;
}

static uintptr_t context_sp(const ucontext_t *uc)
{
#if defined(__x86_64__)
	return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
	return (uintptr_t)uc->uc_mcontext.sp;
#else
	(void)uc;
	return 0;
#endif
}

static uintptr_t context_pc(const ucontext_t *uc)
{
#if defined(__x86_64__)
	return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
	return (uintptr_t)uc->uc_mcontext.pc;
#else
	(void)uc;
	return 0;
#endif
}

#ifdef KEEL_CONTEXT_TRAMPOLINE
static void redirect(struct keel__thread *t, ucontext_t *uc,
		     enum keel_panic_kind kind, uintptr_t addr)
{
	greg_t *g = uc->uc_mcontext.gregs;
	uintptr_t sp = (uintptr_t)g[REG_RSP], pc = (uintptr_t)g[REG_RIP];
	uintptr_t ra = pc, cfa = sp, nsp;

	if (pc == addr && kind == KEEL_PANIC_NIL_DEREF) {
		/* A call through a NULL function pointer: the pc is not code,
		 * so show the caller, whose return address is on the stack. */
		ra = *(uintptr_t *)sp;
		cfa = sp + 8;
	}
	if (kind == KEEL_PANIC_STACK_OVERFLOW)
		nsp = (uintptr_t)t->altstack + t->altsize;
	else
		nsp = sp - 128; /* keep the red zone of the faulting frame */
	nsp = (nsp & ~(uintptr_t)15) - 16;
	((uintptr_t *)nsp)[0] = ra;
	((uintptr_t *)nsp)[1] = cfa;
	g[REG_RSP] = (greg_t)nsp;
	g[REG_RIP] = (greg_t)(uintptr_t)keel__sigtramp;
}
#endif

static void on_fault(int sig, siginfo_t *si, void *ctx)
{
	struct keel__thread *t = keel__cur();
	ucontext_t *uc = ctx;
	enum keel_panic_kind kind;
	int saved_errno = errno;

	kind = classify(t, sig, si, context_sp(uc));
	if (t != NULL) {
		t->fault.signo = sig;
		t->fault.code = si->si_code;
		t->fault.addr = si->si_addr;
		t->fault.pc = (void *)context_pc(uc);
		t->fault_kind = kind;
	}
	if (t == NULL || t->top == NULL || t->in_crash ||
	    (kind == KEEL_PANIC_BAD_ADDRESS && !t->panic_on_fault) ||
	    (kind == KEEL_PANIC_STACK_OVERFLOW && t->altstack == NULL)) {
		struct keel_panic p;

		memset(&p, 0, sizeof(p));
		p.kind = kind;
		p.fault.signo = sig;
		p.fault.code = si->si_code;
		p.fault.addr = si->si_addr;
		p.fault.pc = (void *)context_pc(uc);
		p.msg = (char *)keel__fault_message(kind, sig, si->si_code);
		keel__crash(t, &p, 1);
	}
#ifdef KEEL_CONTEXT_TRAMPOLINE
	redirect(t, uc, kind, (uintptr_t)si->si_addr);
	errno = saved_errno;
#else
	{
		sigset_t set;

		sigemptyset(&set);
		sigaddset(&set, sig);
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
		errno = saved_errno;
		keel__sigpanic();
	}
#endif
}

int keel__signals_install(void)
{
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(fault_signals) / sizeof(fault_signals[0]); i++)
		if (sigaction(fault_signals[i], &sa, NULL) != 0)
			return -errno;
	return 0;
}
