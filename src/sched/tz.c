/*
 * src/sched/tz.c - IANA time zones from TZif files (RFC 8536), read by
 * keel itself so that every job can have a zone of its own: setenv("TZ")
 * would change the zone of every thread of the daemon at once.
 *
 * A loaded zone is a sorted table of transitions (UTC instant -> offset)
 * plus, for instants after the last one, the POSIX TZ rule of the file's
 * footer. Both directions of conversion are built on one primitive,
 * seg_at(): the maximal stretch of time around an instant during which one
 * table entry or one footer rule state is in force, and its UTC offset.
 *
 * Everything read from the file is validated before use: counts against
 * the bytes present, indexes against the tables, offsets against RFC 8536's
 * range. A corrupt file is -EBADMSG, never an out-of-bounds read; the
 * libFuzzer harness fuzz/fuzz_tzif.c checks that.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <keel/tz.h>

#define DAY 86400
/* RFC 8536 3.2: offsets SHOULD be in [-89999, 93599] (-24:59:59 ..
 * 25:59:59). keel requires it, so every solution of local = t + offset lies
 * within WINDOW seconds of the local time. */
#define UTOFF_MIN (-89999)
#define UTOFF_MAX 93599
#define WINDOW 93600
/* The Gregorian calendar repeats every 400 years, and so do TZ rules. */
#define CYCLE_SECS (146097LL * DAY)
/* The largest zone in tzdata is a few kB; anything near this is not one. */
#define TZIF_MAX_SIZE (1 << 20)
#define NAME_MAX_LEN 255

/* One date of a POSIX TZ rule: Jn, n or Mm.w.d, and the local time of day
 * (seconds; v3 allows -167h..167h) at which the change happens. */
struct tz_date {
	char kind; /* 'J' (1..365, no Feb 29), 'D' (0..365), 'M' */
	int n, m, w, d;
	int32_t time;
};

struct keel_tz {
	char *name;
	int64_t *trans;   /* ntrans UTC instants, strictly ascending */
	int32_t *offs;    /* offset in force from trans[i] on */
	size_t ntrans;
	int32_t before;   /* offset before trans[0] */
	int has_rule;     /* a non-empty footer */
	int has_dst;      /* the footer names a DST time */
	int32_t std_off;  /* footer offsets, seconds east of UTC */
	int32_t dst_off;
	struct tz_date start, end;
};

static const struct keel_tz utc_zone = { .name = (char *)"UTC" };

/* ------------------------------------------------------------------------
 * Civil calendar (proleptic Gregorian, days since 1970-01-01)
 * ------------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Month and day are taken as they come (the day is added linearly, a
 * month outside 1..12 moves the year), so callers can ask for "day 0". */
int64_t keel_civil_days(int64_t year, int month, int day)
{
	int64_t y, era, yoe, doy, doe, mp;

	mp = (int64_t)month - 1;
	y = year + floor_div(mp, 12);
	mp -= floor_div(mp, 12) * 12; /* 0 = Jan */
	/* Count from March so that Feb 29 is the last day of the year. */
	mp = (mp + 10) % 12; /* 0 = Mar .. 11 = Feb */
	if (mp >= 10)
		y--;
	era = floor_div(y, 400);
	yoe = y - era * 400;
	doy = (153 * mp + 2) / 5;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468 + ((int64_t)day - 1);
}

void keel_civil_from_days(int64_t days, int64_t *year, int *month, int *day,
			  int *wday)
{
	int64_t z = days + 719468, era, doe, yoe, doy, mp, y;
	int m;

	era = floor_div(z, 146097);
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	m = (int)(mp < 10 ? mp + 3 : mp - 9);
	if (year)
		*year = m <= 2 ? y + 1 : y;
	if (month)
		*month = m;
	if (day)
		*day = (int)(doy - (153 * mp + 2) / 5 + 1);
	if (wday)
		*wday = (int)(days - floor_div(days + 4, 7) * 7 + 4) % 7;
}

