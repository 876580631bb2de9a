/*
 * tests/obs/expo_check.h - an independent checker of the Prometheus text
 * exposition format 0.0.4, written from the format's rules, not from keel's
 * renderer: it parses every line, unescapes label values, and checks
 * HELP/TYPE placement, names, label syntax, values, and each histogram's
 * buckets. test_metrics.c proves it rejects each kind of bad text; the
 * metrics and bridge tests (and the HTTP layer's, later) put every
 * rendering through it.
 */
#ifndef KEEL_TEST_EXPO_CHECK_H
#define KEEL_TEST_EXPO_CHECK_H

#define _GNU_SOURCE
#include <keel.h>
#include <keel/metrics.h>
#include "keel_test.h"

#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * The exposition checker
 * ------------------------------------------------------------------------ */

#define EXPO_MAX_LABELS 20

struct expo_label {
	char *name;
	char *value; /* unescaped */
};

struct expo_sample {
	char *name;
	char *family;
	struct expo_label l[EXPO_MAX_LABELS];
	int nl;
	double v;
};

struct expo_family {
	char *name;
	char type[16];
	char *help; /* unescaped, or NULL */
	int has_samples;
};

struct expo {
	struct expo_sample *s;
	int n, cap;
	struct expo_family *f;
	int nf, capf;
	char err[512];
};

static void expo_free(struct expo *e)
{
	int i, j;

	for (i = 0; i < e->n; i++) {
		free(e->s[i].name);
		free(e->s[i].family);
		for (j = 0; j < e->s[i].nl; j++) {
			free(e->s[i].l[j].name);
			free(e->s[i].l[j].value);
		}
	}
	for (i = 0; i < e->nf; i++) {
		free(e->f[i].name);
		free(e->f[i].help);
	}
	free(e->s);
	free(e->f);
	memset(e, 0, sizeof(*e));
}

static int expo_fail(struct expo *e, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int expo_fail(struct expo *e, int line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(e->err, sizeof(e->err), "line %d: ", line);

	va_start(ap, fmt);
	vsnprintf(e->err + n, sizeof(e->err) - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static int is_metric_name(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(isalpha(c) || c == '_' || c == ':' || (i > 0 && isdigit(c))))
			return 0;
	}
	return 1;
}

static int is_label_name(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(isalpha(c) || c == '_' || (i > 0 && isdigit(c))))
			return 0;
	}
	return 1;
}

/* A value as Prometheus reads it: a float, +Inf, -Inf or NaN. */
static int parse_value(const char *s, size_t n, double *v)
{
	char buf[64], *end;

	if (n == 0 || n >= sizeof(buf))
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (strcmp(buf, "+Inf") == 0) {
		*v = INFINITY;
		return 1;
	}
	if (strcmp(buf, "-Inf") == 0) {
		*v = -INFINITY;
		return 1;
	}
	if (strcmp(buf, "NaN") == 0) {
		*v = NAN;
		return 1;
	}
	/* strtod would take "inf", "nan", hex and spaces: refuse them. */
	if (strpbrk(buf, "xXnNiI \t") != NULL)
		return 0;
	*v = strtod(buf, &end);
	return *end == '\0';
}

static struct expo_family *expo_family(struct expo *e, const char *name)
{
	int i;

	for (i = 0; i < e->nf; i++)
		if (strcmp(e->f[i].name, name) == 0)
			return &e->f[i];
	return NULL;
}

/* Unescapes a HELP text: only \\ and \n are escapes there. */
static char *unescape(const char *s, size_t n, int quoted, int *ok)
{
	char *out = malloc(n + 1), *o = out;
	size_t i;

	*ok = 1;
	for (i = 0; i < n; i++) {
		if (s[i] == '\n') {
			*ok = 0;
			break;
		}
		if (s[i] != '\\') {
			*o++ = s[i];
			continue;
		}
		if (++i == n) {
			*ok = 0;
			break;
		}
		if (s[i] == '\\')
			*o++ = '\\';
		else if (s[i] == 'n')
			*o++ = '\n';
		else if (s[i] == '"' && quoted)
			*o++ = '"';
		else {
			*ok = 0;
			break;
		}
	}
	*o = '\0';
	return out;
}

/* Which family a sample name belongs to, given the current one. */
static int belongs(const struct expo_family *f, const char *name)
{
	size_t fl = strlen(f->name);

	if (strcmp(name, f->name) == 0)
		return strcmp(f->type, "histogram") != 0;
	if (strcmp(f->type, "histogram") != 0 || strncmp(name, f->name, fl) != 0)
		return 0;
	return strcmp(name + fl, "_bucket") == 0 ||
	       strcmp(name + fl, "_sum") == 0 || strcmp(name + fl, "_count") == 0;
}

