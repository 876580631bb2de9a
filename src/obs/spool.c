/*
 * src/obs/spool.c - the crash spool: the crash hook that writes a record of
 * the crash into a directory, and the reader that turns a record back into
 * an event at the next start (keel/report.h).
 *
 * The writer runs inside a signal handler or right after an unrecovered
 * panic, with the process in an unknown state. So it uses only
 * async-signal-safe calls (clock_gettime, getpid, open, write, fsync,
 * rename, close), the JSON writer on a static buffer (json.h: no malloc,
 * no stdio), and strings computed at install time into static buffers. It
 * writes under a temporary name (".crash-*.tmp") and renames the file into
 * place once complete and synced, so a reader never sees half a record: a
 * crash inside the hook leaves only a temporary file, which the reader
 * ignores.
 *
 * The reader must not trust what it reads (a disk can be full, a file can
 * be edited): records are parsed with jansson (which libkeel links for its
 * HTTP layer) and every member is checked for its type and range before it
 * is used. keel_reporter_send uses the same parse to check extra_json.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <keel/report.h>
#include <keel/trace.h>

#include "json.h"

/* ------------------------------------------------------------------------
 * Reading records (jansson, which libkeel links for its HTTP layer)
 * ------------------------------------------------------------------------ */

/* The whole of s[0..n) as one value: 0, -ENOMEM, or -EINVAL for text that
 * is not one JSON value. */
static int jparse(const char *s, size_t n, size_t flags, json_t **out)
{
	json_error_t err;

	*out = json_loadb(s, n, flags, &err);
	if (*out != NULL)
		return 0;
	return json_error_code(&err) == json_error_out_of_memory ? -ENOMEM
								  : -EINVAL;
}

int keel__report_json_object_check(const char *s, size_t n)
{
	json_t *v;
	int rc;

	if (s == NULL)
		return -EINVAL;
	/* The logger's fields may hold NUL bytes, which the writer escapes. */
	rc = jparse(s, n, JSON_ALLOW_NUL, &v);
	if (rc != 0)
		return rc;
	rc = json_is_object(v) ? 0 : -EINVAL;
	json_decref(v);
	return rc;
}

/* A string member (NULL when absent or null); -EINVAL for another type. */
static int jstr(const json_t *obj, const char *key, const char **out)
{
	const json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -EINVAL;
	*out = json_string_value(v);
	return 0;
}

/* An integer member; -EINVAL when absent (and required) or not an
 * integer. */
static int jint(const json_t *obj, const char *key, int required,
		int64_t *out)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL && !required)
		return 0;
	if (v == NULL || !json_is_integer(v))
		return -EINVAL;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

/* "0x..." as written by keel__json_ptr. */
static int jptr(const json_t *obj, const char *key, void **out)
{
	const char *s;
	unsigned long long x;
	char *end;

	*out = NULL;
	if (jstr(obj, key, &s) != 0)
		return -EINVAL;
	if (s == NULL)
		return 0;
	if (strncmp(s, "0x", 2) != 0 || s[2] == '\0')
		return -EINVAL;
	errno = 0;
	x = strtoull(s + 2, &end, 16);
	if (errno != 0 || *end != '\0')
		return -EINVAL;
	*out = (void *)(uintptr_t)x;
	return 0;
}

/* ------------------------------------------------------------------------
 * The writer: state computed at install time
 * ------------------------------------------------------------------------ */

#define SPOOL_DIR_MAX 3800
#define SPOOL_STR_MAX 256

static char s_dir[SPOOL_DIR_MAX];
static char s_service[SPOOL_STR_MAX], s_release[SPOOL_STR_MAX];
static char s_environment[SPOOL_STR_MAX], s_server_name[SPOOL_STR_MAX];
static char s_event_id[33];
/* The record. One thread at most runs the hook (keel's crash path lets
 * only the first crashing thread through), so static buffers are safe. */
static char s_buf[64 * 1024];
static char s_tmp[PATH_MAX], s_final[PATH_MAX];
static pthread_mutex_t s_install_mu = PTHREAD_MUTEX_INITIALIZER;

static int copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src != NULL ? strlen(src) : 0;

	if (n >= cap)
		return -ENAMETOOLONG;
	memcpy(dst, src != NULL ? src : "", n);
	dst[n] = '\0';
	return 0;
}

static void spool_hook(const struct keel_panic *p, int fd, void *ud);

