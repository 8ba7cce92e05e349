"""The state of one phone conversation, carried in the webhook URLs Twilio calls back.

Twilio signs the full URL, query included, so the state below cannot be forged:
    turn      the Gather this request answers (1 for the one after the greeting)
    silence   how many Gathers in a row ended without speech before this one
    pending   an InboundMessage whose reply is being waited for (after a filler + Redirect)
    wait      how many times that reply was waited for already
    ack       a Delivery id: the answer to "press 1 to acknowledge" on an outbound call
"""
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from connectors.models import Delivery, DeliveryStatus, InboundMessage
from connectors.platforms.base import WebhookIgnored

MAX_TURNS = 1000
POLL_SECONDS = 0.1


def _int_param(params, name, low, high):
    raw = params.get(name)
    if raw is None:
        return None
    # ASCII digits only ("²".isdigit() is True, yet int() refuses it), and short enough for int().
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not low <= int(raw) <= high:
        raise WebhookIgnored(f"malformed voice URL parameter {name!r}")
    return int(raw)


@dataclass(frozen=True)
class CallState:
    call_sid: str
    caller: str
    speech: str
    digits: str
    turn: int | None
    silence: int
    pending: int | None
    wait: int
    ack: str | None
    retry: int

    @classmethod
    def from_request(cls, request):
        query, form = request.GET, request.POST
        call_sid = (form.get("CallSid") or "").strip()
        if not call_sid:
            raise WebhookIgnored("voice webhook without CallSid")
        ack = query.get("ack")
        if ack is not None:
            try:
                ack = str(uuid.UUID(ack))
            except ValueError:
                raise WebhookIgnored("malformed voice URL parameter 'ack'")
        return cls(
            call_sid=call_sid,
            caller=(form.get("From") or form.get("Caller") or "").strip(),
            speech=(form.get("SpeechResult") or "").strip(),
            digits=(form.get("Digits") or "").strip(),
            turn=_int_param(query, "turn", 1, MAX_TURNS),
            silence=_int_param(query, "silence", 0, 10) or 0,
            pending=_int_param(query, "pending", 1, 2**63 - 1),
            wait=_int_param(query, "wait", 0, 100) or 0,
            ack=ack,
            retry=_int_param(query, "retry", 0, 5) or 0,
        )

    def speech_message_id(self):
        """Stable per call, turn and words: a Twilio retry of the same request dedupes."""
        digest = hashlib.sha256(self.speech.encode("utf-8")).hexdigest()[:16]
        return f"{self.call_sid}:{self.turn or 0}:{digest}"


_GOODBYE = re.compile(
    r"^(?:(?:ok|okay|alright|all right|thanks|thank you|no|nope|great|perfect|that's it|that is it)\s+)*"
    r"(?:good bye|goodbye|bye|bye bye|bye now|that's all|that is all|hang up|end the call|end call|"
    r"see you|see you later|talk to you later)"
    r"(?:\s+(?:now|then|thanks|thank you|brain))*$"
)


def is_goodbye(speech: str) -> bool:
    words = re.sub(r"[^\w' ]+", " ", speech.lower().replace("good-bye", "good bye").replace("’", "'"))
    return bool(_GOODBYE.fullmatch(" ".join(words.split())))


def url_with(base: str, **params) -> str:
    """`base` (scheme, host, path) with exactly these query parameters."""
    parts = urlsplit(base)
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def wait_for_reply(connector_id, inbound_id, timeout):
    """Poll for BRAIN's reply to one inbound message, for up to `timeout` seconds.

    Returns ("reply", delivery) once the reply was handed to send() (status sent or delivered),
    ("failed", delivery-or-None) if there will be none to speak, ("none", None) if BRAIN chose not
    to reply, or ("pending", None) when time ran out.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        delivery = (
            Delivery.objects.filter(connector_id=connector_id, in_reply_to_id=inbound_id).order_by("created_at").first()
        )
        if delivery is not None:
            if delivery.status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED):
                return "reply", delivery
            if delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.DEAD):
                return "failed", delivery
        else:
            brain_status = (
                InboundMessage.objects.filter(pk=inbound_id).values_list("brain_status", flat=True).first()
            )
            if brain_status == InboundMessage.BrainStatus.FAILED:
                return "failed", None
            if brain_status == InboundMessage.BrainStatus.NO_REPLY:
                return "none", None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "pending", None
        time.sleep(min(POLL_SECONDS, remaining))
