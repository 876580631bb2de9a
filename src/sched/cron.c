/*
 * src/sched/cron.c - schedule parsing and next-fire computation.
 *
 * A cron spec becomes one bit mask per field plus masks for the special
 * day items (L, L-n, LW, nW, nL, n#k). keel_cron_next walks the calendar
 * in local civil time, month by month and day by day, and maps each
 * matching civil time to an instant with the DST rule of keel/cron.h.
 *
 * Why walking civil time is enough: let f(L) be the instant a matching
 * local time L fires at (its first occurrence, or the end of the gap it
 * falls in). f never decreases as L increases: a gap flattens it (every L
 * in the gap, and the first L after it, map to the gap's end), an overlap
 * only makes it jump forward (the repeated hour fires on its first pass).
 * So the next fire after `after` is f of the first matching L after
 * local(after) with f(L) > after; the equal values of f in a gap collapse
 * into one fire by the "strictly after".
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/cron.h>

enum field { F_SEC, F_MIN, F_HOUR, F_DOM, F_MON, F_DOW, F_COUNT };

static const char *const field_names[F_COUNT] = {
    "second", "minute", "hour", "day of month", "month", "day of week",
};
static const int field_lo[F_COUNT] = {0, 0, 0, 1, 1, 0};
static const int field_hi[F_COUNT] = {59, 59, 23, 31, 12, 7};

struct keel_cron {
	enum keel_cron_kind kind;
	uint64_t mask[F_COUNT]; /* bit v: value v matches (dow: 0-6) */
	int dom_any, dow_any;	/* the field was exactly * or ? */
	uint32_t dom_last;	/* bit n: L-n (L is n = 0) */
	uint32_t dom_near;	/* bit n: nW */
	int dom_lastwd;		/* LW */
	uint8_t dow_last;	/* bit w: wL */
	uint8_t dow_nth[7];	/* dow_nth[w] bit k-1: w#k */
	int64_t every;		/* @every: seconds */
	int64_t at;		/* @at: instant */
	char text[];
};

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

struct perr {
	char *buf;
	size_t len;
	int field; /* index in the text (0-based), or -1 */
	int which; /* enum field */
};

