"""A loopback fake generic webhook receiver: a real HTTP server for tests and bench/ scripts.

    receiver = FakeReceiver(secret="whsec_...").start()   # 127.0.0.1, a free port, a background thread
    receiver.url                                           # http://127.0.0.1:<port>/hook
    receiver.mode = "rate_limited"                         # switch behaviour at run time
    receiver.requests                                      # every POST received, signed or not
    receiver.stop()

It records every POST (method, path, headers, raw body, parsed JSON) and checks Standard-Webhooks
signatures with its own HMAC code (it deliberately does not import connectors.signing, so a bug
there cannot hide itself): base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}"))
offered as `v1,<b64>` in `webhook-signature` (several may be space-separated), within a 5-minute
window. The key is the base64-decoded rest of a `whsec_` secret, else the secret's UTF-8 bytes.
With `require_signature` (the default when a secret is given) an unverified request gets 401; each
record says whether it verified (`verified`) and, if not, why (`rejection`).

Modes (for requests that passed the signature check):
    ok            200 {"ok": true}
    rate_limited  429 with `Retry-After: <retry_after>` (seconds)
    error_500     500
    error_503     503 with `Retry-After: <retry_after>`
    error_400     400 (a refusal that retrying cannot fix)
    slow          sleeps `slow_seconds` (longer than the client's timeout), then answers 200
`queue_modes(...)` makes the next requests use the given modes, one each, before falling back to
`mode`. `down()` stops listening (`.url` then points at a closed port), `up()` listens again on
the same port.

Only the standard library is used, so bench scripts can import it without Django.
"""
import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "rate_limited", "error_500", "error_503", "error_400", "slow")
TOLERANCE_SECONDS = 5 * 60


# --- the receiver's own signature check ------------------------------------------------------


def secret_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode("utf-8")


def compute_signature(secret: str, msg_id: str, timestamp, body: bytes) -> str:
    """The base64 signature (without `v1,`) that a sender holding `secret` offers."""
    to_sign = f"{msg_id}.{timestamp}.".encode("utf-8") + body
    return base64.b64encode(hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()).decode("ascii")


def sign_request(secret: str, body: bytes, msg_id: str, timestamp=None) -> dict:
    """Headers a Standard-Webhooks sender would send: for tests that play the sender's part."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + compute_signature(secret, msg_id, timestamp, body),
    }


def check_signature(secrets, headers, body: bytes, *, now=None, tolerance=TOLERANCE_SECONDS):
    """None if one of `secrets` signed this request recently, else the reason it did not verify."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    offered_header = lowered.get("webhook-signature", "")
    if not msg_id or not raw_timestamp or not offered_header:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if not raw_timestamp.isdigit():
        return "webhook-timestamp is not a non-negative integer"
    now = time.time() if now is None else now
    if abs(now - int(raw_timestamp)) > tolerance:
        return f"webhook-timestamp is {int(now - int(raw_timestamp))}s away from now (tolerance {tolerance}s)"
    offered = [value.encode("ascii", "replace") for version, _, value in
               (part.partition(",") for part in offered_header.split(" ")) if version == "v1" and value]
    if not offered:
        return "no v1 signature offered"
    for secret in secrets:
        try:
            expected = compute_signature(secret, msg_id, raw_timestamp, body).encode("ascii")
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return None
    return "no offered signature matches"


# --- recording -------------------------------------------------------------------------------


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict  # lower-cased names
    body: bytes
    json: object  # the parsed body, or None if it was not JSON
    verified: bool  # a configured secret signed it, inside the replay window
    rejection: str = ""  # why it did not verify ("" if it did, or if no secret is configured)
    mode: str = ""  # the mode that answered
    status: int = 0  # the status the receiver answered (or would have, had the client waited)
    received_at: float = field(default_factory=time.time)

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id", "")


