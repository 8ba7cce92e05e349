"""Hostile input through HTTP, for every webhook endpoint (Django test client, real views, real
platform SDK checks): never a 5xx; an unsigned or forged request is a 4xx that writes nothing at
all; a validly signed but malformed request is stored as one coherent message or acknowledged /
refused with nothing (or one audit row) written, never half of a message."""
import ipaddress
import json
import socket
import time

import pytest
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st

from connectors.models import InboundMessage
from connectors.platforms.attachments import summary
from conversations.models import Message, SearchToken
from routing.pairing.inbound import memory_text
from tests.fuzz import strategies as s
from tests.fuzz.conftest import (
    delta,
    fuzz_settings,
    hook_headers,
    slack_headers,
    snapshot,
    twilio_signature,
    url,
)

pytestmark = pytest.mark.django_db(transaction=True)

ROUTES = {
    "telegram": "/webhooks/telegram/{id}/",
    "twilio": "/webhooks/twilio/{id}/",
    "voice": "/webhooks/twilio/{id}/voice/",
    "status": "/webhooks/twilio/{id}/status/",
    "inbound": "/webhooks/inbound/{id}/",
    "slack": "/webhooks/slack/{id}/",
}
CONNECTOR_IDS = ["tgm", "sms", "wap", "voice", "hook", "off", "slk"]
SLACK_FIXTURES = ["message_im", "app_mention", "message_in_thread", "message_bot", "message_changed",
                  "message_file_share", "url_verification"]
OTHER_SECRET = "whsec_" + "c29tZWJvZHktZWxzZXMtc2VjcmV0LTAxMjM0NTY3ODk="
TELEGRAM_FIXTURES = ["message_text", "edited_message", "callback_query", "group_message", "message_start_payload",
                     "message_voice", "message_photo_no_caption", "message_document", "message_location"]
# Written by a correctly signed request that stores nothing: the duplicate, unknown-receipt or
# refused-acknowledgement audit row.
AUDIT_ONLY = {"audit.AuditEvent": 1}


def post(path, body, content_type, headers=None):
    # generic(): the body goes out byte for byte, whatever the content type claims.
    return Client().generic("POST", path, data=body, content_type=content_type, headers=headers or {})


def assert_no_server_error(response):
    assert response.status_code < 500, (response.status_code, response.content[:500])


def assert_twilio_answer(response, decodable):
    """200 (TwiML, or an acknowledgement of what was ignored) for any form Django can decode; for
    one it cannot (a charset other than UTF-8, too many fields), Django's own 400."""
    assert_no_server_error(response)
    assert response.status_code == (200 if decodable else 400), response.content[:300]


def assert_coherent(before, after, brain_calls, calls_before):
    """Either nothing (or one audit row), or exactly one whole inbound message: its row, its audit
    row, its event, its conversation entry, handed to BRAIN once after commit."""
    assert after[1] == before[1], "a webhook changed a connector row"
    changed = delta(before, after)
    new_calls = brain_calls[calls_before:]
    inbound = changed.pop("connectors.InboundMessage", 0)
    if inbound == 0:
        assert changed in ({}, AUDIT_ONLY), changed
        assert new_calls == []
        return
    assert inbound == 1, changed
    stored = InboundMessage.objects.order_by("-pk").first()
    # Its attachment rows (a Telegram message carries one; Twilio, Slack and the generic webhook up to ten), each file
    # fetched once after commit (from a fake that does not have it, or a host that is refused: unavailable), with
    # its own audit row, before BRAIN is asked.
    attachments = changed.pop("connectors.Attachment", 0)
    assert attachments == stored.attachments.count() <= 10, changed
    # A location or a contact card sent inline has nothing to fetch; a contact with a type is a card file (WhatsApp's).
    fetched = stored.attachments.exclude(kind="location").exclude(kind="contact", mime_type="").count()
    assert stored.attachments.filter(status="pending").count() == 0
    assert changed.pop("audit.AuditEvent") == 1 + fetched
    assert changed.pop("connectors.Event") == 1
    assert changed.pop("conversations.Message") == 1
    assert changed.pop("conversations.Conversation", 0) in (0, 1)
    assert changed.pop("conversations.MessageAnalysis", 0) in (0, 1)
    # The blind index grew by this message's tokens only (however many words it has).
    assert changed.pop("conversations.SearchToken", 0) == SearchToken.objects.filter(message__inbound_id=stored.pk).count()
    assert changed == {}, f"unexpected writes next to a stored message: {changed}"
    assert new_calls == [stored.pk]
    assert stored.sender.strip() and stored.platform_message_id.strip()
    assert (stored.content.strip() or (attachments and stored.content == "")) and len(stored.content) <= 10_000
    # Memory keeps the message, except a pairing code, which it keeps as routing's placeholder.
    kept = memory_text(stored.connector_id, "inbound", stored.content) or stored.content \
        or summary(stored.attachments.values_list("kind", flat=True))
    assert Message.objects.get(inbound_id=stored.pk).content == kept


