/*
 * cmd/keelctl/watch.c - `keelctl watch [NAME]`: a line for every new run
 * and every state change, until Ctrl-C or SIGTERM.
 *
 * The API has no stream, so watch polls once a second. What it must not
 * do is miss things between two polls:
 *   - new runs: run ids grow, so every run with an id above the highest
 *     seen so far is new; the list is paged back (before=) until it
 *     reaches that id, however many runs a second brought;
 *   - state changes: watch keeps the runs it saw queued or running (the
 *     only ones whose state can still change) and asks for each one that
 *     has dropped off the first page by itself.
 * A run that went through several states between two polls shows its
 * latest one. A run that finished and was pruned between two polls is
 * reported gone.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keelctl.h"

#define KC_WATCH_POLL_MS 1000
#define KC_WATCH_PAGE 100
/* Pages per poll: 50,000 new runs in a second is beyond any keeld; past
 * it, the newest are shown and the rest skipped. */
#define KC_WATCH_MAX_PAGES 500

struct kc_active {
	long long id;
	char state[16];
	int seen; /* on a page in this poll */
};

struct kc_watch {
	struct kc *kc;
	const char *name;	  /* NULL = every job */
	long long max_id;	  /* highest run id seen */
	struct kc_active *active; /* queued or running, as last seen */
	size_t n_active, cap_active;
	int down; /* the server did not answer the last poll */
};

static void kc_on_stop(int sig)
{
	(void)sig;
	kc_stop = 1;
}

static long long kc_run_id(const json_t *run)
{
	const char *id = kc_str(run, "id");
	return id != NULL ? atoll(id) : 0;
}

static struct kc_active *kc_active_find(struct kc_watch *w, long long id)
{
	for (size_t i = 0; i < w->n_active; i++)
		if (w->active[i].id == id)
			return &w->active[i];
	return NULL;
}

static void kc_active_drop(struct kc_watch *w, struct kc_active *a)
{
	*a = w->active[--w->n_active];
}

static int kc_active_add(struct kc_watch *w, long long id, const char *state)
{
	if (w->n_active == w->cap_active) {
		size_t cap = w->cap_active != 0 ? w->cap_active * 2 : 64;
		struct kc_active *p = realloc(w->active, cap * sizeof(*p));
		if (p == NULL)
			return kc_err("out of memory");
		w->active = p;
		w->cap_active = cap;
	}
	struct kc_active *a = &w->active[w->n_active++];
	a->id = id;
	snprintf(a->state, sizeof(a->state), "%s", state);
	a->seen = 1;
	return KC_OK;
}

/* The instant of the run's current state, for the line's timestamp. */
static int64_t kc_state_time(const json_t *run, const char *state)
{
	int64_t t = 0;
	if (kc_state_final(state))
		t = kc_time_of(run, "finished_at");
	else if (strcmp(state, "running") == 0)
		t = kc_time_of(run, "started_at");
	if (t == 0)
		t = kc_time_of(run, "created_at");
	return t != 0 ? t : kc_now_ms();
}

static int kc_watch_print(struct kc_watch *w, const json_t *run)
{
	if (w->kc->json) {
		/* One compact object a line: `keelctl watch --json | jq`. */
		if (json_dumpf(run, stdout, JSON_COMPACT) != 0)
			return kc_err("cannot write the output");
		fputc('\n', stdout);
	} else {
		struct kc_buf b = {0};
		char a[32];
		const char *state = kc_str(run, "state");
		kc_buf_printf(
		    &b, "%s  ",
		    kc_time_fmt(kc_state_time(run, state ? state : ""), a,
				sizeof(a)));
		kc_run_line(w->kc, run, &b);
		if (b.failed)
			return kc_err("out of memory");
		enum kc_color c =
		    w->kc->color ? kc_state_color(state) : KC_PLAIN;
		fputs(kc_color_on(c), stdout);
		kc_put_safe(stdout, b.p, b.len);
		fputs(kc_color_off(c), stdout);
		fputc('\n', stdout);
		kc_buf_free(&b);
	}
	fflush(stdout);
	return KC_OK;
}

