/*
 * src/http/request.c - what a handler reads from its request.
 *
 * On the event thread the headers and query arguments are read from
 * libmicrohttpd's connection (no copy). A request offloaded to the pool
 * reads copies made before the connection was suspended: libmicrohttpd
 * does not promise that a suspended connection's lists may be read from
 * another thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "internal.h"

const char *keel_http_method(const struct keel_http_req *rq)
{
	return rq != NULL ? rq->method : NULL;
}

const char *keel_http_path(const struct keel_http_req *rq)
{
	return rq != NULL ? rq->path : NULL;
}

const char *keel_http_route_pattern(const struct keel_http_req *rq)
{
	return rq != NULL && rq->route != NULL ? rq->route->pattern : NULL;
}

const char *keel_http_param(const struct keel_http_req *rq, const char *name)
{
	int i;

	if (rq == NULL || name == NULL)
		return NULL;
	for (i = 0; i < rq->nparams; i++)
		if (rq->params[i].name != NULL &&
		    strcmp(rq->params[i].name, name) == 0)
			return rq->params[i].value;
	return NULL;
}

static const char *kv_find(const struct keel__http_kv *kv, size_t n,
			   const char *name, int nocase)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (nocase ? strcasecmp(kv[i].name, name) == 0
			   : strcmp(kv[i].name, name) == 0)
			return kv[i].value;
	return NULL;
}

const char *keel_http_query(const struct keel_http_req *rq, const char *name)
{
	const char *v;

	if (rq == NULL || name == NULL)
		return NULL;
	if (rq->conn == NULL)
		return kv_find(rq->query, rq->nquery, name, 0);
	v = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
	/* "?flag" is a key without a value: MHD gives NULL for both that
	 * and a missing key; tell them apart. */
	if (v == NULL &&
	    MHD_lookup_connection_value_n(rq->conn, MHD_GET_ARGUMENT_KIND, name,
					  strlen(name), &v, NULL) == MHD_YES)
		return v != NULL ? v : "";
	return v;
}

const char *keel_http_header(const struct keel_http_req *rq, const char *name)
{
	if (rq == NULL || name == NULL)
		return NULL;
	if (rq->conn == NULL)
		return kv_find(rq->headers, rq->nheaders, name, 1);
	return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *keel_http_body(const struct keel_http_req *rq, size_t *len)
{
	if (len != NULL)
		*len = rq != NULL ? rq->body_len : 0;
	if (rq == NULL)
		return NULL;
	return rq->body != NULL ? rq->body : "";
}

const char *keel_http_remote_addr(const struct keel_http_req *rq)
{
	struct keel_http_req *w = (struct keel_http_req *)rq;

	if (rq == NULL)
		return NULL;
	/* Formatted on first use: most requests never ask. Once the request
	 * has left the event thread it was formatted by detach. */
	if (w->remote[0] == '\0' && w->conn != NULL)
		w->remote_len = keel__http_remote_addr(w->conn, w->remote,
						       sizeof(w->remote));
	return rq->remote;
}

int64_t keel_http_started(const struct keel_http_req *rq)
{
	return rq != NULL ? rq->started : 0;
}

int keel_http_offloaded(const struct keel_http_req *rq)
{
	return rq != NULL && rq->offloaded;
}

int keel_http_set_value(struct keel_http_req *rq, const void *key, void *value)
{
	int i;

	if (rq == NULL || key == NULL)
		return -EINVAL;
	for (i = 0; i < rq->nvalues; i++)
		if (rq->values[i].key == key) {
			rq->values[i].value = value;
			return 0;
		}
	if (rq->nvalues == KEEL__HTTP_MAX_VALUES)
		return -ENOSPC;
	rq->values[rq->nvalues].key = key;
	rq->values[rq->nvalues].value = value;
	rq->nvalues++;
	return 0;
}

void *keel_http_value(const struct keel_http_req *rq, const void *key)
{
	int i;

	if (rq == NULL || key == NULL)
		return NULL;
	for (i = 0; i < rq->nvalues; i++)
		if (rq->values[i].key == key)
			return rq->values[i].value;
	return NULL;
}

static void kv_free(struct keel__http_kv *kv, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(kv[i].name);
		free(kv[i].value);
	}
	free(kv);
}

