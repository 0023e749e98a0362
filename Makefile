# Everything runs from a project-local virtual environment built from requirements.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/include

.PHONY: demo test bench stack stack-down system-packages ui venv constraints clean

demo: $(STAMP)
	$(PY) -m batch_ai demo $(if $(PROVIDER),--provider $(PROVIDER))

# The Airflow UI over the demo's run, with the review queue page (after `make demo`).
ui: $(STAMP)
	$(PY) -m batch_ai ui

# the house style first (pyproject.toml), then the suite
test: $(STAMP) system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

# A local deployment without Docker: api-server, scheduler, dag-processor, triggerer, a Celery
# worker (redis-server as its broker), PostgreSQL at 127.0.0.1:5432, the emulator. `make stack-down` stops it.
stack: $(STAMP) system-packages
	$(PY) -m batch_ai stack up

stack-down: $(STAMP)
	$(PY) -m batch_ai stack down

# What the deployment and browser tests need from Debian, installed when missing (as root):
# redis-server (the stack's Celery broker) and chromium (Playwright drives it; no browser download).
system-packages:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; \
		else echo "missing Debian packages:$$missing (not root: install them; their tests skip, and fail under CI=true)"; fi; \
	fi

# Each stage at 10k, 100k and 1M records on SQLite and PostgreSQL beside its raw limit, the
# common.ai comparison, DAG parse times and a 1M-record night (about an hour; not part of `make test`).
# BENCH_ARGS narrows it, e.g. BENCH_ARGS="--sizes 10000,100000 --backends sqlite --night 0".
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

venv: $(STAMP)

$(STAMP): requirements.txt requirements-emulator.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Re-freeze the full dependency set after changing a pin in requirements.txt.
constraints:
	rm -rf .venv-freeze && $(PYTHON) -m venv .venv-freeze
	.venv-freeze/bin/pip install --quiet $$(cat requirements.txt requirements-emulator.txt requirements-dev.txt \
		| sed 's/#.*//' | grep -v '^-' | grep .)
	.venv-freeze/bin/pip freeze > constraints.txt && rm -rf .venv-freeze

clean:
	rm -rf $(VENV) .airflow demo-output
