"""What the routing API's views share: the error responses of the schema, `?user=`, and reading the body.

Everyone acts for themselves; staff with the routing model permissions (or superusers) may act for
someone else with `?user=<username>`.
"""
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from brain_connectors.shared.errors import ValidationFailed
from connectors.api.serializers import ErrorSerializer
from connectors.api.views import principal_of
from routing.access import resolve_user

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Invalid request"),
    401: OpenApiResponse(ErrorSerializer, "Not signed in, or a bad token"),
    404: OpenApiResponse(ErrorSerializer, "Not found, or not yours (nor someone's you may act for)"),
    409: OpenApiResponse(ErrorSerializer, "Conflict: priority taken, identity already used, too many pending codes"),
    429: OpenApiResponse(ErrorSerializer, "Too many pairing links sent for this account or to this address (Retry-After)"),
}


def error_responses(*codes):
    return {code: ERRORS[code] for code in codes}


USER_PARAMETER = OpenApiParameter(
    "user", str, description="Act for this user (staff with the routing model permissions, or superusers)"
)



def request_body(request):
    if not isinstance(request.data, dict):
        raise ValidationFailed("The body must be a JSON object.", details={"body": "must be an object"})
    return dict(request.data)


def acting_for(request, perm):
    """(principal, user acted for)."""
    principal = principal_of(request)
    return principal, resolve_user(principal, request.query_params.get("user"), perm)

