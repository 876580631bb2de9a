/*
 * src/http/internal.h - what the http modules share: the request and
 * response as they really are, the route, and the calls between server.c,
 * router.c, request.c, response.c and middleware.c. Not installed.
 */
#ifndef KEEL_HTTP_INTERNAL_H
#define KEEL_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/http.h>

#define KEEL__HTTP_MAX_PARAMS 16
#define KEEL__HTTP_MAX_VALUES 16

/* A route, as the router keeps it. */
struct keel__http_route {
	char method[16];         /* "GET", ..., "*" */
	char *pattern;           /* as registered: the metrics label */
	keel_http_handler_fn fn;
	void *ud;
	unsigned flags;          /* KEEL_HTTP_BLOCKING */
	size_t pattern_len;
	uint64_t id; /* from the router: never 0, never reused in
		      * the process (the metrics middleware's
		      * cache key; 0: a route made by hand, not
		      * cached) */
};

/* One response header. Its strings live in the response's arena, or on
 * the heap (own_*) when the arena is full; a name of keel's own may be a
 * literal. */
struct keel__http_header {
	char *name;
	char *value;
	unsigned char own_name, own_value;
	uint16_t name_len; /* UINT16_MAX: that long or longer */
};

#define KEEL__HTTP_INLINE_HEADERS 8
#define KEEL__HTTP_ARENA 384

struct keel_http_resp {
	int status;              /* default 200 */
	int committed;           /* keel_http_write_header was called */
	int abort;               /* close the connection without a response
				  * (a panic after the commit) */
	struct keel__http_header *headers; /* hinline, or the heap when more */
	size_t nheaders, cap_headers;
	/* The usual few headers need no allocation at all: the array and
	 * their strings are here (a request is 5 mallocs cheaper). */
	struct keel__http_header hinline[KEEL__HTTP_INLINE_HEADERS];
	size_t arena_used;
	char arena[KEEL__HTTP_ARENA];
	char *body;
	size_t len, cap;
};

/* A request header or query argument, copied when the request leaves the
 * event thread (a suspended connection's own lists are not read from
 * another thread). */
struct keel__http_kv {
	char *name;
	char *value;
};

struct keel_http_req {
	struct keel_http_server *srv;
	struct MHD_Connection *conn;     /* NULL once copied for the pool */
	char method[16];
	size_t method_len;
	char *path;                      /* decoded: path_inline, or owned */
	size_t path_len;
	char path_inline[128];
	const struct keel__http_route *route; /* NULL: 404/405 */
	int route_status;                /* 200, 404, 405 (from the router) */
	char allow[128];                 /* 405 / OPTIONS: the Allow list */
	struct {
		const char *name;        /* points into the route's pattern */
		char *value;             /* owned */
	} params[KEEL__HTTP_MAX_PARAMS];
	int nparams;
	/* Copies of the headers and query (offloaded requests only). */
	struct keel__http_kv *headers, *query;
	size_t nheaders, nquery;
	char *body;                      /* NUL-terminated, owned */
	size_t body_len, body_cap;
	int body_too_large;              /* more than max_body_size arrived */
	char remote[64];                 /* "" until asked for */
	size_t remote_len;
	int64_t started;                 /* monotonic ns */
	int64_t finished;                /* monotonic ns, 0 until read (once,
					  * by metrics or access_log) */
	int offloaded;
	struct {
		const void *key;
		void *value;
	} values[KEEL__HTTP_MAX_VALUES];
	int nvalues;
	char request_id[72];
	size_t request_id_len;
	int echo_request_id; /* the answer carries X-Request-Id (trace) */
	/* The trace middleware's request headers, found by the server's one
	 * pass over the headers (NULL: absent). They point into the
	 * connection's memory, or into the copies once detached. */
	const char *h_traceparent, *h_request_id;
	/* Where the trace middleware leaves the request's trace context for
	 * the recover middleware outside it (middleware.c); NULL: no recover
	 * is running. */
	void *trace_slot;
	struct keel_http_resp resp;
};

/* The chain position handed to a middleware. */
struct keel__http_mw {
	keel_http_middleware_fn fn;
	void *ud;
};

struct keel_http_next {
	const struct keel__http_mw *mws;
	size_t i, n;                     /* next to run: mws[i] (i == n: handler) */
};

/*
 * Router (router.c). keel__http_router_match finds the route for method and
 * decoded path, filling rq->route and rq->params (values copied). Returns
 * 200 when found, 404 when no pattern matches, 405 when patterns match for
 * other methods only (then *allow gets "GET, HEAD, POST", a static-size
 * buffer of allow_size bytes), or -ENOMEM. OPTIONS on a known path is
 * answered by the caller as 204 with Allow.
 */
KEEL_API int keel__http_router_match(const struct keel_http_router *r,
			    const char *method, const char *path,
			    struct keel_http_req *rq, char *allow,
			    size_t allow_size);

/* Response (response.c): the parts server.c needs. Exported (KEEL_API)
 * only so that tests/http/test_response.c can build a response without a
 * server; not part of the public API. */
KEEL_API void keel__http_resp_init(struct keel_http_resp *rs);
KEEL_API void keel__http_resp_release(struct keel_http_resp *rs);
/* keel_http_printf with a va_list. */
int keel__http_vprintf(struct keel_http_resp *rs, const char *fmt, va_list ap)
	KEEL_PRINTF(2, 0);
/* keel_http_set_header for a name (nlen bytes) and a value (vlen bytes)
 * known to be valid, keel's own (the trace middleware's): without the
 * checks, and the name, which must outlive the response (a literal), is
 * not copied. 0 or -ENOMEM. */
int keel__http_set_header_checked(struct keel_http_resp *rs, const char *name,
				  size_t nlen, const char *value, size_t vlen);
/* 1 when s is a non-empty RFC 9110 token (header names, methods). */
int keel__http_token(const char *s);

/* Request (request.c): frees what the request owns (not the struct). */
void keel__http_req_release(struct keel_http_req *rq);
/* Copies headers and query from the connection, for a request that will
 * run on another thread. 0 or -ENOMEM. */
int keel__http_req_detach(struct keel_http_req *rq);

/* The client's address as text into buf ("unknown" when it has none);
 * returns its length. */
struct MHD_Connection;
size_t keel__http_remote_addr(struct MHD_Connection *conn, char *buf,
			      size_t len);

/* Server (server.c): counts a panic that a middleware (recover) stopped
 * before it reached the server's own scope, for keel_http_stats.panics.
 * Safe from any thread; s may be NULL. */
void keel__http_count_panic(struct keel_http_server *s);
/* The logger the server writes its own records to (never NULL). */
struct keel_logger *keel__http_logger(const struct keel_http_server *s);

#endif /* KEEL_HTTP_INTERNAL_H */
