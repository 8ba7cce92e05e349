"""The persistent registry and what flows through it.

Only `connectors.services` (and `connectors.tokens`) write these rows: they check object
permissions and write the audit row in the same transaction.
"""
import json
import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from connectors.fields import EncryptedTextField

CONNECTOR_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,62}[a-z0-9]$"
connector_id_validator = RegexValidator(
    CONNECTOR_ID_PATTERN,
    "Use 3-64 lowercase letters, digits, '_' or '-', starting and ending with a letter or digit (e.g. telegram_prod).",
)


class ConnectorStatus(models.TextChoices):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    CONNECTED = "CONNECTED"
    ERROR = "ERROR"
    DISABLED = "DISABLED"


# The only status changes services make; anything else is refused with a clear error.
ALLOWED_TRANSITIONS = {
    ConnectorStatus.STOPPED: {ConnectorStatus.STARTING, ConnectorStatus.DISABLED},
    ConnectorStatus.STARTING: {ConnectorStatus.CONNECTED, ConnectorStatus.ERROR, ConnectorStatus.STOPPED},
    ConnectorStatus.CONNECTED: {ConnectorStatus.STOPPED, ConnectorStatus.ERROR, ConnectorStatus.DISABLED},
    ConnectorStatus.ERROR: {ConnectorStatus.STARTING, ConnectorStatus.STOPPED, ConnectorStatus.DISABLED},
    ConnectorStatus.DISABLED: {ConnectorStatus.STOPPED},
}

# Object permissions (django-guardian). Higher levels imply lower ones: see permissions.py.
PERM_VIEW = "view_connector"
PERM_SEND = "send_via_connector"
PERM_MANAGE = "manage_connector"
PERM_ADMIN = "admin_connector"
# Reading other people's conversations on the connector (search, context, export, admin). Not
# implied by view, send or manage: operating a channel is not reading what people say on it.
PERM_READ_CONVERSATIONS = "read_conversations"


class Connector(models.Model):
    id = models.CharField(primary_key=True, max_length=64, validators=[connector_id_validator])
    kind = models.CharField(max_length=32, db_index=True)
    display_name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=ConnectorStatus.choices, default=ConnectorStatus.STOPPED, db_index=True
    )
    config = models.JSONField(default=dict, blank=True)
    # JSON text, encrypted at rest. Write-only: no API, admin page, log or event ever shows it.
    credentials = EncryptedTextField(blank=True, default="")

    # Quotas: sends per minute for the whole connector and for one recipient on it. Null: no
    # limit of ours (the platform's own limits still apply). Over quota means delayed, not dropped.
    quota_per_minute = models.PositiveIntegerField(null=True, blank=True)
    recipient_quota_per_minute = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Periodic health checks: failures in a row, and when the current downtime incident began
    # (null while healthy), so that staff are alerted once per incident and told of recovery.
    health_failures = models.PositiveIntegerField(default=0)
    incident_started_at = models.DateTimeField(null=True, blank=True)

    # Lease: in a multi-instance deployment exactly one process owns a long-running connector
    # (polling, heartbeats). The owner renews before `lease_expires_at`; others take over after.
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    # What the platform module keeps between runs (e.g. Telegram's getUpdates offset), and a
    # secret it generated itself (e.g. the webhook secret_token); neither is user configuration.
    platform_state = models.JSONField(default=dict, blank=True)
    platform_secret = EncryptedTextField(blank=True, default="")

    class Meta:
        ordering = ["id"]
        permissions = [
            (PERM_SEND, "Can send messages via this connector"),
            (PERM_MANAGE, "Can start, stop, test and configure this connector"),
            (PERM_ADMIN, "Can delete this connector, change its credentials and grant access to it"),
            (PERM_READ_CONVERSATIONS, "Can read other people's conversations on this connector"),
        ]

    def __str__(self):
        return f"{self.display_name} ({self.id})"

    def get_credentials(self) -> dict:
        return json.loads(self.credentials) if self.credentials else {}

    def set_credentials(self, credentials: dict):
        self.credentials = json.dumps(credentials, sort_keys=True) if credentials else ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials)


