"""Files sent with an outbound message: checked and stored before its delivery exists, then loaded for the send.

A send names each file one of three ways (`attachments`: a list of objects):
- `{"id": ...}`: an earlier upload (upload(), `POST /api/v1/attachments/`) by the same principal;
- `{"url": ...}`: fetched here, through the outbound-URL guard, before the delivery is created;
- `{"data": <base64>, "file_name": ...}`: inline (MCP, BRAIN's answer); multipart uploads arrive as `content` bytes.
Each may add `kind`, `mime_type`, `file_name` and `caption`. Everything is checked before any row is written: the
platform must carry attachments of that kind (else 400 `attachments_unsupported`), the bytes must be what they claim
(puremagic, attachment_store.check_type), of a type both our allowlist (attachment_types) and the platform
allow (else 400 `attachment_type_not_allowed`), and under both our cap and the platform's. Each delivery keeps its own
encrypted copy, so an upload may be sent many times until it expires (ATTACHMENT_UPLOAD_TTL).
"""
import base64
import binascii
import hashlib
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import DecryptionError, PermissionDenied, ValidationFailed, audit_result
from connectors.delivery import attachment_store, attachment_urls
from connectors.models import PERM_SEND, Attachment
from connectors.permissions import connectors_with
from connectors.platforms.attachments import (
    MAX_CAPTION_LENGTH,
    MAX_FILE_NAME_LENGTH,
    MAX_OUTGOING_ATTACHMENTS,
    OUTGOING_KINDS,
    OutgoingAttachment,
)
from connectors.platforms.base import ConnectorError
from connectors.platforms.media_download import kind_for
from connectors.platforms.webhook_media import download, url_problem
from connectors.registry.common import uuid_or_none

UNSUPPORTED = "attachments_unsupported"
TYPE_NOT_ALLOWED = "attachment_type_not_allowed"
FIELDS = {"id", "url", "data", "content", "kind", "mime_type", "file_name", "caption"}
SOURCES = ("id", "url", "data", "content")


@dataclass(frozen=True)
class PreparedFile:
    """One checked file, not stored yet."""

    kind: str
    mime_type: str
    file_name: str
    caption: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _fail(message, code="invalid_attachments", **details):
    raise ValidationFailed(message, code=code, details=details or {"attachments": message})


def shape_problem(items) -> str | None:
    """What is wrong with the form of `attachments` (no I/O), or None."""
    if not isinstance(items, (list, tuple)):
        return "must be a list"
    if len(items) > MAX_OUTGOING_ATTACHMENTS:
        return f"at most {MAX_OUTGOING_ATTACHMENTS} attachments (got {len(items)})"
    for index, item in enumerate(items, 1):
        if not isinstance(item, dict) or not set(item) <= FIELDS:
            return f"attachment {index} must be an object with some of: {', '.join(sorted(FIELDS - {'content'}))}"
        sources = [name for name in SOURCES if name in item]
        if len(sources) != 1:
            return f"attachment {index} needs exactly one of id, url or data"
        if "content" in item and not isinstance(item["content"], bytes):  # only an edge's own upload sets it
            return f"attachment {index} needs exactly one of id, url or data"
        for name in ("kind", "mime_type", "file_name", "caption", "url", "data", "id"):
            if name in item and not isinstance(item[name], str):
                return f"attachment {index}: {name} must be a string"
        if "kind" in item and item["kind"] not in OUTGOING_KINDS:
            return f"attachment {index}: kind must be one of {', '.join(OUTGOING_KINDS)}"
        if len(item.get("file_name", "")) > MAX_FILE_NAME_LENGTH or len(item.get("caption", "")) > MAX_CAPTION_LENGTH:
            return f"attachment {index}: file_name or caption is too long"
        if "url" in item and (problem := url_problem(item["url"]) or (
                None if item["url"].startswith(("http://", "https://")) else "must be an http(s) URL")):
            return f"attachment {index}: url {problem}"
    return None


def platform_problem(connector_class) -> str | None:
    """Why this kind of connector cannot send attachments at all here, or None."""
    if not connector_class.supports_attachments:
        return f"{connector_class.kind} connectors cannot send attachments"
    if connector_class.attachments_need_public_url and not settings.PUBLIC_BASE_URL:
        return (f"{connector_class.kind} fetches attachments from a public URL: set PUBLIC_BASE_URL to this "
                "service's public address")
    return None


