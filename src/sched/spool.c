/*
 * src/sched/spool.c - the scheduler's result spool (spool.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "spool.h"

static json_t *run_json(const struct keel_run *r)
{
	char claim[24];
	json_t *o;

	snprintf(claim, sizeof(claim), "%" PRIu64, r->claim);
	o = json_pack("{s:I,s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:i,s:i,s:i,"
		      "s:s,s:s}",
		      "id", (json_int_t)r->id, "job", r->job, "state",
		      keel_run_state_name(r->state), "trigger",
		      keel_run_trigger_name(r->trigger), "attempt", r->attempt,
		      "scheduled_at", (json_int_t)r->scheduled_at, "created_at",
		      (json_int_t)r->created_at, "not_before",
		      (json_int_t)r->not_before, "started_at",
		      (json_int_t)r->started_at, "finished_at",
		      (json_int_t)r->finished_at, "exit_code", r->exit_code,
		      "signal", r->signal, "http_status", r->http_status,
		      "trace_id", r->trace_id, "claim", claim);
	if (o == NULL)
		return NULL;
	if ((r->error != NULL &&
	     json_object_set_new(o, "error", json_string(r->error)) != 0) ||
	    (r->output != NULL &&
	     json_object_set_new(o, "output", json_string(r->output)) != 0) ||
	    (r->node != NULL &&
	     json_object_set_new(o, "node", json_string(r->node)) != 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int opt_str(json_t *o, const char *key, char **out)
{
	json_t *v = json_object_get(o, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -EIO;
	*out = strdup(json_string_value(v));
	return *out != NULL ? 0 : -ENOMEM;
}

static int run_from(json_t *o, struct keel_run *r)
{
	const char *job, *state, *trigger, *trace, *claim;
	json_int_t id, sched, created, nb, started, finished;
	enum keel_run_state st;
	enum keel_run_trigger tr;
	json_error_t je;
	char *end;
	int rc;

	memset(r, 0, sizeof(*r));
	/* error, output and node are optional; they are read below. */
	if (json_unpack_ex(o, &je, 0,
			   "{s:I,s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:i,s:i,"
			   "s:i,s:s,s:s}",
			   "id", &id, "job", &job, "state", &state, "trigger",
			   &trigger, "attempt", &r->attempt, "scheduled_at",
			   &sched, "created_at", &created, "not_before", &nb,
			   "started_at", &started, "finished_at", &finished,
			   "exit_code", &r->exit_code, "signal", &r->signal,
			   "http_status", &r->http_status, "trace_id", &trace,
			   "claim", &claim) != 0)
		return -EIO;
	if (keel_run_state_parse(state, &st) != 0 ||
	    keel_run_trigger_parse(trigger, &tr) != 0 ||
	    strlen(trace) >= sizeof(r->trace_id) || id < 0)
		return -EIO;
	errno = 0;
	r->claim = strtoull(claim, &end, 10);
	if (errno != 0 || end == claim || *end != '\0')
		return -EIO;
	r->id = id;
	r->state = st;
	r->trigger = tr;
	r->scheduled_at = sched;
	r->created_at = created;
	r->not_before = nb;
	r->started_at = started;
	r->finished_at = finished;
	memcpy(r->trace_id, trace, strlen(trace) + 1);
	r->job = strdup(job);
	if (r->job == NULL)
		return -ENOMEM;
	rc = opt_str(o, "error", &r->error);
	if (rc == 0)
		rc = opt_str(o, "output", &r->output);
	if (rc == 0)
		rc = opt_str(o, "node", &r->node);
	return rc;
}

int keel__spool_save(const char *path, const struct keel__spooled *items,
		     size_t n, char *err, size_t errlen)
{
	char tmp[4096];
	json_t *arr;
	char *text;
	size_t len, off = 0;
	int fd, rc = 0;

	if (n == 0) {
		if (unlink(path) != 0 && errno != ENOENT) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		}
		return rc;
	}
	arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		json_t *o = json_object();

		if (o == NULL || json_object_set_new(o, "run",
						     run_json(&items[i].run)) != 0 ||
		    (items[i].has_next &&
		     json_object_set_new(o, "next", run_json(&items[i].next)) != 0) ||
		    json_array_append_new(arr, o) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	text = arr != NULL ? json_dumps(arr, JSON_COMPACT) : NULL;
	json_decref(arr);
	if (text == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	len = strlen(text);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		free(text);
		snprintf(err, errlen, "spool path too long");
		return -ENAMETOOLONG;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
	} else {
		while (rc == 0 && off < len) {
			ssize_t w = write(fd, text + off, len - off);

			if (w < 0 && errno != EINTR)
				rc = -errno;
			else if (w > 0)
				off += (size_t)w;
		}
		if (rc == 0 && fsync(fd) != 0)
			rc = -errno;
		if (close(fd) != 0 && rc == 0)
			rc = -errno;
		if (rc == 0 && rename(tmp, path) != 0)
			rc = -errno;
		if (rc != 0)
			unlink(tmp);
	}
	if (rc != 0)
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
	free(text);
	return rc;
}

int keel__spool_load(const char *path, struct keel__spooled **out, size_t *n,
		     char *err, size_t errlen)
{
	json_error_t je;
	json_t *arr;
	struct keel__spooled *items;
	size_t count;
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (access(path, F_OK) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	arr = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (arr == NULL || !json_is_array(arr)) {
		snprintf(err, errlen, "%s: not a result spool (line %d: %s)",
			 path, je.line, arr == NULL ? je.text : "not an array");
		json_decref(arr);
		return -EIO;
	}
	count = json_array_size(arr);
	items = calloc(count ? count : 1, sizeof(*items));
	if (items == NULL) {
		json_decref(arr);
		return -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < count; i++) {
		json_t *o = json_array_get(arr, i), *next;

		rc = run_from(json_object_get(o, "run"), &items[i].run);
		next = json_object_get(o, "next");
		if (rc == 0 && next != NULL) {
			rc = run_from(next, &items[i].next);
			items[i].has_next = 1;
		}
		if (rc != 0)
			snprintf(err, errlen, "%s: result %zu is not a run",
				 path, i + 1);
	}
	json_decref(arr);
	if (rc != 0) {
		keel__spool_free(items, count);
		return rc;
	}
	*out = items;
	*n = count;
	return 0;
}

void keel__spool_free(struct keel__spooled *items, size_t n)
{
	for (size_t i = 0; items != NULL && i < n; i++) {
		keel_run_clear(&items[i].run);
		keel_run_clear(&items[i].next);
	}
	free(items);
}