/* One run from a page: new, changed or nothing to say. */
static int kc_watch_run(struct kc_watch *w, const json_t *run, int initial)
{
	long long id = kc_run_id(run);
	const char *state = kc_str(run, "state");
	int rc = KC_OK;

	if (id <= 0 || state == NULL)
		return KC_OK;
	struct kc_active *a = kc_active_find(w, id);
	if (a != NULL) {
		a->seen = 1;
		if (strcmp(a->state, state) == 0)
			return KC_OK;
		rc = kc_watch_print(w, run);
		if (kc_state_final(state))
			kc_active_drop(w, a);
		else
			snprintf(a->state, sizeof(a->state), "%s", state);
		return rc;
	}
	if (id <= w->max_id && !initial)
		return KC_OK; /* older and final: seen before */
	/* At the start only what is in flight is news. */
	if (initial && kc_state_final(state))
		return KC_OK;
	rc = kc_watch_print(w, run);
	if (rc == KC_OK && !kc_state_final(state))
		rc = kc_active_add(w, id, state);
	return rc;
}

/*
 * GET for watch. Before watching starts (kc->quiet unset) every failure is
 * final, as for any command. While watching, an outage (no answer, 5xx:
 * keeld restarting) is reported once and KC_UNREACHABLE returned so that
 * the next poll tries again; a refusal (401, 404 for the job) ends the
 * watch. gone (may be NULL) is set for a 404 instead of failing.
 */
static int kc_watch_get(struct kc_watch *w, const char *path, struct kc_resp *r,
			int *gone)
{
	struct kc *kc = w->kc;
	int rc = kc_call(kc, "GET", path, NULL, r);

	if (kc_stop)
		return KC_UNREACHABLE;
	if (rc == KC_OK && gone != NULL && r->status == 404) {
		*gone = 1;
		return KC_OK;
	}
	if (kc->quiet && rc == KC_OK && r->status >= 500) {
		snprintf(kc->unreachable, sizeof(kc->unreachable),
			 "%s answers HTTP %ld", kc->server, r->status);
		rc = KC_UNREACHABLE;
	}
	if (kc->quiet && rc == KC_UNREACHABLE) {
		if (!w->down)
			kc_err("%s; still trying", kc->unreachable);
		w->down = 1;
		return rc;
	}
	if (rc == KC_OK)
		rc = kc_check(kc, r, NULL);
	if (rc == KC_OK && w->down) {
		fprintf(stderr, "keelctl: %s answers again\n", kc->server);
		w->down = 0;
	}
	return rc;
}

static void kc_watch_path(struct kc_watch *w, struct kc_buf *b,
			  const char *query)
{
	if (w->name != NULL) {
		kc_buf_puts(b, "/v1/jobs/");
		kc_buf_escape(b, w->name);
		kc_buf_puts(b, "/runs");
	} else {
		kc_buf_puts(b, "/v1/runs");
	}
	kc_buf_puts(b, query);
}

/* The pages of runs newer than max_id (all of them when initial is 0;
 * the first page when it is 1), oldest first, into one array. */
static int kc_watch_pages(struct kc_watch *w, int initial, json_t **out)
{
	json_t *all = json_array();
	char *before = NULL;
	int rc = KC_OK;

	if (all == NULL)
		return kc_err("out of memory");
	for (int page = 0; page < KC_WATCH_MAX_PAGES; page++) {
		struct kc_buf path = {0};
		struct kc_resp r;
		char q[64];

		snprintf(q, sizeof(q), "?limit=%d", KC_WATCH_PAGE);
		kc_watch_path(w, &path, q);
		if (before != NULL) {
			kc_buf_puts(&path, "&before=");
			kc_buf_escape(&path, before);
		}
		if (path.failed) {
			rc = kc_err("out of memory");
			break;
		}
		rc = kc_watch_get(w, path.p, &r, NULL);
		kc_buf_free(&path);
		if (rc != KC_OK) {
			kc_resp_clear(&r);
			break;
		}
		json_t *runs = json_object_get(r.body, "runs");
		size_t i, n = json_array_size(runs);
		json_t *run;
		long long lowest = 0;
		json_array_foreach(runs, i, run)
		{
			/* Newest first on the page; prepend to keep the
			 * whole oldest first. */
			json_array_insert(all, 0, run);
			lowest = kc_run_id(run);
		}
		const char *next = kc_str(r.body, "next");
		free(before);
		before = next != NULL ? strdup(next) : NULL;
		kc_resp_clear(&r);
		if (initial || n == 0 || before == NULL || lowest <= w->max_id)
			break;
	}
	free(before);
	if (rc != KC_OK) {
		json_decref(all);
		return rc;
	}
	*out = all;
	return KC_OK;
}

