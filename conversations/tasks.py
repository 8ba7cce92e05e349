"""Celery tasks of conversation memory: thin wrappers around the services."""
from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def analyse_message(message_id):
    from conversations.analysis import analyse_message as analyse

    analyse(message_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def purge_conversations():
    from conversations.privacy import purge_expired

    purge_expired(via="task")
