"""Voice and audio transcription: after the fetch, before BRAIN is asked; optional (settings.TRANSCRIBER, empty: off).

`transcribe_message` (called by attachments.fetch_pending right after it stores files, so once per file, whichever
task fetched it) gives each stored voice or audio attachment of an inbound message a transcript (kept encrypted
on the Attachment), which then reaches BRAIN in the attachment entry (and as the message content when the person
wrote nothing) and conversation memory with its search (connectors.signals.message_transcribed). A failing
transcriber never costs the message: the failure is logged and audited by its kind only, the transcript stays empty
and BRAIN is asked all the same. Transcripts are what people said: never logged.

HttpTranscriber speaks the OpenAI-compatible `POST <TRANSCRIBER_URL>/v1/audio/transcriptions` (multipart `file`,
`model`; answer `{"text": ...}`), as OpenAI and local Whisper servers do, through the outbound-URL guard.
"""
import logging

import httpx
from django.conf import settings
from django.utils.module_loading import import_string

from audit import services as audit
from brain_connectors.shared.guarded_http import guarded_client
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.delivery import attachment_store
from connectors.models import Attachment
from connectors.permissions import Principal
from connectors.platforms.attachments import AUDIO, VOICE
from connectors.platforms.base import MAX_CONTENT_LENGTH
from connectors.signals import message_transcribed

logger = logging.getLogger(__name__)

TRANSCRIBER_ACTOR = Principal.system_actor("transcriber", via="attachments")
TRANSCRIBED_KINDS = (VOICE, AUDIO)
ENDPOINT = "/v1/audio/transcriptions"


class TranscriptionError(Exception):
    def __init__(self, message, code="transcription_failed"):
        super().__init__(message)
        self.code = code


class HttpTranscriber:
    """An OpenAI-compatible transcription server (TRANSCRIBER_URL, TRANSCRIBER_API_KEY, TRANSCRIBER_MODEL)."""

    def __init__(self, url=None, api_key=None, model=None, timeout=None):
        base = (url or settings.TRANSCRIBER_URL or "").rstrip("/")
        if not base:
            raise TranscriptionError("TRANSCRIBER_URL is not set", code="transcriber_misconfigured")
        # Either the server's base URL or the full endpoint URL.
        self.url = base if base.endswith(ENDPOINT) else base + ENDPOINT
        self.api_key = settings.TRANSCRIBER_API_KEY if api_key is None else api_key
        self.model = model or settings.TRANSCRIBER_MODEL
        self.timeout = settings.TRANSCRIBER_TIMEOUT if timeout is None else timeout

    def transcribe(self, data: bytes, mime_type: str, file_name: str) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        files = {"file": (file_name, data, mime_type or "application/octet-stream")}
        try:
            with guarded_client(timeout=self.timeout) as client:
                response = client.post(self.url, data={"model": self.model, "response_format": "json"},
                                       files=files, headers=headers)
        except UnsafeURL as exc:
            raise TranscriptionError(f"TRANSCRIBER_URL is refused: {exc}", code="transcriber_unsafe_url")
        except httpx.TimeoutException:
            raise TranscriptionError(f"no answer within {self.timeout}s", code="transcriber_timeout")
        except httpx.HTTPError as exc:
            raise TranscriptionError(f"unreachable: {type(exc).__name__}", code="transcriber_unreachable")
        if response.status_code != 200:
            raise TranscriptionError(f"HTTP {response.status_code}", code="transcriber_refused")
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise TranscriptionError('the answer is not JSON with a "text"', code="transcriber_bad_response")
        if not isinstance(text, str):
            raise TranscriptionError('"text" is not a string', code="transcriber_bad_response")
        return text


def get_transcriber():
    """The configured transcriber, or None when transcription is off."""
    return import_string(settings.TRANSCRIBER)() if settings.TRANSCRIBER else None


def transcribe_message(inbound_id, attachment_ids) -> int:
    """Transcribe these just-stored attachments of one inbound message, those that are voice or audio; returns how
    many got a transcript. Never raises: BRAIN is asked whatever happens here."""
    if not settings.TRANSCRIBER:
        return 0
    rows = [row for row in Attachment.objects.filter(inbound_id=inbound_id, pk__in=attachment_ids,
                                                     status=Attachment.Status.STORED, kind__in=TRANSCRIBED_KINDS)
            .exclude(storage_name="").select_related("inbound")
            if not row.transcript]  # encrypted: compared here, not in SQL
    if not rows:
        return 0
    try:
        transcriber = get_transcriber()
    except Exception as exc:  # a misconfiguration: say so, and answer the message without transcripts
        logger.error("TRANSCRIBER cannot be used (%s): inbound %s is answered without transcripts",
                     type(exc).__name__, inbound_id)
        return 0
    done = sum(_transcribe_one(transcriber, row) for row in rows)
    if done:
        inbound = rows[0].inbound
        every_row = list(Attachment.objects.filter(inbound_id=inbound_id))
        try:
            message_transcribed.send(sender=Attachment, connector_id=inbound.connector_id, inbound_id=inbound_id,
                                     text=memory_text(inbound.content, every_row))
        except Exception:  # memory misses the transcript; BRAIN still gets it
            logger.exception("Recording the transcripts of inbound %s in memory failed", inbound_id)
    return done


def _transcribe_one(transcriber, row) -> bool:
    details = {"inbound_id": row.inbound_id, "attachment_id": str(row.id), "kind": row.kind, "size": row.size}
    try:
        data = attachment_store.read(row.storage_name)
        text = (transcriber.transcribe(data, row.mime_type, row.file_name or f"{row.kind}.bin") or "").strip()
    except Exception as exc:
        code = getattr(exc, "code", "transcription_failed")
        # The type and code only: an error may quote what the server heard.
        logger.warning("Transcribing attachment %s of inbound %s failed (%s, %s); BRAIN is asked without it",
                       row.id, row.inbound_id, code, type(exc).__name__)
        audit.record_action("attachment.transcribe", TRANSCRIBER_ACTOR, "connector", row.inbound.connector_id,
                            result=audit.FAILURE, error=code, **details)
        return False
    text = text[:MAX_CONTENT_LENGTH]
    Attachment.objects.filter(pk=row.pk).update(transcript=text)
    row.transcript = text
    audit.record_action("attachment.transcribe", TRANSCRIBER_ACTOR, "connector", row.inbound.connector_id,
                        chars=len(text), **details)
    return bool(text)


def transcripts(rows) -> str:
    """The transcripts of these attachments, one line each ("" when none has one)."""
    return "\n".join(row.transcript for row in rows if row.transcript)


def memory_text(content, rows) -> str:
    """What memory keeps once transcripts exist: the text (if any), then "[voice] <what was said>" per attachment."""
    said = [f"[{row.kind}] {row.transcript}" for row in rows if row.transcript]
    return "\n".join(([content] if content else []) + said)
