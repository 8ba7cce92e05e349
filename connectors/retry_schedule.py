"""When to try again: retry backoff, and which queued or stuck rows a sweep re-drives."""
import random
from datetime import timedelta

from django.conf import settings
from django.db import models

from connectors.models import DeliveryStatus


def retry_delay(attempts, retry_after=None):
    """Exponential backoff with full jitter, capped at 15 minutes; the platform's ask wins if longer."""
    delay = random.uniform(0, min(900, 2 ** min(attempts, 10)))
    if retry_after:
        delay = max(delay, float(retry_after))
    return delay


def due_and_stuck(model, now, limit):
    """Ids of `model` rows (Delivery, EventDelivery) to re-drive: queued and due, left alone for
    DELIVERY_SWEEP_GRACE; and stuck in `sending` past DELIVERY_SENDING_TIMEOUT (worker died)."""
    due = list(
        model.objects.filter(status=DeliveryStatus.QUEUED)
        .filter(models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now))
        .filter(updated_at__lte=now - timedelta(seconds=settings.DELIVERY_SWEEP_GRACE))
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    stuck = list(
        model.objects.filter(
            status=DeliveryStatus.SENDING,
            updated_at__lte=now - timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT),
        ).values_list("pk", flat=True)[:limit]
    )
    return due, stuck
