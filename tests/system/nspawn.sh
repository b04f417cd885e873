#!/usr/bin/env bash
# System test: the units under a real systemd. A debootstrapped Debian 12 with systemd and
# the package (tests/system/lib/deb_package.sh) is booted with `systemd-nspawn --boot`,
# /dev/fuse bound in, livefs@test.service enabled before the boot (its view over /srv/view:
# /etc/livefs/test.conf). Inside: systemd started it at boot and it is active only once
# ready (Type=notify), STATUS= names the live generation, `livefs status` answers, an apply
# goes live; then `systemctl kill -s KILL` of the daemon, systemd restarts it
# (Restart=on-failure) and it serves the same generation at once over one mount (the dead
# daemon's detached); `systemctl stop` stops it cleanly. livefs-usr.service is enabled
# and does nothing (no /run/ostree-booted). The crash again over the container's own /usr
# (livefs@usr), where the restarted daemon cannot come from the dead view. Exit 77
# (skipped) when nspawn cannot boot a container on this machine, with nspawn's own words.
# Usage: nspawn.sh PATH_TO_LIVEFS   (root, /dev/fuse, Debian's package mirror)
set -euo pipefail

LIVEFS=$(realpath "${1:?usage: nspawn.sh PATH_TO_LIVEFS}")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/debian_root.sh
source "$HERE/lib/debian_root.sh"
# shellcheck source=lib/deb_package.sh
source "$HERE/lib/deb_package.sh"

SKIP=77
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
skip() {
  printf 'SKIP: %s\n' "$*" >&2
  exit $SKIP
}
[[ $(id -u) == 0 ]] || fail "needs root (chroot, systemd-nspawn)"
[[ -c /dev/fuse ]] || skip "/dev/fuse missing"
debian_need_tool dpkg-buildpackage dpkg-dev
debian_need_tool dh debhelper
debian_need_tool systemd-nspawn systemd-container
debian_need_tool nsenter util-linux

TEST_START=$SECONDS
W=$(mktemp -d /var/tmp/livefs-nspawn.XXXXXX)
ROOT=$W/root
MACHINE=livefs-test-$$
NSPAWN_PID=
LEADER=
cleanup() {
  local rc=$? i
  set +e
  if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    # SIGTERM: nspawn asks the container's systemd to power off.
    kill -TERM "$NSPAWN_PID"
    for ((i = 0; i < 300; i++)); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NSPAWN_PID" 2>/dev/null && kill -KILL "$NSPAWN_PID"
    wait "$NSPAWN_PID" 2>/dev/null
  fi
  # A container that could not power off (a dead /usr) outlives a killed nspawn: its init
  # takes the whole PID namespace with it.
  if [[ -n $LEADER && $(cat /proc/"$LEADER"/comm 2>/dev/null) == systemd ]]; then
    kill -KILL "$LEADER"
    for ((i = 0; i < 100; i++)); do [[ -e /proc/$LEADER ]] || break; sleep 0.1; done
  fi
  local m
  for m in $(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount -l "$m"
  done
  if [[ $rc != 0 && $rc != "$SKIP" && -s $W/console.log ]]; then
    echo "--- container console (last lines):" >&2
    tail -n 40 "$W/console.log" | tr -d '\r' >&2
  fi
  rm -rf --one-file-system "$W"
  if [[ $rc == 0 ]]; then
    debian_log "PASS nspawn ($((SECONDS - TEST_START)) s)"
  elif [[ $rc == "$SKIP" ]]; then
    debian_log "SKIP nspawn ($((SECONDS - TEST_START)) s)"
  else
    debian_log "FAIL nspawn (exit $rc after $((SECONDS - TEST_START)) s)"
  fi
}
trap cleanup EXIT

DEB=$(deb_package_build "$(dirname "$LIVEFS")")
deb_systemd_root "$ROOT"
deb_install_package "$ROOT" "$DEB"

# The view livefs@test serves: a booted tree and a staged one that adds a file and a
# directory and changes nothing booted (additions apply without --allow-replace).
mkdir -p "$ROOT/srv/booted/dir" "$ROOT/srv/view" "$ROOT/etc/livefs"
echo booted >"$ROOT/srv/booted/kept"
echo booted >"$ROOT/srv/booted/dir/old"
cp -a "$ROOT/srv/booted" "$ROOT/srv/staged"
echo staged >"$ROOT/srv/staged/added"
mkdir "$ROOT/srv/staged/newdir"
echo staged >"$ROOT/srv/staged/newdir/file"
echo 'LIVEFS_ARGS="--booted /srv/booted --staged /srv/staged /srv/view"' >"$ROOT/etc/livefs/test.conf"
# livefs@usr: the view over the container's own /usr, as livefs-usr.service serves it on an
# OSTree system (that unit needs an OSTree sysroot; both start the daemon alike). The staged
# /usr: the booted one (hard links) plus one file.
cp -al "$ROOT/usr" "$ROOT/srv/staged-usr"
echo staged >"$ROOT/srv/staged-usr/livefs-test-added"
echo 'LIVEFS_ARGS="--booted /usr --staged /srv/staged-usr /usr"' >"$ROOT/etc/livefs/usr.conf"
systemctl --root="$ROOT" enable livefs@test.service >/dev/null 2>&1 ||
  fail "systemctl --root enable livefs@test.service"
# Nothing to log in to; the console only shows the boot.
systemctl --root="$ROOT" mask console-getty.service >/dev/null 2>&1 || true

debian_log "booting the root with systemd-nspawn"
BOOT_START=$SECONDS
# --register=no / --keep-unit: this machine's PID 1 need not be systemd (no machined, no
# scope to make); the container runs in nspawn's own cgroup.
systemd-nspawn -D "$ROOT" --boot --register=no --keep-unit --machine="$MACHINE" \
  --bind=/dev/fuse --console=read-only >"$W/console.log" 2>&1 </dev/null &
NSPAWN_PID=$!

# The container's PID 1: nspawn's child running systemd.
for ((i = 0; i < 300; i++)); do
  kill -0 "$NSPAWN_PID" 2>/dev/null ||
    skip "systemd-nspawn --boot exited at once: $(tr -d '\r' <"$W/console.log" | tail -n 15)"
  for c in $(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null); do
    [[ $(cat /proc/"$c"/comm 2>/dev/null) == systemd ]] && LEADER=$c
  done
  [[ -n $LEADER ]] && break
  sleep 0.1
done
[[ -n $LEADER ]] || skip "no systemd in the container after 30 s: $(tr -d '\r' <"$W/console.log" | tail -n 15)"

# Runs a command inside the container (its namespaces and root; a clean environment).
in_ct() {
  nsenter -t "$LEADER" -m -u -i -n -p -r -w -- /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
show() { in_ct systemctl show -p "$1" --value "$2"; }
# Until systemd has made /run/systemd/system, systemctl says "offline"; until it listens on
# its private socket, it cannot connect; then --wait waits for the boot to finish.
for ((i = 0; i < 600; i++)); do
  state=$(timeout 120 nsenter -t "$LEADER" -m -u -i -n -p -r -w -- \
    /usr/bin/systemctl is-system-running --wait 2>&1) || true
  [[ $state == *"Failed to connect"* || $state == offline ]] || break
  kill -0 "$NSPAWN_PID" 2>/dev/null || break
  sleep 0.1
done
case $state in
  running | degraded) ;;
  *) skip "the container's systemd did not finish booting (is-system-running: '$state'): $(tr -d '\r' <"$W/console.log" | tail -n 15)" ;;
