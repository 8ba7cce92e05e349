"""`sms` over the real Twilio SDK against the loopback fake: segmenting, configuration, sending, error classes.

Shared Twilio code is covered here. Signed inbound webhooks and status callbacks are in
test_twilio_sms_webhooks.py."""
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery
from connectors.platforms.sms import GSM7, UCS2, count_segments, encode_sms, is_gsm7
from connectors.platforms.twilio_common import BaseUrlHttpClient, map_twilio_error, parse_retry_after
from tests.conftest import SYSTEM
from tests.connectors import twilio_support, url_guard_support
from tests.connectors.twilio_sms_support import TO
from tests.connectors.twilio_support import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, PUBLIC, audit_details
from tests.connectors.url_guard_support import PUBLIC_ADDRESS

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector
dns = url_guard_support.dns


# --- segmenting (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, encoding, units, segments",
    [
        ("a" * 160, GSM7, 160, 1),
        ("a" * 161, GSM7, 161, 2),
        ("a" * 306, GSM7, 306, 2),
        ("a" * 307, GSM7, 307, 3),
        ("€" * 80, GSM7, 160, 1),  # extension characters take two septets
        ("€" * 81, GSM7, 162, 2),
        # 306 septets would fit two segments, but the escape pair may not be split: three.
        ("a" * 152 + "€" + "a" * 152, GSM7, 306, 3),
        ("ж" * 70, UCS2, 70, 1),
        ("ж" * 71, UCS2, 71, 2),
        ("ж" * 134, UCS2, 134, 2),
        ("ж" * 135, UCS2, 135, 3),
        ("😀" * 35, UCS2, 70, 1),  # a surrogate pair is two UTF-16 units
        # 134 units would fit two segments, but a surrogate pair may not be split: three.
        ("a" * 66 + "😀" + "a" * 66, UCS2, 134, 3),
    ],
)
def test_segment_counts(text, encoding, units, segments):
    encoded = encode_sms(text)
    assert (encoded.encoding, encoded.units, encoded.segments) == (encoding, units, segments)
    assert count_segments(text, encoding) == (units, segments)


def test_typographic_characters_are_replaced_to_stay_gsm7():
    text = "It\u2019s \u201cdone\u201d \u2014 see you at 3\u00a0pm\u2026 \u2022 ok\u200b"
    encoded = encode_sms(text)
    assert encoded.encoding == GSM7 and encoded.replaced
    assert encoded.text == "It's \"done\" - see you at 3 pm... - ok"
    assert encoded.segments == 1
    assert is_gsm7(encoded.text)


def test_replacement_decides_the_encoding_only_afterwards():
    # 100 characters with a curly quote: UCS-2 would need 2 segments; replaced, GSM-7 needs 1.
    text = "Don\u2019t forget " + "x" * 87
    assert count_segments(text, UCS2)[1] == 2
    assert encode_sms(text).segments == 1


def test_text_needing_ucs2_anyway_is_sent_exactly_as_written():
    text = "Don\u2019t forget the \U0001f382 \u2014 Ada"
    encoded = encode_sms(text)
    assert encoded.encoding == UCS2 and not encoded.replaced
    assert encoded.text == text  # the curly quote and the dash stay: they cost nothing more now


def test_decomposed_accents_are_composed_into_gsm7_letters():
    encoded = encode_sms("Caf\u0065\u0301 ouvert")  # e + combining acute
    assert encoded.encoding == GSM7 and encoded.text == "Café ouvert"


def test_text_that_would_vanish_is_not_replaced():
    encoded = encode_sms("\u200b\u200b")
    assert encoded.encoding == UCS2 and encoded.text == "\u200b\u200b"


def test_gsm7_greek_capitals_but_not_lowercase():
    assert encode_sms("ΔΦΓ").encoding == GSM7
    assert encode_sms("δ").encoding == UCS2


# --- small shared pieces (pure) --------------------------------------------------------------


