/*
 * fuzz/fuzz_cron.c - libFuzzer harness for the schedule parser and the
 * next-fire computation (keel/cron.h).
 *
 * Any input must either parse, or be refused with -EINVAL, a non-empty
 * reason and *out untouched. What parses is asked for fire times in UTC and
 * in a zone with DST, from instants spread over the supported range
 * (including both ends and a DST transition): each answer must be
 * KEEL_CRON_NEVER or strictly after the instant asked about, successive
 * answers strictly increase, and the text comes back as given. ASan and
 * UBSan catch the rest.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         fuzz/fuzz_cron.c src/sched/cron.c src/sched/tz.c -o fuzz_cron
 *   ./fuzz_cron fuzz/corpus/cron
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel/cron.h>
#include <keel/tz.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct keel_tz *berlin(void)
{
	static struct keel_tz *tz;
	static int tried;

	if (!tried) {
		tried = 1;
		if (keel_tz_load("Europe/Berlin", &tz) != 0)
			tz = NULL;
	}
	return tz != NULL ? tz : keel_tz_utc();
}

static void check_chain(const struct keel_cron *c, const struct keel_tz *tz,
			int64_t t)
{
	int i;

	for (i = 0; i < 8; i++) {
		int64_t nx = keel_cron_next(c, tz, t);

		if (nx == KEEL_CRON_NEVER)
			return;
		if (nx <= t || nx > KEEL_CRON_TIME_MAX)
			abort();
		t = nx;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int64_t starts[] = {
	    INT64_MIN,	  KEEL_CRON_TIME_MIN, 0,
	    1774744200,	  /* 2026-03-29T00:30:00Z, before Berlin's gap */
	    1792891800,	  /* 2026-10-25T01:30:00Z, in its repeated hour */
	    253402214400, /* 9999-12-31T00:00:00Z */
	};
	struct keel_cron *sentinel = (struct keel_cron *)&starts, *c;
	char err[KEEL_CRON_ERR_MAX];
	char *text;
	size_t i;
	int rc;

	if (size > KEEL_CRON_TEXT_MAX + 8)
		return 0;
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	c = sentinel;
	rc = keel_cron_parse(text, &c, err, sizeof(err));
	if (rc != 0) {
		/* A reason, in full: it fits KEEL_CRON_ERR_MAX. */
		if (rc != -EINVAL || c != sentinel || err[0] == '\0' ||
		    strlen(err) >= sizeof(err) - 1)
			abort();
		free(text);
		return 0;
	}
	if (strcmp(keel_cron_text(c), text) != 0)
		abort();
	for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		check_chain(c, keel_tz_utc(), starts[i]);
		check_chain(c, berlin(), starts[i]);
	}
	keel_cron_free(c);
	free(text);
	return 0;
}
