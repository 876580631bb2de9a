/* KEEL_TEST_LABELS: threads */
/*
 * tests/sched/test_exec_shell.c - the shell executor (keel/exec.h,
 * src/sched/exec_shell.c) with real processes, through keel_exec_run:
 * exit statuses, captured output (stdout and stderr in order, the capped
 * tail and its marker, invalid UTF-8 and NUL replaced), the environment
 * (exactly the documented variables, the job's own, nothing of the
 * parent's), the working directory, commands that cannot start (not found,
 * not executable, bad dir), signals, timeouts and cancels that kill the
 * whole process group (SIGTERM, then SIGKILL after the grace), memory and
 * CPU limits, stragglers holding the pipe, descriptors and signal state
 * the child must not inherit, concurrent attempts from 4 threads, and
 * running as another user.
 *
 * Each case is a process of its own (keel_test.h) that makes itself a
 * child subreaper, so the orphans of a killed process group are reparented
 * to it and can be reaped here: "the group is gone" is then checked with
 * kill(-pgid, 0) == ESRCH, whatever PID 1 does with zombies. Core dumps
 * are turned off (the crash cases would write /tmp/core.*).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/exec.h>
#include <keel/job.h>
#include <keel/log.h>
#include "keel_test.h"

/* Every bound on time here is generous: two shared cores. */
#define SLOW 20.0 /* s: "promptly" */

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static void setup(void)
{
	struct rlimit no_core = {0, 0};

	CHECK_INT(setrlimit(RLIMIT_CORE, &no_core), ==, 0);
	CHECK_INT(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), ==, 0);
}

/* A job from the executor's JSON fields (without "type"), e.g.
 * "\"command\": [\"/bin/true\"]". */
static struct keel_job *job_from(json_t *executor)
{
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_t *v;

	CHECK(executor != NULL);
	CHECK_INT(json_object_set_new(executor, "type", json_string("shell")),
		  ==, 0);
	v = json_pack("{s:s, s:s, s:o}", "name", "test-job", "schedule",
		      "@manual", "executor", executor);
	CHECK(v != NULL);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("job refused: %s", err);
	json_decref(v);
	return j;
}

static json_t *fields_obj(const char *fields)
{
	char text[4096];
	json_error_t e;
	json_t *o;

	snprintf(text, sizeof(text), "{%s}", fields);
	o = json_loads(text, 0, &e);
	if (o == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s: %s", e.text, text);
	return o;
}

static struct keel_job *job_json(const char *fields)
{
	return job_from(fields_obj(fields));
}

/* A /bin/sh -c job: script, plus more executor fields (JSON, may be ""). */
static struct keel_job *sh_job(const char *script, const char *more)
{
	json_t *o = fields_obj(more);

	CHECK_INT(json_object_set_new(o, "command", json_pack("[s]", script)),
		  ==, 0);
	CHECK_INT(json_object_set_new(o, "shell", json_true()), ==, 0);
	return job_from(o);
}

static struct keel_executor *executor(int64_t kill_grace, const char *path)
{
	struct keel_exec_config cfg;
	struct keel_executor *ex = NULL;

	keel_exec_config_init(&cfg);
	if (kill_grace >= 0)
		cfg.kill_grace = kill_grace;
	if (path != NULL)
		cfg.path = path;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, 0);
	return ex;
}

/* Runs j with a default request and returns the wall time it took. */
static double run(struct keel_executor *ex, const struct keel_job *j,
		  struct keel_exec_result *res)
{
	struct keel_exec_req req = {.run_id = 42, .attempt = 1};
	double t0 = keel_test_now();

	CHECK_INT(keel_exec_run(ex, j, &req, res), ==, 0);
	return keel_test_now() - t0;
}

/* Reaps the orphans reparented to us, then waits until no process of
 * group pgid exists any more; 1 when it is gone within SLOW seconds. */
static int group_gone(pid_t pgid)
{
	double t0 = keel_test_now();

	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (kill(-pgid, 0) < 0 && errno == ESRCH)
			return 1;
		if (keel_test_now() - t0 > SLOW)
			return 0;
		usleep(10000);
	}
}

static void reap_all(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/* The first line of the output as a pid. */
static pid_t first_pid(const struct keel_exec_result *res)
{
	CHECK(res->output != NULL);
	return (pid_t)atoi(res->output);
}

static char tmpdir[512];

static void make_tmpdir(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/keel-exec-XXXXXX",
		 base && base[0] ? base : "/tmp");
	CHECK(mkdtemp(tmpdir) != NULL);
}

