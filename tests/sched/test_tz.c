/* KEEL_TEST_LABELS: threads */
/*
 * tests/sched/test_tz.c - time zones from TZif files (keel/tz.h), with the
 * C library's own conversion as the oracle: each case runs in a child
 * process of its own (keel_test.h), so it may set TZ and call tzset(), then
 * compare localtime_r() with keel_tz_to_local() at every hour around every
 * transition 1900-2040 and 2090-2100, at random instants, and the solutions
 * of "when do the clocks show c?" (found from localtime_r alone) with
 * keel_tz_from_local() around every transition. Also: the civil calendar
 * over 200000 years, every POSIX footer form in files written here (v1, v2,
 * v3), refusals of bad names and of truncated and corrupted files, a zone
 * shared by two threads, and UTC without any file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <keel/tz.h>
#include "keel_test.h"

#define ZONEINFO "/usr/share/zoneinfo"
#define H 3600
#define DAYS 86400

static void need_tzdata(void)
{
	if (access(ZONEINFO "/Europe/Berlin", R_OK) != 0)
		KEEL_TEST_SKIP("no tzdata in " ZONEINFO
			       " (install Debian's tzdata)");
	unsetenv("TZDIR");
}

static struct keel_tz *load(const char *name)
{
	struct keel_tz *tz = NULL;
	int rc = keel_tz_load(name, &tz);

	if (rc != 0)
		KEEL_TEST_FAIL("keel_tz_load(%s) = %d", name, rc);
	CHECK(tz != NULL);
	CHECK_STR(keel_tz_name(tz), name);
	return tz;
}

/* Makes TZ=zone the C library's zone in this (child) process. */
static void set_libc_zone(const char *zone)
{
	CHECK_INT(setenv("TZ", zone, 1), ==, 0);
	tzset();
}

static int64_t rnd_state = 0x9E3779B97F4A7C15LL;

static int64_t rnd(int64_t lo, int64_t hi)
{
	uint64_t x = (uint64_t)rnd_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rnd_state = (int64_t)x;
	return lo + (int64_t)(x % (uint64_t)(hi - lo + 1));
}

static int64_t utc(int64_t y, int mo, int d, int h, int mi, int s)
{
	return keel_civil_days(y, mo, d) * DAYS + h * H + mi * 60 + s;
}

static struct keel_civil civil(int64_t y, int mo, int d, int h, int mi,
			       int s)
{
	return (struct keel_civil){ y, mo, d, h, mi, s, 0 };
}

/* ------------------------------------------------------------------------
 * The oracle: localtime_r under TZ
 * ------------------------------------------------------------------------ */

static long libc_off(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (localtime_r(&tt, &tm) == NULL)
		KEEL_TEST_FAIL("localtime_r(%lld) failed", (long long)t);
	return tm.tm_gmtoff;
}

/* keel_tz_to_local(t) must equal localtime_r(t), field by field. */
static void check_to_local(const struct keel_tz *tz, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	struct keel_civil c;
	int32_t off = 12345678;

	CHECK(localtime_r(&tt, &tm) != NULL);
	keel_tz_to_local(tz, t, &c, &off);
	if (c.year != tm.tm_year + 1900LL || c.month != tm.tm_mon + 1 ||
	    c.day != tm.tm_mday || c.hour != tm.tm_hour ||
	    c.min != tm.tm_min || c.sec != tm.tm_sec ||
	    c.wday != tm.tm_wday || off != tm.tm_gmtoff)
		KEEL_TEST_FAIL("%s at %lld: keel %lld-%02d-%02d %02d:%02d:%02d "
			       "wday %d off %d, libc %d-%02d-%02d "
			       "%02d:%02d:%02d wday %d off %ld",
			       keel_tz_name(tz), (long long)t,
			       (long long)c.year, c.month, c.day, c.hour,
			       c.min, c.sec, c.wday, (int)off,
			       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			       tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_wday,
			       tm.tm_gmtoff);
}

/*
 * keel_tz_from_local(local) against the answer built from localtime_r
 * alone: the offsets in force within 27 h of local (sampled hourly, plus
 * the ones at the transition being tested) give the candidates t =
 * local - off, kept when localtime's offset at t is off; none means a gap,
 * whose end is the first second at which the clocks show more than local.
 */
static void check_from_local(const struct keel_tz *tz, int64_t local,
			     const long *extra, int nextra)
{
	long offs[512];
	int noffs = 0, i, j, n = 0, rc;
	int64_t lo = 0, hi = 0, first, second, x;
	struct keel_civil c;

	for (i = 0; i < nextra; i++)
		offs[noffs++] = extra[i];
	for (x = local - 27 * H; x <= local + 27 * H; x += H) {
		long o = libc_off(x);

		for (j = 0; j < noffs && offs[j] != o; j++)
			;
		if (j == noffs && noffs < 512)
			offs[noffs++] = o;
	}
	for (i = 0; i < noffs; i++) {
		int64_t t = local - offs[i];

		if (libc_off(t) != offs[i])
			continue;
		for (j = 0; j < i; j++) /* one t per offset */
			if (local - offs[j] == t)
				break;
		if (j < i)
			continue;
		if (n == 0 || t < lo)
			lo = t;
		if (n == 0 || t > hi)
			hi = t;
		n++;
	}
	keel_civil_from_days(local >= 0 ? local / DAYS
					: -((-local + DAYS - 1) / DAYS),
			     &c.year, &c.month, &c.day, NULL);
	x = local - keel_civil_days(c.year, c.month, c.day) * DAYS;
	c.hour = (int)(x / H);
	c.min = (int)(x / 60 % 60);
	c.sec = (int)(x % 60);
	rc = keel_tz_from_local(tz, &c, &first, &second);
	if (n == 0) {
		/* The gap ends at the first t whose clocks pass local. */
		int64_t a, b;

		for (b = local - 27 * H; b + libc_off(b) <= local; b += 900)
			;
		a = b - 900;
		while (b - a > 1) {
			int64_t m = a + (b - a) / 2;

			if (m + libc_off(m) > local)
				b = m;
			else
				a = m;
		}
		lo = hi = b;
	}
	if (rc != (n > 2 ? 2 : n) || first != lo || second != hi)
		KEEL_TEST_FAIL("%s from_local(%lld-%02d-%02d %02d:%02d:%02d): "
			       "keel %d [%lld, %lld], libc %d [%lld, %lld]",
			       keel_tz_name(tz), (long long)c.year, c.month,
			       c.day, c.hour, c.min, c.sec, rc,
			       (long long)first, (long long)second, n,
			       (long long)lo, (long long)hi);
	/* And back: each instant shows c. */
	if (rc > 0) {
		struct keel_civil back;

		keel_tz_to_local(tz, first, &back, NULL);
		CHECK(back.year == c.year && back.month == c.month &&
		      back.day == c.day && back.hour == c.hour &&
		      back.min == c.min && back.sec == c.sec);
		keel_tz_to_local(tz, second, &back, NULL);
		CHECK(back.hour == c.hour && back.min == c.min &&
		      back.sec == c.sec);
	}
}