static int fail(struct perr *e, const char *fmt, ...) KEEL_PRINTF(2, 3);
static int fail(struct perr *e, const char *fmt, ...)
{
	va_list ap;
	size_t n = 0;
	int w;

	if (e->buf == NULL || e->len == 0)
		return -EINVAL;
	if (e->field >= 0) {
		w = snprintf(e->buf, e->len, "field %d (%s): ", e->field + 1,
			     field_names[e->which]);
		n = w > 0 ? (size_t)w : 0;
		if (n >= e->len)
			return -EINVAL;
	}
	va_start(ap, fmt);
	vsnprintf(e->buf + n, e->len - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Text quoted in a reason is cut at 40 bytes, so every reason fits in
 * KEEL_CRON_ERR_MAX: printf("%.*s", SHOW(len), s). */
#define SHOW(len) ((int)((len) > 40 ? 40 : (len)))

/* ------------------------------------------------------------------------
 * Fields
 * ------------------------------------------------------------------------ */

static const char *const month_names[] = {"jan", "feb", "mar", "apr",
					  "may", "jun", "jul", "aug",
					  "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed",
					"thu", "fri", "sat"};

/* A token of an item: [s, end). */
struct tok {
	const char *s;
	size_t n;
};

static int tok_eq(struct tok t, const char *lit)
{
	return t.n == strlen(lit) && strncasecmp(t.s, lit, t.n) == 0;
}

/* A number in [lo, hi]: digits only (steps, k in n#k, n in L-n). */
static int parse_number(struct perr *e, struct tok t, int lo, int hi, int *v)
{
	size_t i;
	long x = 0;

	if (t.n == 0)
		return fail(e, "missing value");
	for (i = 0; i < t.n; i++) {
		if (!isdigit((unsigned char)t.s[i]))
			return fail(e, "'%.*s' is not a number", SHOW(t.n),
				    t.s);
		if (x < 1000000)
			x = x * 10 + (t.s[i] - '0');
	}
	if (x < lo || x > hi)
		return fail(e, "%.*s is out of range %d-%d", SHOW(t.n), t.s, lo,
			    hi);
	*v = (int)x;
	return 0;
}

/*
 * A field value: a number in [lo, hi], or a month or day name where the
 * field has them. Returns 0 and *v, or an error naming the text.
 */
static int parse_value(struct perr *e, struct tok t, int lo, int hi, int *v)
{
	size_t i;

	if (t.n == 0 || isdigit((unsigned char)t.s[0]))
		return parse_number(e, t, lo, hi, v);
	if (e->which == F_MON)
		for (i = 0; i < 12; i++)
			if (tok_eq(t, month_names[i])) {
				*v = (int)i + 1;
				return 0;
			}
	if (e->which == F_DOW)
		for (i = 0; i < 7; i++)
			if (tok_eq(t, day_names[i])) {
				*v = (int)i;
				return 0;
			}
	if (e->which == F_MON)
		return fail(e, "'%.*s' is not a month (1-12 or JAN-DEC)",
			    SHOW(t.n), t.s);
	if (e->which == F_DOW)
		return fail(e, "'%.*s' is not a day of week (0-7 or SUN-SAT)",
			    SHOW(t.n), t.s);
	return fail(e, "'%.*s' is not a number", SHOW(t.n), t.s);
}

/* Index of the first c in t, or t.n. */
static size_t tok_find(struct tok t, char c)
{
	size_t i;

	for (i = 0; i < t.n; i++)
		if (t.s[i] == c)
			break;
	return i;
}

/* Day of month specials: L, L-n, LW, nW. Returns 1 if it was one (and
 * recorded), 0 if not, or an error. */
static int parse_dom_special(struct perr *e, struct keel_cron *c, struct tok t)
{
	int v;
	int rc;

	if (tok_eq(t, "L")) {
		c->dom_last |= 1u;
		return 1;
	}
	if (tok_eq(t, "LW")) {
		c->dom_lastwd = 1;
		return 1;
	}
	if (t.n >= 2 && (t.s[0] == 'L' || t.s[0] == 'l') && t.s[1] == '-') {
		rc = parse_number(e, (struct tok){t.s + 2, t.n - 2}, 0, 30, &v);
		if (rc < 0)
			return rc;
		c->dom_last |= 1u << v;
		return 1;
	}
	if (t.n >= 1 && (t.s[t.n - 1] == 'W' || t.s[t.n - 1] == 'w')) {
		if (t.n == 1)
			return fail(e, "W needs a day (e.g. 15W, the weekday "
				       "nearest the 15th)");
		if (tok_find(t, '-') < t.n || tok_find(t, '/') < t.n)
			return fail(e,
				    "'%.*s': W takes one day, not a range "
				    "or step",
				    SHOW(t.n), t.s);
		rc = parse_value(e, (struct tok){t.s, t.n - 1}, 1, 31, &v);
		if (rc < 0)
			return rc;
		c->dom_near |= 1u << v;
		return 1;
	}
	return 0;
}

/* Day of week specials: nL, n#k. */
static int parse_dow_special(struct perr *e, struct keel_cron *c, struct tok t)
{
	size_t hash = tok_find(t, '#');
	int w, k, rc;

	if (hash < t.n) {
		if (tok_find(t, '-') < t.n || tok_find(t, '/') < t.n)
			return fail(e,
				    "'%.*s': # takes one day, not a range "
				    "or step",
				    SHOW(t.n), t.s);
		rc = parse_value(e, (struct tok){t.s, hash}, 0, 7, &w);
		if (rc < 0)
			return rc;
		if (hash + 1 == t.n)
			return fail(e,
				    "'%.*s': # needs k in 1-5 (e.g. 1#2, "
				    "the second Monday)",
				    SHOW(t.n), t.s);
		rc = parse_number(
		    e, (struct tok){t.s + hash + 1, t.n - hash - 1}, 1, 5, &k);
		if (rc < 0)
			return rc;
		c->dow_nth[w % 7] |= (uint8_t)(1u << (k - 1));
		return 1;
	}
	if (t.n >= 1 && (t.s[t.n - 1] == 'L' || t.s[t.n - 1] == 'l')) {
		if (t.n == 1)
			return fail(e, "L needs a day (e.g. 5L, the last "
				       "Friday of the month)");
		if (tok_find(t, '-') < t.n || tok_find(t, '/') < t.n)
			return fail(e,
				    "'%.*s': L takes one day, not a range "
				    "or step",
				    SHOW(t.n), t.s);
		rc = parse_value(e, (struct tok){t.s, t.n - 1}, 0, 7, &w);
		if (rc < 0)
			return rc;
		c->dow_last |= (uint8_t)(1u << (w % 7));
		return 1;
	}
	return 0;
}

/* L, W and # where the field has no such item: say where they belong. */
static int misplaced(struct perr *e, struct tok t)
{
	char last = t.n ? (char)toupper((unsigned char)t.s[t.n - 1]) : 0;
	int f = e->which, lw;

	if (tok_find(t, '#') < t.n)
		return fail(e,
			    "'%.*s': # is only allowed in day of week "
			    "(n#k, the k-th n-day)",
			    SHOW(t.n), t.s);
	lw = tok_eq(t, "L") || tok_eq(t, "LW") ||
	     (t.n >= 2 && toupper((unsigned char)t.s[0]) == 'L' &&
	      t.s[1] == '-');
	if (t.n >= 2 && isdigit((unsigned char)t.s[t.n - 2]) &&
	    (last == 'L' || last == 'W'))
		lw = 1;
	if (!lw)
		return 0;
	if (f == F_DOM)
		return fail(e,
			    "'%.*s': day of month takes L, L-n, LW or nW "
			    "(nL is for day of week)",
			    SHOW(t.n), t.s);
	if (f == F_DOW)
		return fail(e,
			    "'%.*s': day of week takes nL or n#k (L-n, LW "
			    "and nW are for day of month)",
			    SHOW(t.n), t.s);
	return fail(e,
		    "'%.*s': L and W are only allowed in day of month "
		    "or day of week",
		    SHOW(t.n), t.s);
}

/* One list item: *, v, a-b, with an optional /n; or a special. */
static int parse_item(struct perr *e, struct keel_cron *c, struct tok t)
{
	int f = e->which, lo = field_lo[f], hi = field_hi[f];
	int a, b, step = 1, v, rc;
	size_t slash, dash;
	struct tok range;

	if (t.n == 0)
		return fail(e, "empty list item");
	if (f == F_DOM) {
		rc = parse_dom_special(e, c, t);
		if (rc != 0)
			return rc < 0 ? rc : 0;
	} else if (f == F_DOW) {
		rc = parse_dow_special(e, c, t);
		if (rc != 0)
			return rc < 0 ? rc : 0;
	}
	rc = misplaced(e, t);
	if (rc < 0)
		return rc;
	if (tok_eq(t, "?"))
		return fail(e, "? must be the whole field");

	slash = tok_find(t, '/');
	range = (struct tok){t.s, slash};
	if (slash < t.n) {
		rc = parse_number(
		    e, (struct tok){t.s + slash + 1, t.n - slash - 1}, 0,
		    1000000, &step);
		if (rc < 0)
			return rc;
		if (step < 1 || step > hi - lo + 1)
			return fail(e, "step in '%.*s' must be 1-%d", SHOW(t.n),
				    t.s, hi - lo + 1);
	}
	if (tok_eq(range, "*")) {
		a = lo;
		b = f == F_DOW ? 6 : hi;
	} else {
		dash = tok_find(range, '-');
		rc = parse_value(e, (struct tok){range.s, dash}, lo, hi, &a);
		if (rc < 0)
			return rc;
		if (dash < range.n) {
			rc = parse_value(e,
					 (struct tok){range.s + dash + 1,
						      range.n - dash - 1},
					 lo, hi, &b);
			if (rc < 0)
				return rc;
			if (b < a)
				return fail(e,
					    "range '%.*s' is backwards "
					    "(%d > %d); write it as two "
					    "ranges",
					    SHOW(range.n), range.s, a, b);
		} else if (slash < t.n) {
			b = f == F_DOW ? 6 : hi; /* a/n: a to the maximum */
			if (a > b)
				b = a;
		} else {
			b = a;
		}
	}
	for (v = a; v <= b; v += step)
		c->mask[f] |= UINT64_C(1) << (f == F_DOW ? v % 7 : v);
	return 0;
}

static int parse_field(struct perr *e, struct keel_cron *c, struct tok t)
{
	size_t i, start = 0;
	int rc;

	if (tok_eq(t, "*") || tok_eq(t, "?")) {
		if (t.s[0] == '?' && e->which != F_DOM && e->which != F_DOW)
			return fail(e, "? is only allowed in day of month or "
				       "day of week");
		for (i = (size_t)field_lo[e->which];
		     i <= (size_t)(e->which == F_DOW ? 6 : field_hi[e->which]);
		     i++)
			c->mask[e->which] |= UINT64_C(1) << i;
		if (e->which == F_DOM)
			c->dom_any = 1;
		if (e->which == F_DOW)
			c->dow_any = 1;
		return 0;
	}
	for (i = 0; i <= t.n; i++) {
		if (i < t.n && t.s[i] != ',')
			continue;
		rc = parse_item(e, c, (struct tok){t.s + start, i - start});
		if (rc < 0)
			return rc;
		start = i + 1;
	}
	return 0;
}

static int is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* Splits s into at most max blank-separated tokens; returns the count
 * (max + 1 means "more"). */
static int split(const char *s, struct tok *out, int max)
{
	int n = 0;

	for (;;) {
		while (is_blank(*s))
			s++;
		if (*s == '\0')
			return n;
		if (n == max)
			return max + 1;
		out[n].s = s;
		while (*s != '\0' && !is_blank(*s))
			s++;
		out[n].n = (size_t)(s - out[n].s);
		n++;
	}
}

static int parse_fields(struct perr *e, struct keel_cron *c, const char *s)
{
	struct tok t[6];
	int n = split(s, t, 6), i, rc;

	if (n != 5 && n != 6)
		return fail(e,
			    "expected 5 fields (minute hour day-of-month "
			    "month day-of-week) or 6 (second first), found "
			    "%s%d",
			    n > 6 ? "more than " : "", n > 6 ? 6 : n);
	if (n == 5)
		c->mask[F_SEC] = 1; /* second 0 */
	for (i = 0; i < n; i++) {
		e->field = i;
		e->which = n == 6 ? i : i + 1;
		rc = parse_field(e, c, t[i]);
		if (rc < 0)
			return rc;
	}
	e->field = -1;
	return 0;
}

/* ------------------------------------------------------------------------
 * @every and @at
 * ------------------------------------------------------------------------ */

/* Longest @every: 100 years, far beyond any schedule's use. */
#define EVERY_MAX (INT64_C(876000) * 3600)

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)

/* A bound for a reason, in the largest unit that divides it: "24h",
 * "90s", "500ms", "7ns" (only a caller's odd bound needs ns). */
static void show_ns(char *buf, size_t len, int64_t ns)
{
	static const struct {
		int64_t ns;
		const char *unit;
	} units[] = {
	    {INT64_C(3600) * NS_PER_S, "h"}, {INT64_C(60) * NS_PER_S, "m"},
	    {NS_PER_S, "s"},		     {NS_PER_MS, "ms"},
	};
	size_t i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (ns != 0 && ns % units[i].ns == 0) {
			snprintf(buf, len, "%lld%s",
				 (long long)(ns / units[i].ns), units[i].unit);
			return;
		}
	}
	snprintf(buf, len, ns == 0 ? "0s" : "%lldns", (long long)ns);
}

