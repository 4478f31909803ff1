# Quick start: `make demo` and `make test`. Both set up .venv first (Python 3.11, pinned CPU torch).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@# bubblewrap is the sandbox for model-written code (humaneval); without it that is refused.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; } || \
		echo "note: bubblewrap is not installed, so humaneval grading is refused; install it"
	@# chromium drives the test of the server's live page (tests/test_page.py skips without it).
	@command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "note: chromium-driver is not installed, so the page test is skipped"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,evals,lmeval,serve,tune]'
	$(BIN)/python -m unmask.lm_eval_plugin install >/dev/null
	touch $@

demo: setup
	$(BIN)/unmask demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
