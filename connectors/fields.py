"""`EncryptedTextField`: text encrypted at rest with MultiFernet, keyed by settings.FERNET_KEYS.

The first key encrypts; every key decrypts, so keys rotate without downtime (`manage.py
rotate_keys`). A value that no configured key can decrypt raises `DecryptionError`: the field
never hands ciphertext back as if it were the value. Only `isnull` lookups are allowed, since
comparing ciphertexts means nothing.
"""
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import models

from brain_connectors.shared.errors import DecryptionError


@lru_cache(maxsize=8)
def _multifernet(keys):
    if not keys:
        raise ImproperlyConfigured("FERNET_KEYS is not set: encrypted fields cannot be read or written.")
    return MultiFernet([Fernet(key) for key in keys])


def get_fernet():
    return _multifernet(tuple(settings.FERNET_KEYS))


def get_primary_fernet():
    """The key new values are written with (the first one)."""
    return _multifernet(tuple(settings.FERNET_KEYS[:1]))


def encrypt_str(value: str) -> str:
    return get_fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt_str(token: str, *, label="value") -> str:
    try:
        return get_fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise DecryptionError(
            f"Cannot decrypt {label}: none of the configured FERNET_KEYS matches. "
            "Add the key it was written with to FERNET_KEYS (after the current one)."
        ) from exc


class EncryptedTextField(models.TextField):
    description = "Text encrypted at rest (MultiFernet)"

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None:
            return None
        return encrypt_str(str(value))

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return decrypt_str(value, label=f"{self.model.__name__}.{self.name}")

    def get_lookup(self, lookup_name):
        if lookup_name != "isnull":
            raise FieldError(f"EncryptedTextField {self.name!r} supports only the isnull lookup, not {lookup_name!r}.")
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name):
        raise FieldError(f"EncryptedTextField {self.name!r} supports no transforms.")


def encrypted_fields():
    """Every (model, field) pair that stores an EncryptedTextField, for key rotation."""
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                yield model, field
