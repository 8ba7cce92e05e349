"""Conversation memory after commit: a marker in the hot transaction, messages stored in batches by a
consumer (conversations.recording), and readers that never miss a message still pending."""
import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from connectors import services
from connectors.models import InboundMessage
from connectors.platforms.base import IncomingMessage
from conversations import recording
from conversations.models import Conversation, Message, MessageAnalysis, PendingMessage, SearchToken
from conversations.recording import record_pending
from conversations.services import context_for_address, get_context
from routing import identities
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.connectors.broken import CountingBrain


def receive(connector_id, text, msg_id, sender="ada"):
    return services.receive_message(connector_id, IncomingMessage(sender=sender, content=text, platform_message_id=msg_id))[0]


def memory(address="ada"):
    return list(Message.objects.filter(conversation__address=address).order_by("created_at", "id")
                .values_list("role", "content"))


@pytest.fixture
def counting_brain(settings):
    settings.BRAIN_BACKEND = "tests.connectors.broken.CountingBrain"
    CountingBrain.calls.clear()
    yield CountingBrain.calls
    CountingBrain.calls.clear()


# --- the hot transaction ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_receiving_writes_one_marker_and_no_memory_in_its_transaction(make_connector):
    """The hot transaction inserts a marker only: no identity lookup, no conversation, no message,
    no index rows."""
    make_connector("mk_a")
    with CaptureQueriesContext(connection) as queries:
        receive("mk_a", "hello marker", "a1")
        services.send_message(SYSTEM, "mk_a", "ada", "an operator note")
    memory_tables = ("routing_channelidentity", "conversations_conversation", "conversations_message",
                     "conversations_searchtoken", "conversations_messageanalysis")
    assert not [q["sql"] for q in queries.captured_queries if any(t in q["sql"] for t in memory_tables)]
    markers = list(PendingMessage.objects.order_by("id"))
    assert [(m.direction, m.address, m.content) for m in markers] == [
        ("inbound", "ada", "hello marker"), ("outbound", "ada", "an operator note"),
    ]
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_the_marker_rolls_back_with_its_message(make_connector):
    make_connector("mk_rb")

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        receive("mk_rb", "never happened", "rb1")
        services.send_message(SYSTEM, "mk_rb", "ada", "never sent")
        raise Abort
    assert not PendingMessage.objects.exists() and not InboundMessage.objects.exists()
    assert record_pending() == 0 and not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_after_commit_the_kick_stores_the_message(make_connector):
    """Eager mode (tests, `make run`): the kick consumes inline once the transaction commits."""
    make_connector("mk_k")
    receive("mk_k", "kicked in", "k1")
    assert memory()[0] == ("user", "kicked in")  # then BRAIN's echo, stored the same way
    assert not PendingMessage.objects.exists()


# --- the consumer --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_consumer_stores_batches_in_time_order_with_index_and_analysis(make_connector, make_user):
    make_connector("mk_b")
    ada = make_user("ada")
    identities.add_identity(SYSTEM, ada, "mk_b", "ada")
    for i in range(4):
        receive("mk_b", f"lovely message {i}", f"b{i}")
        services.send_message(services.BRAIN, "mk_b", "ada", f"wonderful answer {i}")
    receive("mk_b", "from bob", "bob1", sender="bob")
    assert PendingMessage.objects.count() == 9

    assert record_pending(batch_size=4) == 9  # three batches: 4, 4, 1

    assert not PendingMessage.objects.exists()
    assert memory() == [item for i in range(4) for item in
                        (("user", f"lovely message {i}"), ("assistant", f"wonderful answer {i}"))]
    assert memory("bob") == [("user", "from bob")]
    conversation = Conversation.objects.get(address="ada")
    assert conversation.person == ada
    assert conversation.last_message_at == conversation.messages.order_by("-created_at").first().created_at
    assert SearchToken.objects.filter(message__conversation=conversation).exists()
    analyses = MessageAnalysis.objects.filter(message__conversation=conversation)
    assert analyses.count() == 8 and all(a.sentiment > 0 for a in analyses)  # "lovely", "wonderful"


@pytest.mark.django_db
def test_a_marker_whose_message_is_stored_already_is_consumed_without_a_second_copy(make_connector):
    make_connector("mk_i")
    inbound = receive("mk_i", "only once", "i1")
    [marker] = PendingMessage.objects.all()
    record_pending()
    # The same marker again, as a redone batch would find it.
    marker.pk = None
    marker.save()
    assert record_pending() == 1
    assert memory() == [("user", "only once")]
    assert Message.objects.get().inbound_id == inbound.pk and not PendingMessage.objects.exists()


