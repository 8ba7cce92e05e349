"""What happens after a send: confirmations, acknowledgements and platform receipts move a delivery on."""
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import ValidationFailed
from connectors.delivery.announcements import announce_settled
from connectors.models import Delivery, DeliveryStatus
from connectors.permissions import Principal
from connectors.registry.common import emit, uuid_or_none


def mark_delivered(principal, delivery_id):
    """A receipt (or the CLI showing the message) confirms the person has it."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != DeliveryStatus.SENT:
            return delivery
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.save(update_fields=["status", "delivered_at", "updated_at"])
        audit.record_action(
            "message.delivered",
            principal,
            "connector",
            delivery.connector_id,
            delivery_id=str(delivery.id),
        )
        emit("connector.message.delivered", delivery.connector_id, delivery_id=str(delivery.id), via="confirmation")
        announce_settled(delivery, "confirmation")
    return delivery


def acknowledge_delivery(connector_id, delivery_id, *, platform_message_id="", principal=None):
    """The person confirmed a message (e.g. pressed 1 on a notification call).

    Recorded as an audit row `message.acknowledged`; a `sent` delivery also becomes `delivered`.
    `platform_message_id`, when given, must match the delivery's (once it has one), so an
    acknowledgement cannot land on another message. Returns the delivery, or None if refused.
    """
    principal = principal or Principal.system_actor("platform", via="webhook")
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update().filter(pk=uuid_or_none(delivery_id), connector_id=connector_id).first()
        )
        mismatch = (
            delivery is not None
            and platform_message_id
            and delivery.platform_message_id
            and delivery.platform_message_id != platform_message_id
        )
        if delivery is None or mismatch:
            audit.record_action(
                "message.acknowledged",
                principal,
                "connector",
                connector_id,
                result=audit.FAILURE,
                error="platform_id_mismatch" if mismatch else "unknown_message",
            )
            return None
        previous = delivery.status
        if previous == DeliveryStatus.SENT:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = timezone.now()
            delivery.save(update_fields=["status", "delivered_at", "updated_at"])
            emit("connector.message.delivered", connector_id, delivery_id=str(delivery.id), via="acknowledgement")
        # Acknowledged even if a receipt marked it delivered before: the person confirmed it.
        announce_settled(delivery, "acknowledgement", acknowledged=True)
        audit.record_action(
            "message.acknowledged",
            principal,
            "connector",
            connector_id,
            delivery_id=str(delivery.id),
            previous=previous,
        )
    return delivery


def apply_receipt(connector_id, receipt, principal=None):
    """A delivery receipt: move the delivery with this platform id to delivered or failed.

    A receipt never moves a delivery backwards (a late "failed" after "delivered" is kept only
    in the audit log). Unknown ids are recorded and otherwise ignored. Returns the delivery, or None.
    """
    return _apply_receipt(connector_id, receipt, principal)[0]


def apply_receipts(connector_id, receipts, principal=None):
    """Apply a webhook's receipts one by one; returns how many moved a delivery (what the webhook answers)."""
    return sum(1 for receipt in receipts if _apply_receipt(connector_id, receipt, principal)[1])


def _apply_receipt(connector_id, receipt, principal):
    """(delivery or None, whether this receipt moved it)."""
    principal = principal or Principal.system_actor("platform", via="webhook")
    if receipt.status not in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
        raise ValidationFailed(f"Unknown receipt status {receipt.status!r}.")
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update()
            .filter(connector_id=connector_id, platform_message_id=receipt.platform_message_id)
            .first()
        )
        if delivery is None:
            audit.record_action(
                "message.receipt",
                principal,
                "connector",
                connector_id,
                result=audit.FAILURE,
                error="unknown_message",
                status=receipt.status,
            )
            return None, False
        previous = delivery.status
        moved = previous in (DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.QUEUED)
        if moved:
            delivery.status = receipt.status
            if receipt.status == DeliveryStatus.DELIVERED:
                delivery.delivered_at = timezone.now()
            else:
                delivery.last_error = (receipt.error or "the platform reported the message undelivered")[:2000]
            delivery.save(update_fields=["status", "delivered_at", "last_error", "updated_at"])
            emit(
                f"connector.message.{receipt.status}",
                connector_id,
                delivery_id=str(delivery.id),
                status=receipt.status,
                via="receipt",
            )
            announce_settled(delivery, "receipt")
        audit.record_action(
            "message.delivered" if receipt.status == DeliveryStatus.DELIVERED else "message.failed",
            principal,
            "connector",
            connector_id,
            delivery_id=str(delivery.id),
            receipt=receipt.status,
            previous=previous,
        )
    return delivery, moved
