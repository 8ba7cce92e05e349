"""Keeps secrets, tokens, codes and message text out of log records.

Any configured secret value, and anything shaped like an API token or a bearer header, is replaced before a record
is written, and so are the values of URL query strings (search words, codes) and pairing codes in paths; so is the
raw payload that an SDK dumps whole into a log line (message text, names), which the filter cannot recognise by its
shape. daphne's access log, which does not go through logging, gets the same treatment
(brain_connectors/shared/access_log.py)."""
import logging
import re

from django.conf import settings

_PATTERNS = [
    re.compile(r"bct_[a-z0-9]{8}_[A-Za-z0-9_-]{43}"),
    re.compile(r"(?i)(authorization:\s*bearer\s+)\S+"),
    re.compile(r"\d{6,12}:[A-Za-z0-9_-]{20,}"),  # Telegram bot tokens
    # Pairing links carry a one-time code in the path; Django logs refused requests with it.
    re.compile(r"(/preferences/pair/)[^/\s?#]+"),
    # So do password-reset and invitation links: the user's id stays, the token goes.
    re.compile(r"(/accounts/(?:reset|invitation)/[^/\s?#]+/)[^/\s?#]+"),
]

# A URL's query string (daphne's access log, Django's request lines, an SDK error quoting a URL)
# carries search words, pairing codes, tokens: every value is withheld, and each name that looks like
# one stays, to say what was asked. A `?` counts only after a path (`/…?`), so prose keeps its `?`.
_QUERY = re.compile(r"(/[^\s\"'?]*)\?([^\s\"']*)")
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.%\[\]-]{1,40}")


def _withhold_query_values(match):
    items = []
    for item in match.group(2).split("&"):
        name, equals, _ = item.partition("=")
        if not item:
            items.append(item)
        elif equals and _PARAMETER_NAME.fullmatch(name):
            items.append(f"{name}=[redacted]")
        else:  # a bare value (`?K7Q2MX4P`) or a name that could be anything
            items.append("[redacted]")
    return f"{match.group(1)}?{'&'.join(items)}"


# SDK log calls that put a platform's raw payload into the line: (logger, format) -> the format that
# replaces it, whose one argument is how many items were withheld. python-telegram-bot logs every
# update of a batch it cannot parse, at CRITICAL; the connector then parses them one by one itself.
_PAYLOAD_DUMPS = {
    ("telegram.Bot", "Error while parsing updates! Received data was %r"):
        "Error while parsing updates! Received data withheld (%s updates: they carry message content)",
}


def _secret_values():
    values = [settings.SECRET_KEY, settings.BRAIN_SIGNING_KEY, settings.SEARCH_INDEX_KEY, *settings.FERNET_KEYS,
              getattr(settings, "SEARCH_INDEX_PREVIOUS_KEY", ""), getattr(settings, "EMAIL_HOST_PASSWORD", ""),
              getattr(settings, "METRICS_SCRAPE_TOKEN", ""),
              getattr(settings, "AUDIT_CHAIN_KEY", ""), *getattr(settings, "AUDIT_CHAIN_PREVIOUS_KEYS", [])]
    return [v for v in values if v and len(v) >= 8]


def redact(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, "[redacted]")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return _QUERY.sub(_withhold_query_values, text)


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
