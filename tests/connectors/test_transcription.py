"""Voice transcription: a Telegram voice note (real SDK, fake Bot API, real-format fixture) is transcribed by the
HTTP transcriber against the loopback fake OpenAI-compatible server before BRAIN is asked; BRAIN gets the transcript,
memory keeps it searchable, and a transcriber that fails never costs the message."""
import json

import pytest
from django.db import connection

from audit.models import AuditEvent
from connectors.models import Attachment, InboundMessage
from connectors.permissions import Principal
from conversations.models import Message
from conversations.services import search
from tests.connectors import test_attachments as telegram_attachments
from tests.connectors.test_attachments import OGG, VOICE_ID, fixture, reply_to
from tests.fakes.brain_server import FakeBrain
from tests.fakes.transcriber_server import FakeTranscriber

SAID = "please call the plumber tomorrow morning"
API_KEY = "sk-test-transcriber-0123456789"
SYSTEM = Principal.system_actor("tests", via="test")

# The Telegram bot, fake Bot API and per-test attachment storage of test_attachments, shared.
attachment_dir, bot, fake = telegram_attachments.attachment_dir, telegram_attachments.bot, telegram_attachments.fake


@pytest.fixture
def transcriber(settings):
    server = FakeTranscriber(text=SAID, api_key=API_KEY).start()
    settings.TRANSCRIBER = "connectors.delivery.transcription.HttpTranscriber"
    settings.TRANSCRIBER_URL, settings.TRANSCRIBER_API_KEY = server.url, API_KEY
    settings.TRANSCRIBER_MODEL = "Systran/faster-whisper-small"
    yield server
    server.stop()


@pytest.fixture
def http_brain(settings):
    brain = FakeBrain(secret=settings.BRAIN_SIGNING_KEY).start()
    settings.BRAIN_BACKEND, settings.BRAIN_URL = "connectors.delivery.brain.HttpBrain", brain.url
    yield brain
    brain.stop()


def voice_note(bot, fake):
    fake.add_file(VOICE_ID, OGG, file_path="voice/file_3.oga")
    return bot(fixture("message_voice"))


@pytest.mark.django_db(transaction=True)
def test_a_voice_note_reaches_brain_with_its_transcript(bot, fake, transcriber, http_brain):
    inbound = voice_note(bot, fake)
    # The transcriber got the stored bytes as a multipart upload, with the model and the key.
    [call] = transcriber.requests
    assert (call.status, call.path, call.model, call.data, call.file_type) == (
        200, "/v1/audio/transcriptions", "Systran/faster-whisper-small", OGG, "audio/ogg")
    assert call.authorization == f"Bearer {API_KEY}"
    # BRAIN was asked after it: the transcript is the content (the person wrote nothing) and in the entry.
    [request] = http_brain.accepted
    message = request.json["message"]
    assert message["content"] == SAID
    [entry] = message["attachments"]
    assert (entry["kind"], entry["transcript"]) == ("voice", SAID)
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED and inbound.content == ""
    # Kept encrypted, like the message content.
    row = Attachment.objects.get(inbound=inbound)
    assert row.transcript == SAID
    with connection.cursor() as cursor:
        cursor.execute("SELECT transcript FROM connectors_attachment WHERE id = %s", [row.id.hex])
        [raw] = cursor.fetchone()
    assert raw and SAID not in raw
    # Audited by id, kind, size and length: never the words.
    audit = AuditEvent.objects.get(action="attachment.transcribe")
    assert audit.result == "success" and audit.details["attachment_id"] == str(row.id)
    assert audit.details["chars"] == len(SAID) and "plumber" not in json.dumps(audit.details)


