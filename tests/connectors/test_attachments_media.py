"""Inbound media beyond Telegram, through the real SDKs and clients against the loopback fakes: a WhatsApp photo
and an SMS (MMS) picture over Twilio's media URL (Basic auth, then a redirect to the file host), a Slack DM file
(url_private_download with the bot token) and a generic-webhook attachment by URL (under the outbound-URL guard).
Each reaches BRAIN (EchoBrain's reply lists it) with its bytes stored encrypted; a file that cannot be had is
unavailable with the reason and the message is still answered."""
import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path

import pytest
from django.test import Client

from connectors.delivery import attachment_store
from connectors.fields import get_fernet
from connectors.models import Attachment, Delivery, InboundMessage
from tests.connectors import twilio_support, url_guard_support
from tests.connectors.twilio_support import fixture, post_twilio
from tests.fakes.receiver import FakeReceiver, sign_request
from tests.fakes.slack_server import FakeSlack

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector
dns = url_guard_support.dns

# Real signatures (what puremagic reads) followed by filler.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(100))
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b"0123456789" * 100 + b"\n%%EOF\n"
WA_MEDIA_SID = "ME0a1b2c3d4e5f60718293a4b5c6d7e8f9"  # the fixture's MediaUrl0


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


def reply_to(inbound):
    return Delivery.objects.get(connector_id=inbound.connector_id).content


def assert_stored_encrypted(row, data):
    assert (row.status, row.size) == ("stored", len(data))
    with attachment_store.storage().open(row.storage_name, "rb") as handle:
        on_disk = handle.read()
    assert data[:64] not in on_disk
    assert get_fernet().decrypt(on_disk) == data == attachment_store.read(row.storage_name)


# --- Twilio: WhatsApp and SMS ----------------------------------------------------------------


