#!/usr/bin/env bash
# Rewrites the seed corpora from real data (run by `scripts/fuzz --make-seeds`):
#   tree, journal,     written by livefs's own writers (MAKE_SEEDS, fuzz/make_seeds.cpp)
#   etc_undo
#   dpkg_status,       stanzas, file lists and diversions of this machine's dpkg database
#   dpkg_db            (one made-up case each where this machine has none: noted below)
#   tree_reader        the symlinks of this machine's root that lead to the dpkg database,
#                      and the cases RESOLVE_IN_ROOT handles specially
#   proc_holders       /proc/PID/maps, comm, cgroup of real processes, one of which maps the
#                      files proc_holders_fuzz looks for
#   proc_cgroup        /proc/PID/cgroup of this machine's processes, and systemd layouts
# Usage: make_seeds.sh MAKE_SEEDS CORPUS_DIR
set -euo pipefail
make_seeds=$1
corpus=$2
status=/var/lib/dpkg/status
info=/var/lib/dpkg/info

for t in tree journal etc_undo dpkg_status dpkg_db tree_reader proc_holders proc_cgroup; do
  rm -rf "${corpus:?}/$t"
  mkdir -p "$corpus/$t"
done

"$make_seeds" "$corpus"

# One stanza of the status file.
stanza() { awk -v p="$1" 'BEGIN { RS = ""; ORS = "\n\n" } $0 ~ "(^|\n)Package: " p "\n"' "$status"; }
# The list of an installed package (NAME.list or NAME:ARCH.list), its first lines.
list_of() {
  local f
  for f in "$info/$1.list" "$info/$1":*.list; do
    [ -f "$f" ] && head -n "${2:-15}" "$f" && return
  done
}
list_name() { basename "$(ls "$info/$1.list" "$info/$1":*.list 2>/dev/null | head -1)"; }

# dpkg_status: a plain package (a continued Description), a Multi-Arch: same one with
# Conffiles, three in a row; one removed package whose config files remain (the same stanza
# with the status dpkg gives it then; this machine has none).
stanza dash >"$corpus/dpkg_status/dash"
stanza libc6 >"$corpus/dpkg_status/libc6"
{ stanza base-files; stanza bash; stanza coreutils; } >"$corpus/dpkg_status/three"
stanza dash | sed 's/^Status: .*/Status: deinstall ok config-files/' >"$corpus/dpkg_status/config_files"

# dpkg_db: status, lists, diversions and the usr-merge links of a real root, in split_files
# format (fuzz/fuzz_support.h).
header() { printf '==> %s <==\n' "$1"; }
{
  header var/lib/dpkg/status
  stanza dash
  stanza libc6
  header var/lib/dpkg/diversions
  grep -A2 -x /usr/share/man/man1/sh.1.gz /var/lib/dpkg/diversions || true
  header "var/lib/dpkg/info/$(list_name dash)"
  list_of dash 20
  header "var/lib/dpkg/info/$(list_name libc6)"
  list_of libc6 15
  for d in bin sbin lib lib64; do
    [ -L "/$d" ] && header "$d -> $(readlink "/$d")"
  done
} >"$corpus/dpkg_db/merged_usr"
# The OSTree layout: the database under usr/var/lib/dpkg, no top-level links.
{
  header usr/var/lib/dpkg/status
  stanza coreutils
  header "usr/var/lib/dpkg/info/$(list_name coreutils)"
  list_of coreutils 25
} >"$corpus/dpkg_db/ostree_layout"
# Input without headers is the status file.
stanza bash >"$corpus/dpkg_db/status_only"

