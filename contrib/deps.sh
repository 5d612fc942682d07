#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages the build and the tests need, if any is
# missing.  Needs root (or sudo) only when something must be installed.
set -eu

pkgs="gcc libc6-dev pkg-config meson ninja-build libuv1-dev libyaml-dev
libcjson-dev libopenblas-dev libsqlite3-dev"
# --test: also what the whole test suite uses (contrib/test.sh): clang
# and its libFuzzer runtime for the fuzz runs, valgrind for memcheck.
if [ "${1:-}" = "--test" ]; then
	pkgs="$pkgs clang libclang-rt-14-dev valgrind util-linux"
fi

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
as_root=""
[ "$(id -u)" -ne 0 ] && as_root="sudo"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
# shellcheck disable=SC2086
$as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
