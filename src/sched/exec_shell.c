/*
 * src/sched/exec_shell.c - the shell executor (keel/exec.h): one attempt of
 * a job's command as a child process, supervised until it ends.
 *
 * Everything the child needs (argv, environment, user, limits, file
 * descriptors) is prepared in the parent, so that between fork() and
 * execve() the child only makes system calls: the parent may have other
 * threads holding malloc's or stdio's locks at the moment of the fork.
 *
 * The child: its own session and process group (setsid), every signal
 * disposition back to SIG_DFL and an empty mask (keel installs fault
 * handlers; keeld may ignore SIGPIPE), stdin from /dev/null, stdout and
 * stderr onto one pipe (so their order is kept), every other descriptor
 * closed, RLIMIT_AS / RLIMIT_CPU (soft = the limit, hard = soft + 1 s, so
 * SIGXCPU comes first and SIGKILL a second later), the run-as user
 * (supplementary groups, gid, uid), chdir(dir or "/"), execve. A step that
 * fails is reported to the parent over a close-on-exec pipe as {step,
 * errno}, so the run says "exec /path: Permission denied" instead of a
 * bare exit status 127.
 *
 * The environment is built from scratch (nothing of keeld's leaks in):
 *   PATH=cfg.path, HOME, USER, LOGNAME, SHELL (of the run-as user, or of
 *   keeld's own user), LANG=C.UTF-8, KEEL_JOB=<name>, KEEL_RUN_ID=<id>,
 *   KEEL_ATTEMPT=<n>, KEEL_SCHEDULED_AT=<RFC 3339, UTC, milliseconds:
 *   "2026-11-26T02:30:00.000Z"; absent when the request has none>,
 *   TRACEPARENT=<req->traceparent, when given>,
 * then the job's "env", whose value wins over any of the above.
 *
 * The parent polls the output pipe, the report pipe and a pidfd (or, on
 * kernels without pidfd_open, wakes every 50 ms), and at every wake checks
 * the deadline and the cancel token. A timeout or a cancel sends SIGTERM
 * to the whole process group, SIGKILL after cfg.kill_grace. The leader's
 * exit is observed with waitid(WNOWAIT) and the zombie is reaped only at
 * the very end: until then its pid stays reserved, so kill(-pgid) can
 * never hit an unrelated group that reused the number.
 *
 * When the leader has exited but something still holds the output pipe (a
 * background process, a daemon), the run is over: after STRAGGLER_GRACE
 * (earlier if the deadline or a cancel comes first) the group is killed
 * with SIGKILL, and after another STRAGGLER_GRACE the parent stops reading
 * (a daemon that left the group with setsid cannot be killed by group; it
 * keeps running and gets EPIPE/SIGPIPE on its next write). Processes left
 * in the group that do not hold the pipe are not killed after a normal
 * exit (as cron does); after a timeout or a cancel the group is always
 * SIGKILLed once the leader is gone.
 *
 * Output: only the last output_limit bytes are kept (a ring). When more
 * came, the text starts with the marker
 *     "[... N bytes dropped]\n"
 * where N counts the bytes not shown (at most 3 more than were pushed out
 * of the ring, since a UTF-8 sequence cut by the ring is dropped whole).
 * The kept bytes are then made valid UTF-8 without NUL: each byte that is
 * not part of a valid sequence, and each NUL, becomes U+FFFD, so the text
 * can be up to 3 times output_limit (plus the marker). output_limit 0
 * keeps nothing (output NULL).
 *
 * Thread-safety: no state outside the call; any number of attempts may
 * run at once. No SIGCHLD handler is installed: only our own pid is
 * waited for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <keel/cron.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/log.h>

#include "exec_internal.h"

#define LOG_MODULE "keel.exec"
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define POLL_MAX (50 * KEEL_MSEC)	  /* longest sleep between checks */
#define STRAGGLER_GRACE (100 * KEEL_MSEC) /* pipe held after the leader */
#define READ_CHUNK 16384		  /* on the stack of a pool thread */
#define READ_PER_WAKE (1024 * 1024)	  /* then look at the clock again */
#define CLOSE_FALLBACK_MAX 65536	  /* without close_range(2) */

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

static void set_error(struct keel_exec_result *res, const char *fmt, ...)
    KEEL_PRINTF(2, 3);
static void set_error(struct keel_exec_result *res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
}

