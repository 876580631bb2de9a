/*
 * keel/cancel.h - cancel tokens: cancellation and deadlines that every
 * blocking wait in keel observes.
 *
 * A token is cancelled once, with a reason (-ECANCELED by default,
 * -ETIMEDOUT when its deadline passed); later cancels are ignored. A token
 * may have a parent: cancelling the parent cancels the child, with the same
 * reason, and a child's deadline is never later than its parent's.
 *
 * Thread-safety: any thread may cancel, test or wait on a token. Reading the
 * state is one atomic load (no lock), so code can poll it in a loop.
 * Ownership: keel_cancel_new returns a token the caller frees with
 * keel_cancel_free after every user is done with it; a parent must outlive
 * its children. Tokens can also live on the stack with keel_cancel_init /
 * keel_cancel_destroy, which allocate nothing.
 */
#ifndef KEEL_CANCEL_H
#define KEEL_CANCEL_H

#include <pthread.h>
#include <stdint.h>

#include <keel/clock.h>
#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_cancel {
	int reason;                 /* atomic: 0 = live, else the reason */
	int64_t deadline;           /* KEEL_NEVER or a time on clock */
	const struct keel_clock *clock;
	struct keel_cancel *parent;
	struct keel_cancel *children; /* guarded by mu */
	struct keel_cancel *sibling;
	pthread_mutex_t mu;
	pthread_cond_t cv;          /* broadcast on cancel (system clock waits) */
	int heap;
};

/* A live token on clock (NULL: the system clock), child of parent (or NULL). */
KEEL_API struct keel_cancel *keel_cancel_new(const struct keel_clock *clock,
					     struct keel_cancel *parent);
KEEL_API void keel_cancel_free(struct keel_cancel *c);
KEEL_API void keel_cancel_init(struct keel_cancel *c,
			       const struct keel_clock *clock,
			       struct keel_cancel *parent);
KEEL_API void keel_cancel_destroy(struct keel_cancel *c);

/* Cancels c (and its children) with reason (0 means -ECANCELED). */
KEEL_API void keel_cancel_cancel(struct keel_cancel *c, int reason);

/*
 * keel_cancel_err - 0 while c is live, else its reason. A token whose
 * deadline has passed on its clock is cancelled with -ETIMEDOUT by this
 * call. NULL is a token that is never cancelled.
 */
KEEL_API int keel_cancel_err(struct keel_cancel *c);

/* Sets the deadline (the earlier of the old and new one wins). */
KEEL_API void keel_cancel_set_deadline(struct keel_cancel *c, int64_t deadline);
KEEL_API int64_t keel_cancel_deadline(const struct keel_cancel *c);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_CANCEL_H */
