"""A loopback fake Telegram Bot API: a real HTTP server for tests and bench/ scripts.

    fake = FakeTelegram().start()       # 127.0.0.1, a free port, a background thread
    fake.url                            # http://127.0.0.1:<port>: a connector's `api_base_url`
    fake.fail("flood", times=2)         # the next two calls answer 429 retry_after
    fake.enqueue_update({...})          # served by getUpdates
    fake.calls_to("sendMessage")        # every call received: method, params, token, status
    fake.stop()

Routes `/bot<token>/<method>` (method names are case-insensitive, as on Telegram) for getMe,
sendMessage, sendChatAction, setWebhook, deleteWebhook, getWebhookInfo, getUpdates, answerCallbackQuery
and getFile, the uploads sendPhoto, sendDocument, sendVoice, sendAudio, sendVideo, sendSticker and
sendMediaGroup (multipart/form-data, recorded in `sent_media`: telegram_media.py), and the file download `GET /file/bot<token>/<file_path>` (recorded as method
"downloadFile"), which serves the bytes registered with `add_file(file_id, data)`. Bodies
may be form-encoded (what python-telegram-bot sends; structured values are JSON strings), JSON,
or query strings. Every call is recorded, also refused ones.

Behaviour that follows Telegram's:
- tokens: any `<digits>:<secret>` token is accepted unless `tokens` is given, in which case the
  others get 401 Unauthorized; a malformed token gets 404 Not Found;
- getUpdates: `offset` confirms (drops) every update with a smaller update_id; answers the
  pending updates from `offset` on, up to `limit`; waits up to `timeout` seconds (capped by
  `max_long_poll`) for one to arrive; answers 409 while a webhook is set, and a second getUpdates
  for the same bot while one is waiting makes the first answer 409 "terminated by other
  getUpdates request" (counted in `get_updates_conflicts`);
- setWebhook: needs an https URL (unless `allow_http_webhooks`) and a secret_token of 1-256 of
  A-Z a-z 0-9 _ -; getUpdates is refused until deleteWebhook;
- getFile: a registered file_id answers its File (file_size, file_path; get_file_ok.json), an
  unknown one 400 "Bad Request: invalid file_id", a file over 20 MB 400 "Bad Request: file is too
  big" (the Bot API's download limit); the download answers the bytes, or 404 for another path or
  token;
- sendChatAction: `action` must be one Telegram accepts (CHAT_ACTIONS), else 400 "wrong parameter
  action in request"; accepted ones are recorded in `chat_actions` (chat_id, action) in order;
- sendMessage with parse_mode "HTML" (any case): the text must parse as Telegram HTML
  (tests/fakes/telegram_html.py), else 400 "Bad Request: can't parse entities: …"; the 4,096 limit and
  the empty check apply to the visible text; other parse modes get 400 "unsupported parse_mode";
  `sent` keeps the text as sent, its parse_mode and the visible text;
- per-chat rules: `block_chat(id)` → 403 "bot was blocked by the user"; `forget_chat(id)` → 400
  "chat not found"; `migrate_chat(old, new)` → 400 with parameters.migrate_to_chat_id for sends
  to the old id (sendMessage and sendChatAction alike).

Failure modes switched at run time with `fail(mode, method=None, times=None, after=0)` for calls
to `method` (any method if None): the next `after` matching calls still succeed, then `times`
calls fail (None: until `clear_failures()`):
    flood           429 with parameters.retry_after (`retry_after`, default 7; error_flood.json)
    blocked         403 Forbidden: bot was blocked by the user (error_blocked.json)
    chat_not_found  400 Bad Request: chat not found (error_chat_not_found.json)
    migrated        400 with parameters.migrate_to_chat_id (`migrate_to`; error_migrated.json)
    invalid_token   401 Unauthorized
    server_error    500 Internal Server Error
    bad_gateway     502 with an HTML body
    slow            waits `slow_seconds`, then answers normally
    bad_entities    400 Bad Request: can't parse entities (as for markup Telegram does not accept), for
                    sends with a parse_mode only; others are answered normally and do not use it up
`down()` stops listening ("connection refused"; `.url` stays the same), `up()` listens again on
the same port. `on_call(call)`, if set, runs in the server thread when a call arrives, before it
is answered (e.g. to check what the database holds at that moment).

Only the standard library is used, so bench scripts can import it without Django.
"""
import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from .base import LoopbackServer, QuietHandler
from .telegram_media import MediaMethods, parse_multipart
from .telegram_methods import CHAT_ACTIONS, MAX_DOWNLOAD_BYTES, SECRET_TOKEN_PATTERN, BotMethods, _error  # noqa: F401

FAILURE_MODES = ("flood", "blocked", "chat_not_found", "migrated", "invalid_token", "server_error", "bad_gateway",
                 "slow", "bad_entities")
TOKEN_PATTERN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")
PATH_PATTERN = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
FILE_PATTERN = re.compile(r"^/file/bot(?P<token>[^/]+)/(?P<path>[A-Za-z0-9_./-]+)$")

DEFAULT_MIGRATE_TO = -1001234567891  # as in fixtures/telegram/error_migrated.json


