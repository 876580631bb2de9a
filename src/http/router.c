/*
 * src/http/router.c - METHOD + path pattern -> handler (keel/http.h).
 *
 * The routes live in a trie of path segments. A node has its literal
 * children (sorted, found by binary search), at most one parameter child
 * ("{name}": any non-empty segment) and at most one rest child
 * ("{name...}": everything left), and the routes that end there, one per
 * method. Parameter names belong to the routes, not to the nodes, so
 * "GET /jobs/{name}" and "DELETE /jobs/{id}" share their nodes and each
 * reads its own name.
 *
 * Matching walks the decoded path once, segment by segment, without
 * copying or splitting it: at each node it tries the literal child first,
 * then the parameter, then the rest, and backs up when a branch has no
 * route for the method. So literals win over parameters whatever the order
 * of registration, and "GET /users/{id}" still serves GET /users/new when
 * only "POST /users/new" is registered (as Go's ServeMux does). Only when
 * nothing matches does a second walk collect, from every node the path
 * reaches, the methods that would have matched: that is the 405's Allow
 * list, and when there are none the answer is 404. The hot path costs one
 * short comparison per segment and no allocation but the copies of the
 * parameter values.
 *
 * Empty segments: the path is split at every '/', so "/v1/jobs/" is
 * "v1", "jobs", "" and does not match "/v1/jobs"; a pattern may end with
 * '/' to serve exactly that path. "/" alone is the one empty segment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A route with what the router needs beyond the shared struct. */
struct route {
	struct keel__http_route pub; /* first: rq->route points here */
	const char *names[KEEL__HTTP_MAX_PARAMS]; /* into namebuf */
	int nnames;
	char *namebuf;
};

struct node;

struct child {
	char *seg; /* literal segment, NUL-terminated */
	size_t len;
	struct node *node;
};

struct node {
	struct child *lit; /* sorted by (len, bytes) */
	size_t nlit, caplit;
	struct node *param; /* "{name}" */
	struct node *rest;  /* "{name...}": always a leaf */
	struct route **routes;
	size_t nroutes;
};

struct keel_http_router {
	struct node root;
	size_t nroutes;
};

/* ------------------------------------------------------------------------
 * Building
 * ------------------------------------------------------------------------ */

static void route_free(struct route *r)
{
	if (r == NULL)
		return;
	free(r->pub.pattern);
	free(r->namebuf);
	free(r);
}

static void node_release(struct node *n)
{
	size_t i;

	for (i = 0; i < n->nlit; i++) {
		node_release(n->lit[i].node);
		free(n->lit[i].node);
		free(n->lit[i].seg);
	}
	free(n->lit);
	if (n->param != NULL) {
		node_release(n->param);
		free(n->param);
	}
	if (n->rest != NULL) {
		node_release(n->rest);
		free(n->rest);
	}
	for (i = 0; i < n->nroutes; i++)
		route_free(n->routes[i]);
	free(n->routes);
}

int keel_http_router_new(struct keel_http_router **out)
{
	struct keel_http_router *r;

	if (out == NULL)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	*out = r;
	return 0;
}

void keel_http_router_free(struct keel_http_router *r)
{
	if (r == NULL)
		return;
	node_release(&r->root);
	free(r);
}

/* RFC 9110 tchar. */
static int is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int method_valid(const char *m)
{
	size_t i, n;

	if (m == NULL)
		return 0;
	n = strlen(m);
	if (n == 0 || n >= sizeof(((struct keel__http_route *)0)->method))
		return 0;
	if (strcmp(m, "*") == 0)
		return 1;
	for (i = 0; i < n; i++)
		if (!is_tchar((unsigned char)m[i]) || m[i] == '*')
			return 0;
	return 1;
}

static int name_valid(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return 1;
}

/* One parsed segment of a pattern. */
enum seg_kind { SEG_LIT, SEG_PARAM, SEG_REST };

struct seg {
	enum seg_kind kind;
	const char *s; /* literal text, or the parameter's name */
	size_t len;
};

#define MAX_SEGS 256

/*
 * Splits and checks a pattern: it starts with '/'; no empty segment except
 * a last one (a trailing '/'); literals have no '{', '}' or control bytes;
 * a parameter is a whole segment "{name}" with a C-identifier name, used
 * once; "{name...}" only last. Returns the number of segments or -EINVAL.
 */
