"""Celery tasks of routing: thin wrappers over routing.notify."""
from celery import shared_task


@shared_task(ignore_result=True)
def check_ack_deadlines():
    """Periodic (Celery beat): urgent notifications nobody acknowledged in time move to their
    next channel (reason "no acknowledgement")."""
    from routing import notify

    return notify.check_ack_deadlines()
