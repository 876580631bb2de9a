/*
 * src/core/alloc.c - allocation that panics instead of returning NULL.
 */
#include <stdlib.h>
#include <string.h>

#include <keel/alloc.h>

#include "internal.h"

static KEEL_COLD KEEL_NORETURN void out_of_memory(void)
{
	keel__panic_kind(KEEL_PANIC_OUT_OF_MEMORY, "runtime error: out of memory");
}

static KEEL_COLD KEEL_NORETURN void size_overflow(void)
{
	keel__panic_kind(KEEL_PANIC_OUT_OF_MEMORY,
			 "runtime error: allocation size overflow");
}

void *keel_malloc(size_t size)
{
	void *p = malloc(size != 0 ? size : 1);

	if (KEEL_UNLIKELY(p == NULL))
		out_of_memory();
	return p;
}

void *keel_calloc(size_t n, size_t size)
{
	void *p;

	if (n == 0 || size == 0)
		n = size = 1;
	else if (KEEL_UNLIKELY(n > SIZE_MAX / size))
		size_overflow();
	p = calloc(n, size);
	if (KEEL_UNLIKELY(p == NULL))
		out_of_memory();
	return p;
}

void *keel_realloc(void *p, size_t size)
{
	void *q = realloc(p, size != 0 ? size : 1);

	if (KEEL_UNLIKELY(q == NULL))
		out_of_memory();
	return q;
}

void *keel_reallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && KEEL_UNLIKELY(n > SIZE_MAX / size))
		size_overflow();
	return keel_realloc(p, n * size);
}

char *keel_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = keel_malloc(n);

	memcpy(d, s, n);
	return d;
}

char *keel_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *d = keel_malloc(len + 1);

	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}
