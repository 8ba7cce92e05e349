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
import logging
import re

from django.conf import settings
from twilio.request_validator import RequestValidator

from connectors.platforms.addresses import InvalidAddress
from connectors.platforms.base import (
    CREDENTIALS,
    PATTERN_END,
    BaseConnector,
    ConnectorError,
    HealthResult,
    WebhookIgnored,
    WebhookRejected,
    WebhookResult,
)
from connectors.platforms.twilio_common.client import DEFAULT_TIMEOUT, BaseUrlHttpClient, make_client
from connectors.platforms.twilio_common.errors import PERMANENT_CODES, call_twilio, map_twilio_error, parse_retry_after
from connectors.platforms.twilio_common.inbound import inbound_message, receipt_from_status, twiml_response
from connectors.platforms.twilio_common.media import download as download_media
from connectors.platforms.webhook_urls import public_url, webhook_url

__all__ = [
    "DEFAULT_TIMEOUT", "E164", "E164_RE", "NOT_E164", "PERMANENT_CODES", "BaseUrlHttpClient", "TwilioConnector",
    "TwilioMessagingConnector", "call_twilio", "config_schema", "inbound_message", "make_client",
    "map_twilio_error", "normalize_phone", "parse_retry_after", "receipt_from_status", "twiml_response",
]

logger = logging.getLogger(__name__)

E164 = r"\+[1-9][0-9]{6,14}"
E164_RE = re.compile(E164)  # fullmatch: "$" would pass a final "\n"
# The form only. Where it may point, and plain http only to an allowed private address (a fake, a
# proxy on the local network), is brain_connectors.shared.url_guard's call when the config is saved.
API_BASE_URL_PATTERN = rf"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?(/[^\s?#]*)?{PATTERN_END}"

CREDENTIALS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["account_sid", "auth_token"],
    "properties": {
        "account_sid": {"type": "string", "pattern": rf"^AC[0-9a-fA-F]{{32}}{PATTERN_END}"},
        "auth_token": {"type": "string", "pattern": rf"^[A-Za-z0-9_-]{{16,128}}{PATTERN_END}"},
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


PHONE_PROBLEM = "phone number in E.164 form (+<country code><number>, e.g. +14155550123)"
NOT_E164 = f"not a {PHONE_PROBLEM}"


def normalize_phone(recipient: str) -> str:
    """E.164 with the spaces, dashes, dots and brackets people type removed; ConnectorError otherwise."""
    cleaned = "".join(ch for ch in str(recipient).strip() if ch not in " -.()\u00a0")
    if not E164_RE.fullmatch(cleaned):
        raise ConnectorError(f"The recipient is {NOT_E164}.", permanent=True, code="invalid_recipient")
    return cleaned


# --- the shared connector --------------------------------------------------------------------


class TwilioConnector(BaseConnector):
    """Base of the three Twilio kinds. Subclasses implement send() and the messages/voice channels."""

    credentials_schema = CREDENTIALS_SCHEMA
    destination_config_keys = {"api_base_url": CREDENTIALS}  # every API call carries the auth token
    webhook_channels = ("messages", "status")

    @classmethod
    def normalize_recipient(cls, recipient: str) -> str:
        return normalize_phone(recipient)

    @classmethod
    def normalize_address(cls, address, *, strict: bool = True) -> str:
        """A person's phone number in plain E.164 (what people type around it removed)."""
        value = super().normalize_address(address, strict=False)
        if not strict:
            return value
        try:
            return normalize_phone(value)
        except ConnectorError:
            raise InvalidAddress(f"must be a {PHONE_PROBLEM}", subject="phone number") from None

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
        return webhook_url("webhook-twilio-status", self.connector.id)

    # --- inbound webhooks ---
    def verify_webhook(self, request, channel: str) -> None:
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

    def fetch_attachment(self, platform_ref, max_bytes):
        """A MediaUrl of an inbound message, with this account's Basic auth (twilio_common.media)."""
        return download_media(platform_ref, self.credentials, self.config, max_bytes,
                              float(self.config.get("timeout", DEFAULT_TIMEOUT)))

    def webhook_response(self, request, channel, result, stored):
        if channel == "messages":
            # An empty TwiML document: acknowledged, no auto-reply (BRAIN answers through the API).
            return twiml_response("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response />")
        return None
