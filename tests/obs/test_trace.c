/* KEEL_TEST_LABELS: threads */
/*
 * tests/obs/test_trace.c - trace context (keel/trace.h): traceparent as the
 * W3C recommendation defines it, valid and invalid, with *out untouched on
 * error; format gives a parsed value back; new ids are valid and distinct;
 * a child keeps the trace and flags and gets a new span; the current
 * context is per thread and restorable; keel_trace_go and
 * keel_trace_pool_submit carry a child of the submitter's context into the
 * new thread or task, restore the worker's own context after a task (panic
 * or not), and hand a task dropped by a cancelling shutdown to the user's
 * on_drop exactly once without leaking what they carried (ASan).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel.h>
#include <keel/go.h>
#include <keel/pool.h>
#include <keel/trace.h>
#include "keel_test.h"

/* The examples of the recommendation (sampled and not). */
#define TP_SAMPLED "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TP_UNSAMPLED "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
#define TP_OTHER "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Polls cond every millisecond for up to 5 s, then checks it. */
#define WAIT_FOR(cond)                                                        \
	do {                                                                  \
		int wait_i_;                                                  \
		for (wait_i_ = 0; wait_i_ < 5000 && !(cond); wait_i_++)       \
			sleep_ms(1);                                          \
		CHECK(cond);                                                  \
	} while (0)

/* Parses len bytes from an exact-size heap copy (no NUL after them), so
 * ASan sees any read past the end. */
static int parse_exact(const char *s, size_t len, struct keel_trace *out)
{
	char *copy = malloc(len ? len : 1);
	int rc;

	CHECK(copy != NULL);
	memcpy(copy, s, len);
	rc = keel_traceparent_parse(copy, len, out);
	free(copy);
	return rc;
}

static int same_trace(const struct keel_trace *a, const struct keel_trace *b)
{
	return memcmp(a->trace_id, b->trace_id, sizeof(a->trace_id)) == 0;
}

static int same_span(const struct keel_trace *a, const struct keel_trace *b)
{
	return memcmp(a->span_id, b->span_id, sizeof(a->span_id)) == 0;
}

static int same(const struct keel_trace *a, const struct keel_trace *b)
{
	return same_trace(a, b) && same_span(a, b) && a->flags == b->flags;
}

static struct keel_trace from(const char *tp)
{
	struct keel_trace t;

	CHECK_INT(keel_traceparent_parse(tp, strlen(tp), &t), ==, 0);
	return t;
}

/* ------------------------------------------------------------------------
 * traceparent
 * ------------------------------------------------------------------------ */

