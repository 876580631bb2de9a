/*
 * tests/resilience/policy_check.h - checks every policy's tests share.
 * Include after keel.h and keel_test.h.
 */
#ifndef KEEL_TEST_POLICY_CHECK_H
#define KEEL_TEST_POLICY_CHECK_H

/* The counting rule of keel/policy.h: with no call in flight, every call
 * that entered the policy ended in exactly one of these four. */
static inline void check_invariant(struct keel_policy *p)
{
	struct keel_policy_stats st;

	keel_policy_stats(p, &st);
	CHECK_INT(st.calls, ==, st.successes + st.failures + st.panics +
				      st.rejections);
}

#endif /* KEEL_TEST_POLICY_CHECK_H */
