# Two entry points: `make demo` (the main job) and `make test` (the test suite; `make test-fast`
# for the edit loop).
# Each bootstraps a local virtualenv with pinned packages and, when run as root, the
# Debian packages the flows and tests need (GHDL for the VHDL simulation, PostgreSQL for the
# shared search study).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= runs/demo

.PHONY: demo test test-fast bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps aeon==1.6.0   # pyproject: tasks
	touch $@

system-deps:
	@if ! command -v ghdl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing GHDL (Debian package ghdl) for the VHDL simulation"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ghdl >/dev/null; \
	  else \
	    echo "note: GHDL is missing (apt-get install ghdl): VHDL simulation will be skipped"; \
	  fi; \
	fi
	@if ! command -v iverilog >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Icarus Verilog (Debian package iverilog) for the exported testbenches"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	  else \
	    echo "note: Icarus Verilog is missing (apt-get install iverilog): its testbench runs will be skipped"; \
	  fi; \
	fi
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing PostgreSQL (Debian package postgresql) for the shared-study search tests"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "note: PostgreSQL is missing (apt-get install postgresql): its search tests will be skipped"; \
	  fi; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/intformer demo --out $(OUT)

# Tests run on every core (pytest-xdist): the suite is many independent simulations.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -n auto

# The edit loop: no synthesis, no place-and-route, no slow tests (README, "Tests").
test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -n auto -m "not yosys and not nextpnr and not slow"

bench: $(STAMP) system-deps
	$(BIN)/intformer bench

clean:
	rm -rf $(VENV) runs build