static char *str_printf(const char *fmt, ...) KEEL_PRINTF(1, 2);
static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static char *str_dup(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static const char *err_text(int err, char *buf, size_t len)
{
	return strerror_r(err, buf, len); /* GNU: may return a static text */
}

/* "SIGSEGV", or "" for a number without a name. */
static void signal_name(int sig, char *buf, size_t len)
{
	const char *abbrev = sigabbrev_np(sig); /* thread-safe, glibc 2.32 */

	if (abbrev != NULL)
		snprintf(buf, len, " (SIG%s)", abbrev);
	else
		buf[0] = '\0';
}

/* A growing NULL-terminated array of strings we own (argv, envp). */
struct strv {
	char **v;
	size_t n, cap;
};

static int strv_push(struct strv *s, char *str)
{
	if (str == NULL)
		return -ENOMEM;
	if (s->n + 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **v = realloc(s->v, cap * sizeof(*v));

		if (v == NULL) {
			free(str);
			return -ENOMEM;
		}
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = str;
	s->v[s->n] = NULL;
	return 0;
}

static void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* Moves *fd above stdin/stdout/stderr (keeld may run with them closed):
 * the child's dup2 onto 0-2 must never meet one of its own pipe ends. */
static int above_stdio(int *fd)
{
	int n;

	if (*fd > STDERR_FILENO)
		return 0;
	n = fcntl(*fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	if (n < 0)
		return -errno;
	close(*fd);
	*fd = n;
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* ------------------------------------------------------------------------
 * The output tail
 * ------------------------------------------------------------------------ */

struct tail {
	char *buf;
	size_t cap;	/* allocated, grows up to limit */
	size_t limit;	/* bytes kept at most */
	size_t len;	/* bytes kept */
	size_t head;	/* oldest kept byte once the ring is full, else 0 */
	uint64_t total; /* bytes read */
	int oom;	/* the ring could not grow: later bytes were lost */
};

static int tail_grow(struct tail *t, size_t need)
{
	size_t cap;
	char *b;

	if (t->cap >= need)
		return 0;
	cap = t->cap ? t->cap : 4096;
	while (cap < need)
		cap *= 2;
	if (cap > t->limit)
		cap = t->limit;
	b = realloc(t->buf, cap);
	if (b == NULL) {
		t->oom = 1;
		return -ENOMEM;
	}
	t->buf = b;
	t->cap = cap;
	return 0;
}

static void tail_add(struct tail *t, const char *p, size_t n)
{
	size_t w, first, drop;

	t->total += n;
	if (t->limit == 0 || n == 0 || t->oom)
		return;
	if (n >= t->limit) {
		if (tail_grow(t, t->limit) < 0)
			return;
		memcpy(t->buf, p + (n - t->limit), t->limit);
		t->head = 0;
		t->len = t->limit;
		return;
	}
	if (t->len + n <= t->limit) {
		/* Not full yet, so never wrapped: head is 0. */
		if (tail_grow(t, t->len + n) < 0)
			return;
		memcpy(t->buf + t->len, p, n);
		t->len += n;
		return;
	}
	if (tail_grow(t, t->limit) < 0)
		return;
	w = (t->head + t->len) % t->limit;
	first = t->limit - w < n ? t->limit - w : n;
	memcpy(t->buf + w, p, first);
	memcpy(t->buf, p + first, n - first);
	drop = t->len + n - t->limit;
	t->head = (t->head + drop) % t->limit;
	t->len = t->limit;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), 0 if there is none. NUL is not
 * valid here: the text goes into C strings. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t len;

	if (c >= 0x01 && c < 0x80)
		return 1;
	if (c < 0xC2)
		return 0;
	if (c < 0xE0) {
		len = 2;
	} else if (c < 0xF0) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c < 0xF5) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* The kept tail as text (see the top of the file), malloc'd, or NULL with
 * *out_len 0 when nothing is kept. -ENOMEM. */
static int tail_text(struct tail *t, char **out, size_t *out_len)
{
	static const char lost[] = "\n[... output cut: out of memory]\n";
	char marker[64];
	size_t mlen = 0, skip = 0, n, o = 0;
	unsigned char *lin;
	char *text;

	*out = NULL;
	*out_len = 0;
	if (t->len == 0)
		return 0;
	lin = malloc(t->len);
	if (lin == NULL)
		return -ENOMEM;
	/* Oldest first: head.. to the end of the ring, then 0..head. */
	n = t->head == 0 ? t->len : t->limit - t->head;
	memcpy(lin, t->buf + t->head, n);
	memcpy(lin + n, t->buf, t->len - n);
	if (t->total > t->len) {
		/* The ring may have cut a sequence: drop its continuation
		 * bytes rather than show them as U+FFFD. */
		while (skip < 3 && skip < t->len && (lin[skip] & 0xC0) == 0x80)
			skip++;
		mlen = (size_t)snprintf(marker, sizeof(marker),
					"[... %" PRIu64 " bytes dropped]\n",
					t->total - t->len + skip);
	}
	n = t->len - skip;
	text = malloc(mlen + 3 * n + (t->oom ? sizeof(lost) : 0) + 1);
	if (text == NULL) {
		free(lin);
		return -ENOMEM;
	}
	memcpy(text, marker, mlen);
	o = mlen;
	for (size_t i = skip; i < t->len;) {
		size_t k = utf8_seq(lin + i, t->len - i);

		if (k == 0) {
			memcpy(text + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		} else {
			memcpy(text + o, lin + i, k);
			o += k;
			i += k;
		}
	}
	if (t->oom) {
		memcpy(text + o, lost, sizeof(lost) - 1);
		o += sizeof(lost) - 1;
	}
	text[o] = '\0';
	free(lin);
	*out = text;
	*out_len = o;
	return 0;
}

/* ------------------------------------------------------------------------
 * Preparing the child (in the parent)
 * ------------------------------------------------------------------------ */

/* Who the child runs as, and the identity its environment shows. */
struct ident {
	int switch_user; /* 1: setgroups, setgid, setuid in the child */
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int n_groups;
	char *name, *home, *shell;
};

static void ident_free(struct ident *id)
{
	free(id->groups);
	free(id->name);
	free(id->home);
	free(id->shell);
	memset(id, 0, sizeof(*id));
}

/* 0 and *id filled from the passwd entry of user (a name) or uid (when
 * user is NULL), 1 when there is none, -ENOMEM / -errno. */
static int pw_lookup(const char *user, uid_t uid, struct ident *id)
{
	size_t len = 4096;

	for (;;) {
		struct passwd pw, *found = NULL;
		char *buf = malloc(len);
		int rc;

		if (buf == NULL)
			return -ENOMEM;
		rc = user != NULL ? getpwnam_r(user, &pw, buf, len, &found)
				  : getpwuid_r(uid, &pw, buf, len, &found);
		if (rc == ERANGE && len < (1u << 20)) {
			free(buf);
			len *= 2;
			continue;
		}
		if (rc != 0 || found == NULL) {
			free(buf);
			/* "Not found" is reported as 0 or ENOENT, ESRCH, EBADF
			 * or EPERM depending on the NSS module. */
			return rc == 0 || rc == ENOENT || rc == ESRCH ||
				       rc == EBADF || rc == EPERM
				   ? 1
				   : -rc;
		}
		id->uid = pw.pw_uid;
		id->gid = pw.pw_gid;
		id->name = strdup(pw.pw_name);
		id->home = strdup(pw.pw_dir[0] ? pw.pw_dir : "/");
		id->shell = strdup(pw.pw_shell[0] ? pw.pw_shell : "/bin/sh");
		free(buf);
		if (id->name == NULL || id->home == NULL || id->shell == NULL)
			return -ENOMEM;
		return 0;
	}
}

static int all_digits(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/* The supplementary groups of the run-as user (initgroups without
 * touching the process). */
static int load_groups(struct ident *id)
{
	int n = 16;

	for (;;) {
		gid_t *g = malloc((size_t)n * sizeof(*g));
		int want = n;

		if (g == NULL)
			return -ENOMEM;
		if (getgrouplist(id->name, id->gid, g, &want) >= 0) {
			id->groups = g;
			id->n_groups = want;
			return 0;
		}
		free(g);
		if (want <= n)
			want = n * 2;
		if (want > 65536)
			return -E2BIG;
		n = want;
	}
}

/* 0: *id is who runs; 1: a failed run (res->error says why); < 0: errno. */
static int resolve_user(const char *user, struct ident *id,
			struct keel_exec_result *res)
{
	uid_t self = geteuid();
	int rc;

	if (user == NULL) {
		rc = pw_lookup(NULL, self, id);
		if (rc < 0)
			return rc;
		if (rc == 1) {
			/* keeld runs as a uid without a passwd entry (a
			 * container): say what we know. */
			ident_free(id);
			id->uid = self;
			id->gid = getegid();
			id->name = str_printf("%lu", (unsigned long)self);
			id->home = strdup("/");
			id->shell = strdup("/bin/sh");
			if (!id->name || !id->home || !id->shell)
				return -ENOMEM;
		}
		return 0;
	}
	rc = pw_lookup(user, 0, id);
	if (rc == 1 && all_digits(user)) {
		unsigned long long u = strtoull(user, NULL, 10);

		if (u <= (uid_t)-1)
			rc = pw_lookup(NULL, (uid_t)u, id);
	}
	if (rc < 0)
		return rc;
	if (rc == 1) {
		set_error(res, "user: unknown user '%s'", user);
		return 1;
	}
	if (id->uid == self)
		return 0; /* already that user: nothing to switch */
	if (self != 0) {
		set_error(res, "user: keeld is not root, cannot run as '%s'",
			  user);
		return 1;
	}
	id->switch_user = 1;
	return load_groups(id);
}

/* The program execve gets: command[0] itself when it has a '/', else the
 * first executable regular file of that name in path (like execvp, a
 * non-executable match is used only when there is nothing better, so the
 * run fails with "Permission denied", not "not found"). 0, 1 = not found
 * (res->error says), -ENOMEM. */
static int resolve_file(const char *path, const char *name, char **out,
			struct keel_exec_result *res)
{
	char *fallback = NULL;
	const char *p = path;

	if (strchr(name, '/') != NULL) {
		*out = strdup(name);
		return *out ? 0 : -ENOMEM;
	}
	while (*p) {
		const char *end = strchrnul(p, ':');
		size_t dlen = (size_t)(end - p);
		struct stat st;
		char *full;

		/* Empty and relative entries would mean keeld's working
		 * directory: skipped. */
		if (dlen == 0 || *p != '/') {
			p = *end ? end + 1 : end;
			continue;
		}
		full = str_printf("%.*s/%s", (int)dlen, p, name);
		if (full == NULL) {
			free(fallback);
			return -ENOMEM;
		}
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(full, X_OK) == 0) {
				free(fallback);
				*out = full;
				return 0;
			}
			if (fallback == NULL) {
				fallback = full;
				full = NULL;
			}
		}
		free(full);
		p = *end ? end + 1 : end;
	}
	if (fallback != NULL) {
		*out = fallback;
		return 0;
	}
	set_error(res, "command not found: %s", name);
	return 1;
}

static int job_sets(const struct keel_job_shell *s, const char *name)
{
	for (size_t i = 0; i < s->n_env; i++)
		if (strcmp(s->env[i].name, name) == 0)
			return 1;
	return 0;
}

/* NAME=value unless the job sets NAME itself (the job's value wins). */
static int env_base(struct strv *e, const struct keel_job_shell *s,
		    const char *name, const char *value)
{
	if (job_sets(s, name))
		return 0;
	return strv_push(e, str_printf("%s=%s", name, value));
}

static int build_env(struct strv *e, const struct keel_job *j,
		     const struct keel_exec_req *req, const char *path,
		     const struct ident *id)
{
	const struct keel_job_shell *s = &j->shell;
	char num[32], when[96]; /* 96: what GCC thinks ints may need */
	int rc = 0;

	rc = env_base(e, s, "PATH", path);
	if (rc == 0)
		rc = env_base(e, s, "HOME", id->home);
	if (rc == 0)
		rc = env_base(e, s, "USER", id->name);
	if (rc == 0)
		rc = env_base(e, s, "LOGNAME", id->name);
	if (rc == 0)
		rc = env_base(e, s, "SHELL", id->shell);
	if (rc == 0)
		rc = env_base(e, s, "LANG", "C.UTF-8");
	if (rc == 0)
		rc = env_base(e, s, "KEEL_JOB", j->name ? j->name : "");
	snprintf(num, sizeof(num), "%lld", (long long)req->run_id);
	if (rc == 0)
		rc = env_base(e, s, "KEEL_RUN_ID", num);
	snprintf(num, sizeof(num), "%d", req->attempt);
	if (rc == 0)
		rc = env_base(e, s, "KEEL_ATTEMPT", num);
	if (rc == 0 && req->scheduled_at > 0) {
		time_t secs = (time_t)(req->scheduled_at / 1000);
		struct tm tm;

		if (gmtime_r(&secs, &tm) != NULL) {
			snprintf(when, sizeof(when),
				 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
				 tm.tm_hour, tm.tm_min, tm.tm_sec,
				 (int)(req->scheduled_at % 1000));
			rc = env_base(e, s, "KEEL_SCHEDULED_AT", when);
		}
	}
	if (rc == 0 && req->traceparent != NULL && req->traceparent[0])
		rc = env_base(e, s, "TRACEPARENT", req->traceparent);
	for (size_t i = 0; rc == 0 && i < s->n_env; i++)
		rc = strv_push(
		    e, str_printf("%s=%s", s->env[i].name,
				  s->env[i].value ? s->env[i].value : ""));
	return rc;
}

/* ------------------------------------------------------------------------
 * The child, between fork and execve: system calls only
 * ------------------------------------------------------------------------ */

enum step {
	STEP_SETSID = 1,
	STEP_STDIO,
	STEP_RLIMIT,
	STEP_GROUPS,
	STEP_GID,
	STEP_UID,
	STEP_CHDIR,
	STEP_EXEC,
};

/* What the child tells the parent when a step fails (before exec). */
struct child_report {
	int step;
	int err;
};

struct spawn {
	const char *file;
	char **argv, **envp;
	const char *dir;
	int null_fd, out_fd, rep_fd; /* all > 2, close-on-exec */
	const struct ident *id;
	int set_as, set_cpu;
	struct rlimit as, cpu;
	int max_fd; /* for the close loop when close_range is missing */
};

__attribute__((noreturn)) static void child_fail(int fd, int step, int err)
{
	struct child_report r = {step, err};
	ssize_t w;

	do
		w = write(fd, &r, sizeof(r)); /* < PIPE_BUF: atomic */
	while (w < 0 && errno == EINTR);
	_exit(127);
}

static void close_from(int lo, int hi, int max_fd)
{
	if (lo > hi)
		return;
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0u) == 0)
		return;
#endif
	if (hi > max_fd)
		hi = max_fd;
	for (int fd = lo; fd <= hi; fd++)
		close(fd);
}

/*
 * glibc refuses sigaction on the two signals it keeps for itself (32 and
 * 33 on Linux), but an ignored disposition of them, inherited from
 * whatever started keeld, would survive execve into the job. The system
 * call resets them (SIG_DFL needs no restorer), right before execve:
 * glibc's setuid may signal 33 to the threads it believes exist.
 */
static void reset_reserved(int sig)
{
	struct {
		void (*handler)(int);
		unsigned long flags;
		void (*restorer)(void);
		uint64_t mask;
	} ksa = { SIG_DFL, 0, NULL, 0 };

	(void)syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof(ksa.mask));
}