TEST(traceparent_valid_examples)
{
	static const uint8_t trace[16] = { 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3,
					   0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d,
					   0x0e, 0x0e, 0x47, 0x36 };
	static const uint8_t span[8] = { 0x00, 0xf0, 0x67, 0xaa,
					 0x0b, 0xa9, 0x02, 0xb7 };
	static const char *const examples[] = { TP_SAMPLED, TP_UNSAMPLED,
						TP_OTHER };
	struct keel_trace t;
	char buf[KEEL_TRACEPARENT_LEN + 1], hex[33];
	size_t i;

	CHECK_INT(parse_exact(TP_SAMPLED, KEEL_TRACEPARENT_LEN, &t), ==, 0);
	CHECK(memcmp(t.trace_id, trace, 16) == 0);
	CHECK(memcmp(t.span_id, span, 8) == 0);
	CHECK_INT(t.flags, ==, KEEL_TRACE_SAMPLED);
	CHECK(keel_trace_valid(&t));
	keel_trace_id_hex(&t, hex);
	CHECK_STR(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
	keel_span_id_hex(&t, hex);
	CHECK_STR(hex, "00f067aa0ba902b7");
	CHECK_INT(parse_exact(TP_UNSAMPLED, KEEL_TRACEPARENT_LEN, &t), ==, 0);
	CHECK_INT(t.flags, ==, 0);
	/* Flags the recommendation does not define yet are kept. */
	CHECK_INT(parse_exact("00-4bf92f3577b34da6a3ce929d0e0e4736-"
			      "00f067aa0ba902b7-ff", 55, &t), ==, 0);
	CHECK_INT(t.flags, ==, 0xff);

	/* Format gives the input back. */
	for (i = 0; i < sizeof(examples) / sizeof(examples[0]); i++) {
		memset(buf, 'x', sizeof(buf));
		CHECK_INT(parse_exact(examples[i], strlen(examples[i]), &t), ==,
			  0);
		CHECK_INT(keel_traceparent_format(&t, buf), ==,
			  KEEL_TRACEPARENT_LEN);
		CHECK_INT(strlen(buf), ==, KEEL_TRACEPARENT_LEN);
		CHECK_STR(buf, examples[i]);
	}
}

/* A later version is read as version 00 (its first four fields), and may
 * carry more fields after a '-'; format writes version 00. */
TEST(traceparent_future_version)
{
	struct keel_trace t;
	char buf[KEEL_TRACEPARENT_LEN + 1];

	CHECK_INT(parse_exact("cc-4bf92f3577b34da6a3ce929d0e0e4736-"
			      "00f067aa0ba902b7-01-whatever", 64, &t), ==, 0);
	CHECK(same(&t, &(struct keel_trace){ 0 }) == 0);
	keel_traceparent_format(&t, buf);
	CHECK_STR(buf, TP_SAMPLED);
	CHECK_INT(parse_exact("cc-4bf92f3577b34da6a3ce929d0e0e4736-"
			      "00f067aa0ba902b7-01", 55, &t), ==, 0);
	CHECK_INT(parse_exact("01-4bf92f3577b34da6a3ce929d0e0e4736-"
			      "00f067aa0ba902b7-01-", 56, &t), ==, 0);
	CHECK_INT(parse_exact("fe-4bf92f3577b34da6a3ce929d0e0e4736-"
			      "00f067aa0ba902b7-00-a-b", 59, &t), ==, 0);
	CHECK_INT(t.flags, ==, 0);
}

/* Every one is refused with -EINVAL and leaves *out as it was. */
TEST(traceparent_invalid)
{
	static const char *const bad[] = {
		"",
		" \t ",
		"00",
		/* wrong lengths */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e47360-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b70-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
		"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		/* version ff is forbidden; versions are two lowercase hex */
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"-0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		/* upper-case hex */
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473A-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
		/* all-zero ids */
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-00000000000000000000000000000000-0000000000000000-01",
		/* separators */
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
		"00 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 01",
		"004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01--",
		/* not hex */
		"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 1",
		"00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736--0f067aa0ba902b7-01",
		/* version 00 with anything after the flags */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 x",
		/* a later version's extra data must follow a '-' */
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01whatever",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
		/* only spaces and tabs around it are ignored */
		"\n00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
		"\v00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	};
	struct keel_trace out, before;
	size_t i;

	memset(&before, 0xa5, sizeof(before));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		out = before;
		if (parse_exact(bad[i], strlen(bad[i]), &out) != -EINVAL)
			KEEL_TEST_FAIL("accepted \"%s\"", bad[i]);
		if (memcmp(&out, &before, sizeof(out)) != 0)
			KEEL_TEST_FAIL("\"%s\" changed *out", bad[i]);
	}
	/* A valid header cut short by len; a NUL inside len. */
	out = before;
	CHECK_INT(keel_traceparent_parse(TP_SAMPLED, 54, &out), ==, -EINVAL);
	CHECK_INT(keel_traceparent_parse(TP_SAMPLED, 0, &out), ==, -EINVAL);
	CHECK_INT(keel_traceparent_parse(TP_SAMPLED, 56, &out), ==, -EINVAL);
	CHECK(memcmp(&out, &before, sizeof(out)) == 0);
	CHECK_INT(keel_traceparent_parse(NULL, 55, &out), ==, -EINVAL);
	CHECK_INT(keel_traceparent_parse(TP_SAMPLED, 55, NULL), ==, -EINVAL);
	CHECK(memcmp(&out, &before, sizeof(out)) == 0);
}

TEST(traceparent_surrounding_blanks)
{
	static const char *const ok[] = {
		" " TP_SAMPLED,
		TP_SAMPLED " ",
		"\t" TP_SAMPLED "\t",
		" \t  " TP_SAMPLED "\t \t",
		"  cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x\t",
	};
	struct keel_trace want = from(TP_SAMPLED), t;
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		memset(&t, 0, sizeof(t));
		if (parse_exact(ok[i], strlen(ok[i]), &t) != 0)
			KEEL_TEST_FAIL("refused \"%s\"", ok[i]);
		CHECK(same(&t, &want));
	}
}

