/*
 * src/sched/spool.h - the scheduler's result spool (internal).
 *
 * Results the store refused (it was down) wait in memory for the store to
 * come back; with a spool file they also survive the keeld that holds
 * them. The file is the whole list, rewritten at each change (a temp file,
 * fsync, rename: it is always the old list or the new one, never half of
 * either) and removed when the list empties. A keeld starting on it hands
 * the results to the store before it recovers its own runs: a result whose
 * claim still holds is stored as if nothing happened; one whose run was
 * rescued meanwhile is refused by the claim check, as a late result
 * should be.
 *
 * Format: a JSON array of {"run": {...}, "next": {...} or absent}, a run
 * being its fields by their C names, times in ms, the claim as a decimal
 * string (64 bits do not fit JSON's doubles).
 */
#ifndef KEEL_SCHED_SPOOL_H
#define KEEL_SCHED_SPOOL_H

#include <stddef.h>

#include <keel/common.h>
#include <keel/run.h>

struct keel__spooled {
	struct keel_run run;
	struct keel_run next;
	int has_next;
};

/* Writes items[0..n) to path (n = 0: removes it). 0 or -errno; err gets
 * the reason. */
/* Exported for tests/sched/test_spool.c only; not part of keel's API. */
KEEL_API int keel__spool_save(const char *path, const struct keel__spooled *items,
			      size_t n, char *err, size_t errlen);

/* Reads path into a new array (*out, *n; keel__spool_free). A missing
 * file is an empty spool (0). -EIO for a file that is not a spool (err
 * says where), -errno else. */
KEEL_API int keel__spool_load(const char *path, struct keel__spooled **out, size_t *n,
		     char *err, size_t errlen);

KEEL_API void keel__spool_free(struct keel__spooled *items, size_t n);

#endif /* KEEL_SCHED_SPOOL_H */
