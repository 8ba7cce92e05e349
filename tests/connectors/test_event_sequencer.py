"""The event log's seq without a global lock: publishers append unnumbered rows, the sequencer
numbers them after commit, and readers never see a hole or skip an event that commits late."""
import random
import threading
import time
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.utils import timezone

from connectors import tasks
from connectors.events import log as events
from connectors.events import sequencer, subscription_fanout
from connectors.events import subscriptions as subscription_service
from connectors.models import Event, EventDelivery, EventSubscription
from connectors.permissions import Principal
from tests.concurrency import backends_waiting_for_a_lock, wait_until

ON_POSTGRES_ONLY = "PostgreSQL only: SQLite numbers events inline under its database write lock"


def _advisory_locks_of(pid):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", [pid])
        return cursor.fetchone()[0]


@contextmanager
def open_publisher(type="connector.registered", connector_id="held"):
    """Another connection that publishes one event and keeps its transaction open until the
    block ends, then commits (running its on-commit work, the sequencer, as in production).
    Yields a dict with the event and the backend's pid."""
    state, ready, release, errors = {}, threading.Event(), threading.Event(), []

    def run():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    state["pid"] = cursor.fetchone()[0]
                state["event"] = events.publish(type, connector_id=connector_id, data={"held": True})
                ready.set()
                release.wait(30)
        except Exception as exc:  # reported by the caller
            errors.append(exc)
        finally:
            ready.set()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(30)
    assert errors == []
    try:
        yield state
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive()
    assert errors == []


