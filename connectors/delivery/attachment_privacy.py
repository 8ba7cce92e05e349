"""Attachments in privacy work: what a person's export shows of them, and their removal by erasure and expiry.

Removing a row is enough to remove its file: the post_delete handler in connectors/delivery/attachments.py deletes
the stored copy once the deletion is committed (a rolled-back erasure keeps both).
"""
import base64
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from brain_connectors.shared.errors import DecryptionError
from connectors.delivery import attachment_store
from connectors.models import Attachment
from connectors.platforms.attachments import CONTACT


class ExportBudget:
    """The file bytes one export may still carry (PRIVACY_EXPORT_ATTACHMENT_BYTES): the export is one JSON document
    held in memory, so past the budget files are listed without their bytes rather than exhausting the process."""

    def __init__(self, limit=None):
        self.remaining = settings.PRIVACY_EXPORT_ATTACHMENT_BYTES if limit is None else limit

    def take(self, size) -> bool:
        if size > self.remaining:
            return False
        self.remaining -= size
        return True


# Ids per query: a person's whole history would overflow a database's bound-parameter limit (SQLite's).
CHUNK = 500


def _owner_filters(inbound_ids, delivery_ids):
    """One filter per chunk of ids (none when every id is None: messages that came through no connector)."""
    owners = [("inbound_id__in", pk) for pk in inbound_ids if pk is not None]
    owners += [("delivery_id__in", pk) for pk in delivery_ids if pk is not None]
    for start in range(0, len(owners), CHUNK):
        chunk = owners[start : start + CHUNK]
        inbound = [pk for field, pk in chunk if field == "inbound_id__in"]
        delivery = [pk for field, pk in chunk if field == "delivery_id__in"]
        yield Q(inbound_id__in=inbound) | Q(delivery_id__in=delivery)


def export_entries(inbound_ids, delivery_ids, budget: ExportBudget) -> dict:
    """{("inbound", id) | ("delivery", id): [entry, ...]} for the attachments of these messages, in their order.
    Each entry has the metadata and, for a stored file within the budget, its bytes in base64 ("data"); otherwise
    "data" is None and "data_omitted" says why ("export_limit", or "unreadable" when the file cannot be read)."""
    found = {}
    for owners in _owner_filters(inbound_ids, delivery_ids):
        for row in Attachment.objects.filter(owners).order_by("position", "created_at"):
            owner = ("inbound", row.inbound_id) if row.inbound_id is not None else ("delivery", row.delivery_id)
            found.setdefault(owner, []).append(_entry(row, budget))
    return found


def _entry(row, budget) -> dict:
    entry = {"id": str(row.id), "kind": row.kind, "mime_type": row.mime_type, "size": row.size,
             "file_name": row.file_name, "caption": row.caption, "status": row.status,
             "created_at": row.created_at.isoformat()}
    if row.latitude is not None:
        entry["location"] = {"latitude": row.latitude, "longitude": row.longitude}
    if row.kind == CONTACT:
        entry["contact"] = row.platform_ref
    if row.transcript:
        entry["transcript"] = row.transcript
    if row.status == Attachment.Status.STORED and row.storage_name:
        entry.update(_bytes_of(row, budget))
    return entry


def _bytes_of(row, budget) -> dict:
    if not budget.take(row.size or 0):
        return {"data": None, "data_omitted": "export_limit"}
    try:
        data = attachment_store.read(row.storage_name)
    except (OSError, DecryptionError):  # the file is gone or no key opens it: the export says so and goes on
        budget.remaining += row.size or 0
        return {"data": None, "data_omitted": "unreadable"}
    return {"data": base64.b64encode(data).decode("ascii")}


def delete_for(inbound_ids, delivery_ids) -> int:
    """Delete the attachment rows of these inbound messages and deliveries (their files follow after commit);
    returns how many. Call inside the caller's transaction."""
    return sum(Attachment.objects.filter(owners).delete()[1].get(Attachment._meta.label, 0)
               for owners in _owner_filters(inbound_ids, delivery_ids))


def delete_expired_uploads(limit=500, now=None) -> int:
    """Delete uploads (files sent to no one yet) older than ATTACHMENT_UPLOAD_TTL, at most `limit` per call; the
    sweeper calls it periodically. A delivery made from an upload has its own copy, which stays."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.ATTACHMENT_UPLOAD_TTL)
    expired = list(Attachment.objects.filter(inbound__isnull=True, delivery__isnull=True, created_at__lt=cutoff)
                   .values_list("pk", flat=True)[:limit])
    if not expired:
        return 0
    return Attachment.objects.filter(pk__in=expired, inbound__isnull=True, delivery__isnull=True).delete()[1].get(
        Attachment._meta.label, 0)
