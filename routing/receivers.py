"""Connects routing's signal receivers: the router cache's evictions and notify's fallback on settled deliveries."""
from django.conf import settings
from django.db.models.signals import post_delete, post_save

from connectors.models import Connector, InboundMessage
from connectors.signals import delivery_settled
from routing.models import ChannelIdentity, ConnectorPreference
from routing.notify.settlement import on_delivery_settled
from routing.router import cache as router_cache


def connect():
    """Called once from RoutingConfig.ready(); the dispatch uids keep a second call harmless."""
    for model in (ChannelIdentity, ConnectorPreference):
        post_save.connect(router_cache.on_identity_or_preference_changed, sender=model,
                          dispatch_uid=f"routing.router.{model.__name__}.saved")
        post_delete.connect(router_cache.on_identity_or_preference_changed, sender=model,
                            dispatch_uid=f"routing.router.{model.__name__}.deleted")
    post_save.connect(router_cache.on_connector_saved, sender=Connector, dispatch_uid="routing.router.connector.saved")
    post_delete.connect(router_cache.on_connector_deleted, sender=Connector,
                        dispatch_uid="routing.router.connector.deleted")
    post_save.connect(router_cache.on_inbound_saved, sender=InboundMessage, dispatch_uid="routing.router.inbound.saved")
    # A new account may reuse the id of one whose rows were rolled back (tests, SQLite).
    post_save.connect(router_cache.on_user_saved, sender=settings.AUTH_USER_MODEL,
                      dispatch_uid="routing.router.user.saved")
    # Fallback: move notifications on when their current delivery settles.
    delivery_settled.connect(on_delivery_settled, dispatch_uid="routing.notify.on_delivery_settled")
