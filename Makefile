# The two commands of the README: `make demo` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The harness's virtual environments live in the checkout (an installed prelabel defaults to the working folder).
export PRELABEL_LS_VENV ?= $(CURDIR)/.venv-labelstudio
export PRELABEL_LOCAL_VENV ?= $(CURDIR)/.venv-localmodel

.PHONY: demo test test-fast bench load install labelstudio localmodel chromium check wheel-smoke clean
# What ruff checks and formats (.ci/wheel-smoke is Python without the .py).
LINT_PATHS := backend scripts tests benchmarks label_config .ci/wheel-smoke

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# Label Studio lives in its own virtual environment (.venv-labelstudio): it pins openai 1.x.
labelstudio: $(STAMP)
	$(BIN)/python -c "from prelabel.harness.labelstudio_server import ensure_label_studio; ensure_label_studio()"

# The local model runtime (llama-cpp-python compiled once, about 5 to 15 minutes on 2 cores, then cached in
# ~/.cache/prelabel/wheels): built here, as a setup step with its own progress, never inside a test's timeout.
localmodel: $(STAMP)
	$(BIN)/python -c "from prelabel.harness.local_model import ensure_local_runtime; ensure_local_runtime()"

# Headless Chromium for the browser tests (what a reviewer sees, the reports). As root with apt-get it is
# installed here; otherwise the step stops at once with the one command to run, before any test starts.
chromium:
	@if [ -n "$$PRELABEL_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Chromium for the browser tests (apt-get, about 1 minute)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The browser tests need Chromium. Install it once: sudo apt-get install -y chromium" >&2; \
		echo "(or set PRELABEL_CHROMIUM to a Chromium binary), then run make test again." >&2; \
		exit 1; \
	fi

demo: labelstudio
	$(BIN)/prelabel demo $(DEMO_ARGS)

test: chromium labelstudio localmodel
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

load: $(STAMP)
	$(BIN)/python -m benchmarks.load $(LOAD_ARGS)

# Lint, format and type checks. Each runs even when an earlier one fails; the target fails if any did.
check: $(STAMP)
	@status=0; \
	echo "== ruff check"; $(BIN)/ruff check $(LINT_PATHS) || status=1; \
	echo "== ruff format --check"; $(BIN)/ruff format --check $(LINT_PATHS) || status=1; \
	echo "== mypy (.ci/typecheck)"; PYTHON=$(BIN)/python .ci/typecheck || status=1; \
	exit $$status

# Build the wheel, install it in a fresh venv outside the checkout and run the installed command from there.
wheel-smoke: $(STAMP)
	$(BIN)/python .ci/wheel-smoke

clean:
	rm -rf $(VENV) .venv-labelstudio .pytest_cache test-artifacts build dist