/* The first second in (a, b] at which localtime's offset differs from
 * its offset at a. */
static int64_t bisect_change(int64_t a, int64_t b)
{
	long oa = libc_off(a);

	while (b - a > 1) {
		int64_t m = a + (b - a) / 2;

		if (libc_off(m) == oa)
			a = m;
		else
			b = m;
	}
	return b;
}

struct sweep {
	int transitions;  /* found by the libc scan */
	int gaps, overlaps; /* among them */
};

/*
 * Scans [from, to) day by day under the libc zone; at every change of
 * offset compares to_local at every hour and around the exact second
 * within two days, and from_local every 15 min across the change.
 */
static void sweep(const struct keel_tz *tz, int64_t from, int64_t to,
		  int with_from_local, struct sweep *s)
{
	int64_t t, prev = from, x;
	long prev_off = libc_off(from), off;

	for (t = from; t < to; t += DAYS, prev = t - DAYS, prev_off = off) {
		check_to_local(tz, t);
		off = libc_off(t);
		if (off != prev_off) {
			int64_t tr = bisect_change(prev, t);
			long o1 = libc_off(tr - 1), o2 = libc_off(tr);
			long ex[2] = { o1, o2 };
			int64_t l1 = tr + (o1 < o2 ? o1 : o2);
			int64_t l2 = tr + (o1 < o2 ? o2 : o1);

			s->transitions++;
			if (o2 > o1)
				s->gaps++;
			else
				s->overlaps++;
			for (x = tr - 48 * H; x <= tr + 48 * H; x += H)
				check_to_local(tz, x);
			for (x = tr - 2; x <= tr + 2; x++)
				check_to_local(tz, x);
			if (with_from_local) {
				for (x = l1 - 2 * H; x <= l2 + 2 * H; x += 900)
					check_from_local(tz, x, ex, 2);
				for (x = -1; x <= 1; x++) {
					check_from_local(tz, tr + o1 + x, ex, 2);
					check_from_local(tz, tr + o2 + x, ex, 2);
				}
			}
		}
	}
}

/* The zones the brief names and a dozen more with something special. */
static const char *const zones[] = {
	"Europe/Berlin",       "America/New_York",
	"Australia/Lord_Howe", /* 30-minute DST */
	"Europe/Dublin",       /* negative DST since the 2018 data */
	"Pacific/Apia",        /* skipped 2011-12-30 */
	"Asia/Kolkata",        /* no DST, +5:30 */
	"America/Sao_Paulo",   /* DST abolished in 2019 */
	"Europe/London",       "America/Los_Angeles",
	"America/Santiago",    "Asia/Tehran",
	"Africa/Casablanca",   /* negative DST around Ramadan */
	"Pacific/Chatham",     /* +12:45 / +13:45 */
	"Asia/Kathmandu",      "Australia/Adelaide",
	"America/St_Johns",    "Antarctica/Troll", /* +00 / +02 */
	"Europe/Moscow",       "America/Havana", /* changes at midnight */
	"Pacific/Kiritimati",  /* skipped 1994-12-31 */
	"America/Nuuk",        /* v3 footer: negative rule times */
	"Asia/Jerusalem",      /* v3 footer: 26:00 */
	"Asia/Gaza",           "Europe/Lisbon",
	"UTC",
};
#define NZONES (sizeof(zones) / sizeof(zones[0]))

static void oracle_zone(const char *name, int with_from_local,
			struct sweep *s)
{
	struct keel_tz *tz = load(name);
	int i;

	set_libc_zone(name);
	sweep(tz, utc(1900, 1, 1, 0, 0, 0), utc(2040, 1, 1, 0, 0, 0),
	      with_from_local, s);
	sweep(tz, utc(2090, 1, 1, 0, 0, 0), utc(2100, 12, 31, 0, 0, 0),
	      with_from_local, s);
	/* Random instants 1900-2100, and further out (before the first
	 * transition of any zone, and far past its last). */
	for (i = 0; i < 20000; i++)
		check_to_local(tz, rnd(utc(1900, 1, 1, 0, 0, 0),
				       utc(2100, 12, 31, 23, 59, 59)));
	for (i = 0; i < 2000; i++)
		check_to_local(tz, rnd(-60000000000LL, 60000000000LL));
	keel_tz_free(tz);
}

/* ------------------------------------------------------------------------
 * The civil calendar
 * ------------------------------------------------------------------------ */

/* Every day of years -100000..100000 once, against a calendar counted
 * forward one day at a time. */
