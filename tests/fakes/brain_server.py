"""A loopback fake BRAIN: a real HTTP server for tests and bench/ scripts.

    fake = FakeBrain(secret="whsec_...").start()   # 127.0.0.1, a free port, a background thread
    fake.url                                        # http://127.0.0.1:<port>/brain
    fake.mode = "error_500"                         # switch behaviour at run time
    fake.requests                                   # every request received, accepted or not
    fake.stop()

It verifies Standard-Webhooks signatures on its own (it deliberately does not import
brain_connectors.shared.signing, so a bug there cannot hide itself): base64(HMAC-SHA256(key,
f"{webhook-id}.{webhook-timestamp}.{body}")) offered as `v1,<b64>` in `webhook-signature`
(possibly several, space-separated), with a 5-minute replay window. The key is the base64-decoded
rest of a `whsec_` secret, else the secret's UTF-8 bytes. Anything that does not verify gets 401.

Modes (for requests whose signature verified):
    normal       200 {"reply": "fake brain got: <content> with <n> context"} (+ "buttons": fake.buttons, "attachments": fake.attachments when set)
    no_reply     200 {"reply": null}
    slow         sleeps `slow_seconds` (longer than the client's timeout), then answers as normal
    garbage      200 with a body that is not JSON
    wrong_shape  200 with JSON lacking "reply"
    error_500    500
    error_400    400 (a refusal that retrying cannot fix)
`queue_modes(...)` makes the next accepted requests use the given modes, one each, before falling
back to `mode` (e.g. two 500s, then a normal answer). `down()` stops the server but keeps `.url`,
which then points at a closed port; `closed_url()` gives such a URL without any server.

Only the standard library is used, so bench scripts can import it without Django.
"""
import json
import socket
import time
from dataclasses import dataclass, field

from .base import LoopbackServer, QuietHandler, ScriptedModes, read_request
from .standard_webhooks import TOLERANCE_SECONDS, check_signature, compute_signature, sign_request  # noqa: F401

MODES = ("normal", "no_reply", "slow", "garbage", "wrong_shape", "error_500", "error_400")


# --- recording -------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict  # lower-cased names
    body: bytes
    json: object  # the parsed body, or None if it was not JSON
    accepted: bool  # the signature verified (and the request was inside the replay window)
    rejection: str = ""  # why it was not accepted
    mode: str = ""  # the mode that answered an accepted request
    status: int = 0  # the status code the fake answered (or would have, had the client waited)
    received_at: float = field(default_factory=time.time)

    @property
    def content(self):
        """The message content BRAIN was asked about, if the body had the expected shape."""
        try:
            return self.json["message"]["content"]
        except (TypeError, KeyError):
            return None

    @property
    def context(self):
        try:
            return self.json["context"]
        except (TypeError, KeyError):
            return None


# --- the server ------------------------------------------------------------------------------


class _Handler(QuietHandler):
    server_version = "FakeBrain/1.0"

    def do_POST(self):
        self.server.fake._handle(self)

    def do_GET(self):
        self._send(405, b'{"error": "POST only"}')

    do_PUT = do_PATCH = do_DELETE = do_GET

    def _send(self, status, payload: bytes, content_type="application/json"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            pass  # the client went away (e.g. it timed out on a slow answer)
        self.close_connection = True


class FakeBrain(ScriptedModes, LoopbackServer):
    MODES = MODES
    handler_class = _Handler
    thread_name = "fake-brain"

    def __init__(self, secret, *, mode="normal", path="/brain", slow_seconds=5.0, tolerance=TOLERANCE_SECONDS,
                 host="127.0.0.1"):
        """`secret` is one signing secret or a list of them (all accepted, as during key rotation)."""
        self.secrets = [secret] if isinstance(secret, str) else list(secret)
        if not self.secrets or not all(self.secrets):
            raise ValueError("FakeBrain needs at least one non-empty signing secret")
        self._init_modes(mode)
        self.path = path
        self.slow_seconds = slow_seconds
        self.tolerance = tolerance
        self.host = host
        self.buttons = None  # set to a list of {"id", "label"} to answer with buttons in normal mode
        self.attachments = None  # set to a list of {"data"|"url", ...} to answer with files in normal mode
        self._init_server()

    @staticmethod
    def closed_url(path="/brain"):
        """A loopback URL nothing listens on (the port was free a moment ago)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"http://127.0.0.1:{port}{path}"

    # --- control and inspection ---
    def reset(self):
        self.clear()
        self.mode = "normal"

    @property
    def accepted(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.accepted]

    @property
    def rejected(self) -> list[RecordedRequest]:
        return [r for r in self.requests if not r.accepted]

    # --- answering ---
    def reply_for(self, data):
        """The reply text in normal mode; override or monkeypatch for other scripted answers."""
        content = data["message"]["content"]
        return f"fake brain got: {content} with {len(data.get('context') or [])} context"

    def _handle(self, handler):
        body, headers, parsed = read_request(handler)
        rejection = check_signature(self.secrets, headers, body, tolerance=self.tolerance)
        record = RecordedRequest(
            method=handler.command, path=handler.path, headers=headers, body=body, json=parsed,
            accepted=rejection is None, rejection=rejection or "",
        )
        if rejection is not None:
            record.status = 401
            self._record(record)
            handler._send(401, json.dumps({"error": "invalid signature", "detail": rejection}).encode())
            return
        mode = record.mode = self._next_mode()
        status, payload, content_type = self._answer(mode, parsed)
        record.status = status
        self._record(record)  # recorded before a slow answer, so tests can count it at once
        if mode == "slow":
            self._stopping.wait(self.slow_seconds)
        handler._send(status, payload, content_type)

    def _answer(self, mode, data):
        if mode == "error_500":
            return 500, b'{"error": "fake brain failure"}', "application/json"
        if mode == "error_400":
            return 400, b'{"error": "fake brain refuses this request"}', "application/json"
        if mode == "garbage":
            return 200, b"<html>this is not json</html>", "text/html"
        if mode == "wrong_shape":
            return 200, json.dumps({"answer": "I have no reply field"}).encode(), "application/json"
        if mode == "no_reply":
            return 200, b'{"reply": null}', "application/json"
        # normal and slow
        try:
            reply = self.reply_for(data)
        except (TypeError, KeyError, AttributeError):
            return 400, b'{"error": "body lacks message.content"}', "application/json"
        answer = {"reply": reply} if self.buttons is None else {"reply": reply, "buttons": self.buttons}
        if self.attachments is not None:
            answer["attachments"] = self.attachments
        return 200, json.dumps(answer, ensure_ascii=False).encode(), "application/json"
