"""Wake a long-running loop with PostgreSQL LISTEN/NOTIFY (the batch sender, the event bus bridge), polling elsewhere.

A loop that waits for new rows either polls (latency = the poll interval, CPU spent while idle) or listens: a
NOTIFY sent in the transaction that made the rows is delivered when it commits, so the loop wakes within
milliseconds. The listener keeps a connection of its own (autocommit, outside Django's), so listening never holds
a transaction. The loop still polls at its interval as a safety net: a NOTIFY sent while nobody listened (a restart,
a lost connection) is not queued by PostgreSQL.
"""
import asyncio
import contextlib
import logging
import time

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0  # after a failed LISTEN, try again no sooner (the loop keeps polling meanwhile)


class PgListener:
    """LISTEN on `channel`. `wait(timeout)` returns True when notified, False after the timeout; without PostgreSQL
    (or after losing the connection, until `listen()` succeeds again) it simply sleeps the timeout."""

    def __init__(self, channel, label):
        self.channel = channel
        self.label = label  # who listens, for the log ("Sender", "Bridge")
        self._connection = None
        self._next_attempt = 0.0

    @property
    def listening(self):
        return self._connection is not None

    async def listen(self, vendor, params):
        """Open the connection and LISTEN, if the database is PostgreSQL and we do not listen yet. `params` are
        Django's connection parameters (connection.get_connection_params(), read on the ORM's thread)."""
        if vendor != "postgresql" or self._connection is not None or time.monotonic() < self._next_attempt:
            return
        import psycopg  # PostgreSQL deployments only

        self._next_attempt = time.monotonic() + RETRY_SECONDS

        params = {key: value for key, value in params.items() if key not in ("cursor_factory", "context")}
        try:
            self._connection = await psycopg.AsyncConnection.connect(**params, autocommit=True)
            await self._connection.execute(f"LISTEN {self.channel}")
        except psycopg.Error as exc:
            logger.warning("%s cannot LISTEN (%s); polling instead", self.label, type(exc).__name__)
            await self.close()

    async def wait(self, timeout):
        """Until a NOTIFY (True) or `timeout` seconds (False). Notifications that arrived meanwhile are drained:
        one look at the table answers them all."""
        if self._connection is None:
            await asyncio.sleep(timeout)
            return False
        import psycopg

        try:
            notified = False
            async for _ in self._connection.notifies(timeout=timeout, stop_after=1):
                notified = True
            if notified:
                async for _ in self._connection.notifies(timeout=0):
                    pass
            return notified
        except psycopg.Error as exc:
            logger.warning("%s lost its LISTEN connection (%s); polling until it is back", self.label,
                           type(exc).__name__)
            await self.close()
        return False

    async def close(self):
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
