"""Celery tasks of conversation memory: thin wrappers around the services."""
from celery import shared_task

from conversations.analysis import analyse_message as analyse
from conversations.privacy import purge_expired


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def analyse_message(message_id):
    analyse(message_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def purge_conversations():
    purge_expired(via="task")
