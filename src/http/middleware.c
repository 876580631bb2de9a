/*
 * src/http/middleware.c - the middleware chain and keel's middleware
 * (keel/http.h): recover, trace, access_log, metrics, auth, body_limit,
 * policy.
 *
 * The chain is a position in the server's array of middleware: a
 * middleware gets "the rest" as a struct keel_http_next on its caller's
 * stack, and keel_http_next runs the next one, or, past the last, the
 * route's handler, or, when the router found none, the 404 / 405 / OPTIONS
 * answer. So unmatched requests pass through the same middleware as the
 * others and are logged, counted and traced alike.
 *
 * Panics. A panic below a middleware unwinds through it without returning
 * to it. The middleware that must see every request (trace restores the
 * thread's context, access_log and metrics record the request) do their
 * closing work in a deferred call of a scope of their own, which runs
 * whether the rest of the chain returned or panicked; they record a
 * panicked request as the 500 that recover will answer (or, when the
 * status was already committed, as that status). recover is the one that
 * stops the panic; it must be the outermost.
 *
 * The trace middleware sets its response headers (traceparent,
 * X-Request-Id) after the rest of the chain has run, because answering an
 * error replaces the response, headers included. When a panic takes the
 * response away, recover puts them back on its 500: the trace middleware
 * leaves the request's context in a slot that recover owns (a request
 * value under a key private to this file, pointing into recover's frame).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <keel/error.h>
#include <keel/panic.h>

#include <keel/clock.h>

#include "internal.h"

/* ------------------------------------------------------------------------
 * The chain
 * ------------------------------------------------------------------------ */

/* No route: 404, or 405 with Allow, or OPTIONS answered 204 with Allow. */
static void unmatched(struct keel_http_req *rq, struct keel_http_resp *rs)
{
	if (rq->route_status == 405 && strcmp(rq->method, "OPTIONS") == 0) {
		keel_http_reset(rs);
		keel_http_status(rs, 204);
	} else if (rq->route_status == 405) {
		keel_http_error(rs, 405, NULL);
	} else {
		keel_http_error(rs, 404, NULL);
		return;
	}
	if (rq->allow[0] != '\0')
		keel_http_set_header(rs, "Allow", rq->allow);
}

void keel_http_next(const struct keel_http_next *next,
		    struct keel_http_req *rq, struct keel_http_resp *rs)
{
	if (next == NULL || rq == NULL || rs == NULL)
		return;
	if (next->i < next->n) {
		const struct keel__http_mw *m = &next->mws[next->i];
		struct keel_http_next rest = { next->mws, next->i + 1,
					       next->n };

		m->fn(rq, rs, &rest, m->ud);
		return;
	}
	if (rq->route != NULL)
		rq->route->fn(rq, rs, rq->route->ud);
	else
		unmatched(rq, rs);
}

/* ------------------------------------------------------------------------
 * Shared pieces
 * ------------------------------------------------------------------------ */

/* The status a request ends with: a panic below makes it the 500 that
 * recover answers, unless the status was committed before. */
static int final_status(const struct keel_http_resp *rs, int panicked)
{
	return panicked && !rs->committed ? 500 : rs->status;
}

/* Nanoseconds from the complete request to the end of its chain: the
 * clock is read once, by the first of metrics and access_log to ask (a
 * clock read is a good part of what each of them costs). */
static int64_t req_elapsed(struct keel_http_req *rq)
{
	if (rq->finished == 0)
		rq->finished = keel_clock_now(NULL);
	return rq->finished - rq->started;
}

/* Where the trace middleware leaves the request's context for recover
 * (rq->trace_slot points at the innermost recover's). */
struct trace_slot {
	struct keel_trace t;
	int set;
};

/* The trace middleware's answer headers: tp, the request's traceparent
 * (formatted), and its request id when it is echoed. Both values are valid
 * header values by construction (hex; a request id passed
 * request_id_len), so they skip keel_http_set_header's checks. */
