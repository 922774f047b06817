# Benchmarks: commands that print numbers, never timed assertions. Included by the Makefile.
#   make bench          time to trust: the agent, the hand-written script and the floor
#   make bench-fleet    many agents at once against one throttled Secrets Manager
#   make bench-profile  where an install's time goes (py-spy) and the imports before ready
# Pass options with BENCH_ARGS, e.g. `make bench BENCH_ARGS="--runs 9"`; see --help.

BENCH_VENVS := $(VENV)/bench
BENCH_AWS := $(BENCH_VENVS)/awscli/bin/aws
BENCH_PYSPY := $(BENCH_VENVS)/pyspy/bin/py-spy
# The hand-written path's aws CLI, from PyPI, in a venv of its own: it pins its own botocore.
AWSCLI_VERSION := 1.46.2
PYSPY_VERSION := 0.4.3
BENCH_ARGS ?=

.PHONY: bench bench-fleet bench-profile bench-deps

# The Java hook (ca-certificates-java) is part of what update-ca-certificates costs in
# production, so the benchmark installs it.
bench-deps:
	packaging/install-deps.sh ca-certificates-java

$(BENCH_AWS): | venv
	$(PYTHON) -m venv $(BENCH_VENVS)/awscli
	$(BENCH_VENVS)/awscli/bin/pip install -q --disable-pip-version-check awscli==$(AWSCLI_VERSION)

$(BENCH_PYSPY): | venv
	$(PYTHON) -m venv $(BENCH_VENVS)/pyspy
	$(BENCH_VENVS)/pyspy/bin/pip install -q --disable-pip-version-check py-spy==$(PYSPY_VERSION)

bench: setup bench-deps $(BENCH_AWS)
	$(BIN)/python -m tests.bench --aws $(BENCH_AWS) $(BENCH_ARGS)

bench-fleet: setup
	$(BIN)/python -m tests.bench.fleet $(BENCH_ARGS)

bench-profile: setup bench-deps $(BENCH_PYSPY)
	$(BIN)/python -m tests.bench.profiling --py-spy $(BENCH_PYSPY) $(BENCH_ARGS)
