"""Audit rows for repeated refusals, counted instead of written one by one.

A refused bearer token, or a login attempt during a lockout, costs an attacker nothing. Writing an
audit row for each would cost us a write under the audit chain's global lock per request, so one
client could slow every writer down and fill the log. Instead, refusals of one kind (the same
edge, client address, reason and subject) share a counting window of REFUSAL_AUDIT_WINDOW_SECONDS:

- the first refusal of a window is audited at once, as `<action>`, so an attack shows up without delay;
- the following ones add 1 to a counter in a database row (`RefusalTally`) with one UPDATE, which
  locks that row only; every process counts into the same row;
- when the window has ended, the next refusal of that kind, or the periodic task
  (`access.tasks.close_refusal_windows`), writes `<action>.repeated` with the number of repeats
  and removes the row.

So each kind of refusal writes at most two audit rows per window, and the log still tells how many
there were.
"""
import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from audit import services as audit
from brain_connectors.access.models import RefusalTally

_CLOSE_BATCH = 500


def window():
    return timedelta(seconds=settings.REFUSAL_AUDIT_WINDOW_SECONDS)


def record(action, *, key, target_type="", target_id="", details=None, throttled=False, now=None):
    """Audit one refusal of the kind named by `key` (a tuple of strings), counted per window.

    `details` (of the window's first refusal) must not vary within a kind beyond what the summary
    may leave out: the summary row repeats the first refusal's details with the counts added.
    """
    now = now or timezone.now()
    digest = hashlib.sha256("\x1f".join([action, *map(str, key)]).encode()).hexdigest()
    if _count_repeat(digest, now, throttled):
        return
    for _ in range(3):  # two processes may open the same window at once: the loser counts instead
        try:
            with transaction.atomic():
                _open_window(digest, action, target_type, str(target_id)[:200], details or {}, throttled, now)
            return
        except IntegrityError:
            if _count_repeat(digest, now, throttled):
                return
    raise RuntimeError("refusal tally insert kept racing")


def _count_repeat(digest, now, throttled):
    """One UPDATE: add to an open window of this kind, if there is one."""
    return RefusalTally.objects.filter(key=digest, window_start__gt=now - window()).update(
        repeats=F("repeats") + 1, throttled=F("throttled") + int(throttled), last_at=now
    ) > 0


def _open_window(digest, action, target_type, target_id, details, throttled, now):
    row = RefusalTally.objects.select_for_update().filter(key=digest).first()
    if row is not None and row.window_start > now - window():  # opened by another process meanwhile
        RefusalTally.objects.filter(pk=row.pk).update(
            repeats=F("repeats") + 1, throttled=F("throttled") + int(throttled), last_at=now
        )
        return
    if row is None:
        row = RefusalTally(key=digest, action=action)
    else:  # the last window of this kind has ended: its summary first, then reuse the row
        _write_summary(row)
    row.target_type, row.target_id, row.details = target_type, target_id, details
    row.window_start = row.last_at = now
    row.repeats = row.throttled = 0
    row.save()
    audit.record(
        action, principal="anonymous", result=audit.DENIED, target_type=target_type, target_id=target_id,
        details={**details, **({"throttled": True} if throttled else {})},
    )


def _write_summary(row):
    if row.repeats == 0:
        return
    audit.record(
        f"{row.action}.repeated",
        principal="anonymous",
        result=audit.DENIED,
        target_type=row.target_type,
        target_id=row.target_id,
        details={
            **row.details,
            "repeats": row.repeats,
            "throttled": row.throttled,
            "window_start": row.window_start,
            "last_at": row.last_at,
        },
    )


def close_ended_windows(now=None):
    """Write the summary of every window that has ended and remove its row. Returns how many closed."""
    now = now or timezone.now()
    closed = 0
    while True:
        ids = list(
            RefusalTally.objects.filter(window_start__lte=now - window()).order_by("pk")
            .values_list("pk", flat=True)[:_CLOSE_BATCH]
        )
        if not ids:
            return closed
        for pk in ids:
            with transaction.atomic():
                row = RefusalTally.objects.select_for_update().filter(pk=pk, window_start__lte=now - window()).first()
                if row is None:  # reopened or closed by a refusal meanwhile
                    continue
                _write_summary(row)
                row.delete()
                closed += 1
        if len(ids) < _CLOSE_BATCH:
            return closed
