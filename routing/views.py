"""The end-user page `/preferences/`: a person's channels, pairing, and how BRAIN reaches them.

The page (templates/preferences/index.html, static/preferences/) is a shell: everything it shows
and changes goes through the REST API (/api/v1/identities/, /api/v1/pairing-codes/,
/api/v1/preferences/) with the session cookie and the CSRF token, so the same service functions,
permission checks and audit rows apply as for any other client. Nothing is written here.

End users are not staff, and the admin login admits staff only: they sign in at /accounts/login/.
"""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from routing.models import NotificationType

LOGIN_URL = "/accounts/login/"
POLL_MILLISECONDS = 2000
# The BroadcastChannel on which the emailed link's page tells an open /preferences/ tab that it paired.
PAIRED_CHANNEL = "brain-preferences-paired"


@never_cache
@ensure_csrf_cookie  # the page's script sends it back as X-CSRFToken
@login_required(login_url=LOGIN_URL)
def preferences_page(request):
    config = {
        "identities": "/api/v1/identities/",
        "channels": "/api/v1/pairing-codes/channels/",
        "pairingCodes": "/api/v1/pairing-codes/",
        "preferences": "/api/v1/preferences/",
        "reorder": "/api/v1/preferences/reorder/",
        "notificationTypes": [t.value for t in NotificationType],
        "pollMs": POLL_MILLISECONDS,
        "pairedChannel": PAIRED_CHANNEL,
    }
    return render(request, "preferences/index.html", {"config": config})