static void trace_headers_tp(struct keel_http_resp *rs,
			     const struct keel_http_req *rq, const char *tp)
{
	keel__http_set_header_checked(rs, "traceparent", 11, tp,
				      KEEL_TRACEPARENT_LEN);
	if (rq->echo_request_id && rq->request_id_len != 0)
		keel__http_set_header_checked(
		    rs, "X-Request-Id", 12, rq->request_id, rq->request_id_len);
}

static void trace_headers(struct keel_http_resp *rs,
			  const struct keel_http_req *rq,
			  const struct keel_trace *t)
{
	char tp[KEEL_TRACEPARENT_LEN + 1];

	keel_traceparent_format(t, tp);
	trace_headers_tp(rs, rq, tp);
}

/* ------------------------------------------------------------------------
 * recover
 * ------------------------------------------------------------------------ */

struct recover_frame {
	struct keel_http_req *rq;
	struct keel_http_resp *rs;
	const struct keel_http_next *next;
	struct keel_logger *lg;
	struct trace_slot slot;
};

/* Deferred: stops a panic, answers 500 (or marks the connection to be
 * closed) and logs it, under the request's trace context so that the
 * body's trace_id and the record's are the request's. It runs while the
 * panic is still valid: its stack is read here. */
static void recover_caught(void *arg)
{
	struct recover_frame *f = arg;
	const struct keel_panic *p = keel_recover();
	struct keel_trace saved;
	const char *route, *rid;
	int committed;

	if (p == NULL)
		return;
	keel__http_count_panic(f->rq->srv);
	if (f->slot.set)
		keel_trace_set(&f->slot.t, &saved);
	committed = f->rs->committed;
	if (!committed) {
		keel_http_reset(f->rs);
		if (keel_http_error(f->rs, 500, NULL) < 0)
			keel_http_status(f->rs, 500); /* no memory: bare 500 */
		if (f->slot.set)
			trace_headers(f->rs, f->rq, &f->slot.t);
	} else {
		f->rs->abort = 1;
	}
	route = keel_http_route_pattern(f->rq);
	rid = keel_http_request_id(f->rq);
	{
		const struct keel_field fields[] = {
			KEEL_STR("method", f->rq->method),
			f->rq->path != NULL ? KEEL_STR("path", f->rq->path)
					    : KEEL_NULL("path"),
			route != NULL ? KEEL_STR("route", route)
				      : KEEL_NULL("route"),
			rid != NULL ? KEEL_STR("request_id", rid)
				    : KEEL_NULL("request_id"),
			KEEL_INT("status", committed ? f->rs->status : 500),
			KEEL_BOOL("committed", committed),
		};

		keel_log_panic(f->lg, KEEL_LOG_ERROR, "http",
			       committed ? "panic after the response was "
					   "committed: connection closed"
					 : "panic serving request",
			       p, fields, sizeof(fields) / sizeof(fields[0]));
	}
	if (f->slot.set)
		keel_trace_set(&saved, NULL);
}

static void recover_run(void *arg)
{
	struct recover_frame *f = arg;

	keel_defer(recover_caught, f);
	keel_http_next(f->next, f->rq, f->rs);
}

void keel_http_mw_recover(struct keel_http_req *rq, struct keel_http_resp *rs,
			  const struct keel_http_next *next, void *ud)
{
	struct recover_frame f;
	struct trace_slot *outer = rq->trace_slot;
	int old_stacks;

	f.rq = rq;
	f.rs = rs;
	f.next = next;
	f.lg = ud;
	f.slot.set = 0;
	rq->trace_slot = &f.slot;
	old_stacks = keel_panic_capture_stacks(1);
	keel_call(recover_run, &f);
	if (!old_stacks) /* the server's threads have it on already */
		keel_panic_capture_stacks(0);
	/* The slot dies with this frame; an outer recover gets its own back
	 * (and what the trace middleware left in ours). */
	if (outer != NULL && f.slot.set)
		*outer = f.slot;
	rq->trace_slot = outer;
}