# --- the server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a handler sleeping in slow mode
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients that timed out closed their socket; the late answer then fails: expected


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeReceiver/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: tests read `receiver.requests`
        pass

    def do_POST(self):
        self.server.receiver._handle(self)

    def do_GET(self):
        self._send(405, b'{"error": "POST only"}', {})

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _send(self, status, payload: bytes, extra_headers):
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra_headers.items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            pass  # the client went away (it timed out on a slow answer)
        self.close_connection = True


class FakeReceiver:
    def __init__(self, secret=None, *, mode="ok", path="/hook", retry_after=7, slow_seconds=5.0,
                 require_signature=None, tolerance=TOLERANCE_SECONDS, host="127.0.0.1"):
        """`secret`: one signing secret, a list (all accepted, as during key rotation), or None to
        check nothing. `require_signature` defaults to True when a secret is given."""
        if secret is None:
            self.secrets = []
        else:
            self.secrets = [secret] if isinstance(secret, str) else list(secret)
            if not self.secrets or not all(self.secrets):
                raise ValueError("secrets must be non-empty strings")
        self.require_signature = bool(self.secrets) if require_signature is None else require_signature
        if self.require_signature and not self.secrets:
            raise ValueError("require_signature needs a secret")
        self.mode = mode
        self.path = path
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.tolerance = tolerance
        self.host = host
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._queued_modes: deque = deque()
        self._server = None
        self._thread = None
        self._stopping = threading.Event()
        self._port = None

    # --- life cycle ---
    def start(self):
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._port or 0), _Handler)  # the same port again after down()/up()
        server.receiver = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-receiver-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in slow mode
        server.shutdown()
        server.server_close()
        self._thread.join(timeout=5)
        self._thread = None

    def down(self):
        """Simulate an unreachable receiver: stop listening; `.url` now points at a closed port."""
        self.stop()

    def up(self):
        return self.start()

    @property
    def running(self):
        return self._server is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        if self._port is None:
            raise RuntimeError("FakeReceiver has not been started")
        return self._port

    @property
    def url(self):
        return f"http://{self.host}:{self.port}{self.path}"

    # --- behaviour and inspection ---
    def queue_modes(self, *modes):
        for mode in modes:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
        with self._lock:
            self._queued_modes.extend(modes)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def verified(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.verified]

    def clear(self):
        with self._lock:
            self._requests.clear()
            self._queued_modes.clear()

    def wait_for_requests(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return self.requests
            time.sleep(0.01)
        raise TimeoutError(f"FakeReceiver got {len(self.requests)} requests, expected {count}")

    # --- answering ---
    def _next_mode(self):
        with self._lock:
            if self._queued_modes:
                return self._queued_modes.popleft()
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        return self.mode

    def _handle(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        rejection = check_signature(self.secrets, headers, body, tolerance=self.tolerance) if self.secrets else None
        record = ReceivedRequest(
            method=handler.command, path=handler.path, headers=headers, body=body, json=parsed,
            verified=bool(self.secrets) and rejection is None, rejection=rejection or "",
        )
        if rejection is not None and self.require_signature:
            record.status = 401
            self._append(record)
            handler._send(401, json.dumps({"error": "invalid signature", "detail": rejection}).encode(), {})
            return
        mode = record.mode = self._next_mode()
        status, extra = {
            "ok": (200, {}),
            "slow": (200, {}),
            "rate_limited": (429, {"Retry-After": str(self.retry_after)}),
            "error_500": (500, {}),
            "error_503": (503, {"Retry-After": str(self.retry_after)}),
            "error_400": (400, {}),
        }[mode]
        record.status = status
        self._append(record)  # recorded before a slow answer, so tests can count it at once
        if mode == "slow":
            self._stopping.wait(self.slow_seconds)
        payload = {"ok": True} if status == 200 else {"error": f"fake receiver answers {status}"}
        handler._send(status, json.dumps(payload).encode(), extra)

    def _append(self, record):
        with self._lock:
            self._requests.append(record)