/* Every byte value in every place of both ids, against printf. */
TEST(ids_in_hex_every_byte)
{
	struct keel_trace t;
	char hex[33], want[33], tp[KEEL_TRACEPARENT_LEN + 1];
	int v, at;

	for (v = 0; v < 256; v++) {
		for (at = 0; at < 16; at++) {
			memset(&t, 0, sizeof(t));
			t.trace_id[at] = (uint8_t)v;
			t.trace_id[15 - at] ^= (uint8_t)(255 - v);
			t.span_id[at % 8] = (uint8_t)v;
			t.flags = (uint8_t)v;
			for (int k = 0; k < 16; k++)
				snprintf(want + 2 * k, 3, "%02x", t.trace_id[k]);
			keel_trace_id_hex(&t, hex);
			CHECK_STR(hex, want);
			for (int k = 0; k < 8; k++)
				snprintf(want + 2 * k, 3, "%02x", t.span_id[k]);
			keel_span_id_hex(&t, hex);
			CHECK_STR(hex, want);
			keel_traceparent_format(&t, tp);
			CHECK_INT(strlen(tp), ==, KEEL_TRACEPARENT_LEN);
			CHECK(memcmp(tp + 36, want, 16) == 0);
			snprintf(want, 3, "%02x", v);
			CHECK_STR(tp + 53, want);
		}
	}
}

TEST(format_parse_round_trip)
{
	char buf[KEEL_TRACEPARENT_LEN + 1], again[KEEL_TRACEPARENT_LEN + 1];
	struct keel_trace t, back;
	int i;

	for (i = 0; i < 10000; i++) {
		keel_trace_new(&t);
		t.flags = (uint8_t)i;
		keel_traceparent_format(&t, buf);
		CHECK_INT(parse_exact(buf, strlen(buf), &back), ==, 0);
		CHECK(same(&t, &back));
		keel_traceparent_format(&back, again);
		CHECK_STR(again, buf);
	}
}

/* ------------------------------------------------------------------------
 * Ids
 * ------------------------------------------------------------------------ */

static int cmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static int cmp8(const void *a, const void *b)
{
	return memcmp(a, b, 8);
}

TEST(new_ids_are_valid_and_distinct)
{
	enum { N = 100000 };
	uint8_t(*traces)[16] = malloc(sizeof(*traces) * N);
	uint8_t(*spans)[8] = malloc(sizeof(*spans) * N);
	struct keel_trace t;
	char hex[33];
	int i, k;

	CHECK(traces != NULL && spans != NULL);
	for (i = 0; i < N; i++) {
		memset(&t, 0, sizeof(t));
		keel_trace_new(&t);
		CHECK(keel_trace_valid(&t));
		CHECK_INT(t.flags, ==, KEEL_TRACE_SAMPLED);
		memcpy(traces[i], t.trace_id, 16);
		memcpy(spans[i], t.span_id, 8);
		if (i < 1000) {
			keel_trace_id_hex(&t, hex);
			CHECK_INT(strlen(hex), ==, 32);
			for (k = 0; k < 32; k++)
				CHECK((hex[k] >= '0' && hex[k] <= '9') ||
				      (hex[k] >= 'a' && hex[k] <= 'f'));
			keel_span_id_hex(&t, hex);
			CHECK_INT(strlen(hex), ==, 16);
		}
	}
	qsort(traces, N, 16, cmp16);
	qsort(spans, N, 8, cmp8);
	for (i = 1; i < N; i++) {
		CHECK(memcmp(traces[i - 1], traces[i], 16) != 0);
		CHECK(memcmp(spans[i - 1], spans[i], 8) != 0);
	}
	free(traces);
	free(spans);
}

static void new_in_child(void *arg)
{
	struct keel_trace t;
	char buf[KEEL_TRACEPARENT_LEN + 1];

	(void)arg;
	keel_trace_new(&t);
	keel_traceparent_format(&t, buf);
	printf("%s", buf);
}

/* A process forked from one that already drew ids must not draw the same
 * ids as its siblings (a pre-forking server): the generator's state must
 * not simply be inherited. */
TEST(forked_processes_draw_different_ids)
{
	struct keel_child a, b;
	struct keel_trace t;

	keel_trace_new(&t); /* this thread's generator is seeded now */
	keel_test_run_child(new_in_child, NULL, &a);
	keel_test_run_child(new_in_child, NULL, &b);
	CHECK_INT(a.code, ==, 0);
	CHECK_INT(b.code, ==, 0);
	CHECK_INT(strlen(a.out), ==, KEEL_TRACEPARENT_LEN);
	if (strcmp(a.out, b.out) == 0)
		KEEL_TEST_FAIL("two forked children drew the same ids: %s",
			       a.out);
}

