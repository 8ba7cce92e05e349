"""Attachments, inbound on Telegram: the real python-telegram-bot SDK against the loopback fake Bot API (getFile and
the file download), with the real-format fixtures. A captionless photo, a document, a voice note and a location
each reach BRAIN with their attachments; the bytes are stored encrypted; a file that cannot be fetched or whose
bytes contradict its label is marked unavailable and the message is still answered; the token stays inside."""
import json
from pathlib import Path

import pytest
from django.core import serializers
from django.test import Client

from audit.models import AuditEvent
from connectors.delivery import attachment_store, replies
from connectors.fields import get_fernet
from connectors.models import Attachment, Connector, Delivery, Event, InboundMessage
from connectors.platforms.base import Attachment as AttachmentData
from connectors.platforms.base import IncomingMessage, MessageValidationError
from connectors.platforms.telegram.parsing import parse_update, update_from_data
from conversations.models import Message
from tests.connectors import telegram_support
from tests.fakes.brain_server import FakeBrain

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"
TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET_HEADER = "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN"
PHOTO_ID, DOCUMENT_ID, VOICE_ID = "AgACAgIAAxkBAAIBXmPhotoLarge", "BQACAgIAAxkBAAIBX2Document", "AwACAgIAAxkBAAIBVWVoice"
# Real signatures (what puremagic reads) followed by filler: a JPEG, a PDF, an Ogg Opus voice note, a PNG.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b"0123456789" * 100 + b"\n%%EOF\n"
OGG = b"OggS\x00\x02" + bytes(22) + b"\x13OpusHead\x01\x01" + bytes(range(200))
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(100))


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    """This test's own attachment storage (Django resets `storages` when STORAGES changes)."""
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


fake = telegram_support.fake  # the loopback Bot API, shared with the Telegram tests


@pytest.fixture
def bot(make_connector, fake, settings):
    """A started webhook-mode Telegram connector on the fake; returns a function posting an update to it."""
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("tg_main", kind="telegram", config={"mode": "webhook", "api_base_url": fake.url},
                   credentials={"bot_token": TOKEN})
    secret = Connector.objects.get(pk="tg_main").platform_secret

    def post(update):
        response = Client().post("/webhooks/telegram/tg_main/", data=json.dumps(update),
                                 content_type="application/json", **{SECRET_HEADER: secret})
        assert response.status_code == 200
        return InboundMessage.objects.get(platform_message_id=str(update["update_id"]))

    return post


def reply_to(inbound):
    return Delivery.objects.get(connector_id=inbound.connector_id, recipient=inbound.sender).content


@pytest.mark.django_db(transaction=True)
def test_a_captionless_photo_reaches_brain_and_is_stored_encrypted(bot, fake, attachment_dir):
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    inbound = bot(fixture("message_photo_no_caption"))
    assert inbound.content == "" and inbound.metadata["type"] == "image"
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    attachment = Attachment.objects.get(inbound=inbound)
    assert (attachment.kind, attachment.status, attachment.mime_type, attachment.size) == (
        "image", "stored", "image/jpeg", len(JPEG))
    assert reply_to(inbound) == f'Echo: "" (0 context messages) [1 attachment: image (image/jpeg, {len(JPEG)} bytes)]'
    # The largest size was fetched, once, by getFile and the token-bearing download URL (which the fake saw).
    assert [c.param("file_id") for c in fake.calls_to("getFile")] == [PHOTO_ID]
    assert [(c.token, c.params["file_path"]) for c in fake.calls_to("downloadFile")] == [(TOKEN, "photos/file_42.jpg")]
    # At rest: not the plain bytes, nor anything containing them; Fernet with FERNET_KEYS gives them back.
    with attachment_store.storage().open(attachment.storage_name, "rb") as handle:
        on_disk = handle.read()
    assert JPEG not in on_disk and JPEG[:64] not in on_disk
    assert get_fernet().decrypt(on_disk) == JPEG == attachment_store.read(attachment.storage_name)
    assert [p.name for p in attachment_dir.iterdir()] == [attachment.storage_name] == [f"{attachment.id}.bin"]


