"""The emailed pairing link's page: GET shows what would be paired and a Confirm button; POST pairs.

The link is `/preferences/pair/<code>/`; confirming is a POST, so that mail scanners and link
prefetchers pair nothing, and only the signed-in owner of the code may confirm it.
"""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from brain_connectors.shared.errors import ServiceError
from connectors.permissions import Principal
from routing.pairing.redeem import MESSAGES, confirm_email_link, pairing_link_state
from routing.views import PAIRED_CHANNEL

LOGIN_URL = "/accounts/login/"


@never_cache
@require_http_methods(["GET", "POST"])
@login_required(login_url=LOGIN_URL)
def pair_link(request, code):
    """The emailed link: GET shows what would be paired and a Confirm button; POST pairs."""
    principal = Principal.for_user(request.user, via="web")
    if request.method == "POST":
        try:
            result = confirm_email_link(principal, code)
        except ServiceError as exc:
            return render(request, "preferences/pair_link.html", {"state": "refused", "message": exc.message},
                          status=exc.status)
        return render(request, "preferences/pair_link.html", {"state": "paired", "message": result.reply,
                                                              "identity": result.identity,
                                                              "paired_channel": PAIRED_CHANNEL})
    row, reason = pairing_link_state(code)
    if reason is None and row.user_id != request.user.pk:
        reason = "unknown"
    if reason is not None:
        message = MESSAGES.get(reason, MESSAGES["unknown"])
        if reason == "unknown":
            message = "This pairing link is not valid for your account. Ask for a new one on the preferences page."
        return render(request, "preferences/pair_link.html", {"state": "refused", "message": message},
                      status=404 if reason == "unknown" else 409)
    return render(
        request,
        "preferences/pair_link.html",
        {"state": "confirm", "address": row.address, "connector": row.connector, "expires_at": row.expires_at},
    )
