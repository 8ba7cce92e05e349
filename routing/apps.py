from django.apps import AppConfig
from django.conf import settings


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing (preferences and the router)"

    def ready(self):
        # The router's per-process cache forgets what changed (see routing.router, "The cache").
        from django.db.models.signals import post_delete, post_save

        from connectors.models import Connector, InboundMessage
        from routing import router
        from routing.models import ChannelIdentity, ConnectorPreference

        for model in (ChannelIdentity, ConnectorPreference):
            post_save.connect(router.on_identity_or_preference_changed, sender=model,
                              dispatch_uid=f"routing.router.{model.__name__}.saved")
            post_delete.connect(router.on_identity_or_preference_changed, sender=model,
                                dispatch_uid=f"routing.router.{model.__name__}.deleted")
        post_save.connect(router.on_connector_saved, sender=Connector, dispatch_uid="routing.router.connector.saved")
        post_delete.connect(router.on_connector_deleted, sender=Connector,
                            dispatch_uid="routing.router.connector.deleted")
        post_save.connect(router.on_inbound_saved, sender=InboundMessage, dispatch_uid="routing.router.inbound.saved")
        # A new account may reuse the id of one whose rows were rolled back (tests, SQLite).
        post_save.connect(router.on_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="routing.router.user.saved")

        # Fallback: move notifications on when their current delivery settles (routing.notify).
        from connectors.signals import delivery_settled
        from routing.notify import on_delivery_settled

        delivery_settled.connect(on_delivery_settled, dispatch_uid="routing.notify.on_delivery_settled")
