"""System checks for configuration: they name the missing variable instead of failing later."""
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_required_secrets(app_configs=None, **kwargs):
    errors = []
    if settings.DEBUG:
        return errors
    if settings.SECRET_KEY == settings.MISSING_SECRET_PLACEHOLDER:
        errors.append(
            Error(
                "SECRET_KEY is not set.",
                hint="Set the SECRET_KEY environment variable to a long random string "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))').",
                id="brain_connectors.E001",
            )
        )
    if not settings.FERNET_KEYS:
        errors.append(
            Error(
                "FERNET_KEYS is not set: connector credentials cannot be encrypted.",
                hint="Set FERNET_KEYS to one or more comma-separated Fernet keys "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())').",
                id="brain_connectors.E002",
            )
        )
    return errors


@register()
def check_fernet_keys_valid(app_configs=None, **kwargs):
    errors = []
    for position, key in enumerate(settings.FERNET_KEYS, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"FERNET_KEYS entry #{position} is not a valid Fernet key.",
                    hint="Each key is 32 url-safe base64-encoded bytes, as made by Fernet.generate_key().",
                    id="brain_connectors.E003",
                )
            )
    return errors


@register()
def check_brain_backend(app_configs=None, **kwargs):
    messages = []
    if settings.BRAIN_BACKEND.endswith(".HttpBrain"):
        if not settings.BRAIN_URL:
            messages.append(
                Error(
                    "BRAIN_BACKEND is HttpBrain but BRAIN_URL is not set.",
                    hint="Set BRAIN_URL to the BRAIN endpoint, or use connectors.brain.EchoBrain.",
                    id="brain_connectors.E004",
                )
            )
        if not settings.BRAIN_SIGNING_KEY:
            messages.append(
                Error(
                    "BRAIN_BACKEND is HttpBrain but BRAIN_SIGNING_KEY is not set.",
                    hint="Set BRAIN_SIGNING_KEY (whsec_<base64>) shared with the BRAIN server.",
                    id="brain_connectors.E005",
                )
            )
    return messages


@register(deploy=True)
def check_search_index_key(app_configs=None, **kwargs):
    """A deployment check (`check --deploy`): nothing uses the key yet, so every other command
    (migrate, makemigrations, runmcp…) stays quiet about it."""
    if settings.DEBUG or settings.SEARCH_INDEX_KEY:
        return []
    return [
        Warning(
            "SEARCH_INDEX_KEY is not set.",
            hint="Conversation search needs its own key; set SEARCH_INDEX_KEY to a random string.",
            id="brain_connectors.W001",
        )
    ]
