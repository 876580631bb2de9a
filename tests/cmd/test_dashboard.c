/*
 * tests/cmd/test_dashboard.c - keeld's dashboard (src/sched/dashboard.html)
 * in a real browser: Debian's headless Chromium against a real keeld.
 *
 * Two ways of driving Chromium, the simplest that proves each point:
 *   --dump-dom with a virtual time budget: load the page, let its scripts
 *              run, print the DOM. For "after loading, the page shows X".
 *   --remote-debugging-pipe: the DevTools protocol (JSON messages ending in
 *              NUL, commands on fd 3, answers on fd 4) to evaluate
 *              JavaScript in the page in real time, while the test changes
 *              keeld underneath: live refresh, clicks, the token form, the
 *              unreachable banner.
 * The page's hooks on <body>: data-loaded, data-refreshes, data-auth,
 * data-error (see the comment at the top of dashboard.html).
 *
 * Chromium is slow to start on a shared 2-core machine: every wait here is
 * tens of seconds, and each case skips when `chromium` is not installed
 * ($KEEL_CHROMIUM names another binary).
 */
#include "http/http_client.h"
#include "keeld_proc.h"

#include <poll.h>

#define WAIT 45.0 /* seconds for anything the page should show */

/* ---- keeld with the demo jobs ---------------------------------------------- */

static char *chromium_find(void)
{
	const char *env = getenv("KEEL_CHROMIUM"), *path = getenv("PATH");
	char buf[PATH_MAX];

	if (env != NULL && env[0] != '\0')
		return access(env, X_OK) == 0 ? strdup(env) : NULL;
	if (path == NULL)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/chromium", (int)n, path);
		if (n > 0 && access(buf, X_OK) == 0)
			return strdup(buf);
		path += n + (path[n] == ':');
	}
	return NULL;
}

static char *need_chromium(void)
{
	char *c = chromium_find();

	if (c == NULL)
		KEEL_TEST_SKIP("chromium is not installed (apt-get install chromium)");
	return c;
}

static json_t *api(const struct keeld_proc *k, const char *auth,
		   const char *method, const char *path, const char *body,
		   long want)
{
	const char *hdrs[] = { auth, NULL };
	struct hres r;
	json_t *v = NULL;

	http_req((uint16_t)k->port, method, path, body, auth ? hdrs : NULL, &r);
	if (r.status != want) {
		keeld_proc_dump_log(k);
		KEEL_TEST_FAIL("%s %s: status %ld, want %ld: %s", method, path,
			       r.status, want, r.body);
	}
	if (r.len > 0)
		v = json_loads(r.body, 0, NULL);
	hres_free(&r);
	return v;
}

static void put_job(const struct keeld_proc *k, const char *auth,
		    const char *json)
{
	json_decref(api(k, auth, "POST", "/v1/jobs", json, 201));
}

static void run_now(const struct keeld_proc *k, const char *auth,
		    const char *job)
{
	char path[128];

	snprintf(path, sizeof(path), "/v1/jobs/%s/run", job);
	json_decref(api(k, auth, "POST", path, NULL, 202));
}

/* Polls GET path until fn(answer) holds. */
static void api_wait(const struct keeld_proc *k, const char *auth,
		     const char *path, int (*fn)(json_t *, const void *),
		     const void *arg, const char *what)
{
	double end = keel_test_now() + WAIT;

	for (;;) {
		json_t *v = api(k, auth, "GET", path, NULL, 200);
		int ok = fn(v, arg);

		json_decref(v);
		if (ok)
			return;
		if (keel_test_now() > end) {
			keeld_proc_dump_log(k);
			KEEL_TEST_FAIL("keeld: %s did not happen in %.0f s", what, WAIT);
		}
		usleep(100 * 1000);
	}
}

/* A run of job arg ("job=state") is in the runs list. */
static int has_run(json_t *v, const void *arg)
{
	char job[64];
	const char *state = strchr(arg, '=') + 1;
	json_t *r;
	size_t i;

	snprintf(job, sizeof(job), "%.*s", (int)(state - 1 - (const char *)arg),
		 (const char *)arg);
	json_array_foreach(json_object_get(v, "runs"), i, r) {
		if (strcmp(json_string_value(json_object_get(r, "job")), job) == 0 &&
		    strcmp(json_string_value(json_object_get(r, "state")), state) == 0)
			return 1;
	}
	return 0;
}

