"""The sweeper: re-drive deliveries and inbound messages whose Celery task the broker may have lost."""
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from connectors import task_queue as queue
from connectors.delivery import attachment_privacy
from connectors.models import Attachment, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal
from connectors.retry_schedule import due_and_stuck


def sweep(limit=500):
    """Re-drive work the broker may have lost; run periodically (Celery beat) and by runconnectors.

    - queued deliveries that are due get their task again (a duplicate task is harmless: the
      claim under a row lock lets one through);
    - deliveries stuck in `sending` past DELIVERY_SENDING_TIMEOUT (their worker died) go back to
      `queued`: if the platform had accepted the send just before the crash, this is the one
      place a duplicate can come from, and it is audited as `message.redrive`;
    - inbound messages whose BRAIN task never ran, or whose claim is stale, are asked again;
    - uploads past ATTACHMENT_UPLOAD_TTL are deleted with their files.
    Returns counts per kind of work.
    """
    now = timezone.now()
    system = Principal.system_actor("sweeper")
    # Queued rows are re-enqueued only into the room the broker has below `limit` waiting tasks. A
    # backlog means their tasks are most likely still in it; re-adding up to `limit` copies on every
    # sweep grew a backlog faster than workers drained it (bench/chaos.py, 10,000 messages). After
    # a broker flush the queue is empty and everything due is re-driven.
    room = limit if (waiting_tasks := queue.broker_backlog()) is None else max(0, limit - waiting_tasks)
    due, stuck = due_and_stuck(Delivery, now, limit)
    due = due[:room]
    for pk in stuck:
        with transaction.atomic():
            delivery = Delivery.objects.select_for_update().filter(pk=pk, status=DeliveryStatus.SENDING).first()
            if delivery is None:
                continue
            delivery.status = DeliveryStatus.QUEUED
            delivery.last_error = "re-driven: the worker sending it stopped"
            delivery.save(update_fields=["status", "last_error", "updated_at"])
            audit.record_action(
                "message.redrive",
                system,
                "connector",
                delivery.connector_id,
                delivery_id=str(delivery.pk),
            )
    if queue.uses_sender():
        # The senders find queued rows themselves (they poll): nothing to enqueue; wake them for the re-driven ones.
        due = []
        if stuck:
            with transaction.atomic():
                queue.wake_sender()
    else:
        for pk in [*stuck, *due]:
            queue.enqueue_delivery(pk)

    stale_claim = now - timedelta(seconds=settings.BRAIN_CLAIM_TIMEOUT)
    # Stale claims always: their worker died, so no task of theirs is waiting anywhere. Pending
    # messages only into the broker's room, like queued deliveries.
    stale = list(
        InboundMessage.objects.filter(brain_status=InboundMessage.BrainStatus.THINKING, brain_claimed_at__lte=stale_claim)
        .values_list("pk", flat=True)[:limit]
    )
    pending = list(
        InboundMessage.objects.filter(
            brain_status=InboundMessage.BrainStatus.PENDING,
            received_at__lte=now - timedelta(seconds=settings.DELIVERY_SWEEP_GRACE),
        )
        # Files still being fetched (a big download, retries after a network error): their task hands over to
        # BRAIN itself. Only ATTACHMENT_FETCH_GRACE after they arrived is the message re-driven (a lost fetch task:
        # BRAIN's task fetches what is left, then answers).
        .exclude(pk__in=Attachment.objects.filter(
            status=Attachment.Status.PENDING,
            created_at__gt=now - timedelta(seconds=settings.ATTACHMENT_FETCH_GRACE),
        ).values("inbound_id"))
        .values_list("pk", flat=True)[: max(0, room - len(due))]
    )
    waiting = stale + pending
    with transaction.atomic():
        reclaimed = InboundMessage.objects.filter(
            pk__in=waiting, brain_status=InboundMessage.BrainStatus.THINKING
        ).update(brain_status=InboundMessage.BrainStatus.PENDING)
        if reclaimed:  # their worker died while asking BRAIN: BRAIN may be asked a second time
            audit.record_action("brain.redrive", system, "inbound", "", count=reclaimed)
    for pk in waiting:
        queue.enqueue_brain(pk)
    with transaction.atomic():
        uploads_expired = attachment_privacy.delete_expired_uploads(limit, now)
        if uploads_expired:  # their files go after this commits (the post_delete handler)
            audit.record_action("attachment.expire", system, "attachment", "", count=uploads_expired)
    return {"deliveries_due": len(due), "deliveries_redriven": len(stuck), "inbound_redriven": len(waiting),
            "uploads_expired": uploads_expired}


def send_due(limit=500):
    """Give each queued delivery whose next attempt has come its task again, at once (no DELIVERY_SWEEP_GRACE).

    For the embedded default only (runscheduler, every second): eager Celery cannot wait out a countdown, so a
    retry or a quota-delayed send would otherwise wait for the next sweep. Only rows with a next_attempt_at: a
    new row's task ran when it was committed. A duplicate task is harmless (the claim under a row lock lets one
    through). Nothing here under the sender engine, whose senders poll for due rows themselves."""
    if queue.uses_sender():
        return 0
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.QUEUED, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in due:
        queue.enqueue_delivery(pk)
    return len(due)