def limit_for(kind, connector_class=None) -> int:
    ours = settings.ATTACHMENT_MAX_BYTES_BY_KIND.get(kind, settings.ATTACHMENT_MAX_BYTES)
    theirs = (connector_class.attachment_max_bytes.get(kind) if connector_class is not None else None) or ours
    return min(ours, theirs)


def prepare(principal, items, connector_class=None) -> list[PreparedFile]:
    """Check and fetch every file a send names (before any transaction: URLs are fetched here); raises
    ValidationFailed with a code that says what is wrong. `connector_class` None: an upload, for no platform yet."""
    if problem := shape_problem(items):
        _fail(f"Invalid attachments: {problem}.")
    if items and connector_class is not None and (problem := platform_problem(connector_class)):
        _fail(f"Invalid attachments: {problem}.", code=UNSUPPORTED)
    return [_prepare_one(principal, index, item, connector_class) for index, item in enumerate(items, 1)]


def _prepare_one(principal, index, item, connector_class):
    declared_kind, mime_type = item.get("kind", ""), item.get("mime_type", "")
    file_name, caption = item.get("file_name", ""), item.get("caption", "")
    cap = limit_for(declared_kind, connector_class) if declared_kind else settings.ATTACHMENT_MAX_BYTES
    if "id" in item:
        upload = _upload_of(principal, item["id"], index)
        data = attachment_store.read(upload.storage_name)
        declared_kind = declared_kind or upload.kind
        mime_type, file_name = mime_type or upload.mime_type, file_name or upload.file_name
        caption = caption or upload.caption
    elif "url" in item:
        try:
            data = download(item["url"], cap, settings.ATTACHMENT_FETCH_TIMEOUT)
        except ConnectorError as exc:
            code = "attachment_too_large" if exc.code == "too_large" else "attachment_fetch_failed"
            _fail(f"Attachment {index} could not be fetched: {exc.message}.", code=code)
    else:
        data = item.get("content")
        if data is None:
            if len(item["data"]) > cap * 4 // 3 + 4:
                _fail(f"Attachment {index} is over the {cap}-byte limit.", code="attachment_too_large")
            try:
                data = base64.b64decode(item["data"], validate=True)
            except (binascii.Error, ValueError):
                _fail(f"Attachment {index}: data must be base64.")
    return _checked(index, data, declared_kind, mime_type, file_name, caption, connector_class)


def _checked(index, data, kind, mime_type, file_name, caption, connector_class):
    if not data:
        _fail(f"Attachment {index} is empty.")
    kind = kind or kind_for(attachment_store.detect(data) or mime_type)
    if connector_class is not None and kind not in connector_class.attachment_kinds:
        _fail(f"Invalid attachments: {connector_class.kind} connectors cannot send a {kind}.", code=UNSUPPORTED)
    cap = limit_for(kind, connector_class)
    if len(data) > cap:
        _fail(f"Attachment {index} is {len(data)} bytes, over the {cap}-byte limit for a {kind}.",
              code="attachment_too_large")
    try:
        mime_type = attachment_store.check_type(kind, mime_type, data)
    except attachment_store.TypeNotAllowed as exc:
        _fail(f"Attachment {index} is refused: {exc}.", code=TYPE_NOT_ALLOWED)
    except attachment_store.ContentMismatch as exc:
        _fail(f"Attachment {index} is not what it claims: {exc}.", code="attachment_mismatch")
    theirs = connector_class.attachment_mime_types.get(kind) if connector_class is not None else None
    if theirs is not None and attachment_store.canonical(mime_type) not in theirs:
        _fail(f"Attachment {index} is {attachment_store.canonical(mime_type)}, which {connector_class.kind} connectors "
              f"cannot send as a {kind} (they take {', '.join(sorted(theirs))}).", code=TYPE_NOT_ALLOWED)
    return PreparedFile(kind=kind, mime_type=mime_type, file_name=clean_file_name(file_name, kind, index),
                        caption=caption, data=data)


def clean_file_name(name, kind, index) -> str:
    """A file name fit to hand a platform: no path parts, control characters or leading dots."""
    name = attachment_urls.UNSAFE.sub("_", unicodedata.normalize("NFC", name or "")).strip(" .")[:200]
    return name or f"{kind}-{index}"


