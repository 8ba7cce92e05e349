"""Telegram's typing indicator while BRAIN works on a reply: sendChatAction "typing", repeated from a background thread.

Telegram shows a chat action for 5 seconds (or until the bot's next message), so it is sent again every
`interval` seconds for as long as the `with` block runs. The first goes out once BRAIN has taken `delay` seconds:
a quick answer needs no indicator, and the calls would count against the bot's flood limits, which the replies
themselves need. The calls run on a thread of their own, with their own event loop and one Bot session for the
whole block (closed at its end): the caller, who is waiting for BRAIN, is never held up by them. The session's HTTP
clients pass the outbound-URL guard like every other Bot API call (client.BotSession). The indicator is cosmetic:
a failure is logged and never reaches the caller.
"""
import asyncio
import contextlib
import logging
import threading

from django.conf import settings
from telegram.constants import ChatAction
from telegram.error import TelegramError

from connectors.platforms.telegram import client

logger = logging.getLogger(__name__)

# How long leaving the block waits for a sendChatAction still in flight. Waiting keeps a late "typing" from
# landing after the reply (it would show for 5 s under the answer); the bound keeps a slow Bot API from
# delaying the reply itself. A call that outlives it finishes on its own thread, which then closes its session.
STOP_WAIT_SECONDS = 0.5


def typing_indicator(token, config, connector_id, chat_id):
    """The context manager for one reply: "typing…" in `chat_id` from TYPING_DELAY_SECONDS on, every
    TYPING_REPEAT_SECONDS (0 turns it off)."""
    interval = settings.TYPING_REPEAT_SECONDS
    if not token or interval <= 0:
        return contextlib.nullcontext()
    return TypingIndicator(token=token, api_base_url=config.get("api_base_url") or client.OFFICIAL_API_BASE_URL,
                           timeout=config.get("timeout", client.DEFAULT_TIMEOUT), chat_id=chat_id, interval=interval,
                           delay=max(settings.TYPING_DELAY_SECONDS, 0), connector_id=connector_id)


class TypingIndicator:
    """`with TypingIndicator(...):` shows "typing…" in `chat_id` until the block ends."""

    def __init__(self, *, token, api_base_url, timeout, chat_id, interval, connector_id, delay=0.0):
        self._token, self._api_base_url, self._timeout = token, api_base_url, timeout
        self._chat_id = chat_id
        self._interval = interval
        self._delay = delay
        self._connector_id = connector_id
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        thread = threading.Thread(target=self._run, name=f"telegram-typing-{self._connector_id}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had (interpreter shutting down, thread limit): go without
            logger.warning("Telegram typing indicator for %s not started: %s", self._connector_id, exc)
            return self
        self._thread = thread
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_SECONDS)
        return False  # BRAIN's own errors pass on to the caller

    def _run(self):
        if self._stop.wait(self._delay):
            return  # BRAIN answered first: no session opened, nothing sent
        try:
            asyncio.run(self._show())
        except Exception as exc:  # a bug here must not kill anything but the indicator; the type says enough
            logger.warning("Telegram typing indicator for %s stopped: %s", self._connector_id, type(exc).__name__)

    async def _show(self):
        async with client.BotSession(self._token, self._api_base_url, timeout=self._timeout, pool_size=1) as bot:
            while not self._stop.is_set():
                try:
                    await bot.send_chat_action(chat_id=self._chat_id, action=ChatAction.TYPING)
                except TelegramError as exc:
                    error = client.translate(exc, self._token)  # its message has the token scrubbed
                    # Cosmetic either way. A refusal that will not change (blocked, no such chat, bad token, a
                    # refused URL) or flood control (the reply matters more) ends it; a 5xx or a timeout is
                    # tried again at the next tick.
                    final = error.permanent or error.retry_after is not None
                    logger.log(logging.WARNING if final else logging.INFO,
                               "Telegram sendChatAction for %s failed (%s)%s: %s", self._connector_id, error.code,
                               "; no typing indicator for this reply" if final else "", error.message)
                    if final:
                        return
                # Sleep until the next tick, or until the block ends, whichever comes first.
                await asyncio.to_thread(self._stop.wait, self._interval)
