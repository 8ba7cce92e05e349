"""The contract every platform implements, and the unified message format.

A platform module subclasses `BaseConnector`, declares JSON schemas for its config and
credentials, and implements `send()` and `health_check()`; inbound platforms also parse and
verify their webhooks. Platform code raises `ConnectorError` for anything that went wrong on
the platform's side, marking whether retrying can help.
"""
import asyncio
import concurrent.futures
import contextlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import jsonschema

from connectors.platforms.addresses import InvalidAddress
from connectors.platforms.attachments import OUTGOING_KINDS, Attachment, OutgoingAttachment, attachment_problem
from connectors.platforms.buttons import button_problems

MAX_CONTENT_LENGTH = 10_000
MAX_ADDRESS_LENGTH = 255
MAX_METADATA_DEPTH = 16
# How a JSON-schema `pattern` ends. jsonschema matches patterns with Python's re.search, where a
# bare `$` also matches before a final "\n" (a subject "Hello\n" passed, then failed every send).
# `\Z` fixes Python only: it is no ECMA-262 or Rust regex (jsonschema_rs refuses it, and schemas
# may be published). `(?!\n)$` means the very end in all three.
PATTERN_END = r"(?!\n)$"
# What travels to a destination config key (BaseConnector.destination_config_keys).
CREDENTIALS, MESSAGES = "credentials", "messages"


class ConnectorError(Exception):
    """A platform refused or failed an operation.

    permanent: retrying the same request cannot succeed (bad token, blocked user, invalid number).
    retry_after: seconds the platform asked us to wait (HTTP 429, Telegram's retry_after).
    """

    def __init__(self, message, permanent=False, retry_after=None, code="platform_error"):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code


class MessageValidationError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _unicode_problem(value: str, allow_nul=True):
    """Text that cannot be stored: lone surrogates (JSON "\\ud800" decodes to one; UTF-8 cannot
    encode it) and, where PostgreSQL keeps the value as text or jsonb, NUL."""
    if not allow_nul and "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (it contains a lone surrogate)"
    return None


def _validate_content(content, errors, may_be_empty=False):
    if not isinstance(content, str):
        errors["content"] = "must be a string"
    elif not content.strip() and not (may_be_empty and content == ""):
        errors["content"] = "must not be empty"
    elif len(content) > MAX_CONTENT_LENGTH:
        errors["content"] = f"must be at most {MAX_CONTENT_LENGTH} characters (got {len(content)})"
    elif problem := _unicode_problem(content):  # content is encrypted, so NUL is fine there
        errors["content"] = problem


def _validate_address(name, value, errors):
    if not isinstance(value, str) or not value.strip():
        errors[name] = "must be a non-empty string"
    elif len(value) > MAX_ADDRESS_LENGTH:
        errors[name] = f"must be at most {MAX_ADDRESS_LENGTH} characters"
    elif problem := _unicode_problem(value, allow_nul=False):
        errors[name] = problem


def _metadata_problem(value, depth=0):
    """Why `value` cannot be stored as JSON (jsonb on PostgreSQL), or None."""
    if depth > MAX_METADATA_DEPTH:
        return f"must not be nested more than {MAX_METADATA_DEPTH} levels deep"
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must not hold NaN or infinite numbers"
    if isinstance(value, str):
        return _unicode_problem(value, allow_nul=False)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = (_unicode_problem(key, allow_nul=False) if isinstance(key, str) else "keys must be strings") \
                or _metadata_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        return next(filter(None, (_metadata_problem(item, depth + 1) for item in value)), None)
    return f"must be JSON (got {type(value).__name__})"


@dataclass(frozen=True)
class IncomingMessage:
    """A message a person sent us, as every platform parses it."""

    sender: str  # the platform address of the person: chat id, phone number, CLI user name
    content: str
    platform_message_id: str  # unique per connector; the dedupe key
    sender_name: str = ""
    received_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Files, places and contacts sent with it. A message with attachments may have no text: content is then ""
    # (a caption, when the platform has one for the whole message, is the content).
    attachments: tuple[Attachment, ...] = ()

    def __post_init__(self):
        errors = {}
        _validate_address("sender", self.sender, errors)
        _validate_address("platform_message_id", self.platform_message_id, errors)
        if not isinstance(self.attachments, tuple):
            errors["attachments"] = "must be a tuple"
        elif problem := next(filter(None, map(attachment_problem, self.attachments)), None):
            errors["attachments"] = problem
        _validate_content(self.content, errors, may_be_empty=bool(self.attachments) and "attachments" not in errors)
        if not isinstance(self.sender_name, str) or len(self.sender_name) > 200:
            errors["sender_name"] = "must be a string of at most 200 characters"
        elif problem := _unicode_problem(self.sender_name, allow_nul=False):
            errors["sender_name"] = problem
        if not isinstance(self.metadata, dict):
            errors["metadata"] = "must be an object"
        elif problem := _metadata_problem(self.metadata):
            errors["metadata"] = problem
        if errors:
            raise MessageValidationError(errors)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message we send to a person on a platform."""

    recipient: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Buttons ({"id", "label"}, connectors/platforms/buttons.py) for platforms with supports_buttons; the others got
    # them as numbered options in `content` when the message was queued.
    buttons: tuple = ()
    # Stored files to send with it (OutgoingAttachment), for platforms with supports_attachments; with any, the text
    # may be empty. The text is their caption where the platform has one.
    attachments: tuple = ()

    def __post_init__(self):
        errors = {}
        _validate_address("recipient", self.recipient, errors)
        if not isinstance(self.attachments, tuple) or not all(
                isinstance(item, OutgoingAttachment) for item in self.attachments):
            errors["attachments"] = "must be a tuple of OutgoingAttachment"
        _validate_content(self.content, errors, may_be_empty=bool(self.attachments) and "attachments" not in errors)
        if problem := button_problems(self.buttons):
            errors["buttons"] = problem
        if errors:
            raise MessageValidationError(errors)


@dataclass(frozen=True)
class SendResult:
    platform_message_id: str = ""
    # True when the platform itself confirms the person has it (no later receipt will come).
    delivered: bool = False


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Receipt:
    """A platform's word on a message we sent (Twilio status callback, call status)."""

    platform_message_id: str
    status: str  # "delivered" or "failed"
    error: str = ""


