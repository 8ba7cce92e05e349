"""A loopback fake Slack, Web API and Socket Mode: a real aiohttp server for tests.

    fake = FakeSlack(bot_tokens={"xoxb-1"}, app_tokens={"xapp-1"}).start()  # 127.0.0.1, a free port
    fake.url                            # http://127.0.0.1:<port>/api/: api_base_url, WebClient(base_url=...)
    fake.fail("ratelimited", method="chat.postMessage", times=1)
    envelope_id = fake.push_event(payload)  # to the Socket Mode client; then fake.wait_for_ack(envelope_id)
    fake.calls_to("chat.postMessage")   # each Web API call: method, params, token, status, ok, error

aiohttp.web runs on its own event loop in a background thread, serving a synchronous WebClient and a
SocketModeClient on the test's loop alike. wait_for_socket and wait_for_ack block the calling thread:
from async code call them through `asyncio.to_thread`, or the client on the test's loop cannot ack.

Web API, `POST /api/<method>`, the body form-encoded, multipart or JSON. As on Slack, an error is HTTP 200
`{"ok": false, "error": ...}`, an unknown method HTTP 404 unknown_method; shapes from tests/fixtures/slack.
- tokens: `Authorization: Bearer <token>` or a `token` form/query field (not a JSON one, as on Slack); none →
  not_authed. Only xoxb- and xapp- tokens are valid; if `bot_tokens` / `app_tokens` is given, a token of that kind
  outside it is invalid_auth. apps.connections.open needs xapp-, the rest xoxb-, else not_allowed_token_type.
- auth.test: auth_test_ok.json with the fake's team_id, user_id, bot_id, team, user and url.
- chat.postMessage: an increasing ts ("1733312346.000301"); thread_ts kept in the call and `sent`, blocks (checked:
  button_markup.py) in the call. `forget_channel(id)` → channel_not_found, `kick_from(id)` → not_in_channel, text
  over 40,000 chars → msg_too_long, no text → no_text. A user id (U…/W…) as channel posts to its DM, `dm_id(user)`.
- conversations.open(users): one → dm_id(user), several → a G… id; `forget_user(id)` → user_not_found.
- apps.connections.open: ws://127.0.0.1:<port>/link/?ticket=<uuid> (the ticket is not checked).
`fail(mode, method=None, times=None, after=0)`: of the calls to `method` (any if None) with a good token,
the next `after` succeed, then `times` fail (None: until `clear_failures()`). Modes: ratelimited (HTTP 429,
`Retry-After: <retry_after>`, error_ratelimited.json), channel_not_found, not_in_channel, invalid_auth,
account_inactive (HTTP 200), server_error (HTTP 500 "internal error"), slow (answers after `slow_seconds`).
`on_call(call)`, if set, runs before the answer in a worker thread (so it may block, or read the database).

Socket Mode, a websocket at `GET /link/` (aiohttp pongs pings): `hello` first. `push_event(payload, retry_attempt=0,
envelope_type="events_api")` sends an envelope (or an `interactive` one) to the newest connection (Slack uses one) and
returns its envelope_id; nothing is redelivered. A text frame with an envelope_id is an ack, listed in `acks`.
`disconnect_sockets(reason)` sends `{"type": "disconnect"}` and closes those sockets `disconnect_grace` seconds later,
as Slack does when it rotates connections. `socket_connections` counts the connections accepted, `open_sockets` those
open. `down()` refuses connections and closes websockets (1001), `up()` listens on the same port again; `with fake:`
starts and stops. Files, downloads and uploads (files_upload_v2): slack_files.py; Socket Mode's methods: slack_socket.py.
Needs aiohttp, not Django.
"""
import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from aiohttp import WSCloseCode, web

from . import button_markup, slack_files
from .base import Restartable
from .slack_socket import DEBUG_INFO, SocketMode  # noqa: F401

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slack"
FAILURE_MODES = ("ratelimited", "channel_not_found", "not_in_channel", "invalid_auth", "account_inactive",
                 "server_error", "slow")
MAX_TEXT = 40_000
AUTH_TEST_OK, RATELIMITED = (json.loads((FIXTURES / name).read_text())
                             for name in ("auth_test_ok.json", "error_ratelimited.json"))


def _error(error):
    return 200, {"ok": False, "error": error}


@dataclass
class Call:
    method: str  # e.g. "chat.postMessage"
    params: dict  # form/query values are strings, JSON bodies keep their types; the token is not in it
    token: str
    http_method: str = "POST"
    status: int = 0
    ok: bool = False
    error: str | None = None  # Slack's error code, or the body of a non-JSON answer
    response: object = None
    received_at: float = field(default_factory=time.time)
    arrived: float = field(default_factory=time.monotonic, repr=False)  # the server's clock, for held_seconds
    held_seconds: float = 0.0  # how long the server held the request before answering (its latency, slow mode)


