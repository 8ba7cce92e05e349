"""BRAIN backends: who answers a person. Chosen by settings.BRAIN_BACKEND (a dotted path).

EchoBrain is the embedded default: deterministic, no network. HttpBrain POSTs a signed JSON
request to BRAIN_URL and validates the answer.

Request body (HttpBrain):
    {"connector": {"id", "kind"}, "message": {"id", "sender", "sender_name", "content", "attachments"},
     "context": [{"role": "user"|"assistant", "content", "time"}, ...]}
"attachments": [{"id", "kind", "mime_type", "size", "file_name", "caption", "status"} (+ "latitude", "longitude"
for a location, "contact" for a contact, "error" when unavailable, "url" (signed, short-lived: BRAIN downloads the
bytes there; connectors/delivery/attachment_urls.py) for a stored file, "transcript" for a transcribed voice note)];
content may be "" when attachments exist (a voice note's transcript when there is one).
"button" ({"delivery_id", "button_id", "label", "via"}) is there only when the message is a press of one of our buttons
or a numbered reply picking an option (connectors/delivery/presses.py).
Expected response: 200 with {"reply": "<text>"} or {"reply": null} for no reply; the reply may carry buttons,
{"reply": "...", "buttons": [{"id", "label"}]} (connectors/platforms/buttons.py: at most MAX_BUTTONS, unique ids),
and files, "attachments": [{"url": ...} or {"data": <base64>, "file_name": ...}, with optional kind, mime_type,
file_name and caption] (checked like a REST send's, connectors/delivery/outbound_attachments.py); with files, "reply"
may be "".

BRAIN_URL passes the outbound-URL guard like every URL we call: a system check at start-up
(brain_connectors.checks) and, on each call, the address the connection goes to
(brain_connectors.shared.guarded_http). BRAIN is often an internal service: allow its host name with
BRAIN_URL_ALLOWED_HOSTS, or private addresses at large with BRAIN_ALLOW_PRIVATE_URLS.
"""
import json
import logging
import time
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from django.utils.module_loading import import_string

from brain_connectors.shared import signing
from brain_connectors.shared.guarded_http import guarded_client
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.delivery.outbound_attachments import shape_problem
from connectors.platforms.base import MAX_CONTENT_LENGTH
from connectors.platforms.buttons import button_problems, clean_buttons

logger = logging.getLogger(__name__)


