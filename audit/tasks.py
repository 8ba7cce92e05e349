"""Celery tasks of the audit log."""
from celery import shared_task

from audit import checkpoints, sealer


@shared_task(ignore_result=True)
def write_checkpoint():
    """Beat, every AUDIT_CHECKPOINT_INTERVAL_SECONDS: checkpoint the chain's head (audit.checkpoints).
    A log that contradicts the newest checkpoint is logged as an error, not retried: it is an alarm."""
    checkpoints.tick()


@shared_task(ignore_result=True)
def seal_pending():
    """Beat, every AUDIT_SEAL_INTERVAL_SECONDS: chain the audit rows appended unsealed (audit.sealer).
    Errors are logged, not retried: the next round seals what this one left."""
    sealer.tick()
