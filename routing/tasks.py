"""Celery tasks of routing: thin wrappers over routing.notify (task names `routing.tasks.*` are stored in beat schedules)."""
from celery import shared_task

from routing.notify import settlement


@shared_task(ignore_result=True)
def check_ack_deadlines():
    """Periodic (Celery beat): urgent notifications nobody acknowledged in time move to their
    next channel (reason "no acknowledgement")."""
    return settlement.check_ack_deadlines()
