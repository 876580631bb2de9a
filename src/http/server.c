/*
 * src/http/server.c - the server: libmicrohttpd set-up, the access handler
 * (request state, body, routing, the chain inside a keel scope), offloading
 * to the pool with suspend/resume, sending, and the graceful stop.
 *
 * Threads. libmicrohttpd calls on_request and on_completed on its event
 * thread(s). A KEEL_HTTP_BLOCKING route suspends its connection and runs
 * on a pool worker; the worker touches only the request state (headers and
 * query copied before the suspend) and ends with MHD_resume_connection,
 * the one call libmicrohttpd documents as safe from another thread. The
 * event thread then queues the response.
 *
 * Lifetime. The per-request state (struct conn_state) has two owners while
 * a task runs: libmicrohttpd (until on_completed) and the task (until it
 * finishes); the last one lets it go (to its event thread's cache of
 * states, or the heap). That is what lets stop() give up on a handler that
 * overruns its timeout: the connection is resumed and closed while the
 * task keeps running on memory that is still its own.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include <keel/clock.h>
#include <keel/panic.h>

#include "internal.h"

/* Initial-exec thread-locals: a load, not a call (as in src/obs). */
#define KEEL__HTTP_IE __attribute__((tls_model("initial-exec")))

enum phase {
	PH_BODY = 0,  /* headers in, body arriving */
	PH_SUSPENDED, /* on the pool */
	PH_DONE,      /* response queued */
};

struct conn_state {
	struct keel_http_req rq; /* what handlers see */
	struct keel_http_server *srv;
	struct MHD_Connection *conn; /* kept: rq.conn is NULL once detached */
	atomic_int refs;
	enum phase phase; /* event thread only */
	atomic_int done;  /* the task stored its response */
	int cut;	  /* stop gave up waiting (under srv->mu) */
	int close;	  /* answer with Connection: close */
	int bad_method;	  /* longer than rq.method can hold */
	uint64_t dropped; /* body bytes read past the limit */
	struct conn_state *next, *prev; /* srv->suspended, under srv->mu */
	/* A cached state keeps its last response body buffer for the next
	 * request (see state_unref). */
	char *spare_body;
	size_t spare_cap;
};

enum srv_state { ST_NEW = 0, ST_RUNNING, ST_STOPPED };

struct keel_http_server {
	struct keel_http_config cfg; /* strings below are our copies */
	char *address, *cert, *key;
	struct sockaddr_storage sa;
	socklen_t salen;
	struct keel_logger *lg;

	struct keel__http_mw *mws;
	size_t nmws, cap_mws;

	struct keel_pool *pool;
	int own_pool;

	struct MHD_Daemon *d;
	int lfd;
	uint16_t port;
	enum srv_state state;
	atomic_int stopping; /* new requests get 503 */
	int stop_rc;

	pthread_mutex_t stop_mu; /* serialises start/stop/free */
	pthread_mutex_t mu;	 /* suspended list, tasks, cutting */
	pthread_cond_t cv;	 /* active or tasks went down */
	struct conn_state *suspended;
	uint64_t tasks; /* offloaded, not finished */
	int cutting;	/* stop is closing what is left */

	atomic_uint_fast64_t requests, offloaded, panics, rejected, active;
};

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

void keel_http_config_init(struct keel_http_config *cfg)
{
	if (cfg == NULL)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->address = "127.0.0.1";
	cfg->port = 8080;
	cfg->threads = 1;
	cfg->max_connections = 1024;
	cfg->idle_timeout = 30 * KEEL_SEC;
	cfg->max_header_size = 8 * 1024;
	cfg->max_body_size = 1024 * 1024;
	cfg->pool_threads = 4;
}

/* Parses an IPv4 or IPv6 literal into sa. 0 or -EINVAL. */
static int parse_address(const char *a, uint16_t port,
			 struct sockaddr_storage *sa, socklen_t *len)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;

	memset(sa, 0, sizeof(*sa));
	if (inet_pton(AF_INET, a, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		*len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, a, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		*len = sizeof(*v6);
		return 0;
	}
	return -EINVAL;
}

static int config_check(const struct keel_http_config *c)
{
	if (c->router == NULL || c->address == NULL)
		return -EINVAL;
	if (c->threads < 1 || c->threads > 256)
		return -EINVAL;
	if (c->max_connections < 1 || c->idle_timeout < 0)
		return -EINVAL;
	/* Below about 1 KiB no ordinary request fits; above 1 MiB a header
	 * block is an attack, not a request. */
	if (c->max_header_size < 1024 || c->max_header_size > 1024 * 1024)
		return -EINVAL;
	if (c->max_body_size > SIZE_MAX / 2)
		return -EINVAL;
	if ((c->tls_cert_pem == NULL) != (c->tls_key_pem == NULL))
		return -EINVAL;
	if (c->pool == NULL && (c->pool_threads < 1 || c->pool_threads > 1024))
		return -EINVAL;
	if (c->idle_timeout / KEEL_SEC >= UINT32_MAX)
		return -EINVAL;
	return 0;
}

