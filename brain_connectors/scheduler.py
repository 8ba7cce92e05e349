"""The embedded scheduler: CELERY_BEAT_SCHEDULE run in one process where Celery is eager and no beat runs (make run).

Eager Celery (no broker, the embedded default) runs a task the moment it is sent, so a countdown cannot wait and
nothing periodic ever starts: a failed send would stay `queued` for ever. `manage.py runscheduler` runs this loop
beside daphne instead of Celery beat. It reads the same schedule, so a periodic task added for deployments runs
here too, and it calls each task in this process with `.apply()` (as an eager worker would: Celery's signals fire),
one at a time. A broker would hold a retry's or a quota-delayed send's task until its countdown ends; here
`send-due-deliveries` (EMBEDDED_SCHEDULE, every DUE_DELIVERIES_SECONDS) gives each queued delivery whose
next_attempt_at has passed its task instead, so it goes out within about a second of its due time. The sweeper
(connectors.tasks.sweep) still re-drives whatever else was left behind, on its own interval.

Each run gets its own database connection, closed after it: SQLite is shared with daphne, and a connection held
open between runs would only pin an old snapshot. A run that finds the database locked is tried again
LOCKED_RETRY_SECONDS later rather than a whole interval (an hourly purge would otherwise skip an hour); any other
error is logged and the entry waits for its next interval. Nothing a task raises stops the loop.
"""
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import OperationalError, connections

from connectors import task_queue as queue

logger = logging.getLogger(__name__)

LOCKED_RETRY_SECONDS = 1.0
# Every ASGI server process of this application already seals and checkpoints the audit chain itself
# (brain_connectors/asgi.py, AUDIT_CHECKPOINT_IN_DAPHNE): twice would only write more checkpoints.
SERVED_BY_ASGI = ("audit.tasks.write_checkpoint", "audit.tasks.seal_pending")
# Only where this loop replaces beat: with a broker, a retry's task waits in it for its countdown.
DUE_DELIVERIES_SECONDS = 1.0
EMBEDDED_SCHEDULE = {
    "send-due-deliveries": {"task": "connectors.tasks.send_due_deliveries", "schedule": DUE_DELIVERIES_SECONDS},
}


@dataclass
class Entry:
    """One periodic task of the schedule, and when it is next due (time.monotonic())."""

    name: str
    task: str
    interval: float
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    due: float = 0.0


def entries(schedule=None):
    """The schedule's entries (CELERY_BEAT_SCHEDULE and EMBEDDED_SCHEDULE by default), all due now, without those
    the ASGI server runs and those with an interval of 0 (turned off, e.g. HEALTH_CHECK_INTERVAL_SECONDS=0).

    All due at once: a short `make run` session would otherwise never see the daily purge, and queued work left by
    the last session is re-driven straight away."""
    schedule = {**settings.CELERY_BEAT_SCHEDULE, **EMBEDDED_SCHEDULE} if schedule is None else schedule
    skip = SERVED_BY_ASGI if settings.AUDIT_CHECKPOINT_IN_DAPHNE else ()
    now = time.monotonic()
    found = []
    for name, spec in schedule.items():
        interval = _seconds(spec["schedule"])
        if spec["task"] in skip or interval <= 0:
            continue
        found.append(Entry(name, spec["task"], interval, tuple(spec.get("args", ())), dict(spec.get("kwargs", {})), now))
    return found


def _seconds(schedule):
    """A number of seconds, a timedelta, or Celery's `schedule(run_every=...)`; crontabs are not supported here."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    run_every = getattr(schedule, "run_every", schedule)
    if hasattr(run_every, "total_seconds"):
        return run_every.total_seconds()
    raise ValueError(f"the embedded scheduler runs fixed intervals only, not {schedule!r}")


def run_entry(entry):
    """Run one entry's task now, in this thread. Returns when it should run next (time.monotonic())."""
    started = time.monotonic()
    try:
        # Looked up as the task queue does: Celery's own import_default_modules would reconfigure logging.
        queue.registered_task(entry.task).apply(args=entry.args, kwargs=entry.kwargs, throw=True)
    except OperationalError as exc:
        if "locked" not in str(exc):
            logger.exception("scheduled task %s failed", entry.name)
            return started + entry.interval
        logger.warning("scheduled task %s: the database is locked; trying again in %.0f s", entry.name,
                       LOCKED_RETRY_SECONDS)
        return time.monotonic() + LOCKED_RETRY_SECONDS
    except Exception:
        logger.exception("scheduled task %s failed", entry.name)
    finally:
        connections.close_all()
    logger.debug("scheduled task %s took %.3f s", entry.name, time.monotonic() - started)
    # A fixed rate ("at least every interval"), but no burst of catch-up runs after a long one.
    return max(entry.due + entry.interval, time.monotonic())


def run(schedule_entries, stop=None, keep_going=lambda: True):
    """Run the entries on their intervals, soonest first, until `stop` is set or `keep_going()` is false."""
    stop = stop or threading.Event()
    while not stop.is_set() and keep_going():
        entry = min(schedule_entries, key=lambda e: e.due)
        wait = entry.due - time.monotonic()
        if wait > 0:
            # Wake at least every second to notice `keep_going` (the parent process went away).
            stop.wait(min(wait, 1.0))
            continue
        entry.due = run_entry(entry)
