"""Pairing codes themselves: their shape, their digest, new ones, and the pairing settings.

A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), with at least one
letter and one digit so that ordinary words are never taken for codes. Only its SHA-256 digest is
stored. It expires after ROUTING_PAIRING_TTL_SECONDS (1 h), is used once, and a person may have at
most ROUTING_PAIRING_MAX_PENDING (3) pending. Wrong, expired and used codes count as failed
attempts per (connector, sender): past ROUTING_PAIRING_MAX_ATTEMPTS in
ROUTING_PAIRING_ATTEMPT_WINDOW_SECONDS, codes from that sender are not even looked at until the
window has passed.
"""
import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings

# --- settings (with defaults, so that tests and deployments may change them) -------------------------

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 8
DIGITS = set("23456789")

# Kinds a person can pair with, and how. Voice is left out: a spoken code is not recognised reliably;
# a number paired for SMS can be paired for voice by an administrator in the admin.
PAIRABLE_KINDS = ("telegram", "sms", "whatsapp", "email", "cli", "webhook", "slack")
PHONE_KINDS = ("sms", "voice", "whatsapp")


def _setting(name, default):
    return getattr(settings, name, default)


def pairing_ttl():
    return timedelta(seconds=_setting("ROUTING_PAIRING_TTL_SECONDS", 3600))


def max_pending():
    return _setting("ROUTING_PAIRING_MAX_PENDING", 3)


def max_attempts():
    return _setting("ROUTING_PAIRING_MAX_ATTEMPTS", 5)


def attempt_window():
    return timedelta(seconds=_setting("ROUTING_PAIRING_ATTEMPT_WINDOW_SECONDS", 15 * 60))


def max_attempts_per_connector():
    return _setting("ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR", 200)


def pairable_kinds():
    return tuple(_setting("ROUTING_PAIRABLE_KINDS", PAIRABLE_KINDS))


# --- helpers -------------------------------------------------------------------------------------


def normalize_code(text):
    """The code in `text` (any case, spaces and dashes ignored), or None when it is not code-shaped."""
    if not isinstance(text, str):
        return None
    cleaned = re.sub(r"[\s\-]", "", text).upper()
    if len(cleaned) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in cleaned):
        return None
    if not (DIGITS & set(cleaned)) or not (set(cleaned) - DIGITS):
        return None
    return cleaned


def digest(code):
    return hashlib.sha256(code.encode()).hexdigest()


def new_code():
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if normalize_code(code) == code:
            return code
