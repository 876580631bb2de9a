/*
 * keel/group.h - task groups: run tasks side by side, wait for all, and let
 * the first failure cancel the rest (Go's errgroup, sourcegraph/conc).
 *
 * Each task runs on a thread of its own (started with keel_go), inside a
 * scope: a task that panics or faults does not take the process down; its
 * panic, with the stack captured where it was raised, becomes the group's
 * failure. The first task to fail (return non-zero, or panic) cancels the
 * group's token, which every task receives and should observe; the others
 * then stop early.
 *
 * keel_group_wait waits for every task and reports the first failure: as a
 * return code plus an error value (the caller chooses), or, with
 * keel_group_wait_or_panic, by re-raising a task's panic in the waiter, as
 * conc does.
 *
 * Thread-safety: tasks may be added from any thread, tasks included, until
 * wait returns; one thread waits. Ownership: keel_group_free after wait.
 */
#ifndef KEEL_GROUP_H
#define KEEL_GROUP_H

#include <keel/cancel.h>
#include <keel/common.h>
#include <keel/error.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_group;

/* A task: observe cancel (keel_cancel_err) in long work; return 0 or a
 * negative error code. */
typedef int (*keel_group_fn)(struct keel_cancel *cancel, void *arg);

struct keel_group_config {
	const char *name;           /* thread names "<name>-<n>"; default "group" */
	int limit;                  /* tasks running at once; 0 (default) = no limit:
				     * keel_group_go blocks while the limit is reached
				     * (called by a task of the group, it runs the new
				     * task itself instead: blocking could deadlock) */
	struct keel_cancel *parent; /* cancelling it cancels the group; may be NULL */
	const struct keel_clock *clock; /* the token's clock; default system */
};

KEEL_API void keel_group_config_init(struct keel_group_config *cfg);
/* 0, -EINVAL or -ENOMEM. */
KEEL_API int keel_group_new(const struct keel_group_config *cfg,
			    struct keel_group **out);

/*
 * keel_group_go - starts fn(cancel, arg) as a task of g. Returns 0, or a
 * negative code with the task not started: -ECANCELED once the group is
 * cancelled (the task would only be cancelled at once), -EINVAL after
 * keel_group_wait returned, -EAGAIN when no thread can be started.
 */
KEEL_API int keel_group_go(struct keel_group *g, keel_group_fn fn, void *arg);

/* The group's token: cancelled by the first failure, by keel_group_cancel,
 * or by the parent. */
KEEL_API struct keel_cancel *keel_group_token(struct keel_group *g);
KEEL_API void keel_group_cancel(struct keel_group *g);

/*
 * keel_group_wait - waits for every task. Returns 0 when all succeeded, else
 * the first failure's code (KEEL_EPANIC for a panic; when the group was
 * cancelled from outside with no task failing, the token's reason:
 * -ECANCELED, or -ETIMEDOUT for a parent's deadline), or -EDEADLK when
 * called from one of the group's own tasks. When err is not
 * NULL, *err is set to an error value for that failure (the caller frees it
 * with keel_error_free), NULL on success. For a panic the error carries the
 * panic's message and kind, and keel_group_panic_stack gives its stack.
 */
KEEL_API int keel_group_wait(struct keel_group *g, struct keel_error **err);

/*
 * keel_group_wait_or_panic - waits; if a task panicked, re-raises the first
 * panic in the calling thread (message and kind kept, "[task <n>]" added),
 * so a group behaves like a single call that panicked; even when an error
 * came first, since a panic is a bug. A payload panic comes back as a
 * message panic (its payload ended with the task's panic); a fault's signal
 * details stay in keel_group_wait's error. Returns the wait's code otherwise.
 */
KEEL_API int keel_group_wait_or_panic(struct keel_group *g);

/* The first panic's captured stack (return addresses, innermost first), for
 * reports; 0 frames when no task panicked. Valid until keel_group_free. */
KEEL_API size_t keel_group_panic_stack(const struct keel_group *g,
				       void *const **frames);

/* Frees g (NULL is a no-op); without a wait before, it joins the tasks
 * first. */
KEEL_API void keel_group_free(struct keel_group *g);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_GROUP_H */
