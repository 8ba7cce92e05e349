"""Outbound messages: queue one for a recipient (idempotent per key), and read a delivery back."""
import hashlib
import json

from django.db import IntegrityError, transaction

from audit import reads
from audit import services as audit
from brain_connectors.shared.errors import Conflict, Hidden, NotFound, ValidationFailed, audit_result
from connectors import task_queue as queue
from connectors.delivery import outbound_attachments as files
from connectors.delivery.announcements import announce_recorded
from connectors.delivery.attachments import audit_details as attachment_details
from connectors.delivery.attachments import memory_text
from connectors.models import PERM_SEND, PERM_VIEW, Delivery
from connectors.permissions import has_perm, viewable_connectors
from connectors.platforms.base import MAX_CONTENT_LENGTH, MessageValidationError, OutgoingMessage, conversation_key
from connectors.platforms.buttons import button_problems, clean_buttons, numbered_options
from connectors.registry.common import audit_and_emit, load_connector, require_running, uuid_or_none
from connectors.registry.kinds import UnknownKind, get_connector_class


def _request_hash(connector_id, recipient, content, buttons=None, files=None):
    # Without buttons or files: the hashes of before they existed.
    body = [connector_id, recipient, content] + ([buttons] if buttons or files else []) + ([files] if files else [])
    canonical = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def send_message(principal, connector_id, recipient, content, *, idempotency_key=None, in_reply_to=None,
                 memory_content=None, buttons=None, attachments=None):
    """Queue one outbound message; returns (delivery, replayed).

    `buttons` ([{"id", "label"}], connectors/platforms/buttons.py) go with it: as the platform's own buttons where
    it has them (supports_buttons), else written into the text as numbered options ("Reply 1 for Approve"), which a
    numbered reply picks (connectors/delivery/presses.py).

    `attachments` ([{"id"|"url"|"data", ...}], connectors/delivery/outbound_attachments.py) are checked, fetched
    and stored before the delivery exists; a platform that cannot carry them refuses with `attachments_unsupported`.

    `memory_content`, when given, is what conversation memory keeps instead of `content`: for a
    message carrying a one-time secret (routing's pairing link), which must reach the recipient
    but never the memory, its search index or anyone who reads conversations.

    With an idempotency key, the same key and body return the original delivery (replayed=True),
    and the same key with another body is a Conflict. The delivery task runs after commit.
    """
    with audit.audited("message.send", principal, "connector", connector_id, classify=audit_result):
        if problem := button_problems(buttons or []):
            raise ValidationFailed(f"Invalid buttons: {problem}.", details={"buttons": problem})
        buttons = clean_buttons(buttons)
        prepared = _prepared_files(principal, connector_id, attachments)
        try:
            message = OutgoingMessage(recipient=recipient, content=content,
                                      attachments=tuple(files.placeholder(item) for item in prepared))
        except MessageValidationError as exc:
            raise ValidationFailed("Invalid message.", details=exc.errors)
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255 or not idempotency_key.isprintable()
        ):
            raise ValidationFailed(
                "Idempotency-Key must be 1-255 printable characters.", details={"idempotency_key": "invalid"}
            )
        request_hash = _request_hash(connector_id, message.recipient, message.content, buttons, files.digests(prepared))
        stored = files.store(prepared)
        try:
            return _queue(principal, connector_id, message, buttons=buttons, prepared=prepared, stored=stored, idempotency_key=idempotency_key,
                          request_hash=request_hash, in_reply_to=in_reply_to, memory_content=memory_content)
        except BaseException:
            files.discard(stored)
            raise


def _prepared_files(principal, connector_id, attachments):
    """The send's files, checked and fetched before any transaction (a URL is fetched here); [] for none."""
    if not attachments:
        return []
    if problem := files.shape_problem(attachments):
        raise ValidationFailed(f"Invalid attachments: {problem}.", code="invalid_attachments",
                               details={"attachments": problem})
    connector = load_connector(principal, connector_id, PERM_SEND)  # who may not send here learns nothing more
    try:
        connector_class = get_connector_class(connector.kind)
    except UnknownKind:
        raise ValidationFailed("Invalid attachments: this connector's kind is not installed.",
                               code=files.UNSUPPORTED, details={"attachments": "unknown kind"})
    return files.prepare(principal, attachments, connector_class)


def _text(connector, message, buttons):
    text = message.content if _shows_buttons(connector) else numbered_options(message.content, buttons)
    if len(text) > MAX_CONTENT_LENGTH:
        raise ValidationFailed("Invalid message.", details={
            "content": f"with the numbered options, must be at most {MAX_CONTENT_LENGTH} characters"})
    return text