static int pattern_parse(const char *pat, struct seg *segs, int *nparams)
{
	const char *p;
	int n = 0, np = 0, i;

	if (pat == NULL || pat[0] != '/')
		return -EINVAL;
	p = pat + 1;
	for (;;) {
		const char *q = strchr(p, '/');
		size_t len = q != NULL ? (size_t)(q - p) : strlen(p);
		struct seg *sg;
		size_t k;

		if (n == MAX_SEGS)
			return -EINVAL;
		if (len == 0 && q != NULL)
			return -EINVAL; /* "//": an empty segment inside */
		sg = &segs[n++];
		if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
			sg->s = p + 1;
			sg->len = len - 2;
			sg->kind = SEG_PARAM;
			if (sg->len > 3 &&
			    memcmp(sg->s + sg->len - 3, "...", 3) == 0) {
				sg->len -= 3;
				sg->kind = SEG_REST;
				if (q != NULL)
					return -EINVAL; /* rest not last */
			}
			if (!name_valid(sg->s, sg->len))
				return -EINVAL;
			for (i = 0; i < n - 1; i++)
				if (segs[i].kind != SEG_LIT &&
				    segs[i].len == sg->len &&
				    memcmp(segs[i].s, sg->s, sg->len) == 0)
					return -EINVAL; /* name used twice */
			if (++np > KEEL__HTTP_MAX_PARAMS)
				return -EINVAL;
		} else {
			sg->kind = SEG_LIT;
			sg->s = p;
			sg->len = len;
			for (k = 0; k < len; k++) {
				unsigned char c = (unsigned char)p[k];

				if (c < 0x20 || c == 0x7f || c == '{' ||
				    c == '}')
					return -EINVAL;
			}
		}
		if (q == NULL)
			break;
		p = q + 1;
	}
	*nparams = np;
	return n;
}

static int seg_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return memcmp(a, b, alen);
}

