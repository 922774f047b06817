#!/usr/bin/env bash
# Build the Debian package with Debian's own tooling (debhelper, dpkg-buildpackage, lintian), as
# root:
#
#   packaging/deb/build.sh            for the release this machine runs, here
#   packaging/deb/build.sh RELEASE    for bookworm or trixie, in a cached root of that release
#
# Either way it writes dist/<release>/trustinstaller_<version>~<debNN>_<arch>.deb: the ~deb12 or
# ~deb13 suffix is Debian's convention for one upstream version built per release.
#
# The package is a self-contained virtual environment (docs/packaging.md, "Why a virtual
# environment", says why), bound to the release's Python (3.11 on bookworm, 3.13 on trixie).
# Its wheels are downloaded here, on this machine, with hashes checked against
# requirements.txt, for that Python version; debian/rules then installs them offline, in the
# root when there is one.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
here="$top/packaging/deb"
cd "$top"

in_root=0
if [ "${1:-}" = "--in-root" ]; then
    in_root=1
    shift
fi
host_release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
release=${1:-$host_release}
case "$release" in
    bookworm) suffix=deb12 py=3.11 ;;
    trixie) suffix=deb13 py=3.13 ;;
    *) echo "deb: unsupported release '$release' (bookworm or trixie)" >&2; exit 2 ;;
esac
upstream=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' trustinstaller/__init__.py)
[ -n "$upstream" ] || { echo "deb: no __version__ in trustinstaller/__init__.py" >&2; exit 1; }
version="$upstream~$suffix"
build="$top/build/deb-$release"
wheels="$build/wheelhouse"

if [ "$in_root" = 0 ]; then
    # 1. Wheels, here, where the network works as configured: the pinned runtime dependencies
    # for the release's Python, and our own (pure Python), built from this tree.
    "$top/packaging/install-deps.sh" python3-venv
    tools="$top/build/tools-venv"
    if [ ! -x "$tools/bin/pip" ]; then
        /usr/bin/python3 -m venv "$tools"
    fi
    rm -rf "$build"
    mkdir -p "$wheels"
    "$tools/bin/pip" download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
        --python-version "$py" --require-hashes -r "$here/requirements.txt" -d "$wheels"
    src="$build/src"
    mkdir -p "$src"
    # Built from a copy, so that setuptools' build/ and egg-info never land in the working tree.
    cp -r pyproject.toml trustinstaller README.md "$src/"
    find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
    "$tools/bin/pip" wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$src"
    rm -rf "$src"
    # Dates in the changelog and file times come from the last commit, for reproducible builds.
    SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
    commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ "$release" != "$host_release" ] || [ -n "${1:-}" ]; then
        # 2-3 in the cached root of that release, offline; the results come back in $build.
        "$top/packaging/in-root.sh" "$release" --bind "$build:$build" -- \
            env SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" TRUSTINSTALLER_COMMIT="$commit" \
            TRUSTINSTALLER_BUILD_DIR="$build" packaging/deb/build.sh --in-root "$release"
    else
        "$top/packaging/install-deps.sh" build-essential debhelper dpkg-dev lintian
        SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" TRUSTINSTALLER_COMMIT="$commit" \
            TRUSTINSTALLER_BUILD_DIR="$build" "$0" --in-root "$release"
    fi
    deb="trustinstaller_${version}_$(dpkg --print-architecture).deb"
    mkdir -p "dist/$release"
    cp "$build/$deb" "dist/$release/$deb"
    echo "deb: built dist/$release/$deb"
    exit 0
fi

# 2. The source tree dpkg-buildpackage wants: debian/, the units, the config, the wheels.
build=${TRUSTINSTALLER_BUILD_DIR:?}
wheels="$build/wheelhouse"
work="$build/trustinstaller-$upstream"
arch=$(dpkg --print-architecture)
deb="trustinstaller_${version}_${arch}.deb"
export SOURCE_DATE_EPOCH
rm -rf "$work"
mkdir -p "$work"
cp -r "$here/debian" "$work/debian"
cp systemd/trustinstaller.service "$work/debian/trustinstaller.service"
cp systemd/trustinstaller.socket "$work/debian/trustinstaller.socket"
# debhelper's name for a second unit of package trustinstaller: see --name in debian/rules.
cp systemd/trustinstaller-status.socket "$work/debian/trustinstaller.trustinstaller-status.socket"
cp systemd/trustinstaller.tmpfiles "$work/debian/trustinstaller.tmpfiles"
cp systemd/run-trustinstaller.mount "$work/debian/trustinstaller.run-trustinstaller.mount"
cp 'systemd/run-trustinstaller\x2denv.mount' \
    "$work/debian/trustinstaller.run-trustinstaller\\x2denv.mount"
cp "$here/config.toml" "$here/requirements.txt" "$work/"
cp README.md "$work/README.md"
cp -r docs "$work/docs"
cp -r "$wheels" "$work/wheelhouse"
cat > "$work/debian/changelog" <<CHANGELOG
trustinstaller ($version) $release; urgency=medium

  * Release $upstream for Debian $release, built from commit ${TRUSTINSTALLER_COMMIT:-unknown}.

 -- trustinstaller developers <trustinstaller@example.com>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")
CHANGELOG

# 3. Build (binary only, unsigned) and check.
(cd "$work" && dpkg-buildpackage -b -us -uc --no-pre-clean) > "$build/build.log" 2>&1 || {
    tail -40 "$build/build.log" >&2
    echo "deb: dpkg-buildpackage failed; full log in $build/build.log" >&2
    exit 1
}
lintian --version
lintian --fail-on error,warning --info --tag-display-limit 0 "$build/$deb" | tee "$build/lintian.log"
