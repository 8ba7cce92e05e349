"""REST: search over conversation memory. Scoping and auditing are in conversations.services."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from connectors.api import ERRORS, principal_of
from connectors.exceptions import ValidationFailed

from . import services


class ConversationSearchView(APIView):
    """GET /api/v1/conversations/search/?q=&connector=&limit="""

    @extend_schema(
        summary="Search conversation history (encrypted at rest, via a blind index)",
        parameters=[
            OpenApiParameter("q", str, required=True, description="Words (all must match); \"quoted phrases\"; max 200 chars, 10 words"),
            OpenApiParameter("connector", str, description="Only this connector's conversations"),
            OpenApiParameter("limit", int, description="1-200 (default 50)"),
        ],
        responses={200: OpenApiTypes.OBJECT, **{code: ERRORS[code] for code in (400, 401, 403, 404)}},
    )
    def get(self, request):
        params = request.query_params
        try:
            limit = int(params.get("limit", 50))
        except ValueError:
            # A typo must not silently become the default.
            raise ValidationFailed("limit must be a whole number.", details={"limit": "not a number"}) from None
        messages = services.search(
            principal_of(request), params.get("q", ""), connector_id=params.get("connector") or None, limit=limit
        )
        return Response({"results": [services.result_dict(m) for m in messages], "count": len(messages)})
