/*
 * src/sched/job.c - a job definition from and to JSON (keel/job.h).
 *
 * from_json builds a fresh job field by field and frees it at the first
 * problem, so a refused definition changes nothing; the reason starts with
 * the JSON path of the value. Every field is written back by to_json,
 * defaults included, and lists that JSON cannot order (objects: env,
 * headers) are kept sorted by name, so from_json(to_json(j)) equals j
 * field for field.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/cron.h>
#include <keel/job.h>
#include <keel/tz.h>

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)
#define DAY_NS (INT64_C(86400) * NS_PER_S)

/* Longest string a job keeps (a body may be longer: BODY_MAX). */
#define STR_MAX 4096
#define BODY_MAX (1024 * 1024)
#define LIST_MAX 256 /* command words, env entries, headers */
#define TAGS_MAX 32

/* Quoted input is cut at 40 bytes, so a reason fits KEEL_JOB_ERR_MAX. */
#define SHOW(len) ((int)((len) > 40 ? 40 : (len)))

/* ------------------------------------------------------------------------
 * Errors and paths
 * ------------------------------------------------------------------------ */

struct ctx {
	char *err;
	size_t len;
};

static int bad(struct ctx *x, const char *path, const char *fmt, ...)
	KEEL_PRINTF(3, 4);
static int bad(struct ctx *x, const char *path, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (x->err == NULL || x->len == 0)
		return -EINVAL;
	w = snprintf(x->err, x->len, "%s: ", path);
	if (w < 0 || (size_t)w >= x->len)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(x->err + w, x->len - (size_t)w, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int nomem(struct ctx *x)
{
	if (x->err != NULL && x->len > 0)
		snprintf(x->err, x->len, "out of memory");
	return -ENOMEM;
}

/* A path for a child: "executor" + "command" -> "executor.command". */
struct path {
	char s[160];
};

static struct path sub(const char *parent, const char *key)
{
	struct path p;

	if (parent == NULL || parent[0] == '\0')
		snprintf(p.s, sizeof(p.s), "%.*s", SHOW(strlen(key)), key);
	else
		snprintf(p.s, sizeof(p.s), "%s.%.*s", parent,
			 SHOW(strlen(key)), key);
	return p;
}

static struct path idx(const char *parent, size_t i)
{
	struct path p;

	snprintf(p.s, sizeof(p.s), "%s[%zu]", parent, i);
	return p;
}

/* ------------------------------------------------------------------------
 * Value checks
 * ------------------------------------------------------------------------ */

/* The length of an object key, which may contain NUL (jansson 2.14). */
static size_t key_length(const char *key)
{
	return json_object_iter_key_len(json_object_key_to_iter(key));
}

/* Refuses keys that are not in allowed (NULL-terminated). */
static int known_keys(struct ctx *x, const json_t *o, const char *path,
		      const char *const *allowed)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)o, key, v) {
		size_t i;
		int ok = 0;

		if (strlen(key) != key_length(key))
			return bad(x, sub(path, key).s,
				   "a key must not contain a NUL character");
		for (i = 0; allowed[i] != NULL && !ok; i++)
			ok = strcmp(key, allowed[i]) == 0;
		if (!ok)
			return bad(x, sub(path, key).s, "unknown field");
	}
	return 0;
}

/* A string value: no NUL inside, 1..max bytes (0..max if empty_ok). */
static int str_value(struct ctx *x, const json_t *v, const char *path,
		     size_t max, int empty_ok, const char **out)
{
	size_t n;

	if (!json_is_string(v))
		return bad(x, path, "must be a string");
	n = json_string_length(v);
	if (strlen(json_string_value(v)) != n)
		return bad(x, path, "must not contain a NUL character");
	if (n == 0 && !empty_ok)
		return bad(x, path, "must not be empty");
	if (n > max)
		return bad(x, path, "longer than %zu bytes", max);
	*out = json_string_value(v);
	return 0;
}

static int dup_str(struct ctx *x, const char *s, char **out)
{
	*out = strdup(s);
	return *out == NULL ? nomem(x) : 0;
}

/* An optional string field copied into *out (left alone when absent). */
static int opt_str(struct ctx *x, const json_t *o, const char *key,
		   const char *parent, size_t max, char **out)
{
	const json_t *v = json_object_get(o, key);
	const char *s = NULL;
	int rc;

	if (v == NULL)
		return 0;
	rc = str_value(x, v, sub(parent, key).s, max, 0, &s);
	if (rc < 0)
		return rc;
	free(*out);
	*out = NULL;
	return dup_str(x, s, out);
}

