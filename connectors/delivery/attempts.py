"""Delivery attempts: claim a queued message, call its platform, record sent, retry or failure."""
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors import quotas
from connectors import task_queue as queue
from connectors.delivery import outbound_attachments, outcomes
from connectors.models import ConnectorStatus, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal
from connectors.platforms.base import ConnectorError, OutgoingMessage
from connectors.registry.kinds import connector_for

logger = logging.getLogger(__name__)


def attempt_delivery(delivery_id):
    """Deliver one queued message: claim it, call the platform, record the outcome."""
    with transaction.atomic():
        # of=("self",): the connector row is only read; locking it too conflicted with the foreign-key checks of
        # concurrent inserts (every send_message to the connector).
        delivery = (
            Delivery.objects.select_for_update(of=("self",)).select_related("connector").filter(pk=delivery_id).first()
        )
        if delivery is None or delivery.status != DeliveryStatus.QUEUED:
            return delivery
        now = timezone.now()
        if delivery.connector.status != ConnectorStatus.CONNECTED:
            # Not dropped: it waits queued until the connector runs again.
            return _defer(delivery, 60, f"connector is {delivery.connector.status}")
        earlier = (
            Delivery.objects.filter(
                connector_id=delivery.connector_id,
                recipient=delivery.recipient,
                status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING],
                created_at__lt=delivery.created_at,
            )
            .order_by("created_at")
            .first()
        )
        if earlier is not None:
            # In order per recipient: wait behind the earlier message (it kicks us when done).
            wait = (earlier.next_attempt_at - now).total_seconds() if earlier.next_attempt_at else 0
            return _defer(delivery, max(1.0, wait + 0.5), "", kick=False)
        wait = quotas.take(
            [
                (f"connector:{delivery.connector_id}", delivery.connector.quota_per_minute),
                (f"recipient:{delivery.connector_id}:{delivery.recipient}", delivery.connector.recipient_quota_per_minute),
            ]
        )
        if wait > 0:
            return _defer(delivery, wait, "")  # over quota: delayed, never dropped
        delivery.status = DeliveryStatus.SENDING
        delivery.attempts += 1
        delivery.save(update_fields=["status", "attempts", "updated_at"])
    connector = delivery.connector
    system = Principal.system_actor("delivery")
    metadata = {}
    if delivery.in_reply_to_id:
        inbound = InboundMessage.objects.filter(pk=delivery.in_reply_to_id).first()
        if inbound is not None:
            metadata["reply_to"] = {"platform_message_id": inbound.platform_message_id, "metadata": inbound.metadata}
    files = outbound_attachments.outgoing([delivery])
    if lost := outbound_attachments.files_lost(delivery, files):
        return _record_send_failure(system, delivery, lost)
    try:
        result = connector_for(connector).send(
            OutgoingMessage(recipient=delivery.recipient, content=delivery.content, metadata=metadata,
                            buttons=tuple(delivery.buttons or ()), attachments=files.get(delivery.pk, ())),
            delivery_id=str(delivery.id),
        )
    except ConnectorError as exc:
        return _record_send_failure(system, delivery, exc)
    except Exception as exc:
        logger.exception("Unexpected error delivering %s", delivery.id)
        return _record_send_failure(system, delivery, ConnectorError(f"{type(exc).__name__}: {exc}"))
    # The platform has the message now. Recording that must outlast a database blip: a row left in
    # `sending` is re-driven by the sweeper, which sends the message a second time.
    return outcomes.while_database_recovers(lambda: record_sent(system, connector, delivery, result))


def record_sent(system, connector, delivery, result):
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        return outcomes.settle_sent(system, delivery, result)


def _defer(delivery, seconds, reason, kick=True):
    """Keep a delivery queued for later (inside the caller's transaction)."""
    delivery.next_attempt_at = timezone.now() + timedelta(seconds=seconds)
    if reason:
        delivery.last_error = reason
    delivery.save(update_fields=["next_attempt_at", "last_error", "updated_at"])
    if kick and not settings.CELERY_TASK_ALWAYS_EAGER:
        queue.delivery_due(delivery.id, countdown=seconds)
    return delivery


def _record_send_failure(principal, delivery, error: ConnectorError):
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        outcomes.settle_failure(principal, delivery, error)
    return delivery
