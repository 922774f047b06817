# Debian package and system tests (issue 5). Included by the top-level Makefile.
.PHONY: deb test-system

DEB_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' trustinstaller/__init__.py)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
DEB := dist/trustinstaller_$(DEB_VERSION)_$(DEB_ARCH).deb

deb:
	packaging/deb/build.sh

# Builds the package, then boots it under a real systemd in a debootstrap root.
test-system: setup deb
	packaging/install-deps.sh debootstrap systemd
	TRUSTINSTALLER_SYSTEM_TESTS=1 TRUSTINSTALLER_DEB=$(DEB) $(BIN)/pytest tests/system
