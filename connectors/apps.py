"""App config of connectors: registers the system checks, the OpenAPI auth scheme and the subscription fan-out."""
from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors"

    def ready(self):
        from connectors import checks  # noqa: F401  (registers the system checks)
        from connectors.api import schema  # noqa: F401  (registers the OpenAPI auth scheme)
        from connectors.delivery import attachments  # noqa: F401  (a deleted Attachment row takes its file along)
        from connectors.events import subscription_fanout  # noqa: F401  (connects event subscriptions to events.publish)
