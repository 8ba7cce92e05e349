"""The event bus bridge behind `manage.py runbridge`: every committed event of the log, in seq order, to JetStream.

- One bridge publishes per stream: a database lease (connectors/events/bus_lease.py) taken and renewed every
  `interval`; after a kill -9 another bridge (or the restarted one) takes over when it expires.
- It reads committed events after the durable cursor, publishes each to `<prefix>.<type>` with the CloudEvents
  envelope (with `seq`) as the body and `Nats-Msg-Id` = the event id, one after the other so the stream keeps
  seq order even when a publish fails halfway, waits for every acknowledgement, then advances the cursor in one
  UPDATE guarded by the lease. A crash between ack and UPDATE re-publishes the tail; JetStream drops those
  duplicates within NATS_STREAM_DUPLICATE_WINDOW_SECONDS, so a consumer sees each event exactly once.
- Caught up, it waits for the sequencer's NOTIFY (PostgreSQL LISTEN, brain_connectors/shared/pg_listener.py), so
  an event reaches JetStream milliseconds after its commit; it still looks at the log every second (every 50 ms
  on SQLite, which has no NOTIFY).
- NATS down or restarting: retry with backoff; the log keeps everything meanwhile, and no request waits on NATS.
- A refused credential or a failed TLS handshake (bus_connect.refusal) is logged with the setting to blame on
  every attempt; a setting the bridge cannot work with (a key without its certificate, a malformed seed, a stream
  config it may not change) raises BridgeConfigError (the command stops with it).
"""
import asyncio
import json
import logging
import os
import secrets
import socket

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from nats.errors import Error as NatsError

from brain_connectors.shared.pg_listener import PgListener
from connectors.events import bus_lease
from connectors.events.bus_connect import TLSOnlyClient, connect_options, redacted, refusal
from connectors.events.bus_stream import BridgeConfigError, ensure_stream
from connectors.events.sequencer import SEQUENCED_CHANNEL

logger = logging.getLogger("connectors.events.bus_bridge")

DEFAULT_LEASE_SECONDS = 30
DEFAULT_INTERVAL = 5.0
# Caught up: wait for the sequencer's NOTIFY (PostgreSQL), looking at the log anyway after IDLE_POLL_LISTENING (a
# NOTIFY sent while we were not listening is lost); without LISTEN (SQLite) look every IDLE_POLL.
IDLE_POLL_LISTENING = 1.0
IDLE_POLL = 0.05
MAX_BACKOFF = 30.0
PUBLISH_TIMEOUT = 5.0
CONNECT_WAIT = 5.0


class BridgeAuthError(Exception):
    """The server refused our credentials, or TLS failed (untrusted certificate, client certificate refused, no TLS
    on offer while TLS settings are given); the message names the setting."""


def make_owner_id():
    return f"bridge:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _db(fn):
    """A database call from the loop: in the one thread Django's connection lives in, stale connections tidied."""
    def call(*args):
        close_old_connections()
        return fn(*args)
    return sync_to_async(call, thread_sensitive=True)


