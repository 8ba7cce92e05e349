"""Routing's MCP tool: notify a person by username on the channels they prefer, with fallback.

Registered with brain_connectors.mcp.registry, which discovers this module.
"""
from typing import Annotated, Literal

from pydantic import Field

from brain_connectors.mcp.registry import tool
from connectors.permissions import Principal
from connectors.platforms.base import MAX_CONTENT_LENGTH
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
