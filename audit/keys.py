"""The keys of the audit chain: AUDIT_CHAIN_KEY writes and verifies, AUDIT_CHAIN_PREVIOUS_KEYS only verify.

The key lives outside the database (environment, `.env`), so whoever holds only the database cannot
recompute a row's MAC after changing it. Each keyed row names its key by a short id (an HMAC of a
constant under the key: it tells keys apart and reveals nothing of them), so rows written before a
rotation still verify under the key they were written with.
"""
import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Rows written before the chain was keyed: plain SHA-256, which anyone can recompute.
LEGACY_ALGORITHM = "sha256"
# Keyed rows: "hmac-sha256:<key id>".
KEYED_PREFIX = "hmac-sha256:"
MIN_KEY_LENGTH = 32


class UnknownKeyError(LookupError):
    """A row or checkpoint names a key that is neither AUDIT_CHAIN_KEY nor a previous key."""


@lru_cache(maxsize=32)
def key_id(key: str) -> str:
    return hmac.new(key.encode(), b"brain-connectors audit chain key id", hashlib.sha256).hexdigest()[:8]


def algorithm_for(key: str) -> str:
    return KEYED_PREFIX + key_id(key)


def problem(key: str, name: str) -> str:
    """Why `key` cannot serve as `name`, or "" when it can."""
    if not key:
        return f"{name} is not set"
    if len(key) < MIN_KEY_LENGTH:
        return f"{name} is shorter than {MIN_KEY_LENGTH} characters"
    return ""


def current() -> tuple[str, bytes]:
    """(algorithm, key) that new rows and checkpoints are written with.

    There is no unkeyed fallback: a chain that silently went unkeyed is the weakness the key closes.
    """
    key = settings.AUDIT_CHAIN_KEY
    reason = problem(key, "AUDIT_CHAIN_KEY")
    if reason:
        raise ImproperlyConfigured(
            f"{reason}: audit rows cannot be written. Set it to a random string of at least {MIN_KEY_LENGTH} "
            "characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    return algorithm_for(key), key.encode()


def keyring() -> dict[str, bytes]:
    """algorithm → key, for every configured key that may have written rows."""
    ring = {}
    for key in [*settings.AUDIT_CHAIN_PREVIOUS_KEYS, settings.AUDIT_CHAIN_KEY]:
        if key:
            ring[algorithm_for(key)] = key.encode()
    return ring


def lookup(algorithm: str, ring: dict[str, bytes] | None = None) -> bytes:
    ring = keyring() if ring is None else ring
    try:
        return ring[algorithm]
    except KeyError:
        raise UnknownKeyError(
            f"written with key id {algorithm.removeprefix(KEYED_PREFIX)}, which is neither AUDIT_CHAIN_KEY nor one "
            "of AUDIT_CHAIN_PREVIOUS_KEYS (a key that is not configured here, or a forgery)"
        ) from None
