"""What every loopback fake HTTP server shares: a real ThreadingHTTPServer on 127.0.0.1 in a
background thread, that can go down and come back up on the same port. Standard library only, so
bench/ scripts use the fakes without Django."""
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a handler sleeping in a slow mode
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a client opening dozens of keep-alive connections at once (the
    # batch sender) overflowed it, and some of its first requests ended in a reset. Real API servers take them all.
    request_queue_size = 256

    def __init__(self, address, handler_class, fake):
        self.fake = fake
        self._connections = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler_class)

    def handle_error(self, request, client_address):
        pass  # clients that gave up (timeouts) close their socket; the late answer then fails: expected

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        """A server that goes down takes its kept-alive connections with it, as a real one does."""
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet: tests read what the fake recorded instead
        pass


class Restartable:
    """down()/up() and `with fake:` for any fake with start() and stop()."""

    def down(self):
        """Stop listening: calls now get "connection refused"; the address stays the same."""
        self.stop()

    def up(self):
        """Listen again on the same port after down()."""
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LoopbackServer(Restartable):
    """start()/stop(), down()/up() (connection refused in between, same `.url`), `with fake:`."""

    handler_class = QuietHandler
    thread_name = "fake"
    host = "127.0.0.1"
    path = ""  # appended to `.url`

    def _init_server(self):
        self._server = None
        self._thread = None
        self._port = None
        self._stopping = threading.Event()

    def start(self):
        if self._server is not None:
            return self
        self._stopping.clear()
        server = QuietServer((self.host, self._port or 0), self.handler_class, self)  # same port after up()
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.thread_name}-{self._port}", daemon=True)
        self._thread.start()
        return self

    def _wake_waiters(self):
        """Hook: wake handlers that wait on something of the fake's own (long polls)."""

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a slow mode
        self._wake_waiters()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        self._thread.join(timeout=5)
        self._thread = None

    @property
    def running(self):
        return self._server is not None

    @property
    def port(self):
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._port

    @property
    def url(self):
        return f"http://{self.host}:{self.port}{self.path}"


class ScriptedModes:
    """How a fake answers: `mode` until changed, and `queue_modes(...)` for the next requests,
    one mode each. Subclasses list their modes in MODES; requests are kept in `_requests`."""

    MODES: tuple = ()

    def _init_modes(self, mode):
        self.mode = mode
        self._lock = threading.Lock()
        self._requests = []
        self._queued_modes = deque()

    def _check_mode(self, mode):
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(self.MODES)}")

    def set_mode(self, mode):
        self._check_mode(mode)
        self.mode = mode

    def queue_modes(self, *modes):
        for mode in modes:
            self._check_mode(mode)
        with self._lock:
            self._queued_modes.extend(modes)

    def _next_mode(self):
        with self._lock:
            if self._queued_modes:
                return self._queued_modes.popleft()
        self._check_mode(self.mode)
        return self.mode

    def _record(self, request):
        with self._lock:
            self._requests.append(request)

    def clear(self):
        """Forget the requests and the queued modes (the current mode stays)."""
        with self._lock:
            self._requests.clear()
            self._queued_modes.clear()

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return self.requests
            time.sleep(0.01)
        raise TimeoutError(f"{type(self).__name__} got {len(self.requests)} requests, expected {count}")


def read_request(handler):
    """(raw body, lower-cased headers, parsed JSON or None) of the request a handler is serving."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    headers = {k.lower(): v for k, v in handler.headers.items()}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return body, headers, parsed
