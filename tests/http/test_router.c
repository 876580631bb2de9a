/*
 * tests/http/test_router.c - the router: pattern validation, matching
 * (literals over parameters, rest parameters, trailing slashes, 404, 405
 * and its Allow list) called directly through keel__http_router_match, then
 * the same through a real server and libcurl (HEAD, OPTIONS, the standard
 * error bodies), and the cost of one match against 50 routes.
 */
/* KEEL_TEST_LABELS: threads */
#define _GNU_SOURCE
#include <keel.h>
#include <keel/http.h>
#include "../../src/http/internal.h"
#include "keel_test.h"
#include "http/http_client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <strings.h>

/* ------------------------------------------------------------------------
 * Direct matching
 * ------------------------------------------------------------------------ */

static void h_a(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)rs;
	(void)ud;
}

static void h_b(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)rs;
	(void)ud;
}

/* One match on a fresh request; the caller frees it with m_free. */
struct m {
	struct keel_http_req *rq;
	int status;
	char allow[128];
};

static struct m m_do(struct keel_http_router *r, const char *method,
		     const char *path)
{
	struct m m;

	memset(&m, 0, sizeof(m));
	m.rq = calloc(1, sizeof(*m.rq));
	CHECK(m.rq != NULL);
	m.status = keel__http_router_match(r, method, path, m.rq, m.allow,
					   sizeof(m.allow));
	return m;
}

static void m_free(struct m *m)
{
	int i;

	for (i = 0; i < m->rq->nparams; i++)
		free(m->rq->params[i].value);
	free(m->rq);
}

static const char *m_param(const struct m *m, const char *name)
{
	int i;

	for (i = 0; i < m->rq->nparams; i++)
		if (strcmp(m->rq->params[i].name, name) == 0)
			return m->rq->params[i].value;
	return NULL;
}

/* Matches and checks status and pattern (NULL: no route). */
#define MATCH(r, meth, path, want_status, want_pattern)                        \
	do {                                                                   \
		struct m m_ = m_do((r), (meth), (path));                       \
		CHECK_INT(m_.status, ==, (want_status));                       \
		if ((want_pattern) == NULL)                                    \
			CHECK(m_.rq->route == NULL);                           \
		else                                                           \
			CHECK_STR(m_.rq->route != NULL ? m_.rq->route->pattern \
						       : NULL,                 \
				  (const char *)(want_pattern));               \
		CHECK_INT(m_.rq->route_status, ==, (want_status));             \
		m_free(&m_);                                                   \
	} while (0)

TEST(route_rejects_bad_input)
{
	struct keel_http_router *r;
	static const char *const bad_methods[] = {
		"", "GE T", "G*", "GET\r", "GET/", "ABCDEFGHIJKLMNOP", "(GET)",
	};
	static const char *const bad_patterns[] = {
		"", "x", "v1/jobs", "//", "/a//b", "/{}", "/{1a}", "/{a-b}",
		"/{a}{b}", "/a{b}", "/a}", "/{a...}/b", "/{a}/{a}",
		"/{a}/{a...}", "/{...}", "/a\nb", "/a\x7f",
		"/{a", "/{a}x",
	};
	char many[512];
	size_t i;
	int off = 0;

	CHECK_INT(keel_http_router_new(NULL), ==, -EINVAL);
	CHECK_INT(keel_http_router_new(&r), ==, 0);
	CHECK_INT(keel_http_route(NULL, "GET", "/", h_a, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_http_route(r, NULL, "/", h_a, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_http_route(r, "GET", NULL, h_a, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_http_route(r, "GET", "/", NULL, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_http_route(r, "GET", "/", h_a, NULL, 0x2), ==, -EINVAL);
	for (i = 0; i < sizeof(bad_methods) / sizeof(bad_methods[0]); i++)
		if (keel_http_route(r, bad_methods[i], "/x", h_a, NULL, 0) !=
		    -EINVAL)
			KEEL_TEST_FAIL("method \"%s\" accepted", bad_methods[i]);
	for (i = 0; i < sizeof(bad_patterns) / sizeof(bad_patterns[0]); i++)
		if (keel_http_route(r, "GET", bad_patterns[i], h_a, NULL, 0) !=
		    -EINVAL)
			KEEL_TEST_FAIL("pattern \"%s\" accepted",
				       bad_patterns[i]);
	/* 17 parameters: one too many. 16 are fine. */
	for (i = 0; i < 17; i++)
		off += snprintf(many + off, sizeof(many) - (size_t)off,
				"/{p%zu}", i);
	CHECK_INT(keel_http_route(r, "GET", many, h_a, NULL, 0), ==, -EINVAL);
	many[strlen(many) - strlen("/{p16}")] = '\0';
	CHECK_INT(keel_http_route(r, "GET", many, h_a, NULL, 0), ==, 0);

	/* Nothing of the refused routes is there. */
	MATCH(r, "GET", "/x", 404, NULL);
	MATCH(r, "GET", "/a/b", 404, NULL);
	MATCH(r, "GET", "/", 404, NULL);
	keel_http_router_free(r);
	keel_http_router_free(NULL);
	keel_test_leak_check();
}

TEST(route_duplicates)
{
	struct keel_http_router *r;

	CHECK_INT(keel_http_router_new(&r), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/jobs/{name}", h_a, NULL, 0), ==, 0);
	/* Same method, same shape (the parameter's name does not count). */
	CHECK_INT(keel_http_route(r, "GET", "/jobs/{id}", h_b, NULL, 0), ==,
		  -EEXIST);
	CHECK_INT(keel_http_route(r, "GET", "/jobs/{name}", h_b, NULL, 0), ==,
		  -EEXIST);
	/* Other methods and "*" on the same shape are separate routes. */
	CHECK_INT(keel_http_route(r, "DELETE", "/jobs/{id}", h_b, NULL, 0), ==,
		  0);
	CHECK_INT(keel_http_route(r, "*", "/jobs/{x}", h_b, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "*", "/jobs/{y}", h_b, NULL, 0), ==,
		  -EEXIST);
	/* A rest parameter is another shape than a parameter. */
	CHECK_INT(keel_http_route(r, "GET", "/jobs/{rest...}", h_b, NULL, 0),
		  ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/jobs/{more...}", h_b, NULL, 0),
		  ==, -EEXIST);
	/* The refused duplicates changed nothing: each name reads its own. */
	{
		struct m m = m_do(r, "GET", "/jobs/nightly");

		CHECK_INT(m.status, ==, 200);
		CHECK(m.rq->route->fn == h_a);
		CHECK_STR(m.rq->route->pattern, "/jobs/{name}");
		CHECK_STR(m_param(&m, "name"), "nightly");
		CHECK(m_param(&m, "id") == NULL);
		m_free(&m);
		m = m_do(r, "DELETE", "/jobs/nightly");
		CHECK_INT(m.status, ==, 200);
		CHECK_STR(m.rq->route->pattern, "/jobs/{id}");
		CHECK_STR(m_param(&m, "id"), "nightly");
		CHECK(m_param(&m, "name") == NULL);
		m_free(&m);
		m = m_do(r, "PATCH", "/jobs/nightly");
		CHECK_INT(m.status, ==, 200);
		CHECK_STR(m.rq->route->pattern, "/jobs/{x}");
		CHECK_STR(m_param(&m, "x"), "nightly");
		m_free(&m);
	}
	keel_http_router_free(r);
	keel_test_leak_check();
}

TEST(match_params_and_rest)
{
	struct keel_http_router *r;
	struct m m;

	CHECK_INT(keel_http_router_new(&r), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/v1/jobs", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/v1/jobs/{name}/runs/{run}", h_a,
				  NULL, KEEL_HTTP_BLOCKING), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/static/{path...}", h_b, NULL, 0),
		  ==, 0);

	MATCH(r, "GET", "/", 200, "/");
	MATCH(r, "GET", "/v1/jobs", 200, "/v1/jobs");
	/* Trailing slash: another path. */
	MATCH(r, "GET", "/v1/jobs/", 404, NULL);
	MATCH(r, "GET", "/v1", 404, NULL);
	MATCH(r, "GET", "/v1/jobs/a/runs", 404, NULL);
	MATCH(r, "GET", "/v1/jobs/a/runs/", 404, NULL); /* {run} non-empty */
	MATCH(r, "GET", "/v1/jobs//runs/7", 404, NULL);
	MATCH(r, "GET", "/v1/jobs/a/runs/7/x", 404, NULL);
	MATCH(r, "GET", "", 404, NULL);
	MATCH(r, "GET", "v1/jobs", 404, NULL);

	m = m_do(r, "GET", "/v1/jobs/night ly%/runs/42");
	CHECK_INT(m.status, ==, 200);
	CHECK_INT(m.rq->nparams, ==, 2);
	CHECK_STR(m_param(&m, "name"), "night ly%");
	CHECK_STR(m_param(&m, "run"), "42");
	CHECK_INT(m.rq->route->flags, ==, KEEL_HTTP_BLOCKING);
	m_free(&m);

	m = m_do(r, "GET", "/static/css/site/main.css");
	CHECK_INT(m.status, ==, 200);
	CHECK(m.rq->route->fn == h_b);
	CHECK_STR(m_param(&m, "path"), "css/site/main.css");
	m_free(&m);
	m = m_do(r, "GET", "/static/");
	CHECK_INT(m.status, ==, 200);
	CHECK_STR(m_param(&m, "path"), "");
	m_free(&m);
	m = m_do(r, "GET", "/static//a/");
	CHECK_INT(m.status, ==, 200);
	CHECK_STR(m_param(&m, "path"), "/a/");
	m_free(&m);
	/* The rest needs its slash. */
	MATCH(r, "GET", "/static", 404, NULL);
	keel_http_router_free(r);
	keel_test_leak_check();
}

static void literals_win(int literal_first)
{
	struct keel_http_router *r;
	struct m m;

	CHECK_INT(keel_http_router_new(&r), ==, 0);
	if (literal_first) {
		CHECK_INT(keel_http_route(r, "GET", "/users/new", h_a, NULL, 0), ==, 0);
		CHECK_INT(keel_http_route(r, "GET", "/users/{id}", h_b, NULL, 0), ==, 0);
		CHECK_INT(keel_http_route(r, "GET", "/users/{rest...}", h_b, NULL, 0), ==, 0);
	} else {
		CHECK_INT(keel_http_route(r, "GET", "/users/{rest...}", h_b, NULL, 0), ==, 0);
		CHECK_INT(keel_http_route(r, "GET", "/users/{id}", h_b, NULL, 0), ==, 0);
		CHECK_INT(keel_http_route(r, "GET", "/users/new", h_a, NULL, 0), ==, 0);
	}
	CHECK_INT(keel_http_route(r, "GET", "/users/{id}/posts", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/users/me/settings", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "POST", "/users/admin", h_a, NULL, 0), ==, 0);

	MATCH(r, "GET", "/users/new", 200, "/users/new");
	MATCH(r, "GET", "/users/17", 200, "/users/{id}");
	MATCH(r, "GET", "/users/17/x", 200, "/users/{rest...}");
	/* The literal branch "me" has no "posts": back up to {id}. */
	m = m_do(r, "GET", "/users/me/posts");
	CHECK_INT(m.status, ==, 200);
	CHECK_STR(m.rq->route->pattern, "/users/{id}/posts");
	CHECK_STR(m_param(&m, "id"), "me");
	CHECK_INT(m.rq->nparams, ==, 1);
	m_free(&m);
	MATCH(r, "GET", "/users/me/settings", 200, "/users/me/settings");
	/* The literal "admin" exists for POST only: GET goes to {id}. */
	MATCH(r, "GET", "/users/admin", 200, "/users/{id}");
	MATCH(r, "POST", "/users/admin", 200, "/users/admin");
	keel_http_router_free(r);
}

TEST(match_literals_win_in_any_order)
{
	literals_win(1);
	literals_win(0);
	keel_test_leak_check();
}

TEST(match_405_allow)
{
	struct keel_http_router *r;
	struct m m;

	CHECK_INT(keel_http_router_new(&r), ==, 0);
	CHECK_INT(keel_http_route(r, "POST", "/jobs/{id}", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/jobs/{id}", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "DELETE", "/jobs/{id}", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "PUT", "/jobs/special", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "PUT", "/files", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "PATCH", "/files", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "OPTIONS", "/custom", h_a, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/custom", h_a, NULL, 0), ==, 0);

	/* HEAD is served by GET's route. */
	MATCH(r, "HEAD", "/jobs/1", 200, "/jobs/{id}");
	MATCH(r, "HEAD", "/files", 405, NULL);

	m = m_do(r, "PATCH", "/jobs/1");
	CHECK_INT(m.status, ==, 405);
	CHECK(m.rq->route == NULL);
	CHECK_INT(m.rq->nparams, ==, 0);
	CHECK_STR(m.allow, "DELETE, GET, HEAD, OPTIONS, POST");
	m_free(&m);
	/* Every pattern the path matches contributes its methods. */
	m = m_do(r, "PATCH", "/jobs/special");
	CHECK_INT(m.status, ==, 405);
	CHECK_STR(m.allow, "DELETE, GET, HEAD, OPTIONS, POST, PUT");
	m_free(&m);
	m = m_do(r, "GET", "/files");
	CHECK_INT(m.status, ==, 405);
	CHECK_STR(m.allow, "OPTIONS, PATCH, PUT");
	m_free(&m);
	/* OPTIONS with no OPTIONS route: 405 and the Allow list, which the
	 * server answers as 204. */
	m = m_do(r, "OPTIONS", "/files");
	CHECK_INT(m.status, ==, 405);
	CHECK_STR(m.allow, "OPTIONS, PATCH, PUT");
	m_free(&m);
	MATCH(r, "OPTIONS", "/custom", 200, "/custom");
	m = m_do(r, "POST", "/custom");
	CHECK_STR(m.allow, "GET, HEAD, OPTIONS");
	m_free(&m);
	/* A 404 leaves Allow empty. */
	m = m_do(r, "GET", "/nothing");
	CHECK_INT(m.status, ==, 404);
	CHECK_STR(m.allow, "");
	m_free(&m);
	/* A small buffer is cut after a whole method. */
	m.rq = calloc(1, sizeof(*m.rq));
	CHECK_INT(keel__http_router_match(r, "PATCH", "/jobs/1", m.rq, m.allow,
					  12), ==, 405);
	CHECK_STR(m.allow, "DELETE, GET");
	m_free(&m);
	keel_http_router_free(r);
	keel_test_leak_check();
}

TEST(match_any_method)
{
	struct keel_http_router *r;

	CHECK_INT(keel_http_router_new(&r), ==, 0);
	CHECK_INT(keel_http_route(r, "*", "/hook", h_b, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/hook", h_a, NULL, 0), ==, 0);
	{
		struct m m = m_do(r, "GET", "/hook");

		CHECK(m.rq->route->fn == h_a); /* exact method first */
		m_free(&m);
		m = m_do(r, "HEAD", "/hook");
		CHECK(m.rq->route->fn == h_a); /* then GET for HEAD */
		m_free(&m);
		m = m_do(r, "BREW", "/hook");
		CHECK_INT(m.status, ==, 200);
		CHECK(m.rq->route->fn == h_b);
		CHECK_STR(m.rq->route->method, "*");
		m_free(&m);
	}
	keel_http_router_free(r);
	keel_test_leak_check();
}

/*
 * Random routers checked against a reference written from the rules, not
 * from the trie: among the patterns that match the path (and have a route
 * usable for the method), the winner is the one whose segment kinds are
 * greatest in order (literal > parameter > rest) at the first place they
 * differ; at one pattern, the exact method, then GET for HEAD, then "*".
 */
#define RND_ROUTES 40

struct rnd_route {
	char method[8];
	char pattern[64];
	int kinds[6]; /* 2 literal, 1 param, 0 rest */
	char lits[6][4];
	int nseg;
	int ok;       /* registered (not a duplicate) */
};

static unsigned rnd_state = 12345;

static unsigned rnd(unsigned n)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 16) % n;
}

/* Splits "/a/b/" into "a", "b", "": returns the count. */
static int split_path(const char *path, char segs[8][8])
{
	int n = 0;
	const char *p = path + 1;

	for (;;) {
		const char *q = strchr(p, '/');
		size_t len = q ? (size_t)(q - p) : strlen(p);

		snprintf(segs[n++], 8, "%.*s", (int)len, p);
		if (q == NULL || n == 8)
			return n;
		p = q + 1;
	}
}

/* Does the shape match the path? Fills vals (joined rest). */
static int ref_match(const struct rnd_route *r, char segs[8][8], int np,
		     char vals[6][64], int *nvals)
{
	int i;

	*nvals = 0;
	for (i = 0; i < r->nseg; i++) {
		if (r->kinds[i] == 0) {
			int j;

			if (i >= np)
				return 0;
			char *v = vals[*nvals];
			size_t len = 0;

			v[0] = '\0';
			for (j = i; j < np; j++)
				len += (size_t)snprintf(v + len, 64 - len, "%s%s",
							j > i ? "/" : "", segs[j]);
			(*nvals)++;
			return 1;
		}
		if (i >= np)
			return 0;
		if (r->kinds[i] == 2 && strcmp(r->lits[i], segs[i]) != 0)
			return 0;
		if (r->kinds[i] == 1) {
			if (segs[i][0] == '\0')
				return 0;
			snprintf(vals[(*nvals)++], 64, "%s", segs[i]);
		}
	}
	return np == r->nseg;
}

static int shape_cmp(const struct rnd_route *a, const struct rnd_route *b)
{
	int i;

	for (i = 0; i < a->nseg && i < b->nseg; i++)
		if (a->kinds[i] != b->kinds[i])
			return a->kinds[i] - b->kinds[i];
	return 0;
}

static int method_rank(const char *rm, const char *m)
{
	if (strcmp(rm, m) == 0)
		return 3;
	if (strcmp(rm, "GET") == 0 && strcmp(m, "HEAD") == 0)
		return 2;
	if (strcmp(rm, "*") == 0)
		return 1;
	return 0;
}

/* The reference Allow: the methods of every matching pattern, HEAD with
 * GET, OPTIONS; sorted (the methods here sort as plain strings). */
static void ref_allow(const struct rnd_route *rr, char segs[8][8], int np,
		      int any, char *out)
{
	static const char *const order[] = { "*", "GET", "HEAD", "OPTIONS",
					     "POST" };
	int has[5] = { 0 }, i, k, nv;
	char vals[6][64];

	out[0] = '\0';
	if (!any)
		return;
	for (i = 0; i < RND_ROUTES; i++) {
		if (!rr[i].ok || !ref_match(&rr[i], segs, np, vals, &nv))
			continue;
		for (k = 0; k < 5; k++)
			if (strcmp(rr[i].method, order[k]) == 0)
				has[k] = 1;
	}
	has[2] |= has[1];
	has[3] = 1;
	for (k = 0; k < 5; k++)
		if (has[k])
			snprintf(out + strlen(out), 128 - strlen(out), "%s%s",
				 out[0] ? ", " : "", order[k]);
}

TEST(match_agrees_with_reference)
{
	static const char *const lits[] = { "a", "b", "c" };
	static const char *const methods[] = { "GET", "POST", "*", "HEAD" };
	static const char *const pseg[] = { "a", "b", "c", "x", "" };
	int round, seen[3] = { 0, 0, 0 };

	for (round = 0; round < 200; round++) {
		struct keel_http_router *r;
		struct rnd_route rr[RND_ROUTES];
		int i, k, q;

		CHECK_INT(keel_http_router_new(&r), ==, 0);
		for (i = 0; i < RND_ROUTES; i++) {
			struct rnd_route *x = &rr[i];
			int off = 0, rc;

			memset(x, 0, sizeof(*x));
			snprintf(x->method, sizeof(x->method), "%s",
				 methods[rnd(4)]);
			x->nseg = 1 + (int)rnd(4);
			for (k = 0; k < x->nseg; k++) {
				int kind = (int)rnd(5) < 3 ? 2 : 1;

				if (k == x->nseg - 1 && rnd(4) == 0)
					kind = 0;
				x->kinds[k] = kind;
				if (kind == 2) {
					snprintf(x->lits[k], 4, "%s", lits[rnd(3)]);
					off += snprintf(x->pattern + off,
							sizeof(x->pattern) - (size_t)off,
							"/%s", x->lits[k]);
				} else {
					off += snprintf(x->pattern + off,
							sizeof(x->pattern) - (size_t)off,
							"/{p%d%s}", k, kind ? "" : "...");
				}
			}
			rc = keel_http_route(r, x->method, x->pattern, h_a, x, 0);
			CHECK(rc == 0 || rc == -EEXIST);
			x->ok = rc == 0;
		}
		for (q = 0; q < 60; q++) {
			char path[64], segs[8][8], vals[6][64], bestvals[6][64];
			const char *m = methods[rnd(4)];
			const struct rnd_route *best = NULL;
			int np, n, nb = 0, bestrank = 0, any = 0, off = 0;
			struct m got;

			if (strcmp(m, "*") == 0)
				m = "DELETE";
			n = 1 + (int)rnd(5);
			for (k = 0; k < n; k++)
				off += snprintf(path + off, sizeof(path) - (size_t)off,
						"/%s", pseg[rnd(5)]);
			np = split_path(path, segs);
			for (i = 0; i < RND_ROUTES; i++) {
				int nv, rank, c;

				if (!rr[i].ok || !ref_match(&rr[i], segs, np, vals, &nv))
					continue;
				any = 1;
				rank = method_rank(rr[i].method, m);
				if (rank == 0)
					continue;
				c = best ? shape_cmp(&rr[i], best) : 1;
				if (c > 0 || (c == 0 && rank > bestrank)) {
					best = &rr[i];
					bestrank = rank;
					memcpy(bestvals, vals, sizeof(vals));
					nb = nv;
				}
			}
			got = m_do(r, m, path);
			if (best == NULL) {
				char allow[128];

				if (got.status != (any ? 405 : 404))
					KEEL_TEST_FAIL("%s %s: %d, want %d", m, path,
						       got.status, any ? 405 : 404);
				ref_allow(rr, segs, np, any, allow);
				CHECK_STR(got.allow, allow);
				seen[any ? 1 : 0]++;
			} else {
				seen[2]++;
				if (got.status != 200 || got.rq->route->ud != best)
					KEEL_TEST_FAIL("%s %s: %d %s, want %s %s", m,
						       path, got.status,
						       got.rq->route ? got.rq->route->pattern : "-",
						       best->method, best->pattern);
				CHECK_INT(got.rq->nparams, ==, nb);
				for (k = 0; k < nb; k++)
					CHECK_STR(got.rq->params[k].value, bestvals[k]);
			}
			m_free(&got);
		}
		keel_http_router_free(r);
	}
	/* Each outcome came up often enough to mean something. */
	printf("  404: %d, 405: %d, 200: %d\n", seen[0], seen[1], seen[2]);
	CHECK(seen[0] > 100 && seen[1] > 500 && seen[2] > 500);
	keel_test_leak_check();
}

/* 50 routes in the shape of a REST API, matched a few million times. */
static const char *const bench_routes[50][2] = {
	{ "GET", "/healthz" }, { "GET", "/readyz" }, { "GET", "/metrics" },
	{ "GET", "/v1/jobs" }, { "POST", "/v1/jobs" },
	{ "GET", "/v1/jobs/{name}" }, { "PUT", "/v1/jobs/{name}" },
	{ "DELETE", "/v1/jobs/{name}" }, { "POST", "/v1/jobs/{name}/run" },
	{ "POST", "/v1/jobs/{name}/pause" }, { "POST", "/v1/jobs/{name}/resume" },
	{ "GET", "/v1/jobs/{name}/runs" }, { "GET", "/v1/jobs/{name}/runs/{run}" },
	{ "GET", "/v1/jobs/{name}/runs/{run}/log" },
	{ "POST", "/v1/jobs/{name}/runs/{run}/cancel" },
	{ "GET", "/v1/nodes" }, { "GET", "/v1/nodes/{id}" },
	{ "POST", "/v1/nodes/{id}/drain" }, { "GET", "/v1/leader" },
	{ "GET", "/v1/users" }, { "POST", "/v1/users" }, { "GET", "/v1/users/me" },
	{ "GET", "/v1/users/{id}" }, { "PATCH", "/v1/users/{id}" },
	{ "DELETE", "/v1/users/{id}" }, { "GET", "/v1/users/{id}/tokens" },
	{ "POST", "/v1/users/{id}/tokens" },
	{ "DELETE", "/v1/users/{id}/tokens/{token}" },
	{ "GET", "/v1/teams" }, { "GET", "/v1/teams/{team}" },
	{ "GET", "/v1/teams/{team}/members" },
	{ "PUT", "/v1/teams/{team}/members/{user}" },
	{ "GET", "/v1/audit" }, { "GET", "/v1/audit/{id}" },
	{ "GET", "/v1/config" }, { "PUT", "/v1/config" },
	{ "GET", "/v1/queues" }, { "GET", "/v1/queues/{q}" },
	{ "POST", "/v1/queues/{q}/purge" }, { "GET", "/v1/queues/{q}/stats" },
	{ "GET", "/v2/jobs" }, { "GET", "/v2/jobs/{name}" },
	{ "GET", "/v2/jobs/{name}/history" }, { "GET", "/v2/events" },
	{ "GET", "/v2/events/{id}" }, { "GET", "/ui/{path...}" },
	{ "GET", "/static/{path...}" }, { "GET", "/debug/pprof" },
	{ "GET", "/debug/vars" }, { "GET", "/favicon.ico" },
};

TEST(match_cost)
{
	static const char *const paths[8][2] = {
		{ "GET", "/v1/jobs/nightly-backup/runs/1234/log" },
		{ "GET", "/healthz" },
		{ "DELETE", "/v1/users/42/tokens/abcdef" },
		{ "GET", "/v1/users/me" },
		{ "GET", "/static/css/app.css" },
		{ "POST", "/v1/queues/default/purge" },
		{ "GET", "/v2/jobs/x/history" },
		{ "GET", "/v1/nope" }, /* 404 */
	};
	struct keel_http_router *r;
	struct keel_http_req *rq = calloc(1, sizeof(*rq));
	char allow[128];
	size_t i;
	long iters = 2000000, k;
	double t0, dt;
	int ok = 0;

	CHECK(rq != NULL);
	CHECK_INT(keel_http_router_new(&r), ==, 0);
	for (i = 0; i < 50; i++)
		CHECK_INT(keel_http_route(r, bench_routes[i][0],
					  bench_routes[i][1], h_a, NULL, 0),
			  ==, 0);
#if defined(KEEL_TEST_ASAN) || defined(KEEL_TEST_TSAN)
	iters = 100000;
#endif
	t0 = keel_test_now();
	for (k = 0; k < iters; k++) {
		const char *const *p = paths[k & 7];
		int st = keel__http_router_match(r, p[0], p[1], rq, allow,
						 sizeof(allow));
		int j;

		ok += st == 200;
		for (j = 0; j < rq->nparams; j++)
			free(rq->params[j].value);
	}
	dt = keel_test_now() - t0;
	CHECK_INT(ok, ==, iters / 8 * 7);
	printf("  %ld matches against 50 routes: %.0f ns/match (params "
	       "copied and freed)\n", iters, dt * 1e9 / (double)iters);
	keel_http_router_free(r);
	free(rq);
}

/* ------------------------------------------------------------------------
 * Through a real server
 * ------------------------------------------------------------------------ */

/* Answers "<pattern> name=<value> rest=<value>". */
static void h_echo(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	const char *n = keel_http_param(rq, "name");
	const char *rest = keel_http_param(rq, "rest");

	(void)ud;
	keel_http_printf(rs, "%s name=%s rest=%s", keel_http_route_pattern(rq),
			 n ? n : "-", rest ? rest : "-");
}

static void check_error(const struct hres *r, int status)
{
	json_decref(check_error_body(r, status));
}

TEST(server_routes)
{
	struct keel_http_router *r;
	struct keel_http_config cfg;
	struct keel_http_server *s;
	struct hres h;
	char buf[256];
	int port;

	CHECK_INT(keel_http_router_new(&r), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/v1/jobs/{name}", h_echo, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "DELETE", "/v1/jobs/{name}", h_echo, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/v1/jobs/new", h_echo, NULL, 0), ==, 0);
	CHECK_INT(keel_http_route(r, "GET", "/files/{rest...}", h_echo, NULL,
				  KEEL_HTTP_BLOCKING), ==, 0);
	keel_http_config_init(&cfg);
	cfg.port = 0;
	cfg.router = r;
	CHECK_INT(keel_http_server_new(&cfg, &s), ==, 0);
	CHECK_INT(keel_http_server_start(s), ==, 0);
	port = keel_http_server_port(s);

	http_req((uint16_t)port, "GET", "/v1/jobs/nightly", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 200);
	CHECK_STR(h.body, "/v1/jobs/{name} name=nightly rest=-");
	/* The router sees the decoded path. */
	http_req((uint16_t)port, "GET", "/v1/jobs/a%20b", NULL, NULL, &h);
	CHECK_STR(h.body, "/v1/jobs/{name} name=a b rest=-");
	http_req((uint16_t)port, "GET", "/v1/jobs/new", NULL, NULL, &h);
	CHECK_STR(h.body, "/v1/jobs/new name=- rest=-");
	http_req((uint16_t)port, "GET", "/files/a/b/c.txt?x=1", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 200);
	CHECK_STR(h.body, "/files/{rest...} name=- rest=a/b/c.txt");
	http_req((uint16_t)port, "GET", "/files/", NULL, NULL, &h);
	CHECK_STR(h.body, "/files/{rest...} name=- rest=");

	/* HEAD goes to GET's route, without a body. */
	http_req((uint16_t)port, "HEAD", "/v1/jobs/x", NULL, NULL, &h);
	CHECK_INT(h.rc, ==, CURLE_OK);
	CHECK_INT(h.status, ==, 200);
	CHECK_INT(h.len, ==, 0);

	/* 404 and trailing slashes. */
	http_req((uint16_t)port, "GET", "/v1/jobs", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 404);
	check_error(&h, 404);
	http_req((uint16_t)port, "GET", "/v1/jobs/x/", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 404);
	http_req((uint16_t)port, "GET", "/files", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 404);

	/* 405 with Allow. */
	http_req((uint16_t)port, "POST", "/v1/jobs/x", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 405);
	check_error(&h, 405);
	CHECK_STR(hres_header_get(&h, "Allow", buf, sizeof(buf)),
		  "DELETE, GET, HEAD, OPTIONS");
	http_req((uint16_t)port, "PUT", "/v1/jobs/new", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 405);
	CHECK_STR(hres_header_get(&h, "Allow", buf, sizeof(buf)),
		  "DELETE, GET, HEAD, OPTIONS");

	/* OPTIONS: 204 with Allow, no body. */
	http_req((uint16_t)port, "OPTIONS", "/files/x", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 204);
	CHECK_STR(hres_header_get(&h, "Allow", buf, sizeof(buf)), "GET, HEAD, OPTIONS");
	CHECK_INT(h.len, ==, 0);
	http_req((uint16_t)port, "OPTIONS", "/nothing", NULL, NULL, &h);
	CHECK_INT(h.status, ==, 404);

	CHECK_INT(keel_http_server_stop(s, 5 * KEEL_SEC), ==, 0);
	keel_http_server_free(s);
	keel_http_router_free(r);
}
