"""Celery tasks: thin wrappers over services, so tests and eager mode run the same code.

Their names (`connectors.tasks.<function>`) are stored in beat schedules and named by
`connectors.task_queue`, through which services enqueue them without importing this module.
"""
from celery import shared_task

from connectors.delivery import attachments, attempts, replies, sweeper
from connectors.events import log, sequencer, subscription_delivery
from connectors.monitoring import health


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(delivery_id):
    attempts.attempt_delivery(delivery_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle_inbound(inbound_id):
    replies.reply_with_brain(inbound_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fetch_attachments(inbound_id):
    """Fetch an inbound message's files, then hand it to handle_inbound (BRAIN sees the files)."""
    attachments.fetch_then_reply(inbound_id)


@shared_task(ignore_result=True)
def sweep():
    """Periodic (Celery beat): re-drive deliveries and inbound messages the broker may have lost."""
    return sweeper.sweep()


@shared_task(ignore_result=True)
def send_due_deliveries():
    """Every second under `make run` (brain_connectors.scheduler): retries and quota-delayed sends on time."""
    return sweeper.send_due()


@shared_task(ignore_result=True)
def relay_events():
    """Periodic (Celery beat): number events left without a seq, push those the channel layer never got."""
    return sequencer.relay()


@shared_task(ignore_result=True)
def purge_events():
    """Periodic (Celery beat): delete events past EVENT_RETENTION_DAYS (audited)."""
    return log.purge_expired()


@shared_task(ignore_result=True)
def health_checks():
    """Periodic (Celery beat): check every running connector's health, open and close incidents."""
    return health.run_health_checks()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_event(event_delivery_id):
    """POST one event to one subscription (connectors.events.subscription_delivery)."""
    subscription_delivery.deliver_event(event_delivery_id)


@shared_task(ignore_result=True)
def sweep_event_deliveries():
    """Periodic (Celery beat): re-drive event deliveries the broker may have lost."""
    return subscription_delivery.sweep()
