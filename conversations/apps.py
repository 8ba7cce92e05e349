"""App config of conversations."""
from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations (memory and search)"

    def ready(self):
        # Here, not at the top: services import models, which exist only once the app registry is ready.
        from connectors.signals import message_recorded, message_transcribed
        from conversations.recording import record_marker, record_transcript

        message_recorded.connect(record_marker, dispatch_uid="conversations.record_marker")
        message_transcribed.connect(record_transcript, dispatch_uid="conversations.record_transcript")