static int parse_comment(struct expo *e, int ln, const char *s, size_t n,
			 struct expo_family **cur)
{
	const char *p = s + 2, *end = s + n, *name;
	struct expo_family *f;
	int help;
	size_t nl;

	if (n < 7 || s[1] != ' ')
		return expo_fail(e, ln, "comment is not '# HELP' or '# TYPE'");
	if (strncmp(p, "HELP ", 5) == 0)
		help = 1;
	else if (strncmp(p, "TYPE ", 5) == 0)
		help = 0;
	else
		return expo_fail(e, ln, "comment is not '# HELP' or '# TYPE'");
	name = p + 5;
	for (p = name; p < end && *p != ' '; p++)
		;
	nl = (size_t)(p - name);
	if (!is_metric_name(name, nl))
		return expo_fail(e, ln, "bad metric name in HELP/TYPE");
	{
		char *fname = strndup(name, nl);

		f = expo_family(e, fname);
		if (f == NULL) {
			if (e->nf == e->capf) {
				e->capf = e->capf ? e->capf * 2 : 16;
				e->f = realloc(e->f, (size_t)e->capf * sizeof(*e->f));
			}
			f = &e->f[e->nf++];
			memset(f, 0, sizeof(*f));
			f->name = fname;
		} else {
			free(fname);
			if (*cur != f)
				return expo_fail(e, ln, "HELP/TYPE of %s away from its family",
						 f->name);
		}
	}
	if (f->has_samples)
		return expo_fail(e, ln, "HELP/TYPE of %s after its samples", f->name);
	*cur = f;
	if (help) {
		int ok;

		if (f->help != NULL)
			return expo_fail(e, ln, "HELP twice for %s", f->name);
		if (p == end)
			return expo_fail(e, ln, "HELP without text");
		f->help = unescape(p + 1, (size_t)(end - p - 1), 0, &ok);
		if (!ok)
			return expo_fail(e, ln, "bad escape in HELP");
		return 0;
	}
	if (f->type[0] != '\0')
		return expo_fail(e, ln, "TYPE twice for %s", f->name);
	if (p == end || (size_t)(end - p - 1) >= sizeof(f->type))
		return expo_fail(e, ln, "bad TYPE");
	memcpy(f->type, p + 1, (size_t)(end - p - 1));
	if (strcmp(f->type, "counter") && strcmp(f->type, "gauge") &&
	    strcmp(f->type, "histogram") && strcmp(f->type, "summary") &&
	    strcmp(f->type, "untyped"))
		return expo_fail(e, ln, "unknown TYPE '%s'", f->type);
	return 0;
}

static int parse_sample(struct expo *e, int ln, const char *s, size_t n,
			struct expo_family *cur)
{
	const char *p = s, *end = s + n;
	struct expo_sample *sm;
	int i;

	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 64;
		e->s = realloc(e->s, (size_t)e->cap * sizeof(*e->s));
	}
	sm = &e->s[e->n];
	memset(sm, 0, sizeof(*sm));
	while (p < end && *p != '{' && *p != ' ')
		p++;
	if (!is_metric_name(s, (size_t)(p - s)))
		return expo_fail(e, ln, "bad metric name");
	sm->name = strndup(s, (size_t)(p - s));
	e->n++; /* owned by e from here, for expo_free */
	if (cur == NULL || cur->type[0] == '\0' || !belongs(cur, sm->name))
		return expo_fail(e, ln, "sample %s without its TYPE before it",
				 sm->name);
	sm->family = strdup(cur->name);
	cur->has_samples = 1;
	if (p < end && *p == '{') {
		p++;
		while (p < end && *p != '}') {
			const char *ln0 = p, *v0;
			int ok;

			while (p < end && *p != '=')
				p++;
			if (p == end || !is_label_name(ln0, (size_t)(p - ln0)))
				return expo_fail(e, ln, "bad label name");
			if (sm->nl == EXPO_MAX_LABELS)
				return expo_fail(e, ln, "too many labels");
			sm->l[sm->nl].name = strndup(ln0, (size_t)(p - ln0));
			if (++p == end || *p != '"')
				return expo_fail(e, ln, "label value not quoted");
			v0 = ++p;
			while (p < end && *p != '"') {
				if (*p == '\\')
					p++;
				p++;
			}
			if (p >= end)
				return expo_fail(e, ln, "unterminated label value");
			sm->l[sm->nl].value = unescape(v0, (size_t)(p - v0), 1, &ok);
			sm->nl++;
			if (!ok)
				return expo_fail(e, ln, "bad escape in label value");
			for (i = 0; i < sm->nl - 1; i++)
				if (strcmp(sm->l[i].name, sm->l[sm->nl - 1].name) == 0)
					return expo_fail(e, ln, "label %s twice",
							 sm->l[i].name);
			p++;
			if (p < end && *p == ',' && p + 1 < end && p[1] != '}')
				p++;
			else if (p < end && *p != '}')
				return expo_fail(e, ln, "junk after label value");
		}
		if (p == end)
			return expo_fail(e, ln, "unterminated label set");
		p++;
	}
	if (p == end || *p != ' ')
		return expo_fail(e, ln, "no space before the value");
	p++;
	{
		const char *v0 = p;

		while (p < end && *p != ' ')
			p++;
		if (!parse_value(v0, (size_t)(p - v0), &sm->v))
			return expo_fail(e, ln, "bad value '%.*s'", (int)(p - v0), v0);
	}
	if (p < end) { /* an optional timestamp: an integer */
		const char *t0 = ++p;

		if (*t0 == '-')
			p++;
		while (p < end && isdigit((unsigned char)*p))
			p++;
		if (p != end || p == t0)
			return expo_fail(e, ln, "bad timestamp");
	}
	if (strcmp(cur->type, "counter") == 0 && !(sm->v >= 0))
		return expo_fail(e, ln, "counter %s is %g", sm->name, sm->v);
	return 0;
}