static int breaker_open(json_t *v, const void *host)
{
	json_t *b;
	size_t i;

	json_array_foreach(json_object_get(v, "breakers"), i, b) {
		if (strcmp(json_string_value(json_object_get(b, "host")), host) == 0 &&
		    strcmp(json_string_value(json_object_get(b, "state")), "open") == 0)
			return 1;
	}
	return 0;
}

/*
 * A port where connections are refused: bound, never listening. Kept bound
 * (fd returned) so nothing else takes it while the test runs.
 */
static int refused_port(unsigned *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
	CHECK_INT(getsockname(fd, (struct sockaddr *)&sa, &len), ==, 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/*
 * keeld --demo with: "tick" (a shell job every second that succeeds),
 * "crash" (demo.crash, run once: a recovered panic), "hook" (an http job to
 * a refused port, 6 attempts: its breaker opens after 5 failures). Returns
 * once keeld's API shows all three outcomes; *host is the breaker's host.
 */
static int start_demo(struct keeld_proc *k, const char *const *extra,
		      const char *auth, char *host, size_t hostlen)
{
	const char *args[8] = { "--demo" };
	char hook[512];
	unsigned port;
	int fd = refused_port(&port), n = 1;

	for (; extra != NULL && *extra != NULL && n < 7; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	keeld_proc_init(k);
	keeld_proc_start_ok(k, args);
	put_job(k, auth, "{\"name\":\"tick\",\"schedule\":\"@every 1s\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/echo\",\"tick\"]}}");
	put_job(k, auth, "{\"name\":\"crash\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"handler\",\"name\":\"demo.crash\"}}");
	snprintf(hook, sizeof(hook),
		 "{\"name\":\"hook\",\"schedule\":\"@every 1h\",\"retry\":"
		 "{\"max_attempts\":6,\"initial\":\"10ms\",\"max\":\"50ms\"},"
		 "\"executor\":{\"type\":\"http\",\"url\":\"http://127.0.0.1:%u/hook\","
		 "\"timeout\":\"5s\"}}",
		 port);
	put_job(k, auth, hook);
	run_now(k, auth, "crash");
	run_now(k, auth, "hook");
	snprintf(host, hostlen, "http://127.0.0.1:%u", port);
	api_wait(k, auth, "/v1/runs?limit=1000", has_run, "tick=succeeded",
		 "a succeeded tick run");
	api_wait(k, auth, "/v1/runs?limit=1000", has_run, "crash=failed",
		 "the crash run failing");
	api_wait(k, auth, "/v1/status", breaker_open, host, "the breaker opening");
	return fd;
}

/* ---- Chromium ---------------------------------------------------------------- */

/* The test's environment with HOME in dir: Chromium's dot-files stay in the
 * test's directory. Built before fork (the child only execs). */
static char **browser_env(const char *dir, char *home, size_t homelen)
{
	size_t n = 0, j = 0;
	char **envp;

	while (environ[n] != NULL)
		n++;
	envp = calloc(n + 2, sizeof(*envp));
	CHECK(envp != NULL);
	snprintf(home, homelen, "HOME=%s", dir);
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "HOME=", 5) != 0)
			envp[j++] = environ[i];
	envp[j++] = home;
	envp[j] = NULL;
	return envp;
}

/* Starts chromium with argv (argv[0] is the binary) and its output in
 * dir/name.log. fd3/fd4 >= 0 become the child's fds 3 and 4. */
static pid_t browser_spawn(const char *dir, const char *name, char *const argv[],
			   int outfd, int fd3, int fd4)
{
	char log[PATH_MAX], home[PATH_MAX + 8];
	char **envp = browser_env(dir, home, sizeof(home));
	pid_t parent = getpid(), pid;
	int logfd;

	snprintf(log, sizeof(log), "%s/%s.log", dir, name);
	logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(logfd >= 0);
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(devnull, 0);
		dup2(outfd >= 0 ? outfd : logfd, 1);
		dup2(logfd, 2);
		if (fd3 >= 0)
			dup2(fd3, 3);
		if (fd4 >= 0)
			dup2(fd4, 4);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	free(envp);
	close(logfd);
	return pid;
}

/* Waits up to timeout for pid; SIGKILL after. The exit status, or -1. */
static int browser_reap(pid_t pid, double timeout)
{
	double end = keel_test_now() + timeout;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		if (keel_test_now() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(20 * 1000);
	}
}

/* The whole of a text file (free it); "" when it cannot be read. */
static char *read_text(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;

	if (f != NULL) {
		FILE *m = open_memstream(&buf, &len);
		char chunk[65536];
		size_t n;

		CHECK(m != NULL);
		while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
			fwrite(chunk, 1, n, m);
		fclose(m);
		fclose(f);
	}
	return buf != NULL ? buf : strdup("");
}

/* chromium --dump-dom url after budget_ms of virtual time: the DOM as
 * text (free it). */
static char *dump_dom(const char *chromium, const char *dir, const char *url,
		      int budget_ms)
{
	static int n;
	char profile[PATH_MAX], budget[64], out[PATH_MAX], name[32];
	char *argv[] = { (char *)chromium, "--headless=new", "--no-sandbox",
			 "--disable-gpu", "--no-first-run",
			 "--disable-background-networking", profile, budget,
			 "--dump-dom", (char *)url, NULL };
	int fd, code;
	char *dom;

	n++;
	snprintf(profile, sizeof(profile), "--user-data-dir=%s/chromium-profile-%d", dir, n);
	snprintf(budget, sizeof(budget), "--virtual-time-budget=%d", budget_ms);
	snprintf(out, sizeof(out), "%s/dom-%d.html", dir, n);
	snprintf(name, sizeof(name), "chromium-dump-%d", n);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	code = browser_reap(browser_spawn(dir, name, argv, fd, -1, -1), 120);
	close(fd);
	if (code != 0)
		KEEL_TEST_FAIL("chromium --dump-dom exited %d (see %s/%s.log)", code,
			       dir, name);
	dom = read_text(out);
	if (dom[0] == '\0')
		KEEL_TEST_FAIL("chromium printed no DOM (see %s/%s.log)", dir, name);
	return dom;
}

/* The element of dom that starts at the first match of open, up to close
 * (both included), copied; fails when absent. */
static char *slice(const char *dom, const char *open, const char *close)
{
	const char *a = strstr(dom, open), *b;

	if (a == NULL)
		KEEL_TEST_FAIL("the DOM has no %s:\n%.3000s", open, dom);
	b = strstr(a, close);
	if (b == NULL)
		KEEL_TEST_FAIL("no %s after %s", close, open);
	return strndup(a, (size_t)(b - a) + strlen(close));
}

/* ---- the DevTools protocol over a pipe ----------------------------------------- */

struct cdp {
	pid_t pid;
	int to, from; /* commands to Chromium, answers from it */
	char *buf;
	size_t len, cap;
	int id;
	char session[128];
	const char *dir;
};

static int high_fd(int fd)
{
	int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);

	CHECK(h >= 0);
	close(fd);
	return h;
}

