/*
 * tests/cmd/keeld_proc.h - a real keeld process for end-to-end tests.
 *
 * A test starts keeld (the binary at KEELD_PATH, set by tests/cmd/
 * CMakeLists.txt; the environment variable KEELD_PATH overrides it) in a
 * temporary directory of its own, talks to it over HTTP on the port the
 * kernel picked, and stops it:
 *
 *     struct keeld_proc k;
 *
 *     keeld_proc_init(&k);                     // mkdtemp $TMPDIR/keeld-<program>.XXXXXX
 *     const char *args[] = { "--demo", NULL };
 *     CHECK_INT(keeld_proc_start(&k, args, 0), ==, 0);   // listening
 *     ... requests to k.base ("http://127.0.0.1:PORT") ...
 *     CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);          // SIGTERM, exit 0
 *     keeld_proc_cleanup(&k);                  // kills if alive, rm -r dir
 *
 * Layout of the temporary directory k.dir:
 *     data/          keeld's --data-dir (k.data_dir; may be changed between
 *                    init and start, e.g. to a second keeld's, or to run a
 *                    restarted keeld on the same state)
 *     keeld-N.log    stdout and stderr of the N-th start (k.log_path), so a
 *                    chatty keeld never blocks on a full pipe and the output
 *                    survives the process
 *     any file the test adds (a jobs file: keeld_proc_write_file)
 *
 * What keeld_proc_start adds to the caller's arguments: --data-dir k.data_dir
 * always, and --listen 127.0.0.1:0 unless the caller passes --listen. The
 * port is parsed from keeld's "keeld: listening on http://ADDR:PORT/" line.
 * The child's environment is the test's without any KEELD_* variable (a
 * developer's KEELD_TOKEN must not change a test), with k.env ("NAME=value"
 * strings, NULL-terminated, optional; they win over the test's), and with
 * ASAN_OPTIONS=allow_user_segv_handler=1 when neither sets ASAN_OPTIONS
 * (keel owns SIGSEGV in sanitizer builds, docs/panic.md). Its stdin is
 * /dev/null.
 *
 * A keeld never outlives its test: the child asks the kernel for SIGKILL
 * when the process that started it dies (PR_SET_PDEATHSIG), so a case that
 * fails with _exit leaves no daemon behind. It does leave its directory, on
 * purpose: the logs are there to read (keeld_proc_dump_log() prints the path
 * and the end of the output before a case fails).
 *
 * Times are seconds; 0 means the default (KEELD_PROC_TIMEOUT, 60 s: this is a
 * shared 2-core machine and sanitizer builds start slowly).
 *
 * Not thread-safe: one struct keeld_proc is used by one thread. Several may
 * run at once (two keelds on one data dir, say).
 */
#ifndef KEEL_TEST_KEELD_PROC_H
#define KEEL_TEST_KEELD_PROC_H

#define _GNU_SOURCE
#include "keel_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KEELD_PATH
#error "KEELD_PATH must name the keeld binary (tests/cmd/CMakeLists.txt)"
#endif

#define KEELD_PROC_TIMEOUT 60.0
#define KEELD_PROC_MAX_ARGS 64

struct keeld_proc {
	char dir[PATH_MAX - 64];      /* the temporary directory (owned) */
	char data_dir[PATH_MAX];      /* --data-dir; default dir/data */
	char log_path[PATH_MAX];      /* stdout+stderr of the last start */
	const char *const *env;       /* extra "NAME=value"s, NULL-ended */
	pid_t pid;                    /* > 0 while running (not yet reaped) */
	int starts;                   /* how many times started */
	/* After keeld_proc_start: */
	unsigned port;                /* listening port */
	char base[96];                /* "http://127.0.0.1:PORT", no slash */
	/* After the process was reaped (stop, kill, wait, or a failed start): */
	int exited;                   /* 1: it exited by itself (WIFEXITED) */
	int code;                     /* exit status, or -1 */
	int signo;                    /* the signal that ended it, or 0 */
};

/* Where keeld is: $KEELD_PATH, else the build's. */
static inline const char *keeld_proc_binary(void)
{
	const char *p = getenv("KEELD_PATH");

	return p != NULL && p[0] != '\0' ? p : KEELD_PATH;
}

