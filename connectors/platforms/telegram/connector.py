"""The `telegram` connector: a Telegram bot, through python-telegram-bot against the Bot API.

Config: `mode` ("webhook" or "polling"), optional `api_base_url` (a self-hosted Bot API server or
a loopback fake; default the official one), `timeout` (seconds per API request) and
`poll_timeout` (seconds getUpdates waits for news). Credentials: `bot_token`.

Webhook mode: start() registers `PUBLIC_BASE_URL/webhooks/telegram/<id>/` with a fresh random secret_token, kept
encrypted in `Connector.platform_secret`; each call must carry it in `X-Telegram-Bot-Api-Secret-Token`. Polling mode:
`manage.py runconnectors` calls poll_once() under a lease; each update is stored and the offset moved in one commit.
"""
import asyncio
import hmac
import logging
import re
import secrets
import warnings

from django.db import transaction
from telegram import ReplyParameters
from telegram.error import ChatMigrated, TelegramError
from telegram.warnings import PTBUserWarning

from connectors.delivery.inbound import receive_message
from connectors.models import Connector
from connectors.permissions import Principal
from connectors.platforms.base import (
    CREDENTIALS,
    PATTERN_END,
    BaseConnector,
    ConnectorError,
    HealthResult,
    OutgoingMessage,
    SendResult,
    WebhookIgnored,
    WebhookRejected,
    WebhookResult,
    on_sender_close,
)
from connectors.platforms.telegram import client, media
from connectors.platforms.telegram.parsing import (
    HANDLED_UPDATE_TYPES,
    Ignored,
    parse_update,
    update_from_body,
    update_from_data,
)
from connectors.platforms.telegram.text import message_parts
from connectors.platforms.telegram.typing_indicator import typing_indicator
from connectors.platforms.webhook_urls import webhook_url
from connectors.registry import platform_state

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
DEFAULT_POLL_TIMEOUT = 10
MAX_MIGRATIONS = 3  # a chat migrates once; more in a row means something is wrong
POLLER = Principal.system_actor("platform", via="polling")
on_sender_close(client.close_sender_sessions)
_RECIPIENT = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")  # fullmatch: "$" passes a final "\n"


