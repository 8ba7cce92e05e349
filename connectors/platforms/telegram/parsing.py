"""Telegram updates → IncomingMessage (pure: no I/O, no database).

One parser serves webhooks and polling. The dedupe key (`platform_message_id`) is the update_id,
which Telegram never reuses for one bot, so an edit (a new update about an old message) is a
new inbound message, and a redelivered update is recognised.

Handled: text messages, edited messages (metadata["edited"]), media (photo, document, voice, audio,
video, video note, sticker, location, venue, contact: `attachments`, content = the caption or ""), callback
queries (content = the button's data). In groups, only messages that mention the bot or reply to it.
Everything else raises Ignored. Files are only referenced here (file_id); connectors/delivery/attachments.py
fetches them after the message is stored.
"""
import json
from datetime import timezone as dt_timezone

from telegram import Message, MessageEntity, Update

from connectors.platforms import attachments as kinds
from connectors.platforms.base import Attachment, IncomingMessage, MessageValidationError
from connectors.platforms.buttons import parse_callback_token

HANDLED_UPDATE_TYPES = ("message", "edited_message", "callback_query")
# Telegram re-encodes every photo as JPEG; sticker formats by their flags (Bot API "Sticker").
PHOTO_MIME = "image/jpeg"
STICKER_MIMES = {"animated": "application/x-tgsticker", "video": "video/webm", "static": "image/webp"}


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
    attachments = _attachments(message)
    if message.text:
        content = message.text
        metadata["type"] = "text"
        command = _start_payload(message)
        if command is not None:
            metadata["start_payload"] = command
    elif attachments:
        content = message.caption or ""
        metadata["type"] = attachments[0].kind
        if message.voice is not None:
            metadata["duration"] = message.voice.to_dict().get("duration")  # plain JSON (PTB's attribute is in flux)
    elif message.caption:  # a caption on media we do not take (an animation's own fields, a game…)
        content = message.caption
        metadata["type"] = "caption"
    else:
        raise Ignored("message without text, caption or a supported attachment")
    # The time the person wrote (or edited) it, so a backlog fetched late keeps its real order.
    received_at = (message.edit_date if edited else None) or message.date
    return _incoming(update, user, content, metadata, chat_id=message.chat.id, received_at=received_at,
                     attachments=attachments)


def _attachments(message: Message) -> tuple:
    """The message's media as Attachments (at most one: a Telegram message carries one; albums are several)."""
    caption = message.caption or ""
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        return (_file(kinds.IMAGE, largest, caption, mime_type=PHOTO_MIME),)
    for kind, media in ((kinds.VOICE, message.voice), (kinds.AUDIO, message.audio), (kinds.VIDEO, message.video),
                        (kinds.VIDEO, message.video_note), (kinds.DOCUMENT, message.document)):
        if media is not None:
            return (_file(kind, media, caption),)
    if message.sticker is not None:
        sticker = message.sticker
        flavour = "animated" if sticker.is_animated else "video" if sticker.is_video else "static"
        return (_file(kinds.STICKER, sticker, caption, mime_type=STICKER_MIMES[flavour]),)
    if message.location is not None:  # venues carry their location too
        return (Attachment(kind=kinds.LOCATION, latitude=message.location.latitude,
                           longitude=message.location.longitude, caption=caption),)
    if message.contact is not None:
        contact = message.contact
        card = contact.vcard or "\n".join(filter(None, (contact.phone_number, contact.first_name, contact.last_name)))
        return (Attachment(kind=kinds.CONTACT, platform_ref=card[: kinds.MAX_PLATFORM_REF_LENGTH], caption=caption),)
    return ()


def _file(kind, media, caption, mime_type=None):
    size = media.file_size
    return Attachment(
        kind=kind,
        mime_type=mime_type or getattr(media, "mime_type", None) or "",
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        file_name=(getattr(media, "file_name", None) or "")[: kinds.MAX_FILE_NAME_LENGTH],
        caption=caption,
        platform_ref=media.file_id,
    )


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
    if pressed := parse_callback_token(query.data):  # one of our buttons: a claim, checked when it is stored
        metadata["button_press"] = {"delivery_id": pressed[0], "button_id": pressed[1]}
    # received_at stays unset (now): the button's message is older than the click.
    return _incoming(update, query.from_user, query.data, metadata, chat_id=chat_id, received_at=None)


def _incoming(update, user, content, metadata, *, chat_id, received_at, attachments=()):
    try:
        return IncomingMessage(
            sender=str(chat_id),  # the chat, so that replies go back where the person wrote
            sender_name=(user.full_name or user.username or "")[:200],
            content=content,
            platform_message_id=str(update.update_id),
            received_at=received_at,
            metadata=metadata,
            attachments=attachments,
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
