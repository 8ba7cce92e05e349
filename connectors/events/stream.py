"""Websocket `/ws/events/`: the event log, replayed from `?since=` and then live, with no gaps.

Protocol (README "Event stream"):
    server → {"type": "hello", "cursor", "latest_seq", "oldest_seq", "window"}
             {"type": "event", "event": {CloudEvents envelope + "seq"}}   strictly in seq order
             {"type": "ping", "latest_seq", "time"}                         every EVENTS_WS_PING_SECONDS
    client → {"type": "ack", "seq": N}                                      the last event processed

Fan-out: one subscription to the channel layer per process (connectors.events.stream_hub), handed
to each socket of the process through a bounded in-memory inbox. A full inbox drops the push; the
log fills the gap.

How nothing is lost: live pushes from the channel layer are only a fast path. The consumer keeps
a cursor (the seq up to which it has sent everything the client may see). A push that is not
the cursor's direct successor, a full window or a timer makes it read the log after the cursor.
Rows become visible in seq order (see connectors.events.log), so reading `cursor < seq <= latest`
covers everything committed up to `latest`.

Flow control: at most EVENTS_WS_WINDOW events may be unacknowledged. Beyond that nothing more is
sent (the rest waits in the database, not in memory), and a client that stays full for
EVENTS_WS_SLOW_CLIENT_SECONDS is disconnected with 4408 so it can resume with `since`.
"""
import asyncio
import json
import logging
import random
import time
from collections import deque
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from brain_connectors.shared.origins import origin_allowed
from connectors.events.log import latest_seq, read_after
from connectors.events.stream_hub import event_frame, hub_for_this_loop, stop_if_cancelled
from connectors.events.stream_request import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNAUTHENTICATED,
    StreamRequestError,
    initial_state,
    parse_stream_query,
    refresh_access,
    token_user,
)
from connectors.events.types import type_matches
from connectors.permissions import Principal

logger = logging.getLogger(__name__)

READ_BATCH = 500


