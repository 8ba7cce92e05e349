"""notify_user(): validate, ask the router for the chain, store the Notification and queue its first send.

`notify_user()` asks `routing.router.decision.decide()` for the chain, stores a `Notification`
(with the whole trace), its audit row and a `routing.decision` event, and queues the first send
through `connectors.services.send_message` (as the system principal "router"), all in one
transaction. The delivery task runs after commit.
"""
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from audit import services as audit
from brain_connectors.shared.errors import Conflict, PermissionDenied, ValidationFailed, audit_result
from connectors.platforms.base import MessageValidationError, OutgoingMessage
from routing.models import Notification, NotificationStatus, NotificationType
from routing.notify.fallback import move_on, send_step
from routing.notify.permissions import PERM_ADD, can_notify
from routing.notify.trail import TARGET, emit
from routing.router import decision as router_decision


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
        decision = router_decision.decide(user.pk, notification_type)
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
    emit(
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
    reason = send_step(notification, identity_id=first.identity_id, connector_id=first.connector_id, address=first.address)
    if reason is not None:
        move_on(notification, reason)
    else:
        notification.save()
    return notification
