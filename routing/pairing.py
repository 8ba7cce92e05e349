"""Pairing: a person proves they control an address by sending a one-time code from it.

- Telegram: `/start CODE` (typed, or the bot's deep link t.me/<bot>?start=CODE) in a private chat.
- SMS, WhatsApp, CLI (`manage.py chat`) and the generic webhook: a message that is just the code
  (any case, spaces and one dash ignored, e.g. "k7q2-mx4p").
- Email: a link `/preferences/pair/<code>/` emailed to the address; opening it shows a page with a
  Confirm button (a POST, so that mail scanners and link prefetchers pair nothing), for the
  signed-in owner of the code.

`handle_inbound` runs before BRAIN is asked (settings.INBOUND_MESSAGE_HANDLERS): it returns the
reply for the person, or None when the message is not a pairing code, so that BRAIN answers it.
`memory_text` tells conversation memory to keep a placeholder instead of such a message: a code,
even a used or a wrong one, is nothing BRAIN needs and nothing a reader of conversations may see.
"""
import re

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from brain_connectors.shared.errors import ServiceError
from connectors.models import Connector
from connectors.permissions import Principal
from routing import services

BARE_CODE_KINDS = ("sms", "whatsapp", "cli", "webhook")
LOGIN_URL = "/accounts/login/"
MEMORY_TEXT = "[A pairing code. It is not kept in memory.]"
_SEPARATORS = re.compile(r"[\s\-]")


def code_in(kind, text, metadata=None):
    """The text a message offers as a pairing code on this kind of connector, or None.

    Telegram: the payload of `/start CODE` (any payload that looks like a code); other kinds in
    BARE_CODE_KINDS: the whole message when it is code-shaped. Everything else is for BRAIN.
    """
    if not isinstance(text, str):
        return None
    if kind == "telegram":
        payload = (metadata or {}).get("start_payload")
        if payload is None:
            stripped = text.strip()
            if not (stripped.startswith("/start ") or stripped.startswith("/start@")):
                return None
            payload = stripped.partition(" ")[2]
        return services.normalize_code(payload.strip())
    if kind in BARE_CODE_KINDS:
        return services.normalize_code(text.strip())
    return None


def memory_text(connector_id, direction, content):
    """What memory keeps instead of an inbound message that handle_inbound takes as a pairing code
    (right, wrong or used: a wrong one may be someone's mistyped code), or None to keep it as is.
    Only code-shaped text costs a query (the connector's kind), so ordinary messages cost nothing."""
    if direction != "inbound" or not isinstance(content, str):
        return None
    stripped = content.strip()
    if not stripped.startswith("/start") and (
        len(stripped) > 4 * services.CODE_LENGTH or len(_SEPARATORS.sub("", stripped)) != services.CODE_LENGTH
    ):
        return None
    kind = Connector.objects.filter(pk=connector_id).values_list("kind", flat=True).first()
    if kind not in services.pairable_kinds() or code_in(kind, content) is None:
        return None
    return MEMORY_TEXT


def handle_inbound(inbound):
    """INBOUND_MESSAGE_HANDLERS entry: answer a pairing code, or None to let BRAIN answer."""
    connector = inbound.connector
    if connector.kind not in services.pairable_kinds():
        return None
    code = code_in(connector.kind, inbound.content, inbound.metadata)
    if code is None:
        return None
    return services.redeem_code(connector.id, inbound.sender, code).reply


@never_cache
@require_http_methods(["GET", "POST"])
@login_required(login_url=LOGIN_URL)
def pair_link(request, code):
    """The emailed link: GET shows what would be paired and a Confirm button; POST pairs."""
    principal = Principal.for_user(request.user, via="web")
    if request.method == "POST":
        try:
            result = services.confirm_email_link(principal, code)
        except ServiceError as exc:
            return render(request, "preferences/pair_link.html", {"state": "refused", "message": exc.message},
                          status=exc.status)
        return render(request, "preferences/pair_link.html", {"state": "paired", "message": result.reply,
                                                              "identity": result.identity})
    row, reason = services.pairing_link_state(code)
    if reason is None and row.user_id != request.user.pk:
        reason = "unknown"
    if reason is not None:
        message = services.MESSAGES.get(reason, services.MESSAGES["unknown"])
        if reason == "unknown":
            message = "This pairing link is not valid for your account. Ask for a new one on the preferences page."
        return render(request, "preferences/pair_link.html", {"state": "refused", "message": message},
                      status=404 if reason == "unknown" else 409)
    return render(
        request,
        "preferences/pair_link.html",
        {"state": "confirm", "address": row.address, "connector": row.connector, "expires_at": row.expires_at},
    )
