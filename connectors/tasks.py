"""Celery tasks: thin wrappers over services, so tests and eager mode run the same code."""
from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(delivery_id):
    services.attempt_delivery(delivery_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle_inbound(inbound_id):
    services.reply_with_brain(inbound_id)


@shared_task(ignore_result=True)
def sweep():
    """Periodic (Celery beat): re-drive deliveries and inbound messages the broker may have lost."""
    return services.sweep()
