"""The connectors' MCP tools: send a message, list connectors and read their status, follow a delivery.

Each connector the caller may see is also a resource, `connector://<id>`, whose JSON is what
get_connector_status returns. Registered with brain_connectors.mcp.registry, which discovers
this module.
"""
import json
from typing import Annotated

from django.db.models import Count
from django.utils import timezone
from mcp.types import Resource
from pydantic import Field

from brain_connectors.mcp.registry import resource, tool
from brain_connectors.mcp.schema import ConnectorId, iso, untrusted
from connectors import quotas, services
from connectors.models import ConnectorStatus, DeliveryStatus
from connectors.permissions import Principal
from connectors.platforms.attachments import MAX_OUTGOING_ATTACHMENTS
from connectors.platforms.base import MAX_CONTENT_LENGTH
from connectors.platforms.buttons import MAX_BUTTONS


@tool(
    "Queue a message to one person on one connector. It goes through the same delivery pipeline "
    "as the REST API (retries, quotas, order per recipient). Returns the delivery id and status; "
    "follow it with get_delivery_status. Reusing an idempotency_key with the same arguments returns "
    "the original delivery instead of sending twice. Needs send permission on the connector.",
    destructiveHint=False,
    idempotentHint=False,
    openWorldHint=True,
)
def send_message(
    principal: Principal,
    connector_id: ConnectorId,
    recipient: Annotated[
        str,
        Field(min_length=1, max_length=255,
              description="The person's address on that platform: a Telegram chat id, an E.164 number such as "
                          "+15551234567 (SMS, voice, WhatsApp), an email address, or a webhook recipient."),
    ],
    content: Annotated[
        str, Field(max_length=MAX_CONTENT_LENGTH,
                   description="The message text (Markdown; each platform gets its own formatting). May be empty "
                               "only when attachments are given.")
    ],
    idempotency_key: Annotated[
        str | None,
        Field(default=None, min_length=1, max_length=255,
              description="Optional. The same key with the same arguments never sends twice."),
    ] = None,
    buttons: Annotated[
        list[dict[str, str]] | None,
        Field(default=None, max_length=MAX_BUTTONS,
              description="Optional buttons [{\"id\", \"label\"}]: Telegram and Slack show them; SMS, WhatsApp and "
                          "email get numbered options. A press comes back to BRAIN; to wait for one, use ask_user."),
    ] = None,
    attachments: Annotated[
        list[dict[str, str]] | None,
        Field(default=None, max_length=MAX_OUTGOING_ATTACHMENTS,
              description="Optional files to send, each one of {\"url\": an http(s) URL this service fetches} or "
                          "{\"data\": base64 bytes, \"file_name\": ...}, with optional kind (image, audio, voice, "
                          "video, document, sticker), mime_type, file_name and caption. The type is read from the "
                          "bytes. A platform that cannot carry files (voice) refuses with attachments_unsupported."),
    ] = None,
) -> dict:
    delivery, replayed = services.send_message(
        principal, connector_id, recipient, content, idempotency_key=idempotency_key, buttons=buttons,
        attachments=attachments,
    )
    return {"success": True, "delivery_id": str(delivery.id), "status": delivery.status, "replayed": replayed}


@tool(
    "List the connectors that are running (status CONNECTED) and that you may see: id, kind "
    "(telegram, whatsapp, sms, voice, email, webhook, cli), name and last heartbeat.",
    readOnlyHint=True,
)
def list_active_connectors(principal: Principal) -> dict:
    rows = services.list_connectors(principal, status=ConnectorStatus.CONNECTED).order_by("id")
    return {"connectors": [connector_summary(row) for row in rows]}


@tool(
    "One connector's health: status, last heartbeat, last error, how many messages wait to be "
    "sent (queue depth by state) and its quota (per minute, and what is left now).",
    readOnlyHint=True,
)
def get_connector_status(principal: Principal, connector_id: ConnectorId) -> dict:
    return connector_status(services.get_connector(principal, connector_id))


@tool(
    "The state of one delivery that send_message returned: queued, sending, sent, delivered, "
    "failed or dead, with attempts, timestamps and the last error.",
    readOnlyHint=True,
)
def get_delivery_status(
    principal: Principal,
    delivery_id: Annotated[str, Field(min_length=1, max_length=64, description="The delivery id (a UUID).")],
) -> dict:
    delivery = services.get_delivery(principal, delivery_id)
    return {
        "delivery_id": str(delivery.id),
        "connector_id": delivery.connector_id,
        "recipient": untrusted(delivery.recipient),  # whatever the sender typed as the address
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": iso(delivery.created_at),
        "sent_at": iso(delivery.sent_at),
        "delivered_at": iso(delivery.delivered_at),
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == DeliveryStatus.QUEUED else None,
        "platform_message_id": delivery.platform_message_id or None,
        "last_error": untrusted(delivery.last_error),
    }


def viewable_connectors(principal):
    # No display name here: a listing field cannot be marked untrusted (the resource's JSON is).
    return [
        Resource(uri=f"connector://{row.id}", name=row.id,
                 description=f"{row.kind} connector, {row.status}", mime_type="application/json")
        for row in services.list_connectors(principal).order_by("id")
    ]


@resource(
    "connector://{connector_id}", name="connector", mime_type="application/json",
    description="A connector's status, queue depth and quota.", listing=viewable_connectors,
)
def read_connector(principal: Principal, connector_id: str) -> str:
    return json.dumps(connector_status(services.get_connector(principal, connector_id)))


# --- shapes -----------------------------------------------------------------------------------


def connector_summary(row):
    return {
        "id": row.id,
        "kind": row.kind,
        "display_name": untrusted(row.display_name),  # free text typed by whoever registered it
        "status": row.status,
        "last_heartbeat": iso(row.last_heartbeat),
    }


def connector_status(row):
    pending = dict(
        row.deliveries.filter(status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
        .values_list("status")
        .annotate(n=Count("id"))
    )
    return {
        **connector_summary(row),
        "last_error": untrusted(row.last_error),
        "queue_depth": {"queued": pending.get(DeliveryStatus.QUEUED, 0), "sending": pending.get(DeliveryStatus.SENDING, 0)},
        "quota": {
            "per_minute": row.quota_per_minute,
            "available_now": available_now(f"connector:{row.id}", row.quota_per_minute),
            "per_recipient_per_minute": row.recipient_quota_per_minute,
        },
        "checked_at": timezone.now().isoformat(),
    }


def available_now(key, per_minute):
    if not per_minute:
        return None  # unlimited
    return round(quotas.level(key, per_minute), 2)
