"""FakeSlack's file host: shared files served at their url_private_download to the bot token, as Slack does.

`add_file(file_id, bytes, mimetype, name)` serves them at `GET /files-pri/<team>-<id>/download/<name>` (the returned
URL) to `Authorization: Bearer <bot token>`; without a valid one the answer is a sign-in web page (HTML, 200), as
Slack's is. `file_downloads` lists (path, token) per request.
"""
from aiohttp import web


class SlackFiles:
    """Mixed into FakeSlack (which provides host, port, team_id, _lock and _auth_error)."""

    def _init_files(self):
        self.files = {}  # path → (bytes, mimetype)
        self.file_downloads = []  # the server routes GET /files-pri/{file}/download/{name} to _handle_file

    def add_file(self, file_id, data, mimetype="application/octet-stream", name="file.bin"):
        path = f"/files-pri/{self.team_id}-{file_id}/download/{name}"
        self.files[path] = (data, mimetype)
        return f"http://{self.host}:{self.port}{path}"

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
