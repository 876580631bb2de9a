/*
 * src/obs/json.c - the JSON writer (see json.h).
 */
#define _GNU_SOURCE
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

void keel__json_init(struct keel__json *j, char *mem, size_t cap)
{
	memset(j, 0, sizeof(*j));
	if (mem != NULL) {
		j->buf = mem;
		j->cap = cap;
		return;
	}
	j->heap = 1;
	j->cap = cap != 0 ? cap : 256;
	j->buf = malloc(j->cap);
	if (j->buf == NULL) {
		j->cap = 0;
		j->failed = 1;
	}
}

void keel__json_free(struct keel__json *j)
{
	if (j->heap)
		free(j->buf);
	j->buf = NULL;
	j->len = j->cap = 0;
}

void keel__json_reset(struct keel__json *j)
{
	j->len = 0;
	j->failed = 0;
	j->after_key = 0;
	j->depth = 0;
	j->nonempty = 0;
	if (j->heap && j->buf == NULL)
		j->failed = 1;
}

/* Makes room for n more bytes by growing the heap buffer; 0 (and failed
 * set) when it cannot. The common case, room already there, is inline. */
static KEEL_COLD int grow(struct keel__json *j, size_t n)
{
	size_t cap;
	char *nb;

	if (!j->heap || j->failed) {
		j->failed = 1;
		return 0;
	}
	cap = j->cap * 2;
	while (cap < j->len + n)
		cap *= 2;
	nb = realloc(j->buf, cap);
	if (nb == NULL) {
		j->failed = 1;
		return 0;
	}
	j->buf = nb;
	j->cap = cap;
	return 1;
}

static inline __attribute__((always_inline)) int room(struct keel__json *j,
						      size_t n)
{
	if (KEEL_LIKELY(j->len + n <= j->cap && !j->failed))
		return 1;
	return grow(j, n);
}

/* Copies n bytes; the short pieces a record is made of (keys, numbers,
 * quotes, short values) without a call to memcpy: overlapping word moves,
 * as memcpy itself does them, but inline. */
static inline __attribute__((always_inline)) void copy(char *d, const char *s,
						      size_t n)
{
	if (n >= 8 && n <= 16) {
		uint64_t a, b;

		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 4 && n < 8) {
		uint32_t a, b;

		memcpy(&a, s, 4);
		memcpy(&b, s + n - 4, 4);
		memcpy(d, &a, 4);
		memcpy(d + n - 4, &b, 4);
	} else if (n > 0 && n < 4) {
		d[0] = s[0];
		d[n / 2] = s[n / 2];
		d[n - 1] = s[n - 1];
	} else if (n > 16) {
		memcpy(d, s, n);
	}
}

static inline __attribute__((always_inline)) void put(struct keel__json *j,
						     const char *s, size_t n)
{
	if (room(j, n)) {
		copy(j->buf + j->len, s, n);
		j->len += n;
	}
}

static inline __attribute__((always_inline)) void putc1(struct keel__json *j,
						       char c)
{
	if (room(j, 1))
		j->buf[j->len++] = c;
}

void keel__json_append(struct keel__json *j, const char *s, size_t n)
{
	put(j, s, n);
}

/* Before a value or key: the comma that separates it from the previous
 * member of its container. */
static void sep(struct keel__json *j)
{
	uint64_t bit;

	if (j->after_key) {
		j->after_key = 0;
		return;
	}
	if (j->depth == 0)
		return;
	bit = 1ULL << (j->depth - 1);
	if (j->nonempty & bit)
		putc1(j, ',');
	else
		j->nonempty |= bit;
}

static void open_c(struct keel__json *j, char c)
{
	sep(j);
	putc1(j, c);
	if (j->depth < 64) {
		j->depth++;
		j->nonempty &= ~(1ULL << (j->depth - 1));
	} else {
		j->failed = 1;
	}
}

static void close_c(struct keel__json *j, char c)
{
	putc1(j, c);
	if (j->depth > 0)
		j->depth--;
	j->after_key = 0;
}

void keel__json_obj(struct keel__json *j)
{
	open_c(j, '{');
}

void keel__json_obj_end(struct keel__json *j)
{
	close_c(j, '}');
}

void keel__json_arr(struct keel__json *j)
{
	open_c(j, '[');
}

void keel__json_arr_end(struct keel__json *j)
{
	close_c(j, ']');
}

/* ------------------------------------------------------------------------
 * Escaping
 * ------------------------------------------------------------------------ */

/* 1 for the bytes that can be copied as they are: printable ASCII other
 * than '"' and '\\'. */
static const unsigned char plain[256] = {
	['\x20'] = 1, [0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7e] = 1,
};

