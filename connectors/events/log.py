"""The durable event log: what the connectors do, written first, pushed live after commit.

- `publish()` appends an `Event` in the caller's transaction. Its `seq` is allocated under the
  log lock (the audit chain's lock, held until commit), so rows become visible in `seq` order:
  a reader that has seen seq N and later asks for `seq > N` can never skip one.
- After commit the event is pushed to the channel layer, to the group of its connector and to
  the group of everything, and marked pushed.
- The channel layer may lose anything (Redis capacity, expiry, a flush, a crash between commit
  and push). `relay()` re-pushes committed events left unpushed, and websocket consumers catch
  up from the log whenever they see a gap or on a timer: the log, not Redis, is the truth.

Event data carries ids, lengths and statuses, never message content or secrets.
"""
import asyncio
import atexit
import logging
import os
import queue
import threading
import time
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Max, Min, Q
from django.utils import timezone

from audit import services as audit
from connectors.models import Event

logger = logging.getLogger(__name__)

EVENT_TYPES = frozenset(
    {
        "connector.registered",
        "connector.updated",
        "connector.deleted",
        "connector.started",
        "connector.stopped",
        "connector.error",
        "connector.message.received",
        "connector.message.queued",
        "connector.message.sent",
        "connector.message.failed",
        "connector.message.delivered",
        "connector.health.check",
        # routing (issue 6): what the router chose, each move down the chain, preference changes
        "routing.decision",
        "notification.fallback",
        "notification.delivered",
        "notification.exhausted",
        "preference.updated",
    }
)

GROUP_ALL = "events.all"
# What the channel layer carries to consumers (the handler is EventStreamConsumer.event_push).
PUSH_MESSAGE_TYPE = "event.push"


def connector_group(connector_id: str) -> str:
    return f"events.connector.{connector_id}"


class EventFilterError(ValueError):
    """A filter a client asked for that does not exist or is malformed."""


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
        audit.lock_log()
        event = Event(
            type=type,
            source=settings.EVENT_SOURCE,
            subject=subject or connector_id,
            connector_id=connector_id,
            time=timezone.now(),
            data=data,
        )
        _insert_next(event)
        # Subscriptions: delivery rows in this same transaction (a cached no-op without any).
        from connectors.events.subscriptions import fan_out

        fan_out(event)
        transaction.on_commit(lambda: push([event]))
    return event


def _insert_next(event):
    """INSERT the event with seq = the log's max + 1, read in the same statement (one round trip
    instead of two). Only under the log lock: two writers would otherwise read the same max."""
    fields = [f for f in Event._meta.concrete_fields if f.attname != "seq"]
    values = [f.get_db_prep_save(f.pre_save(event, add=True), connection) for f in fields]
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    seq = connection.ops.quote_name("seq")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({seq}, {columns}) "  # noqa: S608  # nosec B608  # names: quoted model metadata; values: parameters
            f"SELECT COALESCE(MAX({seq}), 0) + 1, {placeholders} FROM {table} RETURNING {seq}",
            values,
        )
        event.seq = cursor.fetchone()[0]
    event._state.adding = False


# --- pushing ---------------------------------------------------------------------------------


def push_payload(events) -> dict:
    """One channel-layer message for a batch of events, in seq order."""
    return {"type": PUSH_MESSAGE_TYPE, "events": [event.envelope() for event in events]}