static int opt_int(struct ctx *x, const json_t *o, const char *key,
		   const char *parent, int64_t lo, int64_t hi, int64_t *out)
{
	const json_t *v = json_object_get(o, key);
	json_int_t n;

	if (v == NULL)
		return 0;
	if (!json_is_integer(v))
		return bad(x, sub(parent, key).s, "must be an integer");
	n = json_integer_value(v);
	if (n < lo || n > hi)
		return bad(x, sub(parent, key).s,
			   "%lld is out of range %lld..%lld", (long long)n,
			   (long long)lo, (long long)hi);
	*out = n;
	return 0;
}

static int opt_int32(struct ctx *x, const json_t *o, const char *key,
		     const char *parent, int lo, int hi, int *out)
{
	int64_t n = *out;
	int rc = opt_int(x, o, key, parent, lo, hi, &n);

	*out = (int)n;
	return rc;
}

static int opt_bool(struct ctx *x, const json_t *o, const char *key,
		    const char *parent, int *out)
{
	const json_t *v = json_object_get(o, key);

	if (v == NULL)
		return 0;
	if (!json_is_boolean(v))
		return bad(x, sub(parent, key).s, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

/* One of names[0..n) -> its index. */
static int opt_enum(struct ctx *x, const json_t *o, const char *key,
		    const char *parent, const char *const *names, int n,
		    const char *list, int *out)
{
	const json_t *v = json_object_get(o, key);
	const char *s = NULL;
	int i, rc;

	if (v == NULL)
		return 0;
	rc = str_value(x, v, sub(parent, key).s, STR_MAX, 1, &s);
	if (rc < 0)
		return rc;
	for (i = 0; i < n; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return bad(x, sub(parent, key).s, "'%.*s' is not one of %s",
		   SHOW(strlen(s)), s, list);
}

static int opt_duration(struct ctx *x, const json_t *o, const char *key,
			const char *parent, int64_t lo, int64_t hi,
			int64_t *out)
{
	const json_t *v = json_object_get(o, key);
	char why[KEEL_CRON_ERR_MAX];
	const char *s = NULL;
	int rc;

	if (v == NULL)
		return 0;
	rc = str_value(x, v, sub(parent, key).s, 64, 0, &s);
	if (rc < 0)
		return bad(x, sub(parent, key).s,
			   "must be a duration string such as \"1h30m\", "
			   "\"10s\" or \"500ms\"");
	if (keel_duration_parse(s, lo, hi, out, why, sizeof(why)) < 0)
		return bad(x, sub(parent, key).s, "%s", why);
	return 0;
}

/* The charset of names: job names, handler names. */
static int name_ok(const char *s, const char *extra)
{
	size_t n = strlen(s), i;

	if (n < 1 || n > 64)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-' || (c != '\0' && strchr(extra, c) != NULL)))
			return 0;
	}
	return 1;
}

/* An RFC 9110 token (header names, methods). */
static int token_ok(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
			return 0;
	}
	return 1;
}

/* An environment variable name: [A-Za-z_][A-Za-z0-9_]*. */
static int env_name_ok(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      c == '_' || (i > 0 && c >= '0' && c <= '9')))
			return 0;
	}
	return i > 0;
}

/* No control characters (CR/LF would split a header line). */
static int printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

/* ------------------------------------------------------------------------
 * Lists
 * ------------------------------------------------------------------------ */

static void free_strs(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void free_pairs(struct keel_job_pair *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].value);
	}
	free(p);
}

static int pair_cmp(const void *a, const void *b)
{
	return strcmp(((const struct keel_job_pair *)a)->name,
		      ((const struct keel_job_pair *)b)->name);
}

/* An array of strings; check(i, s) returns NULL or why s is refused. */
typedef const char *(*str_check)(size_t i, const char *s, char **prev,
				 size_t n_prev);

static int str_array(struct ctx *x, const json_t *v, const char *path,
		     size_t max_n, size_t max_len, str_check check,
		     char ***out, size_t *n_out)
{
	size_t n, i;
	char **a;
	int rc;

	if (!json_is_array(v))
		return bad(x, path, "must be an array of strings");
	n = json_array_size(v);
	if (n > max_n)
		return bad(x, path, "more than %zu entries", max_n);
	a = calloc(n ? n : 1, sizeof(*a));
	if (a == NULL)
		return nomem(x);
	for (i = 0; i < n; i++) {
		const char *s = NULL, *why;

		rc = str_value(x, json_array_get(v, i), idx(path, i).s,
			       max_len, 0, &s);
		if (rc == 0 && check != NULL &&
		    (why = check(i, s, a, i)) != NULL)
			rc = bad(x, idx(path, i).s, "%s", why);
		if (rc == 0)
			rc = dup_str(x, s, &a[i]);
		if (rc < 0) {
			free_strs(a, i);
			return rc;
		}
	}
	*out = a;
	*n_out = n;
	return 0;
}

