"""Reacting to deliveries: a notification moves on when its current delivery settles, or when an urgent one goes unacknowledged.

`on_delivery_settled()` (a receiver of `connectors.signals.delivery_settled`, connected in
routing.receivers) moves the notification on when the delivery of its current step settles:
- failed or dead (a send error, or a failed receipt such as Twilio "undelivered"): the next
  step of the chain (`notification.fallback`), or EXHAUSTED (`notification.exhausted`);
- sent or delivered: standard and digest become DELIVERED (`notification.delivered`). A later
  failed receipt for that same delivery re-opens it and falls back (a receipt is the better
  witness); urgent ones wait for an acknowledgement until `ack_deadline` (now +
  ROUTING_URGENT_ACK_SECONDS) and become DELIVERED only when acknowledged (a call answered
  with 1, or `acknowledge()`); `check_ack_deadlines()` moves the silent ones on.
Each transition takes the notification's row lock and re-checks its state (a late or duplicate
signal finds nothing to do).
"""
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from routing.models import Notification, NotificationStatus, NotificationType
from routing.notify.fallback import close_attempt, mark_delivered, move_on
from routing.notify.trail import ROUTER, TARGET

logger = logging.getLogger(__name__)

FAILED_DELIVERY = ("failed", "dead")
DONE_DELIVERY = ("sent", "delivered")
NO_ACK = "no acknowledgement"


def on_delivery_settled(sender=None, *, delivery_id, connector_id="", status="", via="", acknowledged=False, **kwargs):
    """Receiver of connectors.signals.delivery_settled. Never raises (it runs after a commit)."""
    try:
        settle(delivery_id, status, via=via, acknowledged=acknowledged)
    except Exception:
        logger.exception("Routing could not react to delivery %s settling as %s", delivery_id, status)


def settle(delivery_id, status, *, via="", acknowledged=False):
    """Move the notification whose current delivery this is. Returns it, or None if none is."""
    try:
        delivery_uuid = uuid.UUID(str(delivery_id))
    except ValueError:
        return None
    if not Notification.objects.filter(current_delivery_id=delivery_uuid).exists():
        return None  # most deliveries are not notifications: no lock, no transaction
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update().filter(current_delivery_id=delivery_uuid).first()
        )
        if notification is None:
            return None
        state = notification.status
        urgent = notification.notification_type == NotificationType.URGENT
        if status in FAILED_DELIVERY:
            # A DELIVERED standard one re-opens on a failed receipt; an acknowledged one never.
            if state not in (NotificationStatus.SENDING, NotificationStatus.DELIVERED) or notification.acknowledged_at:
                return notification
            reason = f"delivery {status} ({via})" if via else f"delivery {status}"
            close_attempt(notification, status, reason)
            move_on(notification, reason)
            return notification
        if status not in DONE_DELIVERY or state != NotificationStatus.SENDING:
            return notification
        if not urgent or acknowledged:
            mark_delivered(notification, via, acknowledged=acknowledged)
            return notification
        if notification.ack_deadline is None:
            notification.ack_deadline = timezone.now() + timedelta(seconds=settings.ROUTING_URGENT_ACK_SECONDS)
            attempts = [dict(a) for a in notification.attempts]
            if attempts:
                attempts[-1]["outcome"] = "awaiting acknowledgement"
            notification.attempts = attempts
            notification.save()
            audit.record_action(
                "notification.awaiting_ack",
                ROUTER,
                TARGET,
                notification.id,
                step=notification.step,
                ack_deadline=notification.ack_deadline.isoformat(),
            )
    return notification


def check_ack_deadlines(now=None, limit=500):
    """Urgent notifications nobody acknowledged in time go to their next channel. Periodic
    (Celery beat: routing.tasks.check_ack_deadlines). Returns how many moved on."""
    now = now or timezone.now()
    due = list(
        Notification.objects.filter(
            status=NotificationStatus.SENDING,
            notification_type=NotificationType.URGENT,
            ack_deadline__lte=now,
        ).values_list("pk", flat=True)[:limit]
    )
    moved = 0
    for pk in due:
        with transaction.atomic():
            notification = (
                Notification.objects.select_for_update()
                .filter(pk=pk, status=NotificationStatus.SENDING, ack_deadline__lte=now)
                .first()
            )
            if notification is None:  # acknowledged or moved on meanwhile
                continue
            close_attempt(notification, NO_ACK, NO_ACK)
            move_on(notification, NO_ACK)
            moved += 1
    return moved
