# Shared by scripts/demo, scripts/test and scripts/fuzz: install what is missing, configure,
# build. Sourced, not run.

LIVEFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIVEFS_PACKAGES=(cmake ninja-build g++ pkg-config libfuse3-dev fuse3 libostree-dev ostree
  libxxhash-dev libspdlog-dev libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  fuse-overlayfs mergerfs unionfs-fuse e2fsprogs attr psmisc python3 lsof needrestart librpm-dev
  rpm python3-matplotlib)
# The fuzz build (scripts/fuzz): libFuzzer and the sanitizer runtimes of clang 16, the first
# Debian 12 clang whose C++23 support reads libstdc++ 12's <expected>.
LIVEFS_FUZZ_PACKAGES=(clang-16 libclang-rt-16-dev)
LIVEFS_FUZZ_CXX=clang++-16

# livefs_install_deps [more Debian packages...]
# LIVEFS_INSTALL_DEPS=0 checks nothing (debian/rules: Build-Depends say what is installed).
livefs_install_deps() {
  [ "${LIVEFS_INSTALL_DEPS:-1}" != 0 ] || return 0
  local missing=()
  for p in "${LIVEFS_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: missing Debian packages (${missing[*]}); run as root or install them" >&2
      return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # FUSE needs its device node (present on the test machines; loaded on demand elsewhere).
  [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
}

# FUSE passthrough (reads and mmap straight from the backing file) needs libfuse >= 3.16;
# Debian 12 ships 3.14. Without it, livefs_fuse3 builds Debian 13's fuse3 from its source
# package into the build tree, and CMake links it statically (LIVEFS_FUSE3_PREFIX).
LIVEFS_FUSE3_MIN=3.16
LIVEFS_FUSE3_SUITE=trixie
LIVEFS_FUSE3_BUILD_PACKAGES=(dpkg-dev meson)

# livefs_fuse3 BUILD_DIR: prints the prefix of a libfuse >= LIVEFS_FUSE3_MIN built from source
# under BUILD_DIR/_deps/fuse3, or nothing when the system's libfuse is new enough.
# LIVEFS_SYSTEM_FUSE3=1 uses the system's whatever its version (a build without passthrough).
livefs_fuse3() {
  local dir
  dir=$(realpath -m "$1")/_deps/fuse3
  if [ "${LIVEFS_SYSTEM_FUSE3:-0}" = 1 ] ||
    pkg-config --atleast-version="$LIVEFS_FUSE3_MIN" fuse3 2>/dev/null; then
    return
  fi
  # IGNORE_MTAB: libfuse 3.17 updates /etc/mtab after mounting by running /bin/mount, even
  # where /etc/mtab is the kernel's list (a symlink into /proc). That program comes from
  # /usr; over /usr the view is not served yet, so the mount would wait for itself forever.
  local meson_args=(-Dbuildtype=release -Ddefault_library=static -Dexamples=false
    -Dutils=false -Dtests=false -Dc_args=-DIGNORE_MTAB)
  local recipe="$LIVEFS_FUSE3_SUITE ${meson_args[*]}"
  if [ -e "$dir/prefix/lib/libfuse3.a" ] && [ "$(cat "$dir/recipe" 2>/dev/null)" = "$recipe" ]; then
    echo "$dir/prefix"
    return
  fi
  livefs_install_deps "${LIVEFS_FUSE3_BUILD_PACKAGES[@]}" >&2
  echo "building libfuse from Debian's $LIVEFS_FUSE3_SUITE source package (passthrough needs >= $LIVEFS_FUSE3_MIN)" >&2
  rm -rf "$dir"
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/download"
  # The Debian archive the machine's apt already uses (a mirror, a proxy), then Debian's
  # own, each through a private sources list, lists and cache: the machine's apt
  # configuration is not touched; apt checks the files against the signed index.
  local uris uri built=0
  uris=$( (cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true) | awk '
      /^$/ { if (keyring && uri != "") print uri; uri = ""; keyring = 0 }
      /^URIs:/ && $2 !~ /security/ { uri = $2 }
      /^Signed-By:.*debian-archive-keyring/ { keyring = 1 }
      END { if (keyring && uri != "") print uri }'
    awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++)
      if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' /etc/apt/sources.list 2>/dev/null || true
    echo http://deb.debian.org/debian)
  local apt=(apt-get -q -o "Dir::Etc::SourceList=$dir/apt/sources.list"
    -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$dir/apt/lists"
    -o "Dir::Cache=$dir/apt/cache" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
  for uri in $(printf '%s\n' "$uris" | awk '!seen[$0]++'); do
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $LIVEFS_FUSE3_SUITE main" \
      >"$dir/apt/sources.list"
    rm -f "$dir"/download/*
    if "${apt[@]}" update >&2 &&
      (cd "$dir/download" && "${apt[@]}" source --download-only fuse3 >&2); then
      built=1
      break
    fi
    echo "($uri has no $LIVEFS_FUSE3_SUITE source of fuse3; trying the next archive)" >&2
  done
  [ "$built" = 1 ] &&
    dpkg-source -x "$dir"/download/fuse3_*.dsc "$dir/src" >&2 &&
    meson setup "$dir/build" "$dir/src" --prefix="$dir/prefix" --libdir=lib "${meson_args[@]}" \
      -Dudevrulesdir="$dir/prefix/udev" -Dinitscriptdir= >&2 &&
    ninja -C "$dir/build" >&2 && meson install -C "$dir/build" >&2 &&
    PKG_CONFIG_PATH=$dir/prefix/lib/pkgconfig pkg-config --atleast-version="$LIVEFS_FUSE3_MIN" fuse3 &&
    echo "$recipe" >"$dir/recipe" || {
    echo "error: could not build libfuse >= $LIVEFS_FUSE3_MIN from the $LIVEFS_FUSE3_SUITE source package (see above);" \
      "LIVEFS_SYSTEM_FUSE3=1 builds against the system's libfuse, without passthrough" >&2
    return 1
  }
  echo "$dir/prefix"
}

# livefs_configure BUILD_DIR [extra cmake args...]
# Compiles through ccache when it is installed (LIVEFS_CCACHE=0 turns that off, e.g. to time a
# build as CI runs it).
livefs_configure() {
  local dir=$1
  shift
  local launcher=
  if [ "${LIVEFS_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null; then
    launcher=ccache
  fi
  local fuse3
  fuse3=$(livefs_fuse3 "$dir")
  cmake -S "$LIVEFS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER_LAUNCHER="$launcher" -DLIVEFS_FUSE3_PREFIX="$fuse3" "$@" >/dev/null
}

# livefs_build BUILD_DIR [extra cmake args...]: configures and builds everything.
livefs_build() {
  livefs_configure "$@"
  cmake --build "$1" -j "$(nproc)"
}

# What the sanitizers print a stack with: llvm-symbolizer when there is one, else binutils'
# addr2line (which clang depends on).
livefs_symbolizer() {
  local s
  for s in llvm-symbolizer-16 llvm-symbolizer addr2line; do
    if command -v "$s" >/dev/null; then
      command -v "$s"
      return
    fi
  done
}
