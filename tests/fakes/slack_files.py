"""FakeSlack's file hosting: shared files to download, and the external upload flow (files_upload_v2) to upload.

Download: `add_file(file_id, bytes, mimetype, name)` serves them at `GET /files-pri/<team>-<id>/download/<name>` (the
returned URL) to `Authorization: Bearer <bot token>`; without a valid one the answer is a sign-in web page (HTML,
200), as Slack's is. `file_downloads` lists (path, token) per request.

Upload, as Slack's documentation describes it:
- files.getUploadURLExternal(filename, length[, alt_txt]) → {"ok", "upload_url", "file_id"}; the upload_url is
  `http://127.0.0.1:<port>/upload/v1/<opaque>` (`upload_base` replaces its origin, to point it elsewhere).
- `POST /upload/v1/<opaque>`: the bytes, raw or as a multipart `file` field; answers 200 "OK - <length>". Each
  request is kept in `upload_posts` (path, headers, body); `fail_uploads(status, times)` answers that status instead.
- files.completeUploadExternal(files=[{"id", "title"}], channel_id, initial_comment, thread_ts) → {"ok", "files":
  [{"id", "title"}]} (the documented shape). With `shares_in_response` the files are full file objects whose
  `shares` name the message each share made, as Slack answers when sharing finished in time. The channel rules are
  chat.postMessage's (forget_channel, kick_from); a file not uploaded (or unknown) is file_not_found. Each accepted
  call is kept in `shared`: channel, initial_comment, thread_ts, ts, files (id, name, title, data, length).
"""
import json
import uuid

from aiohttp import web


class SlackFiles:
    """Mixed into FakeSlack (which provides host, port, team_id, _lock, _auth_error, _next_ts, the channel sets)."""

    def _init_files(self):
        self.files = {}  # path → (bytes, mimetype)
        self.file_downloads = []  # the server routes GET /files-pri/{file}/download/{name} to _handle_file
        self.upload_base = None  # e.g. "http://127.0.0.1:<other port>": where upload_urls point instead
        self.shares_in_response = False
        self.upload_posts = []  # (path, headers, body) of every POST to an upload_url
        self.shared = []  # completed uploads, in order
        self._pending_uploads = {}  # opaque → {"id", "name", "length", "alt_txt", "data"}
        self._upload_failures = []  # HTTP statuses for the next upload POSTs

    def add_file(self, file_id, data, mimetype="application/octet-stream", name="file.bin"):
        path = f"/files-pri/{self.team_id}-{file_id}/download/{name}"
        self.files[path] = (data, mimetype)
        return f"http://{self.host}:{self.port}{path}"

    def fail_uploads(self, status=500, times=1):
        with self._lock:
            self._upload_failures.extend([status] * times)

    @property
    def uploaded(self):
        """Every file of every completed upload, in order: dicts of id, name, title, data, length."""
        return [file for share in self.shared for file in share["files"]]

    async def _handle_file(self, request):
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        with self._lock:
            self.file_downloads.append((request.path, token))
        if not token or self._auth_error("files.download", token):
            return web.Response(text="<!DOCTYPE html><html><body>Sign in to Slack</body></html>",
                                content_type="text/html")
        if request.path not in self.files:
            return web.Response(status=404, text="file_not_found")
        data, mimetype = self.files[request.path]
        return web.Response(body=data, content_type=mimetype)

    # --- the external upload flow ---
    def _api_files_getUploadURLExternal(self, call):
        name, length = call.params.get("filename"), str(call.params.get("length") or "")
        if not name or not length.isdigit():
            return 200, {"ok": False, "error": "invalid_arguments"}
        opaque, file_id = uuid.uuid4().hex, "F" + uuid.uuid4().hex[:10].upper()
        with self._lock:
            self._pending_uploads[opaque] = {"id": file_id, "name": name, "length": int(length),
                                             "alt_txt": call.params.get("alt_txt"), "data": None}
        base = self.upload_base or f"http://{self.host}:{self.port}"
        return 200, {"ok": True, "upload_url": f"{base}/upload/v1/{opaque}", "file_id": file_id}

    async def _handle_upload(self, request):
        if request.content_type.startswith("multipart/"):
            field = (await request.post()).get("file")
            body = field.file.read() if hasattr(field, "file") else b""
        else:
            body = await request.read()
        with self._lock:
            self.upload_posts.append((request.path, dict(request.headers), body))
            status = self._upload_failures.pop(0) if self._upload_failures else 200
            pending = self._pending_uploads.get(request.match_info["opaque"])
            if status == 200 and pending is None:
                status = 404
            if status == 200:
                pending["data"] = body
            self._lock.notify_all()
        return web.Response(status=status, text=f"OK - {len(body)}" if status == 200 else "upload failed")

    def _api_files_completeUploadExternal(self, call):
        try:
            wanted = call.params.get("files")
            wanted = json.loads(wanted) if isinstance(wanted, str) else wanted
            ids = [(item["id"], item.get("title")) for item in wanted]
        except (TypeError, ValueError, KeyError):
            return 200, {"ok": False, "error": "invalid_arguments"}
        channel = str(call.params.get("channel_id") or "")
        if channel and (channel in self.missing_channels or channel[:1] not in ("C", "D", "G")):
            return 200, {"ok": False, "error": "channel_not_found"}
        if channel in self.kicked_channels:
            return 200, {"ok": False, "error": "not_in_channel"}
        with self._lock:
            by_id = {p["id"]: (opaque, p) for opaque, p in self._pending_uploads.items()}
            if not ids or any(file_id not in by_id or by_id[file_id][1]["data"] is None for file_id, _ in ids):
                return 200, {"ok": False, "error": "file_not_found"}
            files = []
            for file_id, title in ids:
                opaque, pending = by_id[file_id]
                del self._pending_uploads[opaque]
                files.append({"id": file_id, "name": pending["name"], "title": title or pending["name"],
                              "data": pending["data"], "length": pending["length"]})
        ts = self._next_ts() if channel else None
        thread_ts = call.params.get("thread_ts") or None
        with self._lock:
            self.shared.append({"channel": channel, "initial_comment": call.params.get("initial_comment"),
                                "thread_ts": thread_ts, "ts": ts, "files": files})
        if not self.shares_in_response:
            return 200, {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in files]}
        share = {"ts": ts, "channel_name": channel.lower(), "team_id": self.team_id, "share_user_id": self.user_id,
                 **({"thread_ts": thread_ts} if thread_ts else {})}
        kind = "private" if channel[:1] in ("D", "G") else "public"
        return 200, {"ok": True, "files": [
            {"id": f["id"], "name": f["name"], "title": f["title"], "size": len(f["data"]), "user": self.user_id,
             "shares": {kind: {channel: [share]}} if channel else {}, "channels": [channel] if kind == "public" else [],
             "groups": [channel] if kind == "private" else []}
            for f in files]}
