"""Event retention: events past EVENT_RETENTION_DAYS are deleted in batches, and the purge is audited."""
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from connectors import tasks
from connectors.events import log as events
from connectors.events import sequencer
from connectors.models import Event


def publish_numbered(connector_id, data):
    """publish(), then the sequencer that runs after commit on PostgreSQL (a `db` test never
    commits, so its on-commit callbacks never run): the event with its seq."""
    event = events.publish("connector.registered", connector_id=connector_id, data=data)
    sequencer.sequence_pending()
    event.refresh_from_db()
    return event


def make_events(count, age):
    created = [publish_numbered(f"c-{i}", {"kind": "locmem"}) for i in range(count)]
    Event.objects.filter(seq__in=[e.seq for e in created]).update(time=timezone.now() - age)
    return [e.seq for e in created]


@pytest.mark.django_db
def test_purge_deletes_old_events_keeps_recent_and_audits_the_count(settings):
    settings.EVENT_RETENTION_DAYS = 30
    Event.objects.all().delete()
    old = make_events(7, timedelta(days=31))
    recent = make_events(3, timedelta(days=29))

    deleted = tasks.purge_events()  # the beat task runs the same code

    assert deleted == 7
    assert sorted(Event.objects.values_list("seq", flat=True)) == recent
    assert not Event.objects.filter(seq__in=old).exists()
    row = AuditEvent.objects.filter(action="event.purge").get()
    assert row.principal == "system:retention" and row.result == "success"
    assert row.details["deleted"] == 7 and row.details["retention_days"] == 30
    cutoff = timezone.datetime.fromisoformat(row.details["cutoff"])
    assert timedelta(days=30) - timedelta(minutes=1) < timezone.now() - cutoff < timedelta(days=30, minutes=1)


@pytest.mark.django_db
def test_purge_works_through_a_backlog_in_batches():
    Event.objects.all().delete()
    make_events(25, timedelta(days=400))
    keep = make_events(1, timedelta(hours=1))

    assert events.purge_expired(days=30, batch_size=4) == 25

    assert list(Event.objects.values_list("seq", flat=True)) == keep
    assert AuditEvent.objects.get(action="event.purge").details["deleted"] == 25


@pytest.mark.django_db
def test_nothing_to_purge_is_still_audited():
    Event.objects.all().delete()
    recent = make_events(2, timedelta(days=1))
    assert events.purge_expired(days=30) == 0
    assert sorted(Event.objects.values_list("seq", flat=True)) == recent
    assert AuditEvent.objects.get(action="event.purge").details["deleted"] == 0


@pytest.mark.django_db
def test_sequence_keeps_growing_after_a_purge():
    """A purge must never let seq go back: clients resuming with ?since= rely on it."""
    Event.objects.all().delete()
    seqs = make_events(3, timedelta(days=90))
    make_events(1, timedelta(days=1))
    events.purge_expired(days=30)
    newest = publish_numbered("c-new", {})
    assert newest.seq > max(seqs)


@pytest.mark.django_db
def test_sequence_keeps_growing_after_purging_everything():
    """The newest event is kept whatever its age: it holds the high-water mark of seq, so a
    client resuming with since=N never sees numbers reused."""
    Event.objects.all().delete()
    seqs = make_events(3, timedelta(days=90))
    assert events.purge_expired(days=30) == 2
    assert list(Event.objects.values_list("seq", flat=True)) == [max(seqs)]
    newest = publish_numbered("c-new", {})
    assert newest.seq > max(seqs)
