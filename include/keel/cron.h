/*
 * keel/cron.h - job schedules: when does a job run next?
 *
 * A schedule is parsed once from its text and is immutable afterwards, so
 * any number of threads may ask it for fire times at once. Four kinds:
 *
 *   cron spec   "30 2 * * *" (5 fields: minute hour day-of-month month
 *               day-of-week) or "0 30 2 * * *" (6 fields, seconds first),
 *               evaluated on the wall clock of a time zone (keel/tz.h);
 *               the macros @yearly (@annually), @monthly, @weekly, @daily
 *               (@midnight) and @hourly are cron specs too;
 *   @every D    a fixed interval ("@every 1h30m", "@every 90s"), on the
 *               absolute clock: fires at the multiples of D counted from
 *               the Unix epoch (1970-01-01T00:00:00Z), zone ignored;
 *   @at T       once, at an RFC 3339 time ("@at 2026-03-29T02:30:00+01:00");
 *   @manual     never by itself (the job runs only when triggered).
 *
 * Field syntax (docs/keeld.md has the full table):
 *
 *   field          values          also
 *   second         0-59
 *   minute         0-59
 *   hour           0-23
 *   day of month   1-31            ?  L  L-n  LW  nW
 *   month          1-12, JAN-DEC
 *   day of week    0-7, SUN-SAT    ?  nL  n#k        (0 and 7 are Sunday)
 *
 * Every field takes `*`, a value, a range `a-b`, a step (`a-b/n`; `a/n`,
 * a to the field's maximum, 6 for day of week; `*` followed by `/n`), and
 * comma-separated lists of those; names are case-insensitive. `?` is `*`
 * (Quartz spelling). In day of month, `L` is the last day, `L-n` n days
 * before it, `LW` the last weekday (Monday-Friday), `nW` the weekday
 * nearest day n within the month (never crossing into another month; no
 * match in months without a day n). In day of week, `nL` is the last n-day
 * of the month and `n#k` its k-th n-day (k 1-5; no match in months without
 * one). These special items may appear in lists ("1,15,L"), each item
 * matching on its own; they cannot be ranges or steps.
 *
 * Day of month and day of week: when both are restricted (neither is
 * exactly `*` or `?`), a day matches if EITHER matches, as in Vixie cron
 * and POSIX crontab ("0 0 13 * 5": the 13th, and every Friday). When one
 * is `*` or `?`, only the other counts. A stepped `*` (every other day)
 * is a restriction.
 *
 * Daylight saving time (the one rule, applied to every cron spec): a local
 * time that does not exist (clocks set forward) runs at the first valid
 * instant after the gap, the moment the clocks jumped; a local time that
 * exists twice (clocks set back) runs once, at its first occurrence. Fire
 * times that coincide are one fire: an every-minute job runs once at the
 * end of a gap, not 60 times, and an hourly job's 02:00 and 03:00 runs
 * become one run when 02:00 is skipped. During a repeated hour nothing
 * fires a second time. A job that must run at even real-time intervals
 * through DST changes should use @every or the UTC zone.
 *
 * Errors: 0 or a negative errno; a parse error also writes a reason into
 * the caller's buffer, naming the field, the value and why.
 */
#ifndef KEEL_CRON_H
#define KEEL_CRON_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>
#include <keel/tz.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_cron;

/* keel_cron_next's answer when there is no next fire time. */
#define KEEL_CRON_NEVER INT64_MIN

/* A reason buffer of this size holds every message keel_cron_parse writes
 * in full (text quoted from the schedule is cut at 40 bytes); a smaller
 * buffer gets the reason cut, still NUL-terminated. */
#define KEEL_CRON_ERR_MAX 256

/* The longest schedule text accepted, in bytes. */
#define KEEL_CRON_TEXT_MAX 1024

/* Fire times are computed for instants from 0001-01-01T00:00:00Z through
 * 9999-12-31T23:59:59Z; nothing fires outside. */
#define KEEL_CRON_TIME_MIN INT64_C(-62135596800)
#define KEEL_CRON_TIME_MAX INT64_C(253402300799)

enum keel_cron_kind {
	KEEL_CRON_SPEC,	  /* cron fields or a macro such as @daily */
	KEEL_CRON_EVERY,  /* @every <duration> */
	KEEL_CRON_AT,	  /* @at <RFC 3339 time> */
	KEEL_CRON_MANUAL, /* @manual */
};

