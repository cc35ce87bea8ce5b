# Two commands: `make run` serves the app, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test deploy-check lint typecheck format db clean bench bench-smoke i18n catalogs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Compiled catalogs (.mo) are committed beside their .po (the source), so that every way of
# installing the app speaks every language; after editing a .po, `make catalogs` and commit both.
# A test fails if a committed .mo and its .po disagree.
CATALOGS := $(patsubst %.po,%.mo,$(wildcard translations/*/LC_MESSAGES/messages.po))

translations/%/LC_MESSAGES/messages.mo: translations/%/LC_MESSAGES/messages.po $(VENV)/.runtime
	$(BIN)/pybabel compile --statistics -d translations -l $*

catalogs: $(CATALOGS)

# After changing user-facing text: extract every string, merge into each language's .po (then
# translate the new entries, marked fuzzy or empty), and compile. `pybabel init -l xx` adds one.
i18n: $(VENV)/.runtime
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --sort-by-file \
		--project chat --copyright-holder "Chat contributors" -o translations/messages.pot .
	$(BIN)/pybabel update -i translations/messages.pot -d translations --ignore-obsolete
	$(MAKE) catalogs

db: $(VENV)/.runtime
	$(BIN)/flask --app app init-db

run: db
	$(BIN)/flask --app app run --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy over the app's packages (the files are listed in pyproject.toml).
typecheck: $(VENV)/.dev
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole suite on SQLite (the default), then the tests marked `database` on PostgreSQL
# (127.0.0.1:5432): those where the engine matters (tests/conftest.py says which).
# axe-core, from npm, for the accessibility checks in the browser tests.
node_modules/axe-core/axe.min.js: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# moto's standalone S3 server, a server under test (tests/test_uploads.py starts it on
# 127.0.0.1): a virtual environment of its own, since it pins libraries of its own.
MOTO := $(VENV)/moto
$(MOTO)/.installed: requirements-s3.txt | $(BIN)/python
	$(PYTHON) -m venv $(MOTO)
	$(MOTO)/bin/pip install --quiet -r requirements-s3.txt
	touch $@

test: lint typecheck node_modules/axe-core/axe.min.js $(MOTO)/.installed
	$(BIN)/pytest
	CHAT_TEST_DATABASE=postgresql $(BIN)/pytest -m database

# docs/deploy.md followed to the letter on this machine, as root, then used in a French browser
# (tests/rehearsal/). It installs packages, adds a user, writes /srv/chat, /etc/chat and an nginx
# site on port 80: for CI and machines you can throw away.
deploy-check: $(VENV)/.dev
	$(BIN)/pytest -m rehearsal tests/rehearsal

$(VENV)/.bench: requirements-bench.txt $(VENV)/.dev
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@

# The full load benchmark, the chat against the asyncio reference (minutes): bench/results/.
bench: $(VENV)/.bench
	$(BIN)/python -m bench --plot

# The same scenarios, tiny: checks the benchmark still runs (CI does this; no thresholds).
bench-smoke: $(VENV)/.bench
	$(BIN)/python -m bench --smoke --out artifacts/bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts node_modules