@pytest.fixture
def no_dns(monkeypatch):
    """Host names resolve to nothing (IP literals as usual): a mutated attachment URL never makes a DNS query."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "no such name (fuzz test)") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# --- 1. unsigned, forged or misaddressed: 4xx, nothing written --------------------------------


@st.composite
def forged_headers(draw, body):
    """Missing, garbled or forged credentials of every platform (never the right ones)."""
    now = int(time.time())
    kind = draw(st.sampled_from(["none", "telegram", "twilio", "twilio_other_token", "hook_garbled",
                                 "hook_wrong_secret", "hook_stale", "hook_huge_timestamp", "hook_tampered",
                                 "slack_garbled", "slack_wrong_secret", "slack_stale"]))
    if kind == "none":
        return {}
    if kind == "slack_garbled":
        names = ["X-Slack-Signature", "X-Slack-Request-Timestamp"]
        return {name: draw(s.header_text) for name in draw(st.lists(st.sampled_from(names), unique=True))}
    if kind == "slack_wrong_secret":
        return slack_headers(body, secret="another-apps-signing-secret-0000")
    if kind == "slack_stale":
        return slack_headers(body, timestamp=now + draw(st.integers(301, 10**9)) * draw(st.sampled_from([-1, 1])))
    if kind == "telegram":
        return {"X-Telegram-Bot-Api-Secret-Token": draw(s.header_text)}
    if kind == "twilio":
        return {"X-Twilio-Signature": draw(s.header_text)}
    if kind == "twilio_other_token":
        return {"X-Twilio-Signature": twilio_signature("/webhooks/twilio/sms/", body,
                                                       "application/x-www-form-urlencoded",
                                                       token="another_account_token_0123")[0]}
    if kind == "hook_garbled":
        names = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        return {name: draw(s.header_text) for name in draw(st.lists(st.sampled_from(names), unique=True))}
    if kind == "hook_wrong_secret":
        return hook_headers(body, OTHER_SECRET)
    if kind == "hook_stale":
        offset = draw(st.integers(301, 10**9)) * draw(st.sampled_from([-1, 1]))
        return hook_headers(body, timestamp=now + offset)
    if kind == "hook_huge_timestamp":  # signed with the right key, but no clock is that far off
        return hook_headers(body, timestamp=draw(st.sampled_from([10**400, -(10**400), 2**64])))
    headers = hook_headers(body)  # hook_tampered: a valid signature, then the body changed
    headers["webhook-signature"] += " v1," + draw(s.header_text)
    return {**headers, "webhook-id": headers["webhook-id"] + "x"}


@fuzz_settings(120)
@given(data=st.data(), route=st.sampled_from(sorted(ROUTES)),
       connector_id=st.one_of(st.sampled_from(CONNECTOR_IDS), s.hostile_text.filter(lambda t: t.strip("/"))),
       body=st.one_of(s.random_bodies, s.form_bodies), content_type=s.content_types)
@example(data=None, route="inbound", connector_id="hook", body=b"{}", content_type="application/json")
@example(data=None, route="telegram", connector_id="tg\x00m", body=b"{}", content_type="application/json")
def test_forged_or_unsigned_requests_are_refused_and_write_nothing(webhook_connectors, data, route, connector_id,
                                                                   body, content_type):
    headers = data.draw(forged_headers(body)) if data is not None else hook_headers(b"{}", timestamp=10**400)
    before = snapshot()
    response = post(url(ROUTES[route], connector_id), body, content_type, headers)
    assert_no_server_error(response)
    assert 400 <= response.status_code < 500
    assert snapshot() == before


@fuzz_settings(30)
@given(method=s.http_methods, route=st.sampled_from(sorted(ROUTES)), connector_id=st.sampled_from(CONNECTOR_IDS))
def test_other_methods_are_refused_and_write_nothing(webhook_connectors, method, route, connector_id):
    before = snapshot()
    headers = {"X-Telegram-Bot-Api-Secret-Token": webhook_connectors["telegram_secret"], **hook_headers(b"")}
    response = Client().generic(method, url(ROUTES[route], connector_id), headers=headers)
    assert response.status_code == 405
    assert snapshot() == before


def test_oversized_bodies_are_refused_before_anything_else(webhook_connectors):
    before = snapshot()
    for size in (1_000_001, 3_000_000):  # past our limit, and past Django's upload limit too
        body = json.dumps({"sender": "ada", "content": "x" * size}).encode()
        response = post("/webhooks/inbound/hook/", body, "application/json", hook_headers(body))
        assert response.status_code in (400, 413)
    assert snapshot() == before


# --- 2. validly signed, malformed: never 5xx, never half a message -----------------------------


telegram_bodies = st.one_of(
    st.sampled_from(TELEGRAM_FIXTURES).flatmap(lambda name: s.mutated_json(s.fixture("telegram", name)))
    .map(lambda v: json.dumps(v).encode()),
    s.random_bodies,
)


@fuzz_settings(100)
@given(body=telegram_bodies, content_type=s.content_types)
@example(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
@example(body=json.dumps({"update_id": 5, "message": {"message_id": 1, "date": 0, "text": 7,
                                                      "chat": {"id": 1, "type": "private"},
                                                      "from": {"id": 1, "is_bot": False, "first_name": "A"}}}).encode(),
         content_type="application/json")
@example(body=json.dumps({"update_id": 6, "message": {"message_id": 1, "date": 0, "text": "\ud800 hi",
                                                      "chat": {"id": 1, "type": "private"},
                                                      "from": {"id": 1, "is_bot": False, "first_name": "A"}}}).encode(),
         content_type="application/json")
def test_signed_telegram_updates(webhook_connectors, brain_calls, body, content_type):
    headers = {"X-Telegram-Bot-Api-Secret-Token": webhook_connectors["telegram_secret"]}
    before, calls = snapshot(), len(brain_calls)
    response = post("/webhooks/telegram/tgm/", body, content_type, headers)
    assert_no_server_error(response)
    # Telegram retries anything but 2xx for hours, holding back later updates: always 200.
    assert response.status_code == 200, response.content[:300]
    assert_coherent(before, snapshot(), brain_calls, calls)


slack_bodies = st.one_of(
    st.sampled_from(SLACK_FIXTURES).flatmap(lambda name: s.mutated_json(s.fixture("slack", name)))
    .map(lambda v: json.dumps(v).encode()),
    s.random_bodies,
)


@fuzz_settings(100)
@given(body=slack_bodies, content_type=s.content_types)
@example(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
@example(body=json.dumps({"type": "event_callback", "team_id": "T1", "event": {
    "type": "message", "channel_type": "im", "user": "U1", "channel": "D1", "ts": "1.2", "text": "\ud800 hi"}}).encode(),
    content_type="application/json")
def test_signed_slack_events(webhook_connectors, brain_calls, body, content_type):
    before, calls = snapshot(), len(brain_calls)
    response = post("/webhooks/slack/slk/", body, content_type, slack_headers(body))
    assert_no_server_error(response)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # Slack sends UTF-8 only: such a body cannot be Slack's, however it is signed
        assert response.status_code == 403 and snapshot() == before
        return
    # Slack retries anything but 2xx, then turns the app's events off: a well-signed request always gets 200.
    assert response.status_code == 200, response.content[:300]
    assert_coherent(before, snapshot(), brain_calls, calls)


message_forms = st.one_of(
    st.sampled_from(["sms_inbound", "whatsapp_inbound", "whatsapp_inbound_media", "whatsapp_inbound_location",
                     "whatsapp_inbound_contact"]).flatmap(lambda n: s.mutated_form(s.fixture("twilio", n)))
    .map(s.form_body),
    s.form_bodies,
)
form_types = st.sampled_from(["application/x-www-form-urlencoded"] * 4 + [
    "application/x-www-form-urlencoded; charset=latin-1", "application/x-www-form-urlencoded; charset=utf-16",
    "application/x-www-form-urlencoded; charset=bogus", "application/json", "text/plain"])


@fuzz_settings(80)
@given(connector_id=st.sampled_from(["sms", "wap"]), body=message_forms, content_type=form_types)
def test_signed_twilio_messages(webhook_connectors, brain_calls, connector_id, body, content_type):
    path = f"/webhooks/twilio/{connector_id}/"
    signature, decodable = twilio_signature(path, body, content_type)
    headers = {"X-Twilio-Signature": signature}
    before, calls = snapshot(), len(brain_calls)
    response = post(path, body, content_type, headers)
    assert_twilio_answer(response, decodable)
    assert_coherent(before, snapshot(), brain_calls, calls)


voice_query = st.lists(
    st.tuples(st.sampled_from(["turn", "silence", "pending", "wait", "ack", "retry"]),
              st.one_of(st.integers(-5, 2**64).map(str), s.hostile_text,
                        st.uuids().map(str), st.sampled_from(["1", "0", "²", "١", "001"]))),
    max_size=4,
)
voice_forms = st.one_of(
    st.sampled_from(["voice_incoming", "voice_gather_speech"]).flatmap(lambda n: s.mutated_form(s.fixture("twilio", n)))
    .map(s.form_body),
    st.builds(lambda digits: s.form_body([("CallSid", "CA" + "1" * 32), ("Digits", digits)]),
              st.sampled_from(["1", "2", "", "²"])),
    s.form_bodies,
)


@fuzz_settings(80)
@given(query=voice_query, body=voice_forms)
@example(query=[("turn", "²")], body=s.form_body(s.fixture("twilio", "voice_gather_speech").items()))
@example(query=[("ack", "00000000-0000-0000-0000-000000000000")],
         body=s.form_body([("CallSid", "CA" + "1" * 32), ("Digits", "1")]))
def test_signed_twilio_voice(webhook_connectors, brain_calls, query, body):
    path = "/webhooks/twilio/voice/voice/" + ("?" + s.form_body(query).decode() if query else "")
    content_type = "application/x-www-form-urlencoded"
    signature, decodable = twilio_signature(path, body, content_type)
    headers = {"X-Twilio-Signature": signature}
    before, calls = snapshot(), len(brain_calls)
    response = post(path, body, content_type, headers)
    assert_twilio_answer(response, decodable)
    assert_coherent(before, snapshot(), brain_calls, calls)


status_forms = st.one_of(
    st.sampled_from(["message_status_delivered", "message_status_undelivered", "call_status_no_answer"])
    .flatmap(lambda n: s.mutated_form(s.fixture("twilio", n))).map(s.form_body),
    s.form_bodies,
)


@fuzz_settings(60)
@given(connector_id=st.sampled_from(["sms", "wap", "voice"]), body=status_forms)
@example(connector_id="sms", body=s.form_body([("MessageSid", "SM\x001"), ("MessageStatus", "delivered")]))
@example(connector_id="voice", body=s.form_body([("CallSid", "CA\x001"), ("CallStatus", "completed"),
                                                 ("Direction", "inbound")]))
def test_signed_twilio_status_callbacks(webhook_connectors, brain_calls, connector_id, body):
    path = f"/webhooks/twilio/{connector_id}/status/"
    content_type = "application/x-www-form-urlencoded"
    signature, decodable = twilio_signature(path, body, content_type)
    headers = {"X-Twilio-Signature": signature}
    before, calls = snapshot(), len(brain_calls)
    response = post(path, body, content_type, headers)
    assert_twilio_answer(response, decodable)
    assert_coherent(before, snapshot(), brain_calls, calls)


inbound_payload = {"id": "evt-1", "sender": "ada", "content": "The build is green.", "sender_name": "Ada",
                   "metadata": {"build": 42}, "attachments": [
                       {"url": "http://127.0.0.1:9/report.pdf", "mime_type": "application/pdf",
                        "file_name": "report.pdf", "caption": "the report"}]}  # port 9: refused at once
hook_bodies = st.one_of(
    s.mutated_json(inbound_payload).map(lambda v: json.dumps(v).encode()),
    s.mutated_json(inbound_payload).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    s.random_bodies,
)


@fuzz_settings(100)
@given(body=hook_bodies, msg_id=st.one_of(st.just("msg_1"), s.header_text.filter(str.strip)),
       content_type=s.content_types)
@example(body=b"[" * 100_000 + b"]" * 100_000, msg_id="msg_deep", content_type="application/json")
@example(body=json.dumps({"sender": "ada", "content": "x\ud800y"}).encode(), msg_id="msg_surrogate",
         content_type="application/json")
def test_signed_generic_webhooks(webhook_connectors, brain_calls, no_dns, body, msg_id, content_type):
    headers = hook_headers(body, msg_id=msg_id)
    before, calls = snapshot(), len(brain_calls)
    response = post("/webhooks/inbound/hook/", body, content_type, headers)
    assert_no_server_error(response)
    # Our own format: a malformed body is the sender's bug and is told so (400), with the reasons.
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert response.json()["error"]["code"] == "malformed_payload"
    assert_coherent(before, snapshot(), brain_calls, calls)
