"""Who a person is on each channel, how they want to be reached, and what was sent to them.

Only routing's services (`routing.identities`, `routing.preferences`, `routing.pairing`, `routing.notify`) write these rows,
checking permissions and writing the audit row in the same transaction.
"""
import uuid

from django.conf import settings
from django.db import models

from connectors.fields import EncryptedTextField


class NotificationType(models.TextChoices):
    STANDARD = "standard"
    URGENT = "urgent"
    DIGEST = "digest"


class ChannelIdentity(models.Model):
    """A person's verified address on one connector: a Telegram chat id, an E.164 number for
    SMS, voice or WhatsApp, an email address, a webhook URL or a CLI user name."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channel_identities")
    connector = models.ForeignKey("connectors.Connector", on_delete=models.CASCADE, related_name="identities")
    address = models.CharField(max_length=255)
    label = models.CharField(max_length=100, blank=True, default="")
    verified_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "id"]
        verbose_name_plural = "channel identities"
        constraints = [
            # One person per address on a connector: a chat id cannot be paired to two accounts.
            models.UniqueConstraint(fields=["connector", "address"], name="identity_address_once"),
        ]

    def __str__(self):
        return f"{self.address} on {self.connector_id} ({self.user})"


class PairingCode(models.Model):
    """A one-time code that proves a person controls an address (sent to the bot, by SMS or
    WhatsApp, or as an emailed link). Only the code's SHA-256 digest is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pairing_codes")
    # The connector the code is for, when the user chose one (an emailed link names its address).
    connector = models.ForeignKey("connectors.Connector", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    address = models.CharField(max_length=255, blank=True, default="")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    identity = models.ForeignKey(ChannelIdentity, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "used_at", "expires_at"])]

    def __str__(self):
        return f"pairing code for {self.user} ({'used' if self.used_at else 'pending'})"


class PairingAttempt(models.Model):
    """A code that did not match, kept to rate-limit guessing per sender and per connector."""

    connector = models.ForeignKey("connectors.Connector", on_delete=models.CASCADE, related_name="+")
    sender = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["connector", "sender", "created_at"])]


class ConnectorPreference(models.Model):
    """One way to reach a person: an identity, its rank, the notification types it serves and
    the quiet hours (in the person's time zone) during which only urgent ones go through."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channel_preferences")
    identity = models.ForeignKey(ChannelIdentity, on_delete=models.CASCADE, related_name="preferences")
    priority = models.PositiveSmallIntegerField(help_text="1 is tried first.")
    enabled = models.BooleanField(default=True)
    notification_types = models.JSONField(default=list)
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user_id", "priority"]
        constraints = [
            models.UniqueConstraint(fields=["user", "priority"], name="preference_priority_once"),
            models.UniqueConstraint(fields=["user", "identity"], name="preference_identity_once"),
        ]

    def __str__(self):
        return f"{self.user} #{self.priority}: {self.identity_id}"


class NotificationStatus(models.TextChoices):
    SENDING = "sending"  # a delivery on the current channel is under way
    DELIVERED = "delivered"  # sent (and, where the channel tells, received or acknowledged)
    EXHAUSTED = "exhausted"  # every channel in the chain failed
    UNROUTABLE = "unroutable"  # the router found no channel at all


class Notification(models.Model):
    """One `notify_user` call: the decision (with its trace), the chain and every attempt."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    notification_type = models.CharField(max_length=16, choices=NotificationType.choices)
    content = EncryptedTextField()
    status = models.CharField(max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.SENDING)
    # The router's decision: {"chain": [...], "candidates": [{..., "included", "reason"}], ...}.
    trace = models.JSONField(default=dict)
    # What happened on each channel of the chain, in order: identity, delivery id, outcome, reason.
    attempts = models.JSONField(default=list)
    step = models.PositiveSmallIntegerField(default=0, help_text="Index in the chain of the channel in use.")
    current_delivery = models.ForeignKey(
        "connectors.Delivery", null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    # Urgent notifications move on when no acknowledgement arrives by then.
    ack_deadline = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.CharField(max_length=200)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="notification_idempotency_per_principal",
            ),
        ]
        indexes = [models.Index(fields=["status", "ack_deadline"])]

    def __str__(self):
        return f"{self.notification_type} notification {self.id} to {self.user} ({self.status})"
