/* KEEL_TEST_LABELS: threads */
/*
 * tests/core/test_fault.c - hardware faults as panics (rule 6).
 *
 * A NULL or near-NULL dereference, an integer division fault and a stack
 * overflow raise ordinary panics with Go's messages in the faulting thread;
 * a fault at any other address crashes the process unless the thread asked
 * for keel_panic_on_fault(1). Fault sites are KEEL_TEST_NO_SANITIZE and read
 * their operands from volatile globals, so neither the optimiser (which turns
 * a provable NULL dereference into ud2) nor UBSan gets there first.
 */
#define _GNU_SOURCE
#include <keel.h>
#include "keel_test.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define NIL_MSG "runtime error: invalid memory address or nil pointer dereference"
#define DIV_MSG "runtime error: integer divide by zero"
#define OVF_MSG "runtime error: integer overflow"
#define STACK_MSG "runtime error: stack overflow"

/* Operands the optimiser cannot see through. */
static int *volatile nil_int;
static void (*volatile nil_fn)(void);
static const char *volatile nil_str;
static volatile int vzero, vone = 1, vint_min = INT_MIN, vminus_one = -1;
static volatile long long vll_min = LLONG_MIN, vll_minus_one = -1;
static volatile int vsink;
static volatile long long vll_sink;
static volatile size_t vsize_sink;
static volatile int never; /* stops the recursion only in the compiler's mind */

/* ------------------------------------------------------------------------
 * Catching a panic and keeping what it said
 * ------------------------------------------------------------------------ */

struct caught {
	int recovered;
	enum keel_panic_kind kind;
	int runtime;
	struct keel_fault fault;
	char msg[160];
	size_t nframes;
	void *frames[64];
};

static void catch_panic(void *arg)
{
	struct caught *c = arg;
	const struct keel_panic *p = keel_recover();
	void *const *frames;
	size_t i;

	if (p == NULL)
		return;
	c->recovered++;
	c->kind = keel_panic_kind(p);
	c->runtime = keel_panic_is_runtime(p);
	c->fault = *keel_panic_fault(p);
	snprintf(c->msg, sizeof(c->msg), "%s", keel_panic_message(p));
	c->nframes = keel_panic_stack(p, &frames);
	for (i = 0; i < c->nframes && i < 64; i++)
		c->frames[i] = frames[i];
}

struct guarded {
	void (*fn)(void *);
	void *arg;
	struct caught *c;
};

static void guarded_body(void *arg)
{
	struct guarded *g = arg;

	keel_defer(catch_panic, g->c);
	g->fn(g->arg);
}

/* Runs fn(arg) in a scope whose deferred call recovers into *c; returns
 * keel_call's result (1: a panic was recovered). */
static int guard(void (*fn)(void *), void *arg, struct caught *c)
{
	struct guarded g = { fn, arg, c };

	memset(c, 0, sizeof(*c));
	return keel_call(guarded_body, &g);
}

static void count(void *arg)
{
	(*(int *)arg)++;
}

/* ------------------------------------------------------------------------
 * Symbols: dladdr sees only .dynsym, and a test binary linked without
 * -rdynamic exports none of its functions, so read the ELF .symtab too.
 * ------------------------------------------------------------------------ */

struct symfile {
	const unsigned char *map;
	size_t size;
	const Elf64_Sym *syms;
	size_t nsyms;
	const char *names;
};

static int symfile_open(struct symfile *f, const char *path)
{
	const Elf64_Ehdr *eh;
	const Elf64_Shdr *sh;
	struct stat st;
	int fd, i;

	memset(f, 0, sizeof(*f));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(*eh)) {
		close(fd);
		return -1;
	}
	f->size = (size_t)st.st_size;
	f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (f->map == MAP_FAILED)
		return -1;
	eh = (const Elf64_Ehdr *)f->map;
	sh = (const Elf64_Shdr *)(f->map + eh->e_shoff);
	for (i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_SYMTAB)
			continue;
		f->syms = (const Elf64_Sym *)(f->map + sh[i].sh_offset);
		f->nsyms = sh[i].sh_size / sizeof(Elf64_Sym);
		f->names = (const char *)(f->map + sh[sh[i].sh_link].sh_offset);
		return 0;
	}
	return -1;
}

/* The name of the function whose code holds pc (or pc - 1, for a return
 * address at the very end of a function), or NULL. */
