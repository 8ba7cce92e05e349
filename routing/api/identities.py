"""REST: /api/v1/identities/ — a person's verified channel identities: list, label, remove."""
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from brain_connectors.shared.errors import ValidationFailed
from routing import identities
from routing.api.common import USER_PARAMETER, acting_for, error_responses, request_body


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



@extend_schema_view(
    list=extend_schema(
        summary="Your verified channel identities",
        parameters=[USER_PARAMETER],
        responses={200: IdentitySerializer(many=True), **error_responses(401, 404)},
    ),
    partial_update=extend_schema(
        summary="Label an identity",
        parameters=[USER_PARAMETER],
        request=IdentityUpdateSerializer,
        responses={200: IdentitySerializer, **error_responses(400, 401, 404)},
    ),
    destroy=extend_schema(
        summary="Remove an identity (and its preferences)",
        parameters=[USER_PARAMETER],
        responses={204: None, **error_responses(401, 404)},
    ),
)
class IdentityViewSet(viewsets.ViewSet):
    lookup_value_regex = r"[0-9]+"

    def list(self, request):
        principal, user = acting_for(request, "view_channelidentity")
        return Response([identity_data(i) for i in identities.list_identities(principal, user)])

    def partial_update(self, request, pk=None):
        principal, user = acting_for(request, "change_channelidentity")
        body = request_body(request)
        unknown = set(body) - {"label"}
        if unknown or "label" not in body:
            raise ValidationFailed(
                "Only the label of an identity can be changed.",
                details={**{k: "unknown field" for k in sorted(unknown)}, **({} if "label" in body else {"label": "required"})},
            )
        identity = identities.update_identity(principal, user, pk, label=body["label"])
        return Response(identity_data(identity))

    def destroy(self, request, pk=None):
        principal, user = acting_for(request, "delete_channelidentity")
        identities.delete_identity(principal, user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