/* An object of strings -> pairs sorted by name. */
static int str_object(struct ctx *x, const json_t *v, const char *path,
		      int (*name_check)(const char *), const char *name_rule,
		      struct keel_job_pair **out, size_t *n_out)
{
	struct keel_job_pair *p;
	const char *key;
	json_t *val;
	size_t n, i = 0;
	int rc = 0;

	if (!json_is_object(v))
		return bad(x, path, "must be an object of strings");
	n = json_object_size(v);
	if (n > LIST_MAX)
		return bad(x, path, "more than %d entries", LIST_MAX);
	p = calloc(n ? n : 1, sizeof(*p));
	if (p == NULL)
		return nomem(x);
	json_object_foreach((json_t *)v, key, val) {
		const char *s = NULL;

		if (strlen(key) != key_length(key) || !name_check(key) ||
		    strlen(key) > 256)
			rc = bad(x, sub(path, key).s, "name must be %s",
				 name_rule);
		if (rc == 0)
			rc = str_value(x, val, sub(path, key).s, STR_MAX, 1,
				       &s);
		if (rc == 0 && !printable(s))
			rc = bad(x, sub(path, key).s,
				 "must not contain control characters");
		if (rc == 0)
			rc = dup_str(x, key, &p[i].name);
		if (rc == 0)
			rc = dup_str(x, s, &p[i].value);
		i++;
		if (rc < 0) {
			free_pairs(p, i);
			return rc;
		}
	}
	qsort(p, n, sizeof(*p), pair_cmp);
	for (i = 1; i < n; i++) {
		if (strcmp(p[i - 1].name, p[i].name) == 0) {
			rc = bad(x, sub(path, p[i].name).s, "given twice");
			free_pairs(p, n);
			return rc;
		}
	}
	*out = p;
	*n_out = n;
	return 0;
}

static const char *command_word(size_t i, const char *s, char **prev,
				size_t n_prev)
{
	(void)prev;
	(void)n_prev;
	if (i == 0 && s[0] != '/' && strchr(s, '/') != NULL)
		return "must be an absolute path or a name without '/' "
		       "(looked up in PATH)";
	return NULL;
}

int keel_job_tag_valid(const char *s)
{
	return s != NULL && name_ok(s, ":=/");
}

static const char *tag_word(size_t i, const char *s, char **prev,
			    size_t n_prev)
{
	size_t k;

	(void)i;
	if (!keel_job_tag_valid(s))
		return "must be 1-64 characters of [A-Za-z0-9._:=/-]";
	for (k = 0; k < n_prev; k++)
		if (strcmp(prev[k], s) == 0)
			return "duplicate tag";
	return NULL;
}

/* ------------------------------------------------------------------------
 * Sections
 * ------------------------------------------------------------------------ */

static const char *const executor_names[] = {"shell", "http", "handler"};
static const char *const backoff_names[] = {"constant", "linear",
					    "exponential"};
static const char *const concurrency_names[] = {"allow", "forbid",
						"replace"};
static const char *const missed_names[] = {"skip", "once", "all"};

