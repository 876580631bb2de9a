/* KEEL_TEST_LABELS: threads */
/*
 * tests/core/test_fortify.c - recovery under _FORTIFY_SOURCE.
 *
 * With _FORTIFY_SOURCE (and optimisation) glibc turns longjmp into
 * __longjmp_chk, which aborts with "longjmp causes uninitialized stack
 * frame" when the jump goes down the stack, unless it leaves the alternate
 * signal stack for somewhere outside it. Recovering a stack overflow does
 * exactly that: the deferred calls run on the alternate stack and the jump
 * lands back on the thread's stack (above or below it, depending on where
 * mmap put the two). The default build compiles libkeel and this file with
 * -D_FORTIFY_SOURCE=2 -O2; sanitizer and Debug builds do not, and then this
 * file only says so and runs the same cases on plain longjmp.
 *
 * keel's scopes use __builtin_setjmp by default, which no fortify check
 * sees; a program that defines KEEL_USE_LIBC_SETJMP gets _setjmp/longjmp
 * scopes, and this file does, so every recovery here goes through
 * __longjmp_chk. guard() therefore uses the block form: keel_call's own
 * scope is built into the library with the default.
 */
#define _GNU_SOURCE
#define KEEL_USE_LIBC_SETJMP 1
#include <keel.h>
#include "keel_test.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define NIL_MSG "runtime error: invalid memory address or nil pointer dereference"
#define STACK_MSG "runtime error: stack overflow"

static int *volatile nil_int;
static volatile int vsink;
static volatile int never;

KEEL_TEST_NO_SANITIZE static void deref_nil(void *arg)
{
	(void)arg;
	vsink = *nil_int;
}

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

struct caught {
	int recovered;
	enum keel_panic_kind kind;
	char msg[160];
};

static void catch_panic(void *arg)
{
	struct caught *c = arg;
	const struct keel_panic *p = keel_recover();

	if (p == NULL)
		return;
	c->recovered++;
	c->kind = keel_panic_kind(p);
	snprintf(c->msg, sizeof(c->msg), "%s", keel_panic_message(p));
}

struct guarded {
	void (*fn)(void *);
	struct caught *c;
};

static void guarded_body(void *arg)
{
	struct guarded *g = arg;

	keel_defer(catch_panic, g->c);
	g->fn(NULL);
}

static int guard(void (*fn)(void *), struct caught *c)
{
	struct guarded g = { fn, c };
	volatile int landed = 1;

	memset(c, 0, sizeof(*c));
	KEEL_SCOPE {
		guarded_body(&g);
		landed = 0;
	}
	return landed;
}

/* ------------------------------------------------------------------------
 * Which longjmp libkeel calls
 * ------------------------------------------------------------------------ */

/* 1 if the shared object holding addr imports sym, 0 if not, -1 if that
 * cannot be told (a static libkeel, an unreadable file). */
