"""The routing app's configuration: connects its signal receivers once the app registry is ready."""
from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing (preferences and the router)"

    def ready(self):
        # Documented seam: routing.receivers imports models, which cannot be imported while apps load.
        from routing import receivers

        receivers.connect()
