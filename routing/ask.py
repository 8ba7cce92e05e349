"""ask_user's addressing: by username on the router's first channel, or a connector and recipient given outright.

The question itself lives in connectors (connectors/delivery/questions.py), beside the deliveries it is sent as.
"""
from audit import services as audit
from brain_connectors.shared.errors import PermissionDenied, ValidationFailed, audit_result
from connectors import services
from routing.notify.creation import _resolve_user
from routing.notify.permissions import PERM_ADD, can_notify
from routing.router import decision as router_decision


def ask_user(principal, question, options, *, username=None, connector_id=None, recipient=None, open_seconds=None):
    """Send the question; returns the Question. By username: the router's first channel for a standard message (the
    same choice notify_user makes; needs its permission too). Either username, or connector_id and recipient."""
    if username is not None:
        if connector_id is not None or recipient is not None:
            raise ValidationFailed("Give a username, or a connector_id and recipient, not both.",
                                   details={"username": "not with connector_id or recipient"})
        connector_id, recipient = _route(principal, username)
    elif connector_id is None or recipient is None:
        raise ValidationFailed("Name the person: a username, or a connector_id and recipient.",
                               details={"username": "or connector_id and recipient required"})
    extra = {} if open_seconds is None else {"open_seconds": open_seconds}
    return services.ask_question(principal, connector_id, recipient, question, options, **extra)


def _route(principal, username):
    with audit.audited("question.route", principal, "user", username, classify=audit_result):
        if not can_notify(principal):
            raise PermissionDenied(f"You need the {PERM_ADD} permission to ask people by username.")
        user = _resolve_user(username)
        chain = router_decision.decide(user.pk, "standard").chain
        if not chain:
            raise ValidationFailed(f"No channel reaches {username!r} now.", code="unroutable",
                                   details={"username": "no usable channel"})
        audit.record_action("question.route", principal, "user", user.pk, connector_id=chain[0].connector_id)
        return chain[0].connector_id, chain[0].address
