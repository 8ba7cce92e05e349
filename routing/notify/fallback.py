"""Falling back down a notification's chain: send the current step, close attempts, move on, mark delivered.

Each function runs in the caller's transaction with the notification's row lock held, so that the
change, its audit row, its event and the next send are written together.
"""
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import ServiceError
from connectors import services as connector_services
from routing.models import ChannelIdentity, NotificationStatus
from routing.notify.trail import ROUTER, TARGET, emit


def _chain(notification):
    return list(notification.trace.get("chain") or [])


def _candidate(notification, identity_id):
    for candidate in notification.trace.get("candidates") or []:
        if candidate.get("identity_id") == identity_id:
            return candidate
    return {}


def _now_iso():
    return timezone.now().isoformat()


def send_step(notification, *, identity_id=None, connector_id=None, address=None):
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
    try:
        delivery, _ = connector_services.send_message(
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


def close_attempt(notification, outcome, reason=""):
    attempts = [dict(a) for a in notification.attempts]
    if attempts and attempts[-1].get("step") == notification.step:
        attempts[-1].update(outcome=outcome, reason=reason, ended_at=_now_iso())
    notification.attempts = attempts


def current_connector(notification):
    attempts = notification.attempts
    return attempts[-1].get("connector_id") or "" if attempts else ""


def move_on(notification, reason):
    """The current step failed for `reason`: send on the next usable one, or give up.
    In the caller's transaction, with the notification's row lock held; saves the row."""
    chain = _chain(notification)
    while True:
        from_step, from_connector = notification.step, current_connector(notification)
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
            emit("notification.exhausted", from_connector, notification_id=str(notification.id),
                  user_id=notification.user_id, steps=len(chain), reason=reason)
            return
        notification.step = from_step + 1
        next_reason = send_step(notification)
        to_connector = current_connector(notification)
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
        emit("notification.fallback", to_connector, notification_id=str(notification.id),
              user_id=notification.user_id, from_step=from_step, to_step=notification.step,
              from_connector=from_connector, to_connector=to_connector, reason=reason)
        if next_reason is None:
            notification.save()
            return
        reason = next_reason


def mark_delivered(notification, via, acknowledged=False):
    now = timezone.now()
    notification.status = NotificationStatus.DELIVERED
    notification.ack_deadline = None
    if acknowledged and notification.acknowledged_at is None:
        notification.acknowledged_at = now
    close_attempt(notification, "acknowledged" if acknowledged else "delivered")
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
    emit("notification.delivered", current_connector(notification), notification_id=str(notification.id),
          user_id=notification.user_id, step=notification.step, via=via, acknowledged=bool(acknowledged))
