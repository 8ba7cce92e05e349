"""Inbound messages: store each one exactly once and hand it to BRAIN after commit."""
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import NotFound, audit_result
from connectors.delivery import attachments, presses
from connectors.delivery.announcements import announce_recorded
from connectors.models import Connector, InboundMessage
from connectors.permissions import Principal
from connectors.platforms.base import IncomingMessage, conversation_key
from connectors.registry.common import audit_and_emit, require_running


class _DuplicateInbound(Exception):
    """The (connector, platform message id) pair is already stored."""


def receive_message(connector_id, message: IncomingMessage, principal=None, connector=None, stored_files=()):
    """Store one inbound message exactly once; returns (inbound, created).

    A duplicate (same connector and platform message id, even concurrently) returns the stored
    row with created=False and triggers nothing. BRAIN is asked after commit, in a task.
    `connector` is the row when the caller has just loaded it (the webhook view), to save a query.
    `stored_files`: the storage names of attachments whose bytes the caller stored itself, in order (manage.py
    chat's local files, connectors/delivery/cli_files.py); those are not fetched.
    """
    principal = principal or Principal.system_actor("platform", via="webhook")
    with audit.audited("message.receive", principal, "connector", connector_id, classify=audit_result):
        try:
            # The insert comes first and needs no savepoint of its own: a duplicate rolls back
            # this whole block (a savepoint only if a caller's transaction is open), which has
            # written nothing else yet. Two round trips fewer on the hottest inbound path.
            with transaction.atomic():
                if connector is None:
                    connector = Connector.objects.filter(pk=connector_id).first()
                if connector is None:
                    raise NotFound(f"Connector {connector_id!r} does not exist.")
                require_running(connector, error_waits=True)
                content, metadata = presses.resolve(connector, message)  # a button press, checked
                try:
                    inbound = InboundMessage.objects.create(
                        connector=connector,
                        platform_message_id=message.platform_message_id,
                        sender=message.sender,
                        sender_name=message.sender_name,
                        content=content,
                        metadata=metadata,
                        received_at=message.received_at or timezone.now(),
                    )
                except IntegrityError as exc:
                    raise _DuplicateInbound from exc
                presses.answer_question(inbound, principal)
                rows = attachments.create_for(inbound, message.attachments, stored_files)
                extra = {"attachments": attachments.audit_details(rows)} if rows else {}
                audit_and_emit("message.received", principal, connector_id, inbound_id=inbound.pk, length=len(message.content), **extra)
                announce_recorded(
                    connector, "inbound", conversation_key(inbound.sender, inbound.metadata),
                    attachments.memory_text(inbound.content, rows), inbound.received_at, principal,
                    inbound_id=inbound.pk, platform_message_id=inbound.platform_message_id,
                    metadata={"sender_name": inbound.sender_name} if inbound.sender_name else {},
                )
                # Files are fetched first (their task then asks BRAIN), so BRAIN sees them.
                transaction.on_commit(lambda: attachments.hand_over(inbound.pk, rows))
        except _DuplicateInbound:
            with transaction.atomic():
                existing = InboundMessage.objects.get(connector_id=connector_id, platform_message_id=message.platform_message_id)
                audit.record_action(
                    "message.receive",
                    principal,
                    "connector",
                    connector_id,
                    inbound_id=existing.pk,
                    duplicate=True,
                )
            return existing, False
    return inbound, True
