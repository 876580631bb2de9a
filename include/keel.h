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

#endif /* KEEL_H */
