"""Slack buttons: an outbound message's buttons as Block Kit, and a press (block_actions) coming back as a message.

Out: the text goes in a `section` block (mrkdwn, at most SECTION_TEXT characters, so a message with buttons is
split at that size) followed by an `actions` block of buttons; `text` stays the notification fallback. Each button's
`value` is the same token as Telegram's callback_data ("b:<delivery>:<button>", connectors/platforms/buttons.py).
In: Slack posts interactivity payloads form-encoded (`payload=<json>`) to the app's one Request URL, signed as
events are; a `block_actions` press on one of our buttons becomes an IncomingMessage whose metadata claims the press
(`button_press`), checked in the database when it is stored (connectors/delivery/presses.py). Anything else is
Ignored (acknowledged, dropped). In Socket Mode the same payload comes as an `interactive` envelope (socket_mode.py).
"""
import json
from urllib.parse import parse_qs

from connectors.platforms.base import IncomingMessage, MessageValidationError
from connectors.platforms.buttons import callback_token, parse_callback_token
from connectors.platforms.slack.events import Ignored, _time

SECTION_TEXT = 3000  # Slack's limit on a section block's text


def is_interaction(body: bytes) -> bool:
    """Whether the request body is an interactivity payload (form-encoded) rather than an Events API JSON body."""
    return body.startswith(b"payload=")


def blocks(text: str, buttons, delivery_id) -> list:
    """The Block Kit blocks of the message part that carries the buttons (no section when there is no text: files
    with buttons and no words; Slack refuses an empty section)."""
    section = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}] if text else []
    return section + [
        {"type": "actions", "block_id": f"b:{delivery_id}"[:255], "elements": [
            {"type": "button", "action_id": b["id"], "text": {"type": "plain_text", "text": b["label"]},
             "value": callback_token(delivery_id, b["id"])}
            for b in buttons
        ]},
    ]


def parse_interaction(body: bytes) -> IncomingMessage:
    """The press in a form-encoded block_actions payload, as an IncomingMessage; Ignored for anything else."""
    try:
        [raw] = parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"]
        payload = json.loads(raw)
    except (ValueError, KeyError, UnicodeDecodeError, RecursionError):
        raise Ignored("an interactivity request without one JSON payload")
    return parse_block_actions(payload)


def parse_block_actions(payload) -> IncomingMessage:
    """The press in an interactivity payload (over HTTP, or a Socket Mode `interactive` envelope's); else Ignored."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise Ignored(f"interactivity type {payload.get('type') if isinstance(payload, dict) else None!r} is not handled")
    user, actions = payload.get("user"), payload.get("actions")
    team = (payload.get("team") or {}).get("id") if isinstance(payload.get("team"), dict) else None
    channel = payload.get("channel") if isinstance(payload.get("channel"), dict) else {}
    container = payload.get("container") if isinstance(payload.get("container"), dict) else {}
    if not isinstance(user, dict) or not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise Ignored("block_actions without one action by a user")
    action, user_id, team = actions[0], user.get("id"), team or user.get("team_id")
    channel_id, message_ts, action_ts = channel.get("id"), container.get("message_ts"), action.get("action_ts")
    if not all(isinstance(v, str) and v for v in (team, user_id, channel_id, message_ts, action_ts)):
        raise Ignored("block_actions lacks its team, user, channel, message or action time")
    pressed = parse_callback_token(action.get("value"))
    if pressed is None:
        raise Ignored("a press of a button we did not send")
    channel_type = "im" if channel_id.startswith("D") else "channel"
    metadata = {"channel": channel_id, "ts": message_ts, "channel_type": channel_type, "team": team, "user": user_id,
                "event_type": "block_actions", "button_press": {"delivery_id": pressed[0], "button_id": pressed[1]}}
    if channel_type != "im":  # the answer goes under the question, in its thread, as for a mention
        metadata["thread_ts"] = message_ts
        metadata["conversation"] = f"{team}:{channel_id}:{message_ts}"
    try:
        return IncomingMessage(
            sender=f"{team}:{user_id}", content=action["value"], platform_message_id=f"{channel_id}:press:{action_ts}",
            received_at=_time(action_ts), metadata=metadata,
        )
    except MessageValidationError as exc:
        raise Ignored(f"the press cannot be stored: {exc}")
