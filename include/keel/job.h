/*
 * keel/job.h - keeld's job definition: what runs, when, where, and what
 * happens when it fails, as plain data read from and written to JSON.
 *
 *   {"name": "backup", "schedule": "0 30 2 * * *",
 *    "timezone": "Europe/Berlin",
 *    "executor": {"type": "shell",
 *                 "command": ["/usr/local/bin/backup", "--full"],
 *                 "timeout": "10m"},
 *    "retry": {"max_attempts": 3, "backoff": "exponential",
 *              "initial": "1s", "max": "1m"},
 *    "concurrency": "forbid", "missed": "once", "enabled": true}
 *
 * keel_job_from_json validates everything a job can get wrong before it is
 * stored and refuses the first problem with a reason that starts with the
 * JSON path of the value ("retry.max_attempts: 0 is out of range 1..100",
 * "executor.comand: unknown field"): keeld answers it as a 400. Unknown
 * keys are refused at every level so a typo never passes silently.
 * Duplicate keys are the JSON parser's business: load the body with
 * jansson's JSON_REJECT_DUPLICATES, or the last value silently wins.
 *
 * Durations are strings in keel_duration_parse's grammar (keel/cron.h):
 * "500ms", "10m", "1h30m"; they are kept as int64_t nanoseconds and
 * written back in the largest units that are exact ("90s" becomes "1m30s").
 * docs/keeld.md ("Jobs") lists every field with its default and range.
 *
 * Errors: 0 or a negative errno. Thread-safety: a job is plain data; any
 * number of threads may read one, none may read while another changes or
 * frees it.
 */
#ifndef KEEL_JOB_H
#define KEEL_JOB_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <keel/backoff.h>
#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A reason buffer of this size holds every reason keel_job_from_json
 * writes in full (quoted input is cut); a smaller one gets it cut, still
 * NUL-terminated. */
#define KEEL_JOB_ERR_MAX 512

enum keel_job_executor {
	KEEL_JOB_SHELL = 0, /* "shell": a program, optionally via /bin/sh */
	KEEL_JOB_HTTP,	    /* "http": one HTTP request */
	KEEL_JOB_HANDLER,   /* "handler": a C function registered in-process */
};

/* What a fire does while the previous run of the job is still going. */
enum keel_job_concurrency {
	KEEL_JOB_ALLOW = 0, /* "allow": run both */
	KEEL_JOB_FORBID,    /* "forbid": skip the new run (the default) */
	KEEL_JOB_REPLACE,   /* "replace": cancel the running one, start anew */
};

/* What keeld does with the fire times it missed while it was down. */
enum keel_job_missed {
	KEEL_JOB_MISSED_SKIP = 0, /* "skip": none of them (the default) */
	KEEL_JOB_MISSED_ONCE,	  /* "once": one run for all of them */
	KEEL_JOB_MISSED_ALL,	  /* "all": one run each, at most missed_max */
};

/* One name/value pair (an environment variable, an HTTP header). */
struct keel_job_pair {
	char *name;
	char *value;
};

/* The shell executor ("type": "shell"). */
struct keel_job_shell {
	/* "command": argv, n_command >= 1 strings, run with execve (no shell).
	 * command[0] is an absolute path ("/usr/bin/tar") or a bare name
	 * without '/' ("tar"), looked up in keeld's PATH when the job runs;
	 * relative paths ("bin/tar") are refused, since their meaning would
	 * depend on keeld's working directory. With shell = 1 the command is
	 * exactly one string, the script given to /bin/sh -c. */
	char **command;
	size_t n_command;
	int shell;		   /* "shell": bool, default false */
	struct keel_job_pair *env; /* "env": object of strings, added to a
				      minimal environment; sorted by name */
	size_t n_env;
	char *dir;	    /* "dir": absolute working directory, NULL = "/" */
	int64_t output_limit; /* "output_limit": bytes of stdout+stderr kept,
				 0..64 MiB, default 65536 (64 KiB) */
	int64_t memory_limit; /* "memory_limit": bytes of address space
				 (RLIMIT_AS), 0 = none (default), else
				 >= 1 MiB */
	int64_t cpu_limit;    /* "cpu_limit": CPU time in ns, whole seconds
				 (RLIMIT_CPU), 0 = none (default) */
	char *user;	      /* "user": run as this user (name or uid) when
				 keeld is root, NULL = keeld's own */
};

