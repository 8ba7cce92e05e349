"""`webhook`: a generic connector over signed HTTP webhooks, in both directions.

Outbound, each message is POSTed as JSON to the configured `url`:

    {"type": "message", "delivery_id", "connector_id", "recipient", "content",
     "in_reply_to": null | {"id", "metadata"},
     "attachments": [{"id", "kind", "mime_type", "size", "file_name", "caption", "url"}]}  (only with files)

signed Standard-Webhooks style (brain_connectors.shared.signing) with the connector's `signing_secret`.
`webhook-id` is the delivery id, the same on every retry, so the receiver can drop duplicates:
sending is idempotent towards a receiver that remembers the ids it has handled. 2xx is sent;
408, 429 and 5xx (Retry-After honoured, up to an hour), timeouts and connection errors are
transient; any other answer (3xx, 4xx) is permanent. Redirects are not followed. The address is
checked as the connection is made (brain_connectors.shared.guarded_http): one the outbound-URL guard refuses
fails the delivery for good, and stops the connector (code `unsafe_url`).

Files are not in the body: each attachment's `url` is a signed URL under PUBLIC_BASE_URL (valid ATTACHMENT_URL_TTL
seconds from the send; a retry carries fresh ones) from which the receiver GETs the bytes. So a send with files needs
PUBLIC_BASE_URL (attachments_need_public_url).

Inbound, senders POST to /webhooks/inbound/<connector_id>/ a JSON body
{"sender", "content", "id"?, "sender_name"?, "metadata"?, "attachments"?} signed with the same secret
(`attachments`: files by URL, fetched after commit under the outbound-URL guard: connectors.platforms.webhook_media;
with attachments, `content` may be ""). A missing,
forged or stale signature is refused with 403 before anything is written. A well-signed body that
is not JSON or has the wrong shape is a bug in the sender, answered 400 with the reasons
(WebhookMalformed) and nothing stored. `id` (or, without it, the webhook-id header) is the dedupe
key: a retried request is stored once.

During a key rotation, set `previous_signing_secret` too: inbound requests signed with either key
are accepted, and outbound requests carry a signature for each.
"""
import binascii
import json
import time
import uuid
from email.utils import parsedate_to_datetime

import httpx

from brain_connectors.shared import signing
from brain_connectors.shared.guarded_http import guarded_client
from brain_connectors.shared.url_guard import UnsafeURL, url_problem
from connectors.platforms import webhook_media
from connectors.platforms.attachments import OUTGOING_KINDS
from connectors.platforms.base import (
    MAX_ADDRESS_LENGTH,
    MAX_CONTENT_LENGTH,
    MESSAGES,
    BaseConnector,
    ConnectorError,
    HealthResult,
    IncomingMessage,
    MessageValidationError,
    OutgoingMessage,
    SendResult,
    WebhookMalformed,
    WebhookRejected,
    WebhookResult,
    schema_errors,
)

USER_AGENT = "BRAIN-Connectors-Webhook/1.0"
DEFAULT_TIMEOUT = 10.0
MAX_RETRY_AFTER = 3600  # a receiver cannot park a delivery for longer than an hour at a time
MIN_KEY_BYTES = 16
MAX_METADATA_BYTES = 4096
TRANSIENT_STATUSES = {408, 429}

_secret = {"type": "string", "minLength": MIN_KEY_BYTES, "maxLength": 500}

INBOUND_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sender", "content"],
    "properties": {
        "id": {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_ADDRESS_LENGTH},
        "sender": {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS_LENGTH},
        "sender_name": {"type": "string", "maxLength": 200},
        # "" only with attachments (IncomingMessage says so, under "content").
        "content": {"type": "string", "maxLength": MAX_CONTENT_LENGTH},
        "metadata": {"type": "object"},
        "attachments": webhook_media.ATTACHMENTS_SCHEMA,
    },
}


def key_problem(secret: str) -> str | None:
    try:
        key = signing.key_bytes(secret)
    except (signing.SignatureError, binascii.Error, ValueError):
        return "a whsec_ secret must be base64 after the prefix"
    if len(key) < MIN_KEY_BYTES:
        return f"must hold at least {MIN_KEY_BYTES} bytes of key material"
    return None


def parse_retry_after(value) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), capped; None if absent or unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def attachments_json(attachments) -> list[dict]:
    """What the receiver is told of each file: its description and the signed URL to download it from."""
    if not all(item.url for item in attachments):
        raise ConnectorError("The receiver downloads files from a public URL, and this service has none: set "
                             "PUBLIC_BASE_URL.", permanent=True, code="no_public_url")
    return [{"id": item.id, "kind": item.kind, "mime_type": item.mime_type, "size": item.size,
             "file_name": item.file_name, "caption": item.caption, "url": item.url} for item in attachments]


