"""The whole inbound → BRAIN → reply path through services, with HttpBrain against the loopback fake BRAIN."""

import pytest

from audit.models import AuditEvent
from brain_connectors.shared.errors import Conflict
from connectors import services
from connectors.delivery.attempts import attempt_delivery
from connectors.delivery.brain import EchoBrain, HttpBrain, get_brain
from connectors.models import Delivery, InboundMessage
from connectors.platforms import locmem
from connectors.platforms.base import ConnectorError, IncomingMessage
from tests.conftest import SYSTEM
from tests.connectors import brain_support

fake_brain = brain_support.fake_brain
http_brain_settings = brain_support.http_brain_settings


# --- end to end through services -------------------------------------------------------------


def _incoming(text, n, sender="+15550001"):
    return IncomingMessage(sender=sender, content=text, platform_message_id=f"p-{n}", sender_name="Ada")


@pytest.mark.django_db
def test_inbound_messages_reach_the_brain_with_context_and_replies_are_delivered(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        first, created = services.receive_message("locmem_main", _incoming("first question", 1))
    assert created
    with django_capture_on_commit_callbacks(execute=True):
        second, _ = services.receive_message("locmem_main", _incoming("second question", 2))

    assert [r.accepted for r in fake_brain.requests] == [True, True]
    one, two = (r.json for r in fake_brain.requests)
    assert one["connector"] == {"id": "locmem_main", "kind": "locmem"}
    assert one["message"] == {"id": "p-1", "sender": "+15550001", "sender_name": "Ada", "content": "first question",
                              "attachments": []}
    assert one["context"] == []
    assert two["message"]["content"] == "second question"
    assert [(c["role"], c["content"]) for c in two["context"]] == [
        ("user", "first question"),
        ("assistant", "fake brain got: first question with 0 context"),
    ]
    assert all(c["time"] for c in two["context"])

    assert [(cid, m.recipient, m.content) for cid, m in locmem.outbox] == [
        ("locmem_main", "+15550001", "fake brain got: first question with 0 context"),
        ("locmem_main", "+15550001", "fake brain got: second question with 2 context"),
    ]
    for inbound in (first, second):
        inbound.refresh_from_db()
        assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
        delivery = Delivery.objects.get(in_reply_to=inbound)
        assert delivery.status == "sent"  # locmem has no receipts: sent is as far as it goes
        assert delivery.recipient == "+15550001"


@pytest.mark.django_db
def test_a_duplicate_inbound_message_asks_the_brain_once(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming("once", 1))
    with django_capture_on_commit_callbacks(execute=True):
        _, created = services.receive_message("locmem_main", _incoming("once", 1))
    assert created is False
    assert len(fake_brain.requests) == 1
    assert len(locmem.outbox) == 1


@pytest.mark.django_db
def test_another_senders_history_is_not_context(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming("from ada", 1, sender="ada"))
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming("from bob", 2, sender="bob"))
    assert fake_brain.requests[1].json["context"] == []
    assert locmem.outbox[1][1].content == "fake brain got: from bob with 0 context"


@pytest.mark.django_db
def test_no_reply_from_the_brain_sends_nothing(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    fake_brain.set_mode("no_reply")
    with django_capture_on_commit_callbacks(execute=True):
        inbound, _ = services.receive_message("locmem_main", _incoming("hello?", 1))
    inbound.refresh_from_db()
    assert len(fake_brain.requests) == 1
    assert inbound.brain_status == InboundMessage.BrainStatus.NO_REPLY
    assert locmem.outbox == [] and not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_brain_that_is_down_leaves_the_message_failed_and_audited(http_brain_settings, fake_brain, make_connector):
    make_connector()
    fake_brain.down()
    inbound, created = services.receive_message("locmem_main", _incoming("anyone there?", 1))
    assert created

    inbound.refresh_from_db()
    assert inbound.content == "anyone there?"  # the message itself is kept
    assert inbound.brain_status == InboundMessage.BrainStatus.FAILED
    assert "unreachable" in inbound.brain_error
    event = AuditEvent.objects.get(action="brain.reply")
    assert event.result == AuditEvent.Result.FAILURE
    assert event.target_id == "locmem_main"
    assert event.details["error"] == "brain_unreachable"
    assert event.details["inbound_id"] == inbound.pk
    assert AuditEvent.objects.filter(action="message.received", result="success").count() == 1
    assert not Delivery.objects.exists()
    assert locmem.outbox == []
    assert fake_brain.requests == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode,code", [("error_500", "brain_unavailable"), ("garbage", "brain_bad_response")])
def test_a_failing_brain_is_recorded_with_its_code(http_brain_settings, fake_brain, make_connector, mode, code):
    make_connector()
    fake_brain.set_mode(mode)
    inbound, _ = services.receive_message("locmem_main", _incoming("hi", 1))
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.FAILED
    assert AuditEvent.objects.get(action="brain.reply").details["error"] == code
    assert not Delivery.objects.exists() and locmem.outbox == []
    # Retries are bounded by BRAIN_MAX_RETRIES (1): two attempts for a 500, one for garbage.
    assert len(fake_brain.requests) == (2 if mode == "error_500" else 1)


@pytest.mark.parametrize(
    "written_before_the_move, backend_class",
    [("connectors.brain.EchoBrain", EchoBrain), ("connectors.brain.HttpBrain", HttpBrain)],
)
def test_backend_paths_written_before_the_backends_moved_still_load(settings, written_before_the_move, backend_class):
    settings.BRAIN_BACKEND = written_before_the_move
    settings.BRAIN_URL = "http://127.0.0.1:9/brain"
    assert type(get_brain()) is backend_class


@pytest.mark.django_db
def test_a_connector_in_error_keeps_inbound_messages_and_their_replies_wait_for_the_restart(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    """ERROR is reached by accident (a failed health check, a stale heartbeat): the platform's message is stored and
    BRAIN's reply waits queued, where the chaos run once saw 1,673 replies refused and their messages left failed."""
    make_connector()
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("No heartbeat", code="heartbeat_stale"))
    with django_capture_on_commit_callbacks(execute=True):
        inbound, created = services.receive_message("locmem_main", _incoming("while in error", 1))
    assert created
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED, inbound.brain_error
    reply = Delivery.objects.get(in_reply_to=inbound)
    assert reply.status == "queued" and locmem.outbox == []
    # A new request from a client is still refused: only work that already exists waits.
    with pytest.raises(Conflict) as refused:
        services.send_message(SYSTEM, "locmem_main", "+15550001", "a new notification")
    assert refused.value.code == "connector_not_running"

    services.start_connector(SYSTEM, "locmem_main")  # what the health round does once a check passes
    with django_capture_on_commit_callbacks(execute=True):
        attempt_delivery(reply.id)  # the sweeper's re-drive (or a sender's next claim)
    reply.refresh_from_db()
    assert reply.status == "sent"
    assert [(m.recipient, m.content) for _, m in locmem.outbox] == [
        ("+15550001", "fake brain got: while in error with 0 context")
    ]


@pytest.mark.django_db
def test_a_stopped_connector_still_refuses_inbound_messages(make_connector):
    make_connector()
    services.stop_connector(SYSTEM, "locmem_main")
    with pytest.raises(Conflict) as refused:
        services.receive_message("locmem_main", _incoming("after a stop", 1))
    assert refused.value.code == "connector_not_running"
    assert InboundMessage.objects.count() == 0
