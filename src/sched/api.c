/*
 * src/sched/api.c - keeld's REST API (keel/api.h).
 *
 * Handlers validate their whole input first (path, query, body), then make
 * one scheduler or store call, then answer. Store answers map to statuses
 * in one place (answer_rc): no such job or run is 404, a store that is
 * busy or behind an open breaker is 503, anything else 500.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel/api.h>
#include <keel/cron.h>
#include <keel/job.h>
#include <keel/run.h>


struct keel_api {
	struct keel_api_config cfg;
	char *store_desc;
	int draining;
};

/* The dashboard, embedded at build time from src/sched/dashboard.html. */
extern const char keel__dashboard_html[];
extern const size_t keel__dashboard_html_len;

const char *keel_api_dashboard(size_t *len)
{
	if (len != NULL)
		*len = keel__dashboard_html_len;
	return keel__dashboard_html;
}

/* ---- helpers ------------------------------------------------------------ */

static json_t *id_json(int64_t id)
{
	char buf[24];

	if (id <= 0)
		return json_null();
	snprintf(buf, sizeof(buf), "%lld", (long long)id);
	return json_string(buf);
}

/* Answers a failed scheduler or store call about what (named name, or
 * NULL for a collection). */
static void answer_rc(struct keel_http_resp *rs, int rc, const char *what,
		      const char *name)
{
	switch (rc) {
	case -ENOENT:
		if (name != NULL)
			keel_http_errorf(rs, 404, "%s '%s' not found", what, name);
		else
			keel_http_errorf(rs, 404, "%s not found", what);
		break;
	case -EAGAIN:
	case -EBUSY:
		keel_http_set_header(rs, "Retry-After", "1");
		keel_http_error(rs, 503, "the store is unavailable; retry");
		break;
	case -ENOMEM:
		keel_http_error(rs, 503, "out of memory");
		break;
	default:
		keel_http_errorf(rs, 500, "store error: %s", strerror(-rc));
		break;
	}
}

static void send_json(struct keel_http_resp *rs, int status, json_t *v)
{
	if (v == NULL) {
		keel_http_error(rs, 503, "out of memory");
		return;
	}
	keel_http_json(rs, status, v);
	json_decref(v);
}

/* A positive decimal id; 0 when s is not one. */
static int64_t parse_id(const char *s)
{
	char *end;
	long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return 0;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		return 0;
	return (int64_t)v;
}

/* limit, before and state of a list; answers 400 and returns -1 when one
 * is bad. */
static int list_query(struct keel_http_req *rq, struct keel_http_resp *rs,
		      int *limit, int64_t *before, int *state)
{
	const char *l = keel_http_query(rq, "limit");
	const char *b = keel_http_query(rq, "before");
	const char *st = state != NULL ? keel_http_query(rq, "state") : NULL;

	*limit = 50;
	*before = 0;
	if (l != NULL) {
		int64_t v = parse_id(l);

		if (v < 1 || v > 1000) {
			keel_http_error(rs, 400,
					"limit: must be an integer 1..1000");
			return -1;
		}
		*limit = (int)v;
	}
	if (b != NULL && (*before = parse_id(b)) == 0) {
		keel_http_error(rs, 400, "before: must be a run id");
		return -1;
	}
	if (state != NULL) {
		enum keel_run_state s;

		*state = -1;
		if (st != NULL) {
			if (keel_run_state_parse(st, &s) != 0) {
				keel_http_error(rs, 400,
						"state: must be one of queued, "
						"running, succeeded, failed, "
						"timed_out, crashed, skipped, "
						"canceled");
				return -1;
			}
			*state = (int)s;
		}
	}
	return 0;
}