TEST(civil_days_every_day_of_200000_years)
{
	int64_t d = keel_civil_days(-100000, 1, 1), y = -100000, yy;
	int m = 1, day = 1, wd, mm, dd, w0;

	keel_civil_from_days(d, NULL, NULL, NULL, &w0);
	for (;; d++) {
		keel_civil_from_days(d, &yy, &mm, &dd, &wd);
		if (yy != y || mm != m || dd != day)
			KEEL_TEST_FAIL("day %lld: %lld-%d-%d, want %lld-%d-%d",
				       (long long)d, (long long)yy, mm, dd,
				       (long long)y, m, day);
		CHECK_INT(wd, ==, w0);
		if (day == 1 && keel_civil_days(y, m, day) != d)
			KEEL_TEST_FAIL("keel_civil_days(%lld, %d, 1) != %lld",
				       (long long)y, m, (long long)d);
		w0 = (w0 + 1) % 7;
		if (++day > keel_civil_month_days(y, m)) {
			day = 1;
			if (++m > 12) {
				m = 1;
				if (++y > 100000)
					break;
			}
		}
	}
}

TEST(civil_days_known_values)
{
	int64_t y;
	int m, d, wd;

	CHECK_INT(keel_civil_days(1970, 1, 1), ==, 0);
	CHECK_INT(keel_civil_days(2000, 3, 1), ==, 11017);
	CHECK_INT(keel_civil_days(1969, 12, 31), ==, -1);
	CHECK_INT(keel_civil_days(2026, 11, 26), ==, 20783);
	CHECK_INT(keel_civil_days(0, 1, 1), ==, -719528); /* 1 BC */
	/* Out-of-range months and days are carried, not refused. */
	CHECK_INT(keel_civil_days(2025, 13, 1), ==,
		  keel_civil_days(2026, 1, 1));
	CHECK_INT(keel_civil_days(2024, 3, 0), ==,
		  keel_civil_days(2024, 2, 29));
	CHECK_INT(keel_civil_days(2024, 0, 1), ==,
		  keel_civil_days(2023, 12, 1));
	keel_civil_from_days(0, &y, &m, &d, &wd);
	CHECK(y == 1970 && m == 1 && d == 1 && wd == 4); /* a Thursday */
	keel_civil_from_days(-1, &y, &m, &d, &wd);
	CHECK(y == 1969 && m == 12 && d == 31 && wd == 3);
	CHECK_INT(keel_civil_month_days(2024, 2), ==, 29);
	CHECK_INT(keel_civil_month_days(2100, 2), ==, 28);
	CHECK_INT(keel_civil_month_days(2000, 2), ==, 29);
	CHECK_INT(keel_civil_month_days(-4, 2), ==, 29);
	CHECK_INT(keel_civil_month_days(-100, 2), ==, 28);
	CHECK_INT(keel_civil_month_days(2023, 4), ==, 30);
	CHECK_INT(keel_civil_month_days(2023, 0), ==, 0);
	CHECK_INT(keel_civil_month_days(2023, 13), ==, 0);
	/* timegm agrees every day from 1600 to 2400. */
	for (y = 1600; y <= 2400; y++)
		for (m = 1; m <= 12; m++)
			for (d = 1; d <= keel_civil_month_days(y, m); d++) {
				struct tm tm = { .tm_year = (int)y - 1900,
						 .tm_mon = m - 1,
						 .tm_mday = d };

				CHECK_INT(keel_civil_days(y, m, d) * DAYS, ==,
					  timegm(&tm));
			}
}

/* ------------------------------------------------------------------------
 * Against the C library, zone by zone
 * ------------------------------------------------------------------------ */

TEST(to_local_and_from_local_match_libc_in_26_zones)
{
	struct sweep s = { 0, 0, 0 };
	size_t i;

	need_tzdata();
	for (i = 0; i < NZONES; i++) {
		struct sweep z = { 0, 0, 0 };

		oracle_zone(zones[i], 1, &z);
		/* Each zone but UTC and Kolkata-style ones must have had
		 * something to compare at all. */
		if (strcmp(zones[i], "UTC") != 0)
			CHECK_INT(z.transitions, >, 0);
		s.transitions += z.transitions;
		s.gaps += z.gaps;
		s.overlaps += z.overlaps;
	}
	printf("  %d transitions (%d gaps, %d overlaps) compared\n",
	       s.transitions, s.gaps, s.overlaps);
	CHECK_INT(s.transitions, >, 2000);
	CHECK_INT(s.gaps, >, 900);
	CHECK_INT(s.overlaps, >, 900);
}

