"""Driving the delivery pipeline from tests (Celery is eager, so the task runs on commit)."""
from datetime import timedelta
from types import SimpleNamespace

from django.db.models import F
from django.utils import timezone

from connectors import quotas, services
from connectors.models import Delivery
from tests.conftest import SYSTEM


def send_now(connector_id, recipient, content, **kwargs):
    """send_message as the test system principal; returns the delivery as it stands after the task."""
    delivery, _ = services.send_message(SYSTEM, connector_id, recipient, content, **kwargs)
    delivery.refresh_from_db()
    return delivery


def retry_now(delivery):
    """Let the backoff elapse, then run the delivery task again."""
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    return delivery


class QuotaClock:
    """Lets time pass for the quota buckets and the queue, without waiting: the buckets read the real clock plus
    the time elapsed here, and every delivery's next_attempt_at comes that much closer."""

    def __init__(self, monkeypatch):
        self.elapsed = 0.0
        real = quotas.time.time
        monkeypatch.setattr(quotas, "time", SimpleNamespace(time=lambda: real() + self.elapsed))

    def elapse(self, seconds):
        self.elapsed += seconds
        Delivery.objects.filter(next_attempt_at__isnull=False).update(
            next_attempt_at=F("next_attempt_at") - timedelta(seconds=seconds)
        )
