/*
 * keel/http.h - an HTTP server on libmicrohttpd where a crash in a handler
 * is a JSON 500, not a dead process.
 *
 *     struct keel_http_router *rt;
 *     struct keel_http_config cfg;
 *     struct keel_http_server *srv;
 *
 *     keel_http_router_new(&rt);
 *     keel_http_route(rt, "GET", "/v1/jobs/{name}", get_job, db, 0);
 *     keel_http_route(rt, "POST", "/v1/jobs", put_job, db, KEEL_HTTP_BLOCKING);
 *
 *     keel_http_config_init(&cfg);
 *     cfg.port = 8080;
 *     cfg.router = rt;
 *     keel_http_server_new(&cfg, &srv);
 *     keel_http_use(srv, keel_http_mw_recover, NULL);      outermost first
 *     keel_http_use(srv, keel_http_mw_trace, NULL);
 *     keel_http_use(srv, keel_http_mw_access_log, NULL);
 *     keel_http_server_start(srv);
 *     ...
 *     keel_http_server_stop(srv, 10 * KEEL_SEC);             finishes in-flight requests
 *     keel_http_server_free(srv);
 *
 * The model. libmicrohttpd reads and parses requests on its event thread
 * (one epoll thread by default: measured here, it serves more than a pool
 * of polling threads). When a request is complete (headers and body, within
 * the limits), the server finds its route, then runs the middleware chain
 * and the route's handler:
 *
 * - on the event thread for ordinary routes: no hand-off, no allocation
 *   beyond the request's own; such a handler must not block;
 * - on keel's worker pool for routes marked KEEL_HTTP_BLOCKING (database
 *   work, outgoing calls): the connection is suspended, the task runs the
 *   chain, and the connection is resumed with the response, so a slow
 *   handler never stalls the others.
 *
 * Either way the handler runs inside a keel scope set up by the server
 * within libmicrohttpd's callback: a panic or fault never unwinds through
 * libmicrohttpd's frames. The recover middleware turns it into the standard
 * error (500) and logs it; without that middleware the server still answers
 * a bare 500 and goes on.
 *
 * Responses are built in memory and sent when the handler returns. Like
 * Go's WriteHeader, keel_http_write_header commits the status: a panic
 * after that cannot become a 500 any more, so it is logged and the
 * connection is closed without a response.
 *
 * Errors use one JSON body everywhere (keel_http_error):
 *     {"code":404,"message":"Not Found","timestamp":"2026-11-26T10:00:00.123Z",
 *      "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}
 * with an optional "reason" for 4xx answers that have one (a JSON parse
 * error and its position, a missing field).
 *
 * See docs/http.md.
 */
#ifndef KEEL_HTTP_H
#define KEEL_HTTP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <keel/common.h>
#include <keel/log.h>
#include <keel/metrics.h>
#include <keel/policy.h>
#include <keel/pool.h>
#include <keel/trace.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_http_server;
struct keel_http_router;
struct keel_http_req;  /* one request; valid during the handler's call */
struct keel_http_resp; /* its response, built by the handler */

typedef void (*keel_http_handler_fn)(struct keel_http_req *rq,
				     struct keel_http_resp *rs, void *ud);

/* ------------------------------------------------------------------------
 * Middleware: Go's func(next http.Handler) http.Handler, in C
 * ------------------------------------------------------------------------ */

/* The rest of the chain below a middleware. */
struct keel_http_next;

/*
 * A middleware does its work around the call of keel_http_next (or answers
 * by itself and does not call it: auth, body limit). It runs on the thread
 * that runs the request (event thread or pool worker).
 */
typedef void (*keel_http_middleware_fn)(struct keel_http_req *rq,
					struct keel_http_resp *rs,
					const struct keel_http_next *next,
					void *ud);

/* Runs the rest of the chain, then the route's handler. */
KEEL_API void keel_http_next(const struct keel_http_next *next,
			     struct keel_http_req *rq, struct keel_http_resp *rs);

/* ------------------------------------------------------------------------
 * The router
 * ------------------------------------------------------------------------ */

/* Route flags. */
#define KEEL_HTTP_BLOCKING 0x1 /* run on the worker pool, not the event thread */

KEEL_API int keel_http_router_new(struct keel_http_router **out);
KEEL_API void keel_http_router_free(struct keel_http_router *r);