void keel__http_req_release(struct keel_http_req *rq)
{
	int i;

	if (rq == NULL)
		return;
	for (i = 0; i < rq->nparams; i++)
		free(rq->params[i].value);
	rq->nparams = 0;
	kv_free(rq->headers, rq->nheaders);
	kv_free(rq->query, rq->nquery);
	rq->headers = rq->query = NULL;
	rq->nheaders = rq->nquery = 0;
	if (rq->path != rq->path_inline)
		free(rq->path);
	free(rq->body);
	rq->path = rq->body = NULL;
	rq->body_len = rq->body_cap = 0;
	keel__http_resp_release(&rq->resp);
}

/* Copying: one pass counts, one pass copies (MHD iterates in order). */
struct kv_copy {
	struct keel__http_kv *kv;
	size_t n, cap;
	int failed;
};

static enum MHD_Result kv_count(void *cls, enum MHD_ValueKind kind,
				const char *key, const char *value)
{
	(void)kind;
	(void)key;
	(void)value;
	((struct kv_copy *)cls)->cap++;
	return MHD_YES;
}

static enum MHD_Result kv_take(void *cls, enum MHD_ValueKind kind,
			       const char *key, const char *value)
{
	struct kv_copy *c = cls;
	struct keel__http_kv *e;

	(void)kind;
	if (c->n == c->cap || key == NULL)
		return MHD_YES;
	e = &c->kv[c->n];
	e->name = strdup(key);
	e->value = strdup(value != NULL ? value : "");
	if (e->name == NULL || e->value == NULL) {
		free(e->name);
		free(e->value);
		c->failed = 1;
		return MHD_NO;
	}
	c->n++;
	return MHD_YES;
}

static int copy_kind(struct MHD_Connection *conn, enum MHD_ValueKind kind,
		     struct keel__http_kv **out, size_t *n)
{
	struct kv_copy c = {0};

	MHD_get_connection_values(conn, kind, kv_count, &c);
	if (c.cap == 0)
		return 0;
	c.kv = calloc(c.cap, sizeof(*c.kv));
	if (c.kv == NULL)
		return -ENOMEM;
	MHD_get_connection_values(conn, kind, kv_take, &c);
	if (c.failed) {
		kv_free(c.kv, c.n);
		return -ENOMEM;
	}
	*out = c.kv;
	*n = c.n;
	return 0;
}

int keel__http_req_detach(struct keel_http_req *rq)
{
	struct keel__http_kv *h = NULL, *q = NULL;
	size_t nh = 0, nq = 0;

	if (rq->conn == NULL)
		return 0;
	if (rq->remote[0] == '\0')
		rq->remote_len = keel__http_remote_addr(rq->conn, rq->remote,
							sizeof(rq->remote));
	if (copy_kind(rq->conn, MHD_HEADER_KIND, &h, &nh) < 0)
		return -ENOMEM;
	if (copy_kind(rq->conn, MHD_GET_ARGUMENT_KIND, &q, &nq) < 0) {
		kv_free(h, nh);
		return -ENOMEM;
	}
	rq->headers = h;
	rq->nheaders = nh;
	rq->query = q;
	rq->nquery = nq;
	rq->conn = NULL;
	/* The same headers, from the copies: the connection's memory is not
	 * read from another thread. */
	if (rq->h_traceparent != NULL)
		rq->h_traceparent = kv_find(h, nh, "traceparent", 1);
	if (rq->h_request_id != NULL)
		rq->h_request_id = kv_find(h, nh, "X-Request-Id", 1);
	return 0;
}