/*
 * keel_cron_parse - parses a schedule (the grammar above). Leading and
 * trailing blanks are ignored, fields are separated by spaces or tabs, and
 * macro names are case-insensitive.
 *
 * Returns 0 and a new schedule in *out, which the caller owns and frees
 * with keel_cron_free. On error *out is left untouched and:
 *   -EINVAL  the text is not a valid schedule; err (when not NULL and
 *            errlen > 0) gets a NUL-terminated reason such as
 *            "field 3 (day of month): 32 is out of range 1-31",
 *            "unknown macro @fortnightly",
 *            "@every: duration must be at least 1s",
 *            "@at: not an RFC 3339 time: ...";
 *   -ENOMEM  out of memory (err says so too).
 * text or out NULL is -EINVAL. Thread-safe.
 */
KEEL_API int keel_cron_parse(const char *text, struct keel_cron **out,
			     char *err, size_t errlen);

/* Frees a schedule; NULL is a no-op. */
KEEL_API void keel_cron_free(struct keel_cron *c);

/*
 * keel_cron_next - the first fire time strictly after `after` (Unix
 * seconds, UTC), or KEEL_CRON_NEVER when there is none: @manual, an @at
 * that is not after `after`, a fire time past KEEL_CRON_TIME_MAX, or a spec
 * that matches no day at all ("0 0 30 2 *"). A spec is searched over at
 * most 400 years of calendar (the Gregorian calendar, weekdays included,
 * repeats every 400 years, so nothing found there means never), which
 * bounds the work of even the rarest spec to a few thousand month steps.
 *
 * Cron specs are evaluated on the wall clock of tz (NULL means UTC) with
 * the DST rule above; @every and @at ignore tz. Successive calls
 * next(next(t)) give strictly increasing times, each fire exactly once.
 * Thread-safe (c and tz are only read); allocates nothing.
 */
KEEL_API int64_t keel_cron_next(const struct keel_cron *c,
				const struct keel_tz *tz, int64_t after);

/* The kind of schedule. */
KEEL_API enum keel_cron_kind keel_cron_kind(const struct keel_cron *c);

/* The text exactly as given to keel_cron_parse (blanks included), owned by
 * c and valid until keel_cron_free. */
KEEL_API const char *keel_cron_text(const struct keel_cron *c);

/* @every: the interval in seconds (>= 1); other kinds: 0. */
KEEL_API int64_t keel_cron_interval(const struct keel_cron *c);

/* @at: the instant (Unix seconds, fractions rounded up); other kinds:
 * KEEL_CRON_NEVER. */
KEEL_API int64_t keel_cron_at(const struct keel_cron *c);

/*
 * keel_duration_parse - keel's one duration grammar, shared by @every and
 * the durations of a job (keel/job.h): one or more <digits><unit> parts,
 * units h, m, s and ms, no sign, blanks or fractions ("1h30m", "90s",
 * "500ms", "1h0m5s"); the parts add up, in any order. @every accepts only
 * whole seconds of it (no ms) and checks its own bounds.
 *
 * Returns 0 and the duration in nanoseconds in *out when it is within
 * [min_ns, max_ns] (0 <= min_ns <= max_ns). On error *out is untouched and:
 *   -EINVAL  err (when not NULL and errlen > 0) gets a NUL-terminated
 *            reason such as "'90' lacks a unit after 90 (h, m, s or ms)",
 *            "unknown unit in '1d' (h, m, s or ms)", "fractions are not
 *            supported (write 1h30m, not 1.5h)", "duration must be at
 *            least 1ms", "duration must be at most 24h"; text or out NULL
 *            is -EINVAL too.
 * Reasons fit KEEL_CRON_ERR_MAX. Thread-safe; allocates nothing.
 */
KEEL_API int keel_duration_parse(const char *text, int64_t min_ns,
				 int64_t max_ns, int64_t *out, char *err,
				 size_t errlen);

/*
 * keel_duration_format - ns in the same grammar, largest units first, the
 * parts that are zero left out and anything below 1 ms dropped: 90 s is
 * "1m30s", 1.5 s "1s500ms", 0 "0s". keel_duration_parse reads it back
 * (exactly, for whole milliseconds). buf gets a NUL-terminated text, cut
 * when len is too small (32 bytes always suffice). Thread-safe.
 */
KEEL_API void keel_duration_format(int64_t ns, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_CRON_H */