static void server_release(struct keel_http_server *s)
{
	free(s->address);
	free(s->cert);
	free(s->key);
	free(s->mws);
	pthread_mutex_destroy(&s->stop_mu);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

int keel_http_server_new(const struct keel_http_config *cfg,
			 struct keel_http_server **out)
{
	struct keel_http_server *s;
	pthread_condattr_t ca;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (cfg == NULL || out == NULL)
		return -EINVAL;
	rc = config_check(cfg);
	if (rc < 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->cfg = *cfg;
	s->lfd = -1;
	pthread_mutex_init(&s->stop_mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (parse_address(cfg->address, cfg->port, &s->sa, &s->salen) < 0) {
		server_release(s);
		return -EINVAL;
	}
	s->address = strdup(cfg->address);
	s->cert = cfg->tls_cert_pem ? strdup(cfg->tls_cert_pem) : NULL;
	s->key = cfg->tls_key_pem ? strdup(cfg->tls_key_pem) : NULL;
	if (s->address == NULL || (cfg->tls_cert_pem && s->cert == NULL) ||
	    (cfg->tls_key_pem && s->key == NULL)) {
		server_release(s);
		return -ENOMEM;
	}
	s->cfg.address = s->address;
	s->cfg.tls_cert_pem = s->cert;
	s->cfg.tls_key_pem = s->key;
	s->lg = cfg->logger;
	*out = s;
	return 0;
}

int keel_http_use(struct keel_http_server *s, keel_http_middleware_fn mw,
		  void *ud)
{
	int rc = 0;

	if (s == NULL || mw == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->stop_mu);
	if (s->state != ST_NEW) {
		rc = -EBUSY;
	} else if (s->nmws == s->cap_mws) {
		size_t cap = s->cap_mws ? 2 * s->cap_mws : 8;
		struct keel__http_mw *m = realloc(s->mws, cap * sizeof(*m));

		if (m == NULL)
			rc = -ENOMEM;
		else {
			s->mws = m;
			s->cap_mws = cap;
		}
	}
	if (rc == 0) {
		s->mws[s->nmws].fn = mw;
		s->mws[s->nmws].ud = ud;
		s->nmws++;
	}
	pthread_mutex_unlock(&s->stop_mu);
	return rc;
}

struct keel_logger *keel__http_logger(const struct keel_http_server *s)
{
	return s != NULL && s->lg != NULL ? s->lg : keel_log_default();
}

void keel__http_count_panic(struct keel_http_server *s)
{
	if (s != NULL)
		atomic_fetch_add(&s->panics, 1);
}

void keel_http_server_stats(struct keel_http_server *s,
			    struct keel_http_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return;
	out->requests = atomic_load(&s->requests);
	out->offloaded = atomic_load(&s->offloaded);
	out->panics = atomic_load(&s->panics);
	out->rejected = atomic_load(&s->rejected);
	out->active = atomic_load(&s->active);
}

uint16_t keel_http_server_port(const struct keel_http_server *s)
{
	return s != NULL ? s->port : 0;
}

/* ------------------------------------------------------------------------
 * Per-request state
 * ------------------------------------------------------------------------ */

/*
 * The states of finished requests, kept by each event thread for its next
 * requests: a state is too big for malloc's per-thread cache, and getting
 * one from the main heap, zeroed, cost about 3 % of a small request. Only
 * event threads keep them (they are the ones that take them: a pool
 * worker that lets go of an offloaded request's state frees it), without a
 * lock, and free them when the thread ends. States are the same for every
 * server, so servers share them.
 */
#define STATE_CACHE 64

static __thread KEEL__HTTP_IE struct conn_state *cache_head;
static __thread KEEL__HTTP_IE unsigned cache_n;
static __thread KEEL__HTTP_IE int event_thread; /* runs on_request */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

static void cache_drain(void *unused)
{
	(void)unused;
	while (cache_head != NULL) {
		struct conn_state *st = cache_head;

		cache_head = st->next;
		free(st->spare_body);
		free(st);
	}
	cache_n = 0;
}

static void cache_key_init(void)
{
	cache_key_ok = pthread_key_create(&cache_key, cache_drain) == 0;
}

/* Called by on_request: this thread takes states, so it may keep some
 * (once the key's destructor is armed to free them at its end). */
static void event_thread_enter(void)
{
	if (KEEL_LIKELY(event_thread))
		return;
	pthread_once(&cache_once, cache_key_init);
	event_thread = cache_key_ok &&
		       pthread_setspecific(cache_key, (void *)1) == 0 ? 1 : -1;
}

/* A state for a new request: from the cache, or the heap. Every field is
 * set here (not zeroed as a whole: the arrays behind their counts are
 * never read before they are written). */
static struct conn_state *state_new(struct keel_http_server *s,
				    struct MHD_Connection *conn)
{
	struct conn_state *st = cache_head;
	struct keel_http_req *rq;

	if (st != NULL) {
		cache_head = st->next;
		cache_n--;
	} else if ((st = malloc(sizeof(*st))) != NULL) {
		st->spare_body = NULL;
		st->spare_cap = 0;
	} else {
		return NULL;
	}
	atomic_init(&st->refs, 1);
	atomic_init(&st->done, 0);
	st->srv = s;
	st->conn = conn;
	st->phase = PH_BODY;
	st->cut = st->close = st->bad_method = 0;
	st->dropped = 0;
	st->next = st->prev = NULL;
	rq = &st->rq;
	rq->srv = s;
	rq->conn = conn;
	rq->method[0] = '\0';
	rq->method_len = 0;
	rq->path = NULL;
	rq->path_len = 0;
	rq->route = NULL;
	rq->route_status = 0;
	rq->allow[0] = '\0';
	rq->nparams = 0;
	rq->headers = rq->query = NULL;
	rq->nheaders = rq->nquery = 0;
	rq->body = NULL;
	rq->body_len = rq->body_cap = 0;
	rq->body_too_large = 0;
	rq->remote[0] = '\0';
	rq->remote_len = 0;
	rq->started = rq->finished = 0;
	rq->offloaded = 0;
	rq->nvalues = 0;
	rq->request_id[0] = '\0';
	rq->request_id_len = 0;
	rq->echo_request_id = 0;
	rq->h_traceparent = rq->h_request_id = NULL;
	rq->trace_slot = NULL;
	keel__http_resp_init(&rq->resp);
	if (st->spare_body != NULL) {
		rq->resp.body = st->spare_body;
		rq->resp.cap = st->spare_cap;
		rq->resp.body[0] = '\0';
		st->spare_body = NULL;
	}
	return st;
}

/* The last owner lets go: the state goes back to this thread's cache, or
 * to the heap. */
#define SPARE_BODY_MAX 4096

static void state_unref(struct conn_state *st)
{
	struct keel_http_resp *rs = &st->rq.resp;
	int keep;

	if (atomic_fetch_sub(&st->refs, 1) != 1)
		return;
	keep = event_thread == 1 && cache_n < STATE_CACHE;
	/* A small body buffer stays with a cached state: most responses
	 * are small, and the next one needs no malloc. */
	if (keep && rs->body != NULL && rs->cap <= SPARE_BODY_MAX) {
		st->spare_body = rs->body;
		st->spare_cap = rs->cap;
		rs->body = NULL;
		rs->len = rs->cap = 0;
	}
	keel__http_req_release(&st->rq);
	if (keep) {
		st->next = cache_head;
		cache_head = st;
		cache_n++;
		return;
	}
	free(st);
}

/* IPv4 by hand: inet_ntop formats with sprintf, which showed in the
 * access log's profile. buf holds at least 16 bytes; returns the length. */
static size_t ipv4_text(const unsigned char *a, char *buf)
{
	char *p = buf;
	int i;

	for (i = 0; i < 4; i++) {
		unsigned v = a[i];

		if (v >= 100)
			*p++ = (char)('0' + v / 100);
		if (v >= 10)
			*p++ = (char)('0' + v / 10 % 10);
		*p++ = (char)('0' + v % 10);
		*p++ = '.';
	}
	p[-1] = '\0';
	return (size_t)(p - 1 - buf);
}

/* The last IPv4 address this thread formatted, and its text: most
 * requests come from the clients of the ones before (a few proxies or load
 * balancers), and a compare is cheaper than formatting. Keyed by the
 * address itself, so it cannot be stale. */
static __thread KEEL__HTTP_IE struct {
	struct in_addr a;
	uint8_t len; /* 0: none yet */
	char text[16];
} v4_last;

static size_t ipv4_cached(const struct in_addr *a, char *buf)
{
	if (v4_last.len == 0 || v4_last.a.s_addr != a->s_addr) {
		v4_last.len =
		    (uint8_t)ipv4_text((const unsigned char *)a, v4_last.text);
		v4_last.a = *a;
	}
	memcpy(buf, v4_last.text, 16);
	return v4_last.len;
}

size_t keel__http_remote_addr(struct MHD_Connection *conn, char *buf,
			      size_t len)
{
	const union MHD_ConnectionInfo *ci;
	const struct sockaddr *sa;

	if (len < 16)
		return 0;
	memcpy(buf, "unknown", 8);
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || ci->client_addr == NULL)
		return 7;
	sa = ci->client_addr;
	if (sa->sa_family == AF_INET)
		return ipv4_cached(&((const struct sockaddr_in *)sa)->sin_addr,
				   buf);
	if (sa->sa_family == AF_INET6 &&
	    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr,
		      buf, (socklen_t)len) == NULL)
		memcpy(buf, "unknown", 8);
	return strlen(buf);
}

/* Stacks are captured on every thread that serves (the recover middleware
 * logs them); once per thread. */
static __thread int stacks_on;

static void capture_stacks(void)
{
	if (!stacks_on) {
		keel_panic_capture_stacks(1);
		stacks_on = 1;
	}
}

/* ------------------------------------------------------------------------
 * Sending
 * ------------------------------------------------------------------------ */

/* Headers libmicrohttpd writes itself from the response it is given.
 * Names of other lengths (most) need no compare. */
static int header_reserved(const struct keel__http_header *h)
{
	switch (h->name_len) {
	case 14: return strcasecmp(h->name, "Content-Length") == 0;
	case 17: return strcasecmp(h->name, "Transfer-Encoding") == 0;
	default: return 0;
	}
}

static enum MHD_Result send_resp(struct keel_http_server *s,
				 struct conn_state *st)
{
	struct keel_http_resp *rs = &st->rq.resp;
	struct MHD_Response *r;
	enum MHD_Result ret;
	size_t i;

	st->phase = PH_DONE;
	if (rs->abort)
		return MHD_NO; /* a panic after the commit: close, no answer */
	if (rs->len > 0) {
		/* The body goes to libmicrohttpd as it is, no copy, and stays
		 * ours: libmicrohttpd reads a response's data while it sends
		 * it, which ends before it reports the request complete
		 * (on_completed, after which the state and its body are let
		 * go). So the buffer can be kept for the next request. */
		r = MHD_create_response_from_buffer(rs->len, rs->body,
						    MHD_RESPMEM_PERSISTENT);
	} else {
		r = MHD_create_response_from_buffer(0, (void *)"",
						    MHD_RESPMEM_PERSISTENT);
	}
	if (r == NULL)
		return MHD_NO;
	for (i = 0; i < rs->nheaders; i++) {
		const struct keel__http_header *h = &rs->headers[i];

		if (header_reserved(h))
			continue;
		if (MHD_add_response_header(r, h->name, h->value) != MHD_YES)
			keel_log_debug(
			    keel__http_logger(s), "http",
			    "response header refused by libmicrohttpd",
			    KEEL_STR("header", h->name));
	}
	if (st->close)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(st->conn, (unsigned)rs->status, r);
	MHD_destroy_response(r);
	if (ret == MHD_YES)
		atomic_fetch_add(&s->requests, 1);
	return ret;
}

/* An answer the server gives by itself, before any handler: limits, bad
 * requests, shutting down. The connection is closed after it. */
static enum MHD_Result reject(struct keel_http_server *s, struct conn_state *st,
			      int status, const char *reason)
{
	atomic_fetch_add(&s->rejected, 1);
	st->close = 1;
	keel_http_error(&st->rq.resp, status, reason);
	return send_resp(s, st);
}

/* ------------------------------------------------------------------------
 * The chain, inside a keel scope
 * ------------------------------------------------------------------------ */

struct chain_call {
	struct keel_http_server *srv;
	struct keel_http_req *rq;
	struct keel_trace saved;
};

/* Deferred: a panic that no middleware recovered becomes a bare 500 (or a
 * closed connection after a commit); the thread's trace context goes back
 * to what it was, whatever the chain left. */
static void chain_end(void *arg)
{
	struct chain_call *c = arg;
	const struct keel_panic *p = keel_recover();
	struct keel_http_req *rq = c->rq;

	if (p != NULL) {
		const char *route = keel_http_route_pattern(rq);

		atomic_fetch_add(&c->srv->panics, 1);
		keel_log_panic(keel__http_logger(c->srv), KEEL_LOG_ERROR,
			       "http", "panic in an http handler", p,
			       (const struct keel_field[]){
				   KEEL_STR("method", rq->method),
				   KEEL_STR("path", rq->path),
				   KEEL_STR("route", route ? route : ""),
			       },
			       3);
		/* After a commit, or when not even the 500 can be built
		 * (out of memory), close: never send what the handler left
		 * half-written as if it were an answer. */
		if (rq->resp.committed ||
		    keel_http_error(&rq->resp, 500, NULL) < 0)
			rq->resp.abort = 1;
	}
	keel_trace_set(&c->saved, NULL);
}

static void chain_body(void *arg)
{
	struct chain_call *c = arg;
	struct keel_http_next next = {
	    .mws = c->srv->mws,
	    .i = 0,
	    .n = c->srv->nmws,
	};

	/* Each request starts with no trace context: nothing left by the
	 * previous one on this thread can leak into it. */
	keel_trace_set(NULL, &c->saved);
	keel_defer(chain_end, c);
	keel_http_next(&next, c->rq, &c->rq->resp);
}

static void run_chain(struct keel_http_server *s, struct keel_http_req *rq)
{
	struct chain_call c = {.srv = s, .rq = rq};

	capture_stacks();
	keel_call(chain_body, &c);
}

/* ------------------------------------------------------------------------
 * Offloading
 * ------------------------------------------------------------------------ */

static void list_remove(struct keel_http_server *s, struct conn_state *st)
{
	if (st->prev != NULL)
		st->prev->next = st->next;
	else if (s->suspended == st)
		s->suspended = st->next;
	if (st->next != NULL)
		st->next->prev = st->prev;
	st->next = st->prev = NULL;
}

/* The task's last act: hand the connection back (unless stop already
 * closed it) and let go of the state. */
static void task_finish(struct conn_state *st)
{
	struct keel_http_server *s = st->srv;

	atomic_store_explicit(&st->done, 1, memory_order_release);
	pthread_mutex_lock(&s->mu);
	list_remove(s, st);
	if (!st->cut)
		MHD_resume_connection(st->conn);
	s->tasks--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	state_unref(st);
}

static void offload_task(struct keel_task *t, void *arg)
{
	struct conn_state *st = arg;

	(void)t;
	run_chain(st->srv, &st->rq);
	task_finish(st);
}

/* A cancelling shutdown of a pool the user gave dropped the task. */
static void offload_dropped(void *arg)
{
	struct conn_state *st = arg;

	atomic_fetch_add(&st->srv->rejected, 1);
	st->close = 1;
	keel_http_error(&st->rq.resp, 503, "the worker pool was shut down");
	task_finish(st);
}

static enum MHD_Result offload(struct keel_http_server *s,
			       struct conn_state *st)
{
	struct keel_task_options opt = {
	    .name = "http",
	    .on_drop = offload_dropped,
	};
	int rc;

	st->rq.offloaded = 1;
	if (keel__http_req_detach(&st->rq) < 0) {
		keel_http_error(&st->rq.resp, 500, NULL);
		return send_resp(s, st);
	}
	pthread_mutex_lock(&s->mu);
	if (s->cutting) {
		pthread_mutex_unlock(&s->mu);
		return reject(s, st, 503, "the server is shutting down");
	}
	st->next = s->suspended;
	if (st->next != NULL)
		st->next->prev = st;
	s->suspended = st;
	s->tasks++;
	atomic_fetch_add(&st->refs, 1);
	st->phase = PH_SUSPENDED;
	MHD_suspend_connection(st->conn);
	pthread_mutex_unlock(&s->mu);

	rc = keel_pool_submit(s->pool, offload_task, st, &opt);
	if (rc < 0) {
		/* Not queued: answer now. The connection is suspended, so
		 * the answer goes through the same resume path. */
		atomic_fetch_add(&s->rejected, 1);
		st->close = 1;
		keel_http_error(&st->rq.resp, 503,
				"the worker pool is full or stopping");
		task_finish(st);
		return MHD_YES;
	}
	atomic_fetch_add(&s->offloaded, 1);
	return MHD_YES;
}

/* ------------------------------------------------------------------------
 * The access handler
 * ------------------------------------------------------------------------ */

/*
 * One pass over the request's headers (and query arguments) when they are
 * in: their size, as they came (near enough: the query is counted
 * decoded), and the few headers read on every request, which would
 * otherwise cost a lookup each (Host and Content-Length here, traceparent
 * and X-Request-Id in the trace middleware). The first of a repeated
 * header is the one kept, as MHD_lookup_connection_value would find.
 */
struct hscan {
	size_t n;
	int host;
	const char *content_length;
	const char *traceparent, *request_id;
};

static enum MHD_Result hscan_add(void *cls, enum MHD_ValueKind kind,
				 const char *key, const char *value)
{
	struct hscan *h = cls;
	size_t klen = strlen(key);

	h->n += klen + (value ? strlen(value) : 0) +
		(kind == MHD_HEADER_KIND ? 4 : 2);
	if (kind != MHD_HEADER_KIND)
		return MHD_YES;
	switch (klen) {
	case 4:
		h->host |= strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0;
		break;
	case 11:
		if (h->traceparent == NULL && strcasecmp(key, "traceparent") == 0)
			h->traceparent = value;
		break;
	case 12:
		if (h->request_id == NULL && strcasecmp(key, "X-Request-Id") == 0)
			h->request_id = value;
		break;
	case 14:
		if (h->content_length == NULL &&
		    strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
			h->content_length = value;
		break;
	default:
		break;
	}
	return MHD_YES;
}

static void header_scan(struct MHD_Connection *conn, const char *url,
			const char *method, const char *version,
			struct hscan *h)
{
	memset(h, 0, sizeof(*h));
	h->n = strlen(method) + strlen(url) + strlen(version) + 4;
	MHD_get_connection_values(conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND,
				  hscan_add, h);
}

/* The declared body length, or -1 when there is none (chunked) or it is
 * not a number (libmicrohttpd answers that itself). */
static int64_t content_length(const char *v)
{
	char *end;
	unsigned long long n;

	if (v == NULL || *v < '0' || *v > '9')
		return -1;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || n > INT64_MAX)
		return INT64_MAX;
	return (int64_t)n;
}

static enum MHD_Result first_call(struct keel_http_server *s,
				  struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  void **con_cls)
{
	struct conn_state *st = state_new(s, conn);
	size_t mlen = strlen(method), ulen = strlen(url);
	struct hscan h;
	int64_t cl;

	if (st == NULL)
		return MHD_NO;
	if (mlen >= sizeof(st->rq.method)) {
		st->bad_method = 1;
	} else {
		memcpy(st->rq.method, method, mlen + 1);
		st->rq.method_len = mlen;
	}
	/* Most paths fit in the request itself: no strdup. */
	st->rq.path = ulen < sizeof(st->rq.path_inline) ? st->rq.path_inline
							: malloc(ulen + 1);
	if (st->rq.path == NULL) {
		state_unref(st);
		return MHD_NO;
	}
	memcpy(st->rq.path, url, ulen + 1);
	st->rq.path_len = ulen;
	/* rq.remote is formatted when asked for (keel_http_remote_addr) or
	 * when the request leaves the event thread. */
	atomic_fetch_add(&s->active, 1);
	*con_cls = st;

	/* Answered before the body is read: libmicrohttpd then closes the
	 * connection instead of reading what follows. */
	if (atomic_load(&s->stopping))
		return reject(s, st, 503, "the server is shutting down");
	header_scan(conn, url, method, version, &h);
	st->rq.h_traceparent = h.traceparent;
	st->rq.h_request_id = h.request_id;
	if (h.n > s->cfg.max_header_size)
		return reject(s, st, 431, "the request headers are too large");
	/* RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400
	 * (libmicrohttpd 0.9.75 lets it through). */
	if (!h.host && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
		return reject(s, st, 400,
			      "an HTTP/1.1 request needs a Host header");
	cl = content_length(h.content_length);
	if (cl >= 0 && (uint64_t)cl > s->cfg.max_body_size)
		return reject(s, st, 413, "the request body is too large");
	return MHD_YES;
}

/* Past the limit, the rest of a body is read and dropped so that the 413
 * goes out on a connection in a known state, but not without end: a client
 * that sends this much more (the limit again, at least 1 MiB) is cut off
 * without an answer. */
static uint64_t drain_limit(const struct keel_http_server *s)
{
	size_t extra = s->cfg.max_body_size;

	return extra < 1024 * 1024 ? 1024 * 1024 : extra;
}

/* Stores a chunk of the body. 0, or -1 to close the connection. */
static int body_append(struct keel_http_server *s, struct conn_state *st,
		       const char *data, size_t n)
{
	struct keel_http_req *rq = &st->rq;

	if (rq->body_too_large) {
		st->dropped += n;
		return st->dropped > drain_limit(s) ? -1 : 0;
	}
	if (n > s->cfg.max_body_size - rq->body_len) {
		rq->body_too_large = 1;
		st->dropped = rq->body_len + n - s->cfg.max_body_size;
		free(rq->body);
		rq->body = NULL;
		rq->body_len = rq->body_cap = 0;
		return 0;
	}
	if (rq->body_len + n + 1 > rq->body_cap) {
		size_t cap = rq->body_cap ? rq->body_cap : 1024;
		char *nb;

		while (cap < rq->body_len + n + 1)
			cap *= 2;
		nb = realloc(rq->body, cap);
		if (nb == NULL)
			return -1;
		rq->body = nb;
		rq->body_cap = cap;
	}
	memcpy(rq->body + rq->body_len, data, n);
	rq->body_len += n;
	rq->body[rq->body_len] = '\0';
	return 0;
}

/* Finds the route (the router gives HEAD the GET route; this makes sure
 * of it). 404, 405 and OPTIONS are answered at the end of the chain
 * (keel_http_next) from rq->route_status and rq->allow. */
static int route(struct keel_http_server *s, struct keel_http_req *rq)
{
	char allow2[sizeof(rq->allow)];
	int rc, i;

	rq->route = NULL;
	rc = keel__http_router_match(s->cfg.router, rq->method, rq->path, rq,
				     rq->allow, sizeof(rq->allow));
	if (rc == 404 || rc == 405) {
		for (i = 0; i < rq->nparams; i++)
			free(rq->params[i].value);
		rq->nparams = 0;
		rq->route = NULL;
	}
	if (rc == 405 && strcmp(rq->method, "HEAD") == 0) {
		int r2 = keel__http_router_match(s->cfg.router, "GET", rq->path,
						 rq, allow2, sizeof(allow2));
		if (r2 == 200)
			return 200;
		if (r2 < 0)
			return r2;
		for (i = 0; i < rq->nparams; i++)
			free(rq->params[i].value);
		rq->nparams = 0;
		rq->route = NULL;
	}
	return rc;
}

static enum MHD_Result complete(struct keel_http_server *s,
				struct conn_state *st)
{
	struct keel_http_req *rq = &st->rq;
	int rc;

	if (rq->body_too_large)
		return reject(s, st, 413, "the request body is too large");
	if (atomic_load(&s->stopping))
		return reject(s, st, 503, "the server is shutting down");
	if (st->bad_method)
		return reject(s, st, 501, "unknown method");
	rq->started = keel_clock_now(NULL);
	rc = route(s, rq);
	if (rc < 0) {
		keel_http_error(&rq->resp, 500, NULL);
		return send_resp(s, st);
	}
	rq->route_status = rc;
	if (rq->route != NULL && (rq->route->flags & KEEL_HTTP_BLOCKING))
		return offload(s, st);
	run_chain(s, rq);
	return send_resp(s, st);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct keel_http_server *s = cls;
	struct conn_state *st = *con_cls;

	event_thread_enter();
	if (st == NULL)
		return first_call(s, conn, url, method, version, con_cls);
	switch (st->phase) {
	case PH_BODY:
		if (*upload_size != 0) {
			if (body_append(s, st, upload, *upload_size) < 0) {
				atomic_fetch_add(&s->rejected, 1);
				return MHD_NO;
			}
			*upload_size = 0;
			return MHD_YES;
		}
		return complete(s, st);
	case PH_SUSPENDED:
		/* Resumed: by the task with its response, or by stop(),
		 * which gave up on it (then close the connection). */
		if (!atomic_load_explicit(&st->done, memory_order_acquire))
			return MHD_NO;
		return send_resp(s, st);
	case PH_DONE:
	default:
		return MHD_NO;
	}
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct keel_http_server *s = cls;
	struct conn_state *st = *con_cls;

	(void)conn;
	(void)toe;
	if (st == NULL)
		return;
	*con_cls = NULL;
	/* Only a stop waits for active to fall (it sets stopping first, then
	 * checks active under mu): wake it under mu so the wake-up cannot
	 * fall between its check and its wait. */
	atomic_fetch_sub(&s->active, 1);
	if (atomic_load(&s->stopping)) {
		pthread_mutex_lock(&s->mu);
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
	}
	state_unref(st);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decoding of the path and the query arguments, in place. As
 * libmicrohttpd's own, except that "%00" stays as it is: decoded, it would
 * end the C string there, and "/admin%00/public" would reach the router
 * and the handler as "/admin". ('+' in query arguments is turned into a
 * space by libmicrohttpd before this is called.)
 */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *str)
{
	char *r = str, *w = str;

	(void)cls;
	(void)conn;
	while (*r != '\0') {
		int hi, lo;

		if (r[0] == '%' && (hi = hexval(r[1])) >= 0 &&
		    (lo = hexval(r[2])) >= 0 && (hi | lo) != 0) {
			*w++ = (char)(hi << 4 | lo);
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - str);
}

/* libmicrohttpd's messages about a client that went away are routine on
 * a busy server: DEBUG. The rest (bad requests, TLS, limits reached,
 * resources) are WARN. */
static enum keel_log_level mhd_log_level(const char *msg)
{
	static const char *const routine[] = {
		"closed by remote peer", "Connection reset", "Broken pipe",
		"Socket has been disconnected", "timed out",
	};
	size_t i;

	for (i = 0; i < sizeof(routine) / sizeof(routine[0]); i++)
		if (strstr(msg, routine[i]) != NULL)
			return KEEL_LOG_DEBUG;
	return KEEL_LOG_WARN;
}

/* libmicrohttpd's own messages (bad requests, TLS errors, resources). */
KEEL_PRINTF(2, 0)
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct keel_http_server *s = cls;
	char buf[512];
	size_t n;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	keel_log_write(keel__http_logger(s), mhd_log_level(buf), "http", buf,
		       NULL, 0);
}

/* ------------------------------------------------------------------------
 * Start and stop
 * ------------------------------------------------------------------------ */

/* The listening socket is ours, not libmicrohttpd's: bind(2) tells why it
 * failed (EADDRINUSE, EACCES), which MHD_start_daemon does not. */
static int listen_socket(struct keel_http_server *s)
{
	int fd, one = 1, rc;
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);

	fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&s->sa, s->salen) < 0 ||
	    listen(fd, 511) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	s->port = ntohs(sa.ss_family == AF_INET
			    ? ((struct sockaddr_in *)&sa)->sin_port
			    : ((struct sockaddr_in6 *)&sa)->sin6_port);
	s->lfd = fd;
	return 0;
}

