"""System checks for the connector registry's configuration."""
from urllib.parse import urlsplit

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


@register()
def check_attachment_storage(app_configs=None, **kwargs):
    """An S3 bucket for attachments needs django-storages and boto3, a usable endpoint URL when one is given, and
    both halves of a key pair or neither (then boto3 finds credentials itself). Says which variable; never its value."""
    if not settings.ATTACHMENTS_S3_BUCKET:
        return []
    errors = []
    try:
        import boto3  # noqa: F401
        import storages.backends.s3  # noqa: F401
    except ImportError as exc:
        errors.append(Error(
            f"ATTACHMENTS_S3_BUCKET is set but the S3 backend cannot be imported ({exc.name} is missing).",
            hint="Install django-storages[s3] (it brings boto3): pip install -r requirements.txt.",
            id="connectors.E007",
        ))
    endpoint = urlsplit(settings.ATTACHMENTS_S3_ENDPOINT_URL)
    if settings.ATTACHMENTS_S3_ENDPOINT_URL and (endpoint.scheme not in ("http", "https") or not endpoint.hostname):
        errors.append(Error(
            "ATTACHMENTS_S3_ENDPOINT_URL is not an http(s) URL with a host.",
            hint="Give the store's base URL, e.g. https://minio.example.org:9000 or "
            "https://<account>.r2.cloudflarestorage.com; leave it empty for AWS S3.",
            id="connectors.E008",
        ))
    if bool(settings.ATTACHMENTS_S3_ACCESS_KEY) != bool(settings.ATTACHMENTS_S3_SECRET_KEY):
        missing = "ATTACHMENTS_S3_SECRET_KEY" if settings.ATTACHMENTS_S3_ACCESS_KEY else "ATTACHMENTS_S3_ACCESS_KEY"
        errors.append(Error(
            f"ATTACHMENTS_S3_BUCKET has half a key pair: {missing} is not set.",
            hint="Set both ATTACHMENTS_S3_ACCESS_KEY and ATTACHMENTS_S3_SECRET_KEY, or neither to let boto3 find "
            "credentials (AWS_* variables, an instance role).",
            id="connectors.E009",
        ))
    if settings.ATTACHMENTS_S3_ENDPOINT_URL and not settings.ATTACHMENTS_S3_ACCESS_KEY:
        errors.append(Warning(
            "ATTACHMENTS_S3_ENDPOINT_URL names a non-AWS store but ATTACHMENTS_S3_ACCESS_KEY is not set.",
            hint="MinIO, R2 and the like issue their own keys: set ATTACHMENTS_S3_ACCESS_KEY and "
            "ATTACHMENTS_S3_SECRET_KEY unless AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY hold them.",
            id="connectors.W002",
        ))
    return errors
