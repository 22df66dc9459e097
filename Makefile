# The two commands of the README: `make dev` (set up and run) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test typecheck format bench db-stop screenshots chromium

dev: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.dev

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) typecheck
	$(BIN)/pytest

# mypy with django-stubs on boot/, common/ and portal/ (strict on the apps: pyproject.toml). The settings are
# loaded as the Test configuration; DATABASE_URL is only parsed there, never connected to.
typecheck: $(STAMP)
	DJANGO_CONFIGURATION=Test DATABASE_URL=postgresql://typecheck@127.0.0.1:5432/typecheck $(BIN)/mypy

# The committed benchmarks (not part of `make test`): each prints ratios against a baseline of the same run.
bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.broker
	$(BIN)/python -m tests.benchmarks.webhooks
	$(BIN)/python -m tests.benchmarks.uploads

# PNGs of every page at 375 and 1440 px into docs/screenshots/ (not part of `make test`).
screenshots: $(STAMP) chromium
	$(BIN)/pytest tests/pages/screenshots.py -q

# The browser tests drive Debian's chromium (Playwright's own browser download cannot work here).
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Stop the embedded PostgreSQL that `make dev`/`make test` start when DATABASE_URL is unset.
db-stop: $(STAMP)
	$(BIN)/python -c "from common.embedded_postgres import EmbeddedPostgres; EmbeddedPostgres().stop()"

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Installs the exact pins of pyproject.toml; re-runs whenever pyproject.toml changes.
# Node.js and npm run the official tus-js-client in tests/portal (its packages come from `npm ci` on first use,
# pinned by tests/portal/tus_client/package-lock.json); Debian's packages on a fresh machine (CI runs as root).
$(STAMP): pyproject.toml
	command -v npm >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends nodejs npm)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@
