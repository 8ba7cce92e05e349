"""The batch sender behind `manage.py runsender`: claim due deliveries, send them concurrently, record the batch.

One asyncio event loop per process: claim a batch (claims.py) → send all of it at once, at most `concurrency` in
flight, each platform over its long-lived client (BaseConnector.send_async) → record every outcome in one
transaction (outcomes.py, as the per-delivery task does) → repeat. When nothing is due it waits for a wake-up
(PostgreSQL LISTEN on task_queue.SENDER_CHANNEL, which send_message NOTIFYs at commit) or for
DELIVERY_SENDER_POLL_SECONDS, whichever comes first: the poll finds retries that came due and wake-ups sent
while no sender was listening. Database work runs on one thread of its own (Django's ORM is synchronous), so the
loop keeps sending while it waits for nothing else.

Run as many senders as needed, on one machine or several: PostgreSQL is the only coordination (SKIP LOCKED
claims). A sender killed mid-batch leaves its rows `sending`; the sweeper queues them again after
DELIVERY_SENDING_TIMEOUT, which is the one place a duplicate send can come from, as with the task engine.
"""
import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from brain_connectors.shared.pg_listener import PgListener
from connectors import task_queue as queue
from connectors.delivery import claims, outcomes
from connectors.models import Delivery
from connectors.permissions import Principal
from connectors.platforms.base import ConnectorError, close_sender_clients
from connectors.registry.kinds import connector_for

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 64


@dataclass
class SenderStats:
    batches: int = 0
    sent: int = 0
    failed: int = 0  # retries included
    wakeups: dict = field(default_factory=lambda: {"notify": 0, "poll": 0})


def record_batch(results):
    """Record a batch's outcomes, [(Claim, SendResult or None, ConnectorError or None)], in one transaction.

    The platforms have these messages now: recording must outlast a database blip (a row left `sending` is sent
    again by the sweeper), so it is retried while the database recovers, as the task engine's record is."""
    system = Principal.system_actor("delivery")

    def record():
        with transaction.atomic():
            rows = Delivery.objects.select_for_update(of=("self",)).in_bulk([claim.delivery.pk for claim, _, _ in results])
            now = timezone.now()
            for claim, result, error in results:
                row = rows.get(claim.delivery.pk)
                if row is None:
                    continue  # deleted with its connector meanwhile
                if error is None:
                    outcomes.settle_sent(system, row, result, now)
                else:
                    outcomes.settle_failure(system, row, error)

    outcomes.while_database_recovers(record)


class Sender:
    def __init__(self, *, batch=claims.DEFAULT_BATCH, concurrency=DEFAULT_CONCURRENCY, poll_seconds=None):
        self.batch = batch
        self.concurrency = concurrency
        self.poll_seconds = settings.DELIVERY_SENDER_POLL_SECONDS if poll_seconds is None else poll_seconds
        self.stats = SenderStats()
        self.stopping = None
        self._loop = None
        self._database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sender-db")
        self._listener = PgListener(queue.SENDER_CHANNEL, "Sender")

    def stop(self):
        """Finish the batch in hand, then return from run(). Safe from any thread and from a signal handler."""
        if self.stopping is not None:
            self._loop.call_soon_threadsafe(self.stopping.set)

    async def run(self, *, until_idle=False):
        """Send until stop() (or, with until_idle, until nothing is due). Returns the stats."""
        loop = self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        # Platforms without an async client send from threads (BaseConnector.send_async): as many as may be in flight.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=min(self.concurrency, 32), thread_name_prefix="send"))
        try:
            await self._listen()
            while not self.stopping.is_set():
                try:
                    claimed = await self._on_database(claims.claim_batch, self.batch)
                except DatabaseError as exc:
                    logger.warning("Sender could not claim deliveries (%s); trying again", type(exc).__name__)
                    claimed = None
                if claimed:
                    await self._send_and_record(claimed)
                    continue  # a batch settled: the messages queued behind it may be due now
                if until_idle and claimed is not None:
                    break
                await self._wait()
        finally:
            await self._close()
        return self.stats

    async def _send_and_record(self, claimed):
        results = await self._send_all(claimed)
        try:
            await self._on_database(record_batch, results)
        except DatabaseError:
            # Left `sending`: the sweeper re-drives them after DELIVERY_SENDING_TIMEOUT.
            logger.exception("Sender could not record a batch of %d deliveries", len(results))
            return
        self.stats.batches += 1
        failed = sum(1 for _, _, error in results if error is not None)
        self.stats.sent += len(results) - failed
        self.stats.failed += failed

    async def _send_all(self, claimed):
        slots = asyncio.Semaphore(self.concurrency)
        platforms = {}  # one platform object per connector per batch

        async def send(claim):
            async with slots:
                try:
                    platform = platforms.get(claim.connector.pk) or platforms.setdefault(
                        claim.connector.pk, connector_for(claim.connector)
                    )
                    result = await platform.send_async(claim.message, str(claim.delivery.pk))
                    return claim, result, None
                except ConnectorError as exc:
                    return claim, None, exc
                except Exception as exc:
                    logger.exception("Unexpected error delivering %s", claim.delivery.pk)
                    return claim, None, ConnectorError(f"{type(exc).__name__}: {exc}")

        return await asyncio.gather(*(send(claim) for claim in claimed))

    async def _on_database(self, work, *args):
        def run():
            close_old_connections()  # a broken connection, or one past CONN_MAX_AGE, is replaced
            return work(*args)

        return await asyncio.get_running_loop().run_in_executor(self._database, run)

    # --- waking up ---------------------------------------------------------------------------------------------
    async def _listen(self):
        """LISTEN on a connection of its own (PostgreSQL); without one, the sender only polls."""
        if connection.vendor == "postgresql" and not self._listener.listening:
            await self._listener.listen(connection.vendor, await self._on_database(connection.get_connection_params))

    async def _wait(self):
        """Until a NOTIFY, the poll interval, or stop()."""
        await self._listen()  # again, if the listening connection was lost
        stopping = asyncio.ensure_future(self.stopping.wait())
        woken = asyncio.ensure_future(self._listener.wait(self.poll_seconds))
        # Both end by themselves after poll_seconds; the margin only bounds a hung LISTEN connection.
        await asyncio.wait({stopping, woken}, timeout=self.poll_seconds + 5, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, woken):
            task.cancel()
        notified = False
        with contextlib.suppress(asyncio.CancelledError, Exception):
            notified = await woken
        self.stats.wakeups["notify" if notified else "poll"] += 1

    async def _close(self):
        await self._listener.close()
        await close_sender_clients()
        with contextlib.suppress(Exception):
            await self._on_database(connection.close)
        self._database.shutdown(wait=True)
