/*
 * cmd/keelctl/keelctl.h - what keelctl's files share: the session (server,
 * token, output mode, one libcurl handle), the HTTP calls, and the helpers
 * that turn the API's JSON into lines for people.
 *
 * keelctl is a program, not a library: nothing here is exported, and every
 * function that can end a command returns the process' exit status, so a
 * command can `return kc_do(...)` as soon as something fails:
 *
 *   KC_OK           0  the command did what was asked
 *   KC_FAIL         1  the server said no (4xx/5xx), or a local failure
 *                      (unreadable file, out of memory, a response keelctl
 *                      cannot read); the message is already on stderr
 *   KC_USAGE        2  bad command line; usage already on stderr
 *   KC_UNREACHABLE  3  no answer from the server (connect, DNS, TLS,
 *                      timeout); the message is already on stderr
 *
 * Thread-safety: none needed, keelctl has one thread.
 */
#ifndef KEELCTL_H
#define KEELCTL_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>

#include <curl/curl.h>
#include <jansson.h>

#include <keel/common.h>

enum {
	KC_OK = 0,
	KC_FAIL = 1,
	KC_USAGE = 2,
	KC_UNREACHABLE = 3,
};

/* One invocation of keelctl. */
struct kc {
	char *server;	   /* base URL, no trailing '/' (owned) */
	const char *token; /* NULL = none; never printed */
	int json;	   /* --json: the server's JSON instead of tables */
	long timeout_ms;   /* per request, connect included */
	int color;	   /* stdout is a TTY and NO_COLOR is unset */
	CURL *curl;	   /* reused: one connection for a whole command */
	char curl_err[CURL_ERROR_SIZE];
	/* The last "cannot connect" message; kc_call prints it too unless
	 * quiet (watch reports an outage once, not every second). */
	char unreachable[CURL_ERROR_SIZE + 256];
	int quiet;
	/* Command options (main.c checks which command takes which). */
	int wait;	    /* run --wait */
	long limit;	    /* runs, events --limit; 0 = the server's default */
	const char *state;  /* runs --state */
	const char *before; /* runs, events --before */
};

/* ---- strings --------------------------------------------------------- */

/* A growing NUL-terminated string. `failed` sticks after an allocation
 * failure, so a sequence of appends is checked once at the end. */
struct kc_buf {
	char *p;
	size_t len, cap;
	int failed;
};

void kc_buf_free(struct kc_buf *b);
/* Empties b, keeping its memory (and clearing failed). */
void kc_buf_reset(struct kc_buf *b);
void kc_buf_add(struct kc_buf *b, const char *s, size_t n);
void kc_buf_puts(struct kc_buf *b, const char *s);
void kc_buf_printf(struct kc_buf *b, const char *fmt, ...) KEEL_PRINTF(2, 3);
/* Appends s percent-encoded for one path segment or query value. */
void kc_buf_escape(struct kc_buf *b, const char *s);

/* ---- HTTP (client.c) --------------------------------------------------- */

struct kc_resp {
	long status;	 /* HTTP status */
	json_t *body;	 /* the parsed JSON body; NULL when empty */
	char result[16]; /* X-Keel-Result ("" when absent) */
};

/* Set by watch's SIGINT/SIGTERM handler; a request in flight is abandoned
 * when it is set, so Ctrl-C does not wait for a hung server's timeout. */
extern volatile sig_atomic_t kc_stop;

/* Sets up curl for kc (after kc->server etc. are set); KC_FAIL on error. */
int kc_open(struct kc *kc);
void kc_close(struct kc *kc);

/*
 * kc_call - sends method path (path starts with '/', query included, already
 * escaped) with body (NULL = none) and fills *resp whatever the status.
 * Returns KC_OK when an answer came, KC_UNREACHABLE when none did,
 * KC_FAIL when the answer is not JSON where JSON was due (a 2xx with a
 * body that does not parse); messages printed. The caller frees with
 * kc_resp_clear, also after a failure.
 */
int kc_call(struct kc *kc, const char *method, const char *path,
	    const json_t *body, struct kc_resp *resp);

/* KC_OK for a 2xx; else prints "keelctl: [what: ]<reason> (HTTP n)" and
 * returns KC_FAIL. what may be NULL. */
int kc_check(struct kc *kc, const struct kc_resp *resp, const char *what);

/* kc_call, then kc_check. */
int kc_do(struct kc *kc, const char *method, const char *path,
	  const json_t *body, struct kc_resp *resp);

void kc_resp_clear(struct kc_resp *resp);

/* ---- output (format.c) --------------------------------------------------- */

/* Prints "keelctl: <message>\n" on stderr; returns KC_FAIL. */
int kc_err(const char *fmt, ...) KEEL_PRINTF(1, 2);

