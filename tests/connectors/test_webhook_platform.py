"""The generic `webhook` connector: signed outbound POSTs checked by an independent fake receiver
(every outcome, the same webhook-id on retries, key rotation), and the inbound endpoint
/webhooks/inbound/<id>/ (signature first, nothing written for forged or malformed requests,
duplicates stored once)."""
import base64
import json
import time
from datetime import timedelta
from email.utils import format_datetime

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms.webhook import MAX_RETRY_AFTER, parse_retry_after
from tests.conftest import SYSTEM
from tests.deliveries import retry_now, send_now
from tests.fakes.receiver import FakeReceiver, check_signature, sign_request

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec_" + base64.b64encode(b"webhook-test-secret-0123456789ab").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-0123456789ab").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-elses-secret-0123456789").decode()
URL = "/webhooks/inbound/hook/"


@pytest.fixture
def receiver():
    fake = FakeReceiver(secret=SECRET).start()
    yield fake
    fake.stop()


@pytest.fixture
def hook(make_connector, receiver):
    return make_connector("hook", kind="webhook", config={"url": receiver.url, "timeout": 1},
                          credentials={"signing_secret": SECRET})


def send(recipient="ada", content="Your build finished."):
    return send_now("hook", recipient, content)


def counts():
    return InboundMessage.objects.count(), Delivery.objects.count(), AuditEvent.objects.count()


def post_signed(client, payload, *, secret=SECRET, msg_id="wh-1", timestamp=None, raw=None, headers=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    signed = sign_request(secret, body, msg_id, timestamp)
    return client.post(URL, data=body, content_type="application/json", headers={**signed, **(headers or {})})


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, field",
    [
        ({}, "(root)"),
        ({"url": "ftp://example.org/hook"}, "url"),
        ({"url": "example.org/hook"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "https://user:pw@example.org/hook"}, "url"),
        ({"url": "https://example.org:99999/hook"}, "url"),
        ({"url": "https://example.org/ho ok"}, "url"),
        ({"url": "https://example.org/hook#frag"}, "url"),
        ({"url": "https://example.org/hook", "timeout": 0}, "timeout"),
        ({"url": "https://example.org/hook", "headers": {}}, "(root)"),
    ],
)
def test_invalid_config_is_refused(config, field):
    with pytest.raises(ValidationFailed) as caught:
        services.register_connector(SYSTEM, id="bad_hook", kind="webhook", display_name="Hook", config=config,
                                    credentials={"signing_secret": SECRET})
    assert caught.value.code == "invalid_config"
    assert field in caught.value.details["config"]


@pytest.mark.parametrize(
    "credentials, field",
    [
        ({}, "(root)"),
        ({"signing_secret": "short"}, "signing_secret"),
        ({"signing_secret": "whsec_!!not base64 at all!!"}, "signing_secret"),
        ({"signing_secret": "whsec_" + base64.b64encode(b"tiny").decode() + "AAAAAAAAAA"}, "signing_secret"),
        ({"signing_secret": SECRET, "token": "x"}, "(root)"),
    ],
)
def test_invalid_credentials_are_refused_without_echoing_them(credentials, field):
    with pytest.raises(ValidationFailed) as caught:
        services.register_connector(SYSTEM, id="bad_hook", kind="webhook", display_name="Hook",
                                    config={"url": "https://example.org/hook"}, credentials=credentials)
    assert caught.value.code == "invalid_credentials"
    assert field in caught.value.details["credentials"]
    if credentials.get("signing_secret"):
        assert credentials["signing_secret"] not in json.dumps(caught.value.details)


def test_plain_string_secrets_and_http_urls_are_accepted():
    services.register_connector(SYSTEM, id="ok_hook", kind="webhook", display_name="Hook",
                                config={"url": "http://127.0.0.1:9/hook"},
                                credentials={"signing_secret": "a-long-enough-plain-secret"})
    assert Connector.objects.filter(pk="ok_hook").exists()


# --- outbound --------------------------------------------------------------------------------


def test_sent_message_is_signed_and_carries_the_delivery_id(hook, receiver):
    delivery = send("ada", "Hello ✓")
    assert delivery.status == "sent", delivery.last_error
    [request] = receiver.requests
    assert request.verified, request.rejection
    assert request.headers["webhook-id"] == str(delivery.id)
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "type": "message", "delivery_id": str(delivery.id), "connector_id": "hook",
        "recipient": "ada", "content": "Hello ✓", "in_reply_to": None,
    }
    assert delivery.platform_message_id == str(delivery.id)


def test_receiver_with_another_secret_refuses_and_the_delivery_fails(make_connector):
    with FakeReceiver(secret=OTHER_SECRET) as strict:
        make_connector("hook", kind="webhook", config={"url": strict.url}, credentials={"signing_secret": SECRET})
        delivery = send()
        [request] = strict.requests
    assert not request.verified and request.status == 401
    assert delivery.status == "failed" and "401" in delivery.last_error


