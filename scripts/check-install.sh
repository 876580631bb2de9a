#!/usr/bin/env bash
# scripts/check-install.sh BUILD_DIR - installs keel from BUILD_DIR into a
# scratch prefix and builds and runs a small program against it twice: with
# the shared library and with the static one, both found through keel.pc.
set -euo pipefail
build=${1:-build}
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build" --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig"
cat > "$prefix/hello.c" <<'C'
#include <keel.h>
#include <stdio.h>
#include <string.h>
static void recovered(void *out) { const struct keel_panic *p = keel_recover(); if (p) snprintf(out, 64, "%s", keel_panic_message(p)); }
static void body(void *out) { keel_defer(recovered, out); keel_panic("installed"); }
int main(void) { char out[64] = ""; int r = keel_call(body, out); printf("%d %s\n", r, out); return r == 1 && strcmp(out, "installed") == 0 ? 0 : 1; }
C
libdir=$(pkg-config --variable=libdir keel)
cc -o "$prefix/hello" "$prefix/hello.c" $(pkg-config --cflags --libs keel) -Wl,-rpath,"$libdir"
"$prefix/hello"
cc -o "$prefix/hello-static" "$prefix/hello.c" $(pkg-config --cflags keel) "$libdir/libkeel.a" $(pkg-config --static --libs keel | sed "s/-lkeel//")
"$prefix/hello-static"
# Only keel's own names leave the shared library.
bad=$(nm -D --defined-only "$libdir/libkeel.so" | awk '{print $3}' | grep -v '^keel_' | grep -v '^keel__' || true)
if [ -n "$bad" ]; then echo "libkeel.so exports non-keel symbols: $bad" >&2; exit 1; fi
# The daemon, its unit and its sample jobs.
test -x "$prefix/bin/keeld" || { echo "keeld not installed" >&2; exit 1; }
"$prefix/bin/keeld" --version >/dev/null
test -f "$prefix/lib/systemd/system/keeld.service" || { echo "keeld.service not installed" >&2; exit 1; }
echo "install: ok (shared and static, $(nm -D --defined-only "$libdir/libkeel.so" | wc -l) exported symbols)"