@dataclass
class Call:
    method: str  # canonical camelCase name, e.g. "sendMessage"
    params: dict  # form/query values are strings; JSON bodies keep their types
    token: str
    http_method: str = "POST"
    content_type: str = ""
    status: int = 0
    response: object = None
    files: dict = field(default_factory=dict)  # multipart uploads: part name → {"file_name", "data", "content_type"}
    received_at: float = field(default_factory=time.time)
    arrived: float = field(default_factory=time.monotonic, repr=False)  # the server's clock, for held_seconds
    held_seconds: float = 0.0  # how long the server held the request before answering (its latency, slow mode)

    def param(self, name, default=None):
        """A parameter decoded the way Telegram reads it: JSON objects, arrays and booleans that
        arrive as form strings are parsed; anything else is returned as sent."""
        value = self.params.get(name, default)
        if isinstance(value, str) and (value[:1] in ("{", "[") or value in ("true", "false")):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value


@dataclass
class _Failure:
    mode: str
    method: str | None
    remaining: int | None
    skip: int = 0


class _Handler(QuietHandler):
    server_version = "FakeTelegram/1.0"

    def do_POST(self):
        self.server.fake._handle(self)

    do_GET = do_POST

    def _send(self, status, payload: bytes, content_type="application/json"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            pass


class FakeTelegram(BotMethods, MediaMethods, LoopbackServer):
    METHODS = ("getMe", "sendMessage", "sendChatAction", "setWebhook", "deleteWebhook", "getWebhookInfo", "getUpdates",
               "answerCallbackQuery", "getFile", *MediaMethods.MEDIA_METHODS)

    def __init__(self, *, tokens=None, bot_id=7000000001, bot_username="brain_connectors_bot", host="127.0.0.1",
                 retry_after=7, migrate_to=DEFAULT_MIGRATE_TO, slow_seconds=3.0, max_long_poll=5.0,
                 allow_http_webhooks=False, latency_seconds=0.0):
        self.tokens = set(tokens) if tokens is not None else None
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.host = host
        self.retry_after = retry_after
        self.migrate_to = migrate_to
        self.slow_seconds = slow_seconds
        self.max_long_poll = max_long_poll
        # Every answer waits this long first: the network round trip to the real Bot API (bench/).
        self.latency_seconds = latency_seconds
        self.allow_http_webhooks = allow_http_webhooks
        self._lock = threading.Condition()
        self._calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._updates: deque = deque()
        self._update_ids = itertools.count(820013400)
        self._message_ids = itertools.count(1211)
        self.blocked_chats: set[str] = set()
        self.missing_chats: set[str] = set()
        self.migrated_chats: dict[str, int] = {}
        self.webhook: dict = {}
        self.sent: list[dict] = []  # messages accepted by sendMessage, in order
        self.sent_media: list[dict] = []  # uploads accepted by sendPhoto, …, sendMediaGroup, in order
        self.chat_actions: list[dict] = []  # actions accepted by sendChatAction, in order
        self.get_updates_conflicts = 0
        self._poll_generation: dict[str, int] = {}  # per bot token
        self.files: dict[str, dict] = {}  # file_id → {"data", "file_path", "file_unique_id", "size"}
        self._init_server()
        self.on_call = None

    handler_class = _Handler
    thread_name = "fake-telegram"

    def _wake_waiters(self):  # long polls wait on the condition
        with self._lock:
            self._lock.notify_all()

    # --- control ---
    def fail(self, mode, *, method=None, times=None, after=0):
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; use one of {', '.join(FAILURE_MODES)}")
        with self._lock:
            self._failures.append(_Failure(mode, method, times, after))

    def clear_failures(self):
        with self._lock:
            self._failures.clear()

    def block_chat(self, chat_id):
        self.blocked_chats.add(str(chat_id))

    def forget_chat(self, chat_id):
        self.missing_chats.add(str(chat_id))

    def migrate_chat(self, old_chat_id, new_chat_id=None):
        self.migrated_chats[str(old_chat_id)] = int(new_chat_id or self.migrate_to)

    def enqueue_update(self, update: dict) -> dict:
        """Queue an Update for getUpdates (an update_id is assigned if it has none)."""
        update = dict(update)
        with self._lock:
            if "update_id" not in update:
                update["update_id"] = next(self._update_ids)
            self._updates.append(update)
            self._lock.notify_all()
        return update

    def add_file(self, file_id, data: bytes, *, file_path=None, size=None) -> dict:
        """Serve `data` as the file `file_id` (getFile then the download). `size` overrides the announced
        file_size (a file over the limit without sending 20 MB)."""
        index = len(self.files) + 42
        entry = {"data": bytes(data), "file_path": file_path or f"documents/file_{index}.bin",
                 "file_unique_id": f"AQAD{index}", "size": len(data) if size is None else size}
        self.files[file_id] = entry
        return entry

    @property
    def pending_updates(self) -> list[dict]:
        with self._lock:
            return list(self._updates)

    def reset(self):
        with self._lock:
            self._calls.clear()
            self._failures.clear()
            self._updates.clear()
            self.sent.clear()
            self.sent_media.clear()
            self.chat_actions.clear()
            self.files.clear()
        self.blocked_chats.clear()
        self.missing_chats.clear()
        self.migrated_chats.clear()
        self.webhook = {}
        self.get_updates_conflicts = 0

    # --- inspection ---
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method) -> list[Call]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def wait_for_calls(self, method, count=1, timeout=10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.calls_to(method)
            if len(calls) >= count:
                return calls
            time.sleep(0.02)
        raise TimeoutError(f"FakeTelegram got {len(self.calls_to(method))} {method} calls, expected {count}")

    # --- answering ---
    def _handle(self, handler):
        parsed = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        params = dict(parse_qsl(parsed.query, keep_blank_values=True))
        files = {}
        if content_type == "application/json" and body:
            try:
                loaded = json.loads(body)
            except ValueError:
                loaded = None
            if not isinstance(loaded, dict):
                return self._reply(handler, Call("?", {}, "", handler.command, content_type), 400,
                                   _error(400, "Bad Request: can't parse JSON object"))
            params.update(loaded)
        elif content_type == "multipart/form-data" and body:
            fields, files = parse_multipart(handler.headers.get("Content-Type", ""), body)
            params.update(fields)
        elif body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        file_match = FILE_PATTERN.match(parsed.path)
        if file_match and handler.command == "GET":
            return self._download(handler, file_match.group("token"), file_match.group("path"))
        match = PATH_PATTERN.match(parsed.path)
        method = self._canonical(match.group("method")) if match else parsed.path
        call = Call(method=method, params=params, token=match.group("token") if match else "",
                    http_method=handler.command, content_type=content_type, files=files)
        if not match or not TOKEN_PATTERN.match(call.token):
            return self._reply(handler, call, 404, _error(404, "Not Found"))
        if self.tokens is not None and call.token not in self.tokens:
            return self._reply(handler, call, 401, _error(401, "Unauthorized"))
        if self.on_call is not None:
            self.on_call(call)
        if self.latency_seconds:
            self._stopping.wait(self.latency_seconds)
        # A media group's parse modes are inside its `media` array.
        formatted = bool(params.get("parse_mode")) or '"parse_mode"' in str(params.get("media", ""))
        failure = self._next_failure(method, formatted=formatted)
        if failure == "slow":
            self._stopping.wait(self.slow_seconds)
        elif failure is not None:
            return self._reply(handler, call, *self._failure_answer(failure))
        answer = getattr(self, f"_api_{method}", None)
        if answer is None:
            return self._reply(handler, call, 404, _error(404, "Not Found"))
        status, payload = answer(call)
        return self._reply(handler, call, status, payload)

    def _download(self, handler, token, path):
        call = Call(method="downloadFile", params={"file_path": path}, token=token, http_method="GET")
        if not TOKEN_PATTERN.match(token) or (self.tokens is not None and token not in self.tokens):
            return self._reply(handler, call, 404, _error(404, "Not Found"))
        failure = self._next_failure("downloadFile")
        if failure is not None and failure != "slow":
            return self._reply(handler, call, *self._failure_answer(failure))
        entry = next((f for f in self.files.values() if f["file_path"] == path), None)
        if entry is None:
            return self._reply(handler, call, 404, _error(404, "Not Found"))
        call.status, call.response = 200, f"<{len(entry['data'])} bytes>"
        with self._lock:
            self._calls.append(call)
        handler._send(200, entry["data"], "application/octet-stream")

    def _canonical(self, name):
        for method in self.METHODS:
            if method.lower() == name.lower():
                return method
        return name

    def _reply(self, handler, call, status, payload):
        call.status, call.response = status, payload
        call.held_seconds = time.monotonic() - call.arrived
        with self._lock:
            self._calls.append(call)
        if isinstance(payload, bytes):
            handler._send(status, payload, "text/html")
        else:
            handler._send(status, json.dumps(payload).encode())

    def _next_failure(self, method, formatted=False):
        with self._lock:
            for failure in self._failures:
                if failure.method is not None and failure.method.lower() != method.lower():
                    continue
                if failure.mode == "bad_entities" and not formatted:
                    continue
                if failure.skip > 0:
                    failure.skip -= 1
                    return None
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                return failure.mode
        return None

    def _failure_answer(self, mode):
        if mode == "flood":
            return 429, _error(429, f"Too Many Requests: retry after {self.retry_after}",
                               parameters={"retry_after": self.retry_after})
        if mode == "blocked":
            return 403, _error(403, "Forbidden: bot was blocked by the user")
        if mode == "chat_not_found":
            return 400, _error(400, "Bad Request: chat not found")
        if mode == "migrated":
            return 400, _error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                               parameters={"migrate_to_chat_id": self.migrate_to})
        if mode == "invalid_token":
            return 401, _error(401, "Unauthorized")
        if mode == "server_error":
            return 500, _error(500, "Internal Server Error")
        if mode == "bad_entities":
            return 400, _error(400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0")
        if mode == "bad_gateway":
            return 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        raise ValueError(mode)
