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
