/*
 * tests/obs/test_json.c - the internal JSON writer (src/obs/json.h): every
 * function; commas and nesting; escaping of every byte, alone and in
 * context; every Unicode scalar value passes through, every byte that is
 * not part of valid UTF-8 becomes U+FFFD; U+2028/2029 are escaped; random
 * byte strings always give JSON that parses; numbers read back exactly; a
 * fixed buffer is never overrun and its output is a prefix of the whole
 * document; a heap buffer grows from one byte to megabytes; reset.
 *
 * Everything keel writes is read back with jansson, an independent parser
 * that rejects invalid UTF-8 (flags 0). Strings that may hold a NUL byte
 * are read with JSON_ALLOW_NUL, which only permits "\u0000" and checks
 * UTF-8 just the same.
 */
#define _GNU_SOURCE
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../src/obs/json.h"
#include "keel_test.h"

#define FFFD "\xef\xbf\xbd"

/* Parses the writer's output; a parse error fails the case. */
static json_t *parse(const struct keel__json *j, size_t flags)
{
	json_error_t err;
	json_t *v;

	CHECK(!j->failed);
	v = json_loadb(j->buf, j->len, flags, &err);
	if (v == NULL)
		KEEL_TEST_FAIL("jansson: %s at %d in:\n%.*s", err.text,
			       err.position, (int)(j->len > 2000 ? 2000 : j->len),
			       j->buf);
	return v;
}

/* The output as a NUL-terminated string (a copy to free). */
static char *text(const struct keel__json *j)
{
	char *s = malloc(j->len + 1);

	CHECK(s != NULL);
	memcpy(s, j->buf, j->len);
	s[j->len] = '\0';
	return s;
}

static void check_text(const struct keel__json *j, const char *want)
{
	char *got = text(j);

	CHECK(!j->failed);
	CHECK_STR(got, want);
	free(got);
}

/* Fails unless the decoded string equals want (wn bytes). */
static void check_decoded(const json_t *s, const char *want, size_t wn,
			  const char *what)
{
	size_t n = json_string_length(s), i;
	const char *got = json_string_value(s);

	CHECK(json_is_string(s));
	if (n == wn && memcmp(got, want, n) == 0)
		return;
	fprintf(stderr, "%s: decoded %zu bytes, want %zu\n  got: ", what, n,
		wn);
	for (i = 0; i < n && i < 64; i++)
		fprintf(stderr, "%02x ", (unsigned char)got[i]);
	fprintf(stderr, "\n  want:");
	for (i = 0; i < wn && i < 64; i++)
		fprintf(stderr, " %02x", (unsigned char)want[i]);
	KEEL_TEST_FAIL("decoded string differs");
}

/*
 * Writes in (n bytes, from an exact-size heap copy so that ASan sees any
 * read past its end) as a string value and as a key, parses both back and
 * compares the decoded text with want. Also checks what no JSON string may
 * hold raw: control characters, and (keel's promise) U+2028/2029. jansson
 * refuses NUL in object keys, so the key's text ("...":) is read back as
 * an array's string.
 */
static void check_raw_bytes(const struct keel__json *j)
{
	size_t i;

	for (i = 0; i < j->len; i++) {
		unsigned char c = (unsigned char)j->buf[i];

		CHECK_INT(c, >=, 0x20);
		if (c == 0xe2 && i + 2 < j->len && j->buf[i + 1] == '\x80')
			CHECK(j->buf[i + 2] != '\xa8' && j->buf[i + 2] != '\xa9');
	}
}

static void check_escape(const char *in, size_t n, const char *want, size_t wn)
{
	struct keel__json j, k;
	char *copy = malloc(n ? n : 1);
	size_t flags = memchr(in, 0, n) != NULL ? JSON_ALLOW_NUL : 0;
	json_t *v;

	CHECK(copy != NULL);
	memcpy(copy, in, n);
	keel__json_init(&j, NULL, 0);
	keel__json_arr(&j);
	keel__json_strn(&j, copy, n);
	keel__json_arr_end(&j);
	check_raw_bytes(&j);
	v = parse(&j, flags);
	CHECK_INT(json_array_size(v), ==, 1);
	check_decoded(json_array_get(v, 0), want, wn, "value");
	json_decref(v);

	keel__json_init(&k, NULL, 0);
	keel__json_keyn(&k, copy, n);
	CHECK(!k.failed);
	CHECK_INT(k.buf[k.len - 1], ==, ':');
	keel__json_reset(&j);
	keel__json_append(&j, "[", 1);
	keel__json_append(&j, k.buf, k.len - 1);
	keel__json_append(&j, "]", 1);
	check_raw_bytes(&j);
	v = parse(&j, flags);
	check_decoded(json_array_get(v, 0), want, wn, "key");
	json_decref(v);
	keel__json_free(&k);
	keel__json_free(&j);
	free(copy);
}

