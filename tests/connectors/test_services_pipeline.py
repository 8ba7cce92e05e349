"""Services below the edges: inbound dedupe, the delivery task's outcomes, heartbeats and leases."""
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import Conflict, NotFound
from connectors import services, task_queue
from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms import locmem
from connectors.platforms.base import IncomingMessage, MessageValidationError, OutgoingMessage
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.connectors.broken import CountingBrain


@pytest.fixture
def counting_brain(settings):
    settings.BRAIN_BACKEND = "tests.connectors.broken.CountingBrain"
    CountingBrain.calls.clear()
    yield CountingBrain.calls
    CountingBrain.calls.clear()


def incoming(msg_id="m-1", text="hello", sender="ada"):
    return IncomingMessage(sender=sender, content=text, platform_message_id=msg_id)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"content": ""}, "content"),
        ({"content": " \n "}, "content"),
        ({"content": "x" * 10_001}, "content"),
        ({"content": 5}, "content"),
        ({"recipient": ""}, "recipient"),
    ],
)
def test_outgoing_message_validation(kwargs, field):
    with pytest.raises(MessageValidationError) as caught:
        OutgoingMessage(**{"recipient": "r", "content": "ok", **kwargs})
    assert field in caught.value.errors


def test_content_of_exactly_10000_characters_is_accepted():
    assert len(OutgoingMessage(recipient="r", content="x" * 10_000).content) == 10_000


@pytest.mark.django_db(transaction=True)
def test_duplicate_inbound_is_stored_once_and_asks_brain_once(make_connector, counting_brain):
    make_connector("in_one")
    first, created = services.receive_message("in_one", incoming())
    again, created_again = services.receive_message("in_one", incoming())
    assert created and not created_again and first.pk == again.pk
    assert InboundMessage.objects.count() == 1
    assert len(counting_brain) == 1
    assert [m.content for _, m in locmem.outbox] == ["reply #1"]
    assert InboundMessage.objects.get().brain_status == "replied"
    outcome = AuditEvent.objects.get(action="brain.reply")
    assert outcome.result == "success" and outcome.details["outcome"] == "replied"


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_inbound_gives_one_row_and_one_brain_call(make_connector, counting_brain):
    make_connector("in_two")
    created_flags, errors = run_at_once(
        lambda i: services.receive_message("in_two", incoming("update-77"))[1], 6, timeout=30
    )
    assert errors == []
    assert sorted(created_flags) == [False] * 5 + [True]
    assert InboundMessage.objects.filter(platform_message_id="update-77").count() == 1
    assert len(counting_brain) == 1 and len(locmem.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_brain_gets_the_conversation_as_context(make_connector, counting_brain):
    make_connector("in_three")
    services.receive_message("in_three", incoming("a", "first"))
    services.receive_message("in_three", incoming("b", "second"))
    services.receive_message("in_three", incoming("c", "other person", sender="bob"))
    second = counting_brain[1]
    assert [(c["role"], c["content"]) for c in second.context] == [("user", "first"), ("assistant", "reply #1")]
    assert counting_brain[2].context == []  # bob's context holds nothing of ada's


@pytest.mark.django_db
def test_inbound_on_a_stopped_or_unknown_connector_is_refused(make_connector):
    make_connector("in_four", start=False)
    with pytest.raises(Conflict):
        services.receive_message("in_four", incoming())
    with pytest.raises(NotFound):
        services.receive_message("no_such", incoming())
    assert InboundMessage.objects.count() == 0
    assert AuditEvent.objects.filter(action="message.receive", result="failure").count() == 2


@pytest.mark.django_db(transaction=True)
def test_transient_failure_requeues_with_backoff_then_succeeds(make_connector):
    make_connector("out_one", config={"fail_with": "transient"})
    delivery, _ = services.send_message(SYSTEM, "out_one", "r", "try me")
    delivery.refresh_from_db()
    assert delivery.status == "queued" and delivery.attempts == 1
    assert delivery.next_attempt_at > timezone.now() - timedelta(seconds=1)
    assert "transient" in delivery.last_error

    services.update_connector(SYSTEM, "out_one", config={})  # the platform recovers
    services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 2 and delivery.last_error == ""
    assert [m.content for _, m in locmem.outbox] == ["try me"]
    actions = list(AuditEvent.objects.filter(target_id="out_one").values_list("action", "result"))
    assert ("message.retry", "failure") in actions and ("message.sent", "success") in actions


@pytest.mark.django_db(transaction=True)
def test_permanent_failure_stops_retrying(make_connector):
    make_connector("out_two", config={"fail_with": "permanent"})
    delivery, _ = services.send_message(SYSTEM, "out_two", "r", "no way")
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 1
    services.attempt_delivery(delivery.pk)  # a stray re-run changes nothing
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 1 and locmem.outbox == []


@pytest.mark.django_db(transaction=True)
def test_delivery_is_dead_after_max_attempts(make_connector, settings):
    settings.DELIVERY_MAX_ATTEMPTS = 3
    make_connector("out_three", config={"fail_with": "transient"})
    delivery, _ = services.send_message(SYSTEM, "out_three", "r", "doomed")
    for _ in range(5):
        services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "dead" and delivery.attempts == 3


def test_retry_delay_honours_retry_after_and_grows():
    assert services.retry_delay(1, retry_after=30) >= 30
    assert all(0 <= services.retry_delay(n) <= 900 for n in range(1, 20))
    assert max(services.retry_delay(10) for _ in range(50)) > 2  # later attempts wait longer


@pytest.mark.django_db(transaction=True)
def test_queued_delivery_waits_while_the_connector_is_stopped(make_connector):
    make_connector("out_four")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_queue, "enqueue_delivery", lambda *a, **k: None)  # the broker lost the task
        delivery, _ = services.send_message(SYSTEM, "out_four", "r", "later")
    services.stop_connector(SYSTEM, "out_four")
    services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "queued" and delivery.attempts == 0 and "STOPPED" in delivery.last_error
    services.start_connector(SYSTEM, "out_four")
    services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "sent" and [m.content for _, m in locmem.outbox] == ["later"]


@pytest.mark.django_db
def test_heartbeat_and_lease(make_connector):
    make_connector("lease_one")
    first = services.heartbeat(SYSTEM, "lease_one", lease_owner="host-a:1", lease_seconds=60)
    assert first.lease_owner == "host-a:1" and first.last_heartbeat is not None
    with pytest.raises(Conflict) as caught:
        services.heartbeat(SYSTEM, "lease_one", lease_owner="host-b:2")
    assert caught.value.code == "lease_held"
    services.heartbeat(SYSTEM, "lease_one", lease_owner="host-a:1")  # the owner renews

    Connector.objects.filter(pk="lease_one").update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    taken = services.heartbeat(SYSTEM, "lease_one", lease_owner="host-b:2")
    assert taken.lease_owner == "host-b:2"
    assert AuditEvent.objects.filter(action="connector.heartbeat", result="failure").count() == 1


@pytest.mark.django_db
def test_delivery_rows_keep_content_encrypted(make_connector):
    make_connector("enc_one", start=True)
    services.send_message(SYSTEM, "enc_one", "r", "canary-delivery-7731")
    with connection.cursor() as cursor:
        cursor.execute("SELECT content FROM connectors_delivery")
        (raw,) = cursor.fetchone()
    assert "canary-delivery-7731" not in raw
    assert Delivery.objects.get().content == "canary-delivery-7731"
