"""Every API error answers JSON `{"error": {"code", "message", "details"}}` with the right status."""
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from django.views.defaults import bad_request as django_bad_request
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from audit import services as audit
from brain_connectors.shared.errors import DecryptionError, ServiceError


def error_body(code, message, details=None):
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status, headers=headers)
    if isinstance(exc, DecryptionError):
        return Response(
            error_body("decryption_failed", str(exc)), status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, (exceptions.ValidationError, exceptions.ParseError)):
        _audit_refused_request(context.get("request"), response.data)
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "validation_error", "The request is invalid.", response.data
    elif isinstance(exc, exceptions.Throttled):
        code, message, details = "rate_limited", str(exc.detail), {"retry_after": exc.wait}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        code = getattr(detail, "code", None) or exc.default_code
        message, details = str(detail), {}
    response.data = error_body(code, message, details)
    return response


def _audit_refused_request(request, errors):
    """Requests refused before reaching a service (malformed JSON, wrong types) are audited too;
    services audit everything after that point themselves."""
    if request is None:
        return
    user = getattr(request, "user", None)
    principal = f"user:{user.get_username()}" if user is not None and user.is_authenticated else "anonymous"
    audit.record(
        "api.invalid_request",
        principal=principal,
        result=audit.FAILURE,
        target_type="endpoint",
        target_id=request.path[:200],
        details={
            "via": "api",
            "method": request.method,
            "fields": sorted(errors) if isinstance(errors, dict) else [],
        },
    )


def not_found(request, exception):
    """handler404: a URL under /api/ that no route matches (e.g. /api/v1/preferences/abc/, whose
    id must be a number) answers like every other API error, in JSON; other URLs get Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return page_not_found(request, exception)


def _json_404(request, response):
    """An /api/ URL that no route matched, answered by Django's own 404 page (with DEBUG on, its technical page:
    handler404 is not used then), gets the JSON error envelope instead; JSON answers are left as they are."""
    if (
        response.status_code == 404
        and request.path.startswith("/api/")
        and not response.get("Content-Type", "").startswith("application/json")
    ):
        return not_found(request, None)
    return response


@sync_and_async_middleware
def api_not_found_middleware(get_response):
    """Every 404 under /api/ answers in JSON, whatever DEBUG says (README "Lists and filters")."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            return _json_404(request, await get_response(request))

    else:

        def middleware(request):
            return _json_404(request, get_response(request))

    return middleware


def bad_request(request, exception):
    """handler400: what Django refuses before any view runs (a body over DATA_UPLOAD_MAX_MEMORY_SIZE,
    too many fields) answers an API client in JSON too; other URLs get Django's page."""
    if not request.path.startswith("/api/"):
        return django_bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse(error_body("request_too_large", f"The request body is larger than {limit} bytes."),
                            status=400)
    return JsonResponse(error_body("bad_request", "The request is malformed."), status=400)