/* The cases the brief singles out, with the answers written down. */
TEST(named_transitions)
{
	struct keel_tz *tz;
	struct keel_civil c;
	int64_t a, b;
	int32_t off;

	need_tzdata();
	tz = load("Europe/Berlin");
	/* 2026-03-29 02:30 does not exist: runs at 03:00 CEST = 01:00 UTC. */
	c = civil(2026, 3, 29, 2, 30, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 0);
	CHECK_INT(a, ==, utc(2026, 3, 29, 1, 0, 0));
	CHECK_INT(b, ==, a);
	/* 2026-10-25 02:30 happens twice: 00:30 and 01:30 UTC. */
	c = civil(2026, 10, 25, 2, 30, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 2);
	CHECK_INT(a, ==, utc(2026, 10, 25, 0, 30, 0));
	CHECK_INT(b, ==, utc(2026, 10, 25, 1, 30, 0));
	c = civil(2026, 7, 1, 12, 0, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 1);
	CHECK_INT(a, ==, utc(2026, 7, 1, 10, 0, 0));
	/* Far future, from the footer: 2095-03-27 02:00 is skipped. */
	c = civil(2095, 3, 27, 2, 0, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 0);
	CHECK_INT(a, ==, utc(2095, 3, 27, 1, 0, 0));
	keel_tz_free(tz);

	/* Apia went from -10 to +14 skipping Friday 2011-12-30. */
	tz = load("Pacific/Apia");
	c = civil(2011, 12, 30, 12, 0, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 0);
	CHECK_INT(a, ==, utc(2011, 12, 30, 10, 0, 0));
	keel_tz_to_local(tz, a, &c, &off);
	CHECK(c.year == 2011 && c.month == 12 && c.day == 31 && c.hour == 0);
	CHECK_INT(off, ==, 14 * H);
	keel_tz_to_local(tz, a - 1, &c, &off);
	CHECK(c.day == 29 && c.hour == 23 && c.min == 59 && c.sec == 59);
	CHECK_INT(off, ==, -10 * H);
	keel_tz_free(tz);

	/* Lord Howe: DST is 30 minutes; 01:45 on 2026-04-05 twice. */
	tz = load("Australia/Lord_Howe");
	c = civil(2026, 4, 5, 1, 45, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 2);
	CHECK_INT(b - a, ==, 1800);
	keel_tz_to_local(tz, a, &c, &off);
	CHECK_INT(off, ==, 11 * H);
	keel_tz_free(tz);

	/* Dublin: Irish Standard Time is summer (+1); winter GMT is the
	 * DST type. The offsets are what count. */
	tz = load("Europe/Dublin");
	keel_tz_to_local(tz, utc(2026, 1, 15, 12, 0, 0), &c, &off);
	CHECK_INT(off, ==, 0);
	keel_tz_to_local(tz, utc(2026, 7, 15, 12, 0, 0), &c, &off);
	CHECK_INT(off, ==, H);
	keel_tz_to_local(tz, utc(2098, 7, 15, 12, 0, 0), &c, &off);
	CHECK_INT(off, ==, H);
	c = civil(2098, 10, 26, 1, 30, 0); /* last Sunday of October 2098 */
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 2);
	keel_tz_free(tz);

	/* Sao Paulo: no DST since 2019; November 2018 had a gap. */
	tz = load("America/Sao_Paulo");
	c = civil(2018, 11, 4, 0, 30, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 0);
	c = civil(2030, 11, 3, 0, 30, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 1);
	keel_tz_to_local(tz, utc(2030, 1, 1, 12, 0, 0), &c, &off);
	CHECK_INT(off, ==, -3 * H);
	keel_tz_free(tz);

	tz = load("Asia/Kolkata");
	keel_tz_to_local(tz, utc(2026, 6, 1, 0, 0, 0), &c, &off);
	CHECK_INT(off, ==, 19800);
	CHECK(c.hour == 5 && c.min == 30);
	keel_tz_free(tz);

	/* Before 1970: New York, 1950-04-30 02:30 was skipped. */
	tz = load("America/New_York");
	c = civil(1950, 4, 30, 2, 30, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 0);
	CHECK_INT(a, ==, utc(1950, 4, 30, 7, 0, 0));
	keel_tz_free(tz);
}

/* A "right/" zone counts leap seconds in its file; keel's instants are
 * POSIX seconds, so it must convert exactly as the plain zone does, up to
 * where its leap table expires (2025b: an empty footer, the last
 * transition in 2026; after that the file says nothing reliable). */
TEST(right_zone_matches_posix_zone)
{
	struct keel_tz *plain, *right;
	int i;

	need_tzdata();
	if (access(ZONEINFO "/right/Europe/Berlin", R_OK) != 0)
		KEEL_TEST_SKIP("no right/ zones in this tzdata");
	plain = load("Europe/Berlin");
	right = load("right/Europe/Berlin");
	for (i = 0; i < 20000; i++) {
		int64_t t = rnd(utc(1960, 1, 1, 0, 0, 0),
				utc(2026, 1, 1, 0, 0, 0));
		struct keel_civil a, b;
		int32_t oa, ob;

		keel_tz_to_local(plain, t, &a, &oa);
		keel_tz_to_local(right, t, &b, &ob);
		CHECK(memcmp(&a, &b, sizeof(a)) == 0);
		CHECK_INT(oa, ==, ob);
	}
	keel_tz_free(plain);
	keel_tz_free(right);
}

/* ------------------------------------------------------------------------
 * Files written here: every footer form, v1/v2/v3
 * ------------------------------------------------------------------------ */

struct img {
	uint8_t b[8192];
	size_t n;
};

static void put(struct img *m, const void *p, size_t n)
{
	CHECK(m->n + n <= sizeof(m->b));
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void put32(struct img *m, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 8), (uint8_t)v };

	put(m, b, 4);
}

static void put64(struct img *m, int64_t v)
{
	put32(m, (uint32_t)((uint64_t)v >> 32));
	put32(m, (uint32_t)v);
}

struct ztype {
	int32_t off;
	int isdst;
};

static void put_hdr(struct img *m, char version, uint32_t timecnt,
		    uint32_t typecnt, uint32_t charcnt)
{
	static const uint8_t zero[15];

	put(m, "TZif", 4);
	put(m, &version, 1);
	put(m, zero, 15);
	put32(m, 0); /* isutcnt */
	put32(m, 0); /* isstdcnt */
	put32(m, 0); /* leapcnt */
	put32(m, timecnt);
	put32(m, typecnt);
	put32(m, charcnt);
}