@dataclass
class WebhookResult:
    """What one inbound webhook request carried, parsed by the platform."""

    messages: list[IncomingMessage] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    # The JSON body the platform expects in the 200 answer, when it expects one (Slack's url_verification).
    acknowledgement: dict | None = None


class WebhookRejected(Exception):
    """Signature or secret missing, forged or stale: answered 403 before anything is written."""


class WebhookIgnored(Exception):
    """A well-signed payload we do not handle (unknown update type, malformed shape). Answered 200
    with nothing done, so the platform stops retrying it."""


class WebhookMalformed(Exception):
    """A well-signed body that breaks the platform's documented format (not JSON, wrong shape).
    Answered 400 with the reasons and nothing stored: for formats we define ourselves (the generic
    `webhook` kind) such a body is a bug in the sender, which it should see. Platforms whose sender
    retries anything but 2xx raise WebhookIgnored instead."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BaseConnector:
    """One platform. Instances wrap one registry row (`connectors.models.Connector`)."""

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    config_schema: ClassVar[dict] = {"type": "object", "additionalProperties": False, "properties": {}}
    credentials_schema: ClassVar[dict] = {"type": "object", "additionalProperties": False, "properties": {}}
    # True when pairing works by BRAIN sending the code to the address (email's link) rather than the person sending
    # it to BRAIN: routing then never shows the code to whoever asked for it.
    delivers_pairing_code: ClassVar[bool] = False
    # True when send() shows OutgoingMessage.buttons as the platform's own buttons (Telegram, Slack); else the
    # buttons are written into the text as numbered options and a numbered reply is read back as a press.
    supports_buttons: ClassVar[bool] = False
    # What send() does with OutgoingMessage.attachments, checked before a delivery exists (outbound_attachments.py;
    # else a 400 `attachments_unsupported`): whether it sends them, which kinds, the platform's own cap per kind in
    # bytes, the types it takes per kind if fewer than our allowlist (delivery/attachment_types.py), and whether the
    # platform fetches them from a URL we give it (Twilio's MediaUrl: needs PUBLIC_BASE_URL).
    supports_attachments: ClassVar[bool] = False
    attachment_kinds: ClassVar[tuple] = OUTGOING_KINDS
    attachment_max_bytes: ClassVar[dict] = {}
    attachment_mime_types: ClassVar[dict] = {}
    attachments_need_public_url: ClassVar[bool] = False
    # Config keys that decide where the connector's credentials or message content are sent, and which of the two
    # travels there ({"api_base_url": CREDENTIALS}). Whoever may change them may send the credentials anywhere, so
    # adding, changing or removing one needs admin_connector, as the credentials do; each value must pass
    # brain_connectors.shared.url_guard (and CREDENTIALS ones need https:// across the Internet). Declare every such
    # key a platform adds.
    destination_config_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, connector):
        self.connector = connector
        self.config = connector.config or {}

    # --- validation (class-level: used before a row exists) ---
    @classmethod
    def validate_config(cls, config) -> dict[str, str]:
        return schema_errors(cls.config_schema, config)

    @classmethod
    def validate_credentials(cls, credentials) -> dict[str, str]:
        # Redacted: a schema message quotes the offending value, and here that value is a secret.
        return schema_errors(cls.credentials_schema, credentials, redact=True)

    @classmethod
    def validate_recipient(cls, recipient: str) -> str | None:
        """Why `recipient` cannot be an address on this platform, or None. Checked when a message
        is queued, so the caller hears at once instead of through a failed delivery."""
        return None

    @classmethod
    def normalize_address(cls, address, *, strict: bool = True) -> str:
        """A person's address on this platform in the one form it is stored in (routing's
        identities, conversation memory): trimmed here; platforms override as their rules need.
        strict: refuse what cannot be an address (InvalidAddress); lenient (strict=False) only
        trims and removes platform decoration, and never refuses (memory keeps what it is given)."""
        value = str(address or "").strip()
        if strict and not 0 < len(value) <= MAX_ADDRESS_LENGTH:
            raise InvalidAddress(f"must be 1-{MAX_ADDRESS_LENGTH} characters")
        return value

    @property
    def credentials(self) -> dict:
        return self.connector.get_credentials()

    # --- lifecycle ---
    def start(self) -> None:
        """Connect to the platform (e.g. register a webhook). Raise ConnectorError on failure."""

    def stop(self) -> None:
        """Disconnect from the platform (e.g. delete the webhook)."""

    def health_check(self) -> HealthResult:
        return HealthResult(ok=True, detail="no remote side to check")

    def inbound_url(self) -> str | None:
        """The URL a person must paste into the platform's settings for it to reach us (Slack's Request URL), or
        None when the connector registers itself or takes nothing over HTTP. Shown in the API and the admin."""
        return None

    # --- traffic ---
    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        """Send one message. `message.metadata` may hold `reply_to` (the inbound message's platform
        id and metadata) for platforms that thread replies. Raise ConnectorError on failure."""
        raise NotImplementedError

    async def send_async(self, message: OutgoingMessage, delivery_id: str) -> SendResult:
        """send(), for the batch sender's event loop (connectors/delivery/sender.py). By default the sync send()
        in a thread; platforms with an async client override it and keep that client open between calls
        (register its closing with `on_sender_close`)."""
        return await asyncio.to_thread(self.send, message, delivery_id=delivery_id)

    def typing(self, recipient: str, metadata: dict):
        """A context manager that shows the platform's typing indicator to `recipient` (the sender of the inbound
        message BRAIN is answering; `metadata` is that message's) while it is open: connectors/delivery/replies.py
        holds it open around the call to BRAIN. By default nothing: most platforms have no such indicator. It is
        cosmetic, so it must not raise, nor hold up entering or leaving the block beyond a moment."""
        return contextlib.nullcontext()

    # --- inbound webhooks (connectors/webhooks.py calls these, in this order) ---
    def verify_webhook(self, request, channel: str) -> None:
        """Raise WebhookRejected unless the request provably comes from the platform. Constant-time
        comparisons only; no database writes. `channel` is "messages", "voice" or "status"."""
        raise WebhookRejected(f"{self.kind} connectors accept no webhooks")

    def parse_webhook(self, request, channel: str) -> WebhookResult:
        """Turn a verified request into messages and receipts. Raise WebhookIgnored for payloads
        that should be acknowledged and dropped."""
        raise WebhookIgnored("no parser")

    def webhook_response(self, request, channel: str, result: WebhookResult, stored: list):
        """The HTTP answer after everything was committed; `stored` holds (InboundMessage,
        created) pairs. None means a plain 200 JSON acknowledgement."""
        return None

    # --- long-running work owned by `manage.py runconnectors` under a lease ---
    runs_poller: ClassVar[bool] = False

    def poll_once(self, stop_event) -> int:
        """Fetch and store one batch of inbound messages; return how many were handled."""
        return 0

    # --- attachments (connectors/delivery/attachments.py calls this after the message is committed) ---
    def fetch_attachment(self, platform_ref: str, max_bytes: int) -> bytes:
        """The bytes of the file `platform_ref` names (an Attachment's). Raise ConnectorError when it cannot be had,
        with code "too_large" when the platform says it is over `max_bytes`. Messages never carry a credential."""
        raise ConnectorError(f"{self.kind} connectors cannot fetch attachments", permanent=True, code="unsupported")


def conversation_key(address, metadata=None) -> str:
    """What conversation memory keeps a message under: the conversation the platform named in the message's metadata
    (`conversation`: a Slack channel thread, which many people share), else the person's address (one conversation
    per person and connector, a DM)."""
    conversation = (metadata or {}).get("conversation") if isinstance(metadata, dict) else None
    return conversation if isinstance(conversation, str) and conversation else address


def run_sync(coroutine_function, *args, **kwargs):
    """Run `await coroutine_function(*args, **kwargs)` to completion from synchronous code (async SDKs)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine_function(*args, **kwargs))
    # Called from inside a running loop (an async caller): never nest loops; use a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="platform-call") as pool:
        return pool.submit(asyncio.run, coroutine_function(*args, **kwargs)).result()


_sender_closers = []


def on_sender_close(close):
    """Register `async close()`: run when a sender's event loop ends, to close the clients kept open for it."""
    if close not in _sender_closers:
        _sender_closers.append(close)


async def close_sender_clients():
    """Close every client the platforms kept open for this event loop (the sender calls this as it stops)."""
    for close in list(_sender_closers):
        await close()


def schema_errors(schema, value, redact=False) -> dict[str, str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = {}
    for error in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        errors.setdefault(path, _redacted_message(error) if redact else error.message)
    return errors


def _redacted_message(error) -> str:
    if error.validator == "required":
        return error.message  # names the missing field, never a value
    if error.validator == "additionalProperties":
        return "unexpected field(s): " + ", ".join(sorted(set(error.instance) - set(error.schema.get("properties", {}))))
    return f"fails the {error.validator!r} rule ({error.validator_value!r})"