static const char *symbol_name(const void *pc, char *buf, size_t size)
{
	static struct symfile exe;
	static int exe_state; /* 0: not read, 1: read, -1: failed */
	Dl_info info, self;
	uintptr_t off;
	size_t i;

	if (dladdr(pc, &info) == 0)
		return NULL;
	if (dladdr((void *)symbol_name, &self) != 0 &&
	    info.dli_fbase == self.dli_fbase) {
		if (exe_state == 0)
			exe_state = symfile_open(&exe, "/proc/self/exe") == 0 ? 1 : -1;
		if (exe_state == 1) {
			/* PIE: symbol values are offsets from the load base. */
			off = (uintptr_t)pc - (uintptr_t)info.dli_fbase;
			for (i = 0; i < exe.nsyms; i++) {
				const Elf64_Sym *s = &exe.syms[i];

				if (ELF64_ST_TYPE(s->st_info) != STT_FUNC)
					continue;
				if ((off >= s->st_value &&
				     off < s->st_value + s->st_size) ||
				    (off - 1 >= s->st_value &&
				     off - 1 < s->st_value + s->st_size)) {
					snprintf(buf, size, "%s",
						 exe.names + s->st_name);
					return buf;
				}
			}
		}
	}
	if (info.dli_sname == NULL)
		return NULL;
	snprintf(buf, size, "%s", info.dli_sname);
	return buf;
}

/* Index of the first frame inside function name, or -1. */
static int find_frame(void *const *frames, size_t n, const char *name)
{
	char buf[256];
	size_t i;

	for (i = 0; i < n; i++) {
		const char *s = symbol_name(frames[i], buf, sizeof(buf));

		if (s != NULL && strcmp(s, name) == 0)
			return (int)i;
	}
	return -1;
}

static void dump_frames(void *const *frames, size_t n)
{
	char buf[256];
	size_t i;

	for (i = 0; i < n; i++) {
		const char *s = symbol_name(frames[i], buf, sizeof(buf));

		fprintf(stderr, "  #%zu %p %s\n", i, frames[i], s ? s : "?");
	}
}

/* ------------------------------------------------------------------------
 * Fault sites
 * ------------------------------------------------------------------------ */

KEEL_TEST_NO_SANITIZE static void deref_nil(void *arg)
{
	(void)arg;
	vsink = *nil_int;
}

KEEL_TEST_NO_SANITIZE static void deref_nil_big(void *arg)
{
	(void)arg;
	vsink = ((volatile int *)nil_int)[5000]; /* Go's nil-deref-big */
}

KEEL_TEST_NO_SANITIZE static void write_nil(void *arg)
{
	(void)arg;
	((volatile int *)nil_int)[3] = 1;
}

KEEL_TEST_NO_SANITIZE static void call_nil(void *arg)
{
	(void)arg;
	nil_fn();
	vsink++; /* not a tail call: the caller's frame stays on the stack */
}

KEEL_TEST_NO_SANITIZE static void strlen_nil(void *arg)
{
	(void)arg;
	vsize_sink = strlen(nil_str);
}

KEEL_TEST_NO_SANITIZE static void divide_zero(void *arg)
{
	(void)arg;
	vsink = vone / vzero;
}

KEEL_TEST_NO_SANITIZE static void modulo_zero(void *arg)
{
	(void)arg;
	vsink = vone % vzero;
}

KEEL_TEST_NO_SANITIZE static void divide_overflow(void *arg)
{
	(void)arg;
	vsink = vint_min / vminus_one;
}

KEEL_TEST_NO_SANITIZE static void modulo_overflow(void *arg)
{
	(void)arg;
	vsink = vint_min % vminus_one;
}

KEEL_TEST_NO_SANITIZE static void divide_overflow_64(void *arg)
{
	(void)arg;
	vll_sink = vll_min / vll_minus_one;
}

KEEL_TEST_NO_SANITIZE static void deref_addr(void *arg)
{
	vsink = *(volatile int *)arg;
}

/* Small frames: each one touches its page, so the recursion walks into the
 * guard page instead of jumping over it into some other mapping. */
KEEL_TEST_NO_SANITIZE static int recurse(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (never)
		return pad[0];
	return recurse(depth + 1) + pad[0];
}

static void overflow(void *arg)
{
	(void)arg;
	vsink = recurse(0);
}

/* Named, non-static and never inlined, so its frame can be found by name. */
void fault_test_nil_site(void);
void fault_test_nil_caller(void *arg);

KEEL_TEST_NO_SANITIZE void fault_test_nil_site(void)
{
	vsink = *nil_int;
}

KEEL_TEST_NO_SANITIZE void fault_test_nil_caller(void *arg)
{
	(void)arg;
	fault_test_nil_site();
	vsink++;
}

