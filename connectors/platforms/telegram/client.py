"""Calling the Bot API through python-telegram-bot from synchronous code.

PTB is asyncio-only. Every operation here runs in a fresh event loop (`asyncio.run`, or a helper
thread when the caller already runs a loop) with its own `Bot` and HTTP clients, which are closed
before the loop ends: nothing is shared between loops, and nothing leaks. The `Bot` is not
`initialize()`d, because that calls getMe before every operation (doubling the API traffic) and
repeats the token in its error message; we open and close its HTTP clients ourselves.

`translate()` turns PTB's exceptions into ConnectorError, deciding what is permanent. `send_part()` sends one
part of a message as HTML, and again as plain text if Telegram cannot parse its entities.

Every connection the Bot's HTTP clients open passes the outbound-URL guard (brain_connectors.shared.guarded_http)
on the address it connects to. PTB reports the guard's refusal as a NetworkError; `translate()`
finds it in the cause and makes it permanent (`unsafe_url`), which stops the connector.
"""
import asyncio
import atexit
import contextlib
import datetime
import logging
import threading
import warnings

import httpx
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from brain_connectors.shared.guarded_http import caused_by, guarded_async_transport
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.platforms.base import ConnectorError, run_sync
from connectors.platforms.buttons import callback_token

logger = logging.getLogger(__name__)

# PTB 22 warns, from inside RetryAfter.__init__ itself, that `retry_after` becomes a timedelta one
# day; retry_after_seconds() handles both, so that one warning is only noise on every 429.
warnings.filterwarnings("ignore", message=r".*attribute `retry_after` will be of type", category=PTBDeprecationWarning)

OFFICIAL_API_BASE_URL = "https://api.telegram.org"
DEFAULT_TIMEOUT = 10.0  # seconds, per request (connect, read, write)

# Error codes of ConnectorError, for callers and the audit log.
INVALID_TOKEN = "invalid_token"  # noqa: S105 (an error code) - the whole connector is unusable until fixed
RECIPIENT_BLOCKED = "recipient_blocked"
RECIPIENT_FORBIDDEN = "recipient_forbidden"  # kicked from a group, user deactivated, …
CHAT_NOT_FOUND = "chat_not_found"
BAD_REQUEST = "bad_request"
RATE_LIMITED = "rate_limited"
TIMEOUT = "timeout"
NETWORK_ERROR = "network_error"
UNSAFE_URL = "unsafe_url"


run = run_sync  # shared with the other async SDKs (connectors.platforms.base)


def _guarded(pool_size):
    """httpx.AsyncClient arguments: our transport (PTB's own `limits` only shape a default one), and
    no proxies from the environment, which would connect where the guard cannot see."""
    transport = guarded_async_transport(limits=httpx.Limits(max_connections=pool_size), http1=True, http2=False)
    return {"transport": transport, "trust_env": False}


class BotSession:
    """`async with BotSession(token, api_base_url) as bot:` a Bot whose HTTP clients live exactly
    as long as the block. `poll_timeout` lengthens getUpdates' read timeout for long polling."""

    def __init__(self, token, api_base_url=OFFICIAL_API_BASE_URL, *, timeout=DEFAULT_TIMEOUT, poll_timeout=0,
                 pool_size=4):
        self._requests = (
            HTTPXRequest(connection_pool_size=pool_size, connect_timeout=timeout, read_timeout=timeout,
                         write_timeout=timeout, pool_timeout=timeout, httpx_kwargs=_guarded(pool_size)),
            HTTPXRequest(connection_pool_size=1, connect_timeout=timeout, read_timeout=timeout + poll_timeout,
                         write_timeout=timeout, pool_timeout=timeout, httpx_kwargs=_guarded(1)),
        )
        self.bot = Bot(
            token,
            base_url=f"{api_base_url.rstrip('/')}/bot",
            base_file_url=f"{api_base_url.rstrip('/')}/file/bot",
            request=self._requests[0],
            get_updates_request=self._requests[1],
        )

    async def __aenter__(self):
        for request in self._requests:
            await request.initialize()
        return self.bot

    async def __aexit__(self, *exc_info):
        for request in self._requests:
            await request.shutdown()


