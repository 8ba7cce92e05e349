"""REST: /api/v1/preferences/ — how a person wants to be reached: list, create, change, remove, reorder."""
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brain_connectors.shared.errors import ValidationFailed
from routing import preferences
from routing.api.common import USER_PARAMETER, acting_for, error_responses, request_body
from routing.models import NotificationType
from routing.preference_values import format_time


class PreferenceSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    identity = serializers.IntegerField()
    priority = serializers.IntegerField(required=False, help_text="1 is tried first; default: after the others")
    enabled = serializers.BooleanField(required=False)
    notification_types = serializers.ListField(child=serializers.ChoiceField(NotificationType.values), required=False)
    quiet_start = serializers.CharField(required=False, allow_null=True, help_text="HH:MM in `timezone`, or null")
    quiet_end = serializers.CharField(required=False, allow_null=True, help_text="HH:MM in `timezone`, or null")
    timezone = serializers.CharField(required=False, help_text="IANA name, e.g. Europe/London")


class ReorderSerializer(serializers.Serializer):
    order = serializers.ListField(child=serializers.IntegerField(), help_text="Every preference id, first = priority 1")


def preference_data(preference):
    return {
        "id": preference.pk,
        "identity": preference.identity_id,
        "priority": preference.priority,
        "enabled": preference.enabled,
        "notification_types": list(preference.notification_types),
        "quiet_start": format_time(preference.quiet_start),
        "quiet_end": format_time(preference.quiet_end),
        "timezone": preference.timezone,
    }



@extend_schema_view(
    list=extend_schema(
        summary="Your channel preferences, by priority",
        parameters=[USER_PARAMETER],
        responses={200: PreferenceSerializer(many=True), **error_responses(401, 404)},
    ),
    create=extend_schema(
        summary="Add a preference for one of your identities",
        parameters=[USER_PARAMETER],
        request=PreferenceSerializer,
        responses={201: PreferenceSerializer, **error_responses(400, 401, 404, 409)},
    ),
    partial_update=extend_schema(
        summary="Change a preference",
        parameters=[USER_PARAMETER],
        request=PreferenceSerializer,
        responses={200: PreferenceSerializer, **error_responses(400, 401, 404, 409)},
    ),
    destroy=extend_schema(
        summary="Remove a preference", parameters=[USER_PARAMETER], responses={204: None, **error_responses(401, 404)}
    ),
)
class PreferenceViewSet(viewsets.ViewSet):
    lookup_value_regex = r"[0-9]+"

    def list(self, request):
        principal, user = acting_for(request, "view_connectorpreference")
        return Response([preference_data(p) for p in preferences.list_preferences(principal, user)])

    def create(self, request):
        principal, user = acting_for(request, "add_connectorpreference")
        preference = preferences.create_preference(principal, user, request_body(request))
        return Response(preference_data(preference), status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        principal, user = acting_for(request, "change_connectorpreference")
        preference = preferences.update_preference(principal, user, pk, request_body(request))
        return Response(preference_data(preference))

    def destroy(self, request, pk=None):
        principal, user = acting_for(request, "delete_connectorpreference")
        preferences.delete_preference(principal, user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Renumber all your preferences at once (first = priority 1)",
        parameters=[USER_PARAMETER],
        request=ReorderSerializer,
        responses={200: PreferenceSerializer(many=True), **error_responses(400, 401, 404)},
    )
    @action(detail=False, methods=["post"])
    def reorder(self, request):
        principal, user = acting_for(request, "change_connectorpreference")
        body = request_body(request)
        if set(body) != {"order"}:
            raise ValidationFailed("Give {\"order\": [preference ids]}.", details={"order": "required"})
        reordered = preferences.reorder_preferences(principal, user, body["order"])
        return Response([preference_data(p) for p in reordered])