class BrainError(Exception):
    def __init__(self, message, code="brain_error"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BrainRequest:
    connector_id: str
    connector_kind: str
    sender: str
    content: str
    message_id: str = ""
    sender_name: str = ""
    context: list = field(default_factory=list)
    attachments: list = field(default_factory=list)  # connectors.delivery.attachments.for_brain()
    button: dict | None = None  # the button pressed, when the message is a press (connectors/delivery/presses.py)


class Reply(str):
    """BRAIN's reply text, with the buttons to send under it and the files to send with it ([] for none). The text
    may be "" when there are files: test a reply with `is not None`, not its truth."""

    def __new__(cls, text, buttons=(), attachments=()):
        reply = super().__new__(cls, text)
        reply.buttons = list(buttons)
        reply.attachments = list(attachments)
        return reply


def describe_attachment(item) -> str:
    """One attachment in words, for EchoBrain: "image (image/jpeg, 98420 bytes)"."""
    name = f"{item['kind']} {item['file_name']}" if item.get("file_name") else item["kind"]
    if item.get("latitude") is not None:
        return f"{name} {item['latitude']},{item['longitude']}"
    if item["status"] != "stored":
        return f"{name} {item['status']}" + (f": {item['error']}" if item.get("error") else "")
    if item.get("size") is None:
        return name
    return f"{name} ({item['mime_type'] or 'unknown type'}, {item['size']} bytes)"


class EchoBrain:
    """Replies with what it received and how much context came with it.

    Long messages are quoted up to ECHO_QUOTE characters, so the reply itself stays sendable.
    """

    ECHO_QUOTE = 500

    def reply(self, request: BrainRequest) -> str:
        text = request.content
        if len(text) > self.ECHO_QUOTE:
            text = f"{text[: self.ECHO_QUOTE]}… ({len(request.content)} characters)"
        reply = f'Echo: "{text}" ({len(request.context)} context messages)'
        if request.attachments:
            count = len(request.attachments)
            listed = "; ".join(describe_attachment(item) for item in request.attachments)
            reply += f" [{count} attachment{'s' if count > 1 else ''}: {listed}]"
        return reply


class HttpBrain:
    def __init__(self, url=None, signing_key=None, timeout=None, max_retries=None, backoff=0.2):
        self.url = url or settings.BRAIN_URL
        self.signing_key = signing_key or settings.BRAIN_SIGNING_KEY
        self.timeout = settings.BRAIN_TIMEOUT if timeout is None else timeout
        self.max_retries = max(0, settings.BRAIN_MAX_RETRIES if max_retries is None else max_retries)
        self.backoff = backoff
        if not self.url:
            raise BrainError("BRAIN_URL is not set", code="brain_misconfigured")

    def _body(self, request: BrainRequest) -> bytes:
        payload = {
            "connector": {"id": request.connector_id, "kind": request.connector_kind},
            "message": {
                "id": request.message_id,
                "sender": request.sender,
                "sender_name": request.sender_name,
                "content": request.content,
                "attachments": [dict(item) for item in request.attachments],
                **({"button": dict(request.button)} if request.button else {}),
            },
            "context": [dict(item) for item in request.context],
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def reply(self, request: BrainRequest):
        with guarded_client(timeout=self.timeout) as client:
            return self._reply(client, request)

    def _reply(self, client, request: BrainRequest):
        body = self._body(request)
        last_error = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            # Fresh id and timestamp per attempt: each attempt is its own signed message.
            try:
                headers = {"content-type": "application/json", **signing.signed_headers(self.signing_key, body)}
            except (signing.SignatureError, ValueError) as exc:
                raise BrainError(f"BRAIN_SIGNING_KEY is unusable: {exc}", code="brain_misconfigured")
            try:
                response = client.post(self.url, content=body, headers=headers)
            except UnsafeURL as exc:  # a setting to fix, not an outage: no retry
                raise BrainError(f"BRAIN_URL is refused: {exc}", code="brain_unsafe_url")
            except httpx.TimeoutException:
                last_error = BrainError(f"BRAIN did not answer within {self.timeout}s", code="brain_timeout")
                continue
            except httpx.InvalidURL as exc:
                raise BrainError(f"BRAIN_URL is invalid: {exc}", code="brain_misconfigured")
            except httpx.HTTPError as exc:
                last_error = BrainError(f"BRAIN is unreachable: {type(exc).__name__}", code="brain_unreachable")
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last_error = BrainError(f"BRAIN answered HTTP {response.status_code}", code="brain_unavailable")
                continue
            if response.status_code != 200:
                raise BrainError(f"BRAIN refused the request: HTTP {response.status_code}", code="brain_refused")
            return self._parse(response)
        logger.warning("BRAIN call failed after %d attempts: %s", self.max_retries + 1, last_error)
        raise last_error

    @staticmethod
    def _parse(response):
        try:
            data = response.json()
        except (ValueError, RecursionError):
            raise BrainError("BRAIN answered with something that is not JSON", code="brain_bad_response")
        if not isinstance(data, dict) or "reply" not in data:
            raise BrainError('BRAIN answer lacks a "reply" field', code="brain_bad_response")
        reply = data["reply"]
        if reply is None:
            return None
        files = data.get("attachments") or []
        if problem := brain_files_problem(files):
            raise BrainError(f'BRAIN "attachments" are invalid: {problem}', code="brain_bad_response")
        if not isinstance(reply, str) or not (reply.strip() or (files and reply == "")):
            raise BrainError('BRAIN "reply" must be a non-empty string or null ("" only with attachments)',
                             code="brain_bad_response")
        if len(reply) > MAX_CONTENT_LENGTH:
            raise BrainError(f"BRAIN reply is longer than {MAX_CONTENT_LENGTH} characters", code="brain_bad_response")
        buttons = data.get("buttons") or []
        if problem := button_problems(buttons):
            raise BrainError(f'BRAIN "buttons" are invalid: {problem}', code="brain_bad_response")
        return Reply(reply, clean_buttons(buttons), files)


def brain_files_problem(files) -> str | None:
    """What is wrong with the form of BRAIN's "attachments" (by URL or inline data only), or None."""
    if problem := shape_problem(files):
        return problem
    if any("id" in item for item in files):
        return "give each file by url or data (upload ids belong to REST clients)"
    return None


# BRAIN_BACKEND values written before the backends moved into connectors.delivery keep working.
LEGACY_BACKEND_PATHS = {
    "connectors.brain.EchoBrain": "connectors.delivery.brain.EchoBrain",
    "connectors.brain.HttpBrain": "connectors.delivery.brain.HttpBrain",
}


def backend_path(dotted_path):
    """The importable path of a BRAIN_BACKEND value, old spellings included."""
    return LEGACY_BACKEND_PATHS.get(dotted_path, dotted_path)


def get_brain():
    return import_string(backend_path(settings.BRAIN_BACKEND))()