static const char *expo_label(const struct expo_sample *s, const char *name)
{
	int i;

	for (i = 0; i < s->nl; i++)
		if (strcmp(s->l[i].name, name) == 0)
			return s->l[i].value;
	return NULL;
}

/* The same labels except le (in any order)? */
static int same_series(const struct expo_sample *a, const struct expo_sample *b)
{
	int i, na = 0, nb = 0;

	for (i = 0; i < a->nl; i++)
		if (strcmp(a->l[i].name, "le") != 0) {
			const char *v = expo_label(b, a->l[i].name);

			na++;
			if (v == NULL || strcmp(v, a->l[i].value) != 0)
				return 0;
		}
	for (i = 0; i < b->nl; i++)
		nb += strcmp(b->l[i].name, "le") != 0;
	return na == nb;
}

static int ends_with(const char *s, const char *sfx)
{
	size_t a = strlen(s), b = strlen(sfx);

	return a >= b && strcmp(s + a - b, sfx) == 0;
}

/* Every histogram series: le ascending, +Inf last, cumulative counts
 * non-decreasing, +Inf == _count, a _sum; no series twice. */
static int check_series(struct expo *e)
{
	int i, j;

	for (i = 0; i < e->n; i++)
		for (j = 0; j < i; j++)
			if (strcmp(e->s[i].name, e->s[j].name) == 0 &&
			    same_series(&e->s[i], &e->s[j]) &&
			    (expo_label(&e->s[i], "le") == NULL ||
			     strcmp(expo_label(&e->s[i], "le"),
				    expo_label(&e->s[j], "le")) == 0))
				return expo_fail(e, 0, "series %s twice", e->s[i].name);
	for (i = 0; i < e->n; i++) {
		const struct expo_sample *b = &e->s[i];
		struct expo_family *f = expo_family(e, b->family);
		double prev_le = -INFINITY, prev_cnt = 0, inf = NAN, cnt = NAN;
		int have_sum = 0, nbuckets = 0, first = 1;

		if (strcmp(f->type, "histogram") != 0 || !ends_with(b->name, "_bucket"))
			continue;
		for (j = 0; j < i; j++) /* first bucket of its series only */
			if (strcmp(e->s[j].name, b->name) == 0 &&
			    same_series(&e->s[j], b))
				first = 0;
		if (!first)
			continue;
		for (j = i; j < e->n; j++) {
			const struct expo_sample *s = &e->s[j];
			double le;

			if (strcmp(s->family, f->name) != 0 || !same_series(s, b))
				continue;
			if (ends_with(s->name, "_bucket")) {
				const char *les = expo_label(s, "le");

				if (les == NULL || !parse_value(les, strlen(les), &le) ||
				    isnan(le))
					return expo_fail(e, 0, "%s: bad le", s->name);
				if (!isnan(inf))
					return expo_fail(e, 0, "%s: bucket after +Inf", s->name);
				if (!(le > prev_le))
					return expo_fail(e, 0, "%s: le not ascending", s->name);
				if (s->v < prev_cnt)
					return expo_fail(e, 0, "%s: buckets decrease", s->name);
				prev_le = le;
				prev_cnt = s->v;
				nbuckets++;
				if (le == INFINITY)
					inf = s->v;
			} else if (ends_with(s->name, "_sum")) {
				have_sum++;
			} else if (ends_with(s->name, "_count")) {
				cnt = s->v;
			}
		}
		if (isnan(inf))
			return expo_fail(e, 0, "%s: no +Inf bucket", b->name);
		if (have_sum != 1 || isnan(cnt))
			return expo_fail(e, 0, "%s: _sum or _count missing", b->name);
		if (inf != cnt)
			return expo_fail(e, 0, "%s: +Inf bucket %g != _count %g",
					 b->name, inf, cnt);
	}
	/* A histogram series with a _count but no buckets. */
	for (i = 0; i < e->n; i++) {
		struct expo_family *f = expo_family(e, e->s[i].family);
		int found = 0;

		if (strcmp(f->type, "histogram") != 0 || ends_with(e->s[i].name, "_bucket"))
			continue;
		for (j = 0; j < e->n; j++)
			found |= ends_with(e->s[j].name, "_bucket") &&
				 strcmp(e->s[j].family, f->name) == 0 &&
				 same_series(&e->s[j], &e->s[i]);
		if (!found)
			return expo_fail(e, 0, "%s without buckets", e->s[i].name);
	}
	return 0;
}