static int parse_shell(struct ctx *x, const json_t *o, struct keel_job *j)
{
	static const char *const keys[] = {
	    "type",	    "command",	    "shell",	 "env",
	    "dir",	    "timeout",	    "output_limit", "memory_limit",
	    "cpu_limit",    "user",	    NULL};
	struct keel_job_shell *s = &j->shell;
	const json_t *v;
	int rc;

	rc = known_keys(x, o, "executor", keys);
	if (rc == 0)
		rc = opt_bool(x, o, "shell", "executor", &s->shell);
	if (rc < 0)
		return rc;
	v = json_object_get(o, "command");
	if (v == NULL)
		return bad(x, "executor.command", "missing (an array of "
						  "strings: the program and "
						  "its arguments)");
	rc = str_array(x, v, "executor.command", LIST_MAX, STR_MAX,
		       s->shell ? (str_check)NULL : command_word, &s->command,
		       &s->n_command);
	if (rc < 0)
		return rc;
	if (s->n_command == 0)
		return bad(x, "executor.command", "must not be empty");
	if (s->shell && s->n_command != 1)
		return bad(x, "executor.command",
			   "with \"shell\": true, must be exactly one string "
			   "(the script for /bin/sh -c)");
	v = json_object_get(o, "env");
	if (v != NULL) {
		rc = str_object(x, v, "executor.env", env_name_ok,
				"[A-Za-z_][A-Za-z0-9_]*", &s->env, &s->n_env);
		if (rc < 0)
			return rc;
	}
	rc = opt_str(x, o, "dir", "executor", STR_MAX, &s->dir);
	if (rc == 0 && s->dir != NULL && s->dir[0] != '/')
		rc = bad(x, "executor.dir", "must be an absolute path");
	if (rc == 0)
		rc = opt_int(x, o, "output_limit", "executor", 0,
			     INT64_C(64) << 20, &s->output_limit);
	if (rc == 0)
		rc = opt_int(x, o, "memory_limit", "executor", 0,
			     INT64_C(1) << 50, &s->memory_limit);
	if (rc == 0 && s->memory_limit != 0 && s->memory_limit < (1 << 20))
		rc = bad(x, "executor.memory_limit",
			 "%lld is below 1 MiB (1048576; 0 means no limit)",
			 (long long)s->memory_limit);
	if (rc == 0)
		rc = opt_duration(x, o, "cpu_limit", "executor", 0,
				  365 * DAY_NS, &s->cpu_limit);
	if (rc == 0 && s->cpu_limit % NS_PER_S != 0)
		rc = bad(x, "executor.cpu_limit",
			 "must be whole seconds (RLIMIT_CPU counts seconds)");
	if (rc == 0)
		rc = opt_str(x, o, "user", "executor", 64, &s->user);
	if (rc == 0 && s->user != NULL && !name_ok(s->user, ""))
		rc = bad(x, "executor.user",
			 "must be a user name or uid of [A-Za-z0-9._-]");
	return rc;
}

/* "200", 200 or "200-299" -> [lo, hi] within 100..599. */
static int parse_status(struct ctx *x, const json_t *v, int *lo, int *hi)
{
	static const char *why = "must be a status (200) or a range of "
				 "statuses (\"200-299\") within 100-599";
	int a, b, n = 0;

	if (json_is_integer(v)) {
		json_int_t s = json_integer_value(v);

		if (s < 100 || s > 599)
			return bad(x, "executor.expect_status", "%s", why);
		*lo = *hi = (int)s;
		return 0;
	}
	if (!json_is_string(v) ||
	    sscanf(json_string_value(v), "%3d-%3d%n", &a, &b, &n) != 2 ||
	    (size_t)n != json_string_length(v) ||
	    strlen(json_string_value(v)) != 7 || a < 100 || b > 599 || a > b)
		return bad(x, "executor.expect_status", "%s", why);
	*lo = a;
	*hi = b;
	return 0;
}

static int parse_http(struct ctx *x, const json_t *o, struct keel_job *j)
{
	static const char *const keys[] = {"type",    "method",	       "url",
					   "headers", "body",	       "timeout",
					   "expect_status", NULL};
	struct keel_job_http *h = &j->http;
	const json_t *v;
	const char *u;
	int rc;

	rc = known_keys(x, o, "executor", keys);
	if (rc == 0)
		rc = opt_str(x, o, "method", "executor", 16, &h->method);
	if (rc == 0 && !token_ok(h->method))
		rc = bad(x, "executor.method", "must be an HTTP method token "
					       "such as GET or POST");
	if (rc < 0)
		return rc;
	v = json_object_get(o, "url");
	if (v == NULL)
		return bad(x, "executor.url", "missing");
	rc = opt_str(x, o, "url", "executor", STR_MAX, &h->url);
	if (rc < 0)
		return rc;
	u = h->url;
	if (strncmp(u, "http://", 7) == 0)
		u += 7;
	else if (strncmp(u, "https://", 8) == 0)
		u += 8;
	else
		return bad(x, "executor.url", "must be an http:// or https:// "
					      "URL");
	if (*u == '\0' || *u == '/' || *u == '?' || *u == '#')
		return bad(x, "executor.url", "has no host");
	for (; *u != '\0'; u++)
		if ((unsigned char)*u <= 0x20 || *u == 0x7f)
			return bad(x, "executor.url",
				   "must not contain spaces or control "
				   "characters (percent-encode them)");
	v = json_object_get(o, "headers");
	if (v != NULL) {
		rc = str_object(x, v, "executor.headers", token_ok,
				"an HTTP token", &h->headers, &h->n_headers);
		if (rc < 0)
			return rc;
	}
	v = json_object_get(o, "body");
	if (v != NULL) {
		const char *s = NULL;

		rc = str_value(x, v, "executor.body", BODY_MAX, 1, &s);
		if (rc == 0)
			rc = dup_str(x, s, &h->body);
		if (rc < 0)
			return rc;
	}
	v = json_object_get(o, "expect_status");
	if (v != NULL)
		return parse_status(x, v, &h->status_min, &h->status_max);
	return 0;
}