__attribute__((noreturn)) static void child_run(const struct spawn *sp)
{
	struct sigaction sa;
	sigset_t none;

	if (setsid() < 0)
		child_fail(sp->rep_fd, STEP_SETSID, errno);
	/* Handlers first, then the mask: a signal pending in the mask must
	 * not run one of keel's handlers in this copy of the process. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &sa, NULL); /* EINVAL for glibc's own */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (dup2(sp->null_fd, STDIN_FILENO) < 0 ||
	    dup2(sp->out_fd, STDOUT_FILENO) < 0 ||
	    dup2(sp->out_fd, STDERR_FILENO) < 0)
		child_fail(sp->rep_fd, STEP_STDIO, errno);
	/* Everything but 0-2 and the report pipe (close-on-exec). */
	close_from(STDERR_FILENO + 1, sp->rep_fd - 1, sp->max_fd);
	close_from(sp->rep_fd + 1, INT_MAX, sp->max_fd);

	if (sp->set_as && setrlimit(RLIMIT_AS, &sp->as) < 0)
		child_fail(sp->rep_fd, STEP_RLIMIT, errno);
	if (sp->set_cpu && setrlimit(RLIMIT_CPU, &sp->cpu) < 0)
		child_fail(sp->rep_fd, STEP_RLIMIT, errno);
	if (sp->id->switch_user) {
		if (setgroups((size_t)sp->id->n_groups, sp->id->groups) < 0)
			child_fail(sp->rep_fd, STEP_GROUPS, errno);
		if (setgid(sp->id->gid) < 0)
			child_fail(sp->rep_fd, STEP_GID, errno);
		if (setuid(sp->id->uid) < 0)
			child_fail(sp->rep_fd, STEP_UID, errno);
	}
	/* After the switch, so the directory is entered with the job's own
	 * rights. */
	if (chdir(sp->dir) < 0)
		child_fail(sp->rep_fd, STEP_CHDIR, errno);
	/* Only now: setuid and friends may use glibc's own signals. */
	reset_reserved(32);
	reset_reserved(33);
	execve(sp->file, sp->argv, sp->envp);
	child_fail(sp->rep_fd, STEP_EXEC, errno);
}

