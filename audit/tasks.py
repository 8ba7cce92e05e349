"""Celery tasks of the audit log."""
from celery import shared_task

from audit import checkpoints


@shared_task(ignore_result=True)
def write_checkpoint():
    """Beat, every AUDIT_CHECKPOINT_INTERVAL_SECONDS: checkpoint the chain's head (audit.checkpoints).
    A log that contradicts the newest checkpoint is logged as an error, not retried: it is an alarm."""
    checkpoints.tick()
