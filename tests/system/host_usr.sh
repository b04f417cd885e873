#!/usr/bin/env bash
# System test: livefs over this machine's own /usr. Inside a private mount namespace the view
# is over-mounted on /usr (booted = /usr itself, staged = a small tree that adds a program
# and two files), then real programs run from it: a setuid-root program as uid 65534,
# python3, perl, gcc and g++ compiling and running programs, dpkg --verify, getcap of the
# files that have file capabilities; an apply of the addition; then `livefs umount` from
# inside the namespace while a python3 started from the view holds a mapping of a file it
# has not read yet, which it reads after the umount.
# Each check is compared with the same command run on the real /usr before the mount.
# Nothing outside the namespace sees the view; the host's /usr is checked untouched.
# Usage: host_usr.sh PATH_TO_LIVEFS   (root, /dev/fuse, unshare, setpriv, gcc, g++, perl,
# python3, dpkg)
set -euo pipefail

# How long each bounded step may take (seconds).
MOUNT_TIMEOUT=${HOST_USR_MOUNT_TIMEOUT:-240}  # the first mount hashes all of /usr
PROGRAM_TIMEOUT=120
UMOUNT_TIMEOUT=20
HOLDER_TIMEOUT=90
DAEMON_EXIT_TIMEOUT=20

