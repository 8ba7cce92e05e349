"""REST API for a person's channel identities, pairing codes and preferences (/api/v1/…).

Views parse, call one service of routing.services and render. Everyone acts for themselves; staff
with the routing model permissions (or superusers) may act for someone else with `?user=<username>`.
"""
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brain_connectors.shared.errors import ValidationFailed
from connectors.api.serializers import ErrorSerializer
from connectors.api.views import principal_of
from routing import services
from routing.models import NotificationType

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Invalid request"),
    401: OpenApiResponse(ErrorSerializer, "Not signed in, or a bad token"),
    404: OpenApiResponse(ErrorSerializer, "Not found, or not yours (nor someone's you may act for)"),
    409: OpenApiResponse(ErrorSerializer, "Conflict: priority taken, identity already used, too many pending codes"),
    429: OpenApiResponse(ErrorSerializer, "Too many pairing links sent for this account or to this address (Retry-After)"),
}


def _errors(*codes):
    return {code: ERRORS[code] for code in codes}


USER_PARAMETER = OpenApiParameter(
    "user", str, description="Act for this user (staff with the routing model permissions, or superusers)"
)


# --- shapes (for the schema; the services validate) ------------------------------------------------


class IdentitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    connector = serializers.CharField()
    connector_kind = serializers.CharField()
    connector_name = serializers.CharField()
    address = serializers.CharField()
    label = serializers.CharField()
    verified_at = serializers.DateTimeField()


class IdentityUpdateSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=100, allow_blank=True)


class ChannelSerializer(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.CharField()
    display_name = serializers.CharField()
    how = serializers.CharField()
    needs_address = serializers.BooleanField(help_text="BRAIN sends a link to an address you give (email)")


class PairingRequestSerializer(serializers.Serializer):
    connector = serializers.CharField()
    address = serializers.CharField(
        required=False, help_text="Only where the channel needs an address (email): the address to send the link to"
    )


class IssuedCodeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField(
        required=False,
        help_text="Shown once; only its digest is stored. Absent where BRAIN sent the link to the address (email): "
                  "only that address's owner sees it",
    )
    delivered_to = serializers.CharField(required=False, help_text="Where the link went, masked (email)")
    expires_at = serializers.DateTimeField()
    instructions = serializers.CharField()


class PendingCodeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    connector = serializers.CharField()
    address = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


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


# --- rendering --------------------------------------------------------------------------------------


def identity_data(identity):
    return {
        "id": identity.pk,
        "connector": identity.connector_id,
        "connector_kind": identity.connector.kind,
        "connector_name": identity.connector.display_name,
        "address": identity.address,
        "label": identity.label,
        "verified_at": identity.verified_at,
    }


def preference_data(preference):
    return {
        "id": preference.pk,
        "identity": preference.identity_id,
        "priority": preference.priority,
        "enabled": preference.enabled,
        "notification_types": list(preference.notification_types),
        "quiet_start": services.format_time(preference.quiet_start),
        "quiet_end": services.format_time(preference.quiet_end),
        "timezone": preference.timezone,
    }


def _body(request):
    if not isinstance(request.data, dict):
        raise ValidationFailed("The body must be a JSON object.", details={"body": "must be an object"})
    return dict(request.data)


def _target(request, perm):
    """(principal, user acted for)."""
    principal = principal_of(request)
    return principal, services.resolve_user(principal, request.query_params.get("user"), perm)


# --- views ------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="Your verified channel identities",
        parameters=[USER_PARAMETER],
        responses={200: IdentitySerializer(many=True), **_errors(401, 404)},
    ),
    partial_update=extend_schema(
        summary="Label an identity",
        parameters=[USER_PARAMETER],
        request=IdentityUpdateSerializer,
        responses={200: IdentitySerializer, **_errors(400, 401, 404)},
    ),
    destroy=extend_schema(
        summary="Remove an identity (and its preferences)",
        parameters=[USER_PARAMETER],
        responses={204: None, **_errors(401, 404)},
    ),
)
class IdentityViewSet(viewsets.ViewSet):
    lookup_value_regex = r"[0-9]+"

    def list(self, request):
        principal, user = _target(request, "view_channelidentity")
        return Response([identity_data(i) for i in services.list_identities(principal, user)])

    def partial_update(self, request, pk=None):
        principal, user = _target(request, "change_channelidentity")
        body = _body(request)
        unknown = set(body) - {"label"}
        if unknown or "label" not in body:
            raise ValidationFailed(
                "Only the label of an identity can be changed.",
                details={**{k: "unknown field" for k in sorted(unknown)}, **({} if "label" in body else {"label": "required"})},
            )
        identity = services.update_identity(principal, user, pk, label=body["label"])
        return Response(identity_data(identity))

    def destroy(self, request, pk=None):
        principal, user = _target(request, "delete_channelidentity")
        services.delete_identity(principal, user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(
        summary="Your pending pairing codes (never the code itself)",
        parameters=[USER_PARAMETER],
        responses={200: PendingCodeSerializer(many=True), **_errors(401, 404)},
    ),
    create=extend_schema(
        summary="Ask for a pairing code for a connector (email: a link is sent to `address`, never shown here)",
        parameters=[USER_PARAMETER],
        request=PairingRequestSerializer,
        responses={201: IssuedCodeSerializer, **_errors(400, 401, 404, 409, 429)},
    ),
)
class PairingCodeViewSet(viewsets.ViewSet):
    def list(self, request):
        principal, user = _target(request, "view_pairingcode")
        return Response(
            [
                {
                    "id": row.pk,
                    "connector": row.connector_id,
                    "address": row.address,
                    "created_at": row.created_at,
                    "expires_at": row.expires_at,
                }
                for row in services.list_pending_codes(principal, user)
            ]
        )

    def create(self, request):
        principal, user = _target(request, "add_pairingcode")
        body = _body(request)
        unknown = set(body) - {"connector", "address"}
        if unknown or not isinstance(body.get("connector"), str) or not isinstance(body.get("address", ""), str):
            details = {k: "unknown field" for k in sorted(unknown)}
            if not isinstance(body.get("connector"), str):
                details["connector"] = "required: a connector id from /api/v1/pairing-codes/channels/"
            if not isinstance(body.get("address", ""), str):
                details["address"] = "must be text"
            raise ValidationFailed("Invalid pairing request.", details=details)
        base_url = request.build_absolute_uri("/").rstrip("/")
        issued = services.request_pairing_code(
            principal, user, body["connector"], body.get("address") or None, base_url=base_url
        )
        body = {"id": issued.pairing.pk, "expires_at": issued.pairing.expires_at, "instructions": issued.instructions}
        if issued.code is not None:
            body["code"] = issued.code
        else:
            body["delivered_to"] = issued.delivered_to
        return Response(
            body,
            status=status.HTTP_201_CREATED,
            headers={"Cache-Control": "no-store"},
        )

    @extend_schema(
        summary="Connectors you can pair with now, and how",
        responses={200: ChannelSerializer(many=True), **_errors(401)},
    )
    @action(detail=False, methods=["get"])
    def channels(self, request):
        return Response(services.list_pairing_channels(principal_of(request)))


