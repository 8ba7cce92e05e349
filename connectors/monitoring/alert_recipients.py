"""Alert recipients, managed by staff: who hears about downtime, through which connector (checked, audited)."""
from django.db import transaction

from audit import services as audit
from brain_connectors.shared.errors import NotFound, PermissionDenied, ValidationFailed, audit_result
from connectors.models import PERM_SEND, AlertRecipient, Connector
from connectors.registry.common import require_connector_perm
from connectors.registry.kinds import UnknownKind, get_connector_class


def _check_recipient_access(principal, action, connector):
    """Django model permission for the action, and send permission on the channel: nobody may make
    the system send through a connector they could not send through themselves."""
    user = principal.user
    if principal.is_system or user.is_superuser:
        return
    if not (user.is_active and user.is_staff and user.has_perm(f"connectors.{action}_alertrecipient")):
        raise PermissionDenied(f"You need the connectors.{action}_alertrecipient permission.")
    require_connector_perm(principal, connector, PERM_SEND, connector.pk, unseen=NotFound)


def save_alert_recipient(principal, *, pk=None, connector_id, recipient, description="", active=True):
    """Create (pk None) or change an alert recipient. Audited without the address itself."""
    action = "add" if pk is None else "change"
    audit_action = "alert_recipient.create" if pk is None else "alert_recipient.update"
    with audit.audited(audit_action, principal, "alert_recipient", str(pk or ""), classify=audit_result):
        recipient = (recipient or "").strip()
        with transaction.atomic():
            connector = Connector.objects.filter(pk=connector_id).first()
            if connector is None:
                raise NotFound(f"Connector {connector_id!r} does not exist.")
            _check_recipient_access(principal, action, connector)
            try:
                problem = get_connector_class(connector.kind).validate_recipient(recipient) if recipient else "empty"
            except UnknownKind:
                problem = None
            if problem:
                raise ValidationFailed(f"Invalid recipient for a {connector.kind} connector: {problem}.",
                                       details={"recipient": problem})
            if pk is None:
                row = AlertRecipient(connector=connector)
            else:
                row = AlertRecipient.objects.select_for_update().select_related("connector").filter(pk=pk).first()
                if row is None:
                    raise NotFound(f"Alert recipient {pk} does not exist.")
                if row.connector_id != connector.pk:  # moving it away needs the same right on the old channel
                    _check_recipient_access(principal, action, row.connector)
                row.connector = connector
            if AlertRecipient.objects.filter(connector=connector, recipient=recipient).exclude(pk=row.pk).exists():
                raise ValidationFailed("This recipient is already set up on this connector.",
                                       details={"recipient": "duplicate"})
            row.recipient, row.description, row.active = recipient, (description or "")[:200], bool(active)
            row.save()
            audit.record_action(
                audit_action,
                principal,
                "alert_recipient",
                str(row.pk),
                connector=connector.pk,
                active=row.active,
            )
    return row


def delete_alert_recipient(principal, pk):
    with audit.audited("alert_recipient.delete", principal, "alert_recipient", str(pk), classify=audit_result):
        with transaction.atomic():
            row = AlertRecipient.objects.select_for_update().select_related("connector").filter(pk=pk).first()
            if row is None:
                raise NotFound(f"Alert recipient {pk} does not exist.")
            _check_recipient_access(principal, "delete", row.connector)
            connector_id = row.connector_id
            row.delete()
            audit.record_action(
                "alert_recipient.delete",
                principal,
                "alert_recipient",
                str(pk),
                connector=connector_id,
            )
