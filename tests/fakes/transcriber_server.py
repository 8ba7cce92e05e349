"""A loopback fake OpenAI-compatible transcription server (POST /v1/audio/transcriptions), as local Whisper servers.

    fake = FakeTranscriber(text="hello there").start()   # 127.0.0.1, a free port, a background thread
    fake.url                                             # http://127.0.0.1:<port> (the base URL)
    fake.texts[b"<audio bytes>"] = "what they said"      # per file, else `text`
    fake.mode = "error_500"                              # normal | error_500 | garbage | no_text
    fake.requests                                        # every request: model, file name, type, bytes, auth
    fake.down()                                          # connection refused, same `.url`

It parses the multipart/form-data body as the real servers do (the `file` part and the `model` field are required:
400 otherwise) with the standard library's email parser, so bench scripts can import it without extra packages.
With `api_key` set, a request without `Authorization: Bearer <api_key>` gets 401 as OpenAI answers it.
"""
import json
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

from .base import LoopbackServer, QuietHandler

MODES = ("normal", "error_500", "garbage", "no_text")
PATH = "/v1/audio/transcriptions"


@dataclass
class TranscriptionRequest:
    path: str
    authorization: str
    model: str = ""
    file_name: str = ""
    file_type: str = ""
    data: bytes = b""
    fields: dict = field(default_factory=dict)
    status: int = 0


def parse_form(content_type: str, body: bytes) -> dict:
    """name → (value bytes, filename or None, part content type) of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise ValueError("not multipart")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[name] = (part.get_payload(decode=True) or b"", part.get_filename(), part.get_content_type())
    return parts


class _Handler(QuietHandler):
    server_version = "FakeTranscriber/1.0"

    def do_POST(self):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = TranscriptionRequest(path=self.path, authorization=self.headers.get("Authorization", ""))
        fake.requests.append(record)
        if self.path != PATH:
            return self._answer(record, 404, {"error": {"message": "not found"}})
        if fake.api_key and record.authorization != f"Bearer {fake.api_key}":
            return self._answer(record, 401, {"error": {"message": "Incorrect API key provided"}})
        try:
            parts = parse_form(self.headers.get("Content-Type", ""), body)
        except ValueError:
            parts = {}
        if "file" not in parts or "model" not in parts:
            return self._answer(record, 400, {"error": {"message": "file and model are required"}})
        record.data, record.file_name, record.file_type = parts["file"]
        record.model = parts["model"][0].decode()
        record.fields = {k: v[0].decode(errors="replace") for k, v in parts.items() if k != "file"}
        if fake.mode == "error_500":
            return self._answer(record, 500, {"error": {"message": "model crashed"}})
        if fake.mode == "garbage":
            return self._answer(record, 200, b"<html>not json</html>")
        if fake.mode == "no_text":
            return self._answer(record, 200, {"segments": []})
        return self._answer(record, 200, {"text": fake.texts.get(record.data, fake.text)})

    def do_GET(self):
        self._answer(TranscriptionRequest(path=self.path, authorization=""), 405, {"error": {"message": "POST"}})

    def _answer(self, record, status, payload):
        record.status = status
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass


class FakeTranscriber(LoopbackServer):
    handler_class = _Handler
    thread_name = "fake-transcriber"

    def __init__(self, text="", *, api_key="", mode="normal"):
        self.text = text
        self.texts = {}
        self.api_key = api_key
        self.mode = mode
        self.requests = []
        self._init_server()
