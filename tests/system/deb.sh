#!/usr/bin/env bash
# System test: the Debian package. `dpkg-buildpackage -b -us -uc` (debian/) in a copy of the
# source tree builds livefs_VERSION_ARCH.deb whose dependencies dh_shlibdeps found; apt-get
# installs it into a debootstrapped Debian 12 root (with systemd) pulling them from the
# archive, and there: `livefs --version` and `livefs mount --help` run (the daemon and every
# library it links load), the man pages and the bash completion are where man and bash look,
# the units are installed and livefs-usr.service is enabled the Debian way (the template is
# not); `apt-get purge` takes it all away again.
# Usage: deb.sh PATH_TO_LIVEFS   (root, Debian's package mirror; the build tree holding
#   PATH_TO_LIVEFS lends its libfuse build)
set -euo pipefail

LIVEFS=$(realpath "${1:?usage: deb.sh PATH_TO_LIVEFS}")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/debian_root.sh
source "$HERE/lib/debian_root.sh"
# shellcheck source=lib/deb_package.sh
source "$HERE/lib/deb_package.sh"

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
[[ $(id -u) == 0 ]] || fail "needs root (dpkg-buildpackage's build of libfuse, chroot)"
debian_need_tool dpkg-buildpackage dpkg-dev
debian_need_tool dh debhelper

TEST_START=$SECONDS
W=$(mktemp -d /var/tmp/livefs-deb.XXXXXX)
ROOT=$W/root
cleanup() {
  local rc=$?
  local m
  for m in $(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount -l "$m"
  done
  rm -rf --one-file-system "$W"
  if [[ $rc == 0 ]]; then
    debian_log "PASS deb ($((SECONDS - TEST_START)) s)"
  else
    debian_log "FAIL deb (exit $rc after $((SECONDS - TEST_START)) s)"
  fi
}
trap cleanup EXIT

DEB=$(deb_package_build "$(dirname "$LIVEFS")")
[[ -f $DEB ]] || fail "no package built"
[[ $(basename "$DEB") =~ ^livefs_[0-9][^_]*_[a-z0-9]+\.deb$ ]] || fail "package named $(basename "$DEB")"
depends=$(dpkg-deb -f "$DEB" Depends)
# What dh_shlibdeps found: the shared libraries livefsd links (libfuse is linked in).
for lib in libostree-1-1 libxxhash0 libspdlog libc6; do
  [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib (dh_shlibdeps?): $depends"
done
[[ $depends != *libfuse3* ]] || fail "Depends names libfuse3, which is linked statically: $depends"
contents=$(dpkg-deb -c "$DEB")
for f in ./usr/sbin/livefs ./usr/libexec/livefs/livefsd ./lib/systemd/system/livefs-usr.service \
  ./lib/systemd/system/livefs@.service ./usr/share/man/man8/livefs.8.gz \
  ./usr/share/bash-completion/completions/livefs; do
  grep -qE " $f( |$)" <<<"$contents" || fail "package lacks $f"
done

deb_systemd_root "$ROOT"
deb_install_package "$ROOT" "$DEB"
# With /proc (the client finds the daemon through /proc/self/exe, as on a running system).
in_root() {
  debian_with_proc "$ROOT" chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 "$@"
}

version=$(in_root livefs --version) || fail "livefs --version failed in the root"
[[ $version == "livefs $(dpkg-deb -f "$DEB" Version | sed 's/-[^-]*$//')"* ]] ||
  fail "livefs --version printed '$version' (package $(dpkg-deb -f "$DEB" Version))"
help=$(in_root livefs mount --help 2>&1) || fail "livefs mount --help failed in the root: $help"
[[ $help == *--booted* && $help == *--sysroot* ]] || fail "livefs mount --help printed: $help"
# Every library the daemon needs resolves in the root (ldd there: nothing "not found").
missing=$(in_root ldd /usr/libexec/livefs/livefsd | grep 'not found' || true)
[[ -z $missing ]] || fail "livefsd needs libraries the package does not depend on: $missing"

for page in livefs livefs-mount livefs-apply livefs-status; do
  [[ -f $ROOT/usr/share/man/man8/$page.8.gz ]] || fail "no man page $page(8)"
done
if [[ -x $ROOT/usr/bin/man ]]; then
  in_root man -w livefs >/dev/null || fail "man -w livefs finds nothing"
fi
[[ -f $ROOT/usr/share/bash-completion/completions/livefs ]] || fail "no bash completion"
[[ -d $ROOT/etc/livefs ]] || fail "no /etc/livefs (where livefs@NAME's configuration goes)"

unit_dir=$ROOT/lib/systemd/system
# The daemon from the units' bind of /usr (/run/livefs/real-usr), through the root's own loader.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit_dir/livefs-usr.service")
[[ $exec_start =~ ^/run/livefs/real-usr/([^ ]+)\ --library-path\ /run/livefs/real-usr/([^ ]+)\ /run/livefs/real-usr/libexec/livefs/livefsd\ mount ]] ||
  fail "livefs-usr.service: ExecStart does not start /usr/libexec/livefs/livefsd: $exec_start"
[[ -x $ROOT/usr/${BASH_REMATCH[1]} ]] || fail "livefs-usr.service names a loader the root lacks: $exec_start"
[[ -L $ROOT/etc/systemd/system/multi-user.target.wants/livefs-usr.service ]] ||
  fail "livefs-usr.service not enabled (no multi-user.target.wants link)"
enabled=$(systemctl --root="$ROOT" is-enabled livefs-usr.service 2>&1) || true
[[ $enabled == enabled ]] || fail "systemctl --root is-enabled livefs-usr.service: $enabled"
if compgen -G "$ROOT/etc/systemd/system/*/livefs@*" >/dev/null; then
  fail "an instance of the template is enabled: $(ls "$ROOT"/etc/systemd/system/*/livefs@*)"
fi

start=$SECONDS
debian_apt_in_root "$ROOT" purge livefs >"$W/purge.log" 2>&1 || fail "apt-get purge livefs: $(tail "$W/purge.log")"
debian_log "apt-get purge livefs: $((SECONDS - start)) s"
for f in usr/sbin/livefs usr/libexec/livefs/livefsd lib/systemd/system/livefs-usr.service \
  etc/systemd/system/multi-user.target.wants/livefs-usr.service; do
  [[ ! -e $ROOT/$f && ! -L $ROOT/$f ]] || fail "$f left after apt-get purge"
done
echo "ok    deb: $(basename "$DEB"), Depends: $depends"
