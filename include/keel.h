/*
 * keel.h - the umbrella header: everything libkeel offers.
 */
#ifndef KEEL_H
#define KEEL_H

#include <keel/common.h>
#include <keel/error.h>
#include <keel/panic.h>
#include <keel/alloc.h>
#include <keel/clock.h>
#include <keel/cancel.h>
#include <keel/policy.h>
#include <keel/backoff.h>
#include <keel/retry.h>
#include <keel/breaker.h>
#include <keel/fallback.h>
#include <keel/timeout.h>
#include <keel/bulkhead.h>
#include <keel/ratelimit.h>
#include <keel/budget.h>
#include <keel/chaos.h>
#include <keel/pipeline.h>
#include <keel/go.h>
#include <keel/group.h>
#include <keel/pool.h>
#include <keel/trace.h>
#include <keel/log.h>
#include <keel/report.h>
#include <keel/metrics.h>
#include <keel/http.h>
#include <keel/tz.h>
#include <keel/cron.h>
#include <keel/job.h>

#endif /* KEEL_H */
