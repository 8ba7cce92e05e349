"""The notification inbox: read one, list what one may see, acknowledge, and summarise the router's reasons."""
import uuid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit import reads
from audit import services as audit
from brain_connectors.shared.errors import Conflict, Hidden, NotFound, PermissionDenied, ValidationFailed, audit_result
from routing.models import Notification, NotificationStatus
from routing.notify.fallback import mark_delivered
from routing.notify.permissions import PERM_VIEW, can_acknowledge, can_view
from routing.notify.trail import TARGET


def _load(principal, notification_id):
    try:
        pk = uuid.UUID(str(notification_id))
    except ValueError:
        raise NotFound(f"Notification {notification_id!r} does not exist.")
    notification = Notification.objects.select_related("user").filter(pk=pk).first()
    if notification is None:
        raise NotFound(f"Notification {notification_id!r} does not exist.")
    if not can_view(principal, notification):
        raise Hidden(f"Notification {notification_id!r} does not exist.")
    return notification


def get_notification(principal, notification_id):
    with audit.audited("notification.get", principal, TARGET, notification_id, classify=audit_result):
        with transaction.atomic():
            notification = _load(principal, notification_id)
            reads.record_read("notification.get", principal, TARGET, notification.pk)
    return notification


def list_notifications(principal, *, username=None, status=None):
    """What the principal may see: everything for superusers and holders of view_notification,
    otherwise the notifications sent to them or asked for by them. Newest first."""
    qs = Notification.objects.select_related("user").order_by("-created_at", "-id")
    if not principal.is_system:
        user = principal.user
        if not (user and user.is_active and user.is_authenticated):
            return qs.none()
        if not (user.is_superuser or user.has_perm(PERM_VIEW)):
            qs = qs.filter(Q(user=user) | Q(requested_by=principal.key))
    if username:
        qs = qs.filter(user__username=username)
    if status is not None:  # "?status=" is not a status either
        if status not in NotificationStatus.values:
            raise ValidationFailed(
                f"Unknown status {status!r}; use one of {', '.join(NotificationStatus.values)}.",
                details={"status": "unknown"},
            )
        qs = qs.filter(status=status)
    reads.record_read(
        "notification.list", principal, TARGET, "", filters={"user": username or "", "status": status or ""}
    )
    return qs


def acknowledge(principal, notification_id):
    """The person confirms they have it: an urgent (or any) notification still being sent, or
    already delivered, becomes DELIVERED and acknowledged; no further channel is tried.
    Acknowledging twice is harmless. An exhausted or unroutable one cannot be acknowledged."""
    with audit.audited("notification.acknowledge", principal, TARGET, notification_id, classify=audit_result):
        with transaction.atomic():
            found = _load(principal, notification_id)
            if not can_acknowledge(principal, found):
                raise PermissionDenied("Only the person notified (or staff with change_notification) may acknowledge.")
            notification = Notification.objects.select_for_update().get(pk=found.pk)
            if notification.acknowledged_at is not None:
                return notification
            if notification.status not in (NotificationStatus.SENDING, NotificationStatus.DELIVERED):
                raise Conflict(
                    f"Notification {notification.id} is {notification.status}; there is nothing to acknowledge.",
                    code="not_acknowledgeable",
                    details={"status": notification.status},
                )
            audit.record_action(
                "notification.acknowledge",
                principal,
                TARGET,
                notification.id,
                step=notification.step,
            )
            if notification.status == NotificationStatus.SENDING:
                mark_delivered(notification, principal.via or "api", acknowledged=True)
            else:
                notification.acknowledged_at = timezone.now()
                notification.save(update_fields=["acknowledged_at", "updated_at"])
    return notification


def summary(notification):
    """The chain and the router's reasons, for the MCP tool and quick views (no addresses)."""
    trace = notification.trace or {}
    candidates = trace.get("candidates") or []
    by_identity = {c.get("identity_id"): c for c in candidates}
    chain = [
        {
            "step": i,
            "identity_id": identity_id,
            "connector_id": by_identity.get(identity_id, {}).get("connector_id"),
            "kind": by_identity.get(identity_id, {}).get("kind"),
            "address_hint": by_identity.get(identity_id, {}).get("address_hint"),
        }
        for i, identity_id in enumerate(trace.get("chain") or [])
    ]

    def brief(c):
        return {k: c.get(k) for k in ("identity_id", "connector_id", "kind", "address_hint", "priority", "reason")}

    return {
        "chain": chain,
        "source": trace.get("source"),
        "included": [brief(c) for c in candidates if c.get("included")],
        "excluded": [brief(c) for c in candidates if not c.get("included")],
    }
