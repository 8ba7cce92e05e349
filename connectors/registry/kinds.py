"""The registry of kinds: kind name → BaseConnector subclass, from settings.CONNECTOR_CLASSES.

Dotted paths keep platforms swappable (tests point a kind at another class with
override_settings); the lookup is cheap enough not to cache across setting changes.
"""
from django.conf import settings
from django.utils.module_loading import import_string

from connectors.platforms.base import BaseConnector


class UnknownKind(LookupError):
    pass


def available_kinds() -> list[str]:
    return sorted(settings.CONNECTOR_CLASSES)


def get_connector_class(kind: str) -> type[BaseConnector]:
    try:
        path = settings.CONNECTOR_CLASSES[kind]
    except (KeyError, TypeError):
        raise UnknownKind(f"Unknown connector kind {kind!r}. Available kinds: {', '.join(available_kinds())}.")
    cls = import_string(path)
    if not (isinstance(cls, type) and issubclass(cls, BaseConnector)):
        raise TypeError(f"CONNECTOR_CLASSES[{kind!r}] = {path!r} is not a BaseConnector subclass")
    return cls


def connector_for(row) -> BaseConnector:
    """The platform object for one registry row."""
    return get_connector_class(row.kind)(row)


def inbound_url_of(row) -> str | None:
    """The connector's `inbound_url()` for display, or None (also when its kind is not configured any more)."""
    try:
        return connector_for(row).inbound_url()
    except (UnknownKind, TypeError, ImportError):
        return None
