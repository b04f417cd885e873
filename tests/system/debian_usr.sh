#!/usr/bin/env bash
# System test: livefs over-mounted on /usr of a real Debian 12 root (merged-/usr, so every
# program run by chroot comes through the view). The staged /usr is the same root after a
# real apt-get upgrade + install. Mount, diff, apply with readers hammering the view,
# 50 rollback/apply cycles, a kill -9 of the daemon mid-apply and a remount, umount.
# Usage: debian_usr.sh PATH_TO_LIVEFS   (root, /dev/fuse, Debian's package mirror)
set -euo pipefail

LIVEFS=$(realpath "${1:?usage: debian_usr.sh PATH_TO_LIVEFS}")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/debian_root.sh
source "$HERE/lib/debian_root.sh"

CYCLES=${DEBIAN_USR_CYCLES:-50}
CRASHES=${DEBIAN_USR_CRASHES:-4}
# The package the staged change installs and whose binary is run through the view.
NEW_BIN=usr/bin/file

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
step() { debian_log "== $*"; }

[[ $(id -u) == 0 ]] || fail "needs root (chroot, mounts, debootstrap)"
[[ -c /dev/fuse ]] || fail "/dev/fuse missing"
[[ -x $LIVEFS ]] || fail "livefs CLI not executable: $LIVEFS"
debian_need_tool python3 python3
debian_need_tool findmnt util-linux
debian_need_tool rsync rsync

TEST_START=$SECONDS
W=$(mktemp -d /var/tmp/livefs-debian-usr.XXXXXX)
ROOT=$W/root
STAGED=$W/staged
S=$W/state
FAILURES=$W/reader-failures
STOP=$W/stop-readers
READER_PIDS=()