export TZ=UTC
# printf's own clock: after the over-mount a program from /usr may not run.
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
# Host side: make the work dir, run the rest in a private mount namespace, then make sure
# nothing it started survives and remove the work dir.
if [[ ${1-} != --in-namespace ]]; then
  LIVEFS=$(realpath "${1:?usage: host_usr.sh PATH_TO_LIVEFS}")
  [[ $(id -u) == 0 ]] || die "needs root (mount namespace, FUSE mount over /usr)"
  [[ -c /dev/fuse ]] || die "/dev/fuse missing"
  [[ -x $LIVEFS ]] || die "livefs CLI not executable: $LIVEFS"
  for tool in unshare setpriv timeout findmnt gcc g++ perl dpkg sha256sum passwd; do
    command -v "$tool" >/dev/null || die "$tool missing"
  done
  [[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 missing"
  id nobody >/dev/null 2>&1 || die "no user nobody (uid 65534)"
  case $LIVEFS in /usr/*) die "the livefs binary must not be under /usr: $LIVEFS" ;; esac

  TEST_START=$SECONDS
  W=$(mktemp -d /var/tmp/livefs-host-usr.XXXXXX)
  HOST_USR_MOUNTS=$(grep -c ' /usr ' /proc/self/mountinfo || true)
  # shellcheck disable=SC2317 # run by the trap
  host_cleanup() {
    local rc=$? pid
    set +e
    # A daemon or holder left in the namespace (the inner part was killed): end it by pid.
    cat "$W"/pid.* 2>/dev/null | while read -r pid; do
      [[ -d /proc/$pid ]] || continue
      kill -9 "$pid" 2>/dev/null
      for ((i = 0; i < 200; i++)); do
        if [[ ! -d /proc/$pid/task || -z $(ls "/proc/$pid/task" 2>/dev/null) ]]; then break; fi
        sleep 0.05
      done
      [[ -d /proc/$pid ]] && log "process $pid from the namespace is still there"
    done
    rm -rf --one-file-system "$W"
    if [[ $(grep -c ' /usr ' /proc/self/mountinfo || true) != "$HOST_USR_MOUNTS" ]]; then
      echo "FAIL: the host's mount table for /usr changed:" >&2
      grep ' /usr ' /proc/self/mountinfo >&2
      rc=1
    fi
    if [[ -e /usr/share/livefs-host-usr || -e /usr/bin/livefs-host-usr-hello ]]; then
      echo "FAIL: the staged addition is visible in the host's /usr" >&2
      rc=1
    fi
    if [[ $rc == 0 ]]; then
      log "PASS host_usr ($((SECONDS - TEST_START)) s)"
    else
      log "FAIL host_usr (exit $rc after $((SECONDS - TEST_START)) s)"
    fi
    exit "$rc"
  }
  trap host_cleanup EXIT
  trap 'exit 130' INT TERM
  rc=0
  HOST_MNT_NS=$(stat -L -c %i /proc/self/ns/mnt) \
    timeout -k 10 600 unshare -m --propagation private -- "$0" --in-namespace "$LIVEFS" "$W" || rc=$?
  exit $rc
fi

# ---------------------------------------------------------------------------------------
# Namespace side. After the over-mount every program this script starts comes from the
# view; the script's own bash was loaded before it, and the cleanup uses builtins only.
LIVEFS=$2
W=$3
[[ -n ${HOST_MNT_NS-} && $(stat -L -c %i /proc/self/ns/mnt) != "$HOST_MNT_NS" ]] ||
  die "not in a mount namespace of its own: refusing to over-mount the host's /usr"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
unset PYTHONPATH PYTHONHOME PERL5LIB
cd "$W"
S=$W/state
STAGED=$W/staged
FAILED=$W/failed-checks
: >"$FAILED"
CHECKS=0
DAEMON=
HOLDER_TASK=
HOLDER_PY=

# A sleep that needs no program (after the over-mount /usr may be unusable): read with a
# time limit on a FIFO nobody writes.
mkfifo "$W/nap.fifo"
exec {NAP_FD}<>"$W/nap.fifo"
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }

ok() {
  CHECKS=$((CHECKS + 1))
  log "ok    $1${2:+: $2}"
}
bad() {
  CHECKS=$((CHECKS + 1))
  log "FAIL  $1: $2"
  printf '%s: %s\n' "$1" "$2" >>"$FAILED"
}

# Whether /usr in this namespace is the livefs view (builtins only).
usr_is_view() {
  local line
  while read -r line; do
    [[ $line == *" /usr "*" - fuse.livefs "* ]] && return 0
  done </proc/self/mountinfo
  return 1
}
view_mount_options() {  # the per-mount options of the view (4th field before " - ")
  local line
  while read -r line; do
    if [[ $line == *" /usr "*" - fuse.livefs "* ]]; then
      # shellcheck disable=SC2086 # the fields of the line
      set -- $line
      printf '%s\n' "$6"
      return
    fi
  done </proc/self/mountinfo
  printf 'not mounted\n'
}
gone() {  # PID: its whole thread group has exited
  [[ ! -d /proc/$1/task ]] || [[ -z $(shopt -s nullglob; echo /proc/"$1"/task/*) ]]
}

ns_cleanup() {
  local rc=$?
  set +e
  [[ -n $HOLDER_TASK ]] && kill -9 "$HOLDER_TASK" "$HOLDER_PY" 2>/dev/null
  if [[ -n $DAEMON ]] && ! gone "$DAEMON"; then
    log "cleanup: the daemon $DAEMON is still running: kill -9 (the namespace goes with us)"
    kill -9 "$DAEMON"
    for ((i = 0; i < 200; i++)); do gone "$DAEMON" && break; nap 0.05; done
  fi
  exit $rc
}
trap ns_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# The programs, each run once on the real /usr (the baseline) and once through the view:
# same exit status 0 and same output. PHASE names the run's scratch directory.
cat >"$W/hello.c" <<'EOF'
#include <math.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.6f", sqrt(2.0) * cos(0.0));
  printf("hello from gcc: sqrt(2) = %s, strlen = %zu\n", buf, strlen(buf));
  return 0;
}
EOF
cat >"$W/hello.cpp" <<'EOF'
#include <algorithm>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>
int main() {
  std::vector<int> v(100);
  std::iota(v.begin(), v.end(), 1);
  std::map<std::string, long> m{{"sum", std::accumulate(v.begin(), v.end(), 0L)}};
  std::reverse(v.begin(), v.end());
  std::cout << "hello from g++: sum " << m["sum"] << ", first " << v.front() << '\n';
}
EOF

prog_python3() {
  timeout "$PROGRAM_TIMEOUT" /usr/bin/python3 -I -c '
import decimal, hashlib, json, sqlite3, ssl, xml.etree.ElementTree as ET, zlib, ctypes.util
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(i,) for i in range(100)])
total = db.execute("select sum(x) from t").fetchone()[0]
doc = ET.fromstring("<a><b n=\"1\"/><b n=\"2\"/></a>")
print(json.dumps({
    "sum": total,
    "sha256": hashlib.sha256(b"livefs").hexdigest(),
    "decimal": str(decimal.Decimal(1) / decimal.Decimal(7)),
    "xml": [b.get("n") for b in doc],
    "crc": zlib.crc32(b"livefs"),
    "ssl": ssl.OPENSSL_VERSION,
    "libc": ctypes.util.find_library("c"),
}, sort_keys=True))'
}
prog_perl() {
  # shellcheck disable=SC2016 # perl code
  timeout "$PROGRAM_TIMEOUT" /usr/bin/perl -MPOSIX=floor -MDigest::SHA=sha256_hex \
    -MList::Util=sum -MData::Dumper -MFile::Temp=tempfile -e '
      my ($fh, $name) = tempfile(UNLINK => 1);
      print $fh "x" x 1000; close $fh;
      $Data::Dumper::Terse = 1; $Data::Dumper::Indent = 0;
      print sha256_hex("livefs"), " ", sum(1 .. 100), " ", floor(7 / 2), " ", -s $name, " ",
        Dumper({a => [1, 2]}), "\n";'
}
prog_gcc() {  # PHASE
  mkdir -p "$W/$1"
  timeout "$PROGRAM_TIMEOUT" gcc -O2 -Wall -Werror -o "$W/$1/hello" "$W/hello.c" -lm &&
    timeout "$PROGRAM_TIMEOUT" "$W/$1/hello"
}
prog_gxx() {  # PHASE
  mkdir -p "$W/$1"
  timeout "$PROGRAM_TIMEOUT" g++ -O2 -Wall -Werror -std=c++17 -o "$W/$1/hello++" "$W/hello.cpp" &&
    timeout "$PROGRAM_TIMEOUT" "$W/$1/hello++"
}
DPKG_PACKAGES=()
prog_dpkg_verify() {
  # dpkg --verify prints one line per problem and exits 0 when there is none.
  timeout "$PROGRAM_TIMEOUT" dpkg --verify "${DPKG_PACKAGES[@]}" &&
    echo "dpkg --verify: ${DPKG_PACKAGES[*]}: no problems"
}
# passwd -S shows the account's shadow fields (last change, min, max, warn, inactive) only
# when it runs with euid 0 and can read /etc/shadow; without setuid it prints "never -1 ...".
prog_setuid_passwd() {
  timeout "$PROGRAM_TIMEOUT" setpriv --reuid=65534 --regid=65534 --clear-groups passwd -S nobody
}
# File capabilities (security.capability) of the files that have them on the real /usr.
CAP_FILES=()
prog_file_caps() {
  timeout "$PROGRAM_TIMEOUT" getcap "${CAP_FILES[@]}"
}
prog_unprivileged_run() {
  timeout "$PROGRAM_TIMEOUT" setpriv --reuid=65534 --regid=65534 --clear-groups \
    /usr/bin/env LC_ALL=C /usr/bin/python3 -I -c 'import os, json; print(os.geteuid(), json.dumps([1]))'
}
PROGRAMS=(unprivileged_run setuid_passwd python3 perl gcc gxx dpkg_verify)

run_program() {  # NAME PHASE: output in $W/PHASE.NAME.out, exit status in .rc
  local rc=0
  "prog_$1" "$2" >"$W/$2.$1.out" 2>&1 </dev/null || rc=$?
  echo "$rc" >"$W/$2.$1.rc"
}

# ---------------------------------------------------------------------------------------
log "== 1. baseline on the real /usr (in the namespace, before the mount)"
# Packages for dpkg --verify: those of the programs run here, kept when they verify
# cleanly on the real /usr (a host with a locally changed file is not the view's fault).
candidates=(coreutils bash dash libc6 perl-base passwd dpkg util-linux
  "$(dpkg -S "$(readlink -f /usr/bin/python3)" 2>/dev/null | cut -d: -f1)"
  "$(dpkg -S "$(readlink -f "$(command -v gcc)")" 2>/dev/null | cut -d: -f1)"
  "$(dpkg -S "$(gcc -print-prog-name=cc1)" 2>/dev/null | cut -d: -f1)")
for p in "${candidates[@]}"; do
  [[ -n $p ]] || continue
  if out=$(dpkg --verify "$p" 2>&1) && [[ -z $out ]]; then DPKG_PACKAGES+=("$p"); fi
done
[[ ${#DPKG_PACKAGES[@]} -ge 4 ]] || die "too few packages verify cleanly on the host: ${DPKG_PACKAGES[*]}"
log "dpkg --verify packages: ${DPKG_PACKAGES[*]}"
if command -v getcap >/dev/null; then
  while read -r line; do CAP_FILES+=("${line% *}"); done < <(getcap -r /usr/bin /usr/sbin /usr/lib 2>/dev/null)
fi
if [[ ${#CAP_FILES[@]} -gt 0 ]]; then
  PROGRAMS+=(file_caps)
  log "files with capabilities: ${CAP_FILES[*]}"
else
  log "no file under /usr has file capabilities here: no capability check"
fi

t=$SECONDS
for p in "${PROGRAMS[@]}"; do
  run_program "$p" base
  [[ $(cat "$W/base.$p.rc") == 0 ]] || {
    cat "$W/base.$p.out" >&2
    die "$p fails on the real /usr (exit $(cat "$W/base.$p.rc")): the host cannot run this test"
  }
done
log "baseline: ${#PROGRAMS[@]} programs in $((SECONDS - t)) s"

# The setuid check must be able to fail: on a nosuid bind of /usr the same command has to
# print something else.
nosuid_out=$(unshare -m --propagation private -- /bin/sh -c \
  'mount --bind /usr /usr && mount -o remount,bind,nosuid /usr &&
   setpriv --reuid=65534 --regid=65534 --clear-groups passwd -S nobody' 2>&1) ||
  die "passwd -S on a nosuid bind of /usr failed: $nosuid_out"
[[ $nosuid_out != "$(cat "$W/base.setuid_passwd.out")" ]] ||
  die "passwd -S nobody prints the same with and without setuid here ('$nosuid_out'): no setuid check possible"
log "setuid probe: 'passwd -S nobody' as uid 65534 prints '$(cat "$W/base.setuid_passwd.out")'; on nosuid: '$nosuid_out'"

# ---------------------------------------------------------------------------------------
log "== 2. staged tree: an added program and two added files"
mkdir -p "$STAGED/bin" "$STAGED/share/livefs-host-usr"
gcc -O2 -o "$STAGED/bin/livefs-host-usr-hello" -x c - <<'EOF'
#include <stdio.h>
int main(void) { puts("hello from the staged tree"); return 0; }
EOF
head -c 4M /dev/urandom >"$STAGED/share/livefs-host-usr/blob"
# `held` is read by nothing before the umount: every page of it comes from the daemon then.
head -c 16M /dev/urandom >"$STAGED/share/livefs-host-usr/held"
BLOB_SHA=$(sha256sum <"$STAGED/share/livefs-host-usr/blob" | cut -d' ' -f1)
HELD_SHA=$(sha256sum <"$STAGED/share/livefs-host-usr/held" | cut -d' ' -f1)
PY_LIBDIR=$(/usr/bin/python3 -I -c 'import os; print(os.path.dirname(os.__file__))')

# ---------------------------------------------------------------------------------------
log "== 3. over-mount: livefs mount --booted /usr --staged STAGED /usr"
mount_args=(--booted /usr --staged "$STAGED" --state "$S")
# Today the view is for root only unless asked; a later default needs no flag.
if "$LIVEFS" mount --help 2>/dev/null | grep -q -- '--allow-other'; then mount_args+=(--allow-other); fi
t=$SECONDS
out=$(timeout -k 10 "$MOUNT_TIMEOUT" "$LIVEFS" mount "${mount_args[@]}" /usr 2>&1) ||
  die "livefs mount failed ($((SECONDS - t)) s): $out"
DAEMON=$(<"$S/daemon.pid")
echo "$DAEMON" >"$W/pid.daemon"
log "mount: $((SECONDS - t)) s (daemon $DAEMON; the booted manifest of /usr is scanned on a fresh state)"
usr_is_view || die "/usr is not a livefs mount after livefs mount"
log "view mount options: $(view_mount_options)"
[[ ! -e /usr/bin/livefs-host-usr-hello ]] || die "the addition is visible before apply"

# ---------------------------------------------------------------------------------------
log "== 4. programs from the view"
t=$SECONDS
for p in "${PROGRAMS[@]}"; do
  t0=$SECONDS
  run_program "$p" view
  rc=$(cat "$W/view.$p.rc")
  got=$(cat "$W/view.$p.out")
  want=$(cat "$W/base.$p.out")
  if [[ $p == setuid_passwd ]]; then
    if [[ $rc == 0 && $got == "$want" ]]; then
      ok "$p" "'passwd -S nobody' as uid 65534 read /etc/shadow (euid 0): $got"
    elif [[ $got == "$nosuid_out" ]]; then
      bad "$p" "'passwd -S nobody' as uid 65534 printed '$got' (exit $rc), what a nosuid /usr gives; with euid 0 it prints '$want'; the view's mount options: $(view_mount_options)"
    else
      bad "$p" "'passwd -S nobody' as uid 65534 printed '$got' (exit $rc); expected '$want'"
    fi
  elif [[ $p == file_caps && $got != "$want" ]]; then
    bad "$p" "getcap through the view printed '$got' (exit $rc); on the real /usr: '$want' (security.capability not served)"
  elif [[ $rc == 0 && $got == "$want" ]]; then
    ok "$p" "$(head -c 100 <<<"$got" | head -n 1) ($((SECONDS - t0)) s)"
  else
    bad "$p" "exit $rc, output differs from the real /usr's: $(diff <(echo "$want") <(echo "$got") | head -n 6 | tr '\n' ' ')"
  fi
done
log "programs from the view: $((SECONDS - t)) s"

# ---------------------------------------------------------------------------------------
log "== 5. apply the addition"
if out=$(timeout "$PROGRAM_TIMEOUT" "$LIVEFS" apply --state "$S" bin/livefs-host-usr-hello \
  share/livefs-host-usr/blob share/livefs-host-usr/held 2>&1); then
  ok apply "$(head -n 1 <<<"$out")"
else
  bad apply "livefs apply failed: $out"
fi
rc=0
out=$(timeout "$PROGRAM_TIMEOUT" setpriv --reuid=65534 --regid=65534 --clear-groups \
  /usr/bin/livefs-host-usr-hello 2>&1) || rc=$?
if [[ $rc == 0 && $out == "hello from the staged tree" ]]; then
  ok added_program "run as uid 65534: $out"
else
  bad added_program "exit $rc, printed '$out'"
fi
got=$(sha256sum </usr/share/livefs-host-usr/blob 2>&1 | cut -d' ' -f1) || true
if [[ $got == "$BLOB_SHA" ]]; then
  ok added_file "sha256 of /usr/share/livefs-host-usr/blob matches the staged file"
else
  bad added_file "sha256 of /usr/share/livefs-host-usr/blob is '$got', staged '$BLOB_SHA'"
fi

# ---------------------------------------------------------------------------------------
log "== 6. livefs umount from inside the namespace while a program from the view holds it"
cat >"$W/holder.py" <<'EOF'
# Started from the view (python3 and its libraries are mapped from it). Maps a file of the
# view it has not read, opens a directory of the view, says "ready", and after "go" (sent
# after the umount) reads all of it and imports more.
import hashlib, mmap, os, sys
held, want, pylib = sys.argv[1:4]
fd = os.open(held, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # no page of it cached
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
libdir = os.open(pylib, os.O_RDONLY | os.O_DIRECTORY)
print("ready", os.getpid(), flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
def start(name):
    print("reading: " + name, flush=True)
def step(name, ok, detail=""):
    print(("ok " if ok else "fail ") + name + (": " + detail if detail else ""), flush=True)
    if not ok:
        sys.exit(1)
start("every page of the mapping")
got = hashlib.sha256(m).hexdigest()
step("every page of the mapping", got == want, got)
start("pread of the open file")
h = hashlib.sha256()
off = 0
while True:
    b = os.pread(fd, 1 << 20, off)
    if not b:
        break
    h.update(b)
    off += len(b)
step("pread of the open file", h.hexdigest() == want, "%d bytes" % off)
start("modules through the held directory")
compiled = []
for name in ("fractions.py", "statistics.py", "json/decoder.py", "email/message.py"):
    f = os.open(name, os.O_RDONLY, dir_fd=libdir)
    src = b""
    while True:
        b = os.read(f, 1 << 16)
        if not b:
            break
        src += b
    os.close(f)
    compile(src, name, "exec")
    compiled.append(name)
step("modules read through the held directory compile", True, " ".join(compiled))
start("imports after the umount")
import fractions, statistics, email.message, sqlite3
step("imports after the umount", True,
     str(statistics.mean([fractions.Fraction(1, 3), 1])) + " " + sqlite3.sqlite_version)
print("done", flush=True)
EOF
coproc HOLDER { exec timeout -k 5 "$HOLDER_TIMEOUT" /usr/bin/python3 -I "$W/holder.py" \
  /usr/share/livefs-host-usr/held "$HELD_SHA" "$PY_LIBDIR" 2>&1; }
exec {HOLDER_OUT}<&"${HOLDER[0]}" {HOLDER_IN}>&"${HOLDER[1]}"
# shellcheck disable=SC2153 # bash sets HOLDER_PID for the coproc (and unsets it when it exits)
HOLDER_TASK=$HOLDER_PID
echo "$HOLDER_TASK" >"$W/pid.holder"
line=
read -r -t 60 -u "$HOLDER_OUT" line || true
[[ $line == ready* ]] || die "the holder did not start: '$line'"
HOLDER_PY=${line#ready }
echo "$HOLDER_PY" >"$W/pid.holder-python"
log "holder: python3 (pid $HOLDER_PY) maps /usr/share/livefs-host-usr/held and holds $PY_LIBDIR"

t0=${EPOCHREALTIME/./}
umount_rc=0
umount_out=$(timeout -k 5 "$UMOUNT_TIMEOUT" "$LIVEFS" umount --state "$S" 2>&1) || umount_rc=$?
umount_ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
case $umount_rc in
  0) ok umount_cli "exit 0 in $umount_ms ms${umount_out:+: $umount_out}" ;;
  124 | 137) bad umount_cli "did not return within ${UMOUNT_TIMEOUT} s (killed by timeout, exit $umount_rc): it waits for the daemon to exit, which waits for the view's last user, the CLI itself among them${umount_out:+; said: $umount_out}" ;;
  13[0-9] | 14[0-9]) bad umount_cli "killed by signal $((umount_rc - 128)) after $umount_ms ms${umount_out:+: $umount_out}" ;;
  *) bad umount_cli "exit $umount_rc after $umount_ms ms: $umount_out" ;;
esac
if usr_is_view; then
  bad umount_detached "/usr is still the livefs view after livefs umount returned"
else
  ok umount_detached "/usr in the namespace is the real one again"
fi
daemon_alive=yes
gone "$DAEMON" && daemon_alive=no
log "after umount: daemon running: $daemon_alive"

printf 'go\n' >&"$HOLDER_IN"
holder_lines=()
while read -r -t "$HOLDER_TIMEOUT" -u "$HOLDER_OUT" line; do holder_lines+=("$line"); done
holder_rc=0
wait "$HOLDER_TASK" || holder_rc=$?
HOLDER_TASK=
last="nothing (no output after go)"
for line in "${holder_lines[@]}"; do
  log "holder: $line"
  last=$line
done
if [[ $holder_rc == 0 && $last == "done" ]]; then
  ok umount_holder "the holder read every page and imported more after the umount, exit 0"
elif ((holder_rc > 128)); then
  bad umount_holder "the holder was killed by signal $((holder_rc - 128)) after '$last' (exit $holder_rc): the daemon stopped serving its mapping"
else
  bad umount_holder "the holder exited $holder_rc after '$last'"
fi

# With its last user gone the kernel releases the mount and the daemon exits.
for ((i = 0; i < DAEMON_EXIT_TIMEOUT * 20; i++)); do gone "$DAEMON" && break; nap 0.05; done
if gone "$DAEMON"; then
  ok daemon_exit "the daemon exited once the view's last user was gone"
else
  bad daemon_exit "the daemon $DAEMON still runs ${DAEMON_EXIT_TIMEOUT} s after the view's last user exited"
fi

# ---------------------------------------------------------------------------------------
mapfile -t failed <"$FAILED"
log "== $CHECKS checks, ${#failed[@]} failed"
if [[ ${#failed[@]} != 0 ]]; then
  printf '  failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