TEST(valid)
{
	struct keel_trace t = from(TP_SAMPLED), z;

	CHECK_INT(keel_trace_valid(&t), ==, 1);
	CHECK_INT(keel_trace_valid(NULL), ==, 0);
	z = t;
	memset(z.trace_id, 0, sizeof(z.trace_id));
	CHECK_INT(keel_trace_valid(&z), ==, 0);
	z = t;
	memset(z.span_id, 0, sizeof(z.span_id));
	CHECK_INT(keel_trace_valid(&z), ==, 0);
	z = t;
	z.trace_id[15] = 0; /* one zero byte is fine */
	z.span_id[0] = 0;
	CHECK_INT(keel_trace_valid(&z), ==, 1);
}

TEST(child_keeps_trace_and_flags)
{
	struct keel_trace parent = from(TP_UNSAMPLED), child, self, z;
	int i;

	for (i = 0; i < 1000; i++) {
		memset(&child, 0xa5, sizeof(child));
		keel_trace_child(&parent, &child);
		CHECK(same_trace(&child, &parent));
		CHECK_INT(child.flags, ==, 0); /* not set to sampled */
		CHECK(!same_span(&child, &parent));
		CHECK(keel_trace_valid(&child));
	}
	/* In place: the same trace, a new span. */
	self = parent;
	keel_trace_child(&self, &self);
	CHECK(same_trace(&self, &parent));
	CHECK_INT(self.flags, ==, parent.flags);
	CHECK(!same_span(&self, &parent));
	/* No parent, or an invalid one: a new trace. */
	keel_trace_child(NULL, &child);
	CHECK(keel_trace_valid(&child));
	CHECK_INT(child.flags, ==, KEEL_TRACE_SAMPLED);
	memset(&z, 0, sizeof(z));
	z.flags = 0;
	keel_trace_child(&z, &child);
	CHECK(keel_trace_valid(&child));
	CHECK(!same_trace(&child, &z));
	keel_trace_child(&z, &z);
	CHECK(keel_trace_valid(&z));
}

/* ------------------------------------------------------------------------
 * The current context
 * ------------------------------------------------------------------------ */

TEST(current_set_and_restore)
{
	struct keel_trace a = from(TP_SAMPLED), b = from(TP_OTHER), old, zero;

	memset(&zero, 0, sizeof(zero));
	CHECK(keel_trace_current() == NULL);
	memset(&old, 0xa5, sizeof(old));
	keel_trace_set(&a, &old);
	CHECK(memcmp(&old, &zero, sizeof(old)) == 0); /* there was none */
	CHECK(keel_trace_current() != NULL);
	CHECK(same(keel_trace_current(), &a));
	a.flags = 0x7f; /* a copy was made */
	CHECK_INT(keel_trace_current()->flags, ==, KEEL_TRACE_SAMPLED);
	a.flags = KEEL_TRACE_SAMPLED;

	keel_trace_set(&b, &old);
	CHECK(same(&old, &a));
	CHECK(same(keel_trace_current(), &b));
	keel_trace_set(&old, NULL); /* restore */
	CHECK(same(keel_trace_current(), &a));

	keel_trace_set(NULL, &old); /* clear */
	CHECK(same(&old, &a));
	CHECK(keel_trace_current() == NULL);
	keel_trace_set(&b, NULL);
	keel_trace_set(&zero, &old); /* an invalid context clears too */
	CHECK(same(&old, &b));
	CHECK(keel_trace_current() == NULL);
	keel_trace_set(&old, NULL);
	keel_trace_set(&zero, NULL);
	keel_trace_set(NULL, &old);
	CHECK(memcmp(&old, &zero, sizeof(old)) == 0);
}

struct thread_ctx {
	const char *tp;
	pthread_barrier_t *bar;
	int saw_none_at_start, saw_own, saw_own_after;
};

static void *thread_own_context(void *arg)
{
	struct thread_ctx *c = arg;
	struct keel_trace mine = from(c->tp);
	int i;

	c->saw_none_at_start = keel_trace_current() == NULL;
	keel_trace_set(&mine, NULL);
	pthread_barrier_wait(c->bar); /* both have set theirs */
	c->saw_own = 1;
	for (i = 0; i < 10000; i++) {
		const struct keel_trace *now = keel_trace_current();
		struct keel_trace child;

		if (now == NULL || !same(now, &mine))
			c->saw_own = 0;
		keel_trace_child(&mine, &child); /* churn the generator */
	}
	pthread_barrier_wait(c->bar);
	c->saw_own_after = keel_trace_current() != NULL &&
			   same(keel_trace_current(), &mine);
	return NULL;
}

