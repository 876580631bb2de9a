/*
 * src/core/thread.c - per-thread state: the defer stack, the panic record
 * pool, the alternate signal stack and the stack bounds that tell a stack
 * overflow from any other fault.
 *
 * The thread pointer uses the initial-exec TLS model: under the default
 * global-dynamic model every access from a shared library is a call to
 * __tls_get_addr, and the scope fast path reads it twice per scope. The price
 * is 8 bytes of static TLS, which a dlopen'ed libkeel can still get.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

__thread struct keel__hot *keel__tls
	__attribute__((tls_model("initial-exec")));

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t slots_used; /* bit i: slot i is owned by a live thread */
static pthread_key_t thread_key;
static int init_error;

static void thread_release(void *arg);

static void process_init(void)
{
	if (pthread_key_create(&thread_key, thread_release) != 0) {
		init_error = -EAGAIN;
		return;
	}
	keel__crash_init();
	init_error = keel__signals_install();
}

/* The alternate stack also runs the deferred calls of a stack-overflow
 * panic, so it is a few times the size the kernel asks for a bare handler. */
static size_t altstack_size(void)
{
	long page = sysconf(_SC_PAGESIZE);
	long min = sysconf(_SC_SIGSTKSZ);
	size_t size;

	if (min < SIGSTKSZ)
		min = SIGSTKSZ;
	size = (size_t)min * 4;
	if (size < 128 * 1024)
		size = 128 * 1024;
	return (size + (size_t)page - 1) & ~((size_t)page - 1);
}

static int altstack_setup(struct keel__thread *t)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t size = altstack_size();
	stack_t ss;
	char *map;

	map = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	/* A guard page below, so overflowing the alt stack faults too. */
	if (mprotect(map, page, PROT_NONE) != 0) {
		int err = -errno;
		munmap(map, size + page);
		return err;
	}
	memset(&ss, 0, sizeof(ss));
	ss.ss_sp = map + page;
	ss.ss_size = size;
	if (sigaltstack(&ss, NULL) != 0) {
		int err = -errno;
		munmap(map, size + page);
		return err;
	}
	t->altstack = map + page;
	t->altsize = size;
	t->altguard = page;
	return 0;
}

static void stack_bounds(struct keel__thread *t)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;

	if (pthread_getattr_np(pthread_self(), &attr) != 0)
		return;
	if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
		t->stack_lo = (uintptr_t)addr;
		t->stack_hi = (uintptr_t)addr + size;
	}
	pthread_attr_destroy(&attr);
}

static int slot_take(void)
{
	int i;

	pthread_mutex_lock(&slots_mu);
	for (i = 0; i < KEEL__SLOTS; i++)
		if (!(slots_used & (1u << i))) {
			slots_used |= 1u << i;
			break;
		}
	pthread_mutex_unlock(&slots_mu);
	return i < KEEL__SLOTS ? i : -1;
}

static void slot_give_back(int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&slots_mu);
	slots_used &= ~(1u << slot);
	pthread_mutex_unlock(&slots_mu);
}

int keel__thread_slot(void)
{
	return keel__self()->slot;
}

static void thread_release(void *arg)
{
	struct keel__thread *t = arg;
	struct keel_panic *p;

	if (t->altstack) {
		stack_t ss;

		memset(&ss, 0, sizeof(ss));
		ss.ss_flags = SS_DISABLE;
		sigaltstack(&ss, NULL);
		munmap(t->altstack - t->altguard, t->altsize + t->altguard);
	}
	while ((p = t->free) != NULL) {
		t->free = p->link;
		free(p);
	}
	free(t->defers);
	slot_give_back(t->slot);
	free(t);
	keel__tls = NULL;
}

struct keel__thread *keel__self_slow(void)
{
	struct keel__thread *t;

	pthread_once(&init_once, process_init);
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		keel__fatal("keel: out of memory setting up a thread");
	t->emergency.from_pool = 2;
	t->slot = slot_take();
	stack_bounds(t);
	/* Without an alternate stack faults still work; only a stack
	 * overflow cannot be caught. Not worth failing the thread for. */
	(void)altstack_setup(t);
	keel__tls = (struct keel__hot *)(void *)t;
	pthread_setspecific(thread_key, t);
	return t;
}

int keel_init(void)
{
	(void)keel__self();
	return init_error;
}

int keel_thread_prepare(void)
{
	struct keel__thread *t = keel__self();

	if (t->altstack == NULL)
		return altstack_setup(t);
	return 0;
}
