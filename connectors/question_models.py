"""The Question model: a person asked to pick one of a message's buttons (ask_user), and their answer."""
import uuid

from django.db import models

from connectors.fields import EncryptedTextField


class Question(models.Model):
    """One question sent with buttons (connectors/delivery/questions.py). Only its recipient can answer it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ANSWERED = "answered"
        TIMED_OUT = "timed_out"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    asker = models.CharField(max_length=200)  # the asking principal's key: "user:<pk>" or "system:<name>"
    connector = models.ForeignKey("connectors.Connector", on_delete=models.CASCADE, related_name="questions")
    recipient = models.CharField(max_length=255)
    text = EncryptedTextField()
    options = models.JSONField(default=list)  # [{"id", "label"}], as sent
    delivery = models.OneToOneField(
        "connectors.Delivery", null=True, on_delete=models.SET_NULL, related_name="question"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    answer = models.CharField(max_length=64, blank=True, default="")  # the chosen option's id
    answered_by = models.CharField(max_length=255, blank=True, default="")  # the sender's address
    answer_inbound = models.ForeignKey(
        "connectors.InboundMessage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "connectors"
        indexes = [models.Index(fields=["connector", "recipient", "status"])]

    def __str__(self):
        return f"question {self.id} ({self.status})"
