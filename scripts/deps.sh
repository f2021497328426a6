#!/usr/bin/env bash
# deps.sh GROUP... -- make sure the Debian packages a make target needs are here.
#
# Groups: build (compiler and libraries of the binary), test (g++ for the
# CPU emulation test of the CUDA kernels, sanitizer and
# fuzzer runtimes, browser for the UI tests, node for the e2e tests,
# PostgreSQL and nginx for the store's second backend and the cluster test).
# As root the missing packages are installed with apt-get; otherwise the
# exact apt-get line is printed and we stop, so nothing happens behind a
# user's back.
set -euo pipefail

build_pkgs="gcc make pkg-config libsqlite3-dev libpq-dev libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev libmd4c-dev libmd4c-html0-dev"
test_pkgs="g++ clang libclang-rt-14-dev curl chromium sqlite3 valgrind postgresql nginx-light"

want=""
for g in "$@"; do
  case "$g" in
    build) want="$want $build_pkgs" ;;
    test) want="$want $test_pkgs" ;;
    *) echo "deps.sh: unknown group $g" >&2; exit 2 ;;
  esac
done

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
# node and npm may come from Debian or from NodeSource (which bundles npm and
# conflicts with Debian's npm package): only ask for them when absent.
for g in "$@"; do
  if [ "$g" = test ] && ! command -v npm >/dev/null 2>&1; then missing="$missing nodejs npm"; fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "Missing Debian packages. Run:" >&2
  echo "  sudo apt-get install -y$missing" >&2
  exit 1
fi