static int parse_handler(struct ctx *x, const json_t *o, struct keel_job *j)
{
	static const char *const keys[] = {"type", "name", "timeout", NULL};
	int rc;

	rc = known_keys(x, o, "executor", keys);
	if (rc < 0)
		return rc;
	if (json_object_get(o, "name") == NULL)
		return bad(x, "executor.name",
			   "missing (the registered handler's name)");
	rc = opt_str(x, o, "name", "executor", 64, &j->handler.name);
	if (rc == 0 && !name_ok(j->handler.name, ""))
		rc = bad(x, "executor.name",
			 "must be 1-64 characters of [A-Za-z0-9._-]");
	return rc;
}

static int parse_executor(struct ctx *x, const json_t *o, struct keel_job *j)
{
	int type = 0, rc;

	if (o == NULL)
		return bad(x, "executor", "missing");
	if (!json_is_object(o))
		return bad(x, "executor", "must be an object");
	if (json_object_get(o, "type") == NULL)
		return bad(x, "executor.type", "missing (shell, http or "
					       "handler)");
	rc = opt_enum(x, o, "type", "executor", executor_names, 3,
		      "shell, http, handler", &type);
	if (rc < 0)
		return rc;
	j->type = (enum keel_job_executor)type;
	/* The duration grammar's smallest unit is 1ms: a timeout is 0 (none)
	 * or at least that. */
	rc = opt_duration(x, o, "timeout", "executor", 0, 7 * DAY_NS,
			  &j->timeout);
	if (rc < 0)
		return rc;
	if (j->type == KEEL_JOB_SHELL)
		return parse_shell(x, o, j);
	if (j->type == KEEL_JOB_HTTP) {
		rc = dup_str(x, "GET", &j->http.method);
		j->http.status_min = 200;
		j->http.status_max = 299;
		return rc < 0 ? rc : parse_http(x, o, j);
	}
	return parse_handler(x, o, j);
}

static int parse_retry(struct ctx *x, const json_t *o, struct keel_job *j)
{
	static const char *const keys[] = {"max_attempts", "backoff", "initial",
					   "max", "jitter", NULL};
	int kind = (int)j->retry.backoff, rc;
	struct path p;

	if (o == NULL)
		return 0;
	if (!json_is_object(o))
		return bad(x, "retry", "must be an object");
	rc = known_keys(x, o, "retry", keys);
	if (rc == 0)
		rc = opt_int32(x, o, "max_attempts", "retry", 1, 100,
			       &j->retry.max_attempts);
	if (rc == 0)
		rc = opt_enum(x, o, "backoff", "retry", backoff_names, 3,
			      "constant, linear, exponential", &kind);
	j->retry.backoff = (enum keel_backoff_kind)kind;
	if (rc == 0)
		rc = opt_duration(x, o, "initial", "retry", NS_PER_MS, DAY_NS,
				  &j->retry.initial);
	if (rc == 0)
		rc = opt_duration(x, o, "max", "retry", NS_PER_MS, DAY_NS,
				  &j->retry.max);
	if (rc == 0)
		rc = opt_bool(x, o, "jitter", "retry", &j->retry.jitter);
	if (rc == 0 && j->retry.max < j->retry.initial) {
		p = sub("retry", "max");
		rc = bad(x, p.s, "must not be below retry.initial");
	}
	return rc;
}

static int parse_history(struct ctx *x, const json_t *o, struct keel_job *j)
{
	static const char *const keys[] = {"keep_runs", "keep_days", NULL};
	int rc;

	if (o == NULL)
		return 0;
	if (!json_is_object(o))
		return bad(x, "history", "must be an object");
	rc = known_keys(x, o, "history", keys);
	if (rc == 0)
		rc = opt_int32(x, o, "keep_runs", "history", 1, 1000000,
			       &j->history.keep_runs);
	if (rc == 0)
		rc = opt_int32(x, o, "keep_days", "history", 1, 36500,
			       &j->history.keep_days);
	return rc;
}

