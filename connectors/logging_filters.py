"""Keep secrets out of logs: any configured secret value, and anything shaped like an API token or
a bearer header, is replaced before a record is written."""
import logging
import re

from django.conf import settings

_PATTERNS = [
    re.compile(r"bct_[a-z0-9]{8}_[A-Za-z0-9_-]{43}"),
    re.compile(r"(?i)(authorization:\s*bearer\s+)\S+"),
    re.compile(r"\d{6,12}:[A-Za-z0-9_-]{20,}"),  # Telegram bot tokens
]


def _secret_values():
    values = [settings.SECRET_KEY, settings.BRAIN_SIGNING_KEY, settings.SEARCH_INDEX_KEY, *settings.FERNET_KEYS,
              getattr(settings, "EMAIL_HOST_PASSWORD", "")]
    return [v for v in values if v and len(v) >= 8]


def redact(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, "[redacted]")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
