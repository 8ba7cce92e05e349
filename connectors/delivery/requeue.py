"""Staff send a dead, failed or stuck delivery again: back to `queued`, due now, audited as `message.requeue`."""
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import Conflict, Hidden, NotFound, PermissionDenied, audit_result
from connectors import task_queue as queue
from connectors.models import PERM_SEND, PERM_VIEW, Delivery, DeliveryStatus
from connectors.permissions import permission_test
from connectors.registry.common import uuid_or_none

GIVEN_UP = (DeliveryStatus.FAILED, DeliveryStatus.DEAD)


def requeue_delivery(principal, delivery_id):
    """Queue the delivery again, due now, for a principal with send permission on its connector.

    Send, not manage: re-queuing makes a message go out, which is what send_via_connector grants. Only a delivery
    that will not move by itself qualifies: failed, dead, or `sending` past DELIVERY_SENDING_TIMEOUT (its worker
    died; the sweeper would re-drive it too). A `sending` one may have reached the platform just before its worker
    died: re-queuing it can send it twice, as the sweeper's re-drive can. Attempts start again from 0: staff
    re-queue after fixing the cause (credentials, an address), and the message deserves the full retry schedule;
    the attempts it had are kept in the audit row.
    """
    with audit.audited("message.requeue", principal, "delivery", str(delivery_id), classify=audit_result):
        with transaction.atomic():
            delivery = (
                Delivery.objects.select_for_update(of=("self",)).select_related("connector")
                .filter(pk=uuid_or_none(delivery_id)).first()
            )
            if delivery is None:
                raise NotFound(f"Delivery {delivery_id!r} does not exist.")
            allowed = permission_test(principal, delivery.connector)
            if not allowed(PERM_VIEW):  # answered as if it did not exist, naming nothing of its connector
                raise Hidden(f"Delivery {delivery_id!r} does not exist.")
            if not allowed(PERM_SEND):
                raise PermissionDenied(f"You need the {PERM_SEND} permission on connector {delivery.connector_id!r}.")
            stuck_before = timezone.now() - timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT)
            stuck = delivery.status == DeliveryStatus.SENDING and delivery.updated_at <= stuck_before
            if delivery.status not in GIVEN_UP and not stuck:
                raise Conflict(
                    f"Delivery {delivery.pk} is {delivery.status}: only a failed or dead delivery, or one stuck "
                    "sending, can be re-queued.",
                    code="not_requeueable",
                )
            previous, attempts = delivery.status, delivery.attempts
            delivery.status, delivery.attempts, delivery.next_attempt_at = DeliveryStatus.QUEUED, 0, None
            delivery.save(update_fields=["status", "attempts", "next_attempt_at", "updated_at"])
            audit.record_action(
                "message.requeue", principal, "connector", delivery.connector_id,
                delivery_id=str(delivery.pk), previous=previous, attempts=attempts,
            )
            queue.delivery_due(delivery.pk)
    return delivery
