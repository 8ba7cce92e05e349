"""Each signature verifier and inbound parser on its own, with hypothesis input: they return a
result or raise their documented exception (SignatureError, Ignored, WebhookIgnored,
WebhookMalformed, MessageValidationError, BrainError), never KeyError, TypeError, RecursionError…"""
import json
import time
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx
import pytest
from django.http import QueryDict
from django.test import RequestFactory
from hypothesis import example, given
from hypothesis import strategies as st

from brain_connectors.shared import signing
from connectors.delivery.brain import BrainError, HttpBrain
from connectors.platforms.base import IncomingMessage, MessageValidationError, Receipt, WebhookIgnored, WebhookMalformed
from connectors.platforms.slack import events as slack_events
from connectors.platforms.telegram.parsing import Ignored, parse_update, update_from_body, update_from_data
from connectors.platforms.twilio_common import inbound_message, receipt_from_status
from connectors.platforms.voice import VoiceConnector
from connectors.platforms.voice.conversation import CallState, is_goodbye
from connectors.platforms.webhook import WebhookConnector
from tests.fakes.standard_webhooks import check_signature
from tests.fuzz import strategies as s
from tests.fuzz.conftest import HOOK_SECRET, fuzz_settings

# Pure functions and loopback fakes: nothing here depends on the database, so the PostgreSQL pass skips it.
pytestmark = pytest.mark.vendor_neutral

BOT = {"id": 7000000001, "username": "brain_connectors_bot"}
TELEGRAM_FIXTURES = ["message_text", "edited_message", "callback_query", "group_message", "message_start_payload",
                     "message_voice", "message_photo_no_caption", "message_document", "message_location"]


def query_dict(pairs):
    q = QueryDict(mutable=True)
    for name, value in pairs:
        q.appendlist(name, value)
    return q


# --- Standard Webhooks signatures (generic webhook inbound, BRAIN, subscriptions) --------------

signature_headers = st.fixed_dictionaries({}, optional={
    "webhook-id": s.hostile_text,
    "webhook-timestamp": st.one_of(s.hostile_text, s.hostile_ints.map(str), st.just(str(10**400)),
                                   st.just(str(int(time.time())))),
    "webhook-signature": st.one_of(s.hostile_text, s.hostile_text.map(lambda t: "v1," + t)),
})


