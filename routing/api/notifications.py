"""REST: /api/v1/notifications/. Views parse, call routing.notify and render; no rules here.

- POST {"user": username, "notification_type", "content"} (+ optional Idempotency-Key header):
  201 with the notification; a replay of the same key and body answers 200 with the original
  (header Idempotent-Replayed: true); the same key with another body is 409.
- GET list: what you may see (your own, the ones you asked for; everything with
  routing.view_notification or as a superuser), filters ?user=<username>&status=<status>.
- GET {id}: with the router's trace and every attempt. `content` is shown only to the person
  notified and to whoever asked for it; others get null.
- POST {id}/acknowledge/: the person confirms; the chain stops there.
"""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brain_connectors.shared.pagination import PaginatedListMixin
from connectors.api.serializers import ErrorSerializer
from connectors.api.views import principal_of
from connectors.platforms.base import MAX_CONTENT_LENGTH
from routing.models import NotificationStatus, NotificationType
from routing.notify import creation, inbox, permissions


class NotifySerializer(serializers.Serializer):
    user = serializers.CharField(max_length=150, help_text="The username of the person to notify.")
    notification_type = serializers.ChoiceField(choices=NotificationType.values, default=NotificationType.STANDARD)
    content = serializers.CharField(max_length=MAX_CONTENT_LENGTH, trim_whitespace=False)


class NotificationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    user = serializers.CharField(source="user.username")
    notification_type = serializers.CharField()
    status = serializers.ChoiceField(choices=NotificationStatus.values)
    step = serializers.IntegerField(help_text="Index in the chain of the channel in use (or last used).")
    current_delivery = serializers.UUIDField(source="current_delivery_id", allow_null=True)
    ack_deadline = serializers.DateTimeField(allow_null=True)
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    requested_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class NotificationDetailSerializer(NotificationSerializer):
    content = serializers.SerializerMethodField(help_text="Only for the person notified and whoever asked.")
    trace = serializers.JSONField()
    attempts = serializers.JSONField()

    def get_content(self, obj) -> str | None:
        principal = self.context.get("principal")
        return obj.content if principal is not None and permissions.can_see_content(principal, obj) else None


ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409)}


@extend_schema_view(
    list=extend_schema(
        summary="Notifications you may see",
        parameters=[
            OpenApiParameter("user", str, description="Only those sent to this username"),
            OpenApiParameter("status", str, enum=NotificationStatus.values),
        ],
        responses={200: NotificationSerializer(many=True), 400: ERRORS[400], 401: ERRORS[401]},
    ),
    retrieve=extend_schema(
        summary="One notification, with the router's trace and every attempt",
        responses={200: NotificationDetailSerializer, 401: ERRORS[401], 404: ERRORS[404]},
    ),
)
class NotificationViewSet(PaginatedListMixin, viewsets.ViewSet):
    lookup_field = "id"
    lookup_value_regex = r"[^/]+"
    serializer_class = NotificationDetailSerializer

    def _detail(self, request, notification, code=status.HTTP_200_OK, headers=None):
        data = NotificationDetailSerializer(notification, context={"principal": principal_of(request)}).data
        return Response(data, status=code, headers=headers or {})

    @extend_schema(
        summary="Notify a person on their preferred channels, with fallback",
        request=NotifySerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER,
                description="Same key and body return the original notification (200); other body: 409.",
            )
        ],
        responses={201: NotificationDetailSerializer, 200: NotificationDetailSerializer,
                   **{c: ERRORS[c] for c in (400, 401, 403, 409)}},
    )
    def create(self, request):
        serializer = NotifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        notification, replayed = creation.notify_user(
            principal_of(request),
            data["user"],
            data["content"],
            data["notification_type"],
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        if replayed:
            return self._detail(request, notification, headers={"Idempotent-Replayed": "true"})
        return self._detail(request, notification, code=status.HTTP_201_CREATED)

    def list(self, request):
        params = request.query_params
        return self.paginated_read(
            request,
            lambda: inbox.list_notifications(principal_of(request), username=params.get("user"), status=params.get("status")),
            NotificationSerializer,
        )

    def retrieve(self, request, id=None):
        return self._detail(request, inbox.get_notification(principal_of(request), id))

    @extend_schema(
        summary="Acknowledge: the person has it, stop falling back",
        request=None,
        responses={200: NotificationDetailSerializer, **{c: ERRORS[c] for c in (401, 403, 404, 409)}},
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, id=None):
        return self._detail(request, inbox.acknowledge(principal_of(request), id))