/*
 * The one duration grammar of keel (schedules and jobs): Go-style, one or
 * more <digits><unit> with units h, m, s and ms, no sign, no fractions, no
 * blanks: "1h30m", "90s", "500ms", "1h0m5s". Units may repeat or come in
 * any order; the parts add up.
 */
int keel_duration_parse(const char *text, int64_t min_ns, int64_t max_ns,
			int64_t *out, char *err, size_t errlen)
{
	struct perr e = {err, errlen, -1, 0};
	size_t i = 0, n;
	int64_t total = 0;
	char bound[32];

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (text == NULL || out == NULL)
		return fail(&e, "no duration given");
	n = strlen(text);
	if (n == 0)
		return fail(&e, "missing duration (e.g. 1h30m)");
	while (i < n) {
		int64_t x = 0, unit;
		size_t d0 = i;
		int big = 0;

		while (i < n && isdigit((unsigned char)text[i])) {
			if (x > (INT64_MAX - 9) / 10)
				big = 1;
			else
				x = x * 10 + (text[i] - '0');
			i++;
		}
		if (i == d0)
			return fail(&e,
				    "'%.*s' is not a duration (a number then "
				    "h, m, s or ms, e.g. 1h30m)",
				    SHOW(n), text);
		if (i < n && text[i] == '.')
			return fail(&e, "fractions are not supported (write "
					"1h30m, not 1.5h)");
		if (i == n)
			return fail(&e, "'%.*s' lacks a unit after %.*s (h, m, "
					"s or ms)",
				    SHOW(n), text, SHOW(i - d0), text + d0);
		if (text[i] == 'h') {
			unit = 3600 * NS_PER_S;
		} else if (text[i] == 'm' && i + 1 < n && text[i + 1] == 's') {
			unit = NS_PER_MS;
			i++;
		} else if (text[i] == 'm') {
			unit = 60 * NS_PER_S;
		} else if (text[i] == 's') {
			unit = NS_PER_S;
		} else {
			return fail(&e,
				    "unknown unit in '%.*s' (h, m, s or ms)",
				    SHOW(n), text);
		}
		i++;
		if (big || x > max_ns / unit || total > max_ns - x * unit) {
			show_ns(bound, sizeof(bound), max_ns);
			return fail(&e, "duration must be at most %s", bound);
		}
		total += x * unit;
	}
	if (total < min_ns) {
		show_ns(bound, sizeof(bound), min_ns);
		return fail(&e, "duration must be at least %s", bound);
	}
	*out = total;
	return 0;
}

