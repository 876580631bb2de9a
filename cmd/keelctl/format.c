/*
 * cmd/keelctl/format.c - what keelctl shows people: times, durations,
 * aligned tables, colours; and the one place that keeps a server's text
 * from driving the terminal.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keelctl.h"

int kc_err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout); /* what was printed before comes first */
	fputs("keelctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return KC_FAIL;
}

int kc_print_json(const json_t *v)
{
	/* jansson keeps the server's key order, which is stable: the same
	 * answer prints the same bytes, so scripts can diff it. */
	if (json_dumpf(v, stdout, JSON_INDENT(2)) != 0)
		return kc_err("cannot write the output");
	fputc('\n', stdout);
	return KC_OK;
}

const char *kc_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

int kc_int(const json_t *obj, const char *key, long long *out)
{
	json_t *v = json_object_get(obj, key);
	if (!json_is_integer(v))
		return 0;
	*out = json_integer_value(v);
	return 1;
}

/* ---- safe text ------------------------------------------------------------
 */

/* Length of the C0/C1 control sequence at s (1 byte, or 2 for a UTF-8
 * encoded U+0080..U+009F), or 0 when s starts with printable text. ESC
 * (0x1b) and CSI (U+009B) are how a string would move the cursor, recolour
 * or retitle the terminal. */
static size_t kc_ctl_len(const unsigned char *s, size_t n)
{
	if (s[0] < 0x20 || s[0] == 0x7f)
		return 1;
	if (s[0] == 0xc2 && n > 1 && s[1] >= 0x80 && s[1] <= 0x9f)
		return 2;
	return 0;
}

void kc_put_safe(FILE *f, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, start = 0;

	while (i < n) {
		size_t c = kc_ctl_len(p + i, n - i);
		if (c == 0 || p[i] == '\n' || p[i] == '\t') {
			i++;
			continue;
		}
		fwrite(p + start, 1, i - start, f);
		fputc('?', f);
		i += c;
		start = i;
	}
	fwrite(p + start, 1, n - start, f);
}

/* A copy of s for one table cell or field: controls (newlines too) become
 * a space, so a multi-line error stays on its row. */
static char *kc_flat(const char *s)
{
	size_t n = strlen(s);
	char *d = malloc(n + 1), *o = d;
	const unsigned char *p = (const unsigned char *)s;

	if (d == NULL)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t c = kc_ctl_len(p + i, n - i);
		if (c != 0) {
			*o++ = ' ';
			i += c;
		} else {
			*o++ = (char)p[i++];
		}
	}
	*o = '\0';
	return d;
}

/* Columns s takes on a terminal: UTF-8 code points (no wide characters
 * are expected in names, states or times). */
static size_t kc_width(const char *s)
{
	size_t w = 0;
	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* ---- times and durations ------------------------------------------------ */

int64_t kc_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int kc_digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int kc_time_parse(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, sec, frac = 0, off = 0;

	if (s == NULL || strlen(s) < 20 || kc_digits(s, 4, &y) || s[4] != '-' ||
	    kc_digits(s + 5, 2, &mo) || s[7] != '-' ||
	    kc_digits(s + 8, 2, &d) ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    kc_digits(s + 11, 2, &h) || s[13] != ':' ||
	    kc_digits(s + 14, 2, &mi) || s[16] != ':' ||
	    kc_digits(s + 17, 2, &sec))
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    sec > 60)
		return -1;
	const char *p = s + 19;
	if (*p == '.') {
		int scale = 100, any = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, any = 1) {
			frac += (*p - '0') * scale;
			scale /= 10;
		}
		if (!any)
			return -1;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om;
		if (kc_digits(p + 1, 2, &oh) || p[3] != ':' ||
		    kc_digits(p + 4, 2, &om))
			return -1;
		off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;

	struct tm tm = {.tm_year = y - 1900,
			.tm_mon = mo - 1,
			.tm_mday = d,
			.tm_hour = h,
			.tm_min = mi,
			.tm_sec = sec};
	time_t t = timegm(&tm);
	*ms = ((int64_t)t - off) * 1000 + frac;
	return 0;
}

int64_t kc_time_of(const json_t *obj, const char *key)
{
	int64_t ms;
	if (kc_time_parse(kc_str(obj, key), &ms) != 0)
		return 0;
	return ms;
}

const char *kc_time_fmt(int64_t ms, char *buf, size_t len)
{
	struct tm tm;
	time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);

	if (ms == 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "-");
	return buf;
}

