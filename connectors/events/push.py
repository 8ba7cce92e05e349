"""Live delivery of committed events: pushed to the channel layer after commit, re-pushed by the relay.

Each committed, numbered event (connectors.events.sequencer) goes to the group of its connector and to the group of everything, and is
marked pushed. The channel layer may lose anything (Redis capacity, expiry, a flush, a crash
between commit and push): `relay()` re-pushes committed events left unpushed, and websocket
consumers catch up from the log (connectors.events.log): the log, not Redis, is the truth.
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
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from connectors.models import Event

logger = logging.getLogger(__name__)

GROUP_ALL = "events.all"
# What the channel layer carries to consumers (the handler is EventStreamConsumer.event_push).
PUSH_MESSAGE_TYPE = "event.push"


def connector_group(connector_id: str) -> str:
    return f"events.connector.{connector_id}"


def push_payload(events) -> dict:
    """One channel-layer message for a batch of events, in seq order."""
    return {"type": PUSH_MESSAGE_TYPE, "events": [event.envelope() for event in events]}


async def _send_to_groups(events):
    """The batch to the group of everything, and each connector's part to its own group."""
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
        _mark_pushed([e.pk for e in events])
    except Exception as exc:  # the events went out; at worst the relay pushes them twice
        logger.warning("Marking events pushed failed: %s", exc)


def _mark_pushed(ids):
    # Plain SQL: this runs for every batch, and the ORM's update compiler cost more than the query.
    table, id_, pushed_at = (connection.ops.quote_name(n) for n in (Event._meta.db_table, "id", "pushed_at"))
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {pushed_at} = %s WHERE {id_} IN ({marks}) AND {pushed_at} IS NULL",  # noqa: S608  # nosec B608  # quoted model names, %s marks
            [timezone.now(), *ids],
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
    """Re-push committed, numbered events that were never marked pushed (older than the grace
    period, so in-flight pushes are left to finish). Returns how many were pushed. Events still
    without a seq wait for the sequencer (connectors.events.sequencer.relay runs it first)."""
    grace = settings.EVENT_RELAY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    events = list(Event.objects.filter(pushed_at__isnull=True, seq__isnull=False, time__lte=cutoff).order_by("seq")[:limit])
    if events:
        _push_now(events)  # here, not through the background pusher: the relay is background work
    return len(events)