/* @every: the shared grammar, but whole seconds only (no ms: a schedule
 * counts seconds), at least 1s, at most EVERY_MAX. */
static int parse_every(struct perr *e, struct keel_cron *c, struct tok t)
{
	char text[KEEL_CRON_TEXT_MAX + 1], why[KEEL_CRON_ERR_MAX];
	int64_t ns;
	size_t i;

	if (t.n == 0)
		return fail(e, "@every: missing duration (e.g. @every 1h30m)");
	for (i = 0; i + 1 < t.n; i++) {
		if (t.s[i] == 'm' && t.s[i + 1] == 's')
			return fail(e,
				    "@every: unknown unit in '%.*s' (h, m "
				    "or s; durations are whole seconds)",
				    SHOW(t.n), t.s);
	}
	memcpy(text, t.s, t.n); /* t.n <= KEEL_CRON_TEXT_MAX */
	text[t.n] = '\0';
	if (keel_duration_parse(text, 0, INT64_MAX, &ns, why, sizeof(why)) < 0)
		return fail(e, "@every: %s", why);
	if (ns > EVERY_MAX * NS_PER_S)
		return fail(e, "@every: duration must be at most "
			       "876000h (100 years)");
	if (ns < NS_PER_S)
		return fail(e, "@every: duration must be at least 1s");
	c->every = ns / NS_PER_S;
	return 0;
}

