/*
 * tests/sched/pg_server.h - a throwaway PostgreSQL server for the tests of
 * the PostgreSQL store (one header, for test programs only).
 *
 * pg_server_start() runs initdb in a new temp dir ($TMPDIR or /tmp) and
 * starts postgres on it, listening on a unix socket in that dir only: no
 * TCP port to find or to collide with, and only this test reaches it. It
 * returns once the server accepts connections. pg_server_restart() stops
 * it (fast shutdown: sessions are ended, as a real restart does) and
 * starts it again on the same data and socket; pg_server_destroy() stops
 * it and removes the dir.
 *
 * PostgreSQL refuses to run as root: as root (CI), initdb and postgres run
 * as the "postgres" user that Debian's package creates, which owns the temp
 * dir. The binaries are the newest /usr/lib/postgresql/<version>/bin, or
 * $KEEL_TEST_PG_BIN. When there are none (or no postgres user for root),
 * pg_server_start() says why and returns 1: the caller skips.
 *
 * The postmaster is a child of the process that starts it, made to get
 * SIGQUIT (immediate shutdown) when that process ends, however it ends: a
 * test killed by its timeout leaves no server running (its dir stays).
 * Only that process may stop it (the others' calls do nothing), so a
 * server started before keel_test.h forks its cases is shared by them and
 * stopped by the main process.
 *
 * The server is tuned for tests (fsync off): a crash of the machine loses
 * its data, which is never wanted after the test.
 */
#ifndef KEEL_TEST_PG_SERVER_H
#define KEEL_TEST_PG_SERVER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

/* The server's superuser, made by initdb; trusted on the socket. */
#define PG_SERVER_USER "keel"

struct pg_server {
	char bin[256];	/* the binaries' dir */
	char dir[200];	/* the temp dir: socket, data/, server.log */
	char data[260];
	char log[260];
	int port;	/* names the socket (.s.PGSQL.<port>) only */
	int version;	/* major version of the binaries */
	pid_t pid;	/* the postmaster; 0 = stopped */
	pid_t parent;	/* the process that started it */
	int drop;	/* run initdb and postgres as uid/gid (we are root) */
	uid_t uid;
	gid_t gid;
};

static inline double pg_server_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void pg_server_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* The newest installed server's bin dir into s->bin; 0, or -1. */
static inline int pg_server_find_bin(struct pg_server *s)
{
	const char *env = getenv("KEEL_TEST_PG_BIN");
	const char *prefix = "/usr/lib/postgresql/";
	char path[400];
	glob_t g;

	if (env != NULL && env[0] != '\0') {
		snprintf(path, sizeof(path), "%s/postgres", env);
		if (access(path, X_OK) != 0)
			return -1;
		snprintf(s->bin, sizeof(s->bin), "%s", env);
		s->version = 0;
		return 0;
	}
	s->version = -1;
	if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) != 0)
		return -1;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *p = g.gl_pathv[i];
		int v = atoi(p + strlen(prefix));

		/* "9.6" < "15": compare numbers, not the glob's order. */
		if (v > s->version && access(p, X_OK) == 0) {
			s->version = v;
			snprintf(s->bin, sizeof(s->bin), "%.*s",
				 (int)(strlen(p) - strlen("/postgres")), p);
		}
	}
	globfree(&g);
	return s->version >= 0 ? 0 : -1;
}

/* In a child: output to the log, and the server's user when root. */
static inline void pg_server_child(const struct pg_server *s)
{
	int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	if (s->drop && (setgroups(0, NULL) != 0 || setgid(s->gid) != 0 ||
			setuid(s->uid) != 0))
		_exit(126);
}