/* ------------------------------------------------------------------------
 * Supervising the child (in the parent)
 * ------------------------------------------------------------------------ */

enum why { WHY_NONE = 0, WHY_TIMEOUT, WHY_CANCEL };

struct watch {
	pid_t pid; /* also the process group id */
	int out_fd, rep_fd, pidfd;
	int exited; /* leader gone (a zombie: pid still reserved) */
	int64_t exited_at;
	enum why why;
	int term_sent, kill_sent, group_killed;
	int64_t term_at, group_killed_at;
	struct child_report rep;
	size_t rep_len;
	struct tail tail;
};

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* The child's whole group. Until the child has called setsid() (a moment
 * after fork) the group does not exist: the child itself gets the signal
 * then, pending behind its blocked mask until it has reset its handlers,
 * so it cannot be lost. Our unreaped child's pid cannot be anyone else's. */
static void kill_group(pid_t pid, int sig)
{
	if (kill(-pid, sig) < 0 && errno == ESRCH)
		kill(pid, sig);
}

static void check_exit(struct watch *w, int64_t now)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) <
		   0 &&
	       errno == EINTR)
		;
	if (si.si_pid == w->pid) {
		w->exited = 1;
		w->exited_at = now;
		close_fd(&w->pidfd); /* stays readable: would spin the poll */
	}
}