static json_t *job_view(struct keel_api *a, const struct keel_store_job *sj)
{
	struct keel_store_run_query q;
	struct keel_run *runs = NULL;
	size_t n = 0;
	int64_t next = KEEL_CRON_NEVER;
	int active = 0;
	json_t *v = keel_job_to_json(sj->job);

	if (v == NULL)
		return NULL;
	(void)keel_sched_job_state(a->cfg.sched, sj->job->name, &next, &active);
	json_object_set_new(v, "paused", json_boolean(sj->paused));
	json_object_set_new(v, "next_run_at",
			    next == KEEL_CRON_NEVER ? json_null()
						    : keel_run_time_json(next * 1000));
	json_object_set_new(v, "running", json_integer(active));
	json_object_set_new(v, "created_at", keel_run_time_json(sj->created_at));
	json_object_set_new(v, "updated_at", keel_run_time_json(sj->updated_at));
	memset(&q, 0, sizeof(q));
	q.job = sj->job->name;
	q.limit = 1;
	q.state = -1;
	if (keel_store_run_list(a->cfg.store, &q, &runs, &n) == 0 && n == 1) {
		json_t *r = keel_run_to_json(&runs[0]);

		if (r != NULL)
			json_object_del(r, "output");
		json_object_set_new(v, "last_run", r != NULL ? r : json_null());
	} else {
		json_object_set_new(v, "last_run", json_null());
	}
	keel_store_runs_free(runs, n);
	return v;
}

static void answer_job(struct keel_api *a, struct keel_http_resp *rs,
		       const char *name, int status)
{
	struct keel_store_job sj;
	int rc = keel_store_job_get(a->cfg.store, name, &sj);

	if (rc != 0) {
		answer_rc(rs, rc, "job", name);
		return;
	}
	send_json(rs, status, job_view(a, &sj));
	keel_store_job_clear(&sj);
}

/* ---- /v1/jobs ----------------------------------------------------------- */

/* Read-only fields of a job view, accepted back and ignored. */
static const char *const view_only[] = {
	"paused", "next_run_at", "last_run", "running", "created_at",
	"updated_at", NULL,
};

static void post_job(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	struct keel_api *a = ud;
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	enum keel_store_put res;
	json_t *body;
	int rc;

	if (keel_http_read_json(rq, rs, 1, &body) != 0)
		return;
	for (size_t i = 0; view_only[i] != NULL; i++)
		json_object_del(body, view_only[i]);
	rc = keel_job_from_json(body, &j, err, sizeof(err));
	json_decref(body);
	if (rc == -EINVAL) {
		keel_http_error(rs, 400, err);
		return;
	}
	if (rc != 0) {
		answer_rc(rs, rc, "job", NULL); /* -ENOMEM */
		return;
	}
	rc = keel_sched_job_put(a->cfg.sched, j, &res, err, sizeof(err));
	if (rc == -EINVAL) {
		keel_http_error(rs, 400, err);
	} else if (rc != 0) {
		answer_rc(rs, rc, "job", j->name);
	} else {
		keel_http_set_header(rs, "X-Keel-Result",
				     res == KEEL_STORE_CREATED    ? "created"
				     : res == KEEL_STORE_REPLACED ? "replaced"
								  : "unchanged");
		answer_job(a, rs, j->name, res == KEEL_STORE_CREATED ? 201 : 200);
	}
	keel_job_free(j);
}