esac
debian_log "container booted ($state) in $((SECONDS - BOOT_START)) s"
journal() { in_ct journalctl -b --no-pager -o cat -u "$1" | tail -n 30 >&2; }

# The units as installed, where they run: their ExecStart (the loader in the bind of /usr the
# first start took) exists.
verify=$(in_ct systemd-analyze verify --man=no livefs-usr.service livefs@test.service 2>&1) ||
  fail "systemd-analyze verify in the container: $verify"
if grep -E "livefs(-usr|@)" <<<"$verify"; then fail "systemd-analyze verify in the container: $verify"; fi

# livefs-usr.service: enabled, and its condition keeps it from running here.
[[ $(in_ct systemctl is-enabled livefs-usr.service) == enabled ]] || fail "livefs-usr.service not enabled"
[[ $(show ConditionResult livefs-usr.service) == no ]] ||
  fail "livefs-usr.service ran without /run/ostree-booted: $(show ActiveState livefs-usr.service)"

# livefs@test: started at boot, active = ready.
UNIT=livefs@test.service
STATE=/var/lib/livefs/test
[[ $(show ActiveState $UNIT) == active ]] || { journal $UNIT; fail "$UNIT is $(show ActiveState $UNIT) after boot"; }
[[ $(show StatusText $UNIT) == "serving /srv/view at generation 0" ]] ||
  fail "$UNIT status text after boot: '$(show StatusText $UNIT)'"
[[ $(in_ct stat -c %a "$STATE") == 700 ]] || fail "$STATE is not 0700"
in_ct livefs status --state $STATE >"$W/status" || { journal $UNIT; fail "livefs status failed in the container"; }
[[ $(in_ct cat /srv/view/kept) == booted ]] || fail "the view does not serve the booted tree"
[[ $(in_ct findmnt -n -o FSTYPE /srv/view) == fuse* ]] || fail "/srv/view is not a FUSE mount"

in_ct livefs apply --state $STATE --all >"$W/apply" || fail "livefs apply --all: $(cat "$W/apply")"
[[ $(in_ct cat /srv/view/added) == staged ]] || fail "the applied file is not in the view"
[[ $(show StatusText $UNIT) == "serving /srv/view at generation 1" ]] ||
  fail "status text after the apply: '$(show StatusText $UNIT)'"
live_generation() {
  in_ct livefs status --state $STATE --json | grep -o '"live_generation": *[0-9]*' | grep -o '[0-9]*$'
}
before=$(live_generation) || true
[[ $before == 1 ]] || fail "live generation after the apply: '$before' ($(in_ct livefs status --state $STATE --json))"

