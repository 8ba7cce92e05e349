"""Celery tasks of conversation memory: thin wrappers around the services."""
from celery import shared_task

from conversations.analysis import analyse_message as analyse
from conversations.privacy import purge_expired
from conversations.recording import record_pending as consume_pending


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def analyse_message(message_id):
    """Analyse one stored message. Memory's batches analyse what they store; this stays for
    tasks queued before that, and for re-analysing a message."""
    analyse(message_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def record_pending():
    """Store pending conversation messages (the kick after commit, and beat's safety net)."""
    consume_pending()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def purge_conversations():
    purge_expired(via="task")
