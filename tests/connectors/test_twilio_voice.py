"""`voice` over the real Twilio SDK and signed webhooks: the conversation loop (greeting, speech →
BRAIN → spoken reply, slow BRAIN → filler + Redirect, goodbye, silence), outbound notification
calls with an acknowledgement digit, and call status receipts."""
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors import services
from connectors.models import Delivery, InboundMessage
from connectors.platforms.base import IncomingMessage
from connectors.platforms.voice.conversation import is_goodbye
from connectors.platforms.voice.twiml import chunks
from tests.conftest import SYSTEM
from tests.connectors import twilio_support
from tests.connectors.twilio_brains import GatedBrain, SlowBrain
from tests.connectors.twilio_support import PUBLIC, audit_details, counts, embedded_worker, fixture, post_twilio
from tests.fakes.twilio_server import sign

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

CALL_SID = "CA5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
CALLER = "+14155550199"
VOICE = "/webhooks/twilio/{}/voice/"


def parse(xml):
    return ET.fromstring(xml)  # noqa: S314 (TwiML this service wrote itself)


def twiml(response):
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/xml")
    root = parse(response.content)
    assert root.tag == "Response"
    return root


def verbs(root):
    return [child.tag for child in root]


def says(element):
    return [say.text for say in element.iter("Say")]


