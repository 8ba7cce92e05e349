"""The delivery pipeline's guarantees: quotas delay and never drop, order per recipient, and the
sweeper re-drives whatever the broker lost."""
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from connectors import quotas, services, task_queue
from connectors.delivery import attempts
from connectors.models import Delivery, InboundMessage
from connectors.platforms import locmem
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.deliveries import QuotaClock


@pytest.fixture(params=["database", "redis"])
def quota_store(request, settings):
    """Run a test against both bucket stores."""
    if request.param == "redis":
        import os

        url = os.environ.get("REDIS_URL")
        if not url:
            pytest.skip("needs Redis: REDIS_URL is not set")
        settings.REDIS_URL = url
    else:
        settings.REDIS_URL = ""
    quotas._redis_client = None
    yield request.param
    quotas._redis_client = None


@pytest.mark.django_db
def test_bucket_refills_over_time(quota_store):
    key = [("bucket:refill", 2)]  # 2 per minute: one token every 30 s
    assert quotas.take(key, now=1000.0) == 0
    assert quotas.take(key, now=1000.0) == 0
    assert quotas.take(key, now=1000.0) == pytest.approx(30.0, abs=0.01)
    assert quotas.take(key, now=1015.0) == pytest.approx(15.0, abs=0.01)
    assert quotas.take(key, now=1030.5) == 0


@pytest.mark.django_db
def test_level_reads_a_bucket_without_taking(quota_store):
    assert quotas.level("bucket:peek", 6, now=500.0) == 6  # never used: full
    quotas.take([("bucket:peek", 6)], now=500.0)
    quotas.take([("bucket:peek", 6)], now=500.0)
    assert quotas.level("bucket:peek", 6, now=500.0) == pytest.approx(4.0)
    assert quotas.level("bucket:peek", 6, now=500.0) == pytest.approx(4.0)  # reading took nothing
    assert quotas.level("bucket:peek", 6, now=510.0) == pytest.approx(5.0)  # one token per 10 s
    assert quotas.level("bucket:peek", 6, now=900.0) == 6  # never above capacity


@pytest.mark.django_db
def test_all_or_nothing_across_buckets(quota_store):
    assert quotas.take([("b:wide", 10), ("b:narrow", 1)], now=50.0) == 0
    # narrow is empty: nothing may be taken from wide either
    assert quotas.take([("b:wide", 10), ("b:narrow", 1)], now=50.0) > 0
    for _ in range(9):
        assert quotas.take([("b:wide", 10)], now=50.0) == 0
    assert quotas.take([("b:wide", 10)], now=50.0) > 0


@pytest.mark.django_db(transaction=True)
def test_quota_holds_under_concurrent_workers(quota_store):
    def take_five(i):
        return sum(1 for _ in range(5) if quotas.take([("b:shared", 12)], now=500.0) == 0)

    counts, errors = run_at_once(take_five, 8, timeout=30)
    assert errors == []
    assert sum(counts) == 12  # 40 attempts, exactly one bucket's worth granted


@pytest.mark.django_db(transaction=True)
def test_over_quota_delays_and_never_drops(make_connector, monkeypatch, settings):
    settings.DELIVERY_SWEEP_GRACE = 0
    clock = QuotaClock(monkeypatch)
    make_connector("quota_one", quota_per_minute=1)
    first, _ = services.send_message(SYSTEM, "quota_one", "a", "first")
    second, _ = services.send_message(SYSTEM, "quota_one", "b", "second")
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "sent"
    assert second.status == "queued" and second.attempts == 0
    assert 50 < (second.next_attempt_at - timezone.now()).total_seconds() <= 61
    assert [m.content for _, m in locmem.outbox] == ["first"]

    services.sweep()  # not due yet: the sweeper leaves it waiting
    assert [m.content for _, m in locmem.outbox] == ["first"]
    clock.elapse(61)  # the bucket holds a token again, and the delay is over
    assert services.sweep()["deliveries_due"] == 1
    second.refresh_from_db()
    assert second.status == "sent" and second.attempts == 1 and second.sent_at is not None
    assert [(m.recipient, m.content) for _, m in locmem.outbox] == [("a", "first"), ("b", "second")]
    assert services.sweep()["deliveries_due"] == 0  # sent once: nothing left to re-drive
    assert [m.content for _, m in locmem.outbox] == ["first", "second"]


@pytest.mark.django_db(transaction=True)
def test_per_recipient_quota_does_not_hold_back_others(make_connector):
    make_connector("quota_two", recipient_quota_per_minute=1)
    services.send_message(SYSTEM, "quota_two", "ann", "one")
    services.send_message(SYSTEM, "quota_two", "ann", "two")
    services.send_message(SYSTEM, "quota_two", "bob", "three")
    assert sorted(m.content for _, m in locmem.outbox) == ["one", "three"]
    assert Delivery.objects.get(recipient="ann", status="queued")


