"""The batch sender (DELIVERY_ENGINE = "sender"): claims (oldest per recipient, none while one is sending, quota
deferral, SKIP LOCKED between two claimers), send → record through the real python-telegram-bot client against the
loopback fake Bot API, retries and permanent failures, order per recipient across batches, the sweeper returning a
killed sender's claims, PostgreSQL wake-ups, `manage.py runsender`, and the DELIVERY_ENGINE system check."""
import asyncio
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from connectors import services
from connectors.delivery import claims, sweeper
from connectors.delivery.sender import Sender
from connectors.models import Connector, Delivery, Event, InboundMessage
from connectors.platforms.telegram import client
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.deliveries import QuotaClock
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ANN, BOB, CAT = "5550100001", "5550100002", "5550100003"
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED and NOTIFY are PostgreSQL's")


@pytest.fixture(autouse=True)
def sender_engine(settings):
    settings.DELIVERY_ENGINE = "sender"


@pytest.fixture
def fake():
    server = FakeTelegram().start()
    yield server
    server.stop()


@pytest.fixture
def telegram(make_connector, fake):
    def make(id="tg_sender", **kwargs):
        make_connector(id, kind="telegram", config={"mode": "polling", "api_base_url": fake.url},
                       credentials={"bot_token": TOKEN}, **kwargs)
        return Connector.objects.get(pk=id)

    return make


def queue(connector_id, recipient, content):
    delivery, _ = services.send_message(SYSTEM, connector_id, recipient, content)
    return delivery.pk


def drain(**kwargs):
    """Run a sender until nothing is due; returns its stats."""
    return asyncio.run(Sender(poll_seconds=0.05, **kwargs).run(until_idle=True))


def statuses(*ids):
    found = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "status"))
    return [found[pk] for pk in ids]


def audit_actions(delivery_id):
    return list(
        AuditEvent.objects.filter(details__delivery_id=str(delivery_id)).order_by("id").values_list("action", flat=True)
    )


# --- claims ------------------------------------------------------------------------------------------------


def test_send_message_enqueues_nothing_and_the_claim_takes_the_oldest_per_recipient(make_connector):
    make_connector("claims_one")
    ann = [queue("claims_one", "ann", f"ann {i}") for i in range(3)]
    bob = queue("claims_one", "bob", "bob 0")
    assert statuses(*ann, bob) == ["queued"] * 4  # no task ran: the sender engine sends

    claimed = claims.claim_batch()
    assert [claim.delivery.pk for claim in claimed] == [ann[0], bob]
    assert statuses(*ann, bob) == ["sending", "queued", "queued", "sending"]
    assert Delivery.objects.get(pk=ann[0]).attempts == 1
    assert claimed[0].message.content == "ann 0"
    # ann has one in flight, bob none left: nothing is due until they settle.
    assert claims.claim_batch() == []


def test_claim_leaves_rows_not_due_and_stopped_connectors(make_connector):
    make_connector("claims_later")
    later = queue("claims_later", "ann", "a message for later")
    Delivery.objects.filter(pk=later).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    make_connector("claims_stopped")
    stopped = queue("claims_stopped", "bob", "a message that waits")
    services.stop_connector(SYSTEM, "claims_stopped")
    assert claims.claim_batch() == []
    assert statuses(later, stopped) == ["queued", "queued"]


def test_claim_over_quota_delays_and_never_drops(make_connector):
    make_connector("claims_quota", quota_per_minute=2)
    ids = [queue("claims_quota", f"person{i}", f"m{i}") for i in range(3)]
    claimed = claims.claim_batch()
    assert [claim.delivery.pk for claim in claimed] == ids[:2]
    held = Delivery.objects.get(pk=ids[2])
    assert held.status == "queued" and held.attempts == 0
    assert 0 < (held.next_attempt_at - timezone.now()).total_seconds() <= 31


def test_a_message_held_by_the_quota_is_sent_once_the_quota_frees_up(telegram, fake, monkeypatch):
    clock = QuotaClock(monkeypatch)
    telegram("tg_quota", quota_per_minute=2)  # one token every 30 s
    ids = [queue("tg_quota", chat, f"quota {i}") for i, chat in enumerate((ANN, BOB, CAT))]
    drain()
    assert statuses(*ids) == ["sent", "sent", "queued"]
    drain()  # the same minute: still held, not dropped and not sent
    assert sorted(m["text"] for m in fake.sent) == ["quota 0", "quota 1"]  # two chats: sent side by side
    held = Delivery.objects.get(pk=ids[2])
    assert held.attempts == 0 and held.next_attempt_at > timezone.now()

    clock.elapse(30)
    drain()
    assert statuses(*ids) == ["sent"] * 3
    drain()
    assert [(m["chat_id"], m["text"]) for m in fake.sent if m["chat_id"] == CAT] == [(CAT, "quota 2")]  # exactly once
    assert len(fake.sent) == 3
    assert Delivery.objects.get(pk=ids[2]).attempts == 1
    assert audit_actions(ids[2]) == ["message.queued", "message.sent"]


