"""The fake Telegram's Bot API methods (getMe, sendMessage, webhooks, getFile, getUpdates...): FakeTelegram's mixin.

Answered from the server's state; the server, its routing and its failure modes are telegram_server.py.
"""

import re
import time

from . import button_markup, telegram_html

SECRET_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# The actions sendChatAction accepts (https://core.telegram.org/bots/api#sendchataction).
CHAT_ACTIONS = ("typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
                "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note")
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile refuses larger files


class BotMethods:
    """The methods answered from the server's state (FakeTelegram provides bot_id, _lock, sent, webhook, files...)."""

    # --- methods ---
    def _me(self):
        return {"id": self.bot_id, "is_bot": True, "first_name": "BRAIN", "username": self.bot_username,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def _api_getMe(self, call):
        return 200, {"ok": True, "result": self._me()}

    def _chat_refusal(self, chat_id):
        """Telegram's answer to a call for a chat that moved, blocked the bot or does not exist; None if none."""
        if chat_id in self.migrated_chats:
            return 400, _error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                               parameters={"migrate_to_chat_id": self.migrated_chats[chat_id]})
        if chat_id in self.blocked_chats:
            return 403, _error(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.missing_chats or not re.match(r"^(-?[0-9]+|@[A-Za-z0-9_]+)$", chat_id):
            return 400, _error(400, "Bad Request: chat not found")
        return None

    def _api_sendMessage(self, call):
        chat_id = str(call.params.get("chat_id", ""))
        text = call.params.get("text")
        if not chat_id:
            return 400, _error(400, "Bad Request: chat_id is empty")
        if not isinstance(text, str):
            return 400, _error(400, "Bad Request: message text is empty")
        parse_mode = call.params.get("parse_mode") or None
        visible = text
        if parse_mode is not None and parse_mode.lower() != "html":
            return 400, _error(400, "Bad Request: unsupported parse_mode")
        if parse_mode is not None:
            try:
                visible = telegram_html.parse(text)
            except telegram_html.EntityError as exc:
                return 400, _error(400, f"Bad Request: can't parse entities: {exc}")
        if not visible.strip():
            return 400, _error(400, "Bad Request: message text is empty")
        if len(visible.encode("utf-16-le")) // 2 > 4096:
            return 400, _error(400, "Bad Request: message is too long")
        markup = call.param("reply_markup")
        if markup is not None and (problem := button_markup.inline_keyboard_problem(markup)):
            return 400, _error(400, f"Bad Request: {problem}")
        if refusal := self._chat_refusal(chat_id):
            return refusal
        numeric = int(chat_id) if chat_id.lstrip("-").isdigit() else -1009999999999
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "BRAIN", "username": self.bot_username},
            "chat": {"id": numeric, "type": "private" if numeric > 0 else "supergroup"},
            "text": visible,
        }
        reply = call.param("reply_parameters")
        if isinstance(reply, dict):
            message["reply_to_message_id"] = reply.get("message_id")  # recorded for inspection only
        with self._lock:
            self.sent.append({"chat_id": chat_id, "text": text, "parse_mode": parse_mode, "visible_text": visible,
                              "message_id": message["message_id"], "reply_parameters": reply,
                              "reply_markup": markup})
        return 200, {"ok": True, "result": message}

    def _api_sendChatAction(self, call):
        chat_id = str(call.params.get("chat_id", ""))
        action = call.params.get("action")
        if not chat_id:
            return 400, _error(400, "Bad Request: chat_id is empty")
        if action not in CHAT_ACTIONS:
            return 400, _error(400, "Bad Request: wrong parameter action in request")
        if refusal := self._chat_refusal(chat_id):
            return refusal
        with self._lock:
            self.chat_actions.append({"chat_id": chat_id, "action": action})
        return 200, {"ok": True, "result": True}

    def _api_setWebhook(self, call):
        url = call.params.get("url", "")
        secret = call.params.get("secret_token")
        if not url:
            return self._api_deleteWebhook(call)
        if not url.startswith("https://") and not self.allow_http_webhooks:
            return 400, _error(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        if secret is not None and not SECRET_TOKEN_PATTERN.match(secret):
            return 400, _error(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = {"url": url, "secret_token": secret, "allowed_updates": call.param("allowed_updates")}
        if call.param("drop_pending_updates") is True:
            with self._lock:
                self._updates.clear()
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def _api_deleteWebhook(self, call):
        was_set = bool(self.webhook)
        self.webhook = {}
        if call.param("drop_pending_updates") is True:
            with self._lock:
                self._updates.clear()
        return 200, {"ok": True, "result": True,
                     "description": "Webhook was deleted" if was_set else "Webhook is already deleted"}

    def _api_getWebhookInfo(self, call):
        result = {"url": self.webhook.get("url", ""), "has_custom_certificate": False,
                  "pending_update_count": len(self.pending_updates)}
        if self.webhook.get("allowed_updates") is not None:
            result["allowed_updates"] = self.webhook["allowed_updates"]
        return 200, {"ok": True, "result": result}

    def _api_answerCallbackQuery(self, call):
        if not call.params.get("callback_query_id"):
            return 400, _error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        return 200, {"ok": True, "result": True}

    def _api_getFile(self, call):
        entry = self.files.get(str(call.params.get("file_id", "")))
        if entry is None:
            return 400, _error(400, "Bad Request: invalid file_id")
        if entry["size"] > MAX_DOWNLOAD_BYTES:
            return 400, _error(400, "Bad Request: file is too big")
        return 200, {"ok": True, "result": {"file_id": call.params["file_id"], "file_unique_id": entry["file_unique_id"],
                                            "file_size": entry["size"], "file_path": entry["file_path"]}}

    def _api_getUpdates(self, call):
        if self.webhook:
            return 409, _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                                    "use deleteWebhook to delete the webhook first")
        try:
            offset = int(call.params["offset"]) if call.params.get("offset") not in (None, "") else None
            limit = int(call.params.get("limit") or 100)
            timeout = float(call.params.get("timeout") or 0)
        except (TypeError, ValueError):
            return 400, _error(400, "Bad Request: wrong parameter")
        deadline = time.monotonic() + min(timeout, self.max_long_poll)
        with self._lock:
            if offset is not None:  # confirms everything before it
                while self._updates and self._updates[0]["update_id"] < offset:
                    self._updates.popleft()
            generation = self._poll_generation[call.token] = self._poll_generation.get(call.token, 0) + 1
            self._lock.notify_all()  # a getUpdates already waiting for this bot must give way
            while True:
                if generation != self._poll_generation[call.token]:  # a newer getUpdates for this bot arrived
                    self.get_updates_conflicts += 1
                    return 409, _error(409, "Conflict: terminated by other getUpdates request; make sure that "
                                            "only one bot instance is running")
                ready = [u for u in self._updates if offset is None or u["update_id"] >= offset][:limit]
                remaining = deadline - time.monotonic()
                if ready or remaining <= 0 or self._stopping.is_set():
                    return 200, {"ok": True, "result": ready}
                self._lock.wait(min(remaining, 0.1))


def _error(code, description, parameters=None):
    payload = {"ok": False, "error_code": code, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return payload

