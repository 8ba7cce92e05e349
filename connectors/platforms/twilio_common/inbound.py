"""What Twilio posts to us: inbound messages and status callbacks, parsed; TwiML answers.

Media arrive as MediaUrlN / MediaContentTypeN (fetched after commit); a shared WhatsApp contact is such a medium, a
vCard (text/vcard), kept as a `contact` to fetch like a file (its card is read once fetched: connectors/delivery/
attachments.py). A shared WhatsApp location comes as Latitude and Longitude (with Address and Label for a place):
a `location` attachment, complete as it is.
"""
import math

from django.http import HttpResponse

from connectors.platforms.attachments import CONTACT, LOCATION, MAX_CAPTION_LENGTH, MAX_PLATFORM_REF_LENGTH
from connectors.platforms.base import Attachment, IncomingMessage, MessageValidationError, Receipt, WebhookIgnored
from connectors.platforms.media_download import kind_for

MESSAGE_DELIVERED = {"delivered", "read"}
MESSAGE_FAILED = {"undelivered", "failed"}
CALL_DELIVERED = {"completed"}
CALL_FAILED = {"no-answer", "busy", "failed", "canceled"}
# Common delivery error codes, so that a failed delivery says why in words.
DELIVERY_ERRORS = {
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
    "63016": "outside the WhatsApp 24-hour window",
}


def _sid(params, *names):
    """The first of these fields that is set. A SID is ASCII letters and digits; one with a NUL
    would reach PostgreSQL as a query parameter and fail there (a 500, or a 503 that Twilio
    retries for ever), so it is refused here."""
    sid = next((params.get(name) for name in names if params.get(name)), None)
    if sid is not None and "\x00" in sid:
        raise WebhookIgnored("status callback with a malformed SID")
    return sid


def receipt_from_status(params):
    """A Receipt for a terminal MessageStatus / CallStatus, or None for an intermediate one."""
    message_sid = _sid(params, "MessageSid", "SmsSid")
    message_status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if message_sid and message_status:
        if message_status in MESSAGE_DELIVERED:
            return Receipt(platform_message_id=message_sid, status="delivered")
        if message_status in MESSAGE_FAILED:
            code = params.get("ErrorCode", "")
            why = DELIVERY_ERRORS.get(code, "")
            error = f"Twilio reported the message {message_status}" + (f" (error {code}{': ' + why if why else ''})" if code else "")
            return Receipt(platform_message_id=message_sid, status="failed", error=error)
        return None
    call_sid = _sid(params, "CallSid")
    call_status = (params.get("CallStatus") or "").lower()
    if call_sid and call_status:
        if call_status in CALL_DELIVERED:
            return Receipt(platform_message_id=call_sid, status="delivered")
        if call_status in CALL_FAILED:
            code = params.get("ErrorCode") or params.get("SipResponseCode") or ""
            error = f"Twilio reported the call {call_status}" + (f" (error {code})" if code else "")
            return Receipt(platform_message_id=call_sid, status="failed", error=error)
        return None
    raise WebhookIgnored("status callback without MessageSid/MessageStatus or CallSid/CallStatus")


def inbound_message(params) -> IncomingMessage:
    """An IncomingMessage from Twilio's inbound message fields; WebhookIgnored if malformed."""
    sid = params.get("MessageSid") or params.get("SmsMessageSid") or params.get("SmsSid") or ""
    sender = params.get("From", "")
    if not sid.strip() or not sender.strip():
        raise WebhookIgnored("malformed message webhook: MessageSid or From is missing")
    try:
        num_media = max(0, min(int(params.get("NumMedia") or 0), 10))
    except ValueError:
        num_media = 0
    media = tuple(item for item in (_media(params, i) for i in range(num_media)) if item is not None)
    media_types = [item.mime_type or "unknown" for item in media]
    place = _location(params)
    attachments = media + ((place,) if place is not None else ())
    content = params.get("Body", "")
    if not content.strip():
        if not attachments:
            raise WebhookIgnored("message without text or media")
        content = ""  # a photo alone is a message: BRAIN gets it as an attachment
    metadata = {"to": params.get("To", "")}
    if media_types:
        # Types only: media URLs point at the person's content and the metadata is not encrypted.
        metadata["media_types"] = media_types
    if params.get("NumSegments"):
        metadata["num_segments"] = params.get("NumSegments")
    if params.get("WaId"):
        metadata["wa_id"] = params.get("WaId")
    try:
        return IncomingMessage(
            sender=sender.strip(),
            content=content,
            platform_message_id=sid.strip(),
            sender_name=(params.get("ProfileName") or "")[:200],
            metadata=metadata,
            attachments=attachments,
        )
    except MessageValidationError as exc:
        raise WebhookIgnored(f"malformed message webhook: {exc}")


VCARD_TYPES = {"text/vcard", "text/x-vcard"}


def _location(params):
    """A shared location (WhatsApp) as an Attachment, or None when the message has none (or an unusable one)."""
    try:
        latitude, longitude = float(params.get("Latitude", "")), float(params.get("Longitude", ""))
    except ValueError:
        return None
    if not (math.isfinite(latitude) and math.isfinite(longitude) and abs(latitude) <= 90 and abs(longitude) <= 180):
        return None
    # A place shared from the map has a name (Label) and an address; a pin dropped where one stands has neither.
    caption = "\n".join(part for part in (_text(params, "Label"), _text(params, "Address")) if part)
    return Attachment(kind=LOCATION, latitude=latitude, longitude=longitude, caption=caption[:MAX_CAPTION_LENGTH])


def _text(params, name) -> str:
    value = (params.get(name) or "").strip()
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return ""
    return value.replace("\x00", "")


def _media(params, index):
    """MediaUrl<index> as an Attachment (fetched after commit through TwilioMessagingConnector.fetch_attachment),
    or None when it has no usable URL. The URL is the platform_ref: it carries no credential (Basic auth does)."""
    url = (params.get(f"MediaUrl{index}") or "").strip()
    if not url or len(url) > MAX_PLATFORM_REF_LENGTH or "\x00" in url:
        return None
    mime_type = (params.get(f"MediaContentType{index}") or "").strip()
    if len(mime_type) > 255 or "\x00" in mime_type:
        mime_type = ""
    kind = CONTACT if mime_type.split(";")[0].strip().lower() in VCARD_TYPES else kind_for(mime_type)
    return Attachment(kind=kind, mime_type=mime_type, platform_ref=url)


def twiml_response(twiml):
    return HttpResponse(str(twiml), content_type="text/xml; charset=utf-8")
