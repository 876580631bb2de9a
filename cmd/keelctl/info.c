/*
 * cmd/keelctl/info.c - the daemon's side: events and status.
 */
#define _GNU_SOURCE
#include <string.h>

#include "keelctl.h"

int kc_cmd_events(struct kc *kc)
{
	static const char *const head[] = {"ID",  "TIME", "LEVEL",  "KIND",
					   "JOB", "RUN",  "MESSAGE"};
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	char sep = '?';
	int rc;

	kc_buf_puts(&path, "/v1/events");
	if (kc->limit > 0) {
		kc_buf_printf(&path, "%climit=%ld", sep, kc->limit);
		sep = '&';
	}
	if (kc->before != NULL) {
		kc_buf_printf(&path, "%cbefore=", sep);
		kc_buf_escape(&path, kc->before);
	}
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "GET", path.p, NULL, &r);
	kc_buf_free(&path);
	if (rc != KC_OK || kc->json) {
		if (rc == KC_OK)
			rc = kc_print_json(r.body);
		kc_resp_clear(&r);
		return rc;
	}

	json_t *events = json_object_get(r.body, "events");
	if (!json_is_array(events)) {
		kc_resp_clear(&r);
		return kc_err("the answer has no \"events\" list");
	}
	if (json_array_size(events) == 0) {
		printf("No events.\n");
		kc_resp_clear(&r);
		return KC_OK;
	}
	struct kc_table *t = kc_table_new(7, head);
	size_t i;
	json_t *ev;
	json_array_foreach(events, i, ev)
	{
		const char *level = kc_str(ev, "level");
		enum kc_color c = KC_PLAIN;
		char a[32];

		if (level != NULL && strcmp(level, "error") == 0)
			c = KC_RED;
		else if (level != NULL && strcmp(level, "warn") == 0)
			c = KC_YELLOW;
		kc_table_cell(t, kc_str(ev, "id"), KC_PLAIN);
		kc_table_cell(t,
			      kc_time_fmt(kc_time_of(ev, "at"), a, sizeof(a)),
			      KC_PLAIN);
		kc_table_cell(t, level, c);
		kc_table_cell(t, kc_str(ev, "kind"), KC_PLAIN);
		kc_table_cell(t, kc_str(ev, "job"), KC_PLAIN);
		kc_table_cell(t, kc_str(ev, "run_id"), KC_PLAIN);
		kc_table_cell(t, kc_str(ev, "message"), KC_PLAIN);
	}
	rc = kc_table_print(t, kc->color);
	const char *next = kc_str(r.body, "next");
	if (rc == KC_OK && next != NULL)
		printf("(older events: add --before %s)\n", next);
	kc_resp_clear(&r);
	return rc;
}

/* "succeeded 120, failed 3" from {"succeeded":120,"failed":3}, in the
 * server's order. */
static void kc_counts(const json_t *obj, struct kc_buf *b)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v)
	{
		if (b->len > 0)
			kc_buf_puts(b, ", ");
		kc_buf_printf(b, "%s %lld", key,
			      json_is_integer(v) ? json_integer_value(v) : 0);
	}
}

static void kc_status_int(const json_t *st, const char *label, const char *key)
{
	long long v;
	if (kc_int(st, key, &v))
		kc_fieldf(label, "%lld", v);
}

int kc_cmd_status(struct kc *kc)
{
	struct kc_resp r = {0};
	int rc = kc_do(kc, "GET", "/v1/status", NULL, &r);
	if (rc != KC_OK || kc->json) {
		if (rc == KC_OK)
			rc = kc_print_json(r.body);
		kc_resp_clear(&r);
		return rc;
	}

	const json_t *st = r.body;
	struct kc_buf b = {0};
	long long up;
	char a[32], u[32];

	kc_field("server:", kc->server);
	kc_field("node:", kc_str(st, "node"));
	kc_field("version:", kc_str(st, "version"));
	if (kc_int(st, "uptime_s", &up)) {
		if (up < 60)
			snprintf(u, sizeof(u), "%llds", up);
		else
			kc_dur_fmt(up * 1000, u, sizeof(u));
		kc_fieldf(
		    "started:", "%s (up %s)",
		    kc_time_fmt(kc_time_of(st, "started_at"), a, sizeof(a)), u);
	}
	json_t *ready = json_object_get(st, "ready");
	if (json_is_boolean(ready))
		kc_field("ready:", json_is_true(ready)
				       ? "yes"
				       : "no (starting or draining)");
	kc_field("store:", kc_str(st, "store"));
	kc_status_int(st, "jobs:", "jobs");
	kc_status_int(st, "queued:", "queued");
	kc_status_int(st, "running:", "running");
	kc_status_int(st, "panics recovered:", "panics_recovered");
	kc_status_int(st, "store errors:", "store_errors");
	kc_status_int(st, "unsaved results:", "unsaved_results");
	kc_counts(json_object_get(st, "runs"), &b);
	kc_field("runs:", b.failed ? NULL : b.p);

	kc_buf_reset(&b);
	size_t i;
	json_t *br;
	json_array_foreach(json_object_get(st, "breakers"), i, br)
	{
		const char *host = kc_str(br, "host");
		const char *state = kc_str(br, "state");
		if (b.len > 0)
			kc_buf_puts(&b, ", ");
		kc_buf_printf(&b, "%s %s", host ? host : "?",
			      state ? state : "?");
	}
	kc_field("breakers:", b.len == 0 ? "none" : (b.failed ? NULL : b.p));
	kc_buf_free(&b);
	kc_resp_clear(&r);
	return KC_OK;
}