/* Creates k->dir ($TMPDIR or /tmp, then keeld-<test program>.XXXXXX) and
 * k->dir/data; fails the case if it cannot. */
static inline void keeld_proc_init(struct keeld_proc *k)
{
	const char *tmp = getenv("TMPDIR");

	memset(k, 0, sizeof(*k));
	k->code = -1;
	/* Named after the test program, to tell whose a left-over one is. */
	snprintf(k->dir, sizeof(k->dir), "%s/keeld-%s.XXXXXX",
		 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp",
		 program_invocation_short_name);
	if (mkdtemp(k->dir) == NULL)
		KEEL_TEST_FAIL("mkdtemp %s: %s", k->dir, strerror(errno));
	snprintf(k->data_dir, sizeof(k->data_dir), "%s/data", k->dir);
	if (mkdir(k->data_dir, 0700) != 0)
		KEEL_TEST_FAIL("mkdir %s: %s", k->data_dir, strerror(errno));
}

/* 1 when k's data directory holds nothing (keeld refused to start
 * without writing), else 0. */
static inline int keeld_proc_data_empty(const struct keeld_proc *k)
{
	DIR *d = opendir(k->data_dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n == 0;
}

/* Writes text to k->dir/name (a jobs file, a token file) and returns the
 * path in out. Fails the case if it cannot. */
static inline void keeld_proc_write_file(const struct keeld_proc *k,
					 const char *name, const char *text,
					 char *out, size_t outlen)
{
	FILE *f;

	snprintf(out, outlen, "%s/%s", k->dir, name);
	f = fopen(out, "we");
	if (f == NULL)
		KEEL_TEST_FAIL("fopen %s: %s", out, strerror(errno));
	if (fputs(text, f) == EOF || fclose(f) != 0)
		KEEL_TEST_FAIL("write %s: %s", out, strerror(errno));
}

/* The output of the last start (stdout and stderr), NUL-terminated; free()
 * it. Never NULL ("" if there is none yet). */
static inline char *keeld_proc_log(const struct keeld_proc *k)
{
	FILE *f = k->log_path[0] ? fopen(k->log_path, "re") : NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f != NULL) {
		do {
			if (cap - len < 4096) {
				char *nb = realloc(buf, cap + 65536);

				if (nb == NULL)
					break;
				buf = nb;
				cap += 65536;
			}
			n = fread(buf + len, 1, cap - len - 1, f);
			len += n;
		} while (n > 0);
		fclose(f);
	}
	if (buf == NULL)
		return strdup("");
	buf[len] = '\0';
	return buf;
}

/* Prints where the directory is and the last 4 KiB of the log on stderr:
 * call it before failing a case whose cause is in keeld's output. */
static inline void keeld_proc_dump_log(const struct keeld_proc *k)
{
	char *log = keeld_proc_log(k);
	size_t n = strlen(log);

	fprintf(stderr, "--- keeld output (%s), last 4 KiB:\n%s\n---\n",
		k->log_path, n > 4096 ? log + n - 4096 : log);
	free(log);
}