#define ESC(in, want) check_escape(in, sizeof(in) - 1, want, sizeof(want) - 1)

/* A UTF-8 encoder written for the test (independent of the writer). */
static size_t encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * What the writer should make of arbitrary bytes once decoded: each valid
 * UTF-8 sequence as it is, each other byte U+FFFD. Decodes by arithmetic
 * (code point ranges), not by the writer's table of lead bytes. out needs
 * 3 * n bytes. Returns the length.
 */
static size_t reference(const unsigned char *s, size_t n, char *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t len = c < 0x80 ? 1 : c < 0xc0 ? 0 : c < 0xe0 ? 2
			   : c < 0xf0 ? 3 : c < 0xf8 ? 4 : 0;
		static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
		uint32_t cp;
		size_t k;
		int ok = len != 0 && i + len <= n;

		if (ok) {
			cp = len == 1 ? c : (uint32_t)c & (0x7fu >> len);
			for (k = 1; k < len && ok; k++) {
				ok = (s[i + k] & 0xc0) == 0x80;
				cp = cp << 6 | (s[i + k] & 0x3fu);
			}
			ok = ok && cp >= min[len] && cp <= 0x10ffff &&
			     (cp < 0xd800 || cp > 0xdfff);
		}
		if (ok) {
			memcpy(out + o, s + i, len);
			o += len;
			i += len;
		} else {
			memcpy(out + o, FFFD, 3);
			o += 3;
			i++;
		}
	}
	return o;
}

/* ------------------------------------------------------------------------
 * Structure
 * ------------------------------------------------------------------------ */

TEST(every_writer_function)
{
	static const char want[] =
		"{\"s\":\"text\",\"sn\":\"ab\",\"null\":null,\"i\":-42,"
		"\"u\":42,\"d\":2.5,\"t\":true,\"f\":false,\"n\":null,"
		"\"p\":\"0x1234abcd\",\"raw\":{\"x\":[1]},\"ab\":[1,"
		"{\"k\":\"v\"},\"x\\\"y\"]}\n";
	struct keel__json j;
	char buf[512];
	json_t *v;

	keel__json_init(&j, buf, sizeof(buf));
	CHECK(j.buf == buf);
	CHECK_INT(j.cap, ==, sizeof(buf));
	CHECK_INT(j.len, ==, 0);
	CHECK(!j.heap && !j.failed);
	keel__json_obj(&j);
	keel__json_key(&j, "s");
	keel__json_str(&j, "text");
	keel__json_key(&j, "sn");
	keel__json_strn(&j, "abcdef", 2);
	keel__json_key(&j, "null");
	keel__json_str(&j, NULL);
	keel__json_key(&j, "i");
	keel__json_int(&j, -42);
	keel__json_key(&j, "u");
	keel__json_uint(&j, 42);
	keel__json_key(&j, "d");
	keel__json_double(&j, 2.5);
	keel__json_key(&j, "t");
	keel__json_bool(&j, 7); /* any non-zero */
	keel__json_key(&j, "f");
	keel__json_bool(&j, 0);
	keel__json_key(&j, "n");
	keel__json_null(&j);
	keel__json_key(&j, "p");
	keel__json_ptr(&j, (const void *)(uintptr_t)0x1234abcd);
	keel__json_key(&j, "raw");
	keel__json_raw(&j, "{\"x\":[1]}", 9);
	keel__json_keyn(&j, "abc", 2);
	keel__json_arr(&j);
	keel__json_raw(&j, "1", 1);
	keel__json_obj(&j);
	keel__json_key(&j, "k");
	keel__json_str(&j, "v");
	keel__json_obj_end(&j);
	keel__json_append(&j, ",\"x", 3); /* the writer adds no comma */
	keel__json_escape(&j, "\"y", 2);
	keel__json_append(&j, "\"", 1);
	keel__json_arr_end(&j);
	keel__json_obj_end(&j);
	keel__json_append(&j, "\n", 1);
	CHECK_INT(j.depth, ==, 0);
	check_text(&j, want);
	v = parse(&j, 0);
	CHECK_INT(json_integer_value(json_object_get(v, "i")), ==, -42);
	CHECK(json_is_null(json_object_get(v, "null")));
	CHECK(json_is_true(json_object_get(v, "t")));
	json_decref(v);
	keel__json_free(&j); /* a caller's buffer: not freed (ASan) */
	keel__json_free(&j);
	CHECK(j.buf == NULL);
}

