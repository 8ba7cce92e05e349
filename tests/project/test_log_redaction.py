"""Secrets never reach the logs, whatever a log call passes."""
import logging

import pytest

from brain_connectors.shared.log_redaction import RedactSecretsFilter


@pytest.fixture
def captured():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    yield logger, records
    logger.removeHandler(handler)


def test_configured_secrets_tokens_and_bearer_headers_are_redacted(captured, settings):
    logger, records = captured
    settings.EMAIL_HOST_PASSWORD = "smtp-password-0123456789"
    token = "bct_abcd1234_" + "x" * 43
    logger.warning("key %s fernet %s", settings.SECRET_KEY, settings.FERNET_KEYS[0])
    logger.warning("api token %s and Authorization: Bearer %s", token, "whatever-secret")
    logger.warning("telegram https://api.telegram.org/bot7000000001:AAH-abcdefghijklmnopqrstuvwxyz/getMe")
    logger.warning("smtp login with %s", settings.EMAIL_HOST_PASSWORD)
    joined = "\n".join(records)
    for secret in (settings.SECRET_KEY, settings.FERNET_KEYS[0], token, "whatever-secret",
                   "AAH-abcdefghijklmnopqrstuvwxyz", "smtp-password-0123456789"):
        assert secret not in joined
    assert joined.count("[redacted]") >= 6


def test_a_payload_an_sdk_dumps_whole_is_withheld(captured):
    """python-telegram-bot logs the raw updates (message text, names) when it cannot parse a batch."""
    _, records = captured
    handler = logging.getLogger("tests.redaction").handlers[-1]
    ptb = logging.getLogger("telegram.Bot")
    ptb.addHandler(handler)
    try:
        updates = [{"update_id": 1, "message": {"text": "my door code is 4471", "from": {"first_name": "Ada"}}}]
        ptb.critical("Error while parsing updates! Received data was %r", updates)
        ptb.critical("Another CRITICAL line of the SDK: %s", "kept as it is")
    finally:
        ptb.removeHandler(handler)
    assert records == [
        "Error while parsing updates! Received data withheld (1 updates: they carry message content)",
        "Another CRITICAL line of the SDK: kept as it is",
    ]


def test_the_previous_search_index_key_is_redacted_too(captured, settings):
    """During a `rebuild_search_index` the old key is still configured, and still a secret."""
    logger, records = captured
    settings.SEARCH_INDEX_PREVIOUS_KEY = "old-search-index-key-0123456789"
    logger.warning("previous key %s", settings.SEARCH_INDEX_PREVIOUS_KEY)
    assert records == ["previous key [redacted]"]


def test_query_values_are_withheld_and_parameter_names_kept(captured):
    """Query strings carry search words, codes and tokens (daphne's access log, Django's request
    warnings, SDK errors quoting a URL): each value goes, each name stays to say what was asked."""
    logger, records = captured
    logger.info('127.0.0.1:5 - - [02/Dec/2026] "GET /api/v1/conversations/search/?q=periwinkle+marmalade&limit=5" 200 9')
    logger.warning("POST https://api.example.org/send?chat_id=4471&text=door%20code%204471 failed")
    logger.warning("GET /accounts/login/?next=%2Fpreferences%2Fpair%2FW7K2QX9M%2F 200")
    logger.warning("GET /x/?W7K2QX9M&flag&%3Cscript%3E=1&<b>=2 404")
    logger.warning("Is the relay down? Retrying in 5 s (attempt 2/3)?")
    assert records == [
        '127.0.0.1:5 - - [02/Dec/2026] "GET /api/v1/conversations/search/?q=[redacted]&limit=[redacted]" 200 9',
        "POST https://api.example.org/send?chat_id=[redacted]&text=[redacted] failed",
        "GET /accounts/login/?next=[redacted] 200",
        "GET /x/?[redacted]&[redacted]&%3Cscript%3E=[redacted]&[redacted] 404",
        "Is the relay down? Retrying in 5 s (attempt 2/3)?",
    ]



def test_password_links_keep_the_user_id_and_lose_the_token(captured):
    """Reset and invitation links (issue 19) carry a token that sets a password for whoever has it."""
    logger, records = captured
    logger.info('"GET /accounts/reset/Mg/cw1x8a-5b1f0e7c9d2a4b6e8f0a1c3e5d7b9f21/" 302 0')
    logger.info('"GET /accounts/invitation/NDI/cw1x8a-0123456789abcdef0123456789abcdef/" 302 0')
    assert records == ['"GET /accounts/reset/Mg/[redacted]/" 302 0', '"GET /accounts/invitation/NDI/[redacted]/" 302 0']

HANDLERS_PROBE = """
import logging, os, sys
import django
django.setup()
if sys.argv[1] == "celery-worker":
    from brain_connectors.celery import app
    app.log.setup_logging_subsystem(loglevel="INFO")  # what `celery worker` runs at start
from brain_connectors.shared.log_redaction import RedactSecretsFilter
unfiltered = set()
for name in ["", *logging.Logger.manager.loggerDict]:
    logger = logging.getLogger(name)
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.NullHandler):
                continue  # writes nothing
            if not any(isinstance(f, RedactSecretsFilter) for f in handler.filters):
                unfiltered.add(f"{logger.name}: {type(handler).__name__}")
        logger = logger.parent if logger.propagate else None
print(sorted(unfiltered))
"""


@pytest.mark.parametrize("debug, mode", [("false", "web"), ("true", "web"), ("false", "celery-worker")])
def test_every_handler_a_log_record_can_reach_redacts(debug, mode, subprocess_env):
    """Django's own handlers (`console` under DEBUG, as in `make run`; `mail_admins`; `django.server`)
    and the handlers a Celery worker installs at start would write lines the filter never saw."""
    import subprocess
    import sys

    from tests.conftest import BASE_DIR

    run = subprocess.run(
        [sys.executable, "-c", HANDLERS_PROBE, mode], cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**subprocess_env, "DEBUG": debug},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout
