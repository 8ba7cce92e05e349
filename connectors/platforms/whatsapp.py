"""`whatsapp`: WhatsApp through Twilio.

Credentials `account_sid`, `auth_token`; config `from_number` (`+14155550100` or
`whatsapp:+14155550100`), optional `template_content_sid` (an approved Content template, `HX…`)
and `template_variable` (default "1"), `api_base_url`, `timeout`. Recipients are accepted with or
without the `whatsapp:` prefix.

WhatsApp allows free text only within 24 hours of the person's last message to us (the session
window). The window is measured from the newest InboundMessage of that person on this
connector, less a small safety margin:
- inside: the text is sent, BRAIN's Markdown in WhatsApp's markup (connectors.platforms.formatting);
- outside, with a template: the template is sent, the text in its variable;
- outside, without a template: ConnectorError(permanent, code="outside_window"), so that routing
  can fall back to another channel.
If Twilio still answers 63016 (outside the window) to a free-text send, the template is sent
instead when there is one.

Files (twilio_common/outbound_media.py) go only inside the window (a template carries text, not these files): one
file per WhatsApp message, Twilio fetching it from its signed URL under PUBLIC_BASE_URL, the text as the body of the
first and each file's caption as the body of its own. Progress is kept per delivery in the connector's platform
state, so a retry after a failure in the middle does not send the files already sent again.
"""
import json
import re
from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from connectors.models import InboundMessage
from connectors.platforms.base import PATTERN_END, ConnectorError, OutgoingMessage, SendResult
from connectors.platforms.formatting import to_whatsapp
from connectors.platforms.twilio_common import E164, TwilioMessagingConnector, config_schema, normalize_phone
from connectors.platforms.twilio_common.outbound_media import (
    MEDIA_KINDS,
    WHATSAPP_MAX_BYTES,
    WHATSAPP_MIME_TYPES,
    media_urls,
    with_captions,
)
from connectors.registry import platform_state

PREFIX = "whatsapp:"
WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=5)  # our received_at is a little later than the person's message
MAX_BODY = 1600  # Twilio's limit for a WhatsApp body


def without_prefix(value) -> str:
    """`value` trimmed, without Twilio's `whatsapp:` prefix (any case). The only place it is removed."""
    value = str(value or "").strip()
    if value.lower().startswith(PREFIX):
        value = value[len(PREFIX):]
    return value


def wa_address(value: str) -> str:
    """`whatsapp:+E164` from `+E164` or `whatsapp:+E164`; ConnectorError(invalid_recipient) otherwise."""
    return PREFIX + normalize_phone(without_prefix(value))


def template_value(content: str) -> str:
    """WhatsApp refuses template parameters with newlines, tabs or more than four spaces in a row."""
    return re.sub(r" {4,}", "   ", re.sub(r"[\r\n\t]+", " ", content)).strip()


class WhatsAppConnector(TwilioMessagingConnector):
    kind = "whatsapp"
    label = "WhatsApp (Twilio)"
    config_schema = config_schema(
        rf"^(whatsapp:)?{E164}{PATTERN_END}",
        template_content_sid={"type": "string", "pattern": rf"^HX[0-9a-fA-F]{{32}}{PATTERN_END}"},
        template_variable={"type": "string", "pattern": rf"^[A-Za-z0-9_]{{1,32}}{PATTERN_END}"},
    )
    supports_attachments = True
    attachment_kinds = MEDIA_KINDS
    attachment_max_bytes = WHATSAPP_MAX_BYTES
    attachment_mime_types = WHATSAPP_MIME_TYPES
    attachments_need_public_url = True  # Twilio fetches MediaUrl itself

    @classmethod
    def normalize_recipient(cls, recipient: str) -> str:
        return wa_address(recipient)

    @classmethod
    def normalize_address(cls, address, *, strict: bool = True) -> str:
        """The bare number (`whatsapp:` removed), so one person is one address whichever form
        Twilio or a caller uses."""
        return super().normalize_address(without_prefix(address), strict=strict)

    def last_inbound_at(self, address: str):
        # Inbound senders are stored as Twilio's `From`, which always carries the prefix.
        return InboundMessage.objects.filter(connector_id=self.connector.id, sender=address).aggregate(
            last=Max("received_at")
        )["last"]

    def window_open(self, address: str, now=None) -> bool:
        last = self.last_inbound_at(address)
        now = now or timezone.now()
        return last is not None and now - last < WINDOW - WINDOW_MARGIN

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        to = self.normalize_recipient(message.recipient)
        params = {"to": to, "from_": wa_address(self.config["from_number"])}
        callback = self.status_callback_url()
        if callback:
            params["status_callback"] = callback
        if message.attachments:
            return self.send_files(message, to, params, delivery_id)
        template = self.config.get("template_content_sid")
        body = to_whatsapp(message.content)
        if self.window_open(to):
            if len(body) > MAX_BODY:
                raise ConnectorError(
                    f"WhatsApp messages are limited to {MAX_BODY} characters (got {len(body)}).",
                    permanent=True,
                    code="too_long",
                )
            try:
                created = self.call(lambda c: c.messages.create(body=body, **params))
                return SendResult(platform_message_id=created.sid)
            except ConnectorError as exc:
                if exc.code != "outside_window" or not template:
                    raise
        elif not template:
            raise ConnectorError(
                "Outside the WhatsApp 24-hour window and no template_content_sid is configured.",
                permanent=True,
                code="outside_window",
            )
        variables = json.dumps({self.config.get("template_variable", "1"): template_value(body)})
        created = self.call(
            lambda c: c.messages.create(content_sid=template, content_variables=variables, **params)
        )
        return SendResult(platform_message_id=created.sid)

    def send_files(self, message: OutgoingMessage, to: str, params: dict, delivery_id: str) -> SendResult:
        """One WhatsApp message per file, in order; returns the first one's SID (the one with the text)."""
        if not self.window_open(to):
            raise ConnectorError("Files can be sent on WhatsApp only within 24 hours of the person's last message "
                                 "(a template carries text only).", permanent=True, code="outside_window")
        urls = media_urls(message.attachments)
        text = to_whatsapp(message.content)
        bodies = [with_captions(text if index == 0 else "", [to_whatsapp(item.caption)])
                  for index, item in enumerate(message.attachments)]
        longest = max(map(len, bodies))
        if longest > MAX_BODY:
            raise ConnectorError(f"WhatsApp messages are limited to {MAX_BODY} characters (got {longest}).",
                                 permanent=True, code="too_long")
        progress_key = f"sending:{delivery_id}"
        progress = (self.connector.platform_state or {}).get(progress_key) or {}
        first_sid = progress.get("first_message_id", "")
        try:
            for index in range(progress.get("sent", 0), len(urls)):
                body = {"body": bodies[index]} if bodies[index] else {}
                created = self.call(lambda c, i=index, b=body: c.messages.create(media_url=[urls[i]], **b, **params))
                first_sid = first_sid or created.sid
                if index < len(urls) - 1:
                    platform_state.save_platform_state(
                        self.connector.id, **{progress_key: {"sent": index + 1, "first_message_id": first_sid}})
        except ConnectorError as exc:
            if exc.permanent and (progress or len(urls) > 1):
                platform_state.discard_platform_state(self.connector.id, progress_key)
            raise
        if progress or len(urls) > 1:
            platform_state.discard_platform_state(self.connector.id, progress_key)
        return SendResult(platform_message_id=first_sid)
