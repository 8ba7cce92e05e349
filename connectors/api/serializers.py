"""Request and response shapes of the REST API. Shape checks only: rules live in services."""
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from connectors.models import Connector, Delivery
from connectors.permissions import LEVELS
from connectors.platforms.base import MAX_ADDRESS_LENGTH, MAX_CONTENT_LENGTH
from connectors.registry.kinds import inbound_url_of

# Fields only the server writes (timestamps, health, the worker lease): shown, never taken from a request.
_SERVER_KEPT_FIELDS = [
    "created_at",
    "updated_at",
    "last_heartbeat",
    "last_error",
    "lease_owner",
    "lease_expires_at",
]


class ConnectorSerializer(serializers.ModelSerializer):
    """Credentials are write-only: `has_credentials` says whether any are set, never what they are."""

    credentials = serializers.DictField(write_only=True, required=False)
    has_credentials = serializers.BooleanField(read_only=True)
    inbound_url = serializers.SerializerMethodField(
        help_text="The URL to paste into the platform's settings (Slack's Request URL), or null.")

    class Meta:
        model = Connector
        fields = [
            "id",
            "kind",
            "display_name",
            "status",
            "config",
            "credentials",
            "has_credentials",
            "inbound_url",
            "quota_per_minute",
            "recipient_quota_per_minute",
            *_SERVER_KEPT_FIELDS,
        ]
        read_only_fields = ["status", *_SERVER_KEPT_FIELDS]
        extra_kwargs = {
            # Uniqueness is decided by the service (one winner, 409 for the rest), not here.
            "id": {"validators": []},
            "config": {"required": False},
        }

    def get_inbound_url(self, obj) -> str | None:
        return inbound_url_of(obj)


class ConnectorUpdateSerializer(serializers.Serializer):
    display_name = serializers.CharField(max_length=200, required=False)
    config = serializers.DictField(required=False)
    credentials = serializers.DictField(required=False, write_only=True)
    quota_per_minute = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    recipient_quota_per_minute = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, allow_null=True
    )


class SendSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=MAX_ADDRESS_LENGTH, trim_whitespace=False)
    # Emptiness and length are checked by OutgoingMessage so every edge reports them alike.
    content = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=MAX_CONTENT_LENGTH)
    # [{"id", "label"}]: checked by send_message (connectors/platforms/buttons.py), as for every edge.
    buttons = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True)
    # [{"id"|"url"|"data", "kind"?, "mime_type"?, "file_name"?, "caption"?}]: checked by send_message
    # (connectors/delivery/outbound_attachments.py).
    attachments = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True)


class SendFormSerializer(serializers.Serializer):
    """send/ as a multipart form: files as `file` parts, buttons and attachments as JSON strings (schema only)."""

    recipient = serializers.CharField()
    content = serializers.CharField(required=False, allow_blank=True)
    buttons = serializers.CharField(required=False, help_text="JSON list of {id, label}")
    attachments = serializers.CharField(required=False, help_text="JSON list of {id|url|data, ...}")
    file = serializers.ListField(child=serializers.FileField(), required=False)


class DeliverySerializer(serializers.ModelSerializer):
    delivery_id = serializers.UUIDField(source="id", read_only=True)
    connector_id = serializers.CharField(read_only=True)
    attachments = serializers.SerializerMethodField()

    @extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"type": "string"}, "mime_type": {"type": "string"},
        "size": {"type": "integer"}}}})
    def get_attachments(self, delivery):
        """The files it carries: ids, kinds, types and sizes only (names and captions are what people wrote)."""
        if not delivery.attachment_count:
            return []
        return [{"id": str(row.id), "kind": row.kind, "mime_type": row.mime_type, "size": row.size}
                for row in delivery.attachments.all()]

    class Meta:
        model = Delivery
        fields = [
            "delivery_id",
            "connector_id",
            "recipient",
            "status",
            "attempts",
            "next_attempt_at",
            "platform_message_id",
            "last_error",
            "buttons",
            "attachments",
            "created_at",
            "updated_at",
            "sent_at",
            "delivered_at",
        ]
        read_only_fields = fields


class PermissionGrantSerializer(serializers.Serializer):
    username = serializers.CharField(required=False)
    group = serializers.CharField(required=False)
    permission = serializers.ChoiceField(choices=list(LEVELS))

    def validate(self, attrs):
        if bool(attrs.get("username")) == bool(attrs.get("group")):
            raise serializers.ValidationError("Give exactly one of username or group.")
        return attrs


class ErrorSerializer(serializers.Serializer):
    """The error envelope, for the OpenAPI schema."""

    class _Inner(serializers.Serializer):
        code = serializers.CharField()
        message = serializers.CharField()
        details = serializers.DictField()

    error = _Inner()


class HealthResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()