@pytest.mark.django_db(transaction=True)
def test_backlog_drains_in_order_per_recipient_after_an_outage(make_connector):
    make_connector("order_one", config={"fail_with": "transient"})
    ids = [services.send_message(SYSTEM, "order_one", "ann", f"m{i}")[0].pk for i in range(4)]
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert [statuses[i] for i in ids] == ["queued"] * 4
    assert Delivery.objects.get(pk=ids[0]).attempts == 1
    assert all(Delivery.objects.get(pk=i).attempts == 0 for i in ids[1:])  # waiting behind m0, untried

    services.update_connector(SYSTEM, "order_one", config={})  # the provider is back
    services.attempt_delivery(ids[0])  # m0's retry; each success kicks the next in line
    assert [m.content for _, m in locmem.outbox] == ["m0", "m1", "m2", "m3"]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db(transaction=True)
def test_sweeper_redrives_lost_and_stuck_work(make_connector, settings):
    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("sweep_one")
    # A task the broker lost: the row is queued and nobody will run it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_queue, "enqueue_delivery", lambda *a, **k: None)
        lost, _ = services.send_message(SYSTEM, "sweep_one", "ann", "lost task")
    # A worker that died mid-send.
    stuck, _ = services.send_message(SYSTEM, "sweep_one", "bob", "stuck")
    Delivery.objects.filter(pk=stuck.pk).update(
        status="sending", updated_at=timezone.now() - timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT + 5)
    )
    locmem.outbox.clear()

    counts = services.sweep()
    assert counts["deliveries_due"] == 1 and counts["deliveries_redriven"] == 1
    assert sorted(m.content for _, m in locmem.outbox) == ["lost task", "stuck"]
    assert AuditEvent.objects.filter(action="message.redrive").count() == 1
    assert services.sweep() == {"deliveries_due": 0, "deliveries_redriven": 0, "inbound_redriven": 0,
                               "uploads_expired": 0}


@pytest.mark.django_db(transaction=True)
def test_sweeper_asks_brain_for_inbound_whose_task_was_lost(make_connector, settings):
    from connectors.platforms.base import IncomingMessage

    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("sweep_two")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_queue, "enqueue_brain", lambda *a, **k: None)
        services.receive_message("sweep_two", IncomingMessage(sender="ann", content="hi", platform_message_id="x1"))
    assert InboundMessage.objects.get().brain_status == "pending" and locmem.outbox == []
    assert services.sweep()["inbound_redriven"] == 1
    assert InboundMessage.objects.get().brain_status == "replied"
    assert [m.recipient for _, m in locmem.outbox] == ["ann"]


@pytest.mark.django_db
def test_rest_client_over_its_quota_gets_429_with_retry_after(settings, make_user, token_for, api):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    client = api(token_for(make_user("busy")))
    assert client.get("/api/v1/connectors/").status_code == 200
    assert client.get("/api/v1/connectors/").status_code == 200
    r = client.get("/api/v1/connectors/")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"


@pytest.mark.django_db(transaction=True)
def test_sweeper_reclaims_a_brain_call_whose_worker_died(make_connector, settings):
    from connectors.platforms.base import IncomingMessage

    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("sweep_three")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_queue, "enqueue_brain", lambda *a, **k: None)
        services.receive_message("sweep_three", IncomingMessage(sender="ann", content="hi", platform_message_id="x2"))
    # A worker claimed it and died before BRAIN answered.
    InboundMessage.objects.update(
        brain_status="thinking", brain_claimed_at=timezone.now() - timedelta(seconds=settings.BRAIN_CLAIM_TIMEOUT + 5)
    )
    assert services.sweep()["inbound_redriven"] == 1
    assert InboundMessage.objects.get().brain_status == "replied"
    assert AuditEvent.objects.get(action="brain.redrive").details["count"] == 1
    assert [m.recipient for _, m in locmem.outbox] == ["ann"]


