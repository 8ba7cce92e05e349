"""Questions with options (MCP's ask_user): ask a person, wait a bounded time for their pick, read it later.

A question is a message with buttons (connectors/delivery/outbound.py) plus a Question row naming its delivery. The
answer is written by whichever process stores the person's press (connectors/delivery/presses.py, in the webhook's
or poller's transaction), so the asker's wait polls the database: a short sleep between reads, never a busy loop,
and never past the wait it was given (capped at MAX_WAIT_SECONDS). Here rather than in routing because a question
belongs to a connector and a recipient, as deliveries do; routing's ask_user only picks the connector and address
of a person it knows by username. Every call checks permissions and is audited in its own transaction.
"""
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import Hidden, NotFound, ValidationFailed, audit_result
from connectors.delivery.outbound import send_message
from connectors.models import PERM_VIEW, Question
from connectors.permissions import has_perm
from connectors.platforms.buttons import button_problems
from connectors.registry.common import uuid_or_none

MAX_WAIT_SECONDS = 120  # one MCP call holds a worker thread this long at most
POLL_INTERVAL = 0.5
DEFAULT_OPEN_SECONDS = 24 * 3600  # how long a question can still be answered (get_question_answer reads it)
MAX_OPEN_SECONDS = 7 * 24 * 3600


def ask_question(principal, connector_id, recipient, text, options, *, open_seconds=DEFAULT_OPEN_SECONDS):
    """Send `text` with `options` ([{"id", "label"}]) to `recipient` and record the question; returns it.
    Needs send permission on the connector (send_message checks it and audits the message)."""
    with audit.audited("question.ask", principal, "connector", connector_id, classify=audit_result):
        if not options:
            raise ValidationFailed("A question needs at least one option.", details={"options": "must not be empty"})
        if problem := button_problems(options):
            raise ValidationFailed(f"Invalid options: {problem}.", details={"options": problem})
        if not isinstance(open_seconds, int) or not 60 <= open_seconds <= MAX_OPEN_SECONDS:
            raise ValidationFailed("Invalid open_seconds.", details={"open_seconds": f"must be 60-{MAX_OPEN_SECONDS}"})
        with transaction.atomic():
            delivery, _ = send_message(principal, connector_id, recipient, text, buttons=options)
            question = Question.objects.create(
                asker=principal.key, connector_id=connector_id, recipient=delivery.recipient, text=text,
                options=delivery.buttons, delivery=delivery,
                expires_at=timezone.now() + timedelta(seconds=open_seconds),
            )
            audit.record_action("question.ask", principal, "question", str(question.pk), connector_id=connector_id,
                                delivery_id=str(delivery.pk), options=len(options))
    return question


def get_question(principal, question_id):
    """The question, its status settled (a pending one past its time is timed_out). The asker may read it, and so
    may whoever may view its connector; anyone else is told it does not exist."""
    with audit.audited("question.get", principal, "question", str(question_id), classify=audit_result):
        with transaction.atomic():
            question = (Question.objects.select_for_update().select_related("connector")
                        .filter(pk=uuid_or_none(question_id)).first())
            if question is None:
                raise NotFound(f"Question {question_id!r} does not exist.")
            if question.asker != principal.key and not has_perm(principal, PERM_VIEW, question.connector):
                raise Hidden(f"Question {question_id!r} does not exist.")
            if question.status == Question.Status.PENDING and question.expires_at <= timezone.now():
                question.status = Question.Status.TIMED_OUT
                question.save(update_fields=["status"])
            audit.record_action("question.get", principal, "question", str(question.pk), status=question.status)
    return question


def wait_for_answer(principal, question, wait_seconds, *, sleep=time.sleep):
    """Wait up to `wait_seconds` (capped) for `question` to be answered; returns it re-read (get_question), with
    `waited_out` True when the wait ended without an answer."""
    deadline = time.monotonic() + max(0.0, min(float(wait_seconds), MAX_WAIT_SECONDS))
    while True:
        status = Question.objects.filter(pk=question.pk).values_list("status", flat=True).first()
        if status != Question.Status.PENDING or time.monotonic() >= deadline:
            break
        sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
    question = get_question(principal, question.pk)
    question.waited_out = question.status == Question.Status.PENDING
    return question


def describe(question):
    """The question as MCP tools return it (no text: the asker has it; the answer is an option id and label)."""
    label = next((o["label"] for o in question.options if o["id"] == question.answer), None)
    return {
        "question_id": str(question.pk),
        "status": question.status,
        "connector_id": question.connector_id,
        "recipient": question.recipient,
        "delivery_id": str(question.delivery_id) if question.delivery_id else None,
        "answer": {"id": question.answer, "label": label} if question.status == Question.Status.ANSWERED else None,
        "answered_by": question.answered_by or None,
        "answered_at": question.answered_at.isoformat() if question.answered_at else None,
        "expires_at": question.expires_at.isoformat(),
    }
