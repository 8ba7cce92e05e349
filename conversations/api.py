"""REST: search over conversation memory. Scoping and auditing are in conversations.services."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from brain_connectors.shared.pagination import whole_number
from connectors.api.views import ERRORS, principal_of
from conversations import services


class ConversationSearchView(APIView):
    # GET /api/v1/conversations/search/?q=&connector=&limit=

    @extend_schema(
        summary="Search conversation history (encrypted at rest, via a blind index)",
        description=(
            "Messages that match every word and quoted phrase of `q`, newest first, at most `limit`: in your own "
            "conversations, and in everyone's on connectors where you hold `read_conversations`."
        ),
        parameters=[
            OpenApiParameter("q", str, required=True, description="Words (all must match); \"quoted phrases\"; max 200 chars, 10 words"),
            OpenApiParameter("connector", str, description="Only this connector's conversations"),
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 1, "maximum": services.MAX_SEARCH_LIMIT},
                description=f"1-{services.MAX_SEARCH_LIMIT} (default 50)",
            ),
        ],
        responses={200: OpenApiTypes.OBJECT, **{code: ERRORS[code] for code in (400, 401, 403, 404)}},
    )
    def get(self, request):
        params = request.query_params
        # Strict, like every paginated list: a typo or a value out of range is a 400, never the
        # default or a silent clamp.
        limit = whole_number(params, "limit", 1, services.MAX_SEARCH_LIMIT) if "limit" in params else 50
        messages = services.search(
            principal_of(request), params.get("q", ""), connector_id=params.get("connector") or None, limit=limit
        )
        return Response({"results": [services.result_dict(m) for m in messages], "count": len(messages)})