def call(client, url, params, **kwargs):
    """POST to an absolute URL our TwiML gave Twilio, signed for exactly that URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return post_twilio(client, path, params, sign_url=url, **kwargs)


def query(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def speech(text, **overrides):
    return fixture("voice_gather_speech", SpeechResult=text, **overrides)


def silence():
    return fixture("voice_gather_speech", SpeechResult=None, Confidence=None)


@pytest.fixture
def voice(settings, twilio_connector):
    settings.PUBLIC_BASE_URL = ""  # tests that want one set it after this

    def make(id="voice_main", **config):
        config.setdefault("greeting", "Hi, BRAIN here. What can I do for you?")
        config.setdefault("reply_wait_seconds", 2)
        return twilio_connector(id, "voice", **config)

    return make


def greet(client, connector_id="voice_main"):
    root = twiml(post_twilio(client, VOICE.format(connector_id), fixture("voice_incoming")))
    return root, root.find("Gather").get("action")


# --- the conversation ------------------------------------------------------------------------


def test_incoming_call_is_greeted_with_a_speech_gather(client, settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = ""
    voice(language="en-GB", voice="Polly.Amy")
    before = counts()
    root, action = greet(client)
    assert verbs(root) == ["Gather", "Redirect"]
    gather = root.find("Gather")
    assert gather.get("input") == "speech" and gather.get("speechTimeout") == "auto"
    assert gather.get("language") == "en-GB" and gather.get("actionOnEmptyResult") == "true"
    assert action == "http://testserver/webhooks/twilio/voice_main/voice/?turn=1&silence=0"
    assert says(gather) == ["Hi, BRAIN here. What can I do for you?"]
    assert gather.find("Say").get("voice") == "Polly.Amy"
    assert root.find("Redirect").text == action  # a Gather without any result counts as silence
    assert counts() == before  # a greeting stores nothing


def test_urls_use_public_base_url_behind_a_proxy(client, settings, voice, twilio_fake):
    settings.PUBLIC_BASE_URL = PUBLIC
    voice()
    path = VOICE.format("voice_main")
    response = post_twilio(client, path, fixture("voice_incoming"), sign_url=f"{PUBLIC}{path}")
    action = twiml(response).find("Gather").get("action")
    assert action == f"{PUBLIC}{path}?turn=1&silence=0"
    # The next request is signed for that public URL; the test client still calls testserver.
    root = twiml(call(client, action, speech("Hello there")))
    assert says(root)[0].startswith('Echo: "Hello there"')


def test_speech_is_stored_answered_spoken_and_marked_delivered(client, voice, twilio_fake):
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, speech("What is the weather tomorrow?")))
    inbound = InboundMessage.objects.get()
    assert inbound.sender == CALLER and inbound.content == "What is the weather tomorrow?"
    assert inbound.metadata == {"call_sid": CALL_SID, "turn": 1, "channel": "voice"}
    assert inbound.platform_message_id.startswith(f"{CALL_SID}:1:")
    reply = Delivery.objects.get()
    assert reply.in_reply_to == inbound and reply.recipient == CALLER
    assert reply.status == "delivered"
    assert reply.platform_message_id == f"call:{CALL_SID}:{reply.pk}"
    assert twilio_fake.calls == []  # the reply was spoken in the call: no new call placed
    assert verbs(root) == ["Say", "Gather", "Redirect"]
    assert says(root) == ['Echo: "What is the weather tomorrow?" (0 context messages)']
    assert query(root.find("Gather").get("action")) == {"turn": "2", "silence": "0"}


@pytest.mark.parametrize("caller, sender", [
    ("client:alice", "client:alice"),  # a Twilio Client (browser/app) caller
    ("Anonymous", f"anonymous:{CALL_SID}"),  # no caller ID
])
def test_callers_without_a_phone_number_are_answered_too(client, voice, twilio_fake, caller, sender):
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, speech("Hello", From=caller, Caller=caller)))
    assert says(root) == ['Echo: "Hello" (0 context messages)']
    assert InboundMessage.objects.get().sender == sender
    assert Delivery.objects.get().status == "delivered"


def test_a_retried_speech_request_is_stored_once_and_spoken_again(client, voice, twilio_fake):
    voice()
    _, action = greet(client)
    first = twiml(call(client, action, speech("Book a table")))
    again = twiml(call(client, action, speech("Book a table")))
    assert InboundMessage.objects.count() == 1 and Delivery.objects.count() == 1
    assert says(first) == says(again)


def test_the_same_words_in_a_later_turn_are_a_new_message(client, voice, twilio_fake):
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, speech("Yes")))
    next_action = root.find("Gather").get("action")
    root = twiml(call(client, next_action, speech("Yes")))
    assert InboundMessage.objects.count() == 2
    assert says(root) == ['Echo: "Yes" (2 context messages)']  # BRAIN saw the earlier exchange


@pytest.mark.parametrize("words", ["Goodbye", "ok thanks, bye!", "That's all", "Good-bye now"])
def test_goodbye_ends_the_call(client, voice, twilio_fake, words):
    voice(goodbye="Talk soon.")
    _, action = greet(client)
    before = counts()
    root = twiml(call(client, action, speech(words)))
    assert verbs(root) == ["Say", "Hangup"] and says(root) == ["Talk soon."]
    assert counts() == before


def test_silence_twice_in_a_row_ends_the_call(client, voice, twilio_fake):
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, silence()))
    assert verbs(root) == ["Gather", "Redirect"] and "did not hear" in says(root)[0]
    again = root.find("Gather").get("action")
    assert query(again) == {"turn": "1", "silence": "1"}
    root = twiml(call(client, again, silence()))
    assert verbs(root) == ["Say", "Say", "Hangup"]
    assert counts()[0] == 0


def test_speech_resets_the_silence_count(client, voice, twilio_fake):
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, silence()))
    root = twiml(call(client, root.find("Gather").get("action"), speech("Still there?")))
    assert query(root.find("Gather").get("action")) == {"turn": "2", "silence": "0"}
    root = twiml(call(client, root.find("Gather").get("action"), silence()))
    assert verbs(root) == ["Gather", "Redirect"]  # one silence since the last words: not yet


def test_brain_failure_is_apologised_for_and_the_call_goes_on(client, settings, voice, twilio_fake):
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.FailingBrain"
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, speech("Anything?")))
    assert "Sorry" in says(root)[0] and verbs(root) == ["Say", "Gather", "Redirect"]
    assert InboundMessage.objects.get().brain_status == "failed"


def test_no_reply_from_brain_just_listens_again(client, settings, voice, twilio_fake):
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.NoReplyBrain"
    voice()
    _, action = greet(client)
    root = twiml(call(client, action, speech("Note that down")))
    assert verbs(root) == ["Gather", "Redirect"] and says(root) == []
    assert query(root.find("Gather").get("action"))["turn"] == "2"


def test_slow_brain_in_eager_mode_is_still_answered_in_the_same_response(client, settings, voice, twilio_fake,
                                                                         monkeypatch):
    """Eager Celery (make run) asks BRAIN inside the webhook request: the reply is ready when the
    TwiML is written, however long BRAIN took, so no filler is needed."""
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.SlowBrain"
    monkeypatch.setattr(SlowBrain, "delay", 0.5)  # restored after the test: other tests see the class's own
    voice(reply_wait_seconds=0.1)
    _, action = greet(client)
    root = twiml(call(client, action, speech("Take your time")))
    assert says(root) == ["Slowly: Take your time"]


@pytest.fixture
def gated_brain(settings):
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.GatedBrain"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    GatedBrain.reset()
    yield GatedBrain
    GatedBrain.gate.set()  # never leave a worker waiting


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_slow_brain_gets_a_filler_and_redirect_then_the_reply(client, voice, twilio_fake, gated_brain):
    voice(reply_wait_seconds=0.3, filler="Let me think.")
    with embedded_worker():
        _, action = greet(client)
        started = time.monotonic()
        root = twiml(call(client, action, speech("Plan my week")))
        assert time.monotonic() - started < 5  # answered without waiting for BRAIN
        assert gated_brain.asked.wait(10)  # the worker is asking BRAIN
        inbound = InboundMessage.objects.get()
        assert verbs(root) == ["Say", "Redirect"] and says(root) == ["Let me think."]
        redirect = root.find("Redirect").text
        assert query(redirect) == {"turn": "1", "pending": str(inbound.pk), "wait": "1"}

        # Still thinking: hold on again, without repeating the filler.
        root = twiml(call(client, redirect, fixture("voice_incoming", CallStatus="in-progress")))
        assert verbs(root) == ["Redirect"] and query(root.find("Redirect").text)["wait"] == "2"

        gated_brain.gate.set()
        assert wait_until(lambda: Delivery.objects.filter(in_reply_to=inbound, status="sent").exists())
        root = twiml(call(client, root.find("Redirect").text, fixture("voice_incoming", CallStatus="in-progress")))
    assert says(root) == ["After thinking: Plan my week"]
    assert query(root.find("Gather").get("action")) == {"turn": "2", "silence": "0"}
    assert Delivery.objects.get().status == "delivered"
    assert twilio_fake.calls == []


def test_waiting_too_long_gives_up_politely(client, voice, twilio_fake, gated_brain):
    voice(reply_wait_seconds=0.2, max_wait_rounds=2)
    with embedded_worker():
        _, action = greet(client)
        root = twiml(call(client, action, speech("Hard question")))
        root = twiml(call(client, root.find("Redirect").text, fixture("voice_incoming", CallStatus="in-progress")))
        assert "taking too long" in says(root)[0]
        assert query(root.find("Gather").get("action"))["turn"] == "2"
        gated_brain.gate.set()


def test_a_reply_still_queued_is_not_spoken_until_it_is_sent(client, voice, twilio_fake):
    """Only a reply that went through send() (the delivery pipeline: quotas, retries) is spoken."""
    voice(reply_wait_seconds=0.2)
    services.receive_message("voice_main", IncomingMessage(
        sender=CALLER, content="Status?", platform_message_id=f"{CALL_SID}:1:q",
        metadata={"call_sid": CALL_SID, "turn": 1, "channel": "voice"}))
    reply = Delivery.objects.get()
    Delivery.objects.filter(pk=reply.pk).update(status="queued", platform_message_id="")  # not attempted yet
    inbound = InboundMessage.objects.get()
    url = f"http://testserver/webhooks/twilio/voice_main/voice/?turn=1&pending={inbound.pk}&wait=1"
    in_call = fixture("voice_incoming", CallStatus="in-progress")
    root = twiml(call(client, url, in_call))
    assert verbs(root) == ["Redirect"] and says(root) == []
    services.attempt_delivery(reply.pk)  # what the worker does next
    root = twiml(call(client, root.find("Redirect").text, in_call))
    assert says(root) == ['Echo: "Status?" (0 context messages)']
    reply.refresh_from_db()
    assert reply.status == "delivered"


def test_a_pending_id_of_another_call_is_not_spoken(client, voice, twilio_fake):
    voice()
    _, action = greet(client)
    twiml(call(client, action, speech("Private matter")))
    inbound = InboundMessage.objects.get()
    other_call = fixture("voice_incoming", CallSid="CA" + "f" * 32, CallStatus="in-progress")
    url = f"http://testserver/webhooks/twilio/voice_main/voice/?turn=1&pending={inbound.pk}&wait=1"
    root = twiml(call(client, url, other_call))
    assert says(root) == []  # the other caller does not hear this call's reply


def test_stopped_connector_tells_the_caller(client, voice, twilio_fake):
    voice()
    services.stop_connector(SYSTEM, "voice_main")
    root = twiml(post_twilio(client, VOICE.format("voice_main"), fixture("voice_incoming")))
    assert verbs(root) == ["Say", "Hangup"] and "not available" in says(root)[0]


# --- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["forged", "missing", "tampered_query", "stale_url"])
def test_voice_requests_are_signature_checked_before_any_write(client, voice, twilio_fake, how):
    voice()
    _, action = greet(client)
    before = counts()
    params = speech("Transfer all my money")
    if how == "forged":
        response = call(client, action, params, token="forged_token_0123456789")
    elif how == "missing":
        response = call(client, action, params, signature="")
    elif how == "tampered_query":  # signed for turn=1, replayed with another turn
        response = post_twilio(client, "/webhooks/twilio/voice_main/voice/?turn=7&silence=0", params,
                               signature=sign(twilio_support.AUTH_TOKEN, action, params))
    else:  # signed for the greeting URL, posted to the action URL
        greeting_url = "http://testserver/webhooks/twilio/voice_main/voice/"
        response = call(client, action, params, signature=sign(twilio_support.AUTH_TOKEN, greeting_url, params))
    assert response.status_code == 403
    assert counts() == before


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
