/*
 * src/obs/trace.c - W3C trace context: ids, traceparent, the per-thread
 * current context, and carrying it into threads and pool tasks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <keel/trace.h>

#include "json.h"

static __thread KEEL__IE struct keel_trace cur;
static __thread KEEL__IE int has_cur;

/* xoshiro256** per thread, seeded once from getrandom(2). */
static __thread KEEL__IE uint64_t rng[4];
static __thread KEEL__IE int rng_ready;

/* A forked child inherits the forking thread's generator: without a new
 * seed, every child of a process that drew ids would draw the same ones. */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void rng_forked(void)
{
	rng_ready = 0;
}

static void atfork_register(void)
{
	pthread_atfork(NULL, NULL, rng_forked);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static void rng_seed(void)
{
	ssize_t n;

	pthread_once(&atfork_once, atfork_register);
	n = getrandom(rng, sizeof(rng), GRND_NONBLOCK);

	if (n != (ssize_t)sizeof(rng)) {
		/* Early boot without entropy: time, pid and an address still
		 * make ids that differ between threads and processes. */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		rng[0] = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL;
		rng[1] = (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
		rng[2] = (uint64_t)(uintptr_t)&cur;
		rng[3] = 0x2545F4914F6CDD1DULL;
	}
	rng_ready = 1;
}

static inline uint64_t rng_next(void)
{
	uint64_t r, t;

	if (!rng_ready)
		rng_seed();
	r = rotl(rng[1] * 5, 7) * 9;
	t = rng[1] << 17;
	rng[2] ^= rng[0];
	rng[3] ^= rng[1];
	rng[1] ^= rng[2];
	rng[0] ^= rng[3];
	rng[2] ^= t;
	rng[3] = rotl(rng[3], 45);
	return r;
}

/* A span id (8 random bytes) and a trace id (16), never all zero. */
static void random_span(uint8_t id[8])
{
	uint64_t r;

	do
		r = rng_next();
	while (r == 0);
	memcpy(id, &r, 8);
}

static void random_trace(uint8_t id[16])
{
	uint64_t r[2];

	do {
		r[0] = rng_next();
		r[1] = rng_next();
	} while ((r[0] | r[1]) == 0);
	memcpy(id, r, 16);
}

int keel_trace_valid(const struct keel_trace *t)
{
	uint64_t a, b, s;

	if (t == NULL)
		return 0;
	/* Word loads: this runs several times for every request served. */
	memcpy(&a, t->trace_id, 8);
	memcpy(&b, t->trace_id + 8, 8);
	memcpy(&s, t->span_id, 8);
	return (a | b) != 0 && s != 0;
}

void keel_trace_new(struct keel_trace *t)
{
	random_trace(t->trace_id);
	random_span(t->span_id);
	t->flags = KEEL_TRACE_SAMPLED;
}

void keel_trace_child(const struct keel_trace *parent, struct keel_trace *child)
{
	if (!keel_trace_valid(parent)) {
		keel_trace_new(child);
		return;
	}
	if (child != parent) {
		memcpy(child->trace_id, parent->trace_id, sizeof(child->trace_id));
		child->flags = parent->flags;
	}
	random_span(child->span_id);
}

/* ------------------------------------------------------------------------
 * traceparent
 * ------------------------------------------------------------------------ */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper case is invalid in traceparent */
}

static int parse_hex(const char *s, uint8_t *out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int keel_traceparent_parse(const char *s, size_t len, struct keel_trace *out)
{
	struct keel_trace t;
	uint8_t version;

	if (s == NULL || out == NULL)
		return -EINVAL;
	while (len > 0 && (s[0] == ' ' || s[0] == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len < KEEL_TRACEPARENT_LEN || s[2] != '-' || s[35] != '-' ||
	    s[52] != '-')
		return -EINVAL;
	if (parse_hex(s, &version, 1) < 0 || version == 0xff)
		return -EINVAL;
	if (parse_hex(s + 3, t.trace_id, 16) < 0 ||
	    parse_hex(s + 36, t.span_id, 8) < 0 ||
	    parse_hex(s + 53, &t.flags, 1) < 0)
		return -EINVAL;
	if (!keel_trace_valid(&t))
		return -EINVAL;
	if (version == 0 && len != KEEL_TRACEPARENT_LEN)
		return -EINVAL;
	if (len > KEEL_TRACEPARENT_LEN && s[KEEL_TRACEPARENT_LEN] != '-')
		return -EINVAL;
	*out = t;
	return 0;
}

/* Two hex digits per byte from one table load: ids are written for every
 * request a server traces. */
static const char hex_pairs[513] =
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	"404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	"606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* Inline: with the constant lengths of its callers the loop unrolls. */
static inline __attribute__((always_inline)) char *
put_hex(char *p, const uint8_t *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++, p += 2)
		memcpy(p, hex_pairs + 2 * b[i], 2);
	return p;
}

size_t keel_traceparent_format(const struct keel_trace *t, char *buf)
{
	char *p = buf;

	*p++ = '0';
	*p++ = '0';
	*p++ = '-';
	p = put_hex(p, t->trace_id, 16);
	*p++ = '-';
	p = put_hex(p, t->span_id, 8);
	*p++ = '-';
	p = put_hex(p, &t->flags, 1);
	*p = '\0';
	return KEEL_TRACEPARENT_LEN;
}

void keel_trace_id_hex(const struct keel_trace *t, char buf[33])
{
	*put_hex(buf, t->trace_id, 16) = '\0';
}

void keel_span_id_hex(const struct keel_trace *t, char buf[17])
{
	*put_hex(buf, t->span_id, 8) = '\0';
}

/* ------------------------------------------------------------------------
 * Current context
 * ------------------------------------------------------------------------ */

const struct keel_trace *keel_trace_current(void)
{
	return has_cur ? &cur : NULL;
}

void keel_trace_set(const struct keel_trace *t, struct keel_trace *old)
{
	if (old != NULL) {
		if (has_cur)
			*old = cur;
		else
			memset(old, 0, sizeof(*old));
	}
	if (keel_trace_valid(t)) {
		cur = *t;
		has_cur = 1;
	} else {
		memset(&cur, 0, sizeof(cur));
		has_cur = 0;
	}
}

/* ------------------------------------------------------------------------
 * Threads and tasks
 * ------------------------------------------------------------------------ */

struct carried {
	struct keel_trace ctx; /* invalid: run without a context */
	union {
		void (*go)(void *arg);
		keel_task_fn task;
	} fn;
	void *arg;
	void (*on_drop)(void *arg); /* the submitter's */
	struct keel_trace saved;
};

static struct carried *carry(void)
{
	struct carried *c = malloc(sizeof(*c));
	const struct keel_trace *now = keel_trace_current();

	if (c == NULL)
		return NULL;
	if (now != NULL)
		keel_trace_child(now, &c->ctx);
	else
		memset(&c->ctx, 0, sizeof(c->ctx));
	return c;
}

static void go_entry(void *arg)
{
	struct carried *c = arg;
	void (*fn)(void *) = c->fn.go;
	void *fn_arg = c->arg;

	keel_trace_set(&c->ctx, NULL);
	free(c);
	fn(fn_arg);
}

int keel_trace_go(void (*fn)(void *arg), void *arg,
		  const struct keel_go_options *opt, struct keel_thread **out)
{
	struct carried *c;
	int rc;

	if (fn == NULL)
		return -EINVAL;
	c = carry();
	if (c == NULL)
		return -ENOMEM;
	c->fn.go = fn;
	c->arg = arg;
	rc = keel_go(go_entry, c, opt, out);
	if (rc != 0)
		free(c);
	return rc;
}

/* Deferred in the task's scope, so it runs after a panic too. */
static void task_done(void *arg)
{
	struct carried *c = arg;

	keel_trace_set(&c->saved, NULL);
	free(c);
}

static void task_entry(struct keel_task *t, void *arg)
{
	struct carried *c = arg;

	keel_trace_set(&c->ctx, &c->saved);
	keel_defer(task_done, c);
	c->fn.task(t, c->arg);
}

/* The task was dropped unrun by a cancelling shutdown. */
static void task_dropped(void *arg)
{
	struct carried *c = arg;

	if (c->on_drop != NULL)
		c->on_drop(c->arg);
	free(c);
}

int keel_trace_pool_submit(struct keel_pool *pool, keel_task_fn fn, void *arg,
			   const struct keel_task_options *opt)
{
	struct keel_task_options o;
	struct carried *c;
	int rc;

	if (pool == NULL || fn == NULL)
		return -EINVAL;
	c = carry();
	if (c == NULL)
		return -ENOMEM;
	c->fn.task = fn;
	c->arg = arg;
	if (opt != NULL)
		o = *opt;
	else
		memset(&o, 0, sizeof(o));
	c->on_drop = o.on_drop;
	o.on_drop = task_dropped;
	rc = keel_pool_submit(pool, task_entry, c, &o);
	if (rc != 0)
		free(c);
	return rc;
}
