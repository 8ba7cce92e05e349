"""What Twilio posts to us: inbound messages and status callbacks, parsed; TwiML answers."""
from django.http import HttpResponse

from connectors.platforms.base import IncomingMessage, MessageValidationError, Receipt, WebhookIgnored

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
    media_types = [params.get(f"MediaContentType{i}") or "unknown" for i in range(num_media)]
    body = params.get("Body", "")
    content = body
    if not body.strip():
        if not media_types:
            raise WebhookIgnored("message without text or media")
        content = f"[{len(media_types)} attachment(s): {', '.join(media_types)}]"
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
        )
    except MessageValidationError as exc:
        raise WebhookIgnored(f"malformed message webhook: {exc}")


def twiml_response(twiml):
    return HttpResponse(str(twiml), content_type="text/xml; charset=utf-8")
