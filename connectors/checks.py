"""System checks for the connector registry's configuration."""
from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from connectors.platforms.base import BaseConnector
from connectors.task_queue import DELIVERY_ENGINES


@register()
def check_connector_classes(app_configs=None, **kwargs):
    errors = []
    for kind, path in settings.CONNECTOR_CLASSES.items():
        try:
            cls = import_string(path)
        except ImportError as exc:
            errors.append(Error(f"CONNECTOR_CLASSES[{kind!r}] cannot be imported: {exc}", id="connectors.E001"))
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseConnector)):
            errors.append(Error(f"CONNECTOR_CLASSES[{kind!r}] = {path!r} is not a BaseConnector", id="connectors.E002"))
        elif cls.kind != kind:
            errors.append(
                Error(f"CONNECTOR_CLASSES[{kind!r}] points at a class of kind {cls.kind!r}", id="connectors.E003")
            )
    return errors


@register()
def check_delivery_engine(app_configs=None, **kwargs):
    if settings.DELIVERY_ENGINE not in DELIVERY_ENGINES:
        return [
            Error(
                f"DELIVERY_ENGINE is {settings.DELIVERY_ENGINE!r}; it must be one of: {', '.join(DELIVERY_ENGINES)}.",
                id="connectors.E004",
            )
        ]
    return []
