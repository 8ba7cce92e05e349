"""The per-delivery task engine after the sender work: a settled delivery kicks only a follower that was really
put off behind it, the claim locks only the delivery row, and Celery workers keep their database connections."""
import threading

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection, transaction

from brain_connectors.celery import app
from connectors import services, task_queue
from connectors.models import Delivery
from connectors.platforms import locmem
from tests.conftest import SYSTEM


@pytest.fixture
def enqueued(monkeypatch):
    """The delivery tasks enqueued (recorded, not run: a broker that holds them)."""
    calls = []
    monkeypatch.setattr(task_queue, "enqueue_delivery", lambda pk, countdown=None: calls.append(pk))
    return calls


@pytest.mark.django_db(transaction=True)
def test_only_a_follower_put_off_behind_a_delivery_is_kicked(make_connector, enqueued):
    make_connector("kick_one")
    first, _ = services.send_message(SYSTEM, "kick_one", "ann", "kick test one")
    second, _ = services.send_message(SYSTEM, "kick_one", "ann", "kick test two")
    assert enqueued == [first.pk, second.pk]

    services.attempt_delivery(first.pk)
    # `second` never ran: its task is still in the broker, so no second task for it.
    assert enqueued == [first.pk, second.pk]

    third, _ = services.send_message(SYSTEM, "kick_one", "ann", "kick test three")
    services.attempt_delivery(third.pk)  # runs while `second` is queued ahead of it: put off, no task of its own
    assert Delivery.objects.get(pk=third.pk).next_attempt_at is not None
    services.attempt_delivery(second.pk)
    assert enqueued == [first.pk, second.pk, third.pk, third.pk]  # the kick: `third` had nobody else to run it
    services.attempt_delivery(third.pk)
    assert [message.content for _, message in locmem.outbox] == ["kick test one", "kick test two", "kick test three"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
def test_the_task_claim_does_not_wait_for_the_connector_row(make_connector, enqueued):
    make_connector("lock_one")
    delivery, _ = services.send_message(SYSTEM, "lock_one", "ann", "a lock test message")
    held, release = threading.Event(), threading.Event()

    def insert_in_progress():  # what a concurrent insert's foreign-key check holds on the connector row
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM connectors_connector WHERE id = %s FOR KEY SHARE", ["lock_one"])
            held.set()
            release.wait(20)
        connection.close()

    holder = threading.Thread(target=insert_in_progress)
    holder.start()
    assert held.wait(10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")  # FOR UPDATE on the connector row too would time out here
        services.attempt_delivery(delivery.pk)
    finally:
        release.set()
        holder.join(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert Delivery.objects.get(pk=delivery.pk).status == "sent"


@pytest.mark.django_db
def test_celery_workers_keep_their_database_connection(settings):
    fixup = DjangoWorkerFixup(app)  # what a worker installs; it reads CELERY_DB_REUSE_MAX through our namespace
    assert fixup.db_reuse_max == settings.CELERY_DB_REUSE_MAX > 1
    connection.ensure_connection()
    before = connection.connection
    fixup.on_task_prerun(sender=task_queue.registered_task(task_queue.DELIVER))  # what runs around every task
    fixup.on_task_postrun(sender=task_queue.registered_task(task_queue.DELIVER))
    assert connection.connection is before