/* Prints v pretty (2-space indent, the server's key order) on stdout. */
int kc_print_json(const json_t *v);

/* Wall clock now, ms since the epoch. */
int64_t kc_now_ms(void);

/* Parses an RFC 3339 time ("2026-11-26T02:30:00.000Z", any offset) into
 * ms since the epoch; 0 on success, -1 when it is not one. */
int kc_time_parse(const char *s, int64_t *ms);

/* The time member key of obj in ms; 0 when null, absent or malformed. */
int64_t kc_time_of(const json_t *obj, const char *key);

/* "2026-11-26 02:30:00Z" (UTC) into buf; "-" for 0. */
const char *kc_time_fmt(int64_t ms, char *buf, size_t len);

/* "3m ago", "in 2h05m", "just now" relative to now; "-" for 0. */
const char *kc_time_rel(int64_t ms, int64_t now, char *buf, size_t len);

/* "340ms", "1.52s", "12.3s", "2m05s", "3h07m", "2d04h". */
const char *kc_dur_fmt(int64_t ms, char *buf, size_t len);

/* The string member key of obj, or NULL when absent, null or not a string. */
const char *kc_str(const json_t *obj, const char *key);

/* The integer member key of obj into *out: 1 when it is an integer, else 0
 * (absent or null), *out untouched. */
int kc_int(const json_t *obj, const char *key, long long *out);

/* ---- tables (format.c) --------------------------------------------------- */

/* Colours a cell may have (shown only when kc->color). */
enum kc_color {
	KC_PLAIN = 0,
	KC_GREEN,
	KC_RED,
	KC_YELLOW,
	KC_CYAN,
	KC_DIM,
};

/* An aligned table like `kubectl get`: a header row, column widths from
 * the data, two spaces between columns, the last column not padded. Cells
 * are copied; control characters in them become spaces so that a value
 * can never break a line or send a terminal escape. */
struct kc_table;

struct kc_table *kc_table_new(int ncols, const char *const *header);
/* Appends a cell to the current row; a new row starts every ncols cells.
 * NULL prints as "-". */
void kc_table_cell(struct kc_table *t, const char *text, enum kc_color c);
void kc_table_cellf(struct kc_table *t, enum kc_color c, const char *fmt, ...)
    KEEL_PRINTF(3, 4);
/* Prints (colours when color) and frees t; KC_FAIL when out of memory. */
int kc_table_print(struct kc_table *t, int color);

/* The escape sequences that start and end colour c ("" for KC_PLAIN). */
const char *kc_color_on(enum kc_color c);
const char *kc_color_off(enum kc_color c);

/* The colour of a run state: succeeded green, failed/timed_out/crashed red,
 * running yellow, queued cyan, skipped/canceled dim. */
enum kc_color kc_state_color(const char *state);

/* Prints "<label><pad> <value>" (label with its colon: "next run:") with
 * the values aligned; value NULL or "" prints "-". Control characters are
 * kept out as in tables. */
void kc_field(const char *label, const char *value);
void kc_fieldf(const char *label, const char *fmt, ...) KEEL_PRINTF(2, 3);

/* Writes s to f with control characters other than '\n' and '\t' shown as
 * '?', for text that comes from the server (a job's output, a message) and
 * must not drive the terminal. */
void kc_put_safe(FILE *f, const char *s, size_t n);

/* ---- commands ------------------------------------------------------------ */

/* A run as one line for people, from the API's run object: "run 42  backup
 * succeeded  1.52s  exit 0" (what `run`, `cancel` and `watch` print). */
void kc_run_line(struct kc *kc, const json_t *run, struct kc_buf *out);
/* What a final run did: "exit 0", "signal 9", "HTTP 503", the error... */
void kc_run_result(const json_t *run, struct kc_buf *out);
/* 1 when state names a final state. */
int kc_state_final(const char *state);
/* 1 when s is a run state name. */
int kc_state_known(const char *s);
/* "queued|running|..." for messages. */
extern const char kc_state_names[];

int kc_cmd_list(struct kc *kc);
int kc_cmd_get(struct kc *kc, const char *name);
int kc_cmd_add(struct kc *kc, const char *file);
int kc_cmd_remove(struct kc *kc, const char *name);
int kc_cmd_pause(struct kc *kc, const char *name, int pause);
int kc_cmd_run(struct kc *kc, const char *name);
int kc_cmd_runs(struct kc *kc, const char *name);
int kc_cmd_show(struct kc *kc, const char *id);
int kc_cmd_cancel(struct kc *kc, const char *id);
int kc_cmd_events(struct kc *kc);
int kc_cmd_status(struct kc *kc);
int kc_cmd_watch(struct kc *kc, const char *name);

#endif /* KEELCTL_H */
