"""Delivery attempts: claim a queued message, call its platform, record sent, retry or failure."""
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from audit import services as audit
from connectors import quotas
from connectors import task_queue as queue
from connectors.delivery.announcements import announce_settled
from connectors.models import ConnectorStatus, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal
from connectors.platforms.base import ConnectorError, OutgoingMessage
from connectors.registry.common import emit
from connectors.registry.kinds import connector_for
from connectors.registry.lifecycle import CONNECTOR_FATAL_CODES, record_connector_error
from connectors.retry_schedule import retry_delay

logger = logging.getLogger(__name__)


def attempt_delivery(delivery_id):
    """Deliver one queued message: claim it, call the platform, record the outcome."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().select_related("connector").filter(pk=delivery_id).first()
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
    try:
        result = connector_for(connector).send(
            OutgoingMessage(recipient=delivery.recipient, content=delivery.content, metadata=metadata),
            delivery_id=str(delivery.id),
        )
    except ConnectorError as exc:
        return _record_send_failure(system, delivery, exc)
    except Exception as exc:
        logger.exception("Unexpected error delivering %s", delivery.id)
        return _record_send_failure(system, delivery, ConnectorError(f"{type(exc).__name__}: {exc}"))
    # The platform has the message now. Recording that must outlast a database blip: a row left in
    # `sending` is re-driven by the sweeper, which sends the message a second time.
    return _while_database_recovers(lambda: record_sent(system, connector, delivery, result))


def record_sent(system, connector, delivery, result):
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        now = timezone.now()
        delivery.status = DeliveryStatus.DELIVERED if result.delivered else DeliveryStatus.SENT
        delivery.platform_message_id = result.platform_message_id or ""
        delivery.sent_at = now
        if result.delivered:
            delivery.delivered_at = now
        delivery.last_error = ""
        delivery.save()
        audit.record_action(
            "message.sent",
            system,
            "connector",
            connector.id,
            delivery_id=str(delivery.id),
            attempts=delivery.attempts,
        )
        sent = {"delivery_id": str(delivery.id), "attempts": delivery.attempts, "length": len(delivery.content)}
        emit("connector.message.sent", connector.id, **sent, latency_ms=_ms_since(delivery.created_at, now))
        if result.delivered:
            emit("connector.message.delivered", connector.id, delivery_id=str(delivery.id), via="platform")
        announce_settled(delivery, "platform")
        _kick_next_for_recipient(delivery)
    return delivery


def _while_database_recovers(work):
    """work() (its own transaction), retried while the database is unreachable, for up to half of
    DELIVERY_SENDING_TIMEOUT: after that the sweeper re-drives the row anyway."""
    deadline = time.monotonic() + settings.DELIVERY_SENDING_TIMEOUT / 2
    while True:
        try:
            return work()
        except (OperationalError, InterfaceError):
            if time.monotonic() >= deadline or connection.in_atomic_block:
                raise  # inside a caller's transaction nothing can be retried here
            logger.warning("Database unreachable while recording a sent message; retrying")
            connection.close()  # the broken connection; the next query opens a new one
            time.sleep(1)


def _ms_since(start, end):
    return round((end - start).total_seconds() * 1000, 1)


def _defer(delivery, seconds, reason, kick=True):
    """Keep a delivery queued for later (inside the caller's transaction)."""
    delivery.next_attempt_at = timezone.now() + timedelta(seconds=seconds)
    if reason:
        delivery.last_error = reason
    delivery.save(update_fields=["next_attempt_at", "last_error", "updated_at"])
    if kick and not settings.CELERY_TASK_ALWAYS_EAGER:
        transaction.on_commit(lambda: queue.enqueue_delivery(delivery.id, countdown=seconds))
    return delivery


def _kick_next_for_recipient(delivery):
    """After a delivery settles, send the next one queued for the same person right away."""
    following = (
        Delivery.objects.filter(
            connector_id=delivery.connector_id,
            recipient=delivery.recipient,
            status=DeliveryStatus.QUEUED,
            created_at__gt=delivery.created_at,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
        .first()
    )
    if following is not None:
        transaction.on_commit(lambda: queue.enqueue_delivery(following))


def _record_send_failure(principal, delivery, error: ConnectorError):
    retry = None
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        delivery.last_error = error.message[:2000]
        if error.permanent:
            delivery.status = DeliveryStatus.FAILED
        elif delivery.attempts >= settings.DELIVERY_MAX_ATTEMPTS:
            delivery.status = DeliveryStatus.DEAD
        else:
            retry = retry_delay(delivery.attempts, error.retry_after)
            delivery.status = DeliveryStatus.QUEUED
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=retry)
        delivery.save()
        audit.record_action(
            "message.failed" if retry is None else "message.retry",
            principal,
            "connector",
            delivery.connector_id,
            result=audit.FAILURE,
            delivery_id=str(delivery.id),
            status=delivery.status,
            permanent=error.permanent,
            error=error.code,
        )
        if retry is None:
            announce_settled(delivery, "platform")
            emit(
                "connector.message.failed",
                delivery.connector_id,
                delivery_id=str(delivery.id),
                status=delivery.status,
                attempts=delivery.attempts,
                permanent=error.permanent,
                error=error.code,
            )
        if error.permanent and error.code in CONNECTOR_FATAL_CODES:
            record_connector_error(principal, delivery.connector_id, error)
        # Eager mode (make run) would retry in a tight loop; there the row waits for a sweep.
        if retry is not None and not settings.CELERY_TASK_ALWAYS_EAGER:
            transaction.on_commit(lambda: queue.enqueue_delivery(delivery.id, countdown=retry))
        if retry is None:
            _kick_next_for_recipient(delivery)
    return delivery
