"""`sms`: text messages through Twilio Programmable Messaging.

Credentials `account_sid`, `auth_token`; config `from_number` (E.164, a short code or an
alphanumeric sender ID), `max_segments` (default 10), `api_base_url`, `timeout`.

BRAIN's Markdown is sent as plain text: the markers removed, links as "text (url)"
(connectors.platforms.formatting.to_plain), before the segments are counted.

Sending is segment-aware. A GSM-7 message takes 160 characters in one segment (153 per segment
when split), but one character outside GSM-7 turns the whole message into UCS-2: 70 (67) per
segment, so typically two to three times the cost. Typographic characters that have a plain GSM
equivalent (non-breaking and other spaces, curly quotes, dashes, the ellipsis, bullets, zero-width
characters...) are therefore replaced first; only then is the encoding decided. When the text
needs UCS-2 anyway (an emoji, Cyrillic...), it is sent exactly as written. A message over
`max_segments` is refused (permanent error `too_long`), never truncated.

Files go as MMS (twilio_common/outbound_media.py): Twilio fetches each from its signed URL under PUBLIC_BASE_URL,
so a send with files needs PUBLIC_BASE_URL. An MMS body is not split into segments (up to 1,600 characters); the
files' captions follow the text, as MMS has no caption per file. Twilio delivers MMS in the US and Canada; elsewhere
it may convert the media into a link or refuse it (its account settings decide).
"""
import logging
import unicodedata
from dataclasses import dataclass

from connectors.platforms.base import PATTERN_END, ConnectorError, OutgoingMessage, SendResult
from connectors.platforms.formatting import to_plain
from connectors.platforms.twilio_common import E164, TwilioMessagingConnector, config_schema
from connectors.platforms.twilio_common.outbound_media import (
    MEDIA_KINDS,
    MMS_MAX_BYTES,
    check_mms_total,
    media_urls,
    with_captions,
)

logger = logging.getLogger(__name__)

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")  # each takes two septets (escape + character)

# Characters that force UCS-2 but have a plain GSM-7 equivalent.
GSM7_REPLACEMENTS = {
    **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\t", " "),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", ""),  # zero-width characters, soft hyphen
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4\u02bc`", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\u2022", "-"),  # dashes, minus, bullets
    "\u2026": "...",
    "\u2039": "<",
    "\u203a": ">",
    "\u2044": "/",
    "\u2215": "/",
    "\u02c6": "^",
    "\u02dc": "~",
}
_REPLACE_TABLE = str.maketrans(GSM7_REPLACEMENTS)

GSM7 = "GSM-7"
UCS2 = "UCS-2"
SINGLE = {GSM7: 160, UCS2: 70}
MULTI = {GSM7: 153, UCS2: 67}
TWILIO_MAX_BODY = 1600  # characters; Twilio refuses longer bodies (error 21617)
DEFAULT_MAX_SEGMENTS = 10


@dataclass(frozen=True)
class SmsEncoding:
    text: str  # what is sent
    encoding: str  # GSM7 or UCS2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    replaced: bool  # characters were replaced to keep the message in GSM-7


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _unit_costs(text: str, encoding: str):
    if encoding == GSM7:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # a surrogate pair takes two units


def count_segments(text: str, encoding: str) -> tuple[int, int]:
    """(units, segments) for `text` in `encoding`. In a split message no segment ends between an
    escape and its character (GSM-7) or between the halves of a surrogate pair (UCS-2)."""
    costs = _unit_costs(text, encoding)
    units = sum(costs)
    if units <= SINGLE[encoding]:
        return units, 1 if units else 0
    segments, used = 1, 0
    for cost in costs:
        if used + cost > MULTI[encoding]:
            segments, used = segments + 1, 0
        used += cost
    return units, segments


def encode_sms(text: str) -> SmsEncoding:
    """Decide what to send: the text with GSM-7 look-alikes replaced if that makes it all GSM-7,
    else the original text in UCS-2."""
    if is_gsm7(text):
        return SmsEncoding(text, GSM7, *count_segments(text, GSM7), replaced=False)
    candidate = unicodedata.normalize("NFC", text).translate(_REPLACE_TABLE)
    if candidate.strip() and is_gsm7(candidate):
        return SmsEncoding(candidate, GSM7, *count_segments(candidate, GSM7), replaced=True)
    return SmsEncoding(text, UCS2, *count_segments(text, UCS2), replaced=False)


class SmsConnector(TwilioMessagingConnector):
    kind = "sms"
    label = "SMS (Twilio)"
    config_schema = config_schema(
        # E.164, a short code, or an alphanumeric sender ID (1-11 characters, at least one letter).
        rf"^({E164}|[0-9]{{3,8}}|(?=[A-Za-z0-9 ]*[A-Za-z])[A-Za-z0-9 ]{{1,11}}){PATTERN_END}",
        max_segments={"type": "integer", "minimum": 1, "maximum": 20},
    )
    supports_attachments = True
    attachment_kinds = MEDIA_KINDS
    attachment_max_bytes = MMS_MAX_BYTES
    attachments_need_public_url = True  # Twilio fetches MediaUrl itself

    def prepare(self, content: str) -> SmsEncoding:
        encoded = encode_sms(content)
        limit = int(self.config.get("max_segments", DEFAULT_MAX_SEGMENTS))
        if encoded.segments > limit or len(encoded.text) > TWILIO_MAX_BODY:
            raise ConnectorError(
                f"The message needs {encoded.segments} {encoded.encoding} segments "
                f"({len(encoded.text)} characters); this connector allows at most {limit}.",
                permanent=True,
                code="too_long",
            )
        return encoded

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        if message.attachments:
            return self.send_mms(message, delivery_id=delivery_id)
        to = self.normalize_recipient(message.recipient)
        encoded = self.prepare(to_plain(message.content))
        params = {"to": to, "from_": self.config["from_number"], "body": encoded.text}
        callback = self.status_callback_url()
        if callback:
            params["status_callback"] = callback
        created = self.call(lambda c: c.messages.create(**params))
        logger.info(
            "SMS %s sent as %s: %s, %d segment(s)%s",
            delivery_id,
            created.sid,
            encoded.encoding,
            encoded.segments,
            ", GSM look-alikes replaced" if encoded.replaced else "",
        )
        return SendResult(platform_message_id=created.sid)

    def send_mms(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        """Text and files as one MMS: the files as MediaUrl, the text (and the captions) as its body."""
        to = self.normalize_recipient(message.recipient)
        check_mms_total(message.attachments)
        params = {"to": to, "from_": self.config["from_number"], "media_url": media_urls(message.attachments)}
        body = with_captions(to_plain(message.content), [to_plain(item.caption) for item in message.attachments])
        if len(body) > TWILIO_MAX_BODY:
            raise ConnectorError(f"An MMS body is limited to {TWILIO_MAX_BODY} characters (got {len(body)}).",
                                 permanent=True, code="too_long")
        if body:
            params["body"] = body
        callback = self.status_callback_url()
        if callback:
            params["status_callback"] = callback
        created = self.call(lambda c: c.messages.create(**params))
        logger.info("MMS %s sent as %s with %d file(s)", delivery_id, created.sid, len(message.attachments))
        return SendResult(platform_message_id=created.sid)
