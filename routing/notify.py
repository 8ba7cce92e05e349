"""notify_user: address a person, not a chat id, and fall back down the router's chain.

- `notify_user()` asks `routing.router.decide()` for the chain, stores a `Notification` (with the
  whole trace), its audit row and a `routing.decision` event, and queues the first send through
  `connectors.services.send_message` (as the system principal "router"), all in one transaction.
  The delivery task runs after commit.
- `on_delivery_settled()` (a receiver of `connectors.signals.delivery_settled`, connected in
  `RoutingConfig.ready`) moves the notification on when the delivery of its current step settles:
    - failed or dead (a send error, or a failed receipt such as Twilio "undelivered"): the next
      step of the chain (`notification.fallback`), or EXHAUSTED (`notification.exhausted`);
    - sent or delivered: standard and digest become DELIVERED (`notification.delivered`). A later
      failed receipt for that same delivery re-opens it and falls back (a receipt is the better
      witness); urgent ones wait for an acknowledgement until `ack_deadline` (now +
      ROUTING_URGENT_ACK_SECONDS) and become DELIVERED only when acknowledged (a call answered
      with 1, or `acknowledge()`); `check_ack_deadlines()` moves the silent ones on.
- Each transition takes the notification's row lock, re-checks its state (a late or duplicate
  signal finds nothing to do) and writes the change, its audit row, its event and the next
  send in one transaction.

Who may notify: superusers, system principals (BRAIN, tasks) and users holding the Django
permission `routing.add_notification`. Who may see a notification: the person notified, the
principal who asked, superusers and holders of `routing.view_notification`; only the first two
see its content. Who may acknowledge: the person notified, superusers and holders of
`routing.change_notification`. Events and audit rows carry ids, counts and reasons, never the
content or an address.
"""
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import (
    Conflict,
    Hidden,
    NotFound,
    PermissionDenied,
    ServiceError,
    ValidationFailed,
    audit_result,
)
from connectors.events import log as events
from connectors.permissions import Principal
from connectors.platforms.base import MessageValidationError, OutgoingMessage
from routing.models import ChannelIdentity, Notification, NotificationStatus, NotificationType

logger = logging.getLogger(__name__)

ROUTER = Principal.system_actor("router")
TARGET = "notification"
PERM_ADD = "routing.add_notification"
PERM_VIEW = "routing.view_notification"
PERM_CHANGE = "routing.change_notification"

FAILED_DELIVERY = ("failed", "dead")
DONE_DELIVERY = ("sent", "delivered")
NO_ACK = "no acknowledgement"


# --- permissions and auditing --------------------------------------------------------------------


def _active_user(principal):
    user = principal.user
    return user is not None and user.is_active and user.is_authenticated


def can_notify(principal):
    if principal.is_system:
        return True
    return _active_user(principal) and (principal.user.is_superuser or principal.user.has_perm(PERM_ADD))


def can_view(principal, notification):
    if principal.is_system:
        return True
    if not _active_user(principal):
        return False
    user = principal.user
    return (
        user.is_superuser
        or notification.user_id == user.pk
        or notification.requested_by == principal.key
        or user.has_perm(PERM_VIEW)
    )


def can_see_content(principal, notification):
    """The person notified and whoever asked already know what it says; nobody else reads it."""
    if principal.is_system:
        return True
    if not _active_user(principal):
        return False
    return notification.user_id == principal.user.pk or notification.requested_by == principal.key


def can_acknowledge(principal, notification):
    if principal.is_system:
        return True
    if not _active_user(principal):
        return False
    user = principal.user
    return user.is_superuser or notification.user_id == user.pk or user.has_perm(PERM_CHANGE)


def _emit(event_type, connector_id="", **data):
    events.publish(event_type, connector_id=connector_id or "", data=data)


# --- validation ----------------------------------------------------------------------------------


def _check_type(notification_type):
    if notification_type not in NotificationType.values:
        raise ValidationFailed(
            f"Unknown notification_type {notification_type!r}; use one of {', '.join(NotificationType.values)}.",
            details={"notification_type": "unknown"},
        )


