"""A loopback fake of the Twilio REST API: a real HTTP server for tests and bench/ scripts.

    fake = FakeTwilio(account_sid="AC…", auth_token="…").start()   # 127.0.0.1, a free port
    fake.url                       # http://127.0.0.1:<port>: a connector's config `api_base_url`
    fake.mode = "rate_limited"     # switch behaviour at run time (or queue_modes(...))
    fake.requests                  # every request received, authorised or not, with its form params
    fake.messages / fake.calls     # the accepted Messages.json / Calls.json creations
    fake.messages[0].media_urls    # the MediaUrl params of a message, in order (outbound MMS / WhatsApp media)
    fake.stop()

It answers what the official SDK sends:
    POST /2010-04-01/Accounts/<sid>/Messages.json   201, a Message resource with a fresh SM… sid
    POST /2010-04-01/Accounts/<sid>/Calls.json      201, a Call resource with a fresh CA… sid
    GET  /2010-04-01/Accounts/<sid>.json            200, the Account (status `account_status`)
    GET  /2010-04-01/Accounts/<sid>/Messages/<MM…>/Media/<ME…>
                                                    307 to /media-files/<ME…> (as Twilio redirects to its file
                                                    host), which answers the bytes given to `add_media()`
                                                    without auth (a signed URL there); 404 for an unknown one
HTTP Basic auth must carry the account SID and auth token given to the constructor (and the
path the same SID); anything else gets 401 with Twilio's error 20003.

Modes (for authorised POSTs that create something):
    normal          as above
    rate_limited    429, error 20429, header Retry-After: `retry_after`
    invalid_to      400, error 21211
    unsubscribed    400, error 21610
    outside_window  400, error 63016, for free-form WhatsApp messages only (no ContentSid), as
                    Twilio does: templates still go through
    error_500       500, error 20500
    slow            sleeps `slow_seconds`, then answers as normal
`down()` stops listening but keeps `.url` (connection refused); `up()` listens again.

`sign(auth_token, url, params)` computes the X-Twilio-Signature Twilio would send to `url` with
these form params (the SDK's RequestValidator.compute_signature), for posting inbound webhooks.
Only the standard library (and, for `sign`, the twilio SDK): no Django.
"""
import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

from .base import LoopbackServer, QuietHandler, ScriptedModes

MODES = ("normal", "rate_limited", "invalid_to", "unsubscribed", "outside_window", "error_500", "slow")
API = "/2010-04-01/Accounts/"
MEDIA_FILES = "/media-files/"  # the fake's stand-in for Twilio's file host (a signed, short-lived URL)

