"""Buttons on an outbound message: their validation, the numbered-options text, and the Telegram callback token."""
import re
import uuid

MAX_BUTTONS = 8
MAX_BUTTON_LABEL = 64
# A button id travels in Telegram's callback_data (at most 64 bytes) inside "b:<32 hex>:<id>": 35 bytes are taken.
MAX_BUTTON_ID = 24
BUTTON_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,%d}" % MAX_BUTTON_ID)
CALLBACK_PREFIX = "b:"
# "1", "1.", " 2 ", "#3": what a person types to pick a numbered option.
NUMBERED_REPLY = re.compile(r"\s*#?(\d{1,2})[.)]?\s*")


def button_problems(buttons) -> str | None:
    """Why `buttons` (a list of {"id", "label"}) cannot go with a message, or None."""
    if not isinstance(buttons, (list, tuple)):
        return "must be a list"
    if len(buttons) > MAX_BUTTONS:
        return f"at most {MAX_BUTTONS} buttons (got {len(buttons)})"
    seen = set()
    for index, button in enumerate(buttons):
        if not isinstance(button, dict) or set(button) != {"id", "label"}:
            return f"button {index + 1} must be an object with exactly id and label"
        button_id, label = button["id"], button["label"]
        if not isinstance(button_id, str) or not BUTTON_ID_PATTERN.fullmatch(button_id):
            return f"button {index + 1}: id must be 1-{MAX_BUTTON_ID} letters, digits, '_', '.' or '-'"
        if button_id in seen:
            return f"button {index + 1}: id {button_id!r} is used twice"
        seen.add(button_id)
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_BUTTON_LABEL:
            return f"button {index + 1}: label must be 1-{MAX_BUTTON_LABEL} characters"
        if not label.isprintable():
            return f"button {index + 1}: label must be printable (no line breaks or control characters)"
    return None


def clean_buttons(buttons) -> list[dict]:
    """Valid buttons, as stored (labels trimmed). Call button_problems first."""
    return [{"id": b["id"], "label": b["label"].strip()} for b in buttons or ()]


def numbered_options(content: str, buttons) -> str:
    """`content` followed by the options as numbered lines, for platforms without buttons (SMS, WhatsApp, email)."""
    if not buttons:
        return content
    lines = [f"Reply {number} for {button['label']}" for number, button in enumerate(buttons, start=1)]
    return content.rstrip() + "\n\n" + "\n".join(lines)


def numbered_choice(content: str, buttons):
    """The button a numbered reply ("2") picks among `buttons`, or None."""
    match = NUMBERED_REPLY.fullmatch(content or "")
    if not match:
        return None
    number = int(match.group(1))
    return buttons[number - 1] if 1 <= number <= len(buttons) else None


def callback_token(delivery_id, button_id: str) -> str:
    """Telegram's callback_data for one button: "b:<delivery id as 32 hex>:<button id>" (≤ 64 bytes)."""
    return f"{CALLBACK_PREFIX}{uuid.UUID(str(delivery_id)).hex}:{button_id}"


def parse_callback_token(data: str):
    """(delivery id, button id) from a callback token, or None. Never trusted: the caller checks both in the
    database (connectors/delivery/presses.py)."""
    if not isinstance(data, str) or not data.startswith(CALLBACK_PREFIX):
        return None
    short, _, button_id = data[len(CALLBACK_PREFIX):].partition(":")
    if not re.fullmatch(r"[0-9a-f]{32}", short) or not BUTTON_ID_PATTERN.fullmatch(button_id):
        return None
    return str(uuid.UUID(short)), button_id