@pytest.mark.django_db
def test_a_crash_between_batches_leaves_the_rest_pending_and_a_rerun_finishes(make_connector, monkeypatch):
    make_connector("mk_c")
    for i in range(5):
        receive("mk_c", f"message {i}", f"c{i}")
    store = recording.store_markers
    calls = []

    def crash_on_second_batch(markers):
        calls.append(len(markers))
        if len(calls) == 2:
            store(markers)  # written, then the process dies before the batch commits
            raise RuntimeError("worker killed")
        return store(markers)

    monkeypatch.setattr(recording, "store_markers", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        record_pending(batch_size=2)
    assert memory() == [("user", "message 0"), ("user", "message 1")]  # the second batch rolled back whole
    assert PendingMessage.objects.count() == 3

    monkeypatch.setattr(recording, "store_markers", store)
    assert record_pending(batch_size=2) == 3
    assert memory() == [("user", f"message {i}") for i in range(5)]
    assert not PendingMessage.objects.exists()


@pytest.mark.django_db
def test_a_message_the_analysers_choke_on_is_stored_without_analysis(make_connector, monkeypatch):
    make_connector("mk_an")
    receive("mk_an", "fine text", "an1")
    monkeypatch.setattr("conversations.analysis.topics", lambda text: 1 / 0)
    assert record_pending() == 1
    assert memory() == [("user", "fine text")] and not MessageAnalysis.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_consumers_take_disjoint_markers(make_connector, monkeypatch):
    """SKIP LOCKED: a consumer passes over markers another one holds, instead of waiting or
    storing them twice."""
    make_connector("mk_s")
    # Neither the memory kick nor BRAIN (whose context would store them) runs: the markers stay.
    monkeypatch.setattr(recording, "kick", lambda: None)
    monkeypatch.setattr("connectors.task_queue.enqueue_brain", lambda inbound_id: None)
    for i in range(6):
        receive("mk_s", f"message {i}", f"s{i}")
    assert PendingMessage.objects.count() == 6
    held, release, done = threading.Event(), threading.Event(), []

    def holder():
        try:
            with transaction.atomic():
                done.extend(m.pk for m in PendingMessage.objects.order_by("at", "id").select_for_update()[:2])
                held.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    try:
        assert record_pending(batch_size=10) == 4  # the 4 not held, at once, without waiting
        assert sorted(PendingMessage.objects.values_list("pk", flat=True)) == sorted(done)
    finally:
        release.set()
        thread.join(30)
    assert record_pending() == 2
    assert memory() == [("user", f"message {i}") for i in range(6)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_consumers_at_once_store_every_message_once(make_connector, monkeypatch):
    make_connector("mk_two")
    monkeypatch.setattr(recording, "kick", lambda: None)
    monkeypatch.setattr("connectors.task_queue.enqueue_brain", lambda inbound_id: None)
    for i in range(20):
        receive("mk_two", f"message {i}", f"two{i}", sender=f"p{i % 4}")

    counts, errors = run_at_once(lambda i: record_pending(batch_size=3), 2)

    assert errors == [] and sum(counts) == 20
    assert Message.objects.count() == 20 and Conversation.objects.count() == 4
    assert not PendingMessage.objects.exists()


# --- readers consume first ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_brain_gets_the_message_before_while_markers_are_still_pending(make_connector, counting_brain):
    """BRAIN's reply task reads the context from memory, with the earlier message and the one it
    answers still markers (in this one-transaction test no kick ever runs)."""
    make_connector("mk_ctx")
    receive("mk_ctx", "my name is ada", "x1")
    services.send_message(SYSTEM, "mk_ctx", "ada", "an operator note")
    second = receive("mk_ctx", "what is my name?", "x2")
    assert PendingMessage.objects.count() == 3 and not Message.objects.exists()

    services.reply_with_brain(second.pk)

    [request] = counting_brain
    assert request.content == "what is my name?"
    # From memory ("system": the connectors' fallback view would call the note "assistant").
    assert [(c["role"], c["content"]) for c in request.context] == [
        ("user", "my name is ada"), ("system", "an operator note"),
    ]
    assert memory() == [("user", "my name is ada"), ("system", "an operator note"), ("user", "what is my name?")]
    # Only BRAIN's reply, queued after the context was read, is still a marker.
    assert list(PendingMessage.objects.values_list("direction", "content")) == [("outbound", "reply #1")]


@pytest.mark.django_db
def test_context_and_get_context_include_pending_messages(make_connector):
    make_connector("mk_g")
    receive("mk_g", "pending one", "g1")
    assert [c["content"] for c in context_for_address(SYSTEM, "mk_g", "ada")] == ["pending one"]
    receive("mk_g", "pending two", "g2")
    conversation = Conversation.objects.get()
    assert [c["content"] for c in get_context(conversation)] == ["pending one", "pending two"]


@pytest.mark.django_db
def test_the_kick_is_debounced_per_process(monkeypatch):
    monkeypatch.setattr(recording, "_kick_planned_at", float("-inf"))
    assert recording._kick_countdown(100.0, 0.25) == 0.0  # nothing outstanding: now
    assert recording._kick_countdown(100.1, 0.25) == pytest.approx(0.15)  # one more, after the interval
    assert recording._kick_countdown(100.2, 0.25) is None  # that one runs later: it covers this commit
    assert recording._kick_countdown(100.4, 0.25) == pytest.approx(0.1)
    assert recording._kick_countdown(101.0, 0.25) == 0.0