def _check_content(content):
    try:
        OutgoingMessage(recipient="router", content=content)
    except MessageValidationError as exc:
        raise ValidationFailed("Invalid notification content.", details={"content": exc.errors.get("content", "invalid")})


def _check_idempotency_key(key):
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 255 or not key.isprintable()):
        raise ValidationFailed("Idempotency-Key must be 1-255 printable characters.", details={"idempotency_key": "invalid"})


def _resolve_user(user):
    if isinstance(user, str):
        found = get_user_model().objects.filter(username=user).first()
        if found is None:
            raise ValidationFailed(f"No user {user!r}.", code="unknown_user", details={"user": "unknown"})
        user = found
    if user is None or not getattr(user, "pk", None):
        raise ValidationFailed("Name the user to notify.", code="unknown_user", details={"user": "required"})
    if not user.is_active:
        raise ValidationFailed(f"User {user.get_username()!r} is inactive.", code="inactive_user", details={"user": "inactive"})
    return user


def _replay(principal, key, user, content, notification_type):
    existing = Notification.objects.filter(requested_by=principal.key, idempotency_key=key).first()
    if existing is None:
        return None
    if (existing.user_id, existing.notification_type, existing.content) != (user.pk, notification_type, content):
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_conflict",
            details={"notification_id": str(existing.id)},
        )
    return existing


# --- notify_user ---------------------------------------------------------------------------------


def notify_user(principal, user, content, notification_type, idempotency_key=None):
    """Route `content` to `user` (a User or a username); returns (notification, replayed).

    The same idempotency key with the same user, type and content returns the first
    notification (replayed=True) and sends nothing; with anything else it is a Conflict.
    """
    target = getattr(user, "pk", None) or str(user)
    with audit.audited("notification.create", principal, TARGET, target, classify=audit_result):
        if not can_notify(principal):
            raise PermissionDenied(f"You need the {PERM_ADD} permission to notify people.")
        _check_type(notification_type)
        _check_content(content)
        _check_idempotency_key(idempotency_key)
        user = _resolve_user(user)
        if idempotency_key is not None:
            existing = _replay(principal, idempotency_key, user, content, notification_type)
            if existing is not None:
                audit.record_action("notification.create", principal, TARGET, existing.id, replayed=True)
                return existing, True
        from routing import router

        decision = router.decide(user.pk, notification_type)
        try:
            with transaction.atomic():
                notification = _create(principal, user, content, notification_type, idempotency_key, decision)
        except IntegrityError:
            # A concurrent request with the same key won: answer as its replay.
            existing = _replay(principal, idempotency_key, user, content, notification_type) if idempotency_key else None
            if existing is None:
                raise
            audit.record_action("notification.create", principal, TARGET, existing.id, replayed=True)
            return existing, True
    notification.refresh_from_db()  # eager deliveries may have moved it on already
    return notification, False


def _create(principal, user, content, notification_type, idempotency_key, decision):
    chain = list(decision.chain)
    trace = dict(decision.trace)
    trace.setdefault("chain", [route.identity_id for route in chain])
    # Savepoint: a duplicate key fails here without spoiling the caller's transaction.
    with transaction.atomic(savepoint=idempotency_key is not None):
        notification = Notification.objects.create(
            user=user,
            notification_type=notification_type,
            content=content,
            status=NotificationStatus.SENDING if chain else NotificationStatus.UNROUTABLE,
            trace=trace,
            attempts=[],
            step=0,
            requested_by=principal.key,
            idempotency_key=idempotency_key,
        )
    audit.record_action(
        "notification.create",
        principal,
        TARGET,
        notification.id,
        user_id=user.pk,
        notification_type=notification_type,
        chain_length=len(chain),
        source=trace.get("source", ""),
        status=notification.status,
        length=len(content),
    )
    _emit(
        "routing.decision",
        chain[0].connector_id if chain else "",
        notification_id=str(notification.id),
        user_id=user.pk,
        notification_type=notification_type,
        chain_length=len(chain),
        source=trace.get("source", ""),
        decision_ms=trace.get("decision_ms"),
        status=notification.status,
    )
    if not chain:
        return notification
    first = chain[0]
    reason = _send_step(notification, identity_id=first.identity_id, connector_id=first.connector_id, address=first.address)
    if reason is not None:
        _move_on(notification, reason)
    else:
        notification.save()
    return notification


