"""Secrets never reach the logs, whatever a log call passes."""
import logging

import pytest

from connectors.logging_filters import RedactSecretsFilter


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
