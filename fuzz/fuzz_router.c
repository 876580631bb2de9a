/*
 * fuzz/fuzz_router.c - the HTTP router on any method and path: matching
 * must never read outside the input or leak, must answer 200, 404 or 405,
 * and a 200 must come with a route and with parameters that are all set.
 * The first byte picks the method, the rest is the (decoded) path.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel/http.h>

#include "http/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void nop(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)rs;
	(void)ud;
}

static struct keel_http_router *router(void)
{
	static const char *const routes[][2] = {
		{ "GET", "/" },
		{ "GET", "/v1/jobs" },
		{ "POST", "/v1/jobs" },
		{ "GET", "/v1/jobs/{name}" },
		{ "DELETE", "/v1/jobs/{name}" },
		{ "POST", "/v1/jobs/{name}/run" },
		{ "GET", "/v1/jobs/{name}/runs" },
		{ "GET", "/v1/runs/{id}" },
		{ "GET", "/static/{path...}" },
		{ "*", "/any/{x}/{y}" },
		{ "GET", "/users/new" },
		{ "GET", "/users/{id}" },
	};
	static struct keel_http_router *r;
	size_t i;

	if (r != NULL)
		return r;
	if (keel_http_router_new(&r) != 0)
		abort();
	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (keel_http_route(r, routes[i][0], routes[i][1], nop, NULL, 0) != 0)
			abort();
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = {
		"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW",
	};
	struct keel_http_req rq;
	char allow[128], *path;
	int rc, i;

	if (size == 0)
		return 0;
	path = malloc(size); /* the rest of the input and a NUL */
	if (path == NULL)
		return 0;
	memcpy(path, data + 1, size - 1);
	path[size - 1] = '\0';
	memset(&rq, 0, sizeof(rq));
	rc = keel__http_router_match(router(), methods[data[0] % 8], path, &rq,
				     allow, sizeof(allow));
	if (rc != 200 && rc != 404 && rc != 405 && rc != -ENOMEM)
		abort();
	if (rc == 200 && rq.route == NULL)
		abort();
	for (i = 0; i < rq.nparams; i++)
		if (rq.params[i].name == NULL || rq.params[i].value == NULL)
			abort();
	keel__http_req_release(&rq);
	free(path);
	return 0;
}
