"""The test client of /ws/events/ (tests/connectors/test_event_stream.py): a stream that records and acks what it
receives, reads up to explicit end markers (a later event, a ping) rather than trusting silence, and a condition wait."""
import asyncio
import inspect
import json
import time

from channels.testing import WebsocketCommunicator

from brain_connectors.asgi import application


async def until(predicate, what, timeout=5):
    """Wait for a condition (predicate may be async) instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not ((await value) if inspect.isawaitable(value := predicate()) else value):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


class Stream:
    """A websocket client of /ws/events/ that records what it receives and acks it."""

    opened = []  # every stream of the running test, disconnected when it ends

    def __init__(self, query="", token=None, headers=()):
        headers = list(headers)
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        self.comm = WebsocketCommunicator(application, f"/ws/events/{query}", headers=headers)
        self.hello = None
        self.seqs = []
        Stream.opened.append(self)

    async def open(self):
        connected, _ = await self.comm.connect(timeout=5)
        assert connected
        message = await self.next_message()
        assert message["type"] == "hello", message
        self.hello = message
        return self

    async def next_message(self, timeout=3):
        output = await self.comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            raise Closed(output.get("code"), output.get("reason", ""))
        return json.loads(output["text"])

    async def events(self, count, timeout=3, ack=True):
        received = []
        while len(received) < count:
            message = await self.next_message(timeout)
            if message["type"] == "event":
                received.append(message["event"])
                self.seqs.append(message["event"]["seq"])
        if ack and received:
            await self.comm.send_json_to({"type": "ack", "seq": received[-1]["seq"]})
        return received

    async def events_until(self, seq, timeout=3):
        """The events up to the end marker `seq`, a later event this stream may see. Events come in seq order,
        so whatever it should not have sent is in the list, however late it was sent (silence proves nothing)."""
        received = []
        while not received or received[-1]["seq"] < seq:
            received += await self.events(1, timeout)
        return received

    async def events_before_ping(self, seq, timeout=3):
        """The events sent before the first ping reporting `seq` as the log's latest: the server knew of it."""
        received = []
        while (message := await self.next_message(timeout))["type"] != "ping" or message["latest_seq"] < seq:
            if message["type"] == "event":
                received.append(message["event"])
        return received

    async def close_code(self, timeout=3):
        while True:
            try:
                await self.next_message(timeout)
            except Closed as closed:
                return closed.code, closed.reason

    async def close(self):
        # A receive that timed out has already cancelled the application (asgiref's rule).
        if not self.comm.future.done():
            await self.comm.disconnect()


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code, self.reason = code, reason