/* n digits at s as a number, or -1. */
static int digits(const char *s, size_t n)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* RFC 3339 date-time: 2026-03-29T02:30:00[.frac](Z|+hh:mm|-hh:mm); 't',
 * 'z' and a space for 'T' are allowed as section 5.6 permits. */
static int parse_at(struct perr *e, struct keel_cron *c, struct tok t)
{
	const char *s = t.s;
	size_t n = t.n, i;
	int y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0;
	int64_t when, off = 0;

	if (n == 0)
		return fail(e, "@at: missing time (e.g. @at "
			       "2026-03-29T02:30:00+01:00)");
	if (n < 19 || s[4] != '-' || s[7] != '-' ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' ||
	    s[16] != ':')
		goto bad;
	y = digits(s, 4);
	mo = digits(s + 5, 2);
	d = digits(s + 8, 2);
	h = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	sec = digits(s + 17, 2);
	if (y < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || sec < 0)
		goto bad;
	i = 19;
	if (i < n && s[i] == '.') {
		size_t f0 = ++i;

		while (i < n && isdigit((unsigned char)s[i])) {
			if (s[i] != '0')
				frac = 1;
			i++;
		}
		if (i == f0)
			goto bad;
	}
	if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i + 6 == n && (s[i] == '+' || s[i] == '-') &&
		   s[i + 3] == ':') {
		oh = digits(s + i + 1, 2);
		om = digits(s + i + 4, 2);
		if (oh < 0 || om < 0)
			goto bad;
		if (oh > 23 || om > 59)
			return fail(e, "@at: offset %.6s is out of range",
				    s + i);
		off = (s[i] == '-' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
		i += 6;
	} else {
		return fail(e,
			    "@at: not an RFC 3339 time: '%.*s' needs an "
			    "offset (Z or +hh:mm)",
			    SHOW(n), s);
	}
	if (i != n)
		goto bad;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 ||
	    d > keel_civil_month_days(y, mo) || h > 23 || mi > 59)
		return fail(e,
			    "@at: not an RFC 3339 time: '%.*s' has no such "
			    "date or time",
			    SHOW(n), s);
	if (sec > 59)
		return fail(e, "@at: '%.*s': leap seconds are not supported",
			    SHOW(n), s);
	when = keel_civil_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
	       off + frac;
	c->at = when;
	return 0;
