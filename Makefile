# The two commands: `make serve` runs the server, `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_CLIENTS := clients/node_modules/.installed
# promtool (Debian's prometheus package) checks deploy/prometheus in the tests
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve offline test promtool nginx bench schema clean

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

promtool:
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus >/dev/null; }

# nginx: the tests check deploy/nginx/nginx.conf (`nginx -t`) and run the local topology behind it
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nginx >/dev/null; }

test: $(INSTALLED) $(NODE_CLIENTS) promtool nginx
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(INSTALLED)
	$(BIN)/python bench/cached_current.py $(ARGS)

schema: $(INSTALLED)
	$(BIN)/weathernote export-schema -o schema.graphql

clean:
	rm -rf $(VENV) clients/node_modules