static int imports(const void *addr, const char *sym)
{
	const Elf64_Ehdr *eh;
	const Elf64_Shdr *sh;
	const unsigned char *map;
	struct stat st;
	Dl_info info;
	int fd, i, found = -1;

	if (dladdr(addr, &info) == 0 || info.dli_fname == NULL ||
	    info.dli_fname[0] == '\0' || strstr(info.dli_fname, ".so") == NULL)
		return -1;
	fd = open(info.dli_fname, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return -1;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return -1;
	eh = (const Elf64_Ehdr *)map;
	sh = (const Elf64_Shdr *)(map + eh->e_shoff);
	for (i = 0; i < eh->e_shnum && found < 0; i++) {
		const Elf64_Sym *syms;
		const char *names;
		size_t n, k;

		if (sh[i].sh_type != SHT_DYNSYM)
			continue;
		syms = (const Elf64_Sym *)(map + sh[i].sh_offset);
		names = (const char *)(map + sh[sh[i].sh_link].sh_offset);
		n = sh[i].sh_size / sizeof(*syms);
		found = 0;
		for (k = 0; k < n; k++)
			if (syms[k].st_shndx == SHN_UNDEF &&
			    strcmp(names + syms[k].st_name, sym) == 0)
				found = 1;
	}
	munmap((void *)map, (size_t)st.st_size);
	return found;
}

TEST(fortify_mode)
{
	int chk = imports((const void *)keel_call, "__longjmp_chk");

#if !defined(_FORTIFY_SOURCE)
	printf("  mode: built without _FORTIFY_SOURCE (plain longjmp)\n");
#elif !defined(__OPTIMIZE__)
	printf("  mode: _FORTIFY_SOURCE=%d without optimisation: inactive\n",
	       (int)_FORTIFY_SOURCE);
#else
	printf("  mode: _FORTIFY_SOURCE=%d, optimised: longjmp is __longjmp_chk\n",
	       (int)_FORTIFY_SOURCE);
#endif
	printf("  libkeel imports __longjmp_chk: %s\n",
	       chk == 1 ? "yes" : chk == 0 ? "no" : "unknown");
#if defined(__USE_FORTIFY_LEVEL) && __USE_FORTIFY_LEVEL > 0
	/* libkeel is built with the flags this file is: the recoveries below
	 * must have gone through __longjmp_chk, or they prove nothing. */
	CHECK(chk != 0);
#endif
}

/* ------------------------------------------------------------------------
 * The jumps that __longjmp_chk checks
 * ------------------------------------------------------------------------ */

TEST(recover_nil_deref)
{
	struct caught c;
	int i;

	for (i = 0; i < 3; i++) {
		CHECK_INT(guard(deref_nil, &c), ==, 1);
		CHECK_INT(c.recovered, ==, 1);
		CHECK_INT(c.kind, ==, KEEL_PANIC_NIL_DEREF);
		CHECK_STR(c.msg, NIL_MSG);
	}
}

TEST(recover_stack_overflow)
{
	struct caught c;
	int i;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	for (i = 0; i < 3; i++) {
		CHECK_INT(guard(overflow, &c), ==, 1);
		CHECK_INT(c.recovered, ==, 1);
		CHECK_INT(c.kind, ==, KEEL_PANIC_STACK_OVERFLOW);
		CHECK_STR(c.msg, STACK_MSG);
	}
	/* Back on the thread's stack, with a working alternate stack. */
	CHECK_INT(guard(deref_nil, &c), ==, 1);
	CHECK_STR(c.msg, NIL_MSG);
}

/* The block form: the jmp_buf is in this file's frame. */
TEST(recover_stack_overflow_in_block)
{
	volatile int resumed = 0, i;
	struct caught c;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN();

	for (i = 0; i < 3; i++) {
		memset(&c, 0, sizeof(c));
		KEEL_SCOPE {
			keel_defer(catch_panic, &c);
			vsink = recurse(0);
		}
		resumed++;
		CHECK_INT(c.recovered, ==, 1);
		CHECK_STR(c.msg, STACK_MSG);
	}
	CHECK_INT(resumed, ==, 3);
}

static void *fault_thread(void *arg)
{
	struct caught *c = arg;
	int i, ok = 0;

	for (i = 0; i < 3; i++)
		if (guard(overflow, c) == 1 && c->recovered == 1 &&
		    c->kind == KEEL_PANIC_STACK_OVERFLOW)
			ok++;
	for (i = 0; i < 3; i++)
		if (guard(deref_nil, c) == 1 && c->recovered == 1 &&
		    c->kind == KEEL_PANIC_NIL_DEREF)
			ok++;
	c->recovered = ok == 6 ? 1 : -1;
	return NULL;
}

static void run_fault_thread(pthread_attr_t *attr)
{
	struct caught c;
	pthread_t th;

	memset(&c, 0, sizeof(c));
	CHECK_INT(pthread_create(&th, attr, fault_thread, &c), ==, 0);
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(c.recovered, ==, 1);
}

/* mmap puts a thread's alternate stack right below its stack: the jump
 * back from the alternate stack goes up, which __longjmp_chk lets through
 * without asking sigaltstack. */
TEST(recover_in_thread)
{
	static const size_t sizes[] = { 0, 128 * 1024, 1024 * 1024 };
	size_t i;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN(); /* the threads overflow */
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		pthread_attr_t attr;

		CHECK_INT(pthread_attr_init(&attr), ==, 0);
		if (sizes[i] != 0)
			CHECK_INT(pthread_attr_setstacksize(&attr, sizes[i]), ==, 0);
		run_fault_thread(&attr);
		pthread_attr_destroy(&attr);
	}
}

/* A thread stack of our own, far below the alternate stack that keel maps
 * for the thread: the jump back goes down, and __longjmp_chk allows it only
 * after sigaltstack says the jump leaves the alternate stack. */
TEST(recover_in_thread_below_altstack)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE), size = 512 * 1024;
	pthread_attr_t attr;
	void *stack = MAP_FAILED;
	uintptr_t at;

	KEEL_TEST_SKIP_DEEP_RECURSION_UNDER_TSAN(); /* the thread overflows */
	/* Low, fixed addresses: below anything mmap hands out by itself
	 * (and below ASan's shadow). */
	for (at = 0x30000000; at < 0x40000000 && stack == MAP_FAILED;
	     at += 0x1000000)
		stack = mmap((void *)at, size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK |
			     MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(stack != MAP_FAILED);
	/* Our own guard page: a user stack gets none from glibc. */
	CHECK_INT(mprotect(stack, page, PROT_NONE), ==, 0);
	CHECK_INT(pthread_attr_init(&attr), ==, 0);
	CHECK_INT(pthread_attr_setstack(&attr, stack, size), ==, 0);
	run_fault_thread(&attr);
	pthread_attr_destroy(&attr);
	munmap(stack, size);
}