/*
 * keel_http_route - adds METHOD pattern -> fn(rq, rs, ud). method is an
 * HTTP token ("GET", "POST", ...; "*" for any). pattern starts with '/';
 * its segments are literals or "{name}" (one whole segment, matched
 * non-empty, read with keel_http_param) and the last may be "{name...}"
 * (the rest of the path, possibly empty). Literal segments win over
 * parameters at the same place, whatever the order of registration.
 * Returns 0; -EINVAL for a bad method, pattern or flags; -EEXIST when the
 * same method and pattern shape are taken; -ENOMEM. Not while the server
 * runs.
 *
 * A path that matches no pattern is answered 404; one whose pattern exists
 * for other methods is answered 405 with an Allow header (HEAD is allowed
 * wherever GET is, OPTIONS is answered 204 with Allow). Both in the
 * standard error format, through the middleware chain (so they are logged
 * and counted).
 */
KEEL_API int keel_http_route(struct keel_http_router *r, const char *method,
			     const char *pattern, keel_http_handler_fn fn,
			     void *ud, unsigned flags);

/* ------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------ */

struct keel_http_config {
	const char *address;      /* IPv4 or IPv6 literal; default "127.0.0.1" */
	uint16_t port;            /* default 8080; 0: the kernel picks (see
				   * keel_http_server_port) */
	struct keel_http_router *router; /* required; not owned */
	unsigned threads;         /* event threads; default 1 */
	unsigned max_connections; /* default 1024 */
	unsigned per_ip_connections; /* 0 (default): no limit */
	int64_t idle_timeout;     /* a connection silent this long is closed
				   * (slow clients included); default 30 s */
	size_t max_header_size;   /* request line + headers; default 8 KiB;
				   * over it: 431 (far over it, libmicrohttpd's
				   * own answer: see docs/http.md); each
				   * connection holds twice this + 2 KiB */
	size_t max_body_size;     /* default 1 MiB; over it: 413 */
	/* HTTPS when both are set: PEM text (not paths). */
	const char *tls_cert_pem;
	const char *tls_key_pem;
	/* Where KEEL_HTTP_BLOCKING routes run. NULL (default): the server
	 * makes its own pool of pool_threads (default 4) workers, which
	 * answers 503 when its queue is full. A pool given here must outlive
	 * the server and should use KEEL_POOL_REJECT, not BLOCK (a blocking
	 * submit would stall the event thread). */
	struct keel_pool *pool;
	int pool_threads;
	struct keel_logger *logger; /* server's own messages; NULL: default */
};

KEEL_API void keel_http_config_init(struct keel_http_config *cfg);

/* Creates a server (not yet listening). 0; -EINVAL; -ENOMEM. */
KEEL_API int keel_http_server_new(const struct keel_http_config *cfg,
				  struct keel_http_server **out);

/* Appends a middleware (the first added is the outermost). Before start
 * only: -EBUSY after. 0; -EINVAL; -ENOMEM. */
KEEL_API int keel_http_use(struct keel_http_server *s,
			   keel_http_middleware_fn mw, void *ud);

/* Binds and starts serving. 0; -EADDRINUSE, -EACCES, ... (-errno); -EBUSY
 * when called twice; -ENOTSUP for TLS without TLS support; -EIO when
 * libmicrohttpd refuses (a bad TLS key, say). */
KEEL_API int keel_http_server_start(struct keel_http_server *s);

/* The port it listens on (after start), 0 before. */
KEEL_API uint16_t keel_http_server_port(const struct keel_http_server *s);

/*
 * keel_http_server_stop - stops accepting connections, lets the requests
 * in flight finish (their responses are sent) for up to timeout ns, then
 * closes what is left. 0, or -ETIMEDOUT when some had to be cut. Idempotent.
 */
KEEL_API int keel_http_server_stop(struct keel_http_server *s, int64_t timeout);

/* Stops (timeout 10 s) if needed, then frees. NULL is a no-op. */
KEEL_API void keel_http_server_free(struct keel_http_server *s);

struct keel_http_stats {
	uint64_t requests;      /* answered */
	uint64_t offloaded;     /* of which on the pool */
	uint64_t panics;        /* recovered in a handler or middleware */
	uint64_t rejected;      /* refused before a handler: limits, bad requests */
	uint64_t active;        /* in progress now */
};
KEEL_API void keel_http_server_stats(struct keel_http_server *s,
				     struct keel_http_stats *out);

/* ------------------------------------------------------------------------
 * The request
 * ------------------------------------------------------------------------ */

KEEL_API const char *keel_http_method(const struct keel_http_req *rq);
/* The path, percent-decoded, without the query. */
KEEL_API const char *keel_http_path(const struct keel_http_req *rq);
/* The matched route's pattern ("/v1/jobs/{name}"), or NULL when none
 * matched (404/405): the label for metrics. */