class TelegramConnector(BaseConnector):
    kind, label, supports_buttons = "telegram", "Telegram bot", True  # buttons: client.inline_keyboard
    supports_attachments, attachment_max_bytes = True, media.MAX_BYTES_BY_KIND  # files: media.py
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["mode"],
        "properties": {
            "mode": {"enum": ["webhook", "polling"]},
            # Where it may point (and whether plain http is allowed) is brain_connectors.shared.url_guard's call.
            "api_base_url": {"type": "string", "pattern": rf"^https?://[^\s/?#]+(/[^\s?#]*)?{PATTERN_END}",
                             "maxLength": 500},
            "timeout": {"type": "number", "minimum": 1, "maximum": 120},
            "poll_timeout": {"type": "integer", "minimum": 0, "maximum": 50},
        },
    }
    credentials_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["bot_token"],
        "properties": {"bot_token": {"type": "string", "pattern": rf"^[0-9]{{1,20}}:[A-Za-z0-9_-]{{20,200}}{PATTERN_END}"}},
    }
    destination_config_keys = {"api_base_url": CREDENTIALS}  # the token is part of every request path

    # --- settings ------------------------------------------------------------------------------
    @property
    def mode(self):
        return self.config.get("mode")

    @property
    def runs_poller(self):  # only polling-mode bots need `manage.py runconnectors`
        return self.mode == "polling"

    @property
    def token(self):
        return self.credentials.get("bot_token", "")

    @property
    def bot_id(self):
        return int(self.token.split(":", 1)[0]) if ":" in self.token else None

    @property
    def poll_timeout(self):
        return self.config.get("poll_timeout", DEFAULT_POLL_TIMEOUT)

    @classmethod
    def validate_recipient(cls, recipient):
        if not _RECIPIENT.fullmatch(recipient):
            return "must be a Telegram chat id (an integer, negative for groups) or @channelusername"
        return None

    def _api(self, operation, *, poll_timeout=0, follow_migrations=False):
        """Run `await operation(bot)` against the Bot API; PTB errors become ConnectorError
        (ChatMigrated passes through when `follow_migrations`)."""
        api_base_url = self.config.get("api_base_url") or client.OFFICIAL_API_BASE_URL
        timeout = self.config.get("timeout", client.DEFAULT_TIMEOUT)

        async def call():
            async with client.BotSession(self.token, api_base_url, timeout=timeout, poll_timeout=poll_timeout) as bot:
                return await operation(bot)

        if not self.token:
            raise ConnectorError("No bot_token is set for this connector.", permanent=True, code=client.INVALID_TOKEN)
        try:
            if poll_timeout:  # long polls keep their own session, with their longer read timeout
                return client.run(call)
            return client.run_with_bot(self.token, api_base_url, operation, timeout=timeout)
        except ChatMigrated:
            if follow_migrations:
                raise
            raise ConnectorError("Telegram: the group chat was upgraded to a supergroup.", permanent=True,
                                 code="chat_migrated")
        except TelegramError as exc:
            raise client.translate(exc, self.token) from exc

    def _state(self):
        """platform_state as committed now (the row this object wraps may be older)."""
        return Connector.objects.filter(pk=self.connector.pk).values_list("platform_state", flat=True).first() or {}

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self):
        url = None
        if self.mode == "webhook":
            try:
                url = webhook_url("webhook-telegram", self.connector.id)
            except ValueError:
                raise ConnectorError(
                    "PUBLIC_BASE_URL is not set, so Telegram cannot be told where to send updates. "
                    "Set PUBLIC_BASE_URL to this service's public https:// address, or use mode \"polling\".",
                    permanent=True,
                    code="public_url_missing",
                )
        me = self._api(lambda bot: bot.get_me())  # fails fast on a bad token
        platform_state.save_platform_state(self.connector.id, bot={"id": me.id, "username": me.username or ""})
        if url is not None:
            secret = secrets.token_urlsafe(32)  # Telegram allows 1-256 of A-Z a-z 0-9 _ -
            platform_state.save_platform_secret(self.connector.id, secret)  # stored before Telegram can use it
            self._api(lambda bot: bot.set_webhook(url=url, secret_token=secret,
                                                  allowed_updates=list(HANDLED_UPDATE_TYPES)))
        else:
            platform_state.save_platform_secret(self.connector.id, "")  # no webhook call verifies any more
            self._api(lambda bot: bot.delete_webhook())  # getUpdates is refused while a webhook is set

    def stop(self):
        if self.mode == "webhook":
            self._api(lambda bot: bot.delete_webhook())

    def health_check(self):
        try:
            me = self._api(lambda bot: bot.get_me())
            detail = f"@{me.username} answers"
            if self.mode == "webhook":
                info = self._api(lambda bot: bot.get_webhook_info())
                try:
                    expected = webhook_url("webhook-telegram", self.connector.id)
                except ValueError:
                    expected = None
                if info.url != expected:
                    return HealthResult(ok=False, detail=f"{detail}, but its webhook is {info.url or 'not set'}"
                                        f" instead of {expected or '(PUBLIC_BASE_URL is not set)'}")
                if info.last_error_message:
                    detail += f"; Telegram's last webhook error: {info.last_error_message}"
            return HealthResult(ok=True, detail=detail)
        except ConnectorError as exc:
            return HealthResult(ok=False, detail=exc.message)

    # --- sending -------------------------------------------------------------------------------
    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        """Send `message` (Markdown, rendered as Telegram HTML) as one Telegram message, or several (in order) if its
        visible text is over 4,096 characters (with files: media.py). Progress is kept per delivery, so a retry after
        a failure in the middle does not repeat the parts already sent. Returns the first part's message id."""
        state = self.connector.platform_state or {}
        chat_id = _current_chat(state, message.recipient)
        parts = message_parts(message.content)
        progress_key = f"sending:{delivery_id}"
        progress = state.get(progress_key) or {}
        first_id = progress.get("first_message_id")
        reply_to = _reply_to_message_id(message, chat_id)
        if message.attachments:
            return media.send(self._api, lambda **moved: platform_state.save_platform_state(self.connector.id, **moved),
                              message, delivery_id, chat_id, reply_to)
        markup = client.inline_keyboard(message.buttons, delivery_id)  # under the last part
        try:
            for index in range(progress.get("sent", 0), len(parts)):
                sent, migrated_to = self._send_part(chat_id, parts[index], reply_to if index == 0 else None,
                                                    markup if index == len(parts) - 1 else None)
                if migrated_to is not None:
                    chat_id, reply_to = migrated_to, None
                first_id = first_id or sent.message_id
                if index < len(parts) - 1:
                    platform_state.save_platform_state(self.connector.id,
                                                 **{progress_key: {"sent": index + 1, "first_message_id": first_id}})
        except ConnectorError as exc:
            if exc.permanent and (progress or len(parts) > 1):
                platform_state.discard_platform_state(self.connector.id, progress_key)
            raise
        if progress or len(parts) > 1:
            platform_state.discard_platform_state(self.connector.id, progress_key)
        return SendResult(platform_message_id=str(first_id))

    async def send_async(self, message: OutgoingMessage, delivery_id: str) -> SendResult:
        """send() on the sender's loop, over this connector's long-lived Bot (client.sender_bot), for one text part;
        more parts, a resumed send, a moved chat or files go to send() in a thread (it writes to the database)."""
        state = self.connector.platform_state or {}
        chat_id = _current_chat(state, message.recipient)
        parts = message_parts(message.content)
        if message.attachments or len(parts) > 1 or state.get(f"sending:{delivery_id}"):
            return await asyncio.to_thread(self.send, message, delivery_id=delivery_id)
        token = self.token
        if not token:
            raise ConnectorError("No bot_token is set for this connector.", permanent=True, code=client.INVALID_TOKEN)
        bot = await client.sender_bot(
            self.connector.pk, self.connector.updated_at, token,
            self.config.get("api_base_url") or client.OFFICIAL_API_BASE_URL,
            self.config.get("timeout", client.DEFAULT_TIMEOUT),
        )
        reply_to = _reply_to_message_id(message, chat_id)
        reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            sent = await client.send_part(bot, chat_id, parts[0], reply, client.inline_keyboard(message.buttons, delivery_id))
        except ChatMigrated:  # nothing was sent; send() remembers the move and follows it
            return await asyncio.to_thread(self.send, message, delivery_id=delivery_id)
        except TelegramError as exc:
            raise client.translate(exc, token) from exc
        return SendResult(platform_message_id=str(sent.message_id))

    def _send_part(self, chat_id, part, reply_to, markup=None):
        """Send one part, following group → supergroup migrations: (message, new chat id or None)."""
        migrated_to = None
        for _ in range(MAX_MIGRATIONS):
            reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
            try:
                sent = self._api(lambda bot, c=chat_id, r=reply: client.send_part(bot, c, part, r, markup),
                                 follow_migrations=True)
                return sent, migrated_to
            except ChatMigrated as exc:
                logger.info("Telegram chat %s of %s moved to %s; following it", chat_id, self.connector.id,
                            exc.new_chat_id)
                platform_state.save_platform_state(self.connector.id, **{f"migrated_chat:{chat_id}": exc.new_chat_id})
                chat_id = migrated_to = str(exc.new_chat_id)
                reply_to = None  # the message replied to stayed in the old chat
        raise ConnectorError(f"Telegram kept moving chat {chat_id}; giving up.", permanent=True, code="chat_migrated")

    def typing(self, recipient, metadata):
        """"typing…" in the chat BRAIN's reply goes to, while BRAIN works (typing_indicator.py)."""
        chat_id = _current_chat(self.connector.platform_state or {}, recipient)  # where send() would send it
        return typing_indicator(self.token, self.config, self.connector.id, chat_id)

    # --- inbound: webhooks ---------------------------------------------------------------------
    def verify_webhook(self, request, channel):
        if channel != "messages":
            raise WebhookRejected(f"Telegram has no {channel!r} webhook")
        if self.mode != "webhook":
            raise WebhookRejected("the connector is not in webhook mode")
        expected = self.connector.platform_secret
        if not expected:
            raise WebhookRejected("no webhook secret is set (start the connector)")
        offered = request.headers.get(SECRET_HEADER, "")
        if not offered:
            raise WebhookRejected(f"missing {SECRET_HEADER}")
        if not hmac.compare_digest(offered.encode("utf-8"), expected.encode("utf-8")):
            raise WebhookRejected(f"wrong {SECRET_HEADER}")

    def parse_webhook(self, request, channel):
        """Malformed bodies and updates we do not handle are acknowledged (200) and dropped:
        Telegram redelivers anything else for hours, holding back the updates behind it."""
        try:
            update = update_from_body(request.body)
            return WebhookResult(messages=[parse_update(update, self._identity())])
        except Ignored as exc:
            raise WebhookIgnored(str(exc))

    def webhook_response(self, request, channel, result, stored):
        # Only now is the update committed: answering the button earlier could lose the click.
        self._answer_callback_queries(result.messages)
        return None

    def _identity(self):
        return (self.connector.platform_state or {}).get("bot") or {"id": self.bot_id, "username": ""}

    def _answer_callback_queries(self, messages):
        for message in messages:
            query_id = message.metadata.get("callback_query_id")
            if not query_id:
                continue
            try:
                self._api(lambda bot, q=query_id: bot.answer_callback_query(q))
            except ConnectorError as exc:  # cosmetic (stops the button's spinner): never fail the update
                logger.warning("answerCallbackQuery for %s failed: %s", self.connector.id, exc.message)

    def fetch_attachment(self, platform_ref, max_bytes):
        return self._api(lambda bot: client.download_file(bot, platform_ref, max_bytes))

    # --- inbound: polling (manage.py runconnectors, under a lease) -----------------------------
    def poll_once(self, stop_event) -> int:
        """Fetch one batch with getUpdates and store it. Each update is stored and the offset
        moved past it in one transaction, so after a crash nothing is lost (the offset did not
        move) and nothing is handled twice (it did, or the inbound dedupe on update_id sees it)."""
        state = self._state()
        bot_id = self.bot_id
        # An offset belongs to one bot: after a token change to another bot, start afresh.
        offset = state.get("offset") if state.get("offset_bot_id") == bot_id else None
        identity = state.get("bot") or {"id": bot_id, "username": ""}
        timeout = self.poll_timeout
        handled = 0
        for update_id, update in self._api(lambda bot: _fetch_updates(bot, offset, timeout), poll_timeout=timeout):
            if stop_event.is_set():
                break  # neither stored nor confirmed: the next poll fetches it again
            try:
                if isinstance(update, Ignored):
                    raise update
                message = parse_update(update, identity)
            except Ignored as exc:
                logger.info("Ignored Telegram update %s for %s: %s", update_id, self.connector.id, exc)
                message = None
            with transaction.atomic():
                # The connector row first, then the audit lock (inside receive_message): the order
                # every connector service takes them in (stop_connector, heartbeat...). The other way
                # round, a stop during a poll deadlocked on PostgreSQL.
                platform_state.save_platform_state(self.connector.id, offset=update_id + 1, offset_bot_id=bot_id)
                if message is not None:
                    receive_message(self.connector.id, message, principal=POLLER)
            handled += 1
            if message is not None:
                self._answer_callback_queries([message])
        return handled