static void drain_out(struct watch *w)
{
	char buf[READ_CHUNK];
	size_t got = 0;

	while (w->out_fd >= 0 && got < READ_PER_WAKE) {
		ssize_t r = read(w->out_fd, buf, sizeof(buf));

		if (r > 0) {
			tail_add(&w->tail, buf, (size_t)r);
			got += (size_t)r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			close_fd(&w->out_fd); /* EOF, or an error */
		}
	}
}

static void drain_report(struct watch *w)
{
	for (;;) {
		ssize_t r;

		if (w->rep_len == sizeof(w->rep)) {
			char extra;

			r = read(w->rep_fd, &extra, 1);
		} else {
			r = read(w->rep_fd, (char *)&w->rep + w->rep_len,
				 sizeof(w->rep) - w->rep_len);
			if (r > 0) {
				w->rep_len += (size_t)r;
				continue;
			}
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			close_fd(&w->rep_fd);
			return;
		}
	}
}

/* While the leader runs: the deadline or a cancel starts the kill
 * (SIGTERM, SIGKILL after grace). Returns the latest time to look again. */
static int64_t stop_if_asked(struct watch *w, int64_t now, int64_t deadline,
			     struct keel_cancel *cancel, int64_t grace)
{
	if (w->why == WHY_NONE) {
		if (deadline != KEEL_NEVER && now >= deadline)
			w->why = WHY_TIMEOUT;
		else if (keel_cancel_err(cancel) != 0)
			w->why = WHY_CANCEL;
		else
			return deadline;
		w->term_sent = grace > 0;
		w->term_at = now;
		kill_group(w->pid, w->term_sent ? SIGTERM : SIGKILL);
		w->kill_sent = !w->term_sent;
	}
	if (w->kill_sent)
		return KEEL_NEVER;
	if (now - w->term_at < grace)
		return w->term_at + grace;
	kill_group(w->pid, SIGKILL);
	w->kill_sent = 1;
	return KEEL_NEVER;
}