/* ------------------------------------------------------------------------
 * trace
 * ------------------------------------------------------------------------ */

/* The length of a usable request id: 1..64 bytes, each printable ASCII
 * other than space; 0 for anything else. */
static size_t request_id_len(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f ||
		    i >= 64)
			return 0;
	return i;
}

static void trace_restore(void *saved)
{
	keel_trace_set(saved, NULL);
}

const char *keel_http_request_id(const struct keel_http_req *rq)
{
	return rq != NULL && rq->request_id[0] != '\0' ? rq->request_id : NULL;
}

void keel_http_mw_trace(struct keel_http_req *rq, struct keel_http_resp *rs,
			const struct keel_http_next *next, void *ud)
{
	/* As keel_http_header(rq, "traceparent") and (rq, "X-Request-Id")
	 * would find them, without a lookup each: the server found them. */
	const char *tp = rq->h_traceparent;
	const char *id = rq->h_request_id;
	const struct keel_http_trace_options *opts = ud;
	struct keel_trace in, req, saved;
	struct trace_slot *slot;
	char out_tp[KEEL_TRACEPARENT_LEN + 1];
	size_t idlen;

	/* Echoed when the request had one (a bad one: the id that replaced
	 * it); a made-up id is the trace id, which traceparent carries. */
	rq->echo_request_id =
		id != NULL || (opts != NULL && opts->always_request_id);
	if (tp != NULL && keel_traceparent_parse(tp, strlen(tp), &in) == 0)
		keel_trace_child(&in, &req);
	else
		keel_trace_new(&req);
	/* Formatted once: the answer's header, and the request id made from
	 * the trace id (its hex is the traceparent's second field). */
	keel_traceparent_format(&req, out_tp);
	if (id != NULL && (idlen = request_id_len(id)) > 0) {
		memcpy(rq->request_id, id, idlen + 1);
		rq->request_id_len = idlen;
	} else {
		memcpy(rq->request_id, out_tp + 3, 32);
		rq->request_id[32] = '\0';
		rq->request_id_len = 32;
	}
	slot = rq->trace_slot;
	if (slot != NULL) {
		slot->t = req;
		slot->set = 1;
	}
	keel_trace_set(&req, &saved);
	KEEL_SCOPE {
		keel_defer(trace_restore, &saved);
		keel_http_next(next, rq, rs);
	}
	trace_headers_tp(rs, rq, out_tp);
}

/* ------------------------------------------------------------------------
 * access_log
 * ------------------------------------------------------------------------ */

struct alog {
	struct keel_http_req *rq;
	struct keel_http_resp *rs;
	struct keel_logger *lg;
};

/*
 * The record's raw values, as queued for the logger's writer thread
 * (keel_log_write_deferred), which makes the JSON: the event thread copies
 * a few strings instead of formatting nine fields. The strings follow the
 * struct, one after the other, without NULs.
 */
enum { A_METHOD, A_PATH, A_ROUTE, A_REMOTE, A_RID, A_NSTR };
#define A_NULL UINT32_MAX /* a string that is NULL (written as null) */

struct alog_rec {
	double ms;
	uint64_t bytes;
	int32_t status;
	int32_t panicked;
	uint32_t len[A_NSTR];
	char text[];
};

/* The fields of the access record, in their order: the numbers from a,
 * the strings from str/len (str[i] NULL: null). f has room for 9. */
