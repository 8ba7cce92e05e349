"""Signals to the other apps: a message was stored (conversation memory), a delivery settled (routing)."""
import logging

from django.db import transaction

from connectors.models import Connector, Delivery
from connectors.signals import delivery_settled, message_recorded

logger = logging.getLogger(__name__)


def announce_settled(delivery, via, acknowledged=False):
    """Tell listeners (routing's fallback) after commit that a delivery reached an outcome."""
    payload = {
        "delivery_id": str(delivery.id),
        "connector_id": delivery.connector_id,
        "status": delivery.status,
        "via": via,
        "acknowledged": acknowledged,
    }

    def send():
        for receiver, result in delivery_settled.send_robust(sender=Delivery, **payload):
            if isinstance(result, Exception):
                logger.error("delivery_settled receiver %s failed: %s", receiver, result, exc_info=result)

    transaction.on_commit(send)


def announce_recorded(connector, direction, address, content, at, principal, **ids):
    """Hand a stored message to conversation memory in this same transaction (see signals)."""
    message_recorded.send(
        sender=Connector,
        connector_id=connector.pk,
        kind=connector.kind,  # the receiver needs it for the address rules: spares it a query per message
        direction=direction,
        address=address,
        content=content,
        at=at,
        principal=str(principal),
        inbound_id=ids.get("inbound_id"),
        delivery_id=ids.get("delivery_id"),
        platform_message_id=ids.get("platform_message_id", ""),
        metadata=ids.get("metadata", {}),
    )
