"""BRAIN backends: HttpBrain against a real loopback fake BRAIN, the signing module, EchoBrain,
and the whole inbound → BRAIN → reply path through services."""
import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest
from django.conf import settings

from audit.models import AuditEvent
from brain_connectors.shared import signing
from brain_connectors.shared.errors import Conflict
from connectors import services
from connectors.delivery.attempts import attempt_delivery
from connectors.delivery.brain import BrainError, BrainRequest, EchoBrain, HttpBrain, get_brain
from connectors.models import Delivery, InboundMessage
from connectors.platforms import locmem
from connectors.platforms.base import ConnectorError, IncomingMessage
from tests.conftest import SYSTEM
from tests.fakes.brain_server import FakeBrain, check_signature, compute_signature

OTHER_KEY = "whsec_" + base64.b64encode(b"another-key-for-rotation-tests-0001").decode()


@pytest.fixture
def fake_brain():
    fake = FakeBrain(secret=settings.BRAIN_SIGNING_KEY, slow_seconds=3.0).start()
    yield fake
    fake.stop()


def brain_request(content="hello", context=None):
    return BrainRequest(
        connector_id="locmem_main",
        connector_kind="locmem",
        sender="+15550001",
        sender_name="Ada",
        content=content,
        message_id="m-1",
        context=context if context is not None else [],
    )


def http_brain(fake, **kwargs):
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("backoff", 0)
    kwargs.setdefault("timeout", 2.0)
    return HttpBrain(url=fake.url if isinstance(fake, FakeBrain) else fake, **kwargs)