static inline void keeld_proc__reaped(struct keeld_proc *k, int status)
{
	k->pid = 0;
	k->exited = WIFEXITED(status);
	k->code = k->exited ? WEXITSTATUS(status) : -1;
	k->signo = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/*
 * Waits up to timeout for keeld to exit by itself: 0 when it did (k->exited,
 * k->code, k->signo say how), -ETIMEDOUT if it still runs (it is left
 * running), -ECHILD if none was running.
 */
static inline int keeld_proc_wait(struct keeld_proc *k, double timeout)
{
	double end = keel_test_now() + (timeout > 0 ? timeout : KEELD_PROC_TIMEOUT);

	if (k->pid <= 0)
		return -ECHILD;
	for (;;) {
		int status;
		pid_t r = waitpid(k->pid, &status, WNOHANG);

		if (r == k->pid) {
			keeld_proc__reaped(k, status);
			return 0;
		}
		if (r < 0 && errno != EINTR)
			KEEL_TEST_FAIL("waitpid %d: %s", (int)k->pid,
				       strerror(errno));
		if (keel_test_now() >= end)
			return -ETIMEDOUT;
		usleep(10 * 1000);
	}
}

/* SIGKILL and reap (a crash-only stop). 0, or -ECHILD if none was running. */
static inline int keeld_proc_kill(struct keeld_proc *k)
{
	if (k->pid <= 0)
		return -ECHILD;
	kill(k->pid, SIGKILL);
	return keeld_proc_wait(k, 3600) == 0 ? 0 : -ETIMEDOUT;
}

/*
 * SIGTERM, then waits up to timeout for keeld to drain and exit: 0 when it
 * exited by itself within it (check k->code: 0 is a clean stop),
 * -ETIMEDOUT when it had to be killed with SIGKILL, -ECHILD if none was
 * running.
 */
static inline int keeld_proc_stop(struct keeld_proc *k, double timeout)
{
	if (k->pid <= 0)
		return -ECHILD;
	kill(k->pid, SIGTERM);
	if (keeld_proc_wait(k, timeout) == 0)
		return 0;
	keeld_proc_kill(k);
	return -ETIMEDOUT;
}

/* Whether "NAME=..." entry e names a variable that list sets. */
static inline int keeld_proc__in(const char *e, const char *const *list)
{
	size_t n = strcspn(e, "=");

	for (; list != NULL && *list != NULL; list++)
		if (strncmp(*list, e, n) == 0 && (*list)[n] == '=')
			return 1;
	return 0;
}

/*
 * The child's environment: the test's minus KEELD_* and minus what k->env
 * sets, then k->env, then ASAN_OPTIONS if still unset. Built before fork,
 * so that the child only makes async-signal-safe calls (libcurl may have
 * threads in the test). Free the array, not the strings (the test's).
 */
static inline char **keeld_proc__envp(const struct keeld_proc *k)
{
	static char asan[] = "ASAN_OPTIONS=allow_user_segv_handler=1";
	static const char *const asan_list[] = { asan, NULL };
	size_t n = 0, extra = 0, i, j = 0;
	int has_asan = 0;
	char **envp;

	while (environ != NULL && environ[n] != NULL)
		n++;
	while (k->env != NULL && k->env[extra] != NULL)
		extra++;
	envp = calloc(n + extra + 2, sizeof(*envp));
	if (envp == NULL)
		KEEL_TEST_FAIL("out of memory");
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "KEELD_", 6) != 0 &&
		    !keeld_proc__in(environ[i], k->env))
			envp[j++] = environ[i];
	for (i = 0; i < extra; i++)
		envp[j++] = (char *)(uintptr_t)k->env[i];
	for (i = 0; i < j; i++)
		has_asan |= keeld_proc__in(envp[i], asan_list);
	if (!has_asan)
		envp[j++] = asan;
	envp[j] = NULL;
	return envp;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static inline void keeld_proc__child(char *const argv[], char *const envp[],
				     int logfd, pid_t parent)
{
	static const char msg[] = "keeld_proc: cannot exec keeld\n";
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

	/* Die with the test: a failed case must leave no daemon behind. The
	 * parent may have died before prctl: then getppid() changed. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	if (devnull >= 0)
		dup2(devnull, STDIN_FILENO);
	dup2(logfd, STDOUT_FILENO);
	dup2(logfd, STDERR_FILENO);
	execve(argv[0], argv, envp);
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(127);
	_exit(127);
}

/* Parses "keeld: listening on http://ADDR:PORT/" from the log, or 0. */
static inline int keeld_proc__parse_port(struct keeld_proc *k, const char *log)
{
	static const char mark[] = "keeld: listening on http://";
	const char *p = strstr(log, mark), *slash, *colon;
	long port;

	if (p == NULL)
		return 0;
	p += sizeof(mark) - 1;
	slash = strchr(p, '/');
	if (slash == NULL)
		return 0; /* the line is still being written */
	colon = memrchr(p, ':', (size_t)(slash - p));
	if (colon == NULL)
		return 0;
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535)
		return 0;
	k->port = (unsigned)port;
	snprintf(k->base, sizeof(k->base), "http://%.*s", (int)(slash - p), p);
	/* 0.0.0.0 (--listen :PORT) is not an address to connect to. */
	if (strncmp(p, "0.0.0.0:", 8) == 0)
		snprintf(k->base, sizeof(k->base), "http://127.0.0.1:%u", k->port);
	return 1;
}

