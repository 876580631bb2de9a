/*
 * src/sched/exec_internal.h - what the executors (exec.c, exec_shell.c,
 * exec_http.c) share. Not installed.
 */
#ifndef KEEL_SCHED_EXEC_INTERNAL_H
#define KEEL_SCHED_EXEC_INTERNAL_H

#include <pthread.h>

#include <keel/exec.h>

struct keel__exec_handler;
struct keel__exec_breaker;

struct keel_executor {
	struct keel_exec_config cfg; /* cfg.path points at path below */
	char *path;
	pthread_mutex_t mu; /* guards the two lists */
	struct keel__exec_handler *handlers;
	struct keel__exec_breaker *breakers;
};

/*
 * One attempt of each kind. deadline is a keel_clock_now time (system
 * clock, ns) after which the attempt is timed out, KEEL_NEVER for none;
 * req->cancel may be NULL. Each fills res completely (state, exit_code -1
 * and signal 0 when not applicable, output, error) and returns 0, or a
 * negative errno when the attempt could not be made at all.
 */
int keel__exec_shell(struct keel_executor *ex, const struct keel_job *j,
		     const struct keel_exec_req *req, int64_t deadline,
		     struct keel_exec_result *res);
int keel__exec_http(struct keel_executor *ex, const struct keel_job *j,
		    const struct keel_exec_req *req, int64_t deadline,
		    struct keel_exec_result *res);

/* Makes s one line of valid UTF-8 in place: trailing blanks and newlines
 * go, other control characters but tab become spaces, bytes outside valid
 * sequences '?'. A run's error goes into JSON (keel_run_to_json refuses
 * invalid UTF-8), tables and log lines, and a handler may write anything. */
void keel__exec_clean_line(char *s);

/* Frees the breaker list (exec_http.c owns the breaker type). */
void keel__exec_breakers_free(struct keel_executor *ex);

#endif /* KEEL_SCHED_EXEC_INTERNAL_H */