/* A TZif image: version 0 (v1) or '2'/'3'; abbreviations are all "ZZZ". */
static void make_tzif(struct img *m, char version, const int64_t *times,
		      const uint8_t *idx, int ntimes,
		      const struct ztype *types, int ntypes,
		      const char *footer)
{
	int i, pass;

	m->n = 0;
	for (pass = version == 0 ? 1 : 0; pass < 2; pass++) {
		int wide = version != 0 && pass == 1;
		int nt = pass == 0 ? 0 : ntimes;
		int ny = pass == 0 ? 1 : ntypes;

		/* v2+: a minimal v1 block, as zic -b slim writes it. */
		put_hdr(m, version, (uint32_t)nt, (uint32_t)ny, 4);
		for (i = 0; i < nt; i++) {
			if (wide)
				put64(m, times[i]);
			else
				put32(m, (uint32_t)(int32_t)times[i]);
		}
		for (i = 0; i < nt; i++)
			put(m, &idx[i], 1);
		for (i = 0; i < ny; i++) {
			uint8_t e[2] = { (uint8_t)types[i].isdst, 0 };

			put32(m, (uint32_t)types[i].off);
			put(m, e, 2);
		}
		put(m, "ZZZ", 4);
	}
	if (version != 0) {
		put(m, "\n", 1);
		put(m, footer, strlen(footer));
		put(m, "\n", 1);
	}
}

static char tmpdir[256];

static void make_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/keel-tz-%d-XXXXXX",
		 (int)getpid());
	CHECK(mkdtemp(tmpdir) != NULL);
}

static void write_zone(const char *name, const void *buf, size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK_INT(write(fd, buf, len), ==, (long long)len);
	close(fd);
}

static void rm_tmpdir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	CHECK_INT(system(cmd), ==, 0);
}

/* Parses an exact-size heap copy, so ASan sees any read past the end. */
static int parse_exact(const void *buf, size_t len, struct keel_tz **out)
{
	void *copy = malloc(len ? len : 1);
	int rc;

	CHECK(copy != NULL);
	memcpy(copy, buf, len);
	rc = keel__tz_parse("test", copy, len, out);
	free(copy);
	return rc;
}

/*
 * Each footer in a v3 file with one transition (1901, from LMT-ish
 * +0:17:30), compared with the C library reading the same file, 2000-2040
 * and 2090-2100, to_local and from_local.
 */
TEST(footer_forms_match_libc)
{
	static const char *const footers[] = {
		"EST5EDT,M3.2.0,M11.1.0",
		"<-03>3<-02>,M3.5.0/-2,M10.5.0/-1", /* v3: negative times */
		"IST-2IDT,M3.4.4/26,M10.5.0",       /* v3: past 24 h */
		"XXX3YYY,J60/1,J300",               /* Jn: no Feb 29 */
		"XXX3YYY,59/1,300",                 /* n: counts Feb 29 */
		"AAA-10BBB-11,M10.1.0,M4.1.0/3",    /* southern */
		"IST-1GMT0,M10.5.0,M3.5.0/1",       /* negative DST */
		"<+0530>-5:30",                     /* no DST */
		"<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
		"ABC+3:30DEF+2:15:10,M4.1.6/100,M9.5.6/-100",
		"XYZ-14<+12>-12,M11.1.0/12,M2.1.0/12", /* 2 h DST, backwards */
	};
	struct ztype types[2] = { { 1050, 0 }, { 0, 0 } };
	int64_t times[1] = { utc(1901, 1, 1, 0, 0, 0) };
	uint8_t idx[1] = { 1 };
	struct img m;
	size_t i;

	make_tmpdir();
	CHECK_INT(setenv("TZDIR", tmpdir, 1), ==, 0);
	for (i = 0; i < sizeof(footers) / sizeof(footers[0]); i++) {
		struct sweep s = { 0, 0, 0 };
		struct keel_tz *tz;
		char name[32], libc_tz[300];

		make_tzif(&m, '3', times, idx, 1, types, 2, footers[i]);
		snprintf(name, sizeof(name), "Footer%zu", i);
		write_zone(name, m.b, m.n);
		CHECK_INT(keel_tz_load(name, &tz), ==, 0);
		snprintf(libc_tz, sizeof(libc_tz), "%s/%s", tmpdir, name);
		set_libc_zone(libc_tz);
		sweep(tz, utc(2000, 1, 1, 0, 0, 0), utc(2040, 1, 1, 0, 0, 0),
		      1, &s);
		sweep(tz, utc(2090, 1, 1, 0, 0, 0), utc(2100, 1, 1, 0, 0, 0),
		      1, &s);
		check_to_local(tz, utc(1900, 6, 1, 0, 0, 0)); /* before */
		if (strchr(footers[i], ',') != NULL)
			CHECK_INT(s.transitions, >=, 100);
		keel_tz_free(tz);
	}
	rm_tmpdir();
}

/* RFC 8536 3.3.1's example of DST all year, "EST5EDT,0/0,J365/25": DST
 * ends at 25:00 on Dec 31 as it starts again at 00:00 standard on Jan 1, so
 * the offset is -4 h at every instant. (glibc compares t with the changes
 * of t's UTC year only and answers -5 h in the first five hours of each
 * year, so it is no oracle here.) */
TEST(footer_dst_all_year)
{
	struct ztype types[1] = { { -5 * H, 0 } };
	int64_t times[1] = { 0 };
	uint8_t idx[1] = { 0 };
	struct keel_tz *tz;
	struct img m;
	int32_t off;
	struct keel_civil c;
	int64_t t, a, b;

	make_tzif(&m, '3', times, idx, 1, types, 1, "EST5EDT,0/0,J365/25");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, 0);
	for (t = 1; t < utc(2100, 1, 1, 0, 0, 0); t += 3 * H + 17) {
		keel_tz_to_local(tz, t, &c, &off);
		if (off != -4 * H)
			KEEL_TEST_FAIL("offset %d at %lld", (int)off,
				       (long long)t);
	}
	c = civil(2030, 1, 1, 0, 30, 0);
	CHECK_INT(keel_tz_from_local(tz, &c, &a, &b), ==, 1);
	CHECK_INT(a, ==, utc(2030, 1, 1, 4, 30, 0));
	keel_tz_free(tz);
}

