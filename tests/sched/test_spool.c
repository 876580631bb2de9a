/*
 * tests/sched/test_spool.c - the scheduler's result spool (src/sched/
 * spool.h): what is saved reads back field for field, a retry not yet
 * stored (id 0) included; an empty list removes the file; a missing file
 * is an empty spool; a file that is not a spool is refused with the entry
 * that is wrong, and left as it is.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel_test.h"
#include "../../src/sched/spool.h"

static char dir[64], path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/keel-spool-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/results.json", dir);
}

static void cleanup(void)
{
	char tmp[160];

	unlink(path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	rmdir(dir);
}

TEST(saved_results_read_back_field_for_field)
{
	struct keel__spooled in[2], *out = NULL;
	char err[256];
	size_t n = 0;

	setup();
	memset(in, 0, sizeof(in));
	in[0].run.id = 10427;
	in[0].run.job = "fail-0096";
	in[0].run.state = KEEL_RUN_FAILED;
	in[0].run.trigger = KEEL_RUN_SCHEDULE;
	in[0].run.attempt = 1;
	in[0].run.scheduled_at = 1796652261000;
	in[0].run.created_at = 1796652263843;
	in[0].run.not_before = 1796652261000;
	in[0].run.started_at = 1796652283530;
	in[0].run.finished_at = 1796652283593;
	in[0].run.exit_code = 3;
	in[0].run.signal = 9;
	in[0].run.http_status = 503;
	in[0].run.error = "failed \"on purpose\"\n\xc3\xa9";
	in[0].run.output = "line 1\nline 2\n";
	in[0].run.node = "n2";
	in[0].run.claim = UINT64_C(18446744073709551557); /* > 2^63 */
	strcpy(in[0].run.trace_id, "7e44c52a6894c8ba7b3d215ea18b456d");
	in[0].has_next = 1; /* its retry, not yet stored: id 0 */
	in[0].next.job = "fail-0096";
	in[0].next.state = KEEL_RUN_QUEUED;
	in[0].next.trigger = KEEL_RUN_RETRY;
	in[0].next.attempt = 2;
	in[0].next.not_before = 1796652283693;
	in[0].next.exit_code = -1;
	in[1].run.id = 1;
	in[1].run.job = "ok";
	in[1].run.state = KEEL_RUN_SUCCEEDED;
	in[1].run.trigger = KEEL_RUN_MANUAL;
	in[1].run.attempt = 1;
	CHECK_INT(keel__spool_save(path, in, 2, err, sizeof(err)), ==, 0);
	CHECK_INT(keel__spool_load(path, &out, &n, err, sizeof(err)), ==, 0);
	CHECK_INT(n, ==, 2);
	CHECK_INT(out[0].run.id, ==, 10427);
	CHECK_STR(out[0].run.job, "fail-0096");
	CHECK_INT(out[0].run.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(out[0].run.trigger, ==, KEEL_RUN_SCHEDULE);
	CHECK_INT(out[0].run.scheduled_at, ==, 1796652261000);
	CHECK_INT(out[0].run.created_at, ==, 1796652263843);
	CHECK_INT(out[0].run.not_before, ==, 1796652261000);
	CHECK_INT(out[0].run.started_at, ==, 1796652283530);
	CHECK_INT(out[0].run.finished_at, ==, 1796652283593);
	CHECK_INT(out[0].run.exit_code, ==, 3);
	CHECK_INT(out[0].run.signal, ==, 9);
	CHECK_INT(out[0].run.http_status, ==, 503);
	CHECK_STR(out[0].run.error, in[0].run.error);
	CHECK_STR(out[0].run.output, in[0].run.output);
	CHECK_STR(out[0].run.node, "n2");
	CHECK(out[0].run.claim == UINT64_C(18446744073709551557));
	CHECK_STR(out[0].run.trace_id, in[0].run.trace_id);
	CHECK_INT(out[0].has_next, ==, 1);
	CHECK_INT(out[0].next.id, ==, 0);
	CHECK_INT(out[0].next.attempt, ==, 2);
	CHECK_INT(out[0].next.trigger, ==, KEEL_RUN_RETRY);
	CHECK_INT(out[0].next.not_before, ==, 1796652283693);
	CHECK(out[0].next.error == NULL && out[0].next.node == NULL);
	CHECK_INT(out[1].has_next, ==, 0);
	CHECK(out[1].run.error == NULL && out[1].run.output == NULL);
	keel__spool_free(out, n);
	/* Nothing left: the file goes. */
	CHECK_INT(keel__spool_save(path, NULL, 0, err, sizeof(err)), ==, 0);
	CHECK(access(path, F_OK) != 0);
	CHECK_INT(keel__spool_load(path, &out, &n, err, sizeof(err)), ==, 0);
	CHECK_INT(n, ==, 0);
	keel__spool_free(out, n);
	cleanup();
}

TEST(a_file_that_is_not_a_spool_is_refused_and_kept)
{
	static const char *const bad[] = {
		"",
		"{}",
		"[{\"run\": {\"id\": 1}}]",
		"[{\"run\": {\"id\": 1, \"job\": \"j\", \"state\": \"lost\", "
		"\"trigger\": \"schedule\", \"attempt\": 1, \"scheduled_at\": 0, "
		"\"created_at\": 0, \"not_before\": 0, \"started_at\": 0, "
		"\"finished_at\": 0, \"exit_code\": -1, \"signal\": 0, "
		"\"http_status\": 0, \"trace_id\": \"\", \"claim\": \"0\"}}]",
		"[{\"run\": {\"id\": 1, \"job\": \"j\", \"state\": \"failed\", "
		"\"trigger\": \"schedule\", \"attempt\": 1, \"scheduled_at\": 0, "
		"\"created_at\": 0, \"not_before\": 0, \"started_at\": 0, "
		"\"finished_at\": 0, \"exit_code\": -1, \"signal\": 0, "
		"\"http_status\": 0, \"trace_id\": \"\", \"claim\": \"12x\"}}]",
	};
	struct keel__spooled *out;
	char err[256];
	size_t n;

	setup();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *f = fopen(path, "w");

		CHECK(f != NULL);
		fputs(bad[i], f);
		fclose(f);
		err[0] = '\0';
		CHECK_INT(keel__spool_load(path, &out, &n, err, sizeof(err)), ==,
			  -EIO);
		CHECK_CONTAINS(err, path);
		CHECK(access(path, F_OK) == 0);
	}
	cleanup();
}
