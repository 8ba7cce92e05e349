"""Sending files on Telegram: sendPhoto, sendVideo, sendDocument, sendAudio, sendVoice, sendSticker, sendMediaGroup.

Which method carries a file (method_for): an image goes by sendPhoto, but a GIF (sendPhoto would keep one still
frame), a type sendPhoto does not take or an image over the 10 MB photo limit goes as a document, and so does one
sendPhoto refuses (its sides too unequal, say: PHOTO_REFUSALS); a voice note in a format sendVoice takes (OGG/Opus,
MP3, M4A) by sendVoice, other audio by sendAudio (MP3, M4A) or as a document; an MP4 video by sendVideo; a WEBP, TGS
or WEBM sticker by sendSticker; anything else as a document.

How a message becomes Telegram messages (plan): the text, rendered to Telegram HTML as text messages are, is the
caption of the first file when it fits the 1,024-character caption limit (a sticker takes no caption); otherwise it
is sent first as text message(s) and the files follow. A file's own caption is used where the text is not (one too
long for a caption follows its file as text). Two to ten consecutive photos and videos share one sendMediaGroup, as
do consecutive documents or consecutive audio files; the rest go one by one. An inline keyboard rides on the last
message, except that a media group cannot carry one: then it goes on the text sent before the files, or on a short
follow-up text.

Retries: a Telegram error part-way raises ConnectorError like the text path (client.translate), and no progress is
kept, so a failed send re-driven repeats the messages already sent: files are delivered at least once, as the rest
of delivery is.
"""
import logging
from dataclasses import dataclass, replace

from telegram import InputFile, InputMediaAudio, InputMediaDocument, InputMediaPhoto, InputMediaVideo, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated

from connectors.platforms.attachments import (
    AUDIO,
    IMAGE,
    OUTGOING_KINDS,
    STICKER,
    VIDEO,
    VOICE,
    OutgoingAttachment,
)
from connectors.platforms.base import ConnectorError, SendResult
from connectors.platforms.telegram import client
from connectors.platforms.telegram.text import Part, message_parts

logger = logging.getLogger(__name__)

MB = 1024 * 1024
PHOTO_MAX_BYTES = 10 * MB  # the Bot API's limit for sendPhoto
UPLOAD_MAX_BYTES = 50 * MB  # and for every other file a bot uploads
# The caps a send is checked against before its delivery exists (BaseConnector.attachment_max_bytes). Images too may
# be 50 MB: one over the photo limit is sent as a document.
MAX_BYTES_BY_KIND = dict.fromkeys(OUTGOING_KINDS, UPLOAD_MAX_BYTES)
MAX_CAPTION_LENGTH = 1024  # visible characters, counted as for text messages
MAX_GROUP_SIZE = 10  # files per sendMediaGroup

PHOTO_TYPES = {"image/jpeg", "image/jpg", "image/png", "image/webp"}
VOICE_TYPES = {"application/ogg", "audio/ogg", "audio/opus", "audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a",
               "audio/x-m4a"}
AUDIO_TYPES = {"audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a", "audio/x-m4a"}
VIDEO_TYPES = {"video/mp4"}
# A TGS sticker is gzipped JSON: puremagic sees application/gzip.
STICKER_TYPES = {"image/webp", "application/x-tgsticker", "application/gzip", "video/webm"}
# Telegram's descriptions of an image sendPhoto cannot use (a document it takes as it is).
PHOTO_REFUSALS = ("PHOTO_INVALID_DIMENSIONS", "IMAGE_PROCESS_FAILED", "PHOTO_SAVE_FILE_INVALID", "PHOTO_EXT_INVALID")
# Which sent-as methods may share a media group (Telegram mixes photos with videos only); voice notes and stickers
# never go in one.
GROUP_FAMILY = {"photo": "visual", "video": "visual", "document": "document", "audio": "audio"}
INPUT_MEDIA = {"photo": InputMediaPhoto, "video": InputMediaVideo, "document": InputMediaDocument,
               "audio": InputMediaAudio}
# The text of the short message that carries the buttons after a media group (which cannot): points at them.
KEYBOARD_NOTE = "👇"


