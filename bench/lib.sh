# bench/lib.sh - what the benchmark scripts share; sourced, not run.
# Sets root, build, gobuild and go, and defines gorun (Go that writes only
# into the build folder and fetches nothing). Exits 2 with advice when Go is
# missing: every keel benchmark with a Go twin needs it.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KEEL_BENCH_BUILD:-$root/build-bench}
case "$build" in /*) ;; *) build=$root/$build ;; esac
gobuild=$build/go

go=${GO:-}
if [[ -z "$go" ]]; then
	if [[ -x /usr/lib/go-1.19/bin/go ]]; then
		go=/usr/lib/go-1.19/bin/go
	else
		go=$(command -v go || true)
	fi
fi
if [[ -z "$go" || ! -x "$go" ]]; then
	echo "bench: Go is not installed${GO:+ (GO=$GO is not an executable)}; the benchmark compares keel with Go." >&2
	echo "bench: install it with: scripts/deps.sh bench   (Debian package golang-1.19-go)" >&2
	exit 2
fi

gorun() {
	env -u GOTOOLCHAIN -u GOFLAGS \
		GOCACHE="$gobuild/cache" GOPATH="$gobuild/path" \
		GOENV=off GOPROXY=off GO111MODULE=on "$go" "$@"
}

mkdir -p "$build" "$gobuild"

# build_both C_TARGET GO_PACKAGE LOG: builds the C benchmark (Release, in
# $build) and its Go twin into $gobuild/GO_PACKAGE; on failure shows the end
# of LOG and exits 1.
build_both() {
	local target=$1 gopkg=$2 log=$3

	echo "bench: building in $build (log: $log)"
	if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
	       cmake --build "$build" --target "$target" -j "$(nproc)"; } >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		echo "bench: building $target failed (see $log)" >&2
		exit 1
	fi
	if ! (cd "$root/bench/go" && gorun build -o "$gobuild/$gopkg" "./$gopkg") >>"$log" 2>&1; then
		tail -n 30 "$log" >&2
		echo "bench: building the Go benchmark failed (see $log)" >&2
		exit 1
	fi
}

# describe_machine: sets cc_version, go_version, cpu, libc and stamp for the
# table's header.
describe_machine() {
	local cc

	cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
	cc_version=$("${cc:-cc}" --version 2>/dev/null | head -n 1)
	go_version=$(gorun version)
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
	libc=$(ldd --version 2>/dev/null | head -n 1 || true)
	stamp=$(date '+%Y-%m-%d %H:%M:%S %Z')
}
