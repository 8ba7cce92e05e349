"""App config of conversations."""
from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations (memory and search)"

    def ready(self):
        # Here, not at the top: services import models, which exist only once the app registry is ready.
        from connectors.signals import message_recorded
        from conversations.services import store_recorded_message

        message_recorded.connect(store_recorded_message, dispatch_uid="conversations.store_recorded_message")
