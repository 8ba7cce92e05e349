"""REST: /api/v1/pairing-codes/ — the channels one may pair with, pending codes, and asking for a code."""
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brain_connectors.shared.errors import ValidationFailed
from connectors.api.views import principal_of
from routing.api.common import USER_PARAMETER, acting_for, error_responses, request_body
from routing.pairing import issue


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


@extend_schema_view(
    list=extend_schema(
        summary="Your pending pairing codes (never the code itself)",
        parameters=[USER_PARAMETER],
        responses={200: PendingCodeSerializer(many=True), **error_responses(401, 404)},
    ),
    create=extend_schema(
        summary="Ask for a pairing code for a connector (email: a link is sent to `address`, never shown here)",
        parameters=[USER_PARAMETER],
        request=PairingRequestSerializer,
        responses={201: IssuedCodeSerializer, **error_responses(400, 401, 404, 409, 429)},
    ),
)
class PairingCodeViewSet(viewsets.ViewSet):
    def list(self, request):
        principal, user = acting_for(request, "view_pairingcode")
        return Response(
            [
                {
                    "id": row.pk,
                    "connector": row.connector_id,
                    "address": row.address,
                    "created_at": row.created_at,
                    "expires_at": row.expires_at,
                }
                for row in issue.list_pending_codes(principal, user)
            ]
        )

    def create(self, request):
        principal, user = acting_for(request, "add_pairingcode")
        body = request_body(request)
        unknown = set(body) - {"connector", "address"}
        if unknown or not isinstance(body.get("connector"), str) or not isinstance(body.get("address", ""), str):
            details = {k: "unknown field" for k in sorted(unknown)}
            if not isinstance(body.get("connector"), str):
                details["connector"] = "required: a connector id from /api/v1/pairing-codes/channels/"
            if not isinstance(body.get("address", ""), str):
                details["address"] = "must be text"
            raise ValidationFailed("Invalid pairing request.", details=details)
        base_url = request.build_absolute_uri("/").rstrip("/")
        issued = issue.request_pairing_code(
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
        responses={200: ChannelSerializer(many=True), **error_responses(401)},
    )
    @action(detail=False, methods=["get"])
    def channels(self, request):
        return Response(issue.list_pairing_channels(principal_of(request)))
