# Shared by scripts/demo and scripts/test: install what is missing, configure, build.
# Sourced, not run.

LIVEFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIVEFS_PACKAGES=(cmake ninja-build g++ pkg-config libfuse3-dev fuse3 libostree-dev ostree
  libxxhash-dev libspdlog-dev libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  fuse-overlayfs e2fsprogs attr psmisc python3 lsof)

livefs_install_deps() {
  local missing=()
  for p in "${LIVEFS_PACKAGES[@]}"; do
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

# livefs_build BUILD_DIR [extra cmake args...]
livefs_build() {
  local dir=$1
  shift
  cmake -S "$LIVEFS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)"
}
