/*
 * fuzz/fuzz_job.c - libFuzzer harness for job definitions (keel/job.h).
 *
 * Any bytes are loaded as JSON (as keeld's API does: duplicate keys
 * refused) and given to keel_job_from_json. A refusal must be -EINVAL with
 * a non-empty reason and *out untouched; an accepted job must round-trip:
 * from_json(to_json(j)) is accepted and keel_job_equal to j, and writes
 * the same JSON again. ASan and UBSan catch the rest.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         fuzz/fuzz_job.c src/sched/job.c src/sched/cron.c src/sched/tz.c \
 *         -ljansson -o fuzz_job
 *   ./fuzz_job -dict=fuzz/job.dict fuzz/corpus/job
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <keel/job.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *sentinel = (struct keel_job *)&err, *j, *k;
	json_t *v, *a, *b;
	int rc;

	if (size > 64 * 1024)
		return 0;
	v = json_loadb((const char *)data, size,
		       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY |
			   JSON_ALLOW_NUL,
		       NULL);
	if (v == NULL)
		return 0;
	j = sentinel;
	rc = keel_job_from_json(v, &j, err, sizeof(err));
	json_decref(v);
	if (rc != 0) {
		if (rc != -EINVAL || j != sentinel || err[0] == '\0')
			abort();
		return 0;
	}
	a = keel_job_to_json(j);
	if (a == NULL)
		abort();
	k = NULL;
	if (keel_job_from_json(a, &k, err, sizeof(err)) != 0 ||
	    !keel_job_equal(j, k))
		abort();
	b = keel_job_to_json(k);
	if (b == NULL || !json_equal(a, b))
		abort();
	json_decref(a);
	json_decref(b);
	keel_job_free(j);
	keel_job_free(k);
	return 0;
}
