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
import logging
import threading
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min, Q
from django.utils import timezone

from audit import services as audit

from .models import Event

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
        last = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
        event = Event.objects.create(
            seq=last + 1,
            type=type,
            source=settings.EVENT_SOURCE,
            subject=subject or connector_id,
            connector_id=connector_id,
            time=timezone.now(),
            data=data,
        )
        # Subscriptions: delivery rows in this same transaction (a cached no-op without any).
        from .subscriptions import fan_out

        fan_out(event)
        transaction.on_commit(lambda: push([event]))
    return event


# --- pushing ---------------------------------------------------------------------------------


def push_payload(event: Event) -> dict:
    return {"type": PUSH_MESSAGE_TYPE, "event": event.envelope()}


async def _send_to_groups(events):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    for event in events:
        message = push_payload(event)
        await layer.group_send(GROUP_ALL, message)
        if event.connector_id:
            await layer.group_send(connector_group(event.connector_id), message)


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def push(events):
    """Send committed events to the channel layer and mark them pushed.

    Never raises: the caller's transaction has committed, and whatever fails here is left
    unpushed for `relay()`. In a thread that runs an event loop (a platform poller), the sync
    bridge cannot be used, so the push runs in a short-lived thread of its own.
    """
    events = list(events)
    if not events:
        return
    if _in_running_loop():
        threading.Thread(target=push, args=(events,), name="event-push", daemon=True).start()
        return
    try:
        async_to_sync(_send_to_groups)(events)
    except Exception as exc:  # Redis down or full: the relay re-pushes from the log
        logger.warning("Pushing events %s..%s failed (the relay will retry): %s", events[0].seq, events[-1].seq, exc)
        return
    try:
        Event.objects.filter(seq__in=[e.seq for e in events], pushed_at__isnull=True).update(pushed_at=timezone.now())
    except Exception as exc:  # the events went out; at worst the relay pushes them twice
        logger.warning("Marking events pushed failed: %s", exc)


def relay(grace_seconds=None, limit=1000) -> int:
    """Re-push committed events that were never marked pushed (older than the grace period,
    so in-flight pushes are left to finish). Returns how many were pushed."""
    grace = settings.EVENT_RELAY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    events = list(Event.objects.filter(pushed_at__isnull=True, time__lte=cutoff).order_by("seq")[:limit])
    push(events)
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
    from .permissions import viewable_connectors

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
    from .services import _record  # the one audit helper for service calls

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
    _record("event.list", principal, "", target_type="event", after=after, count=len(rows))
    return rows, (rows[-1].seq if more else None)


# --- retention -------------------------------------------------------------------------------


def purge_expired(principal=None, *, days=None, batch_size=5000) -> int:
    """Delete events older than EVENT_RETENTION_DAYS (audited with the cutoff and the count).

    The newest event is always kept: `seq` continues from it, so numbers are never reused and a
    client resuming with `since` cannot mistake new events for old ones. Deleted in batches so a
    large backlog never holds a long lock. Returns the count.
    """
    from .permissions import Principal

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