/* Checks c holds a recovered NULL dereference at addr. */
#define CHECK_NIL(c, where)                                                    \
	do {                                                                  \
		CHECK_INT((c).recovered, ==, 1);                              \
		CHECK_STR((c).msg, NIL_MSG);                                  \
		CHECK_INT((c).kind, ==, KEEL_PANIC_NIL_DEREF);                \
		CHECK_INT((c).runtime, ==, 1);                                \
		CHECK_INT((c).fault.signo, ==, SIGSEGV);                      \
		CHECK((c).fault.addr == (void *)(where));                      \
	} while (0)

#define CHECK_DIV(c)                                                          \
	do {                                                                  \
		CHECK_INT((c).recovered, ==, 1);                              \
		CHECK_STR((c).msg, DIV_MSG);                                  \
		CHECK_INT((c).kind, ==, KEEL_PANIC_DIVIDE);                   \
		CHECK_INT((c).runtime, ==, 1);                                \
		CHECK_INT((c).fault.signo, ==, SIGFPE);                       \
		CHECK_INT((c).fault.code, ==, FPE_INTDIV);                    \
	} while (0)

/* ------------------------------------------------------------------------
 * NULL and near-NULL
 * ------------------------------------------------------------------------ */

TEST(nil_deref)
{
	struct caught c;
	char buf[256];

	CHECK_INT(guard(deref_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_INT(c.fault.code, ==, SEGV_MAPERR);
	/* The faulting instruction, not wherever the panic was raised. */
	CHECK(c.fault.pc != NULL);
	CHECK(symbol_name(c.fault.pc, buf, sizeof(buf)) != NULL);
	CHECK_STR(buf, "deref_nil");
	CHECK_STR(keel_panic_kind_name(c.kind), "nil-dereference");
	CHECK_INT(keel_panicking(), ==, 0);
}

TEST(nil_deref_big)
{
	struct caught c;

	CHECK_INT(guard(deref_nil_big, NULL, &c), ==, 1);
	CHECK_NIL(c, 5000 * sizeof(int));
}

TEST(nil_deref_write)
{
	struct caught c;

	CHECK_INT(guard(write_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 3 * sizeof(int));
}

/* Just below Go's 64 KiB limit is still a nil dereference. */
TEST(nil_deref_below_64k)
{
	struct caught c;

	CHECK_INT(guard(deref_addr, (void *)(uintptr_t)(64 * 1024 - 8), &c), ==, 1);
	CHECK_NIL(c, 64 * 1024 - 8);
}

TEST(nil_function_pointer)
{
	struct caught c;

	CHECK_INT(guard(call_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK(c.fault.pc == NULL);
}

TEST(nil_strlen_in_libc)
{
	struct caught c;
	Dl_info info;

	CHECK_INT(guard(strlen_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	/* The fault happened inside libc, not in code the test compiled. */
	CHECK(dladdr(c.fault.pc, &info) != 0);
	CHECK(info.dli_fname != NULL);
	CHECK_CONTAINS(info.dli_fname, "libc.so");
}

/* ------------------------------------------------------------------------
 * Integer division
 * ------------------------------------------------------------------------ */

TEST(divide_by_zero)
{
	struct caught c;
	char buf[256];

	CHECK_INT(guard(divide_zero, NULL, &c), ==, 1);
	CHECK_DIV(c);
	CHECK(symbol_name(c.fault.pc, buf, sizeof(buf)) != NULL);
	CHECK_STR(buf, "divide_zero");
	CHECK_STR(keel_panic_kind_name(c.kind), "divide-by-zero");

	CHECK_INT(guard(modulo_zero, NULL, &c), ==, 1);
	CHECK_DIV(c);
}

/* INT_MIN / -1 traps (#DE) on x86-64 like a division by zero. Linux reports
 * #DE as FPE_INTDIV whatever its cause; keel names FPE_INTOVF "integer
 * overflow" and FPE_INTDIV "integer divide by zero", so the message follows
 * the si_code the kernel delivered. */
static void check_overflow_division(void (*fn)(void *))
{
	struct caught c;

	CHECK_INT(guard(fn, NULL, &c), ==, 1);
	CHECK_INT(c.recovered, ==, 1);
	CHECK_INT(c.kind, ==, KEEL_PANIC_DIVIDE);
	CHECK_INT(c.fault.signo, ==, SIGFPE);
	CHECK(c.fault.code == FPE_INTDIV || c.fault.code == FPE_INTOVF);
	CHECK_STR(c.msg, c.fault.code == FPE_INTOVF ? OVF_MSG : DIV_MSG);
	printf("  INT_MIN / -1: si_code %d, \"%s\"\n", c.fault.code, c.msg);
}

TEST(divide_overflow)
{
	check_overflow_division(divide_overflow);
	check_overflow_division(modulo_overflow);
	check_overflow_division(divide_overflow_64);
}

/* ------------------------------------------------------------------------
 * Stack overflow
 * ------------------------------------------------------------------------ */

static int outer_ran, inner_ran, deep_ran;
static char order[16];

static void append(void *arg)
{
	size_t n = strlen(order);

	order[n] = *(const char *)arg;
	order[n + 1] = '\0';
}

KEEL_TEST_NO_SANITIZE static int recurse_deferring(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (never)
		return pad[0];
	if (depth == 100) {
		int r = 0;

		/* A scope opened deep down: its deferred call runs while the
		 * overflow unwinds, on the alternate signal stack. */
		KEEL_SCOPE {
			keel_defer(count, &deep_ran);
			keel_defer(append, "d");
			r = recurse_deferring(depth + 1);
		}
		return r + pad[0];
	}
	return recurse_deferring(depth + 1) + pad[0];
}

static void overflow_body(void *arg)
{
	(void)arg;
	keel_defer(count, &outer_ran);
	keel_defer(append, "o");
	KEEL_SCOPE {
		keel_defer(count, &inner_ran);
		keel_defer(append, "i");
		vsink = recurse_deferring(0);
	}
}

TEST(stack_overflow)
{
	struct caught c;
	int i;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	/* Three times: each recovery must leave the thread able to catch
	 * the next overflow (alternate stack usable, signal unblocked). */
	for (i = 1; i <= 3; i++) {
		order[0] = '\0';
		CHECK_INT(guard(overflow_body, NULL, &c), ==, 1);
		CHECK_INT(c.recovered, ==, 1);
		CHECK_STR(c.msg, STACK_MSG);
		CHECK_INT(c.kind, ==, KEEL_PANIC_STACK_OVERFLOW);
		CHECK_INT(c.fault.signo, ==, SIGSEGV);
		CHECK_INT(c.runtime, ==, 1);
		CHECK_INT(deep_ran, ==, i);
		CHECK_INT(inner_ran, ==, i);
		CHECK_INT(outer_ran, ==, i);
		CHECK_STR(order, "dio");
		CHECK_INT(keel_panicking(), ==, 0);
	}
	/* And the thread still handles the other faults. */
	CHECK_INT(guard(deref_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_INT(guard(divide_zero, NULL, &c), ==, 1);
	CHECK_DIV(c);
}

struct overflow_run {
	int recovered;
	int stack_kind;
	int nil_after;
	char msg[160];
};

static void *overflow_thread(void *arg)
{
	struct overflow_run *r = arg;
	struct caught c;
	int i;

	for (i = 0; i < 3; i++) {
		if (guard(overflow, NULL, &c) == 1 && c.recovered == 1)
			r->recovered++;
		if (c.kind == KEEL_PANIC_STACK_OVERFLOW)
			r->stack_kind++;
		snprintf(r->msg, sizeof(r->msg), "%s", c.msg);
	}
	if (guard(deref_nil, NULL, &c) == 1 && c.kind == KEEL_PANIC_NIL_DEREF)
		r->nil_after = 1;
	return NULL;
}

static void run_overflow_thread(size_t stack_size)
{
	struct overflow_run r;
	pthread_attr_t attr;
	pthread_t th;

	memset(&r, 0, sizeof(r));
	CHECK_INT(pthread_attr_init(&attr), ==, 0);
	if (stack_size != 0)
		CHECK_INT(pthread_attr_setstacksize(&attr, stack_size), ==, 0);
	CHECK_INT(pthread_create(&th, &attr, overflow_thread, &r), ==, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	pthread_attr_destroy(&attr);
	CHECK_INT(r.recovered, ==, 3);
	CHECK_INT(r.stack_kind, ==, 3);
	CHECK_STR(r.msg, STACK_MSG);
	CHECK_INT(r.nil_after, ==, 1);
}

TEST(stack_overflow_thread)
{
	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();
	run_overflow_thread(0);          /* the default (8 MiB here) */
	run_overflow_thread(256 * 1024); /* a small one */
}

/* A deferred call that runs while a stack overflow unwinds runs on the
 * alternate signal stack; a NULL dereference there is still a nil
 * dereference, not another stack overflow. */
static void nil_deref_while_unwinding(void *arg)
{
	(void)arg;
	deref_nil(NULL);
}

static void overflow_then_nil(void *arg)
{
	(void)arg;
	keel_defer(nil_deref_while_unwinding, NULL);
	vsink = recurse(0);
}

static void *overflow_then_nil_thread(void *arg)
{
	struct caught *c = arg;

	guard(overflow_then_nil, NULL, c);
	return NULL;
}

TEST(fault_in_deferred_call_after_overflow)
{
	struct caught c;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	/* The newest panic is what recover returns, as in Go. */
	CHECK_INT(guard(overflow_then_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_INT(keel_panicking(), ==, 0);
}

/* In a thread, whose alternate stack usually sits right below its stack. */
TEST(fault_in_deferred_call_after_overflow_thread)
{
	struct caught c;
	pthread_t th;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	memset(&c, 0, sizeof(c));
	CHECK_INT(pthread_create(&th, NULL, overflow_then_nil_thread, &c), ==, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_NIL(c, 0);
}

/* A deferred call that, while a stack overflow unwinds, recovers a fault of
 * its own and returns: the overflow then goes on unwinding to the outer
 * scope. The nested fault must not reuse the part of the alternate stack
 * that the overflow's unwinding still stands on. */
struct nested_result {
	int inner_ret;
	struct caught inner;
	struct caught outer;
};

static void guard_nil_while_unwinding(void *arg)
{
	struct nested_result *r = arg;

	r->inner_ret = guard(deref_nil, NULL, &r->inner);
}

static void overflow_then_guarded_nil(void *arg)
{
	keel_defer(guard_nil_while_unwinding, arg);
	vsink = recurse(0);
}

static void *overflow_then_guarded_nil_thread(void *arg)
{
	struct nested_result *r = arg;

	guard(overflow_then_guarded_nil, r, &r->outer);
	return NULL;
}

static void check_nested_result(const struct nested_result *r)
{
	CHECK_INT(r->inner_ret, ==, 1);
	CHECK_NIL(r->inner, 0);
	CHECK_INT(r->outer.recovered, ==, 1);
	CHECK_STR(r->outer.msg, STACK_MSG);
	CHECK_INT(r->outer.kind, ==, KEEL_PANIC_STACK_OVERFLOW);
}

TEST(recovered_fault_in_deferred_call_after_overflow)
{
	struct nested_result r;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	memset(&r, 0, sizeof(r));
	CHECK_INT(guard(overflow_then_guarded_nil, &r, &r.outer), ==, 1);
	check_nested_result(&r);
}

/* The same in a thread. mmap fills downwards, so a thread's alternate stack
 * usually sits right below its stack's guard page: a fault with the stack
 * pointer there must not be taken for the thread's stack overflowing. */
TEST(recovered_fault_in_deferred_call_after_overflow_thread)
{
	struct nested_result r;
	pthread_t th;

	/* Under TSan this case also fails a CHECK in TSan's longjmp
	 * interceptor (tsan_interceptors_posix.cpp:550). */
	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	memset(&r, 0, sizeof(r));
	CHECK_INT(pthread_create(&th, NULL, overflow_then_guarded_nil_thread, &r),
		  ==, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	check_nested_result(&r);
}

/* A deferred call that faults while a nil dereference unwinds: recover sees
 * the newer panic. */
static void divide_while_unwinding(void *arg)
{
	(void)arg;
	divide_zero(NULL);
}

static void nil_then_divide(void *arg)
{
	(void)arg;
	keel_defer(divide_while_unwinding, NULL);
	deref_nil(NULL);
}

static void nil_then_nil(void *arg)
{
	(void)arg;
	keel_defer(nil_deref_while_unwinding, NULL);
	deref_nil_big(NULL);
}

static void *nil_then_nil_thread(void *arg)
{
	struct caught *c = arg;

	guard(nil_then_nil, NULL, c);
	return NULL;
}

TEST(fault_in_deferred_call)
{
	struct caught c;

	CHECK_INT(guard(nil_then_divide, NULL, &c), ==, 1);
	CHECK_DIV(c);
	CHECK_INT(keel_panicking(), ==, 0);

	CHECK_INT(guard(nil_then_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
}

/* With KEEL_GENERIC_FAULTS the deferred calls of a fault run on the
 * alternate stack, which in a thread usually sits right below its stack. */
TEST(fault_in_deferred_call_thread)
{
	struct caught c;
	pthread_t th;

	memset(&c, 0, sizeof(c));
	CHECK_INT(pthread_create(&th, NULL, nil_then_nil_thread, &c), ==, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_NIL(c, 0);
}

/* ------------------------------------------------------------------------
 * Addresses that are not nil
 * ------------------------------------------------------------------------ */

/* A page at a fixed address far below where mmap puts things on its own,
 * so that nothing (keel's alternate stacks included) lands there later.
 * Under ASan 0xdead0000 lies in the shadow gap, mapped already: the second
 * range, below ASan's shadow, is free in both worlds. */
static void *fixed_page(uintptr_t want, int prot)
{
	const uintptr_t starts[] = { want, 0x1bad0000 };
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p = MAP_FAILED;
	int i, j;

	for (j = 0; j < 2 && p == MAP_FAILED; j++)
		for (i = 0; i < 64 && p == MAP_FAILED; i++)
			p = mmap((void *)(starts[j] + (uintptr_t)i * 0x100000),
				 page, prot,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
				 -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

/* A PROT_NONE page, at 0xdead0000 when that is free. */
static void *bad_page(void)
{
	return fixed_page(0xdead0000, PROT_NONE);
}

/* An address nothing is mapped at. */
static void *unmapped_page(void)
{
	void *p = fixed_page(0xbad00000, PROT_NONE);

	CHECK_INT(munmap(p, (size_t)sysconf(_SC_PAGESIZE)), ==, 0);
	return p;
}

static void bad_address_child(void *arg)
{
	KEEL_SCOPE {
		deref_addr(arg);
	}
	printf("survived\n");
}

static void check_bad_address_crash(void *addr, int code)
{
	struct keel_child ch;
	char want[160];

	keel_test_run_child(bad_address_child, addr, &ch);
	CHECK_INT(ch.exited, ==, 1);
	CHECK_INT(ch.code, ==, 2);
	CHECK(strstr(ch.out, "survived") == NULL);
	/* Go's wording: not a panic, a fatal error. */
	snprintf(want, sizeof(want),
		 "unexpected fault address %p\nfatal error: fault\n", addr);
	CHECK(strncmp(ch.out, want, strlen(want)) == 0);
	snprintf(want, sizeof(want),
		 "[signal SIGSEGV: segmentation violation code=0x%x addr=%p pc=0x",
		 code, addr);
	CHECK_CONTAINS(ch.out, want);
	CHECK_CONTAINS(ch.out, "\nthread ");
	CHECK_CONTAINS(ch.out, "[running]:\n");
}

TEST(bad_address_crashes)
{
	check_bad_address_crash(bad_page(), SEGV_ACCERR);
	check_bad_address_crash(unmapped_page(), SEGV_MAPERR);
}

TEST(bad_address_panic_on_fault)
{
	struct caught c;
	void *page = bad_page(), *gone = unmapped_page();

	CHECK_INT(keel_panic_on_fault(1), ==, 0);
	CHECK_INT(guard(deref_addr, page, &c), ==, 1);
	CHECK_INT(c.recovered, ==, 1);
	CHECK_INT(c.kind, ==, KEEL_PANIC_BAD_ADDRESS);
	CHECK_STR(c.msg, NIL_MSG);
	CHECK_INT(c.runtime, ==, 1);
	CHECK_INT(c.fault.signo, ==, SIGSEGV);
	CHECK_INT(c.fault.code, ==, SEGV_ACCERR);
	CHECK(c.fault.addr == page);
	CHECK_STR(keel_panic_kind_name(c.kind), "bad-address");

	CHECK_INT(guard(deref_addr, gone, &c), ==, 1);
	CHECK_INT(c.kind, ==, KEEL_PANIC_BAD_ADDRESS);
	CHECK_INT(c.fault.code, ==, SEGV_MAPERR);
	CHECK(c.fault.addr == gone);

	/* Nil dereferences keep their own kind with the switch on. */
	CHECK_INT(guard(deref_nil, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_INT(keel_panic_on_fault(0), ==, 1);
}

/* panic-on-fault is per thread: another thread still crashes. */
static void *bad_address_thread(void *arg)
{
	KEEL_SCOPE {
		deref_addr(arg);
	}
	return NULL;
}

static void panic_on_fault_other_thread_child(void *arg)
{
	pthread_t th;

	keel_panic_on_fault(1);
	pthread_create(&th, NULL, bad_address_thread, arg);
	pthread_join(th, NULL);
	printf("survived\n");
}

TEST(panic_on_fault_is_per_thread)
{
	struct keel_child ch;

	keel_test_run_child(panic_on_fault_other_thread_child, bad_page(), &ch);
	CHECK_INT(ch.code, ==, 2);
	CHECK(strstr(ch.out, "survived") == NULL);
	CHECK_CONTAINS(ch.out, "[signal SIGSEGV: segmentation violation code=0x2");
}

/* SIGBUS: a file mapping past the end of its (empty) file. */
static void *bus_page(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int fd = memfd_create("keel-sigbus", MFD_CLOEXEC);
	void *p;

	CHECK(fd >= 0);
	p = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	close(fd);
	return p;
}

TEST(bus_error)
{
	struct keel_child ch;
	struct caught c;
	void *p = bus_page();

	keel_test_run_child(bad_address_child, p, &ch);
	CHECK_INT(ch.code, ==, 2);
	CHECK_CONTAINS(ch.out, "[signal SIGBUS: bus error code=0x2 addr=");

	keel_panic_on_fault(1);
	CHECK_INT(guard(deref_addr, p, &c), ==, 1);
	CHECK_INT(c.kind, ==, KEEL_PANIC_BAD_ADDRESS);
	CHECK_INT(c.fault.signo, ==, SIGBUS);
	CHECK_INT(c.fault.code, ==, BUS_ADRERR);
	CHECK(c.fault.addr == p);
}

/* ------------------------------------------------------------------------
 * The same fault again and again
 * ------------------------------------------------------------------------ */

#define REPEAT 10000

TEST(repeat_nil_deref)
{
	struct caught c;
	int i, ok = 0;

	for (i = 0; i < REPEAT; i++) {
		if (guard(i % 2 ? deref_nil : deref_nil_big, NULL, &c) == 1 &&
		    c.recovered == 1 && c.kind == KEEL_PANIC_NIL_DEREF &&
		    c.fault.addr == (i % 2 ? NULL : (void *)(5000 * sizeof(int))))
			ok++;
	}
	CHECK_INT(ok, ==, REPEAT);
	CHECK_STR(c.msg, NIL_MSG);
}

static int div_recovered;

static void count_recovered(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	if (p != NULL && keel_panic_kind(p) == KEEL_PANIC_DIVIDE &&
	    strcmp(keel_panic_message(p), DIV_MSG) == 0)
		div_recovered++;
}

TEST(repeat_divide_by_zero)
{
	volatile int i, reached = 0;

	/* The block form this time: the panic resumes after the block. */
	for (i = 0; i < REPEAT; i++) {
		KEEL_SCOPE {
			keel_defer(count_recovered, NULL);
			divide_zero(NULL);
			reached++;
		}
	}
	CHECK_INT(div_recovered, ==, REPEAT);
	CHECK_INT(reached, ==, 0);
}

struct worker {
	int idx;
	pthread_barrier_t *start;
	int nil_ok, div_ok, bad;
};

static void *fault_worker(void *arg)
{
	struct worker *w = arg;
	struct caught c;
	int i;

	pthread_barrier_wait(w->start);
	for (i = 0; i < REPEAT; i++) {
		int nil = (i + w->idx) % 2 == 0;

		if (guard(nil ? deref_nil : divide_zero, NULL, &c) != 1 ||
		    c.recovered != 1) {
			w->bad++;
		} else if (nil && c.kind == KEEL_PANIC_NIL_DEREF &&
			   c.fault.signo == SIGSEGV && c.fault.addr == NULL &&
			   strcmp(c.msg, NIL_MSG) == 0) {
			w->nil_ok++;
		} else if (!nil && c.kind == KEEL_PANIC_DIVIDE &&
			   c.fault.signo == SIGFPE &&
			   strcmp(c.msg, DIV_MSG) == 0) {
			w->div_ok++;
		} else {
			w->bad++;
		}
	}
	return NULL;
}

TEST(threads_fault_concurrently)
{
	enum { NTHREADS = 4 };
	struct worker w[NTHREADS];
	pthread_t th[NTHREADS];
	pthread_barrier_t start;
	int i, total = 0;

	CHECK_INT(pthread_barrier_init(&start, NULL, NTHREADS), ==, 0);
	for (i = 0; i < NTHREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].idx = i;
		w[i].start = &start;
		CHECK_INT(pthread_create(&th[i], NULL, fault_worker, &w[i]), ==, 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
		CHECK_INT(w[i].bad, ==, 0);
		CHECK_INT(w[i].nil_ok, ==, REPEAT / 2);
		CHECK_INT(w[i].div_ok, ==, REPEAT / 2);
		total += w[i].nil_ok + w[i].div_ok;
	}
	CHECK_INT(total, ==, NTHREADS * REPEAT);
	pthread_barrier_destroy(&start);
}

/* ------------------------------------------------------------------------
 * No scope open: the crash report
 * ------------------------------------------------------------------------ */

static void nil_no_scope_child(void *arg)
{
	(void)arg;
	CHECK_INT(keel_init(), ==, 0);
	deref_nil(NULL);
	printf("survived\n");
}

static void noop(void *arg)
{
	(void)arg;
}

static void nil_after_scope_child(void *arg)
{
	(void)arg;
	CHECK_INT(keel_call(noop, NULL), ==, 0);
	deref_nil(NULL); /* the thread has state now, but no scope */
	printf("survived\n");
}

static void *nil_plain_thread(void *arg)
{
	(void)arg;
	deref_nil(NULL);
	return NULL;
}

static void nil_plain_thread_child(void *arg)
{
	pthread_t th;

	(void)arg;
	CHECK_INT(keel_init(), ==, 0);
	pthread_create(&th, NULL, nil_plain_thread, NULL);
	pthread_join(th, NULL);
	printf("survived\n");
}

static void divide_no_scope_child(void *arg)
{
	(void)arg;
	CHECK_INT(keel_init(), ==, 0);
	divide_zero(NULL);
	printf("survived\n");
}

static void check_no_scope_crash(void (*fn)(void *), const char *first,
				 const char *signal)
{
	struct keel_child ch;

	keel_test_run_child(fn, NULL, &ch);
	CHECK_INT(ch.exited, ==, 1);
	CHECK_INT(ch.code, ==, 2);
	CHECK(strstr(ch.out, "survived") == NULL);
	CHECK_CONTAINS(ch.out, first);
	CHECK_CONTAINS(ch.out, signal);
	CHECK_CONTAINS(ch.out, "\nthread ");
}

TEST(fault_without_scope_crashes)
{
	/* In the main thread before any scope, after one has closed, and in a
	 * thread that never used keel. */
	check_no_scope_crash(nil_no_scope_child, "panic: " NIL_MSG "\n",
			     "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x");
	check_no_scope_crash(nil_after_scope_child, "panic: " NIL_MSG "\n",
			     "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x");
	check_no_scope_crash(nil_plain_thread_child, "panic: " NIL_MSG "\n",
			     "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x");
	check_no_scope_crash(divide_no_scope_child, "panic: " DIV_MSG "\n",
			     "[signal SIGFPE: floating-point exception code=0x1 addr=");
}

/* ------------------------------------------------------------------------
 * Deferred calls during fault unwinding
 * ------------------------------------------------------------------------ */

static pthread_mutex_t mu = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;

static void locked_fault(void *arg)
{
	CHECK_INT(pthread_mutex_lock(&mu), ==, 0);
	keel_defer(keel_defer_mutex_unlock, &mu);
	if (arg != NULL)
		divide_zero(NULL);
	else
		deref_nil(NULL);
}

static void *lock_elsewhere(void *arg)
{
	(void)arg;
	if (pthread_mutex_lock(&mu) != 0)
		return (void *)1;
	pthread_mutex_unlock(&mu);
	return NULL;
}

TEST(deferred_unlock_on_fault)
{
	struct caught c;
	pthread_t th;
	void *ret = (void *)2;

	CHECK_INT(guard(locked_fault, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	/* An error-checking mutex: locking it again from this thread would
	 * fail with EDEADLK had the deferred unlock not run. */
	CHECK_INT(pthread_mutex_trylock(&mu), ==, 0);
	CHECK_INT(pthread_mutex_unlock(&mu), ==, 0);

	CHECK_INT(guard(locked_fault, "div", &c), ==, 1);
	CHECK_DIV(c);
	CHECK_INT(pthread_create(&th, NULL, lock_elsewhere, NULL), ==, 0);
	CHECK_INT(pthread_join(th, &ret), ==, 0);
	CHECK(ret == NULL);
}

static void nested_fault(void *arg)
{
	(void)arg;
	keel_defer(append, "a");
	KEEL_SCOPE {
		keel_defer(append, "b");
		keel_defer(append, "c");
		KEEL_SCOPE {
			keel_defer(append, "d");
			deref_nil(NULL);
		}
		keel_defer(append, "x"); /* never reached */
	}
	keel_defer(append, "y");
}

TEST(deferred_calls_run_in_order_on_fault)
{
	struct caught c;

	order[0] = '\0';
	CHECK_INT(guard(nested_fault, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_STR(order, "dcba");
}

/* ------------------------------------------------------------------------
 * Stacks
 * ------------------------------------------------------------------------ */

TEST(fault_stack_capture)
{
	struct caught c;
	int site, caller;

	/* Off by default. */
	CHECK_INT(guard(fault_test_nil_caller, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_INT(c.nframes, ==, 0);

	CHECK_INT(keel_panic_capture_stacks(1), ==, 0);
	CHECK_INT(guard(fault_test_nil_caller, NULL, &c), ==, 1);
	CHECK_NIL(c, 0);
	CHECK_INT(c.nframes, >, 0);
	/* The unwinder walks from the panic through the fault into the
	 * faulting function, then its caller. */
	site = find_frame(c.frames, c.nframes, "fault_test_nil_site");
	caller = find_frame(c.frames, c.nframes, "fault_test_nil_caller");
	if (site < 0 || caller <= site)
		dump_frames(c.frames, c.nframes);
	CHECK_INT(site, >=, 0);
	CHECK_INT(caller, >, site);
	CHECK_INT(keel_panic_capture_stacks(0), ==, 1);
}