class FakeSlack(SocketMode, slack_files.SlackFiles, Restartable):  # SlackFiles: downloads (add_file) and uploads (files_upload_v2)
    host = "127.0.0.1"

    def __init__(self, *, bot_tokens=None, app_tokens=None, team_id="T061EG9R6", team="BRAIN Team",
                 user_id="U0BOTUSER", user="brain", bot_id="B0BOTID01", app_id="A0MDYCDME",
                 workspace_url="https://brain-team.slack.com/", retry_after=3, slow_seconds=3.0,
                 disconnect_grace=1.0):
        self.bot_tokens = set(bot_tokens) if bot_tokens is not None else None
        self.app_tokens = set(app_tokens) if app_tokens is not None else None
        self.team_id, self.team, self.user_id, self.user = team_id, team, user_id, user
        self.bot_id, self.app_id, self.workspace_url = bot_id, app_id, workspace_url
        self.retry_after, self.slow_seconds, self.disconnect_grace = retry_after, slow_seconds, disconnect_grace
        self.on_call = None
        # One lock for all that the server's loop and the test's threads share; the waiting methods sleep on it.
        self._lock = threading.Condition()
        self._calls: list[Call] = []
        self._failures: list[SimpleNamespace] = []
        self.sent: list[dict] = []  # messages chat.postMessage accepted, in order
        self.acks: list[str] = []  # envelope ids acked by Socket Mode clients, in order
        self.missing_channels, self.kicked_channels, self.missing_users = set(), set(), set()
        self.socket_connections = 0
        self._sockets: list[web.WebSocketResponse] = []  # open and greeted, newest last
        self._last_ts = 0  # in microseconds: every ts is greater than the one before, even within a second
        self._port = self._loop = self._thread = self._stopping = None
        self._closing: set = set()  # disconnect_sockets' delayed closes (asyncio keeps only weak references)
        self._init_files()

    # --- lifecycle ---
    def start(self):
        if self._thread is not None:
            return self
        ready = concurrent.futures.Future()
        # asyncio.run: at the end it cancels what is left (delayed closes) and joins on_call's worker threads.
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),), daemon=True,
                                        name=f"fake-slack-{self._port or 0}")
        self._thread.start()
        try:
            ready.result(timeout=10)  # raises what _serve raised, e.g. the port was taken while down
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    async def _serve(self, ready):
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/link/", self._handle_link)
        app.router.add_get("/files-pri/{file}/download/{name}", self._handle_file)  # slack_files.py
        app.router.add_post("/upload/v1/{opaque}", self._handle_upload)
        # A short shutdown_timeout: down() must not wait for a handler sleeping in the slow mode.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        try:
            await runner.setup()
            # The same port again on up(); reuse_address so that connections in TIME_WAIT do not refuse it.
            await web.TCPSite(runner, self.host, self._port or 0, reuse_address=True).start()
        except BaseException as exc:
            await runner.cleanup()
            ready.set_exception(exc)
            return
        self._port = runner.addresses[0][1]
        ready.set_result(None)
        await self._stopping.wait()  # set by stop(); it also wakes handlers sleeping in the slow mode
        # A client whose loop is blocked (a test calling down() from async code) never answers the close
        # frame: wait briefly, then the transport is dropped, as when a real server goes away.
        await self._close_sockets(self._open(), WSCloseCode.GOING_AWAY, timeout=0.5)
        await runner.cleanup()

    def stop(self):
        thread, self._thread = self._thread, None
        if thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            thread.join(timeout=10)

    @staticmethod
    async def _close_sockets(sockets, code, timeout, delay=0.0):
        await asyncio.sleep(delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ws.close(code=code) for ws in sockets),
                                                  return_exceptions=True), timeout)

    def _run(self, coro):  # on the server's loop, from the caller's thread
        if self._thread is None:
            coro.close()
            raise RuntimeError("FakeSlack is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @property
    def port(self):
        if self._port is None:
            raise RuntimeError("FakeSlack has not been started")
        return self._port

    @property
    def url(self):
        return f"http://{self.host}:{self.port}/api/"

    # --- control ---
    def fail(self, mode, method=None, times=None, after=0):
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; use one of {', '.join(FAILURE_MODES)}")
        with self._lock:
            self._failures.append(SimpleNamespace(mode=mode, method=method, remaining=times, skip=after))

    def clear_failures(self):
        with self._lock:
            self._failures.clear()

    def forget_channel(self, channel_id):
        self.missing_channels.add(channel_id)

    def kick_from(self, channel_id):
        self.kicked_channels.add(channel_id)

    def forget_user(self, user_id):
        self.missing_users.add(user_id)

    @staticmethod
    def dm_id(user_id):
        return "D" + user_id[1:]

    # --- inspection ---
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # --- Web API ---
    async def _handle_api(self, request):
        method, params = request.match_info["method"], dict(request.query)
        call = Call(method, params, params.pop("token", ""), request.method)
        try:
            if request.content_type == "application/json":
                params.update(await request.json())  # not an object: TypeError or ValueError
                params.pop("token", None)  # Slack takes a JSON body's token from the header only
            elif request.can_read_body:
                form = await request.post()
                params.update((k, v) for k, v in form.items() if isinstance(v, str))  # uploaded files are not kept
                call.token = params.pop("token", call.token)
        except (TypeError, ValueError):
            return self._answer(call, *_error("invalid_json"))
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            call.token = header[7:].strip()
        answer = getattr(self, "_api_" + method.replace(".", "_"), None)
        if answer is None:
            return self._answer(call, 404, {"ok": False, "error": "unknown_method"})
        error = self._auth_error(method, call.token)
        if error:
            return self._answer(call, *_error(error))
        if self.on_call is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.on_call, call)
        failure = self._next_failure(method)
        if failure == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
        elif failure == "ratelimited":
            return self._answer(call, 429, dict(RATELIMITED), {"Retry-After": str(self.retry_after)})
        elif failure == "server_error":
            return self._answer(call, 500, "internal error")
        elif failure is not None:
            return self._answer(call, *_error(failure))
        return self._answer(call, *answer(call))

    def _auth_error(self, method, token):
        if not token:
            return "not_authed"
        kind = "bot" if token.startswith("xoxb-") else "app" if token.startswith("xapp-") else None
        known = {"bot": self.bot_tokens, "app": self.app_tokens}.get(kind)
        if kind is None or (known is not None and token not in known):
            return "invalid_auth"
        if kind != ("app" if method == "apps.connections.open" else "bot"):
            return "not_allowed_token_type"

    def _next_failure(self, method):
        with self._lock:
            failure = next((f for f in self._failures if f.method in (None, method)), None)
            if failure is None or failure.skip > 0:  # `after`: this call still succeeds
                if failure is not None:
                    failure.skip -= 1
                return None
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
            return failure.mode

    def _answer(self, call, status, payload, headers=None):
        call.status, call.response = status, payload
        call.held_seconds = time.monotonic() - call.arrived
        call.ok = isinstance(payload, dict) and payload.get("ok") is True
        call.error = payload.get("error") if isinstance(payload, dict) else payload
        with self._lock:
            self._calls.append(call)
            self._lock.notify_all()
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    def _api_auth_test(self, call):
        return 200, {**AUTH_TEST_OK, "url": self.workspace_url, "team": self.team, "user": self.user,
                     "team_id": self.team_id, "user_id": self.user_id, "bot_id": self.bot_id}

    def _next_ts(self):
        with self._lock:
            self._last_ts = max(int(time.time()) * 1_000_000, self._last_ts + 1)
            return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _api_chat_postMessage(self, call):
        params = call.params
        channel, text = str(params.get("channel") or ""), params.get("text") or ""
        if not text and not params.get("blocks") and not params.get("attachments"):
            return _error("no_text")
        if len(str(text)) > MAX_TEXT:
            return _error("msg_too_long")
        if refused := button_markup.slack_blocks_refusal(params.get("blocks")):
            return _error(refused)
        if channel[:1] in ("U", "W") and channel not in self.missing_users:
            channel = self.dm_id(channel)  # Slack posts to the DM with that user (the app's Messages tab)
        if not channel or channel in self.missing_channels or channel[:1] in ("U", "W"):  # a forgotten user
            return _error("channel_not_found")
        if channel in self.kicked_channels:
            return _error("not_in_channel")
        ts, thread_ts = self._next_ts(), params.get("thread_ts") or None
        message = {"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "bot_id": self.bot_id,
                   "app_id": self.app_id, **({"thread_ts": str(thread_ts)} if thread_ts else {})}
        with self._lock:
            self.sent.append({"channel": channel, "text": text, "ts": ts, "thread_ts": thread_ts})
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _api_conversations_open(self, call):
        users = call.params.get("users") or ""
        users = [u.strip() for u in (users if isinstance(users, list) else str(users).split(",")) if u.strip()]
        if not users:
            return _error("users_list_not_supplied")
        if any(u in self.missing_users or u[:1] not in ("U", "W") for u in users):
            return _error("user_not_found")
        # Several people: a group DM, the same id for the same people in any order.
        channel_id = self.dm_id(users[0]) if len(users) == 1 else f"G{zlib.crc32(','.join(sorted(users)).encode()):08X}"
        return 200, {"ok": True, "channel": {"id": channel_id}}

    def _api_apps_connections_open(self, call):
        return 200, {"ok": True, "url": f"ws://{self.host}:{self.port}/link/?ticket={uuid.uuid4()}"}
