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