/* Once the leader has exited the run is over. A timed-out or cancelled
 * group goes at once; else whoever still holds the pipe gets
 * STRAGGLER_GRACE (less if the deadline or a cancel comes first), then
 * SIGKILL, then STRAGGLER_GRACE more before we stop reading. Returns the
 * latest time to look again, or 0 when we are done. */
static int64_t finish(struct watch *w, int64_t now, int64_t deadline,
		      struct keel_cancel *cancel, struct keel_logger *lg,
		      const char *job)
{
	int64_t at = min64(w->exited_at + STRAGGLER_GRACE, deadline);

	if (!w->group_killed &&
	    (w->why != WHY_NONE ||
	     (w->out_fd >= 0 && (now >= at || keel_cancel_err(cancel))))) {
		if (w->why == WHY_NONE)
			keel_log_warn(lg, LOG_MODULE,
				      "command exited but its output pipe "
				      "is held: killing its process group",
				      KEEL_STR("job", job),
				      KEEL_INT("pgid", w->pid));
		kill_group(w->pid, SIGKILL);
		w->group_killed = 1;
		w->group_killed_at = now;
	}
	if (w->group_killed && w->out_fd >= 0 &&
	    now - w->group_killed_at >= STRAGGLER_GRACE)
		close_fd(&w->out_fd); /* a holder that left the group */
	if (w->out_fd < 0 && w->rep_fd < 0)
		return 0;
	return w->group_killed ? w->group_killed_at + STRAGGLER_GRACE : at;
}

static void supervise(struct watch *w, int64_t deadline,
		      struct keel_cancel *cancel, int64_t grace,
		      struct keel_logger *lg, const char *job)
{
	for (;;) {
		int64_t now = keel_clock_now(NULL), wake = now + POLL_MAX;
		struct pollfd pf[3];
		nfds_t n = 0;
		int ms;

		if (!w->exited)
			check_exit(w, now);
		if (!w->exited) {
			wake = min64(wake, stop_if_asked(w, now, deadline,
							 cancel, grace));
		} else {
			int64_t t = finish(w, now, deadline, cancel, lg, job);

			if (t == 0)
				return;
			wake = min64(wake, t);
		}
		if (w->out_fd >= 0)
			pf[n++] =
			    (struct pollfd){.fd = w->out_fd, .events = POLLIN};
		if (w->rep_fd >= 0)
			pf[n++] =
			    (struct pollfd){.fd = w->rep_fd, .events = POLLIN};
		if (w->pidfd >= 0)
			pf[n++] =
			    (struct pollfd){.fd = w->pidfd, .events = POLLIN};
		ms = wake <= now
			 ? 0
			 : (int)((wake - now + KEEL_MSEC - 1) / KEEL_MSEC);
		if (poll(pf, n, ms) <= 0)
			continue; /* a timeout, EINTR, ENOMEM: look again */
		for (nfds_t i = 0; i < n; i++) {
			if (pf[i].revents == 0)
				continue;
			if (pf[i].fd == w->out_fd)
				drain_out(w);
			else if (pf[i].fd == w->rep_fd)
				drain_report(w);
		}
	}
}

/* ------------------------------------------------------------------------
 * The attempt
 * ------------------------------------------------------------------------ */

static const char *step_name(int step)
{
	switch (step) {
	case STEP_SETSID:
		return "setsid";
	case STEP_STDIO:
		return "redirecting stdio";
	case STEP_RLIMIT:
		return "setrlimit";
	case STEP_GROUPS:
		return "setgroups";
	case STEP_GID:
		return "setgid";
	case STEP_UID:
		return "setuid";
	default:
		return "starting the command";
	}
}