# --- the chain -----------------------------------------------------------------------------------


def _chain(notification):
    return list(notification.trace.get("chain") or [])


def _candidate(notification, identity_id):
    for candidate in notification.trace.get("candidates") or []:
        if candidate.get("identity_id") == identity_id:
            return candidate
    return {}


def _now_iso():
    return timezone.now().isoformat()


def _send_step(notification, *, identity_id=None, connector_id=None, address=None):
    """Queue the send of the current step; returns None, or why this step cannot be used.
    Runs in the caller's transaction; records the attempt (the caller saves the row)."""
    step = notification.step
    if identity_id is None:
        identity_id = _chain(notification)[step]
    attempt = {"step": step, "identity_id": identity_id, "connector_id": connector_id,
               "kind": _candidate(notification, identity_id).get("kind", ""), "delivery_id": None,
               "outcome": "sending", "reason": "", "started_at": _now_iso(), "ended_at": None}
    if address is None:
        identity = ChannelIdentity.objects.filter(pk=identity_id, user_id=notification.user_id).first()
        if identity is None:
            reason = "identity removed"
            notification.attempts = [*notification.attempts, {**attempt, "outcome": "skipped", "reason": reason,
                                                              "ended_at": attempt["started_at"]}]
            return reason
        connector_id, address = identity.connector_id, identity.address
        attempt["connector_id"] = connector_id
    from connectors import services

    try:
        delivery, _ = services.send_message(
            ROUTER, connector_id, address, notification.content, idempotency_key=f"notify:{notification.id}:{step}"
        )
    except ServiceError as exc:
        reason = f"send refused: {exc.code}"
        notification.attempts = [*notification.attempts, {**attempt, "outcome": "failed", "reason": reason,
                                                          "ended_at": attempt["started_at"]}]
        return reason
    attempt["delivery_id"] = str(delivery.id)
    notification.attempts = [*notification.attempts, attempt]
    notification.current_delivery = delivery
    notification.status = NotificationStatus.SENDING
    notification.ack_deadline = None
    return None


def _close_attempt(notification, outcome, reason=""):
    attempts = [dict(a) for a in notification.attempts]
    if attempts and attempts[-1].get("step") == notification.step:
        attempts[-1].update(outcome=outcome, reason=reason, ended_at=_now_iso())
    notification.attempts = attempts


def _current_connector(notification):
    attempts = notification.attempts
    return attempts[-1].get("connector_id") or "" if attempts else ""


def _move_on(notification, reason):
    """The current step failed for `reason`: send on the next usable one, or give up.
    In the caller's transaction, with the notification's row lock held; saves the row."""
    chain = _chain(notification)
    while True:
        from_step, from_connector = notification.step, _current_connector(notification)
        if from_step + 1 >= len(chain):
            notification.status = NotificationStatus.EXHAUSTED
            notification.ack_deadline = None
            notification.save()
            audit.record_action(
                "notification.exhausted",
                ROUTER,
                TARGET,
                notification.id,
                result=audit.FAILURE,
                steps=len(chain),
                reason=reason,
            )
            _emit("notification.exhausted", from_connector, notification_id=str(notification.id),
                  user_id=notification.user_id, steps=len(chain), reason=reason)
            return
        notification.step = from_step + 1
        next_reason = _send_step(notification)
        to_connector = _current_connector(notification)
        audit.record_action(
            "notification.fallback",
            ROUTER,
            TARGET,
            notification.id,
            from_step=from_step,
            to_step=notification.step,
            from_connector=from_connector,
            to_connector=to_connector,
            reason=reason,
        )
        _emit("notification.fallback", to_connector, notification_id=str(notification.id),
              user_id=notification.user_id, from_step=from_step, to_step=notification.step,
              from_connector=from_connector, to_connector=to_connector, reason=reason)
        if next_reason is None:
            notification.save()
            return
        reason = next_reason