static void list_jobs(struct keel_http_req *rq, struct keel_http_resp *rs,
		      void *ud)
{
	struct keel_api *a = ud;
	struct keel_store_job *jobs = NULL;
	size_t n = 0;
	json_t *arr, *o;
	int rc;

	(void)rq;
	rc = keel_store_job_list(a->cfg.store, &jobs, &n);
	if (rc != 0) {
		answer_rc(rs, rc, "jobs", NULL);
		return;
	}
	arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		json_t *v = job_view(a, &jobs[i]);

		if (v == NULL || json_array_append_new(arr, v) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	keel_store_jobs_free(jobs, n);
	o = arr != NULL ? json_pack("{s:o}", "jobs", arr) : NULL;
	send_json(rs, 200, o);
}

static void get_job(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	answer_job(ud, rs, keel_http_param(rq, "name"), 200);
}

static void delete_job(struct keel_http_req *rq, struct keel_http_resp *rs,
		       void *ud)
{
	struct keel_api *a = ud;
	int rc = keel_sched_job_delete(a->cfg.sched, keel_http_param(rq, "name"));

	if (rc != 0) {
		answer_rc(rs, rc, "job", keel_http_param(rq, "name"));
		return;
	}
	keel_http_status(rs, 204);
}

static void run_job(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	struct keel_api *a = ud;
	struct keel_run r;
	int rc;

	memset(&r, 0, sizeof(r));
	rc = keel_sched_run_now(a->cfg.sched, keel_http_param(rq, "name"), &r);
	if (rc != 0) {
		answer_rc(rs, rc, "job", keel_http_param(rq, "name"));
		return;
	}
	send_json(rs, 202, keel_run_to_json(&r));
	keel_run_clear(&r);
}

static void pause_job(struct keel_http_req *rq, struct keel_http_resp *rs,
		      void *ud, int paused)
{
	struct keel_api *a = ud;
	const char *name = keel_http_param(rq, "name");
	int rc = keel_sched_job_pause(a->cfg.sched, name, paused);

	if (rc != 0) {
		answer_rc(rs, rc, "job", name);
		return;
	}
	answer_job(a, rs, name, 200);
}

static void pause(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	pause_job(rq, rs, ud, 1);
}

static void resume(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	pause_job(rq, rs, ud, 0);
}

/* ---- runs --------------------------------------------------------------- */

static void answer_runs(struct keel_api *a, struct keel_http_req *rq,
			struct keel_http_resp *rs, const char *job)
{
	struct keel_store_run_query q;
	struct keel_run *runs = NULL;
	size_t n = 0;
	json_t *arr, *o;
	int rc;

	memset(&q, 0, sizeof(q));
	if (list_query(rq, rs, &q.limit, &q.before_id, &q.state) != 0)
		return;
	if (job != NULL) {
		struct keel_store_job sj;

		rc = keel_store_job_get(a->cfg.store, job, &sj);
		if (rc != 0) {
			answer_rc(rs, rc, "job", keel_http_param(rq, "name"));
			return;
		}
		keel_store_job_clear(&sj);
	}
	q.job = job;
	rc = keel_store_run_list(a->cfg.store, &q, &runs, &n);
	if (rc != 0) {
		answer_rc(rs, rc, "runs", NULL);
		return;
	}
	arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		json_t *v = keel_run_to_json(&runs[i]);

		if (v != NULL)
			json_object_del(v, "output");
		if (v == NULL || json_array_append_new(arr, v) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	o = arr != NULL ? json_pack("{s:o,s:o}", "runs", arr, "next",
				    n == (size_t)q.limit && n > 0
					    ? id_json(runs[n - 1].id)
					    : json_null())
			: NULL;
	keel_store_runs_free(runs, n);
	send_json(rs, 200, o);
}

static void job_runs(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	answer_runs(ud, rq, rs, keel_http_param(rq, "name"));
}

static void all_runs(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	answer_runs(ud, rq, rs, NULL);
}

static void get_run(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	struct keel_api *a = ud;
	int64_t id = parse_id(keel_http_param(rq, "id"));
	struct keel_run r;
	int rc;

	if (id == 0) {
		keel_http_errorf(rs, 404, "run '%s' not found",
				 keel_http_param(rq, "id"));
		return;
	}
	rc = keel_store_run_get(a->cfg.store, id, &r);
	if (rc != 0) {
		answer_rc(rs, rc, "run", keel_http_param(rq, "id"));
		return;
	}
	send_json(rs, 200, keel_run_to_json(&r));
	keel_run_clear(&r);
}

static void cancel_run(struct keel_http_req *rq, struct keel_http_resp *rs,
		       void *ud)
{
	struct keel_api *a = ud;
	int64_t id = parse_id(keel_http_param(rq, "id"));
	struct keel_run r;
	int rc;

	if (id == 0) {
		keel_http_errorf(rs, 404, "run '%s' not found",
				 keel_http_param(rq, "id"));
		return;
	}
	rc = keel_sched_run_cancel(a->cfg.sched, id);
	if (rc == -EALREADY) {
		keel_http_error(rs, 409, "the run has already finished");
		return;
	}
	if (rc != 0 && rc != -EAGAIN) {
		answer_rc(rs, rc, "run", keel_http_param(rq, "id"));
		return;
	}
	rc = keel_store_run_get(a->cfg.store, id, &r);
	if (rc != 0) {
		answer_rc(rs, rc, "run", keel_http_param(rq, "id"));
		return;
	}
	send_json(rs, 200, keel_run_to_json(&r));
	keel_run_clear(&r);
}

/* ---- events, status, health --------------------------------------------- */

static void list_events(struct keel_http_req *rq, struct keel_http_resp *rs,
			void *ud)
{
	struct keel_api *a = ud;
	struct keel_store_event *ev = NULL;
	size_t n = 0;
	int64_t before;
	int limit, rc;
	json_t *arr, *o;

	if (list_query(rq, rs, &limit, &before, NULL) != 0)
		return;
	rc = keel_store_event_list(a->cfg.store, before, limit, &ev, &n);
	if (rc != 0) {
		answer_rc(rs, rc, "events", NULL);
		return;
	}
	arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		json_t *v = json_pack(
			"{s:o,s:o,s:s,s:s,s:o,s:o,s:s}", "id", id_json(ev[i].id),
			"at", keel_run_time_json(ev[i].at), "level",
			ev[i].level ? ev[i].level : "info", "kind",
			ev[i].kind ? ev[i].kind : "", "job",
			ev[i].job ? json_string(ev[i].job) : json_null(),
			"run_id", id_json(ev[i].run_id), "message",
			ev[i].message ? ev[i].message : "");

		if (v == NULL || json_array_append_new(arr, v) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	o = arr != NULL ? json_pack("{s:o,s:o}", "events", arr, "next",
				    n == (size_t)limit && n > 0
					    ? id_json(ev[n - 1].id)
					    : json_null())
			: NULL;
	keel_store_events_free(ev, n);
	send_json(rs, 200, o);
}

static void add_breaker(const char *host, const char *state, void *ud)
{
	json_array_append_new(ud, json_pack("{s:s,s:s}", "host", host, "state",
					    state));
}

static void status(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	struct keel_api *a = ud;
	struct keel_sched_stats st;
	int64_t counts[KEEL_RUN_NSTATES];
	json_t *o, *runs, *br;
	struct timespec now;

	(void)rq;
	keel_sched_stats(a->cfg.sched, &st);
	runs = json_object();
	if (keel_store_run_counts(a->cfg.store, NULL, counts) == 0) {
		for (int i = 0; i < KEEL_RUN_NSTATES; i++)
			json_object_set_new(runs, keel_run_state_name(i),
					    json_integer(counts[i]));
	}
	br = json_array();
	if (a->cfg.exec != NULL)
		keel_exec_breakers(a->cfg.exec, add_breaker, br);
	clock_gettime(CLOCK_REALTIME, &now);
	o = json_pack("{s:s,s:s,s:o,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:b}",
		      "version", KEEL_VERSION_STRING, "node",
		      keel_sched_node(a->cfg.sched), "started_at",
		      keel_run_time_json(st.started_at), "uptime_s",
		      (json_int_t)((int64_t)now.tv_sec - st.started_at / 1000),
		      "store", a->store_desc, "jobs", (json_int_t)st.jobs,
		      "queued", (json_int_t)st.queued, "running",
		      (json_int_t)st.running, "panics_recovered",
		      (json_int_t)st.panics, "unsaved_results",
		      (json_int_t)st.unsaved, "store_errors",
		      (json_int_t)st.store_errors, "breakers", br, "runs", runs,
		      "ready", keel_sched_ready(a->cfg.sched) && !a->draining);
	send_json(rs, 200, o);
}

static json_t *node_json(const struct keel_store_node *n, int leader,
			 int alive)
{
	json_t *tags = json_array();

	for (size_t i = 0; i < n->n_tags; i++)
		json_array_append_new(tags, json_string(n->tags[i]));
	return json_pack("{s:s,s:o,s:o,s:i,s:o,s:b,s:b}", "id", n->id,
			 "last_heartbeat", keel_run_time_json(n->last_heartbeat),
			 "started_at", keel_run_time_json(n->started_at),
			 "running", n->running, "tags", tags, "leader", leader,
			 "alive", alive);
}

/* The leader and every node, as this node saw them at its latest beat
 * (the nodes from the store). Alone (SQLite), this node is the cluster. */
static void cluster(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	struct keel_api *a = ud;
	struct keel_sched_cluster ci;
	struct keel_store_node *nodes = NULL;
	size_t n = 0;
	json_t *o, *arr;
	int rc;

	(void)rq;
	keel_sched_cluster_info(a->cfg.sched, &ci);
	arr = json_array();
	if (!ci.cluster) {
		struct keel_sched_stats st;
		struct keel_store_node self;
		struct timespec now;

		keel_sched_stats(a->cfg.sched, &st);
		clock_gettime(CLOCK_REALTIME, &now);
		memset(&self, 0, sizeof(self));
		self.id = (char *)keel_sched_node(a->cfg.sched);
		self.last_heartbeat = (int64_t)now.tv_sec * 1000 +
				      now.tv_nsec / 1000000;
		self.started_at = st.started_at;
		self.running = (int)st.running;
		json_array_append_new(arr, node_json(&self, 1, 1));
		o = json_pack("{s:s,s:s,s:s,s:I,s:n,s:o}", "mode", "single",
			      "node", self.id, "leader", self.id, "term",
			      (json_int_t)0, "lease_expires_at", "nodes", arr);
		send_json(rs, 200, o);
		return;
	}
	rc = keel_store_node_list(a->cfg.store, 0, &nodes, &n);
	if (rc != 0) {
		json_decref(arr);
		answer_rc(rs, rc, "nodes", NULL);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		/* Alive: it beat within rescue_after of our latest beat. */
		int alive = ci.beat_at > 0 &&
			    ci.beat_at - nodes[i].last_heartbeat < ci.rescue_after;

		json_array_append_new(
			arr, node_json(&nodes[i],
				       ci.holder[0] != '\0' &&
					       strcmp(ci.holder, nodes[i].id) == 0 &&
					       ci.expires_at > ci.beat_at,
				       alive));
	}
	keel_store_nodes_free(nodes, n);
	o = json_pack("{s:s,s:s,s:o,s:I,s:o,s:b,s:I,s:I,s:I,s:I,s:b,s:o}", "mode",
		      "cluster", "node", keel_sched_node(a->cfg.sched), "leader",
		      ci.holder[0] != '\0' && ci.expires_at > ci.beat_at
			      ? json_string(ci.holder)
			      : json_null(),
		      "term", (json_int_t)ci.term, "lease_expires_at",
		      ci.expires_at > 0 ? keel_run_time_json(ci.expires_at)
					: json_null(),
		      "this_node_leads", ci.leader, "skew_ms",
		      (json_int_t)ci.skew, "rescued", (json_int_t)ci.rescued,
		      "elected", (json_int_t)ci.elected, "lost",
		      (json_int_t)ci.lost, "node_conflict", ci.node_conflict,
		      "nodes", arr);
	send_json(rs, 200, o);
}

static void healthz(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_set_header(rs, "Content-Type", "application/json");
	keel_http_printf(rs, "{\"status\":\"ok\"}\n");
}

static void readyz(struct keel_http_req *rq, struct keel_http_resp *rs,
		   void *ud)
{
	struct keel_api *a = ud;

	(void)rq;
	if (__atomic_load_n(&a->draining, __ATOMIC_ACQUIRE)) {
		keel_http_error(rs, 503, "draining: keeld is shutting down");
		return;
	}
	if (!keel_sched_ready(a->cfg.sched)) {
		keel_http_error(rs, 503,
				"not ready: the scheduler is not running or "
				"the store is not taking writes");
		return;
	}
	keel_http_set_header(rs, "Content-Type", "application/json");
	keel_http_printf(rs, "{\"status\":\"ready\"}\n");
}

static void metrics(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	struct keel_api *a = ud;
	char *buf = NULL;
	size_t len = 0;

	(void)rq;
	if (keel_metrics_render(a->cfg.metrics, &buf, &len) != 0) {
		keel_http_error(rs, 503, "out of memory");
		return;
	}
	keel_http_set_header(rs, "Content-Type",
			     "text/plain; version=0.0.4; charset=utf-8");
	keel_http_write(rs, buf, len);
	free(buf);
}

static void dashboard(struct keel_http_req *rq, struct keel_http_resp *rs,
		      void *ud)
{
	size_t len;
	const char *html = keel_api_dashboard(&len);

	(void)rq;
	(void)ud;
	keel_http_set_header(rs, "Content-Type", "text/html; charset=utf-8");
	keel_http_set_header(rs, "Cache-Control", "no-cache");
	keel_http_set_header(rs, "Content-Security-Policy",
			     "default-src 'self'; script-src 'unsafe-inline'; "
			     "style-src 'unsafe-inline'");
	keel_http_write(rs, html, len);
}

/* ---- setup -------------------------------------------------------------- */

int keel_api_new(const struct keel_api_config *cfg, struct keel_http_router *r,
		 struct keel_api **out)
{
	static const struct {
		const char *method, *pattern;
		keel_http_handler_fn fn;
		unsigned flags;
	} routes[] = {
		{ "POST", "/v1/jobs", post_job, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/jobs", list_jobs, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/jobs/{name}", get_job, KEEL_HTTP_BLOCKING },
		{ "DELETE", "/v1/jobs/{name}", delete_job, KEEL_HTTP_BLOCKING },
		{ "POST", "/v1/jobs/{name}/run", run_job, KEEL_HTTP_BLOCKING },
		{ "POST", "/v1/jobs/{name}/pause", pause, KEEL_HTTP_BLOCKING },
		{ "POST", "/v1/jobs/{name}/resume", resume, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/jobs/{name}/runs", job_runs, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/runs", all_runs, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/runs/{id}", get_run, KEEL_HTTP_BLOCKING },
		{ "POST", "/v1/runs/{id}/cancel", cancel_run, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/events", list_events, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/status", status, KEEL_HTTP_BLOCKING },
		{ "GET", "/v1/cluster", cluster, KEEL_HTTP_BLOCKING },
		{ "GET", "/healthz", healthz, 0 },
		{ "GET", "/readyz", readyz, 0 },
		{ "GET", "/", dashboard, 0 },
	};
	struct keel_api *a;
	int rc = 0;

	if (cfg == NULL || r == NULL || out == NULL || cfg->sched == NULL ||
	    cfg->store == NULL)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->cfg = *cfg;
	a->store_desc = strdup(cfg->store_desc != NULL ? cfg->store_desc : "");
	if (a->store_desc == NULL) {
		free(a);
		return -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
		rc = keel_http_route(r, routes[i].method, routes[i].pattern,
				     routes[i].fn, a, routes[i].flags);
	if (rc == 0 && cfg->metrics != NULL)
		rc = keel_http_route(r, "GET", "/metrics", metrics, a, 0);
	if (rc != 0) {
		keel_api_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

void keel_api_free(struct keel_api *api)
{
	if (api == NULL)
		return;
	free(api->store_desc);
	free(api);
}

void keel_api_set_draining(struct keel_api *api)
{
	if (api != NULL)
		__atomic_store_n(&api->draining, 1, __ATOMIC_RELEASE);
}