def _publish_committed(connector_id, data=None):
    """Publish in a transaction of its own that must not wait for anybody (5 s at most)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '5s'")
        event = events.publish("connector.registered", connector_id=connector_id, data=data or {})
    event.refresh_from_db()
    return event


# --- both databases ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_events_without_a_seq_are_invisible_to_every_reader(make_user, token_for, api):
    with transaction.atomic():
        numbered = events.publish("connector.registered", connector_id="seen", data={})
    sequencer.sequence_pending()
    numbered.refresh_from_db()
    # What a publisher's commit leaves on PostgreSQL until the sequencer's pass.
    waiting = Event.objects.create(type="connector.registered", source="test", connector_id="unseen", time=timezone.now())
    assert waiting.seq is None

    assert [e.pk for e in events.read_after(None, 0)] == [numbered.pk]
    assert events.latest_seq() == numbered.seq and events.oldest_seq() == numbered.seq
    assert waiting.pk not in [e.pk for e in events.visible_query(None)]
    body = api(token_for(make_user("root", superuser=True))).get("/api/v1/events/").json()
    assert [e["connector"] for e in body["results"]] == ["seen"]


@pytest.mark.django_db
def test_one_transaction_registers_the_sequencer_once_and_its_events_are_numbered_in_order(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            published = [events.publish("connector.registered", connector_id=f"c{i}", data={}) for i in range(3)]
    sequencing = [c for c in callbacks if c is sequencer.sequence_pending]
    assert len(sequencing) == (0 if sequencer.numbers_inline() else 1)
    seqs = [Event.objects.get(pk=e.pk).seq for e in published]
    assert seqs == list(range(seqs[0], seqs[0] + 3))


# --- PostgreSQL: the sequencer -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_publish_takes_no_advisory_lock_and_does_not_wait_for_an_open_publisher():
    assert not sequencer.numbers_inline(), ON_POSTGRES_ONLY
    with open_publisher() as held:
        assert _advisory_locks_of(held["pid"]) == 0
        assert held["event"].seq is None
        mine = _publish_committed("mine")  # lock_timeout: it would fail if it had to wait
        assert mine.seq is not None
    held_event = Event.objects.get(pk=held["event"].pk)
    assert held_event.seq == mine.seq + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_committed_late_is_numbered_after_what_readers_saw_and_is_never_skipped():
    assert not sequencer.numbers_inline(), ON_POSTGRES_ONLY
    cursor = events.latest_seq()
    with open_publisher(connector_id="late") as held:
        early = [_publish_committed(f"early-{i}") for i in range(3)]
        seen = events.read_after(None, cursor)
        assert [e.pk for e in seen] == [e.pk for e in early]  # not the open transaction's event
        cursor = seen[-1].seq
    after = events.read_after(None, cursor)
    assert [e.pk for e in after] == [held["event"].pk]
    assert after[0].seq == cursor + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_get_a_gapless_duplicate_free_seq_and_a_reader_skips_nothing(caplog):
    assert not sequencer.numbers_inline(), ON_POSTGRES_ONLY
    start = events.latest_seq()
    writers, transactions_each = 6, 12
    published, errors, done = [], [], threading.Event()
    lock = threading.Lock()

    def publish_some(n):
        rng = random.Random(n)
        try:
            for t in range(transactions_each):
                with transaction.atomic():
                    batch = [
                        events.publish("connector.registered", connector_id=f"w{n}", data={"t": t, "i": i})
                        for i in range(rng.randint(1, 3))
                    ]
                    time.sleep(rng.random() / 200)  # commits land in a different order than inserts
                with lock:
                    published.extend(e.pk for e in batch)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    read = []

    def follow():
        """A reader going by `seq > cursor`, as the stream and the REST cursor do."""
        cursor = start
        try:
            while True:
                finished = done.is_set()
                rows = events.read_after(None, cursor, limit=1000)
                read.extend((e.seq, e.pk) for e in rows)
                if rows:
                    cursor = rows[-1].seq
                elif finished:
                    return
                time.sleep(0.005)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    reader = threading.Thread(target=follow)
    reader.start()
    threads = [threading.Thread(target=publish_some, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    reader.join(60)
    assert errors == []
    # Every pass succeeded: sequencers never raced each other into the unique index on seq.
    assert not [r for r in caplog.records if r.name == sequencer.__name__]

    numbered = dict(Event.objects.filter(pk__in=published).values_list("pk", "seq"))
    assert len(numbered) == len(published) and None not in numbered.values()
    assert sorted(numbered.values()) == list(range(start + 1, start + len(published) + 1))
    # The reader saw every event exactly once, in seq order: none committed "behind" its cursor.
    assert [seq for seq, _ in read] == list(range(start + 1, start + len(published) + 1))
    assert {pk for _, pk in read} == set(published)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_relay_numbers_and_pushes_events_a_dead_process_left_without_a_seq():
    assert not sequencer.numbers_inline(), ON_POSTGRES_ONLY
    before = _publish_committed("before")
    # Committed, but the process died before its after-commit sequencing: no callback ever runs.
    orphan = Event.objects.create(type="connector.registered", source="test", connector_id="orphan", time=timezone.now())
    assert events.read_after(None, before.seq) == []

    result = tasks.relay_events()  # the beat task

    assert result["sequenced"] == 1
    orphan.refresh_from_db()
    assert orphan.seq == before.seq + 1
    assert [e.pk for e in events.read_after(None, before.seq)] == [orphan.pk]
    # Pushed live once numbered (by the background pusher when the channel layer is Redis).
    wait_until(lambda: Event.objects.filter(pk=orphan.pk, pushed_at__isnull=False).exists(), 15, "the push")
    assert sequencer.sequence_pending() == 0  # nothing left: one cheap look


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_deleting_a_subscription_waits_for_a_publisher_queueing_for_it_and_takes_its_delivery_too(
    make_user, monkeypatch
):
    assert not sequencer.numbers_inline(), ON_POSTGRES_ONLY
    queued = []  # the delivery task is not the point here (and would call out)
    monkeypatch.setattr(subscription_fanout, "enqueue", queued.append)
    owner = make_user("owner", superuser=True)
    subscription = EventSubscription.objects.create(
        owner=owner, url="https://receiver.invalid/hook", event_types=["connector.registered"], secret="whsec_x"
    )
    subscription_service.invalidate_cache()
    deleted, errors = threading.Event(), []

    def delete():
        try:
            subscription_service.delete_subscription(Principal.for_user(owner, via="test"), subscription.pk)
            deleted.set()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    with open_publisher() as held:
        assert EventDelivery.objects.filter(subscription=subscription).count() == 0  # not committed yet
        deleter = threading.Thread(target=delete)
        deleter.start()
        wait_until(backends_waiting_for_a_lock, 15, "the delete to wait for the publisher")
        assert not deleted.is_set()
    # The publisher committed (its delivery row's foreign key held), then the delete went through.
    deleter.join(30)
    assert errors == [] and deleted.is_set()
    assert Event.objects.get(pk=held["event"].pk).seq is not None
    assert not EventSubscription.objects.filter(pk=subscription.pk).exists()
    assert not EventDelivery.objects.filter(event_id=held["event"].pk).exists()
    assert len(queued) == 1  # the delivery had been queued, and committed, before the delete