/* Runs argv (as the server's user) to its end; its exit status or -1. */
static inline int pg_server_run(const struct pg_server *s, char *const argv[])
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		pg_server_child(s);
		execv(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* 1 when the server's user can use dir (root can use anything). */
static inline int pg_server_can_use(const struct pg_server *s, const char *dir)
{
	int status;
	pid_t pid;

	if (!s->drop)
		return 1;
	pid = fork();
	if (pid < 0)
		return 0;
	if (pid == 0) {
		if (setgroups(0, NULL) != 0 || setgid(s->gid) != 0 ||
		    setuid(s->uid) != 0)
			_exit(2);
		_exit(access(dir, R_OK | W_OK | X_OK) == 0 ? 0 : 1);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The end of the server's log into why, after what. */
static inline void pg_server_why(const struct pg_server *s, char *why,
				 size_t len, const char *what)
{
	char tail[1200] = "";
	int fd = open(s->log, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		off_t end = lseek(fd, 0, SEEK_END);
		off_t from = end > (off_t)sizeof(tail) - 1
				     ? end - (off_t)sizeof(tail) + 1
				     : 0;
		ssize_t n = pread(fd, tail, sizeof(tail) - 1, from);

		tail[n > 0 ? n : 0] = '\0';
		close(fd);
	}
	snprintf(why, len, "%s (%s):\n%s", what, s->log, tail);
}

static inline void pg_server_conninfo(const struct pg_server *s,
				      const char *db, char *out, size_t len)
{
	snprintf(out, len, "host=%s port=%d user=" PG_SERVER_USER " dbname=%s",
		 s->dir, s->port, db);
}

/* Starts postgres on s's data and waits until it accepts connections;
 * 0, or -1 with why. */
static inline int pg_server_launch(struct pg_server *s, char *why, size_t len)
{
	char postgres[300], port[16], info[400];
	char *argv[] = {
		postgres, (char *)"-D", s->data, (char *)"-k", s->dir,
		(char *)"-p", port,
		(char *)"-c", (char *)"listen_addresses=",
		/* Tests: nothing has to survive a crash of the machine. */
		(char *)"-c", (char *)"fsync=off",
		(char *)"-c", (char *)"synchronous_commit=off",
		(char *)"-c", (char *)"full_page_writes=off",
		(char *)"-c", (char *)"shared_buffers=16MB",
		(char *)"-c", (char *)"max_connections=80",
		NULL,
	};
	pid_t parent = getpid(), pid;
	double t0;

	snprintf(postgres, sizeof(postgres), "%s/postgres", s->bin);
	snprintf(port, sizeof(port), "%d", s->port);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(why, len, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		pg_server_child(s);
		/* After setuid, which clears it: the server ends with us. */
		prctl(PR_SET_PDEATHSIG, SIGQUIT);
		if (getppid() != parent)
			_exit(1);
		execv(postgres, argv);
		_exit(127);
	}
	s->pid = pid;
	s->parent = parent;
	pg_server_conninfo(s, "postgres", info, sizeof(info));
	t0 = pg_server_now();
	while (pg_server_now() - t0 < 60) {
		int status;

		if (PQping(info) == PQPING_OK)
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			s->pid = 0;
			pg_server_why(s, why, len, "postgres exited at start");
			return -1;
		}
		pg_server_sleep_ms(20);
	}
	pg_server_why(s, why, len, "postgres did not accept connections in 60 s");
	return -1;
}

/* Stops the server (fast shutdown: sessions ended, data written) and waits
 * for its end; only in the process that started it. */
static inline void pg_server_stop(struct pg_server *s)
{
	static const int sigs[] = { SIGINT, SIGQUIT, SIGKILL };
	static const double waits[] = { 60, 10, 1e9 };

	if (s->pid <= 0 || s->parent != getpid())
		return;
	for (int i = 0; i < 3; i++) {
		double t0 = pg_server_now();

		kill(s->pid, sigs[i]);
		while (pg_server_now() - t0 < waits[i]) {
			int status;
			pid_t got = waitpid(s->pid, &status, WNOHANG);

			if (got == s->pid || (got < 0 && errno == ECHILD)) {
				s->pid = 0;
				return;
			}
			pg_server_sleep_ms(10);
		}
	}
}

/*
 * Makes and starts a server in a new dir under base (NULL: $TMPDIR or
 * /tmp): 0; 1 when this machine cannot run one (why says why: skip); -1
 * when it failed (why has the log's end). A base inside another server's
 * dir is removed with it, even if the process that made this one dies.
 */
static inline int pg_server_start(struct pg_server *s, const char *base,
				  char *why, size_t len)
{
	const char *tmp = base != NULL ? base : getenv("TMPDIR");
	char initdb[300];
	char *icu[] = {
		initdb, (char *)"-D", s->data, (char *)"-U", (char *)PG_SERVER_USER,
		(char *)"-A", (char *)"trust", (char *)"-E", (char *)"UTF8",
		/* ICU's collation sorts "alpha" before "Mid", as most real
		 * databases do: the store must not rely on byte order. */
		(char *)"--locale=C.UTF-8", (char *)"--locale-provider=icu",
		(char *)"--icu-locale=en-US", (char *)"--no-sync", NULL,
	};
	char *plain[] = {
		initdb, (char *)"-D", s->data, (char *)"-U", (char *)PG_SERVER_USER,
		(char *)"-A", (char *)"trust", (char *)"-E", (char *)"UTF8",
		(char *)"--locale=C", (char *)"--no-sync", NULL,
	};

	memset(s, 0, sizeof(*s));
	s->port = 5432;
	s->parent = getpid(); /* whose the dir is, from now on */
	if (pg_server_find_bin(s) != 0) {
		snprintf(why, len,
			 "no PostgreSQL server binaries (%s; apt-get install "
			 "postgresql)",
			 getenv("KEEL_TEST_PG_BIN") != NULL
				 ? "$KEEL_TEST_PG_BIN"
				 : "/usr/lib/postgresql/*/bin");
		return 1;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("postgres");

		if (pw == NULL) {
			snprintf(why, len,
				 "running as root, and there is no 'postgres' "
				 "user to run PostgreSQL as");
			return 1;
		}
		s->drop = 1;
		s->uid = pw->pw_uid;
		s->gid = pw->pw_gid;
	}
	/* A socket's path has at most 107 bytes. */
	if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 80)
		tmp = "/tmp";
	for (int attempt = 0; attempt < 2; attempt++) {
		snprintf(s->dir, sizeof(s->dir), "%s/keel-pg-XXXXXX", tmp);
		if (mkdtemp(s->dir) == NULL) {
			snprintf(why, len, "mkdtemp %s: %s", s->dir,
				 strerror(errno));
			return -1;
		}
		if (s->drop && chown(s->dir, s->uid, s->gid) != 0) {
			snprintf(why, len, "chown %s: %s", s->dir,
				 strerror(errno));
			rmdir(s->dir);
			return -1;
		}
		/* $TMPDIR may be somewhere the postgres user cannot go. */
		if (pg_server_can_use(s, s->dir))
			break;
		rmdir(s->dir);
		if (strcmp(tmp, "/tmp") == 0) {
			snprintf(why, len, "the postgres user cannot use %s",
				 s->dir);
			return -1;
		}
		tmp = "/tmp";
	}
	chmod(s->dir, 0700);
	snprintf(s->data, sizeof(s->data), "%s/data", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/server.log", s->dir);
	snprintf(initdb, sizeof(initdb), "%s/initdb", s->bin);
	/* Servers before 15, or built without ICU: the plain way. */
	if (pg_server_run(s, icu) != 0 && pg_server_run(s, plain) != 0) {
		pg_server_why(s, why, len, "initdb failed");
		return -1;
	}
	return pg_server_launch(s, why, len);
}

/* Stops the server and starts it again on the same data and socket. */
static inline int pg_server_restart(struct pg_server *s, char *why, size_t len)
{
	pg_server_stop(s);
	return pg_server_launch(s, why, len);
}

static inline int pg_server_rm(const char *path, const struct stat *sb,
			       int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Stops the server and removes its dir; only in the process that
 * started it. */
static inline void pg_server_destroy(struct pg_server *s)
{
	if (s->parent != getpid())
		return;
	pg_server_stop(s);
	if (s->dir[0] != '\0')
		nftw(s->dir, pg_server_rm, 16, FTW_DEPTH | FTW_PHYS);
	s->dir[0] = '\0';
}

#endif /* KEEL_TEST_PG_SERVER_H */
