# The two commands of the README: `make demo` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The harness's virtual environments live in the checkout (an installed prelabel defaults to the working folder).
export PRELABEL_LS_VENV ?= $(CURDIR)/.venv-labelstudio
export PRELABEL_LOCAL_VENV ?= $(CURDIR)/.venv-localmodel

.PHONY: demo test test-fast bench load install labelstudio clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Label Studio lives in its own virtual environment (.venv-labelstudio): it pins openai 1.x.
labelstudio: $(STAMP)
	$(BIN)/python -c "from prelabel.harness.labelstudio_server import ensure_label_studio; ensure_label_studio()"

demo: labelstudio
	$(BIN)/prelabel demo $(DEMO_ARGS)

test: labelstudio
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

load: $(STAMP)
	$(BIN)/python -m benchmarks.load $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .venv-labelstudio .pytest_cache test-artifacts
