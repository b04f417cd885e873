# Shared by scripts/demo, scripts/test and scripts/fuzz: install what is missing, configure,
# build. Sourced, not run.

LIVEFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIVEFS_PACKAGES=(cmake ninja-build g++ pkg-config libfuse3-dev fuse3 libostree-dev ostree
  libxxhash-dev libspdlog-dev libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  fuse-overlayfs mergerfs unionfs-fuse e2fsprogs attr psmisc python3 lsof)
# The fuzz build (scripts/fuzz): libFuzzer and the sanitizer runtimes of clang 16, the first
# Debian 12 clang whose C++23 support reads libstdc++ 12's <expected>.
LIVEFS_FUZZ_PACKAGES=(clang-16 libclang-rt-16-dev)
LIVEFS_FUZZ_CXX=clang++-16

# livefs_install_deps [more Debian packages...]
livefs_install_deps() {
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
  cmake -S "$LIVEFS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER_LAUNCHER="$launcher" "$@" >/dev/null
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
