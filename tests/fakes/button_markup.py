"""What the Bot API and Slack refuse in the button markup the connectors send, for the loopback fakes."""
import json


def inline_keyboard_problem(markup):
    """What the Bot API says of a bad InlineKeyboardMarkup: rows of buttons, each a text and 1-64 bytes of
    callback_data (other button kinds are not used by the connectors)."""
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        return "can't parse reply keyboard markup JSON object"
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not str(button.get("text", "")).strip():
            return "BUTTON_TEXT_INVALID"
        data = button.get("callback_data")
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
            return "BUTTON_DATA_INVALID"
    return None


def decoded(blocks):
    """chat.postMessage's blocks as sent: a JSON body keeps the list; a form-encoded call sends a JSON string."""
    if isinstance(blocks, str):
        try:
            return json.loads(blocks)
        except ValueError:
            return blocks
    return blocks


def slack_blocks_refusal(blocks):
    """Slack's error code for the blocks of a chat.postMessage call, or None (also when there are none)."""
    if blocks is None:
        return None
    blocks = decoded(blocks)
    if isinstance(blocks, str):
        return "invalid_blocks_format"
    return "invalid_blocks" if blocks_problem(blocks) else None


def blocks_problem(blocks):
    """What Slack refuses (invalid_blocks) among the blocks the connectors send: a section of mrkdwn text (at most
    3,000 characters) and an actions block of at most 25 buttons (plain_text label ≤ 75, unique action_id ≤ 255,
    value ≤ 2,000)."""
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return "blocks must be a list of 1-50"
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "section":
            text = block.get("text") or {}
            if text.get("type") not in ("mrkdwn", "plain_text") or not 0 < len(text.get("text") or "") <= 3000:
                return "section text"
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                return "actions elements"
            ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
            if len(set(ids)) != len(elements):
                return "action_id must be unique"
            for e in elements:
                label = (e.get("text") or {}) if e.get("type") == "button" else {}
                if label.get("type") != "plain_text" or not 0 < len(label.get("text") or "") <= 75:
                    return "button text"
                if not 0 < len(str(e.get("action_id") or "")) <= 255 or len(str(e.get("value") or "")) > 2000:
                    return "button action_id or value"
        else:
            return f"block type {kind!r} is not used by the connectors"
    return None