@extend_schema_view(
    list=extend_schema(
        summary="Your channel preferences, by priority",
        parameters=[USER_PARAMETER],
        responses={200: PreferenceSerializer(many=True), **_errors(401, 404)},
    ),
    create=extend_schema(
        summary="Add a preference for one of your identities",
        parameters=[USER_PARAMETER],
        request=PreferenceSerializer,
        responses={201: PreferenceSerializer, **_errors(400, 401, 404, 409)},
    ),
    partial_update=extend_schema(
        summary="Change a preference",
        parameters=[USER_PARAMETER],
        request=PreferenceSerializer,
        responses={200: PreferenceSerializer, **_errors(400, 401, 404, 409)},
    ),
    destroy=extend_schema(
        summary="Remove a preference", parameters=[USER_PARAMETER], responses={204: None, **_errors(401, 404)}
    ),
)
class PreferenceViewSet(viewsets.ViewSet):
    lookup_value_regex = r"[0-9]+"

    def list(self, request):
        principal, user = _target(request, "view_connectorpreference")
        return Response([preference_data(p) for p in services.list_preferences(principal, user)])

    def create(self, request):
        principal, user = _target(request, "add_connectorpreference")
        preference = services.create_preference(principal, user, _body(request))
        return Response(preference_data(preference), status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        principal, user = _target(request, "change_connectorpreference")
        preference = services.update_preference(principal, user, pk, _body(request))
        return Response(preference_data(preference))

    def destroy(self, request, pk=None):
        principal, user = _target(request, "delete_connectorpreference")
        services.delete_preference(principal, user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Renumber all your preferences at once (first = priority 1)",
        parameters=[USER_PARAMETER],
        request=ReorderSerializer,
        responses={200: PreferenceSerializer(many=True), **_errors(400, 401, 404)},
    )
    @action(detail=False, methods=["post"])
    def reorder(self, request):
        principal, user = _target(request, "change_connectorpreference")
        body = _body(request)
        if set(body) != {"order"}:
            raise ValidationFailed("Give {\"order\": [preference ids]}.", details={"order": "required"})
        preferences = services.reorder_preferences(principal, user, body["order"])
        return Response([preference_data(p) for p in preferences])