static size_t alog_fieldv(const struct alog_rec *a,
			  const char *const str[A_NSTR],
			  const uint32_t len[A_NSTR], struct keel_field *f)
{
	static const char *const keys[A_NSTR] = {
		"method", "path", "route", "remote", "request_id",
	};
	struct keel_field s[A_NSTR];
	size_t i, n = 0;

	for (i = 0; i < A_NSTR; i++)
		s[i] = str[i] != NULL ? KEEL_STRN(keys[i], str[i], len[i])
				      : KEEL_NULL(keys[i]);
	f[n++] = s[A_METHOD];
	f[n++] = s[A_PATH];
	f[n++] = s[A_ROUTE];
	f[n++] = KEEL_INT("status", a->status);
	f[n++] = KEEL_UINT("bytes", a->bytes);
	f[n++] = KEEL_FLOAT("duration_ms", a->ms);
	f[n++] = s[A_REMOTE];
	f[n++] = s[A_RID];
	/* "panicked" only when true: the usual record stays short. */
	if (a->panicked)
		f[n++] = KEEL_BOOL("panicked", 1);
	return n;
}

/* keel_log_fields_fn: on the logger's writer thread, from the queued
 * copy. */
static size_t alog_fields(const void *data, size_t size, struct keel_field *f,
			  size_t max)
{
	const struct alog_rec *a = data;
	const char *str[A_NSTR], *p = a->text;
	size_t i;

	(void)size;
	if (max < 9)
		return 0;
	for (i = 0; i < A_NSTR; i++) {
		str[i] = a->len[i] != A_NULL ? p : NULL;
		p += a->len[i] != A_NULL ? a->len[i] : 0;
	}
	return alog_fieldv(a, str, a->len, f);
}

static void alog_write(const struct alog *a, int panicked)
{
	struct keel_http_req *rq = a->rq;
	int status = final_status(a->rs, panicked);
	enum keel_log_level level = status >= 500   ? KEEL_LOG_ERROR
				    : status >= 400 ? KEEL_LOG_WARN
						    : KEEL_LOG_INFO;
	const char *str[A_NSTR];
	uint32_t len[A_NSTR];
	union {
		struct alog_rec r;
		char bytes[1024];
	} u;
	struct alog_rec *r = &u.r;
	size_t i, size = sizeof(*r);
	char *p;

	if (!keel_log_enabled(a->lg, level))
		return;
	/* The lengths are the request's: known since they were set. */
	str[A_METHOD] = rq->method;
	len[A_METHOD] = (uint32_t)rq->method_len;
	str[A_PATH] = rq->path;
	len[A_PATH] = (uint32_t)rq->path_len;
	str[A_ROUTE] = rq->route != NULL ? rq->route->pattern : NULL;
	len[A_ROUTE] = rq->route != NULL ? (uint32_t)rq->route->pattern_len : 0;
	str[A_REMOTE] = keel_http_remote_addr(rq);
	len[A_REMOTE] = (uint32_t)rq->remote_len;
	str[A_RID] = keel_http_request_id(rq);
	len[A_RID] = (uint32_t)rq->request_id_len;
	for (i = 0; i < A_NSTR; i++) {
		if (str[i] == NULL)
			len[i] = A_NULL;
		size += str[i] != NULL ? len[i] : 0;
	}
	u.r.ms = (double)req_elapsed(rq) / 1e6;
	u.r.bytes = panicked ? 0 : a->rs->len;
	u.r.status = status;
	u.r.panicked = panicked;
	if (size > sizeof(u)) { /* a long path */
		r = malloc(size);
		if (r == NULL) {
			/* No room for the copy: formatted here instead,
			 * the same record. */
			struct keel_field f[9];

			keel_log_write(a->lg, level, "http", "request", f,
				       alog_fieldv(&u.r, str, len, f));
			return;
		}
		memcpy(r, &u.r, sizeof(*r));
	}
	memcpy(r->len, len, sizeof(len));
	for (i = 0, p = r->text; i < A_NSTR; i++) {
		if (str[i] == NULL)
			continue;
		memcpy(p, str[i], len[i]);
		p += len[i];
	}
	keel_log_write_deferred(a->lg, level, "http", "request", alog_fields, r,
				size);
	if (r != &u.r)
		free(r);
}

