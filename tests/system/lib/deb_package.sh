# shellcheck shell=bash
# The Debian package built from this source tree (dpkg-buildpackage -b, debian/) and a
# Debian 12 root with systemd to install it into. Sourced after debian_root.sh.
#
# The package is built in a copy of the tree at a fixed path (so that ccache, when the
# machine has it, finds the objects of the last build: the compiler's -ffile-prefix-map
# names that path), and cached under $LIVEFS_TEST_CACHE/deb keyed by the content of the
# tree's files: system.deb and system.nspawn share one build.

LIVEFS_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
DEB_BUILD_DIR=${DEB_BUILD_DIR:-/var/tmp/livefs-deb-build}

# The source tree's files (relative), as git sees them (tracked and untracked, not ignored),
# or every file outside build trees when it is not a git checkout.
deb_source_files() {
  if git -C "$LIVEFS_SRC" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$LIVEFS_SRC" ls-files -co --exclude-standard -z |
      (cd "$LIVEFS_SRC" && while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done)
  else
    (cd "$LIVEFS_SRC" && find . -path './build*' -prune -o -path ./.git -prune -o -type f -print0)
  fi
}

# deb_package_build TEST_BUILD_DIR: prints the path of livefs_VERSION_ARCH.deb. The libfuse
# the package links is built by debian/rules (scripts/lib.sh, livefs_fuse3) into a cache
# directory that outlives the build, seeded from TEST_BUILD_DIR/_deps/fuse3 when the test's
# build tree has one.
deb_package_build() {
  local test_build=$1 cache="$LIVEFS_TEST_CACHE/deb"
  mkdir -p "$cache"
  exec {lock}>"$cache/lock"
  flock "$lock"
  # The key leaves out what the package build does not use (it builds no tests, benchmarks
  # or fuzz targets): editing a test does not rebuild the package.
  local key
  key=$(deb_source_files | grep -zvE '^(tests|bench|fuzz)/|\.md$' |
    (cd "$LIVEFS_SRC" && xargs -0 sha256sum) | sha256sum | cut -c1-16)
  local out="$cache/$key"
  if compgen -G "$out/livefs_*.deb" >/dev/null; then
    debian_log "package of this tree already built: $(basename "$out"/livefs_*.deb)" >&2
    flock -u "$lock"
    echo "$out"/livefs_*.deb
    return
  fi
  local fuse3="$cache/fuse3"
  if [[ -e $test_build/_deps/fuse3/recipe && ! -e $fuse3/_deps/fuse3/recipe ]]; then
    mkdir -p "$fuse3/_deps/fuse3"
    cp -a "$test_build/_deps/fuse3/prefix" "$test_build/_deps/fuse3/recipe" "$fuse3/_deps/fuse3/"
  fi
  rm -rf "$DEB_BUILD_DIR"
  mkdir -p "$DEB_BUILD_DIR/src"
  deb_source_files | (cd "$LIVEFS_SRC" && tar --null -T - -cf -) | tar -xf - -C "$DEB_BUILD_DIR/src"
  # What debian/control's Build-Depends names and the machine lacks (the README's step).
  if ! (cd "$DEB_BUILD_DIR/src" && dpkg-checkbuilddeps) >/dev/null 2>&1; then
    debian_log "apt-get build-dep ./ (Build-Depends missing here)" >&2
    (cd "$DEB_BUILD_DIR/src" && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q ./) \
      >"$cache/build-dep.log" 2>&1 ||
      { tail -n 20 "$cache/build-dep.log" >&2; debian_die "apt-get build-dep ./ failed"; }
  fi
  # debhelper runs the build with HOME set to a directory of its own: ccache is told where
  # the machine's cache and configuration are.
  local ccache=0 ccache_env=()
  if command -v ccache >/dev/null && [[ ${LIVEFS_CCACHE:-1} != 0 ]]; then
    ccache=1
    ccache_env=("CCACHE_DIR=$(ccache -k cache_dir)")
    local conf=${CCACHE_CONFIGPATH:-${XDG_CONFIG_HOME:-$HOME/.config}/ccache/ccache.conf}
    [[ -f $conf ]] && ccache_env+=("CCACHE_CONFIGPATH=$conf")
  fi
  debian_log "dpkg-buildpackage -b -us -uc (ccache: $ccache; log: $cache/build.log)" >&2
  local start=$SECONDS
  if ! (cd "$DEB_BUILD_DIR/src" && env -u NOTIFY_SOCKET LIVEFS_CCACHE=$ccache "${ccache_env[@]}" \
    LIVEFS_FUSE3_BUILD_DIR="$fuse3" DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }parallel=$(nproc)" \
    dpkg-buildpackage -b -us -uc) >"$cache/build.log" 2>&1; then
    tail -n 40 "$cache/build.log" >&2
    debian_die "dpkg-buildpackage failed (log: $cache/build.log)"
  fi
  debian_log "dpkg-buildpackage: $((SECONDS - start)) s" >&2
  # Only the newest build is kept.
  find "$cache" -mindepth 1 -maxdepth 1 -type d -not -name fuse3 -exec rm -rf {} +
  mkdir -p "$out"
  mv "$DEB_BUILD_DIR"/livefs_*.deb "$out/"
  cp "$DEB_BUILD_DIR"/livefs_*.buildinfo "$out/" 2>/dev/null || true
  rm -rf "$DEB_BUILD_DIR"
  flock -u "$lock"
  echo "$out"/livefs_*.deb
}

# deb_systemd_root DEST: the minbase root with systemd, systemd-sysv and dbus (a root
# systemd-nspawn --boot can boot), cached as a tarball; rebuilt when the minbase is newer.
deb_systemd_root() {
  local dest=$1 tarball="$LIVEFS_TEST_CACHE/$DEBIAN_SUITE-systemd.tar"
  local base="$LIVEFS_TEST_CACHE/$DEBIAN_SUITE-minbase.tar"
  if [[ -s $tarball && -s $base && ! $base -nt $tarball ]]; then
    debian_timed "untar cached $DEBIAN_SUITE systemd root" debian_tar_extract "$tarball" "$dest"
    return
  fi
  debian_minbase_root "$dest"
  local log="$LIVEFS_TEST_CACHE/apt-systemd.log"
  local start=$SECONDS
  if ! { debian_apt_in_root "$dest" update &&
    debian_apt_in_root "$dest" install --no-install-recommends systemd systemd-sysv dbus &&
    debian_apt_in_root "$dest" clean; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    debian_die "apt-get install systemd in the root failed (log: $log)"
  fi
  debian_log "apt-get install systemd systemd-sysv dbus: $((SECONDS - start)) s"
  debian_timed "tar root into $tarball" debian_tar_create "$dest" "$tarball"
}

# deb_install_package ROOT DEB: apt-get install of the .deb inside ROOT, so that its
# dependencies come from the archive (what ${shlibs:Depends} named).
deb_install_package() {
  local root=$1 deb=$2 log
  log=$(mktemp)
  cp "$deb" "$root/tmp/"
  local start=$SECONDS
  if ! { debian_apt_in_root "$root" update &&
    debian_apt_in_root "$root" install --no-install-recommends "/tmp/$(basename "$deb")"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    debian_die "apt-get install ./$(basename "$deb") in the root failed"
  fi
  debian_log "apt-get install $(basename "$deb") (and its dependencies): $((SECONDS - start)) s"
  rm -f "$log" "$root/tmp/$(basename "$deb")"
}