static int64_t cpu_ns(const struct rusage *ru)
{
	return ((int64_t)ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * KEEL_SEC +
	       ((int64_t)ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) *
		   KEEL_USEC;
}

static void classify(const struct keel_job *j, const struct spawn *sp,
		     const struct watch *w, int status, const struct rusage *ru,
		     struct keel_exec_result *res)
{
	char ebuf[128], sname[32], dur[64];

	if (w->rep_len == sizeof(w->rep)) {
		const char *e = err_text(w->rep.err, ebuf, sizeof(ebuf));

		res->state = KEEL_RUN_FAILED;
		if (w->rep.step == STEP_EXEC)
			set_error(res, "exec %s: %s", sp->file, e);
		else if (w->rep.step == STEP_CHDIR)
			set_error(res, "dir %s: %s", sp->dir, e);
		else if (w->rep.step == STEP_UID || w->rep.step == STEP_GID ||
			 w->rep.step == STEP_GROUPS)
			set_error(res, "user '%s': %s: %s", j->shell.user,
				  step_name(w->rep.step), e);
		else
			set_error(res, "%s: %s", step_name(w->rep.step), e);
		return;
	}
	if (WIFEXITED(status))
		res->exit_code = WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		res->signal = WTERMSIG(status);
	if (w->why == WHY_TIMEOUT) {
		res->state = KEEL_RUN_TIMED_OUT;
		if (j->timeout > 0) {
			keel_duration_format(j->timeout, dur, sizeof(dur));
			set_error(res, "timed out after %s", dur);
		} else {
			set_error(res, "timed out");
		}
		return;
	}
	if (w->why == WHY_CANCEL) {
		res->state = KEEL_RUN_CANCELED;
		set_error(res, "canceled");
		return;
	}
	if (WIFEXITED(status)) {
		res->state =
		    res->exit_code == 0 ? KEEL_RUN_SUCCEEDED : KEEL_RUN_FAILED;
		if (res->exit_code != 0)
			set_error(res, "exit status %d", res->exit_code);
		return;
	}
	res->state = KEEL_RUN_FAILED;
	signal_name(res->signal, sname, sizeof(sname));
	/* SIGXCPU comes only from RLIMIT_CPU. A SIGKILL is the hard limit's
	 * when the process had used about its soft limit (the rusage wait4
	 * reports was seen up to 10% below the time the kernel enforces, on
	 * a loaded VM), else someone else's: the OOM killer, a kill -9. */
	if (sp->set_cpu &&
	    (res->signal == SIGXCPU ||
	     (res->signal == SIGKILL &&
	      cpu_ns(ru) >= (int64_t)sp->cpu.rlim_cur * KEEL_SEC / 10 * 9))) {
		keel_duration_format((int64_t)sp->cpu.rlim_cur * KEEL_SEC, dur, sizeof(dur));
		set_error(res,
			  "CPU time limit of %s exceeded: killed by signal "
			  "%d%s",
			  dur, res->signal, sname);
		return;
	}
	set_error(res, "killed by signal %d%s", res->signal, sname);
}

static void limits(const struct keel_job_shell *s, struct spawn *sp)
{
	struct rlimit cur;

	if (s->memory_limit > 0 && getrlimit(RLIMIT_AS, &cur) == 0) {
		rlim_t v = (rlim_t)s->memory_limit;

		if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < v)
			v = cur.rlim_max;
		sp->as.rlim_cur = sp->as.rlim_max = v;
		sp->set_as = 1;
	}
	if (s->cpu_limit > 0 && getrlimit(RLIMIT_CPU, &cur) == 0) {
		rlim_t secs = (rlim_t)(s->cpu_limit / KEEL_SEC);

		if (secs == 0)
			secs = 1;
		/* Soft: SIGXCPU; hard a second later: SIGKILL for a
		 * process that handles SIGXCPU. Never above what keeld
		 * itself may use. */
		sp->cpu.rlim_cur = secs;
		sp->cpu.rlim_max = secs + 1;
		if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < secs + 1) {
			sp->cpu.rlim_max = cur.rlim_max;
			if (sp->cpu.rlim_cur > cur.rlim_max)
				sp->cpu.rlim_cur = cur.rlim_max;
		}
		sp->set_cpu = 1;
	}
	if (getrlimit(RLIMIT_NOFILE, &cur) == 0 &&
	    cur.rlim_cur != RLIM_INFINITY && cur.rlim_cur < CLOSE_FALLBACK_MAX)
		sp->max_fd = (int)cur.rlim_cur;
	else
		sp->max_fd = CLOSE_FALLBACK_MAX;
}

static void res_init(struct keel_exec_result *res)
{
	memset(res, 0, sizeof(*res));
	res->state = KEEL_RUN_FAILED;
	res->exit_code = -1;
}

/* Opens the pipes and /dev/null, all close-on-exec (a child another
 * thread forks at the same moment must not keep our pipe open) and above
 * fd 2. */
static int open_fds(struct spawn *sp, struct watch *w)
{
	int out[2] = {-1, -1}, rep[2] = {-1, -1};
	int rc = 0;

	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0)
		rc = -errno;
	if (rc == 0) {
		sp->null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (sp->null_fd < 0)
			rc = -errno;
	}
	w->out_fd = out[0];
	sp->out_fd = out[1];
	w->rep_fd = rep[0];
	sp->rep_fd = rep[1];
	if (rc == 0)
		rc = above_stdio(&sp->null_fd);
	if (rc == 0)
		rc = above_stdio(&sp->out_fd);
	if (rc == 0)
		rc = above_stdio(&sp->rep_fd);
	if (rc == 0 && (fcntl(w->out_fd, F_SETFL, O_NONBLOCK) < 0 ||
			fcntl(w->rep_fd, F_SETFL, O_NONBLOCK) < 0))
		rc = -errno;
	return rc;
}