TEST(current_is_per_thread)
{
	struct keel_trace main_ctx;
	pthread_barrier_t bar;
	struct thread_ctx c[2] = { { .tp = TP_SAMPLED }, { .tp = TP_OTHER } };
	pthread_t th[2];
	int i;

	keel_trace_new(&main_ctx);
	keel_trace_set(&main_ctx, NULL);
	pthread_barrier_init(&bar, NULL, 2);
	for (i = 0; i < 2; i++) {
		c[i].bar = &bar;
		CHECK_INT(pthread_create(&th[i], NULL, thread_own_context,
					 &c[i]), ==, 0);
	}
	for (i = 0; i < 2; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	pthread_barrier_destroy(&bar);
	for (i = 0; i < 2; i++) {
		CHECK(c[i].saw_none_at_start);
		CHECK(c[i].saw_own);
		CHECK(c[i].saw_own_after);
	}
	CHECK(same(keel_trace_current(), &main_ctx));
}

/* ------------------------------------------------------------------------
 * keel_trace_go
 * ------------------------------------------------------------------------ */

struct seen {
	int has;
	struct keel_trace ctx;
	int ran;
};

static void record(struct seen *s)
{
	const struct keel_trace *now = keel_trace_current();

	s->has = now != NULL;
	if (now != NULL)
		s->ctx = *now;
	__atomic_add_fetch(&s->ran, 1, __ATOMIC_SEQ_CST);
}

static void go_look(void *arg)
{
	struct keel_trace other = from(TP_OTHER);

	record(arg);
	keel_trace_set(&other, NULL); /* must not reach the caller */
}

TEST(go_carries_a_child_context)
{
	struct keel_trace mine = from(TP_UNSAMPLED);
	struct keel_go_options opt;
	struct keel_thread *th = NULL;
	struct seen s = { 0 }, s2 = { 0 };

	keel_trace_set(&mine, NULL);
	keel_go_options_init(&opt);
	opt.name = "traced";
	CHECK_INT(keel_trace_go(go_look, &s, &opt, &th), ==, 0);
	CHECK_INT(keel_go_join(th), ==, 0);
	CHECK_INT(s.ran, ==, 1);
	CHECK(s.has);
	CHECK(same_trace(&s.ctx, &mine));
	CHECK(!same_span(&s.ctx, &mine));
	CHECK_INT(s.ctx.flags, ==, mine.flags);
	CHECK(same(keel_trace_current(), &mine)); /* the caller's unchanged */

	/* Without a context the thread has none. */
	keel_trace_set(NULL, NULL);
	CHECK_INT(keel_trace_go(go_look, &s2, NULL, &th), ==, 0);
	CHECK_INT(keel_go_join(th), ==, 0);
	CHECK_INT(s2.ran, ==, 1);
	CHECK(!s2.has);
	CHECK(keel_trace_current() == NULL);

	CHECK_INT(keel_trace_go(NULL, NULL, NULL, NULL), ==, -EINVAL);
	keel_test_leak_check();
}

static void go_panic(void *arg)
{
	(void)arg;
	keel_panic("traced thread panics");
}

static int go_panics_seen;

static void on_go_panic(const struct keel_panic *p, void *ud)
{
	(void)ud;
	if (strcmp(keel_panic_message(p), "traced thread panics") == 0)
		__atomic_add_fetch(&go_panics_seen, 1, __ATOMIC_SEQ_CST);
}

/* keel_trace_go keeps keel_go's panic isolation and frees what it carried
 * even when fn panics, and for detached threads. */
TEST(go_panic_and_detached)
{
	struct keel_trace mine = from(TP_SAMPLED);
	struct keel_go_options opt;
	struct keel_thread *th = NULL;
	struct seen s = { 0 };

	keel_trace_set(&mine, NULL);
	keel_go_options_init(&opt);
	opt.on_panic = on_go_panic;
	CHECK_INT(keel_trace_go(go_panic, NULL, &opt, &th), ==, 0);
	CHECK_INT(keel_go_join(th), ==, 1);
	CHECK_INT(go_panics_seen, ==, 1);
	CHECK_INT(keel_trace_go(go_look, &s, NULL, NULL), ==, 0);
	WAIT_FOR(__atomic_load_n(&s.ran, __ATOMIC_SEQ_CST) == 1);
	CHECK(s.has && same_trace(&s.ctx, &mine));
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * keel_trace_pool_submit
 * ------------------------------------------------------------------------ */

static struct keel_pool *one_worker(const char *name, size_t qsize,
				    enum keel_pool_full full)
{
	struct keel_pool_config cfg;
	struct keel_pool *p = NULL;

	keel_pool_config_init(&cfg);
	cfg.name = name;
	cfg.min_threads = 1;
	cfg.queue_size = qsize;
	cfg.when_full = full;
	CHECK_INT(keel_pool_new(&cfg, &p), ==, 0);
	return p;
}

static uint64_t finished(struct keel_pool *p)
{
	struct keel_pool_stats s;

	keel_pool_stats(p, &s);
	return s.completed + s.panicked;
}

static void task_look(struct keel_task *t, void *arg)
{
	(void)t;
	record(arg);
}

/* Gives the worker a context of its own, left set (a plain task). */
static struct keel_trace worker_ctx;

static void task_set_worker_ctx(struct keel_task *t, void *arg)
{
	(void)t;
	(void)arg;
	keel_trace_set(&worker_ctx, NULL);
}

/* Changes the context and panics, restoring nothing itself. */
static void task_panic(struct keel_task *t, void *arg)
{
	struct keel_trace other = from(TP_OTHER);

	(void)t;
	record(arg);
	keel_trace_set(&other, NULL);
	keel_panic("traced task panics");
}

static void task_change(struct keel_task *t, void *arg)
{
	struct keel_trace other = from(TP_OTHER);

	(void)t;
	record(arg);
	keel_trace_set(&other, NULL);
}

TEST(pool_task_sees_a_child_and_worker_context_is_restored)
{
	struct keel_trace mine = from(TP_UNSAMPLED);
	struct keel_task_options opt = { .name = "traced" };
	struct seen before = { 0 }, child = { 0 }, panicked = { 0 },
		    after_panic = { 0 }, changed = { 0 }, after = { 0 },
		    none = { 0 };
	struct keel_pool_stats st;
	struct keel_pool *p = one_worker("tp", 16, KEEL_POOL_BLOCK);

	keel_trace_new(&worker_ctx);
	keel_trace_set(&mine, NULL);
	/* One worker runs them in order. */
	CHECK_INT(keel_pool_submit(p, task_set_worker_ctx, NULL, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_look, &before, NULL), ==, 0);
	CHECK_INT(keel_trace_pool_submit(p, task_look, &child, &opt), ==, 0);
	CHECK_INT(keel_trace_pool_submit(p, task_panic, &panicked, NULL), ==,
		  0);
	CHECK_INT(keel_pool_submit(p, task_look, &after_panic, NULL), ==, 0);
	CHECK_INT(keel_trace_pool_submit(p, task_change, &changed, &opt), ==,
		  0);
	CHECK_INT(keel_pool_submit(p, task_look, &after, NULL), ==, 0);
	keel_trace_set(NULL, NULL); /* a submitter without a context */
	CHECK_INT(keel_trace_pool_submit(p, task_look, &none, NULL), ==, 0);
	WAIT_FOR(finished(p) == 8);

	CHECK(before.has && same(&before.ctx, &worker_ctx));
	CHECK(child.has);
	CHECK(same_trace(&child.ctx, &mine));
	CHECK(!same_span(&child.ctx, &mine));
	CHECK_INT(child.ctx.flags, ==, mine.flags);
	CHECK(panicked.has && same_trace(&panicked.ctx, &mine));
	CHECK(!same_span(&panicked.ctx, &child.ctx));
	CHECK(after_panic.has && same(&after_panic.ctx, &worker_ctx));
	CHECK(changed.has && same_trace(&changed.ctx, &mine));
	CHECK(after.has && same(&after.ctx, &worker_ctx));
	CHECK_INT(none.ran, ==, 1);
	CHECK(!none.has);
	keel_pool_stats(p, &st);
	CHECK_INT(st.panicked, ==, 1);
	CHECK_INT(st.completed, ==, 7);
	keel_pool_free(p);
	keel_test_leak_check();
}

/* Without a worker context of its own, a worker has none after a traced
 * task, also after one that panicked. */
TEST(pool_worker_without_context_stays_without)
{
	struct keel_trace mine = from(TP_SAMPLED);
	struct seen a = { 0 }, b = { 0 }, c = { 0 };
	struct keel_pool *p = one_worker("tn", 8, KEEL_POOL_BLOCK);

	keel_trace_set(&mine, NULL);
	CHECK_INT(keel_trace_pool_submit(p, task_panic, &a, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_look, &b, NULL), ==, 0);
	CHECK_INT(keel_trace_pool_submit(p, task_change, &c, NULL), ==, 0);
	CHECK_INT(keel_pool_submit(p, task_look, &b, NULL), ==, 0);
	WAIT_FOR(finished(p) == 4);
	CHECK(a.has && same_trace(&a.ctx, &mine));
	CHECK_INT(b.ran, ==, 2);
	CHECK(!b.has);
	keel_pool_free(p);
	keel_test_leak_check();
}

/* A gate that holds the worker until the test opens it. */
static int gate;

static void task_gate(struct keel_task *t, void *arg)
{
	int i;

	(void)t;
	__atomic_store_n((int *)arg, 1, __ATOMIC_SEQ_CST);
	for (i = 0; i < 10000 && !__atomic_load_n(&gate, __ATOMIC_SEQ_CST);
	     i++)
		sleep_ms(1);
}

/* Caller-runs: the task runs on the submitting thread, under a child of
 * its context, which is the submitter's again afterwards, panic or not. */
TEST(pool_caller_runs_restores_the_submitter)
{
	struct keel_trace mine = from(TP_OTHER);
	struct seen inl = { 0 }, inl_panic = { 0 };
	struct keel_pool_stats st;
	struct keel_pool *p = one_worker("tc", 1, KEEL_POOL_CALLER_RUNS);
	int started = 0;

	keel_trace_set(&mine, NULL);
	CHECK_INT(keel_pool_submit(p, task_gate, &started, NULL), ==, 0);
	WAIT_FOR(__atomic_load_n(&started, __ATOMIC_SEQ_CST));
	CHECK_INT(keel_pool_submit(p, task_look, &inl, NULL), ==, 0); /* queued */
	CHECK_INT(keel_trace_pool_submit(p, task_change, &inl, NULL), ==, 0);
	CHECK_INT(inl.ran, ==, 1); /* ran here, at once */
	CHECK(inl.has && same_trace(&inl.ctx, &mine));
	CHECK(!same_span(&inl.ctx, &mine));
	CHECK(same(keel_trace_current(), &mine));
	CHECK_INT(keel_trace_pool_submit(p, task_panic, &inl_panic, NULL), ==,
		  0);
	CHECK_INT(inl_panic.ran, ==, 1);
	CHECK(same(keel_trace_current(), &mine));
	keel_pool_stats(p, &st);
	CHECK_INT(st.caller_runs, ==, 2);
	CHECK_INT(st.panicked, ==, 1);
	__atomic_store_n(&gate, 1, __ATOMIC_SEQ_CST);
	keel_pool_free(p);
	CHECK_INT(inl.ran, ==, 2); /* the queued one ran on the worker */
	keel_test_leak_check();
}

/* Counts on_drop calls per argument, and where they were made. */
#define NDROP 50
static int drops[NDROP + 1];
static int dropped_elsewhere;
static pthread_t shutter;

static void count_drop(void *arg)
{
	__atomic_add_fetch(&drops[(intptr_t)arg], 1, __ATOMIC_SEQ_CST);
	if (!pthread_equal(pthread_self(), shutter))
		__atomic_store_n(&dropped_elsewhere, 1, __ATOMIC_SEQ_CST);
}

static int ran[NDROP + 1];
static int wrong_drops;

static void wrong_drop(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&wrong_drops, 1, __ATOMIC_SEQ_CST);
}

static void task_mark(struct keel_task *t, void *arg)
{
	(void)t;
	__atomic_add_fetch(&ran[(intptr_t)arg], 1, __ATOMIC_SEQ_CST);
}

/* Waits for its token, so a cancelling shutdown ends it. */
static void task_wait_token(struct keel_task *t, void *arg)
{
	__atomic_store_n((int *)arg, 1, __ATOMIC_SEQ_CST);
	keel_clock_sleep(NULL, 5 * KEEL_SEC, keel_task_token(t));
}

TEST(pool_dropped_tasks_reach_on_drop_once)
{
	struct keel_trace mine = from(TP_SAMPLED);
	struct keel_task_options opt = { .name = "dropped",
					 .on_drop = count_drop };
	struct keel_task_options first = { .on_drop = wrong_drop };
	struct keel_pool_stats st;
	struct keel_pool *p = one_worker("td", 2 * NDROP, KEEL_POOL_BLOCK);
	int started = 0;
	intptr_t i;

	keel_trace_set(&mine, NULL);
	shutter = pthread_self();
	CHECK_INT(keel_trace_pool_submit(p, task_wait_token, &started, &first),
		  ==, 0);
	WAIT_FOR(__atomic_load_n(&started, __ATOMIC_SEQ_CST));
	for (i = 1; i <= NDROP; i++) {
		/* Half with the user's on_drop, half without: neither may
		 * leak what keel_trace_pool_submit carried. */
		CHECK_INT(keel_trace_pool_submit(p, task_mark, (void *)i,
						 i % 2 ? &opt : NULL), ==, 0);
	}
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_CANCEL, 0), ==, 0);
	for (i = 1; i <= NDROP; i++) {
		CHECK_INT(ran[i], ==, 0);
		CHECK_INT(drops[i], ==, i % 2 ? 1 : 0);
	}
	CHECK_INT(wrong_drops, ==, 0); /* it ran: no on_drop */
	CHECK(!dropped_elsewhere);
	keel_pool_stats(p, &st);
	CHECK_INT(st.cancelled, ==, NDROP);
	CHECK_INT(keel_trace_pool_submit(p, task_mark, (void *)1, &opt), ==,
		  -ESHUTDOWN);
	CHECK_INT(drops[1], ==, 1); /* a refused task is not dropped */
	keel_pool_free(p);
	keel_test_leak_check();
}

