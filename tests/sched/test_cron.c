/*
 * tests/sched/test_cron.c - schedules (keel/cron.h): what the parser
 * accepts, what it refuses and why (every reason checked, *out untouched);
 * next() against a brute-force reference written here, over hundreds of
 * random specs in UTC and in zones with DST (the C library's localtime_r
 * is the oracle there); L, W, # and ? on known calendars; the DST rule on
 * the real transition days of 2026 in Berlin, New York and Lord Howe
 * (30-minute DST); @every alignment, @at, @manual; specs that never match.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel/cron.h>
#include <keel/tz.h>
#define KEEL_TEST_COUNT_ALLOCATIONS
#include "keel_test.h"

/* "2026-03-29T01:00:00Z" -> Unix seconds. */
static int64_t T(const char *iso)
{
	struct tm tm = { 0 };

	if (sscanf(iso, "%d-%d-%dT%d:%d:%dZ", &tm.tm_year, &tm.tm_mon,
		   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		KEEL_TEST_FAIL("bad time literal %s", iso);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

static const char *iso(int64_t t)
{
	static char buf[4][32];
	static int i;
	struct tm tm;
	time_t tt = (time_t)t;

	i = (i + 1) % 4;
	if (t == KEEL_CRON_NEVER)
		return "NEVER";
	gmtime_r(&tt, &tm);
	strftime(buf[i], sizeof(buf[i]), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf[i];
}

static struct keel_cron *P(const char *text)
{
	struct keel_cron *c = NULL;
	char err[KEEL_CRON_ERR_MAX];
	int rc = keel_cron_parse(text, &c, err, sizeof(err));

	if (rc != 0)
		KEEL_TEST_FAIL("parse \"%s\": %d %s", text, rc, err);
	return c;
}

static struct keel_tz *zone(const char *name)
{
	struct keel_tz *tz = NULL;

	CHECK_INT(keel_tz_load(name, &tz), ==, 0);
	return tz;
}

/* Checks the fires of spec after `after` in tz, one ISO string each. */
static void expect_fires(const char *spec, const struct keel_tz *tz,
			 const char *after, const char *const *want, int n)
{
	struct keel_cron *c = P(spec);
	int64_t t = T(after);
	int i;

	for (i = 0; i < n; i++) {
		int64_t nx = keel_cron_next(c, tz, t);

		if (nx != T(want[i]))
			KEEL_TEST_FAIL("\"%s\" fire %d after %s: got %s, want %s",
				       spec, i, iso(t), iso(nx), want[i]);
		t = nx;
	}
	keel_cron_free(c);
}

/* ------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------ */

TEST(parse_accepts)
{
	static const struct {
		const char *text;
		enum keel_cron_kind kind;
	} ok[] = {
		{ "* * * * *", KEEL_CRON_SPEC },
		{ "0 30 2 * * *", KEEL_CRON_SPEC },
		{ "  */15\t0-23/2 1,15,L * ?  ", KEEL_CRON_SPEC },
		{ "0 0 ? jan-MAR,Dec mon-fri", KEEL_CRON_SPEC },
		{ "0 0 L-3 * *", KEEL_CRON_SPEC },
		{ "0 0 LW * *", KEEL_CRON_SPEC },
		{ "0 0 15W * ?", KEEL_CRON_SPEC },
		{ "0 0 1W,15W,lw * *", KEEL_CRON_SPEC },
		{ "0 0 ? * 5L", KEEL_CRON_SPEC },
		{ "0 0 ? * FRIL", KEEL_CRON_SPEC },
		{ "0 0 ? * 1#2,mon#4", KEEL_CRON_SPEC },
		{ "0 0 * * 7", KEEL_CRON_SPEC },
		{ "0 0 * * 5-7", KEEL_CRON_SPEC },
		{ "5/15 * * * *", KEEL_CRON_SPEC },
		{ "*/60 * * * *", KEEL_CRON_SPEC },
		{ "0 0 30 2 *", KEEL_CRON_SPEC },
		{ "@yearly", KEEL_CRON_SPEC },
		{ "@annually", KEEL_CRON_SPEC },
		{ "@monthly", KEEL_CRON_SPEC },
		{ "@WEEKLY", KEEL_CRON_SPEC },
		{ "@daily", KEEL_CRON_SPEC },
		{ "@midnight", KEEL_CRON_SPEC },
		{ "  @hourly ", KEEL_CRON_SPEC },
		{ "@every 1h30m", KEEL_CRON_EVERY },
		{ "@every 90s", KEEL_CRON_EVERY },
		{ "@every\t2h", KEEL_CRON_EVERY },
		{ "@every 1s", KEEL_CRON_EVERY },
		{ "@at 2026-03-29T02:30:00+01:00", KEEL_CRON_AT },
		{ "@at 2026-03-29t02:30:00.250z", KEEL_CRON_AT },
		{ "@manual", KEEL_CRON_MANUAL },
	};
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct keel_cron *c = P(ok[i].text);

		CHECK_INT(keel_cron_kind(c), ==, ok[i].kind);
		CHECK_STR(keel_cron_text(c), ok[i].text);
		keel_cron_free(c);
	}
	keel_cron_free(NULL);
	keel_test_leak_check();
}

TEST(parse_rejects_with_reason)
{
	static const struct {
		const char *text, *reason;
	} bad[] = {
		{ "", "empty schedule" },
		{ "   \t ", "empty schedule" },
		{ "* * * *", "expected 5 fields (minute hour day-of-month month "
		  "day-of-week) or 6 (second first), found 4" },
		{ "* * * * * * *", "found more than 6" },
		{ "0 0 32 * *", "field 3 (day of month): 32 is out of range 1-31" },
		{ "0 0 0 * *", "field 3 (day of month): 0 is out of range 1-31" },
		{ "60 * * * *", "field 1 (minute): 60 is out of range 0-59" },
		{ "60 * * * * *", "field 1 (second): 60 is out of range 0-59" },
		{ "0 24 * * *", "field 2 (hour): 24 is out of range 0-23" },
		{ "0 0 1 13 *", "field 4 (month): 13 is out of range 1-12" },
		{ "0 0 * * 8", "field 5 (day of week): 8 is out of range 0-7" },
		{ "0 0 * foo *", "field 4 (month): 'foo' is not a month (1-12 or JAN-DEC)" },
		{ "0 0 * * fry", "field 5 (day of week): 'fry' is not a day of week (0-7 or SUN-SAT)" },
		{ "0 x * * *", "field 2 (hour): 'x' is not a number" },
		{ "1a * * * *", "field 1 (minute): '1a' is not a number" },
		{ "30-10 * * * *", "field 1 (minute): range '30-10' is backwards (30 > 10)" },
		{ "0 0 * * fri-mon", "field 5 (day of week): range 'fri-mon' is backwards (5 > 1)" },
		{ "*/0 * * * *", "field 1 (minute): step in '*/0' must be 1-60" },
		{ "*/61 * * * *", "field 1 (minute): step in '*/61' must be 1-60" },
		{ "*/ * * * *", "field 1 (minute): missing value" },
		{ "1,,2 * * * *", "field 1 (minute): empty list item" },
		{ "1, * * * *", "field 1 (minute): empty list item" },
		{ "? * * * *", "field 1 (minute): ? is only allowed in day of month or day of week" },
		{ "0 0 1,? * *", "field 3 (day of month): ? must be the whole field" },
		{ "0 0 W * *", "field 3 (day of month): W needs a day (e.g. 15W" },
		{ "0 0 1-5W * *", "field 3 (day of month): '1-5W': W takes one day, not a range or step" },
		{ "0 0 32W * *", "field 3 (day of month): 32 is out of range 1-31" },
		{ "0 0 L-31 * *", "field 3 (day of month): 31 is out of range 0-30" },
		{ "0 0 5L * *", "field 3 (day of month): '5L': day of month takes L, L-n, LW "
		  "or nW (nL is for day of week)" },
		{ "0 0 1#2 * *", "field 3 (day of month): '1#2': # is only allowed in day of week" },
		{ "0 0 * * L", "field 5 (day of week): L needs a day (e.g. 5L" },
		{ "0 0 * * 5W", "field 5 (day of week): '5W': day of week takes nL or n#k" },
		{ "0 0 * * LW", "field 5 (day of week): 'LW': day of week takes nL or n#k" },
		{ "0 0 * * 1-5L", "field 5 (day of week): '1-5L': L takes one day, not a range or step" },
		{ "0 0 * * 1#6", "field 5 (day of week): 6 is out of range 1-5" },
		{ "0 0 * * 1#0", "field 5 (day of week): 0 is out of range 1-5" },
		{ "0 0 * * 1#", "field 5 (day of week): '1#': # needs k in 1-5" },
		/* Found by fuzz_cron: a name where a number belongs. */
		{ "0 1,4 ? 4 2#sun", "field 5 (day of week): 'sun' is not a number" },
		{ "0 0 * * */sat", "field 5 (day of week): 'sat' is not a number" },
		{ "0 0 * */jun *", "field 4 (month): 'jun' is not a number" },
		{ "0 0 * * 1-2#3", "field 5 (day of week): '1-2#3': # takes one day, not a range or step" },
		{ "0 L * * *", "field 2 (hour): 'L': L and W are only allowed in day of month or day of week" },
		{ "0 0 * 5W *", "field 4 (month): '5W': L and W are only allowed" },
		{ "0 0 * jan#1 *", "field 4 (month): 'jan#1': # is only allowed in day of week" },
		{ "0 0 * * * \x01", "byte 0x01 at offset 10 is not allowed" },
		{ "0 0 * * * \xc3\xa9", "byte 0xc3 at offset 10 is not allowed" },
		{ "@fortnightly", "unknown macro @fortnightly" },
		{ "@reboot", "unknown macro @reboot" },
		{ "@", "unknown macro @ " },
		{ "@daily 5", "@daily takes no argument" },
		{ "@manual now", "@manual takes no argument" },
		{ "@every", "@every: missing duration (e.g. @every 1h30m)" },
		{ "@every 0s", "@every: duration must be at least 1s" },
		{ "@every 0h0m", "@every: duration must be at least 1s" },
		{ "@every 1.5h", "@every: fractions are not supported (write 1h30m, not 1.5h)" },
		{ "@every 500ms", "@every: unknown unit in '500ms'" },
		{ "@every 1d", "@every: unknown unit in '1d'" },
		{ "@every 90", "@every: '90' lacks a unit after 90" },
		{ "@every h", "@every: 'h' is not a duration" },
		{ "@every 1h 30m", "@every takes one argument, found more" },
		{ "@every 876001h", "@every: duration must be at most 876000h (100 years)" },
		{ "@every 99999999999999999999s", "@every: duration must be at most" },
		{ "@at", "@at: missing time" },
		{ "@at tomorrow", "@at: not an RFC 3339 time: 'tomorrow'" },
		{ "@at 2026-03-29", "@at: not an RFC 3339 time" },
		{ "@at 2026-03-29T02:30:00", "@at: not an RFC 3339 time: '2026-03-29T02:30:00' needs an "
		  "offset (Z or +hh:mm)" },
		{ "@at 2026-02-29T02:30:00Z", "@at: not an RFC 3339 time: '2026-02-29T02:30:00Z' has no "
		  "such date or time" },
		{ "@at 2026-01-01T24:00:00Z", "has no such date or time" },
		{ "@at 2026-12-31T23:59:60Z", "leap seconds are not supported" },
		{ "@at 2026-03-29T02:30:00+24:00", "@at: offset +24:00 is out of range" },
		{ "@at 2026-03-29T02:30:00.Z", "@at: not an RFC 3339 time" },
		{ "@at 2026-03-29T02:30:00Zjunk", "@at: not an RFC 3339 time" },
	};
	char err[KEEL_CRON_ERR_MAX];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct keel_cron *sentinel = (struct keel_cron *)&err, *c;
		int rc;

		c = sentinel;
		memset(err, 'x', sizeof(err));
		rc = keel_cron_parse(bad[i].text, &c, err, sizeof(err));
		if (rc != -EINVAL)
			KEEL_TEST_FAIL("\"%s\" gave %d", bad[i].text, rc);
		CHECK(c == sentinel);
		CHECK_CONTAINS(err, bad[i].reason);
	}
	keel_test_leak_check();
}

/* Long values are quoted cut at 40 bytes: the reason itself is whole. */
TEST(long_values_quoted_short)
{
	char text[600], err[KEEL_CRON_ERR_MAX], want[128];
	struct keel_cron *c = NULL;

	snprintf(text, sizeof(text), "0 0 * * %0500d", 7);
	memset(text + 8, 'x', 500);
	CHECK_INT(keel_cron_parse(text, &c, err, sizeof(err)), ==, -EINVAL);
	snprintf(want, sizeof(want), "field 5 (day of week): '%.40s' is not "
		 "a day of week (0-7 or SUN-SAT)", text + 8);
	CHECK_STR(err, want);
	snprintf(text, sizeof(text), "@at 2026-01-01T00:00:00Z%0500d", 0);
	CHECK_INT(keel_cron_parse(text, &c, err, sizeof(err)), ==, -EINVAL);
	snprintf(want, sizeof(want), "@at: not an RFC 3339 time: '%.40s' "
		 "(e.g. 2026-03-29T02:30:00+01:00)", text + 4);
	CHECK_STR(err, want);
	snprintf(text, sizeof(text), "@%0500d", 0);
	CHECK_INT(keel_cron_parse(text, &c, err, sizeof(err)), ==, -EINVAL);
	CHECK_CONTAINS(err, "@every @at @manual)");
	CHECK(c == NULL);
}

TEST(parse_errors_without_buffer_and_truncated)
{
	struct keel_cron *c = NULL;
	char small[16];

	CHECK_INT(keel_cron_parse(NULL, &c, small, sizeof(small)), ==, -EINVAL);
	CHECK_STR(small, "no schedule giv");
	CHECK_INT(keel_cron_parse("* * *", NULL, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_cron_parse("0 0 32 * *", &c, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_cron_parse("0 0 32 * *", &c, small, 1), ==, -EINVAL);
	CHECK_STR(small, "");
	CHECK_INT(keel_cron_parse("0 0 32 * *", &c, small, sizeof(small)), ==,
		  -EINVAL);
	CHECK_STR(small, "field 3 (day of");
	CHECK(c == NULL);
	{
		char big[KEEL_CRON_TEXT_MAX + 2];

		memset(big, ' ', sizeof(big));
		big[sizeof(big) - 1] = '\0';
		memcpy(big, "* * * * *", 9);
		CHECK_INT(keel_cron_parse(big, &c, small, sizeof(small)), ==,
			  -EINVAL);
		CHECK(c == NULL);
		big[KEEL_CRON_TEXT_MAX] = '\0';
		c = P(big);
		keel_cron_free(c);
	}
}

/* A macro is its expansion. */
TEST(macros_are_their_expansions)
{
	static const char *const pairs[][2] = {
		{ "@yearly", "0 0 1 1 *" },   { "@annually", "0 0 1 1 *" },
		{ "@monthly", "0 0 1 * *" },  { "@weekly", "0 0 * * 0" },
		{ "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
		{ "@hourly", "0 * * * *" },
	};
	size_t i;
	int k;

	for (i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		struct keel_cron *a = P(pairs[i][0]), *b = P(pairs[i][1]);
		int64_t ta = T("2025-12-30T13:14:15Z"), tb = ta;

		for (k = 0; k < 30; k++) {
			ta = keel_cron_next(a, NULL, ta);
			tb = keel_cron_next(b, keel_tz_utc(), tb);
			CHECK_INT(ta, ==, tb);
		}
		keel_cron_free(a);
		keel_cron_free(b);
	}
	expect_fires("@weekly", NULL, "2026-01-01T00:00:00Z",
		     (const char *const[]){ "2026-01-04T00:00:00Z",
					    "2026-01-11T00:00:00Z" }, 2);
}

/* ------------------------------------------------------------------------
 * Random specs against a brute-force reference
 * ------------------------------------------------------------------------ */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static int rint_(int lo, int hi)
{
	return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

/* What a spec means, built by the generator next to its text. */
struct ref {
	char text[256];
	int six;
	uint64_t set[6];     /* sec min hour dom month dow(0-6) */
	int dom_any, dow_any;
	int last[32];        /* L-n: last[n] */
	int near[32];        /* nW */
	int lastwd;
	int dow_last[7];     /* nL */
	int dow_nth[7][6];   /* n#k */
};

static const int lo_[6] = { 0, 0, 0, 1, 1, 0 }, hi_[6] = { 59, 59, 23, 31, 12, 7 };

static void put(struct ref *r, const char *fmt, ...) KEEL_PRINTF(2, 3);
static void put(struct ref *r, const char *fmt, ...)
{
	size_t n = strlen(r->text);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->text + n, sizeof(r->text) - n, fmt, ap);
	va_end(ap);
}

static void value_text(struct ref *r, int f, int v)
{
	static const char *mon[] = { "Jan", "FEB", "mar", "Apr", "MAY", "jun",
				     "Jul", "aug", "SEP", "oct", "Nov", "DEC" };
	static const char *dow[] = { "SUN", "mon", "Tue", "WED", "thu",
				     "Fri", "sat" };

	if (f == 4 && rnd() % 3 == 0)
		put(r, "%s", mon[v - 1]);
	else if (f == 5 && v < 7 && rnd() % 3 == 0)
		put(r, "%s", dow[v]);
	else
		put(r, "%d", v);
}

static void add_range(struct ref *r, int f, int a, int b, int step)
{
	int v;

	for (v = a; v <= b; v += step)
		r->set[f] |= 1ULL << (f == 5 ? v % 7 : v);
}

static void gen_item(struct ref *r, int f)
{
	int lo = lo_[f], hi = hi_[f], a, b, n;

	if (f == 3 && rnd() % 4 == 0) {
		switch (rnd() % 4) {
		case 0:
			put(r, "L");
			r->last[0] = 1;
			return;
		case 1:
			n = rnd() % 2 ? rint_(1, 4) : rint_(0, 30);
			put(r, "L-%d", n);
			r->last[n] = 1;
			return;
		case 2:
			put(r, "LW");
			r->lastwd = 1;
			return;
		default:
			n = rnd() % 2 ? rint_(1, 31) : (rnd() % 2 ? 1 : 31);
			put(r, "%dW", n);
			r->near[n] = 1;
			return;
		}
	}
	if (f == 5 && rnd() % 4 == 0) {
		a = rint_(0, 7);
		if (rnd() % 2) {
			value_text(r, f, a);
			put(r, "L");
			r->dow_last[a % 7] = 1;
		} else {
			n = rint_(1, 5);
			value_text(r, f, a);
			put(r, "#%d", n);
			r->dow_nth[a % 7][n] = 1;
		}
		return;
	}
	a = rint_(lo, hi);
	b = rint_(lo, hi);
	if (a > b) {
		int x = a;
		a = b;
		b = x;
	}
	n = rnd() % 3 ? rint_(1, 7) : rint_(1, hi - lo + 1);
	switch (rnd() % 5) {
	case 0:
	case 1:
		value_text(r, f, a);
		add_range(r, f, a, a, 1);
		break;
	case 2:
		value_text(r, f, a);
		put(r, "-");
		value_text(r, f, b);
		add_range(r, f, a, b, 1);
		break;
	case 3:
		put(r, "*/%d", n);
		add_range(r, f, lo, f == 5 ? 6 : hi, n);
		break;
	default:
		if (rnd() % 2) {
			value_text(r, f, a);
			put(r, "-");
			value_text(r, f, b);
			put(r, "/%d", n);
			add_range(r, f, a, b, n);
		} else {
			if (f == 5 && a == 7)
				a = 6;
			value_text(r, f, a);
			put(r, "/%d", n);
			add_range(r, f, a, f == 5 ? 6 : hi, n);
		}
	}
}

static void gen_field(struct ref *r, int f)
{
	int items, i;

	switch (rnd() % 6) {
	case 0:
	case 1:
		if ((f == 3 || f == 5) && rnd() % 3 == 0)
			put(r, "?");
		else
			put(r, "*");
		add_range(r, f, lo_[f], f == 5 ? 6 : hi_[f], 1);
		if (f == 3)
			r->dom_any = 1;
		if (f == 5)
			r->dow_any = 1;
		return;
	default:
		items = rnd() % 3 ? 1 : rint_(2, 3);
		for (i = 0; i < items; i++) {
			if (i > 0)
				put(r, ",");
			gen_item(r, f);
		}
	}
}

static void gen(struct ref *r, int six)
{
	int f;

	memset(r, 0, sizeof(*r));
	r->six = six;
	for (f = six ? 0 : 1; f < 6; f++) {
		if (f > (six ? 0 : 1))
			put(r, " ");
		/* Sparse times of day keep the reference scans short. */
		if (f == 0 && rnd() % 2) {
			put(r, "%d", rint_(0, 59));
			r->set[0] = 1ULL << (strtol(r->text, NULL, 10));
			continue;
		}
		gen_field(r, f);
	}
	if (!six)
		r->set[0] = 1;
}

static int mdays_of(int y, int m)
{
	static const int md[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) ? 29 :
									 md[m - 1];
}

static int wday_of(int y, int m, int d)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d,
			 .tm_hour = 12 };
	time_t t = timegm(&tm);

	gmtime_r(&t, &tm);
	return tm.tm_wday;
}

/* Does the reference say civil day y-m-d matches? Plain brute force. */
static int ref_day(const struct ref *r, int y, int m, int d)
{
	int md = mdays_of(y, m), w = wday_of(y, m, d), dom = 0, dow = 0, n, e;

	if (!(r->set[4] >> m & 1))
		return 0;
	if (r->set[3] >> d & 1)
		dom = 1;
	for (n = 0; n <= 30; n++)
		if (r->last[n] && d == md - n)
			dom = 1;
	for (n = 1; n <= 31; n++) {
		int best = 0;

		if (!r->near[n] || n > md)
			continue;
		for (e = 1; e <= md; e++) {
			int we = wday_of(y, m, e);

			if (we == 0 || we == 6)
				continue;
			if (best == 0 || abs(e - n) < abs(best - n))
				best = e;
		}
		if (best == d)
			dom = 1;
	}
	if (r->lastwd) {
		for (e = md; wday_of(y, m, e) == 0 || wday_of(y, m, e) == 6; e--)
			;
		if (e == d)
			dom = 1;
	}
	if (r->set[5] >> w & 1)
		dow = 1;
	if (r->dow_last[w] && d + 7 > md)
		dow = 1;
	if (r->dow_nth[w][(d + 6) / 7])
		dow = 1;
	if (r->dom_any && r->dow_any)
		return 1;
	if (r->dom_any)
		return dow;
	if (r->dow_any)
		return dom;
	return dom || dow;
}

/* A civil time as seconds (timegm of its fields): does it match? */
static int ref_civil(const struct ref *r, int64_t key)
{
	struct tm tm;
	time_t t = (time_t)key;

	gmtime_r(&t, &tm);
	return (r->set[0] >> tm.tm_sec & 1) && (r->set[1] >> tm.tm_min & 1) &&
	       (r->set[2] >> tm.tm_hour & 1) &&
	       ref_day(r, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

#define MAXF 400

/* UTC: every second of every matching day in (after, end], up to MAXF. */
static int ref_utc(const struct ref *r, int64_t after, int64_t end,
		   int64_t *out)
{
	int64_t day, t;
	int n = 0, s;

	for (day = after / 86400; day * 86400 <= end && n < MAXF; day++) {
		struct tm tm;
		time_t tt = (time_t)(day * 86400);

		gmtime_r(&tt, &tm);
		if (!ref_day(r, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday))
			continue;
		for (t = day * 86400; t < (day + 1) * 86400 && n < MAXF; t += 60) {
			int h = (int)(t % 86400 / 3600), mi = (int)(t % 3600 / 60);

			if (!(r->set[2] >> h & 1) || !(r->set[1] >> mi & 1))
				continue;
			for (s = 0; s < 60 && n < MAXF; s++)
				if ((r->set[0] >> s & 1) && t + s > after &&
				    t + s <= end)
					out[n++] = t + s;
		}
	}
	return n;
}

static int engine(const struct keel_cron *c, const struct keel_tz *tz,
		  int64_t after, int64_t end, int64_t *out)
{
	int n = 0;
	int64_t t = after;

	while (n < MAXF) {
		int64_t nx = keel_cron_next(c, tz, t);

		if (nx == KEEL_CRON_NEVER || nx > end)
			break;
		if (nx <= t)
			KEEL_TEST_FAIL("next(%s) = %s is not after it", iso(t),
				       iso(nx));
		out[n++] = t = nx;
	}
	return n;
}

static void compare(const struct ref *r, const char *where, const int64_t *want,
		    int nw, const int64_t *got, int ng)
{
	int i;

	for (i = 0; i < nw && i < ng; i++)
		if (want[i] != got[i])
			KEEL_TEST_FAIL("\"%s\" %s: fire %d: reference %s, next() %s",
				       r->text, where, i, iso(want[i]),
				       iso(got[i]));
	if (nw != ng)
		KEEL_TEST_FAIL("\"%s\" %s: reference %d fires, next() %d (%s)",
			       r->text, where, nw, ng,
			       iso(nw > ng ? want[ng] : got[nw]));
}

TEST(random_specs_match_reference_utc)
{
	static int64_t want[MAXF], got[MAXF];
	int i, total = 0;

	for (i = 0; i < 600; i++) {
		struct ref r;
		struct keel_cron *c;
		int64_t after = T("1970-01-01T00:00:00Z") +
				(int64_t)(rnd() % 7000000) * 1000 + rint_(0, 999);
		int64_t end = after + (int64_t)rint_(1, 4 * 366) * 86400;
		int nw, ng;

		gen(&r, i % 3 == 0);
		c = P(r.text);
		nw = ref_utc(&r, after, end, want);
		ng = engine(c, keel_tz_utc(), after, end, got);
		compare(&r, "UTC", want, nw, got, ng);
		total += nw;
		keel_cron_free(c);
	}
	printf("  600 specs, %d fire times compared\n", total);
	CHECK_INT(total, >, 10000);
}

/* ------------------------------------------------------------------------
 * Zones: the C library's localtime_r is the oracle
 * ------------------------------------------------------------------------ */

static void set_tz(const char *name)
{
	setenv("TZ", name, 1);
	tzset();
}

static int64_t civil_key(int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;

	localtime_r(&tt, &tm);
	return (int64_t)timegm(&tm);
}

/*
 * The DST rule applied to the oracle's clock, minute by minute in UTC:
 * the clock shows a new, later civil minute at t -> every matching civil
 * minute it passed over (the gap) or reached fires at t, once; a civil
 * minute shown again (the repeated hour) does not fire.
 */
static int ref_zone(const struct ref *r, int64_t after, int64_t end,
		    int64_t *out)
{
	int64_t seen = civil_key(after), t, k;
	int n = 0;

	for (t = after - after % 60 + 60; t <= end && n < MAXF; t += 60) {
		int64_t shown = civil_key(t);

		if (shown <= seen)
			continue;
		for (k = seen - seen % 60 + 60; k <= shown; k += 60)
			if (ref_civil(r, k)) {
				out[n++] = t;
				break;
			}
		seen = shown;
	}
	return n;
}

/* The instants in [from, to) where the offset changes (hour resolution
 * then minute). */
static int transitions(int64_t from, int64_t to, int64_t *out, int max)
{
	int n = 0;
	int64_t t;
	struct tm a, b;

	for (t = from; t < to && n < max; t += 3600) {
		time_t x = (time_t)t, y = (time_t)(t + 3600);

		localtime_r(&x, &a);
		localtime_r(&y, &b);
		if (a.tm_gmtoff != b.tm_gmtoff) {
			int64_t u = t;

			for (;;) {
				time_t z = (time_t)(u + 60);

				localtime_r(&z, &b);
				if (b.tm_gmtoff != a.tm_gmtoff)
					break;
				u += 60;
			}
			out[n++] = u + 60;
		}
	}
	return n;
}

TEST(random_specs_match_oracle_across_transitions)
{
	static const struct {
		const char *zone;
		const char *from, *to;
	} zones[] = {
		{ "Europe/Berlin", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z" },
		{ "America/New_York", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z" },
		{ "Australia/Lord_Howe", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z" },
		{ "Pacific/Chatham", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z" },
		/* DST at midnight: days that start at 01:00 or have two 00:xx */
		{ "America/Havana", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z" },
		{ "America/Santiago", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z" },
		/* Samoa skipped 2011-12-30 entirely (a 24-hour gap) */
		{ "Pacific/Apia", "2011-12-20T00:00:00Z", "2012-01-10T00:00:00Z" },
	};
	static int64_t want[MAXF], got[MAXF];
	size_t z;
	int total = 0, windows = 0;

	for (z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		struct keel_tz *tz = zone(zones[z].zone);
		int64_t tr[8];
		int ntr, i, k;

		set_tz(zones[z].zone);
		ntr = transitions(T(zones[z].from), T(zones[z].to), tr, 8);
		CHECK_INT(ntr, >=, 1);
		for (i = 0; i < ntr; i++) {
			int64_t after = tr[i] - 2 * 86400 + rint_(0, 3599);
			int64_t end = tr[i] + 2 * 86400;

			windows++;
			for (k = 0; k < 60; k++) {
				struct ref r;
				struct keel_cron *c;
				int nw, ng;
				char where[96];

				gen(&r, 0);
				c = P(r.text);
				nw = ref_zone(&r, after, end, want);
				ng = engine(c, tz, after, end, got);
				snprintf(where, sizeof(where), "in %s near %s",
					 zones[z].zone, iso(tr[i]));
				compare(&r, where, want, nw, got, ng);
				total += nw;
				keel_cron_free(c);
			}
		}
		keel_tz_free(tz);
	}
	printf("  %d transition windows, %d fire times compared\n", windows,
	       total);
	CHECK_INT(windows, >=, 13);
	CHECK_INT(total, >, 10000);
}

/* Through all of 2026 in zones with and without DST: fire times strictly
 * increase; a daily 02:30 job runs exactly once a day (365 times) whatever
 * the transitions do; the first Sunday of the month 12 times; hourly runs
 * are 30 minutes (Lord Howe) to 2 hours (a repeated hour) apart. */
TEST(strictly_increasing_through_a_year)
{
	static const char *const zones[] = { "Europe/Berlin", "America/New_York",
					     "Australia/Lord_Howe", "UTC" };
	static const struct {
		const char *spec;
		int count;             /* 0: not checked */
		int64_t min_gap, max_gap; /* 0: not checked */
	} specs[] = {
		{ "*/7 * * * *", 0, 60, 7 * 60 + 3600 },
		{ "0 * * * *", 0, 1800, 7200 },
		{ "30 2 * * *", 365, 0, 0 },
		{ "0 0 ? * 0#1", 12, 0, 0 },
	};
	size_t z, s;

	for (z = 0; z < 4; z++) {
		struct keel_tz *tz = zone(zones[z]);

		for (s = 0; s < 4; s++) {
			struct keel_cron *c = P(specs[s].spec);
			int64_t t = T("2026-01-01T00:00:00Z"), nx;
			int n = 0;

			while ((nx = keel_cron_next(c, tz, t)) <
			       T("2027-01-01T00:00:00Z")) {
				CHECK(nx > t);
				if (n > 0 && specs[s].max_gap) {
					CHECK_INT(nx - t, >=, specs[s].min_gap);
					CHECK_INT(nx - t, <=, specs[s].max_gap);
				}
				t = nx;
				n++;
			}
			if (specs[s].count)
				CHECK_INT(n, ==, specs[s].count);
			CHECK_INT(n, >, 0);
			keel_cron_free(c);
		}
		keel_tz_free(tz);
	}
}

/* ------------------------------------------------------------------------
 * The DST rule on the real transition days of 2026
 * ------------------------------------------------------------------------ */

TEST(berlin_daily_0230_once_on_both_transition_days)
{
	struct keel_tz *tz = zone("Europe/Berlin");

	/* 2026-03-29: 02:00 CET -> 03:00 CEST, 02:30 does not exist: it
	 * runs at 03:00 CEST (01:00Z), the moment the clocks jumped. */
	expect_fires("30 2 * * *", tz, "2026-03-27T12:00:00Z",
		     (const char *const[]){ "2026-03-28T01:30:00Z",
					    "2026-03-29T01:00:00Z",
					    "2026-03-30T00:30:00Z" }, 3);
	/* 2026-10-25: 03:00 CEST -> 02:00 CET, 02:30 happens twice: once,
	 * at the first (00:30Z); the second (01:30Z) does not run. */
	expect_fires("30 2 * * *", tz, "2026-10-23T12:00:00Z",
		     (const char *const[]){ "2026-10-24T00:30:00Z",
					    "2026-10-25T00:30:00Z",
					    "2026-10-26T01:30:00Z" }, 3);
	/* Asked from inside the repeated hour (second pass, 01:10Z): the
	 * 02:30 of that day has run, the next is tomorrow. */
	expect_fires("30 2 * * *", tz, "2026-10-25T01:10:00Z",
		     (const char *const[]){ "2026-10-26T01:30:00Z" }, 1);
	keel_tz_free(tz);
}

TEST(berlin_hourly_and_every_minute_across_transitions)
{
	struct keel_tz *tz = zone("Europe/Berlin");
	struct keel_cron *c;
	int64_t t;
	int n;

	/* Spring: 01:00 CET, then 02:00 (skipped) and 03:00 are one run at
	 * 03:00 CEST, then 04:00 CEST. */
	expect_fires("0 * * * *", tz, "2026-03-28T23:30:00Z",
		     (const char *const[]){ "2026-03-29T00:00:00Z",
					    "2026-03-29T01:00:00Z",
					    "2026-03-29T02:00:00Z" }, 3);
	/* Autumn: 02:00 CEST runs, the repeated 02:00 CET does not, 03:00
	 * CET comes two real hours later. */
	expect_fires("0 * * * *", tz, "2026-10-24T23:30:00Z",
		     (const char *const[]){ "2026-10-25T00:00:00Z",
					    "2026-10-25T02:00:00Z",
					    "2026-10-25T03:00:00Z" }, 3);
	/* Every minute: 01:59 CET, then the whole missing hour and 03:00
	 * are one fire at 03:00 CEST, then 03:01. */
	expect_fires("* * * * *", tz, "2026-03-29T00:58:30Z",
		     (const char *const[]){ "2026-03-29T00:59:00Z",
					    "2026-03-29T01:00:00Z",
					    "2026-03-29T01:01:00Z" }, 3);
	/* Every second across the gap: 01:59:59 CET, then 03:00:00 CEST. */
	expect_fires("* * * * * *", tz, "2026-03-29T00:59:58Z",
		     (const char *const[]){ "2026-03-29T00:59:59Z",
					    "2026-03-29T01:00:00Z",
					    "2026-03-29T01:00:01Z" }, 3);
	/* Every minute through the autumn night: 60 runs in the first
	 * 02:xx hour, none in the repeated one: 23:00Z..04:00Z is 5 real
	 * hours, 4 hours of fires. */
	c = P("* * * * *");
	t = T("2026-10-24T23:00:00Z");
	for (n = 0; (t = keel_cron_next(c, tz, t)) <= T("2026-10-25T04:00:00Z");
	     n++)
		;
	CHECK_INT(n, ==, 4 * 60);
	keel_cron_free(c);
	keel_tz_free(tz);
}

TEST(new_york_transitions)
{
	struct keel_tz *tz = zone("America/New_York");

	/* 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z). */
	expect_fires("30 2 * * *", tz, "2026-03-07T12:00:00Z",
		     (const char *const[]){ "2026-03-08T07:00:00Z",
					    "2026-03-09T06:30:00Z" }, 2);
	/* 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z): 01:30 twice, runs at
	 * the first (EDT, 05:30Z); 02:30 once (EST). */
	expect_fires("30 1 * * *", tz, "2026-10-31T12:00:00Z",
		     (const char *const[]){ "2026-11-01T05:30:00Z",
					    "2026-11-02T06:30:00Z" }, 2);
	expect_fires("30 2 * * *", tz, "2026-10-31T12:00:00Z",
		     (const char *const[]){ "2026-11-01T07:30:00Z",
					    "2026-11-02T07:30:00Z" }, 2);
	keel_tz_free(tz);
}

TEST(lord_howe_half_hour_dst)
{
	struct keel_tz *tz = zone("Australia/Lord_Howe");

	/* 2026-10-04 02:00 +10:30 -> 02:30 +11 (2026-10-03T15:30Z): 02:15
	 * does not exist and runs at 02:30 +11. */
	expect_fires("15 2 * * *", tz, "2026-10-02T12:00:00Z",
		     (const char *const[]){ "2026-10-02T15:45:00Z",
					    "2026-10-03T15:30:00Z",
					    "2026-10-04T15:15:00Z" }, 3);
	/* 2026-04-05 02:00 +11 -> 01:30 +10:30 (2026-04-04T15:00Z): 01:45
	 * happens twice, runs at the first (+11). */
	expect_fires("45 1 * * *", tz, "2026-04-03T12:00:00Z",
		     (const char *const[]){ "2026-04-03T14:45:00Z",
					    "2026-04-04T14:45:00Z",
					    "2026-04-05T15:15:00Z" }, 3);
	/* Half-hourly across the April change: 01:30 and 02:00 +11 run, the
	 * repeated 01:30 +10:30 does not, 02:00 +10:30 does. */
	expect_fires("0,30 * * * *", tz, "2026-04-04T14:20:00Z",
		     (const char *const[]){ "2026-04-04T14:30:00Z",
					    "2026-04-04T15:30:00Z",
					    "2026-04-04T16:00:00Z" }, 3);
	keel_tz_free(tz);
}

/* ------------------------------------------------------------------------
 * L, W, # and ? on known calendars
 * ------------------------------------------------------------------------ */

/* The days of 2026 a spec fires on (UTC, at 12:00), as "m/d" items. */
static void days_2026(const char *spec, char *out, size_t len)
{
	struct keel_cron *c = P(spec);
	int64_t t = T("2025-12-31T23:00:00Z");

	out[0] = '\0';
	while ((t = keel_cron_next(c, NULL, t)) < T("2027-01-01T00:00:00Z")) {
		struct tm tm;
		time_t tt = (time_t)t;
		size_t n = strlen(out);

		gmtime_r(&tt, &tm);
		CHECK_INT(tm.tm_hour, ==, 12);
		snprintf(out + n, len - n, "%s%d/%d", n ? " " : "",
			 tm.tm_mon + 1, tm.tm_mday);
	}
	keel_cron_free(c);
}

TEST(special_days_2026)
{
	char got[2048];

	/* The last Friday of each month (checked against Python's
	 * calendar). */
	days_2026("0 12 ? * 5L", got, sizeof(got));
	CHECK_STR(got, "1/30 2/27 3/27 4/24 5/29 6/26 7/31 8/28 9/25 10/30 "
		       "11/27 12/25");
	days_2026("0 12 ? * FRIl", got, sizeof(got));
	CHECK_STR(got, "1/30 2/27 3/27 4/24 5/29 6/26 7/31 8/28 9/25 10/30 "
		       "11/27 12/25");
	/* The weekday nearest the 1st: Saturday 2026-08-01 -> Monday the
	 * 3rd (Friday would be July). */
	days_2026("0 12 1W * ?", got, sizeof(got));
	CHECK_STR(got, "1/1 2/2 3/2 4/1 5/1 6/1 7/1 8/3 9/1 10/1 11/2 12/1");
	/* Nearest the 31st: no match in 30-day months and February;
	 * Sunday 2026-05-31 -> Friday the 29th (Monday would be June). */
	days_2026("0 12 31W * ?", got, sizeof(got));
	CHECK_STR(got, "1/30 3/31 5/29 7/31 8/31 10/30 12/31");
	days_2026("0 12 LW * *", got, sizeof(got));
	CHECK_STR(got, "1/30 2/27 3/31 4/30 5/29 6/30 7/31 8/31 9/30 10/30 "
		       "11/30 12/31");
	/* A fifth Monday: only in four months of 2026. */
	days_2026("0 12 * * 1#5", got, sizeof(got));
	CHECK_STR(got, "3/30 6/29 8/31 11/30");
	days_2026("0 12 L * *", got, sizeof(got));
	CHECK_STR(got, "1/31 2/28 3/31 4/30 5/31 6/30 7/31 8/31 9/30 10/31 "
		       "11/30 12/31");
	days_2026("0 12 L-2 2,3 *", got, sizeof(got));
	CHECK_STR(got, "2/26 3/29");
	days_2026("0 12 L-30 * *", got, sizeof(got));
	CHECK_STR(got, "1/1 3/1 5/1 7/1 8/1 10/1 12/1");
	/* The second Tuesday (Patch Tuesday) of the first quarter. */
	days_2026("0 12 ? 1-3 tue#2", got, sizeof(got));
	CHECK_STR(got, "1/13 2/10 3/10");
	/* Both day fields restricted: either matches (Vixie cron). */
	days_2026("0 12 13 1 5", got, sizeof(got));
	CHECK_STR(got, "1/2 1/9 1/13 1/16 1/23 1/30");
	/* One of them * or ?: only the other counts. */
	days_2026("0 12 13 1 *", got, sizeof(got));
	CHECK_STR(got, "1/13");
	days_2026("0 12 ? 1 5", got, sizeof(got));
	CHECK_STR(got, "1/2 1/9 1/16 1/23 1/30");
	/* 7 and 0 are Sunday; 5-7 is Friday to Sunday. */
	days_2026("0 12 * 2 5-7", got, sizeof(got));
	CHECK_STR(got, "2/1 2/6 2/7 2/8 2/13 2/14 2/15 2/20 2/21 2/22 2/27 2/28");
	/* A list mixing plain days and specials. */
	days_2026("0 12 1,15,L 6 *", got, sizeof(got));
	CHECK_STR(got, "6/1 6/15 6/30");
}

TEST(never_and_rare_specs)
{
	struct keel_cron *c;
	int64_t t;
	int i;

	/* Never: there is no February 30th, in any of 400 years. */
	c = P("0 0 30 2 *");
	CHECK_INT(keel_cron_next(c, NULL, T("2026-01-01T00:00:00Z")), ==,
		  KEEL_CRON_NEVER);
	keel_cron_free(c);
	c = P("0 0 31 4,6,9,11 *");
	CHECK_INT(keel_cron_next(c, NULL, 0), ==, KEEL_CRON_NEVER);
	keel_cron_free(c);
	c = P("0 0 L-29 2 *"); /* the 0th or -1st of February */
	CHECK_INT(keel_cron_next(c, NULL, 0), ==, KEEL_CRON_NEVER);
	keel_cron_free(c);

	/* Rare: February 29th; across the non-leap 2100. */
	expect_fires("0 0 29 2 *", NULL, "2026-01-01T00:00:00Z",
		     (const char *const[]){ "2028-02-29T00:00:00Z",
					    "2032-02-29T00:00:00Z" }, 2);
	expect_fires("0 0 29 2 *", NULL, "2096-03-01T00:00:00Z",
		     (const char *const[]){ "2104-02-29T00:00:00Z" }, 1);
	/* February 29th that is a Monday (with ? the weekday field is
	 * ignored, so use #: the fifth Monday of February). */
	expect_fires("0 0 ? 2 1#5", NULL, "2026-01-01T00:00:00Z",
		     (const char *const[]){ "2044-02-29T00:00:00Z",
					    "2072-02-29T00:00:00Z" }, 2);

	/* Bounded: many rare and never specs, each search at most 400
	 * years of month steps (the ctest timeout would catch a runaway). */
	c = P("0 0 30 2 *");
	for (i = 0, t = 0; i < 2000; i++)
		CHECK_INT(keel_cron_next(c, NULL, t + i * 86400), ==,
			  KEEL_CRON_NEVER);
	keel_cron_free(c);

	/* Nothing past 9999-12-31. */
	c = P("0 0 1 1 *");
	CHECK_INT(keel_cron_next(c, NULL, T("9999-06-01T00:00:00Z")), ==,
		  KEEL_CRON_NEVER);
	CHECK_INT(keel_cron_next(c, NULL, T("9998-06-01T00:00:00Z")), ==,
		  T("9999-01-01T00:00:00Z"));
	CHECK_INT(keel_cron_next(c, NULL, INT64_MAX), ==, KEEL_CRON_NEVER);
	CHECK_INT(keel_cron_next(c, NULL, INT64_MIN), ==,
		  T("0001-01-01T00:00:00Z"));
	keel_cron_free(c);
}

/* ------------------------------------------------------------------------
 * @every, @at, @manual
 * ------------------------------------------------------------------------ */

TEST(every_aligned_to_the_epoch)
{
	struct keel_cron *c = P("@every 1h30m");
	struct keel_tz *tz = zone("Europe/Berlin");
	int64_t t;

	CHECK_INT(keel_cron_interval(c), ==, 5400);
	CHECK_INT(keel_cron_at(c), ==, KEEL_CRON_NEVER);
	/* Multiples of 5400 s since 1970-01-01T00:00:00Z. */
	CHECK_INT(keel_cron_next(c, NULL, 0), ==, 5400);
	CHECK_INT(keel_cron_next(c, NULL, 5399), ==, 5400);
	CHECK_INT(keel_cron_next(c, NULL, 5400), ==, 10800);
	CHECK_INT(keel_cron_next(c, NULL, -1), ==, 0);
	CHECK_INT(keel_cron_next(c, NULL, -5400), ==, 0);
	CHECK_INT(keel_cron_next(c, NULL, -5401), ==, -5400);
	/* The zone does not matter, DST neither: 5400 s apart throughout. */
	t = T("2026-03-28T22:00:00Z");
	while (t < T("2026-03-29T06:00:00Z")) {
		int64_t nx = keel_cron_next(c, tz, t);

		CHECK_INT(nx % 5400, ==, 0);
		CHECK_INT(nx - t, <=, 5400);
		CHECK_INT(nx, ==, keel_cron_next(c, NULL, t));
		t = nx;
	}
	keel_cron_free(c);
	c = P("@every 90s");
	CHECK_INT(keel_cron_interval(c), ==, 90);
	CHECK_INT(keel_cron_next(c, NULL, T("2026-01-01T00:00:00Z")), ==,
		  T("2026-01-01T00:01:30Z"));
	keel_cron_free(c);
	c = P("@every 2h");
	CHECK_INT(keel_cron_next(c, NULL, T("2026-01-01T00:59:59Z")), ==,
		  T("2026-01-01T02:00:00Z"));
	keel_cron_free(c);
	c = P("@every 1h0m5s");
	CHECK_INT(keel_cron_interval(c), ==, 3605);
	keel_cron_free(c);
	c = P("@daily");
	CHECK_INT(keel_cron_interval(c), ==, 0);
	keel_cron_free(c);
	keel_tz_free(tz);
}

TEST(at_before_and_after)
{
	struct keel_cron *c = P("@at 2026-03-29T02:30:00+01:00");
	struct keel_tz *tz = zone("America/New_York");
	int64_t at = T("2026-03-29T01:30:00Z");

	CHECK_INT(keel_cron_at(c), ==, at);
	CHECK_INT(keel_cron_interval(c), ==, 0);
	CHECK_INT(keel_cron_next(c, NULL, at - 1), ==, at);
	CHECK_INT(keel_cron_next(c, tz, 0), ==, at);
	CHECK_INT(keel_cron_next(c, NULL, at), ==, KEEL_CRON_NEVER);
	CHECK_INT(keel_cron_next(c, NULL, at + 86400), ==, KEEL_CRON_NEVER);
	keel_cron_free(c);
	/* Offsets both ways, Z, and a fraction (rounded up: never early). */
	c = P("@at 2026-03-28T20:30:00-05:00");
	CHECK_INT(keel_cron_at(c), ==, at);
	keel_cron_free(c);
	c = P("@at 2026-03-29 01:30:00Z");
	CHECK_INT(keel_cron_at(c), ==, at);
	keel_cron_free(c);
	c = P("@at 2026-03-29T01:29:59.001Z");
	CHECK_INT(keel_cron_at(c), ==, at);
	keel_cron_free(c);
	c = P("@at 2026-03-29T01:30:00.000Z");
	CHECK_INT(keel_cron_at(c), ==, at);
	keel_cron_free(c);
	c = P("@at 2024-02-29T00:00:00Z");
	CHECK_INT(keel_cron_at(c), ==, T("2024-02-29T00:00:00Z"));
	keel_cron_free(c);
	keel_tz_free(tz);
}

TEST(manual_never_fires)
{
	struct keel_cron *c = P("@manual");

	CHECK_INT(keel_cron_next(c, NULL, 0), ==, KEEL_CRON_NEVER);
	CHECK_INT(keel_cron_next(c, NULL, T("2026-01-01T00:00:00Z")), ==,
		  KEEL_CRON_NEVER);
	CHECK_INT(keel_cron_interval(c), ==, 0);
	CHECK_INT(keel_cron_at(c), ==, KEEL_CRON_NEVER);
	CHECK_INT(keel_cron_next(NULL, NULL, 0), ==, KEEL_CRON_NEVER);
	keel_cron_free(c);
}

/* Six fields: seconds first. */
TEST(seconds_field)
{
	expect_fires("*/20 30 2 * * *", NULL, "2026-01-01T02:30:10Z",
		     (const char *const[]){ "2026-01-01T02:30:20Z",
					    "2026-01-01T02:30:40Z",
					    "2026-01-02T02:30:00Z" }, 3);
	expect_fires("5 * * * *", NULL, "2026-01-01T02:30:10Z",
		     (const char *const[]){ "2026-01-01T03:05:00Z" }, 1);
}

/* The scheduler loop calls next() for every job after every run: it must
 * not allocate (the zone was loaded before). */
TEST(next_allocates_nothing)
{
	static const char *const specs[] = { "* * * * * *", "30 2 L * *",
					     "0 0 ? * 5L", "0 0 30 2 *",
					     "@every 90s", "@at 2030-01-01T00:00:00Z",
					     "@manual" };
	struct keel_cron *c[7];
	struct keel_tz *tz;
	int64_t t = T("2026-10-24T23:00:00Z");
	size_t i;
	int k;

	if (!KEEL_TEST_CAN_COUNT)
		KEEL_TEST_SKIP("allocations cannot be counted under a sanitizer");
	tz = zone("Europe/Berlin");
	for (i = 0; i < 7; i++)
		c[i] = P(specs[i]);
#if KEEL_TEST_CAN_COUNT
	keel_test_allocations = 0;
	keel_test_counting = 1;
	for (i = 0; i < 7; i++) {
		int64_t u = t;

		for (k = 0; k < 100; k++) {
			int64_t nx = keel_cron_next(c[i], tz, u);

			if (nx == KEEL_CRON_NEVER)
				break;
			u = nx;
		}
	}
	keel_test_counting = 0;
	CHECK_INT(keel_test_allocations, ==, 0);
#else
	(void)k;
	(void)t;
#endif
	for (i = 0; i < 7; i++)
		keel_cron_free(c[i]);
	keel_tz_free(tz);
}
