/*
 * keel/run.h - one execution of a job: its state, times and result, as
 * keeld stores it and shows it.
 *
 *   {"id": "42", "job": "backup", "state": "succeeded", "attempt": 1,
 *    "trigger": "schedule", "scheduled_at": "2026-11-26T02:30:00.000Z",
 *    "started_at": "...", "finished_at": "...", "duration_ms": 1520,
 *    "exit_code": 0, "signal": null, "error": null, "output": "...",
 *    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "node": "host:8080"}
 *
 * A run is born queued (or skipped, when a tick is refused by the
 * concurrency policy), becomes running when an executor takes it and ends in
 * one final state. A failed, timed-out or crashed run whose job allows more
 * attempts is followed by a new run with attempt + 1 (same job, same
 * scheduled_at, trigger "retry"): a run's row is never reopened.
 *
 * Times are milliseconds since the Unix epoch, 0 = not yet. Thread-safety:
 * plain data.
 */
#ifndef KEEL_RUN_H
#define KEEL_RUN_H

#include <stdint.h>

#include <jansson.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum keel_run_state {
	KEEL_RUN_QUEUED = 0, /* materialised, waiting for an executor */
	KEEL_RUN_RUNNING,    /* an executor has it */
	KEEL_RUN_SUCCEEDED,  /* exit 0, expected HTTP status, handler 0 */
	KEEL_RUN_FAILED,     /* anything else: exit code, signal, panic,
				refused connection, unexpected status */
	KEEL_RUN_TIMED_OUT,  /* the job's timeout expired; killed */
	KEEL_RUN_CRASHED,    /* keeld died while it was running */
	KEEL_RUN_SKIPPED,    /* a tick not run (concurrency "forbid", missed
				ticks beyond the policy) */
	KEEL_RUN_CANCELED,   /* canceled: "replace", shutdown, API */
};
#define KEEL_RUN_NSTATES 8

/* Why a run exists. */
enum keel_run_trigger {
	KEEL_RUN_SCHEDULE = 0, /* a tick of the schedule */
	KEEL_RUN_MANUAL,       /* POST /v1/jobs/{name}/run */
	KEEL_RUN_RETRY,	       /* attempt n + 1 of a failed run */
	KEEL_RUN_MISSED,       /* a tick missed while keeld was down */
};

/* The state's lower-case name ("queued", ..., "canceled"); NULL for a
 * value out of range. */
KEEL_API const char *keel_run_state_name(enum keel_run_state s);
/* 0 and *out set, or -EINVAL for an unknown name. */
KEEL_API int keel_run_state_parse(const char *name, enum keel_run_state *out);
/* 1 for succeeded, failed, timed_out, crashed, skipped, canceled. */
KEEL_API int keel_run_state_final(enum keel_run_state s);

KEEL_API const char *keel_run_trigger_name(enum keel_run_trigger t);
KEEL_API int keel_run_trigger_parse(const char *name,
				    enum keel_run_trigger *out);

struct keel_run {
	int64_t id; /* > 0, unique per store, shown as a string */
	char *job;
	enum keel_run_state state;
	enum keel_run_trigger trigger;
	int attempt;	      /* 1 for the first */
	int64_t scheduled_at; /* ms: the tick (manual: when asked) */
	int64_t created_at;   /* ms */
	int64_t not_before;   /* ms: a retry waits until then; 0 = at once */
	int64_t started_at;   /* ms, 0 = not started */
	int64_t finished_at;  /* ms, 0 = not finished */
	int exit_code;	      /* -1 = none (not a process, or killed) */
	int signal;	      /* 0 = none */
	int http_status;      /* 0 = none */
	char *error;	      /* NULL = none */
	char *output;	      /* captured tail, NULL = none */
	char trace_id[33];    /* 32 hex digits, "" = none */
	char *node;	      /* the node that ran it, NULL = none */
	uint64_t claim;	      /* cluster: the claim token of the node that
				 runs it (keel/store.h), 0 = none */
};

/* Frees what r owns (not r itself) and zeroes it; NULL is a no-op. */
KEEL_API void keel_run_clear(struct keel_run *r);
/* Frees r and what it owns; NULL is a no-op. */
KEEL_API void keel_run_free(struct keel_run *r);

/* A time in ms as runs show it: an RFC 3339 UTC string with milliseconds
 * ("2026-11-26T02:30:00.000Z"), JSON null for 0 or less. A new reference;
 * NULL when out of memory. */
KEEL_API json_t *keel_run_time_json(int64_t ms);

/* r as a new JSON object (see above); NULL when out of memory. */
KEEL_API json_t *keel_run_to_json(const struct keel_run *r);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_RUN_H */
