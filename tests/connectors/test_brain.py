"""HttpBrain against a real loopback fake BRAIN: signing what the fake accepts, the fake's checks, retries.

The signing module and EchoBrain are in test_brain_signing.py, the whole inbound → BRAIN → reply path through
services in test_brain_end_to_end.py."""
import base64
import time

import httpx
import pytest
from django.conf import settings

from brain_connectors.shared import signing
from connectors.delivery.brain import BrainError, HttpBrain, get_brain
from tests.connectors import brain_support
from tests.connectors.brain_support import BODY, OTHER_KEY, brain_request, http_brain, independent_headers
from tests.fakes.brain_server import FakeBrain, check_signature, compute_signature

fake_brain = brain_support.fake_brain
http_brain_settings = brain_support.http_brain_settings


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