def _mark_delivered(notification, via, acknowledged=False):
    now = timezone.now()
    notification.status = NotificationStatus.DELIVERED
    notification.ack_deadline = None
    if acknowledged and notification.acknowledged_at is None:
        notification.acknowledged_at = now
    _close_attempt(notification, "acknowledged" if acknowledged else "delivered")
    notification.save()
    audit.record_action(
        "notification.delivered",
        ROUTER,
        TARGET,
        notification.id,
        step=notification.step,
        via=via,
        acknowledged=bool(acknowledged),
    )
    _emit("notification.delivered", _current_connector(notification), notification_id=str(notification.id),
          user_id=notification.user_id, step=notification.step, via=via, acknowledged=bool(acknowledged))


# --- reacting to deliveries ----------------------------------------------------------------------


def on_delivery_settled(sender=None, *, delivery_id, connector_id="", status="", via="", acknowledged=False, **kwargs):
    """Receiver of connectors.signals.delivery_settled. Never raises (it runs after a commit)."""
    try:
        settle(delivery_id, status, via=via, acknowledged=acknowledged)
    except Exception:
        logger.exception("Routing could not react to delivery %s settling as %s", delivery_id, status)


def settle(delivery_id, status, *, via="", acknowledged=False):
    """Move the notification whose current delivery this is. Returns it, or None if none is."""
    try:
        delivery_uuid = uuid.UUID(str(delivery_id))
    except ValueError:
        return None
    if not Notification.objects.filter(current_delivery_id=delivery_uuid).exists():
        return None  # most deliveries are not notifications: no lock, no transaction
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update().filter(current_delivery_id=delivery_uuid).first()
        )
        if notification is None:
            return None
        state = notification.status
        urgent = notification.notification_type == NotificationType.URGENT
        if status in FAILED_DELIVERY:
            # A DELIVERED standard one re-opens on a failed receipt; an acknowledged one never.
            if state not in (NotificationStatus.SENDING, NotificationStatus.DELIVERED) or notification.acknowledged_at:
                return notification
            reason = f"delivery {status} ({via})" if via else f"delivery {status}"
            _close_attempt(notification, status, reason)
            _move_on(notification, reason)
            return notification
        if status not in DONE_DELIVERY or state != NotificationStatus.SENDING:
            return notification
        if not urgent or acknowledged:
            _mark_delivered(notification, via, acknowledged=acknowledged)
            return notification
        if notification.ack_deadline is None:
            notification.ack_deadline = timezone.now() + timedelta(seconds=settings.ROUTING_URGENT_ACK_SECONDS)
            attempts = [dict(a) for a in notification.attempts]
            if attempts:
                attempts[-1]["outcome"] = "awaiting acknowledgement"
            notification.attempts = attempts
            notification.save()
            audit.record_action(
                "notification.awaiting_ack",
                ROUTER,
                TARGET,
                notification.id,
                step=notification.step,
                ack_deadline=notification.ack_deadline.isoformat(),
            )
    return notification


def check_ack_deadlines(now=None, limit=500):
    """Urgent notifications nobody acknowledged in time go to their next channel. Periodic
    (Celery beat: routing.tasks.check_ack_deadlines). Returns how many moved on."""
    now = now or timezone.now()
    due = list(
        Notification.objects.filter(
            status=NotificationStatus.SENDING,
            notification_type=NotificationType.URGENT,
            ack_deadline__lte=now,
        ).values_list("pk", flat=True)[:limit]
    )
    moved = 0
    for pk in due:
        with transaction.atomic():
            notification = (
                Notification.objects.select_for_update()
                .filter(pk=pk, status=NotificationStatus.SENDING, ack_deadline__lte=now)
                .first()
            )
            if notification is None:  # acknowledged or moved on meanwhile
                continue
            _close_attempt(notification, NO_ACK, NO_ACK)
            _move_on(notification, NO_ACK)
            moved += 1
    return moved


# --- reading and acknowledging -------------------------------------------------------------------


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
        return _load(principal, notification_id)


def list_notifications(principal, *, username=None, status=None):
    """What the principal may see: everything for superusers and holders of view_notification,
    otherwise the notifications sent to them or asked for by them. Newest first."""
    qs = Notification.objects.select_related("user").order_by("-created_at")
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
                _mark_delivered(notification, principal.via or "api", acknowledged=True)
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
