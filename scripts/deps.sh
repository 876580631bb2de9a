#!/usr/bin/env bash
# scripts/deps.sh - installs the Debian packages keel needs, and only those
# that are missing. Safe to run again: with everything present it changes
# nothing and says so.
#
#   scripts/deps.sh          what building and testing need
#   scripts/deps.sh bench    also what the benchmarks compare against (Go)
set -euo pipefail

base=(gcc make cmake pkg-config clang libclang-rt-14-dev libgcc-12-dev libsqlite3-dev sqlite3
      libc6-dev binutils libcurl4-openssl-dev libjansson-dev
      libmicrohttpd-dev libsystemd-dev openssl tzdata chromium libpq-dev postgresql)
bench=(golang-1.19-go wrk curl)

want=("${base[@]}")
for group in "$@"; do
	case "$group" in
	bench) want+=("${bench[@]}") ;;
	*) echo "deps.sh: unknown group '$group' (known: bench)" >&2; exit 2 ;;
	esac
done

missing=()
for pkg in "${want[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	[[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "deps: all ${#want[@]} packages present"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null; then
		sudo=(sudo)
	else
		echo "deps.sh: missing packages (${missing[*]}) and not root; run as root" >&2
		exit 1
	fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
