#!/usr/bin/env bash
# System test: `cmake --install` of the build tree into a DESTDIR puts `livefs` in sbin,
# `livefsd` in libexec/livefs and the systemd units in lib/systemd/system (verified by
# systemd-analyze), and the installed client finds the installed daemon (a
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
for unit in livefs-usr.service livefs@.service; do
  [[ -f $W/root/usr/lib/systemd/system/$unit ]] || fail "no usr/lib/systemd/system/$unit"
  grep -q "^ExecStart=/usr/sbin/livefs mount --foreground " "$W/root/usr/lib/systemd/system/$unit" ||
    fail "$unit: ExecStart does not name the installed client"
done
# systemd-analyze verify (where systemd is installed): the units as installed, with ExecStart
# pointing at this build's client (the installed one is in DESTDIR, not at /usr/sbin).
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$W/units"
  for unit in livefs-usr.service livefs@.service; do
    sed "s|^ExecStart=/usr/sbin/livefs |ExecStart=$W/root/usr/sbin/livefs |" \
      "$W/root/usr/lib/systemd/system/$unit" >"$W/units/$unit"
  done
  cp "$W/units/livefs@.service" "$W/units/livefs@test.service"
  out=$(cd "$W/units" && systemd-analyze verify --man=no ./livefs-usr.service ./livefs@test.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  # Warnings about the machine's own units are not ours; ours must have none.
  if grep -E "livefs(-usr|@)" <<<"$out"; then fail "systemd-analyze verify: $out"; fi
fi
echo "ok    install: usr/sbin/livefs, usr/libexec/livefs/livefsd; the client finds the daemon"
