"""The fake Bot API's uploads: sendPhoto, sendDocument, sendVoice, sendAudio, sendVideo, sendSticker, sendMediaGroup.

`MediaMethods` is mixed into FakeTelegram (telegram_server.py). Uploads arrive as multipart/form-data (what
python-telegram-bot sends when a request carries a file): `parse_multipart` splits the body into form fields and files.
A single-file method takes its file from the part named after its field ("photo", "document", …); sendMediaGroup's
`media` is a JSON array of InputMedia whose `media` is "attach://<part name>".

Behaviour that follows Telegram's (descriptions as close to Telegram's as known):
- a missing file: 400 "there is no <field> in the request"; an attach:// naming no part: 400;
- a photo over 10 MB: 400 (sendPhoto's limit); a PNG photo whose width and height add up to over 10,000 or differ
  more than 20 times: 400 PHOTO_INVALID_DIMENSIONS; any upload over 50 MB: 413 Request Entity Too Large;
- a sticker must be WEBP, TGS (gzip) or WEBM; captions (not on stickers) are at most 1,024 visible characters,
  checked as Telegram HTML when parse_mode is HTML (telegram_html.py; 400 "can't parse entities" otherwise);
- a media group holds 2-10 items of photo/video/document/audio; documents group only with documents, audio only
  with audio; reply_markup is checked like sendMessage's (button_markup.py); per-chat refusals apply
  (FakeTelegram._chat_refusal);
- answers are Message objects as Telegram sends them: `photo` (an array of sizes), `document`, `voice`, `audio`,
  `video`, `sticker`, with `caption`; a media group's share a media_group_id.
Every accepted upload is recorded in `sent_media` (in order): method, chat_id, reply_markup, reply_parameters,
message_ids and `items`, one per file: type, data, file_name, content_type, caption, parse_mode, visible_caption.
Standard library only, as the fake is.
"""
import email.parser
import email.policy
import hashlib
import itertools
import time

from . import button_markup, telegram_html

PHOTO_MAX_BYTES = 10 * 1024 * 1024
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
MAX_CAPTION_LENGTH = 1024
SINGLE_FILE_METHODS = {"sendPhoto": "photo", "sendDocument": "document", "sendVoice": "voice", "sendAudio": "audio",
                       "sendVideo": "video", "sendSticker": "sticker"}
GROUP_TYPES = ("photo", "video", "document", "audio")
STICKER_SIGNATURES = (b"\x1f\x8b", b"\x1a\x45\xdf\xa3")  # TGS (gzip), WEBM (EBML); WEBP is checked on its own
_media_group_ids = itertools.count(13580000000000001)


def parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict]:
    """({field: text}, {field: {"file_name", "data", "content_type"}}) of a multipart/form-data body."""
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields, files = {}, {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = {"file_name": part.get_filename(), "data": data, "content_type": part.get_content_type()}
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def _error(code, description):
    return {"ok": False, "error_code": code, "description": description}


def _caption(params):
    """(caption, parse_mode, visible caption) of a file, or raises ValueError with Telegram's description."""
    caption, parse_mode = params.get("caption"), params.get("parse_mode") or None
    if caption is None:
        return None, None, None
    visible = caption
    if parse_mode is not None and parse_mode.lower() != "html":
        raise ValueError("Bad Request: unsupported parse_mode")
    if parse_mode is not None:
        try:
            visible = telegram_html.parse(caption)
        except telegram_html.EntityError as exc:
            raise ValueError(f"Bad Request: can't parse entities: {exc}") from exc
    if len(visible.encode("utf-16-le")) // 2 > MAX_CAPTION_LENGTH:
        raise ValueError("Bad Request: message caption is too long")
    return caption, parse_mode, visible


def _file_problem(kind, upload):
    """(status, description) when Telegram would refuse this file, else None."""
    data = upload["data"]
    if not data:
        return 400, "Bad Request: file must be non-empty"
    if len(data) > UPLOAD_MAX_BYTES:
        return 413, "Request Entity Too Large"
    if kind == "photo" and len(data) > PHOTO_MAX_BYTES:
        return 400, "Bad Request: PHOTO_SAVE_FILE_INVALID"
    if kind == "photo" and (size := _png_size(data)) and (sum(size) > 10_000 or max(size) > 20 * min(size)):
        return 400, "Bad Request: PHOTO_INVALID_DIMENSIONS"
    if kind == "sticker" and not (data[:4] == b"RIFF" and data[8:12] == b"WEBP" or data.startswith(STICKER_SIGNATURES)):
        return 400, "Bad Request: wrong file type of the sticker"
    return None


def _png_size(data):
    """(width, height) of a PNG (its IHDR chunk), or None for other bytes."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _file_object(kind, upload):
    """The object Telegram answers for an uploaded file of this kind (photo: an array of sizes)."""
    digest = hashlib.sha256(upload["data"]).hexdigest()
    size = len(upload["data"])
    ids = {"file_id": f"BQACAgQAAxkBAAI{digest[:24]}", "file_unique_id": f"AgAD{digest[:8]}"}
    if kind == "photo":
        return [{**ids, "file_id": ids["file_id"] + "_s", "file_unique_id": ids["file_unique_id"] + "s", "width": 90,
                 "height": 90, "file_size": min(size, 1500)}, {**ids, "width": 800, "height": 800, "file_size": size}]
    named = {"file_name": upload["file_name"], "mime_type": upload["content_type"], "file_size": size}
    if kind == "document":
        return {**ids, **named}
    if kind == "voice":
        return {**ids, "duration": 1, "mime_type": "audio/ogg", "file_size": size}
    if kind == "audio":
        return {**ids, "duration": 1, **named}
    if kind == "video":
        return {**ids, "width": 640, "height": 360, "duration": 1, **named}
    return {**ids, "type": "regular", "width": 512, "height": 512, "is_animated": upload["data"][:2] == b"\x1f\x8b",
            "is_video": upload["data"][:4] == b"\x1a\x45\xdf\xa3", "file_size": size}


class MediaMethods:
    """The upload methods of FakeTelegram (which provides _chat_refusal, _message_ids, _lock, bot_id...)."""

    MEDIA_METHODS = (*SINGLE_FILE_METHODS, "sendMediaGroup")

    def _api_sendPhoto(self, call):
        return self._send_file(call, "photo")

    def _api_sendDocument(self, call):
        return self._send_file(call, "document")

    def _api_sendVoice(self, call):
        return self._send_file(call, "voice")

    def _api_sendAudio(self, call):
        return self._send_file(call, "audio")

    def _api_sendVideo(self, call):
        return self._send_file(call, "video")

    def _api_sendSticker(self, call):
        return self._send_file(call, "sticker")

    def _send_file(self, call, kind):
        chat_id = str(call.params.get("chat_id", ""))
        if not chat_id:
            return 400, _error(400, "Bad Request: chat_id is empty")
        upload = call.files.get(kind)
        if upload is None:
            return 400, _error(400, f"Bad Request: there is no {kind} in the request")
        if problem := _file_problem(kind, upload):
            return problem[0], _error(*problem)
        try:
            caption, parse_mode, visible = _caption(call.params) if kind != "sticker" else (None, None, None)
        except ValueError as exc:
            return 400, _error(400, str(exc))
        markup = call.param("reply_markup")
        if markup is not None and (problem := button_markup.inline_keyboard_problem(markup)):
            return 400, _error(400, f"Bad Request: {problem}")
        if refusal := self._chat_refusal(chat_id):
            return refusal
        message = self._file_message(chat_id, kind, upload, visible)
        item = {"type": kind, "data": upload["data"], "file_name": upload["file_name"],
                "content_type": upload["content_type"], "caption": caption, "parse_mode": parse_mode,
                "visible_caption": visible}
        self._record_media(call, chat_id, [message], [item], markup)
        return 200, {"ok": True, "result": message}

    def _api_sendMediaGroup(self, call):
        chat_id = str(call.params.get("chat_id", ""))
        media = call.param("media")
        if not chat_id:
            return 400, _error(400, "Bad Request: chat_id is empty")
        if not isinstance(media, list) or not all(isinstance(m, dict) for m in media):
            return 400, _error(400, "Bad Request: can't parse InputMedia")
        if not 2 <= len(media) <= 10:
            return 400, _error(400, "Bad Request: wrong number of media items: must be 2-10")
        types = {m.get("type") for m in media}
        if not types <= set(GROUP_TYPES):
            return 400, _error(400, "Bad Request: unsupported media type in the group")
        for alone in ("document", "audio"):
            if alone in types and types != {alone}:
                return 400, _error(400, f"Bad Request: {alone} can't be mixed with other media types")
        items, uploads = [], []
        for entry in media:
            reference = str(entry.get("media", ""))
            upload = call.files.get(reference.removeprefix("attach://")) if reference.startswith("attach://") else None
            if upload is None:
                return 400, _error(400, "Bad Request: wrong file identifier/HTTP URL specified")
            if problem := _file_problem(entry["type"], upload):
                return problem[0], _error(*problem)
            try:
                caption, parse_mode, visible = _caption(entry)
            except ValueError as exc:
                return 400, _error(400, str(exc))
            uploads.append(upload)
            items.append({"type": entry["type"], "data": upload["data"], "file_name": upload["file_name"],
                          "content_type": upload["content_type"], "caption": caption, "parse_mode": parse_mode,
                          "visible_caption": visible})
        if refusal := self._chat_refusal(chat_id):
            return refusal
        group_id = str(next(_media_group_ids))
        messages = [self._file_message(chat_id, item["type"], upload, item["visible_caption"], group_id)
                    for item, upload in zip(items, uploads, strict=True)]
        self._record_media(call, chat_id, messages, items, None)
        return 200, {"ok": True, "result": messages}

    def _file_message(self, chat_id, kind, upload, visible_caption, media_group_id=None):
        numeric = int(chat_id) if chat_id.lstrip("-").isdigit() else -1009999999999
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "BRAIN", "username": self.bot_username},
            "chat": {"id": numeric, "type": "private" if numeric > 0 else "supergroup"},
            kind: _file_object(kind, upload),
        }
        if visible_caption:
            message["caption"] = visible_caption
        if media_group_id:
            message["media_group_id"] = media_group_id
        return message

    def _record_media(self, call, chat_id, messages, items, markup):
        with self._lock:
            self.sent_media.append({"method": call.method, "chat_id": chat_id, "reply_markup": markup,
                                    "reply_parameters": call.param("reply_parameters"), "items": items,
                                    "message_ids": [m["message_id"] for m in messages]})
