#!/usr/bin/env bash
# System test: `cmake --install` of the build tree into a DESTDIR puts `livefs` in sbin,
# `livefsd` in libexec/livefs, the systemd units in lib/systemd/system (verified by
# systemd-analyze), the man pages in share/man/man8 (each naming every option of its
# command's --help) and the bash completion, and the installed client finds the installed
# daemon (a command the client hands to livefsd runs; LIVEFSD is not set).
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
  # The daemon from /run/livefs/real-usr (the units' bind of the real /usr) through the loader
  # there: systemd/configure_units.cmake.
  exec_start=$(sed -n 's/^ExecStart=//p' "$W/root/usr/lib/systemd/system/$unit")
  [[ $exec_start =~ ^/run/livefs/real-usr/([^ ]+)\ --library-path\ /run/livefs/real-usr/([^ ]+)\ /run/livefs/real-usr/libexec/livefs/livefsd\ mount\ --foreground\  ]] ||
    fail "$unit: ExecStart does not start the installed daemon from /run/livefs/real-usr: $exec_start"
  [[ -x /usr/${BASH_REMATCH[1]} && -d /usr/${BASH_REMATCH[2]} ]] ||
    fail "$unit: no loader /usr/${BASH_REMATCH[1]} or library directory /usr/${BASH_REMATCH[2]}"
done
# systemd-analyze verify (where systemd is installed): the units as installed, with ExecStart
# pointing at the daemon in DESTDIR and the machine's loader.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$W/units"
  for unit in livefs-usr.service livefs@.service; do
    sed "/^ExecStart=/ { s|/run/livefs/real-usr/libexec/|$W/root/usr/libexec/|; s|/run/livefs/real-usr/|/usr/|g }" \
      "$W/root/usr/lib/systemd/system/$unit" >"$W/units/$unit"
  done
  cp "$W/units/livefs@.service" "$W/units/livefs@test.service"
  out=$(cd "$W/units" && systemd-analyze verify --man=no ./livefs-usr.service ./livefs@test.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  # Warnings about the machine's own units are not ours; ours must have none.
  if grep -E "livefs(-usr|@)" <<<"$out"; then fail "systemd-analyze verify: $out"; fi
fi
# Man pages: livefs(8) and one page per command, each naming every option its --help names,
# and groff finds nothing to warn about.
MAN=$W/root/usr/share/man/man8
[[ -f $MAN/livefs.8 ]] || fail "no usr/share/man/man8/livefs.8"
commands=$(env -u LIVEFSD "$W/root/usr/sbin/livefs" --help | awk '/^Subcommands:/ { on = 1; next } on && NF { print $1 }')
[[ -n $commands ]] || fail "livefs --help lists no commands"
for cmd in $commands; do
  page=$MAN/livefs-$cmd.8
  [[ -f $page ]] || fail "no man page for livefs $cmd"
  grep -qF "livefs\\-$cmd" "$MAN/livefs.8" || fail "livefs(8) does not point to livefs-$cmd(8)"
  rendered=$(MANWIDTH=200 man -l "$page" 2>/dev/null | col -b)
  # Every option of the command's --help (and of its subcommands', for store and hotfix).
  helps=$(env -u LIVEFSD "$W/root/usr/sbin/livefs" "$cmd" --help 2>&1)
  for sub in $(awk '/^Subcommands:/ { on = 1; next } on && NF { print $1 }' <<<"$helps"); do
    helps+=$'\n'$(env -u LIVEFSD "$W/root/usr/sbin/livefs" "$cmd" "$sub" --help 2>&1)
  done
  for option in $(grep -oE -- '(^|[ ,])--[a-z][a-z-]*' <<<"$helps" | tr -d ' ,' | sort -u); do
    [[ $option == --help ]] && continue
    grep -qF -- "$option" <<<"$rendered" || fail "livefs-$cmd(8) does not name $option (from --help)"
  done
  warnings=$(groff -man -ww -z "$page" 2>&1) || true
  [[ -z $warnings ]] || fail "groff warns about livefs-$cmd.8: $warnings"
done
# The bash completion: installed where bash-completion looks, valid bash.
COMPLETION=$W/root/usr/share/bash-completion/completions/livefs
[[ -f $COMPLETION ]] || fail "no usr/share/bash-completion/completions/livefs"
bash -n "$COMPLETION" || fail "the bash completion does not parse"
echo "ok    install: usr/sbin/livefs, usr/libexec/livefs/livefsd; the client finds the daemon; $(wc -w <<<"$commands") man pages"