static void alog_deferred(void *arg)
{
	if (keel_panicking())
		alog_write(arg, 1);
}

void keel_http_mw_access_log(struct keel_http_req *rq,
			     struct keel_http_resp *rs,
			     const struct keel_http_next *next, void *ud)
{
	struct alog a = { rq, rs, ud };

	KEEL_SCOPE {
		keel_defer(alog_deferred, &a);
		keel_http_next(next, rq, rs);
	}
	alog_write(&a, 0);
}

/* ------------------------------------------------------------------------
 * metrics
 *
 * A child of a family is looked up under the family's lock; at two or more
 * lookups per request that lock would be the one point every request
 * crosses. So the middleware keeps its own cache: an open-addressing table
 * of entries per (method, route), each with the duration histogram and up
 * to 8 (status, counter) pairs. Routes are keyed by their id (unique for
 * the process, 0 for unmatched requests), which costs one multiply to hash
 * and one compare to check, where the pattern's text cost a pass over it
 * and a strcmp on every request. Readers take no lock: entries and pairs are
 * published with release stores and never change or go away before
 * keel_http_metrics_free. Misses take a mutex. When the table or an
 * entry's pairs are full, the lookup falls back to the family's lock.
 *
 * Methods outside the standard ones are counted as "OTHER": a label
 * taken from raw input would let clients create series without bound.
 * ------------------------------------------------------------------------ */

#define MCACHE_SIZE 512 /* power of two; 3/4 of it is used */
#define MCACHE_STATUSES 8
#define UNMATCHED "<unmatched>"

static const char *const std_methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
	"CONNECT", "TRACE",
};
#define NMETHODS (sizeof(std_methods) / sizeof(std_methods[0]))

struct mentry {
	unsigned method; /* index in std_methods, NMETHODS: OTHER */
	uint64_t route_id; /* 0: unmatched */
	char *route;
	struct keel_histogram *dur;
	struct {
		int status;
		struct keel_counter *c; /* published last (release) */
	} st[MCACHE_STATUSES];
};

struct keel_http_metrics {
	struct keel_family *total, *dur;
	pthread_mutex_t mu;
	size_t n; /* entries, under mu */
	struct mentry *table[MCACHE_SIZE]; /* atomic loads / stores */
};

int keel_http_metrics_new(struct keel_metrics *reg,
			  struct keel_http_metrics **out)
{
	const struct keel__family_spec specs[2] = {
		{ 0, "http_requests_total",
		  "HTTP requests answered, by method, route and status.",
		  KEEL_LABELS("method", "route", "status"), NULL, 0 },
		{ 2, "http_request_duration_seconds",
		  "Time from a complete request to its response, by method "
		  "and route.",
		  KEEL_LABELS("method", "route"), keel_metrics_default_buckets,
		  KEEL_METRICS_DEFAULT_BUCKETS_N },
	};
	struct keel_family *fams[2];
	struct keel_http_metrics *m;
	int rc;

	if (reg == NULL || out == NULL)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	rc = keel__metrics_register_all(reg, specs, 2, fams);
	if (rc < 0) {
		free(m);
		return rc;
	}
	m->total = fams[0];
	m->dur = fams[1];
	pthread_mutex_init(&m->mu, NULL);
	*out = m;
	return 0;
}

void keel_http_metrics_free(struct keel_http_metrics *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < MCACHE_SIZE; i++) {
		if (m->table[i] == NULL)
			continue;
		free(m->table[i]->route);
		free(m->table[i]);
	}
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* The method's index in std_methods (NMETHODS: OTHER), by its first
 * letter and one compare. */
static unsigned method_index(const char *m)
{
	unsigned i;

	switch (m[0]) {
	case 'G':
		i = 0;
		break;
	case 'H':
		i = 1;
		break;
	case 'P':
		i = m[1] == 'O' ? 2 : m[1] == 'U' ? 3 : 5;
		break;
	case 'D':
		i = 4;
		break;
	case 'O':
		i = 6;
		break;
	case 'C':
		i = 7;
		break;
	case 'T':
		i = 8;
		break;
	default:
		return NMETHODS;
	}
	return strcmp(m, std_methods[i]) == 0 ? i : NMETHODS;
}

