"""Button presses and numbered replies coming back: checked against the delivery they name, and answering questions.

A platform's parser only claims a press (`metadata["button_press"]`: {"delivery_id", "button_id"}, taken from
Telegram's callback_data or Slack's action) and never decides it: here, in the transaction that stores the inbound
message, the claim counts only if that delivery exists on this connector, went to this sender and had that button.
On platforms without buttons (SMS, WhatsApp, email) a reply of just a number picks that option of the latest
message sent to the person, if it carried options. A counted press becomes `metadata["button"]` ({"delivery_id",
"button_id", "label", "via": "press"|"number"}); a claim that does not hold is dropped, marked
`button_refused`. The message then goes to BRAIN like any other; a pending question it answers is settled first.
"""
from django.utils import timezone

from audit import services as audit
from connectors.models import Delivery, Question
from connectors.permissions import Principal
from connectors.platforms.buttons import NUMBERED_REPLY, numbered_choice
from connectors.registry.kinds import UnknownKind, get_connector_class

PRESS = "button_press"


def resolve(connector, message):
    """(content, metadata) to store for `message` (an IncomingMessage) on `connector`, its press checked."""
    metadata = dict(message.metadata)
    claim = metadata.pop(PRESS, None)
    if claim is not None:
        button = _checked_press(connector, message.sender, claim)
        if button is None:
            metadata["button_refused"] = True
            return message.content, metadata
        metadata["button"] = button
        # Telegram's callback data is a token, not words: BRAIN and memory see the label the person pressed.
        return button["label"], metadata
    if not _shows_buttons(connector) and (button := _numbered(connector, message.sender, message.content)):
        metadata["button"] = button
    return message.content, metadata


def _shows_buttons(connector):
    try:
        return get_connector_class(connector.kind).supports_buttons
    except UnknownKind:
        return False


def _checked_press(connector, sender, claim):
    if not isinstance(claim, dict):
        return None
    delivery_id, button_id = claim.get("delivery_id"), claim.get("button_id")
    if not isinstance(delivery_id, str) or not isinstance(button_id, str):
        return None
    try:
        delivery = Delivery.objects.filter(pk=delivery_id, connector=connector, recipient=sender).first()
    except Exception:  # noqa: BLE001 - not a UUID: Django raises ValidationError/ValueError by backend
        return None
    if delivery is None:
        return None
    label = next((b["label"] for b in delivery.buttons or () if b.get("id") == button_id), None)
    if label is None:
        return None
    return {"delivery_id": str(delivery.pk), "button_id": button_id, "label": label, "via": "press"}


def _numbered(connector, sender, content):
    if not NUMBERED_REPLY.fullmatch(content or ""):
        return None  # most messages: no query
    latest = Delivery.objects.filter(connector=connector, recipient=sender).order_by("-created_at").first()
    if latest is None or not latest.buttons:
        return None
    button = numbered_choice(content, latest.buttons)
    if button is None:
        return None
    return {"delivery_id": str(latest.pk), "button_id": button["id"], "label": button["label"], "via": "number"}


def answer_question(inbound, principal=None):
    """Settle the pending question `inbound`'s counted press answers, if any (same transaction). Only the question's
    recipient can answer: the press was checked against the delivery's recipient, and is checked here again."""
    button = (inbound.metadata or {}).get("button")
    if not isinstance(button, dict):
        return None
    question = (
        Question.objects.select_for_update()
        .filter(delivery_id=button["delivery_id"], connector_id=inbound.connector_id, recipient=inbound.sender,
                status=Question.Status.PENDING)
        .first()
    )
    if question is None:
        return None
    now = timezone.now()
    if question.expires_at <= now:
        question.status = Question.Status.TIMED_OUT
        question.save(update_fields=["status"])
        return None
    question.status = Question.Status.ANSWERED
    question.answer = button["button_id"]
    question.answered_by = inbound.sender
    question.answer_inbound = inbound
    question.answered_at = now
    question.save(update_fields=["status", "answer", "answered_by", "answer_inbound", "answered_at"])
    audit.record_action(
        "question.answer", principal or Principal.system_actor("platform"), "question", str(question.pk),
        connector_id=inbound.connector_id, inbound_id=inbound.pk, answer=question.answer, via_button=button["via"],
    )
    return question
