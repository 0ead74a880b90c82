# Two commands from a fresh clone: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format install deps-system deps-node postgres bench clean web-assets viewer-assets

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP) web-assets viewer-assets
	$(BIN)/vethub serve

# The console's browser library (htmx), pinned in web/package-lock.json and copied
# where the hub serves it (/console/static/vendor/); no CDN at run time.
# Swagger UI for /docs comes from the same lock (hub/api/apidocs.py).
HTMX := hub/console/static/vendor/htmx.min.js
SWAGGER := hub/console/static/vendor/swagger-ui
web-assets: $(HTMX) $(SWAGGER)/swagger-ui-bundle.js

$(HTMX): web/package.json web/package-lock.json
	npm ci --prefix web --ignore-scripts --no-audit --no-fund
	mkdir -p $(dir $(HTMX))
	cp web/node_modules/htmx.org/dist/htmx.min.js $(HTMX)

$(SWAGGER)/swagger-ui-bundle.js: web/package.json web/package-lock.json
	test -d web/node_modules/swagger-ui-dist || npm ci --prefix web --ignore-scripts --no-audit --no-fund
	mkdir -p $(SWAGGER)
	cp web/node_modules/swagger-ui-dist/swagger-ui.css $(SWAGGER)/
	cp web/node_modules/swagger-ui-dist/swagger-ui-bundle.js $(SWAGGER)/

# The diagnostic viewer: the stock OHIF build (@ohif/app's prebuilt dist/), pinned
# by sha512 in web/ohif.lock and unpacked where the hub serves it (docs/viewer.md).
OHIF_DIR := hub/viewer_assets/ohif
viewer-assets: $(OHIF_DIR)/.installed

$(OHIF_DIR)/.installed: web/ohif.lock scripts/ohif_assets.py
	$(PY) scripts/ohif_assets.py web/ohif.lock $(OHIF_DIR)

# DCMTK (findscu, echoscu, storescu, wlmscpfs) is a test dependency: the DICOM
# doors are exercised with a third-party client, so install it when missing.
# Debian's Chromium is the real browser Playwright drives (tests/test_browser_signin.py);
# systemd-analyze checks the service unit (tests/test_deploy.py).
deps-system:
	@command -v findscu >/dev/null && command -v wlmscpfs >/dev/null || { \
		echo "installing dcmtk"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dcmtk >/dev/null; }
	@test -x /usr/bin/chromium || { \
		echo "installing chromium"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@# Orthanc with its ModalityWorklists plugin: a second upstream worklist for
	@# tests/test_upstream_mwl.py (started there on private ports; the system service is not used).
	@command -v Orthanc >/dev/null && test -e /usr/share/orthanc/plugins/libModalityWorklists.so || { \
		echo "installing orthanc"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq orthanc >/dev/null; }
	@command -v systemd-analyze >/dev/null || { \
		echo "installing systemd (systemd-analyze verifies deploy/vethub.service)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq systemd >/dev/null; }

# The real OpenID provider the single sign-on tests start (tests/oidc/, oidc-provider
# pinned in its package-lock.json).
deps-node: tests/oidc/node_modules/.package-lock.json

tests/oidc/node_modules/.package-lock.json: tests/oidc/package.json tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund
	touch $@

# The PostgreSQL on 127.0.0.1:5432 the tests also run against; start it if down.
postgres:
	@bash scripts/ensure-postgres.sh

# The soak check measures latency, so it runs alone, not beside another test worker.
test: lint deps-system deps-node postgres web-assets viewer-assets
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not soak"
	$(BIN)/pytest -q -m soak

# ruff, the import contracts that keep the core free of wire formats
# (pyproject.toml [tool.importlinter]) and the type check.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) deps-system
	VETHUB_CMD="$(CURDIR)/$(BIN)/vethub" BENCH_VENV="$(CURDIR)/$(VENV)" ../shared/bench/run_hub.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
