#!/usr/bin/env bash
# Print the path of a cached Debian root of RELEASE (bookworm, trixie) that can build the package
# and run the test suite: debootstrap --variant=minbase, then packaging/install-deps.sh inside it.
#
#   packaging/release-root.sh RELEASE
#
# The root lives under $TRUSTINSTALLER_TEST_CACHE (/var/cache/trustinstaller-test) and is built
# from nothing when missing or when the package list below changed; callers never write to it
# (they mount an overlay on it, see packaging/in-root.sh), so it stays reusable between runs.
set -euo pipefail

release=${1:?usage: release-root.sh RELEASE}
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${TRUSTINSTALLER_TEST_CACHE:-/var/cache/trustinstaller-test}
root="$cache/$release-dev"
case "$release" in
    bookworm | trixie) ;;
    *) echo "release-root: unsupported release '$release' (bookworm or trixie)" >&2; exit 2 ;;
esac

# What the package build needs (packaging/deb/build.sh) besides install-deps.sh's own list.
extra="build-essential debhelper dpkg-dev lintian python3-venv procps"
stamp="$release $(sha256sum "$top/packaging/install-deps.sh" | cut -c1-16) $extra"
if [ -f "$root/.trustinstaller-complete" ] && [ "$(cat "$root/.trustinstaller-complete")" = "$stamp" ]; then
    echo "$root"
    exit 0
fi

"$top/packaging/install-deps.sh" debootstrap >&2
# The main archive this machine's apt already uses (plain HTTP works from inside the root too).
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 ~ /^http.*\/debian\/?$/ {print $2; exit}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

partial="$root.partial"
mkdir -p "$cache"
for dir in "$partial" "$root"; do
    if [ -e "$dir" ]; then
        # Never delete through a leftover mount into the host's /dev or /sys.
        if awk -v d="$dir/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
            echo "release-root: $dir still has mounts under it; unmount them first" >&2
            exit 1
        fi
        rm -rf --one-file-system "$dir"
    fi
done
echo "release-root: debootstrap $release from $mirror into $partial" >&2
debootstrap --variant=minbase "$release" "$partial" "$mirror" >"$cache/$release-debootstrap.log" 2>&1 || {
    tail -20 "$cache/$release-debootstrap.log" >&2
    exit 1
}
cp /etc/resolv.conf "$partial/etc/resolv.conf"
install -m 0755 "$top/packaging/install-deps.sh" "$partial/usr/local/sbin/trustinstaller-install-deps"
# shellcheck disable=SC2086
R="$partial" unshare --mount --propagation private -- bash -c '
    set -e
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    mount --rbind /sys "$R/sys"
    exec chroot "$R" /usr/local/sbin/trustinstaller-install-deps "$@"' bash $extra >&2
rm -f "$partial"/var/cache/apt/archives/*.deb
echo "$stamp" >"$partial/.trustinstaller-complete"
mv "$partial" "$root"
echo "$root"
