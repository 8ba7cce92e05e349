"""Routing's MCP tools: notify a person by username on the channels they prefer, with fallback; ask them a question.

Registered with brain_connectors.mcp.registry, which discovers this module.
"""
from typing import Annotated, Literal

from pydantic import Field

from brain_connectors.mcp.registry import tool
from connectors import services
from connectors.delivery.questions import MAX_WAIT_SECONDS, describe
from connectors.permissions import Principal
from connectors.platforms.base import MAX_CONTENT_LENGTH
from connectors.platforms.buttons import MAX_BUTTON_ID, MAX_BUTTON_LABEL, MAX_BUTTONS
from routing import ask
from routing.notify import creation, inbox


@tool(
    "Notify a person (by username) on the channels they prefer, for a notification_type of "
    "standard, urgent or digest. The router picks an ordered chain of channels and explains each "
    "choice; the message goes to the first and falls back to the next on a failure, a failed "
    "delivery receipt or (urgent) no acknowledgement in time. Returns the notification id, its "
    "status, the chain, and the router's reasons for every channel included or excluded. Needs "
    "the routing.add_notification permission.",
    destructiveHint=False,
    idempotentHint=False,
    openWorldHint=True,
)
def notify_user(
    principal: Principal,
    username: Annotated[str, Field(min_length=1, max_length=150, description="The person's username.")],
    content: Annotated[
        str, Field(min_length=1, max_length=MAX_CONTENT_LENGTH, description="The message text (plain text).")
    ],
    notification_type: Annotated[
        Literal["standard", "urgent", "digest"],
        Field(description="urgent overrides quiet hours and waits for an acknowledgement; digest is low priority."),
    ] = "standard",
    idempotency_key: Annotated[
        str | None,
        Field(default=None, min_length=1, max_length=255,
              description="Optional. The same key with the same arguments never notifies twice."),
    ] = None,
) -> dict:
    notification, replayed = creation.notify_user(
        principal, username, content, notification_type, idempotency_key=idempotency_key
    )
    return {
        "notification_id": str(notification.id),
        "status": notification.status,
        "notification_type": notification.notification_type,
        "replayed": replayed,
        **inbox.summary(notification),
    }


OptionList = Annotated[
    list[dict[str, str]],
    Field(min_length=1, max_length=MAX_BUTTONS,
          description=f"The choices, as buttons (Telegram, Slack) or numbered options (SMS, WhatsApp, email): "
                      f"[{{\"id\": \"approve\", \"label\": \"Approve\"}}, ...]. ids: 1-{MAX_BUTTON_ID} letters, digits, "
                      f"'_', '.', '-', unique; labels: 1-{MAX_BUTTON_LABEL} characters."),
]


@tool(
    "Ask a person a question with options and wait for their choice. Address them by username (the router's "
    "first channel for them, as notify_user) or by connector_id and recipient. Returns status answered with the "
    "chosen option, or timed_out when nobody answered within wait_seconds (at most 120); the question stays open "
    "(open_seconds, default a day) and get_question_answer reads an answer that comes later. Only the person asked "
    "can answer. Needs send permission on the connector (and routing.add_notification for a username).",
    destructiveHint=False,
    idempotentHint=False,
    openWorldHint=True,
)
def ask_user(
    principal: Principal,
    question: Annotated[str, Field(min_length=1, max_length=4000, description="The question (plain text).")],
    options: OptionList,
    username: Annotated[str | None, Field(default=None, min_length=1, max_length=150)] = None,
    connector_id: Annotated[str | None, Field(default=None, min_length=1, max_length=64)] = None,
    recipient: Annotated[str | None, Field(default=None, min_length=1, max_length=255)] = None,
    wait_seconds: Annotated[
        float, Field(default=60, ge=0, le=MAX_WAIT_SECONDS, description="How long to wait here for the answer.")
    ] = 60,
    open_seconds: Annotated[
        int | None, Field(default=None, ge=60, le=7 * 24 * 3600, description="How long an answer still counts.")
    ] = None,
) -> dict:
    asked = ask.ask_user(principal, question, options, username=username, connector_id=connector_id,
                         recipient=recipient, open_seconds=open_seconds)
    settled = services.wait_for_answer(principal, asked, wait_seconds)
    answer = describe(settled)
    if settled.waited_out:
        answer["status"] = "timed_out"  # this wait ended; the question itself is still open
        answer["still_open"] = True
    return answer


@tool(
    "Read the answer to a question ask_user sent (by question_id): pending, answered (with the chosen option and "
    "who answered) or timed_out (its open time passed without an answer).",
    readOnlyHint=True,
)
def get_question_answer(
    principal: Principal,
    question_id: Annotated[str, Field(min_length=1, max_length=64, description="The question id ask_user returned.")],
) -> dict:
    return describe(services.get_question(principal, question_id))
