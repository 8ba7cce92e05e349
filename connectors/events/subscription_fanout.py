"""Fan-out at publish time: one queued delivery per subscription an event matches, in the same transaction.

Connected to `event_appended` (connectors.events.log), which publish() sends with the event log
lock held; the connection is made when the app is ready (connectors.apps). Subscriptions never
deliver an event the owner could not read through the API: events of connectors they cannot
view get no delivery row here, and are checked again at delivery time.
"""
from django.db import transaction
from django.dispatch import receiver

from connectors.events.log import event_appended
from connectors.events.subscriptions import active_subscriptions, enqueue
from connectors.events.types import type_matches
from connectors.models import EventDelivery, EventSubscription
from connectors.permissions import Principal, viewable_connectors


def owner_may_view(owner, connector_id) -> bool:
    """The rule of the event API (connectors.events.log.visible_query): superusers see every event,
    others only those of connectors they may view; events about no connector are for superusers."""
    if not owner.is_active:
        return False
    if owner.is_superuser:
        return True
    if not connector_id:
        return False
    return viewable_connectors(Principal.for_user(owner, via="subscription")).filter(pk=connector_id).exists()


def fan_out(event):
    """Queue one delivery per active subscription matching `event`, in the publisher's transaction.

    Called through publish()'s `event_appended` with the event log lock held. Every writer of subscriptions takes
    that lock before touching the row, so a subscription seen here cannot be deleted before this
    transaction commits (no foreign-key failure at commit), and the order of the two locks is
    the same everywhere (no deadlock).
    """
    matching = [pk for pk, patterns in active_subscriptions() if patterns and type_matches(event.type, patterns)]
    if not matching:
        return []
    live = EventSubscription.objects.filter(pk__in=matching, active=True).select_related("owner")
    rows = [
        EventDelivery(subscription=subscription, event=event)
        for subscription in live
        if owner_may_view(subscription.owner, event.connector_id)
    ]
    if not rows:
        return []
    EventDelivery.objects.bulk_create(rows)
    ids = [row.pk for row in rows]
    transaction.on_commit(lambda: [enqueue(pk) for pk in ids])
    return rows


@receiver(event_appended, dispatch_uid="event-subscriptions-fan-out")
def queue_deliveries(sender, event, **kwargs):
    """The seam: publish() signals every appended event, and subscriptions queue their deliveries."""
    fan_out(event)