KEEL_API const char *keel_http_route_pattern(const struct keel_http_req *rq);
/* A path parameter of the route, or NULL. */
KEEL_API const char *keel_http_param(const struct keel_http_req *rq,
				     const char *name);
/* A query argument (decoded), or NULL; "" for "?flag". */
KEEL_API const char *keel_http_query(const struct keel_http_req *rq,
				     const char *name);
/* A request header (case-insensitive name), or NULL. */
KEEL_API const char *keel_http_header(const struct keel_http_req *rq,
				      const char *name);
/* The body (NUL-terminated for convenience; len may be NULL). */
KEEL_API const char *keel_http_body(const struct keel_http_req *rq, size_t *len);
/* The client's address as text ("127.0.0.1"). */
KEEL_API const char *keel_http_remote_addr(const struct keel_http_req *rq);
/* Monotonic ns when the request was complete (for latency). */
KEEL_API int64_t keel_http_started(const struct keel_http_req *rq);
/* Whether the request runs on the pool (KEEL_HTTP_BLOCKING). */
KEEL_API int keel_http_offloaded(const struct keel_http_req *rq);

/* Values that middleware hands down the chain (an authenticated subject,
 * a request id). key is compared by pointer; value is not owned. Up to 16
 * per request: -ENOSPC beyond. */
KEEL_API int keel_http_set_value(struct keel_http_req *rq, const void *key,
				 void *value);
KEEL_API void *keel_http_value(const struct keel_http_req *rq, const void *key);

/*
 * keel_http_read_json - parses the body as one JSON value (jansson, no
 * duplicate keys). 0 and *out (the caller owns the reference), or -EINVAL
 * after answering 400 with the reason and the position
 * ("reason": "invalid JSON at line 1, column 7: ..."), for an empty or
 * malformed body or, with want_object, a body that is not an object.
 */
KEEL_API int keel_http_read_json(struct keel_http_req *rq,
				 struct keel_http_resp *rs, int want_object,
				 json_t **out);

/* ------------------------------------------------------------------------
 * The response
 * ------------------------------------------------------------------------ */

/* The status to send (default 200). Ignored once committed, and for a value
 * outside 100..999. */
KEEL_API void keel_http_status(struct keel_http_resp *rs, int status);
/* Commits the status like Go's WriteHeader: after it, a panic cannot be
 * turned into a 500 (the connection is closed instead). */
KEEL_API void keel_http_write_header(struct keel_http_resp *rs, int status);
KEEL_API int keel_http_committed(const struct keel_http_resp *rs);
KEEL_API int keel_http_resp_status(const struct keel_http_resp *rs);
/* Body bytes written so far. */
KEEL_API size_t keel_http_resp_size(const struct keel_http_resp *rs);

/* Sets (replaces) a header. Names and values with CR or LF, and a bad
 * name, are -EINVAL. 0; -ENOMEM. */
KEEL_API int keel_http_set_header(struct keel_http_resp *rs, const char *name,
				  const char *value);
KEEL_API const char *keel_http_resp_header(const struct keel_http_resp *rs,
					   const char *name);

/* Appends to the body. 0; -ENOMEM. */
KEEL_API int keel_http_write(struct keel_http_resp *rs, const void *data,
			     size_t len);
KEEL_API int keel_http_printf(struct keel_http_resp *rs, const char *fmt, ...)
	KEEL_PRINTF(2, 3);

/* Sends v (a reference is taken, not stolen) as the body with
 * Content-Type: application/json and the status. 0; -EINVAL (a NULL
 * argument); -EBUSY when committed; -ENOMEM. */
KEEL_API int keel_http_json(struct keel_http_resp *rs, int status,
			    const json_t *v);

/*
 * keel_http_error - replaces an uncommitted response with the standard
 * error body for status: {"code","message","timestamp","trace_id"} and,
 * when reason is not NULL, "reason". message is the status' reason phrase
 * ("Not Found"). Returns 0, -EINVAL for a status outside 100..999, or
 * -EBUSY when already committed.
 */
KEEL_API int keel_http_error(struct keel_http_resp *rs, int status,
			     const char *reason);
KEEL_API int keel_http_errorf(struct keel_http_resp *rs, int status,
			      const char *fmt, ...) KEEL_PRINTF(3, 4);

/* Clears an uncommitted response (status 200, no headers, no body). */
KEEL_API void keel_http_reset(struct keel_http_resp *rs);

/* "Not Found" for 404, ...; "Unknown" for a code it does not know. */
KEEL_API const char *keel_http_reason(int status);

