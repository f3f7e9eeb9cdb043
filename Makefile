# Two commands on a fresh clone: `make demo` and `make test`. Everything else is optional.
# Needs only Python 3.11+ and the package registry: the first run creates .venv from uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
SYNCED := $(VENV)/.synced
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo demo-reset test emulators airflow lint lock clean bench

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(SYNCED): $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python "$$(command -v $(PYTHON))"
	@touch $@

demo: $(SYNCED)  ## run a real sync on the bundled emulators (state kept in .demo/)
	$(VENV)/bin/python -m identity_sync_airflow.demo

demo-reset:  ## forget the demo's emulator state, audit DB and Airflow metadata
	rm -rf .demo

test: $(SYNCED)  ## the whole test suite
	$(VENV)/bin/python -m pytest -q

emulators: $(SYNCED)  ## run both emulators in the foreground (ports: IDCS_EMULATOR_PORT, BITBUCKET_EMULATOR_PORT)
	$(VENV)/bin/idsync-emulators

airflow: $(SYNCED)  ## airflow standalone with the DAGs, the emulators, connections and pool (AIRFLOW_PORT, default 8080)
	$(VENV)/bin/python -m identity_sync_airflow.standalone

SCENARIOS ?= S S-rl M
bench: $(SYNCED)  ## benchmarks on the emulators, not part of `make test` (make bench SCENARIOS="S M L"); results in bench/results/
	$(VENV)/bin/python -m bench --scenarios $(SCENARIOS)

lint: $(SYNCED)
	$(VENV)/bin/ruff check .

lock: $(UV)  ## re-resolve uv.lock after changing dependencies in pyproject.toml
	$(UV) lock --python "$$(command -v $(PYTHON))"

clean:
	rm -rf $(VENV) $(TOOLS) .demo .pytest_cache
