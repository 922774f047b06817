#!/usr/bin/env bash
# Build dist/trustinstaller_<version>_<arch>.deb with Debian's own tooling (debhelper,
# dpkg-buildpackage, lintian), on a fresh Debian 12 machine, as root.
#
# The package is a self-contained virtual environment (README.md, "Why a virtual environment", says why). Its wheels
# are downloaded here, before the package build, with hashes checked against requirements.txt;
# debian/rules then installs them offline.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
here="$top/packaging/deb"
cd "$top"

# dpkg-buildpackage insists on build-essential even for a package that compiles nothing.
"$top/packaging/install-deps.sh" build-essential debhelper dpkg-dev lintian python3-venv

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' trustinstaller/__init__.py)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "deb: no __version__ in trustinstaller/__init__.py" >&2; exit 1; }
build="$top/build/deb"
work="$build/trustinstaller-$version"
wheels="$build/wheelhouse"
deb="trustinstaller_${version}_${arch}.deb"
# Dates in the changelog and file times come from the last commit, for reproducible builds.
SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

# 1. Wheels: the pinned runtime dependencies from PyPI, and our own, built from this tree.
tools="$build/tools-venv"
if [ ! -x "$tools/bin/pip" ]; then
    /usr/bin/python3 -m venv "$tools"
fi
mkdir -p "$wheels"
"$tools/bin/pip" download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --require-hashes -r "$here/requirements.txt" -d "$wheels"
rm -rf "$work" "$wheels"/trustinstaller-*.whl
mkdir -p "$work/src"
# Built from a copy, so that setuptools' build/ and egg-info never land in the working tree.
cp -r pyproject.toml trustinstaller "$work/src/"
cp README.md "$work/src/"
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +
"$tools/bin/pip" wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$work/src"
rm -rf "$work/src"

# 2. The source tree dpkg-buildpackage wants: debian/, the units, the config, the wheels.
cp -r "$here/debian" "$work/debian"
cp systemd/trustinstaller.service "$work/debian/trustinstaller.service"
cp systemd/trustinstaller.socket "$work/debian/trustinstaller.socket"
cp systemd/trustinstaller.tmpfiles "$work/debian/trustinstaller.tmpfiles"
cp "$here/config.toml" "$here/requirements.txt" "$work/"
cp README.md "$work/README.md"
cp -r "$wheels" "$work/wheelhouse"
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat > "$work/debian/changelog" <<CHANGELOG
trustinstaller ($version) unstable; urgency=medium

  * Release $version, built from commit $commit.

 -- trustinstaller developers <trustinstaller@example.com>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")
CHANGELOG

# 3. Build (binary only, unsigned) and check.
(cd "$work" && dpkg-buildpackage -b -us -uc --no-pre-clean) > "$build/build.log" 2>&1 || {
    tail -40 "$build/build.log" >&2
    echo "deb: dpkg-buildpackage failed; full log in $build/build.log" >&2
    exit 1
}
lintian --fail-on error --info --tag-display-limit 0 "$build/$deb" | tee "$build/lintian.log"

mkdir -p dist
cp "$build/$deb" "dist/$deb"
echo "deb: built dist/$deb"