class InboundMessage(models.Model):
    """A message a person sent, stored exactly once per (connector, platform message id)."""

    class BrainStatus(models.TextChoices):
        PENDING = "pending"
        THINKING = "thinking"  # claimed by one task: BRAIN is asked once per message
        REPLIED = "replied"
        NO_REPLY = "no_reply"
        FAILED = "failed"

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="inbound_messages")
    platform_message_id = models.CharField(max_length=255)
    sender = models.CharField(max_length=255)
    sender_name = models.CharField(max_length=200, blank=True, default="")
    content = EncryptedTextField()
    metadata = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(db_index=True)
    brain_status = models.CharField(max_length=16, choices=BrainStatus.choices, default=BrainStatus.PENDING)
    brain_error = models.TextField(blank=True, default="")
    # When a task claimed it (THINKING): the sweeper re-drives claims whose worker died.
    brain_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["received_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "platform_message_id"], name="inbound_dedupe"),
        ]
        indexes = [models.Index(fields=["connector", "sender", "received_at"])]

    def __str__(self):
        return f"inbound {self.platform_message_id} on {self.connector_id}"


class Attachment(models.Model):
    """A file, place or contact that came with an inbound message (`inbound`), a file sent with an outbound one
    (`delivery`), or a file uploaded for a later send (neither; `uploaded_by` owns it until it expires). The bytes
    live encrypted in the "attachments" storage (connectors/delivery/attachment_store.py) under `storage_name`,
    which holds no user content."""

    class Status(models.TextChoices):
        PENDING = "pending"  # stored with the message; the bytes are not fetched yet
        STORED = "stored"  # the bytes are in storage (or there are none to fetch: a location, a contact)
        UNAVAILABLE = "unavailable"  # could not be fetched or was refused: `error` says why

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    inbound = models.ForeignKey(InboundMessage, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="attachments")
    delivery = models.ForeignKey("Delivery", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="attachments")
    uploaded_by = models.CharField(max_length=200, blank=True, default="")  # the principal key of an upload
    position = models.PositiveSmallIntegerField(default=0)  # order within the message
    kind = models.CharField(max_length=16)
    mime_type = models.CharField(max_length=255, blank=True, default="")
    size = models.PositiveBigIntegerField(null=True, blank=True)
    # User content, encrypted like the message it came with.
    file_name = EncryptedTextField(blank=True, default="")
    caption = EncryptedTextField(blank=True, default="")
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    # Telegram's file_id, a contact card: how to fetch it, or what it is. Never a URL holding a credential.
    platform_ref = EncryptedTextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)  # failed fetches so far
    storage_name = models.CharField(max_length=255, blank=True, default="")
    # What a voice note or audio file says (connectors/delivery/transcription.py): what the person said, encrypted.
    transcript = EncryptedTextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "created_at"]

    def __str__(self):
        return f"{self.kind} attachment {self.id}"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"


class Delivery(models.Model):
    """One outbound message and everything that happened to it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="deliveries")
    recipient = models.CharField(max_length=255)
    content = EncryptedTextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    platform_message_id = models.CharField(max_length=255, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    # [{"id", "label"}]: the buttons sent with it (connectors/platforms/buttons.py); a press names this delivery.
    buttons = models.JSONField(default=list, blank=True)
    # How many files go with it (Attachment.delivery): senders load them only for the deliveries that have some.
    attachment_count = models.PositiveSmallIntegerField(default=0)

    # Who asked for it: "user:<pk>" or "system:<name>". Idempotency keys are scoped to it.
    principal = models.CharField(max_length=200)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    in_reply_to = models.ForeignKey(
        InboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["principal", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="delivery_idempotency_per_principal",
            ),
        ]
        indexes = [
            models.Index(fields=["connector", "recipient", "status"]),
            models.Index(fields=["status", "next_attempt_at"]),
        ]

    def __str__(self):
        return f"delivery {self.id} ({self.status})"


class ApiToken(models.Model):
    """A bearer token for REST (and MCP). Only its SHA-256 digest is stored; the token itself is
    shown once, when it is created."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the token, for identification.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"bct_{self.prefix}… ({self.user})"


