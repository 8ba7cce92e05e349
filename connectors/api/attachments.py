"""REST for outbound files: `POST /api/v1/attachments/` (upload for later sends) and send/'s multipart form."""
import json
from datetime import timedelta

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from brain_connectors.shared.errors import ValidationFailed
from connectors.api.serializers import ErrorSerializer
from connectors.delivery.outbound_attachments import upload
from connectors.permissions import Principal
from connectors.platforms.attachments import MAX_OUTGOING_ATTACHMENTS, OUTGOING_KINDS

FILE_FIELD = "file"


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    kind = serializers.ChoiceField(choices=OUTGOING_KINDS, required=False)
    caption = serializers.CharField(required=False, allow_blank=True, max_length=10_000)


class UploadedSerializer(serializers.Serializer):
    """What an upload answers: no file name nor caption (what people wrote stays out of API responses)."""

    id = serializers.UUIDField()
    kind = serializers.CharField()
    mime_type = serializers.CharField()
    size = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


def file_items(files) -> list[dict]:
    """send/'s multipart `file` parts as attachment items; each is refused over the largest cap before it is read."""
    items = []
    if len(files) > MAX_OUTGOING_ATTACHMENTS:
        raise ValidationFailed(f"Invalid attachments: at most {MAX_OUTGOING_ATTACHMENTS} files.",
                               code="invalid_attachments", details={FILE_FIELD: "too many files"})
    for uploaded in files:
        if uploaded.size > settings.ATTACHMENT_MAX_BYTES:
            raise ValidationFailed(f"The file is {uploaded.size} bytes, over the {settings.ATTACHMENT_MAX_BYTES}-byte "
                                   "limit.", code="attachment_too_large", details={FILE_FIELD: "too large"})
        items.append({"content": uploaded.read(), "file_name": uploaded.name or "",
                      # A browser's guess from the extension: checked against the bytes like any declared type.
                      **({"mime_type": uploaded.content_type} if uploaded.content_type else {})})
    return items


def json_field(data, name):
    """A list sent as a JSON string in a multipart form (buttons, attachments), or the JSON body's list."""
    value = data.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValidationFailed(f"{name} must be JSON.", details={name: "must be a JSON list"})
    return value


def send_fields(request) -> dict:
    """recipient, content, buttons and attachments of a send, from a JSON body or a multipart form with files."""
    data = request.data
    attachments = json_field(data, "attachments")
    files = request.FILES.getlist(FILE_FIELD) if hasattr(request, "FILES") else []
    if files:
        attachments = list(attachments or []) + file_items(files)
    return {"recipient": data.get("recipient"), "content": data.get("content", ""),
            "buttons": json_field(data, "buttons"), "attachments": attachments}


class AttachmentUploadView(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Upload a file to send later by its id (send)",
        request={"multipart/form-data": UploadSerializer},
        responses={201: UploadedSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer},
        description="The file is checked (type from its bytes, size caps) and stored encrypted. Send it with "
                    "send/'s attachments: [{\"id\": ...}] until it expires (ATTACHMENT_UPLOAD_TTL). Needs the send "
                    "permission on at least one connector. Only the uploader may send it.",
    )
    def post(self, request):
        serializer = UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        [item] = file_items([data["file"]])
        row = upload(Principal.for_user(request.user, via="api"), item["content"], file_name=item["file_name"],
                     mime_type=item.get("mime_type", ""), kind=data.get("kind", ""), caption=data.get("caption", ""))
        expires = row.created_at + timedelta(seconds=settings.ATTACHMENT_UPLOAD_TTL)
        return Response(UploadedSerializer({"id": row.id, "kind": row.kind, "mime_type": row.mime_type,
                                            "size": row.size, "expires_at": expires}).data,
                        status=status.HTTP_201_CREATED)

