"""Inbound attachments: stored with their message at once, their bytes fetched after commit, then BRAIN is asked.

The webhook (or poller) stores the message and its attachment rows in one transaction and answers; the
`fetch_attachments` task then downloads each file through the platform (BaseConnector.fetch_attachment), checks its
type and size, stores it encrypted (attachment_store) and hands the message over to the BRAIN task. A file that
cannot be had is marked unavailable with the reason: the message itself is never dropped. So is a file of a type its
kind may not be (`type_not_allowed`), and one cut short on the way (`truncated`: fewer bytes than the platform's
file API announced, where it announces a size: Telegram's getFile). Audit rows carry
attachment ids, kinds, sizes and error codes only: file names and captions are what people wrote.
"""
import logging

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from audit import services as audit
from connectors import task_queue as queue
from connectors.delivery import attachment_store, attachment_urls, transcription
from connectors.models import Attachment
from connectors.permissions import Principal
from connectors.platforms.attachments import CONTACT, card_text, summary
from connectors.platforms.base import ConnectorError
from connectors.registry.kinds import connector_for

logger = logging.getLogger(__name__)

FETCHER = Principal.system_actor("platform", via="attachments")


def create_for(inbound, attachments, stored_files=()) -> list:
    """The rows of an IncomingMessage's attachments, inside the transaction that stores the message. Locations and
    contacts are complete as they are (stored); files wait for the fetch (pending), except those whose bytes the
    caller had and stored already: `stored_files`, their storage names by position (the CLI's local files)."""
    stored_files = list(stored_files) + [""] * (len(attachments) - len(stored_files))
    rows = [
        Attachment(
            inbound=inbound, position=position, kind=item.kind, mime_type=item.mime_type, size=item.size,
            file_name=item.file_name, caption=item.caption, latitude=item.latitude, longitude=item.longitude,
            platform_ref=item.platform_ref, storage_name=stored,
            status=Attachment.Status.STORED if item.inline or stored else Attachment.Status.PENDING,
        )
        for position, (item, stored) in enumerate(zip(attachments, stored_files, strict=True))
    ]
    return Attachment.objects.bulk_create(rows)


def audit_details(rows) -> list:
    """What events and audit rows say about attachments: ids, kinds and sizes, never names or content."""
    return [{"id": str(row.id), "kind": row.kind, "size": row.size} for row in rows]


def memory_text(content, rows) -> str:
    """What conversation memory keeps for a message: its text, else what it carried ("[image]")."""
    return content or summary(row.kind for row in rows)


def hand_over(inbound_id, rows):
    """After commit: fetch the files first when there are any, else ask BRAIN at once."""
    if any(row.status == Attachment.Status.PENDING for row in rows):
        queue.enqueue(queue.FETCH_ATTACHMENTS, inbound_id)
    else:
        queue.enqueue_brain(inbound_id)


def fetch_then_reply(inbound_id):
    """The fetch task: fetch every pending file of the message, transcribe voice and audio, then hand it to the
    BRAIN task. A failure that may pass (network, 5xx, flood control) is tried again by this task later, up to
    ATTACHMENT_FETCH_ATTEMPTS tries."""
    retry_in = fetch_pending(inbound_id, final=False)
    if retry_in is not None:
        queue.enqueue(queue.FETCH_ATTACHMENTS, inbound_id, countdown=retry_in)
    else:
        queue.enqueue_brain(inbound_id)


def fetch_pending(inbound_id, final=True):
    """Fetch each pending attachment of one inbound message, and transcribe the voice and audio files it stored.
    Platform failures mark it unavailable, and nothing here raises for them; unless `final`, a passing failure with
    tries left keeps it pending: then the seconds to wait before the next try are returned (else None)."""
    rows = list(Attachment.objects.filter(inbound_id=inbound_id, status=Attachment.Status.PENDING)
                .select_related("inbound__connector"))
    waits, stored = [], []
    for row in rows:
        wait = _fetch_one(row, final)
        if wait is not None:
            waits.append(wait)
        elif row.status == Attachment.Status.STORED:  # stored by this run (another run's copy is its business)
            stored.append(row.id)
    if stored:
        # Right after the store, by whoever stored it (the fetch task, or the BRAIN task after a lost fetch): each
        # file is transcribed once, and before BRAIN is asked. Off unless TRANSCRIBER is set; never raises.
        transcription.transcribe_message(inbound_id, stored)
    return max(waits) if waits else None


def _limit(kind):
    return settings.ATTACHMENT_MAX_BYTES_BY_KIND.get(kind, settings.ATTACHMENT_MAX_BYTES)


