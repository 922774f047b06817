#!/bin/sh
# Install the Debian packages that trustinstaller, its demo and its tests need.
# Only missing packages are installed, so a second run is quick and offline.
set -eu

packages="ca-certificates libnss3-tools openssl curl util-linux python3 python3-venv"
# The clients the end-to-end tests prove (tests/test_clients.py): Chromium reads NSS, Node reads
# NODE_EXTRA_CA_CERTS, and ca-certificates-java's update hook feeds the JVM's keystore.
packages="$packages chromium nodejs default-jre-headless ca-certificates-java"
# Selenium drives Chromium through Debian's chromedriver (tests/test_chromium_policy.py).
packages="$packages chromium-driver"
# Firefox reads only its policies file (tests/test_firefox_browser.py drives it with npm's
# puppeteer-core, which the Makefile installs from tests/js/package-lock.json).
packages="$packages firefox-esr"
# git reads GIT_SSL_CAINFO from the env file (tests/test_env_clients.py). util-linux, above,
# brings su, which starts the login shells of tests/test_login_shell.py.
packages="$packages git"
# Debian's nodejs comes without npm; NodeSource's nodejs carries it and conflicts with the
# package, so ask for npm only when no npm is on PATH.
if ! command -v npm >/dev/null 2>&1; then
    packages="$packages npm"
fi
# The privilege-separation attacks (tests/test_privsep.py): gcc builds the hostile user's
# renameat2 swapper and its shared library; strace records which uid touched which path.
packages="$packages gcc strace"
if [ "$#" -gt 0 ]; then
    packages="$packages $*"
fi

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install:$missing" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
