"""What the three Twilio kinds (`sms`, `whatsapp`, `voice`) share.

- `make_client()`: a `twilio.rest.Client` from the connector's credentials and config. Config
  `api_base_url` (a regional edge such as https://api.dublin.ie1.twilio.com, or a loopback fake)
  replaces the scheme and host of every request the SDK makes (`BaseUrlHttpClient`).
- `map_twilio_error()`: a Twilio REST error or a network failure → `ConnectorError` with a
  stable `code` and the right `permanent` / `retry_after`.
- `TwilioConnector`: signature verification (X-Twilio-Signature over the public URL, before any
  database write), delivery receipts from status callbacks, the health check (fetch the
  account) and the StatusCallback URL given to every send when PUBLIC_BASE_URL is set.
"""
import email.utils
import logging
import re
import time
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from ..base import (
    BaseConnector,
    ConnectorError,
    HealthResult,
    IncomingMessage,
    MessageValidationError,
    Receipt,
    WebhookIgnored,
    WebhookRejected,
    WebhookResult,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
E164 = r"\+[1-9][0-9]{6,14}"
E164_RE = re.compile(rf"^{E164}$")
# https anywhere (regional edges, a proxy); plain http only to a loopback fake.
API_BASE_URL_PATTERN = r"^(https://[A-Za-z0-9.-]+(:[0-9]{1,5})?|http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?)(/[^\s?#]*)?$"

CREDENTIALS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["account_sid", "auth_token"],
    "properties": {
        "account_sid": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"},
        "auth_token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,128}$"},
    },
}

COMMON_CONFIG_PROPERTIES = {
    "api_base_url": {"type": "string", "maxLength": 200, "pattern": API_BASE_URL_PATTERN},
    "timeout": {"type": "number", "minimum": 1, "maximum": 60},
}


def config_schema(from_number_pattern, **extra_properties):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["from_number"],
        "properties": {
            "from_number": {"type": "string", "maxLength": 64, "pattern": from_number_pattern},
            **COMMON_CONFIG_PROPERTIES,
            **extra_properties,
        },
    }


NOT_E164 = "not a phone number in E.164 form (+<country code><number>, e.g. +14155550123)"


def normalize_phone(recipient: str) -> str:
    """E.164 with the spaces, dashes, dots and brackets people type removed; ConnectorError otherwise."""
    cleaned = "".join(ch for ch in str(recipient).strip() if ch not in " -.()\u00a0")
    if not E164_RE.match(cleaned):
        raise ConnectorError(f"The recipient is {NOT_E164}.", permanent=True, code="invalid_recipient")
    return cleaned


# --- the REST client -------------------------------------------------------------------------


class BaseUrlHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, sending every request to `base_url` instead of https://api.twilio.com
    (path and query kept), and remembering the last response's headers (Retry-After)."""

    def __init__(self, base_url=None, timeout=DEFAULT_TIMEOUT):
        super().__init__(timeout=timeout)
        self.base = urlsplit(base_url.rstrip("/")) if base_url else None
        self.last_headers = {}

    def rewrite(self, url):
        if self.base is None:
            return url
        parts = urlsplit(url)
        return urlunsplit((self.base.scheme, self.base.netloc, self.base.path + parts.path, parts.query, ""))

    # The SDK logs every request and all its headers at INFO; one DEBUG line each is enough here.
    def log_request(self, kwargs):
        logger.debug("Twilio request: %s %s", kwargs.get("method"), kwargs.get("url"))

    def log_response(self, status_code, response):
        logger.debug("Twilio response: HTTP %s", status_code)

    def request(self, method, url, *args, **kwargs):
        self.last_headers = {}
        response = super().request(method, self.rewrite(url), *args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


def make_client(credentials, config):
    """A Twilio client for one call; cheap, and never shared between threads."""
    http_client = BaseUrlHttpClient(config.get("api_base_url"), timeout=float(config.get("timeout", DEFAULT_TIMEOUT)))
    # A non-empty environment mapping keeps TWILIO_EDGE / TWILIO_REGION from the process
    # environment out: where requests go is the connector's config alone.
    return Client(
        credentials.get("account_sid"),
        credentials.get("auth_token"),
        http_client=http_client,
        environment={"BRAIN_CONNECTORS": "1"},
    )


# --- errors ----------------------------------------------------------------------------------

# Twilio error code → (our code, human summary). All permanent: the same request cannot succeed.
PERMANENT_CODES = {
    20003: ("invalid_credentials", "Twilio refused the account SID / auth token"),
    20005: ("account_inactive", "the Twilio account is suspended or closed"),
    20404: ("not_found", "Twilio does not know this resource (wrong account SID?)"),
    21211: ("invalid_recipient", "the 'To' number is not a valid phone number"),
    21214: ("invalid_recipient", "the 'To' number cannot be reached"),
    21217: ("invalid_recipient", "the 'To' number does not appear to be valid"),
    21401: ("invalid_recipient", "the phone number is invalid"),
    21407: ("invalid_recipient", "this phone number type is not supported"),
    21408: ("region_not_enabled", "sending to this region is not enabled on the Twilio account"),
    21421: ("invalid_recipient", "the phone number is invalid"),
    21606: ("invalid_sender", "the 'From' number cannot send this kind of message"),
    21608: ("invalid_recipient", "trial accounts may only send to verified numbers"),
    21610: ("unsubscribed", "the recipient has unsubscribed (replied STOP)"),
    21612: ("invalid_recipient", "Twilio cannot route to this number"),
    21614: ("invalid_recipient", "the 'To' number is not a valid mobile number"),
    21617: ("too_long", "the message body is too long"),
    21659: ("invalid_sender", "the 'From' number does not belong to the account"),
    21660: ("invalid_sender", "the 'From' number does not belong to the account"),
    63003: ("invalid_recipient", "the channel could not find the 'To' address"),
    63007: ("invalid_sender", "the WhatsApp sender is not set up on this account"),
    63016: ("outside_window", "outside the WhatsApp 24-hour window: a template is needed"),
    63024: ("invalid_recipient", "invalid WhatsApp recipient"),
}
RATE_LIMIT_CODES = {20429, 14107}


def parse_retry_after(value, now=None):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(delta, 0.0), 3600.0)


def map_twilio_error(exc, headers=None) -> ConnectorError:
    """Classify what the SDK raised. Never repeats credentials (the SDK's messages hold none)."""
    if isinstance(exc, requests.Timeout):
        return ConnectorError("Twilio did not answer in time", code="timeout")
    if isinstance(exc, requests.ConnectionError):
        return ConnectorError(f"Twilio is unreachable: {type(exc).__name__}", code="connection_error")
    if isinstance(exc, requests.RequestException):
        return ConnectorError(f"HTTP error talking to Twilio: {type(exc).__name__}", code="connection_error")
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    detail = getattr(exc, "msg", "") or getattr(exc, "detail", "") or getattr(exc, "title", "") or ""
    where = f"HTTP {status}" + (f", Twilio error {code}" if code else "")
    if status == 429 or code in RATE_LIMIT_CODES:
        retry_after = parse_retry_after(_header(headers, "retry-after"))
        return ConnectorError(f"Twilio rate limit ({where})", retry_after=retry_after, code="rate_limited")
    if code in PERMANENT_CODES:
        ours, summary = PERMANENT_CODES[code]
        return ConnectorError(f"{summary} ({where})", permanent=True, code=ours)
    if status == 401:
        return ConnectorError(f"Twilio refused the credentials ({where})", permanent=True, code="invalid_credentials")
    if isinstance(status, int) and status >= 500:
        return ConnectorError(f"Twilio is failing ({where})", code="platform_unavailable")
    if isinstance(status, int) and status in (408, 409, 423, 425):
        return ConnectorError(f"Twilio asked to retry ({where})", code="platform_busy")
    if isinstance(status, int) and 400 <= status < 500:
        summary = _first_line(detail)
        return ConnectorError(f"Twilio rejected the request ({where}): {summary}", permanent=True, code="rejected")
    return ConnectorError(f"Unexpected Twilio error ({where})", code="platform_error")


def _header(headers, name):
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _first_line(text):
    text = str(text or "").strip().splitlines()
    return text[0][:300] if text else "no detail"


def call_twilio(client, operation):
    """Run `operation(client)`; turn anything the SDK or the network raised into ConnectorError."""
    try:
        return operation(client)
    except (TwilioRestException, TwilioException, requests.RequestException) as exc:
        raise map_twilio_error(exc, getattr(client.http_client, "last_headers", None)) from None