static int parse_schedule(struct ctx *x, const json_t *o, struct keel_job *j)
{
	char why[KEEL_CRON_ERR_MAX];
	struct keel_cron *c;
	struct keel_tz *tz;
	const json_t *v;
	const char *s = NULL;
	int rc;

	v = json_object_get(o, "schedule");
	if (v == NULL)
		return bad(x, "schedule", "missing (e.g. \"0 30 2 * * *\" or "
					  "\"@every 1h\")");
	rc = str_value(x, v, "schedule", KEEL_CRON_TEXT_MAX, 1, &s);
	if (rc < 0)
		return rc;
	rc = keel_cron_parse(s, &c, why, sizeof(why));
	if (rc == -ENOMEM)
		return nomem(x);
	if (rc < 0)
		return bad(x, "schedule", "%s", why);
	keel_cron_free(c);
	rc = dup_str(x, s, &j->schedule);
	if (rc < 0)
		return rc;

	rc = opt_str(x, o, "timezone", NULL, 255, &j->timezone);
	if (rc < 0)
		return rc;
	rc = keel_tz_load(j->timezone, &tz);
	if (rc == -ENOMEM)
		return nomem(x);
	if (rc == -ENOENT || rc == -EINVAL)
		return bad(x, "timezone", "unknown zone '%.*s'",
			   SHOW(strlen(j->timezone)), j->timezone);
	if (rc < 0)
		return bad(x, "timezone", "zone '%.*s' cannot be read: %s",
			   SHOW(strlen(j->timezone)), j->timezone,
			   strerror(-rc));
	keel_tz_free(tz);
	return 0;
}

static int parse_job(struct ctx *x, const json_t *o, struct keel_job *j)
{
	static const char *const keys[] = {
	    "name",	   "schedule",	 "timezone", "executor", "retry",
	    "concurrency", "missed",	 "missed_max", "enabled", "history",
	    "tags",	   NULL};
	int conc = (int)j->concurrency, missed = (int)j->missed, rc;
	const json_t *v;

	if (!json_is_object(o))
		return bad(x, "job", "must be a JSON object");
	rc = known_keys(x, o, NULL, keys);
	if (rc < 0)
		return rc;
	v = json_object_get(o, "name");
	if (v == NULL)
		return bad(x, "name", "missing");
	rc = opt_str(x, o, "name", NULL, STR_MAX, &j->name);
	if (rc == 0 && !name_ok(j->name, ""))
		rc = bad(x, "name",
			 "must be 1-64 characters of [A-Za-z0-9._-]");
	if (rc == 0)
		rc = parse_schedule(x, o, j);
	if (rc == 0)
		rc = parse_executor(x, json_object_get(o, "executor"), j);
	if (rc == 0)
		rc = parse_retry(x, json_object_get(o, "retry"), j);
	if (rc == 0)
		rc = opt_enum(x, o, "concurrency", NULL, concurrency_names, 3,
			      "allow, forbid, replace", &conc);
	j->concurrency = (enum keel_job_concurrency)conc;
	if (rc == 0)
		rc = opt_enum(x, o, "missed", NULL, missed_names, 3,
			      "skip, once, all", &missed);
	j->missed = (enum keel_job_missed)missed;
	if (rc == 0)
		rc = opt_int32(x, o, "missed_max", NULL, 1, 10000,
			       &j->missed_max);
	if (rc == 0)
		rc = opt_bool(x, o, "enabled", NULL, &j->enabled);
	if (rc == 0)
		rc = parse_history(x, json_object_get(o, "history"), j);
	v = json_object_get(o, "tags");
	if (rc == 0 && v != NULL)
		rc = str_array(x, v, "tags", TAGS_MAX, 64, tag_word, &j->tags,
			       &j->n_tags);
	return rc;
}

/* ------------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------------ */