/* The method's label. */
static const char *std_name(unsigned meth)
{
	return meth < NMETHODS ? std_methods[meth] : "OTHER";
}

static uint64_t mhash(unsigned method, uint64_t route_id)
{
	uint64_t h = (route_id * 16 + method) * 0x9E3779B97F4A7C15ULL;

	return h ^ h >> 32;
}

/* The entry for (method, route), or NULL when absent; *slot: where the
 * probe ended (an empty slot), or MCACHE_SIZE. */
static struct mentry *mcache_find(struct keel_http_metrics *m, unsigned meth,
				  uint64_t route_id, uint64_t h, size_t *slot)
{
	size_t i, k;

	for (k = 0, i = h & (MCACHE_SIZE - 1); k < MCACHE_SIZE;
	     k++, i = (i + 1) & (MCACHE_SIZE - 1)) {
		struct mentry *e = __atomic_load_n(&m->table[i],
						   __ATOMIC_ACQUIRE);

		if (e == NULL) {
			*slot = i;
			return NULL;
		}
		if (e->route_id == route_id && e->method == meth)
			return e;
	}
	*slot = MCACHE_SIZE;
	return NULL;
}

static struct keel_counter *mentry_counter(const struct mentry *e, int status)
{
	int i;

	for (i = 0; i < MCACHE_STATUSES; i++) {
		struct keel_counter *c =
			__atomic_load_n(&e->st[i].c, __ATOMIC_ACQUIRE);

		if (c == NULL)
			return NULL;
		if (e->st[i].status == status)
			return c;
	}
	return NULL;
}

/* The slow path, under mu: finds or makes what the fast path missed. */
static void metrics_lookup_slow(struct keel_http_metrics *m, unsigned meth,
				const char *mname, uint64_t route_id,
				const char *route, uint64_t h, int status,
				const char *sstatus, struct keel_counter **c,
				struct keel_histogram **hist)
{
	struct mentry *e;
	size_t slot;
	int i;

	pthread_mutex_lock(&m->mu);
	e = mcache_find(m, meth, route_id, h, &slot);
	if (e == NULL && slot < MCACHE_SIZE && m->n < MCACHE_SIZE / 4 * 3) {
		e = calloc(1, sizeof(*e));
		if (e != NULL)
			e->route = strdup(route);
		if (e != NULL && e->route != NULL &&
		    (e->dur = keel_histogram_with(m->dur, mname, route)) !=
			    NULL) {
			e->method = meth;
			e->route_id = route_id;
			__atomic_store_n(&m->table[slot], e, __ATOMIC_RELEASE);
			m->n++;
		} else {
			if (e != NULL)
				free(e->route);
			free(e);
			e = NULL;
		}
	}
	if (e == NULL) { /* not cacheable: straight from the families */
		pthread_mutex_unlock(&m->mu);
		*hist = keel_histogram_with(m->dur, mname, route);
		*c = keel_counter_with(m->total, mname, route, sstatus);
		return;
	}
	*hist = e->dur;
	*c = mentry_counter(e, status);
	if (*c != NULL) {
		pthread_mutex_unlock(&m->mu);
		return;
	}
	*c = keel_counter_with(m->total, mname, route, sstatus);
	for (i = 0; *c != NULL && i < MCACHE_STATUSES; i++) {
		if (e->st[i].c != NULL)
			continue;
		e->st[i].status = status;
		__atomic_store_n(&e->st[i].c, *c, __ATOMIC_RELEASE);
		break;
	}
	pthread_mutex_unlock(&m->mu);
}

/* The request's counter and histogram: from the cache, else made (and
 * cached when they can be). */
