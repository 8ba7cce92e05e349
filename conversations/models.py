"""BRAIN's memory: messages encrypted at rest, a blind search index, analysis, retention.

Every message to and from a person; the blind index is keyed token hashes; analysis is sentiment and topics.

Only `conversations.services` writes these rows.
"""
from django.conf import settings
from django.db import models

from connectors.fields import EncryptedTextField


class Conversation(models.Model):
    """One person's exchange on one connector. `person` is the account when the address is a
    paired identity (routing), else null; `address` is the platform address either way."""

    connector = models.ForeignKey("connectors.Connector", on_delete=models.CASCADE, related_name="conversations")
    address = models.CharField(max_length=255)
    person = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_message_at"]
        constraints = [models.UniqueConstraint(fields=["connector", "address"], name="conversation_per_address")]
        indexes = [models.Index(fields=["person", "last_message_at"])]

    def __str__(self):
        return f"conversation {self.pk} on {self.connector_id}"


class Role(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class Message(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = EncryptedTextField()
    created_at = models.DateTimeField(db_index=True)
    # Where it came from: the inbound message or the delivery (ids, never content).
    inbound_id = models.BigIntegerField(null=True, blank=True, unique=True)
    delivery_id = models.UUIDField(null=True, blank=True, unique=True)
    platform_message_id = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self):
        return f"{self.role} message {self.pk}"


class PendingMessage(models.Model):
    """A message not yet in memory: written by the `message_recorded` receiver in the caller's
    transaction (cheap: one insert), turned into a Message in batches after commit
    (conversations.recording). Content is the text memory keeps (a pairing code or link already
    redacted), encrypted like the message it becomes."""

    connector = models.ForeignKey("connectors.Connector", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32)
    direction = models.CharField(max_length=8)
    # The conversation's address (the platform's lenient form), so a flush can find one conversation's markers.
    address = models.CharField(max_length=255)
    at = models.DateTimeField()
    principal = models.CharField(max_length=200, blank=True, default="")
    inbound_id = models.BigIntegerField(null=True, blank=True)
    delivery_id = models.UUIDField(null=True, blank=True)
    platform_message_id = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    content = EncryptedTextField()

    class Meta:
        indexes = [
            models.Index(fields=["at", "id"], name="pending_message_order"),
            models.Index(fields=["connector", "address"], name="pending_message_conversation"),
        ]

    def __str__(self):
        return f"pending {self.direction} message {self.pk}"


class SearchToken(models.Model):
    """The blind index: HMAC-SHA256(SEARCH_INDEX_KEY, token) for each distinct token of a message.
    The table reveals which messages share a token and how often tokens occur, never the text."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="search_tokens")
    digest = models.CharField(max_length=64)
    # Which index key made it (a fingerprint), so that searches cover both keys during a rebuild.
    key_id = models.CharField(max_length=16, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["digest", "message"], name="search_token_once")]


class MessageAnalysis(models.Model):
    """Sentiment (VADER compound, -1..1) and topics (keywords) of one message, computed in a task."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="analysis")
    sentiment = models.FloatField()
    topics = EncryptedTextField(blank=True, default="")  # keywords are words of the message: encrypted too
    analysed_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"analysis of message {self.message_id}"


class RetentionPolicy(models.Model):
    """How long messages on one connector are kept; CONVERSATION_RETENTION_DAYS applies elsewhere."""

    connector = models.OneToOneField("connectors.Connector", on_delete=models.CASCADE, related_name="retention_policy")
    days = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retention policies"

    def __str__(self):
        return f"{self.connector_id}: {self.days} days"


class IndexState(models.Model):
    """Progress of an index-key rotation, so that a stopped rebuild resumes where it ended."""

    key_fingerprint = models.CharField(max_length=64, unique=True)
    last_message_id = models.BigIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"index rebuild {self.key_fingerprint[:8]} at message {self.last_message_id}"
