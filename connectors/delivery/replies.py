"""BRAIN's replies: ask BRAIN (or an inbound handler) about a stored message and send the answer once."""
import contextlib
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from audit import services as audit
from brain_connectors.shared.errors import ServiceError, ValidationFailed
from connectors.delivery import attachments
from connectors.delivery.brain import BrainError, BrainRequest, get_brain
from connectors.delivery.outbound import send_message
from connectors.delivery.outbound_attachments import UNSUPPORTED
from connectors.models import ConnectorStatus, Delivery, InboundMessage
from connectors.permissions import Principal
from connectors.registry.kinds import connector_for

logger = logging.getLogger(__name__)

BRAIN = Principal.system_actor("brain")


def conversation_context(inbound, limit=None):
    """The person's recent exchange on this connector before `inbound`, oldest first."""
    limit = settings.BRAIN_CONTEXT_LIMIT if limit is None else limit
    earlier_in = InboundMessage.objects.filter(
        connector_id=inbound.connector_id, sender=inbound.sender, received_at__lte=inbound.received_at
    ).exclude(pk=inbound.pk).order_by("-received_at")[:limit]
    earlier_out = Delivery.objects.filter(
        connector_id=inbound.connector_id, recipient=inbound.sender, created_at__lte=inbound.received_at
    ).order_by("-created_at")[:limit]
    # A message of attachments alone has no text: say so rather than hand BRAIN an empty turn.
    items = [{"role": "user", "content": m.content or "[attachment]", "time": m.received_at} for m in earlier_in]
    items += [{"role": "assistant", "content": d.content, "time": d.created_at} for d in earlier_out]
    items.sort(key=lambda item: item["time"])
    return [{**item, "time": item["time"].isoformat()} for item in items[-limit:]]


def _send_reply(inbound, reply):
    """Queue BRAIN's reply. The key makes a re-run of this task (after a crash) reuse the first reply. Files the
    platform cannot carry (a phone call) are left out rather than lose the text: audited as `files_dropped`."""
    files = getattr(reply, "attachments", None) or None
    try:
        send_message(BRAIN, inbound.connector_id, inbound.sender, str(reply), idempotency_key=_reply_key(inbound.pk),
                     in_reply_to=inbound, buttons=getattr(reply, "buttons", None), attachments=files)
    except ValidationFailed as exc:
        if not files or exc.code != UNSUPPORTED or not str(reply).strip():
            raise
        audit.record_action("brain.reply", BRAIN, "connector", inbound.connector_id, inbound_id=inbound.pk,
                            files_dropped=len(files), reason=exc.code)
        send_message(BRAIN, inbound.connector_id, inbound.sender, str(reply), idempotency_key=_reply_key(inbound.pk),
                     in_reply_to=inbound, buttons=getattr(reply, "buttons", None))


def _reply_key(inbound_id):
    """The idempotency key of BRAIN's reply to one inbound message: a re-run reuses the first reply."""
    return f"reply:{inbound_id}"


def _handled_before_brain(inbound):
    """The reply of the first INBOUND_MESSAGE_HANDLERS entry that takes this message (e.g. a
    pairing code for routing), or None to ask BRAIN. Handlers are dotted paths to functions
    `handler(inbound) -> str | None`; a failing handler is logged and skipped, never fatal."""
    for path in settings.INBOUND_MESSAGE_HANDLERS:
        try:
            reply = import_string(path)(inbound)
        except Exception:
            logger.exception("Inbound handler %s failed on inbound %s", path, inbound.pk)
            continue
        if reply is not None:
            return reply
    return None


@contextlib.contextmanager
def _typing_indicator(inbound):
    """The platform's typing indicator for the person while the block runs (BaseConnector.typing), or nothing. It
    is cosmetic: a platform that cannot show it, even one whose hook raises, leaves the reply as it would have been."""
    indicator = contextlib.ExitStack()
    if inbound.connector.status == ConnectorStatus.CONNECTED:  # else the reply waits for a restart: nothing to show
        try:
            indicator.enter_context(connector_for(inbound.connector).typing(inbound.sender, inbound.metadata or {}))
        except Exception as exc:  # an unknown kind, a bug in a platform; the type says enough and holds no content
            logger.warning("No typing indicator for inbound %s: %s", inbound.pk, type(exc).__name__)
    try:
        yield
    finally:
        try:
            indicator.close()
        except Exception as exc:
            logger.warning("Stopping the typing indicator for inbound %s failed: %s", inbound.pk, type(exc).__name__)