static void metrics_lookup(struct keel_http_metrics *m,
			   const struct keel_http_req *rq, int status,
			   struct keel_counter **c,
			   struct keel_histogram **hist)
{
	const char *route = rq->route != NULL ? rq->route->pattern : UNMATCHED;
	uint64_t route_id = rq->route != NULL ? rq->route->id : 0;
	unsigned meth = method_index(rq->method);
	uint64_t h = mhash(meth, route_id);
	char sstatus[16];
	struct mentry *e;
	size_t slot;

	if (KEEL_LIKELY(rq->route == NULL || route_id != 0)) {
		e = mcache_find(m, meth, route_id, h, &slot);
		if (e != NULL) {
			*hist = e->dur;
			*c = mentry_counter(e, status);
			if (*c != NULL)
				return;
		}
	}
	snprintf(sstatus, sizeof(sstatus), "%d", status);
	if (rq->route != NULL && route_id == 0) {
		/* A route that did not come from a router (made by hand):
		 * no id to key the cache with, so from the families. */
		*hist = keel_histogram_with(m->dur, std_name(meth), route);
		*c =
		    keel_counter_with(m->total, std_name(meth), route, sstatus);
		return;
	}
	metrics_lookup_slow(m, meth, std_name(meth), route_id, route, h, status,
			    sstatus, c, hist);
}

static void metrics_record(struct keel_http_metrics *m,
			   struct keel_http_req *rq, int status)
{
	struct keel_counter *c = NULL;
	struct keel_histogram *hist = NULL;

	metrics_lookup(m, rq, status, &c, &hist);
	keel_counter_inc(c);
	keel_histogram_observe(hist, (double)req_elapsed(rq) / 1e9);
}

struct mrec {
	struct keel_http_metrics *m;
	struct keel_http_req *rq;
	struct keel_http_resp *rs;
};

static void metrics_deferred(void *arg)
{
	struct mrec *r = arg;

	if (keel_panicking())
		metrics_record(r->m, r->rq, final_status(r->rs, 1));
}

void keel_http_mw_metrics(struct keel_http_req *rq, struct keel_http_resp *rs,
			  const struct keel_http_next *next, void *ud)
{
	struct mrec r = { ud, rq, rs };

	if (r.m == NULL) {
		keel_http_next(next, rq, rs);
		return;
	}
	KEEL_SCOPE {
		keel_defer(metrics_deferred, &r);
		keel_http_next(next, rq, rs);
	}
	metrics_record(r.m, rq, rs->status);
}

/* ------------------------------------------------------------------------
 * auth
 * ------------------------------------------------------------------------ */

/* Compares in time that depends on the expected token's length only. */
static int token_equal(const char *want, const char *got, size_t gotlen)
{
	size_t wlen = strlen(want), i;
	volatile unsigned char diff = (unsigned char)(wlen != gotlen);

	for (i = 0; i < wlen; i++)
		diff |= (unsigned char)want[i] ^
			(unsigned char)(i < gotlen ? got[i] : 0);
	return diff == 0;
}

static void unauthorized(struct keel_http_resp *rs, const char *reason,
			 const char *challenge)
{
	keel_http_error(rs, 401, reason);
	keel_http_set_header(rs, "WWW-Authenticate", challenge);
}

void keel_http_mw_auth(struct keel_http_req *rq, struct keel_http_resp *rs,
		       const struct keel_http_next *next, void *ud)
{
	const struct keel_http_auth *a = ud;
	const char *h, *tok;
	size_t len;

	if (a == NULL || a->token == NULL || a->token[0] == '\0') {
		/* Fail closed: a server without a token lets nobody in. */
		keel_http_error(rs, 500, "auth middleware has no token");
		return;
	}
	if (a->public != NULL && rq->path != NULL) {
		const char *const *p;

		for (p = a->public; *p != NULL; p++)
			if (strcmp(*p, rq->path) == 0) {
				keel_http_next(next, rq, rs);
				return;
			}
	}
	h = keel_http_header(rq, "Authorization");
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
		unauthorized(rs, "a bearer token is required", "Bearer");
		return;
	}
	for (tok = h + 7; *tok == ' '; tok++)
		;
	len = strlen(tok);
	while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
		len--;
	if (!token_equal(a->token, tok, len)) {
		unauthorized(rs, "invalid token",
			     "Bearer error=\"invalid_token\"");
		return;
	}
	keel_http_next(next, rq, rs);
}