@fuzz_settings(300)
@given(headers=signature_headers, body=st.binary(max_size=100))
@example(headers={"webhook-id": "a", "webhook-timestamp": str(10**400), "webhook-signature": "v1,x"}, body=b"")
@example(headers={"webhook-id": "a", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,é"},
         body=b"")
@example(headers={"webhook-id": "\ud800", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,x"},
         body=b"")
def test_verify_raises_only_signature_error(headers, body):
    with pytest.raises(signing.SignatureError):
        signing.verify([HOOK_SECRET], headers, body)


@fuzz_settings(200)
@given(body=st.binary(max_size=200), msg_id=s.header_text.filter(str.strip), skew=st.integers(-299, 299),
       flip=st.integers(min_value=0))
def test_verify_accepts_exactly_the_signed_request(body, msg_id, skew, flip):
    now = time.time()
    headers = signing.signed_headers(HOOK_SECRET, body, msg_id=msg_id, timestamp=int(now) + skew)
    assert signing.verify([HOOK_SECRET], headers, body, now=now) == msg_id
    # The fakes' independent implementation agrees that this request is well signed.
    assert check_signature([HOOK_SECRET], headers, body, now=now) is None
    tampered = bytearray(body or b"\x00")
    tampered[flip % len(tampered)] ^= 0x01
    with pytest.raises(signing.SignatureError):
        signing.verify([HOOK_SECRET], headers, bytes(tampered) if body else b"x", now=now)


# --- Slack -------------------------------------------------------------------------------------

slack_bodies = st.one_of(
    st.sampled_from(["message_im", "app_mention", "message_in_thread", "message_bot", "message_changed",
                     "message_file_share", "url_verification"])
    .flatmap(lambda n: s.mutated_json(s.fixture("slack", n), max_mutations=6)).map(lambda v: json.dumps(v).encode()),
    s.random_bodies,
)


@fuzz_settings(400)
@given(body=slack_bodies, bot_user=st.sampled_from(["", "U0BOTUSER"]), channel_messages=st.booleans())
@example(body=b"[" * 100_000 + b"]" * 100_000, bot_user="", channel_messages=False)
@example(body=b'{"type": "event_callback", "event": {"type": "message", "subtype": ["bot_message"]}}', bot_user="",
         channel_messages=False)
@example(body=json.dumps({"type": "event_callback", "team_id": "T1", "event": {
    "type": "message", "subtype": "file_share", "channel_type": "im", "user": "U1", "channel": "D1", "ts": "1.2",
    "files": [{"url_private_download": 5, "size": True, "name": 3}, "x", {"url_private": "https://files.slack.com/a",
              "mimetype": "x" * 300, "name": "\u0000" * 300, "size": -1}]}}).encode(), bot_user="", channel_messages=False)
def test_slack_parser_raises_only_ignored(body, bot_user, channel_messages):
    try:
        parsed = slack_events.parse_body(body, bot_user, channel_messages)
    except slack_events.Ignored:
        return
    assert isinstance(parsed, (slack_events.Challenge, IncomingMessage))
    if isinstance(parsed, IncomingMessage):
        assert parsed.content.strip() or parsed.attachments


slack_signature_headers = st.fixed_dictionaries({}, optional={
    "X-Slack-Signature": st.one_of(s.hostile_text, s.hostile_text.map(lambda t: "v0=" + t)),
    "X-Slack-Request-Timestamp": st.one_of(s.hostile_text, s.hostile_ints.map(str), st.just(str(10**400)),
                                           st.just(str(int(time.time())))),
})


@fuzz_settings(300)
@given(headers=slack_signature_headers, body=st.binary(max_size=100))
def test_slack_signature_check_raises_only_signature_problem(headers, body):
    with pytest.raises(slack_events.SignatureProblem):
        slack_events.verify_signature("f0a1b2c3d4e5f60718293a4b5c6d7e8f", headers, body)


# --- Telegram ----------------------------------------------------------------------------------

telegram_bodies = st.one_of(
    st.sampled_from(TELEGRAM_FIXTURES).flatmap(lambda n: s.mutated_json(s.fixture("telegram", n), max_mutations=6))
    .map(lambda v: json.dumps(v).encode()),
    s.random_bodies,
)


@fuzz_settings(400)
@given(body=telegram_bodies, group=st.booleans())
@example(body=b"[" * 100_000 + b"]" * 100_000, group=False)
@example(body=json.dumps({"update_id": 5, "message": {"message_id": 1, "date": 0, "text": 7, "chat": {
    "id": 1, "type": "private"}, "from": {"id": 1, "is_bot": False, "first_name": "A"}}}).encode(), group=False)
@example(body=json.dumps({"update_id": 5, "message": {"message_id": 1, "date": 0, "text": ["@x"], "chat": {
    "id": -1, "type": "group"}, "from": {"id": 1, "is_bot": False, "first_name": "A"}}}).encode(), group=True)
def test_telegram_parser_raises_only_ignored(body, group):
    try:
        message = parse_update(update_from_body(body), BOT if group else {"id": None, "username": ""})
    except Ignored:
        return
    assert isinstance(message, IncomingMessage)
    assert message.platform_message_id == str(json.loads(body)["update_id"])


@fuzz_settings(200)
@given(data=s.json_values)
def test_telegram_update_from_data_raises_only_ignored(data):
    try:
        update = update_from_data(data)
    except Ignored:
        return
    assert update.update_id == data["update_id"]


# --- Twilio --------------------------------------------------------------------------------------

twilio_forms = st.one_of(
    st.sampled_from(["sms_inbound", "whatsapp_inbound", "whatsapp_inbound_media", "whatsapp_inbound_location",
                     "whatsapp_inbound_contact", "voice_gather_speech", "message_status_delivered",
                     "message_status_undelivered", "call_status_no_answer"])
    .flatmap(lambda n: s.mutated_form(s.fixture("twilio", n), max_mutations=6)),
    st.lists(st.tuples(st.sampled_from(["MessageSid", "From", "Body", "NumMedia", "MediaContentType0", "MediaUrl0",
                                        "MediaUrl1", "MessageStatus", "CallSid", "CallStatus", "ErrorCode",
                                        "Latitude", "Longitude", "Label", "Address"]), s.hostile_text),
             max_size=8),
)


@fuzz_settings(300)
@given(pairs=twilio_forms)
@example(pairs=[("MessageSid", "SM1"), ("From", "+1"), ("NumMedia", "9" * 5000)])
@example(pairs=[("MessageSid", "SM1"), ("From", "+1\x00"), ("Body", "hi")])
@example(pairs=[("MessageSid", "SM1"), ("From", "+1"), ("NumMedia", "1"), ("MediaUrl0", "https://a/\x00"),
                ("MediaContentType0", "x" * 300)])
@example(pairs=[("MessageSid", "SM1"), ("From", "+1"), ("Latitude", "1e400"), ("Longitude", "0")])
@example(pairs=[("MessageSid", "SM1"), ("From", "+1"), ("Latitude", "1"), ("Longitude", "2"), ("Label", "\ud800\x00"),
                ("Address", "x" * 20_000)])
def test_twilio_inbound_parsers_raise_only_webhook_ignored(pairs):
    params = query_dict(pairs)
    try:
        message = inbound_message(params)
        assert isinstance(message, IncomingMessage)
        assert message.content.strip() or message.attachments
    except WebhookIgnored:
        pass
    try:
        receipt = receipt_from_status(params)
        assert receipt is None or (isinstance(receipt, Receipt) and receipt.status in ("delivered", "failed"))
    except WebhookIgnored:
        pass


@fuzz_settings(300)
@given(query=st.lists(st.tuples(st.sampled_from(["turn", "silence", "pending", "wait", "ack", "retry"]),
                                st.one_of(s.hostile_text, st.integers(-5, 2**70).map(str), st.uuids().map(str))),
                      max_size=5),
       form=s.mutated_form(s.fixture("twilio", "voice_gather_speech"), max_mutations=5))
@example(query=[("turn", "²")], form=[("CallSid", "CA1")])
@example(query=[("pending", "9" * 5000)], form=[("CallSid", "CA1")])
def test_voice_call_state_raises_only_webhook_ignored(query, form):
    path = "/webhooks/twilio/voice/voice/?" + urlencode(query, encoding="utf-8", errors="surrogatepass")
    request = RequestFactory().post(path, data=s.form_body(form), content_type="application/x-www-form-urlencoded")
    try:
        state = CallState.from_request(request)
    except WebhookIgnored:
        return
    assert state.call_sid
    assert isinstance(is_goodbye(state.speech), bool)
    assert state.speech_message_id().startswith(state.call_sid)
    assert VoiceConnector.caller_address(state)


@fuzz_settings(200)
@given(recipient=s.hostile_text)
def test_recipient_validation_answers_never_raises(recipient):
    problem = VoiceConnector.validate_recipient(recipient)
    assert problem is None or isinstance(problem, str)


# --- the generic webhook connector ----------------------------------------------------------------

inbound_payload = {"id": "evt-1", "sender": "ada", "content": "The build is green.", "sender_name": "Ada",
                   "metadata": {"build": 42}, "attachments": [
                       {"url": "https://files.example.org/report.pdf", "mime_type": "application/pdf",
                        "file_name": "report.pdf", "caption": "the report"}]}


def _nested(depth):
    value = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@fuzz_settings(300)
@given(body=st.one_of(s.mutated_json(inbound_payload, max_mutations=6).map(
    lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")), s.random_bodies))
@example(body=json.dumps({"sender": "ada", "content": "hi", "metadata": _nested(900)}).encode())
@example(body=json.dumps({"sender": "ada", "content": "x\ud800y"}).encode())
@example(body=json.dumps({"sender": "ada\u0000", "content": "hi"}).encode())
@example(body=json.dumps({"sender": "ada", "content": "hi", "metadata": {"k": "\u0000"}}).encode())
@example(body=json.dumps({"sender": "ada", "content": "", "attachments": [{"url": "http://[::1"}]}).encode())
@example(body=json.dumps({"sender": "ada", "content": "", "attachments": [{"url": "http://a:99999/"}]}).encode())
@example(body=json.dumps({"sender": "ada", "content": "", "attachments": [{"url": "https://a/", "caption": "\u0000"}]}
                         ).encode())
def test_generic_webhook_parser_raises_only_webhook_malformed(body):
    platform = WebhookConnector(SimpleNamespace(config={"url": "http://127.0.0.1:9/"}, pk="hook", id="hook"))
    request = RequestFactory().post("/webhooks/inbound/hook/", data=body, content_type="application/json",
                                    headers={"webhook-id": "msg_1"})
    try:
        result = platform.parse_webhook(request, "messages")
    except WebhookMalformed as exc:
        assert exc.details  # the sender is told which field is wrong
        return
    (message,) = result.messages
    assert message.platform_message_id and message.sender and (message.content or message.attachments)
    json.dumps(message.metadata).encode("utf-8")  # storable as it is


@fuzz_settings(200)
@given(sender=s.hostile_text, content=s.hostile_text, pid=s.hostile_text, name=st.one_of(s.hostile_text, s.json_values),
       metadata=s.json_values)
def test_incoming_message_raises_only_validation_errors(sender, content, pid, name, metadata):
    try:
        message = IncomingMessage(sender=sender, content=content, platform_message_id=pid, sender_name=name,
                                  metadata=metadata)
    except MessageValidationError as exc:
        assert exc.errors
        return
    assert "\x00" not in message.sender + message.platform_message_id
    message.content.encode("utf-8")
    json.dumps(message.metadata).encode("utf-8")


# --- BRAIN's answers (an HTTP response from the BRAIN backend) -------------------------------------


@fuzz_settings(200)
@given(body=st.one_of(s.random_bodies, s.json_values.map(lambda v: json.dumps({"reply": v}).encode())))
@example(body=b'{"reply": ' * 100_000)
@example(body=b"[" * 100_000 + b"]" * 100_000)
def test_brain_answer_parser_raises_only_brain_error(body):
    response = httpx.Response(200, content=body, headers={"content-type": "application/json"})
    try:
        reply = HttpBrain._parse(response)
    except BrainError as exc:
        assert exc.code == "brain_bad_response"
        return
    assert reply is None or (isinstance(reply, str) and reply.strip())
