"""System checks for the connector registry's configuration."""
from django.conf import settings
from django.core.checks import Error, Warning, register
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


@register()
def check_attachment_urls(app_configs=None, **kwargs):
    """BRAIN fetches attachment bytes from signed URLs on PUBLIC_BASE_URL: without it, the payload carries none."""
    if settings.BRAIN_BACKEND.endswith(".HttpBrain") and not settings.PUBLIC_BASE_URL:
        return [Warning(
            "PUBLIC_BASE_URL is not set: BRAIN's attachment entries carry no download URL.",
            hint="Set PUBLIC_BASE_URL to this service's public address; until then BRAIN can fetch a file only "
            "with a request signed with BRAIN_SIGNING_KEY to /attachments/<id>/ at an address it knows.",
            id="connectors.W001",
        )]
    return []


@register()
def check_transcriber(app_configs=None, **kwargs):
    """TRANSCRIBER, when set, must import; the HTTP one needs TRANSCRIBER_URL."""
    if not settings.TRANSCRIBER:
        return []
    try:
        import_string(settings.TRANSCRIBER)
    except ImportError as exc:
        return [Error(f"TRANSCRIBER cannot be imported: {exc}", id="connectors.E005")]
    if settings.TRANSCRIBER.endswith(".HttpTranscriber") and not settings.TRANSCRIBER_URL:
        return [Error("TRANSCRIBER is HttpTranscriber but TRANSCRIBER_URL is not set.",
                      hint="Set TRANSCRIBER_URL to the base URL of an OpenAI-compatible transcription server.",
                      id="connectors.E006")]
    return []