def document_through_http_brain(bot, fake, settings):
    """The document fixture posted with HttpBrain on a loopback fake BRAIN: (inbound message, BRAIN's one request)."""
    brain = FakeBrain(secret=settings.BRAIN_SIGNING_KEY).start()
    try:
        settings.BRAIN_BACKEND, settings.BRAIN_URL = "connectors.delivery.brain.HttpBrain", brain.url
        fake.add_file(DOCUMENT_ID, PDF, file_path="documents/file_7.pdf")
        inbound = bot(fixture("message_document"))
        [request] = brain.accepted
    finally:
        brain.stop()
    return inbound, request


@pytest.mark.django_db(transaction=True)
def test_a_document_with_its_caption_reaches_http_brain(bot, fake, settings):
    inbound, request = document_through_http_brain(bot, fake, settings)
    message = request.json["message"]
    assert message["content"] == "Is this invoice right?"
    [attachment] = message["attachments"]
    row = Attachment.objects.get(inbound=inbound)
    # The signed download URL (tests/connectors/test_attachment_urls.py) comes with it, on PUBLIC_BASE_URL.
    assert attachment.pop("url").startswith(f"https://brain.example.org/attachments/{row.id}/?expires=")
    assert attachment == {"id": str(row.id), "kind": "document", "mime_type": "application/pdf", "size": len(PDF),
                          "file_name": "invoice-2026-11.pdf", "caption": "Is this invoice right?", "status": "stored"}
    assert attachment_store.read(row.storage_name) == PDF


@pytest.mark.django_db(transaction=True)
def test_a_voice_note_reaches_brain_as_audio(bot, fake):
    fake.add_file(VOICE_ID, OGG, file_path="voice/file_3.oga")
    inbound = bot(fixture("message_voice"))
    assert inbound.content == "" and inbound.metadata["duration"] == 3
    assert reply_to(inbound) == f'Echo: "" (0 context messages) [1 attachment: voice (audio/ogg, {len(OGG)} bytes)]'
    assert attachment_store.read(Attachment.objects.get(inbound=inbound).storage_name) == OGG