def test_a_whatsapp_image_reaches_brain_and_is_stored_encrypted(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    twilio_fake.add_media(WA_MEDIA_SID, JPEG, "image/jpeg")
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_media")).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == "" and inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.mime_type) == ("image", "image/jpeg")
    assert_stored_encrypted(row, JPEG)
    assert reply_to(inbound) == f'Echo: "" (0 context messages) [1 attachment: image (image/jpeg, {len(JPEG)} bytes)]'
    # The media URL (api.twilio.com in the webhook) went to api_base_url with the account's Basic auth, then
    # followed Twilio's redirect to the file host.
    media_path = f"/2010-04-01/Accounts/{twilio_support.ACCOUNT_SID}/Messages/MM7c1d2e3f405162738495a6b7c8d9e0f1" \
                 f"/Media/{WA_MEDIA_SID}"
    assert twilio_fake.media_requests() == [(media_path, 307), (f"/media-files/{WA_MEDIA_SID}", 200)]
    assert [r.authorized for r in twilio_fake.requests if r.path == media_path] == [True]
    [sent] = twilio_fake.messages
    assert sent.form["To"] == "whatsapp:+447700900123"


def test_sms_media_with_a_body_reaches_brain(client, twilio_connector, twilio_fake):
    twilio_connector("sms_in", "sms")
    path = twilio_fake.add_media("ME" + "1" * 32, PNG, "image/png")
    payload = fixture("sms_inbound", NumMedia="1", MediaContentType0="image/png",
                      MediaUrl0=f"https://api.twilio.com{path}")
    assert post_twilio(client, "/webhooks/twilio/sms_in/", payload).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == "Remind me to call the bank at 4"
    assert_stored_encrypted(Attachment.objects.get(inbound=inbound), PNG)
    assert reply_to(inbound).endswith(f"[1 attachment: image (image/png, {len(PNG)} bytes)]")


def test_wrong_credentials_on_the_media_url_leave_it_unavailable_and_the_message_answered(
        client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    twilio_fake.add_media(WA_MEDIA_SID, JPEG, "image/jpeg")
    twilio_fake.auth_token = "another_token_0123456789abcdef"  # rotated at Twilio: our token is now refused
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_media")).status_code == 200
    inbound = InboundMessage.objects.get()
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "unavailable" and row.storage_name == ""
    assert row.error == "download_failed: Twilio refused the file download (HTTP 401)"
    assert [status for _, status in twilio_fake.media_requests()] == [401]  # never redirected to the file
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    assert "[1 attachment: image unavailable: download_failed" in reply_to(inbound)


def test_a_media_url_off_the_twilio_api_is_never_fetched(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    payload = fixture("whatsapp_inbound_media", MediaUrl0="https://example.org/2010-04-01/Accounts/"
                      f"{twilio_support.ACCOUNT_SID}/Messages/MM1/Media/ME1")
    assert post_twilio(client, "/webhooks/twilio/wa_in/", payload).status_code == 200
    row = Attachment.objects.get()
    assert row.status == "unavailable" and row.error.startswith("bad_request: the media URL is not")
    assert twilio_fake.media_requests() == []


# --- the generic webhook ---------------------------------------------------------------------

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-test-secret-0123456789ab").decode()


@pytest.fixture
def receiver():
    fake = FakeReceiver(secret=WEBHOOK_SECRET).start()
    yield fake
    fake.stop()


@pytest.fixture
def hook(make_connector, receiver, client):
    """A webhook connector replying to the fake receiver; returns a function posting a signed inbound body."""
    make_connector("hook", kind="webhook", config={"url": receiver.url, "timeout": 2},
                   credentials={"signing_secret": WEBHOOK_SECRET})

    def post(payload, msg_id="wh-1"):
        body = json.dumps(payload).encode()
        return client.post("/webhooks/inbound/hook/", data=body, content_type="application/json",
                           headers=sign_request(WEBHOOK_SECRET, body, msg_id))

    return post


def test_a_webhook_attachment_by_url_is_fetched_and_reaches_brain(hook, receiver):
    url = receiver.add_file("/files/invoice.pdf", PDF, "application/pdf")
    response = hook({"sender": "ada", "content": "", "attachments": [
        {"url": url, "mime_type": "application/pdf", "file_name": "invoice.pdf", "caption": "Is this right?"}]})
    assert response.status_code == 200, response.content
    inbound = InboundMessage.objects.get()
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.mime_type, row.file_name, row.caption) == (
        "document", "application/pdf", "invoice.pdf", "Is this right?")
    assert_stored_encrypted(row, PDF)
    assert receiver.file_requests == ["/files/invoice.pdf"]
    [reply] = receiver.verified
    assert reply.json["content"] == (
        f'Echo: "" (0 context messages) [1 attachment: document invoice.pdf (application/pdf, {len(PDF)} bytes)]')


def test_a_webhook_attachment_resolving_to_the_metadata_address_is_refused_without_connecting(
        hook, receiver, dns, monkeypatch):
    dns["files.example.org"] = ["169.254.169.254"]  # a name the sender controls, pointing at cloud metadata
    connected = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        connected.append(address)
        if address[0] != "127.0.0.1":  # only the loopback receiver (the reply) may be reached
            raise AssertionError(f"connected to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    response = hook({"sender": "ada", "content": "see attached",
                     "attachments": [{"url": "http://files.example.org/latest/meta-data/", "mime_type": "text/plain"}]})
    assert response.status_code == 200
    row = Attachment.objects.get()
    assert row.status == "unavailable" and row.storage_name == ""
    assert row.error.startswith("unsafe_url: the outbound-URL guard refused it:") and "link-local" in row.error
    assert all(address[0] == "127.0.0.1" for address in connected)  # the reply only; 169.254.169.254 never
    inbound = InboundMessage.objects.get()
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    [reply] = receiver.verified
    assert "[1 attachment: document unavailable: unsafe_url" in reply.json["content"]


@pytest.mark.parametrize("attachments, field", [
    ("x", "attachments"),
    ([{"mime_type": "image/png"}], "attachments.0"),
    ([{"url": "ftp://example.org/a.png"}], "attachments.0.url"),
    ([{"url": "https://user:pw@example.org/a.png"}], "attachments.0.url"),
    ([{"url": "https://example.org/a.png", "mime_type": "not a type"}], "attachments.0.mime_type"),
    ([{"url": "https://example.org/a.png", "size": 3}], "attachments.0"),
    ([{"url": "https://example.org/a.png"}] * 11, "attachments"),
])
def test_a_badly_shaped_webhook_attachment_is_malformed(hook, receiver, attachments, field):
    response = hook({"sender": "ada", "content": "hi", "attachments": attachments})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_payload" and field in error["details"], error
    assert InboundMessage.objects.count() == 0 and receiver.file_requests == []


def test_a_webhook_message_without_content_needs_an_attachment(hook):
    response = hook({"sender": "ada", "content": ""})
    assert response.status_code == 400 and "content" in response.json()["error"]["details"]


# --- Slack -------------------------------------------------------------------------------------

SLACK_TOKEN = "xoxb-1111111111-2222222222-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def slack_fake():
    server = FakeSlack(bot_tokens={SLACK_TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
def slack_dm(make_connector, slack_fake, settings):
    """A Slack connector on the fake; returns a function posting the file_share fixture with its file's URL."""
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("slack_main", kind="slack", config={"api_base_url": slack_fake.url},
                   credentials={"bot_token": SLACK_TOKEN, "signing_secret": SLACK_SECRET})

    def post(url, text=""):
        payload = json.loads((FIXTURES / "slack" / "message_file_share.json").read_text())
        payload["event"]["text"] = text
        payload["event"]["files"][0].update(url_private_download=url, size=len(PNG))
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        digest = hmac.new(SLACK_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
        response = Client().post("/webhooks/slack/slack_main/", data=body, content_type="application/json",
                                 HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp, HTTP_X_SLACK_SIGNATURE=f"v0={digest}")
        assert response.status_code == 200 and response.json()["stored"] == 1, response.content
        return InboundMessage.objects.get()

    return post


def test_a_slack_dm_file_reaches_brain_and_is_stored_encrypted(slack_dm, slack_fake):
    url = slack_fake.add_file("F0S43PZDF", PNG, "image/png", "screenshot.png")
    inbound = slack_dm(url)
    assert inbound.content == ""
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.mime_type, row.file_name) == ("image", "image/png", "screenshot.png")
    assert_stored_encrypted(row, PNG)
    assert slack_fake.file_downloads == [("/files-pri/T061EG9R6-F0S43PZDF/download/screenshot.png", SLACK_TOKEN)]
    [sent] = slack_fake.sent
    assert sent["text"].endswith(f"[1 attachment: image screenshot.png (image/png, {len(PNG)} bytes)]")


def test_a_slack_file_the_token_may_not_read_is_unavailable_and_the_message_answered(slack_dm, slack_fake):
    slack_fake.bot_tokens = {"xoxb-another-workspace-token-0000"}  # ours is no longer valid: the sign-in page
    url = slack_fake.add_file("F0S43PZDF", PNG, "image/png", "screenshot.png")
    inbound = slack_dm(url, text="here is the screenshot")
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "unavailable" and row.error.startswith("download_failed: Slack answered a web page")
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED


def test_the_bot_token_goes_to_no_host_but_slacks(slack_dm, slack_fake):
    # The fixture's own URL: files.slack.com, which is not where this connector's Slack (the fake) lives.
    inbound = slack_dm("https://files.slack.com/files-pri/T061EG9R6-F0S43PZDF/download/screenshot.png")
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "unavailable" and row.error == "bad_request: the file URL is not on Slack's file host"
    assert slack_fake.file_downloads == []


@pytest.mark.parametrize("url, api_base_url, allowed", [
    ("https://files.slack.com/files-pri/T1-F1/download/a.png", None, True),
    ("https://files.slack.com/files-pri/T1-F1/download/a.png", "https://slack.com/api/", True),
    ("http://files.slack.com/files-pri/T1-F1/download/a.png", None, False),  # the token never in clear
    ("https://files.slack.com.evil.example/files-pri/a.png", None, False),
    ("https://evil.example/files-pri/a.png", None, False),
    ("https://files.slack.com/files-pri/a.png", "https://grid.example.org/api/", False),
    ("https://grid.example.org/files-pri/a.png", "https://grid.example.org/api/", True),
    ("http://127.0.0.1:8001/files-pri/a.png", "http://127.0.0.1:8001/api/", True),
    ("http://127.0.0.1:8002/files-pri/a.png", "http://127.0.0.1:8001/api/", False),  # another port, another server
    ("https://user:pw@files.slack.com/files-pri/a.png", None, False),
])
def test_which_hosts_get_the_bot_token(url, api_base_url, allowed):
    from connectors.platforms.slack.files import allowed as token_allowed

    assert token_allowed(url, {"api_base_url": api_base_url} if api_base_url else {}) is allowed


def test_twilio_credentials_do_not_follow_the_redirect_to_another_host(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    twilio_fake.add_media(WA_MEDIA_SID, JPEG, "image/jpeg")
    twilio_fake.file_host = "localhost"  # the file host is another host name (the same loopback server)
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_media")).status_code == 200
    assert Attachment.objects.get().status == "stored"
    media, file = [r for r in twilio_fake.requests if "/Media/" in r.path or r.path.startswith("/media-files/")]
    assert media.authorized and "authorization" in media.headers
    assert file.path == f"/media-files/{WA_MEDIA_SID}" and "authorization" not in file.headers


def test_twilio_media_over_the_limit_is_refused_unstored(client, twilio_connector, twilio_fake, settings,
                                                          attachment_dir):
    settings.ATTACHMENT_MAX_BYTES_BY_KIND = {"image": 1000}
    twilio_connector("wa_in", "whatsapp")
    twilio_fake.add_media(WA_MEDIA_SID, JPEG, "image/jpeg")  # 2,068 bytes: Twilio announces no size in the webhook
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_media")).status_code == 200
    row = Attachment.objects.get()
    assert row.status == "unavailable" and row.error.startswith("too_large: Twilio announces 2068 bytes")
    assert list(attachment_dir.iterdir()) == []
