"""A loopback fake generic webhook receiver: a real HTTP server for tests and bench/ scripts.

    receiver = FakeReceiver(secret="whsec_...").start()   # 127.0.0.1, a free port, a background thread
    receiver.url                                           # http://127.0.0.1:<port>/hook
    receiver.mode = "rate_limited"                         # switch behaviour at run time
    receiver.requests                                      # every POST received, signed or not
    receiver.stop()

It records every POST (method, path, headers, raw body, parsed JSON) and checks Standard-Webhooks
signatures with its own HMAC code (it deliberately does not import brain_connectors.shared.signing, so a bug
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
`mode`. `add_file(path, bytes)` serves a file on GET (unsigned, as a file host would); `file_requests`
lists the paths fetched. `down()` stops listening (`.url` then points at a closed port), `up()` listens again on
the same port.

Only the standard library is used, so bench scripts can import it without Django.
"""
import json
import time
from dataclasses import dataclass, field

from .base import LoopbackServer, QuietHandler, ScriptedModes, read_request
from .standard_webhooks import TOLERANCE_SECONDS, check_signature, compute_signature, sign_request  # noqa: F401

MODES = ("ok", "rate_limited", "error_500", "error_503", "error_400", "slow")


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


class _Handler(QuietHandler):
    server_version = "FakeReceiver/1.0"

    def do_POST(self):
        self.server.fake._handle(self)

    def do_GET(self):
        if not self.server.fake._serve_file(self):
            self._send(405, b'{"error": "POST only"}', {})

    def _refuse(self):
        self._send(405, b'{"error": "POST only"}', {})

    do_PUT = do_PATCH = do_DELETE = do_HEAD = _refuse

    def _send(self, status, payload: bytes, extra_headers, content_type="application/json"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
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


class FakeReceiver(ScriptedModes, LoopbackServer):
    MODES = MODES
    handler_class = _Handler
    thread_name = "fake-receiver"

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
        self._init_modes(mode)
        self.path = path
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.tolerance = tolerance
        self.host = host
        self.files = {}  # path → (bytes, content type): what GET serves (attachments sent by URL)
        self.file_requests = []  # the paths of those GETs, in order
        self._init_server()

    def add_file(self, path, data, content_type="application/octet-stream"):
        """Serve `data` on GET `path` (a file a sender's inbound webhook points at); return its URL."""
        self.files[path] = (data, content_type)
        return f"http://{self.host}:{self.port}{path}"

    def _serve_file(self, handler) -> bool:
        if handler.path not in self.files:
            return False
        self.file_requests.append(handler.path)
        data, content_type = self.files[handler.path]
        handler._send(200, data, {}, content_type)
        return True

    # --- behaviour and inspection ---
    @property
    def verified(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.verified]

    # --- answering ---
    def _handle(self, handler):
        body, headers, parsed = read_request(handler)
        rejection = check_signature(self.secrets, headers, body, tolerance=self.tolerance) if self.secrets else None
        record = ReceivedRequest(
            method=handler.command, path=handler.path, headers=headers, body=body, json=parsed,
            verified=bool(self.secrets) and rejection is None, rejection=rejection or "",
        )
        if rejection is not None and self.require_signature:
            record.status = 401
            self._record(record)
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
        self._record(record)  # recorded before a slow answer, so tests can count it at once
        if mode == "slow":
            self._stopping.wait(self.slow_seconds)
        payload = {"ok": True} if status == 200 else {"error": f"fake receiver answers {status}"}
        handler._send(status, json.dumps(payload).encode(), extra)