TEST(pool_submit_errors)
{
	struct keel_pool *p = one_worker("te", 1, KEEL_POOL_REJECT);
	struct keel_task_options bad = { .deadline = -1 };
	int started = 0;

	CHECK_INT(keel_trace_pool_submit(NULL, task_mark, NULL, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_trace_pool_submit(p, NULL, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_trace_pool_submit(p, task_mark, NULL, &bad), ==,
		  -EINVAL);
	CHECK_INT(keel_trace_pool_submit(p, task_gate, &started, NULL), ==, 0);
	WAIT_FOR(__atomic_load_n(&started, __ATOMIC_SEQ_CST));
	CHECK_INT(keel_trace_pool_submit(p, task_mark, (void *)2, NULL), ==, 0);
	CHECK_INT(keel_trace_pool_submit(p, task_mark, (void *)3, NULL), ==,
		  -EAGAIN); /* full */
	__atomic_store_n(&gate, 1, __ATOMIC_SEQ_CST);
	keel_pool_free(p);
	CHECK_INT(ran[2], ==, 1);
	CHECK_INT(ran[3], ==, 0);
	keel_test_leak_check(); /* refused submits freed what they carried */
}

/* Many threads submit traced tasks at once; each task sees a child of its
 * own submitter's trace. */
struct submitter {
	struct keel_pool *pool;
	struct keel_trace ctx;
	struct seen seen[200];
};

static void *submit_many(void *arg)
{
	struct submitter *s = arg;
	int i;

	keel_trace_new(&s->ctx);
	keel_trace_set(&s->ctx, NULL);
	for (i = 0; i < 200; i++)
		CHECK_INT(keel_trace_pool_submit(s->pool, task_look,
						 &s->seen[i], NULL), ==, 0);
	return NULL;
}

TEST(pool_concurrent_submitters)
{
	struct keel_pool_config cfg;
	struct keel_pool *p = NULL;
	struct submitter *s = calloc(3, sizeof(*s));
	pthread_t th[3];
	int i, k;

	CHECK(s != NULL);
	keel_pool_config_init(&cfg);
	cfg.name = "tm";
	cfg.min_threads = 2;
	CHECK_INT(keel_pool_new(&cfg, &p), ==, 0);
	for (i = 0; i < 3; i++) {
		s[i].pool = p;
		CHECK_INT(pthread_create(&th[i], NULL, submit_many, &s[i]), ==,
			  0);
	}
	for (i = 0; i < 3; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	CHECK_INT(keel_pool_shutdown(p, KEEL_POOL_DRAIN, 0), ==, 0);
	for (i = 0; i < 3; i++)
		for (k = 0; k < 200; k++) {
			CHECK_INT(s[i].seen[k].ran, ==, 1);
			CHECK(s[i].seen[k].has);
			CHECK(same_trace(&s[i].seen[k].ctx, &s[i].ctx));
			CHECK(!same_span(&s[i].seen[k].ctx, &s[i].ctx));
		}
	keel_pool_free(p);
	free(s);
	keel_test_leak_check();
}