class QuotaBucket(models.Model):
    """A token bucket kept in the database when there is no Redis (see connectors.quotas)."""

    key = models.CharField(max_length=300, primary_key=True)
    tokens = models.FloatField()
    stamp = models.FloatField(help_text="Unix time of the last refill.")

    def __str__(self):
        return f"{self.key}: {self.tokens:.2f}"


class Event(models.Model):
    """One entry of the durable event log: a CloudEvents 1.0 envelope plus `seq`.

    `id` is the row's identity from its insert; `seq` is the reader's order. On PostgreSQL the
    row is appended without a seq and the sequencer (connectors.events.sequencer) gives it one
    shortly after commit, so rows become visible to readers (`seq IS NOT NULL`) in `seq` order
    and a reader resuming after seq N can never skip one. On SQLite publish() sets it inline.
    Events outlive their connector (no foreign key) and never hold message content.
    """

    id = models.BigAutoField(primary_key=True)
    seq = models.BigIntegerField(null=True, blank=True, unique=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    # Indexed through (type, seq) and (connector_id, seq) below: every index costs each insert.
    type = models.CharField(max_length=100)
    source = models.CharField(max_length=200)
    subject = models.CharField(max_length=200, blank=True, default="")
    connector_id = models.CharField(max_length=64, blank=True, default="")
    time = models.DateTimeField(db_index=True)
    data = models.JSONField(default=dict, blank=True)
    # Set once the event reached the channel layer; the relay re-pushes rows left unset.
    pushed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["connector_id", "seq"]),
            models.Index(fields=["type", "seq"]),
            models.Index(fields=["seq"], condition=models.Q(pushed_at__isnull=True), name="event_unpushed"),
            # What the sequencer looks for: tiny, since rows leave it within milliseconds of commit.
            models.Index(fields=["id"], condition=models.Q(seq__isnull=True), name="event_unsequenced"),
        ]

    def __str__(self):
        return f"#{self.seq if self.seq is not None else f'id{self.pk}'} {self.type} {self.connector_id}"

    def envelope(self) -> dict:
        """The wire form (websocket, REST, subscriptions)."""
        return {
            "specversion": "1.0",
            "id": str(self.event_id),
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.data,
            "seq": self.seq,
            "connector": self.connector_id,
        }


class EventSubscription(models.Model):
    """Another system's standing request: POST these event types to this URL, signed with this secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="event_subscriptions")
    description = models.CharField(max_length=200, blank=True, default="")
    url = models.CharField(max_length=2000)
    # Exact types ("connector.message.sent") or prefixes ending in ".*" ("connector.message.*").
    event_types = models.JSONField(default=list)
    # whsec_… (Standard Webhooks), encrypted at rest, shown once when created or rotated.
    secret = EncryptedTextField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.description or self.url} ({self.id})"


class EventDelivery(models.Model):
    """One event POSTed to one subscription, with the delivery pipeline's statuses and retries."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(EventSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="subscription_deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "event deliveries"
        constraints = [models.UniqueConstraint(fields=["subscription", "event"], name="event_delivery_once")]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self):
        return f"event {self.event_id} → {self.subscription_id} ({self.status})"


class AlertRecipient(models.Model):
    """A staff member told when a connector goes down (and when it recovers), through `connector`."""

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="alert_recipients")
    recipient = models.CharField(max_length=255)
    description = models.CharField(max_length=200, blank=True, default="")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connector_id", "recipient"]
        constraints = [models.UniqueConstraint(fields=["connector", "recipient"], name="alert_recipient_once")]

    def __str__(self):
        return f"{self.recipient} via {self.connector_id}"


# Its own module (models.py stays under 400 lines); imported here so Django registers it with the app.
from connectors.bus_models import BusCursor  # noqa: E402,F401
from connectors.question_models import Question  # noqa: E402,F401
