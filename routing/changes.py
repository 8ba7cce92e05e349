"""What every change to a person's identities or preferences shares: its audited block, its audit row, the `preference.updated` event and a fresh router cache."""
from django.db import transaction

from audit import services as audit
from brain_connectors.shared.errors import audit_result_limits_denied
from connectors.events import log as events
from routing.router import cache as router_cache


def audited_change(action, principal, target_type, target_id, **details):
    """The block of one change: a refusal escaping it leaves its own audit row (`denied` or `failure`,
    the message cut to 300 characters) and is re-raised."""
    return audit.audited(action, principal, target_type, target_id, classify=audit_result_limits_denied, message_limit=300,
                         **details)


def forget_cached_routes(user_id):
    """Drop the router's cached inputs for this person now and again once the change has committed
    (a decision made meanwhile on another thread may have cached the old rows)."""

    def invalidate():
        router_cache.invalidate(user_id)

    invalidate()
    transaction.on_commit(invalidate)


def publish_preference_update(connector_id, user_id, change, **data):
    events.publish("preference.updated", connector_id=connector_id, data={"user_id": user_id, "change": change, **data})


def record_change(action, principal, target, user_id, details, change, connector_ids, **data):
    """The end of a change made: its audit row (`target` = (type, id), with `user_id` and `details`), then
    `preference.updated` for each connector in `connector_ids` (`change` and `data`), then a fresh router cache."""
    target_type, target_id = target
    audit.record_action(action, principal, target_type, target_id, user_id=user_id, **details)
    for connector_id in connector_ids:
        publish_preference_update(connector_id, user_id, change, **data)
    forget_cached_routes(user_id)
