# One-command start and test. Needs only python3 (with venv) and make.
# `make run` installs the runtime set (requirements.txt); `make test` and `make lint` install the development set
# (requirements-dev.txt: the runtime set plus test, lint, security-scan and benchmark tools).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per file, named by its checksum: editing a file reinstalls it; a venv with the development set (which
# includes requirements.txt) also carries the runtime stamp, so `make run` after `make test` installs nothing.
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PIP := $(PY) -m pip install --disable-pip-version-check -q
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev migrate lint clean-venv

install: $(STAMP)

install-dev: $(DEV_STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	@rm -f $(VENV)/.installed-[0-9]*
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements-dev.txt
	@rm -f $(VENV)/.installed-[0-9]* $(VENV)/.installed-dev-*
	@touch $(STAMP) $@

run: $(STAMP)
	@$(PY) -m brain_connectors.dotenv_init
	@$(PY) manage.py bootstrap
	@echo "Serving on http://$(HOST):$(PORT)/  (admin: /admin/, dashboard: /dashboard/, API docs: /api/docs/, health: /healthz)"
	@# The periodic tasks (retries, sweeps, health checks, purges…) beside the server: it exits with it, and does
	@# nothing when Celery has a broker (REDIS_URL: beat and workers run them).
	$(PY) manage.py runscheduler & exec $(VENV)/bin/daphne -b $(HOST) -p $(PORT) brain_connectors.asgi:application

test: $(DEV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean-venv:
	rm -rf $(VENV)