def _upload_of(principal, attachment_id, index):
    # An expired upload is refused even before the sweeper (periodic) has deleted it.
    fresh_since = timezone.now() - timedelta(seconds=settings.ATTACHMENT_UPLOAD_TTL)
    row = Attachment.objects.filter(pk=uuid_or_none(attachment_id), uploaded_by=principal.key,
                                    inbound__isnull=True, delivery__isnull=True, created_at__gte=fresh_since,
                                    status=Attachment.Status.STORED).exclude(storage_name="").first()
    if row is None:
        _fail(f"Attachment {index}: no upload {attachment_id!r} of yours (uploads expire after "
              f"{settings.ATTACHMENT_UPLOAD_TTL} seconds).", code="attachment_not_found")
    return row


def placeholder(item) -> OutgoingAttachment:
    """A prepared file as OutgoingMessage's validation sees it (its bytes are not stored yet)."""
    return OutgoingAttachment(id="", kind=item.kind, mime_type=item.mime_type, size=len(item.data),
                              file_name=item.file_name, caption=item.caption)


def digests(prepared) -> list:
    """What an idempotent send's request hash covers of its files."""
    return [[item.kind, item.file_name, item.caption, item.digest] for item in prepared]


def store(prepared) -> list[str]:
    """Encrypt and store each file; returns their storage names (discard() them when the send does not happen)."""
    names = []
    try:
        for item in prepared:
            names.append(attachment_store.save(uuid.uuid4(), item.data))
    except BaseException:
        discard(names)
        raise
    return names


def discard(names):
    for name in names:
        attachment_store.storage().delete(name)


def attach(delivery, prepared, names, uploaded_by="") -> list:
    """The rows of a delivery's files (or of an upload), inside the transaction that creates it."""
    return Attachment.objects.bulk_create([
        Attachment(delivery=delivery, uploaded_by=uploaded_by, position=position, kind=item.kind, mime_type=item.mime_type,
                   size=len(item.data), file_name=item.file_name, caption=item.caption,
                   status=Attachment.Status.STORED, storage_name=name)
        for position, (item, name) in enumerate(zip(prepared, names, strict=True))
    ])


def upload(principal, content: bytes, *, file_name="", mime_type="", kind="", caption="") -> Attachment:
    """Store a file for later sends (by its id, by the same principal, until ATTACHMENT_UPLOAD_TTL): the REST upload.
    Only a principal who may send on some connector may upload."""
    with audit.audited("attachment.upload", principal, "attachment", "", classify=audit_result):
        if not connectors_with(principal, PERM_SEND).exists():
            raise PermissionDenied("Uploading a file needs the send permission on at least one connector.")
        item = {"content": content, "file_name": file_name, "caption": caption}
        if mime_type:
            item["mime_type"] = mime_type
        if kind:
            item["kind"] = kind
        [prepared] = prepare(principal, [item])
        names = store([prepared])
        try:
            with transaction.atomic():
                [row] = attach(None, [prepared], names, uploaded_by=principal.key)
                audit.record_action("attachment.upload", principal, "attachment", str(row.id), kind=row.kind,
                                    size=row.size)
        except BaseException:
            discard(names)
            raise
    return row


def outgoing(deliveries) -> dict:
    """{delivery id: (OutgoingAttachment, ...)} for the deliveries that have files: one query for all of them."""
    wanted = [delivery.pk for delivery in deliveries if delivery.attachment_count]
    if not wanted:
        return {}
    found = {}
    for row in Attachment.objects.filter(delivery_id__in=wanted).order_by("delivery_id", "position"):
        found.setdefault(row.delivery_id, []).append(OutgoingAttachment(
            id=str(row.id), kind=row.kind, mime_type=row.mime_type, size=row.size or 0, file_name=row.file_name,
            caption=row.caption, url=attachment_urls.url_for(row.id, ttl=settings.ATTACHMENT_MEDIA_URL_TTL) or "",
            load=_loader(row.storage_name),
        ))
    return {pk: tuple(items) for pk, items in found.items()}


def files_lost(delivery, files) -> ConnectorError | None:
    """The permanent failure of a delivery whose file rows are gone (a person's erasure or the retention purge ran
    while it was queued), or None: sending the rest would be a different message from the one asked for."""
    if delivery.attachment_count and len(files.get(delivery.pk, ())) < delivery.attachment_count:
        return ConnectorError("its files were deleted before it was sent", permanent=True, code="attachment_missing")
    return None


def _loader(storage_name):
    def load():
        try:
            return attachment_store.read(storage_name)
        except FileNotFoundError:
            raise ConnectorError("a file of this message is gone from storage", permanent=True,
                                 code="attachment_missing") from None
        except DecryptionError:
            raise ConnectorError("a file of this message cannot be decrypted with FERNET_KEYS", permanent=True,
                                 code="attachment_unreadable") from None

    return load