def test_base_url_client_rewrites_scheme_and_host_and_keeps_path_and_query():
    client = BaseUrlHttpClient("http://127.0.0.1:9999/prefix/")
    assert (
        client.rewrite("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?PageSize=5")
        == "http://127.0.0.1:9999/prefix/2010-04-01/Accounts/AC1/Messages.json?PageSize=5"
    )
    assert BaseUrlHttpClient(None).rewrite("https://api.twilio.com/x") == "https://api.twilio.com/x"


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("30") == 30.0
    now = time.time()
    from email.utils import formatdate

    assert 55 <= parse_retry_after(formatdate(now + 60, usegmt=True), now=now) <= 60
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_error_classification_without_network():
    from twilio.base.exceptions import TwilioRestException

    def rest(status, code):
        return TwilioRestException(status, "https://api.twilio.com/x", "msg", code)

    cases = {
        (429, 20429): (False, "rate_limited"),
        (503, None): (False, "platform_unavailable"),
        (400, 21211): (True, "invalid_recipient"),
        (400, 21614): (True, "invalid_recipient"),
        (400, 21610): (True, "unsubscribed"),
        (400, 63016): (True, "outside_window"),
        (401, 20003): (True, "invalid_credentials"),
        (401, None): (True, "invalid_credentials"),
        (400, 99999): (True, "rejected"),
    }
    for (status, code), (permanent, ours) in cases.items():
        error = map_twilio_error(rest(status, code), {"Retry-After": "12"})
        assert (error.permanent, error.code) == (permanent, ours), (status, code)
    assert map_twilio_error(rest(429, 20429), {"retry-after": "12"}).retry_after == 12.0


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, credentials",
    [
        ({"from_number": "4155550100"}, None),  # not E.164 (and not a short code of ≤ 8 digits)
        ({"from_number": "+14155550100", "api_base_url": "http://twilio.example.com"}, None),  # plain http off loopback
        ({"from_number": "+14155550100", "max_segments": 0}, None),
        ({"from_number": "+14155550100", "unknown": 1}, None),
        ({}, None),
        ({"from_number": "+14155550100"}, {"account_sid": "XX" + "0" * 32, "auth_token": AUTH_TOKEN}),
        ({"from_number": "+14155550100"}, {"account_sid": ACCOUNT_SID}),
    ],
)
def test_invalid_config_or_credentials_are_refused(config, credentials):
    with pytest.raises(ValidationFailed):
        services.register_connector(
            SYSTEM,
            id="sms_bad",
            kind="sms",
            display_name="bad",
            config=config,
            credentials=credentials or {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
        )
    assert not Connector.objects.filter(pk="sms_bad").exists()


@pytest.mark.parametrize("sender", ["+14155550100", "BRAIN", "12345", "https://api.dublin.ie1.twilio.com"])
def test_valid_senders_and_edges(sender, dns):
    dns["api.dublin.ie1.twilio.com"] = [PUBLIC_ADDRESS]  # no DNS here; a public address, as in life
    config = {"from_number": sender} if not sender.startswith("https") else {
        "from_number": FROM_NUMBER, "api_base_url": sender}
    services.register_connector(
        SYSTEM, id="sms_ok", kind="sms", display_name="ok", config=config,
        credentials={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
    )
    assert Connector.objects.get(pk="sms_ok").config == config


def test_start_checks_credentials_and_health_check_fetches_the_account(twilio_connector, twilio_fake):
    connector = twilio_connector("sms_main", "sms")
    assert connector.status == "CONNECTED"
    assert [r.path for r in twilio_fake.requests] == [f"/2010-04-01/Accounts/{ACCOUNT_SID}.json"]
    result = services.test_connector(SYSTEM, "sms_main")
    assert result.ok and ACCOUNT_SID in result.detail
    twilio_fake.account_status = "suspended"
    result = services.test_connector(SYSTEM, "sms_main")
    assert not result.ok and "suspended" in result.detail


def test_bad_credentials_fail_the_start(twilio_connector, twilio_fake):
    connector = twilio_connector(
        "sms_badcred", "sms", credentials={"account_sid": ACCOUNT_SID, "auth_token": "not_the_right_token_42"}
    )
    assert connector.status == "ERROR"
    assert "auth token" in connector.last_error
    assert "not_the_right_token_42" not in connector.last_error
    assert all("not_the_right_token_42" not in json.dumps(e.details) for e in AuditEvent.objects.all())
    assert twilio_fake.requests[-1].status == 401


def test_twilio_down_does_not_fail_the_start(twilio_connector, twilio_fake):
    twilio_fake.down()
    assert twilio_connector("sms_down", "sms").status == "CONNECTED"


# --- sending ---------------------------------------------------------------------------------


def test_send_reaches_twilio_with_status_callback(settings, twilio_connector, twilio_fake):
    settings.PUBLIC_BASE_URL = PUBLIC
    twilio_connector("sms_send", "sms")
    delivery, _ = services.send_message(SYSTEM, "sms_send", "+1 (415) 555-0199", "Your 3pm moved to Thursday.")
    delivery.refresh_from_db()
    [sent] = twilio_fake.messages
    assert sent.form == {
        "To": TO,
        "From": FROM_NUMBER,
        "Body": "Your 3pm moved to Thursday.",
        "StatusCallback": f"{PUBLIC}/webhooks/twilio/sms_send/status/",
    }
    assert delivery.status == "sent"
    assert delivery.platform_message_id == sent.response["sid"] and sent.response["sid"].startswith("SM")
    assert sent.headers["authorization"].startswith("Basic ")


def test_without_public_base_url_no_status_callback_is_requested(settings, twilio_connector, twilio_fake):
    settings.PUBLIC_BASE_URL = ""
    twilio_connector("sms_nocb", "sms")
    services.send_message(SYSTEM, "sms_nocb", TO, "hello")
    [sent] = twilio_fake.messages
    assert "StatusCallback" not in sent.params


def test_typographic_text_arrives_as_gsm7(twilio_connector, twilio_fake):
    twilio_connector("sms_gsm", "sms")
    services.send_message(SYSTEM, "sms_gsm", TO, "Meeting\u00a0moved \u2014 it\u2019s at 4\u2026")
    assert twilio_fake.messages[0].form["Body"] == "Meeting moved - it's at 4..."


def test_markdown_is_sent_as_plain_text(twilio_connector, twilio_fake):
    twilio_connector("sms_md", "sms")
    services.send_message(SYSTEM, "sms_md", TO, "**Build failed**: see [the log](https://ci.example.org/1) and `make`")
    assert twilio_fake.messages[0].form["Body"] == "Build failed: see the log (https://ci.example.org/1) and make"


def test_over_max_segments_is_refused_not_truncated(twilio_connector, twilio_fake):
    twilio_connector("sms_long", "sms", max_segments=2)
    delivery, _ = services.send_message(SYSTEM, "sms_long", TO, "a" * 307)  # three GSM-7 segments
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "3 GSM-7 segments" in delivery.last_error
    assert twilio_fake.messages == []
    assert audit_details("message.failed")[-1]["error"] == "too_long"
    ok, _ = services.send_message(SYSTEM, "sms_long", TO, "a" * 306)
    ok.refresh_from_db()
    assert ok.status == "sent" and twilio_fake.messages[0].form["Body"] == "a" * 306


def test_default_limit_is_ten_segments(twilio_connector, twilio_fake):
    twilio_connector("sms_ten", "sms")
    ok, _ = services.send_message(SYSTEM, "sms_ten", TO, "ж" * 670)  # 10 UCS-2 segments
    too_long, _ = services.send_message(SYSTEM, "sms_ten", TO, "ж" * 671)
    ok.refresh_from_db()
    too_long.refresh_from_db()
    assert (ok.status, too_long.status) == ("sent", "failed")


def test_invalid_recipient_is_refused_when_queued(twilio_connector, twilio_fake):
    twilio_connector("sms_rcpt", "sms")
    with pytest.raises(ValidationFailed) as caught:
        services.send_message(SYSTEM, "sms_rcpt", "ada", "hello")
    assert caught.value.code == "invalid_recipient"
    assert Delivery.objects.count() == 0 and twilio_fake.messages == []


@pytest.mark.parametrize(
    "mode, status, code",
    [
        ("invalid_to", "failed", "invalid_recipient"),
        ("unsubscribed", "failed", "unsubscribed"),
        ("error_500", "queued", "platform_unavailable"),
        ("rate_limited", "queued", "rate_limited"),
        ("slow", "queued", "timeout"),
    ],
)
def test_twilio_errors_become_delivery_outcomes(twilio_connector, twilio_fake, mode, status, code):
    twilio_connector("sms_err", "sms", timeout=1)
    twilio_fake.slow_seconds = 3
    twilio_fake.set_mode(mode)
    before = timezone.now()
    delivery, _ = services.send_message(SYSTEM, "sms_err", TO, "hello")
    delivery.refresh_from_db()
    assert delivery.status == status
    action = "message.failed" if status == "failed" else "message.retry"
    details = audit_details(action)[-1]
    assert details["error"] == code and details["permanent"] is (status == "failed")
    if mode == "rate_limited":  # Retry-After: 7 is honoured
        assert delivery.next_attempt_at >= before + timedelta(seconds=7)
    assert delivery.platform_message_id == ""


def test_connection_refused_is_transient(twilio_connector, twilio_fake):
    twilio_connector("sms_refused", "sms")
    twilio_fake.down()
    delivery, _ = services.send_message(SYSTEM, "sms_refused", TO, "hello")
    delivery.refresh_from_db()
    assert delivery.status == "queued" and "unreachable" in delivery.last_error
    assert audit_details("message.retry")[-1]["error"] == "connection_error"


def test_credentials_revoked_after_start_fail_the_delivery(twilio_connector, twilio_fake):
    twilio_connector("sms_revoked", "sms")
    twilio_fake.auth_token = "rotated_token_abcdefghijklmnop"
    delivery, _ = services.send_message(SYSTEM, "sms_revoked", TO, "hello")
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert audit_details("message.failed")[-1]["error"] == "invalid_credentials"
    # The whole connector is unusable until its credentials are fixed: it goes to ERROR.
    connector = Connector.objects.get(pk="sms_revoked")
    assert connector.status == "ERROR" and "auth token" in connector.last_error


def test_transient_error_then_success_on_retry(twilio_connector, twilio_fake):
    twilio_connector("sms_retry", "sms")
    twilio_fake.queue_modes("error_500")
    delivery, _ = services.send_message(SYSTEM, "sms_retry", TO, "hello")
    delivery.refresh_from_db()
    assert delivery.status == "queued"
    services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 2
    assert len(twilio_fake.messages) == 1