@pytest.mark.django_db(transaction=True)
def test_what_a_voice_note_said_is_in_memory_and_searchable(bot, fake, transcriber):
    inbound = voice_note(bot, fake)
    assert f'Echo: "{SAID}"' in reply_to(inbound)  # EchoBrain too got the transcript as the content
    assert Message.objects.get(inbound_id=inbound.pk).content == f"[voice] {SAID}"
    found = search(SYSTEM, "plumber tomorrow")  # EchoBrain's reply quotes it as well: the person's turn is found
    assert [m.inbound_id for m in found if m.role == "user"] == [inbound.pk]
    assert search(SYSTEM, "electrician") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("breakage", ["down", "error_500", "garbage", "no_text", "wrong_key"])
def test_a_failing_transcriber_never_loses_the_message(bot, fake, transcriber, settings, breakage):
    if breakage == "down":
        transcriber.down()
    elif breakage == "wrong_key":
        settings.TRANSCRIBER_API_KEY = "sk-wrong"
    else:
        transcriber.mode = breakage
    inbound = voice_note(bot, fake)
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    assert reply_to(inbound) == f'Echo: "" (0 context messages) [1 attachment: voice (audio/ogg, {len(OGG)} bytes)]'
    row = Attachment.objects.get(inbound=inbound)
    assert (row.status, row.transcript) == ("stored", "")
    audit = AuditEvent.objects.get(action="attachment.transcribe")
    assert audit.result == "failure" and audit.details["error"].startswith("transcriber_")
    assert Message.objects.get(inbound_id=inbound.pk).content == "[voice]"


@pytest.mark.django_db(transaction=True)
def test_transcription_is_off_by_default(bot, fake, settings):
    server = FakeTranscriber(text=SAID).start()
    try:
        settings.TRANSCRIBER_URL = server.url  # a URL alone turns nothing on: TRANSCRIBER stays empty
        assert settings.TRANSCRIBER == ""
        inbound = voice_note(bot, fake)
    finally:
        server.stop()
    assert server.requests == [] and Attachment.objects.get(inbound=inbound).transcript == ""
    assert not AuditEvent.objects.filter(action="attachment.transcribe").exists()


def test_the_transcriber_settings_are_checked(settings):
    from connectors.checks import check_transcriber

    settings.TRANSCRIBER = "connectors.delivery.transcription.HttpTranscriber"
    settings.TRANSCRIBER_URL = ""
    assert [m.id for m in check_transcriber()] == ["connectors.E006"]
    settings.TRANSCRIBER = "connectors.delivery.transcription.NoSuchTranscriber"
    assert [m.id for m in check_transcriber()] == ["connectors.E005"]
    settings.TRANSCRIBER = ""
    assert check_transcriber() == []


@pytest.mark.django_db(transaction=True)
def test_a_lost_fetch_task_still_transcribes_before_brain_is_asked(bot, fake, transcriber, monkeypatch, settings):
    from connectors.delivery import attachments, sweeper

    monkeypatch.setattr(attachments, "hand_over", lambda inbound_id, rows: None)  # the broker lost the fetch task
    inbound = voice_note(bot, fake)
    settings.ATTACHMENT_FETCH_GRACE = 0
    sweeper.sweep()  # re-drives the message to the BRAIN task, which fetches the file first
    assert Attachment.objects.get(inbound=inbound).transcript == SAID
    assert f'Echo: "{SAID}"' in reply_to(inbound)
    assert len(transcriber.requests) == 1  # once per file


@pytest.mark.django_db(transaction=True)
def test_a_transcript_reaches_a_memory_marker_not_consumed_yet(bot, fake, transcriber, monkeypatch):
    from conversations import recording
    from conversations.models import PendingMessage

    seen = []
    monkeypatch.setattr(recording, "kick", lambda: seen.append(list(PendingMessage.objects.values_list(
        "inbound_id", flat=True))))  # no consumer runs: the marker waits until BRAIN's context flushes it
    inbound = voice_note(bot, fake)
    assert inbound.pk in seen[0]  # the marker was there, unconsumed, when the transcript came
    assert Message.objects.get(inbound_id=inbound.pk).content == f"[voice] {SAID}"
    assert [m.inbound_id for m in search(SYSTEM, "plumber") if m.role == "user"] == [inbound.pk]