TEST(pointers_are_lowercase_hex)
{
	const void *ptrs[] = { NULL, (const void *)(uintptr_t)0xf,
			       (const void *)(uintptr_t)UINTPTR_MAX, &ptrs };
	char want[64];
	struct keel__json j;
	size_t i;

	for (i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) {
		keel__json_init(&j, NULL, 0);
		keel__json_ptr(&j, ptrs[i]);
		snprintf(want, sizeof(want), "\"0x%" PRIxPTR "\"",
			 (uintptr_t)ptrs[i]);
		check_text(&j, want);
		keel__json_free(&j);
	}
}

TEST(commas_and_nesting)
{
	static const struct {
		const char *want;
	} cases[] = { { "{}" }, { "[]" }, { "[[]]" }, { "[{}]" },
		      { "{\"a\":{}}" }, { "[[],[]]" } };
	static const char want[] =
		"{\"a\":[{\"b\":1},{},[],{\"c\":[[],{}]}],\"d\":{},"
		"\"e\":[1,{\"f\":null},[2,[3]]],\"g\":0}";
	struct keel__json j;
	json_t *v;

	keel__json_init(&j, NULL, 0);
	keel__json_obj(&j);
	keel__json_obj_end(&j);
	check_text(&j, cases[0].want);
	keel__json_reset(&j);
	keel__json_arr(&j);
	keel__json_arr_end(&j);
	check_text(&j, cases[1].want);
	keel__json_reset(&j);
	keel__json_arr(&j);
	keel__json_arr(&j);
	keel__json_arr_end(&j);
	keel__json_arr_end(&j);
	check_text(&j, cases[2].want);
	keel__json_reset(&j);
	keel__json_arr(&j);
	keel__json_obj(&j);
	keel__json_obj_end(&j);
	keel__json_arr_end(&j);
	check_text(&j, cases[3].want);
	keel__json_reset(&j);
	keel__json_obj(&j);
	keel__json_key(&j, "a");
	keel__json_obj(&j);
	keel__json_obj_end(&j);
	keel__json_obj_end(&j);
	check_text(&j, cases[4].want);
	keel__json_reset(&j);
	keel__json_arr(&j);
	keel__json_arr(&j);
	keel__json_arr_end(&j);
	keel__json_arr(&j);
	keel__json_arr_end(&j);
	keel__json_arr_end(&j);
	check_text(&j, cases[5].want);

	keel__json_reset(&j);
	keel__json_obj(&j);
	keel__json_key(&j, "a");
	keel__json_arr(&j);
	keel__json_obj(&j);
	keel__json_key(&j, "b");
	keel__json_int(&j, 1);
	keel__json_obj_end(&j);
	keel__json_obj(&j);
	keel__json_obj_end(&j);
	keel__json_arr(&j);
	keel__json_arr_end(&j);
	keel__json_obj(&j);
	keel__json_key(&j, "c");
	keel__json_arr(&j);
	keel__json_arr(&j);
	keel__json_arr_end(&j);
	keel__json_obj(&j);
	keel__json_obj_end(&j);
	keel__json_arr_end(&j);
	keel__json_obj_end(&j);
	keel__json_arr_end(&j);
	keel__json_key(&j, "d");
	keel__json_obj(&j);
	keel__json_obj_end(&j);
	keel__json_key(&j, "e");
	keel__json_arr(&j);
	keel__json_int(&j, 1);
	keel__json_obj(&j);
	keel__json_key(&j, "f");
	keel__json_null(&j);
	keel__json_obj_end(&j);
	keel__json_arr(&j);
	keel__json_uint(&j, 2);
	keel__json_arr(&j);
	keel__json_int(&j, 3);
	keel__json_arr_end(&j);
	keel__json_arr_end(&j);
	keel__json_arr_end(&j);
	keel__json_key(&j, "g");
	keel__json_int(&j, 0);
	keel__json_obj_end(&j);
	check_text(&j, want);
	v = parse(&j, 0);
	CHECK_INT(json_array_size(json_object_get(v, "a")), ==, 4);
	json_decref(v);
	keel__json_free(&j);
}

/* 64 open containers are allowed; the 65th is refused (failed). */
TEST(nesting_limit)
{
	struct keel__json j;
	json_t *v;
	int i;

	keel__json_init(&j, NULL, 0);
	for (i = 0; i < 64; i++) {
		keel__json_arr(&j);
		keel__json_int(&j, i);
	}
	CHECK_INT(j.depth, ==, 64);
	for (i = 0; i < 64; i++)
		keel__json_arr_end(&j);
	CHECK_INT(j.depth, ==, 0);
	v = parse(&j, 0);
	json_decref(v);
	CHECK_INT(j.buf[j.len - 1], ==, ']');
	CHECK(j.buf[1] == '0' && j.buf[2] == ',' && j.buf[3] == '[');

	keel__json_reset(&j);
	for (i = 0; i < 64; i++) {
		keel__json_obj(&j);
		keel__json_key(&j, "k");
	}
	CHECK(!j.failed);
	keel__json_arr(&j);
	CHECK(j.failed);
	keel__json_free(&j);
}