/* "EST5EDT" with no dates: POSIX leaves it open; keel (like glibc and
 * tzcode) uses the US rules of 2007. */
TEST(footer_without_dates_uses_us_rules)
{
	struct ztype types[1] = { { -5 * H, 0 } };
	int64_t times[1] = { 0 };
	uint8_t idx[1] = { 0 };
	struct keel_tz *tz;
	struct img m;
	int32_t off;
	struct keel_civil c;

	make_tzif(&m, '2', times, idx, 1, types, 1, "EST5EDT");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, 0);
	keel_tz_to_local(tz, utc(2030, 3, 10, 6, 59, 59), &c, &off);
	CHECK_INT(off, ==, -5 * H);
	keel_tz_to_local(tz, utc(2030, 3, 10, 7, 0, 0), &c, &off);
	CHECK_INT(off, ==, -4 * H);
	keel_tz_to_local(tz, utc(2030, 11, 3, 5, 59, 59), &c, &off);
	CHECK_INT(off, ==, -4 * H);
	keel_tz_to_local(tz, utc(2030, 11, 3, 6, 0, 0), &c, &off);
	CHECK_INT(off, ==, -5 * H);
	keel_tz_free(tz);
}

/* v1 (32-bit only, no footer): the last type goes on; before the first
 * transition, the first standard type even if type 0 is DST. A v2 file
 * without transitions takes its footer for all time (RFC 8536 3.2). */
TEST(v1_and_edge_files)
{
	struct ztype types[3] = { { 3600, 1 }, { 1800, 0 }, { -7200, 0 } };
	int64_t times[2] = { -1000000000LL, 1000000000LL };
	uint8_t idx[2] = { 0, 2 };
	struct keel_tz *tz;
	struct img m;
	int32_t off;
	struct keel_civil c;

	make_tzif(&m, 0, times, idx, 2, types, 3, "");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, 0);
	keel_tz_to_local(tz, -1000000001LL, &c, &off);
	CHECK_INT(off, ==, 1800);
	keel_tz_to_local(tz, -1000000000LL, &c, &off);
	CHECK_INT(off, ==, 3600);
	keel_tz_to_local(tz, 999999999LL, &c, &off);
	CHECK_INT(off, ==, 3600);
	keel_tz_to_local(tz, INT64_MAX, &c, &off);
	CHECK_INT(off, ==, -7200);
	keel_tz_to_local(tz, INT64_MIN, &c, &off);
	CHECK_INT(off, ==, 1800);
	keel_tz_free(tz);

	/* The same in v2 with an empty footer. */
	make_tzif(&m, '2', times, idx, 2, types, 3, "");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, 0);
	keel_tz_to_local(tz, 4000000000LL, &c, &off);
	CHECK_INT(off, ==, -7200);
	keel_tz_free(tz);

	/* No transitions, a footer: the footer everywhere. */
	make_tzif(&m, '3', NULL, NULL, 0, types + 1, 1, "<+0030>-0:30");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, 0);
	keel_tz_to_local(tz, 0, &c, &off);
	CHECK_INT(off, ==, 1800);
	keel_tz_free(tz);

	/* Extreme instants do not overflow. */
	tz = NULL;
	make_tzif(&m, '2', times, idx, 2, types, 3, "EST5EDT,M3.2.0,M11.1.0");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, 0);
	keel_tz_to_local(tz, INT64_MAX, &c, &off);
	CHECK(c.year > 292000000000LL);
	keel_tz_to_local(tz, INT64_MIN, &c, &off);
	CHECK(c.year < -292000000000LL);
	CHECK_INT(off, ==, 1800);
	keel_tz_free(tz);
}

/* ------------------------------------------------------------------------
 * Refusals
 * ------------------------------------------------------------------------ */

TEST(bad_names_refused)
{
	static const char *const bad[] = {
		"",	      "../etc/passwd", "/etc/localtime",
		"Europe/../../etc/passwd", "Europe/Berlin ", "Europe\\Berlin",
		"Europe/Berlin\n", "Europe/*", "Europe/Ber lin", "..",
		"a..b",
	};
	struct keel_tz *tz = (struct keel_tz *)1;
	char longname[300];
	size_t i;

	need_tzdata();
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tz = (struct keel_tz *)1;
		CHECK_INT(keel_tz_load(bad[i], &tz), ==, -EINVAL);
		CHECK(tz == NULL);
	}
	CHECK_INT(keel_tz_load(NULL, &tz), ==, -EINVAL);
	memset(longname, 'A', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CHECK_INT(keel_tz_load(longname, &tz), ==, -EINVAL);
	CHECK_INT(keel_tz_load("Europe/Nowhere", &tz), ==, -ENOENT);
	CHECK(tz == NULL);
	CHECK_INT(keel_tz_load("Europe", &tz), ==, -ENOENT);
	CHECK_INT(keel_tz_load("Europe/Berlin/x", &tz), ==, -ENOENT);
	/* '.' is not in a zone name; a file that is not TZif is refused. */
	CHECK_INT(keel_tz_load("tzdata.zi", &tz), ==, -EINVAL);
	if (access(ZONEINFO "/leapseconds", R_OK) == 0)
		CHECK_INT(keel_tz_load("leapseconds", &tz), ==, -EBADMSG);
	/* Good names load ("+", "-", "_" and digits are allowed). */
	tz = load("Etc/GMT+5");
	keel_tz_free(tz);
	tz = load("America/Port_of_Spain");
	keel_tz_free(tz);
	keel_test_leak_check();
}