static pid_t spawn_child(const struct spawn *sp)
{
	sigset_t all, old;
	pid_t pid;
	int err;

	/* No signal may reach keel's handlers in the child before they are
	 * reset: block everything across the fork (as posix_spawn does). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0)
		child_run(sp);
	err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = err;
	return pid;
}

int keel__exec_shell(struct keel_executor *ex, const struct keel_job *j,
		     const struct keel_exec_req *req, int64_t deadline,
		     struct keel_exec_result *res)
{
	static const struct keel_exec_req no_req = {0};
	const struct keel_job_shell *s;
	const char *path = DEFAULT_PATH;
	struct keel_logger *lg = NULL;
	int64_t grace = 5 * KEEL_SEC;
	struct ident id = {0};
	struct strv argv = {0}, envp = {0};
	struct spawn sp = {0};
	struct watch w = {0};
	struct rusage ru;
	char *file = NULL, ebuf[128];
	int status = 0, rc;

	if (res == NULL)
		return -EINVAL;
	res_init(res);
	if (j == NULL || j->type != KEEL_JOB_SHELL || j->shell.n_command == 0 ||
	    j->shell.command == NULL || j->shell.command[0] == NULL) {
		set_error(res, "not a shell job");
		return -EINVAL;
	}
	s = &j->shell;
	if (req == NULL)
		req = &no_req;
	if (ex != NULL) {
		if (ex->cfg.path != NULL)
			path = ex->cfg.path;
		if (ex->cfg.kill_grace >= 0)
			grace = ex->cfg.kill_grace;
		lg = ex->cfg.log;
	}
	sp.null_fd = sp.out_fd = sp.rep_fd = -1;
	w.out_fd = w.rep_fd = w.pidfd = -1;
	w.tail.limit = s->output_limit > 0 ? (size_t)s->output_limit : 0;

	rc = resolve_user(s->user, &id, res);
	if (rc == 0)
		rc = resolve_file(path, s->shell ? "/bin/sh" : s->command[0],
				  &file, res);
	if (rc == 1) { /* a failed run, res->error says why */
		rc = 0;
		goto out;
	}
	if (rc == 0 && s->shell) {
		rc = strv_push(&argv, strdup("/bin/sh"));
		if (rc == 0)
			rc = strv_push(&argv, strdup("-c"));
		if (rc == 0)
			rc = strv_push(&argv, strdup(s->command[0]));
	}
	for (size_t i = 0; rc == 0 && !s->shell && i < s->n_command; i++)
		rc = strv_push(&argv, str_dup(s->command[i]));
	if (rc == 0)
		rc = build_env(&envp, j, req, path, &id);
	if (rc == -ENOMEM) {
		set_error(res, "out of memory");
		goto out;
	} else if (rc < 0) {
		/* The user database failed us (NSS, LDAP): a failed run,
		 * which a retry may fix. */
		set_error(res, "user '%s': %s", s->user ? s->user : "",
			  err_text(-rc, ebuf, sizeof(ebuf)));
		rc = 0;
		goto out;
	}
	rc = open_fds(&sp, &w);
	if (rc < 0) {
		set_error(res, "pipe: %s", err_text(-rc, ebuf, sizeof(ebuf)));
		goto out;
	}
	sp.file = file;
	sp.argv = argv.v;
	sp.envp = envp.v;
	sp.dir = s->dir != NULL ? s->dir : "/";
	sp.id = &id;
	limits(s, &sp);

	w.pid = spawn_child(&sp);
	if (w.pid < 0) {
		rc = -errno;
		set_error(res, "fork: %s", err_text(-rc, ebuf, sizeof(ebuf)));
		goto out;
	}
	close_fd(&sp.out_fd); /* else we would never see EOF */
	close_fd(&sp.rep_fd);
	close_fd(&sp.null_fd);
#ifdef SYS_pidfd_open
	/* Close-on-exec by definition; -1 (ENOSYS before Linux 5.3): the
	 * loop then notices the exit at its next 50 ms wake. */
	w.pidfd = (int)syscall(SYS_pidfd_open, w.pid, 0);
#endif
	keel_log_debug(lg, LOG_MODULE, "shell command started",
		       KEEL_STR("job", j->name), KEEL_STR("file", file),
		       KEEL_INT("pid", w.pid));

	supervise(&w, deadline, req->cancel, grace, lg, j->name);

	memset(&ru, 0, sizeof(ru));
	while (wait4(w.pid, &status, 0, &ru) < 0 && errno == EINTR)
		;
	classify(j, &sp, &w, status, &ru, res);
	/* Out of memory here loses the output, not the run's outcome. */
	tail_text(&w.tail, &res->output, &res->output_len);
	rc = 0;
out:
	close_fd(&w.out_fd);
	close_fd(&w.rep_fd);
	close_fd(&w.pidfd);
	close_fd(&sp.out_fd);
	close_fd(&sp.rep_fd);
	close_fd(&sp.null_fd);
	free(w.tail.buf);
	strv_free(&argv);
	strv_free(&envp);
	free(file);
	ident_free(&id);
	return rc;
}
