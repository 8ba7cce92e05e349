"""The bus bridge's database side: one lease per stream (exactly one publishing bridge) and its durable cursor."""
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from audit import services as audit
from connectors.models import BusCursor, Event
from connectors.permissions import Principal


def _cursor_row(stream):
    try:
        with transaction.atomic():
            return BusCursor.objects.get_or_create(stream=stream)[0]
    except IntegrityError:  # another bridge created it meanwhile
        return BusCursor.objects.get(stream=stream)


def _principal(owner):
    return Principal.system_actor(f"runbridge:{owner}", via="runbridge")


def take_lease(stream, owner, seconds) -> int | None:
    """Take or renew the stream's lease; its cursor (last acknowledged seq) if ours now, None if another holds it.

    One conditional UPDATE, so two bridges racing for an expired lease cannot both win. Taking it over is
    audited (a renewal is not: it comes every few seconds and says nothing new)."""
    _cursor_row(stream)
    now = timezone.now()
    free = Q(lease_owner=owner) | Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    with transaction.atomic():
        previous = BusCursor.objects.filter(stream=stream).values_list("lease_owner", flat=True).get()
        taken = BusCursor.objects.filter(free, stream=stream).update(
            lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds), updated_at=now)
        if not taken:
            return None
        cursor = BusCursor.objects.filter(stream=stream).values_list("last_seq", flat=True).get()
        if previous != owner:
            audit.record_action("bus.lease_taken", _principal(owner), "bus_stream", stream, lease_owner=owner,
                                previous_owner=previous, cursor=cursor)
    return cursor


def advance(stream, owner, seq) -> bool:
    """Move the cursor to `seq` (JetStream acknowledged everything up to it); False if the lease is no longer ours."""
    now = timezone.now()
    return bool(BusCursor.objects.filter(stream=stream, lease_owner=owner, lease_expires_at__gt=now,
                                         last_seq__lte=seq).update(last_seq=seq, updated_at=now))


def release_lease(stream, owner):
    """Give the lease up at a clean stop, so another bridge takes over at once (audited)."""
    with transaction.atomic():
        if BusCursor.objects.filter(stream=stream, lease_owner=owner).update(lease_owner="", lease_expires_at=None):
            audit.record_action("bus.lease_released", _principal(owner), "bus_stream", stream, lease_owner=owner)


def committed_after(seq, limit):
    """The next committed (numbered) events after `seq`, in seq order."""
    return list(Event.objects.filter(seq__isnull=False, seq__gt=seq).order_by("seq")[:limit])


def bus_lag(latest=None):
    """Per stream the bridge fills: its cursor and lag (the log's max seq minus the cursor), for /metrics and the
    dashboard. The configured stream counts from 0 before its bridge first ran; [] when the bridge is off and
    never ran."""
    if latest is None:
        latest = Event.objects.aggregate(m=Max("seq"))["m"] or 0
    cursors = dict(BusCursor.objects.order_by("stream").values_list("stream", "last_seq"))
    if settings.NATS_URL:
        cursors.setdefault(settings.NATS_STREAM, 0)
    return [{"stream": stream, "cursor": cursor, "lag": max(0, latest - cursor)}
            for stream, cursor in sorted(cursors.items())]
