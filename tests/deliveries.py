"""Driving the delivery pipeline from tests (Celery is eager, so the task runs on commit)."""
from django.utils import timezone

from connectors import services
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