@pytest.mark.django_db(transaction=True)
def test_a_reclaimed_brain_call_whose_reply_was_queued_does_not_ask_brain_again(make_connector, settings):
    """The worker (or the database) went away after the reply was queued, before the status was
    saved. The re-drive must finish the message without asking BRAIN again: a second answer can
    differ, and the reply's idempotency key then refuses it and marks the message failed (found by
    bench/chaos.py)."""
    from connectors.platforms.base import IncomingMessage

    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("sweep_four")
    asked = []

    class ChangingBrain:  # a real BRAIN need not answer the same question the same way twice
        def reply(self, request):
            asked.append(request.content)
            return f"answer {len(asked)}"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_queue, "enqueue_brain", lambda *a, **k: None)
        inbound, _ = services.receive_message(
            "sweep_four", IncomingMessage(sender="ann", content="hi", platform_message_id="x3")
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("connectors.delivery.brain.get_brain", lambda: ChangingBrain())
        # The first run: claimed, asked BRAIN, queued the reply, and died before saving "replied".
        first = ChangingBrain().reply(type("Request", (), {"content": "hi"}))
        services.send_message(services.BRAIN, "sweep_four", "ann", first, idempotency_key=f"reply:{inbound.pk}",
                              in_reply_to=inbound)
        InboundMessage.objects.update(
            brain_status="thinking",
            brain_claimed_at=timezone.now() - timedelta(seconds=settings.BRAIN_CLAIM_TIMEOUT + 5),
        )
        assert services.sweep()["inbound_redriven"] == 1
    assert asked == ["hi"]
    assert InboundMessage.objects.get().brain_status == "replied"
    assert [m.content for _, m in locmem.outbox] == ["answer 1"]


@pytest.mark.django_db(transaction=True)
def test_a_sent_message_is_recorded_after_a_database_blip_and_never_sent_again(make_connector, settings):
    """The platform accepted the send, then the database went away for a moment: the worker waits
    for it and records `sent`, instead of leaving the row in `sending` for the sweeper to send
    again (outbound duplicates in bench/chaos.py at each PostgreSQL restart)."""
    from django.db import OperationalError

    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("blip_one")
    record_sent, failures = attempts.record_sent, []

    def database_down_once(*args):
        if not failures:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return record_sent(*args)

    settings.DELIVERY_SENDING_TIMEOUT = 4  # the worker's retries last half of it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attempts, "record_sent", database_down_once)
        delivery, _ = services.send_message(SYSTEM, "blip_one", "ann", "once only")
    assert failures == [1]
    assert Delivery.objects.get(pk=delivery.pk).status == "sent"
    settings.DELIVERY_SENDING_TIMEOUT = 0  # any row still `sending` would be re-driven now
    assert services.sweep()["deliveries_redriven"] == 0
    assert [m.content for _, m in locmem.outbox] == ["once only"]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_sweeper_re_enqueues_only_into_the_brokers_room_and_everything_after_a_flush(make_connector, settings):
    """While tasks wait in the broker, due rows are most likely among them: the sweeper tops the queue
    up to `limit` instead of adding `limit` more copies on every sweep (which, in the chaos run, grew
    a backlog faster than the workers drained it). After a flush the queue is empty: all re-driven."""
    import uuid

    from brain_connectors.celery import app
    from tests.worker import use_broker

    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("sweep_room")
    queue = f"test-sweep-{uuid.uuid4().hex[:8]}"
    restore = use_broker(queue)

    def purge():
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)

    try:
        for i in range(3):  # no worker consumes this queue: the three tasks stay waiting
            services.send_message(SYSTEM, "sweep_room", f"+1555000{i}", f"queued {i}")
        waiting = services.broker_backlog()  # the three deliveries' tasks, and their analysis tasks
        assert waiting >= 3
        Delivery.objects.update(updated_at=timezone.now() - timedelta(seconds=5))

        limit = waiting + 1
        assert services.sweep(limit=limit)["deliveries_due"] == 1  # room for one below the limit
        assert services.broker_backlog() == limit
        assert services.sweep(limit=limit)["deliveries_due"] == 0  # full: nothing added

        purge()  # the broker lost every task (a Redis flush)
        assert services.broker_backlog() == 0
        assert services.sweep(limit=limit)["deliveries_due"] == 3
        assert services.broker_backlog() == 3
    finally:
        purge()
        restore()


def test_without_a_broker_to_ask_the_sweeper_re_drives_everything_due(make_connector, settings):
    """Eager mode (the embedded default) has no queue to measure: every due row is re-driven."""
    settings.DELIVERY_SWEEP_GRACE = 0
    make_connector("sweep_eager")
    assert services.broker_backlog() is None
    Delivery.objects.bulk_create(
        [Delivery(connector_id="sweep_eager", recipient=f"r{i}", content="x", status="queued") for i in range(3)]
    )
    Delivery.objects.update(updated_at=timezone.now() - timedelta(seconds=5))
    assert services.sweep(limit=2)["deliveries_due"] == 2


@pytest.mark.django_db(transaction=True)
def test_the_embedded_scheduler_sends_a_delivery_when_it_comes_due_without_waiting_for_the_sweep(make_connector):
    """Eager Celery cannot wait out a retry's or a quota wait's countdown: runscheduler's every-second
    send-due-deliveries gives a queued row its task once next_attempt_at has passed, and not before."""
    from brain_connectors import scheduler

    make_connector("due_soon")
    with pytest.MonkeyPatch.context() as mp:  # both wait, queued: a retry and a quota-delayed send
        mp.setattr(task_queue, "enqueue_delivery", lambda *a, **k: None)
        due, _ = services.send_message(SYSTEM, "due_soon", "ann", "due now")
        later, _ = services.send_message(SYSTEM, "due_soon", "bob", "due in a minute")
    now = timezone.now()
    Delivery.objects.filter(pk=due.pk).update(next_attempt_at=now - timedelta(seconds=1))
    Delivery.objects.filter(pk=later.pk).update(next_attempt_at=now + timedelta(seconds=60))
    locmem.outbox.clear()
    entry = next(e for e in scheduler.entries() if e.name == "send-due-deliveries")
    assert entry.interval == 1.0

    scheduler.run_entry(entry)
    assert [m.content for _, m in locmem.outbox] == ["due now"]
    assert Delivery.objects.get(pk=due.pk).status == "sent"
    assert (Delivery.objects.get(pk=later.pk).status, Delivery.objects.get(pk=later.pk).attempts) == ("queued", 0)