@pytest.mark.django_db(transaction=True)
def test_a_location_reaches_brain_without_any_download(bot, fake):
    inbound = bot(fixture("message_location"))
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.status, row.latitude, row.longitude, row.storage_name) == (
        "location", "stored", 51.507351, -0.127758, "")
    assert reply_to(inbound) == 'Echo: "" (0 context messages) [1 attachment: location 51.507351,-0.127758]'
    assert fake.calls_to("getFile") == [] and fake.calls_to("downloadFile") == []
    # Conversation memory (BRAIN's context on later turns) keeps what the message carried: its kinds, no content.
    assert Message.objects.get(inbound_id=inbound.pk).content == "[location]"
    # The connectors' own context (for messages from before memory existed) says so too, rather than "".
    later = fixture("message_text")
    later["message"]["date"] = 1764067700
    context = replies.conversation_context(bot(later))
    assert [(item["role"], item["content"]) for item in context][:1] == [("user", "[attachment]")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("breakage, reason, tries", [
    (lambda fake: None, "bad_request: Telegram refused the request: Invalid file_id", 1),  # never registered
    (lambda fake: fake.fail("server_error", method="getFile"), "network_error:", 3),  # tried again, then given up
    (lambda fake: (fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg"),
                   fake.fail("server_error", method="downloadFile")), "download_failed:", 3),
])
def test_a_file_that_cannot_be_fetched_is_unavailable_and_the_message_still_answered(bot, fake, breakage, reason,
                                                                                     tries):
    breakage(fake)
    inbound = bot(fixture("message_photo_no_caption"))
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "unavailable" and row.error.startswith(reason) and row.storage_name == ""
    assert row.attempts == tries == len(fake.calls_to("getFile"))
    assert TOKEN not in row.error
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    assert reply_to(inbound).startswith('Echo: "" (0 context messages) [1 attachment: image unavailable: ')
    audit = AuditEvent.objects.get(action="attachment.fetch")
    assert audit.result == "failure" and audit.details["attachment_id"] == str(row.id)


@pytest.mark.django_db(transaction=True)
def test_a_passing_failure_is_tried_again_before_brain_is_asked(bot, fake):
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    fake.fail("server_error", method="downloadFile", times=1)
    inbound = bot(fixture("message_photo_no_caption"))
    row = Attachment.objects.get(inbound=inbound)
    assert (row.status, row.attempts) == ("stored", 1) and len(fake.calls_to("downloadFile")) == 2
    assert "image (image/jpeg" in reply_to(inbound)


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_leaves_a_fetch_in_progress_alone_then_makes_up_a_lost_one(bot, fake, monkeypatch, settings):
    from connectors.delivery import attachments, sweeper

    monkeypatch.setattr(attachments, "hand_over", lambda inbound_id, rows: None)  # the broker lost the fetch task
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    inbound = bot(fixture("message_photo_no_caption"))  # written in 2025: long past the sweeper's grace
    sweeper.sweep()
    assert Attachment.objects.get(inbound=inbound).status == "pending" and not Delivery.objects.exists()
    settings.ATTACHMENT_FETCH_GRACE = 0  # the fetch has now been quiet too long
    sweeper.sweep()
    assert Attachment.objects.get(inbound=inbound).status == "stored"
    assert "image (image/jpeg" in reply_to(inbound)


@pytest.mark.django_db(transaction=True)
def test_a_mislabelled_file_is_unavailable_with_the_reason(bot, fake, attachment_dir):
    fake.add_file(DOCUMENT_ID, PNG, file_path="documents/file_8.pdf")  # announced as application/pdf
    inbound = bot(fixture("message_document"))
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "unavailable"
    assert row.error == "content_mismatch: declared application/pdf, but the bytes are image/png"
    assert row.storage_name == "" and list(attachment_dir.iterdir()) == []  # nothing of it was kept
    assert "unavailable: content_mismatch" in reply_to(inbound)


@pytest.mark.django_db(transaction=True)
def test_a_file_over_the_kind_limit_is_never_downloaded(bot, fake, settings):
    settings.ATTACHMENT_MAX_BYTES_BY_KIND = {**settings.ATTACHMENT_MAX_BYTES_BY_KIND, "image": 1000}
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    inbound = bot(fixture("message_photo_no_caption"))  # announces 98420 bytes
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "unavailable" and row.error.startswith("too_large:")
    assert fake.calls_to("downloadFile") == []


@pytest.mark.django_db(transaction=True)
def test_the_token_and_file_names_stay_out_of_rows_events_and_audit(bot, fake):
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    fake.add_file(DOCUMENT_ID, PDF, file_path="documents/file_7.pdf")
    bot(fixture("message_photo_no_caption"))
    bot(fixture("message_document"))
    assert len(fake.calls_to("downloadFile")) == 2  # the token did travel, to the fake only
    rows = [*Attachment.objects.all(), *InboundMessage.objects.all(), *Delivery.objects.all()]
    stored = serializers.serialize("json", rows)  # decrypted field values
    assert "invoice-2026-11.pdf" in stored and TOKEN not in stored and TOKEN.split(":")[1] not in stored
    trail = json.dumps([*AuditEvent.objects.values_list("details", flat=True), *Event.objects.values_list("data", flat=True)])
    assert TOKEN.split(":")[1] not in trail and "invoice-2026-11" not in trail and "Is this invoice" not in trail
    received = Event.objects.filter(type="connector.message.received").values_list("data", flat=True)
    sizes = sorted(item["size"] for data in received for item in data.get("attachments", []))
    assert sizes == [52311, 98420]  # ids and sizes as the platform announced them


# --- the contract and the parser (pure) ------------------------------------------------------------


def test_a_message_may_be_empty_only_when_it_carries_attachments():
    photo = AttachmentData(kind="image", platform_ref="x")
    assert IncomingMessage(sender="1", content="", platform_message_id="1", attachments=(photo,)).content == ""
    with pytest.raises(MessageValidationError) as refused:
        IncomingMessage(sender="1", content="", platform_message_id="1")
    assert "content" in refused.value.errors
    with pytest.raises(MessageValidationError) as refused:
        IncomingMessage(sender="1", content="", platform_message_id="1", attachments=(AttachmentData(kind="gif"),))
    assert set(refused.value.errors) == {"attachments", "content"}
    with pytest.raises(MessageValidationError) as refused:
        IncomingMessage(sender="1", content="", platform_message_id="1",
                        attachments=(AttachmentData(kind="location", latitude=91.0, longitude=0.0),))
    assert "latitude" in refused.value.errors["attachments"]


def _message_with(**media):
    update = fixture("message_location")
    del update["message"]["location"]
    update["message"].update(media)
    return parse_update(update_from_data(update), {"id": 7000000001, "username": "brain_connectors_bot"})


@pytest.mark.parametrize("media, expected", [
    ({"audio": {"file_id": "CQACAgA", "file_unique_id": "u1", "duration": 120, "mime_type": "audio/mpeg",
                "file_name": "song.mp3", "file_size": 2048}}, ("audio", "audio/mpeg", "song.mp3", "CQACAgA")),
    ({"video": {"file_id": "BAACAgB", "file_unique_id": "u2", "width": 640, "height": 480, "duration": 5,
                "mime_type": "video/mp4", "file_size": 4096}}, ("video", "video/mp4", "", "BAACAgB")),
    ({"sticker": {"file_id": "CAACAgC", "file_unique_id": "u3", "type": "regular", "width": 512, "height": 512,
                  "is_animated": False, "is_video": False}}, ("sticker", "image/webp", "", "CAACAgC")),
    ({"contact": {"phone_number": "+447700900123", "first_name": "Grace"}},
     ("contact", "", "", "+447700900123\nGrace")),
])
def test_telegram_media_become_attachments(media, expected):
    message = _message_with(**media)
    [attachment] = message.attachments
    assert (attachment.kind, attachment.mime_type, attachment.file_name, attachment.platform_ref) == expected
    assert message.content == "" and message.metadata["type"] == expected[0]


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_attachment_files_under_the_new_key(settings, attachment_dir):
    from io import StringIO

    from cryptography.fernet import Fernet, InvalidToken
    from django.core.management import call_command

    old, new = settings.FERNET_KEYS[0], Fernet.generate_key().decode()
    row = Attachment.objects.create(kind="image", status="stored", mime_type="image/jpeg", size=len(JPEG))
    row.storage_name = attachment_store.save(row.id, JPEG)
    row.save(update_fields=["storage_name"])
    settings.FERNET_KEYS = [new, old]
    out = StringIO()
    call_command("rotate_keys", stdout=out, stderr=StringIO())
    assert "attachment files: 1 re-encrypted, 0 already under the first key" in out.getvalue()
    row.refresh_from_db()
    assert [p.name for p in attachment_dir.iterdir()] == [row.storage_name]  # the old copy is gone
    settings.FERNET_KEYS = [new]
    assert attachment_store.read(row.storage_name) == JPEG
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt((attachment_dir / row.storage_name).read_bytes())
    out = StringIO()
    call_command("rotate_keys", stdout=out, stderr=StringIO())
    assert "attachment files: 0 re-encrypted, 1 already under the first key" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_deleting_a_message_deletes_its_stored_file(bot, fake, attachment_dir):
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    inbound = bot(fixture("message_photo_no_caption"))
    assert len(list(attachment_dir.iterdir())) == 1
    InboundMessage.objects.filter(pk=inbound.pk).delete()
    assert Attachment.objects.count() == 0 and list(attachment_dir.iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_a_polled_photo_is_fetched_and_reaches_brain_too(make_connector, fake):
    import threading

    from connectors.registry.kinds import connector_for

    make_connector("tg_poll", kind="telegram", config={"mode": "polling", "api_base_url": fake.url, "poll_timeout": 1},
                   credentials={"bot_token": TOKEN})
    fake.add_file(PHOTO_ID, JPEG, file_path="photos/file_42.jpg")
    fake.enqueue_update(fixture("message_photo_no_caption"))
    assert connector_for(Connector.objects.get(pk="tg_poll")).poll_once(threading.Event()) == 1
    inbound = InboundMessage.objects.get(connector_id="tg_poll")
    assert Attachment.objects.get(inbound=inbound).status == "stored"
    assert reply_to(inbound).endswith(f"[1 attachment: image (image/jpeg, {len(JPEG)} bytes)]")


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_fetch_failure_is_unavailable_not_a_lost_message(bot, fake, monkeypatch):
    from connectors.platforms.telegram import client

    async def broken(bot, file_id, max_bytes):
        raise RuntimeError("an SDK surprise")

    monkeypatch.setattr(client, "download_file", broken)
    inbound = bot(fixture("message_photo_no_caption"))
    row = Attachment.objects.get(inbound=inbound)
    assert (row.status, row.error) == ("unavailable", "fetch_error: RuntimeError")
    assert reply_to(inbound).endswith("[1 attachment: image unavailable: fetch_error: RuntimeError]")