int keel__spool_install(const char *dir, const struct keel__report_meta *m)
{
	struct keel_frame f;
	int rc = 0;

	if (dir == NULL || m == NULL)
		return -EINVAL;
	if (strlen(dir) >= SPOOL_DIR_MAX || (m->service != NULL &&
	    strlen(m->service) >= SPOOL_STR_MAX) || (m->release != NULL &&
	    strlen(m->release) >= SPOOL_STR_MAX) || (m->environment != NULL &&
	    strlen(m->environment) >= SPOOL_STR_MAX) || (m->server_name != NULL &&
	    strlen(m->server_name) >= SPOOL_STR_MAX))
		return -ENAMETOOLONG;
	/* The hook only runs if keel's fault handlers are there: a fault
	 * before the process's first scope must reach it too. */
	rc = keel_init();
	if (rc != 0)
		return rc;
	pthread_mutex_lock(&s_install_mu);
	/* No hook while the buffers change. */
	keel_crash_hook_set(NULL, NULL);
	rc |= copy_str(s_dir, sizeof(s_dir), dir);
	rc |= copy_str(s_service, sizeof(s_service), m->service);
	rc |= copy_str(s_release, sizeof(s_release), m->release);
	rc |= copy_str(s_environment, sizeof(s_environment), m->environment);
	rc |= copy_str(s_server_name, sizeof(s_server_name), m->server_name);
	/* One crash per process: its event id can be drawn now, and a record
	 * sent twice (two starts racing) is then one event to Sentry. */
	keel__report_event_id(s_event_id);
	/* Load the symbol tables now, not in a signal handler. */
	(void)keel_frame_resolve((void *)((uintptr_t)&keel__spool_install + 1),
				 &f);
	(void)keel_trace_current();
	keel_crash_hook_set(spool_hook, NULL);
	pthread_mutex_unlock(&s_install_mu);
	return rc;
}

/* ------------------------------------------------------------------------
 * The writer: inside the crash hook (async-signal-safe only)
 * ------------------------------------------------------------------------ */

struct sbuf {
	char *p;
	size_t n, cap;
};

static void sb_str(struct sbuf *b, const char *s)
{
	while (*s != '\0' && b->n + 1 < b->cap)
		b->p[b->n++] = *s++;
	b->p[b->n] = '\0';
}

static void sb_dec(struct sbuf *b, uint64_t v)
{
	char tmp[24];
	size_t i = sizeof(tmp) - 1;

	tmp[i] = '\0';
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	sb_str(b, tmp + i);
}

static void write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void say(int fd, const char *a, const char *b)
{
	write_all(fd, a, strlen(a));
	write_all(fd, b, strlen(b));
	write_all(fd, "\n", 1);
}

static void opt_str(struct keel__json *j, const char *key, const char *s)
{
	if (s[0] != '\0') {
		keel__json_key(j, key);
		keel__json_str(j, s);
	}
}

static void render_record(struct keel__json *j, const struct keel_panic *p,
			  int64_t ns, int64_t pid, int named)
{
	const struct keel_fault *f = keel_panic_fault(p);
	const struct keel_trace *tr = keel_trace_current();
	void *const *frames;
	size_t n, i;

	n = keel_crash_stack(&frames);
	if (n == 0)
		n = keel_panic_stack(p, &frames);
	keel__json_obj(j);
	keel__json_key(j, "v");
	keel__json_int(j, 1);
	keel__json_key(j, "event_id");
	keel__json_str(j, s_event_id);
	keel__json_key(j, "time_ns");
	keel__json_int(j, ns);
	keel__json_key(j, "pid");
	keel__json_int(j, pid);
	keel__json_key(j, "message");
	keel__json_str(j, keel_panic_message(p));
	keel__json_key(j, "kind");
	keel__json_str(j, keel_panic_kind_name(keel_panic_kind(p)));
	keel__json_key(j, "runtime");
	keel__json_bool(j, keel_panic_is_runtime(p));
	if (f != NULL && f->signo != 0) {
		keel__json_key(j, "signal");
		keel__json_fault(j, f);
	}
	keel__json_key(j, "frames");
	keel__json_arr(j);
	for (i = 0; i < n && i < KEEL__REPORT_MAX_FRAMES; i++) {
		struct keel_frame fr;

		keel__json_obj(j);
		keel__json_key(j, "pc");
		keel__json_ptr(j, frames[i]);
		/* A fault's own frame is the faulting instruction, not a
		 * return address. */
		if (named && keel__frame_resolve(frames[i],
						 f != NULL && f->signo != 0 &&
							 frames[i] == f->pc,
						 &fr)) {
			keel__json_key(j, "function");
			keel__json_str(j, fr.function);
			if (fr.file != NULL) {
				keel__json_key(j, "file");
				keel__json_str(j, fr.file);
				keel__json_key(j, "line");
				keel__json_int(j, fr.line);
			}
		}
		keel__json_obj_end(j);
	}
	keel__json_arr_end(j);
	if (tr != NULL && keel_trace_valid(tr)) {
		char tid[33], sid[17];

		keel_trace_id_hex(tr, tid);
		keel_span_id_hex(tr, sid);
		keel__json_key(j, "trace_id");
		keel__json_str(j, tid);
		keel__json_key(j, "span_id");
		keel__json_str(j, sid);
	}
	opt_str(j, "service", s_service);
	opt_str(j, "release", s_release);
	opt_str(j, "environment", s_environment);
	opt_str(j, "server_name", s_server_name);
	keel__json_obj_end(j);
	keel__json_append(j, "\n", 1);
}