bad:
	return fail(e,
		    "@at: not an RFC 3339 time: '%.*s' (e.g. "
		    "2026-03-29T02:30:00+01:00)",
		    SHOW(n), s);
}

/* ------------------------------------------------------------------------
 * Parse
 * ------------------------------------------------------------------------ */

static const struct {
	const char *name;
	const char *spec;
} macros[] = {
    {"yearly", "0 0 0 1 1 *"},	{"annually", "0 0 0 1 1 *"},
    {"monthly", "0 0 0 1 * *"}, {"weekly", "0 0 0 * * 0"},
    {"daily", "0 0 0 * * *"},	{"midnight", "0 0 0 * * *"},
    {"hourly", "0 0 * * * *"},
};

static int parse_macro(struct perr *e, struct keel_cron *c, const char *s)
{
	struct tok t[3];
	int n = split(s, t, 2);
	size_t i;
	struct tok arg = {"", 0};

	if (n >= 2)
		arg = t[1];
	if (n > 2 && tok_eq(t[0], "@at")) {
		/* RFC 3339 allows a space for the T: the rest is one time. */
		arg.n = strlen(arg.s);
		while (is_blank(arg.s[arg.n - 1]))
			arg.n--;
		n = 2;
	}
	if (tok_eq(t[0], "@every") || tok_eq(t[0], "@at")) {
		if (n > 2)
			return fail(e, "%.*s takes one argument, found more",
				    SHOW(t[0].n), t[0].s);
		if (tok_eq(t[0], "@every")) {
			c->kind = KEEL_CRON_EVERY;
			return parse_every(e, c, arg);
		}
		c->kind = KEEL_CRON_AT;
		return parse_at(e, c, arg);
	}
	for (i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
		if (!tok_eq((struct tok){t[0].s + 1, t[0].n - 1},
			    macros[i].name))
			continue;
		if (n > 1)
			return fail(e, "%.*s takes no argument", SHOW(t[0].n),
				    t[0].s);
		c->kind = KEEL_CRON_SPEC;
		return parse_fields(e, c, macros[i].spec);
	}
	if (tok_eq(t[0], "@manual")) {
		if (n > 1)
			return fail(e, "@manual takes no argument");
		c->kind = KEEL_CRON_MANUAL;
		return 0;
	}
	return fail(e,
		    "unknown macro %.*s (known: @yearly @annually @monthly "
		    "@weekly @daily @midnight @hourly @every @at @manual)",
		    SHOW(t[0].n), t[0].s);
}

