# One-command start and test. Needs only python3 (with venv) and make.
# `make run`: the embedded defaults (SQLite, no services); `make up`: the full stack on PostgreSQL and Redis (Procfile).
# `make run` installs the runtime set (requirements.txt); `make test` and `make lint` install the development set
# (requirements-dev.txt: the runtime set plus test, lint, security-scan and benchmark tools).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per file, named by its checksum: editing a file reinstalls it; a venv with the development set (which
# includes requirements.txt) also carries the runtime stamp, so `make run` after `make test` installs nothing.
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# Not quiet: a first install takes minutes, and pip's "Collecting …" lines show it is moving. The download bars only on
# a terminal; a CI log gets one line per package instead.
PIP := $(PY) -m pip install --disable-pip-version-check --progress-bar $$(test -t 1 && echo on || echo off)
# Where `make run` serves; `make run PORT=8431` or `PORT=8431 make run`. The banners print this address.
HOST ?= 127.0.0.1
PORT ?= 8000

# `make up`: extra arguments for `honcho start`, e.g. UP_ARGS="-c worker=2,sender=2".
UP_ARGS ?=

.PHONY: run up test install install-dev migrate lint clean-venv

install: $(STAMP)

install-dev: $(DEV_STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || { echo "Creating the virtual environment $(VENV)…"; $(PYTHON) -m venv $(VENV); }
	@echo "Installing the runtime requirements (requirements.txt; about 3 minutes the first time)…"
	@$(PIP) -r requirements.txt
	@rm -f $(VENV)/.installed-[0-9]*
	@touch $@
	@echo "Runtime requirements installed."

$(DEV_STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || { echo "Creating the virtual environment $(VENV)…"; $(PYTHON) -m venv $(VENV); }
	@echo "Installing the development requirements (requirements-dev.txt; several minutes the first time)…"
	@$(PIP) -r requirements-dev.txt
	@rm -f $(VENV)/.installed-[0-9]* $(VENV)/.installed-dev-*
	@touch $(STAMP) $@
	@echo "Development requirements installed."

run: $(STAMP)
	@$(PY) -m brain_connectors.dotenv_init
	@echo "Preparing the database and the admin account…"
	@HOST='$(HOST)' PORT='$(PORT)' $(PY) manage.py bootstrap
	@echo "Serving on http://$(HOST):$(PORT)/  (admin: /admin/, dashboard: /dashboard/, API docs: /api/docs/, health: /healthz)"
	@# The periodic tasks (retries, sweeps, health checks, purges…) beside the server: it exits with it, and does
	@# nothing when Celery has a broker (REDIS_URL: beat and workers run them).
	$(PY) manage.py runscheduler & exec $(VENV)/bin/daphne -b $(HOST) -p $(PORT) brain_connectors.asgi:application

# The full stack on PostgreSQL and Redis (Procfile, run by honcho). The environment is checked before anything is
# installed, so a missing database costs no wait; the message names the URL's scheme only (a URL may hold a password).
up:
	@case "$$DATABASE_URL" in \
	  postgres://*|postgresql://*) ;; \
	  "") echo "make up needs PostgreSQL: DATABASE_URL is not set." \
	        "Set DATABASE_URL=postgres://USER@HOST:5432/DB and REDIS_URL=redis://HOST:6379/0 (make run needs neither)." >&2; \
	      exit 2;; \
	  *) echo "make up needs PostgreSQL: DATABASE_URL is a $${DATABASE_URL%%:*}: URL, not postgres://." \
	       "The full stack runs on PostgreSQL and Redis; make run serves the embedded defaults." >&2; \
	     exit 2;; \
	esac
	@test -n "$$REDIS_URL" || { echo "make up needs Redis: REDIS_URL is not set. Set REDIS_URL=redis://HOST:6379/0" \
	  "(the Celery broker and the channel layer)." >&2; exit 2; }
	@$(MAKE) --no-print-directory install
	@test "$$BRAIN_READ_DOTENV" = 0 || $(PY) -m brain_connectors.dotenv_init
	@$(PY) manage.py bootstrap
	@echo "Starting web, worker, beat, sender and connectors; web on http://$(HOST):$(PORT)/ (Ctrl-C stops them all)"
	@# honcho reads no .env of its own (--env /dev/null): it would override the environment, whereas the settings
	@# read .env only for what the environment leaves unset.
	@PATH="$(abspath $(VENV))/bin:$$PATH" HOST="$(HOST)" exec "$(abspath $(VENV))/bin/honcho" --env /dev/null \
	  --procfile Procfile start --port $(PORT) $(UP_ARGS)

test: $(DEV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean-venv:
	rm -rf $(VENV)