static void spool_hook(const struct keel_panic *p, int fd, void *ud)
{
	struct keel__json j;
	struct timespec ts;
	struct sbuf b;
	int64_t ns, pid;
	int out, dfd;

	(void)ud;
	if (s_dir[0] == '\0')
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	pid = getpid();
	keel__json_init(&j, s_buf, sizeof(s_buf));
	render_record(&j, p, ns, pid, 1);
	if (j.failed) { /* too long with names: raw addresses still help */
		keel__json_reset(&j);
		render_record(&j, p, ns, pid, 0);
	}
	if (j.failed) {
		say(fd, "keel: crash record not written: ", "too large");
		return;
	}
	b = (struct sbuf){ s_tmp, 0, sizeof(s_tmp) };
	sb_str(&b, s_dir);
	sb_str(&b, "/.crash-");
	sb_dec(&b, (uint64_t)ns);
	sb_str(&b, "-");
	sb_dec(&b, (uint64_t)pid);
	sb_str(&b, ".tmp");
	b = (struct sbuf){ s_final, 0, sizeof(s_final) };
	sb_str(&b, s_dir);
	sb_str(&b, "/crash-");
	sb_dec(&b, (uint64_t)ns);
	sb_str(&b, "-");
	sb_dec(&b, (uint64_t)pid);
	sb_str(&b, ".json");
	out = open(s_tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		say(fd, "keel: crash record not written: cannot create ", s_tmp);
		return;
	}
	write_all(out, j.buf, j.len);
	if (fsync(out) != 0 || close(out) != 0 || rename(s_tmp, s_final) != 0) {
		(void)unlink(s_tmp);
		say(fd, "keel: crash record not written: ", s_final);
		return;
	}
	/* The rename itself must reach the disk too. */
	dfd = open(s_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		(void)close(dfd);
	}
	say(fd, "keel: crash record written to ", s_final);
}

/* ------------------------------------------------------------------------
 * The reader
 * ------------------------------------------------------------------------ */

int keel__spool_is_record(const char *name)
{
	size_t n = strlen(name);

	return n > 11 && strncmp(name, "crash-", 6) == 0 &&
	       strcmp(name + n - 5, ".json") == 0;
}

void keel__spool_set_aside(const char *path, int why)
{
	char bad[PATH_MAX];
	int n = snprintf(bad, sizeof(bad), "%s.bad", path);

	if (n < 0 || (size_t)n >= sizeof(bad) || rename(path, bad) != 0) {
		fprintf(stderr, "keel: unreadable crash record %s (%s); "
				"could not rename it: %s\n",
			path, strerror(-why), strerror(errno));
		return;
	}
	fprintf(stderr, "keel: unreadable crash record %s (%s), moved to %s\n",
		path, strerror(-why), bad);
}

#define SPOOL_FILE_MAX (1024 * 1024)

