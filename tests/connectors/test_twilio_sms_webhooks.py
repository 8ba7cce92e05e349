"""`sms` webhooks over the real Twilio SDK: signed inbound messages and status callbacks."""

import pytest
from django.test import Client

from connectors import services
from connectors.models import Delivery, InboundMessage
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.connectors import twilio_support
from tests.connectors.twilio_sms_support import TO
from tests.connectors.twilio_support import AUTH_TOKEN, PUBLIC, audit_details, counts, fixture, post_twilio

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector


@pytest.fixture
def no_reply(settings):
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.NoReplyBrain"


# --- inbound webhooks ------------------------------------------------------------------------


def test_inbound_sms_is_stored_once_and_answered(client, twilio_connector, twilio_fake):
    twilio_connector("sms_in", "sms")
    payload = fixture("sms_inbound")
    response = post_twilio(client, "/webhooks/twilio/sms_in/", payload)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml") and b"<Response" in response.content
    inbound = InboundMessage.objects.get()
    assert (inbound.sender, inbound.content, inbound.platform_message_id) == (
        "+14155550199", "Remind me to call the bank at 4", "SM7f3c1d2e4b5a69788c9d0e1f2a3b4c5d")
    # BRAIN (EchoBrain) answered through send_message → the SMS platform → the fake.
    [reply] = twilio_fake.messages
    assert reply.form["To"] == "+14155550199" and reply.form["Body"].startswith('Echo: "Remind me')
    assert Delivery.objects.get().in_reply_to == inbound

    again = post_twilio(client, "/webhooks/twilio/sms_in/", payload)
    assert again.status_code == 200
    assert InboundMessage.objects.count() == 1 and len(twilio_fake.messages) == 1


def test_concurrent_duplicate_webhooks_store_one_row(twilio_connector, twilio_fake, no_reply):
    twilio_connector("sms_race", "sms")
    payload = fixture("sms_inbound")
    statuses, errors = run_at_once(
        lambda i: post_twilio(Client(), "/webhooks/twilio/sms_race/", payload).status_code, 6, timeout=30
    )
    assert errors == [] and statuses == [200] * 6
    assert InboundMessage.objects.count() == 1
    assert len(audit_details("message.received")) == 1


@pytest.mark.parametrize(
    "how",
    ["missing", "forged", "wrong_token", "other_url", "http_vs_https", "tampered_body", "extra_param"],
)
def test_bad_signatures_are_refused_before_any_write(client, settings, twilio_connector, twilio_fake, how):
    settings.PUBLIC_BASE_URL = ""
    twilio_connector("sms_sig", "sms")
    payload = fixture("sms_inbound")
    path = "/webhooks/twilio/sms_sig/"
    kwargs = {
        "missing": {"signature": ""},
        "forged": {"signature": "bm90IGEgcmVhbCBzaWduYXR1cmU="},
        "wrong_token": {"token": "someone_elses_token_0000"},
        "other_url": {"sign_url": "http://testserver/webhooks/twilio/another/"},  # stale: another connector
        "http_vs_https": {"sign_url": "https://testserver/webhooks/twilio/sms_sig/"},
    }.get(how, {})
    before = counts()
    if how == "tampered_body":
        from tests.fakes.twilio_server import sign

        signature = sign(AUTH_TOKEN, f"http://testserver{path}", payload)
        response = post_twilio(client, path, {**payload, "Body": "Send me the bank PIN"}, signature=signature)
    elif how == "extra_param":
        from tests.fakes.twilio_server import sign

        signature = sign(AUTH_TOKEN, f"http://testserver{path}", payload)
        response = post_twilio(client, path, {**payload, "Injected": "1"}, signature=signature)
    else:
        response = post_twilio(client, path, payload, **kwargs)
    assert response.status_code == 403
    assert counts() == before
    assert twilio_fake.messages == []


def test_public_base_url_is_what_the_signature_covers(client, settings, twilio_connector, twilio_fake, no_reply):
    settings.PUBLIC_BASE_URL = PUBLIC
    twilio_connector("sms_pub", "sms")
    payload = fixture("sms_inbound")
    path = "/webhooks/twilio/sms_pub/"
    # Signed for the URL the test client really calls: behind the proxy that is not what Twilio saw.
    assert post_twilio(client, path, payload).status_code == 403
    assert InboundMessage.objects.count() == 0
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}").status_code == 200
    assert InboundMessage.objects.count() == 1


def test_malformed_but_signed_payload_is_acknowledged_and_dropped(client, twilio_connector, twilio_fake):
    twilio_connector("sms_bad", "sms")
    before = counts()
    response = post_twilio(client, "/webhooks/twilio/sms_bad/", fixture("sms_inbound", From=None))
    assert response.status_code == 200 and "ignored" in response.json()
    empty = post_twilio(client, "/webhooks/twilio/sms_bad/", fixture("sms_inbound", Body=""))
    assert empty.status_code == 200 and "ignored" in empty.json()
    assert counts() == before