def method_for(item: OutgoingAttachment) -> str:
    """The Bot API method a file goes by, named as its file field: "photo" (sendPhoto), "document", …"""
    mime = item.mime_type.split(";", 1)[0].strip().lower()
    if item.kind == IMAGE:
        return "photo" if mime in PHOTO_TYPES and item.size <= PHOTO_MAX_BYTES else "document"
    if item.kind == VOICE and mime in VOICE_TYPES:
        return "voice"
    if item.kind in (VOICE, AUDIO):
        return "audio" if mime in AUDIO_TYPES else "document"
    if item.kind == VIDEO:
        return "video" if mime in VIDEO_TYPES else "document"
    if item.kind == STICKER and mime in STICKER_TYPES:
        return "sticker"
    return "document"


@dataclass(frozen=True)
class File:
    """One file as it will be sent: by which method, with which caption (None: none)."""

    position: int
    method: str
    item: OutgoingAttachment
    caption: Part | None = None


def plan(message, with_keyboard=False) -> tuple[list, int | None]:
    """The Telegram messages `message` becomes, in order: each a Part (a text message), a File (sent alone) or a tuple
    of Files (one sendMediaGroup); and which of them carries the inline keyboard (None without one). No I/O."""
    files = [File(position, method_for(item), item) for position, item in enumerate(message.attachments)]
    steps = []
    as_caption = message_parts(message.content, MAX_CAPTION_LENGTH)
    if len(as_caption) == 1 and files[0].method != "sticker":
        files[0] = replace(files[0], caption=as_caption[0])
    else:
        steps.extend(message_parts(message.content))  # nothing when the message is files only
    texts_first = len(steps)
    after = {}  # position → text parts sent after that file: its own caption, where it cannot be one
    for index, file in enumerate(files):
        if file.caption is not None or not file.item.caption.strip():
            continue
        own = message_parts(file.item.caption, MAX_CAPTION_LENGTH)
        if len(own) == 1 and file.method != "sticker":
            files[index] = replace(file, caption=own[0])
        else:
            after[file.position] = message_parts(file.item.caption)
    for unit in _units(files):
        steps.append(unit)
        for file in unit if isinstance(unit, tuple) else (unit,):
            steps.extend(after.get(file.position, ()))
    if not with_keyboard:
        return steps, None
    if not isinstance(steps[-1], tuple):
        return steps, len(steps) - 1
    if texts_first:
        return steps, texts_first - 1
    steps.append(Part(html=KEYBOARD_NOTE, text=KEYBOARD_NOTE))
    return steps, len(steps) - 1


def _units(files):
    """Runs of consecutive files that may share a media group, as tuples (two or more); the other files alone."""
    runs = []
    for file in files:
        family = GROUP_FAMILY.get(file.method)
        last = runs[-1] if runs else None
        if last and family is not None and GROUP_FAMILY.get(last[-1].method) == family and len(last) < MAX_GROUP_SIZE:
            last.append(file)
        else:
            runs.append([file])
    return [tuple(run) if len(run) > 1 else run[0] for run in runs]


async def deliver(bot, chat_id, message, delivery_id, reply_to=None) -> str:
    """Send `message` with its files to `chat_id`, in order (plan). Returns the id of the message that carries the
    buttons, else of the first one. TelegramError (ChatMigrated included) propagates."""
    markup = client.inline_keyboard(message.buttons, delivery_id)
    steps, keyboard_at = plan(message, with_keyboard=markup is not None)
    first_reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
    ids = []
    for index, step in enumerate(steps):
        reply = first_reply if index == 0 else None
        keyboard = markup if index == keyboard_at else None
        if isinstance(step, Part):
            sent = await client.send_part(bot, chat_id, step, reply, keyboard)
        elif isinstance(step, File):
            sent = await _send_file(bot, chat_id, step, reply, keyboard)
        else:
            sent = (await _send_group(bot, chat_id, step, reply))[0]
        ids.append(sent.message_id)
    return str(ids[keyboard_at if keyboard_at is not None else 0])


