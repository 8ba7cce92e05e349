"""`voice`: phone calls through Twilio Programmable Voice.

Credentials `account_sid`, `auth_token`; config `from_number` (E.164), `greeting`, `voice`,
`language`, `ask_ack`, `reply_wait_seconds` (default 3), `max_wait_rounds` (default 5),
`gather_timeout` (default 5), `filler`, `api_base_url`, `timeout`.

Inbound call (POST /webhooks/twilio/<id>/voice/): the greeting inside a speech `<Gather>` whose
action is the same voice URL with the conversation state in its query (see conversation.py).
Each utterance is stored through delivery.inbound.receive_message (dedupe id: CallSid, turn and a hash of
the words); BRAIN is asked on the normal task path and replies through send_message. send()
recognises a reply to an utterance of a call (reply_to metadata carries call_sid): it places no
call and returns `call:<CallSid>:<delivery id>`. The TwiML answering the utterance waits up to
`reply_wait_seconds` for that reply, speaks it, marks the delivery delivered and gathers again. A
slower BRAIN gets a short filler and a `<Redirect>` to the voice URL naming the pending message;
that request waits again (at most `max_wait_rounds` times). "Goodbye" ends the call; so do two
silent Gathers in a row.

Outbound notification (send() without a call to reply into): calls.create with inline TwiML that
says the text; with `ask_ack` it is wrapped in a one-digit Gather ("press 1 to acknowledge") whose
answer is recorded through delivery.receipts.acknowledge_delivery. Call status callbacks (completed →
delivered; no-answer, busy, failed, canceled → failed) come back to …/status/.
"""
import logging
import re

from django.conf import settings

from connectors.delivery.receipts import acknowledge_delivery, mark_delivered
from connectors.models import ConnectorStatus, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal
from connectors.platforms.base import (
    PATTERN_END,
    ConnectorError,
    IncomingMessage,
    MessageValidationError,
    OutgoingMessage,
    Receipt,
    SendResult,
    WebhookIgnored,
    WebhookResult,
)
from connectors.platforms.twilio_common import (
    E164,
    E164_RE,
    TwilioConnector,
    config_schema,
    receipt_from_status,
    twiml_response,
)
from connectors.platforms.voice.conversation import CallState, is_goodbye, url_with, wait_for_reply
from connectors.platforms.voice.twiml import Speaker
from connectors.platforms.webhook_urls import public_url, webhook_url

logger = logging.getLogger(__name__)

TWIML_PARAM_LIMIT = 4000  # Twilio refuses inline TwiML longer than this
# Used with fullmatch(): a trailing "$" would let a final "\n" through.
CLIENT_OR_SIP = re.compile(r"client:[A-Za-z0-9_.-]{1,100}|sip:[^\s<>\"]{3,200}")
ANONYMOUS = re.compile(r"anonymous:CA[0-9a-fA-F]{32}")
DEFAULTS = {"reply_wait_seconds": 3.0, "max_wait_rounds": 5, "gather_timeout": 5}


def _text(max_length):
    return {"type": "string", "minLength": 1, "maxLength": max_length}


