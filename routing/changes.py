"""What follows every change to a person's identities or preferences: the `preference.updated` event and a fresh router cache."""
from django.db import transaction

from connectors.events import log as events
from routing.router import cache as router_cache


def forget_cached_routes(user_id):
    """Drop the router's cached inputs for this person now and again once the change has committed
    (a decision made meanwhile on another thread may have cached the old rows)."""

    def invalidate():
        router_cache.invalidate(user_id)

    invalidate()
    transaction.on_commit(invalidate)


def publish_preference_update(connector_id, user_id, change, **data):
    events.publish("preference.updated", connector_id=connector_id, data={"user_id": user_id, "change": change, **data})