int keel_cron_parse(const char *text, struct keel_cron **out, char *err,
		    size_t errlen)
{
	struct perr e = {err, errlen, -1, 0};
	struct keel_cron *c;
	const char *s;
	size_t len, i;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (text == NULL || out == NULL)
		return fail(&e, "no schedule given");
	len = strnlen(text, KEEL_CRON_TEXT_MAX + 1);
	if (len > KEEL_CRON_TEXT_MAX)
		return fail(&e, "schedule longer than %d bytes",
			    KEEL_CRON_TEXT_MAX);
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)text[i];

		if ((ch < 0x20 && ch != '\t') || ch >= 0x7f)
			return fail(&e,
				    "byte 0x%02x at offset %zu is not "
				    "allowed (printable ASCII only)",
				    ch, i);
	}
	s = text;
	while (is_blank(*s))
		s++;
	if (*s == '\0')
		return fail(&e, "empty schedule");

	c = calloc(1, sizeof(*c) + len + 1);
	if (c == NULL) {
		fail(&e, "out of memory");
		return -ENOMEM;
	}
	memcpy(c->text, text, len + 1);
	c->at = KEEL_CRON_NEVER;
	if (*s == '@')
		rc = parse_macro(&e, c, s);
	else
		rc = parse_fields(&e, c, s);
	if (rc < 0) {
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void keel_cron_free(struct keel_cron *c)
{
	free(c);
}

enum keel_cron_kind keel_cron_kind(const struct keel_cron *c)
{
	return c->kind;
}

const char *keel_cron_text(const struct keel_cron *c)
{
	return c->text;
}

int64_t keel_cron_interval(const struct keel_cron *c)
{
	return c->kind == KEEL_CRON_EVERY ? c->every : 0;
}

int64_t keel_cron_at(const struct keel_cron *c)
{
	return c->kind == KEEL_CRON_AT ? c->at : KEEL_CRON_NEVER;
}

/* ------------------------------------------------------------------------
 * Next fire time
 * ------------------------------------------------------------------------ */

/* The lowest set bit of mask at or above from, or -1. */
static int next_bit(uint64_t mask, int from)
{
	if (from > 63)
		return -1;
	mask &= ~UINT64_C(0) << from;
	return mask ? __builtin_ctzll(mask) : -1;
}

static int weekday_of(int64_t days)
{
	return (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
}

/* The weekday (Mon-Fri) nearest day n of a month of mdays days whose 1st
 * is weekday w1, without leaving the month; 0 if n > mdays. */
static int nearest_weekday(int n, int mdays, int w1)
{
	int w;

	if (n > mdays)
		return 0;
	w = (w1 + n - 1) % 7;
	if (w == 6) /* Saturday: Friday, or Monday if Friday is last month */
		return n > 1 ? n - 1 : n + 2;
	if (w == 0) /* Sunday: Monday, or Friday if Monday is next month */
		return n < mdays ? n + 1 : n - 2;
	return n;
}

/* Bit d set: day d of the month matches the day fields. */
static uint32_t month_days(const struct keel_cron *c, int64_t y, int m)
{
	int mdays = keel_civil_month_days(y, m);
	int w1 = weekday_of(keel_civil_days(y, m, 1));
	uint32_t dom = (uint32_t)c->mask[F_DOM], dow = 0, all;
	int d, n;

	all = (uint32_t)(((UINT64_C(1) << mdays) - 1) << 1);
	for (n = 0; n <= 30; n++)
		if ((c->dom_last >> n & 1) && mdays - n >= 1)
			dom |= 1u << (mdays - n);
	for (n = 1; n <= 31; n++)
		if (c->dom_near >> n & 1)
			dom |= 1u << nearest_weekday(n, mdays, w1);
	if (c->dom_lastwd)
		dom |= 1u << nearest_weekday(mdays, mdays, w1);
	dom &= all; /* no 31st in April; bit 0 (no such day) goes */
	for (d = 1; d <= mdays; d++) {
		int w = (w1 + d - 1) % 7;

		if ((c->mask[F_DOW] >> w & 1) ||
		    ((c->dow_last >> w & 1) && d + 7 > mdays) ||
		    (c->dow_nth[w] >> ((d - 1) / 7) & 1))
			dow |= 1u << d;
	}
	if (c->dom_any && c->dow_any)
		return all;
	if (c->dom_any)
		return dow;
	if (c->dow_any)
		return dom;
	return dom | dow;
}

/* The first matching time of day at or after h:mi:s, or 0 if none. */
static int time_from(const struct keel_cron *c, int *h, int *mi, int *s)
{
	int hh = *h, mm = *mi, ss = *s;

	for (;;) {
		int nh = next_bit(c->mask[F_HOUR], hh), nm, ns;

		if (nh < 0 || nh > 23)
			return 0;
		if (nh != hh)
			mm = ss = 0;
		nm = next_bit(c->mask[F_MIN], mm);
		if (nm < 0 || nm > 59) {
			hh = nh + 1;
			mm = ss = 0;
			continue;
		}
		if (nm != mm)
			ss = 0;
		ns = next_bit(c->mask[F_SEC], ss);
		if (ns < 0 || ns > 59) {
			hh = nh;
			mm = nm + 1;
			ss = 0;
			if (mm > 59) {
				hh++;
				mm = 0;
			}
			continue;
		}
		*h = nh;
		*mi = nm;
		*s = ns;
		return 1;
	}
}

/* The first matching civil time at or after *l, within 400 years of
 * calendar; 0 if none. */
static int civil_from(const struct keel_cron *c, struct keel_civil *l)
{
	int64_t y = l->year;
	int m = l->month, d = l->day, h = l->hour, mi = l->min, s = l->sec;
	int months;

	for (months = 0; months <= 400 * 12 + 1; months++) {
		if (y > 9999)
			return 0;
		if (c->mask[F_MON] >> m & 1) {
			uint32_t days = month_days(c, y, m);

			int start = d;

			for (d = next_bit(days, d); d > 0;
			     d = next_bit(days, d + 1)) {
				if (d != start)
					h = mi = s = 0;
				if (time_from(c, &h, &mi, &s)) {
					l->year = y;
					l->month = m;
					l->day = d;
					l->hour = h;
					l->min = mi;
					l->sec = s;
					return 1;
				}
				h = mi = s = 0;
			}
		}
		d = 1;
		h = mi = s = 0;
		if (++m > 12) {
			m = 1;
			y++;
		}
	}
	return 0;
}

/* l + 1 second, in civil time. */
static void civil_tick(struct keel_civil *l)
{
	if (++l->sec < 60)
		return;
	l->sec = 0;
	if (++l->min < 60)
		return;
	l->min = 0;
	if (++l->hour < 24)
		return;
	l->hour = 0;
	if (++l->day <= keel_civil_month_days(l->year, l->month))
		return;
	l->day = 1;
	if (++l->month <= 12)
		return;
	l->month = 1;
	l->year++;
}

static int64_t next_spec(const struct keel_cron *c, const struct keel_tz *tz,
			 int64_t after)
{
	struct keel_civil l;

	if (tz == NULL)
		tz = keel_tz_utc();
	keel_tz_to_local(tz, after, &l, NULL);
	/* Every L <= local(after) fires at or before `after`. */
	for (;;) {
		int64_t first, second;

		civil_tick(&l);
		if (!civil_from(c, &l))
			return KEEL_CRON_NEVER;
		if (keel_tz_from_local(tz, &l, &first, &second) < 0)
			return KEEL_CRON_NEVER; /* cannot happen: l is valid */
		if (first > after)
			return first > KEEL_CRON_TIME_MAX ? KEEL_CRON_NEVER
							  : first;
		/* l's first pass is behind us (after is in a repeated
		 * hour): it ran then, and does not run again. */
	}
}

int64_t keel_cron_next(const struct keel_cron *c, const struct keel_tz *tz,
		       int64_t after)
{
	int64_t k;

	if (c == NULL || after >= KEEL_CRON_TIME_MAX)
		return KEEL_CRON_NEVER;
	if (after < KEEL_CRON_TIME_MIN)
		after = KEEL_CRON_TIME_MIN - 1;
	switch (c->kind) {
	case KEEL_CRON_SPEC:
		return next_spec(c, tz, after);
	case KEEL_CRON_EVERY:
		/* The multiples of the interval since the epoch. */
		k = after / c->every;
		if (after % c->every < 0)
			k--;
		k = (k + 1) * c->every;
		return k > KEEL_CRON_TIME_MAX ? KEEL_CRON_NEVER : k;
	case KEEL_CRON_AT:
		return c->at > after && c->at <= KEEL_CRON_TIME_MAX
			   ? c->at
			   : KEEL_CRON_NEVER;
	case KEEL_CRON_MANUAL:
		break;
	}
	return KEEL_CRON_NEVER;
}