def _queue(principal, connector_id, message, *, buttons, prepared, stored, idempotency_key, request_hash,
           in_reply_to, memory_content):
    """Create the delivery (with its files' rows) in one transaction, or answer a replay; (delivery, replayed)."""
    with transaction.atomic():
        connector = load_connector(principal, connector_id, PERM_SEND)
        _check_recipient(connector, message.recipient)
        text = _text(connector, message, buttons)
        if idempotency_key is not None:
            existing = _replay(principal, idempotency_key, request_hash, connector_id, message.recipient)
            if existing:
                files.discard(stored)
                return _replayed(principal, connector_id, existing)
        # A reply to a stored inbound message waits out an ERROR (queued, sent after the restart).
        require_running(connector, error_waits=in_reply_to is not None)
        try:
            # A savepoint only when a concurrent request with the same key can collide.
            with transaction.atomic(savepoint=idempotency_key is not None):
                delivery = Delivery.objects.create(
                    connector=connector,
                    recipient=message.recipient,
                    content=text,
                    buttons=buttons,
                    principal=principal.key,
                    requested_by=principal.user,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    in_reply_to=in_reply_to,
                    attachment_count=len(prepared),
                )
        except IntegrityError:
            # A concurrent request with the same key won: answer as its replay.
            existing = _replay(principal, idempotency_key, request_hash, connector_id, message.recipient)
            if existing is None:
                raise
            files.discard(stored)
            return _replayed(principal, connector_id, existing)
        rows = files.attach(delivery, prepared, stored)
        audit_and_emit("message.queued", principal, connector_id, delivery_id=str(delivery.id), length=len(message.content),
                       **({"buttons": len(buttons)} if buttons else {}),
                       **({"attachments": attachment_details(rows)} if rows else {}))
        announce_recorded(
            connector, "outbound",
            conversation_key(delivery.recipient, in_reply_to.metadata if in_reply_to is not None else None),
            memory_text(delivery.content if memory_content is None else memory_content, rows),
            delivery.created_at, principal,
            delivery_id=delivery.id,
            metadata={"in_reply_to": in_reply_to.pk} if in_reply_to is not None else {},
        )
        queue.delivery_due(delivery.id)
    return delivery, False


def _shows_buttons(connector):
    try:
        return get_connector_class(connector.kind).supports_buttons
    except UnknownKind:
        return False


def _check_recipient(connector, recipient):
    """The platform's own address rules (e.g. a valid email address), so the caller hears at once."""
    try:
        problem = get_connector_class(connector.kind).validate_recipient(recipient)
    except UnknownKind:
        return  # the delivery task reports the missing kind
    if problem:
        raise ValidationFailed(
            f"Invalid recipient for a {connector.kind} connector: {problem}.",
            code="invalid_recipient",
            details={"recipient": problem},
        )


def _replay(principal, idempotency_key, request_hash, connector_id, recipient):
    existing = Delivery.objects.filter(principal=principal.key, idempotency_key=idempotency_key).first()
    if existing and existing.request_hash != request_hash:
        raise Conflict(_conflict_message(existing, connector_id, recipient), code="idempotency_conflict",
                       details={"delivery_id": str(existing.id), "connector_id": existing.connector_id})
    return existing


def _conflict_message(existing, connector_id, recipient):
    """Name what really differs: a key is per caller across connectors, so the same body elsewhere still conflicts."""
    if existing.connector_id != connector_id:
        return f"This Idempotency-Key was already used for a message on connector {existing.connector_id!r}."
    if existing.recipient != recipient:
        return "This Idempotency-Key was already used for a message to a different recipient on this connector."
    return "This Idempotency-Key was already used for a different message (content, buttons or files) to this recipient."


def _replayed(principal, connector_id, existing):
    """Answer a repeated request with its original delivery, audited as a replay: (delivery, replayed=True)."""
    audit.record_action(
        "message.send", principal, "connector", connector_id, delivery_id=str(existing.id), replayed=True
    )
    return existing, True


def get_delivery(principal, delivery_id):
    with audit.audited("delivery.get", principal, "delivery", str(delivery_id), classify=audit_result):
        delivery = Delivery.objects.select_related("connector").filter(pk=uuid_or_none(delivery_id)).first()
        if delivery is None:
            raise NotFound(f"Delivery {delivery_id!r} does not exist.")
        if not has_perm(principal, PERM_VIEW, delivery.connector):
            raise Hidden(f"Delivery {delivery_id!r} does not exist.")
        audit.record_action("delivery.get", principal, "delivery", str(delivery.id))
    return delivery


def list_deliveries(principal, *, connector_id=None, status=None, recipient=None):
    """Deliveries on the connectors the principal may view, newest first (a queryset, for paging).
    Audited as `delivery.list` with the filters (whether a recipient was given, never the address)."""
    qs = Delivery.objects.filter(connector__in=viewable_connectors(principal)).order_by("-created_at", "-id")
    if connector_id:
        qs = qs.filter(connector_id=connector_id)
    if status is not None:  # "?status=" is not a status either
        statuses = [value for value, _ in Delivery._meta.get_field("status").choices]
        if status not in statuses:
            # An unknown status would silently match nothing; say so, as the other lists do.
            with audit.audited("delivery.list", principal, "delivery", "", classify=audit_result):
                raise ValidationFailed(
                    f"Unknown status {status!r}; use one of {', '.join(statuses)}.", details={"status": "unknown"}
                )
        qs = qs.filter(status=status)
    if recipient:
        qs = qs.filter(recipient=recipient)
    reads.record_read(
        "delivery.list", principal, "delivery", "",
        filters={"connector": connector_id or "", "status": status or "", "recipient": bool(recipient)},
    )
    return qs.prefetch_related("attachments")  # one query for the page's files, not one per delivery
