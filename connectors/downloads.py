"""The attachment download BRAIN uses: a thin view over connectors.delivery.attachment_urls."""
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from brain_connectors.shared.api_errors import error_body
from connectors.delivery import attachment_urls


@require_GET
def attachment_download(request, attachment_id):
    """GET /attachments/<id>/ with the URL's signature or a BRAIN-signed request: the decrypted bytes."""
    try:
        via = attachment_urls.authorise(
            str(attachment_id), expires=request.GET.get("expires", ""), sig=request.GET.get("sig", ""),
            headers=request.headers, path=request.path,
        )
    except attachment_urls.Refused:
        # The same answer whatever was wrong, checked before any lookup: whether the id exists stays unsaid.
        return JsonResponse(error_body("forbidden", "This download is not authorised."), status=403)
    try:
        row, data = attachment_urls.open_for_download(str(attachment_id), via)
    except attachment_urls.Unavailable:
        return JsonResponse(error_body("attachment_unavailable", "This attachment has no stored file."), status=404)
    response = HttpResponse(data, content_type=row.mime_type or "application/octet-stream")
    response["Content-Disposition"] = attachment_urls.content_disposition(row)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
