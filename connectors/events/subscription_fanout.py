"""Fan-out at publish time: one queued delivery per subscription an event matches, in the same transaction.

Connected to `event_appended` (connectors.events.log), which publish() sends inside its
transaction; the connection is made when the app is ready (connectors.apps). Subscriptions never
deliver an event the owner could not read through the API: events of connectors they cannot
view get no delivery row here, and are checked again at delivery time.
"""
from django.db import connection, transaction
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


def _lock_for_reference(subscription_ids):
    """The ids among these of active subscriptions, locked FOR KEY SHARE until the transaction ends.

    The delivery rows reference their subscription with a deferred foreign key: without this, a
    subscription deleted (and committed) between this read and our commit would fail the check
    at COMMIT, and with it the publisher's whole transaction. KEY SHARE is what the foreign-key
    check itself takes: it waits for nothing but a delete (or a key change) and blocks only
    those, so publishers never wait for one another. delete_subscription's FOR UPDATE then waits
    for this transaction, and once that commits its cascade deletes our rows too. A row deleted
    meanwhile is simply not returned. Locked in id order. SQLite needs none of it: a write
    transaction holds the whole database's write lock.
    """
    if connection.vendor != "postgresql":
        return subscription_ids
    table, id_, active = (connection.ops.quote_name(n) for n in (EventSubscription._meta.db_table, "id", "active"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {id_} FROM {table} WHERE {id_} = ANY(%s) AND {active} ORDER BY {id_} FOR KEY SHARE",  # noqa: S608  # nosec B608  # quoted model names, %s marks
            [list(subscription_ids)],
        )
        return [row[0] for row in cursor.fetchall()]


def fan_out(event):
    """Queue one delivery per active subscription matching `event`, in the publisher's transaction.

    Called through publish()'s `event_appended`. The subscriptions it queues for are share-locked
    until this transaction ends (see `_lock_for_reference`), so none can be deleted before the
    delivery rows that reference it commit. The event row needs no lock: it is this transaction's own.
    """
    matching = [pk for pk, patterns in active_subscriptions() if patterns and type_matches(event.type, patterns)]
    if not matching:
        return []
    live = EventSubscription.objects.filter(pk__in=_lock_for_reference(matching), active=True).select_related("owner")
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
