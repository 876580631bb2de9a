#!/usr/bin/env bash
# bench/run-policies.sh - builds bench_policies (Release) and prints what a
# call through each resilience policy costs, next to a bare function call
# and the engine alone, measured in the same run, with the targets:
#   each policy adds <= 25 ns to the engine, uncontended;
#   a 4-policy pipeline costs <= 100 ns a call, uncontended.
# Targets are reported, never enforced. Writes bench/results/policies-<date>.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KEEL_BENCH_BUILD:-$root/build-bench}
n=${KEEL_BENCH_CALLS:-2000000}

echo "bench: building in $build" >&2
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target bench_policies -j "$(nproc)" >/dev/null
raw=$("$build/bench/bench_policies" "$n")

report() {
	echo "keel policy benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine:  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "C:        $(${CC:-cc} --version | head -1), CMAKE_BUILD_TYPE=Release"
	echo "method:   ns per call, best of 5 runs of $n calls; '2 threads' is the"
	echo "          time per call of each of two threads sharing the policies"
	echo
	awk '
	{ name[NR] = $1; one[$1] = $2; two[$1] = $3 }
	END {
		fmt = "%-18s %9s %9s %10s  %-22s %s\n"
		printf fmt, "case", "1 thread", "2 threads", "vs engine", "target", "result"
		for (i = 1; i <= NR; i++) {
			c = name[i]
			over = one[c] - one["engine"]
			vs = (c == "bare_call" || c == "engine") ? "-" : sprintf("+%.1f", over)
			if (c ~ /^pipeline4/) {
				target = "<= 100 ns a call"
				result = one[c] <= 100 ? "met" : "missed"
			} else if (c != "bare_call" && c != "engine") {
				target = "<= 25 ns over engine"
				result = over <= 25 ? "met" : "missed"
			} else {
				target = "-"
				result = "-"
			}
			printf fmt, c, sprintf("%.1f", one[c]), sprintf("%.1f", two[c]), vs, target, result
		}
	}' <<<"$raw"
	echo
	echo "engine: keel_pipeline_execute with no policy (the call in a panic-catching"
	echo "scope, its outcome); bare_call: the same function called directly."
	echo "pipeline4: retry, breaker, bulkhead, timeout; _untimed: fallback instead of"
	echo "the timeout (no policy reads the clock); _coarse: on keel_clock_coarse()."
	echo "The system clock costs ~24 ns a read here, and a timed call reads it twice."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/policies-$(date '+%Y-%m-%d-%H%M%S').txt
report | tee "$out"
echo "bench: table written to $out" >&2
