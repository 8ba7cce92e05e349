"""REST endpoints of the privacy controls (/api/v1/conversations/people/<username>/…).

A person acts for themselves; staff act for others with `conversations.view_conversation`
(export, sentiment: plus read_conversations on every connector of the person's memory) or
`conversations.delete_conversation` (erasure). Errors come from the
services (brain_connectors.shared.api_errors renders them).
"""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from brain_connectors.shared.errors import ValidationFailed
from connectors.api.views import ERRORS, principal_of
from conversations import privacy


def _errors(*codes):
    return {code: ERRORS[code] for code in codes}


class PersonExportView(APIView):
    @extend_schema(
        summary="Export everything memory holds about a person, as JSON",
        responses={200: dict, **_errors(401, 403, 404)},
    )
    def get(self, request, username):
        return Response(privacy.export_person(principal_of(request), username))


class PersonEraseView(APIView):
    @extend_schema(
        summary="Forget a person: erase their conversations, messages, index rows and analyses",
        responses={200: dict, **_errors(401, 403, 404)},
    )
    def delete(self, request, username):
        counts = privacy.erase_person(principal_of(request), username)
        return Response({"erased": counts}, status=status.HTTP_200_OK)


class PersonSentimentView(APIView):
    @extend_schema(
        summary="Per-day average sentiment of a person's messages",
        parameters=[OpenApiParameter("days", int, description="How many days back, 1-3650 (default 30)")],
        responses={200: dict, **_errors(400, 401, 403, 404)},
    )
    def get(self, request, username):
        try:
            days = int(request.query_params.get("days", 30))
        except ValueError:
            raise ValidationFailed("days must be a whole number.") from None
        if not 1 <= days <= 3650:
            raise ValidationFailed("days must be between 1 and 3650.")
        person, trend = privacy.person_sentiment(principal_of(request), username, days)
        return Response({"person": person.get_username(), "days": days, "trend": trend})
