"""Pairing codes arriving as messages: which text is a code on which kind, memory's placeholder, and the inbound handler.

- Telegram: `/start CODE` (typed, or the bot's deep link t.me/<bot>?start=CODE) in a private chat.
- SMS, WhatsApp, CLI (`manage.py chat`) and the generic webhook: a message that is just the code
  (any case, spaces and one dash ignored, e.g. "k7q2-mx4p").
- Slack: the same, in a direct message to the bot only. A code posted in a channel is for everyone there to
  see, and pairing it would link whoever read it fastest.

`handle_inbound` runs before BRAIN is asked (settings.INBOUND_MESSAGE_HANDLERS): it returns the
reply for the person, or None when the message is not a pairing code, so that BRAIN answers it.
`memory_text` tells conversation memory to keep a placeholder instead of such a message: a code,
even a used or a wrong one, is nothing BRAIN needs and nothing a reader of conversations may see.
"""
import re

from connectors.models import Connector
from routing.pairing import codes
from routing.pairing.redeem import redeem_code

BARE_CODE_KINDS = ("sms", "whatsapp", "cli", "webhook")
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
        return codes.normalize_code(payload.strip())
    if kind in BARE_CODE_KINDS:
        return codes.normalize_code(text.strip())
    if kind == "slack":
        # memory_text asks without metadata: any code-shaped text is kept out of memory, even in a channel.
        in_dm = metadata is None or metadata.get("channel_type") == "im"
        return codes.normalize_code(text.strip()) if in_dm else None
    return None


def memory_text(connector_id, direction, content):
    """What memory keeps instead of an inbound message that handle_inbound takes as a pairing code
    (right, wrong or used: a wrong one may be someone's mistyped code), or None to keep it as is.
    Only code-shaped text costs a query (the connector's kind), so ordinary messages cost nothing."""
    if direction != "inbound" or not isinstance(content, str):
        return None
    stripped = content.strip()
    if not stripped.startswith("/start") and (
        len(stripped) > 4 * codes.CODE_LENGTH or len(_SEPARATORS.sub("", stripped)) != codes.CODE_LENGTH
    ):
        return None
    kind = Connector.objects.filter(pk=connector_id).values_list("kind", flat=True).first()
    if kind not in codes.pairable_kinds() or code_in(kind, content) is None:
        return None
    return MEMORY_TEXT


def handle_inbound(inbound):
    """INBOUND_MESSAGE_HANDLERS entry: answer a pairing code, or None to let BRAIN answer."""
    connector = inbound.connector
    if connector.kind not in codes.pairable_kinds():
        return None
    code = code_in(connector.kind, inbound.content, inbound.metadata)
    if code is None:
        return None
    return redeem_code(connector.id, inbound.sender, code).reply