int keel_civil_month_days(int64_t year, int month)
{
	static const int len[12] = { 31, 28, 31, 30, 31, 30,
				     31, 31, 30, 31, 30, 31 };

	if (month < 1 || month > 12)
		return 0;
	return month == 2 && is_leap(year) ? 29 : len[month - 1];
}

static int64_t sat_add(int64_t a, int64_t b)
{
	int64_t r;

	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? INT64_MAX : INT64_MIN;
	return r;
}

/* ------------------------------------------------------------------------
 * The footer's POSIX TZ rule
 * ------------------------------------------------------------------------ */

/* The UTC instant of rule date dt in year y, when the offset in force
 * just before it is off. */
static int64_t rule_instant(const struct tz_date *dt, int64_t y, int32_t off)
{
	int64_t days;

	if (dt->kind == 'J') {
		days = keel_civil_days(y, 1, 1) + dt->n - 1;
		if (is_leap(y) && dt->n >= 60)
			days++;
	} else if (dt->kind == 'D') {
		days = keel_civil_days(y, 1, 1) + dt->n;
	} else {
		int64_t first = keel_civil_days(y, dt->m, 1);
		int wd, mdays = keel_civil_month_days(y, dt->m);

		keel_civil_from_days(first, NULL, NULL, NULL, &wd);
		days = first + (dt->d - wd + 7) % 7 + 7 * (dt->w - 1);
		while (days >= first + mdays)
			days -= 7;
	}
	return days * DAY + dt->time - off;
}

struct rule_ev {
	int64_t at;
	int64_t year;
	int dst; /* 1: DST starts, 0: it ends */
};

/*
 * The stretch [*from, *to) around t (|t| < CYCLE_SECS, 1570..2370) in
 * which the footer rule keeps one offset. The changes of five years around
 * t's are sorted; the last one at or before t is in force. Two changes at
 * one instant: the later year's wins (a rule like "0/0,J365/25" is DST all
 * year); in one year the end wins (a DST of no length never starts).
 */
static int32_t rule_seg(const struct keel_tz *tz, int64_t t, int64_t *from,
			int64_t *to)
{
	struct rule_ev ev[10], tmp;
	int64_t y;
	int n = 0, i, j, cur = -1;

	keel_civil_from_days(floor_div(t + tz->std_off, DAY), &y, NULL, NULL,
			     NULL);
	for (i = -2; i <= 2; i++) {
		ev[n++] = (struct rule_ev){
			rule_instant(&tz->start, y + i, tz->std_off), y + i, 1
		};
		ev[n++] = (struct rule_ev){
			rule_instant(&tz->end, y + i, tz->dst_off), y + i, 0
		};
	}
	for (i = 1; i < n; i++) { /* insertion sort by (at, year, dst desc) */
		tmp = ev[i];
		for (j = i; j > 0; j--) {
			const struct rule_ev *p = &ev[j - 1];

			if (p->at < tmp.at ||
			    (p->at == tmp.at &&
			     (p->year < tmp.year ||
			      (p->year == tmp.year && p->dst >= tmp.dst))))
				break;
			ev[j] = ev[j - 1];
		}
		ev[j] = tmp;
	}
	for (i = 0; i < n && ev[i].at <= t; i++)
		cur = i;
	/* Five years of changes always surround t; guard anyway. */
	*from = cur >= 0 ? ev[cur].at : INT64_MIN;
	*to = cur + 1 < n ? ev[cur + 1].at : INT64_MAX;
	if (cur < 0)
		return ev[0].dst ? tz->std_off : tz->dst_off;
	return ev[cur].dst ? tz->dst_off : tz->std_off;
}

/* The footer's stretch around any t: shift t into the 400-year cycle on
 * either side of 1970, where the arithmetic cannot overflow, and back. */
