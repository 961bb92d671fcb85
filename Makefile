# The two commands: `make serve` runs the server, `make test` runs the whole suite (lint and types
# included). Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_TESTS := tests/node/node_modules/.installed
TS_CLIENT := clients/typescript/node_modules/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests use (command:package): promtool checks deploy/prometheus, nginx checks
# deploy/nginx and fronts the local topology, chromium runs GraphiQL in a real browser
DEBIAN_TOOLS := promtool:prometheus nginx:nginx chromium:chromium

.PHONY: serve offline test test-fast lint debian-tools topology-up topology-down bench schema manifest models clean

$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e clients/python
	touch $@

$(NODE_TESTS): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# npm ci also builds the client (its `prepare` script)
$(TS_CLIENT): clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	touch $@

serve: $(INSTALLED)
	$(BIN)/weathernote serve $(ARGS)

offline: $(INSTALLED)
	$(BIN)/weathernote serve --simulator $(ARGS)

debian-tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		tool=$${pair%%:*}; package=$${pair##*:}; \
		command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(INSTALLED) $(NODE_TESTS) $(TS_CLIENT) debian-tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the unit tier alone: in-process tests that start no process (tests/service and tests/system do)
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# the scale-out topology on loopback: a 3+3 Redis Cluster, three instances, nginx on :8080
topology-up: $(INSTALLED) debian-tools
	$(BIN)/python -m weathernote.topology up $(ARGS)

topology-down: $(INSTALLED)
	$(BIN)/python -m weathernote.topology down $(ARGS)

# the cached `current` rows, the rows where the cache cannot help (ROWS_ARGS: bench/cache_cannot_help.py's),
# then a real pre-warm cycle's fan-out to 10,000 subscribers (FANOUT_ARGS: bench/subscriptions_fanout.py's)
bench: $(INSTALLED)
	$(BIN)/python bench/cached_current.py $(ARGS)
	$(BIN)/python bench/cache_cannot_help.py $(ROWS_ARGS)
	$(BIN)/python bench/subscriptions_fanout.py $(or $(FANOUT_ARGS),--subscribers 10000)

schema: $(INSTALLED)
	$(BIN)/weathernote export-schema -o schema.graphql

# the persisted-query manifest of clients/operations (and its copy in the Python client)
manifest: $(INSTALLED)
	$(BIN)/python clients/operations/build_manifest.py

# the Python client's models, generated from schema.graphql and clients/operations
models: $(INSTALLED)
	$(BIN)/python clients/python/generate_models.py

clean:
	rm -rf $(VENV) tests/node/node_modules clients/typescript/node_modules clients/typescript/dist clients/typescript/build clients/node_modules
