#!/usr/bin/env bash
# System test: `cmake --install` of the build tree into a DESTDIR puts `livefs` in sbin and
# `livefsd` in libexec/livefs, and the installed client finds the installed daemon (a
# command the client hands to livefsd runs; LIVEFSD is not set).
# Usage: install.sh PATH_TO_LIVEFS   (the build tree is the directory holding it)
set -euo pipefail

LIVEFS=$(realpath "${1:?usage: install.sh PATH_TO_LIVEFS}")
BUILD=$(dirname "$LIVEFS")
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
W=$(mktemp -d /tmp/livefs-install.XXXXXX)
trap 'rm -rf "$W"' EXIT

DESTDIR=$W/root cmake --install "$BUILD" --prefix /usr >"$W/install.log" ||
  fail "cmake --install failed: $(cat "$W/install.log")"
[[ -x $W/root/usr/sbin/livefs ]] || fail "no usr/sbin/livefs in DESTDIR"
[[ -x $W/root/usr/libexec/livefs/livefsd ]] || fail "no usr/libexec/livefs/livefsd in DESTDIR"

version=$(env -u LIVEFSD "$W/root/usr/sbin/livefs" --version)
[[ $version == *livefs* ]] || fail "livefs --version printed: $version"
# `mount --help` is livefsd's: the client must find it in ../libexec/livefs.
help=$(env -u LIVEFSD "$W/root/usr/sbin/livefs" mount --help 2>&1) ||
  fail "installed livefs mount --help failed: $help"
[[ $help == *--booted* ]] || fail "livefs mount --help printed: $help"
echo "ok    install: usr/sbin/livefs, usr/libexec/livefs/livefsd; the client finds the daemon"