# --- receipts (status callbacks) -------------------------------------------------------------

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


def receipt_from_status(params):
    """A Receipt for a terminal MessageStatus / CallStatus, or None for an intermediate one."""
    message_sid = params.get("MessageSid") or params.get("SmsSid")
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
    call_sid = params.get("CallSid")
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


# --- the shared connector --------------------------------------------------------------------


class TwilioConnector(BaseConnector):
    """Base of the three Twilio kinds. Subclasses implement send() and the messages/voice channels."""

    credentials_schema = CREDENTIALS_SCHEMA
    webhook_channels = ("messages", "status")

    @classmethod
    def normalize_recipient(cls, recipient: str) -> str:
        return normalize_phone(recipient)

    @classmethod
    def validate_recipient(cls, recipient: str):
        """Checked by send_message when the message is queued (400 at once, no failed delivery)."""
        try:
            cls.normalize_recipient(recipient)
        except ConnectorError:
            return NOT_E164
        return None

    def client(self):
        return make_client(self.credentials, self.config)

    def call(self, operation):
        return call_twilio(self.client(), operation)

    # --- lifecycle and health ---
    def _fetch_account(self):
        sid = self.credentials.get("account_sid", "")
        return self.call(lambda c: c.api.v2010.accounts(sid).fetch())

    def health_check(self) -> HealthResult:
        account = self._fetch_account()
        status = getattr(account, "status", None) or "unknown"
        if status != "active":
            return HealthResult(ok=False, detail=f"Twilio account status is {status}")
        return HealthResult(ok=True, detail=f"Twilio account {account.sid} is active")

    def start(self) -> None:
        """Check the credentials. A permanent refusal (bad SID/token, closed account) fails the
        start; a transient one (Twilio down, timeout) does not: sends are retried anyway, and
        inbound webhooks keep arriving."""
        try:
            self._fetch_account()
        except ConnectorError as exc:
            if exc.permanent:
                raise
            logger.warning("Twilio unreachable while starting %s (%s); starting anyway", self.connector.id, exc.code)

    # --- outbound helpers ---
    def status_callback_url(self):
        """Where Twilio should report delivery status, or None when PUBLIC_BASE_URL is unset."""
        if not settings.PUBLIC_BASE_URL:
            return None
        from ..webhooks import webhook_url

        return webhook_url("webhook-twilio-status", self.connector.id)

    # --- inbound webhooks ---
    def verify_webhook(self, request, channel: str) -> None:
        from ..webhooks import public_url

        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            raise WebhookRejected("missing X-Twilio-Signature")
        token = self.credentials.get("auth_token")
        if not token:
            raise WebhookRejected("the connector has no auth_token to check signatures with")
        if not RequestValidator(token).validate(public_url(request), request.POST, signature):
            raise WebhookRejected("X-Twilio-Signature does not match the URL and parameters")

    def parse_webhook(self, request, channel: str) -> WebhookResult:
        if channel not in self.webhook_channels:
            raise WebhookIgnored(f"{self.kind} connectors take no {channel} webhooks")
        if channel == "status":
            return self.parse_status(request)
        return self.parse_channel(request, channel)

    def parse_status(self, request) -> WebhookResult:
        receipt = receipt_from_status(request.POST)
        if receipt is None:
            raise WebhookIgnored("intermediate status")
        return WebhookResult(receipts=[receipt])

    def parse_channel(self, request, channel) -> WebhookResult:
        raise WebhookIgnored(f"{self.kind} connectors take no {channel} webhooks")


class TwilioMessagingConnector(TwilioConnector):
    """SMS and WhatsApp: inbound messages on /webhooks/twilio/<id>/, receipts on …/status/."""

    def parse_channel(self, request, channel) -> WebhookResult:
        if channel != "messages":
            raise WebhookIgnored(f"{self.kind} connectors take no {channel} webhooks")
        return WebhookResult(messages=[inbound_message(request.POST)])

    def webhook_response(self, request, channel, result, stored):
        if channel == "messages":
            # An empty TwiML document: acknowledged, no auto-reply (BRAIN answers through the API).
            return twiml_response("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response />")
        return None


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
    from django.http import HttpResponse

    return HttpResponse(str(twiml), content_type="text/xml; charset=utf-8")
