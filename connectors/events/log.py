"""The durable event log: events appended in the caller's transaction, read back with permissions, purged.

- `publish()` appends an `Event` in the caller's transaction, without any lock. Where the
  database allows it for free (SQLite) it numbers the event inline; on PostgreSQL the sequencer
  (connectors.events.sequencer) gives it its `seq` right after commit. Readers see only
  numbered rows, in `seq` order, and numbers become visible without holes: a reader that has
  seen seq N and later asks for `seq > N` can never skip one.
- After commit and numbering the event is pushed live (connectors.events.push); whatever the
  channel layer loses, readers catch up from here: the log, not Redis, is the truth.
- `event_appended` is sent inside publish()'s transaction, so what a receiver writes commits or
  rolls back with the event. The event it gets has its primary key but, on PostgreSQL, no seq
  yet. It is the seam through which event subscriptions queue their deliveries
  (connectors.events.subscription_fanout connects to it) without the log importing them: they
  import the log, the log knows only the signal.

Event data carries ids, lengths and statuses, never message content or secrets.
"""
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.dispatch import Signal
from django.utils import timezone

from audit import services as audit
from connectors.events import sequencer
from connectors.events.push import push
from connectors.events.types import EVENT_TYPES, types_q
from connectors.models import Event
from connectors.permissions import Principal, viewable_connectors

# kwargs: event (saved: it has its pk; its seq only on SQLite). A receiver that raises fails
# publish() and its transaction.
event_appended = Signal()


# --- writing ---------------------------------------------------------------------------------


def publish(type, *, connector_id="", subject="", data=None) -> Event:
    """Append one event in the current transaction (or its own); push it after commit."""
    if type not in EVENT_TYPES:
        raise ValueError(f"Unknown event type {type!r}")
    data = dict(data or {})
    leaked = audit.forbidden_keys(data)
    if leaked:
        raise ValueError(f"Event data must not contain {sorted(leaked)}")
    with transaction.atomic(savepoint=False):
        event = Event(
            type=type,
            source=settings.EVENT_SOURCE,
            subject=subject or connector_id,
            connector_id=connector_id,
            time=timezone.now(),
            data=data,
        )
        if sequencer.numbers_inline():
            _insert_next(event)
            transaction.on_commit(lambda: push([event]))
        else:
            event.save(force_insert=True)
            # Before the signal: the receivers' own after-commit work (subscription deliveries)
            # then finds the event numbered.
            sequencer.register_after_commit()
        # Subscriptions write their delivery rows here, in this same transaction.
        event_appended.send(sender=Event, event=event)
    return event


def _insert_next(event):
    """INSERT the event with seq = the log's max + 1, read in the same statement (one round trip
    instead of two). SQLite only: its write transaction already holds the database's write lock,
    so no other writer can read the same max (see sequencer.numbers_inline)."""
    fields = [f for f in Event._meta.concrete_fields if f.attname not in ("seq", "id")]
    values = [f.get_db_prep_save(f.pre_save(event, add=True), connection) for f in fields]
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    seq, pk = connection.ops.quote_name("seq"), connection.ops.quote_name("id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({seq}, {columns}) "  # noqa: S608  # nosec B608  # names: quoted model metadata; values: parameters
            f"SELECT COALESCE(MAX({seq}), 0) + 1, {placeholders} FROM {table} RETURNING {seq}, {pk}",
            values,
        )
        event.seq, event.pk = cursor.fetchone()
    event._state.adding = False


# --- reading ---------------------------------------------------------------------------------


def visible_query(visible_ids):
    """Events a viewer may see: every event when `visible_ids` is None (superuser or system),
    else only those of these connectors (events about no connector are for superusers).
    Only numbered events: one without its seq yet is not in the log for readers."""
    qs = Event.objects.filter(seq__isnull=False)
    if visible_ids is not None:
        qs = qs.filter(connector_id__in=list(visible_ids))
    return qs


def visible_connector_ids(principal):
    """None for 'everything', else the set of connector ids this principal may view."""
    if principal.is_system or principal.user.is_superuser:
        return None
    return set(viewable_connectors(principal).values_list("id", flat=True))


def read_after(visible_ids, after, *, types=(), connector_ids=(), limit=500, up_to=None):
    """Events with after < seq (<= up_to) that the viewer may see and the filters select, in seq order."""
    qs = visible_query(visible_ids).filter(seq__gt=after)
    if up_to is not None:
        qs = qs.filter(seq__lte=up_to)
    if types:
        qs = qs.filter(types_q(types))
    if connector_ids:
        qs = qs.filter(connector_id__in=list(connector_ids))
    return list(qs.order_by("seq")[:limit])


def latest_seq() -> int:
    return Event.objects.aggregate(m=Max("seq"))["m"] or 0


def oldest_seq() -> int:
    return Event.objects.aggregate(m=Min("seq"))["m"] or 0


def list_events(principal, *, types=(), connector_ids=(), after=0, time_from=None, time_to=None, limit=100):
    """The REST listing: filtered, cursor-paginated on seq. Returns (events, next_after or None)."""
    visible = visible_connector_ids(principal)
    qs = visible_query(visible).filter(seq__gt=after)
    if types:
        qs = qs.filter(types_q(types))
    if connector_ids:
        qs = qs.filter(connector_id__in=list(connector_ids))
    if time_from is not None:
        qs = qs.filter(time__gte=time_from)
    if time_to is not None:
        qs = qs.filter(time__lt=time_to)
    rows = list(qs.order_by("seq")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    audit.record_action("event.list", principal, "event", "", after=after, count=len(rows))
    return rows, (rows[-1].seq if more else None)


# --- retention -------------------------------------------------------------------------------


def purge_expired(principal=None, *, days=None, batch_size=5000) -> int:
    """Delete events older than EVENT_RETENTION_DAYS (audited with the cutoff and the count).

    The newest event is always kept: `seq` continues from it, so numbers are never reused and a
    client resuming with `since` cannot mistake new events for old ones. Deleted in batches so a
    large backlog never holds a long lock. Returns the count.
    """
    principal = principal or Principal.system_actor("retention")
    days = settings.EVENT_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    newest = latest_seq()
    while True:
        with transaction.atomic():
            expired = Event.objects.filter(time__lt=cutoff, seq__lt=newest)
            seqs = list(expired.order_by("seq").values_list("seq", flat=True)[:batch_size])
            if not seqs:
                break
            Event.objects.filter(seq__in=seqs).delete()
            total += len(seqs)
    with transaction.atomic():
        audit.record(
            "event.purge",
            principal=principal,
            target_type="event",
            details={"via": principal.via, "cutoff": cutoff.isoformat(), "retention_days": days, "deleted": total},
        )
    return total
