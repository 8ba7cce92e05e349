"""The `slack` connector: a Slack app's bot, through slack_sdk against the Web API.

Config: `mode` ("events", the default: Slack POSTs to our Request URL; or "socket": Socket Mode, a websocket that
`manage.py runconnectors` holds, for a service with no public URL), optional `api_base_url` (a loopback fake, or an
Enterprise Grid endpoint; default https://slack.com/api/), `timeout`, `channel_messages` (take every message in the
channels the bot is in, not only mentions; default off) and `thread_dm_replies` (answer a direct message in its
thread, as in channels; default on). Credentials: `bot_token` (xoxb-…), `signing_secret`, and `app_token`
(xapp-…) for socket mode.

Recipients: `T…:U…` (a person, the form pairing stores; a DM is opened with conversations.open), `U…`, or a
channel id (`C…`, `G…`, `D…`). A reply to a stored message goes to that message's channel, in its thread.
Files go as one share with the text as its comment (uploads.py); with buttons, the text and buttons come first.
"""
import asyncio
import re

from connectors.platforms.addresses import InvalidAddress
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
)
from connectors.platforms.slack import api, events, files, interactions, socket_mode, uploads
from connectors.platforms.slack.mrkdwn import message_parts, to_mrkdwn  # noqa: F401 (to_mrkdwn: used from here)
from connectors.platforms.webhook_urls import webhook_url
from connectors.registry import platform_state

# Slack shows at most 40,000 characters of a message and advises keeping a text under 4,000; longer ones are cut
# at paragraph and line breaks into several messages, as Telegram's are, with a formatting span cut in two closed
# and reopened (mrkdwn.message_parts).
MAX_TEXT = 4000
_PERSON = re.compile(r"(T[A-Z0-9]{2,20}):([UW][A-Z0-9]{2,20})")
_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
_CHANNEL = re.compile(r"[CDG][A-Z0-9]{2,20}")
_ID = rf"^[A-Z0-9]{{2,30}}{PATTERN_END}"