int keel_job_from_json(const json_t *v, struct keel_job **out, char *err,
		       size_t errlen)
{
	struct ctx x = {err, errlen};
	struct keel_job *j;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (v == NULL || out == NULL)
		return bad(&x, "job", "no job given");
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return nomem(&x);
	/* The defaults of keel/job.h. */
	j->timezone = strdup("UTC");
	if (j->timezone == NULL) {
		free(j);
		return nomem(&x);
	}
	j->shell.output_limit = 64 * 1024;
	j->retry.max_attempts = 1;
	j->retry.backoff = KEEL_BACKOFF_EXPONENTIAL;
	j->retry.initial = NS_PER_S;
	j->retry.max = 60 * NS_PER_S;
	j->retry.jitter = 1;
	j->concurrency = KEEL_JOB_FORBID;
	j->missed = KEEL_JOB_MISSED_SKIP;
	j->missed_max = 100;
	j->enabled = 1;
	j->history.keep_runs = 100;
	j->history.keep_days = 30;

	rc = parse_job(&x, v, j);
	if (rc < 0) {
		keel_job_free(j);
		return rc;
	}
	/* Only the chosen executor's section is kept. */
	if (j->type != KEEL_JOB_SHELL)
		j->shell.output_limit = 0;
	*out = j;
	return 0;
}

void keel_job_free(struct keel_job *j)
{
	if (j == NULL)
		return;
	free(j->name);
	free(j->schedule);
	free(j->timezone);
	free_strs(j->shell.command, j->shell.n_command);
	free_pairs(j->shell.env, j->shell.n_env);
	free(j->shell.dir);
	free(j->shell.user);
	free(j->http.method);
	free(j->http.url);
	free_pairs(j->http.headers, j->http.n_headers);
	free(j->http.body);
	free(j->handler.name);
	free_strs(j->tags, j->n_tags);
	free(j);
}

/* ------------------------------------------------------------------------
 * To JSON
 * ------------------------------------------------------------------------ */

/* ns -> "1h30m", "500ms", "0s": the exact value in the largest units. */
void keel_duration_format(int64_t ns, char *buf, size_t len)
{
	static const struct {
		int64_t ns;
		const char *unit;
	} units[] = {
	    {INT64_C(3600) * NS_PER_S, "h"},
	    {INT64_C(60) * NS_PER_S, "m"},
	    {NS_PER_S, "s"},
	    {NS_PER_MS, "ms"},
	};
	size_t i, n = 0;

	if (buf == NULL || len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		int64_t q = ns / units[i].ns;
		int w;

		if (q == 0)
			continue;
		w = snprintf(buf + n, len - n, "%lld%s", (long long)q,
			     units[i].unit);
		if (w < 0 || (size_t)w >= len - n)
			return;
		n += (size_t)w;
		ns -= q * units[i].ns;
	}
	if (n == 0)
		snprintf(buf, len, "0s");
}

/* Takes the reference of v; remembers a failure in *ok. */
static void put(json_t *o, const char *key, json_t *v, int *ok)
{
	if (v == NULL || json_object_set_new(o, key, v) != 0)
		*ok = 0;
}