/* The index of the literal child s, or where it would go (*found 0). */
static size_t lit_find(const struct node *n, const char *s, size_t len,
		       int *found)
{
	size_t lo = 0, hi = n->nlit;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = seg_cmp(n->lit[mid].seg, n->lit[mid].len, s, len);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

/*
 * The node for the pattern's segments, made when missing. Nodes made here
 * are left in the trie on a later failure: they are empty, which matching
 * treats as absent, so the router still behaves exactly as before.
 */
static struct node *node_walk_make(struct node *n, const struct seg *segs,
				   int nsegs)
{
	int i;

	for (i = 0; i < nsegs; i++) {
		const struct seg *sg = &segs[i];
		struct node **slot;

		if (sg->kind == SEG_PARAM) {
			slot = &n->param;
		} else if (sg->kind == SEG_REST) {
			slot = &n->rest;
		} else {
			int found;
			size_t at = lit_find(n, sg->s, sg->len, &found);
			struct child c;

			if (found) {
				n = n->lit[at].node;
				continue;
			}
			if (n->nlit == n->caplit) {
				size_t cap = n->caplit ? n->caplit * 2 : 4;
				struct child *nl =
					realloc(n->lit, cap * sizeof(*nl));

				if (nl == NULL)
					return NULL;
				n->lit = nl;
				n->caplit = cap;
			}
			c.len = sg->len;
			c.seg = strndup(sg->s, sg->len);
			c.node = calloc(1, sizeof(*c.node));
			if (c.seg == NULL || c.node == NULL) {
				free(c.seg);
				free(c.node);
				return NULL;
			}
			memmove(&n->lit[at + 1], &n->lit[at],
				(n->nlit - at) * sizeof(n->lit[0]));
			n->lit[at] = c;
			n->nlit++;
			n = c.node;
			continue;
		}
		if (*slot == NULL) {
			*slot = calloc(1, sizeof(**slot));
			if (*slot == NULL)
				return NULL;
		}
		n = *slot;
	}
	return n;
}

/* Route ids: unique for the life of the process, so a cache keyed by one
 * (the metrics middleware's) can never mistake a new route for a freed
 * one that had the same address. */
static atomic_uint_fast64_t last_route_id;

static struct route *route_make(const char *method, const char *pattern,
				const struct seg *segs, int nsegs,
				keel_http_handler_fn fn, void *ud,
				unsigned flags)
{
	struct route *r = calloc(1, sizeof(*r));
	size_t total = 0, off = 0;
	int i;

	if (r == NULL)
		return NULL;
	for (i = 0; i < nsegs; i++)
		if (segs[i].kind != SEG_LIT)
			total += segs[i].len + 1;
	r->pub.pattern = strdup(pattern);
	r->pub.pattern_len = strlen(pattern);
	r->pub.id = atomic_fetch_add(&last_route_id, 1) + 1;
	r->namebuf = malloc(total + 1);
	if (r->pub.pattern == NULL || r->namebuf == NULL) {
		route_free(r);
		return NULL;
	}
	for (i = 0; i < nsegs; i++) {
		if (segs[i].kind == SEG_LIT)
			continue;
		memcpy(r->namebuf + off, segs[i].s, segs[i].len);
		r->namebuf[off + segs[i].len] = '\0';
		r->names[r->nnames++] = r->namebuf + off;
		off += segs[i].len + 1;
	}
	snprintf(r->pub.method, sizeof(r->pub.method), "%s", method);
	r->pub.fn = fn;
	r->pub.ud = ud;
	r->pub.flags = flags;
	return r;
}

int keel_http_route(struct keel_http_router *r, const char *method,
		    const char *pattern, keel_http_handler_fn fn, void *ud,
		    unsigned flags)
{
	struct seg segs[MAX_SEGS];
	struct route *rt, **nr;
	struct node *n;
	int nsegs, np;
	size_t i;

	if (r == NULL || fn == NULL || !method_valid(method) ||
	    (flags & ~(unsigned)KEEL_HTTP_BLOCKING) != 0)
		return -EINVAL;
	nsegs = pattern_parse(pattern, segs, &np);
	if (nsegs < 0)
		return nsegs;
	/* Check for a duplicate before changing anything. */
	n = &r->root;
	for (i = 0; n != NULL && i < (size_t)nsegs; i++) {
		int found;
		size_t at;

		if (segs[i].kind == SEG_PARAM) {
			n = n->param;
		} else if (segs[i].kind == SEG_REST) {
			n = n->rest;
		} else {
			at = lit_find(n, segs[i].s, segs[i].len, &found);
			n = found ? n->lit[at].node : NULL;
		}
	}
	if (n != NULL)
		for (i = 0; i < n->nroutes; i++)
			if (strcmp(n->routes[i]->pub.method, method) == 0)
				return -EEXIST;

	rt = route_make(method, pattern, segs, nsegs, fn, ud, flags);
	if (rt == NULL)
		return -ENOMEM;
	n = node_walk_make(&r->root, segs, nsegs);
	if (n == NULL) {
		route_free(rt);
		return -ENOMEM;
	}
	nr = realloc(n->routes, (n->nroutes + 1) * sizeof(*nr));
	if (nr == NULL) {
		route_free(rt);
		return -ENOMEM;
	}
	n->routes = nr;
	n->routes[n->nroutes++] = rt;
	r->nroutes++;
	return 0;
}

/* ------------------------------------------------------------------------
 * Matching
 * ------------------------------------------------------------------------ */

#define MAX_ALLOW 32

struct walk {
	const char *method;  /* NULL: collect the allowed methods */
	const struct route *found;
	struct {
		const char *s;
		size_t len;
	} vals[KEEL__HTTP_MAX_PARAMS];
	int nvals;
	int reached;         /* some node with routes was reached */
	const char *allow[MAX_ALLOW];
	int nallow;
};

/* The route of a node for a method: exact, then GET for HEAD, then "*". */
static const struct route *node_route(const struct node *n, const char *m)
{
	const struct route *get = NULL, *any = NULL;
	size_t i;

	for (i = 0; i < n->nroutes; i++) {
		const char *rm = n->routes[i]->pub.method;

		if (strcmp(rm, m) == 0)
			return n->routes[i];
		if (rm[0] == '*')
			any = n->routes[i];
		else if (rm[0] == 'G' && strcmp(rm, "GET") == 0)
			get = n->routes[i];
	}
	if (get != NULL && strcmp(m, "HEAD") == 0)
		return get;
	return any;
}

static void allow_add(struct walk *w, const char *m)
{
	int i;

	for (i = 0; i < w->nallow; i++)
		if (strcmp(w->allow[i], m) == 0)
			return;
	if (w->nallow < MAX_ALLOW)
		w->allow[w->nallow++] = m;
}

static int at_end(struct walk *w, const struct node *n)
{
	size_t i;

	if (n->nroutes == 0)
		return 0;
	w->reached = 1;
	if (w->method != NULL) {
		w->found = node_route(n, w->method);
		return w->found != NULL;
	}
	for (i = 0; i < n->nroutes; i++)
		allow_add(w, n->routes[i]->pub.method);
	return 0;
}

/*
 * p: the start of the current segment; done: there is none (the path
 * ended at the previous one). Returns 1 when a route was found (w->found,
 * w->vals hold the parameter values in path order).
 */
static int walk(struct walk *w, const struct node *n, const char *p, int done)
{
	const char *q;
	size_t len;
	int found, nv = w->nvals;

	if (done)
		return at_end(w, n);
	q = strchrnul(p, '/');
	len = (size_t)(q - p);
	if (n->nlit > 0) {
		size_t at = lit_find(n, p, len, &found);

		if (found && walk(w, n->lit[at].node, *q ? q + 1 : q, *q == 0))
			return 1;
	}
	if (n->param != NULL && len > 0 && nv < KEEL__HTTP_MAX_PARAMS) {
		w->vals[nv].s = p;
		w->vals[nv].len = len;
		w->nvals = nv + 1;
		if (walk(w, n->param, *q ? q + 1 : q, *q == 0))
			return 1;
		w->nvals = nv;
	}
	if (n->rest != NULL && nv < KEEL__HTTP_MAX_PARAMS) {
		w->vals[nv].s = p;
		w->vals[nv].len = strlen(p);
		w->nvals = nv + 1;
		if (at_end(w, n->rest))
			return 1;
		w->nvals = nv;
	}
	return 0;
}

static int str_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "GET, HEAD, OPTIONS, POST": sorted, HEAD with GET, OPTIONS always. A
 * list that does not fit is cut after the last method that does. */
static void allow_format(struct walk *w, char *buf, size_t size)
{
	size_t off = 0;
	int i;

	for (i = 0; i < w->nallow; i++)
		if (strcmp(w->allow[i], "GET") == 0)
			allow_add(w, "HEAD");
	allow_add(w, "OPTIONS");
	qsort(w->allow, (size_t)w->nallow, sizeof(w->allow[0]), str_ptr_cmp);
	if (size == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < w->nallow; i++) {
		size_t need = strlen(w->allow[i]) + (off > 0 ? 2 : 0);

		if (off + need >= size)
			break;
		snprintf(buf + off, size - off, "%s%s", off > 0 ? ", " : "",
			 w->allow[i]);
		off += need;
	}
}

int keel__http_router_match(const struct keel_http_router *r,
			    const char *method, const char *path,
			    struct keel_http_req *rq, char *allow,
			    size_t allow_size)
{
	struct walk w;
	int i;

	if (allow != NULL && allow_size > 0)
		allow[0] = '\0';
	rq->route = NULL;
	rq->nparams = 0;
	if (r == NULL || method == NULL || path == NULL || path[0] != '/') {
		rq->route_status = 404;
		return 404;
	}
	w.method = method;
	w.found = NULL;
	w.nvals = 0;
	w.reached = 0;
	w.nallow = 0;
	if (walk(&w, &r->root, path + 1, 0)) {
		for (i = 0; i < w.nvals; i++) {
			char *v = strndup(w.vals[i].s, w.vals[i].len);

			if (v == NULL) {
				while (i-- > 0)
					free(rq->params[i].value);
				return -ENOMEM;
			}
			rq->params[i].name = w.found->names[i];
			rq->params[i].value = v;
		}
		rq->nparams = w.nvals;
		rq->route = &w.found->pub;
		rq->route_status = 200;
		return 200;
	}
	if (!w.reached) {
		rq->route_status = 404;
		return 404;
	}
	w.method = NULL;
	w.nvals = 0;
	walk(&w, &r->root, path + 1, 0);
	if (allow != NULL)
		allow_format(&w, allow, allow_size);
	rq->route_status = 405;
	return 405;
}
