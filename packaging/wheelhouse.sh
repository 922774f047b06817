#!/usr/bin/env bash
# Download the test suite's wheels for Python VERSION (3.11 or 3.13) into build/wheels/cpXY,
# once per packaging/requirements-test.txt, and print that directory:
#
#   packaging/wheelhouse.sh VERSION
#
# The suite inside a Debian 13 root installs from it offline, and the wheel test installs the
# package's own wheel from it into a fresh virtual environment, with no index.
set -euo pipefail

py=${1:?usage: wheelhouse.sh PYTHON_VERSION}
top=$(cd "$(dirname "$0")/.." && pwd)
pip="$top/.venv/bin/pip"
[ -x "$pip" ] || { echo "wheelhouse: run 'make setup' first (needs $pip)" >&2; exit 1; }
wheels="$top/build/wheels/cp${py/./}"
stamp="$(sha256sum "$top/packaging/requirements-test.txt" | cut -c1-16)"
if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$wheels"
    mkdir -p "$wheels"
    # setuptools: the editable install of this tree is built offline, without build isolation.
    "$pip" download --quiet --disable-pip-version-check --python-version "$py" \
        --only-binary=:all: -r "$top/packaging/requirements-test.txt" "setuptools>=68" \
        -d "$wheels" >&2
    echo "$stamp" >"$wheels/.stamp"
fi
echo "$wheels"