static int read_file(const char *path, char **out, size_t *outn)
{
	struct stat st;
	char *buf;
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
	} else if (!S_ISREG(st.st_mode) || st.st_size > SPOOL_FILE_MAX) {
		rc = -EINVAL;
	}
	if (rc != 0) {
		close(fd);
		return rc;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*outn = n;
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return 0;
	*out = strdup(s);
	return *out != NULL ? 0 : -ENOMEM;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Lowercase hex of exactly n bytes. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
	size_t i;

	if (s == NULL || strlen(s) != 2 * n)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int read_frames(const json_t *arr, struct keel__report_item *it)
{
	size_t n, i;

	if (arr == NULL)
		return 0;
	if (!json_is_array(arr))
		return -EINVAL;
	n = json_array_size(arr);
	if (n > KEEL__REPORT_MAX_FRAMES)
		n = KEEL__REPORT_MAX_FRAMES;
	it->frames = calloc(n != 0 ? n : 1, sizeof(*it->frames));
	if (it->frames == NULL)
		return -ENOMEM;
	it->frames_named = 1;
	it->frames_owned = 1;
	for (i = 0; i < n; i++) {
		const json_t *f = json_array_get(arr, i);
		struct keel__report_frame *fr = &it->frames[it->nframes++];
		const char *fn, *file;
		int64_t line = 0;
		char *cfn, *cfile;

		if (!json_is_object(f) || jptr(f, "pc", &fr->pc) != 0 ||
		    jstr(f, "function", &fn) != 0 ||
		    jstr(f, "file", &file) != 0 ||
		    jint(f, "line", 0, &line) != 0 || line < 0 ||
		    line > INT_MAX)
			return -EINVAL;
		if (dup_opt(fn, &cfn) != 0)
			return -ENOMEM;
		fr->function = cfn;
		if (dup_opt(file, &cfile) != 0)
			return -ENOMEM;
		fr->file = cfile;
		fr->line = (int)line;
	}
	return 0;
}

static int record_to_item(const json_t *v, const char *path,
			  struct keel__report_item *it)
{
	const char *msg, *kind, *s, *tid, *sid;
	const json_t *sig;
	int64_t ver = 0, x;
	char extra[128];
	int rc;

	if (!json_is_object(v) || jint(v, "v", 1, &ver) != 0 || ver != 1)
		return -EINVAL;
	if (jstr(v, "message", &msg) != 0 || msg == NULL ||
	    jstr(v, "kind", &kind) != 0 ||
	    jint(v, "time_ns", 1, &it->timestamp) != 0 || it->timestamp < 0 ||
	    jint(v, "pid", 0, &it->pid) != 0 ||
	    !json_is_boolean(json_object_get(v, "runtime")))
		return -EINVAL;
	it->level = "fatal";
	it->handled = 0;
	it->has_panic = 1;
	it->panic_runtime = json_is_true(json_object_get(v, "runtime"));
	if (jstr(v, "event_id", &s) != 0)
		return -EINVAL;
	if (s != NULL) {
		uint8_t id[16];

		if (unhex(s, id, 16) != 0)
			return -EINVAL;
		memcpy(it->event_id, s, 33);
	} else {
		keel__report_event_id(it->event_id);
	}
	sig = json_object_get(v, "signal");
	if (sig != NULL) {
		if (!json_is_object(sig) || jint(sig, "signo", 1, &x) != 0 ||
		    x <= 0 || x >= 65)
			return -EINVAL;
		it->fault.signo = (int)x;
		x = 0;
		if (jint(sig, "code", 0, &x) != 0 || x < INT_MIN || x > INT_MAX ||
		    jptr(sig, "addr", &it->fault.addr) != 0 ||
		    jptr(sig, "pc", &it->fault.pc) != 0)
			return -EINVAL;
		it->fault.code = (int)x;
	}
	rc = read_frames(json_object_get(v, "frames"), it);
	if (rc != 0)
		return rc;
	if (jstr(v, "trace_id", &tid) != 0 || jstr(v, "span_id", &sid) != 0)
		return -EINVAL;
	if (tid != NULL) {
		if (unhex(tid, it->trace.trace_id, 16) != 0 ||
		    (sid != NULL && unhex(sid, it->trace.span_id, 8) != 0))
			return -EINVAL;
		/* A trace id without a span id is still worth reporting. */
		it->has_trace = 1;
	}
	if ((rc = dup_opt(msg, &it->message)) != 0 ||
	    (rc = dup_opt(msg, &it->panic_message)) != 0 ||
	    (rc = dup_opt(kind != NULL ? kind : "unknown", &it->panic_kind)) != 0)
		return rc;
	if (jstr(v, "service", &s) != 0 || dup_opt(s, &it->service) != 0 ||
	    jstr(v, "release", &s) != 0 || dup_opt(s, &it->release) != 0 ||
	    jstr(v, "environment", &s) != 0 ||
	    dup_opt(s, &it->environment) != 0 ||
	    jstr(v, "server_name", &s) != 0 ||
	    dup_opt(s, &it->server_name) != 0)
		return -EINVAL;
	snprintf(extra, sizeof(extra), "{\"pid\":%lld}", (long long)it->pid);
	if (dup_opt(extra, &it->extra) != 0)
		return -ENOMEM;
	it->extra_len = strlen(it->extra);
	return dup_opt(path, &it->spool_path);
}

int keel__spool_read(const char *path, struct keel__report_item **out)
{
	struct keel__report_item *it;
	json_t *v;
	char *buf = NULL;
	size_t n = 0;
	int rc;

	*out = NULL;
	rc = read_file(path, &buf, &n);
	if (rc != 0)
		return rc;
	rc = jparse(buf, n, 0, &v);
	free(buf);
	if (rc != 0)
		return rc;
	it = calloc(1, sizeof(*it));
	if (it == NULL) {
		json_decref(v);
		return -ENOMEM;
	}
	rc = record_to_item(v, path, it);
	json_decref(v);
	if (rc != 0) {
		keel__report_item_free(it);
		return rc;
	}
	*out = it;
	return 0;
}