class EventStreamConsumer(AsyncWebsocketConsumer):
    # No channel-layer channel per socket: the process's EventHub feeds every socket.
    channel_layer_alias = "events-hub-feeds-the-sockets"
    # Pushes waiting for one socket; beyond this they are dropped and read from the log instead.
    INBOX_SIZE = 1000

    async def connect(self):
        self.hub = None
        self.inbox = asyncio.Queue(self.INBOX_SIZE)
        self.inbox_task = None
        self.ticker = None
        self.lock = asyncio.Lock()
        self.inflight = deque()  # seqs sent and not yet acknowledged
        self.behind = False  # the log holds events for us that were not sent yet
        self.full_since = None  # when the window last filled up (monotonic)
        self.last_ping = self.last_access_check = time.monotonic()
        # Accept first: only an open socket can carry a close code and a reason.
        await self.accept()
        try:
            await self._open_stream()
        except StreamRequestError as exc:
            await self.close(code=exc.code, reason=exc.reason[:120])

    async def _open_stream(self):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        if not origin_allowed(self.scope, headers):
            raise StreamRequestError(
                CLOSE_FORBIDDEN_ORIGIN, "origin not allowed: not this site's scheme, host and port, nor a trusted origin"
            )
        self.raw_token = None
        user = self.scope.get("user")
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, raw = authorization.partition(" ")
            if scheme.lower() != "bearer":
                raise StreamRequestError(CLOSE_UNAUTHENTICATED, "use Authorization: Bearer <token>")
            client_ip = (self.scope.get("client") or (None,))[0]
            user = await database_sync_to_async(token_user)(raw.strip(), client_ip)
            self.raw_token = raw.strip()
        if user is None or not user.is_authenticated or not user.is_active:
            raise StreamRequestError(CLOSE_UNAUTHENTICATED, "log in, or send Authorization: Bearer <token>")
        self.principal = Principal.for_user(user, via="websocket")
        since, self.types, requested = parse_stream_query(self.scope.get("query_string", b""))
        self.visible, self.cursor, latest, oldest = await database_sync_to_async(initial_state)(
            self.principal, requested, since
        )
        self.connector_filter = set(requested)
        self.acked_seq = self.cursor
        # Listen before reading the log: a push that overlaps the read is dropped by the cursor.
        self.inbox_task = asyncio.ensure_future(self._drain_inbox())
        self.hub = hub_for_this_loop()
        self.hub.register(self)
        await self._send_json(
            {"type": "hello", "cursor": self.cursor, "latest_seq": latest, "oldest_seq": oldest, "window": self.window}
        )
        async with self.lock:
            await self._catch_up()
        self.ticker = asyncio.ensure_future(self._tick_forever())

    @property
    def window(self):
        return settings.EVENTS_WS_WINDOW

    # --- live pushes ------------------------------------------------------------------------

    def offer(self, envelope, frame):
        """From the hub: queue a live event for this socket, or drop it if the inbox is full."""
        try:
            self.inbox.put_nowait((envelope, frame))
        except asyncio.QueueFull:
            pass  # the next push shows a gap, or the hub's round sends us to the log

    def offer_catch_up(self):
        """From the hub: read the log, in turn with the pushes already queued."""
        try:
            self.inbox.put_nowait(None)
        except asyncio.QueueFull:
            pass  # a full inbox ends in a catch-up anyway

    async def _drain_inbox(self):
        while True:
            item = await self.inbox.get()
            if item is None:
                async with self.lock:
                    await self._catch_up()
            else:
                await self.event_push(*item)
            stop_if_cancelled()

    # --- sending --------------------------------------------------------------------------

    async def _send_json(self, payload):
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))

    def _selected(self, envelope):
        connector_id = envelope["connector"]
        if self.visible is not None and connector_id not in self.visible:
            return False
        if self.connector_filter and connector_id not in self.connector_filter:
            return False
        return type_matches(envelope["type"], self.types)

    async def _send_event(self, envelope, frame=None):
        await self.send(text_data=frame or event_frame(envelope))
        self.inflight.append(envelope["seq"])

    def _read_log(self, cursor, limit):
        latest = latest_seq()
        rows = read_after(
            self.visible, cursor, types=self.types, connector_ids=self.connector_filter, limit=limit, up_to=latest
        )
        return latest, [row.envelope() for row in rows]

    async def _catch_up(self):
        """Send what the log holds after the cursor, as far as the window allows (lock held)."""
        while True:
            room = self.window - len(self.inflight)
            if room <= 0:
                self.behind = True
                self.full_since = self.full_since or time.monotonic()
                return
            limit = min(room, READ_BATCH)
            latest, rows = await database_sync_to_async(self._read_log)(self.cursor, limit)
            for envelope in rows:
                await self._send_event(envelope)
            if len(rows) < limit:  # everything committed up to `latest` has been seen
                self.cursor = max(self.cursor, latest)
                self.behind = False
                return
            self.cursor = rows[-1]["seq"]

    async def event_push(self, envelope, frame=None):
        """A live event, in the order the hub received it (`frame`: its serialised form)."""
        seq = envelope["seq"]
        async with self.lock:
            if seq <= self.cursor:  # already sent (a relay re-push, or read from the log)
                return
            if self.behind or seq != self.cursor + 1 or len(self.inflight) >= self.window:
                await self._catch_up()  # something came before it that we have not seen
                return
            if self._selected(envelope):
                await self._send_event(envelope, frame)
            self.cursor = seq

    # --- client messages, timers ------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # RecursionError: nested past ~1,000 levels
            message = None
        seq = message.get("seq") if isinstance(message, dict) and message.get("type") == "ack" else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            await self.close(code=CLOSE_BAD_REQUEST, reason='send {"type": "ack", "seq": <last seq processed>}')
            return
        async with self.lock:
            self.acked_seq = max(self.acked_seq, min(seq, self.cursor))
            while self.inflight and self.inflight[0] <= seq:
                self.inflight.popleft()
            if len(self.inflight) < self.window:
                self.full_since = None
            if self.behind:
                await self._catch_up()

    async def _tick_forever(self):
        """Access re-checks, the slow-client rule and pings. The first tick is at a random point
        of the interval, so sockets opened together do not all query at the same moment."""
        interval = min(
            settings.EVENTS_WS_ACCESS_SECONDS, settings.EVENTS_WS_PING_SECONDS, settings.EVENTS_WS_SLOW_CLIENT_SECONDS / 3
        )
        try:
            await asyncio.sleep(random.uniform(0, interval))
            while True:
                await self._tick()
                stop_if_cancelled()
                await asyncio.sleep(interval)
        except asyncio.CancelledError:
            pass
        except Exception:  # a broken timer must not leave a half-working stream
            logger.exception("Event stream timer failed")
            await self.close(code=1011)

    async def _tick(self):
        now = time.monotonic()
        if now - self.last_access_check >= settings.EVENTS_WS_ACCESS_SECONDS:
            self.last_access_check = now
            principal, visible = await database_sync_to_async(refresh_access)(self.principal.user.pk, self.raw_token)
            if principal is None:
                await self.close(code=CLOSE_UNAUTHENTICATED, reason="access revoked")
                return
            self.principal, self.visible = principal, visible
        async with self.lock:
            if self.full_since and time.monotonic() - self.full_since > settings.EVENTS_WS_SLOW_CLIENT_SECONDS:
                await self.close(code=CLOSE_SLOW_CONSUMER, reason=f"slow consumer: resume with since={self.acked_seq}")
                return
            if time.monotonic() - self.last_ping >= settings.EVENTS_WS_PING_SECONDS:
                self.last_ping = time.monotonic()
                stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                latest = max(self.cursor, self.hub.latest)
                await self._send_json({"type": "ping", "latest_seq": latest, "time": stamp})

    async def close(self, code=None, reason=None):
        # Leave the hub as soon as we close: the client's disconnect may come much later.
        if getattr(self, "hub", None) is not None:
            self.hub.unregister(self)
        await super().close(code=code, reason=reason)

    async def disconnect(self, code):
        if getattr(self, "hub", None) is not None:
            self.hub.unregister(self)
        for task in (getattr(self, "ticker", None), getattr(self, "inbox_task", None)):
            if task is not None:
                task.cancel()