def _fetch_one(row, final):
    """Settle one attachment; returns None, or the seconds to wait before trying it again."""
    connector_row = row.inbound.connector
    limit = _limit(row.kind)
    try:
        if row.size is not None and row.size > limit:
            raise ConnectorError(f"{row.size} bytes is over the {limit}-byte limit for a {row.kind}", permanent=True,
                                 code="too_large")
        data = connector_for(connector_row).fetch_attachment(row.platform_ref, limit)
        if len(data) > limit:
            raise ConnectorError(f"{len(data)} bytes is over the {limit}-byte limit for a {row.kind}", permanent=True,
                                 code="too_large")
        mime_type = attachment_store.check_type(row.kind, row.mime_type, data)
    except attachment_store.TypeNotAllowed as exc:
        _settle(row, Attachment.Status.UNAVAILABLE, error=f"type_not_allowed: {exc}", code="type_not_allowed")
        return None
    except attachment_store.ContentMismatch as exc:
        _settle(row, Attachment.Status.UNAVAILABLE, error=f"content_mismatch: {exc}", code="content_mismatch")
        return None
    except ConnectorError as exc:
        reason = f"{exc.code}: {exc.message}"
        tries = row.attempts + 1
        if not exc.permanent and not final and tries < settings.ATTACHMENT_FETCH_ATTEMPTS:
            Attachment.objects.filter(pk=row.pk, status=Attachment.Status.PENDING).update(attempts=tries,
                                                                                           error=reason[:500])
            return max(exc.retry_after or 0, settings.ATTACHMENT_FETCH_RETRY_SECONDS * 2 ** (tries - 1))
        _settle(row, Attachment.Status.UNAVAILABLE, error=reason, code=exc.code, attempts=tries)
        return None
    except Exception as exc:  # a bug or an SDK surprise: the message still goes to BRAIN, without this file
        logger.exception("Fetching attachment %s of inbound %s failed unexpectedly", row.id, row.inbound_id)
        _settle(row, Attachment.Status.UNAVAILABLE, error=f"fetch_error: {type(exc).__name__}", code="fetch_error")
        return None
    name = attachment_store.save(row.id, data)
    # A contact fetched as a vCard file (WhatsApp's) keeps its card's text, as a contact sent inline does.
    card = {"platform_ref": card_text(data)} if row.kind == CONTACT else {}
    if not _settle(row, Attachment.Status.STORED, storage_name=name, size=len(data), mime_type=mime_type, **card):
        attachment_store.storage().delete(name)  # another run settled it first: keep its copy only
    return None


def _settle(row, status, *, error="", code="", **fields) -> bool:
    """Record the outcome once (a concurrent re-run changes nothing) and audit it."""
    changed = Attachment.objects.filter(pk=row.pk, status=Attachment.Status.PENDING).update(
        status=status, error=error[:500], **fields
    )
    if changed:
        for name, value in fields.items():
            setattr(row, name, value)
        row.status, row.error = status, error[:500]
        details = {"inbound_id": row.inbound_id, "attachment_id": str(row.id), "kind": row.kind, "size": row.size}
        if code:
            details["error"] = code
        audit.record_action("attachment.fetch", FETCHER, "connector", row.inbound.connector_id,
                            result=audit.FAILURE if code else audit.SUCCESS, **details)
    return bool(changed)


def for_brain(inbound) -> list:
    """The attachments as BRAIN sees them (HttpBrain's payload, EchoBrain's reply): no bytes, no platform ref; a
    stored file's signed URL to fetch its bytes from, and a voice or audio file's transcript."""
    return [
        {"id": str(row.id), "kind": row.kind, "mime_type": row.mime_type, "size": row.size,
         "file_name": row.file_name, "caption": row.caption, "status": row.status,
         **({"latitude": row.latitude, "longitude": row.longitude} if row.latitude is not None else {}),
         **({"error": row.error} if row.error else {}),
         # Stored only: a contact still to fetch (or that could not be) holds a media reference, not a card.
         **({"contact": row.platform_ref} if row.kind == CONTACT and row.status == Attachment.Status.STORED else {}),
         **_download(row)}
        for row in Attachment.objects.filter(inbound=inbound)
    ]


def _download(row) -> dict:
    """A stored file's signed download URL (none without PUBLIC_BASE_URL) and its transcript, when it has them."""
    extra = {}
    if row.status == Attachment.Status.STORED and row.storage_name:
        url = attachment_urls.url_for(row.id)
        if url:
            extra["url"] = url
    if row.transcript:
        extra["transcript"] = row.transcript
    return extra


@receiver(post_delete, sender=Attachment, dispatch_uid="connectors.attachment_file")
def _delete_file(sender, instance, **kwargs):
    """A deleted row (its message's or its connector's deletion cascades here) takes its file along, once the
    deletion is committed."""
    if instance.storage_name:
        name = instance.storage_name
        transaction.on_commit(lambda: attachment_store.storage().delete(name))


def brain_content(inbound) -> str:
    """The message text BRAIN is asked about: what the person wrote, else what their voice notes said."""
    if inbound.content:
        return inbound.content
    return transcription.transcripts(Attachment.objects.filter(inbound=inbound, kind__in=transcription.TRANSCRIBED_KINDS))