class WebhookConnector(BaseConnector):
    kind = "webhook"
    label = "Generic signed webhook"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 2000},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
        },
    }
    credentials_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["signing_secret"],
        "properties": {"signing_secret": _secret, "previous_signing_secret": _secret},
    }
    destination_config_keys = {"url": MESSAGES}
    supports_attachments = True
    attachment_kinds = OUTGOING_KINDS  # any file: the receiver downloads it
    attachments_need_public_url = True

    @classmethod
    def validate_config(cls, config) -> dict[str, str]:
        errors = super().validate_config(config)
        if isinstance(config, dict) and isinstance(config.get("url"), str) and "url" not in errors:
            problem = url_problem(config["url"])
            if problem:
                errors["url"] = problem
        return errors

    @classmethod
    def validate_credentials(cls, credentials) -> dict[str, str]:
        errors = super().validate_credentials(credentials)
        if isinstance(credentials, dict):
            for name in ("signing_secret", "previous_signing_secret"):
                if isinstance(credentials.get(name), str) and name not in errors:
                    problem = key_problem(credentials[name])
                    if problem:
                        errors[name] = problem
        return errors

    # --- helpers ---
    def _secrets(self) -> list[str]:
        credentials = self.credentials or {}
        return [s for s in (credentials.get("signing_secret"), credentials.get("previous_signing_secret")) if s]

    def _post(self, payload: dict, msg_id: str) -> httpx.Response:
        secrets = self._secrets()
        if not secrets:
            raise ConnectorError("No signing_secret is configured", permanent=True, code="invalid_credentials")
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signing.sign(s, msg_id, timestamp, body) for s in secrets),
        }
        timeout = float(self.config.get("timeout") or DEFAULT_TIMEOUT)
        try:
            with guarded_client(timeout=timeout) as client:
                # Streamed and never read: the receiver's body does not matter, and may be large.
                with client.stream("POST", self.config["url"], content=body, headers=headers) as response:
                    return response
        except UnsafeURL as exc:  # the connector's url: nothing to retry until an admin fixes it
            raise ConnectorError(f"The configured url is refused: {exc}", permanent=True, code="unsafe_url")
        except httpx.TimeoutException:
            raise ConnectorError(f"The receiver did not answer within {timeout:g}s", code="timeout")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ConnectorError(f"The configured url is unusable: {exc}", permanent=True, code="invalid_config")
        except httpx.HTTPError as exc:
            raise ConnectorError(f"The receiver is unreachable: {type(exc).__name__}", code="unreachable")

    # --- outbound ---
    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        reply_to = message.metadata.get("reply_to")
        payload = {
            "type": "message",
            "delivery_id": delivery_id,
            "connector_id": self.connector.id,
            "recipient": message.recipient,
            "content": message.content,
            "in_reply_to": (
                {"id": reply_to.get("platform_message_id"), "metadata": reply_to.get("metadata") or {}}
                if reply_to else None
            ),
        }
        if message.attachments:
            payload["attachments"] = attachments_json(message.attachments)
        response = self._post(payload, msg_id=delivery_id)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(platform_message_id=delivery_id)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status in TRANSIENT_STATUSES or status >= 500:
            raise ConnectorError(f"The receiver answered HTTP {status}", retry_after=retry_after,
                                 code="rate_limited" if status == 429 else "receiver_unavailable")
        raise ConnectorError(f"The receiver refused the message: HTTP {status}", permanent=True,
                             code="receiver_refused")

    def health_check(self) -> HealthResult:
        """POST a signed {"type": "ping"}; any 2xx means the receiver is up and accepts our calls."""
        try:
            response = self._post({"type": "ping", "connector_id": self.connector.id}, f"ping_{uuid.uuid4().hex}")
        except ConnectorError as exc:
            return HealthResult(ok=False, detail=exc.message)
        if 200 <= response.status_code < 300:
            return HealthResult(ok=True, detail=f"the receiver answered the ping with {response.status_code}")
        return HealthResult(ok=False, detail=f"the receiver answered the ping with HTTP {response.status_code}")

    # --- inbound ---
    def verify_webhook(self, request, channel: str) -> None:
        if channel != "messages":
            raise WebhookRejected(f"webhook connectors have no {channel} channel")
        secrets = self._secrets()
        if not secrets:
            raise WebhookRejected("no signing_secret is configured")
        try:
            signing.verify(secrets, request.headers, request.body)
        except (signing.SignatureError, ValueError) as exc:
            raise WebhookRejected(str(exc))

    def parse_webhook(self, request, channel: str) -> WebhookResult:
        try:
            data = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise WebhookMalformed("The body is not UTF-8 JSON.", details={"body": "must be a JSON object"})
        errors = schema_errors(INBOUND_SCHEMA, data)
        if errors:
            raise WebhookMalformed("The JSON body does not have the expected shape.", details=errors)
        metadata = data.get("metadata") or {}
        try:  # surrogatepass: a lone surrogate is refused below, with its reason, not here
            metadata_bytes = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        except RecursionError:
            metadata_bytes = MAX_METADATA_BYTES + 1
        if metadata_bytes > MAX_METADATA_BYTES:
            raise WebhookMalformed("metadata is too large.",
                                   details={"metadata": f"must be at most {MAX_METADATA_BYTES} bytes as JSON"})
        try:
            attachments = webhook_media.parse(data.get("attachments") or [])
        except ValueError as exc:
            field, reason = exc.args
            raise WebhookMalformed("The JSON body does not have the expected shape.", details={field: reason})
        msg_id = data.get("id")
        msg_id = str(msg_id) if msg_id is not None else request.headers.get("webhook-id", "")
        try:
            message = IncomingMessage(
                sender=data["sender"],
                content=data["content"],
                platform_message_id=msg_id,
                sender_name=data.get("sender_name", ""),
                metadata=metadata,
                attachments=attachments,
            )
        except MessageValidationError as exc:
            raise WebhookMalformed("The message is invalid.", details=exc.errors)
        return WebhookResult(messages=[message])

    def fetch_attachment(self, platform_ref, max_bytes):
        """An attachment's URL, as the sender gave it, under the outbound-URL guard (webhook_media.download)."""
        return webhook_media.download(platform_ref, max_bytes, float(self.config.get("timeout") or DEFAULT_TIMEOUT))
