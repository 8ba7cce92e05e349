"""Liveness and readiness probes. Unauthenticated on purpose: they reveal only up/down."""
import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from brain_connectors.celery import app
from brain_connectors.shared.log_redaction import redact

PROBE_TIMEOUT = 2.0


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


async def _channel_roundtrip():
    layer = get_channel_layer()
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    await layer.receive(channel)


async def _channel_roundtrip_within_timeout():
    await asyncio.wait_for(_channel_roundtrip(), PROBE_TIMEOUT)


def _check_channel_layer():
    async_to_sync(_channel_roundtrip_within_timeout)()
    return settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]


def _check_broker():
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager (tasks run in-process)"
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT)
    return conn.transport_cls if isinstance(conn.transport_cls, str) else "connected"


CHECKS = {"database": _check_database, "channel_layer": _check_channel_layer, "broker": _check_broker}


@require_GET
def readyz(request):
    components, down = {}, []
    for name, check in CHECKS.items():
        try:
            components[name] = {"status": "ok", "detail": check()}
        except Exception as exc:  # any failure means "not ready"; say which part and why
            detail = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])[:300]
            components[name] = {"status": "down", "detail": detail}
            down.append(name)
    body = {"status": "down" if down else "ok", "down": down, "components": components}
    return JsonResponse(body, status=503 if down else 200)
