#!/usr/bin/env bash
# Run the whole test suite inside a root of RELEASE (default trixie), under that release's own
# Python, Chromium, certutil, update-ca-certificates and Java:
#
#   packaging/test-release.sh RELEASE [PYTEST_ARG]...
#
# The wheels are downloaded here, on the host, for the root's Python version; inside the root
# pip installs them offline (PyPI's TLS path through this machine's network needs a CA that a
# fresh root does not have, and the suite should not depend on the network anyway).
set -euo pipefail

release=${1:-trixie}
shift || true
top=$(cd "$(dirname "$0")/.." && pwd)
case "$release" in
    bookworm) py=3.11 ;;
    trixie) py=3.13 ;;
    *) echo "test-release: unsupported release '$release' (bookworm or trixie)" >&2; exit 2 ;;
esac

wheels=$("$top/packaging/wheelhouse.sh" "$py")
stamp="$(sha256sum "$top/packaging/requirements-test.txt" | cut -c1-16)"

# The root's virtual environment is kept beside the cached root, for the same wheels and root:
# later runs skip its installation. It lives at /opt/venv in the root, which an editable install
# of /src fits whatever the host's tree is called.
cache=${TRUSTINSTALLER_TEST_CACHE:-/var/cache/trustinstaller-test}
root=$("$top/packaging/release-root.sh" "$release")
venv="$cache/$release-venv"
venv_stamp="$stamp $(cat "$root/.trustinstaller-complete")"
if [ "$(cat "$venv/.trustinstaller-stamp" 2>/dev/null)" != "$venv_stamp" ]; then
    rm -rf "$venv"
fi
mkdir -p "$venv"

# puppeteer-core for the Firefox test: plain JavaScript, installed on the host by `make js`
# (npm's registry, like PyPI, is out of the root's TLS reach); git does not track node_modules.
js=()
if [ -d "$top/tests/js/node_modules" ]; then
    js=(--bind "$top/tests/js/node_modules:/src/tests/js/node_modules")
fi

exec "$top/packaging/in-root.sh" "$release" --bind "$wheels:/wheels" --bind "$venv:/opt/venv" \
    "${js[@]}" -- bash -c '
    set -e
    stamp=$1
    shift
    if [ ! -e /opt/venv/.trustinstaller-stamp ]; then
        python3 -m venv /opt/venv
        install="/opt/venv/bin/pip install --quiet --disable-pip-version-check --no-index"
        install="$install --find-links /wheels"
        $install -r packaging/requirements-test.txt "setuptools>=68"
        $install --no-build-isolation --no-deps -e .
        echo "$stamp" >/opt/venv/.trustinstaller-stamp
    fi
    export PATH=/opt/venv/bin:$PATH
    # The wheel test installs the package from here, offline.
    export TRUSTINSTALLER_WHEELHOUSE=/wheels
    python3 --version
    exec pytest -p no:cacheprovider "$@"' bash "$venv_stamp" "$@"
