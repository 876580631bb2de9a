#!/usr/bin/env bash
# bench/run.sh - builds keel's panic benchmark and its Go twin, runs both and
# prints one table: case, keel ns/op, Go ns/op, keel/Go and the target.
#
#   bench/run.sh                    (what `make bench` runs)
#
# Environment:
#   KEEL_BENCH_RUN_MS   length of one timed run of a case (default 150)
#   KEEL_BENCH_BUILD    build folder (default build-bench)
#   GO                  the go command (default /usr/lib/go-1.19/bin/go)
#   CC                  the C compiler, as for any CMake build
#
# The table also goes to bench/results/panic-<date>.txt. Targets are
# reported, never enforced: the exit status is 0 whenever both benchmarks
# ran, whatever the numbers.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- build and machine ---------------------------------------------------------
build_both bench_panic panicbench "$build/bench-build.log"
describe_machine

# --- run ---------------------------------------------------------------------
# Case by case, keel then Go, so that both sides of a ratio see the machine
# in the same state.
cases=(scope_defer panic_recover panic_recover_deep10 nil_deref div_zero
       scope_defer_block)
echo "bench: running each case with keel (bench_panic), then Go (panicbench)"
keel_out=
go_out=
for c in "${cases[@]}"; do
	if ! line=$("$build/bench/bench_panic" "$c") || [[ -z $line ]]; then
		echo "bench: bench_panic $c failed" >&2
		exit 1
	fi
	keel_out+=$line$'\n'
	[[ $c == scope_defer_block ]] && continue # no Go twin
	if ! line=$("$gobuild/panicbench" "$c") || [[ -z $line ]]; then
		echo "bench: panicbench $c (Go) failed" >&2
		exit 1
	fi
	go_out+=$line$'\n'
done

table() {
	echo "keel panic benchmark, $stamp"
	echo "machine:  $(nproc) CPUs, ${cpu:-$(uname -m)}, Linux $(uname -r)"
	echo "C:        $cc_version (CMAKE_BUILD_TYPE=Release), ${libc:-libc unknown}"
	echo "Go:       $go_version"
	echo "method:   ns/op, best of 5 timed runs after a calibration run; each case keel, then Go"
	echo
	awk -v keel="$keel_out" -v golang="$go_out" '
	BEGIN {
		n = split(keel, lines, "\n")
		for (i = 1; i <= n; i++) {
			split(lines[i], f, " ")
			if (f[1] == "")
				continue
			order[++cases] = f[1]
			k[f[1]] = f[2]
		}
		n = split(golang, lines, "\n")
		for (i = 1; i <= n; i++) {
			split(lines[i], f, " ")
			if (f[1] != "")
				g[f[1]] = f[2]
		}
		# kind: "ns" limits keel ns/op, "ratio" limits keel/Go.
		kind["scope_defer"] = "ns";          lim["scope_defer"] = 8
		# The block form is the same work (a scope, one deferred call);
		# the Go twin of both is one function with one defer.
		kind["scope_defer_block"] = "ns";    lim["scope_defer_block"] = 8
		if ("scope_defer" in g)
			g["scope_defer_block"] = g["scope_defer"]
		kind["panic_recover"] = "ns";        lim["panic_recover"] = 50
		kind["panic_recover_deep10"] = "ns"; lim["panic_recover_deep10"] = 100
		kind["nil_deref"] = "ratio";         lim["nil_deref"] = 1.0

		fmt = "%-22s %12s %12s %9s  %-18s %s\n"
		printf fmt, "case", "keel ns/op", "Go ns/op", "keel/Go", "target", "result"
		for (i = 1; i <= cases; i++) {
			c = order[i]
			gv = (c in g) ? sprintf("%.2f", g[c]) : "-"
			ratio = (c in g && g[c] > 0) ? k[c] / g[c] : -1
			rv = ratio >= 0 ? sprintf("%.2f", ratio) : "-"
			if (kind[c] == "ns") {
				target = sprintf("<= %g ns", lim[c])
				result = k[c] <= lim[c] ? "met" : "missed"
			} else if (kind[c] == "ratio") {
				target = sprintf("keel/Go <= %.1f", lim[c])
				result = ratio < 0 ? "-" : (ratio <= lim[c] ? "met" : "missed")
			} else {
				target = "none"
				result = "-"
			}
			printf fmt, c, sprintf("%.2f", k[c]), gv, rv, target, result
		}
	}'
	echo
	echo "div_zero: keel takes a real SIGFPE; Go tests the divisor in code and"
	echo "panics without a signal, so the two are not the same work (no target)."
	echo "scope_defer: keel_call(fn), fn does keel_defer; scope_defer_block: the same scope"
	echo "as KEEL_SCOPE { keel_defer(...); } inside a function (Go column: the same Go case)."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/panic-$(date '+%Y-%m-%d-%H%M%S').txt
echo
table | tee "$out"
echo
echo "bench: table written to ${out#"$root"/}"