static void cdp_start(struct cdp *c, const char *chromium, const char *dir)
{
	char profile[PATH_MAX];
	char *argv[] = { (char *)chromium, "--headless=new", "--no-sandbox",
			 "--disable-gpu", "--no-first-run",
			 "--disable-background-networking",
			 "--remote-debugging-pipe", profile, "about:blank", NULL };
	int in[2], out[2];

	memset(c, 0, sizeof(*c));
	c->dir = dir;
	snprintf(profile, sizeof(profile), "--user-data-dir=%s/chromium-profile-cdp", dir);
	CHECK_INT(pipe(in), ==, 0);
	CHECK_INT(pipe(out), ==, 0);
	/* Above 10, so that dup2 onto 3 and 4 in the child cannot clobber one
	 * of them; close-on-exec, so that only 3 and 4 reach Chromium. */
	in[0] = high_fd(in[0]);
	in[1] = high_fd(in[1]);
	out[0] = high_fd(out[0]);
	out[1] = high_fd(out[1]);
	signal(SIGPIPE, SIG_IGN);
	c->pid = browser_spawn(dir, "chromium-cdp", argv, -1, in[0], out[1]);
	close(in[0]);
	close(out[1]);
	c->to = in[1];
	c->from = out[0];
}

static void cdp_send(struct cdp *c, json_t *msg)
{
	char *s = json_dumps(msg, JSON_COMPACT);
	size_t n = strlen(s) + 1, off = 0; /* the NUL ends the message */

	while (off < n) {
		ssize_t w = write(c->to, s + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			KEEL_TEST_FAIL("chromium went away (see %s/chromium-cdp.log)",
				       c->dir);
		off += (size_t)w;
	}
	free(s);
	json_decref(msg);
}

/* The next whole message, or fails after timeout. */
static json_t *cdp_read(struct cdp *c, double timeout)
{
	double end = keel_test_now() + timeout;

	for (;;) {
		char *nul = c->len ? memchr(c->buf, '\0', c->len) : NULL;

		if (nul != NULL) {
			size_t n = (size_t)(nul - c->buf) + 1;
			json_error_t e;
			json_t *m = json_loadb(c->buf, n - 1, 0, &e);

			memmove(c->buf, c->buf + n, c->len - n);
			c->len -= n;
			if (m == NULL)
				KEEL_TEST_FAIL("chromium sent bad JSON: %s", e.text);
			return m;
		}
		if (c->cap - c->len < 65536) {
			c->cap = c->cap * 2 + 131072;
			c->buf = realloc(c->buf, c->cap);
			CHECK(c->buf != NULL);
		}
		{
			struct pollfd p = { .fd = c->from, .events = POLLIN };
			int left = (int)((end - keel_test_now()) * 1000);
			ssize_t r;

			if (left <= 0 || poll(&p, 1, left) == 0)
				KEEL_TEST_FAIL("no answer from chromium in %.0f s", timeout);
			r = read(c->from, c->buf + c->len, c->cap - c->len);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				KEEL_TEST_FAIL("chromium closed the pipe (see %s/chromium-cdp.log)",
					       c->dir);
			c->len += (size_t)r;
		}
	}
}

/* Calls method with params (stolen; NULL for none), in the page's session
 * if attached; returns the result (decref it). Events are skipped. */
static json_t *cdp_call(struct cdp *c, const char *method, json_t *params)
{
	int id = ++c->id;
	json_t *msg = json_pack("{s:i,s:s}", "id", id, "method", method);

	if (params != NULL)
		json_object_set_new(msg, "params", params);
	if (c->session[0])
		json_object_set_new(msg, "sessionId", json_string(c->session));
	cdp_send(c, msg);
	for (;;) {
		json_t *m = cdp_read(c, 120), *res;

		if (json_integer_value(json_object_get(m, "id")) != id) {
			json_decref(m);
			continue;
		}
		if (json_object_get(m, "error") != NULL) {
			char *s = json_dumps(m, 0);

			KEEL_TEST_FAIL("%s: %s", method, s);
		}
		res = json_incref(json_object_get(m, "result"));
		json_decref(m);
		return res;
	}
}

/* Opens url in a new tab and attaches to it. */
static void cdp_open(struct cdp *c, const char *url)
{
	json_t *r = cdp_call(c, "Target.createTarget", json_pack("{s:s}", "url", url));
	json_t *a = cdp_call(c, "Target.attachToTarget",
			     json_pack("{s:s,s:b}", "targetId",
				       json_string_value(json_object_get(r, "targetId")),
				       "flatten", 1));

	snprintf(c->session, sizeof(c->session), "%s",
		 json_string_value(json_object_get(a, "sessionId")));
	CHECK(c->session[0] != '\0');
	json_decref(r);
	json_decref(a);
}

/* The value of a JavaScript expression in the page (decref it; NULL for
 * undefined). */
static json_t *cdp_eval(struct cdp *c, const char *expr)
{
	json_t *r = cdp_call(c, "Runtime.evaluate",
			     json_pack("{s:s,s:b,s:b}", "expression", expr,
				       "returnByValue", 1, "awaitPromise", 1));
	json_t *v;

	if (json_object_get(r, "exceptionDetails") != NULL) {
		char *s = json_dumps(r, 0);

		KEEL_TEST_FAIL("%s threw: %s", expr, s);
	}
	v = json_incref(json_object_get(json_object_get(r, "result"), "value"));
	json_decref(r);
	return v;
}

/* A string expression's value, copied (free it); "" for non-strings. */
static char *cdp_str(struct cdp *c, const char *expr)
{
	json_t *v = cdp_eval(c, expr);
	char *s = strdup(json_is_string(v) ? json_string_value(v) : "");

	json_decref(v);
	return s;
}

/* Waits until the expression is true (real time); one that throws (say,
 * while the page is still loading) is not yet true. Fails with what the
 * page shows otherwise. */
static void cdp_wait(struct cdp *c, const char *expr, double timeout)
{
	double end = keel_test_now() + timeout;
	char *guarded;

	CHECK(asprintf(&guarded, "(() => { try { return (%s); } catch (e) { return false; } })()",
		       expr) > 0);
	for (;;) {
		json_t *v = cdp_eval(c, guarded);
		int ok = json_is_true(v);

		json_decref(v);
		if (ok) {
			free(guarded);
			return;
		}
		if (keel_test_now() > end) {
			char *text = cdp_str(c, "document.body ? document.body.innerText : ''");

			KEEL_TEST_FAIL("the page never had %s in %.0f s; it shows:\n%.4000s",
				       expr, timeout, text);
		}
		usleep(100 * 1000);
	}
}

static void cdp_stop(struct cdp *c)
{
	c->session[0] = '\0';
	json_decref(cdp_call(c, "Browser.close", NULL));
	browser_reap(c->pid, 30);
	close(c->to);
	close(c->from);
	free(c->buf);
}

/* ---- cases --------------------------------------------------------------------- */

TEST(page_is_self_contained)
{
	struct keeld_proc k;
	struct hres r;
	char h[512];

	keeld_proc_init(&k);
	keeld_proc_start_ok(&k, NULL);
	http_get((uint16_t)k.port, "/", &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_CONTAINS(hres_header_get(&r, "Content-Type", h, sizeof(h)), "text/html");
	CHECK_CONTAINS(hres_header_get(&r, "Content-Security-Policy", h, sizeof(h)),
		       "default-src 'self'");
	CHECK_CONTAINS(r.body, "<!doctype html>");
	/* Nothing loaded from elsewhere, no markup built from strings. */
	CHECK(strstr(r.body, "://") == NULL);
	CHECK(strstr(r.body, "<link") == NULL);
	CHECK(strstr(r.body, "src=") == NULL);
	CHECK(strstr(r.body, "innerHTML") == NULL);
	CHECK(strstr(r.body, "outerHTML") == NULL);
	CHECK(strstr(r.body, "insertAdjacentHTML") == NULL);
	CHECK(strstr(r.body, "document.write") == NULL);
	CHECK(strstr(r.body, "prompt(") == NULL); /* blocks headless browsers */
	CHECK_CONTAINS(r.body, "dataset.loaded = \"1\"");
	hres_free(&r);
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	keeld_proc_cleanup(&k);
}

TEST(dump_dom_shows_jobs_runs_panics_breakers)
{
	char *chromium = need_chromium(), host[128], url[160], want[256];
	struct keeld_proc k;
	char *dom, *part;
	int fd = start_demo(&k, NULL, NULL, host, sizeof(host));

	snprintf(url, sizeof(url), "%s/", k.base);
	dom = dump_dom(chromium, k.dir, url, 5000);
	CHECK_CONTAINS(dom, "data-loaded=\"1\"");
	CHECK(strstr(dom, "data-error=") == NULL);
	/* The token form stays hidden: this keeld has no token. */
	CHECK_CONTAINS(dom, "<form id=\"login\" hidden=\"\"");

	part = slice(dom, "<table id=\"jobs\"", "</table>");
	CHECK_CONTAINS(part, "data-job=\"tick\"");
	CHECK_CONTAINS(part, "data-job=\"crash\"");
	CHECK_CONTAINS(part, "data-job=\"hook\"");
	CHECK_CONTAINS(part, "/bin/echo tick");
	CHECK_CONTAINS(part, "<time datetime="); /* next run, last run */
	CHECK_CONTAINS(part, "class=\"state state-failed\" title=\"panic: "); /* crash */
	free(part);
	/* tick runs every second: its last result is the run of this second,
	 * which may still be going on a loaded machine (CI saw one at 5 s). The
	 * runs table below shows its succeeded ones. */
	part = slice(dom, "<tr data-job=\"tick\"", "</tr>");
	if (strstr(part, "class=\"state state-succeeded\">succeeded<") == NULL &&
	    strstr(part, "class=\"state state-running\">running<") == NULL &&
	    strstr(part, "class=\"state state-queued\">queued<") == NULL)
		KEEL_TEST_FAIL("tick's last result is neither succeeded, running nor "
			       "queued:\n%s", part);
	free(part);

	/* Alone on SQLite, this node is the cluster and its leader. */
	part = slice(dom, "<table id=\"cluster\"", "</table>");
	CHECK_CONTAINS(part, "data-alive=\"true\" data-leader=\"true\"");
	CHECK_CONTAINS(part, "(this node)");
	CHECK_CONTAINS(part, "class=\"state state-leader\">leader<");
	free(part);
	CHECK_CONTAINS(dom, "one node (SQLite store)");

	part = slice(dom, "<table id=\"runs\"", "</table>");
	CHECK_CONTAINS(part, "data-job=\"tick\" data-state=\"succeeded\"");
	CHECK_CONTAINS(part, "data-job=\"crash\" data-state=\"failed\"");
	CHECK_CONTAINS(part, " ms<"); /* durations */
	CHECK_CONTAINS(part, "exit 0");
	CHECK_CONTAINS(part, "nil pointer dereference (SIGSEGV)");
	free(part);

	part = slice(dom, "<table id=\"panics\"", "</table>");
	CHECK_CONTAINS(part, ">crash<");
	CHECK_CONTAINS(part, "panic: runtime error: invalid memory address");
	free(part);
	part = slice(dom, "<span class=\"note\" id=\"panics-note\"", "</span>");
	CHECK_CONTAINS(part, ">1 since keeld started");
	free(part);

	snprintf(want, sizeof(want), "<tr data-host=\"%s\" data-state=\"open\">", host);
	part = slice(dom, want, "</tr>");
	CHECK_CONTAINS(part, "state-open\">open<");
	free(part);

	part = slice(dom, "<ul class=\"cards\"", "</ul>");
	CHECK_CONTAINS(part, "panics recovered");
	free(part);
	free(dom);
	close(fd);
	free(chromium);
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	keeld_proc_cleanup(&k);
}

TEST(live_refresh_job_filter_and_state_filter)
{
	char *chromium = need_chromium(), url[160], *s;
	struct keeld_proc k;
	struct cdp c;
	json_t *v;
	int before;

	keeld_proc_init(&k);
	keeld_proc_start_ok(&k, NULL);
	put_job(&k, NULL, "{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/echo\",\"a\"]}}");
	put_job(&k, NULL, "{\"name\":\"b\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/false\"]}}");
	run_now(&k, NULL, "a");
	run_now(&k, NULL, "b");
	api_wait(&k, NULL, "/v1/runs", has_run, "b=failed", "b's run failing");

	snprintf(url, sizeof(url), "%s/", k.base);
	cdp_start(&c, chromium, k.dir);
	cdp_open(&c, url);
	cdp_wait(&c, "document.body.dataset.loaded === '1'", WAIT);
	s = cdp_str(&c, "[...document.querySelectorAll('#jobs tbody tr')]"
			".map(r => r.dataset.job).join(',')");
	CHECK_STR(s, "a,b");
	free(s);
	v = cdp_eval(&c, "Number(document.body.dataset.refreshes)");
	before = (int)json_number_value(v);
	json_decref(v);

	/* Live: what keeld learns after the page loaded shows up by itself. */
	put_job(&k, NULL, "{\"name\":\"late\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/echo\",\"late\"]}}");
	run_now(&k, NULL, "late");
	cdp_wait(&c, "!!document.querySelector('#jobs tr[data-job=\"late\"]')", WAIT);
	cdp_wait(&c, "!!document.querySelector('#runs tr[data-job=\"late\"][data-state=\"succeeded\"]')",
		 WAIT);
	v = cdp_eval(&c, "Number(document.body.dataset.refreshes)");
	CHECK_INT((int)json_number_value(v), >, before);
	json_decref(v);
	/* Relative times, the exact one as a tooltip. */
	s = cdp_str(&c, "(t => t ? t.textContent + '|' + t.title : '')"
			"(document.querySelector('#runs tr[data-job=\"late\"] time'))");
	CHECK(strstr(s, "ago") != NULL || strstr(s, "now") != NULL);
	CHECK(strstr(s, "Z)") != NULL); /* "... (2026-...Z)" */
	free(s);
	s = cdp_str(&c, "document.getElementById('updated').textContent");
	CHECK_CONTAINS(s, "updated");
	free(s);

	/* Click a job: the runs are that job's only, and the address says so. */
	json_decref(cdp_eval(&c, "document.querySelector('#jobs tr[data-job=\"b\"] button').click()"));
	cdp_wait(&c, "document.getElementById('runs-title').textContent === 'Runs of b'", WAIT);
	cdp_wait(&c, "(rs => rs.length > 0 && rs.every(r => r.dataset.job === 'b'))"
		     "([...document.querySelectorAll('#runs tbody tr')])", WAIT);
	s = cdp_str(&c, "location.hash");
	CHECK_STR(s, "#job=b");
	free(s);
	v = cdp_eval(&c, "document.querySelector('#jobs tr[data-job=\"b\"]').className");
	CHECK_STR(json_string_value(v), "selected");
	json_decref(v);
	json_decref(cdp_eval(&c, "document.getElementById('runs-all').click()"));
	cdp_wait(&c, "document.querySelectorAll('#runs tbody tr').length === 3", WAIT);

	/* The state filter. */
	json_decref(cdp_eval(&c, "(s => { s.value = 'failed'; s.dispatchEvent(new Event('change')); })"
			     "(document.getElementById('runs-state'))"));
	cdp_wait(&c, "(rs => rs.length === 1 && rs[0].dataset.state === 'failed')"
		     "([...document.querySelectorAll('#runs tbody tr')])", WAIT);

	/* Pausing stops the refreshes. */
	json_decref(cdp_eval(&c, "document.getElementById('pause').click()"));
	v = cdp_eval(&c, "document.getElementById('pause').getAttribute('aria-pressed')");
	CHECK_STR(json_string_value(v), "true");
	json_decref(v);
	/* A live page refreshes in any 5 s; a paused one stays still (a
	 * refresh in flight at the click may still end: look again). */
	for (int tries = 0;; tries++) {
		int after;

		v = cdp_eval(&c, "Number(document.body.dataset.refreshes)");
		before = (int)json_number_value(v);
		json_decref(v);
		sleep(5);
		v = cdp_eval(&c, "Number(document.body.dataset.refreshes)");
		after = (int)json_number_value(v);
		json_decref(v);
		if (after == before)
			break;
		if (tries == 2)
			KEEL_TEST_FAIL("the paused page still refreshes (%d -> %d)",
				       before, after);
	}

	cdp_stop(&c);
	free(chromium);
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	keeld_proc_cleanup(&k);
}

TEST(token_form_when_the_api_needs_a_token)
{
	static const char auth[] = "Authorization: Bearer dash-T0ken";
	char *chromium = need_chromium(), url[160], *s;
	struct keeld_proc k;
	struct cdp c;
	struct hres r;
	const char *args[] = { "--token", "dash-T0ken", NULL };

	keeld_proc_init(&k);
	keeld_proc_start_ok(&k, args);
	put_job(&k, auth, "{\"name\":\"secret-job\",\"schedule\":\"@every 1h\","
		"\"executor\":{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}");
	/* The page itself is public; its API calls are not. */
	http_get((uint16_t)k.port, "/", &r);
	CHECK_INT(r.status, ==, 200);
	hres_free(&r);
	http_get((uint16_t)k.port, "/v1/status", &r);
	CHECK_INT(r.status, ==, 401);
	hres_free(&r);

	snprintf(url, sizeof(url), "%s/", k.base);
	cdp_start(&c, chromium, k.dir);
	cdp_open(&c, url);
	cdp_wait(&c, "document.body.dataset.auth === 'required'", WAIT);
	cdp_wait(&c, "!document.getElementById('login').hidden && "
		     "document.getElementById('main').hidden", WAIT);
	s = cdp_str(&c, "document.body.dataset.loaded");
	CHECK_STR(s, "0");
	free(s);
	s = cdp_str(&c, "document.body.innerText");
	CHECK(strstr(s, "secret-job") == NULL);
	free(s);

	/* A wrong token is refused, and said so. */
	json_decref(cdp_eval(&c, "document.getElementById('token').value = 'wrong';"
			     "document.querySelector('#login button').click()"));
	cdp_wait(&c, "document.getElementById('login-error').textContent.includes('refused')", WAIT);
	s = cdp_str(&c, "document.body.dataset.loaded");
	CHECK_STR(s, "0");
	free(s);

	/* The right one shows the dashboard. */
	json_decref(cdp_eval(&c, "document.getElementById('token').value = 'dash-T0ken';"
			     "document.querySelector('#login button').click()"));
	cdp_wait(&c, "document.body.dataset.loaded === '1'", WAIT);
	cdp_wait(&c, "!!document.querySelector('#jobs tr[data-job=\"secret-job\"]')", WAIT);
	s = cdp_str(&c, "document.body.dataset.auth");
	CHECK_STR(s, "ok");
	free(s);
	cdp_wait(&c, "document.getElementById('login').hidden && !document.getElementById('forget').hidden",
		 WAIT);

	/* It is remembered across a reload, and can be forgotten. */
	json_decref(cdp_eval(&c, "location.reload()"));
	usleep(300 * 1000);
	cdp_wait(&c, "document.body.dataset.loaded === '1'", WAIT);
	json_decref(cdp_eval(&c, "document.getElementById('forget').click()"));
	cdp_wait(&c, "document.body.dataset.auth === 'required'", WAIT);

	cdp_stop(&c);
	free(chromium);
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	keeld_proc_cleanup(&k);
}

TEST(banner_while_keeld_is_unreachable)
{
	char *chromium = need_chromium(), url[160], listen[64], *s;
	struct keeld_proc k;
	struct cdp c;
	const char *args[] = { "--listen", listen, NULL };

	keeld_proc_init(&k);
	keeld_proc_start_ok(&k, NULL);
	put_job(&k, NULL, "{\"name\":\"survivor\",\"schedule\":\"@every 1h\","
		"\"executor\":{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}");
	snprintf(url, sizeof(url), "%s/", k.base);
	cdp_start(&c, chromium, k.dir);
	cdp_open(&c, url);
	cdp_wait(&c, "document.body.dataset.loaded === '1'", WAIT);
	cdp_wait(&c, "document.getElementById('banner').hidden", WAIT);

	/* keeld goes away: a visible alert, the last data stays. */
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	cdp_wait(&c, "document.body.dataset.error === 'unreachable' && "
		     "!document.getElementById('banner').hidden", WAIT);
	s = cdp_str(&c, "document.getElementById('banner').textContent");
	CHECK_CONTAINS(s, "Cannot reach keeld");
	CHECK_CONTAINS(s, "retrying");
	free(s);
	s = cdp_str(&c, "document.getElementById('banner').getAttribute('role')");
	CHECK_STR(s, "alert");
	free(s);
	cdp_wait(&c, "!!document.querySelector('#jobs tr[data-job=\"survivor\"]')", 1);

	/* Back on the same address: the banner goes by itself. */
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", k.port);
	keeld_proc_start_ok(&k, args);
	cdp_wait(&c, "document.getElementById('banner').hidden && "
		     "document.body.dataset.error === undefined", WAIT);
	cdp_stop(&c);
	free(chromium);
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	keeld_proc_cleanup(&k);
}

TEST(server_data_is_shown_as_text)
{
	/* Markup in what a job definition may carry (an argument, a URL path)
	 * must show as text: an injected <img onerror> would set pwned. */
	char *chromium = need_chromium(), url[160], *s;
	struct keeld_proc k;
	struct cdp c;
	json_t *v;

	keeld_proc_init(&k);
	keeld_proc_start_ok(&k, NULL);
	put_job(&k, NULL, "{\"name\":\"xss\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/echo\","
		"\"<img src=x onerror=\\\"document.body.dataset.pwned=1\\\">\"]}}");
	put_job(&k, NULL, "{\"name\":\"xss-url\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"http\",\"url\":\"http://127.0.0.1:9/<svg/onload=document.body.dataset.pwned=2>\"}}");
	run_now(&k, NULL, "xss");
	api_wait(&k, NULL, "/v1/runs", has_run, "xss=succeeded", "the xss run");
	snprintf(url, sizeof(url), "%s/", k.base);
	cdp_start(&c, chromium, k.dir);
	cdp_open(&c, url);
	cdp_wait(&c, "Number(document.body.dataset.refreshes) >= 2", WAIT);
	s = cdp_str(&c, "document.querySelector('#jobs tr[data-job=\"xss\"]').textContent");
	CHECK_CONTAINS(s, "<img src=x onerror=");
	free(s);
	s = cdp_str(&c, "document.querySelector('#jobs tr[data-job=\"xss-url\"]').textContent");
	CHECK_CONTAINS(s, "<svg/onload=");
	free(s);
	v = cdp_eval(&c, "document.querySelectorAll('img, svg').length");
	CHECK_INT(json_integer_value(v), ==, 0);
	json_decref(v);
	v = cdp_eval(&c, "document.body.dataset.pwned === undefined");
	CHECK(json_is_true(v));
	json_decref(v);
	cdp_stop(&c);
	free(chromium);
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	keeld_proc_cleanup(&k);
}
