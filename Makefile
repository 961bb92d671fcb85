# The two commands: `make serve` runs the server, `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_CLIENTS := clients/node_modules/.installed

.PHONY: serve offline test test-fast bench schema clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(NODE_CLIENTS): clients/package.json clients/package-lock.json
	cd clients && npm ci --no-audit --no-fund --loglevel=error
	touch $@

serve: $(INSTALLED)
	$(BIN)/weathernote serve $(ARGS)

offline: $(INSTALLED)
	$(BIN)/weathernote serve --simulator $(ARGS)

test: $(INSTALLED) $(NODE_CLIENTS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(INSTALLED)
	$(BIN)/python bench/cached_current.py $(ARGS)

schema: $(INSTALLED)
	$(BIN)/weathernote export-schema -o schema.graphql

clean:
	rm -rf $(VENV) clients/node_modules
