"""Our webhooks' public URLs: the one a platform called (Twilio signs it), and the one to register with a platform."""
from django.conf import settings
from django.urls import reverse


def public_url(request):
    """The URL the platform called, as it saw it: PUBLIC_BASE_URL + path behind a proxy, else
    the request's own absolute URL. Twilio signs exactly this string."""
    if settings.PUBLIC_BASE_URL:
        return settings.PUBLIC_BASE_URL.rstrip("/") + request.get_full_path()
    return request.build_absolute_uri()


def webhook_url(url_name, connector_id):
    """Absolute URL of one of our webhooks, for registering it with a platform."""
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    if not base:
        raise ValueError("PUBLIC_BASE_URL is not set: platforms cannot be told where to call us.")
    return base + reverse(url_name, kwargs={"connector_id": connector_id})
