"""Inbound webhooks: one thin view for every platform.

Order matters and is the same for all: find the connector (its secrets from a per-process cache
keyed by their ciphertext, connectors.registry.secret_cache) → the platform verifies the request
(secret or signature, constant time) → only then parse → store through services, committed →
answer. A forged or stale request is refused with 403 before any database write. A payload we do
not handle is acknowledged with 200 and dropped, so the platform stops retrying it; a body that
breaks a format we define ourselves (WebhookMalformed) gets 400 with the reasons. If the
database is down, or the connector is not running, the answer is 503 and the platform retries
later: nothing is acknowledged before it is stored.
"""
import logging
import re

from asgiref.sync import sync_to_async
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from django.http import HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from brain_connectors.shared.errors import Conflict, NotFound
from connectors.delivery.inbound import receive_message
from connectors.delivery.receipts import apply_receipts
from connectors.models import CONNECTOR_ID_PATTERN
from connectors.platforms.base import WebhookIgnored, WebhookMalformed, WebhookRejected
from connectors.registry.kinds import UnknownKind, connector_for
from connectors.registry.secret_cache import connector_for_webhook

logger = logging.getLogger(__name__)

# URL family → kinds that may be addressed through it.
FAMILIES = {
    "telegram": {"telegram"},
    "twilio": {"whatsapp", "sms", "voice"},
    "inbound": {"webhook"},
    "slack": {"slack"},
}

MAX_BODY_BYTES = 1_000_000


def _json(status, code, message):
    return JsonResponse({"error": {"code": code, "message": message, "details": {}}}, status=status)


@csrf_exempt
async def platform_webhook(request, family, connector_id, channel="messages"):
    """Async only to leave the event loop: the work runs in a pool thread (not the single
    thread-sensitive one Django gives sync views), so concurrent webhooks are stored in parallel."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return await sync_to_async(_handle, thread_sensitive=False)(request, family, connector_id, channel)


def _handle(request, family, connector_id, channel):
    close_old_connections()  # pool threads get no request signals: drop broken or expired connections
    try:
        return _handle_webhook(request, family, connector_id, channel)
    finally:
        close_old_connections()


def _handle_webhook(request, family, connector_id, channel):
    if len(request.body) > MAX_BODY_BYTES:
        return _json(413, "payload_too_large", "The payload is too large.")
    if not re.fullmatch(CONNECTOR_ID_PATTERN, connector_id):
        # No connector has such an id. Refused before the query: PostgreSQL rejects NUL in a
        # parameter with a DataError, which would otherwise surface as a 500.
        return _json(404, "not_found", "No such webhook.")
    try:
        row = connector_for_webhook(connector_id)  # its secrets decrypted once per change, not per request
    except (OperationalError, InterfaceError):
        return _json(503, "unavailable", "The database is unavailable; retry later.")
    if row is None or row.kind not in FAMILIES[family]:
        return _json(404, "not_found", "No such webhook.")
    try:
        platform = connector_for(row)
    except UnknownKind:
        return _json(404, "not_found", "No such webhook.")

    try:
        platform.verify_webhook(request, channel)
    except WebhookRejected as exc:
        logger.warning("Rejected %s webhook for %s: %s", channel, connector_id, exc)
        return _json(403, "forbidden", "Signature or secret missing, invalid or stale.")
    try:
        result = platform.parse_webhook(request, channel)
    except WebhookIgnored as exc:
        logger.info("Ignored %s webhook for %s: %s", channel, connector_id, exc)
        return JsonResponse({"ok": True, "ignored": str(exc)})
    except WebhookMalformed as exc:
        logger.info("Malformed %s webhook for %s: %s", channel, connector_id, exc.message)
        return JsonResponse(
            {"error": {"code": "malformed_payload", "message": exc.message, "details": exc.details}}, status=400
        )

    stored = []
    try:
        for message in result.messages:
            stored.append(receive_message(connector_id, message, connector=row))
        applied = apply_receipts(connector_id, result.receipts)
    except Conflict as exc:  # connector not running: let the platform retry later
        return _json(503, exc.code, exc.message)
    except NotFound as exc:
        return _json(404, "not_found", exc.message)
    except DatabaseError:
        logger.exception("Database error storing a %s webhook for %s", channel, connector_id)
        return _json(503, "unavailable", "The database is unavailable; retry later.")

    response = platform.webhook_response(request, channel, result, stored)
    if response is not None:
        return response
    if result.acknowledgement is not None:
        return JsonResponse(result.acknowledgement)
    answer = {"ok": True, "stored": sum(1 for _, created in stored if created)}
    if result.receipts:
        # "stored" counts new inbound messages only; a status callback says how many deliveries it moved.
        answer["receipts"] = applied
    return JsonResponse(answer)
