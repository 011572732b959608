# One entry point for people and CI. Each target installs what it needs first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-quick bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,postgres,server,mcp,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hivemem demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

bench-quick: $(STAMP)
	$(PY) bench/ingest.py --quick
	$(PY) bench/recall_latency.py --quick
	$(PY) bench/locomo.py --quick
	$(PY) bench/writers.py --quick
	$(PY) bench/http_overhead.py --quick
	$(PY) bench/leases.py --quick
	$(PY) bench/events.py --quick
	$(PY) bench/load.py --quick
	$(PY) bench/versioned.py --quick
	$(PY) bench/tokens.py --quick
	$(PY) bench/working.py --quick
	$(PY) bench/workflows.py --quick

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/recall_latency.py
	$(PY) bench/locomo.py
	$(PY) bench/writers.py
	$(PY) bench/http_overhead.py
	$(PY) bench/leases.py
	$(PY) bench/events.py
	$(PY) bench/load.py
	$(PY) bench/versioned.py
	$(PY) bench/tokens.py
	$(PY) bench/working.py
	$(PY) bench/workflows.py
