"""`whatsapp` over the real Twilio SDK against the loopback fake: addresses, the 24-hour session
window (free text, template, or a permanent `outside_window` error), and signed inbound webhooks."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Delivery, InboundMessage
from connectors.platforms.base import IncomingMessage
from connectors.platforms.whatsapp import template_value, wa_address
from tests.conftest import SYSTEM
from tests.connectors import twilio_support
from tests.connectors.twilio_support import PUBLIC, audit_details, counts, fixture, post_twilio
from tests.deliveries import send_now

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

ADA = "whatsapp:+447700900123"
TEMPLATE = "HX" + "ab" * 16


@pytest.fixture
def no_reply(settings):
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.NoReplyBrain"


def heard_from(connector_id, sender=ADA, hours_ago=1.0, msg_id=None):
    """Ada wrote to us `hours_ago` hours ago (stored through the service, as a webhook would)."""
    services.receive_message(
        connector_id,
        IncomingMessage(
            sender=sender,
            content="hi",
            platform_message_id=msg_id or f"SM-{hours_ago}-{sender}",
            received_at=timezone.now() - timedelta(hours=hours_ago),
        ),
    )


def send(connector_id, recipient, content="Your 3pm moved to Thursday."):
    return send_now(connector_id, recipient, content)


# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [("+447700900123", ADA), ("whatsapp:+447700900123", ADA), ("WhatsApp:+44 7700 900123", ADA)],
)
def test_addresses_with_or_without_prefix(given, expected):
    assert wa_address(given) == expected


@pytest.mark.parametrize("bad", ["whatsapp:447700900123", "ada", "whatsapp:", "+0123"])
def test_invalid_addresses(bad):
    from connectors.platforms.base import ConnectorError

    with pytest.raises(ConnectorError) as caught:
        wa_address(bad)
    assert caught.value.permanent and caught.value.code == "invalid_recipient"


def test_template_values_have_no_newlines_or_long_space_runs():
    assert template_value("Line one\nLine two\r\n\tand      more ") == "Line one Line two and   more"


# --- the window ------------------------------------------------------------------------------


def test_inside_the_window_free_text_is_sent(settings, twilio_connector, twilio_fake, no_reply):
    settings.PUBLIC_BASE_URL = PUBLIC
    twilio_connector("wa_in", "whatsapp", from_number="whatsapp:+14155550100", template_content_sid=TEMPLATE)
    heard_from("wa_in", hours_ago=23)
    delivery = send("wa_in", "+447700900123")  # without the prefix
    assert delivery.status == "sent" and delivery.platform_message_id.startswith("SM")
    [sent] = twilio_fake.messages
    assert sent.form == {
        "To": ADA,
        "From": "whatsapp:+14155550100",
        "Body": "Your 3pm moved to Thursday.",
        "StatusCallback": f"{PUBLIC}/webhooks/twilio/wa_in/status/",
    }


def test_markdown_is_sent_in_whatsapp_markup(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_md", "whatsapp", from_number="+14155550100")
    heard_from("wa_md", hours_ago=1)
    delivery = send("wa_md", ADA, "**Build failed** *now*, ~~not~~ [the log](https://ci.example.org/1): `make`\n"
                                  "```\nexit 2\n```")
    assert delivery.status == "sent", delivery.last_error
    assert twilio_fake.messages[0].form["Body"] == (
        "*Build failed* _now_, ~not~ the log (https://ci.example.org/1): `make`\n\n```\nexit 2\n```")


def test_outside_the_window_the_template_is_sent(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_tpl", "whatsapp", from_number="+14155550100", template_content_sid=TEMPLATE)
    heard_from("wa_tpl", hours_ago=25)
    delivery = send("wa_tpl", ADA, "Your 3pm\nmoved to Thursday.")
    assert delivery.status == "sent"
    [sent] = twilio_fake.messages
    assert sent.form["From"] == "whatsapp:+14155550100" and sent.form["To"] == ADA
    assert sent.form["ContentSid"] == TEMPLATE
    assert json.loads(sent.form["ContentVariables"]) == {"1": "Your 3pm moved to Thursday."}
    assert "Body" not in sent.params


def test_template_variable_name_is_configurable(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_var", "whatsapp", template_content_sid=TEMPLATE, template_variable="text")
    delivery = send("wa_var", ADA, "hello")  # never heard from: outside
    assert delivery.status == "sent"
    assert json.loads(twilio_fake.messages[0].form["ContentVariables"]) == {"text": "hello"}


def test_outside_the_window_without_template_fails_permanently(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_out", "whatsapp")
    heard_from("wa_out", hours_ago=25)
    delivery = send("wa_out", ADA)
    assert delivery.status == "failed" and "24-hour window" in delivery.last_error
    details = audit_details("message.failed")[-1]
    assert details["error"] == "outside_window" and details["permanent"] is True
    assert twilio_fake.messages == []  # nothing was attempted that Twilio would refuse


def test_never_heard_from_is_outside(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_never", "whatsapp")
    assert send("wa_never", ADA).status == "failed"


@pytest.mark.parametrize("hours_ago, inside", [(0.01, True), (23.5, True), (23.99, False), (24.5, False)])
def test_window_edges(twilio_connector, twilio_fake, no_reply, hours_ago, inside):
    twilio_connector("wa_edge", "whatsapp")
    heard_from("wa_edge", hours_ago=hours_ago)
    assert (send("wa_edge", ADA).status == "sent") is inside


def test_the_newest_inbound_message_counts(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_newest", "whatsapp")
    heard_from("wa_newest", hours_ago=72, msg_id="old")
    heard_from("wa_newest", hours_ago=2, msg_id="new")
    assert send("wa_newest", ADA).status == "sent"


def test_window_is_per_connector_and_per_person(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_a", "whatsapp")
    twilio_connector("wa_b", "whatsapp")
    heard_from("wa_a", hours_ago=1)
    heard_from("wa_b", sender="whatsapp:+447700900999", hours_ago=1)
    assert send("wa_b", ADA).status == "failed"  # Ada wrote to wa_a, not wa_b
    assert send("wa_a", ADA).status == "sent"


def test_someone_else_writing_does_not_open_the_window(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_other", "whatsapp")
    heard_from("wa_other", sender="whatsapp:+15005550123", hours_ago=1)  # same last digits as Ada
    assert send("wa_other", ADA).status == "failed"
    assert send("wa_other", "whatsapp:+15005550123").status == "sent"


def test_twilio_saying_outside_window_falls_back_to_the_template(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_fb", "whatsapp", template_content_sid=TEMPLATE)
    heard_from("wa_fb", hours_ago=1)
    twilio_fake.set_mode("outside_window")  # Twilio disagrees with our estimate (63016 to free text)
    delivery = send("wa_fb", ADA)
    assert delivery.status == "sent"
    attempts = [r.form for r in twilio_fake.requests if r.kind == "message"]
    assert [("Body" in a, "ContentSid" in a) for a in attempts] == [(True, False), (False, True)]
    assert delivery.platform_message_id == twilio_fake.messages[-1].response["sid"]


def test_twilio_saying_outside_window_without_template_fails(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_63016", "whatsapp")
    heard_from("wa_63016", hours_ago=1)
    twilio_fake.set_mode("outside_window")
    delivery = send("wa_63016", ADA)
    assert delivery.status == "failed"
    assert audit_details("message.failed")[-1]["error"] == "outside_window"


def test_free_text_over_the_whatsapp_limit_is_refused(twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_long", "whatsapp")
    heard_from("wa_long", hours_ago=1)
    delivery = send("wa_long", ADA, "x" * 1601)
    assert delivery.status == "failed" and audit_details("message.failed")[-1]["error"] == "too_long"
    assert twilio_fake.messages == []


def test_invalid_recipient_is_refused_when_queued(twilio_connector, twilio_fake):
    twilio_connector("wa_rcpt", "whatsapp")
    with pytest.raises(ValidationFailed):
        services.send_message(SYSTEM, "wa_rcpt", "whatsapp:ada", "hello")
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize("config", [{"from_number": "whatsapp:4155550100"}, {"from_number": "+14155550100", "template_content_sid": "HXnothex"}])
def test_invalid_config_is_refused(config):
    with pytest.raises(ValidationFailed):
        services.register_connector(
            SYSTEM, id="wa_bad", kind="whatsapp", display_name="bad", config=config,
            credentials={"account_sid": twilio_support.ACCOUNT_SID, "auth_token": twilio_support.AUTH_TOKEN},
        )


# --- inbound ---------------------------------------------------------------------------------


def test_inbound_whatsapp_is_stored_and_answered_inside_the_window(client, twilio_connector, twilio_fake):
    twilio_connector("wa_hook", "whatsapp", from_number="whatsapp:+14155550100")
    response = post_twilio(client, "/webhooks/twilio/wa_hook/", fixture("whatsapp_inbound"))
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.sender == ADA and inbound.sender_name == "Ada Moreau"
    assert inbound.content == "Can you move my 3pm to Thursday?"
    assert inbound.platform_message_id == "SM1a2b3c4d5e6f708192a3b4c5d6e7f809"
    assert inbound.metadata["wa_id"] == "447700900123"
    # EchoBrain's reply goes out as free text: the message just opened the window.
    [reply] = twilio_fake.messages
    assert reply.form["To"] == ADA and reply.form["Body"].startswith('Echo: "Can you move')
    assert Delivery.objects.get().status == "sent"


def test_inbound_whatsapp_with_a_forged_signature_is_refused(client, twilio_connector, twilio_fake):
    twilio_connector("wa_forged", "whatsapp")
    before = counts()
    response = post_twilio(client, "/webhooks/twilio/wa_forged/", fixture("whatsapp_inbound"), token="x" * 32)
    assert response.status_code == 403
    assert counts() == before and twilio_fake.messages == []


def test_inbound_duplicate_is_stored_once(client, twilio_connector, twilio_fake, no_reply):
    twilio_connector("wa_dup", "whatsapp")
    for _ in range(3):
        assert post_twilio(client, "/webhooks/twilio/wa_dup/", fixture("whatsapp_inbound")).status_code == 200
    assert InboundMessage.objects.count() == 1


def test_whatsapp_connectors_take_no_calls(client, twilio_connector, twilio_fake):
    twilio_connector("wa_voice", "whatsapp")
    before = counts()
    response = post_twilio(client, "/webhooks/twilio/wa_voice/voice/", fixture("voice_incoming"))
    assert response.status_code == 200 and "ignored" in response.json()
    assert counts() == before