static void remove_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	char p[1024];

	CHECK(d != NULL);
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
		CHECK_INT(unlink(p), ==, 0);
	}
	closedir(d);
	CHECK_INT(rmdir(tmpdir), ==, 0);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	CHECK(fd >= 0);
	CHECK_INT(write(fd, text, strlen(text)), ==, (ssize_t)strlen(text));
	CHECK_INT(close(fd), ==, 0);
	CHECK_INT(chmod(path, mode), ==, 0);
}

/* ------------------------------------------------------------------------
 * Exit statuses
 * ------------------------------------------------------------------------ */

TEST(true_succeeds)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j = job_json("\"command\": [\"/bin/true\"]");
	struct keel_exec_result res;

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.exit_code, ==, 0);
	CHECK_INT(res.signal, ==, 0);
	CHECK_INT(res.http_status, ==, 0);
	CHECK_INT(res.panicked, ==, 0);
	CHECK_STR(res.error, "");
	CHECK(res.output == NULL);
	CHECK_INT(res.output_len, ==, 0);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* A bare name is looked up in cfg.path. */
	j = job_json("\"command\": [\"true\"]");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(exit_status)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j = job_json("\"command\": [\"/bin/false\"]");
	struct keel_exec_result res;

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, 1);
	CHECK_INT(res.signal, ==, 0);
	CHECK_STR(res.error, "exit status 1");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	j = sh_job("exit 7", "");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, 7);
	CHECK_STR(res.error, "exit status 7");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* argv words reach the program as they are: no shell in between. */
	j = job_json("\"command\": [\"/bin/sh\", \"-c\", \"exit $0\", \"5\"]");
	run(ex, j, &res);
	CHECK_INT(res.exit_code, ==, 5);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(killed_by_signal)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j = sh_job("echo before; kill -SEGV $$", "");
	struct keel_exec_result res;

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.signal, ==, SIGSEGV);
	CHECK_INT(res.exit_code, ==, -1);
	CHECK_STR(res.error, "killed by signal 11 (SIGSEGV)");
	CHECK_STR(res.output, "before\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	j = sh_job("kill -KILL $$", "");
	run(ex, j, &res);
	CHECK_INT(res.signal, ==, SIGKILL);
	CHECK_STR(res.error, "killed by signal 9 (SIGKILL)");
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

TEST(output_interleaved)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j =
	    sh_job("echo out1; echo err1 >&2; echo out2; printf err2 >&2", "");
	struct keel_exec_result res;

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "out1\nerr1\nout2\nerr2");
	CHECK_INT(res.output_len, ==, strlen("out1\nerr1\nout2\nerr2"));
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* stdin is /dev/null: cat ends at once. */
	j = job_json("\"command\": [\"/bin/cat\"], \"timeout\": \"30s\"");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(res.output == NULL);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(output_cap)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j =
	    sh_job("head -c 1048576 /dev/zero | tr '\\000' a; printf END",
		   "\"output_limit\": 1000");
	struct keel_exec_result res;
	const char *marker = "[... 1047579 bytes dropped]\n";
	size_t mlen = strlen(marker);

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(res.output != NULL);
	CHECK_INT(res.output_len, ==, mlen + 1000);
	CHECK_INT(strlen(res.output), ==, res.output_len);
	CHECK(memcmp(res.output, marker, mlen) == 0);
	for (size_t i = mlen; i < res.output_len - 3; i++)
		if (res.output[i] != 'a')
			KEEL_TEST_FAIL("byte %zu is '%c'", i, res.output[i]);
	CHECK_STR(res.output + res.output_len - 3, "END");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Exactly the limit: no marker. */
	j = sh_job("printf 0123456789", "\"output_limit\": 10");
	run(ex, j, &res);
	CHECK_STR(res.output, "0123456789");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Writes in small pieces wrap the ring many times. */
	j = sh_job("i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); "
		   "done",
		   "\"output_limit\": 16");
	run(ex, j, &res);
	/* 10*6 + 90*7 + 400*8 = 3890 bytes written, 16 kept. */
	CHECK_STR(res.output, "[... 3874 bytes dropped]\nline498\nline499\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* A UTF-8 sequence cut by the ring is dropped whole (counted). */
	j = sh_job("printf 'x\\303\\251\\303\\251'", "\"output_limit\": 3");
	run(ex, j, &res);
	CHECK_STR(res.output, "[... 3 bytes dropped]\n\xC3\xA9");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* output_limit 0 keeps nothing; the run is unaffected. */
	j = sh_job("echo hidden; exit 3", "\"output_limit\": 0");
	run(ex, j, &res);
	CHECK_INT(res.exit_code, ==, 3);
	CHECK(res.output == NULL);
	CHECK_INT(res.output_len, ==, 0);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(output_utf8_sanitized)
{
	struct keel_executor *ex = executor(-1, NULL);
	/* a, a lone 0xFF, b, an overlong NUL (C0 80), c, a NUL, d, a euro
	 * sign (valid), a surrogate (ED A0 80), a 4-byte emoji (valid), a
	 * truncated 3-byte sequence at the end. */
	struct keel_job *j =
	    sh_job("printf 'a\\377b\\300\\200c\\000d\\342\\202\\254"
		   "\\355\\240\\200\\360\\237\\230\\200\\342\\202'",
		   "");
	struct keel_exec_result res;
	const char *want = "a\xEF\xBF\xBD"
			   "b\xEF\xBF\xBD\xEF\xBF\xBD"
			   "c\xEF\xBF\xBD"
			   "d\xE2\x82\xAC"
			   "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
			   "\xF0\x9F\x98\x80"
			   "\xEF\xBF\xBD\xEF\xBF\xBD";

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.output_len, ==, strlen(want));
	CHECK_STR(res.output, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Environment, directory, descriptors, signals
 * ------------------------------------------------------------------------ */

/* The value of NAME in env(1)'s output, or NULL. */
static const char *env_get(const char *out, const char *name, char *buf,
			   size_t len)
{
	size_t n = strlen(name);

	for (const char *p = out; p && *p;) {
		const char *end = strchr(p, '\n');
		size_t l = end ? (size_t)(end - p) : strlen(p);

		if (l > n && strncmp(p, name, n) == 0 && p[n] == '=') {
			snprintf(buf, len, "%.*s", (int)(l - n - 1), p + n + 1);
			return buf;
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

static int env_count(const char *out)
{
	int n = 0;

	for (const char *p = out; p && *p; p++)
		n += *p == '\n';
	return n;
}

TEST(environment)
{
	struct keel_executor *ex = executor(-1, "/usr/bin:/bin");
	struct keel_job *j =
	    job_json("\"command\": [\"env\"], \"env\": {\"FOO\": \"bar baz\", "
		     "\"LANG\": \"de_DE.UTF-8\", \"KEEL_ATTEMPT\": \"mine\"}");
	struct keel_exec_req req = {
	    .run_id = 1234567890123,
	    .attempt = 3,
	    .scheduled_at =
		INT64_C(1795660200123), /* 2026-11-26T02:30:00.123Z */
	    .traceparent =
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	};
	struct keel_exec_result res;
	char secret[64], buf[256];
	struct passwd *pw = getpwuid(geteuid());

	setup();
	CHECK(pw != NULL);
	snprintf(secret, sizeof(secret), "KEEL_TEST_SECRET_%d", (int)getpid());
	CHECK_INT(setenv(secret, "leaked", 1), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, &req, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(res.output != NULL);
	CHECK(strstr(res.output, "KEEL_TEST_SECRET_") == NULL);
	CHECK(strstr(res.output, "leaked") == NULL);
	CHECK_STR(env_get(res.output, "PATH", buf, sizeof(buf)),
		  "/usr/bin:/bin");
	CHECK_STR(env_get(res.output, "HOME", buf, sizeof(buf)), pw->pw_dir);
	CHECK_STR(env_get(res.output, "USER", buf, sizeof(buf)), pw->pw_name);
	CHECK_STR(env_get(res.output, "LOGNAME", buf, sizeof(buf)),
		  pw->pw_name);
	CHECK_STR(env_get(res.output, "SHELL", buf, sizeof(buf)),
		  pw->pw_shell[0] ? pw->pw_shell : "/bin/sh");
	CHECK_STR(env_get(res.output, "KEEL_JOB", buf, sizeof(buf)),
		  "test-job");
	CHECK_STR(env_get(res.output, "KEEL_RUN_ID", buf, sizeof(buf)),
		  "1234567890123");
	CHECK_STR(env_get(res.output, "KEEL_SCHEDULED_AT", buf, sizeof(buf)),
		  "2026-11-26T02:30:00.123Z");
	CHECK_STR(env_get(res.output, "TRACEPARENT", buf, sizeof(buf)),
		  req.traceparent);
	/* The job's values win, each name once. */
	CHECK_STR(env_get(res.output, "LANG", buf, sizeof(buf)), "de_DE.UTF-8");
	CHECK_STR(env_get(res.output, "KEEL_ATTEMPT", buf, sizeof(buf)),
		  "mine");
	CHECK_STR(env_get(res.output, "FOO", buf, sizeof(buf)), "bar baz");
	/* Nothing else: 11 of ours + FOO. */
	if (env_count(res.output) != 12)
		KEEL_TEST_FAIL("unexpected environment:\n%s", res.output);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Defaults: LANG, KEEL_ATTEMPT; no TRACEPARENT or
	 * KEEL_SCHEDULED_AT without them. */
	j = job_json("\"command\": [\"env\"]");
	req.traceparent = NULL;
	req.scheduled_at = 0;
	CHECK_INT(keel_exec_run(ex, j, &req, &res), ==, 0);
	CHECK_STR(env_get(res.output, "LANG", buf, sizeof(buf)), "C.UTF-8");
	CHECK_STR(env_get(res.output, "KEEL_ATTEMPT", buf, sizeof(buf)), "3");
	CHECK(env_get(res.output, "TRACEPARENT", buf, sizeof(buf)) == NULL);
	CHECK(env_get(res.output, "KEEL_SCHEDULED_AT", buf, sizeof(buf)) ==
	      NULL);
	CHECK_INT(env_count(res.output), ==, 9);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(working_directory)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j;
	struct keel_exec_result res;
	char fields[1024], want[600];

	setup();
	make_tmpdir();
	snprintf(fields, sizeof(fields),
		 "\"command\": [\"/bin/pwd\"], \"dir\": \"%s\"", tmpdir);
	j = job_json(fields);
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	snprintf(want, sizeof(want), "%s\n", tmpdir);
	CHECK_STR(res.output, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* No dir: "/", whatever the parent's directory is. */
	CHECK_INT(chdir(tmpdir), ==, 0);
	j = job_json("\"command\": [\"/bin/pwd\"]");
	run(ex, j, &res);
	CHECK_STR(res.output, "/\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);
	CHECK_INT(chdir("/"), ==, 0);

	/* A dir that does not exist: a failed run that says so. */
	snprintf(fields, sizeof(fields),
		 "\"command\": [\"/bin/pwd\"], \"dir\": \"%s/missing\"",
		 tmpdir);
	j = job_json(fields);
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, -1);
	snprintf(want, sizeof(want),
		 "dir %s/missing: No such file or directory", tmpdir);
	CHECK_STR(res.error, want);
	CHECK(res.output == NULL);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	remove_tmpdir();
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(cannot_start)
{
	struct keel_executor *ex;
	struct keel_job *j;
	struct keel_exec_result res;
	char path[600], fields[1024], want[1024];

	setup();
	make_tmpdir();
	snprintf(path, sizeof(path), "%s:/usr/bin:/bin", tmpdir);
	ex = executor(-1, path);

	j = job_json("\"command\": [\"no-such-command-keel\", \"x\"]");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, -1);
	CHECK_INT(res.signal, ==, 0);
	CHECK_STR(res.error, "command not found: no-such-command-keel");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Not executable (root cannot exec it either: no x bit at all). */
	snprintf(path, sizeof(path), "%s/keel-test-prog", tmpdir);
	write_file(path, "#!/bin/sh\necho hi\n", 0644);
	snprintf(fields, sizeof(fields), "\"command\": [\"%s\"]", path);
	j = job_json(fields);
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, -1);
	snprintf(want, sizeof(want), "exec %s: Permission denied", path);
	CHECK_STR(res.error, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Found in PATH but not executable: the same error, not "not
	 * found". */
	j = job_json("\"command\": [\"keel-test-prog\"]");
	run(ex, j, &res);
	CHECK_STR(res.error, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* An absolute path that does not exist. */
	j = job_json("\"command\": [\"/no/such/program\"]");
	run(ex, j, &res);
	CHECK_STR(res.error,
		  "exec /no/such/program: No such file or directory");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* A bad interpreter line: ENOENT from execve as well. */
	write_file(path, "#!/no/such/interpreter\n", 0755);
	snprintf(fields, sizeof(fields), "\"command\": [\"%s\"]", path);
	j = job_json(fields);
	run(ex, j, &res);
	snprintf(want, sizeof(want), "exec %s: No such file or directory",
		 path);
	CHECK_STR(res.error, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Made executable, the same file runs, from PATH too. */
	write_file(path, "#!/bin/sh\necho hi \"$@\"\n", 0755);
	j = job_json("\"command\": [\"keel-test-prog\", \"there\"]");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "hi there\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	remove_tmpdir();
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(descriptors_and_signals)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j;
	struct keel_exec_result res;
	struct sigaction sa;
	sigset_t set;
	int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC on purpose */

	setup();
	CHECK(leak >= 0);
	/* Only 0-2 reach the program (3 is ls's own directory handle). */
	j = job_json("\"command\": [\"/bin/ls\", \"/proc/self/fd\"]");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "0\n1\n2\n3\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	j = job_json("\"command\": [\"/bin/readlink\", \"/proc/self/fd/0\"]");
	run(ex, j, &res);
	CHECK_STR(res.output, "/dev/null\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Ignored SIGPIPE and SIGUSR2 and a blocked SIGTERM in the parent:
	 * none of it reaches the program. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	CHECK_INT(sigaction(SIGPIPE, &sa, NULL), ==, 0);
	CHECK_INT(sigaction(SIGUSR2, &sa, NULL), ==, 0);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	CHECK_INT(sigprocmask(SIG_BLOCK, &set, NULL), ==, 0);
	j = job_json("\"command\": [\"/bin/grep\", \"-E\", "
		     "\"^(SigBlk|SigIgn)\", \"/proc/self/status\"]");
	run(ex, j, &res);
	CHECK_STR(res.output, "SigBlk:\t0000000000000000\n"
			      "SigIgn:\t0000000000000000\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* And the parent's own state is as it was. */
	CHECK_INT(sigaction(SIGPIPE, NULL, &sa), ==, 0);
	CHECK(sa.sa_handler == SIG_IGN);
	CHECK_INT(sigprocmask(SIG_BLOCK, NULL, &set), ==, 0);
	CHECK(sigismember(&set, SIGTERM));
	CHECK(!sigismember(&set, SIGINT));
	close(leak);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Timeouts, cancels, stragglers
 * ------------------------------------------------------------------------ */

TEST(timeout_kills_group)
{
	struct keel_executor *ex = executor(2 * KEEL_SEC, NULL);
	struct keel_job *j =
	    sh_job("echo $$; sleep 100 & sleep 100", "\"timeout\": \"300ms\"");
	struct keel_exec_result res;
	double took;
	pid_t pgid;

	setup();
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_TIMED_OUT);
	CHECK_STR(res.error, "timed out after 300ms");
	CHECK(took >= 0.29);
	CHECK(took < SLOW);
	pgid = first_pid(&res);
	CHECK(pgid > 1);
	CHECK_INT(res.exit_code, ==, -1);
	CHECK_INT(res.signal, ==, SIGTERM);
	CHECK(group_gone(pgid));
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(timeout_sigterm_ignored)
{
	struct keel_executor *ex = executor(700 * KEEL_MSEC, NULL);
	/* The shell and its children ignore SIGTERM: only SIGKILL, after
	 * the grace, ends them. */
	struct keel_job *j = sh_job("trap '' TERM; echo $$; sleep 100 & "
				    "sleep 100; echo survived",
				    "\"timeout\": \"300ms\"");
	struct keel_exec_result res;
	double took;
	pid_t pgid;

	setup();
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_TIMED_OUT);
	CHECK_INT(res.signal, ==, SIGKILL);
	CHECK(took >= 0.95); /* 300 ms + 700 ms, less clock rounding */
	CHECK(took < SLOW);
	pgid = first_pid(&res);
	CHECK(strstr(res.output, "survived") == NULL);
	CHECK(group_gone(pgid));
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(endless_output_times_out)
{
	struct keel_executor *ex = executor(2 * KEEL_SEC, NULL);
	/* yes(1) never blocks on a full pipe for long: the executor must
	 * still look at the clock while it reads. */
	struct keel_job *j = job_json("\"command\": [\"yes\"], "
				      "\"timeout\": \"300ms\"");
	struct keel_exec_result res;
	const char *nl;
	double took;

	setup();
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_TIMED_OUT);
	CHECK(took < SLOW);
	CHECK(res.output != NULL);
	CHECK(strncmp(res.output, "[... ", 5) == 0);
	nl = strchr(res.output, '\n');
	CHECK(nl != NULL);
	/* The default limit, 64 KiB, of whole "y\n" lines (the kill may
	 * cut the last one). */
	CHECK_INT(res.output_len - (size_t)(nl + 1 - res.output), ==, 65536);
	CHECK(strncmp(nl + 1, "y\ny\n", 4) == 0 ||
	      strncmp(nl + 1, "\ny\n", 3) == 0);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

struct canceler {
	struct keel_cancel *tok;
	unsigned delay_ms;
};

static void *cancel_later(void *arg)
{
	struct canceler *c = arg;

	usleep(c->delay_ms * 1000);
	keel_cancel_cancel(c->tok, 0);
	return NULL;
}

TEST(cancel_from_another_thread)
{
	struct keel_executor *ex = executor(2 * KEEL_SEC, NULL);
	struct keel_job *j = sh_job("echo $$; exec sleep 100", "");
	struct keel_cancel *tok = keel_cancel_new(NULL, NULL);
	struct keel_exec_req req = {.run_id = 1, .attempt = 1, .cancel = tok};
	struct canceler c = {tok, 300};
	struct keel_exec_result res;
	pthread_t th;
	double t0, took;

	setup();
	CHECK(tok != NULL);
	CHECK_INT(pthread_create(&th, NULL, cancel_later, &c), ==, 0);
	t0 = keel_test_now();
	CHECK_INT(keel_exec_run(ex, j, &req, &res), ==, 0);
	took = keel_test_now() - t0;
	CHECK_INT(pthread_join(th, NULL), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_CANCELED);
	CHECK_STR(res.error, "canceled");
	CHECK(took >= 0.25);
	CHECK(took < SLOW);
	CHECK(group_gone(first_pid(&res)));
	keel_exec_result_clear(&res);

	/* Already cancelled: SIGTERM reaches a child that may not have
	 * made its process group yet, well before a 60 s grace is over. */
	keel_exec_free(ex);
	ex = executor(60 * KEEL_SEC, NULL);
	for (int i = 0; i < 5; i++) {
		t0 = keel_test_now();
		CHECK_INT(keel_exec_run(ex, j, &req, &res), ==, 0);
		CHECK_INT(res.state, ==, KEEL_RUN_CANCELED);
		CHECK_INT(res.signal, ==, SIGTERM);
		CHECK(keel_test_now() - t0 < SLOW);
		keel_exec_result_clear(&res);
	}
	keel_cancel_free(tok);
	keel_job_free(j);
	keel_exec_free(ex);
	reap_all();
	keel_test_leak_check();
}

/* A logger that keeps its lines, to see what the executor logged. */
static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static char cap_buf[1 << 14];
static size_t cap_len;

static void cap_sink(void *ud, enum keel_log_level level, const char *line,
		     size_t len)
{
	(void)ud;
	(void)level;
	pthread_mutex_lock(&cap_mu);
	if (cap_len + len < sizeof(cap_buf)) {
		memcpy(cap_buf + cap_len, line, len);
		cap_len += len;
		cap_buf[cap_len] = '\0';
	}
	pthread_mutex_unlock(&cap_mu);
}

static struct keel_executor *logging_executor(struct keel_logger **lg)
{
	struct keel_log_config lc;
	struct keel_exec_config cfg;
	struct keel_executor *ex = NULL;

	keel_log_config_init(&lc);
	lc.format = KEEL_LOG_FORMAT_JSON;
	lc.sink = cap_sink;
	lc.level = KEEL_LOG_DEBUG;
	CHECK_INT(keel_log_new(&lc, lg), ==, 0);
	keel_exec_config_init(&cfg);
	cfg.log = *lg;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, 0);
	return ex;
}

TEST(straggler_in_group_killed)
{
	struct keel_logger *lg;
	struct keel_executor *ex = logging_executor(&lg);
	/* The shell exits at once; the background sleep keeps stdout. */
	struct keel_job *j =
	    sh_job("echo $$; sleep 100 & echo started", "\"timeout\": \"1m\"");
	struct keel_exec_result res;
	double took;
	char want[64];
	pid_t pgid;

	setup();
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(took < SLOW);
	pgid = first_pid(&res);
	snprintf(want, sizeof(want), "%d\nstarted\n", (int)pgid);
	CHECK_STR(res.output, want);
	CHECK(group_gone(pgid));
	/* Said why, with the group it killed. */
	pthread_mutex_lock(&cap_mu);
	CHECK_CONTAINS(cap_buf, "\"message\":\"shell command started\"");
	CHECK_CONTAINS(cap_buf, "\"level\":\"WARN\"");
	CHECK_CONTAINS(cap_buf, "output pipe is held");
	snprintf(want, sizeof(want), "\"pgid\":%d", (int)pgid);
	CHECK_CONTAINS(cap_buf, want);
	pthread_mutex_unlock(&cap_mu);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_log_free(lg);
	keel_test_leak_check();
}

TEST(daemon_holding_pipe)
{
	struct keel_executor *ex = executor(-1, NULL);
	/* setsid(1) leaves the group (and cannot be killed with it) and
	 * keeps stdout open for 100 s: the run must end anyway. */
	struct keel_job *j = sh_job("setsid sleep 100 & echo $!; echo parent",
				    "\"timeout\": \"1m\"");
	struct keel_exec_result res;
	double took;
	pid_t daemon;

	setup();
	if (access("/usr/bin/setsid", X_OK) != 0)
		KEEL_TEST_SKIP("no /usr/bin/setsid");
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(took < SLOW);
	daemon = first_pid(&res);
	CHECK(daemon > 1);
	CHECK_CONTAINS(res.output, "parent\n");
	/* It is still there (not ours to kill): clean up. */
	CHECK_INT(kill(daemon, SIGKILL), ==, 0);
	CHECK(group_gone(daemon));
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Limits
 * ------------------------------------------------------------------------ */

TEST(memory_limit)
{
	struct keel_executor *ex = executor(-1, NULL);
	/* awk doubles a string until it has 1 GiB, or fails trying. */
	struct keel_job *j = sh_job(
	    "awk 'BEGIN { s = \"x\"; while (length(s) < 1073741824) s = s s; "
	    "print \"allocated\" }'",
	    "\"memory_limit\": 67108864, \"timeout\": \"2m\"");
	struct keel_exec_result res;

	setup();
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK(res.output == NULL || strstr(res.output, "allocated") == NULL);
	CHECK(res.error[0] != '\0');
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Under the limit, the same kind of program runs. */
	j = sh_job("awk 'BEGIN { s = \"x\"; while (length(s) < 1048576) "
		   "s = s s; print \"allocated\" }'",
		   "\"memory_limit\": 67108864");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.output, "allocated\n");
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(cpu_limit)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct keel_job *j =
	    sh_job("while :; do :; done",
		   "\"cpu_limit\": \"1s\", \"timeout\": \"2m\"");
	struct keel_exec_result res;
	double took;

	setup();
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK(res.signal == SIGXCPU || res.signal == SIGKILL);
	CHECK_CONTAINS(res.error, "CPU time limit of 1s exceeded");
	CHECK(took >= 0.9);
	CHECK(took < 60);
	keel_exec_result_clear(&res);

	/* A program that handles SIGXCPU gets SIGKILL a second later. */
	keel_job_free(j);
	j = sh_job("trap 'echo xcpu' XCPU; while :; do :; done",
		   "\"cpu_limit\": \"1s\", \"timeout\": \"2m\"");
	took = run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.signal, ==, SIGKILL);
	CHECK_CONTAINS(res.error, "CPU time limit of 1s exceeded");
	CHECK(took < 60);
	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Concurrency
 * ------------------------------------------------------------------------ */

#define THREADS 4
#define PER_THREAD 12

struct worker {
	struct keel_executor *ex;
	struct keel_job *echo, *fail, *slow;
	int id;
	int bad;
	char why[1024];
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < PER_THREAD && !w->bad; i++) {
		struct keel_exec_req req = {.run_id = w->id * 1000 + i,
					    .attempt = 1};
		struct keel_exec_result res;
		char want[64];

		switch (i % 3) {
		case 0:
			if (keel_exec_run(w->ex, w->echo, &req, &res) != 0 ||
			    res.state != KEEL_RUN_SUCCEEDED) {
				w->bad = 1;
				snprintf(w->why, sizeof(w->why),
					 "echo: state %d: %s", res.state,
					 res.error);
			}
			snprintf(want, sizeof(want), "run %lld\n",
				 (long long)req.run_id);
			if (!w->bad &&
			    (res.output == NULL || strcmp(res.output, want))) {
				w->bad = 1;
				snprintf(w->why, sizeof(w->why),
					 "echo: output '%.200s', want '%s'",
					 res.output ? res.output : "(null)",
					 want);
			}
			break;
		case 1:
			if (keel_exec_run(w->ex, w->fail, &req, &res) != 0 ||
			    res.exit_code != 3) {
				w->bad = 1;
				snprintf(w->why, sizeof(w->why),
					 "fail: exit %d: %s", res.exit_code,
					 res.error);
			}
			break;
		default:
			if (keel_exec_run(w->ex, w->slow, &req, &res) != 0 ||
			    res.state != KEEL_RUN_TIMED_OUT) {
				w->bad = 1;
				snprintf(w->why, sizeof(w->why),
					 "slow: state %d: %s", res.state,
					 res.error);
			}
			break;
		}
		keel_exec_result_clear(&res);
	}
	return NULL;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	CHECK(d != NULL);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

TEST(concurrent_attempts)
{
	struct keel_executor *ex = executor(KEEL_SEC, NULL);
	struct keel_job *echo = sh_job("echo run $KEEL_RUN_ID", "");
	struct keel_job *fail = sh_job("echo no >&2; exit 3", "");
	struct keel_job *slow = sh_job("sleep 100", "\"timeout\": \"200ms\"");
	struct worker w[THREADS];
	pthread_t th[THREADS];
	int fds;

	setup();
	fds = count_fds();
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ex, echo, fail, slow, i + 1, 0, ""};
		CHECK_INT(pthread_create(&th[i], NULL, worker_main, &w[i]), ==,
			  0);
	}
	for (int i = 0; i < THREADS; i++)
		CHECK_INT(pthread_join(th[i], NULL), ==, 0);
	for (int i = 0; i < THREADS; i++)
		if (w[i].bad)
			KEEL_TEST_FAIL("thread %d: %s", i, w[i].why);
	CHECK_INT(count_fds(), ==, fds); /* nothing leaked */
	reap_all();
	keel_job_free(echo);
	keel_job_free(fail);
	keel_job_free(slow);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Users
 * ------------------------------------------------------------------------ */

static void check_runs_as(struct keel_executor *ex, const char *user,
			  const char *want_uid)
{
	char fields[256], want[64];
	struct keel_job *j;
	struct keel_exec_result res;

	snprintf(fields, sizeof(fields),
		 "\"command\": [\"/usr/bin/id\", \"-u\"], \"user\": \"%s\"",
		 user);
	j = job_json(fields);
	run(ex, j, &res);
	if (res.state != KEEL_RUN_SUCCEEDED)
		KEEL_TEST_FAIL("as %s: %s", user, res.error);
	snprintf(want, sizeof(want), "%s\n", want_uid);
	CHECK_STR(res.output, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);
}

static void check_refused(struct keel_executor *ex, const char *user,
			  const char *want)
{
	char fields[256];
	struct keel_job *j;
	struct keel_exec_result res;

	snprintf(fields, sizeof(fields),
		 "\"command\": [\"/usr/bin/id\"], \"user\": \"%s\"", user);
	j = job_json(fields);
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, -1);
	CHECK_STR(res.error, want);
	CHECK(res.output == NULL);
	keel_exec_result_clear(&res);
	keel_job_free(j);
}

/* 1 when the first line (id -G) lists group 0. */
static int has_group_0(const char *out)
{
	for (const char *p = out; *p && *p != '\n';) {
		if (p[0] == '0' && (p[1] == ' ' || p[1] == '\n'))
			return 1;
		while (*p && *p != ' ' && *p != '\n')
			p++;
		while (*p == ' ')
			p++;
	}
	return 0;
}

TEST(run_as_user)
{
	struct keel_executor *ex = executor(-1, NULL);
	struct passwd *self = getpwuid(geteuid()), *nobody = getpwnam("nobody");
	char self_name[64], uid[32], want[256];
	struct keel_job *j;
	struct keel_exec_result res;

	setup();
	CHECK(self != NULL);
	snprintf(self_name, sizeof(self_name), "%s", self->pw_name);
	snprintf(uid, sizeof(uid), "%d", (int)geteuid());
	check_runs_as(ex, self_name, uid); /* the same user is always fine */
	check_refused(ex, "no-such-user-keel",
		      "user: unknown user 'no-such-user-keel'");

	if (geteuid() != 0) {
		snprintf(want, sizeof(want),
			 "user: keeld is not root, cannot run as 'root'");
		check_refused(ex, "root", want);
		keel_exec_free(ex);
		KEEL_TEST_SKIP("not root: running as another user not "
			       "tested");
	}
	if (nobody == NULL)
		KEEL_TEST_SKIP("no user 'nobody'");
	snprintf(uid, sizeof(uid), "%d", (int)nobody->pw_uid);
	check_runs_as(ex, "nobody", uid);
	check_runs_as(ex, uid, uid); /* by number */

	/* Groups and environment are the user's, not root's. */
	j = job_json("\"command\": [\"/bin/sh\", \"-c\", "
		     "\"id -G; echo $HOME $USER $LOGNAME\"], "
		     "\"user\": \"nobody\"");
	run(ex, j, &res);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK(res.output != NULL);
	CHECK(!has_group_0(res.output));
	snprintf(want, sizeof(want), "%s nobody nobody\n", nobody->pw_dir);
	CHECK_CONTAINS(res.output, want);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	/* Now as a keeld that is not root (this case's own process drops
	 * to nobody for good). */
	CHECK_INT(setgroups(0, NULL), ==, 0);
	CHECK_INT(setgid(nobody->pw_gid), ==, 0);
	CHECK_INT(setuid(nobody->pw_uid), ==, 0);
	/* setuid cleared it; LeakSanitizer needs it to stop the world. */
	CHECK_INT(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), ==, 0);
	check_refused(ex, "root",
		      "user: keeld is not root, cannot run as 'root'");
	check_runs_as(ex, "nobody", uid);
	keel_exec_free(ex);
	keel_test_leak_check();
}
