# Every target works on a fresh Debian 12 machine, as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# update-ca-certificates lives in /usr/sbin.
export PATH := $(CURDIR)/$(BIN):/usr/local/sbin:/usr/sbin:/sbin:$(PATH)

.PHONY: setup deps venv js lint test test-fast dist wheelhouse demo clean

setup: deps venv js

deps:
	packaging/install-deps.sh

$(BIN)/.installed: pyproject.toml packaging/requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r packaging/requirements-test.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(BIN)/.installed

# puppeteer-core for the Firefox test, exactly as pinned in the lock file; it downloads no browser.
JS := tests/js
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

js: deps $(JS)/node_modules/.installed

# The suite's wheels for this machine's Python, from which the wheel test installs offline.
HOST_PY := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEELHOUSE := $(CURDIR)/build/wheels/cp$(subst .,,$(HOST_PY))
wheelhouse: venv
	packaging/wheelhouse.sh $(HOST_PY) >/dev/null

# A wheel and an sdist in dist/python, for pip or pipx on any Linux with Python 3.11 or later.
dist: venv
	$(BIN)/python -m build --outdir dist/python

lint: venv
	$(BIN)/ruff check trustinstaller tests
	$(BIN)/ruff format --check trustinstaller tests
	$(BIN)/mypy --strict trustinstaller

# After the host's suite: the suite again inside a Debian 13 root (test-release), then the boot
# tests under a real systemd for Debian 12 and 13 (test-system); both in packaging/deb.mk.
test: setup lint wheelhouse
	TRUSTINSTALLER_WHEELHOUSE=$(WHEELHOUSE) $(BIN)/pytest
	$(MAKE) test-release RELEASE=trixie
	$(MAKE) test-system

# The suite without real browsers, races, floods and the boot test: for a quick loop.
test-fast: venv
	$(BIN)/pytest -m "not slow" -q -n 2

demo: setup
	$(BIN)/python -m tests.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis $(JS)/node_modules

# Fragments: packaging/deb.mk adds deb and test-system.
include packaging/*.mk
include tests/bench/bench.mk