TEST(bad_fields_refused_by_from_local)
{
	const struct keel_tz *u = keel_tz_utc();
	static const struct keel_civil bad[] = {
		{ 2026, 0, 1, 0, 0, 0, 0 },   { 2026, 13, 1, 0, 0, 0, 0 },
		{ 2026, 1, 0, 0, 0, 0, 0 },   { 2026, 1, 32, 0, 0, 0, 0 },
		{ 2026, 2, 29, 0, 0, 0, 0 },  { 2026, 4, 31, 0, 0, 0, 0 },
		{ 2026, 1, 1, 24, 0, 0, 0 },  { 2026, 1, 1, -1, 0, 0, 0 },
		{ 2026, 1, 1, 0, 60, 0, 0 },  { 2026, 1, 1, 0, 0, 60, 0 },
		{ 2026, 1, 1, 0, 0, -1, 0 },  { 100001, 1, 1, 0, 0, 0, 0 },
		{ -100001, 1, 1, 0, 0, 0, 0 },
	};
	int64_t a = 7, b = 7;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_INT(keel_tz_from_local(u, &bad[i], &a, &b), ==, -EINVAL);
		CHECK(a == 7 && b == 7);
	}
	CHECK_INT(keel_tz_from_local(u, &(struct keel_civil){ 2024, 2, 29, 23,
							     59, 59, 0 },
				     &a, &b),
		  ==, 1);
	CHECK_INT(a, ==, utc(2024, 2, 29, 23, 59, 59));
}

/* Every proper prefix of a real file is refused; so is every one-byte
 * corruption that breaks a rule, and none reads out of bounds (ASan). */
TEST(truncated_and_corrupted_files_refused)
{
	static uint8_t real[65536];
	struct keel_tz *tz;
	size_t n, i;
	int fd, ok = 0, bad = 0;
	ssize_t r;

	need_tzdata();
	fd = open(ZONEINFO "/America/New_York", O_RDONLY);
	CHECK(fd >= 0);
	r = read(fd, real, sizeof(real));
	close(fd);
	CHECK(r > 100);
	n = (size_t)r;
	CHECK_INT(parse_exact(real, n, &tz), ==, 0);
	keel_tz_free(tz);
	for (i = 0; i < n; i++) {
		tz = (struct keel_tz *)1;
		CHECK_INT(parse_exact(real, i, &tz), ==, -EBADMSG);
		CHECK(tz == NULL);
	}
	/* Flip each byte: either still a valid zone, or -EBADMSG (flips in
	 * the 32-bit block, which v2+ readers skip, or in transition times
	 * that stay sorted, leave a valid zone). */
	for (i = 0; i < n; i++) {
		int rc;

		real[i] ^= 0xa5;
		rc = parse_exact(real, n, &tz);
		real[i] ^= 0xa5;
		CHECK(rc == 0 || rc == -EBADMSG);
		if (rc == 0) {
			struct keel_civil c;
			int64_t a, b;

			keel_tz_to_local(tz, 1700000000, &c, NULL);
			c.wday = 0;
			CHECK(keel_tz_from_local(tz, &c, &a, &b) >= 0);
			keel_tz_free(tz);
			ok++;
		} else {
			bad++;
		}
	}
	CHECK_INT(bad, >, (int)n / 4);
	/* Trailing bytes after the footer. */
	memcpy(real + n, "x", 1);
	CHECK_INT(parse_exact(real, n + 1, &tz), ==, -EBADMSG);
	printf("  %zu prefixes refused; %d flips refused, %d still valid\n",
	       n, bad, ok);
	keel_test_leak_check();
}

/* Each rule of RFC 8536 a file can break, one at a time, via TZDIR. */
TEST(specific_corruptions_refused)
{
	struct ztype types[2] = { { 3600, 0 }, { 7200, 1 } };
	struct ztype badoff[1] = { { 93600, 0 } };
	struct ztype baddst[1] = { { 0, 2 } };
	int64_t times[2] = { 100, 200 }, unsorted[2] = { 200, 100 };
	uint8_t idx[2] = { 0, 1 }, badidx[2] = { 0, 2 };
	static const char *const badfooters[] = {
		"EST",		   "EST5EDT,M3.2.0",    "EST5EDT,M13.2.0,M11.1.0",
		"EST5EDT,M3.6.0,M11.1.0", "EST5EDT,M3.2.7,M11.1.0",
		"EST5EDT,J0,J100", "EST5EDT,J366,J100", "EST5EDT,366,1",
		"EST5EDT,M3.2.0/168,M11.1.0", "EST25", "E5", "<AB>5",
		"EST5EDT,M3.2.0,M11.1.0,", "EST5EDT,M3.2.0,M11.1.0x",
		"EST5:60", "EST5EDT4:5:6:7", "<EST5",
	};
	struct keel_tz *tz;
	struct img m;
	size_t i;

	make_tmpdir();
	CHECK_INT(setenv("TZDIR", tmpdir, 1), ==, 0);

	make_tzif(&m, '2', times, idx, 2, types, 2, "CET-1");
	write_zone("Good", m.b, m.n);
	CHECK_INT(keel_tz_load("Good", &tz), ==, 0);
	keel_tz_free(tz);

	m.b[0] = 'X'; /* magic */
	write_zone("Magic", m.b, m.n);
	CHECK_INT(keel_tz_load("Magic", &tz), ==, -EBADMSG);
	m.b[0] = 'T';
	m.b[4] = '5'; /* version */
	write_zone("Version", m.b, m.n);
	CHECK_INT(keel_tz_load("Version", &tz), ==, -EBADMSG);

	make_tzif(&m, '2', unsorted, idx, 2, types, 2, "CET-1");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	make_tzif(&m, '2', times, badidx, 2, types, 2, "CET-1");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	make_tzif(&m, '2', times, idx, 0, badoff, 1, "CET-1");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	make_tzif(&m, '2', times, idx, 0, baddst, 1, "CET-1");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	make_tzif(&m, 0, times, idx, 2, types, 0, "");
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG); /* typecnt 0 */
	/* Abbreviation index past charcnt (the last type's byte 5). */
	make_tzif(&m, 0, times, idx, 2, types, 2, "");
	m.b[44 + 2 * 5 + 6 + 5] = 4;
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	/* A designation without its NUL. */
	make_tzif(&m, 0, times, idx, 2, types, 2, "");
	m.b[m.n - 1] = 'Z';
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	/* A count larger than the file. */
	make_tzif(&m, '2', times, idx, 2, types, 2, "CET-1");
	m.b[44 - 12 + 3] = 0xff; /* v1 timecnt */
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	m.b[44 - 12 + 3] = 0;
	memset(m.b + 32, 0xff, 4); /* timecnt = 2^32 - 1 */
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	/* Footer without its newlines. */
	make_tzif(&m, '2', times, idx, 2, types, 2, "CET-1");
	CHECK_INT(parse_exact(m.b, m.n - 1, &tz), ==, -EBADMSG);
	m.b[m.n - 1] = 'x';
	CHECK_INT(parse_exact(m.b, m.n, &tz), ==, -EBADMSG);
	for (i = 0; i < sizeof(badfooters) / sizeof(badfooters[0]); i++) {
		make_tzif(&m, '3', times, idx, 2, types, 2, badfooters[i]);
		if (parse_exact(m.b, m.n, &tz) != -EBADMSG)
			KEEL_TEST_FAIL("footer \"%s\" accepted",
				       badfooters[i]);
	}
	/* Not a regular file, or too big to be a zone. */
	{
		char path[512];

		snprintf(path, sizeof(path), "%s/Fifo", tmpdir);
		CHECK_INT(mkfifo(path, 0600), ==, 0);
		CHECK_INT(keel_tz_load("Fifo", &tz), ==, -EBADMSG);
		write_zone("Big", "", 0);
		snprintf(path, sizeof(path), "%s/Big", tmpdir);
		CHECK_INT(truncate(path, 2 << 20), ==, 0);
		CHECK_INT(keel_tz_load("Big", &tz), ==, -EBADMSG);
	}
	rm_tmpdir();
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * UTC, sharing
 * ------------------------------------------------------------------------ */

