# Debian packages, the suite on another release, and system tests (issues 5 and 10). Included by
# the top-level Makefile.
.PHONY: deb test-system test-release

# make deb: empty builds for this machine's release, here; RELEASE=bookworm or trixie builds in
# a cached debootstrap root of that release. Either writes dist/<release>/*~deb12|~deb13_*.deb.
RELEASE ?=
# The releases the boot test covers, each with the package built for it.
SYSTEM_RELEASES ?= bookworm trixie
HOST_RELEASE := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
DEB_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' trustinstaller/__init__.py)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)

deb:
	packaging/deb/build.sh $(RELEASE)

# The whole suite inside a root of RELEASE (trixie unless given), under its own Python.
test-release: setup
	packaging/test-release.sh $(or $(RELEASE),trixie)

# For each release: build its package (here for this machine's release), then boot it under a
# real systemd in a fresh debootstrap root of that release.
test-system: setup
	packaging/install-deps.sh debootstrap systemd
	set -e; for r in $(SYSTEM_RELEASES); do \
	    if [ "$$r" = "$(HOST_RELEASE)" ]; then packaging/deb/build.sh; \
	    else packaging/deb/build.sh "$$r"; fi; \
	    deb=$$(ls dist/$$r/trustinstaller_$(DEB_VERSION)~deb*_$(DEB_ARCH).deb); \
	    echo "test-system: $$r with $$deb"; \
	    TRUSTINSTALLER_SYSTEM_TESTS=1 TRUSTINSTALLER_SYSTEM_RELEASE=$$r TRUSTINSTALLER_DEB=$$deb \
	        $(BIN)/pytest -m system tests/system; \
	done
