# make test   install what is missing, then lint and run the test suite
# make demo   run the HTTPS demo with a throwaway realm
# make bench  benchmark tornado_kerb against a bare-Tornado floor
# make docs   build the documentation site into docs/_build/html
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# "demo" is also a folder: without .PHONY make would call it up to date and run nothing.
.PHONY: test demo bench docs lint system-deps clean

system-deps:
	scripts/install-system-deps.sh

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# Warnings are errors, as in the test suite (tests/test_docs.py).
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

# The demo itself needs no browser: skip Firefox when it is what installs the machine.
demo: export TORNADO_KERB_NO_BROWSER := 1
demo: $(STAMP)
	$(BIN)/python -m demo $(ARGS)

# The peers (Apache's mod_auth_gssapi, asgi-gssapi) are measured where they install.
bench: $(STAMP)
	scripts/install-bench-peers.sh $(VENV)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