def test_rate_limited_is_retried_after_retry_after_with_the_same_webhook_id(hook, receiver):
    receiver.mode, receiver.retry_after = "rate_limited", 120
    before = timezone.now()
    delivery = send()
    assert delivery.status == "queued" and delivery.attempts == 1
    assert "429" in delivery.last_error
    assert delivery.next_attempt_at >= before + timedelta(seconds=119)
    retry = AuditEvent.objects.filter(action="message.retry", target_id="hook").get()
    assert retry.details["error"] == "rate_limited"
    receiver.mode = "ok"
    delivery = retry_now(delivery)
    assert delivery.status == "sent" and delivery.attempts == 2
    first, second = receiver.requests
    assert first.verified and second.verified
    assert first.webhook_id == second.webhook_id == str(delivery.id)
    assert first.json == second.json


@pytest.mark.parametrize("mode", ["error_500", "error_503"])
def test_server_errors_are_transient(hook, receiver, mode):
    receiver.mode, receiver.retry_after = mode, 300
    before = timezone.now()
    delivery = send()
    assert delivery.status == "queued"
    assert receiver.requests[0].status in (500, 503)
    if mode == "error_503":  # Retry-After is honoured on 503 too
        assert delivery.next_attempt_at >= before + timedelta(seconds=299)


def test_client_error_fails_permanently(hook, receiver):
    receiver.mode = "error_400"
    delivery = send()
    assert delivery.status == "failed" and "400" in delivery.last_error
    failed = AuditEvent.objects.filter(action="message.failed", target_id="hook").get()
    assert failed.details["permanent"] is True and failed.details["error"] == "receiver_refused"


def test_slow_receiver_times_out_transiently(make_connector, receiver):
    make_connector("hook", kind="webhook", config={"url": receiver.url, "timeout": 0.3},
                   credentials={"signing_secret": SECRET})
    receiver.mode, receiver.slow_seconds = "slow", 3
    started = time.monotonic()
    delivery = send()
    assert time.monotonic() - started < 2.5
    assert delivery.status == "queued" and "did not answer within" in delivery.last_error
    assert len(receiver.requests) == 1


def test_receiver_down_is_transient_and_recovers(hook, receiver):
    receiver.down()
    delivery = send()
    assert delivery.status == "queued" and "unreachable" in delivery.last_error
    receiver.up()
    assert retry_now(delivery).status == "sent"
    assert receiver.requests[0].webhook_id == str(delivery.id)


def test_key_rotation_signs_with_both_and_accepts_both(make_connector, receiver, client):
    make_connector("hook", kind="webhook", config={"url": receiver.url},
                   credentials={"signing_secret": SECRET, "previous_signing_secret": OLD_SECRET})
    with FakeReceiver(secret=OLD_SECRET) as old_receiver:  # a receiver not yet told the new key
        Connector.objects.filter(pk="hook").update(config={"url": old_receiver.url})
        delivery = send()
        [request] = old_receiver.requests
    assert delivery.status == "sent" and request.verified
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert check_signature([SECRET], request.headers, request.body) is None  # the new key signed too
    response = post_signed(client, {"sender": "ada", "content": "hi", "id": "m-old"}, secret=OLD_SECRET)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "value, expected",
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("99999999", float(MAX_RETRY_AFTER)), ("soon", None), ("-5", None),
     ("", None), (None, None)],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    in_a_minute = format_datetime(timezone.now() + timedelta(seconds=60), usegmt=True)
    assert 55 <= parse_retry_after(in_a_minute) <= 61


def test_health_check_pings_the_receiver(hook, receiver):
    result = services.test_connector(SYSTEM, "hook")
    assert result.ok, result.detail
    [ping] = receiver.requests
    assert ping.verified and ping.json == {"type": "ping", "connector_id": "hook"}
    receiver.mode = "error_500"
    assert not services.test_connector(SYSTEM, "hook").ok
    receiver.down()
    result = services.test_connector(SYSTEM, "hook")
    assert not result.ok and "unreachable" in result.detail


# --- inbound ---------------------------------------------------------------------------------


def test_signed_message_is_stored_once_and_answered_through_the_receiver(hook, receiver, client):
    payload = {"sender": "ada", "sender_name": "Ada L.", "content": "What is up?", "id": "m-1",
               "metadata": {"thread": "t-9"}}
    response = post_signed(client, payload, msg_id="wh-1")
    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True, "stored": 1}
    again = post_signed(client, payload, msg_id="wh-2")  # a retry by the sender: a new webhook-id, same id
    assert again.status_code == 200 and again.json() == {"ok": True, "stored": 0}
    [inbound] = InboundMessage.objects.all()
    assert (inbound.sender, inbound.sender_name, inbound.content, inbound.platform_message_id, inbound.metadata) == (
        "ada", "Ada L.", "What is up?", "m-1", {"thread": "t-9"})
    # EchoBrain answered once, through the outbound side, threaded to the inbound message.
    [reply] = receiver.requests
    assert reply.verified
    assert reply.json["recipient"] == "ada"
    assert reply.json["content"].startswith('Echo: "What is up?"')
    assert reply.json["in_reply_to"] == {"id": "m-1", "metadata": {"thread": "t-9"}}
    assert Delivery.objects.get().status == "sent"


