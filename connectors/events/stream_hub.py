"""The event hub: each process's one channel-layer subscription to the event group, fanned out to its sockets.

A Redis round trip per socket per event (the channels default, one channel per consumer) was the
bottleneck: 50 sockets at 200 events/s gave p99 ~770 ms (bench/event_latency.py). The hub hands
each push to the sockets of its process through their bounded in-memory inboxes instead.
"""
import asyncio
import json
import logging
import weakref

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from connectors.events.log import latest_seq
from connectors.events.push import GROUP_ALL, PUSH_MESSAGE_TYPE

logger = logging.getLogger(__name__)


def event_frame(envelope) -> str:
    return json.dumps({"type": "event", "event": envelope}, separators=(",", ":"))


def stop_if_cancelled(exc=None):
    """Raise CancelledError if this task was asked to stop. A cancellation can surface as a client library's own
    error (a Redis read interrupted) or be absorbed by a call that finishes its work first; a looping task that
    missed it would go round for ever and hold up its loop's shutdown (seen as test_event_stream_origin hanging
    in teardown under CI load). So loops call this after each such call, before they wait again."""
    if asyncio.current_task().cancelling():
        raise asyncio.CancelledError from exc


class EventHub:
    """This process's one subscription to the event group, fanned out to its sockets.

    Runs while at least one socket is open. Every EVENTS_WS_CATCHUP_SECONDS it renews its group
    membership (a Redis flush or expiry drops memberships silently) and reads the log's newest
    seq: sockets still short of the newest seq of the round before read the log. One query per
    process and round; 50 sockets each reading on their own timer stalled the live stream.
    """

    def __init__(self):
        self.sockets = set()
        self.task = None
        self.latest = 0  # the newest seq this process knows of

    def register(self, socket):
        self.sockets.add(socket)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def unregister(self, socket):
        self.sockets.discard(socket)
        if not self.sockets and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self):
        layer = get_channel_layer()
        channel = await layer.new_channel("events-hub.")
        watch = asyncio.ensure_future(self._watch(layer, channel))
        try:
            while self.sockets and self.task is asyncio.current_task():
                try:
                    message = await layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the sockets' timers read the log meanwhile
                    stop_if_cancelled(exc)
                    if self.task is not asyncio.current_task():  # stopped: a new hub took over
                        raise asyncio.CancelledError from exc
                    logger.warning("Event hub could not receive (retrying): %s", exc)
                    await asyncio.sleep(1)
                    continue
                if message.get("type") != PUSH_MESSAGE_TYPE:
                    continue
                for envelope in message["events"]:
                    self.latest = max(self.latest, envelope["seq"])
                    # Serialised once for every socket of the process, not once per socket.
                    frame = event_frame(envelope)
                    for socket in list(self.sockets):
                        socket.offer(envelope, frame)
        finally:
            watch.cancel()
            try:
                await layer.group_discard(GROUP_ALL, channel)
            except Exception:  # noqa: S110 (best effort: the membership expires anyway)
                pass

    async def _watch(self, layer, channel):
        previous = None
        while True:
            try:
                await layer.group_add(GROUP_ALL, channel)
            except Exception as exc:
                stop_if_cancelled(exc)
                logger.warning("Event hub could not join its group (retrying): %s", exc)
            try:
                latest = await database_sync_to_async(latest_seq)()
            except Exception as exc:
                stop_if_cancelled(exc)
                logger.warning("Event hub could not read the log: %s", exc)
                latest = None
            stop_if_cancelled()
            if previous is not None:
                for socket in list(self.sockets):
                    if socket.cursor < previous:  # a whole round behind: a push was lost
                        socket.offer_catch_up()
            if latest is not None:
                previous = latest
                self.latest = max(self.latest, latest)
            await asyncio.sleep(settings.EVENTS_WS_CATCHUP_SECONDS)


# One hub per event loop (daphne has one; each async test has its own).
_hubs = weakref.WeakKeyDictionary()


def hub_for_this_loop():
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = EventHub()
    return _hubs[loop]