ERRORS = {
    "unauthorized": (401, {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}),
    "rate_limited": (429, {"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}),
    "invalid_to": (400, {"code": 21211, "message": "The 'To' number {to} is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
    "unsubscribed": (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}),
    "outside_window": (400, {"code": 63016, "message": "Failed to send freeform message because you are outside the allowed window. If you are using WhatsApp, please use a Message Template.", "more_info": "https://www.twilio.com/docs/errors/63016", "status": 400}),
    "error_500": (500, {"code": 20500, "message": "An internal server error has occurred", "more_info": "https://www.twilio.com/docs/errors/20500", "status": 500}),
    "not_found": (404, {"code": 20404, "message": "The requested resource was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}),
}


def sign(auth_token, url, params):
    """The X-Twilio-Signature Twilio computes for a POST of `params` (a dict) to `url`."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(auth_token).compute_signature(url, params)


def new_sid(prefix):
    return prefix + secrets.token_hex(16)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict  # lower-cased names
    params: dict  # form (or query) params, each name → list of values
    authorized: bool
    status: int = 0
    mode: str = ""
    response: dict = field(default_factory=dict)  # the JSON the fake answered
    received_at: float = field(default_factory=time.time)

    @property
    def form(self):
        """The params with single values (the last one, as Twilio would read them)."""
        return {k: v[-1] for k, v in self.params.items()}

    @property
    def media_urls(self):
        """Every MediaUrl param, in the order sent (Twilio takes the name once per file)."""
        return list(self.params.get("MediaUrl", []))

    @property
    def kind(self):
        if self.path.endswith("/Messages.json"):
            return "message"
        if self.path.endswith("/Calls.json"):
            return "call"
        return "account" if re.fullmatch(rf"{API}AC\w+\.json", self.path) else "other"


class _Handler(QuietHandler):
    server_version = "FakeTwilio/1.0"

    def do_GET(self):
        self.server.fake._handle(self, "GET")

    def do_POST(self):
        self.server.fake._handle(self, "POST")

    def do_DELETE(self):
        self.server.fake._handle(self, "DELETE")

    def send_json(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def send_bytes(self, status, data, content_type):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


class FakeTwilio(ScriptedModes, LoopbackServer):
    MODES = MODES
    handler_class = _Handler
    thread_name = "fake-twilio"

    def __init__(self, account_sid="AC" + "0" * 32, auth_token="fake_auth_token_0123456789abcdef", *, mode="normal",
                 retry_after="7", slow_seconds=5.0, host="127.0.0.1"):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._init_modes(mode)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.account_status = "active"
        self.host = host
        self.media = {}  # media sid → (bytes, content type)
        self.file_host = host  # the host name the media redirect names ("localhost": another host, same server)
        self._init_server()

    # --- control and inspection ---
    def reset(self):
        self.clear()
        self.mode = "normal"

    def _accepted(self, kind):
        return [r for r in self.requests if r.kind == kind and r.authorized and r.status == 201]

    @property
    def messages(self):
        return self._accepted("message")

    @property
    def calls(self):
        return self._accepted("call")

    # --- the handler ---
    def _authorized(self, headers, path):
        header = headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        path_sid = path[len(API):].split("/")[0].removesuffix(".json") if path.startswith(API) else ""
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token) and path_sid == self.account_sid

    def add_media(self, media_sid, data, content_type="image/jpeg"):
        """Serve `data` for …/Media/<media_sid> (the MediaUrlN Twilio posts) and return that path."""
        self.media[media_sid] = (data, content_type)
        return f"{API}{self.account_sid}/Messages/MM{'0' * 32}/Media/{media_sid}"

    def media_requests(self):
        """The media URL and file host requests, in order: (path, status) each."""
        return [(r.path, r.status) for r in self.requests if "/Media/" in r.path or
                r.path.startswith(MEDIA_FILES)]

    def _serve_media(self, handler, record):
        """The media resource (auth required, then a redirect) and the file host behind it (no auth)."""
        if record.path.startswith(MEDIA_FILES):
            media = self.media.get(record.path[len(MEDIA_FILES):])
            if media is None:
                record.status = 404
                return handler.send_json(*ERRORS["not_found"])
            record.status = 200
            return handler.send_bytes(200, media[0], media[1])
        if not record.authorized:
            record.status = 401
            return handler.send_json(*ERRORS["unauthorized"])
        media_sid = record.path.rsplit("/", 1)[-1]
        if media_sid not in self.media:
            record.status = 404
            return handler.send_json(*ERRORS["not_found"])
        record.status = 307
        return handler.send_json(307, {}, {"Location": f"http://{self.file_host}:{self.port}{MEDIA_FILES}{media_sid}"})

    def _handle(self, handler, method):
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        params = parse_qs(raw if method == "POST" else parts.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = RecordedRequest(method, parts.path, headers, params, self._authorized(headers, parts.path))
        self._record(record)
        if method == "GET" and ("/Media/" in parts.path or parts.path.startswith(MEDIA_FILES)):
            return self._serve_media(handler, record)
        status, payload, extra = self._answer(record, method)
        record.status, record.response = status, payload
        handler.send_json(status, payload, extra)

    def _answer(self, record, method):
        if not record.authorized:
            return (*ERRORS["unauthorized"], None)
        sid_path = f"{API}{self.account_sid}"
        if method == "GET" and record.path == f"{sid_path}.json":
            return 200, self._account(), None
        if method == "POST" and record.path in (f"{sid_path}/Messages.json", f"{sid_path}/Calls.json"):
            mode = self._next_mode()
            record.mode = mode
            if mode == "slow":
                self._stopping.wait(self.slow_seconds)
            elif mode == "rate_limited":
                return (*ERRORS["rate_limited"], {"Retry-After": self.retry_after} if self.retry_after else None)
            elif mode == "outside_window":
                if "ContentSid" not in record.params:
                    return (*ERRORS["outside_window"], None)
            elif mode == "invalid_to":
                status, body = ERRORS["invalid_to"]
                return status, {**body, "message": body["message"].format(to=record.form.get("To", ""))}, None
            elif mode != "normal":
                return (*ERRORS[mode], None)
            if record.path.endswith("/Messages.json"):
                return 201, self._message(record.form, len(record.media_urls)), None
            return 201, self._call(record.form), None
        return (*ERRORS["not_found"], None)

    def _account(self):
        return {
            "sid": self.account_sid, "friendly_name": "Fake account", "status": self.account_status, "type": "Full",
            "auth_token": "redacted", "owner_account_sid": self.account_sid,
            "date_created": "Wed, 25 Nov 2026 16:00:00 +0000", "date_updated": "Wed, 25 Nov 2026 16:00:00 +0000",
            "uri": f"{API}{self.account_sid}.json",
        }

    def _message(self, form, num_media=0):
        sid = new_sid("SM")
        now = formatdate(usegmt=True)
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": form.get("Body", ""),
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": form.get("From"), "messaging_service_sid": None,
            "num_media": str(num_media), "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": "queued", "to": form.get("To"),
            "subresource_uris": {"media": f"{API}{self.account_sid}/Messages/{sid}/Media.json"},
            "uri": f"{API}{self.account_sid}/Messages/{sid}.json",
        }

    def _call(self, form):
        sid = new_sid("CA")
        now = formatdate(usegmt=True)
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "sid": sid, "status": "queued",
            "direction": "outbound-api", "from": form.get("From"), "to": form.get("To"),
            "date_created": now, "date_updated": now, "start_time": None, "end_time": None, "duration": None,
            "uri": f"{API}{self.account_sid}/Calls/{sid}.json",
        }