def test_without_an_id_the_webhook_id_is_the_dedupe_key(hook, client):
    payload = {"sender": "ada", "content": "no id here"}
    assert post_signed(client, payload, msg_id="wh-77").json()["stored"] == 1
    assert post_signed(client, payload, msg_id="wh-77").json()["stored"] == 0
    assert post_signed(client, payload, msg_id="wh-78").json()["stored"] == 1
    assert sorted(InboundMessage.objects.values_list("platform_message_id", flat=True)) == ["wh-77", "wh-78"]


def _forged(kind):
    body = json.dumps({"sender": "mallory", "content": "pay me", "id": "evil"}).encode()
    good = sign_request(SECRET, body, "wh-x")
    if kind == "wrong_secret":
        return body, sign_request(OTHER_SECRET, body, "wh-x")
    if kind == "tampered_body":
        return body.replace(b"pay me", b"pay us"), good
    if kind == "other_id":
        return body, {**good, "webhook-id": "wh-y"}
    if kind == "stale":
        return body, sign_request(SECRET, body, "wh-x", timestamp=int(time.time()) - 6 * 60)
    if kind == "future":
        return body, sign_request(SECRET, body, "wh-x", timestamp=int(time.time()) + 6 * 60)
    if kind == "v2_only":
        return body, {**good, "webhook-signature": "v2," + good["webhook-signature"][3:]}
    if kind == "garbage_signature":
        return body, {**good, "webhook-signature": "v1,!!!"}
    if kind == "bad_timestamp":
        return body, {**good, "webhook-timestamp": "yesterday"}
    missing = kind.removeprefix("missing_").replace("_", "-")
    return body, {k: v for k, v in good.items() if k != missing}


@pytest.mark.parametrize(
    "kind",
    ["wrong_secret", "tampered_body", "other_id", "stale", "future", "v2_only", "garbage_signature", "bad_timestamp",
     "missing_webhook_id", "missing_webhook_timestamp", "missing_webhook_signature"],
)
def test_forged_missing_or_stale_signatures_get_403_and_write_nothing(hook, receiver, client, kind):
    body, headers = _forged(kind)
    before = counts()
    response = client.post(URL, data=body, content_type="application/json", headers=headers)
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "forbidden"
    assert counts() == before
    assert receiver.requests == []


def test_unsigned_request_gets_403(hook, client):
    before = counts()
    response = client.post(URL, data={"sender": "ada", "content": "hi"}, content_type="application/json")
    assert response.status_code == 403
    assert counts() == before


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"not json", "body"),
        (b"\xff\xfe{}", "body"),
        (b"[1, 2]", "(root)"),
        (b'"just a string"', "(root)"),
        (json.dumps({"content": "hi"}).encode(), "(root)"),
        (json.dumps({"sender": "ada"}).encode(), "(root)"),
        (json.dumps({"sender": "ada", "content": ""}).encode(), "content"),
        (json.dumps({"sender": "ada", "content": "  \n "}).encode(), "content"),
        (json.dumps({"sender": "ada", "content": "x" * 10_001}).encode(), "content"),
        (json.dumps({"sender": 42, "content": "hi"}).encode(), "sender"),
        (json.dumps({"sender": "a" * 256, "content": "hi"}).encode(), "sender"),
        (json.dumps({"sender": "ada", "content": "hi", "id": ""}).encode(), "id"),
        (json.dumps({"sender": "ada", "content": "hi", "id": True}).encode(), "id"),
        (json.dumps({"sender": "ada", "content": "hi", "metadata": "x"}).encode(), "metadata"),
        (json.dumps({"sender": "ada", "content": "hi", "metadata": {"k": "v" * 5000}}).encode(), "metadata"),
        (json.dumps({"sender": "ada", "content": "hi", "text": "typo"}).encode(), "(root)"),
    ],
)
def test_malformed_payload_gets_400_with_reasons_and_writes_nothing(hook, receiver, client, raw, field):
    before = counts()
    response = post_signed(client, None, raw=raw)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "malformed_payload"
    assert field in error["details"], error
    assert counts() == before
    assert receiver.requests == []


def test_connector_not_running_answers_503_and_stores_nothing(hook, client):
    services.stop_connector(SYSTEM, "hook")
    response = post_signed(client, {"sender": "ada", "content": "hi", "id": "m-1"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "connector_not_running"
    assert InboundMessage.objects.count() == 0
    services.start_connector(SYSTEM, "hook")  # the sender's retry is then stored
    assert post_signed(client, {"sender": "ada", "content": "hi", "id": "m-1"}).json()["stored"] == 1


def test_only_webhook_connectors_answer_on_the_inbound_route(make_connector, client):
    make_connector("plain")  # a locmem connector
    body = json.dumps({"sender": "ada", "content": "hi"}).encode()
    response = client.post("/webhooks/inbound/plain/", data=body, content_type="application/json",
                           headers=sign_request(SECRET, body, "wh-1"))
    assert response.status_code == 404
    assert client.post("/webhooks/inbound/nope/", data=body, content_type="application/json").status_code == 404


def test_get_is_not_allowed(hook, client):
    assert client.get(URL).status_code == 405
