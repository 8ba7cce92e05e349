"""The bus bridge's JetStream stream, made to match the settings (the connection's options: bus_connect.py)."""
import logging

from django.conf import settings
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

logger = logging.getLogger("connectors.events.bus_bridge")


class BridgeConfigError(Exception):
    """A setting the bridge cannot work with (the message names it); the bridge stops rather than guess."""


def subject_filter():
    return f"{settings.NATS_SUBJECT_PREFIX}.>"


def _differences(config, want_subject):
    """(setting, what the stream has, what we want) for each managed field that differs."""
    found = []
    if want_subject not in (config.subjects or []):
        found.append(("NATS_SUBJECT_PREFIX", config.subjects, [want_subject]))
    if float(config.max_age or 0) != float(settings.NATS_STREAM_MAX_AGE_SECONDS):
        found.append(("NATS_STREAM_MAX_AGE_SECONDS", config.max_age or 0, settings.NATS_STREAM_MAX_AGE_SECONDS))
    if float(config.duplicate_window or 0) != float(settings.NATS_STREAM_DUPLICATE_WINDOW_SECONDS):
        found.append(("NATS_STREAM_DUPLICATE_WINDOW_SECONDS", config.duplicate_window,
                      settings.NATS_STREAM_DUPLICATE_WINDOW_SECONDS))
    return found


async def ensure_stream(js):
    """Create the stream, or update the fields we manage; a conflict we may not or cannot fix → BridgeConfigError."""
    name, subject = settings.NATS_STREAM, subject_filter()
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        if not settings.NATS_MANAGE_STREAM:
            raise BridgeConfigError(f"NATS_STREAM: stream {name!r} does not exist and NATS_MANAGE_STREAM is off")
        config = StreamConfig(name=name, subjects=[subject], retention=RetentionPolicy.LIMITS,
                              storage=StorageType.FILE, max_age=settings.NATS_STREAM_MAX_AGE_SECONDS,
                              duplicate_window=settings.NATS_STREAM_DUPLICATE_WINDOW_SECONDS)
        try:
            await js.add_stream(config)
        except APIError as exc:
            raise BridgeConfigError(f"NATS_STREAM / NATS_SUBJECT_PREFIX: cannot create stream {name!r} on "
                                    f"{subject!r}: {exc.description}") from None
        logger.info("Created JetStream stream %s on %s", name, subject)
        return
    config = info.config
    if config.retention not in (RetentionPolicy.LIMITS, "limits"):
        raise BridgeConfigError(f"NATS_STREAM: stream {name!r} has retention {config.retention!r}; the bridge needs "
                                "'limits' (consumers replay it); use another NATS_STREAM")
    differences = _differences(config, subject)
    if not differences:
        return
    described = "; ".join(f"{setting} wants {want!r}, the stream has {have!r}" for setting, have, want in differences)
    if not settings.NATS_MANAGE_STREAM:
        raise BridgeConfigError(f"Stream {name!r} differs and NATS_MANAGE_STREAM is off: {described}")
    if subject not in (config.subjects or []):
        config.subjects = [*(config.subjects or []), subject]
    config.max_age = settings.NATS_STREAM_MAX_AGE_SECONDS
    config.duplicate_window = settings.NATS_STREAM_DUPLICATE_WINDOW_SECONDS
    try:
        await js.update_stream(config)
    except APIError as exc:
        raise BridgeConfigError(f"Cannot update stream {name!r} ({described}): {exc.description}") from None
    logger.info("Updated JetStream stream %s: %s", name, described)
