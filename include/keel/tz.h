/*
 * keel/tz.h - IANA time zones read from TZif files, for schedules that run
 * in a zone of their own ("0 30 2 * * *" in Europe/Berlin) inside a
 * threaded daemon, where setenv("TZ") + localtime() would change the zone
 * of every thread at once.
 *
 * A zone is loaded once from the system's database (Debian's tzdata,
 * /usr/share/zoneinfo, or $TZDIR) and is immutable afterwards: any thread
 * may use it. Conversions go both ways:
 *
 *   UTC -> local   always one answer (keel_tz_to_local);
 *   local -> UTC   a local time may not exist (the hour skipped when
 *                  clocks go forward) or may exist twice (the hour repeated
 *                  when they go back); keel_tz_from_local says which and
 *                  gives the instant(s).
 *
 * The scheduler's documented DST rule is built on that: a local time that
 * does not exist runs at the first valid instant after the gap (the moment
 * the clocks jumped), an ambiguous one runs once, at its first occurrence.
 *
 * Times are seconds since the Unix epoch (int64_t), civil times are
 * proleptic Gregorian, fields as in struct tm but with a real year.
 */
#ifndef KEEL_TZ_H
#define KEEL_TZ_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_tz;

/* A civil (wall-clock) time. */
struct keel_civil {
	int64_t year;  /* e.g. 2026 */
	int month;     /* 1..12 */
	int day;       /* 1..31 */
	int hour;      /* 0..23 */
	int min;       /* 0..59 */
	int sec;       /* 0..59 (a leap second is never produced) */
	int wday;      /* 0 = Sunday .. 6; set by the conversions, ignored on input */
};

/*
 * keel_tz_load - the zone named name: an IANA name ("Europe/Berlin",
 * "America/New_York", "UTC"), read from $TZDIR or /usr/share/zoneinfo.
 * Names with "..", a leading '/', characters outside [A-Za-z0-9_+-/] or
 * more than 255 bytes are refused. Returns 0 and *out (free it with
 * keel_tz_free); -EINVAL (bad name), -ENOENT (no such zone, or a
 * directory), -EBADMSG (not a valid TZif file: versions 1 to 4 are read,
 * every count and index checked, the POSIX TZ footer rule used past the
 * last transition), -ENOMEM, or another negative errno from open(2) or
 * read(2) (-EACCES, ...). *out is NULL on error.
 *
 * "UTC" and "Etc/UTC" load even where tzdata is not installed (-ENOENT from
 * the file gives a built-in UTC zone of that name). A "right/" zone (which
 * counts leap seconds) is converted to keel's POSIX seconds.
 *
 * Thread-safe, but reads the environment (TZDIR): do not setenv()
 * concurrently. Loading costs a file read; load a zone once, share it.
 */
KEEL_API int keel_tz_load(const char *name, struct keel_tz **out);

/* The UTC zone, without reading a file (static; keel_tz_free ignores it). */
KEEL_API const struct keel_tz *keel_tz_utc(void);

/* The name it was loaded with ("UTC" for NULL). The string lives as long
 * as tz. */
KEEL_API const char *keel_tz_name(const struct keel_tz *tz);

/* NULL and keel_tz_utc() are no-ops. */
KEEL_API void keel_tz_free(struct keel_tz *tz);

/*
 * keel_tz_to_local - UTC instant t -> local civil time in tz (NULL means
 * UTC), wday included; *utc_offset (may be NULL) gets the offset in seconds
 * east of UTC in force at t. Defined for every int64_t t (years beyond
 * +-100000 are still exact; INT64_MIN/MAX do not overflow). Before the
 * zone's first transition the first standard-time type of the file
 * applies (tzfile(5), as glibc); after the last one the footer rule, or
 * the last type if the footer is empty. Lock-free, any thread.
 */
KEEL_API void keel_tz_to_local(const struct keel_tz *tz, int64_t t,
			       struct keel_civil *out, int32_t *utc_offset);

/*
 * keel_tz_from_local - the instants at which the clocks in tz (NULL means
 * UTC) show c (c->wday is ignored). Returns the count:
 *   1  *first = *second = the instant;
 *   2  ambiguous (clocks set back): *first is the earlier, *second the later;
 *   0  it does not exist (clocks set forward): *first = *second = the
 *      instant the gap ends (the first valid instant after c).
 * Fields out of range (month 13, day 32, Feb 29 in a common year, hour 24,
 * sec 60, a year beyond +-100000, c NULL) give -EINVAL and leave *first
 * and *second unchanged. A zone whose clocks show c more than twice (no
 * real zone does) gives 2, the earliest and the latest. Lock-free, any
 * thread.
 */
KEEL_API int keel_tz_from_local(const struct keel_tz *tz,
				const struct keel_civil *c, int64_t *first,
				int64_t *second);

/*
 * Civil helpers, no zone, proleptic Gregorian, exact for years -100000..
 * 100000 (and well beyond): days since 1970-01-01 for a date (a day or
 * month out of range is carried: (2024, 3, 0) is 2024-02-29, (2025, 13, 1)
 * is 2026-01-01); a day count back to a date (any output pointer may be
 * NULL; wday 0 = Sunday); the number of days in a month (28..31, 0 for a
 * month outside 1..12). Pure functions.
 */
KEEL_API int64_t keel_civil_days(int64_t year, int month, int day);
KEEL_API void keel_civil_from_days(int64_t days, int64_t *year, int *month,
				   int *day, int *wday);
KEEL_API int keel_civil_month_days(int64_t year, int month);

/* ------------------------------------------------------------------------
 * internals, not API: for keel's own tests and fuzz/fuzz_tzif.c; may change
 * without notice.
 * ------------------------------------------------------------------------ */

/* keel__tz_parse - a zone from the TZif image buf[0..len) (as read from a
 * file), named name (copied). Same results as keel_tz_load after the file
 * is read: 0 and *out, -EBADMSG, -ENOMEM; *out is NULL on error. */
KEEL_API int keel__tz_parse(const char *name, const void *buf, size_t len,
			    struct keel_tz **out);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_TZ_H */
