# Two entry points (see README): `make demo` and `make test`. Each builds its own venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AWS_ACCOUNT_ID_ENDPOINT_MODE := disabled
export POWERTOOLS_TRACE_DISABLED := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: browser demo test test-large lint typecheck unit synth deploy destroy bench bench-quick bench-events bench-local bench-scale bench-big-run bench-airflow soak clean docs-states docs-screenshots

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

## demo: a real DAG run on the embedded AWS emulation (no AWS account needed)
demo: $(BIN)/.installed
	$(BIN)/skydag dev run examples/dags/ml_pipeline.yaml --signal events/signals/model_emitted.json

## test: every check: lint, format, types, tests, and the real `cdk synth`
test: lint typecheck unit synth

lint: $(BIN)/.installed
	$(BIN)/ruff check functions infra tests benchmarks examples
	$(BIN)/ruff format --check functions infra tests benchmarks examples

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Two workers (the machines have two cores); a module's tests stay on one worker, so its
# fixtures (a local cloud, the corpus) are built once.
unit: $(BIN)/.installed browser
	$(BIN)/pytest -n 2 --dist loadscope

# The CDK CLI, pinned in package-lock.json (npm's `latest` aws-cdk is broken).
CDK := node_modules/.bin/cdk
CDK_ARGS ?=

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

## synth: the CloudFormation template (cdk.out/) with the real Lambda asset (build/)
synth: $(BIN)/.installed node_modules/.installed
	$(CDK) synth --quiet --no-notices $(CDK_ARGS)

## deploy / destroy: `cdk deploy` / `cdk destroy` of the Skydag stack (docs/deploy.md)
deploy: $(BIN)/.installed node_modules/.installed
	$(CDK) deploy --no-notices $(CDK_ARGS)

destroy: node_modules/.installed
	$(CDK) destroy --no-notices $(CDK_ARGS)

## bench: $ per million Batch tasks, critical path, flatness and cold starts through the real handlers in the
## local cloud, with the targets MET / NOT MET; writes docs/benchmarks.md (under 15 minutes)
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_benchmarks.py

bench-quick: $(BIN)/.installed
	$(BIN)/python benchmarks/run_benchmarks.py --quick

## bench-events: idle cost, signal routing, reconciler repairs, handler cold starts, asset size
bench-events: $(BIN)/.installed
	cd benchmarks && ../$(BIN)/python run_event_benchmarks.py

## bench-scale: a 10,000-task DAG (chain, 1 -> N -> 1): validation seconds against 5 s, stored and read back
bench-scale: $(BIN)/.installed
	cd benchmarks && ../$(BIN)/python run_scale_benchmarks.py

## bench-big-run: a 10,000-task DAG (1 -> 9,998 -> 1 Batch tasks) run through the local cloud, metered,
## beside a 1 -> 10 -> 1 baseline; writes docs/benchmarks-big-run.md (about 40 minutes on 2 cores)
bench-big-run: $(BIN)/.installed
	cd benchmarks && ../$(BIN)/python run_big_run.py

## bench-local: the local cloud: job end -> event per service, handler invocations and AWS calls per task
bench-local: $(BIN)/.installed
	$(BIN)/python benchmarks/run_local_cloud_benchmarks.py

## bench-airflow: skydag's local cloud side by side with Airflow 3 (scheduler + LocalExecutor) on chain 50,
## fan-out 1->200->1 and 10 diamonds of no-op tasks: seconds per task, the ratio, >= 10x MET / NOT MET; writes
## docs/benchmarks-airflow.md. Optional (not in test or bench): Airflow installs into build/airflow-venv on first use
bench-airflow: $(BIN)/.installed
	$(BIN)/python benchmarks/airflow/run_airflow_benchmark.py

## test-large: the full-size end-to-end cases make test runs small (a 1 -> for_each 500 -> 1 run)
test-large: $(BIN)/.installed
	SKYDAG_MAPPED_ITEMS=500 $(BIN)/pytest -p no:xdist -s tests/e2e/test_mapped_dev_run.py

## soak: the fault-injection simulator over SEEDS seeds (default 1000, about two hours on two cores): faults by kind, violations, failing seeds
soak: $(BIN)/.installed
	$(BIN)/python -m tests.reliability --seeds $(or $(SEEDS),1000)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis node_modules cdk.out build

## docs-screenshots: take the console's screenshots in docs/images/ again (the browser test)
docs-screenshots: $(BIN)/.installed browser
	SKYDAG_SCREENSHOTS=docs $(BIN)/pytest -q tests/e2e/test_console_browser.py

## docs-states: regenerate the state diagram in docs/states.md from the transition table
docs-states: $(BIN)/.installed
	$(BIN)/python -m skydag.engine.states docs/states.md

# The console's browser tests drive Debian's chromium (never a browser Playwright would
# download). As root with apt-get, `make test` installs it when missing; otherwise those
# tests skip with one line saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the console's browser tests (apt-get)"; \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
	    echo "could not install chromium: the console's browser tests will skip"; \
	  else echo "no chromium (install it: apt-get install -y chromium): the console's browser tests will skip"; fi; }
