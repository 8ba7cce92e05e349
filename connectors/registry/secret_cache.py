"""A connector row for webhook verification, its secrets decrypted once per process and credential change.

Every webhook request needs the connector's secrets to verify the request (Telegram's secret
token, Twilio's auth token, a webhook connector's signing secrets). Decrypting them on every
request costs Fernet twice per request on the hottest path. Here the row is read with its two
encrypted columns as stored (ciphertext), and the decrypted values are kept per process, keyed
by that ciphertext: any change of the credentials or the platform secret (an update, a
rotation, `rotate_keys` re-encrypting) writes a new ciphertext (Fernet encrypts with a fresh IV),
so the next request misses the cache and decrypts the new values. Nothing stale is ever served,
and nothing is shared between processes.
"""
import threading
from collections import OrderedDict

from django.conf import settings
from django.db.models import ExpressionWrapper, F, TextField

from connectors.fields import decrypt_str
from connectors.models import Connector

MAX_ENTRIES = 1024  # connectors per process; the least recently used beyond it are decrypted again

_lock = threading.Lock()
# connector id → ((credentials ciphertext, secret ciphertext, FERNET_KEYS), (credentials, secret))
_decrypted = OrderedDict()


def _raw(field):
    # Typed as plain text, so the encrypted field's decrypting converter does not run.
    return ExpressionWrapper(F(field), output_field=TextField())


def _plain(connector_id, stored):
    with _lock:
        hit = _decrypted.get(connector_id)
        if hit is not None and hit[0] == stored:
            _decrypted.move_to_end(connector_id)
            return hit[1]
    plain = tuple(decrypt_str(value, label=f"Connector.{name}") if value else value
                  for name, value in zip(("credentials", "platform_secret"), stored[:2], strict=True))
    with _lock:
        _decrypted[connector_id] = (stored, plain)
        _decrypted.move_to_end(connector_id)
        while len(_decrypted) > MAX_ENTRIES:
            _decrypted.popitem(last=False)
    return plain


def connector_for_webhook(connector_id):
    """The Connector row (or None), with `credentials` and `platform_secret` set from the cache.

    The row is for reading: it holds the values as this query saw them, like any loaded row."""
    row = (
        Connector.objects.filter(pk=connector_id)
        .defer("credentials", "platform_secret")
        .annotate(stored_credentials=_raw("credentials"), stored_platform_secret=_raw("platform_secret"))
        .first()
    )
    if row is None:
        return None
    # The keys too: values no configured key can decrypt any more must fail as they would uncached.
    stored = (row.__dict__.pop("stored_credentials"), row.__dict__.pop("stored_platform_secret"),
              tuple(settings.FERNET_KEYS))
    row.credentials, row.platform_secret = _plain(row.pk, stored)
    return row


def forget():
    """Empty this process's cache (tests)."""
    with _lock:
        _decrypted.clear()