# Mount points under $W, deepest first.
mounts_under_w() {
  awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

stop_readers() {
  touch "$STOP"
  local pid
  for pid in "${READER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  READER_PIDS=()
}

daemon_pid() { cat "$S/daemon.pid" 2>/dev/null || true; }

cleanup() {
  local rc=$? cleanup_start=$SECONDS
  set +e
  [[ ${#READER_PIDS[@]} -gt 0 ]] && stop_readers
  if [[ -d $S ]]; then
    local pid
    pid=$(daemon_pid)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      timeout 60 "$LIVEFS" umount --state "$S" >/dev/null 2>&1
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
  fi
  debian_log "cleanup: unmounted the view (daemon gone) in $((SECONDS - cleanup_start)) s"
  local m
  for m in $(mounts_under_w); do umount -l "$m" 2>/dev/null || umount -l "$m"; done
  if [[ -n $(mounts_under_w) ]]; then
    echo "cleanup: mounts left under $W, not removing it:" >&2
    mounts_under_w >&2
  else
    rm -rf --one-file-system "$W"
  fi
  if [[ $rc == 0 ]]; then
    debian_log "PASS debian_usr ($((SECONDS - TEST_START)) s)"
  else
    debian_log "FAIL debian_usr (exit $rc after $((SECONDS - TEST_START)) s)"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The listing of a tree: type, mode, owner, size of files, symlink targets. Directory sizes
# and times are left out (a view need not match the disk's directory sizes, and metadata-only
# directory changes are not made live).
listing() {  # DIR
  {
    find "$1" -xdev -mindepth 1 -type f -printf '%P f %m %U:%G %s\n'
    find "$1" -xdev -mindepth 1 ! -type f -printf '%P %y %m %U:%G %l\n'
  } | LC_ALL=C sort
}

# JSON field of livefs's output: json_get EXPR (d is the document) < JSON
json_get() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

status_json() { "$LIVEFS" status --state "$S" --json; }
live_generation() { status_json | json_get 'd["live_generation"]'; }

lv() {  # livefs SUBCOMMAND ... with the state; fails the test on error
  local out
  if ! out=$("$LIVEFS" "$1" --state "$S" "${@:2}" 2>&1); then
    printf '%s\n' "$out" >&2
    fail "livefs $* failed"
  fi
  printf '%s\n' "$out"
}

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin LANG=C "$@"; }

# The view must show exactly the listing in FILE.
expect_view_listing() {  # FILE WHAT
  listing "$ROOT/usr" >"$W/view.listing"
  if ! cmp -s "$1" "$W/view.listing"; then
    diff "$1" "$W/view.listing" | head -n 20 >&2
    fail "the view of $ROOT/usr does not match $2"
  fi
}

expect_programs_run() {  # WHAT
  local out
  out=$(in_root /usr/bin/ls /) || fail "chroot ls / failed ($1)"
  grep -qx usr <<<"$out" || fail "chroot ls / does not list usr ($1): $out"
  out=$(in_root /bin/sh -c 'echo ok') || fail "chroot /bin/sh -c 'echo ok' failed ($1)"
  [[ $out == ok ]] || fail "chroot /bin/sh printed '$out' ($1)"
}

expect_new_package_live() {
  local out
  [[ -x $ROOT/$NEW_BIN ]] || fail "/$NEW_BIN missing from the view after apply"
  out=$(in_root file /bin/ls) || fail "chroot file /bin/ls failed: $out"
  [[ $out == *ELF* ]] || fail "chroot file /bin/ls printed: $out"
  out=$(in_root bc <<<'6*7') || fail "chroot bc failed: $out"
  [[ $out == 42 ]] || fail "chroot bc printed '$out' for 6*7"
}

expect_new_package_absent() {
  [[ ! -e $ROOT/$NEW_BIN ]] || fail "/$NEW_BIN visible in the view while not applied"
  local out
  if out=$(in_root file /bin/ls 2>&1); then fail "chroot file ran while not applied: $out"; fi
  [[ $out == *"No such file"* ]] || fail "chroot file failed oddly while not applied: $out"
}

# ---------------------------------------------------------------------------------------
step "1. booted root: Debian $DEBIAN_SUITE minbase"
debian_minbase_root "$ROOT"
[[ -L $ROOT/bin && $(readlink "$ROOT/bin") == usr/bin ]] || fail "$ROOT/bin is not the merged-/usr symlink"
[[ ! -e $ROOT/$NEW_BIN ]] || fail "the booted root already has /$NEW_BIN"

step "2. staged root: apt-get upgrade + install $DEBIAN_STAGED_PACKAGES"
debian_staged_root "$ROOT" "$STAGED"
[[ -x $STAGED/$NEW_BIN ]] || fail "the staged root has no /$NEW_BIN"

listing "$ROOT/usr" >"$W/booted.listing"
listing "$STAGED/usr" >"$W/staged.listing"
# What changed in usr, by the trees themselves (not by livefs).
diff "$W/booted.listing" "$W/staged.listing" | grep -c '^[<>]' >"$W/n" || true
debian_log "usr: $(wc -l <"$W/booted.listing") entries booted, $(wc -l <"$W/staged.listing") staged, $(cat "$W/n") listing lines differ"

# Files the readers checksum: each must read as its booted or its staged content, whole.
CHECKED=(usr/bin/ls usr/bin/bash usr/bin/dpkg usr/lib/x86_64-linux-gnu/libc.so.6
  usr/lib/x86_64-linux-gnu/libz.so.1 usr/lib/x86_64-linux-gnu/libsystemd.so.0
  usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0 usr/share/common-licenses/GPL-3
  usr/bin/apt-get usr/bin/perl)
CHECKED_EXISTING=()
for f in "${CHECKED[@]}"; do
  [[ -f $ROOT/$f && -f $STAGED/$f ]] && CHECKED_EXISTING+=("/$f")
done
[[ ${#CHECKED_EXISTING[@]} -ge 4 ]] || fail "too few of the checksummed files exist: ${CHECKED_EXISTING[*]}"
(cd "$ROOT" && sha256sum "${CHECKED_EXISTING[@]#/}") | awk '{print $1 "  /" $2}' | LC_ALL=C sort >"$W/sums.booted"
(cd "$STAGED" && sha256sum "${CHECKED_EXISTING[@]#/}") | awk '{print $1 "  /" $2}' | LC_ALL=C sort >"$W/sums.staged"
LC_ALL=C sort -u "$W/sums.booted" "$W/sums.staged" >"$W/sums.allowed"
debian_log "readers checksum ${#CHECKED_EXISTING[@]} files, $(LC_ALL=C comm -23 "$W/sums.booted" "$W/sums.staged" | wc -l) of them changed by the upgrade"

mount -t proc proc "$ROOT/proc"

# ---------------------------------------------------------------------------------------
step "3. over-mount: livefs mount --booted ROOT/usr --staged STAGED/usr ROOT/usr"
t=$SECONDS
lv mount --booted "$ROOT/usr" --staged "$STAGED/usr" "$ROOT/usr" >/dev/null
debian_log "mount (scan booted, import staged): $((SECONDS - t)) s"
findmnt -n -o FSTYPE "$ROOT/usr" | grep -q fuse || fail "$ROOT/usr is not a FUSE mount after livefs mount"
[[ $(live_generation) == 0 ]] || fail "live generation after mount is not 0"
expect_programs_run "after mount"
expect_view_listing "$W/booted.listing" "the booted listing (after mount, before apply)"
expect_new_package_absent

"$LIVEFS" diff --state "$S" --json >"$W/diff.json" || fail "livefs diff --json failed"
json_get '"\n".join(c["path"] for c in d["changes"])' <"$W/diff.json" >"$W/changed.paths"
json_get '"\n".join(c["kind"] + " " + c["path"] for c in d["changes"])' <"$W/diff.json" >"$W/changes"
grep -qx "added ${NEW_BIN#usr/}" "$W/changes" || {
  head -n 20 "$W/changes" >&2
  fail "livefs diff does not list ${NEW_BIN#usr/} as added"
}
debian_log "livefs diff: $(wc -l <"$W/changes") changes: $(cut -d' ' -f1 "$W/changes" | sort | uniq -c | xargs)"

# ---------------------------------------------------------------------------------------
# The Debian update upgrades apt together with libapt-pkg6.0, and the new apt needs the new
# library: apt alone is refused, --with-deps brings the library along.
dpkg_version() {  # ROOT PACKAGE
  dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Version}' "$2" 2>/dev/null || true
}
APT_OLD=$(dpkg_version "$ROOT" apt)
APT_NEW=$(dpkg_version "$STAGED" apt)
LIB_OLD=$(dpkg_version "$ROOT" libapt-pkg6.0)
LIB_NEW=$(dpkg_version "$STAGED" libapt-pkg6.0)
if [[ -z $APT_OLD || $APT_OLD == "$APT_NEW" ]]; then
  debian_log "== 3b. skipped: the staged update does not upgrade apt ($APT_OLD -> $APT_NEW)"
else
  step "3b. apply --package apt ($APT_OLD -> $APT_NEW): refused alone, --with-deps adds libapt-pkg6.0"
  "$LIVEFS" diff --state "$S" --by-package --json >"$W/by-package.json" ||
    fail "livefs diff --by-package failed"
  json_get '"\n".join(g["package"] + ": " + " ".join(g.get("goes_with", [])) for g in d["packages"])' \
    <"$W/by-package.json" >"$W/goes_with"
  grep -q "^apt: .*libapt-pkg6.0" "$W/goes_with" ||
    fail "diff --by-package does not say apt goes with libapt-pkg6.0: $(grep '^apt' "$W/goes_with")"
  if out=$("$LIVEFS" apply --state "$S" --package apt --allow-replace 2>&1); then
    fail "apply --package apt alone was accepted: $out"
  fi
  grep -qF "apt $APT_NEW needs libapt-pkg6.0 (>= $LIB_NEW); live has $LIB_OLD" <<<"$out" ||
    fail "apply --package apt alone: unexpected refusal: $out"
  debian_log "refused: $out"
  [[ $(live_generation) == 0 ]] || fail "a refused apply changed the live generation"
  out=$(lv apply --package apt --with-deps --allow-replace)
  grep -q "^added package libapt-pkg6.0: apt $APT_NEW needs libapt-pkg6.0" <<<"$out" ||
    fail "apply --package apt --with-deps did not add libapt-pkg6.0: $out"
  out=$(in_root apt-get --version) || fail "chroot apt-get --version failed: $out"
  [[ $(head -n 1 <<<"$out") == "apt $APT_NEW "* ]] ||
    fail "chroot apt-get --version after apply: $(head -n 1 <<<"$out")"
  debian_log "apt-get --version through the view: $(head -n 1 <<<"$out")"
  lv reset >/dev/null
  expect_view_listing "$W/booted.listing" "the booted listing (after apply --package apt and reset)"
fi

# ---------------------------------------------------------------------------------------
step "4. readers on the view"
: >"$FAILURES"
: >"$W/reader-races"
rm -f "$STOP"

# A path of the staged change (or below one): where "No such file" is what a switch may give.
is_changed_path() {  # PATH-UNDER-USR
  local p=$1
  while [[ -n $p ]]; do
    grep -qxF -- "$p" "$W/changed.paths" && return 0
    [[ $p == */* ]] || return 1
    p=${p%/*}
  done
  return 1
}

reader() {  # ID
  # Every failure is recorded, none ends the loop.
  set +e +o pipefail
  local id=$1 n=0 ran_new=0 out rc line p
  local errf="$W/reader$id.err"
  while [[ ! -e $STOP ]]; do
    n=$((n + 1))
    # Whole-file reads through chroot'ed programs: every sum is a booted or staged one.
    if out=$(in_root /usr/bin/sha256sum "${CHECKED_EXISTING[@]}" 2>"$errf"); then
      while read -r line; do
        grep -qxF -- "$line" "$W/sums.allowed" ||
          echo "reader $id #$n: sha256sum: unexpected '$line'" >>"$FAILURES"
      done <<<"$out"
    else
      echo "reader $id #$n: chroot sha256sum failed: $(tr '\n' ' ' <"$errf")" >>"$FAILURES"
    fi
    # A walk of the whole view: ENOENT only for names the switch adds or removes.
    LC_ALL=C find "$ROOT/usr" -xdev 2>"$errf" | wc -l >/dev/null
    while read -r line; do
      [[ -z $line ]] && continue
      if [[ $line == "find: '$ROOT/usr/"*"': No such file or directory" ]]; then
        p=${line#"find: '$ROOT/usr/"}
        if is_changed_path "${p%"': No such file or directory"}"; then
          echo "reader $id #$n: $line" >>"$W/reader-races"
          continue
        fi
      fi
      echo "reader $id #$n: $line" >>"$FAILURES"
    done <"$errf"
    # The new package's programs, when present: a failure is acceptable only as one of its
    # own files vanishing (a rollback between exec and the loader or the magic file).
    if [[ -e $ROOT/$NEW_BIN ]]; then
      rc=0
      out=$(in_root file /bin/ls 2>&1) || rc=$?
      [[ $rc == 0 && $out == *ELF* ]] && ran_new=$((ran_new + 1))
      if [[ $rc != 0 || $out != *ELF* ]]; then
        case $out in
          *"No such file"* | *"cannot open shared object file"* | *"could not find any valid magic"* | *"magic.mgc"* | \
            *"using regular magic file"*)
            echo "reader $id #$n: file /bin/ls (rc $rc): $out" >>"$W/reader-races" ;;
          *) echo "reader $id #$n: file /bin/ls (rc $rc): $out" >>"$FAILURES" ;;
        esac
      fi
      rc=0
      out=$(in_root bc <<<'1+1' 2>&1) || rc=$?
      if [[ $rc != 0 || $out != 2 ]]; then
        case $out in
          *"No such file"* | *"cannot open shared object file"*)
            echo "reader $id #$n: bc (rc $rc): $out" >>"$W/reader-races" ;;
          *) echo "reader $id #$n: bc (rc $rc): $out" >>"$FAILURES" ;;
        esac
      fi
    fi
  done
  echo "$n rounds, the new package's file ran $ran_new times" >"$W/reader$id.count"
}

reader 1 &
READER_PIDS+=($!)
reader 2 &
READER_PIDS+=($!)

# ---------------------------------------------------------------------------------------
step "5. apply --all --allow-replace, then $CYCLES rollback/apply cycles"
t=$SECONDS
lv apply --all --allow-replace | tail -n 1 | sed 's/^/  /'
debian_log "apply: $((SECONDS - t)) s"
[[ $(live_generation) != 0 ]] || fail "live generation still 0 after apply"
expect_new_package_live
expect_programs_run "after apply"
# Live equals rebooted: every attribute rsync sees (content, type, mode, owner, mtime to the
# nanosecond, link targets, devices, hard links, ACLs, xattrs) equals the staged /usr.
t=$SECONDS
rsync -naicHAX --delete "$ROOT/usr/" "$STAGED/usr/" >"$W/rsync.out"
debian_log "rsync -naicHAX --delete VIEW/ STAGED/: $(wc -l <"$W/rsync.out") entries differ ($((SECONDS - t)) s)"
if [[ -s $W/rsync.out ]]; then
  head -n 30 "$W/rsync.out" >&2
  fail "after apply --all the view differs from the staged /usr"
fi

t=$SECONDS
apply_ns=0
for ((i = 1; i <= CYCLES; i++)); do
  lv rollback >/dev/null
  t0=$(date +%s%N)
  lv apply --all --allow-replace >/dev/null
  apply_ns=$((apply_ns + $(date +%s%N) - t0))
done
APPLY_MS=$((apply_ns / CYCLES / 1000000))
debian_log "$CYCLES rollback/apply cycles: $((SECONDS - t)) s (livefs apply: $APPLY_MS ms on average)"
stop_readers
for id in 1 2; do
  debian_log "reader $id: $(cat "$W/reader$id.count" 2>/dev/null || echo '? rounds')"
done
debian_log "readers: $(wc -l <"$W/reader-races") tolerated races (a changed name vanishing mid-walk or mid-exec), e.g.:"
head -n 3 "$W/reader-races" | sed 's/^/  /'
if [[ -s $FAILURES ]]; then
  echo "reader failures ($(wc -l <"$FAILURES")):" >&2
  head -n 30 "$FAILURES" >&2
  fail "readers saw errors through the view during switches"
fi
expect_new_package_live
expect_view_listing "$W/staged.listing" "the staged listing (after apply --all)"
status_json >"$W/status.json"
debian_log "after the cycles: live generation $(json_get 'd["live_generation"]' <"$W/status.json"), last switch $(json_get 'd["last_switch"]' <"$W/status.json")"

# ---------------------------------------------------------------------------------------
step "6. kill -9 of the daemon right after starting an apply ($CRASHES times), remount"
for ((c = 1; c <= CRASHES; c++)); do
  [[ $(live_generation) == 0 ]] || lv rollback >/dev/null
  before=$(live_generation)
  pid=$(status_json | json_get 'd["pid"]')
  [[ $pid == "$(daemon_pid)" ]] || fail "status pid $pid differs from daemon.pid $(daemon_pid)"
  "$LIVEFS" apply --state "$S" --all --allow-replace >"$W/crash-apply.out" 2>&1 &
  apply_pid=$!
  # Spread over one apply's duration: from before the request reaches the daemon to after
  # the switch.
  # Quadratic steps (0, T/18, 2T/9, T/2 for 4 crashes): most land while the daemon works.
  delay_ms=$(((c - 1) * (c - 1) * APPLY_MS / (2 * (CRASHES > 1 ? (CRASHES - 1) * (CRASHES - 1) : 1))))
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  kill -9 "$pid"
  apply_rc=0
  wait "$apply_pid" || apply_rc=$?
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  t=$SECONDS
  lv mount --booted "$ROOT/usr" --staged "$STAGED/usr" "$ROOT/usr" >/dev/null
  status_json >"$W/status.json"
  gen=$(json_get 'd["live_generation"]' <"$W/status.json")
  top=$(json_get 'd["generations"][-1]["number"]' <"$W/status.json")
  top_paths=$(json_get 'd["generations"][-1]["path_count"]' <"$W/status.json")
  jerr=$(json_get 'd["journal_error"]' <"$W/status.json")
  debian_log "crash $c: killed ${delay_ms} ms after apply started; apply exit $apply_rc ($(head -c 120 "$W/crash-apply.out" | head -n 1)); generation $before before, $gen after remount ($((SECONDS - t)) s; top of stack $top with $top_paths paths; journal_error $jerr)"
  [[ $gen == "$top" ]] || fail "after the crash the live generation $gen is not the journal's top ($top)"
  [[ $jerr == None ]] || fail "journal error after the crash: $jerr"
  if [[ $gen == "$before" ]]; then
    expect_view_listing "$W/booted.listing" "the booted listing (crash $c: apply not committed)"
    expect_new_package_absent
  else
    [[ $top_paths -gt 0 ]] || fail "crash $c: new generation $gen applies no paths"
    expect_view_listing "$W/staged.listing" "the staged listing (crash $c: apply committed)"
    expect_new_package_live
  fi
  expect_programs_run "after crash $c and remount"
done

# ---------------------------------------------------------------------------------------
step "7. umount"
t=$SECONDS
lv umount >/dev/null
debian_log "umount: $((SECONDS - t)) s"
[[ -z $(findmnt -n "$ROOT/usr") ]] || fail "$ROOT/usr is still a mount point after livefs umount"
[[ ! -e $ROOT/$NEW_BIN ]] || fail "/$NEW_BIN is in the booted root after umount (booted tree changed)"
listing "$ROOT/usr" >"$W/after.listing"
cmp -s "$W/booted.listing" "$W/after.listing" || {
  diff "$W/booted.listing" "$W/after.listing" | head -n 20 >&2
  fail "the booted /usr changed under the mount"
}
in_root /bin/true || fail "chroot /bin/true failed after umount"
umount "$ROOT/proc"
debian_log "all steps passed"