# A crash: SIGKILL to the daemon; systemd restarts it (Restart=on-failure, RestartSec=200ms).
old_pid=$(show MainPID $UNIT)
[[ $old_pid -gt 0 ]] || fail "$UNIT has no main PID"
kill_start=$SECONDS
in_ct systemctl kill --kill-who=main -s KILL $UNIT
for ((i = 0; i < 300; i++)); do
  pid=$(show MainPID $UNIT)
  if [[ $(show ActiveState $UNIT) == active && $pid -gt 0 && $pid != "$old_pid" ]]; then break; fi
  sleep 0.1
done
[[ $(show ActiveState $UNIT) == active && $(show MainPID $UNIT) != "$old_pid" ]] ||
  { journal $UNIT; fail "$UNIT not active again 30 s after SIGKILL: $(show ActiveState $UNIT)/$(show SubState $UNIT)"; }
[[ $(show NRestarts $UNIT) -ge 1 ]] || fail "systemd did not count a restart"
debian_log "SIGKILL -> active again (pid $old_pid -> $(show MainPID $UNIT)) in $((SECONDS - kill_start)) s"
after=$(live_generation) || true
[[ $after == "$before" ]] || fail "live generation after the restart: '$after', before: '$before'"
[[ $(show StatusText $UNIT) == "serving /srv/view at generation 1" ]] ||
  fail "status text after the restart: '$(show StatusText $UNIT)'"
[[ $(in_ct cat /srv/view/added) == staged ]] || fail "the applied file is gone after the restart"
[[ $(in_ct cat /srv/view/newdir/file) == staged ]] || fail "the applied directory is gone after the restart"
mounts=$(in_ct awk '$5 == "/srv/view"' /proc/self/mountinfo | wc -l)
[[ $mounts == 1 ]] || fail "$mounts mounts at /srv/view after the restart (the dead one not detached?)"

# A clean stop: the view unmounted, the service inactive with success.
stop_start=$SECONDS
timeout 60 nsenter -t "$LEADER" -m -u -i -n -p -r -w -- /usr/bin/systemctl stop $UNIT ||
  { journal $UNIT; fail "systemctl stop $UNIT failed or took over 60 s"; }
[[ $(show ActiveState $UNIT) == inactive && $(show Result $UNIT) == success ]] ||
  { journal $UNIT; fail "$UNIT after stop: $(show ActiveState $UNIT), result $(show Result $UNIT)"; }
[[ $(in_ct findmnt -n -o FSTYPE /srv/view || true) != fuse* ]] || fail "/srv/view still mounted after stop"
debian_log "systemctl stop: $((SECONDS - stop_start)) s"
# Over /usr the daemon's own executable, its libraries and the loader are in the view it
# serves: after the crash every path below /usr answers ENOTCONN until the next daemon
# detaches the dead mount, and the unit must still be able to start that daemon. What the
# container's /usr answers is read from the host (/proc/PID/root), which needs no program
# from it.
UNIT=livefs@usr.service
in_ct systemctl start $UNIT || { journal $UNIT; fail "$UNIT did not start"; }
in_ct livefs apply --state /var/lib/livefs/usr /livefs-test-added >"$W/apply" ||
  fail "apply over /usr: $(cat "$W/apply")"
[[ $(cat "/proc/$LEADER/root/usr/livefs-test-added") == staged ]] || fail "the apply over /usr is not live"
old_pid=$(show MainPID $UNIT)
kill_start=$SECONDS
in_ct systemctl kill --kill-who=main -s KILL $UNIT
# The dead view first (this read fails), then the new daemon serving it again.
for ((i = 0; i < 300; i++)); do
  [[ $(cat "/proc/$LEADER/root/usr/livefs-test-added" 2>/dev/null) == staged &&
    $(cat "/proc/$LEADER/root/proc/$old_pid/comm" 2>/dev/null) == "" ]] && break
  sleep 0.1
done
if [[ $(cat "/proc/$LEADER/root/usr/livefs-test-added" 2>&1) != staged ]]; then
  journalctl -D "/proc/$LEADER/root/var/log/journal" --no-pager -o short -u $UNIT | tail -n 12 >&2
  fail "over /usr, nothing serves 30 s after SIGKILL: /usr says '$(cat "/proc/$LEADER/root/usr/livefs-test-added" 2>&1)'"
fi
[[ $(show ActiveState $UNIT) == active && $(show MainPID $UNIT) != "$old_pid" ]] ||
  fail "$UNIT after SIGKILL: $(show ActiveState $UNIT), main PID $(show MainPID $UNIT) (was $old_pid)"
[[ $(show StatusText $UNIT) == "serving /usr at generation 1" ]] ||
  fail "$UNIT status text after the restart: '$(show StatusText $UNIT)'"
in_ct livefs status --state /var/lib/livefs/usr >/dev/null || fail "livefs status over /usr after the restart"
debian_log "over /usr: SIGKILL -> serving again (pid $old_pid -> $(show MainPID $UNIT)) in $((SECONDS - kill_start)) s"
echo "ok    nspawn: booted Debian 12 with systemd; livefs@test ready at boot, SIGKILL -> restarted at generation 1, clean stop; over /usr: SIGKILL -> restarted"
