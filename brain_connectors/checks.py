"""System checks for configuration: they name the missing variable instead of failing later."""
import os

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Warning, register

from audit.keys import MIN_KEY_LENGTH, problem
from brain_connectors.shared import url_guard


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
                    hint="Set BRAIN_URL to the BRAIN endpoint, or use connectors.delivery.brain.EchoBrain.",
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
        if settings.BRAIN_URL:
            messages.extend(_brain_url_messages(settings.BRAIN_URL))
    return messages


def _brain_url_messages(url):
    """BRAIN_URL through the outbound-URL guard, as every call to BRAIN will be checked."""
    try:
        url_guard.check_url(url)
    except url_guard.UnsafeURL as exc:
        return [Error(
            f"BRAIN_URL is refused by the outbound-URL guard: {exc}.",
            hint=f"For a BRAIN inside your network, list its host name in {url_guard.HOSTS_SETTING}, or set "
            f"{url_guard.SETTING}=true to allow private addresses for every outbound URL.",
            id="brain_connectors.E006",
        )]
    except url_guard.Unresolvable as exc:
        # BRAIN may start after this service: a warning, and each call checks again.
        return [Warning(f"BRAIN_URL cannot be checked yet: {exc}.", hint="Every call to BRAIN checks it again.",
                        id="brain_connectors.W002")]
    return []


# Settings that are no longer read, and what replaced them. Ignoring one silently would change what
# the service may call without anyone noticing.
REPLACED_SETTINGS = {
    "EVENT_SUBSCRIPTION_ALLOW_LOOPBACK": url_guard.SETTING,
    "EVENT_SUBSCRIPTION_ALLOW_PRIVATE": url_guard.SETTING,
    "EVENT_SUBSCRIPTION_ALLOWED_HOSTS": url_guard.HOSTS_SETTING,
}


@register()
def check_replaced_settings(app_configs=None, **kwargs):
    return [
        Error(
            f"{old} is no longer read: {new} replaced it.",
            hint=f"{new} applies to every URL the service calls (connectors, event subscriptions, BRAIN_URL). "
            f"Set it if you need it, and unset {old}.",
            id="brain_connectors.E007",
        )
        for old, new in REPLACED_SETTINGS.items()
        if old in os.environ
    ]


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


@register()
def check_audit_chain_key(app_configs=None, **kwargs):
    """The audit chain's HMAC key (audit.keys). Audit rows are never written without a usable one, so
    with DEBUG off it is an error like the other keys; with DEBUG on a warning, for commands that
    write no audit row. Its ids start at 010, clear of the ones the other checks here number on from 001."""
    hint = (
        f"Set AUDIT_CHAIN_KEY to a random string of at least {MIN_KEY_LENGTH} characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))'), kept out of the database and its backups."
    )
    messages = []
    reason = problem(settings.AUDIT_CHAIN_KEY, "AUDIT_CHAIN_KEY")
    if reason:
        kind, level = (Warning, "W010") if settings.DEBUG else (Error, "E010")
        messages.append(kind(f"{reason}: audit rows cannot be written.", hint=hint, id=f"brain_connectors.{level}"))
    for position, key in enumerate(settings.AUDIT_CHAIN_PREVIOUS_KEYS, start=1):
        reason = problem(key, f"AUDIT_CHAIN_PREVIOUS_KEYS entry #{position}")
        if reason:
            messages.append(Error(f"{reason}.", hint="Former keys are the ones AUDIT_CHAIN_KEY held before.",
                                  id="brain_connectors.E011"))
    return messages