TEST(utc_without_a_file)
{
	const struct keel_tz *u = keel_tz_utc();
	struct keel_tz *tz;
	struct keel_civil c;
	int32_t off = 5;
	int64_t a, b;

	CHECK_STR(keel_tz_name(u), "UTC");
	keel_tz_to_local(u, 1700000000, &c, &off);
	CHECK(c.year == 2023 && c.month == 11 && c.day == 14 && c.hour == 22 &&
	      c.min == 13 && c.sec == 20 && c.wday == 2);
	CHECK_INT(off, ==, 0);
	CHECK_INT(keel_tz_from_local(u, &c, &a, &b), ==, 1);
	CHECK(a == 1700000000 && b == a);
	keel_tz_free((struct keel_tz *)u); /* a no-op */
	keel_tz_free(NULL);
	CHECK_STR(keel_tz_name(keel_tz_utc()), "UTC");

	/* TZDIR with nothing in it: "UTC" still loads, nothing else does. */
	make_tmpdir();
	CHECK_INT(setenv("TZDIR", tmpdir, 1), ==, 0);
	CHECK_INT(keel_tz_load("UTC", &tz), ==, 0);
	CHECK_STR(keel_tz_name(tz), "UTC");
	keel_tz_to_local(tz, -1, &c, &off);
	CHECK(c.year == 1969 && c.hour == 23 && off == 0);
	keel_tz_free(tz);
	CHECK_INT(keel_tz_load("Etc/UTC", &tz), ==, 0);
	keel_tz_free(tz);
	CHECK_INT(keel_tz_load("Europe/Berlin", &tz), ==, -ENOENT);
	rm_tmpdir();
	keel_test_leak_check();
}

struct shared {
	const struct keel_tz *tz;
	int64_t seed;
	int mismatches;
};

static struct keel_civil expect_c[4096];
static int32_t expect_off[4096];
static int64_t expect_t[4096];

static void *convert_loop(void *arg)
{
	struct shared *s = arg;
	int round, i;

	for (round = 0; round < 50; round++)
		for (i = 0; i < 4096; i++) {
			struct keel_civil c;
			int32_t off;
			int64_t a, b;

			keel_tz_to_local(s->tz, expect_t[i], &c, &off);
			if (memcmp(&c, &expect_c[i], sizeof(c)) != 0 ||
			    off != expect_off[i])
				s->mismatches++;
			if (keel_tz_from_local(s->tz, &c, &a, &b) < 1 ||
			    (a != expect_t[i] && b != expect_t[i]))
				s->mismatches++;
		}
	return NULL;
}

TEST(two_threads_share_one_zone)
{
	struct keel_tz *tz;
	struct shared s1, s2;
	pthread_t t1, t2;
	int i;

	need_tzdata();
	tz = load("Europe/Berlin");
	for (i = 0; i < 4096; i++) {
		expect_t[i] = rnd(utc(1950, 1, 1, 0, 0, 0),
				  utc(2100, 1, 1, 0, 0, 0));
		keel_tz_to_local(tz, expect_t[i], &expect_c[i], &expect_off[i]);
	}
	s1 = (struct shared){ tz, 1, 0 };
	s2 = (struct shared){ tz, 2, 0 };
	CHECK_INT(pthread_create(&t1, NULL, convert_loop, &s1), ==, 0);
	CHECK_INT(pthread_create(&t2, NULL, convert_loop, &s2), ==, 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	CHECK_INT(s1.mismatches, ==, 0);
	CHECK_INT(s2.mismatches, ==, 0);
	keel_tz_free(tz);
}