static int pool_start(struct keel_http_server *s)
{
	struct keel_pool_config pc;

	if (s->cfg.pool != NULL) {
		s->pool = s->cfg.pool;
		return 0;
	}
	keel_pool_config_init(&pc);
	pc.name = "http";
	pc.min_threads = s->cfg.pool_threads;
	/* Submitting runs on the event thread: a full queue must refuse
	 * (503), never block the thread that serves every connection. */
	pc.when_full = KEEL_POOL_REJECT;
	pc.on_panic = keel_log_task_panic;
	pc.panic_ud = s->lg;
	if (keel_pool_new(&pc, &s->pool) < 0)
		return -ENOMEM;
	s->own_pool = 1;
	return 0;
}

static void pool_stop(struct keel_http_server *s)
{
	if (s->own_pool) {
		keel_pool_shutdown(s->pool, KEEL_POOL_DRAIN, 0);
		keel_pool_free(s->pool);
	}
	s->pool = NULL;
	s->own_pool = 0;
}

static int daemon_start(struct keel_http_server *s)
{
	struct MHD_OptionItem ops[16];
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	unsigned timeout =
	    (unsigned)((s->cfg.idle_timeout + KEEL_SEC - 1) / KEEL_SEC);
	/* libmicrohttpd keeps the request line and headers in a per-
	 * connection pool that also holds a copy of the Cookie header (it
	 * parses the cookies in it), its parsed header list and the
	 * response's header block: twice the limit, so that a cookie as
	 * large as the limit is served, and 2 KiB for the rest. 0.9.75
	 * clears the whole pool after every request, so its size is paid
	 * on every request: measured here, the full middleware chain served
	 * 3 % more small requests with a 24 KiB pool than with 32 KiB, and
	 * 6 % more with 16 KiB; the default (8 KiB of headers) makes 18. */
	size_t mem = 2 * s->cfg.max_header_size + 2048;
	int n = 0;

#define OPT(o, v, p) ops[n++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (p)}
	/* The logger first: libmicrohttpd reports option errors through
	 * whatever logger is set when it meets them. */
	OPT(MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s);
	OPT(MHD_OPTION_LISTEN_SOCKET, s->lfd, NULL);
	OPT(MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections, NULL);
	if (s->cfg.per_ip_connections > 0)
		OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT,
		    s->cfg.per_ip_connections, NULL);
	OPT(MHD_OPTION_CONNECTION_TIMEOUT, timeout, NULL);
	OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem, NULL);
	OPT(MHD_OPTION_NOTIFY_COMPLETED, on_completed, s);
	OPT(MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, NULL);
	if (s->cfg.threads > 1)
		OPT(MHD_OPTION_THREAD_POOL_SIZE, s->cfg.threads, NULL);
	if (s->cert != NULL) {
		flags |= MHD_USE_TLS;
		/* one-pointer options take it in ptr_value */
		OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, s->key);
		OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert);
	}
	OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
	if (s->sa.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->d = MHD_start_daemon(flags, s->port, NULL, NULL, on_request, s,
				MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
	return s->d != NULL ? 0 : -EIO;
}

int keel_http_server_start(struct keel_http_server *s)
{
	int rc;

	if (s == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->stop_mu);
	if (s->state != ST_NEW) {
		pthread_mutex_unlock(&s->stop_mu);
		return -EBUSY;
	}
	if (s->cert != NULL &&
	    MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		pthread_mutex_unlock(&s->stop_mu);
		return -ENOTSUP;
	}
	rc = listen_socket(s);
	if (rc == 0)
		rc = pool_start(s);
	if (rc == 0)
		rc = daemon_start(s);
	if (rc < 0) {
		pool_stop(s);
		if (s->lfd >= 0)
			close(s->lfd);
		s->lfd = -1;
		s->port = 0;
	} else {
		s->state = ST_RUNNING;
	}
	pthread_mutex_unlock(&s->stop_mu);
	return rc;
}

static void deadline_ts(int64_t deadline, struct timespec *ts)
{
	ts->tv_sec = (time_t)(deadline / KEEL_SEC);
	ts->tv_nsec = (long)(deadline % KEEL_SEC);
}

int keel_http_server_stop(struct keel_http_server *s, int64_t timeout)
{
	struct conn_state *st;
	int64_t deadline;
	struct timespec ts;
	int rc = 0;

	if (s == NULL || timeout < 0)
		return -EINVAL;
	pthread_mutex_lock(&s->stop_mu);
	if (s->state != ST_RUNNING) {
		rc = s->state == ST_STOPPED ? s->stop_rc : 0;
		s->state = ST_STOPPED;
		pthread_mutex_unlock(&s->stop_mu);
		return rc;
	}
	atomic_store(&s->stopping, 1);
	/* No new connections, and refused rather than left waiting in the
	 * backlog: shutdown(2) takes a listening socket out of LISTEN. It
	 * is closed only after MHD_stop_daemon, as libmicrohttpd asks (its
	 * threads may still hold the descriptor in their epoll sets). */
	MHD_quiesce_daemon(s->d);
	if (s->lfd >= 0)
		shutdown(s->lfd, SHUT_RDWR);

	deadline =
	    timeout > INT64_MAX - keel_clock_now(NULL) ? INT64_MAX : keel_clock_now(NULL) + timeout;
	deadline_ts(deadline, &ts);
	pthread_mutex_lock(&s->mu);
	while (atomic_load(&s->active) > 0 && keel_clock_now(NULL) < deadline)
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	if (atomic_load(&s->active) > 0)
		rc = -ETIMEDOUT;
	/* What is still on the pool is cut: its connection is resumed
	 * without a response (closed); the task finishes on its own. */
	s->cutting = 1;
	for (st = s->suspended; st != NULL; st = st->next)
		if (!st->cut) {
			st->cut = 1;
			MHD_resume_connection(st->conn);
		}
	pthread_mutex_unlock(&s->mu);

	MHD_stop_daemon(s->d);
	s->d = NULL;
	if (s->lfd >= 0)
		close(s->lfd);
	s->lfd = -1;
	s->state = ST_STOPPED;
	s->stop_rc = rc;
	pthread_mutex_unlock(&s->stop_mu);
	return rc;
}

void keel_http_server_free(struct keel_http_server *s)
{
	if (s == NULL)
		return;
	keel_http_server_stop(s, 10 * KEEL_SEC);
	/* Tasks cut by stop still point at the server: wait for them. */
	pthread_mutex_lock(&s->mu);
	while (s->tasks > 0)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	pool_stop(s);
	server_release(s);
}
