"""Telegram updates → IncomingMessage (pure: no I/O, no database).

One parser serves webhooks and polling. The dedupe key (`platform_message_id`) is the update_id,
which Telegram never reuses for one bot, so an edit (a new update about an old message) is a
new inbound message, and a redelivered update is recognised.

Handled: text messages (and media captions), edited messages (metadata["edited"]), voice
messages (a file reference: content "[voice message]", file_id and duration in metadata),
callback queries (content = the button's data). In groups, only messages that mention the bot
or reply to it. Everything else raises Ignored.
"""
import json
from datetime import timezone as dt_timezone

from telegram import Message, MessageEntity, Update

from connectors.platforms.base import IncomingMessage, MessageValidationError

HANDLED_UPDATE_TYPES = ("message", "edited_message", "callback_query")
VOICE_PLACEHOLDER = "[voice message]"


class Ignored(Exception):
    """An update we acknowledge and drop (the reason is the message)."""


def update_from_body(body: bytes) -> Update:
    """A webhook body → a PTB Update. Malformed JSON or shapes raise Ignored."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past any real update
        raise Ignored("malformed update: the body is not JSON")
    return update_from_data(data)


def update_from_data(data) -> Update:
    """A decoded update (a webhook body, or one raw item of getUpdates) → a PTB Update."""
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int) or isinstance(data["update_id"], bool):
        raise Ignored("malformed update: no integer update_id")
    kinds = [key for key in data if key != "update_id"]
    if not any(kind in HANDLED_UPDATE_TYPES for kind in kinds):
        raise Ignored(f"unsupported update type: {', '.join(sorted(kinds)) or 'none'}")
    try:
        return Update.de_json(data, None)
    except Exception as exc:  # PTB raises TypeError, KeyError, AttributeError… on wrong shapes
        raise Ignored(f"malformed update: {type(exc).__name__}")


def parse_update(update: Update, bot: dict) -> IncomingMessage:
    """`bot` is the bot's identity ({"id", "username"}), to recognise mentions in groups.
    Raises Ignored only."""
    try:
        return _parse_update(update, bot)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        # PTB builds objects without checking field types ("text": 7 stays an int), so a wrong
        # shape surfaces only here: the same malformed update update_from_data refuses.
        raise Ignored(f"malformed update: {type(exc).__name__}")


def _parse_update(update: Update, bot: dict) -> IncomingMessage:
    if update.callback_query is not None:
        return _callback_query(update)
    message = update.message or update.edited_message
    if message is None:
        raise Ignored("unsupported update type")
    edited = update.edited_message is not None
    if message.chat.type != "private" and not _addressed_to_bot(message, bot):
        raise Ignored("group message not addressed to the bot")
    user = message.from_user
    if user is None:  # channel posts forwarded into a group, anonymous admins, …
        raise Ignored("message without a sender")
    metadata = {
        "update_id": update.update_id,
        "message_id": message.message_id,
        "chat_id": message.chat.id,
        "chat_type": str(message.chat.type),
        "user_id": user.id,
    }
    if user.username:
        metadata["username"] = user.username
    if message.chat.title:
        metadata["chat_title"] = message.chat.title
    if edited:
        metadata["edited"] = True
        if message.edit_date:
            metadata["edit_date"] = message.edit_date.astimezone(dt_timezone.utc).isoformat()
    if message.voice is not None:
        content = VOICE_PLACEHOLDER
        voice = message.voice.to_dict()  # plain JSON values (PTB's `duration` attribute is in flux)
        metadata.update(
            type="voice",
            file_id=voice["file_id"],
            file_unique_id=voice.get("file_unique_id", ""),
            duration=voice.get("duration"),
            mime_type=voice.get("mime_type", ""),
        )
    elif message.text:
        content = message.text
        metadata["type"] = "text"
        command = _start_payload(message)
        if command is not None:
            metadata["start_payload"] = command
    elif message.caption:
        content = message.caption
        metadata["type"] = "caption"
    else:
        raise Ignored("message without text, caption or voice")
    # The time the person wrote (or edited) it, so a backlog fetched late keeps its real order.
    received_at = (message.edit_date if edited else None) or message.date
    return _incoming(update, user, content, metadata, chat_id=message.chat.id, received_at=received_at)


def _callback_query(update: Update) -> IncomingMessage:
    query = update.callback_query
    if not query.data:
        raise Ignored("callback query without data (a game)")
    message = query.message
    # Replies go to the chat the button was in; inline-mode buttons have no message: the user.
    chat_id = message.chat.id if message is not None else query.from_user.id
    metadata = {
        "update_id": update.update_id,
        "type": "callback_query",
        "callback_query_id": query.id,
        "chat_id": chat_id,
        "user_id": query.from_user.id,
    }
    if query.from_user.username:
        metadata["username"] = query.from_user.username
    if message is not None:
        metadata["message_id"] = message.message_id
    # received_at stays unset (now): the button's message is older than the click.
    return _incoming(update, query.from_user, query.data, metadata, chat_id=chat_id, received_at=None)


def _incoming(update, user, content, metadata, *, chat_id, received_at):
    try:
        return IncomingMessage(
            sender=str(chat_id),  # the chat, so that replies go back where the person wrote
            sender_name=(user.full_name or user.username or "")[:200],
            content=content,
            platform_message_id=str(update.update_id),
            received_at=received_at,
            metadata=metadata,
        )
    except MessageValidationError as exc:  # e.g. a text over 10,000 characters (Telegram caps at 4,096)
        raise Ignored(f"invalid message: {exc}")


def _addressed_to_bot(message: Message, bot: dict) -> bool:
    bot_id = bot.get("id")
    username = (bot.get("username") or "").lower()
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and bot_id and replied.from_user.id == bot_id:
        return True
    entities = message.parse_entities() if message.text else message.parse_caption_entities()
    for entity, text in entities.items():
        text = text.strip().lower()
        if entity.type == MessageEntity.MENTION and username and text == f"@{username}":
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id:
            return True
        if entity.type == MessageEntity.BOT_COMMAND and username and text.endswith(f"@{username}"):
            return True
    return False


def _start_payload(message: Message):
    """`/start <payload>` (a deep link t.me/<bot>?start=<payload>): the payload, else None."""
    text = message.text.strip()
    if not (text == "/start" or text.startswith("/start ") or text.startswith("/start@")):
        return None
    _, _, payload = text.partition(" ")
    return payload.strip()
