"""brain_connectors.shared.signing.verify against independently signed requests, and EchoBrain."""
import time

import pytest
from django.conf import settings

from brain_connectors.shared import signing
from connectors.delivery.brain import EchoBrain
from tests.connectors import brain_support
from tests.connectors.brain_support import BODY, OTHER_KEY, brain_request, independent_headers

fake_brain = brain_support.fake_brain
http_brain_settings = brain_support.http_brain_settings


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