class SlackConnector(BaseConnector):
    kind = "slack"
    supports_buttons = True  # Block Kit buttons (interactions.py)
    supports_attachments = True  # files_upload_v2 (uploads.py); Slack takes files up to 1 GB, above our own cap
    label = "Slack app"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"enum": ["events", "socket"]},
            # Where it may point (and whether plain http is allowed) is brain_connectors.shared.url_guard's call.
            "api_base_url": {"type": "string", "pattern": rf"^https?://[^\s/?#]+(/[^\s?#]*)?{PATTERN_END}",
                             "maxLength": 500},
            "timeout": {"type": "number", "minimum": 1, "maximum": 120},
            "channel_messages": {"type": "boolean"},
            "thread_dm_replies": {"type": "boolean"},
        },
    }
    credentials_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["bot_token", "signing_secret"],
        "properties": {
            "bot_token": {"type": "string", "pattern": rf"^xoxb-[A-Za-z0-9-]{{10,250}}{PATTERN_END}"},
            "signing_secret": {"type": "string", "pattern": rf"^[A-Za-z0-9]{{16,128}}{PATTERN_END}"},
            "app_token": {"type": "string", "pattern": rf"^xapp-[A-Za-z0-9-]{{10,250}}{PATTERN_END}"},
        },
    }
    destination_config_keys = {"api_base_url": CREDENTIALS}  # every call carries the bot token there

    # --- settings ------------------------------------------------------------------------------
    @property
    def mode(self):
        return self.config.get("mode") or "events"

    @property
    def runs_poller(self):  # socket mode's websocket is held by `manage.py runconnectors`, under a lease
        return self.mode == "socket"

    @property
    def token(self):
        return self.credentials.get("bot_token", "")

    def bot_identity(self):
        """What auth.test said at the last start: the bot's user id, team id and name."""
        return (self.connector.platform_state or {}).get("bot") or {}

    @classmethod
    def validate_recipient(cls, recipient):
        value = recipient.strip().upper()
        if not (_PERSON.fullmatch(value) or _USER.fullmatch(value) or _CHANNEL.fullmatch(value)):
            return "must be a Slack person (T…:U…, or U…) or a channel id (C…, G…, D…)"
        return None

    @classmethod
    def normalize_address(cls, address, *, strict: bool = True) -> str:
        """A person is `team:user` (`T061EG9R6:U061F7AUR`): Slack ids are upper case, and a user id alone is
        ambiguous across workspaces."""
        value = str(address or "").strip().upper()
        if strict and not _PERSON.fullmatch(value):
            raise InvalidAddress("must be a Slack person as team:user, e.g. T061EG9R6:U061F7AUR")
        return value

    def inbound_url(self):
        """The Request URL to paste into the Slack app's Event Subscriptions (events mode), or None."""
        if self.mode != "events":
            return None
        try:
            return webhook_url("webhook-slack", self.connector.id)
        except ValueError:
            return None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self):
        if self.mode == "events" and self.inbound_url() is None:
            raise ConnectorError(
                "PUBLIC_BASE_URL is not set, so there is no Request URL for Slack's Event Subscriptions. Set "
                "PUBLIC_BASE_URL to this service's public https:// address, or use mode \"socket\".",
                permanent=True, code="public_url_missing",
            )
        if self.mode == "socket" and not self.credentials.get("app_token"):
            raise ConnectorError("Socket mode needs an app-level token (app_token, xapp-…) among the credentials.",
                                 permanent=True, code="invalid_credentials")
        auth = self._call(lambda client: client.auth_test())
        platform_state.save_platform_state(self.connector.id, bot={
            "user_id": auth.get("user_id", ""), "team_id": auth.get("team_id", ""), "bot_id": auth.get("bot_id", ""),
            "username": auth.get("user", ""), "team": auth.get("team", ""),
        })
        if self.mode == "socket":  # the app token is checked now, not first by runconnectors
            socket_mode.open_connection_url(self.credentials["app_token"], self.config)

    def health_check(self):
        try:
            auth = self._call(lambda client: client.auth_test())
        except ConnectorError as exc:
            return HealthResult(ok=False, detail=exc.message)
        return HealthResult(ok=True, detail=f"@{auth.get('user', '?')} answers in {auth.get('team', '?')}")

    def _call(self, operation):
        if not self.token:
            raise ConnectorError("No bot_token is set for this connector.", permanent=True, code="invalid_token")
        return api.call(self.token, self.config, operation)

    # --- sending -------------------------------------------------------------------------------
    def _target(self, message: OutgoingMessage):
        """(channel, user, thread_ts): where the message goes. A reply follows its inbound message."""
        recipient = message.recipient.strip().upper()
        meta = ((message.metadata or {}).get("reply_to") or {}).get("metadata") or {}
        if meta.get("channel") and recipient == f"{meta.get('team')}:{meta.get('user')}":
            in_dm = meta.get("channel_type") == "im"
            thread = meta.get("thread_ts") or (meta.get("ts") if not in_dm or self.config.get("thread_dm_replies", True)
                                               else None)
            return meta["channel"], None, thread
        if person := _PERSON.fullmatch(recipient):
            team = self.bot_identity().get("team_id")
            if team and person.group(1) != team:
                raise ConnectorError(f"{recipient} belongs to another Slack workspace than this bot's ({team}).",
                                     permanent=True, code="recipient_forbidden")
            return None, person.group(2), None
        if _USER.fullmatch(recipient):
            return None, recipient, None
        return recipient, None, None

    @staticmethod
    async def _channel(client, channel, user):
        if channel is None:  # a person: their DM with the bot (conversations.open returns it if it exists)
            opened = await client.conversations_open(users=user)
            channel = opened["channel"]["id"]
        return channel

    async def _post(self, client, channel, user, thread_ts, text, blocks=None):
        channel = await self._channel(client, channel, user)
        kwargs = {"thread_ts": thread_ts} if thread_ts else {}
        if blocks:
            kwargs["blocks"] = blocks
        return await client.chat_postMessage(channel=channel, text=text, mrkdwn=True, **kwargs)

    async def _upload(self, client, channel, user, thread_ts, attachments, comment):
        channel = await self._channel(client, channel, user)
        return await uploads.send_files(client, self.config, channel, attachments, comment, thread_ts)

    def _steps(self, message: OutgoingMessage, delivery_id) -> list:
        """The calls that send `message`, in order: ("post", text, blocks) messages, then ("upload", comment, None)
        for its files. The files' message carries the (last part of the) text as its comment; Block Kit cannot ride on
        a file share, so with buttons the text and buttons are posted first and the files follow, with no comment,
        in the same channel or thread."""
        parts = message_parts(message.content, interactions.SECTION_TEXT if message.buttons else MAX_TEXT)
        comment = parts.pop() if message.attachments and parts and not message.buttons else None
        if message.buttons and not parts:  # files and buttons without text: the buttons alone
            parts = [""]
        steps = [("post", text, None) for text in parts]
        if message.buttons:  # under the last part
            steps[-1] = ("post", parts[-1], interactions.blocks(parts[-1], message.buttons, delivery_id))
        return steps + ([("upload", comment, None)] if message.attachments else [])

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        """Send as one Slack message, or several in order (a text over MAX_TEXT, files after buttons); progress is
        kept per delivery, so a retry after a failure in the middle does not repeat the messages already sent."""
        channel, user, thread_ts = self._target(message)
        steps = self._steps(message, delivery_id)
        progress_key = f"sending:{delivery_id}"
        progress = (self.connector.platform_state or {}).get(progress_key) or {}
        first_ts = progress.get("first_ts")
        try:
            for index in range(progress.get("sent", 0), len(steps)):
                step, text, markup = steps[index]
                if step == "post":
                    sent = self._call(lambda client, text=text, b=markup: self._post(client, channel, user,
                                                                                     thread_ts, text, b))
                    sent_id = sent.get("ts")
                else:
                    sent_id = self._call(lambda client, text=text: self._upload(client, channel, user, thread_ts,
                                                                                message.attachments, text))
                first_ts = first_ts or sent_id  # a delivery is known by its first message
                if index < len(steps) - 1:
                    platform_state.save_platform_state(self.connector.id,
                                                       **{progress_key: {"sent": index + 1, "first_ts": first_ts}})
        except ConnectorError as exc:
            if exc.permanent and (progress or len(steps) > 1):
                platform_state.discard_platform_state(self.connector.id, progress_key)
            raise
        if progress or len(steps) > 1:
            platform_state.discard_platform_state(self.connector.id, progress_key)
        return SendResult(platform_message_id=str(first_ts or ""))

    async def send_async(self, message: OutgoingMessage, delivery_id: str) -> SendResult:
        """send() on the batch sender's loop, over this connector's long-lived client. A message of several parts
        (or a resumed one) goes to send() in a thread: its progress is written between the parts. So do files:
        reading them (decrypting from storage) blocks, and an upload is slow next to a text."""
        channel, user, thread_ts = self._target(message)
        parts = message_parts(message.content, interactions.SECTION_TEXT if message.buttons else MAX_TEXT)
        if len(parts) != 1 or message.attachments or (self.connector.platform_state or {}).get(f"sending:{delivery_id}"):
            return await asyncio.to_thread(self.send, message, delivery_id=delivery_id)
        if not self.token:
            raise ConnectorError("No bot_token is set for this connector.", permanent=True, code="invalid_token")
        client = await api.sender_client(self.connector, self.token, self.config)
        try:
            markup = interactions.blocks(parts[0], message.buttons, delivery_id) if message.buttons else None
            sent = await self._post(client, channel, user, thread_ts, parts[0], markup)
        except Exception as exc:
            raise api.translate(exc, self.token) from exc
        return SendResult(platform_message_id=str(sent.get("ts") or ""))

    # --- inbound: Events API -------------------------------------------------------------------
    def fetch_attachment(self, platform_ref, max_bytes):
        """A shared file's url_private_download, with the bot token, on Slack's host only (slack.files)."""
        return files.download(self.token, self.config, platform_ref, max_bytes,
                              float(self.config.get("timeout", api.DEFAULT_TIMEOUT)))

    def verify_webhook(self, request, channel):
        if channel != "messages":
            raise WebhookRejected(f"Slack has no {channel!r} webhook")
        if self.mode != "events":
            raise WebhookRejected("the connector is in socket mode; Slack sends it nothing over HTTP")
        try:
            events.verify_signature(self.credentials.get("signing_secret", ""), request.headers, request.body)
        except events.SignatureProblem as exc:
            raise WebhookRejected(str(exc))

    def parse_webhook(self, request, channel):
        """Anything well-signed that is not a person's message is acknowledged (200) and dropped: Slack retries
        every other answer three times, then turns the app's events off if failures go on."""
        if interactions.is_interaction(request.body):  # a button press (block_actions), posted form-encoded
            try:
                return WebhookResult(messages=[interactions.parse_interaction(request.body)])
            except events.Ignored as exc:
                raise WebhookIgnored(str(exc))
        try:
            parsed = events.parse_body(request.body, self.bot_identity().get("user_id", ""),
                                       bool(self.config.get("channel_messages")))
        except events.Ignored as exc:
            raise WebhookIgnored(str(exc))
        if isinstance(parsed, events.Challenge):
            return WebhookResult(acknowledgement={"challenge": parsed.value})
        return WebhookResult(messages=[parsed])

    # --- inbound: Socket Mode (manage.py runconnectors, under a lease) -------------------------
    def poll_once(self, stop_event) -> int:
        return socket_mode.hold_session(self, stop_event)