async def _send_to_groups(events):
    """The batch to the group of everything, and each connector's part to its own group."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    by_connector = {}
    for event in events:
        if event.connector_id:
            by_connector.setdefault(event.connector_id, []).append(event)
    await asyncio.gather(
        layer.group_send(GROUP_ALL, push_payload(events)),
        *(layer.group_send(connector_group(cid), push_payload(own)) for cid, own in by_connector.items()),
    )


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _push_now(events, loop=None):
    """Send to the channel layer, then mark pushed. Never raises: whatever fails is left
    unpushed for `relay()`."""
    try:
        if loop is not None:
            loop.run_until_complete(_send_to_groups(events))
        else:
            async_to_sync(_send_to_groups)(events)
    except Exception as exc:  # Redis down or full: the relay re-pushes from the log
        logger.warning("Pushing events %s..%s failed (the relay will retry): %s", events[0].seq, events[-1].seq, exc)
        return
    try:
        _mark_pushed([e.seq for e in events])
    except Exception as exc:  # the events went out; at worst the relay pushes them twice
        logger.warning("Marking events pushed failed: %s", exc)


def _mark_pushed(seqs):
    # Plain SQL: this runs for every batch, and the ORM's update compiler cost more than the query.
    table, seq, pushed_at = (connection.ops.quote_name(n) for n in (Event._meta.db_table, "seq", "pushed_at"))
    marks = ", ".join(["%s"] * len(seqs))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {pushed_at} = %s WHERE {seq} IN ({marks}) AND {pushed_at} IS NULL",  # noqa: S608  # nosec B608  # quoted model names, %s marks
            [timezone.now(), *seqs],
        )


class _BackgroundPusher:
    """One thread per process that pushes committed events to a cross-process channel layer.

    A request or task thread only hands the events over: waiting for Redis there (two group
    sends and an UPDATE per event, on Django's single thread for sync views under ASGI) halved
    webhook ingest. The thread keeps one event loop, so channels_redis keeps its connections,
    and sends and marks a whole batch at once: it waits EVENT_PUSH_BATCH_SECONDS (a few ms)
    after the first event for others to join it. Events still queued when the process dies are
    left unpushed in the log, for the relay; a normal exit waits for the queue (`flush`).
    """

    BATCH = 200
    FLUSH_TIMEOUT = 5.0

    def __init__(self):
        self.lock = threading.Lock()
        self.queue = None
        self.pid = None
        self.thread = None
        self.tidied_at = 0.0

    def submit(self, events):
        with self.lock:
            # After a fork (Celery's prefork pool) the parent's thread does not exist here.
            if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
                self.queue = queue.SimpleQueue()
                self.pid = os.getpid()
                self.thread = threading.Thread(target=self._run, args=(self.queue,), name="event-pusher", daemon=True)
                self.thread.start()
                atexit.register(self.flush)
            self.queue.put(events)

    def _tidy_connection(self):
        """Honour CONN_MAX_AGE for this thread's database connection. Not after every batch:
        each call makes the next query check the connection first (a round trip)."""
        now = time.monotonic()
        if settings.DATABASES["default"].get("CONN_MAX_AGE") == 0 or now - self.tidied_at > 10:
            self.tidied_at = now
            close_old_connections()

    def flush(self, timeout=None):
        """Wait until everything submitted so far has been pushed (at exit, and for tests)."""
        if self.thread is None or not self.thread.is_alive() or self.pid != os.getpid():
            return True
        done = threading.Event()
        self.queue.put(done)
        return done.wait(self.FLUSH_TIMEOUT if timeout is None else timeout)

    def _run(self, inbox):
        loop = asyncio.new_event_loop()
        while True:
            batch, flushed = [], []
            deadline = None
            while len(batch) < self.BATCH:
                try:
                    item = inbox.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(item, threading.Event):
                    flushed.append(item)
                    break  # push what came before it now
                batch += item
                deadline = deadline or time.monotonic() + settings.EVENT_PUSH_BATCH_SECONDS
            if batch:
                _push_now(batch, loop)
                self._tidy_connection()
            for done in flushed:
                done.set()


_pusher = _BackgroundPusher()


def _layer_is_process_local() -> bool:
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    return isinstance(get_channel_layer(), InMemoryChannelLayer)


def push(events):
    """Send committed events to the channel layer and mark them pushed; never raises.

    With Redis, the background pusher does it. The in-memory layer (make run, tests) lives in
    one event loop, so there the push goes through the sync bridge into that loop; in a thread
    that runs a loop of its own (a platform poller) the bridge cannot be used, so it goes
    through a short-lived thread.
    """
    events = list(events)
    if not events:
        return
    if not _layer_is_process_local():
        _pusher.submit(events)
    elif _in_running_loop():
        threading.Thread(target=_push_now, args=(events,), name="event-push", daemon=True).start()
    else:
        _push_now(events)


def relay(grace_seconds=None, limit=1000) -> int:
    """Re-push committed events that were never marked pushed (older than the grace period,
    so in-flight pushes are left to finish). Returns how many were pushed."""
    grace = settings.EVENT_RELAY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    events = list(Event.objects.filter(pushed_at__isnull=True, time__lte=cutoff).order_by("seq")[:limit])
    if events:
        _push_now(events)  # here, not through the background pusher: the relay is background work
    return len(events)


# --- reading ---------------------------------------------------------------------------------


def parse_types(raw) -> list[str]:
    """Comma-separated exact types or prefixes ending in `.*`; EventFilterError for unknown ones."""
    if raw is None or raw == "":
        return []
    patterns = [p.strip() for p in str(raw).split(",") if p.strip()]
    unknown = [p for p in patterns if not type_pattern_known(p)]
    if unknown:
        raise EventFilterError(f"Unknown event types {unknown}; known: {', '.join(sorted(EVENT_TYPES))} (or a prefix like connector.message.*).")
    return patterns


def type_pattern_known(pattern: str) -> bool:
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return any(t.startswith(prefix) for t in EVENT_TYPES)
    return pattern in EVENT_TYPES


def type_matches(event_type: str, patterns) -> bool:
    return not patterns or any(
        event_type.startswith(p[:-1]) if p.endswith(".*") else event_type == p for p in patterns
    )


def types_q(patterns) -> Q:
    q = Q()
    for p in patterns:
        q |= Q(type__startswith=p[:-1]) if p.endswith(".*") else Q(type=p)
    return q


def visible_query(visible_ids):
    """Events a viewer may see: every event when `visible_ids` is None (superuser or system),
    else only those of these connectors (events about no connector are for superusers)."""
    qs = Event.objects.all()
    if visible_ids is not None:
        qs = qs.filter(connector_id__in=list(visible_ids))
    return qs


def visible_connector_ids(principal):
    """None for 'everything', else the set of connector ids this principal may view."""
    from connectors.permissions import viewable_connectors

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
    from connectors.permissions import Principal

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