# tree_reader: one line per entry ("path", "dir/", "link -> target", "? query").
{
  for d in bin sbin lib lib64; do
    if [ -L "/$d" ]; then echo "$d -> $(readlink "/$d")"; else echo "$d/"; fi
  done
  echo usr/bin/dash
  echo usr/lib/x86_64-linux-gnu/libc.so.6
  echo var/lib/dpkg/status
  echo var/lib/dpkg/info/dash.list
  echo "usr/share/doc/dash/README -> ../../../../../etc/README"
  echo "? bin/dash"
  echo "? lib/x86_64-linux-gnu/../../var/lib/dpkg/status"
} >"$corpus/tree_reader/merged_usr"
# The OSTree layout: the database under usr/, reached through a /var symlink.
printf '%s\n' usr/var/lib/dpkg/status "var -> /usr/var" usr/etc/ "etc -> usr/etc" \
  "? /var/lib/dpkg/status" "? var/../var/lib/dpkg" >"$corpus/tree_reader/ostree_layout"
# Loops, chains, absolute targets, ".." above the root, a link as the last component.
printf '%s\n' "loop -> loop" "a -> b" "b -> c/d" c/d/ "c/d/x" "up -> ../../.." "abs -> /c/d/x" \
  "dangling -> nowhere" "? up/c/d/x" "? loop/x" "? a/x" "? abs" "? a/../d" >"$corpus/tree_reader/links"

# proc_holders: a process that maps the files the target looks for (proc_holders_fuzz.cpp:
# kRoot, kPaths), one of them replaced after mapping (shown " (deleted)"), with its comm and
# cgroup; and plain processes.
root=/tmp/livefs-fuzz-holders
mkdir -p "$root/usr/lib" "$root/usr/bin"
for f in usr/lib/libold.so.1 usr/bin/tool "usr/lib/with space.so" $'usr/lib/new\nline.so'; do
  printf 'livefs fuzz\n' >"$root/$f"
done
python3 - "$root" "$corpus/proc_holders/mapped" <<'PY'
import mmap, os, sys
root, out = sys.argv[1], sys.argv[2]
maps = []
for rel in ["usr/lib/libold.so.1", "usr/bin/tool", "usr/lib/with space.so", "usr/lib/new\nline.so"]:
    with open(os.path.join(root, rel), "rb") as f:
        maps.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
# An update replaces the library under the mapping (renamed over, as dpkg does).
old = os.path.join(root, "usr/lib/libold.so.1")
with open(old + ".new", "wb") as f:
    f.write(b"livefs fuzz\n")
os.rename(old + ".new", old)
def read(name):
    with open("/proc/self/" + name, "rb") as f:
        return f.read()
# The mappings of the files, the program's first ones, the [heap], [stack], [vdso]...
lines = read("maps").splitlines(keepends=True)
maps = b"".join(l for i, l in enumerate(lines) if i < 3 or root.encode() in l or b" [" in l)
with open(out, "wb") as f:
    f.write(b"==> maps <==\n" + maps + b"==> comm <==\n" + read("comm") +
            b"==> cgroup <==\n" + read("cgroup"))
PY
# A process holding the files through its exe and fd links.
{
  header maps
  head -n 3 /proc/self/maps
  header exe
  echo "$root/usr/bin/tool"
  header fd/3
  echo "$root/usr/lib/with space.so (deleted)"
  header fd/7
  echo "$root/usr/lib/libold.so.1"
} >"$corpus/proc_holders/links"
{ head -n 8 /proc/self/maps; tail -n 4 /proc/self/maps; } >"$corpus/proc_holders/plain"

# proc_cgroup: this machine's (cgroup v1 and v2 side by side), and what systemd machines
# show (this one runs no systemd): v2 with a service, a user's scope, a delegated subtree,
# and a v1 name=systemd hierarchy.
cat /proc/self/cgroup >"$corpus/proc_cgroup/hybrid"
printf '0::/system.slice/ssh.service\n' >"$corpus/proc_cgroup/service"
printf '0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-2345.scope\n' \
  >"$corpus/proc_cgroup/user_scope"
printf '0::/system.slice/docker-1f2e.scope/init.scope/payload\n' >"$corpus/proc_cgroup/delegated"
printf '12:pids:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n0::/\n' \
  >"$corpus/proc_cgroup/v1"