/* A coarse span for people: two units at most ("2h05m", "3d04h"). */
static void kc_span(int64_t ms, char *buf, size_t len)
{
	int64_t s = ms / 1000;

	if (s < 60)
		snprintf(buf, len, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", (long long)(s / 60),
			 (long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", (long long)(s / 3600),
			 (long long)(s % 3600 / 60));
	else
		snprintf(buf, len, "%lldd%02lldh", (long long)(s / 86400),
			 (long long)(s % 86400 / 3600));
}

const char *kc_time_rel(int64_t ms, int64_t now, char *buf, size_t len)
{
	char span[32];

	if (ms == 0) {
		snprintf(buf, len, "-");
		return buf;
	}
	int64_t d = ms - now;
	/* Clocks of two machines differ a little: a second either way is
	 * "now", not "in 0s". */
	if (d > -1000 && d < 1000) {
		snprintf(buf, len, "just now");
		return buf;
	}
	kc_span(d < 0 ? -d : d, span, sizeof(span));
	snprintf(buf, len, d < 0 ? "%s ago" : "in %s", span);
	return buf;
}

const char *kc_dur_fmt(int64_t ms, char *buf, size_t len)
{
	if (ms < 0)
		ms = 0;
	if (ms < 1000)
		snprintf(buf, len, "%lldms", (long long)ms);
	else if (ms < 10000)
		snprintf(buf, len, "%.2fs", (double)ms / 1000.0);
	else if (ms < 60000)
		snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
	else
		kc_span(ms, buf, len);
	return buf;
}

/* ---- tables ----------------------------------------------------------------
 */

struct kc_cell {
	char *text;
	enum kc_color color;
	size_t width;
};

struct kc_table {
	int ncols;
	struct kc_cell *cells;
	size_t n, cap;
	int failed;
};

struct kc_table *kc_table_new(int ncols, const char *const *header)
{
	struct kc_table *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->ncols = ncols;
	for (int i = 0; i < ncols; i++)
		kc_table_cell(t, header[i], KC_PLAIN);
	return t;
}

void kc_table_cell(struct kc_table *t, const char *text, enum kc_color c)
{
	if (t == NULL || t->failed)
		return;
	if (t->n == t->cap) {
		size_t cap = t->cap != 0 ? t->cap * 2 : 64;
		struct kc_cell *p = realloc(t->cells, cap * sizeof(*p));
		if (p == NULL) {
			t->failed = 1;
			return;
		}
		t->cells = p;
		t->cap = cap;
	}
	char *s = kc_flat(text != NULL && text[0] != '\0' ? text : "-");
	if (s == NULL) {
		t->failed = 1;
		return;
	}
	t->cells[t->n++] = (struct kc_cell){s, c, kc_width(s)};
}

void kc_table_cellf(struct kc_table *t, enum kc_color c, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;

	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		if (t != NULL)
			t->failed = 1;
		return;
	}
	kc_table_cell(t, s, c);
	free(s);
}

static const char *const kc_sgr[] = {
    [KC_PLAIN] = "",	      [KC_GREEN] = "\033[32m", [KC_RED] = "\033[31m",
    [KC_YELLOW] = "\033[33m", [KC_CYAN] = "\033[36m",  [KC_DIM] = "\033[2m",
};

const char *kc_color_on(enum kc_color c)
{
	return kc_sgr[c];
}

const char *kc_color_off(enum kc_color c)
{
	return c != KC_PLAIN ? "\033[0m" : "";
}

int kc_table_print(struct kc_table *t, int color)
{
	if (t == NULL)
		return kc_err("out of memory");
	int rc = KC_OK;
	size_t *w = calloc((size_t)t->ncols, sizeof(*w));
	if (w == NULL || t->failed) {
		rc = kc_err("out of memory");
		goto out;
	}
	for (size_t i = 0; i < t->n; i++) {
		size_t col = i % (size_t)t->ncols;
		if (t->cells[i].width > w[col])
			w[col] = t->cells[i].width;
	}
	for (size_t i = 0; i < t->n; i++) {
		const struct kc_cell *c = &t->cells[i];
		size_t col = i % (size_t)t->ncols;
		int last = col + 1 == (size_t)t->ncols;
		int paint = color && c->color != KC_PLAIN;

		fputs(kc_color_on(paint ? c->color : KC_PLAIN), stdout);
		fputs(c->text, stdout);
		fputs(kc_color_off(paint ? c->color : KC_PLAIN), stdout);
		if (last)
			fputc('\n', stdout);
		else
			printf("%*s", (int)(w[col] - c->width + 2), "");
	}
out:
	free(w);
	for (size_t i = 0; i < t->n; i++)
		free(t->cells[i].text);
	free(t->cells);
	free(t);
	return rc;
}

enum kc_color kc_state_color(const char *state)
{
	if (state == NULL)
		return KC_PLAIN;
	if (strcmp(state, "succeeded") == 0)
		return KC_GREEN;
	if (strcmp(state, "failed") == 0 || strcmp(state, "timed_out") == 0 ||
	    strcmp(state, "crashed") == 0)
		return KC_RED;
	if (strcmp(state, "running") == 0)
		return KC_YELLOW;
	if (strcmp(state, "queued") == 0)
		return KC_CYAN;
	if (strcmp(state, "skipped") == 0 || strcmp(state, "canceled") == 0)
		return KC_DIM;
	return KC_PLAIN;
}

/* ---- label: value ------------------------------------------------------ */

void kc_field(const char *label, const char *value)
{
	/* Wide enough for the longest label keelctl uses. */
	printf("%-17s ", label);
	char *flat = kc_flat(value != NULL && value[0] != '\0' ? value : "-");
	if (flat != NULL)
		fputs(flat, stdout);
	fputc('\n', stdout);
	free(flat);
}

void kc_fieldf(const char *label, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;

	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	kc_field(label, n < 0 ? "(out of memory)" : s);
	if (n >= 0)
		free(s);
}