@postgres_only
def test_two_concurrent_claimers_take_disjoint_batches_in_order(make_connector):
    make_connector("claims_race")
    first_per_person = [queue("claims_race", f"person{i}", f"first {i}") for i in range(40)]
    for i in range(40):
        queue("claims_race", f"person{i}", f"second {i}")

    results, errors = run_at_once(lambda _: [claim.delivery.pk for claim in claims.claim_batch(limit=25)], 2)
    assert not errors
    first, second = results
    assert not set(first) & set(second)  # never the same delivery twice
    taken = set(first) | set(second)
    assert taken <= set(first_per_person)  # and only the oldest per person: no "second" while its "first" waits
    assert len(taken) == 40  # SKIP LOCKED: the second claimer took what the first had not locked


# --- send and record ----------------------------------------------------------------------------------------


def test_a_batch_is_sent_through_the_real_client_and_recorded(telegram, fake, monkeypatch):
    telegram()
    opened = []
    session_class = client.BotSession

    class CountedSession(session_class):
        def __init__(self, *args, **kwargs):
            opened.append(kwargs.get("pool_size"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(client, "BotSession", CountedSession)
    ids = [queue("tg_sender", ANN if i % 2 else BOB, f"hello {i}") for i in range(6)]
    stats = drain()

    assert statuses(*ids) == ["sent"] * 6
    assert stats.sent == 6 and stats.batches >= 3  # two people, three messages each: one per person per batch
    assert [(m["chat_id"], m["text"]) for m in fake.sent if m["chat_id"] == ANN] == [
        (ANN, "hello 1"), (ANN, "hello 3"), (ANN, "hello 5")
    ]
    rows = Delivery.objects.in_bulk(ids)
    assert {rows[pk].platform_message_id for pk in ids} == {str(m["message_id"]) for m in fake.sent}
    assert all(rows[pk].sent_at and rows[pk].attempts == 1 for pk in ids)
    assert audit_actions(ids[0]) == ["message.queued", "message.sent"]
    assert Event.objects.filter(type="connector.message.sent").count() == 6
    # One long-lived Bot for the connector across every batch, closed when the sender stopped.
    assert opened == [client.SENDER_POOL_SIZE]
    assert client._sender_sessions == {}


def test_transient_failures_retry_and_permanent_ones_fail(telegram, fake):
    telegram()
    fake.block_chat(BOB)
    fake.fail("flood", method="sendMessage", times=1)  # 429, retry after 7 s: the backoff is at least that
    retried = queue("tg_sender", ANN, "a retried message")
    drain()
    blocked = queue("tg_sender", BOB, "a message to a blocker")
    drain()

    row = Delivery.objects.get(pk=retried)
    assert row.status == "queued" and row.attempts == 1 and row.next_attempt_at > timezone.now()
    assert audit_actions(retried)[-1] == "message.retry"
    failed = Delivery.objects.get(pk=blocked)
    assert failed.status == "failed" and "blocked" in failed.last_error
    assert audit_actions(blocked)[-1] == "message.failed"
    assert Event.objects.filter(type="connector.message.failed", data__delivery_id=str(blocked)).exists()

    Delivery.objects.filter(pk=retried).update(next_attempt_at=timezone.now())  # the backoff elapsed
    drain()
    row.refresh_from_db()
    assert row.status == "sent" and row.attempts == 2


def test_out_of_attempts_is_dead(telegram, fake, settings):
    settings.DELIVERY_MAX_ATTEMPTS = 1
    telegram()
    fake.fail("server_error", method="sendMessage")
    dead = queue("tg_sender", ANN, "a message that dies")
    drain()
    assert Delivery.objects.get(pk=dead).status == "dead"


def test_an_invalid_token_stops_the_connector(telegram, fake):
    telegram()
    fake.fail("invalid_token", method="sendMessage")
    failed = queue("tg_sender", ANN, "a message with a bad token")
    drain()
    assert Delivery.objects.get(pk=failed).status == "failed"
    assert Connector.objects.get(pk="tg_sender").status == "ERROR"


def test_a_reply_is_threaded_under_the_message_it_answers(telegram, fake):
    connector = telegram()
    asked = [
        InboundMessage.objects.create(
            connector=connector, platform_message_id=f"ask-{n}", sender=ANN, content=f"a question {n}",
            metadata={"chat_id": int(ANN), "message_id": 40 + n}, received_at=timezone.now(),
        )
        for n in range(2)
    ]
    for inbound in asked:
        services.send_message(SYSTEM, "tg_sender", ANN, f"an answer to {inbound.platform_message_id}",
                              in_reply_to=inbound)
    drain()
    assert [(m["text"], (m["reply_parameters"] or {}).get("message_id")) for m in fake.sent] == [
        ("an answer to ask-0", 40), ("an answer to ask-1", 41)
    ]


def test_order_per_recipient_holds_across_batches_and_a_retry(telegram, fake):
    telegram()
    fake.fail("flood", method="sendMessage", times=1)  # 429, retry after 7 s: not due again within the drain
    ann = [queue("tg_sender", ANN, "ann 0")]
    drain(batch=3)  # ann's first message alone, so the failure is surely hers (a batch sends concurrently)
    assert statuses(*ann) == ["queued"]
    ann += [queue("tg_sender", ANN, f"ann {i}") for i in range(1, 4)]
    bob = [queue("tg_sender", BOB, f"bob {i}") for i in range(4)]
    drain(batch=3)
    # bob went on; ann's later messages wait behind her first, which waits for its retry.
    assert statuses(*bob) == ["sent"] * 4
    assert statuses(*ann) == ["queued"] * 4
    Delivery.objects.filter(pk=ann[0]).update(next_attempt_at=timezone.now())
    drain(batch=3)
    assert statuses(*ann) == ["sent"] * 4
    assert [m["text"] for m in fake.sent if m["chat_id"] == ANN] == [f"ann {i}" for i in range(4)]
    assert [m["text"] for m in fake.sent if m["chat_id"] == BOB] == [f"bob {i}" for i in range(4)]


def test_the_sweeper_returns_a_killed_senders_claims(telegram, fake, settings):
    telegram()
    lost = queue("tg_sender", ANN, "claimed, then the sender died")
    assert [claim.delivery.pk for claim in claims.claim_batch()] == [lost]  # and no send: the process was killed
    Delivery.objects.filter(pk=lost).update(
        updated_at=timezone.now() - timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT + 5)
    )
    assert sweeper.sweep()["deliveries_redriven"] == 1
    assert statuses(lost) == ["queued"]
    drain()
    row = Delivery.objects.get(pk=lost)
    assert row.status == "sent" and row.attempts == 2
    assert audit_actions(lost) == ["message.queued", "message.redrive", "message.sent"]


@postgres_only
def test_send_message_wakes_a_listening_sender(telegram, fake):
    telegram()
    sender = Sender(poll_seconds=30)  # so only a NOTIFY can wake it within the test
    thread = threading.Thread(target=lambda: asyncio.run(sender.run()))
    thread.start()
    try:
        for _ in range(100):  # until it is waiting (its first claim found nothing)
            if sender.stats.wakeups["notify"] or sender.stopping is not None and sender._listener.listening:
                break
            threading.Event().wait(0.05)
        woken = queue("tg_sender", ANN, "wake up")
        fake.wait_for_calls("sendMessage", timeout=20)
    finally:
        sender.stop()
        thread.join(40)
    assert not thread.is_alive()
    assert statuses(woken) == ["sent"]
    assert sender.stats.wakeups["notify"] >= 1


# --- the command and the check ------------------------------------------------------------------------------


def test_runsender_command_sends_until_idle(telegram, fake, capsys):
    telegram()
    ids = [queue("tg_sender", ANN if i % 2 else BOB, f"cmd {i}") for i in range(4)]
    call_command("runsender", "--until-idle", "--poll-seconds", "0.05", "--concurrency", "2")
    assert statuses(*ids) == ["sent"] * 4
    assert "4 sent" in capsys.readouterr().out


def test_a_bad_delivery_engine_fails_the_system_check(settings):
    settings.DELIVERY_ENGINE = "carrier-pigeon"
    with pytest.raises(SystemCheckError, match="connectors.E004"):
        call_command("check")


@postgres_only
def test_claims_lock_no_connector_row():
    """The claim's FOR UPDATE names only the delivery table (of=("self",)), and skips locked rows."""
    with transaction.atomic():
        sql = str(claims._due(timezone.now(), 5).query)
    assert sql.endswith('FOR UPDATE OF "connectors_delivery" SKIP LOCKED')