/* The http executor ("type": "http"). */
struct keel_job_http {
	char *method;		       /* "method": default "GET" (upper case) */
	char *url;		       /* "url": required, http:// or https:// */
	struct keel_job_pair *headers; /* "headers": object of strings, sorted
					  by name (case kept) */
	size_t n_headers;
	char *body;		       /* "body": NULL = none */
	/* "expect_status": the run succeeds when the status is in
	 * [status_min, status_max]. JSON: a number (200) or a string range
	 * ("200-299"); default "200-299". Written back as a number when the
	 * range is one status. */
	int status_min, status_max;
};

/* The in-process executor ("type": "handler"). */
struct keel_job_handler {
	char *name; /* "name": the registered handler, same charset as a
		       job's name */
};

struct keel_job {
	char *name;	/* required, 1-64 characters of [A-Za-z0-9._-],
			   unique per keeld */
	char *schedule; /* required, keel_cron_parse's grammar, kept as
			   given */
	char *timezone; /* IANA zone for cron specs, default "UTC";
			   checked with keel_tz_load, kept as a name */

	/* "executor": required; type selects which of shell, http, handler is
	 * used, the other two are all zero. */
	enum keel_job_executor type;
	int64_t timeout; /* "executor.timeout": ns, 0 = none (the default),
			    else 1ms..7 days; a shell run's whole process
			    group is killed when it expires */
	struct keel_job_shell shell;
	struct keel_job_http http;
	struct keel_job_handler handler;

	/* "retry": attempts of one run. */
	struct {
		int max_attempts; /* 1..100, default 1 (no retry) */
		enum keel_backoff_kind backoff; /* "constant", "linear" or
						   "exponential" (default) */
		int64_t initial; /* ns, 1ms..24h, default 1s */
		int64_t max;	 /* ns, initial..24h, default 1m */
		int jitter;	 /* bool, default true (full jitter) */
	} retry;

	enum keel_job_concurrency concurrency; /* default forbid */
	enum keel_job_missed missed;	       /* default skip */
	int missed_max; /* "missed_max": 1..10000, default 100 (used by
			   "all") */
	int enabled;	/* bool, default true */

	/* "history": finished runs kept; a run goes when either limit is
	 * passed. */
	struct {
		int keep_runs; /* 1..1000000, default 100 */
		int keep_days; /* 1..36500, default 30 */
	} history;

	char **tags; /* "tags": up to 32 distinct strings of 1-64 characters
			of [A-Za-z0-9._:=/-], order kept; default none */
	size_t n_tags;
};

/*
 * keel_job_from_json - validates v (a JSON object, as above) and returns a
 * new job in *out, which the caller owns and frees with keel_job_free;
 * missing optional fields get their defaults. The time zone is loaded once
 * to check it, and only its name kept.
 *
 * On error *out is untouched and:
 *   -EINVAL  v is not a valid job; err (when not NULL and errlen > 0) gets
 *            "<path>: <why>", e.g.
 *              "name: must be 1-64 characters of [A-Za-z0-9._-]"
 *              "schedule: field 3 (day of month): 32 is out of range 1-31"
 *              "timezone: unknown zone 'Europe/Nowhere'"
 *              "executor.command[0]: must be an absolute path or a name
 *               without '/' (looked up in PATH)"
 *              "retry.max_attempts: 0 is out of range 1..100"
 *              "executor.comand: unknown field"
 *              "enabled: must be true or false";
 *   -ENOMEM  out of memory (err says so).
 * v or out NULL is -EINVAL. Thread-safe (reads $TZDIR, as keel_tz_load).
 */
KEEL_API int keel_job_from_json(const json_t *v, struct keel_job **out,
				char *err, size_t errlen);

/*
 * keel_job_to_json - j as a new JSON object (the caller owns the
 * reference), every field written, defaults included, so that
 * keel_job_from_json of it gives a job keel_job_equal to j. NULL when out
 * of memory or when j is NULL. j must be a job keel_job_from_json made (or
 * one that would pass its checks). Thread-safe for distinct or read-only
 * jobs.
 */
KEEL_API json_t *keel_job_to_json(const struct keel_job *j);

/*
 * keel_job_equal - 1 when a and b define the same job (every field, the
 * schedule and zone texts compared as given), else 0; two NULLs are
 * equal. "Create or replace" uses it to tell an unchanged job. Pure.
 */
KEEL_API int keel_job_equal(const struct keel_job *a,
			    const struct keel_job *b);

/* Frees j and every string it owns; NULL is a no-op. */
KEEL_API void keel_job_free(struct keel_job *j);

/* 1 when s is a valid tag (a job's "tags", a cluster node's --tags): 1-64
 * characters of [A-Za-z0-9._:=/-]. */
KEEL_API int keel_job_tag_valid(const char *s);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_JOB_H */