/* ------------------------------------------------------------------------
 * The middleware keel provides (each one piece; use what you need)
 * ------------------------------------------------------------------------ */

/*
 * recover - a panic or fault in anything below it (middleware, handler)
 * becomes a 500 in the standard format, logged with keel_log_panic
 * (message, kind, signal, stack: stacks are captured on every thread that
 * serves) to ud (a struct keel_logger *, NULL: the default logger) with
 * the request's method, path, route and trace id; the thread goes on
 * serving. After a commit, the panic is logged and the connection closed.
 */
KEEL_API void keel_http_mw_recover(struct keel_http_req *rq,
				   struct keel_http_resp *rs,
				   const struct keel_http_next *next, void *ud);

/*
 * trace - takes the W3C traceparent of the request (or starts a trace when
 * there is none or it is invalid), makes a child span the thread's current
 * context for the rest of the chain (so every log line has it), answers
 * with a traceparent header, and takes X-Request-Id (or makes one from the
 * trace id: the traceparent's second field) and echoes it when the request
 * had one (a bad one is answered with the id that replaced it). ud: NULL,
 * or a struct keel_http_trace_options.
 */
struct keel_http_trace_options {
	int always_request_id; /* X-Request-Id on every answer, a made-up
				  one too */
};
KEEL_API void keel_http_mw_trace(struct keel_http_req *rq,
				 struct keel_http_resp *rs,
				 const struct keel_http_next *next, void *ud);
/* The request id set by the trace middleware, or NULL. */
KEEL_API const char *keel_http_request_id(const struct keel_http_req *rq);

/*
 * access_log - one INFO record per request (WARN for 4xx, ERROR for 5xx)
 * to ud (a struct keel_logger *, NULL: default), module "http": method,
 * path, route, status, bytes, duration_ms, remote, request_id (and the
 * trace ids, from the current context). With an asynchronous logger the
 * request only queues the values; the logger's writer thread makes the
 * JSON (keel_log_write_deferred), the same bytes as a synchronous logger
 * writes.
 */
KEEL_API void keel_http_mw_access_log(struct keel_http_req *rq,
				      struct keel_http_resp *rs,
				      const struct keel_http_next *next,
				      void *ud);

/*
 * metrics - http_requests_total{method,route,status} and
 * http_request_duration_seconds{method,route} (histogram) in the registry
 * given to keel_http_metrics_new; requests with no route are labelled
 * route="<unmatched>" (never the raw path: that would be unbounded).
 */
struct keel_http_metrics;
KEEL_API int keel_http_metrics_new(struct keel_metrics *reg,
				   struct keel_http_metrics **out);
KEEL_API void keel_http_metrics_free(struct keel_http_metrics *m);
KEEL_API void keel_http_mw_metrics(struct keel_http_req *rq,
				   struct keel_http_resp *rs,
				   const struct keel_http_next *next,
				   void *ud /* struct keel_http_metrics * */);

/*
 * auth - bearer tokens. ud: a struct keel_http_auth. A request without
 * "Authorization: Bearer <token>" or with a wrong token gets 401 with
 * WWW-Authenticate: Bearer; paths listed in `public` (exact) pass without.
 * Tokens are compared in constant time.
 */
struct keel_http_auth {
	const char *token;             /* required */
	const char *const *public;     /* NULL-terminated; may be NULL */
};
KEEL_API void keel_http_mw_auth(struct keel_http_req *rq,
				struct keel_http_resp *rs,
				const struct keel_http_next *next, void *ud);

/*
 * body_limit - a smaller body limit for what follows than the server's
 * max_body_size: ud is a (size_t *) limit. Over it: 413.
 */
KEEL_API void keel_http_mw_body_limit(struct keel_http_req *rq,
				      struct keel_http_resp *rs,
				      const struct keel_http_next *next,
				      void *ud);

/*
 * policy - runs the rest of the chain through a keel resilience policy
 * (ud: a struct keel_policy *, typically a rate limiter, a bulkhead or a
 * breaker; not owned). A call the policy rejects never reaches the handler
 * and is answered: rate limited (KEEL_ERATE_LIMITED) 429, bulkhead full,
 * breaker open or budget spent 503, each with Retry-After when the policy
 * says when to come back. The policy sees the request fail when the
 * handler answers 5xx (so a breaker opens on a failing backend).
 */
KEEL_API void keel_http_mw_policy(struct keel_http_req *rq,
				  struct keel_http_resp *rs,
				  const struct keel_http_next *next, void *ud);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_HTTP_H */
