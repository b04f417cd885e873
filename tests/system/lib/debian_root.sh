# shellcheck shell=bash
# Real Debian 12 roots for the system tests: a debootstrapped minbase root (the booted tree)
# and a copy of it changed by a real apt-get run (the staged tree), both cached as tarballs
# under /var/cache/livefs-test because debootstrap and apt take minutes.
# Sourced by tests/system/*.sh; needs root and Debian's package mirror.

LIVEFS_TEST_CACHE=${LIVEFS_TEST_CACHE:-/var/cache/livefs-test}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

debian_log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
debian_die() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# Runs "$@" and prints how long it took, labelled with $1's description.
debian_timed() {
  local what=$1
  shift
  local start=$SECONDS
  "$@"
  debian_log "$what: $((SECONDS - start)) s"
}

debian_need_tool() {  # TOOL PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  debian_log "installing $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; } ||
    debian_die "cannot install $2"
  command -v "$1" >/dev/null 2>&1 || debian_die "$1 still missing after installing $2"
}

# tar of a whole root: numeric owners, xattrs (file capabilities), device nodes.
debian_tar_create() {  # ROOT TARBALL
  local tmp="$2.tmp.$$"
  tar --create --file "$tmp" --numeric-owner --xattrs --xattrs-include='*' -C "$1" . ||
    { rm -f "$tmp"; debian_die "tar of $1 failed"; }
  mv -f "$tmp" "$2"
}
debian_tar_extract() {  # TARBALL ROOT
  mkdir -p "$2"
  tar --extract --file "$1" --numeric-owner --xattrs --xattrs-include='*' \
    --same-permissions -C "$2" || debian_die "cannot extract $1 into $2"
}

# Mounts proc at ROOT/proc for the duration of "$@" run in a subshell-free way: the caller's
# cleanup trap also unmounts anything left under its temporary directory.
debian_with_proc() {  # ROOT CMD...
  local root=$1
  shift
  mount -t proc proc "$root/proc" || debian_die "cannot mount proc at $root/proc"
  local rc=0
  "$@" || rc=$?
  umount "$root/proc" || umount -l "$root/proc"
  return $rc
}

# A Debian minbase root at DEST: from the cached tarball, or debootstrapped (then cached).
debian_minbase_root() {  # DEST
  local dest=$1 tarball="$LIVEFS_TEST_CACHE/$DEBIAN_SUITE-minbase.tar"
  mkdir -p "$LIVEFS_TEST_CACHE"
  if [[ -s $tarball ]]; then
    debian_timed "untar cached $DEBIAN_SUITE minbase root" debian_tar_extract "$tarball" "$dest"
    return
  fi
  debian_need_tool debootstrap debootstrap
  debian_log "no cached root: debootstrap --variant=minbase $DEBIAN_SUITE (takes minutes)"
  local log="$LIVEFS_TEST_CACHE/debootstrap.log"
  local start=$SECONDS
  if ! debootstrap --variant=minbase "$DEBIAN_SUITE" "$dest" "$DEBIAN_MIRROR" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    debian_die "debootstrap failed (log: $log)"
  fi
  debian_log "debootstrap $DEBIAN_SUITE minbase: $((SECONDS - start)) s"
  # apt inside the root (for the staged change) sees the same suites as the host.
  cat >"$dest/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $DEBIAN_SUITE-security main
EOF
  rm -rf "$dest/var/cache/apt/archives/"*.deb
  debian_timed "tar root into $tarball" debian_tar_create "$dest" "$tarball"
}

# Runs apt-get inside ROOT with proc mounted and the host's resolver.
debian_apt_in_root() {  # ROOT APT-ARGS...
  local root=$1
  shift
  cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  debian_with_proc "$root" chroot "$root" /usr/bin/env -i DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 apt-get -y -q "$@"
}

# The staged root at DEST: BOOTED copied (cp -a), then changed by a real apt run: the
# security/updates upgrades plus the packages in DEBIAN_STAGED_PACKAGES. Cached as a tarball
# keyed by the package list; a cache older than the booted root's tarball is rebuilt.
DEBIAN_STAGED_PACKAGES=${DEBIAN_STAGED_PACKAGES:-file bc}
debian_staged_root() {  # BOOTED DEST
  local booted=$1 dest=$2
  local key=${DEBIAN_STAGED_PACKAGES// /+}
  local tarball="$LIVEFS_TEST_CACHE/$DEBIAN_SUITE-minbase-staged-$key.tar"
  local base="$LIVEFS_TEST_CACHE/$DEBIAN_SUITE-minbase.tar"
  if [[ -s $tarball && ! $base -nt $tarball ]]; then
    debian_timed "untar cached staged root" debian_tar_extract "$tarball" "$dest"
    return
  fi
  debian_timed "cp -a booted root to staged" cp -a "$booted" "$dest"
  local log="$LIVEFS_TEST_CACHE/apt-staged.log"
  : >"$log"
  local start=$SECONDS
  # shellcheck disable=SC2086 # the package list is words
  if ! { debian_apt_in_root "$dest" update &&
    debian_apt_in_root "$dest" upgrade &&
    debian_apt_in_root "$dest" install --no-install-recommends $DEBIAN_STAGED_PACKAGES &&
    debian_apt_in_root "$dest" clean; } >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    debian_die "apt in the staged root failed (log: $log)"
  fi
  debian_log "apt-get update/upgrade/install $DEBIAN_STAGED_PACKAGES in staged root: $((SECONDS - start)) s"
  debian_timed "tar staged root into $tarball" debian_tar_create "$dest" "$tarball"
}
