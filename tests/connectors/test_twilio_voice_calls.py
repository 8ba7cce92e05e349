"""`voice` outbound: notification calls with an acknowledgement digit, call status receipts, pure helpers."""

import pytest

from connectors import services
from connectors.models import Delivery
from connectors.platforms.base import IncomingMessage
from connectors.platforms.voice.conversation import is_goodbye
from connectors.platforms.voice.twiml import chunks
from tests.conftest import SYSTEM
from tests.connectors import twilio_support, twilio_voice_support
from tests.connectors.twilio_support import PUBLIC, audit_details, counts, fixture, post_twilio
from tests.connectors.twilio_voice_support import CALL_SID, CALLER, call, parse, query, says, twiml, verbs

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector
voice = twilio_voice_support.voice


# --- outbound calls --------------------------------------------------------------------------


def test_notification_places_a_call_that_says_the_text(settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = PUBLIC
    voice("voice_out", voice="alice")
    delivery, _ = services.send_message(SYSTEM, "voice_out", CALLER, "Your build <b>failed</b> & needs you.")
    delivery.refresh_from_db()
    [placed] = twilio_fake.calls
    assert placed.form["To"] == CALLER and placed.form["From"] == twilio_support.FROM_NUMBER
    assert placed.form["StatusCallback"] == f"{PUBLIC}/webhooks/twilio/voice_out/status/"
    root = parse(placed.form["Twiml"])
    assert verbs(root) == ["Say"] and says(root) == ["Your build <b>failed</b> & needs you."]  # escaped, not markup
    assert root.find("Say").get("voice") == "alice"
    assert delivery.status == "sent" and delivery.platform_message_id == placed.response["sid"]


def test_a_notification_in_markdown_is_spoken_as_plain_text(voice, twilio_fake):
    voice("voice_md")
    services.send_message(SYSTEM, "voice_md", CALLER, "# Alert\n\nYour **build** failed, see [the log](https://ci.example.org/1).")
    assert says(parse(twilio_fake.calls[0].form["Twiml"])) == [
        "Alert Your build failed, see the log (https://ci.example.org/1)."]


def test_calls_to_client_addresses_but_not_back_to_anonymous_callers(voice, twilio_fake):
    voice("voice_addr")
    placed, _ = services.send_message(SYSTEM, "voice_addr", "client:alice", "Ping")
    anonymous, _ = services.send_message(SYSTEM, "voice_addr", f"anonymous:{CALL_SID}", "Ping")
    placed.refresh_from_db()
    anonymous.refresh_from_db()
    assert placed.status == "sent" and twilio_fake.calls[0].form["To"] == "client:alice"
    assert anonymous.status == "failed" and "anonymous" in anonymous.last_error
    assert len(twilio_fake.calls) == 1


def test_notification_with_ack_records_the_digit(client, settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = PUBLIC
    voice("voice_ack", ask_ack=True)
    delivery, _ = services.send_message(SYSTEM, "voice_ack", CALLER, "Server down. Press 1.")
    delivery.refresh_from_db()
    root = parse(twilio_fake.calls[0].form["Twiml"])
    gather = root.find("Gather")
    assert gather.get("input") == "dtmf" and gather.get("numDigits") == "1"
    ack_url = gather.get("action")
    assert ack_url == f"{PUBLIC}/webhooks/twilio/voice_ack/voice/?ack={delivery.pk}"
    assert says(gather) == ["Server down. Press 1.", "Press 1 to acknowledge."]

    answered = fixture("call_status_no_answer", CallSid=delivery.platform_message_id, CallStatus="in-progress",
                       Digits="1", To=CALLER, Called=CALLER)
    root = twiml(call(client, ack_url, answered))
    assert verbs(root) == ["Say", "Hangup"] and "acknowledgement is recorded" in says(root)[0]
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    [ack] = audit_details("message.acknowledged")
    assert ack["delivery_id"] == str(delivery.pk) and ack["previous"] == "sent"


def test_another_digit_asks_once_more_and_records_nothing(client, settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = PUBLIC
    voice("voice_ack2", ask_ack=True)
    delivery, _ = services.send_message(SYSTEM, "voice_ack2", CALLER, "Check the backups.")
    delivery.refresh_from_db()
    ack_url = parse(twilio_fake.calls[0].form["Twiml"]).find("Gather").get("action")
    params = fixture("call_status_no_answer", CallSid=delivery.platform_message_id, CallStatus="in-progress", Digits="7")
    root = twiml(call(client, ack_url, params))
    retry_url = root.find("Gather").get("action")
    assert query(retry_url) == {"ack": str(delivery.pk), "retry": "1"}
    root = twiml(call(client, retry_url, params))
    assert verbs(root) == ["Say", "Hangup"]
    delivery.refresh_from_db()
    assert delivery.status == "sent" and audit_details("message.acknowledged") == []


def test_an_ack_from_another_call_is_refused(client, settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = PUBLIC
    voice("voice_ack3", ask_ack=True)
    delivery, _ = services.send_message(SYSTEM, "voice_ack3", CALLER, "Check the backups.")
    ack_url = parse(twilio_fake.calls[0].form["Twiml"]).find("Gather").get("action")
    params = fixture("call_status_no_answer", CallSid="CA" + "1" * 32, CallStatus="in-progress", Digits="1")
    twiml(call(client, ack_url, params))
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert audit_details("message.acknowledged") == [
        {"via": "webhook", "error": "platform_id_mismatch"}
    ]


def test_ask_ack_needs_public_base_url(settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = ""
    connector = voice("voice_nopub", ask_ack=True)
    assert connector.status == "ERROR" and "PUBLIC_BASE_URL" in connector.last_error


def test_text_too_long_for_a_call_is_refused(voice, twilio_fake):
    voice("voice_long")
    delivery, _ = services.send_message(SYSTEM, "voice_long", CALLER, "word " * 900)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and audit_details("message.failed")[-1]["error"] == "too_long"
    assert twilio_fake.calls == []


@pytest.mark.parametrize("mode, status", [("rate_limited", "queued"), ("invalid_to", "failed"), ("error_500", "queued")])
def test_call_errors_are_classified(voice, twilio_fake, mode, status):
    voice("voice_err")
    twilio_fake.set_mode(mode)
    delivery, _ = services.send_message(SYSTEM, "voice_err", CALLER, "hello")
    delivery.refresh_from_db()
    assert delivery.status == status


# --- call status -----------------------------------------------------------------------------


def _placed_call(settings, voice, connector_id):
    settings.PUBLIC_BASE_URL = PUBLIC
    voice(connector_id)
    delivery, _ = services.send_message(SYSTEM, connector_id, CALLER, "Your taxi is here.")
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    return delivery


def test_call_status_no_answer_fails_the_delivery(client, settings, voice, twilio_fake):
    delivery = _placed_call(settings, voice, "voice_na")
    path = "/webhooks/twilio/voice_na/status/"
    payload = fixture("call_status_no_answer", CallSid=delivery.platform_message_id)
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}").status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "no-answer" in delivery.last_error


def test_call_status_completed_delivers(client, settings, voice, twilio_fake):
    delivery = _placed_call(settings, voice, "voice_done")
    path = "/webhooks/twilio/voice_done/status/"
    payload = fixture("call_status_no_answer", CallSid=delivery.platform_message_id, CallStatus="completed",
                      CallDuration="14")
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}").status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


def test_call_status_is_signature_checked(client, settings, voice, twilio_fake):
    delivery = _placed_call(settings, voice, "voice_stsig")
    path = "/webhooks/twilio/voice_stsig/status/"
    payload = fixture("call_status_no_answer", CallSid=delivery.platform_message_id)
    before = counts()
    assert post_twilio(client, path, payload).status_code == 403  # signed for testserver, not the public URL
    delivery.refresh_from_db()
    assert delivery.status == "sent" and counts() == before


def test_ringing_is_not_a_receipt(client, settings, voice, twilio_fake):
    delivery = _placed_call(settings, voice, "voice_ring")
    path = "/webhooks/twilio/voice_ring/status/"
    payload = fixture("call_status_no_answer", CallSid=delivery.platform_message_id, CallStatus="ringing")
    response = post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}")
    assert response.status_code == 200 and "ignored" in response.json()
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_a_reply_left_unspoken_when_the_caller_hangs_up_fails(client, voice, twilio_fake):
    voice("voice_hup")
    # An utterance whose reply BRAIN produced, but that no TwiML request spoke (the caller hung up).
    services.receive_message("voice_hup", IncomingMessage(
        sender=CALLER, content="Are you there?", platform_message_id=f"{CALL_SID}:3:abc",
        metadata={"call_sid": CALL_SID, "turn": 3, "channel": "voice"}))
    reply = Delivery.objects.get()
    assert reply.status == "sent" and reply.platform_message_id == f"call:{CALL_SID}:{reply.pk}"
    path = "/webhooks/twilio/voice_hup/status/"
    ended = fixture("voice_incoming", CallStatus="completed", CallDuration="40")
    assert post_twilio(client, path, ended).status_code == 200
    reply.refresh_from_db()
    assert reply.status == "failed" and "ended before the reply" in reply.last_error


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words, ends",
    [
        ("Goodbye.", True),
        ("bye bye", True),
        ("OK, thank you, bye!", True),
        ("that's all thanks", True),
        ("hang up", True),
        ("Say goodbye to my mother for me", False),
        ("Can you buy milk", False),
        ("What time is it", False),
    ],
)
def test_goodbye_detection(words, ends):
    assert is_goodbye(words) is ends


def test_long_replies_are_spoken_in_chunks():
    pieces = list(chunks("word " * 2000, size=3000))
    assert len(pieces) == 4 and all(len(p) <= 3000 for p in pieces)
    assert " ".join(pieces) == ("word " * 2000).strip()


def test_voice_connectors_take_no_messages(client, voice, twilio_fake):
    voice("voice_msgs")
    before = counts()
    response = post_twilio(client, "/webhooks/twilio/voice_msgs/", fixture("sms_inbound"))
    assert response.status_code == 200 and "ignored" in response.json()
    assert counts() == before