class Bridge:
    def __init__(self, *, owner=None, lease_seconds=DEFAULT_LEASE_SECONDS, interval=DEFAULT_INTERVAL):
        if interval <= 0 or interval >= lease_seconds:
            raise ValueError("interval must be positive and shorter than lease_seconds")
        self.owner = owner or make_owner_id()
        self.stream = settings.NATS_STREAM
        self.prefix = settings.NATS_SUBJECT_PREFIX
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.stopping = asyncio.Event()
        self.failures = 0
        self.leased = False
        self.published = 0
        self.closing = False
        self.listener = PgListener(SEQUENCED_CHANNEL, "Bridge")
        self.wakeups = {"notify": 0, "poll": 0}  # how idle waits ended
        self.idle = False  # caught up and waiting (tests wait for it before committing more)

    # --- connection ------------------------------------------------------------------------
    async def _connect(self):
        """Connect (nats-py reconnects on its own afterwards); a refused credential ends the attempt at once with
        BridgeAuthError, an unreachable server after CONNECT_WAIT with ConnectionError: run() backs off and says why."""
        errors, refused, connected = [], asyncio.Event(), False

        async def on_error(exc):
            errors.append(exc)
            why = refusal(exc)
            if why:
                refused.set()
                if connected:  # while connecting, the attempt's failure is logged once by run()
                    logger.error("%s", why)
            elif connected:
                logger.warning("NATS: %s", exc)

        async def on_disconnect():
            if self.closing:  # our own close, not an outage
                return
            logger.warning("Disconnected from NATS; reconnecting (the log keeps every event meanwhile)")

        async def on_reconnect():
            logger.info("Reconnected to NATS")

        options, client = connect_options(), TLSOnlyClient()
        connecting = asyncio.ensure_future(client.connect(
            **options, error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
            connect_timeout=2, reconnect_time_wait=1, max_reconnect_attempts=-1))
        refused_wait, stop = asyncio.ensure_future(refused.wait()), asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({connecting, refused_wait, stop}, timeout=CONNECT_WAIT, return_when=asyncio.FIRST_COMPLETED)
        refused_wait.cancel()
        stop.cancel()
        if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
            connected = True
            return client
        if not connecting.done():
            connecting.cancel()
        elif not connecting.cancelled():
            errors.append(connecting.exception())
        refusals = [why for why in map(refusal, errors) if why]
        if refusals:
            raise BridgeAuthError(refusals[-1])
        reason = repr(errors[-1]) if errors else f"no answer within {CONNECT_WAIT:g}s"
        raise ConnectionError(f"cannot reach NATS at {', '.join(map(redacted, options['servers']))}: {reason}")

    # --- one batch -------------------------------------------------------------------------
    async def publish_batch(self, js, cursor):
        """Publish the next batch after `cursor`; returns the new cursor (None when the lease was lost)."""
        events = await _db(bus_lease.committed_after)(cursor, settings.NATS_BATCH_SIZE)
        if not events:
            return cursor
        for event in events:
            body = json.dumps(event.envelope(), separators=(",", ":")).encode()
            await js.publish(f"{self.prefix}.{event.type}", body, timeout=PUBLISH_TIMEOUT, stream=self.stream,
                             headers={"Nats-Msg-Id": str(event.event_id)})
        last = events[-1].seq
        if not await _db(bus_lease.advance)(self.stream, self.owner, last):
            logger.warning("%s: lost the lease on %s; stopping publishing", self.owner, self.stream)
            self.leased = False
            return None
        self.published += len(events)
        return last

    async def _renew(self):
        cursor = await _db(bus_lease.take_lease)(self.stream, self.owner, self.lease_seconds)
        if (cursor is not None) != self.leased:
            self.leased = cursor is not None
            logger.info("%s: %s the lease on stream %s", self.owner, "holds" if self.leased else "waits for",
                        self.stream)
        return cursor

    async def _wait(self, seconds):
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _idle(self):
        """Caught up: until new events are sequenced (NOTIFY), the poll interval, or stop()."""
        if connection.vendor == "postgresql" and not self.listener.listening:
            await self.listener.listen("postgresql", await _db(lambda: connection.get_connection_params())())
        timeout = IDLE_POLL_LISTENING if self.listener.listening else IDLE_POLL
        stop, woken = asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.listener.wait(timeout))
        # Both end by themselves after `timeout`; the margin only bounds a hung LISTEN connection.
        self.idle = True
        try:
            await asyncio.wait({stop, woken}, timeout=timeout + 5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.idle = False
        for task in (stop, woken):
            task.cancel()
        notified = (await asyncio.gather(stop, woken, return_exceptions=True))[1] is True
        if not self.stopping.is_set():
            self.wakeups["notify" if notified else "poll"] += 1

    async def pump(self, js, *, once=False):
        """Publish while we hold the lease; with `once`, return once caught up."""
        loop = asyncio.get_running_loop()
        cursor, renewed = await self._renew(), loop.time()
        while not self.stopping.is_set():
            if cursor is None or loop.time() - renewed >= self.interval:
                cursor, renewed = await self._renew(), loop.time()
                if cursor is None:  # another bridge holds it (with `once` too: wait for it to lapse)
                    await self._wait(self.interval)
                    continue
            new = await self.publish_batch(js, cursor)
            self.failures = 0
            if new == cursor:
                if once:
                    return
                await self._idle()
            cursor = new

    # --- the loop ----------------------------------------------------------------------------
    async def run(self, *, once=False):
        """Connect, ensure the stream, publish; on NATS trouble back off and start again. BridgeConfigError
        (and with `once` any failure) is raised to the caller."""
        logger.info("runbridge %s started: stream %s, subjects %s.>", self.owner, self.stream, self.prefix)
        try:
            while not self.stopping.is_set():
                nc = None
                try:
                    nc = await self._connect()
                    js = nc.jetstream(timeout=PUBLISH_TIMEOUT)
                    await ensure_stream(js)
                    await self.pump(js, once=once)
                    if once:
                        return
                except BridgeConfigError:
                    raise
                except (BridgeAuthError, ConnectionError, NatsError, OSError, asyncio.TimeoutError, DatabaseError) as exc:
                    if once:
                        raise
                    self.failures += 1
                    delay = min(MAX_BACKOFF, 2 ** min(self.failures - 1, 5))
                    log = logger.error if isinstance(exc, BridgeAuthError) else logger.warning
                    what = "the database" if isinstance(exc, DatabaseError) else "NATS"
                    log("Bridge to %s failed (%s); retrying in %.0fs", what, exc or type(exc).__name__, delay)
                    await self._wait(delay)
                finally:
                    if nc is not None:
                        self.closing = True
                        try:
                            await asyncio.wait_for(nc.close(), timeout=3)
                        except Exception:  # closing a dead connection; nothing left to save
                            logger.debug("closing the NATS connection failed", exc_info=True)
                        self.closing = False
        finally:
            await self.listener.close()
            if self.leased:
                await _db(bus_lease.release_lease)(self.stream, self.owner)
            await sync_to_async(lambda: connection.close(), thread_sensitive=True)()  # the ORM thread's connection
            logger.info("runbridge %s stopped (%d events published)", self.owner, self.published)

    def stop(self):
        self.stopping.set()