/* The in-flight runs that were not on this poll's pages: asked one by
 * one. A 404 means the run is gone (its job was removed meanwhile). */
static int kc_watch_stragglers(struct kc_watch *w)
{
	size_t i = 0;

	while (i < w->n_active && !kc_stop) {
		long long id = w->active[i].id;
		struct kc_resp r;
		char path[64];
		int gone = 0;

		if (w->active[i].seen) {
			i++;
			continue;
		}
		snprintf(path, sizeof(path), "/v1/runs/%lld", id);
		int rc = kc_watch_get(w, path, &r, &gone);
		if (rc == KC_OK && gone) {
			if (!w->kc->json)
				printf("run %lld is gone (its job was "
				       "removed)\n",
				       id);
			kc_active_drop(w, &w->active[i]);
		} else if (rc == KC_OK) {
			w->active[i].seen = 1;
			rc = kc_watch_run(w, r.body, 0);
		}
		kc_resp_clear(&r);
		if (rc != KC_OK)
			return rc;
		/* A run that ended was dropped, and the last one moved into
		 * its place: look at index i again. */
		if (i < w->n_active && w->active[i].id == id)
			i++;
	}
	return KC_OK;
}

static int kc_watch_poll(struct kc_watch *w, int initial)
{
	json_t *runs = NULL;
	int rc;

	for (size_t i = 0; i < w->n_active; i++)
		w->active[i].seen = 0;
	rc = kc_watch_pages(w, initial, &runs);
	if (rc != KC_OK)
		return rc;
	size_t i;
	json_t *run;
	long long max = w->max_id;
	json_array_foreach(runs, i, run)
	{
		rc = kc_watch_run(w, run, initial);
		if (rc != KC_OK)
			break;
		if (kc_run_id(run) > max)
			max = kc_run_id(run);
	}
	json_decref(runs);
	w->max_id = max;
	if (rc == KC_OK && !initial)
		rc = kc_watch_stragglers(w);
	return rc;
}

/* In-flight runs older than the first page (a long job behind a busy
 * one) are found with the state filter. */
static int kc_watch_seed(struct kc_watch *w)
{
	static const char *const states[] = {"queued", "running"};

	for (size_t s = 0; s < 2; s++) {
		struct kc_buf path = {0};
		struct kc_resp r;
		char q[64];

		snprintf(q, sizeof(q), "?limit=1000&state=%s", states[s]);
		kc_watch_path(w, &path, q);
		if (path.failed)
			return kc_err("out of memory");
		int rc = kc_watch_get(w, path.p, &r, NULL);
		kc_buf_free(&path);
		if (rc == KC_OK) {
			json_t *runs = json_object_get(r.body, "runs");
			for (size_t i = json_array_size(runs);
			     i-- > 0 && rc == KC_OK;)
				rc =
				    kc_watch_run(w, json_array_get(runs, i), 1);
		}
		kc_resp_clear(&r);
		if (rc != KC_OK)
			return rc;
	}
	return KC_OK;
}

static void kc_sleep_until_stop(long ms)
{
	/* In slices, so a signal between the flag check and nanosleep
	 * costs at most one slice. */
	for (long left = ms; left > 0 && !kc_stop; left -= 100) {
		struct timespec ts = {0, (left < 100 ? left : 100) * 1000000L};
		nanosleep(&ts, NULL);
	}
}

int kc_cmd_watch(struct kc *kc, const char *name)
{
	struct kc_watch w = {.kc = kc, .name = name};
	struct sigaction sa;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kc_on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	/* The first poll must answer: a wrong URL, token or job name is an
	 * error now, not a message repeated every second. */
	rc = kc_watch_poll(&w, 1);
	if (rc == KC_OK)
		rc = kc_watch_seed(&w);
	if (rc != KC_OK) {
		free(w.active);
		return kc_stop ? KC_OK : rc;
	}
	if (!kc->json)
		fprintf(stderr, "watching runs of %s%s (Ctrl-C to stop)\n",
			name != NULL ? "job " : "all jobs",
			name != NULL ? name : "");
	kc->quiet = 1;
	while (!kc_stop) {
		kc_sleep_until_stop(KC_WATCH_POLL_MS);
		if (kc_stop)
			break;
		rc = kc_watch_poll(&w, 0);
		if (rc == KC_UNREACHABLE)
			continue; /* reported once; keeld may be restarting */
		if (rc != KC_OK)
			break;
	}
	free(w.active);
	if (kc_stop)
		return KC_OK;
	return rc;
}
