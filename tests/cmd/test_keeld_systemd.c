/*
 * tests/cmd/test_keeld_systemd.c - keeld speaks systemd's notify protocol:
 * the test plays systemd's side with a datagram socket in NOTIFY_SOCKET and
 * WATCHDOG_USEC in the environment, as systemd does for a Type=notify unit
 * with WatchdogSec=. keeld says READY=1 when it serves, feeds the watchdog
 * while its scheduler loop is alive, stops feeding it while the loop is
 * stuck (here: the test holds the database locked, so the loop waits on the
 * store), resumes when it is unstuck, and says STOPPING=1 on SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "keel_test.h"
#include "keeld_proc.h"

static int notify_socket(const char *path)
{
	struct sockaddr_un a;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a.sun_path))
		KEEL_TEST_SKIP("socket path too long for AF_UNIX");
	memcpy(a.sun_path, path, strlen(path) + 1);
	CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	return fd;
}

/* The next datagram within timeout seconds, or "" on timeout. */
static void next_msg(int fd, double timeout, char *buf, size_t len)
{
	struct pollfd p = { fd, POLLIN, 0 };
	ssize_t n;

	buf[0] = '\0';
	if (poll(&p, 1, (int)(timeout * 1000)) <= 0)
		return;
	n = recv(fd, buf, len - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
}

/* Waits for a message containing what; returns the time it took. */
static double wait_for(int fd, const char *what, double timeout)
{
	double t0 = keel_test_now(), end = t0 + timeout;
	char buf[512];

	while (keel_test_now() < end) {
		next_msg(fd, end - keel_test_now(), buf, sizeof(buf));
		if (strstr(buf, what) != NULL)
			return keel_test_now() - t0;
	}
	KEEL_TEST_FAIL("no '%s' from keeld within %.1f s", what, timeout);
}

/* The longest gap between two WATCHDOG=1 over a window of seconds. */
static double longest_gap(int fd, double window)
{
	double end = keel_test_now() + window, last = keel_test_now(), gap = 0;
	char buf[512];

	while (keel_test_now() < end) {
		next_msg(fd, end - keel_test_now(), buf, sizeof(buf));
		if (strstr(buf, "WATCHDOG=1") != NULL) {
			double now = keel_test_now();

			if (now - last > gap)
				gap = now - last;
			last = now;
		}
	}
	if (keel_test_now() - last > gap)
		gap = keel_test_now() - last;
	return gap;
}

TEST(ready_watchdog_stall_and_stopping)
{
	static const char jobs[] =
		"[{\"name\":\"tick\",\"schedule\":\"@every 1s\","
		"\"executor\":{\"type\":\"handler\",\"name\":\"demo.ok\"}}]";
	struct keeld_proc k;
	char sock[PATH_MAX], env_sock[PATH_MAX + 16], path[PATH_MAX];
	char dbpath[PATH_MAX + 16];
	/* WatchdogSec=4s: systemd kills a keeld silent for 4 s. */
	const char *env[] = { env_sock, "WATCHDOG_USEC=4000000", NULL };
	const char *args[] = { "--demo", "--jobs", path, "--log-level", "error",
			       NULL };
	sqlite3 *db;
	double gap;
	int fd;

	keeld_proc_init(&k);
	snprintf(sock, sizeof(sock), "%s/notify", k.dir);
	snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", sock);
	keeld_proc_write_file(&k, "jobs.json", jobs, path, sizeof(path));
	fd = notify_socket(sock);
	k.env = env;
	keeld_proc_start_ok(&k, args);

	wait_for(fd, "READY=1", 30);
	/* Healthy: fed often enough that systemd never kills it (keeld
	 * feeds every second, this box may be busy). */
	gap = longest_gap(fd, 5.0);
	printf("  longest gap while healthy: %.2f s\n", gap);
	CHECK(gap < 4.0);

	/* Stuck: the database locked by someone else, the loop waits on the
	 * store (busy timeout, retries), keeld must stop feeding. */
	snprintf(dbpath, sizeof(dbpath), "%s/keeld.db", k.data_dir);
	CHECK_INT(sqlite3_open(dbpath, &db), ==, SQLITE_OK);
	CHECK_INT(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), ==,
		  SQLITE_OK);
	gap = longest_gap(fd, 8.0);
	printf("  longest gap while the store is locked: %.2f s\n", gap);
	CHECK(gap > 4.0); /* systemd would have killed it */
	CHECK_INT(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), ==, SQLITE_OK);
	sqlite3_close(db);

	/* Unstuck: it feeds again (the loop finishes its retries first). */
	wait_for(fd, "WATCHDOG=1", 60);
	gap = longest_gap(fd, 5.0);
	printf("  longest gap after the store is back: %.2f s\n", gap);
	CHECK(gap < 4.0);

	kill(k.pid, SIGTERM);
	wait_for(fd, "STOPPING=1", 30);
	CHECK_INT(keeld_proc_wait(&k, 60), ==, 0);
	CHECK_INT(k.code, ==, 0);
	close(fd);
	keeld_proc_cleanup(&k);
}
