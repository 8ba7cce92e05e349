"""REST API under /api/v1/. Views parse, call one service and render: no rules live here."""
from datetime import timezone as dt_timezone

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from guardian.shortcuts import get_groups_with_perms, get_users_with_perms
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from brain_connectors.shared.errors import ValidationFailed
from brain_connectors.shared.pagination import PaginatedListMixin
from connectors import tokens
from connectors.api.attachments import send_fields
from connectors.api.serializers import (
    ConnectorSerializer,
    ConnectorUpdateSerializer,
    DeliverySerializer,
    ErrorSerializer,
    HealthResultSerializer,
    PermissionGrantSerializer,
    SendFormSerializer,
    SendSerializer,
)
from connectors.delivery.outbound import get_delivery, list_deliveries, send_message
from connectors.events import log as event_log
from connectors.events import types as event_types
from connectors.models import PERM_ADMIN, ConnectorStatus, Delivery
from connectors.permissions import LEVELS, Principal
from connectors.registry.grants import grant_permission, revoke_permission
from connectors.registry.lifecycle import set_disabled, start_connector, stop_connector, test_connector
from connectors.registry.records import (
    delete_connector,
    get_connector,
    list_connectors,
    register_connector,
    update_connector,
)

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Invalid request"),
    401: OpenApiResponse(ErrorSerializer, "Missing, malformed, expired or revoked token"),
    403: OpenApiResponse(ErrorSerializer, "Permission missing for this action"),
    404: OpenApiResponse(ErrorSerializer, "Not found, or not visible to you"),
    409: OpenApiResponse(ErrorSerializer, "Conflict (duplicate id, invalid transition, idempotency)"),
}


def _errors(*codes):
    return {code: ERRORS[code] for code in codes}


def principal_of(request):
    return Principal.for_user(request.user, via="api")