def independent_headers(secret, body: bytes, *, msg_id="msg_test", timestamp=None):
    """Standard-Webhooks headers computed here, without brain_connectors.shared.signing."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


BODY = json.dumps(
    {"connector": {"id": "c", "kind": "locmem"}, "message": {"id": "1", "sender": "s", "sender_name": "",
     "content": "hi"}, "context": []}
).encode()


# --- HttpBrain signs what the fake accepts ---------------------------------------------------


def test_http_brain_signs_requests_the_fake_accepts(fake_brain):
    context = [
        {"role": "user", "content": "earlier", "time": "2024-01-01T00:00:00+00:00"},
        {"role": "assistant", "content": "earlier answer", "time": "2024-01-01T00:00:01+00:00"},
    ]
    reply = http_brain(fake_brain).reply(brain_request("héllo ✓", context=context))

    assert reply == "fake brain got: héllo ✓ with 2 context"
    [request] = fake_brain.requests
    assert request.accepted, request.rejection
    assert request.method == "POST" and request.path == "/brain"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.json == {
        "connector": {"id": "locmem_main", "kind": "locmem"},
        "message": {"id": "m-1", "sender": "+15550001", "sender_name": "Ada", "content": "héllo ✓", "attachments": []},
        "context": context,
    }


def test_http_brain_with_a_plain_string_key(fake_brain):
    fake = FakeBrain(secret="plain-utf8-secret-ü").start()
    try:
        assert http_brain(fake, signing_key="plain-utf8-secret-ü").reply(brain_request("x")) == (
            "fake brain got: x with 0 context"
        )
        assert fake.requests[0].accepted
    finally:
        fake.stop()


def test_http_brain_with_the_wrong_key_is_refused_without_retry(fake_brain):
    with pytest.raises(BrainError) as err:
        http_brain(fake_brain, signing_key=OTHER_KEY).reply(brain_request())
    assert err.value.code == "brain_refused"
    assert "401" in str(err.value)
    [request] = fake_brain.requests  # a 4xx is not retried
    assert not request.accepted and request.status == 401


def test_http_brain_uses_the_settings_by_default(fake_brain, settings):
    settings.BRAIN_URL = fake_brain.url
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    brain = get_brain()
    assert isinstance(brain, HttpBrain)
    assert brain.reply(brain_request("via settings")) == "fake brain got: via settings with 0 context"
    assert fake_brain.requests[0].accepted


def test_http_brain_without_url_is_misconfigured(settings):
    settings.BRAIN_URL = ""
    with pytest.raises(BrainError) as err:
        HttpBrain()
    assert err.value.code == "brain_misconfigured"


# --- the fake really checks signatures -------------------------------------------------------


def post(fake, body, headers):
    return httpx.post(fake.url, content=body, headers=headers, timeout=5)


def test_fake_accepts_a_correctly_signed_request(fake_brain):
    response = post(fake_brain, BODY, independent_headers(settings.BRAIN_SIGNING_KEY, BODY))
    assert response.status_code == 200
    assert response.json() == {"reply": "fake brain got: hi with 0 context"}
    assert fake_brain.requests[0].accepted


def test_fake_rejects_a_tampered_body(fake_brain):
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY)
    tampered = BODY.replace(b'"hi"', b'"HI"')
    assert tampered != BODY
    response = post(fake_brain, tampered, headers)
    assert response.status_code == 401
    [request] = fake_brain.requests
    assert not request.accepted and "matches" in request.rejection


def test_fake_rejects_a_tampered_signature(fake_brain):
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY)
    sig = base64.b64decode(headers["webhook-signature"][3:])
    headers["webhook-signature"] = "v1," + base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
    assert post(fake_brain, BODY, headers).status_code == 401


def test_fake_rejects_a_signature_bound_to_another_id(fake_brain):
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY, msg_id="msg_a")
    headers["webhook-id"] = "msg_b"
    assert post(fake_brain, BODY, headers).status_code == 401


@pytest.mark.parametrize("offset", [-330, -3600, 330])  # clear of the 300 s edge under load
def test_fake_rejects_stale_or_future_timestamps(fake_brain, offset):
    # Correctly signed for its timestamp, but outside the 5-minute window.
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY, timestamp=int(time.time()) + offset)
    response = post(fake_brain, BODY, headers)
    assert response.status_code == 401
    assert "tolerance" in fake_brain.requests[0].rejection


def test_fake_accepts_a_timestamp_inside_the_window(fake_brain):
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY, timestamp=int(time.time()) - 240)
    assert post(fake_brain, BODY, headers).status_code == 200


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_fake_rejects_missing_headers(fake_brain, missing):
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY)
    del headers[missing]
    assert post(fake_brain, BODY, headers).status_code == 401


def test_fake_accepts_one_good_signature_among_several(fake_brain):
    headers = independent_headers(settings.BRAIN_SIGNING_KEY, BODY)
    other = independent_headers(OTHER_KEY, BODY)["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert post(fake_brain, BODY, headers).status_code == 200
    headers["webhook-signature"] = other
    assert post(fake_brain, BODY, headers).status_code == 401


def test_fake_and_connectors_signing_agree():
    # Two independent implementations of the same scheme give the same bytes.
    for secret in (settings.BRAIN_SIGNING_KEY, "plain-secret"):
        ours = signing.sign(secret, "msg_1", 1_700_000_000, BODY)
        assert ours == "v1," + compute_signature(secret, "msg_1", 1_700_000_000, BODY)
        headers = signing.signed_headers(secret, BODY)
        assert check_signature([secret], headers, BODY) is None
        assert check_signature([secret], headers, BODY + b" ") is not None


# --- retries and failures --------------------------------------------------------------------


def test_http_brain_retries_a_500_a_bounded_number_of_times(fake_brain):
    fake_brain.set_mode("error_500")
    with pytest.raises(BrainError) as err:
        http_brain(fake_brain, max_retries=2).reply(brain_request())
    assert err.value.code == "brain_unavailable"
    assert "500" in str(err.value)
    requests = fake_brain.requests
    assert len(requests) == 3  # the first try and two retries, no more
    assert all(r.accepted for r in requests)
    # Each attempt is signed afresh.
    assert len({r.headers["webhook-id"] for r in requests}) == 3


def test_http_brain_recovers_when_a_retry_succeeds(fake_brain):
    fake_brain.queue_modes("error_500", "error_500")
    assert http_brain(fake_brain, max_retries=2).reply(brain_request("again")) == (
        "fake brain got: again with 0 context"
    )
    assert [r.status for r in fake_brain.requests] == [500, 500, 200]


def test_http_brain_with_no_retries_asks_once(fake_brain):
    fake_brain.set_mode("error_500")
    with pytest.raises(BrainError):
        http_brain(fake_brain, max_retries=0).reply(brain_request())
    assert len(fake_brain.requests) == 1


def test_http_brain_times_out_on_a_slow_brain_and_retries(fake_brain):
    fake_brain.set_mode("slow")
    started = time.monotonic()
    with pytest.raises(BrainError) as err:
        http_brain(fake_brain, timeout=0.3, max_retries=1).reply(brain_request())
    elapsed = time.monotonic() - started
    assert err.value.code == "brain_timeout"
    assert "0.3s" in str(err.value)
    assert len(fake_brain.requests) == 2
    assert elapsed < fake_brain.slow_seconds  # it did not wait for the slow answer


def test_http_brain_does_not_retry_a_400(fake_brain):
    fake_brain.set_mode("error_400")
    with pytest.raises(BrainError) as err:
        http_brain(fake_brain, max_retries=3).reply(brain_request())
    assert err.value.code == "brain_refused"
    assert "400" in str(err.value)
    assert len(fake_brain.requests) == 1


def test_http_brain_reports_a_brain_that_is_down(fake_brain):
    brain = http_brain(fake_brain, max_retries=1)
    fake_brain.down()
    with pytest.raises(BrainError) as err:
        brain.reply(brain_request())
    assert err.value.code == "brain_unreachable"
    assert "unreachable" in str(err.value)
    assert fake_brain.requests == []
    # Back up on the same URL, the same client works again.
    fake_brain.up()
    assert brain.reply(brain_request("back")) == "fake brain got: back with 0 context"


def test_http_brain_reports_a_closed_port():
    with pytest.raises(BrainError) as err:
        http_brain(FakeBrain.closed_url(), max_retries=0).reply(brain_request())
    assert err.value.code == "brain_unreachable"


@pytest.mark.parametrize("mode", ["garbage", "wrong_shape"])
def test_http_brain_rejects_a_bad_answer(fake_brain, mode):
    fake_brain.set_mode(mode)
    with pytest.raises(BrainError) as err:
        http_brain(fake_brain).reply(brain_request())
    assert err.value.code == "brain_bad_response"
    assert len(fake_brain.requests) == 1  # a bad answer is not retried
    assert fake_brain.requests[0].accepted and fake_brain.requests[0].status == 200


def test_http_brain_passes_no_reply_on(fake_brain):
    fake_brain.set_mode("no_reply")
    assert http_brain(fake_brain).reply(brain_request()) is None
    assert len(fake_brain.requests) == 1


# --- brain_connectors.shared.signing.verify ---------------------------------------------------------------


KEY = settings.BRAIN_SIGNING_KEY


def test_verify_accepts_a_good_signature():
    headers = independent_headers(KEY, BODY, msg_id="msg_good")
    assert signing.verify(KEY, headers, BODY) == "msg_good"
    # Header names are case-insensitive.
    assert signing.verify([KEY], {k.upper(): v for k, v in headers.items()}, BODY) == "msg_good"


def test_verify_refuses_a_tampered_body():
    headers = independent_headers(KEY, BODY)
    with pytest.raises(signing.SignatureError):
        signing.verify(KEY, headers, BODY + b"x")


def test_verify_refuses_a_tampered_signature():
    headers = independent_headers(KEY, BODY)
    sig = headers["webhook-signature"]
    headers["webhook-signature"] = sig[:-4] + ("AAA=" if not sig.endswith("AAA=") else "BBB=")
    with pytest.raises(signing.SignatureError):
        signing.verify(KEY, headers, BODY)


def test_verify_refuses_another_key():
    with pytest.raises(signing.SignatureError):
        signing.verify(KEY, independent_headers(OTHER_KEY, BODY), BODY)


def test_verify_refuses_stale_and_future_messages():
    ts = 1_700_000_000
    headers = independent_headers(KEY, BODY, timestamp=ts)
    assert signing.verify(KEY, headers, BODY, now=ts + 300)
    for now in (ts + 301, ts - 301, ts + 86_400):
        with pytest.raises(signing.SignatureError, match="tolerance"):
            signing.verify(KEY, headers, BODY, now=now)
    # Really stale against the real clock too.
    with pytest.raises(signing.SignatureError):
        signing.verify(KEY, independent_headers(KEY, BODY, timestamp=int(time.time()) - 301), BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_refuses_missing_headers(missing):
    headers = independent_headers(KEY, BODY)
    del headers[missing]
    with pytest.raises(signing.SignatureError, match="missing"):
        signing.verify(KEY, headers, BODY)


def test_verify_refuses_a_non_integer_timestamp():
    headers = independent_headers(KEY, BODY)
    headers["webhook-timestamp"] = "soon"
    with pytest.raises(signing.SignatureError):
        signing.verify(KEY, headers, BODY)


def test_verify_refuses_an_unversioned_signature():
    headers = independent_headers(KEY, BODY)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(signing.SignatureError):
        signing.verify(KEY, headers, BODY)


def test_verify_accepts_either_key_during_rotation():
    old_signed = independent_headers(OTHER_KEY, BODY, msg_id="msg_old")
    new_signed = independent_headers(KEY, BODY, msg_id="msg_new")
    assert signing.verify([KEY, OTHER_KEY], old_signed, BODY) == "msg_old"
    assert signing.verify([KEY, OTHER_KEY], new_signed, BODY) == "msg_new"
    with pytest.raises(signing.SignatureError):
        signing.verify([KEY], old_signed, BODY)  # once the old key is dropped


def test_verify_accepts_a_sender_offering_signatures_from_both_keys():
    headers = independent_headers(KEY, BODY)
    other = independent_headers(OTHER_KEY, BODY)["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert signing.verify(KEY, headers, BODY) == headers["webhook-id"]
    assert signing.verify(OTHER_KEY, headers, BODY) == headers["webhook-id"]


# --- EchoBrain -------------------------------------------------------------------------------


def test_echo_brain_is_deterministic():
    context = [{"role": "user", "content": "a", "time": "t"}, {"role": "assistant", "content": "b", "time": "t"}]
    brain = EchoBrain()
    assert brain.reply(brain_request("ping", context=context)) == 'Echo: "ping" (2 context messages)'
    assert brain.reply(brain_request("ping", context=context)) == 'Echo: "ping" (2 context messages)'
    assert brain.reply(brain_request("other")) == 'Echo: "other" (0 context messages)'


# --- end to end through services -------------------------------------------------------------


def _incoming(text, n, sender="+15550001"):
    return IncomingMessage(sender=sender, content=text, platform_message_id=f"p-{n}", sender_name="Ada")


@pytest.fixture
def http_brain_settings(settings, fake_brain):
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    settings.BRAIN_URL = fake_brain.url
    settings.BRAIN_MAX_RETRIES = 1
    return settings


@pytest.mark.django_db
def test_inbound_messages_reach_the_brain_with_context_and_replies_are_delivered(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        first, created = services.receive_message("locmem_main", _incoming("first question", 1))
    assert created
    with django_capture_on_commit_callbacks(execute=True):
        second, _ = services.receive_message("locmem_main", _incoming("second question", 2))

    assert [r.accepted for r in fake_brain.requests] == [True, True]
    one, two = (r.json for r in fake_brain.requests)
    assert one["connector"] == {"id": "locmem_main", "kind": "locmem"}
    assert one["message"] == {"id": "p-1", "sender": "+15550001", "sender_name": "Ada", "content": "first question",
                              "attachments": []}
    assert one["context"] == []
    assert two["message"]["content"] == "second question"
    assert [(c["role"], c["content"]) for c in two["context"]] == [
        ("user", "first question"),
        ("assistant", "fake brain got: first question with 0 context"),
    ]
    assert all(c["time"] for c in two["context"])

    assert [(cid, m.recipient, m.content) for cid, m in locmem.outbox] == [
        ("locmem_main", "+15550001", "fake brain got: first question with 0 context"),
        ("locmem_main", "+15550001", "fake brain got: second question with 2 context"),
    ]
    for inbound in (first, second):
        inbound.refresh_from_db()
        assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
        delivery = Delivery.objects.get(in_reply_to=inbound)
        assert delivery.status == "sent"  # locmem has no receipts: sent is as far as it goes
        assert delivery.recipient == "+15550001"


@pytest.mark.django_db
def test_a_duplicate_inbound_message_asks_the_brain_once(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming("once", 1))
    with django_capture_on_commit_callbacks(execute=True):
        _, created = services.receive_message("locmem_main", _incoming("once", 1))
    assert created is False
    assert len(fake_brain.requests) == 1
    assert len(locmem.outbox) == 1


@pytest.mark.django_db
def test_another_senders_history_is_not_context(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming("from ada", 1, sender="ada"))
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming("from bob", 2, sender="bob"))
    assert fake_brain.requests[1].json["context"] == []
    assert locmem.outbox[1][1].content == "fake brain got: from bob with 0 context"


@pytest.mark.django_db
def test_no_reply_from_the_brain_sends_nothing(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    fake_brain.set_mode("no_reply")
    with django_capture_on_commit_callbacks(execute=True):
        inbound, _ = services.receive_message("locmem_main", _incoming("hello?", 1))
    inbound.refresh_from_db()
    assert len(fake_brain.requests) == 1
    assert inbound.brain_status == InboundMessage.BrainStatus.NO_REPLY
    assert locmem.outbox == [] and not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_brain_that_is_down_leaves_the_message_failed_and_audited(http_brain_settings, fake_brain, make_connector):
    make_connector()
    fake_brain.down()
    inbound, created = services.receive_message("locmem_main", _incoming("anyone there?", 1))
    assert created

    inbound.refresh_from_db()
    assert inbound.content == "anyone there?"  # the message itself is kept
    assert inbound.brain_status == InboundMessage.BrainStatus.FAILED
    assert "unreachable" in inbound.brain_error
    event = AuditEvent.objects.get(action="brain.reply")
    assert event.result == AuditEvent.Result.FAILURE
    assert event.target_id == "locmem_main"
    assert event.details["error"] == "brain_unreachable"
    assert event.details["inbound_id"] == inbound.pk
    assert AuditEvent.objects.filter(action="message.received", result="success").count() == 1
    assert not Delivery.objects.exists()
    assert locmem.outbox == []
    assert fake_brain.requests == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode,code", [("error_500", "brain_unavailable"), ("garbage", "brain_bad_response")])
def test_a_failing_brain_is_recorded_with_its_code(http_brain_settings, fake_brain, make_connector, mode, code):
    make_connector()
    fake_brain.set_mode(mode)
    inbound, _ = services.receive_message("locmem_main", _incoming("hi", 1))
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.FAILED
    assert AuditEvent.objects.get(action="brain.reply").details["error"] == code
    assert not Delivery.objects.exists() and locmem.outbox == []
    # Retries are bounded by BRAIN_MAX_RETRIES (1): two attempts for a 500, one for garbage.
    assert len(fake_brain.requests) == (2 if mode == "error_500" else 1)


@pytest.mark.parametrize(
    "written_before_the_move, backend_class",
    [("connectors.brain.EchoBrain", EchoBrain), ("connectors.brain.HttpBrain", HttpBrain)],
)
def test_backend_paths_written_before_the_backends_moved_still_load(settings, written_before_the_move, backend_class):
    settings.BRAIN_BACKEND = written_before_the_move
    settings.BRAIN_URL = "http://127.0.0.1:9/brain"
    assert type(get_brain()) is backend_class


@pytest.mark.django_db
def test_a_connector_in_error_keeps_inbound_messages_and_their_replies_wait_for_the_restart(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks
):
    """ERROR is reached by accident (a failed health check, a stale heartbeat): the platform's message is stored and
    BRAIN's reply waits queued, where the chaos run once saw 1,673 replies refused and their messages left failed."""
    make_connector()
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("No heartbeat", code="heartbeat_stale"))
    with django_capture_on_commit_callbacks(execute=True):
        inbound, created = services.receive_message("locmem_main", _incoming("while in error", 1))
    assert created
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED, inbound.brain_error
    reply = Delivery.objects.get(in_reply_to=inbound)
    assert reply.status == "queued" and locmem.outbox == []
    # A new request from a client is still refused: only work that already exists waits.
    with pytest.raises(Conflict) as refused:
        services.send_message(SYSTEM, "locmem_main", "+15550001", "a new notification")
    assert refused.value.code == "connector_not_running"

    services.start_connector(SYSTEM, "locmem_main")  # what the health round does once a check passes
    with django_capture_on_commit_callbacks(execute=True):
        attempt_delivery(reply.id)  # the sweeper's re-drive (or a sender's next claim)
    reply.refresh_from_db()
    assert reply.status == "sent"
    assert [(m.recipient, m.content) for _, m in locmem.outbox] == [
        ("+15550001", "fake brain got: while in error with 0 context")
    ]


@pytest.mark.django_db
def test_a_stopped_connector_still_refuses_inbound_messages(make_connector):
    make_connector()
    services.stop_connector(SYSTEM, "locmem_main")
    with pytest.raises(Conflict) as refused:
        services.receive_message("locmem_main", _incoming("after a stop", 1))
    assert refused.value.code == "connector_not_running"
    assert InboundMessage.objects.count() == 0