# --- reused sessions, for sending ---------------------------------------------------------------
# A new Bot per call builds two HTTP clients (each with its own TLS context) and a new event loop:
# tens of milliseconds of CPU, which caps a worker at a few dozen sends a second. Calls from the
# same thread therefore share one event loop and one open session per (token, endpoint, timeout).
_local = threading.local()
_open_sessions = []  # (loop, session), closed at interpreter exit
_open_lock = threading.Lock()


def run_with_bot(token, api_base_url, operation, *, timeout=DEFAULT_TIMEOUT):
    """`await operation(bot)` on this thread's own loop, with a session kept open between calls."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # inside someone else's loop: the per-call path never nests loops
        async def once():
            async with BotSession(token, api_base_url, timeout=timeout) as bot:
                return await operation(bot)

        return run(once)
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
        _local.sessions = {}
    key = (token, api_base_url, timeout)

    async def call():
        session = _local.sessions.get(key)
        if session is None:
            session = BotSession(token, api_base_url, timeout=timeout)
            await session.__aenter__()
            _local.sessions[key] = session
            with _open_lock:
                _open_sessions.append((loop, session))
        return await operation(session.bot)

    return loop.run_until_complete(call())


# --- long-lived sessions, for the batch sender's event loop ------------------------------------------
# One open Bot per connector per sender process (keep-alive connections, up to SENDER_POOL_SIZE at once), made
# again when the connector row changes (its updated_at: new credentials or config). Keyed by loop as well: a
# session belongs to the loop that opened it.
SENDER_POOL_SIZE = 64
_sender_sessions = {}  # connector id → (loop, updated_at, task opening the BotSession)


async def sender_bot(connector_id, updated_at, token, api_base_url, timeout):
    """The open Bot for `connector_id` on the running loop, opened (or re-opened after a change) when needed.
    Concurrent first calls share one opening (a task), so no session is opened twice and leaked."""
    loop = asyncio.get_running_loop()
    entry = _sender_sessions.get(connector_id)
    if entry is None or entry[0] is not loop or entry[1] != updated_at:
        stale = entry[2] if entry is not None and entry[0] is loop else None

        async def open_session():
            session = BotSession(token, api_base_url, timeout=timeout, pool_size=SENDER_POOL_SIZE)
            await session.__aenter__()
            return session

        entry = _sender_sessions[connector_id] = (loop, updated_at, loop.create_task(open_session()))
        if stale is not None:
            await _close_opening(stale)  # the connector changed: close the old clients (sends on them finished)
    return (await entry[2]).bot


async def close_sender_sessions():
    """Close the sessions opened on the running loop (the sender calls this through base.close_sender_clients)."""
    loop = asyncio.get_running_loop()
    for connector_id, (owner, _, opening) in list(_sender_sessions.items()):
        if owner is loop:
            del _sender_sessions[connector_id]
            await _close_opening(opening)


async def _close_opening(opening):
    with contextlib.suppress(Exception):  # closing (or a session that never opened): nothing to do about it
        session = await opening
        await session.__aexit__(None, None, None)


@atexit.register
def _close_open_sessions():
    with _open_lock:
        sessions, _open_sessions[:] = list(_open_sessions), []
    for loop, session in sessions:
        if not loop.is_closed() and not loop.is_running():
            with contextlib.suppress(Exception):  # interpreter shutdown: best effort only
                loop.run_until_complete(session.__aexit__(None, None, None))


async def download_file(bot, file_id, max_bytes) -> bytes:
    """getFile, then GET <api base>/file/bot<token>/<file_path>. That URL holds the token: it stays in here, and
    errors from the download are reported without it. Raises TelegramError (getFile) or ConnectorError."""
    info = await bot.get_file(file_id)
    if info.file_size is not None and info.file_size > max_bytes:
        raise ConnectorError(f"Telegram reports {info.file_size} bytes, over the {max_bytes}-byte limit",
                             permanent=True, code="too_large")
    url = str(info.file_path or "")
    # PTB leaves a path it finds on this machine's disk as it is (Local Bot API mode) and would read that file:
    # only ever download from the Bot API's file endpoint.
    if not url.startswith(f"{bot.base_file_url}/"):
        raise ConnectorError("Telegram gave no downloadable file_path", permanent=True, code="no_file_path")
    try:
        data = bytes(await bot.request.retrieve(url))
    except TelegramError as exc:
        message = scrub(getattr(exc, "message", None) or str(exc), bot.token)
        raise ConnectorError(f"Telegram file download failed: {message}", code="download_failed") from exc
    if info.file_size and len(data) != info.file_size:  # cut short on the way: another try may get it whole
        raise ConnectorError(f"Telegram announced {info.file_size} bytes and sent {len(data)}", code="truncated")
    return data


def inline_keyboard(buttons, delivery_id):
    """The message's buttons as an inline keyboard, one per row; each press comes back as a callback_query whose
    data is a short token naming the delivery and the button (checked on arrival: connectors/delivery/presses.py)."""
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b["label"], callback_data=callback_token(delivery_id, b["id"]))] for b in buttons]
    )


async def send_part(bot, chat_id, part, reply, markup=None):
    """Send one part as HTML; if Telegram cannot parse its entities, send the same part again as plain text
    (its visible text, which fits the same limit) rather than fail the delivery over formatting."""
    try:
        return await bot.send_message(chat_id=chat_id, text=part.html, parse_mode=ParseMode.HTML,
                                      reply_parameters=reply, reply_markup=markup)
    except BadRequest as exc:
        if "can't parse entities" not in str(exc).lower():
            raise
        # Telegram's error quotes the offending markup (message content): it stays out of the log.
        logger.warning("Telegram could not parse the formatting of a message part to chat %s; sent as plain text",
                       chat_id)
    return await bot.send_message(chat_id=chat_id, text=part.text, reply_parameters=reply, reply_markup=markup)


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # int seconds today; a timedelta with PTB_TIMEDELTA=1 or in PTB 23
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value)


def scrub(text: str, token: str) -> str:
    """Error texts may quote the request URL, which holds the token."""
    return text.replace(token, "[redacted]") if token else text


def translate(exc: TelegramError, token: str = "") -> ConnectorError:
    """What a Bot API failure means for us: permanent for the recipient, for the whole connector
    (invalid token), or worth retrying (flood control, 5xx, network, timeouts)."""
    refused = caused_by(exc, UnsafeURL)
    if refused is not None:  # api_base_url leads somewhere the guard refuses: an admin must fix it
        return ConnectorError(f"api_base_url is refused: {refused}", permanent=True, code=UNSAFE_URL)
    message = scrub(getattr(exc, "message", None) or str(exc), token)
    lowered = message.lower()
    if isinstance(exc, RetryAfter):
        seconds = retry_after_seconds(exc)
        return ConnectorError(f"Telegram flood control: retry after {seconds:g}s", retry_after=seconds, code=RATE_LIMITED)
    if isinstance(exc, InvalidToken):  # PTB's name for both 401 and 404
        hint = " (or api_base_url is not a Bot API server)" if "not found" in lowered else ""
        return ConnectorError(f"Telegram rejected the bot token ({message}){hint}", permanent=True,
                              code=INVALID_TOKEN)
    if isinstance(exc, Forbidden):
        code = RECIPIENT_BLOCKED if "blocked" in lowered else RECIPIENT_FORBIDDEN
        return ConnectorError(f"Telegram refused: {message}", permanent=True, code=code)
    if isinstance(exc, ChatMigrated):  # callers follow migrations; reaching here means a loop
        return ConnectorError(f"Telegram: {message}", permanent=True, code="chat_migrated")
    if isinstance(exc, BadRequest):  # before NetworkError: BadRequest subclasses it
        code = CHAT_NOT_FOUND if "chat not found" in lowered else BAD_REQUEST
        return ConnectorError(f"Telegram refused the request: {message}", permanent=True, code=code)
    if isinstance(exc, TimedOut):
        return ConnectorError(f"Telegram did not answer in time: {message}", code=TIMEOUT)
    if isinstance(exc, NetworkError):  # 5xx, connection refused or reset, DNS, …
        return ConnectorError(f"Telegram unreachable or failing: {message}", code=NETWORK_ERROR)
    # 409 Conflict (a webhook is set, or another getUpdates is running), unparseable answers, …
    return ConnectorError(f"Telegram error: {message}", code="platform_error")
