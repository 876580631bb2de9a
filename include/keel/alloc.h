/*
 * keel/alloc.h - allocation that panics instead of returning NULL.
 *
 * Each helper behaves like its libc twin but never returns NULL: when memory
 * runs out it panics with "runtime error: out of memory"
 * (KEEL_PANIC_OUT_OF_MEMORY), and a size computation that would overflow
 * panics with "runtime error: allocation size overflow". A size of 0 is
 * treated as 1, so every call returns a unique pointer to release with free().
 * Thread-safe, as malloc is.
 */
#ifndef KEEL_ALLOC_H
#define KEEL_ALLOC_H

#include <stddef.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

KEEL_API void *keel_malloc(size_t size);
KEEL_API void *keel_calloc(size_t n, size_t size);
/* keel_realloc(NULL, n) is keel_malloc(n); on a panic, p is left untouched. */
KEEL_API void *keel_realloc(void *p, size_t size);
/* keel_reallocarray - keel_realloc(p, n * size) with the product checked. */
KEEL_API void *keel_reallocarray(void *p, size_t n, size_t size);
KEEL_API char *keel_strdup(const char *s);
KEEL_API char *keel_strndup(const char *s, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_ALLOC_H */