/* 0 when text is valid exposition (e then holds its samples), else -1
 * with the reason in e->err. */
static int expo_parse(const char *text, struct expo *e)
{
	struct expo_family *cur = NULL;
	const char *p = text;
	int ln = 0;

	memset(e, 0, sizeof(*e));
	if (text[0] != '\0' && text[strlen(text) - 1] != '\n')
		return expo_fail(e, 0, "the text does not end with a newline");
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = (size_t)(nl - p);

		ln++;
		if (memchr(p, '\r', n) != NULL)
			return expo_fail(e, ln, "carriage return");
		if (n == 0)
			return expo_fail(e, ln, "empty line");
		if (p[0] == '#') {
			if (parse_comment(e, ln, p, n, &cur) != 0)
				return -1;
		} else {
			if (parse_sample(e, ln, p, n, cur) != 0)
				return -1;
		}
		p = nl + 1;
	}
	return check_series(e);
}

/* The sample named name with exactly these label pairs (name, value, ...,
 * NULL), or NULL. */
static const struct expo_sample *expo_vfind(const struct expo *e,
					    const char *name, va_list ap)
{
	const char *k[EXPO_MAX_LABELS], *v[EXPO_MAX_LABELS];
	int n = 0, i, j;

	while ((k[n] = va_arg(ap, const char *)) != NULL) {
		v[n] = va_arg(ap, const char *);
		n++;
	}
	for (i = 0; i < e->n; i++) {
		const struct expo_sample *s = &e->s[i];

		if (strcmp(s->name, name) != 0 || s->nl != n)
			continue;
		for (j = 0; j < n; j++) {
			const char *got = expo_label(s, k[j]);

			if (got == NULL || strcmp(got, v[j]) != 0)
				break;
		}
		if (j == n)
			return s;
	}
	return NULL;
}

static const struct expo_sample *expo_find(const struct expo *e,
					   const char *name, ...)
{
	const struct expo_sample *s;
	va_list ap;

	va_start(ap, name);
	s = expo_vfind(e, name, ap);
	va_end(ap);
	return s;
}

/* The value of a sample that must be there. */
#define EXPO_VALUE(e, ...) expo_value_at(__FILE__, __LINE__, (e), __VA_ARGS__)
static double expo_value_at(const char *file, int line, const struct expo *e,
			    const char *name, ...)
{
	const struct expo_sample *s;
	va_list ap;

	va_start(ap, name);
	s = expo_vfind(e, name, ap);
	va_end(ap);
	if (s == NULL) {
		fprintf(stderr, "%s:%d: no sample %s\n", file, line, name);
		_exit(1);
	}
	return s->v;
}

/* Renders reg, checks the text, and returns it parsed (and the text). */
static char *render_checked(struct keel_metrics *reg, struct expo *e)
{
	char *text = NULL;
	size_t len = 0;

	CHECK_INT(keel_metrics_render(reg, &text, &len), ==, 0);
	CHECK(text != NULL);
	CHECK_INT(len, ==, strlen(text));
	if (expo_parse(text, e) != 0)
		KEEL_TEST_FAIL("invalid exposition: %s\n%s", e->err, text);
	return text;
}

static char *render(struct keel_metrics *reg)
{
	char *text = NULL;

	CHECK_INT(keel_metrics_render(reg, &text, NULL), ==, 0);
	CHECK(text != NULL);
	return text;
}

#endif /* KEEL_TEST_EXPO_CHECK_H */