/* reset forgets the document (commas, depth, a pending key, failure) and
 * keeps the buffer. */
TEST(reset)
{
	struct keel__json j;
	char buf[8], *heap;

	keel__json_init(&j, NULL, 1);
	keel__json_obj(&j);
	keel__json_key(&j, "a"); /* a key without its value */
	keel__json_arr(&j);
	keel__json_int(&j, 1);
	keel__json_int(&j, 2); /* [1,2 and nothing closed */
	heap = j.buf;
	keel__json_reset(&j);
	CHECK_INT(j.len, ==, 0);
	CHECK_INT(j.depth, ==, 0);
	CHECK(j.buf == heap);
	keel__json_arr(&j);
	keel__json_int(&j, 3);
	keel__json_int(&j, 4);
	keel__json_arr_end(&j);
	check_text(&j, "[3,4]");
	keel__json_reset(&j);
	keel__json_obj(&j);
	keel__json_key(&j, "z"); /* reset right after a key */
	keel__json_reset(&j);
	keel__json_arr(&j);
	keel__json_int(&j, 1);
	keel__json_int(&j, 2);
	keel__json_arr_end(&j);
	check_text(&j, "[1,2]");
	keel__json_free(&j);
	CHECK(j.buf == NULL);

	/* A fixed buffer that ran out works again after reset. */
	keel__json_init(&j, buf, sizeof(buf));
	keel__json_str(&j, "too long for eight");
	CHECK(j.failed);
	keel__json_reset(&j);
	CHECK(!j.failed);
	keel__json_arr(&j);
	keel__json_bool(&j, 1);
	keel__json_arr_end(&j);
	check_text(&j, "[true]");
}

/* ------------------------------------------------------------------------
 * Escaping
 * ------------------------------------------------------------------------ */

/* What byte b alone should decode to, and its exact escaped form. */
static size_t expect_byte(unsigned b, char *out)
{
	if (b < 0x80) {
		out[0] = (char)b;
		return 1;
	}
	memcpy(out, FFFD, 3); /* no byte >= 0x80 is UTF-8 alone */
	return 3;
}

static void escaped_form(unsigned b, char *out, size_t cap)
{
	switch (b) {
	case '"': snprintf(out, cap, "\\\""); break;
	case '\\': snprintf(out, cap, "\\\\"); break;
	case '\n': snprintf(out, cap, "\\n"); break;
	case '\r': snprintf(out, cap, "\\r"); break;
	case '\t': snprintf(out, cap, "\\t"); break;
	case '\b': snprintf(out, cap, "\\b"); break;
	case '\f': snprintf(out, cap, "\\f"); break;
	default:
		if (b < 0x20)
			snprintf(out, cap, "\\u%04x", b);
		else if (b < 0x80)
			snprintf(out, cap, "%c", (char)b);
		else
			snprintf(out, cap, FFFD);
	}
}

TEST(every_byte_alone)
{
	unsigned b;

	for (b = 0; b < 256; b++) {
		char in[1] = { (char)b }, want[4], form[16], exact[32];
		size_t wn = expect_byte(b, want);
		struct keel__json j;

		check_escape(in, 1, want, wn);
		/* The exact text: short escapes where JSON has them,
		 * lowercase \u00xx for other controls, DEL as is. */
		keel__json_init(&j, NULL, 0);
		keel__json_strn(&j, in, 1);
		escaped_form(b, form, sizeof(form));
		snprintf(exact, sizeof(exact), "\"%s\"", form);
		check_text(&j, exact);
		keel__json_reset(&j);
		keel__json_escape(&j, in, 1); /* the body only */
		check_text(&j, form);
		keel__json_free(&j);
	}
}

/* An input and what it should decode to, built piece by piece. */
struct pair {
	char in[128], want[256];
	size_t n, wn;
};

static void piece(struct pair *p, const char *in, size_t n, const char *want,
		  size_t wn)
{
	memcpy(p->in + p->n, in, n);
	p->n += n;
	memcpy(p->want + p->wn, want, wn);
	p->wn += wn;
}

#define SAME(p, s) piece(p, s, sizeof(s) - 1, s, sizeof(s) - 1)

/* Each byte between plain text, next to multi-byte characters, and inside
 * runs long enough for the writer's copy-the-plain-run path. */