def _audit_reply(inbound, result=audit.SUCCESS, **details):
    """The `brain.reply` audit row of one inbound message: how BRAIN's turn on it ended."""
    audit.record_action(
        "brain.reply", BRAIN, "connector", inbound.connector_id, result=result, inbound_id=inbound.pk, **details
    )


def reply_with_brain(inbound_id):
    """Ask BRAIN about one stored inbound message and send its reply, at most once."""
    # Files still pending: the fetch task was lost and the sweeper re-drove the message straight here. Fetch them
    # now, so BRAIN never sees a file as pending (each is settled once, whoever gets there first).
    attachments.fetch_pending(inbound_id)
    with transaction.atomic():
        inbound = (
            InboundMessage.objects.select_for_update().select_related("connector").filter(pk=inbound_id).first()
        )
        if inbound is None or inbound.brain_status != InboundMessage.BrainStatus.PENDING:
            return inbound
        if Delivery.objects.filter(principal=BRAIN.key, idempotency_key=_reply_key(inbound.pk)).exists():
            # A re-drive after the reply was queued but before its status was saved (the worker or
            # the database went away): done, without asking BRAIN again. A second answer can differ,
            # and the reply's idempotency key would refuse it and mark the message failed.
            inbound.brain_status = InboundMessage.BrainStatus.REPLIED
            inbound.brain_error = ""
            inbound.save(update_fields=["brain_status", "brain_error"])
            _audit_reply(inbound, outcome=inbound.brain_status, already_queued=True)
            return inbound
        inbound.brain_status = InboundMessage.BrainStatus.THINKING
        inbound.brain_claimed_at = timezone.now()
        inbound.save(update_fields=["brain_status", "brain_claimed_at"])
    handled = _handled_before_brain(inbound)
    try:
        if handled is not None:
            reply = handled
        else:
            request = BrainRequest(
                connector_id=inbound.connector_id,
                connector_kind=inbound.connector.kind,
                sender=inbound.sender,
                sender_name=inbound.sender_name,
                content=attachments.brain_content(inbound),
                message_id=inbound.platform_message_id,
                context=import_string(settings.BRAIN_CONTEXT_PROVIDER)(inbound),
                attachments=attachments.for_brain(inbound),
                button=(inbound.metadata or {}).get("button"),
            )
            with _typing_indicator(inbound):
                reply = get_brain().reply(request)
    except Exception as exc:  # BrainError, or a bug/misconfiguration: never leave the message "thinking"
        if not isinstance(exc, BrainError):
            logger.exception("BRAIN backend failed unexpectedly for inbound %s", inbound.pk)
            exc = BrainError(f"{type(exc).__name__}: {exc}", code="brain_backend_error")
        with transaction.atomic():
            InboundMessage.objects.filter(pk=inbound.pk).update(
                brain_status=InboundMessage.BrainStatus.FAILED, brain_error=str(exc)[:2000]
            )
            _audit_reply(inbound, result=audit.FAILURE, error=exc.code)
        return inbound
    answered = reply is not None and bool(str(reply) or getattr(reply, "attachments", None))
    if answered:
        try:
            _send_reply(inbound, reply)
        except ServiceError as exc:  # send_message audited the refusal itself
            InboundMessage.objects.filter(pk=inbound.pk).update(
                brain_status=InboundMessage.BrainStatus.FAILED, brain_error=exc.message[:2000]
            )
            return inbound
    status = InboundMessage.BrainStatus.REPLIED if answered else InboundMessage.BrainStatus.NO_REPLY
    with transaction.atomic():
        InboundMessage.objects.filter(pk=inbound.pk).update(brain_status=status, brain_error="")
        _audit_reply(inbound, outcome=status)
    return inbound