async def _fetch_updates(bot, offset, timeout):
    """getUpdates → [(update_id, Update or Ignored)], in order.

    PTB deserialises the whole batch at once, so a single update it cannot parse would stall
    polling for good. Then the batch is fetched again raw (it is not confirmed yet, so Telegram
    returns it at once) and each update parsed on its own: a bad one is skipped, not the rest.
    """
    allowed = list(HANDLED_UPDATE_TYPES)
    try:
        updates = await bot.get_updates(offset=offset, timeout=timeout, allowed_updates=allowed)
        return [(update.update_id, update) for update in updates]
    except TelegramError:
        raise
    except Exception as exc:
        logger.warning("python-telegram-bot could not parse a batch of updates (%s: %s); parsing them one by one",
                       type(exc).__name__, exc)
    with warnings.catch_warnings():  # PTB suggests get_updates, which is what just failed
        warnings.simplefilter("ignore", PTBUserWarning)
        params = {"timeout": 0, "allowed_updates": allowed, **({"offset": offset} if offset is not None else {})}
        raw = await bot.do_api_request("getUpdates", api_kwargs=params)
    batch = []
    for data in raw or []:
        update_id = data.get("update_id") if isinstance(data, dict) else None
        if not isinstance(update_id, int):
            continue  # cannot be confirmed on its own; Telegram never sends such a thing
        try:
            batch.append((update_id, update_from_data(data)))
        except Ignored as exc:
            batch.append((update_id, exc))
    return batch


def _current_chat(state, recipient):
    """Follow remembered group → supergroup migrations."""
    chat_id = recipient
    for _ in range(MAX_MIGRATIONS):
        moved = state.get(f"migrated_chat:{chat_id}")
        if moved is None:
            break
        chat_id = str(moved)
    return chat_id


def _reply_to_message_id(message, chat_id):
    """Thread a reply under the message it answers, when that message is in this chat."""
    reply_to = (message.metadata or {}).get("reply_to") or {}
    meta = reply_to.get("metadata") or {}
    message_id = meta.get("message_id")
    if isinstance(message_id, int) and str(meta.get("chat_id")) == str(chat_id):
        return message_id
    return None