/*
 * Starts keeld with args (NULL-terminated, may be NULL) and waits up to
 * timeout until it listens.
 *   0          listening: k->pid, k->port and k->base are set.
 *   -ECHILD    keeld exited first (a refused start): k->exited, k->code and
 *              k->signo say how, keeld_proc_log() what it printed.
 *   -ETIMEDOUT it neither listened nor exited in time; it was killed.
 * Fails the case if keeld is still running from an earlier start.
 */
static inline int keeld_proc_start(struct keeld_proc *k,
				   const char *const *args, double timeout)
{
	char *argv[KEELD_PROC_MAX_ARGS + 6];
	char **envp;
	int argc = 0, has_listen = 0, logfd;
	double end = keel_test_now() + (timeout > 0 ? timeout : KEELD_PROC_TIMEOUT);
	pid_t parent = getpid(), pid;

	if (k->pid > 0)
		KEEL_TEST_FAIL("keeld_proc_start: keeld %d still runs",
			       (int)k->pid);
	argv[argc++] = (char *)keeld_proc_binary();
	argv[argc++] = (char *)"--data-dir";
	argv[argc++] = k->data_dir;
	for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
		if (i >= KEELD_PROC_MAX_ARGS)
			KEEL_TEST_FAIL("keeld_proc_start: too many arguments");
		if (strcmp(args[i], "--listen") == 0 ||
		    strncmp(args[i], "--listen=", 9) == 0)
			has_listen = 1;
		argv[argc++] = (char *)args[i];
	}
	if (!has_listen) {
		argv[argc++] = (char *)"--listen";
		argv[argc++] = (char *)"127.0.0.1:0";
	}
	argv[argc] = NULL;

	k->starts++;
	k->port = 0;
	k->base[0] = '\0';
	k->exited = 0;
	k->code = -1;
	k->signo = 0;
	snprintf(k->log_path, sizeof(k->log_path), "%s/keeld-%d.log", k->dir,
		 k->starts);
	logfd = open(k->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
		     0644);
	if (logfd < 0)
		KEEL_TEST_FAIL("open %s: %s", k->log_path, strerror(errno));
	envp = keeld_proc__envp(k);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		KEEL_TEST_FAIL("fork: %s", strerror(errno));
	if (pid == 0)
		keeld_proc__child(argv, envp, logfd, parent);
	free(envp);
	close(logfd);
	k->pid = pid;

	for (;;) {
		char *log = keeld_proc_log(k);
		int up = keeld_proc__parse_port(k, log);

		free(log);
		if (up)
			return 0;
		if (keeld_proc_wait(k, 0.001) == 0)
			return -ECHILD;
		if (keel_test_now() >= end) {
			keeld_proc_kill(k);
			return -ETIMEDOUT;
		}
		usleep(20 * 1000);
	}
}

/* keeld_proc_start that fails the case (with keeld's output) unless keeld
 * listens. */
static inline void keeld_proc_start_ok(struct keeld_proc *k,
				       const char *const *args)
{
	int rc = keeld_proc_start(k, args, 0);

	if (rc != 0) {
		keeld_proc_dump_log(k);
		KEEL_TEST_FAIL("keeld did not start: %s (exit %d, signal %d)",
			       rc == -ECHILD ? "it exited" : "timed out", k->code,
			       k->signo);
	}
}

static inline int keeld_proc__rm(const char *path, const struct stat *st,
				 int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Kills keeld if it still runs and removes k->dir (k->data_dir too, if
 * it is inside). Safe to call twice. */
static inline void keeld_proc_cleanup(struct keeld_proc *k)
{
	if (k->pid > 0)
		keeld_proc_kill(k);
	if (k->dir[0] != '\0')
		nftw(k->dir, keeld_proc__rm, 16, FTW_DEPTH | FTW_PHYS);
	k->dir[0] = '\0';
}

#endif /* KEEL_TEST_KEELD_PROC_H */
