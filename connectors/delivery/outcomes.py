"""One send attempt's outcome applied to its delivery: sent, retry, failed or dead, with its audit row and events.

Shared by the per-delivery Celery task (attempts.py: one transaction per outcome) and the batch sender (sender.py:
one transaction per batch). Each function runs inside the caller's transaction, on a row the caller has locked.
"""
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from audit import services as audit
from connectors import task_queue as queue
from connectors.delivery.announcements import announce_settled
from connectors.models import Delivery, DeliveryStatus
from connectors.platforms.base import ConnectorError
from connectors.registry.common import emit
from connectors.registry.lifecycle import CONNECTOR_FATAL_CODES, record_connector_error
from connectors.retry_schedule import retry_delay

logger = logging.getLogger(__name__)

SENT_FIELDS = ["status", "platform_message_id", "sent_at", "delivered_at", "last_error", "updated_at"]
FAILED_FIELDS = ["status", "last_error", "next_attempt_at", "updated_at"]


def settle_sent(system, delivery, result, now=None):
    """The platform accepted `delivery`: sent (or delivered, when the platform says so), audited and announced."""
    now = now or timezone.now()
    delivery.status = DeliveryStatus.DELIVERED if result.delivered else DeliveryStatus.SENT
    delivery.platform_message_id = result.platform_message_id or ""
    delivery.sent_at = now
    if result.delivered:
        delivery.delivered_at = now
    delivery.last_error = ""
    delivery.save(update_fields=SENT_FIELDS)  # not the content: saving it would encrypt it again
    audit.record_action(
        "message.sent", system, "connector", delivery.connector_id, delivery_id=str(delivery.id), attempts=delivery.attempts,
    )
    sent = {"delivery_id": str(delivery.id), "attempts": delivery.attempts, "length": len(delivery.content)}
    emit("connector.message.sent", delivery.connector_id, **sent, latency_ms=_ms_since(delivery.created_at, now))
    if result.delivered:
        emit("connector.message.delivered", delivery.connector_id, delivery_id=str(delivery.id), via="platform")
    announce_settled(delivery, "platform")
    kick_next_for_recipient(delivery)
    return delivery


def settle_failure(principal, delivery, error: ConnectorError):
    """The platform refused or failed `delivery`: queued again after a backoff, or failed (permanent) or dead
    (out of attempts), audited; a connector-fatal error stops the connector. Returns the retry delay or None."""
    retry = None
    delivery.last_error = error.message[:2000]
    if error.permanent:
        delivery.status = DeliveryStatus.FAILED
    elif delivery.attempts >= settings.DELIVERY_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.DEAD
    else:
        retry = retry_delay(delivery.attempts, error.retry_after)
        delivery.status = DeliveryStatus.QUEUED
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=retry)
    delivery.save(update_fields=FAILED_FIELDS)
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
        queue.delivery_due(delivery.id, countdown=retry)
    if retry is None:
        kick_next_for_recipient(delivery)
    return retry


def kick_next_for_recipient(delivery):
    """After a delivery settles, send at once the next one for the same person, if it was put off behind this one.

    Only the per-delivery task engine needs this, and only for a follower whose task already ran and was deferred
    (next_attempt_at set): one still waiting for its first run has its task in the broker already, and kicking it
    again made a duplicate task (0.75 per message under a backlog). Senders claim the follower on their next pass.
    """
    if queue.uses_sender():
        return
    following = (
        Delivery.objects.filter(
            connector_id=delivery.connector_id,
            recipient=delivery.recipient,
            status=DeliveryStatus.QUEUED,
            created_at__gt=delivery.created_at,
        )
        .order_by("created_at")
        .values_list("pk", "next_attempt_at")
        .first()
    )
    if following is not None and following[1] is not None:
        queue.delivery_due(following[0])


def while_database_recovers(work):
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
