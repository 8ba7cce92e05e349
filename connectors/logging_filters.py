"""Keep secrets out of logs: any configured secret value, and anything shaped like an API token or
a bearer header, is replaced before a record is written; so is the raw payload that an SDK dumps
whole into a log line (message text, names), which the filter cannot recognise by its shape."""
import logging
import re

from django.conf import settings

_PATTERNS = [
    re.compile(r"bct_[a-z0-9]{8}_[A-Za-z0-9_-]{43}"),
    re.compile(r"(?i)(authorization:\s*bearer\s+)\S+"),
    re.compile(r"\d{6,12}:[A-Za-z0-9_-]{20,}"),  # Telegram bot tokens
]


# SDK log calls that put a platform's raw payload into the line: (logger, format) -> the format that
# replaces it, whose one argument is how many items were withheld. python-telegram-bot logs every
# update of a batch it cannot parse, at CRITICAL; the connector then parses them one by one itself.
_PAYLOAD_DUMPS = {
    ("telegram.Bot", "Error while parsing updates! Received data was %r"):
        "Error while parsing updates! Received data withheld (%s updates: they carry message content)",
}


def _secret_values():
    values = [settings.SECRET_KEY, settings.BRAIN_SIGNING_KEY, settings.SEARCH_INDEX_KEY, *settings.FERNET_KEYS,
              getattr(settings, "SEARCH_INDEX_PREVIOUS_KEY", ""), getattr(settings, "EMAIL_HOST_PASSWORD", "")]
    return [v for v in values if v and len(v) >= 8]


def redact(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, "[redacted]")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record):
        replacement = _PAYLOAD_DUMPS.get((record.name, record.msg)) if isinstance(record.msg, str) else None
        if replacement:
            payload = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg, record.args = replacement, (len(payload) if isinstance(payload, (list, tuple)) else "some",)
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
