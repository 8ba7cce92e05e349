"""`voice` over the real Twilio SDK and signed webhooks: the conversation loop and signature checks.

Greeting, speech → BRAIN → spoken reply, slow BRAIN → filler + Redirect, goodbye, silence. Outbound notification
calls and call status receipts are in test_twilio_voice_calls.py."""
import time

import pytest

from connectors import services
from connectors.models import Delivery, InboundMessage
from connectors.platforms.base import IncomingMessage
from tests.conftest import SYSTEM
from tests.connectors import twilio_support, twilio_voice_support
from tests.connectors.twilio_brains import GatedBrain, SlowBrain
from tests.connectors.twilio_support import PUBLIC, counts, embedded_worker, fixture, post_twilio
from tests.connectors.twilio_voice_support import (
    CALL_SID,
    CALLER,
    VOICE,
    call,
    greet,
    query,
    says,
    silence,
    speech,
    twiml,
    verbs,
)
from tests.fakes.twilio_server import sign

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector
voice = twilio_voice_support.voice


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