def _validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema_view(
    list=extend_schema(
        summary="List the connectors you may view",
        parameters=[
            OpenApiParameter("kind", str, description="Only this kind"),
            OpenApiParameter("status", str, enum=ConnectorStatus.values, description="Only this status"),
        ],
        responses={200: ConnectorSerializer(many=True), **_errors(400, 401)},
    ),
    create=extend_schema(summary="Register a connector", responses={201: ConnectorSerializer, **_errors(400, 401, 403, 409)}),
    retrieve=extend_schema(summary="One connector", responses={200: ConnectorSerializer, **_errors(401, 404)}),
    partial_update=extend_schema(
        summary="Change display name, config, quotas (manage) or credentials (admin)",
        request=ConnectorUpdateSerializer,
        responses={200: ConnectorSerializer, **_errors(400, 401, 403, 404)},
    ),
    destroy=extend_schema(summary="Delete a stopped connector (admin)", responses={204: None, **_errors(401, 403, 404, 409)}),
)
class ConnectorViewSet(PaginatedListMixin, viewsets.ViewSet):
    lookup_field = "id"
    lookup_value_regex = r"[^/]+"
    serializer_class = ConnectorSerializer

    def list(self, request):
        params = request.query_params
        return self.paginated_read(
            request, lambda: list_connectors(principal_of(request), kind=params.get("kind"), status=params.get("status")),
            ConnectorSerializer,
        )

    def create(self, request):
        data = _validated(ConnectorSerializer, request.data)
        connector = register_connector(
            principal_of(request),
            id=data["id"],
            kind=data["kind"],
            display_name=data["display_name"],
            config=data.get("config", {}),
            credentials=data.get("credentials", {}),
            quota_per_minute=data.get("quota_per_minute"),
            recipient_quota_per_minute=data.get("recipient_quota_per_minute"),
        )
        return Response(ConnectorSerializer(connector).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, id=None):
        return Response(ConnectorSerializer(get_connector(principal_of(request), id)).data)

    def partial_update(self, request, id=None):
        changes = _validated(ConnectorUpdateSerializer, request.data)
        if not changes:
            raise ValidationFailed("Nothing to change.", details={"body": "give at least one field"})
        connector = update_connector(principal_of(request), id, **changes)
        return Response(ConnectorSerializer(connector).data)

    def destroy(self, request, id=None):
        delete_connector(principal_of(request), id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Start the connector (manage)", request=None, responses={200: ConnectorSerializer, **_errors(401, 403, 404, 409)})
    @action(detail=True, methods=["post"])
    def start(self, request, id=None):
        return Response(ConnectorSerializer(start_connector(principal_of(request), id)).data)

    @extend_schema(summary="Stop the connector (manage)", request=None, responses={200: ConnectorSerializer, **_errors(401, 403, 404, 409)})
    @action(detail=True, methods=["post"])
    def stop(self, request, id=None):
        return Response(ConnectorSerializer(stop_connector(principal_of(request), id)).data)

    @extend_schema(summary="Disable the connector (manage)", request=None, responses={200: ConnectorSerializer, **_errors(401, 403, 404, 409)})
    @action(detail=True, methods=["post"])
    def disable(self, request, id=None):
        return Response(ConnectorSerializer(set_disabled(principal_of(request), id, True)).data)

    @extend_schema(summary="Re-enable a disabled connector (manage)", request=None, responses={200: ConnectorSerializer, **_errors(401, 403, 404, 409)})
    @action(detail=True, methods=["post"])
    def enable(self, request, id=None):
        return Response(ConnectorSerializer(set_disabled(principal_of(request), id, False)).data)

    @extend_schema(summary="Run the platform health check now (manage)", request=None, responses={200: HealthResultSerializer, **_errors(401, 403, 404)})
    @action(detail=True, methods=["post"])
    def test(self, request, id=None):
        result = test_connector(principal_of(request), id)
        return Response({"ok": result.ok, "detail": result.detail})

    @extend_schema(
        summary="Send a message to a platform recipient (send)",
        request={"application/json": SendSerializer, "multipart/form-data": SendFormSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Same key and body return the original delivery; same key, other body: 409.",
            )
        ],
        responses={202: DeliverySerializer, **_errors(400, 401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def send(self, request, id=None):
        data = _validated(SendSerializer, send_fields(request))
        delivery, replayed = send_message(
            principal_of(request),
            id,
            data["recipient"],
            data["content"],
            idempotency_key=request.headers.get("Idempotency-Key"),
            buttons=data.get("buttons"),
            attachments=data.get("attachments"),
        )
        delivery.refresh_from_db()
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED, headers=headers)

    @extend_schema(
        methods=["GET"],
        summary="Who holds which permission on this connector (admin)",
        responses={200: OpenApiTypes.OBJECT, **_errors(400, 401, 403, 404)},
    )
    @extend_schema(
        methods=["POST"],
        summary="Grant a permission on this connector (admin)",
        request=PermissionGrantSerializer,
        responses={200: OpenApiTypes.OBJECT, **_errors(400, 401, 403, 404)},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Revoke a permission on this connector (admin): query parameters, or the same JSON body as POST",
        # OpenAPI (and many proxies) give a DELETE body no meaning, so the schema names the query form.
        parameters=[
            OpenApiParameter("username", str, description="The user (give this or group)"),
            OpenApiParameter("group", str, description="The group (give this or username)"),
            OpenApiParameter("permission", str, required=True, enum=[*LEVELS]),
        ],
        responses={200: OpenApiTypes.OBJECT, **_errors(400, 401, 403, 404)},
    )
    @action(detail=True, methods=["get", "post", "delete"])
    def permissions(self, request, id=None):
        principal = principal_of(request)
        if request.method == "GET":
            connector = get_connector(principal, id, perm=PERM_ADMIN)
            return Response(_grants(connector))
        source = request.query_params if request.method == "DELETE" and not request.data else request.data
        data = _validated(PermissionGrantSerializer, source)
        user = group = None
        if data.get("username"):
            user = get_user_model().objects.filter(username=data["username"]).first()
            if user is None:
                raise ValidationFailed(f"No user {data['username']!r}.", details={"username": "unknown"})
        else:
            group = Group.objects.filter(name=data["group"]).first()
            if group is None:
                raise ValidationFailed(f"No group {data['group']!r}.", details={"group": "unknown"})
        change = grant_permission if request.method == "POST" else revoke_permission
        change(principal, id, data["permission"], user=user, group=group)
        return Response(_grants(get_connector(principal, id, perm=PERM_ADMIN)))


def _grants(connector):
    users = get_users_with_perms(connector, attach_perms=True, with_group_users=False)
    groups = get_groups_with_perms(connector, attach_perms=True)
    return {
        "users": {u.get_username(): sorted(p for p in perms if p in LEVELS) for u, perms in users.items()},
        "groups": {g.name: sorted(p for p in perms if p in LEVELS) for g, perms in groups.items()},
    }


@extend_schema_view(
    list=extend_schema(
        summary="Deliveries on connectors you may view",
        parameters=[
            OpenApiParameter("connector", str),
            OpenApiParameter("status", str, enum=[s for s, _ in Delivery._meta.get_field("status").choices]),
            OpenApiParameter("recipient", str),
        ],
        responses={200: DeliverySerializer(many=True), **_errors(400, 401)},
    ),
    retrieve=extend_schema(summary="One delivery", responses={200: DeliverySerializer, **_errors(401, 404)}),
)
class DeliveryViewSet(PaginatedListMixin, viewsets.GenericViewSet):
    serializer_class = DeliverySerializer
    queryset = Delivery.objects.none()  # the schema's path types only: reads go through the audited services
    lookup_field = "id"

    def list(self, request):
        params = request.query_params
        return self.paginated_read(
            request,
            lambda: list_deliveries(principal_of(request), connector_id=params.get("connector") or None,
                                    status=params.get("status"), recipient=params.get("recipient") or None),
            DeliverySerializer,
        )

    def retrieve(self, request, id=None):
        return Response(DeliverySerializer(get_delivery(principal_of(request), id)).data)


class ApiTokenSerializer(serializers.Serializer):
    """One row of GET /api/v1/tokens/ (documentation only: the list is built by hand)."""

    prefix = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class TokenViewSet(viewsets.ViewSet):
    """Your own API tokens: list them, revoke one. Tokens are created with `manage.py create_api_token`."""

    lookup_field = "prefix"

    @extend_schema(summary="Your API tokens (never the secret)", responses={200: ApiTokenSerializer(many=True), **_errors(401)})
    def list(self, request):
        rows = tokens.list_tokens(principal_of(request), request.user)
        return Response(
            [
                {
                    "prefix": t.prefix,
                    "name": t.name,
                    "created_at": t.created_at,
                    "expires_at": t.expires_at,
                    "revoked_at": t.revoked_at,
                    "last_used_at": t.last_used_at,
                }
                for t in rows
            ]
        )

    @extend_schema(
        summary="Revoke one of your tokens",
        parameters=[OpenApiParameter("prefix", str, OpenApiParameter.PATH, description="The token's public prefix")],
        responses={204: None, **_errors(401, 403, 404)},
    )
    def destroy(self, request, prefix=None):
        tokens.revoke_token(principal_of(request), prefix)
        return Response(status=status.HTTP_204_NO_CONTENT)


EVENT_QUERY_PARAMETERS = {"type", "connector", "after", "from", "to", "limit"}
EVENT_PAGE_MAX = 1000


def _event_query(params):
    """Parse the event listing's query string; ValidationFailed names every bad parameter."""
    problems = {name: "unknown filter" for name in set(params) - EVENT_QUERY_PARAMETERS}
    query = {"types": [], "connector_ids": [], "after": 0, "time_from": None, "time_to": None, "limit": 100}
    try:
        query["types"] = event_types.parse_types(params.get("type", ""))
    except event_types.EventFilterError as exc:
        problems["type"] = str(exc)
    query["connector_ids"] = [c.strip() for c in params.get("connector", "").split(",") if c.strip()]
    for name, key, low, high in (("after", "after", 0, 2**63 - 1), ("limit", "limit", 1, EVENT_PAGE_MAX)):
        raw = params.get(name)
        if raw is None:
            continue
        if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
            problems[name] = f"must be an integer from {low} to {high}"
        else:
            query[key] = int(raw)
    for name, key in (("from", "time_from"), ("to", "time_to")):
        raw = params.get(name)
        if raw is None:
            continue
        try:
            value = parse_datetime(raw)
            # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts (+18:09 was a 500).
            value = value.astimezone(dt_timezone.utc) if value is not None and value.tzinfo is not None else None
        except (ValueError, OverflowError):  # OverflowError: year 1 moved past the calendar's start
            value = None
        if value is None:
            problems[name] = "must be an ISO 8601 date-time with a time zone (e.g. 2026-11-25T20:00:00Z)"
        else:
            query[key] = value
    if problems:
        raise ValidationFailed("Invalid event query.", code="invalid_query", details=problems)
    return query


class EventListView(APIView):
    """The durable event log, oldest first, cursor-paginated on `seq` (pass `after` = `next_after`)."""

    @extend_schema(
        summary="Events of the connectors you may view",
        parameters=[
            OpenApiParameter("type", str, description="Comma-separated types, or prefixes like connector.message.*"),
            OpenApiParameter("connector", str, description="Comma-separated connector ids"),
            OpenApiParameter("after", int, description="Only events with seq greater than this (the cursor)"),
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Only events at or after this time"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Only events before this time"),
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 1, "maximum": EVENT_PAGE_MAX},
                description=f"Page size, 1-{EVENT_PAGE_MAX} (default 100)",
            ),
        ],
        responses={200: OpenApiTypes.OBJECT, **_errors(400, 401)},
    )
    def get(self, request):
        query = _event_query(request.query_params)
        rows, next_after = event_log.list_events(principal_of(request), **query)
        next_url = None
        if next_after is not None:
            params = request.query_params.copy()
            params["after"] = str(next_after)
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": [row.envelope() for row in rows], "next_after": next_after, "next": next_url})
