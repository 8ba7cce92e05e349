"""The fake Slack's Socket Mode side (hello, push_event, acks, disconnect): FakeSlack's SocketMode mixin.

The websocket route is registered by FakeSlack.start() (slack_server.py), which also provides _lock, _run and
_close_sockets.
"""

import asyncio
import contextlib
import json
import uuid

from aiohttp import WSCloseCode, WSMsgType, web

DEBUG_INFO = {"host": "applink-fake-1", "build_number": 1, "approximate_connection_time": 18060}


class SocketMode:
    """The Socket Mode methods of FakeSlack: the `/link/` websocket, pushing envelopes, acks and disconnects."""

    # --- Socket Mode ---
    def _open(self):
        with self._lock:
            return list(self._sockets)

    @property
    def open_sockets(self):
        return len(self._open())

    async def _handle_link(self, request):
        ws = web.WebSocketResponse(timeout=2.0)  # autoping: pings get their pong; 2 s for a close handshake
        await ws.prepare(request)
        with self._lock:
            self.socket_connections += 1
            count = len(self._sockets) + 1
        try:
            await ws.send_json({"type": "hello", "num_connections": count, "debug_info": DEBUG_INFO,
                                "connection_info": {"app_id": self.app_id}})
            with self._lock:  # push_event may use it only now: hello comes first, as on Slack
                self._sockets.append(ws)
                self._lock.notify_all()
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_text(message.data)
        finally:
            with self._lock:
                self._sockets = [s for s in self._sockets if s is not ws]
                self._lock.notify_all()
        return ws

    def _on_text(self, data):
        with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object: not an ack
            envelope_id = json.loads(data).get("envelope_id")
            if envelope_id:
                with self._lock:
                    self.acks.append(envelope_id)
                    self._lock.notify_all()

    def push_event(self, payload, *, retry_attempt=0, envelope_type="events_api"):
        """Send an events_api (or `envelope_type`: interactive) envelope to the newest connection; its envelope_id."""
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": envelope_type, "accepts_response_payload": False,
                    "retry_attempt": retry_attempt, "retry_reason": "timeout" if retry_attempt else "",
                    "payload": payload}
        sockets = self._open()
        if not sockets:
            raise RuntimeError("no Socket Mode client is connected to FakeSlack (see wait_for_socket)")
        self._run(sockets[-1].send_json(envelope))
        return envelope_id

    def wait_for_socket(self, timeout=5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: bool(self._sockets), timeout)

    def wait_for_ack(self, envelope_id, timeout=5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: envelope_id in self.acks, timeout)

    def disconnect_sockets(self, reason="refresh_requested") -> int:
        """Send `disconnect` to every open connection, close them `disconnect_grace` s later; how many."""
        async def disconnect():
            sockets = self._open()
            for ws in sockets:
                with contextlib.suppress(ConnectionError):
                    await ws.send_json({"type": "disconnect", "reason": reason,
                                        "debug_info": {"host": DEBUG_INFO["host"]}})
            # Not awaited here: the close needs the client's answer, and the client may run on the loop of
            # the (async) test calling this.
            task = asyncio.ensure_future(self._close_sockets(sockets, WSCloseCode.OK, 2.0, self.disconnect_grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return len(sockets)

        return self._run(disconnect())
