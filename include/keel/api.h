/*
 * keel/api.h - keeld's REST API (/v1), health, metrics and dashboard on a
 * keel HTTP router. docs/keeld.md ("API") and docs/openapi.yaml describe
 * every endpoint; errors use the standard JSON error body of keel/http.h.
 *
 * The routes read the store and call the scheduler; every /v1 route runs
 * on the server's worker pool (KEEL_HTTP_BLOCKING), since it may wait on
 * the database. Input is validated completely before anything changes: a
 * refused request changes nothing.
 *
 * Thread-safety: the API object is shared by the server's threads.
 */
#ifndef KEEL_API_H
#define KEEL_API_H

#include <keel/common.h>
#include <keel/exec.h>
#include <keel/http.h>
#include <keel/metrics.h>
#include <keel/sched.h>
#include <keel/store.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_api;

struct keel_api_config {
	struct keel_sched *sched;     /* required; not owned */
	struct keel_store *store;     /* required; not owned */
	struct keel_executor *exec;   /* NULL: no breakers shown */
	struct keel_metrics *metrics; /* NULL: GET /metrics answers 404 */
	const char *store_desc;	      /* shown in /v1/status, e.g.
					 "sqlite:/var/lib/keeld" */
};

/*
 * keel_api_new - registers every route on r (before the server starts)
 * and returns the API object, which must outlive the server. 0, -EINVAL,
 * -ENOMEM, -EEXIST (a route taken).
 */
KEEL_API int keel_api_new(const struct keel_api_config *cfg,
			  struct keel_http_router *r, struct keel_api **out);
KEEL_API void keel_api_free(struct keel_api *api);

/* Marks the daemon as draining: /readyz answers 503 from now on. */
KEEL_API void keel_api_set_draining(struct keel_api *api);

/* The dashboard page (a NUL-terminated HTML document) and its length. */
KEEL_API const char *keel_api_dashboard(size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_API_H */