async def _send_file(bot, chat_id, file, reply, markup):
    """One file by its method. An image Telegram will not take as a photo (its sides too unequal or too large, or
    undecodable to Telegram's photo processing) is sent again as a document, which Telegram takes as it is."""
    try:
        return await _send_file_as(bot, chat_id, file, reply, markup)
    except BadRequest as exc:
        refusal = _photo_refusal(exc)
        if file.method != "photo" or refusal is None:
            raise
        logger.info("Telegram took an image to chat %s as no photo (%s); sending it as a document", chat_id, refusal)
    return await _send_file_as(bot, chat_id, replace(file, method="document"), reply, markup)


def _photo_refusal(exc):
    """Which of PHOTO_REFUSALS Telegram's error names, or None."""
    return next((code for code in PHOTO_REFUSALS if code in str(exc).upper()), None)


async def _send_file_as(bot, chat_id, file, reply, markup):
    send = getattr(bot, f"send_{file.method}")
    upload = InputFile(file.item.read(), filename=file.item.file_name or None)
    fields = {"chat_id": chat_id, file.method: upload, "reply_parameters": reply, "reply_markup": markup}
    if file.caption is None:
        return await send(**fields)
    return await _with_plain_fallback(lambda html: send(**fields, **_caption(file.caption, html)), chat_id)


async def _send_group(bot, chat_id, files, reply):
    """The files as one album; if Telegram takes one of its images as no photo, each file alone (_send_file sends
    that image as a document, which an album of photos cannot hold). Telegram refuses the album whole: nothing of it
    was sent before."""
    try:
        return await _send_album(bot, chat_id, files, reply)
    except BadRequest as exc:
        refusal = _photo_refusal(exc)
        if refusal is None:
            raise
        logger.info("Telegram took an image of an album to chat %s as no photo (%s); sending the files one by one",
                    chat_id, refusal)
    sent = []
    for index, file in enumerate(files):
        sent.append(await _send_file(bot, chat_id, file, reply if index == 0 else None, None))
    return sent


async def _send_album(bot, chat_id, files, reply):
    contents = [file.item.read() for file in files]

    def media(html):
        return [INPUT_MEDIA[file.method](media=data, filename=file.item.file_name or None,
                                         **(_caption(file.caption, html) if file.caption else {}))
                for file, data in zip(files, contents, strict=True)]

    if not any(file.caption for file in files):
        return await bot.send_media_group(chat_id=chat_id, media=media(False), reply_parameters=reply)
    return await _with_plain_fallback(
        lambda html: bot.send_media_group(chat_id=chat_id, media=media(html), reply_parameters=reply), chat_id)


def _caption(part, html):
    return {"caption": part.html, "parse_mode": ParseMode.HTML} if html else {"caption": part.text}


async def _with_plain_fallback(send, chat_id):
    """`await send(html=True)`; if Telegram cannot parse the caption's entities, the same again with plain-text
    captions (as client.send_part does for texts) rather than fail the delivery over formatting."""
    try:
        return await send(True)
    except BadRequest as exc:
        if "can't parse entities" not in str(exc).lower():
            raise
        # Telegram's error quotes the offending markup (message content): it stays out of the log.
        logger.warning("Telegram could not parse the formatting of a caption to chat %s; sent as plain text", chat_id)
    return await send(False)


def send(api, save_state, message, delivery_id, chat_id, reply_to=None) -> SendResult:
    """deliver() through the connector's `api` (TelegramConnector._api: errors become ConnectorError), following a
    group that became a supergroup; `save_state(**fields)` remembers the move in the connector's platform_state, as
    for texts. Telegram refuses a send to a moved chat before anything is sent, so following it repeats nothing."""
    for moves in range(2):  # a chat moves once, group → supergroup
        try:
            message_id = api(lambda bot, c=chat_id, r=reply_to: deliver(bot, c, message, delivery_id, r),
                             follow_migrations=True)
            return SendResult(platform_message_id=message_id)
        except ChatMigrated as exc:
            if moves:
                break
            logger.info("Telegram chat %s moved to %s; following it", chat_id, exc.new_chat_id)
            save_state(**{f"migrated_chat:{chat_id}": exc.new_chat_id})
            chat_id, reply_to = str(exc.new_chat_id), None  # the message replied to stayed in the old chat
    raise ConnectorError(f"Telegram kept moving chat {chat_id}; giving up.", permanent=True, code="chat_migrated")