def test_media_only_message_is_stored_with_its_attachment(client, twilio_connector, twilio_fake, no_reply):
    twilio_connector("sms_mms", "sms")
    payload = fixture("sms_inbound", Body="", NumMedia="1", MediaContentType0="image/jpeg",
                      MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1")
    assert post_twilio(client, "/webhooks/twilio/sms_mms/", payload).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == ""  # the picture is the message: BRAIN gets it as an attachment
    assert inbound.metadata["media_types"] == ["image/jpeg"]
    assert [(a.kind, a.mime_type, a.platform_ref) for a in inbound.attachments.all()] == [
        ("image", "image/jpeg", payload["MediaUrl0"])]
    assert "https://" not in str(inbound.metadata)


def test_stopped_connector_answers_503_so_twilio_retries(client, twilio_connector, twilio_fake):
    twilio_connector("sms_off", "sms")
    services.stop_connector(SYSTEM, "sms_off")
    response = post_twilio(client, "/webhooks/twilio/sms_off/", fixture("sms_inbound"))
    assert response.status_code == 503
    assert InboundMessage.objects.count() == 0


def test_webhook_for_another_family_or_unknown_connector_is_404(client, twilio_connector, twilio_fake):
    twilio_connector("sms_fam", "sms")
    assert post_twilio(client, "/webhooks/twilio/nope/", fixture("sms_inbound")).status_code == 404
    assert post_twilio(client, "/webhooks/telegram/sms_fam/", fixture("sms_inbound")).status_code == 404


# --- status callbacks ------------------------------------------------------------------------


def _sent_delivery(settings, twilio_connector, twilio_fake, connector_id):
    settings.PUBLIC_BASE_URL = PUBLIC
    twilio_connector(connector_id, "sms")
    delivery, _ = services.send_message(SYSTEM, connector_id, TO, "hello")
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    return delivery


def test_status_callback_delivered(client, settings, twilio_connector, twilio_fake):
    delivery = _sent_delivery(settings, twilio_connector, twilio_fake, "sms_st")
    path = "/webhooks/twilio/sms_st/status/"
    sid = delivery.platform_message_id
    payload = fixture("message_status_delivered", MessageSid=sid, SmsSid=sid)
    response = post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}")
    assert response.status_code == 200
    # The answer says what happened: no inbound message stored, one delivery moved.
    assert response.json() == {"ok": True, "stored": 0, "receipts": 1}
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.delivered_at is not None


def test_status_callback_undelivered_fails_with_the_reason(client, settings, twilio_connector, twilio_fake):
    delivery = _sent_delivery(settings, twilio_connector, twilio_fake, "sms_und")
    path = "/webhooks/twilio/sms_und/status/"
    sid = delivery.platform_message_id
    payload = fixture("message_status_undelivered", MessageSid=sid, SmsSid=sid)
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}").status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "30003" in delivery.last_error and "unreachable" in delivery.last_error


def test_status_callbacks_are_signature_checked(client, settings, twilio_connector, twilio_fake):
    delivery = _sent_delivery(settings, twilio_connector, twilio_fake, "sms_stsig")
    path = "/webhooks/twilio/sms_stsig/status/"
    sid = delivery.platform_message_id
    payload = fixture("message_status_undelivered", MessageSid=sid, SmsSid=sid)
    before = counts()
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}", token="forger_token_1234567890").status_code == 403
    assert post_twilio(client, path, payload, signature="").status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == "sent" and counts() == before


def test_intermediate_status_changes_nothing(client, settings, twilio_connector, twilio_fake):
    delivery = _sent_delivery(settings, twilio_connector, twilio_fake, "sms_mid")
    path = "/webhooks/twilio/sms_mid/status/"
    sid = delivery.platform_message_id
    payload = fixture("message_status_delivered", MessageSid=sid, SmsSid=sid, MessageStatus="sent", SmsStatus="sent")
    before = counts()
    response = post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}")
    assert response.status_code == 200 and "ignored" in response.json()
    delivery.refresh_from_db()
    assert delivery.status == "sent" and counts() == before


def test_late_failure_after_delivered_does_not_move_it_back(client, settings, twilio_connector, twilio_fake):
    delivery = _sent_delivery(settings, twilio_connector, twilio_fake, "sms_late")
    path = "/webhooks/twilio/sms_late/status/"
    sid = delivery.platform_message_id
    moved = []
    for name in ("message_status_delivered", "message_status_undelivered"):
        payload = fixture(name, MessageSid=sid, SmsSid=sid)
        response = post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}")
        assert response.status_code == 200
        moved.append(response.json()["receipts"])
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert moved == [1, 0]  # the late failure moved nothing, and the answer says so
