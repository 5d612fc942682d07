#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages the build and the tests need, if any is
# missing.  Needs root (or sudo) only when something must be installed.
set -eu

pkgs="gcc libc6-dev pkg-config meson ninja-build libuv1-dev libyaml-dev
libcjson-dev libopenblas-dev libsqlite3-dev libmicrohttpd-dev"
# --test: also what the whole test suite uses (contrib/test.sh): clang
# and its libFuzzer runtime for the fuzz runs, valgrind for memcheck,
# chromium for the status page in a real browser (test-http), node
# with npm for Hugging Face's JavaScript implementations (below), and
# Slurm with munge for the one-node cluster contrib/slurm-testcluster.sh
# starts (the slurm backend's tests; no system service is configured).
if [ "${1:-}" = "--test" ]; then
	pkgs="$pkgs clang libclang-rt-14-dev valgrind util-linux chromium"
	pkgs="$pkgs slurmctld slurmd slurm-client munge"
	# Any node will do (Debian's nodejs when there is none).
	command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
	command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
fi
root=$(cd "$(dirname "$0")/.." && pwd)

# --test also installs, from the npm registry into build-node/ (ignored by
# git like the build directories), the pinned Hugging Face packages the
# tests check outputs with: @huggingface/jinja renders chat templates
# (tests/test-chat.c), @huggingface/tokenizers loads merged tokenizers
# and encodes with them (tests/test-tokenizer.c).  A failure here is
# said, not fatal: the tests that need a package fail under CI=true, and
# skip otherwise.
node_packages() {
	specs="@huggingface/jinja@0.5.13 @huggingface/tokenizers@0.2.0"
	missing_specs=""
	for spec in $specs; do
		name=${spec%@*}
		version=${spec##*@}
		have=$(node -p "require('$root/build-node/node_modules/$name/\
package.json').version" 2>/dev/null || true)
		[ "$have" = "$version" ] || missing_specs="$missing_specs $spec"
	done
	[ -n "$missing_specs" ] || return 0
	# All in one install: npm removes what a later --no-save install
	# does not name.
	echo "deps: npm install $specs" >&2
	# shellcheck disable=SC2086
	npm install --prefix "$root/build-node" --no-audit --no-fund \
	    --no-save --silent $specs >&2 ||
		echo "deps: could not install$missing_specs" >&2
}

# --test also creates the accounts the security tests act as (as root):
# the team daemon's user `merged`, and two members of its group,
# merged-alice and merged-bob, who attack each other (docs/security.md).
test_accounts() {
	[ "$(id -u)" -eq 0 ] || return 0
	getent group merged >/dev/null || groupadd --system merged
	id merged >/dev/null 2>&1 || useradd --system --gid merged \
	    --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
	    merged
	for u in merged-alice merged-bob; do
		id "$u" >/dev/null 2>&1 || useradd --create-home \
		    --groups merged --shell /bin/sh "$u"
	done
}

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
if [ -z "$missing" ]; then
	if [ "${1:-}" = "--test" ]; then
		test_accounts
		node_packages
	fi
	exit 0
fi

echo "deps: installing$missing" >&2
as_root=""
[ "$(id -u)" -ne 0 ] && as_root="sudo"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
# shellcheck disable=SC2086
$as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
if [ "${1:-}" = "--test" ]; then
	test_accounts
	node_packages
fi
exit 0
