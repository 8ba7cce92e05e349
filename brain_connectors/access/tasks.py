"""Celery tasks of the access app."""
from celery import shared_task

from brain_connectors.access import refusals


@shared_task(ignore_result=True)
def close_refusal_windows():
    """Periodic (Celery beat): audit the count of every ended window of repeated refusals."""
    return refusals.close_ended_windows()
