# One-command start and test. Needs only python3 (with venv) and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate lint clean-venv

install: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	@$(PY) -m brain_connectors.dotenv_init
	@$(PY) manage.py bootstrap
	@echo "Serving on http://$(HOST):$(PORT)/  (admin: /admin/, dashboard: /dashboard/, API docs: /api/docs/, health: /healthz)"
	exec $(VENV)/bin/daphne -b $(HOST) -p $(PORT) brain_connectors.asgi:application

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