/* ------------------------------------------------------------------------
 * body_limit
 * ------------------------------------------------------------------------ */

void keel_http_mw_body_limit(struct keel_http_req *rq,
			     struct keel_http_resp *rs,
			     const struct keel_http_next *next, void *ud)
{
	const size_t *limit = ud;

	if (limit == NULL) {
		keel_http_error(rs, 500, "body_limit middleware has no limit");
		return;
	}
	if (rq->body_too_large || rq->body_len > *limit) {
		keel_http_errorf(rs, 413, "the body is larger than %zu bytes",
				 *limit);
		return;
	}
	keel_http_next(next, rq, rs);
}

/* ------------------------------------------------------------------------
 * policy
 * ------------------------------------------------------------------------ */

/* What the policy's op returns when the chain answered 5xx. */
#define POLICY_EFAIL (-EIO)

struct pol {
	struct keel_http_req *rq;
	struct keel_http_resp *rs;
	const struct keel_http_next *next;
	int ran;
};

static int policy_op(struct keel_exec *x, void *arg)
{
	struct pol *p = arg;
	int status;

	if (p->ran) {
		/* A retry: start from a clean response, unless it went. */
		if (p->rs->committed)
			return keel_http_resp_status(p->rs) >= 500 ? POLICY_EFAIL
								   : 0;
		keel_http_reset(p->rs);
		p->rq->finished = 0; /* a new attempt ends later */
	}
	p->ran = 1;
	keel_http_next(p->next, p->rq, p->rs);
	(void)x;
	status = keel_http_resp_status(p->rs);
	return status >= 500 ? POLICY_EFAIL : 0;
}

void keel_http_mw_policy(struct keel_http_req *rq, struct keel_http_resp *rs,
			 const struct keel_http_next *next, void *ud)
{
	struct keel_policy *pol = ud;
	struct pol p = { rq, rs, next, 0 };
	struct keel_outcome out;
	int64_t retry;
	int status;

	if (pol == NULL) {
		keel_http_next(next, rq, rs);
		return;
	}
	keel_policy_execute(pol, policy_op, &p, NULL, &out);
	if (out.panicked && p.ran) {
		/* The policy caught a panic of the chain (and counted it).
		 * Raise it again so that recover above answers and logs it
		 * like any other; its stack is lost, its kind and message are
		 * not. */
		enum keel_panic_kind k = out.panic_kind;

		/* An error or payload panic cannot carry its value here. */
		if (k == KEEL_PANIC_ERROR || k == KEEL_PANIC_PAYLOAD)
			k = KEEL_PANIC_MESSAGE;
		keel__panic_as(k, out.panic_msg);
	}
	if (out.code == 0 || p.ran)
		return; /* the chain answered */
	status = out.code == KEEL_ERATE_LIMITED ? 429 : 503;
	keel_http_error(rs, status, keel_strerror(out.code));
	/* keel's rate limiter does not say when its next permit comes: a
	 * 429 then asks for one second, the header's smallest unit. */
	retry = out.retry_after;
	if (retry <= 0 && status == 429)
		retry = KEEL_SEC;
	if (retry > 0) {
		char ra[32];
		int64_t s = retry / KEEL_SEC + (retry % KEEL_SEC != 0);

		snprintf(ra, sizeof(ra), "%lld", (long long)s);
		keel_http_set_header(rs, "Retry-After", ra);
	}
}