static int32_t footer_seg(const struct keel_tz *tz, int64_t t, int64_t *from,
			  int64_t *to)
{
	int64_t shift, f, e;
	int32_t off;

	if (!tz->has_dst) {
		*from = INT64_MIN;
		*to = INT64_MAX;
		return tz->std_off;
	}
	/* t % CYCLE_SECS is in (-CYCLE_SECS, CYCLE_SECS) and t minus it
	 * lies between 0 and t: neither can overflow. */
	shift = t - t % CYCLE_SECS;
	off = rule_seg(tz, t % CYCLE_SECS, &f, &e);
	*from = f == INT64_MIN ? f : sat_add(f, shift);
	*to = e == INT64_MAX ? e : sat_add(e, shift);
	return off;
}

/*
 * The offset in force at t and the stretch [*from, *to) around t during
 * which it stays in force (as one table entry or one footer state; the
 * next stretch may happen to have the same offset).
 */
static int32_t seg_at(const struct keel_tz *tz, int64_t t, int64_t *from,
		      int64_t *to)
{
	size_t lo, hi;

	if (tz->ntrans == 0) {
		if (tz->has_rule) /* RFC 8536 3.2: the footer, for all time */
			return footer_seg(tz, t, from, to);
		*from = INT64_MIN;
		*to = INT64_MAX;
		return tz->before;
	}
	if (t < tz->trans[0]) {
		*from = INT64_MIN;
		*to = tz->trans[0];
		return tz->before;
	}
	/* The last transition at or before t. */
	lo = 0;
	hi = tz->ntrans;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (tz->trans[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	if (lo + 1 < tz->ntrans) {
		*from = tz->trans[lo];
		*to = tz->trans[lo + 1];
		return tz->offs[lo];
	}
	if (!tz->has_rule) {
		*from = tz->trans[lo];
		*to = INT64_MAX;
		return tz->offs[lo];
	} else {
		int32_t off = footer_seg(tz, t, from, to);

		if (*from < tz->trans[lo])
			*from = tz->trans[lo];
		return off;
	}
}

/* Parses [+-]hh[:mm[:ss]] with hh <= maxh into seconds. */
static int parse_hms(const char **sp, const char *end, int maxh,
		     int32_t *out)
{
	const char *s = *sp;
	int sign = 1, part, val[3] = { 0, 0, 0 }, nd;

	if (s < end && (*s == '+' || *s == '-'))
		sign = *s++ == '-' ? -1 : 1;
	for (part = 0; part < 3; part++) {
		if (part > 0) {
			if (s >= end || *s != ':')
				break;
			s++;
		}
		for (nd = 0; s < end && *s >= '0' && *s <= '9' && nd < 3; nd++)
			val[part] = val[part] * 10 + (*s++ - '0');
		if (nd == 0 || (part > 0 && (nd > 2 || val[part] > 59)))
			return -1;
	}
	if (val[0] > maxh)
		return -1;
	*out = sign * (val[0] * 3600 + val[1] * 60 + val[2]);
	*sp = s;
	return 0;
}

/* A zone abbreviation: <[A-Za-z0-9+-]{3,}> or [A-Za-z]{3,}. */
static int parse_abbr(const char **sp, const char *end)
{
	const char *s = *sp, *b;

	if (s < end && *s == '<') {
		b = ++s;
		while (s < end && (((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') ||
				   (*s >= '0' && *s <= '9') || *s == '+' ||
				   *s == '-'))
			s++;
		if (s >= end || *s != '>' || s - b < 3)
			return -1;
		*sp = s + 1;
		return 0;
	}
	b = s;
	while (s < end && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'z')
		s++;
	if (s - b < 3)
		return -1;
	*sp = s;
	return 0;
}

static int parse_num(const char **sp, const char *end, int lo, int hi,
		     int *out)
{
	const char *s = *sp;
	int v = 0, nd = 0;

	while (s < end && *s >= '0' && *s <= '9' && nd < 4) {
		v = v * 10 + (*s++ - '0');
		nd++;
	}
	if (nd == 0 || v < lo || v > hi)
		return -1;
	*out = v;
	*sp = s;
	return 0;
}

static int parse_date(const char **sp, const char *end, struct tz_date *dt)
{
	const char *s = *sp;

	memset(dt, 0, sizeof(*dt));
	if (s < end && *s == 'J') {
		s++;
		dt->kind = 'J';
		if (parse_num(&s, end, 1, 365, &dt->n))
			return -1;
	} else if (s < end && *s == 'M') {
		s++;
		dt->kind = 'M';
		if (parse_num(&s, end, 1, 12, &dt->m) || s >= end ||
		    *s++ != '.' || parse_num(&s, end, 1, 5, &dt->w) ||
		    s >= end || *s++ != '.' || parse_num(&s, end, 0, 6, &dt->d))
			return -1;
	} else {
		dt->kind = 'D';
		if (parse_num(&s, end, 0, 365, &dt->n))
			return -1;
	}
	dt->time = 7200; /* POSIX: 02:00:00 by default */
	if (s < end && *s == '/') {
		s++;
		/* RFC 8536 3.3.1: v3 allows hours -167..167. */
		if (parse_hms(&s, end, 167, &dt->time))
			return -1;
	}
	*sp = s;
	return 0;
}

/* The footer's TZ string, s[0..len), into tz. 0 or -1. */
static int parse_rule(struct keel_tz *tz, const char *s, size_t len)
{
	const char *end = s + len;
	int32_t off;

	if (len == 0)
		return 0; /* no rule: the last transition's offset goes on */
	if (parse_abbr(&s, end) || parse_hms(&s, end, 24, &off))
		return -1;
	tz->std_off = -off; /* POSIX counts west of Greenwich */
	tz->has_rule = 1;
	if (s == end)
		return 0;
	if (parse_abbr(&s, end))
		return -1;
	tz->has_dst = 1;
	tz->dst_off = tz->std_off + 3600;
	if (s < end && *s != ',') {
		if (parse_hms(&s, end, 24, &off))
			return -1;
		tz->dst_off = -off;
	}
	if (s == end) {
		/* No dates: POSIX leaves it to the implementation; glibc and
		 * tzcode use the US rules, and so does keel. */
		tz->start = (struct tz_date){ 'M', 0, 3, 2, 0, 7200 };
		tz->end = (struct tz_date){ 'M', 0, 11, 1, 0, 7200 };
		return 0;
	}
	if (*s++ != ',' || parse_date(&s, end, &tz->start) || s >= end ||
	    *s++ != ',' || parse_date(&s, end, &tz->end) || s != end)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------------
 * TZif
 * ------------------------------------------------------------------------ */

struct rd {
	const uint8_t *p;
	size_t left;
};

static const uint8_t *take(struct rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if (n > r->left)
		return NULL;
	r->p += n;
	r->left -= n;
	return p;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_hdr {
	int version; /* 1, 2, 3 or 4 */
	uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static int read_hdr(struct rd *r, struct tzif_hdr *h)
{
	const uint8_t *p = take(r, 44);

	if (p == NULL || memcmp(p, "TZif", 4) != 0)
		return -1;
	if (p[4] == 0)
		h->version = 1;
	else if (p[4] >= '2' && p[4] <= '4')
		h->version = p[4] - '0';
	else
		return -1;
	h->isutcnt = be32(p + 20);
	h->isstdcnt = be32(p + 24);
	h->leapcnt = be32(p + 28);
	h->timecnt = be32(p + 32);
	h->typecnt = be32(p + 36);
	h->charcnt = be32(p + 40);
	return 0;
}

/* The size of the data block h describes (counts are 32-bit, sizes 64-bit:
 * no overflow); -1 if it does not fit in left bytes. */
static int block_size(const struct tzif_hdr *h, size_t tsize, size_t left,
		      size_t *size)
{
	uint64_t n = (uint64_t)h->timecnt * (tsize + 1) +
		     (uint64_t)h->typecnt * 6 + h->charcnt +
		     (uint64_t)h->leapcnt * (tsize + 4) + h->isstdcnt +
		     h->isutcnt;

	if (n > left)
		return -1;
	*size = (size_t)n;
	return 0;
}

static int64_t tzif_time(const uint8_t *p, size_t tsize)
{
	return tsize == 8 ? be64(p) : (int32_t)be32(p);
}

/* The data block after h (time size tsize) into tz. 0 or -EBADMSG. */
static int read_block(struct rd *r, const struct tzif_hdr *h, size_t tsize,
		      struct keel_tz *tz)
{
	const uint8_t *times, *idx, *ttinfo, *chars, *leaps, *isstd, *isut;
	int32_t utoff[256];
	int isdst[256];
	size_t i, j, size;
	int64_t corr = 0, lc = 0;

	/* RFC 8536 3.1: at least one type and one designation byte; the
	 * indicator arrays are absent or one per type. */
	if (h->typecnt == 0 || h->typecnt > 256 || h->charcnt == 0 ||
	    (h->isstdcnt != 0 && h->isstdcnt != h->typecnt) ||
	    (h->isutcnt != 0 && h->isutcnt != h->typecnt))
		return -EBADMSG;
	if (block_size(h, tsize, r->left, &size) != 0)
		return -EBADMSG;
	times = take(r, (size_t)h->timecnt * tsize);
	idx = take(r, h->timecnt);
	ttinfo = take(r, (size_t)h->typecnt * 6);
	chars = take(r, h->charcnt);
	leaps = take(r, (size_t)h->leapcnt * (tsize + 4));
	isstd = take(r, h->isstdcnt);
	isut = take(r, h->isutcnt);
	if (!times || !idx || !ttinfo || !chars || !leaps || !isstd || !isut)
		return -EBADMSG;

	for (i = 0; i < h->typecnt; i++) {
		const uint8_t *e = ttinfo + 6 * i;
		int32_t off = (int32_t)be32(e);

		if (off < UTOFF_MIN || off > UTOFF_MAX || e[4] > 1 ||
		    e[5] >= h->charcnt ||
		    memchr(chars + e[5], 0, h->charcnt - e[5]) == NULL)
			return -EBADMSG;
		utoff[i] = off;
		isdst[i] = e[4];
		if ((h->isstdcnt && isstd[i] > 1) ||
		    (h->isutcnt && (isut[i] > 1 ||
				    (isut[i] && !(h->isstdcnt && isstd[i])))))
			return -EBADMSG;
	}
	/* Leap-second records: occurrences ascending, each correction one
	 * away from the one before (v4 frees the first). */
	for (j = 0; j < h->leapcnt; j++) {
		const uint8_t *e = leaps + j * (tsize + 4);
		int64_t c = (int32_t)be32(e + tsize);

		if (j > 0 && (tzif_time(e, tsize) <=
				      tzif_time(e - (tsize + 4), tsize) ||
			      (c - corr != 1 && c - corr != -1)))
			return -EBADMSG;
		if (j == 0 && h->version < 4 && c != 1 && c != -1)
			return -EBADMSG;
		corr = c;
	}

	tz->ntrans = h->timecnt;
	if (h->timecnt > 0) {
		tz->trans = malloc(sizeof(*tz->trans) * h->timecnt);
		tz->offs = malloc(sizeof(*tz->offs) * h->timecnt);
		if (tz->trans == NULL || tz->offs == NULL)
			return -ENOMEM;
	}
	j = 0; /* the next leap record; both tables ascend */
	for (i = 0; i < h->timecnt; i++) {
		int64_t t = tzif_time(times + tsize * i, tsize);

		if (idx[i] >= h->typecnt)
			return -EBADMSG;
		/* In a "right/" zone times count leap seconds; keel's are
		 * POSIX seconds: take away the corrections up to then. */
		for (; j < h->leapcnt; j++) {
			const uint8_t *e = leaps + j * (tsize + 4);

			if (tzif_time(e, tsize) > t)
				break;
			lc = (int32_t)be32(e + tsize);
		}
		if (i > 0 && t <= tzif_time(times + tsize * (i - 1), tsize))
			return -EBADMSG; /* RFC 8536: strictly ascending */
		t = sat_add(t, -lc);
		if (i > 0 && t <= tz->trans[i - 1])
			return -EBADMSG; /* inside a leap second */
		tz->trans[i] = t;
		tz->offs[i] = utoff[idx[i]];
	}
	/* Before the first transition: the first standard-time type, or type
	 * 0 if all are DST (tzfile(5), glibc; zic makes it type 0). */
	tz->before = utoff[0];
	for (i = 0; i < h->typecnt; i++) {
		if (!isdst[i]) {
			tz->before = utoff[i];
			break;
		}
	}
	return 0;
}

static void tz_clear(struct keel_tz *tz)
{
	free(tz->name);
	free(tz->trans);
	free(tz->offs);
}

int keel__tz_parse(const char *name, const void *buf, size_t len,
		   struct keel_tz **out)
{
	struct rd r = { buf, len };
	struct tzif_hdr h;
	struct keel_tz *tz;
	const uint8_t *nl;
	size_t skip;
	int rc;

	*out = NULL;
	if (buf == NULL || read_hdr(&r, &h) != 0)
		return -EBADMSG;
	tz = calloc(1, sizeof(*tz));
	if (tz == NULL)
		return -ENOMEM;
	tz->name = strdup(name ? name : "");
	if (tz->name == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if (h.version == 1) {
		rc = read_block(&r, &h, 4, tz);
		if (rc == 0 && r.left != 0)
			rc = -EBADMSG;
		if (rc != 0)
			goto fail;
		*out = tz;
		return 0;
	}
	/* v2+: skip the 32-bit block, read the 64-bit one and the footer. */
	rc = -EBADMSG;
	if (block_size(&h, 4, r.left, &skip) != 0)
		goto fail;
	take(&r, skip);
	if (read_hdr(&r, &h) != 0 || h.version < 2)
		goto fail;
	rc = read_block(&r, &h, 8, tz);
	if (rc != 0)
		goto fail;
	rc = -EBADMSG;
	if (r.left < 2 || r.p[0] != '\n')
		goto fail;
	nl = memchr(r.p + 1, '\n', r.left - 1);
	/* The footer ends the file (RFC 8536 3.3). */
	if (nl == NULL || (size_t)(nl - r.p) != r.left - 1)
		goto fail;
	if (parse_rule(tz, (const char *)r.p + 1, (size_t)(nl - r.p - 1)))
		goto fail;
	*out = tz;
	return 0;
fail:
	tz_clear(tz);
	free(tz);
	return rc;
}

/* ------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------ */

static int name_ok(const char *name)
{
	size_t i, n;

	if (name == NULL)
		return 0;
	n = strlen(name);
	if (n == 0 || n > NAME_MAX_LEN || name[0] == '/' ||
	    strstr(name, "..") != NULL)
		return 0;
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '+' ||
		      c == '-' || c == '/'))
			return 0;
	}
	return 1;
}

/* Reads path whole into *buf (malloc'd). */
static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	struct stat st;
	uint8_t *b;
	size_t n = 0;
	int fd, rc = 0;

	/* O_NONBLOCK: a FIFO planted in the zone directory must not hang
	 * the caller; it is refused below as not a regular file. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOTDIR ? -ENOENT : -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -ENOENT; /* "Europe" is a directory, not a zone */
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > TZIF_MAX_SIZE) {
		rc = -EBADMSG;
		goto out;
	}
	b = malloc((size_t)st.st_size + 1);
	if (b == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	while (n <= (size_t)st.st_size) { /* reads to EOF, even if it grew */
		ssize_t r = read(fd, b + n, (size_t)st.st_size + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			free(b);
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > (size_t)st.st_size) {
		free(b);
		rc = -EBADMSG; /* changing under us; not a zone to trust */
		goto out;
	}
	*buf = b;
	*len = n;
out:
	close(fd);
	return rc;
}

static int utc_named(const char *name, struct keel_tz **out)
{
	struct keel_tz *tz = calloc(1, sizeof(*tz));

	if (tz == NULL)
		return -ENOMEM;
	tz->name = strdup(name);
	if (tz->name == NULL) {
		free(tz);
		return -ENOMEM;
	}
	*out = tz;
	return 0;
}

int keel_tz_load(const char *name, struct keel_tz **out)
{
	const char *dir = getenv("TZDIR");
	char *path;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if (!name_ok(name))
		return -EINVAL;
	if (dir == NULL || dir[0] == '\0')
		dir = "/usr/share/zoneinfo";
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return -ENOMEM;
	rc = read_file(path, &buf, &len);
	free(path);
	if (rc == -ENOENT && (strcmp(name, "UTC") == 0 ||
			      strcmp(name, "Etc/UTC") == 0))
		return utc_named(name, out); /* no tzdata: UTC still works */
	if (rc != 0)
		return rc;
	rc = keel__tz_parse(name, buf, len, out);
	free(buf);
	return rc;
}

const struct keel_tz *keel_tz_utc(void)
{
	return &utc_zone;
}

const char *keel_tz_name(const struct keel_tz *tz)
{
	return tz ? tz->name : utc_zone.name;
}

void keel_tz_free(struct keel_tz *tz)
{
	if (tz == NULL || tz == &utc_zone)
		return;
	tz_clear(tz);
	free(tz);
}

/* ------------------------------------------------------------------------
 * Conversions
 * ------------------------------------------------------------------------ */

void keel_tz_to_local(const struct keel_tz *tz, int64_t t,
		      struct keel_civil *out, int32_t *utc_offset)
{
	int64_t from, to, days, secs;
	int32_t off;

	if (tz == NULL)
		tz = &utc_zone;
	off = seg_at(tz, t, &from, &to);
	/* Split before adding the offset: t may be near INT64_MAX. */
	days = floor_div(t, DAY);
	secs = t % DAY; /* not t - days * DAY: that overflows at INT64_MIN */
	if (secs < 0)
		secs += DAY;
	secs += off;
	days += floor_div(secs, DAY);
	secs -= floor_div(secs, DAY) * DAY;
	keel_civil_from_days(days, &out->year, &out->month, &out->day,
			     &out->wday);
	out->hour = (int)(secs / 3600);
	out->min = (int)(secs / 60 % 60);
	out->sec = (int)(secs % 60);
	if (utc_offset)
		*utc_offset = off;
}

#define CIVIL_YEAR_MAX 100000

int keel_tz_from_local(const struct keel_tz *tz, const struct keel_civil *c,
		       int64_t *first, int64_t *second)
{
	int64_t local, t, from, to, lo = 0, hi = 0, end, gap = INT64_MIN;
	int n = 0;

	if (tz == NULL)
		tz = &utc_zone;
	if (c == NULL || c->year < -CIVIL_YEAR_MAX || c->year > CIVIL_YEAR_MAX ||
	    c->month < 1 || c->month > 12 || c->day < 1 ||
	    c->day > keel_civil_month_days(c->year, c->month) || c->hour < 0 ||
	    c->hour > 23 || c->min < 0 || c->min > 59 || c->sec < 0 ||
	    c->sec > 59)
		return -EINVAL;
	local = keel_civil_days(c->year, c->month, c->day) * DAY +
		c->hour * 3600 + c->min * 60 + c->sec;
	/*
	 * Every answer t has t + offset(t) == local with |offset| < WINDOW:
	 * walk the stretches of constant offset that meet [local - WINDOW,
	 * local + WINDOW] in time order; each holds at most one answer.
	 */
	end = local + WINDOW;
	t = local - WINDOW;
	for (;;) {
		int32_t off = seg_at(tz, t, &from, &to);
		int64_t cand = local - off;

		if (cand >= from && cand < to) {
			if (n++ == 0)
				lo = cand;
			hi = cand;
		} else if (gap == INT64_MIN && from > local - WINDOW &&
			   sat_add(from, off) > local) {
			/* The first stretch whose clocks start past c: if no
			 * stretch shows c, c was skipped and the gap ends
			 * here. */
			gap = from;
		}
		if (to > end || to == INT64_MAX)
			break;
		t = to;
	}
	if (n == 0) {
		/* With offsets in range some stretch starts past c. */
		*first = *second = gap != INT64_MIN ? gap : local;
		return 0;
	}
	*first = lo;
	*second = hi;
	return n == 1 ? 1 : 2;
}