size_t keel__utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = 0x80, hi = 0xbf;

		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
		return n >= 3 && s[1] >= lo && s[1] <= hi &&
				       (s[2] & 0xc0) == 0x80
			       ? 3
			       : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = 0x80, hi = 0xbf;

		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		return n >= 4 && s[1] >= lo && s[1] <= hi &&
				       (s[2] & 0xc0) == 0x80 &&
				       (s[3] & 0xc0) == 0x80
			       ? 4
			       : 0;
	}
	return 0;
}

void keel__json_escape(struct keel__json *j, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		size_t start = i, k;
		unsigned char c;

		/* Eight bytes at a time while none needs care: no byte below
		 * 0x20 or above 0x7e, no '"' and no '\\'. */
		while (i + 8 <= n) {
			uint64_t w, lt, hi, q, b;

			memcpy(&w, s + i, 8);
			lt = (w - 0x2020202020202020ULL) & ~w;      /* < 0x20 */
			hi = w + 0x0101010101010101ULL;             /* 0x7f..0xff */
			q = w ^ 0x2222222222222222ULL;              /* '"' */
			q = (q - 0x0101010101010101ULL) & ~q;
			b = w ^ 0x5c5c5c5c5c5c5c5cULL;              /* '\\' */
			b = (b - 0x0101010101010101ULL) & ~b;
			if (((lt | hi | w | q | b) & 0x8080808080808080ULL) != 0)
				break;
			i += 8;
		}
		while (i < n && plain[s[i]])
			i++;
		if (i > start)
			put(j, (const char *)s + start, i - start);
		if (i == n)
			break;
		c = s[i];
		if (c < 0x80) {
			char esc[6] = { '\\', 0, 0, 0, 0, 0 };
			size_t len = 2;

			switch (c) {
			case '"': esc[1] = '"'; break;
			case '\\': esc[1] = '\\'; break;
			case '\n': esc[1] = 'n'; break;
			case '\r': esc[1] = 'r'; break;
			case '\t': esc[1] = 't'; break;
			case '\b': esc[1] = 'b'; break;
			case '\f': esc[1] = 'f'; break;
			default:
				if (c == 0x7f) { /* DEL is valid JSON as is */
					esc[0] = (char)c;
					len = 1;
					break;
				}
				esc[1] = 'u';
				esc[2] = '0';
				esc[3] = '0';
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				len = 6;
			}
			put(j, esc, len);
			i++;
			continue;
		}
		k = keel__utf8_len(s + i, n - i);
		if (k == 0) {
			put(j, "\xef\xbf\xbd", 3); /* U+FFFD for the bad byte */
			i++;
		} else if (k == 3 && c == 0xe2 && s[i + 1] == 0x80 &&
			   (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
			put(j, s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
			i += 3;
		} else {
			put(j, (const char *)s + i, k);
			i += k;
		}
	}
}

/* ------------------------------------------------------------------------
 * Keys and values
 * ------------------------------------------------------------------------ */

void keel__json_keyn(struct keel__json *j, const char *key, size_t n)
{
	sep(j);
	putc1(j, '"');
	keel__json_escape(j, key, n);
	put(j, "\":", 2);
	j->after_key = 1;
}

/* The length of the run of plain bytes at the start of s: up to its NUL
 * when none needs escaping (plain[0] is 0, so the scan stops there). */
static inline size_t plain_prefix(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;

	while (plain[p[n]])
		n++;
	return n;
}

/* Keys and short strings are nearly always plain: one pass finds both
 * their length and that, and they are copied as they are (a record has a
 * dozen keys: strlen and the escaper's setup were a third of its cost). */
void keel__json_key(struct keel__json *j, const char *key)
{
	size_t n = plain_prefix(key);

	if (key[n] != '\0') {
		keel__json_keyn(j, key, n + strlen(key + n));
		return;
	}
	sep(j);
	if (room(j, n + 3)) {
		j->buf[j->len] = '"';
		copy(j->buf + j->len + 1, key, n);
		j->buf[j->len + 1 + n] = '"';
		j->buf[j->len + 2 + n] = ':';
		j->len += n + 3;
	}
	j->after_key = 1;
}

void keel__json_strn(struct keel__json *j, const char *s, size_t n)
{
	sep(j);
	putc1(j, '"');
	keel__json_escape(j, s, n);
	putc1(j, '"');
}

void keel__json_str(struct keel__json *j, const char *s)
{
	size_t n;

	if (s == NULL) {
		keel__json_null(j);
		return;
	}
	n = plain_prefix(s);
	if (s[n] != '\0') {
		keel__json_strn(j, s, n + strlen(s + n));
		return;
	}
	sep(j);
	if (room(j, n + 2)) {
		j->buf[j->len] = '"';
		copy(j->buf + j->len + 1, s, n);
		j->buf[j->len + 1 + n] = '"';
		j->len += n + 2;
	}
}

static void put_u64(struct keel__json *j, uint64_t v, int neg)
{
	char tmp[21];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	if (neg)
		tmp[--i] = '-';
	put(j, tmp + i, sizeof(tmp) - i);
}

void keel__json_int(struct keel__json *j, int64_t v)
{
	sep(j);
	put_u64(j, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0);
}

void keel__json_uint(struct keel__json *j, uint64_t v)
{
	sep(j);
	put_u64(j, v, 0);
}

/*
 * The common case without snprintf/strtod (which cost ~400 ns a value): a
 * value of magnitude below 2^53 / 10^6 with at most 6 decimals, as
 * durations in ms with us resolution, ratios, money. It is written as its
 * integer part and its decimals, trailing zeros dropped, and qualifies only
 * when that text reads back as the same double, which the division below
 * checks exactly (n / 10^k is correctly rounded, as strtod's reading is).
 */
static int fixed6(struct keel__json *j, double v)
{
	static const double pow10[] = { 1, 10, 100, 1e3, 1e4, 1e5, 1e6 };
	double a = v < 0 ? -v : v;
	char tmp[40];
	int64_t n;
	int k, i, pos = (int)sizeof(tmp);

	if (a >= 9007199254.0 || (a != 0 && a < 1e-6))
		return 0;
	/* Below 2^32 two numbers of 6 decimals are always distinct doubles
	 * and a * 10^6 is exact to the integer: when 6 decimals read back,
	 * the fewest that do are those 6 without their trailing zeros, found
	 * with one division instead of up to seven (a duration in ms, the
	 * access log's, usually needs all six). */
	n = (int64_t)(a * 1e6 + 0.5);
	if (a < 4294967296.0 && (double)n / 1e6 == a) {
		for (k = 6; k > 0 && n % 10 == 0; k--)
			n /= 10;
	} else {
		for (k = 0; k <= 6; k++) {
			n = (int64_t)(a * pow10[k] + 0.5);
			if ((double)n / pow10[k] == a)
				break;
		}
		if (k > 6)
			return 0;
	}
	for (i = 0; i < k; i++) { /* the decimals, from the right */
		tmp[--pos] = (char)('0' + n % 10);
		n /= 10;
	}
	if (k > 0)
		tmp[--pos] = '.';
	do {
		tmp[--pos] = (char)('0' + n % 10);
		n /= 10;
	} while (n != 0);
	if (signbit(v))
		tmp[--pos] = '-';
	sep(j);
	put(j, tmp + pos, sizeof(tmp) - (size_t)pos);
	return 1;
}

/* Other doubles are formatted in the C locale whatever the program set: a
 * comma-decimal LC_NUMERIC would make invalid JSON. */
static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;

static void c_numeric_init(void)
{
	c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

void keel__json_double(struct keel__json *j, double v)
{
	char tmp[32];
	int n = 0, prec;
	locale_t old = (locale_t)0;

	if (!isfinite(v)) {
		keel__json_null(j);
		return;
	}
	if (fixed6(j, v))
		return;
	pthread_once(&c_numeric_once, c_numeric_init);
	if (c_numeric != (locale_t)0)
		old = uselocale(c_numeric);
	/* The shortest of 15, 16 or 17 digits that reads back exactly. */
	for (prec = 15; prec <= 17; prec++) {
		n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (prec == 17 || strtod(tmp, NULL) == v)
			break;
	}
	if (old != (locale_t)0)
		uselocale(old);
	sep(j);
	put(j, tmp, (size_t)n);
}

void keel__json_bool(struct keel__json *j, int v)
{
	sep(j);
	if (v)
		put(j, "true", 4);
	else
		put(j, "false", 5);
}

void keel__json_null(struct keel__json *j)
{
	sep(j);
	put(j, "null", 4);
}

void keel__json_ptr(struct keel__json *j, const void *p)
{
	char tmp[2 + 2 * sizeof(uintptr_t) + 2];
	uintptr_t v = (uintptr_t)p;
	size_t i = sizeof(tmp);

	tmp[--i] = '"';
	do {
		tmp[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v != 0);
	tmp[--i] = 'x';
	tmp[--i] = '0';
	tmp[--i] = '"';
	sep(j);
	put(j, tmp + i, sizeof(tmp) - i);
}

void keel__json_raw(struct keel__json *j, const char *s, size_t n)
{
	sep(j);
	put(j, s, n);
}