class VoiceConnector(TwilioConnector):
    kind = "voice"
    label = "Phone calls (Twilio)"
    webhook_channels = ("voice", "status")
    config_schema = config_schema(
        rf"^{E164}{PATTERN_END}",
        greeting=_text(1000),
        filler=_text(200),
        goodbye=_text(200),
        voice={"type": "string", "pattern": rf"^[A-Za-z0-9._-]{{1,64}}{PATTERN_END}"},
        language={"type": "string", "pattern": rf"^[A-Za-z]{{2,3}}(-[A-Za-z0-9]{{2,8}})*{PATTERN_END}"},
        ask_ack={"type": "boolean"},
        reply_wait_seconds={"type": "number", "minimum": 0, "maximum": 10},
        max_wait_rounds={"type": "integer", "minimum": 1, "maximum": 20},
        gather_timeout={"type": "integer", "minimum": 1, "maximum": 30},
    )

    @classmethod
    def normalize_recipient(cls, recipient: str) -> str:
        """E.164, or a Twilio Client / SIP address (`client:alice`, `sip:ada@example.org`), which
        Twilio can call too. `anonymous:<CallSid>` (a caller without caller ID) can only be
        answered inside its call."""
        value = str(recipient).strip()
        if CLIENT_OR_SIP.fullmatch(value):
            return value
        if ANONYMOUS.fullmatch(value):
            raise ConnectorError(
                "An anonymous caller cannot be called back.", permanent=True, code="invalid_recipient"
            )
        return super().normalize_recipient(value)

    @classmethod
    def validate_recipient(cls, recipient: str):
        if ANONYMOUS.fullmatch(str(recipient).strip()):
            return None  # valid as the address of a reply within the call; send() refuses a new call
        return super().validate_recipient(recipient)

    @staticmethod
    def caller_address(state):
        """The caller as a recipient: their number or client/SIP address, else `anonymous:<CallSid>`."""
        caller = state.caller
        if CLIENT_OR_SIP.fullmatch(caller) or E164_RE.fullmatch(caller):
            return caller
        return f"anonymous:{state.call_sid}"

    def option(self, name):
        return self.config.get(name, DEFAULTS.get(name))

    # --- lifecycle ---
    def start(self) -> None:
        if self.config.get("ask_ack") and not settings.PUBLIC_BASE_URL:
            raise ConnectorError(
                "ask_ack needs PUBLIC_BASE_URL: Twilio must be told where to post the digit.",
                permanent=True,
                code="public_url_missing",
            )
        super().start()

    # --- outbound ---
    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        reply_to = message.metadata.get("reply_to") or {}
        call_sid = (reply_to.get("metadata") or {}).get("call_sid")
        if call_sid:
            # A reply inside a call: the call's own TwiML speaks it (webhook_response).
            return SendResult(platform_message_id=f"call:{call_sid}:{delivery_id}")
        to = self.normalize_recipient(message.recipient)
        twiml = str(Speaker(self.config).notification(message.content, self._ack_url(delivery_id)))
        if len(twiml) > TWIML_PARAM_LIMIT:
            raise ConnectorError(
                f"The text is too long for a call ({len(twiml)} characters of TwiML; Twilio takes {TWIML_PARAM_LIMIT}).",
                permanent=True,
                code="too_long",
            )
        params = {"to": to, "from_": self.config["from_number"], "twiml": twiml}
        callback = self.status_callback_url()
        if callback:
            params["status_callback"] = callback
        call = self.call(lambda c: c.calls.create(**params))
        return SendResult(platform_message_id=call.sid)

    def _ack_url(self, delivery_id):
        if not self.config.get("ask_ack"):
            return None
        if not settings.PUBLIC_BASE_URL:
            raise ConnectorError(
                "ask_ack needs PUBLIC_BASE_URL: Twilio must be told where to post the digit.",
                permanent=True,
                code="public_url_missing",
            )
        return url_with(webhook_url("webhook-twilio-voice", self.connector.id), ack=delivery_id)

    # --- inbound ---
    def parse_channel(self, request, channel) -> WebhookResult:
        state = CallState.from_request(request)
        if state.ack or state.pending or not state.speech or is_goodbye(state.speech):
            return WebhookResult()  # nothing to store; webhook_response answers
        try:
            message = IncomingMessage(
                sender=self.caller_address(state),
                content=state.speech,
                platform_message_id=state.speech_message_id(),
                metadata={"call_sid": state.call_sid, "turn": state.turn or 0, "channel": "voice"},
            )
        except MessageValidationError as exc:
            raise WebhookIgnored(f"malformed voice webhook: {exc}")
        return WebhookResult(messages=[message])

    def parse_status(self, request) -> WebhookResult:
        """Call status. For an outbound call it is the notification's receipt. For an inbound
        call that ended, replies that were waiting to be spoken in it are failed."""
        params = request.POST
        receipt = receipt_from_status(params)
        if receipt is None:
            raise WebhookIgnored("intermediate call status")
        if not (params.get("Direction") or "").startswith("inbound"):
            return WebhookResult(receipts=[receipt])
        unspoken = Delivery.objects.filter(
            connector_id=self.connector.id,
            platform_message_id__startswith=f"call:{receipt.platform_message_id}:",
            status=DeliveryStatus.SENT,
        ).values_list("platform_message_id", flat=True)
        receipts = [
            Receipt(platform_message_id=pid, status="failed", error="the call ended before the reply was spoken")
            for pid in unspoken
        ]
        if not receipts:
            raise WebhookIgnored("inbound call ended with nothing left unspoken")
        return WebhookResult(receipts=receipts)

    def webhook_response(self, request, channel, result, stored):
        if channel != "voice":
            return None
        state = CallState.from_request(request)
        speaker = Speaker(self.config)
        if state.ack:
            return twiml_response(self._acknowledge(speaker, state, request))
        if self.connector.status != ConnectorStatus.CONNECTED:
            return twiml_response(speaker.unavailable())
        base = _voice_base_url(request)
        if stored:
            return twiml_response(self._answer(speaker, base, stored[0][0].pk, state))
        if state.pending:
            return twiml_response(self._answer(speaker, base, state.pending, state))
        if state.speech and is_goodbye(state.speech):
            return twiml_response(speaker.goodbye())
        if state.turn is None:
            return twiml_response(speaker.greeting(url_with(base, turn=1, silence=0)))
        silence = state.silence + 1
        if silence >= 2:
            return twiml_response(speaker.goodbye(after_silence=True))
        return twiml_response(speaker.reprompt(url_with(base, turn=state.turn, silence=silence)))

    def _answer(self, speaker, base, inbound_id, state):
        turn = state.turn or 0
        inbound = InboundMessage.objects.filter(pk=inbound_id, connector_id=self.connector.id).first()
        if inbound is None or inbound.metadata.get("call_sid") != state.call_sid:
            # A pending id that is not this call's: carry on with the conversation.
            return speaker.listen(url_with(base, turn=turn + 1, silence=0))
        outcome, delivery = wait_for_reply(self.connector.id, inbound.pk, float(self.option("reply_wait_seconds")))
        next_gather = url_with(base, turn=turn + 1, silence=0)
        if outcome == "reply":
            twiml = speaker.reply(delivery.content, next_gather)
            mark_delivered(Principal.system_actor("platform", via="webhook"), delivery.pk)
            return twiml
        if outcome == "failed":
            return speaker.apology(next_gather)
        if outcome == "none":
            return speaker.listen(next_gather)
        if state.wait + 1 >= int(self.option("max_wait_rounds")):
            return speaker.apology(next_gather, too_slow=True)
        redirect = url_with(base, turn=turn, pending=inbound.pk, wait=state.wait + 1)
        return speaker.hold(redirect, first=state.wait == 0)

    def _acknowledge(self, speaker, state, request):
        if state.digits == "1":
            acknowledge_delivery(self.connector.id, state.ack, platform_message_id=state.call_sid)
            return speaker.acknowledged()
        if state.retry == 0:
            return speaker.ask_ack_again(url_with(_voice_base_url(request), ack=state.ack, retry=1))
        return speaker.goodbye()


def _voice_base_url(request):
    return url_with(public_url(request))