TEST(every_byte_in_context)
{
	static const char run[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	unsigned b;

	for (b = 0; b < 256; b++) {
		char c = (char)b, e[4];
		size_t en = expect_byte(b, e);
		struct pair p = { .n = 0 };

		SAME(&p, "a");
		piece(&p, &c, 1, e, en);
		SAME(&p, "b");
		check_escape(p.in, p.n, p.want, p.wn);

		p.n = p.wn = 0; /* é (C3 A9) is no continuation byte */
		piece(&p, &c, 1, e, en);
		SAME(&p, "\xc3\xa9");
		piece(&p, &c, 1, e, en);
		SAME(&p, "\xf0\x9f\x98\x80");
		check_escape(p.in, p.n, p.want, p.wn);

		p.n = p.wn = 0;
		SAME(&p, run);
		piece(&p, &c, 1, e, en);
		piece(&p, &c, 1, e, en);
		SAME(&p, run);
		check_escape(p.in, p.n, p.want, p.wn);
	}
}

TEST(valid_utf8_passes_unchanged)
{
	static const uint32_t edges[] = { 0x80,   0x7ff,   0x800,   0xd7ff,
					  0xe000, 0xfffd,  0xffff,  0x10000,
					  0xfffff, 0x10ffff };
	struct keel__json j;
	char *all, *out;
	size_t n = 0, i;
	uint32_t cp;
	json_t *v;

	ESC("\xc2\x80", "\xc2\x80");                 /* U+0080 */
	ESC("\xdf\xbf", "\xdf\xbf");                 /* U+07FF */
	ESC("\xe0\xa0\x80", "\xe0\xa0\x80");         /* U+0800 */
	ESC("\xef\xbf\xbf", "\xef\xbf\xbf");         /* U+FFFF */
	ESC("\xf0\x90\x80\x80", "\xf0\x90\x80\x80"); /* U+10000 */
	ESC("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
	ESC("\xed\x9f\xbf", "\xed\x9f\xbf");         /* U+D7FF */
	ESC("\xee\x80\x80", "\xee\x80\x80");         /* U+E000 */
	ESC("h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x98\x80",
	    "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x98\x80");
	for (i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		char s[4];
		size_t k = encode(edges[i], s);

		check_escape(s, k, s, k);
	}

	/* Every scalar value U+0080..U+10FFFF in one string, copied
	 * byte for byte (U+2028/2029 escaped, and decoded back the same). */
	all = malloc(4 * 0x110000);
	CHECK(all != NULL);
	for (cp = 0x80; cp <= 0x10ffff; cp++)
		if (cp < 0xd800 || cp > 0xdfff)
			n += encode(cp, all + n);
	keel__json_init(&j, NULL, 0);
	keel__json_arr(&j);
	keel__json_strn(&j, all, n);
	keel__json_arr_end(&j);
	CHECK_INT(j.len, ==, n + 4 + 2 * (6 - 3));
	v = parse(&j, 0);
	check_decoded(json_array_get(v, 0), all, n, "all scalar values");
	json_decref(v);
	out = text(&j);
	CHECK(memmem(out, j.len, "\xe2\x80\xa8", 3) == NULL);
	CHECK(memmem(out, j.len, "\xe2\x80\xa9", 3) == NULL);
	free(out);
	keel__json_free(&j);
	free(all);
}

TEST(invalid_utf8_becomes_fffd_per_byte)
{
	/* Lone continuation bytes. */
	ESC("\x80", FFFD);
	ESC("\xbf", FFFD);
	ESC("a\x80\x80z", "a" FFFD FFFD "z");
	/* Overlong forms. */
	ESC("\xc0\x80", FFFD FFFD);
	ESC("\xc1\xbf", FFFD FFFD);
	ESC("\xe0\x80\x80", FFFD FFFD FFFD);
	ESC("\xe0\x9f\xbf", FFFD FFFD FFFD);
	ESC("\xf0\x80\x80\x80", FFFD FFFD FFFD FFFD);
	ESC("\xf0\x8f\xbf\xbf", FFFD FFFD FFFD FFFD);
	/* UTF-16 surrogates, alone and as a CESU-8 pair. */
	ESC("\xed\xa0\x80", FFFD FFFD FFFD);
	ESC("\xed\xbf\xbf", FFFD FFFD FFFD);
	ESC("\xed\xa0\xbd\xed\xb8\x80", FFFD FFFD FFFD FFFD FFFD FFFD);
	/* Beyond U+10FFFF, and lead bytes that never start a character. */
	ESC("\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD);
	ESC("\xf5\x80\x80\x80", FFFD FFFD FFFD FFFD);
	ESC("\xf7\xbf\xbf\xbf", FFFD FFFD FFFD FFFD);
	ESC("\xf8\x88\x80\x80\x80", FFFD FFFD FFFD FFFD FFFD);
	ESC("\xfe\xff", FFFD FFFD);
	/* Sequences cut short, at the end and in the middle. */
	ESC("a\xc3", "a" FFFD);
	ESC("a\xe2\x82", "a" FFFD FFFD);
	ESC("a\xf0\x9f\x98", "a" FFFD FFFD FFFD);
	ESC("\xe2\x82" "a", FFFD FFFD "a");
	ESC("\xf0\x9f\x98\xc3\xa9", FFFD FFFD FFFD "\xc3\xa9");
	ESC("\xc3\xa9\x80", "\xc3\xa9" FFFD);
	/* Decoded U+FFFD itself passes through. */
	ESC(FFFD, FFFD);
}

TEST(line_separators_are_escaped)
{
	struct keel__json j;

	keel__json_init(&j, NULL, 0);
	keel__json_str(&j, "a\xe2\x80\xa8" "b\xe2\x80\xa9" "c");
	check_text(&j, "\"a\\u2028b\\u2029c\"");
	keel__json_reset(&j);
	/* Their neighbours are ordinary characters. */
	keel__json_str(&j, "\xe2\x80\xa7\xe2\x80\xaa");
	check_text(&j, "\"\xe2\x80\xa7\xe2\x80\xaa\"");
	keel__json_reset(&j);
	keel__json_key(&j, "\xe2\x80\xa8");
	check_text(&j, "\"\\u2028\":");
	keel__json_free(&j);
	ESC("\xe2\x80\xa8\xe2\x80\xa9", "\xe2\x80\xa8\xe2\x80\xa9");
	/* Cut short it is two bad bytes, not an escape. */
	ESC("\xe2\x80", FFFD FFFD);
}

/* xorshift64*: a fixed, printed seed makes a failure reproducible. */
static uint64_t rnd_state;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 0x2545F4914F6CDD1DULL;
}

/* Random bytes weighted towards what breaks UTF-8 handling: valid
 * characters of every length, continuation bytes, lead bytes, controls. */
static size_t random_bytes(unsigned char *s, size_t cap)
{
	size_t n = rnd() % cap, i = 0;

	while (i < n) {
		uint64_t r = rnd();
		char enc[4];
		size_t k;

		switch (r % 6) {
		case 0:
			s[i++] = (unsigned char)(r >> 8);
			break;
		case 1:
			s[i++] = (unsigned char)(0x80 | ((r >> 8) & 0x7f));
			break;
		case 2:
			s[i++] = (unsigned char)(0x20 + (r >> 8) % 0x60);
			break;
		case 3:
			s[i++] = (unsigned char)((r >> 8) % 0x20);
			break;
		default: {
			uint32_t cp = (uint32_t)((r >> 8) % 0x110000);

			if (r % 6 == 4)
				cp = 0x2000 + cp % 0x40; /* near U+2028 */
			k = encode(cp, enc);
			if (k > n - i)
				k = n - i; /* cut short at the end */
			memcpy(s + i, enc, k);
			i += k;
		}
		}
	}
	return n;
}

TEST(random_bytes_always_give_valid_json)
{
	const char *env = getenv("KEEL_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : 0x6b65656c6a736f6eULL;
	unsigned char in[97];
	char want[3 * sizeof(in)];
	struct keel__json j;
	int round;

	printf("  seed 0x%" PRIx64 " (KEEL_TEST_SEED=... to repeat)\n", seed);
	rnd_state = seed;
	keel__json_init(&j, NULL, 64);
	for (round = 0; round < 100000; round++) {
		size_t n = random_bytes(in, sizeof(in)), wn;
		json_error_t err;
		json_t *v;

		keel__json_reset(&j);
		keel__json_arr(&j);
		keel__json_strn(&j, (const char *)in, n);
		keel__json_arr_end(&j);
		v = json_loadb(j.buf, j.len, JSON_ALLOW_NUL, &err);
		if (v == NULL)
			KEEL_TEST_FAIL("round %d: %s: %.*s", round, err.text,
				       (int)j.len, j.buf);
		wn = reference(in, n, want);
		check_decoded(json_array_get(v, 0), want, wn, "random");
		json_decref(v);
	}
	keel__json_free(&j);
}

/* ------------------------------------------------------------------------
 * Numbers
 * ------------------------------------------------------------------------ */

static void check_double_reads_back(double d)
{
	struct keel__json j;
	json_t *v;
	double got;

	keel__json_init(&j, NULL, 0);
	keel__json_arr(&j);
	keel__json_double(&j, d);
	keel__json_arr_end(&j);
	v = parse(&j, JSON_DECODE_INT_AS_REAL);
	got = json_number_value(json_array_get(v, 0));
	if (memcmp(&got, &d, sizeof(d)) != 0)
		KEEL_TEST_FAIL("%.17g written as %.*s reads back as %.17g", d,
			       (int)j.len, j.buf, got);
	json_decref(v);
	keel__json_free(&j);
}

TEST(doubles_read_back_exactly)
{
	static const double values[] = {
		0.0, -0.0, 1e300, -1e300, 5e-324, 0.1, 0.1 + 0.2, 0.1 + 0.7,
		1.0 / 3, 2.5, -1.5, 1e15, 1e16, 1e21, 1e22, 123456789.125,
		9007199254740993.0, DBL_MAX, -DBL_MAX, DBL_MIN, DBL_EPSILON,
		2.2250738585072009e-308, /* largest subnormal */
	};
	struct keel__json j;
	size_t i;
	int k;

	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++)
		check_double_reads_back(values[i]);
	keel__json_init(&j, NULL, 0);
	keel__json_double(&j, 0.1);
	check_text(&j, "0.1");
	keel__json_reset(&j);
	keel__json_double(&j, -0.0);
	check_text(&j, "-0");
	keel__json_free(&j);

	/* Random bit patterns: every finite double. */
	rnd_state = 0x646f75626c6573ULL;
	for (k = 0; k < 20000; k++) {
		uint64_t bits = rnd();
		double d;

		memcpy(&d, &bits, sizeof(d));
		if (isfinite(d))
			check_double_reads_back(d);
	}
}

/* Values with few decimals take a path without snprintf: the text must be
 * the short decimal one, and read back exactly like every other. */
TEST(short_decimals_are_written_short)
{
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{ 1.5, "1.5" },		{ 0.001, "0.001" },
		{ 2.25, "2.25" },		{ 1e-6, "0.000001" },
		{ 123456.789, "123456.789" }, { -3.25, "-3.25" },
		{ 42, "42" },			{ 0.1 + 0.7, "0.7999999999999999" },
		{ 1e-7, "1e-07" },		{ 9007199254.5, "9007199254.5" },
		{ 0.000123, "0.000123" },
	};
	struct keel__json j;
	size_t i;
	int k;

	keel__json_init(&j, NULL, 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		keel__json_reset(&j);
		keel__json_double(&j, cases[i].v);
		check_text(&j, cases[i].text);
		check_double_reads_back(cases[i].v);
	}
	keel__json_free(&j);
	/* Durations in ms with us resolution, as the access log writes. */
	rnd_state = 0x6d73ULL;
	for (k = 0; k < 100000; k++) {
		double ms = (double)(rnd() % 100000000) / 1000.0;

		check_double_reads_back(ms);
		check_double_reads_back(-ms);
	}
}

TEST(nan_and_infinities_are_null)
{
	struct keel__json j;

	keel__json_init(&j, NULL, 0);
	keel__json_obj(&j);
	keel__json_key(&j, "nan");
	keel__json_double(&j, NAN);
	keel__json_key(&j, "-nan");
	keel__json_double(&j, -NAN);
	keel__json_key(&j, "inf");
	keel__json_double(&j, INFINITY);
	keel__json_key(&j, "-inf");
	keel__json_double(&j, -INFINITY);
	keel__json_key(&j, "x");
	keel__json_double(&j, 1);
	keel__json_obj_end(&j);
	check_text(&j, "{\"nan\":null,\"-nan\":null,\"inf\":null,"
		       "\"-inf\":null,\"x\":1}");
	json_decref(parse(&j, 0));
	keel__json_free(&j);
}

TEST(integer_limits)
{
	struct keel__json j;
	json_t *v;

	keel__json_init(&j, NULL, 0);
	keel__json_arr(&j);
	keel__json_int(&j, INT64_MIN);
	keel__json_int(&j, INT64_MAX);
	keel__json_int(&j, 0);
	keel__json_int(&j, -1);
	keel__json_uint(&j, UINT64_MAX);
	keel__json_uint(&j, 0);
	keel__json_uint(&j, (uint64_t)INT64_MAX + 1);
	keel__json_arr_end(&j);
	check_text(&j, "[-9223372036854775808,9223372036854775807,0,-1,"
		       "18446744073709551615,0,9223372036854775808]");
	keel__json_free(&j);

	/* jansson holds integers in a long long: read the signed ones. */
	keel__json_init(&j, NULL, 0);
	keel__json_arr(&j);
	keel__json_int(&j, INT64_MIN);
	keel__json_int(&j, INT64_MAX);
	keel__json_uint(&j, INT64_MAX);
	keel__json_arr_end(&j);
	v = parse(&j, 0);
	CHECK(json_integer_value(json_array_get(v, 0)) == INT64_MIN);
	CHECK(json_integer_value(json_array_get(v, 1)) == INT64_MAX);
	CHECK(json_integer_value(json_array_get(v, 2)) == INT64_MAX);
	json_decref(v);
	keel__json_free(&j);
}

/* ------------------------------------------------------------------------
 * Buffers
 * ------------------------------------------------------------------------ */

/* A document that uses every kind of write, escapes included. */
static void write_doc(struct keel__json *j)
{
	keel__json_obj(j);
	keel__json_key(j, "msg");
	keel__json_str(j, "h\xc3\xa9llo \"w\"\n\x01\xff\xe2\x80\xa8!");
	keel__json_key(j, "n");
	keel__json_int(j, INT64_MIN);
	keel__json_key(j, "u");
	keel__json_uint(j, (uint64_t)INT64_MAX); /* jansson's largest */
	keel__json_key(j, "d");
	keel__json_double(j, 0.1);
	keel__json_key(j, "a");
	keel__json_arr(j);
	keel__json_bool(j, 1);
	keel__json_null(j);
	keel__json_ptr(j, (const void *)(uintptr_t)0xdeadbeef);
	keel__json_raw(j, "[1,2]", 5);
	keel__json_obj(j);
	keel__json_obj_end(j);
	keel__json_arr_end(j);
	keel__json_obj_end(j);
	keel__json_append(j, "\n", 1);
}

/* For every cap: never a byte past cap, failed exactly when the document
 * does not fit, and what was written is a prefix of the whole document
 * (a write that does not fit is skipped whole, and nothing follows it). */
TEST(fixed_buffer_never_overruns)
{
	enum { GUARD = 32 };
	struct keel__json j;
	char full[512], *mem;
	size_t full_len, cap, i;

	keel__json_init(&j, full, sizeof(full));
	write_doc(&j);
	CHECK(!j.failed);
	full_len = j.len;
	CHECK_INT(full_len, <, sizeof(full));
	json_decref(parse(&j, 0));

	for (cap = 0; cap <= full_len + 2; cap++) {
		mem = malloc(cap + GUARD);
		CHECK(mem != NULL);
		memset(mem, 0xa5, cap + GUARD);
		keel__json_init(&j, mem, cap);
		write_doc(&j);
		for (i = cap; i < cap + GUARD; i++)
			if ((unsigned char)mem[i] != 0xa5)
				KEEL_TEST_FAIL("cap %zu: byte %zu written", cap,
					       i);
		CHECK_INT(j.len, <=, cap);
		CHECK_INT(j.cap, ==, cap);
		CHECK_INT(j.failed, ==, cap < full_len);
		CHECK(memcmp(mem, full, j.len) == 0);
		if (cap >= full_len)
			CHECK_INT(j.len, ==, full_len);
		/* Once failed, nothing more, even what would fit. */
		if (j.failed) {
			size_t len = j.len;

			keel__json_append(&j, "", 0);
			keel__json_null(&j);
			CHECK_INT(j.len, ==, len);
			CHECK(j.failed);
		}
		keel__json_free(&j);
		free(mem);
	}
}

TEST(heap_buffer_grows)
{
	struct keel__json j;
	char key[32];
	json_t *v;
	int i;

	keel__json_init(&j, NULL, 0);
	CHECK(j.heap);
	CHECK_INT(j.cap, ==, 256);
	keel__json_free(&j);

	keel__json_init(&j, NULL, 1);
	CHECK(j.heap && !j.failed && j.buf != NULL);
	CHECK_INT(j.cap, ==, 1);
	keel__json_obj(&j);
	for (i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		keel__json_key(&j, key);
		keel__json_arr(&j);
		keel__json_int(&j, i);
		keel__json_str(&j, "\xc3\xa9\x01 some text to make it longer");
		keel__json_arr_end(&j);
	}
	keel__json_obj_end(&j);
	CHECK(!j.failed);
	CHECK_INT(j.len, >, 4 << 20);
	CHECK_INT(j.cap, >=, j.len);
	v = parse(&j, 0);
	CHECK_INT(json_object_size(v), ==, 100000);
	CHECK_INT(json_integer_value(json_array_get(
			  json_object_get(v, "k99999"), 0)), ==, 99999);
	CHECK_STR(json_string_value(json_array_get(json_object_get(v, "k7"),
						   1)),
		  "\xc3\xa9\x01 some text to make it longer");
	json_decref(v);
	keel__json_free(&j);
	CHECK(j.buf == NULL);
	keel__json_free(&j); /* twice is harmless */
	keel_test_leak_check();
}
