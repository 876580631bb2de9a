/*
 * src/sched/run.c - run states, triggers and the run's JSON (keel/run.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel/run.h>

#include "../obs/json.h"

static const char *const state_names[KEEL_RUN_NSTATES] = {
	"queued", "running", "succeeded", "failed",
	"timed_out", "crashed", "skipped", "canceled",
};

static const char *const trigger_names[] = {
	"schedule", "manual", "retry", "missed",
};
#define NTRIGGERS (sizeof(trigger_names) / sizeof(trigger_names[0]))

const char *keel_run_state_name(enum keel_run_state s)
{
	if ((unsigned)s >= KEEL_RUN_NSTATES)
		return NULL;
	return state_names[s];
}

int keel_run_state_parse(const char *name, enum keel_run_state *out)
{
	if (name == NULL || out == NULL)
		return -EINVAL;
	for (unsigned i = 0; i < KEEL_RUN_NSTATES; i++) {
		if (strcmp(name, state_names[i]) == 0) {
			*out = (enum keel_run_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

int keel_run_state_final(enum keel_run_state s)
{
	return s >= KEEL_RUN_SUCCEEDED && s < KEEL_RUN_NSTATES;
}

const char *keel_run_trigger_name(enum keel_run_trigger t)
{
	if ((unsigned)t >= NTRIGGERS)
		return NULL;
	return trigger_names[t];
}

int keel_run_trigger_parse(const char *name, enum keel_run_trigger *out)
{
	if (name == NULL || out == NULL)
		return -EINVAL;
	for (unsigned i = 0; i < NTRIGGERS; i++) {
		if (strcmp(name, trigger_names[i]) == 0) {
			*out = (enum keel_run_trigger)i;
			return 0;
		}
	}
	return -EINVAL;
}

void keel_run_clear(struct keel_run *r)
{
	if (r == NULL)
		return;
	free(r->job);
	free(r->error);
	free(r->output);
	free(r->node);
	memset(r, 0, sizeof(*r));
}

void keel_run_free(struct keel_run *r)
{
	keel_run_clear(r);
	free(r);
}

json_t *keel_run_time_json(int64_t ms)
{
	struct timespec ts;
	char buf[25];

	if (ms <= 0)
		return json_null();
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	keel__rfc3339(&ts, buf);
	return json_string(buf);
}

static json_t *str_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

json_t *keel_run_to_json(const struct keel_run *r)
{
	char id[24];
	json_t *o;
	int bad = 0;

	if (r == NULL)
		return NULL;
	o = json_object();
	if (o == NULL)
		return NULL;
	snprintf(id, sizeof(id), "%lld", (long long)r->id);
#define SET(k, v) bad |= json_object_set_new(o, (k), (v))
	SET("id", json_string(id));
	SET("job", str_or_null(r->job));
	SET("state", str_or_null(keel_run_state_name(r->state)));
	SET("trigger", str_or_null(keel_run_trigger_name(r->trigger)));
	SET("attempt", json_integer(r->attempt));
	SET("scheduled_at", keel_run_time_json(r->scheduled_at));
	SET("created_at", keel_run_time_json(r->created_at));
	SET("not_before", keel_run_time_json(r->not_before));
	SET("started_at", keel_run_time_json(r->started_at));
	SET("finished_at", keel_run_time_json(r->finished_at));
	SET("duration_ms",
	    r->started_at > 0 && r->finished_at >= r->started_at
		    ? json_integer(r->finished_at - r->started_at)
		    : json_null());
	SET("exit_code", r->exit_code >= 0 ? json_integer(r->exit_code)
					   : json_null());
	SET("signal", r->signal > 0 ? json_integer(r->signal) : json_null());
	SET("http_status", r->http_status > 0 ? json_integer(r->http_status)
					      : json_null());
	SET("error", str_or_null(r->error));
	SET("output", str_or_null(r->output));
	SET("trace_id", r->trace_id[0] != '\0' ? json_string(r->trace_id)
						: json_null());
	SET("node", str_or_null(r->node));
#undef SET
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}