static json_t *duration_json(int64_t ns)
{
	char buf[64];

	keel_duration_format(ns, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *strs_json(char *const *v, size_t n)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; a != NULL && i < n; i++) {
		if (json_array_append_new(a, json_string(v[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *pairs_json(const struct keel_job_pair *p, size_t n)
{
	json_t *o = json_object();
	size_t i;
	int ok = 1;

	for (i = 0; o != NULL && i < n; i++)
		put(o, p[i].name, json_string(p[i].value), &ok);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *executor_json(const struct keel_job *j, int *ok)
{
	json_t *e = json_object();

	if (e == NULL)
		return NULL;
	put(e, "type", json_string(executor_names[j->type]), ok);
	put(e, "timeout", duration_json(j->timeout), ok);
	if (j->type == KEEL_JOB_SHELL) {
		const struct keel_job_shell *s = &j->shell;

		put(e, "command", strs_json(s->command, s->n_command), ok);
		put(e, "shell", json_boolean(s->shell), ok);
		put(e, "env", pairs_json(s->env, s->n_env), ok);
		if (s->dir != NULL)
			put(e, "dir", json_string(s->dir), ok);
		put(e, "output_limit", json_integer(s->output_limit), ok);
		put(e, "memory_limit", json_integer(s->memory_limit), ok);
		put(e, "cpu_limit", duration_json(s->cpu_limit), ok);
		if (s->user != NULL)
			put(e, "user", json_string(s->user), ok);
	} else if (j->type == KEEL_JOB_HTTP) {
		const struct keel_job_http *h = &j->http;
		char st[16];

		put(e, "method", json_string(h->method), ok);
		put(e, "url", json_string(h->url), ok);
		put(e, "headers", pairs_json(h->headers, h->n_headers), ok);
		if (h->body != NULL)
			put(e, "body", json_string(h->body), ok);
		if (h->status_min == h->status_max) {
			put(e, "expect_status", json_integer(h->status_min),
			    ok);
		} else {
			snprintf(st, sizeof(st), "%d-%d", h->status_min,
				 h->status_max);
			put(e, "expect_status", json_string(st), ok);
		}
	} else {
		put(e, "name", json_string(j->handler.name), ok);
	}
	return e;
}

json_t *keel_job_to_json(const struct keel_job *j)
{
	json_t *o, *r, *h;
	int ok = 1;

	if (j == NULL || (unsigned)j->type > KEEL_JOB_HANDLER)
		return NULL;
	o = json_object();
	if (o == NULL)
		return NULL;
	put(o, "name", json_string(j->name), &ok);
	put(o, "schedule", json_string(j->schedule), &ok);
	put(o, "timezone", json_string(j->timezone), &ok);
	put(o, "executor", executor_json(j, &ok), &ok);
	r = json_object();
	if (r != NULL) {
		put(r, "max_attempts", json_integer(j->retry.max_attempts),
		    &ok);
		put(r, "backoff", json_string(backoff_names[j->retry.backoff]),
		    &ok);
		put(r, "initial", duration_json(j->retry.initial), &ok);
		put(r, "max", duration_json(j->retry.max), &ok);
		put(r, "jitter", json_boolean(j->retry.jitter), &ok);
	}
	put(o, "retry", r, &ok);
	put(o, "concurrency",
	    json_string(concurrency_names[j->concurrency]), &ok);
	put(o, "missed", json_string(missed_names[j->missed]), &ok);
	put(o, "missed_max", json_integer(j->missed_max), &ok);
	put(o, "enabled", json_boolean(j->enabled), &ok);
	h = json_object();
	if (h != NULL) {
		put(h, "keep_runs", json_integer(j->history.keep_runs), &ok);
		put(h, "keep_days", json_integer(j->history.keep_days), &ok);
	}
	put(o, "history", h, &ok);
	put(o, "tags", strs_json(j->tags, j->n_tags), &ok);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* ------------------------------------------------------------------------
 * Equality
 * ------------------------------------------------------------------------ */

static int str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static int strs_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
	size_t i;

	if (na != nb)
		return 0;
	for (i = 0; i < na; i++)
		if (!str_eq(a[i], b[i]))
			return 0;
	return 1;
}

static int pairs_eq(const struct keel_job_pair *a, size_t na,
		    const struct keel_job_pair *b, size_t nb)
{
	size_t i;

	if (na != nb)
		return 0;
	for (i = 0; i < na; i++)
		if (!str_eq(a[i].name, b[i].name) ||
		    !str_eq(a[i].value, b[i].value))
			return 0;
	return 1;
}

static int shell_eq(const struct keel_job_shell *a,
		    const struct keel_job_shell *b)
{
	return strs_eq(a->command, a->n_command, b->command, b->n_command) &&
	       a->shell == b->shell &&
	       pairs_eq(a->env, a->n_env, b->env, b->n_env) &&
	       str_eq(a->dir, b->dir) && a->output_limit == b->output_limit &&
	       a->memory_limit == b->memory_limit &&
	       a->cpu_limit == b->cpu_limit && str_eq(a->user, b->user);
}

static int http_eq(const struct keel_job_http *a,
		   const struct keel_job_http *b)
{
	return str_eq(a->method, b->method) && str_eq(a->url, b->url) &&
	       pairs_eq(a->headers, a->n_headers, b->headers, b->n_headers) &&
	       str_eq(a->body, b->body) && a->status_min == b->status_min &&
	       a->status_max == b->status_max;
}

int keel_job_equal(const struct keel_job *a, const struct keel_job *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return str_eq(a->name, b->name) && str_eq(a->schedule, b->schedule) &&
	       str_eq(a->timezone, b->timezone) && a->type == b->type &&
	       a->timeout == b->timeout && shell_eq(&a->shell, &b->shell) &&
	       http_eq(&a->http, &b->http) &&
	       str_eq(a->handler.name, b->handler.name) &&
	       a->retry.max_attempts == b->retry.max_attempts &&
	       a->retry.backoff == b->retry.backoff &&
	       a->retry.initial == b->retry.initial &&
	       a->retry.max == b->retry.max &&
	       !a->retry.jitter == !b->retry.jitter &&
	       a->concurrency == b->concurrency && a->missed == b->missed &&
	       a->missed_max == b->missed_max && !a->enabled == !b->enabled &&
	       a->history.keep_runs == b->history.keep_runs &&
	       a->history.keep_days == b->history.keep_days &&
	       strs_eq(a->tags, a->n_tags, b->tags, b->n_tags);
}
