"""REST for event subscriptions, /api/v1/subscriptions/. Views parse, call one service and render.

The secret appears in exactly two responses: the one that creates the subscription and the one
that rotates its secret. Nothing else (listing, reading, updating) ever shows it.
"""
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brain_connectors.shared.pagination import PaginatedListMixin
from connectors.api.serializers import ErrorSerializer
from connectors.api.views import principal_of
from connectors.events import subscriptions
from connectors.models import DeliveryStatus, EventDelivery, EventSubscription

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Invalid request (unknown event type, unsafe URL, …)"),
    401: OpenApiResponse(ErrorSerializer, "Missing, malformed, expired or revoked token"),
    403: OpenApiResponse(ErrorSerializer, "Not allowed"),
    404: OpenApiResponse(ErrorSerializer, "Not found, or not yours"),
}


def _errors(*codes):
    return {code: ERRORS[code] for code in codes}


class SubscriptionSerializer(serializers.ModelSerializer):
    """The subscription as everybody sees it: never the secret."""

    owner = serializers.CharField(source="owner.get_username", read_only=True)

    class Meta:
        model = EventSubscription
        fields = ["id", "owner", "description", "url", "event_types", "active", "created_at", "updated_at"]
        read_only_fields = fields


class SubscriptionWithSecretSerializer(SubscriptionSerializer):
    secret = serializers.SerializerMethodField(help_text="whsec_… signing secret: shown this once, store it now.")

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def get_secret(self, obj) -> str:
        return self.context["secret"]


class SubscriptionCreateSerializer(serializers.Serializer):
    # Shape only: the URL's safety and the event types are judged by the service (and audited).
    url = serializers.CharField(max_length=2000, trim_whitespace=False)
    event_types = serializers.ListField(child=serializers.CharField(max_length=100), max_length=100)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    active = serializers.BooleanField(required=False, default=True)


class SubscriptionUpdateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, trim_whitespace=False, required=False)
    event_types = serializers.ListField(child=serializers.CharField(max_length=100), max_length=100, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)


class EventDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.UUIDField(source="event.event_id", read_only=True)
    event_type = serializers.CharField(source="event.type", read_only=True)
    # null for the few milliseconds between the event's commit and its numbering (PostgreSQL:
    # connectors.events.sequencer); the delivery row exists from the commit on.
    event_seq = serializers.IntegerField(source="event.seq", read_only=True, allow_null=True)

    class Meta:
        model = EventDelivery
        fields = [
            "id", "event_id", "event_type", "event_seq", "status", "attempts", "next_attempt_at",
            "response_status", "last_error", "created_at", "updated_at", "sent_at",
        ]
        read_only_fields = fields


def _validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema_view(
    list=extend_schema(summary="Your event subscriptions (all, for superusers)",
                       responses={200: SubscriptionSerializer(many=True), **_errors(400, 401)}),
    create=extend_schema(
        summary="Subscribe a URL to event types; the answer holds the signing secret, shown once",
        request=SubscriptionCreateSerializer,
        responses={201: SubscriptionWithSecretSerializer, **_errors(400, 401, 403)},
    ),
    retrieve=extend_schema(summary="One subscription (never its secret)",
                           responses={200: SubscriptionSerializer, **_errors(401, 404)}),
    partial_update=extend_schema(
        summary="Change url, event_types, description or active",
        request=SubscriptionUpdateSerializer,
        responses={200: SubscriptionSerializer, **_errors(400, 401, 404)},
    ),
    destroy=extend_schema(summary="Delete a subscription and its delivery history",
                          responses={204: None, **_errors(401, 404)}),
)
class SubscriptionViewSet(PaginatedListMixin, viewsets.ViewSet):
    lookup_field = "id"
    lookup_value_regex = r"[^/]+"
    serializer_class = SubscriptionSerializer

    def list(self, request):
        return self.paginated_read(request, lambda: subscriptions.list_subscriptions(principal_of(request)),
                                   SubscriptionSerializer)

    def create(self, request):
        data = _validated(SubscriptionCreateSerializer, request.data)
        subscription, secret = subscriptions.create_subscription(principal_of(request), **data)
        body = SubscriptionWithSecretSerializer(subscription, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    def retrieve(self, request, id=None):
        return Response(SubscriptionSerializer(subscriptions.get_subscription(principal_of(request), id)).data)

    def partial_update(self, request, id=None):
        changes = _validated(SubscriptionUpdateSerializer, request.data)
        subscription = subscriptions.update_subscription(principal_of(request), id, **changes)
        return Response(SubscriptionSerializer(subscription).data)

    def destroy(self, request, id=None):
        subscriptions.delete_subscription(principal_of(request), id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Replace the signing secret; the answer holds the new one, shown once",
        request=None,
        responses={200: SubscriptionWithSecretSerializer, **_errors(401, 404)},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, id=None):
        subscription, secret = subscriptions.rotate_secret(principal_of(request), id)
        body = SubscriptionWithSecretSerializer(subscription, context={"secret": secret}).data
        return Response(body, headers={"Cache-Control": "no-store"})

    @extend_schema(
        summary="Recent deliveries of this subscription, newest first",
        parameters=[OpenApiParameter("status", str, enum=DeliveryStatus.values, description="Only this status")],
        responses={200: EventDeliverySerializer(many=True), **_errors(400, 401, 404)},
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, id=None):
        qs = subscriptions.list_deliveries(principal_of(request), id, status=request.query_params.get("status"))
        return self.paginated_response(request, qs, EventDeliverySerializer)
