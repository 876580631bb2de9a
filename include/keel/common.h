/*
 * keel/common.h - macros shared by every keel header.
 *
 * KEEL_API marks the symbols that libkeel exports. The library is built with
 * -fvisibility=hidden, so anything without KEEL_API stays internal.
 */
#ifndef KEEL_COMMON_H
#define KEEL_COMMON_H

#if defined(KEEL_BUILDING) && defined(__GNUC__)
#define KEEL_API __attribute__((visibility("default")))
#else
#define KEEL_API
#endif

#if defined(__GNUC__)
#define KEEL_NORETURN __attribute__((noreturn))
#define KEEL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define KEEL_LIKELY(x) __builtin_expect(!!(x), 1)
#define KEEL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KEEL_COLD __attribute__((cold, noinline))
#define KEEL_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define KEEL_NORETURN
#define KEEL_PRINTF(f, a)
#define KEEL_LIKELY(x) (x)
#define KEEL_UNLIKELY(x) (x)
#define KEEL_COLD
#define KEEL_WARN_UNUSED
#endif

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 1
#define KEEL_VERSION_PATCH 0
#define KEEL_VERSION_STRING "0.1.0"

#endif /* KEEL_COMMON_H */
