"""Buttons (issue 18, part 4): an inline keyboard over the fake Telegram and the press coming back to BRAIN,
numbered options over the fake Twilio SMS and the number read back, BRAIN's reply with buttons, and validation."""
import json
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.delivery.brain import BrainError
from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms.buttons import MAX_BUTTONS, callback_token, numbered_choice, parse_callback_token
from tests.conftest import SYSTEM
from tests.connectors import telegram_support, twilio_support
from tests.connectors.twilio_support import fixture as twilio_fixture
from tests.connectors.twilio_support import post_twilio
from tests.fakes.brain_server import FakeBrain

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"
TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ADA = "5550123401"  # the callback_query fixture's chat
TO = "+14155550199"  # the sms_inbound fixture's sender
APPROVE = [{"id": "approve", "label": "Approve"}, {"id": "deny", "label": "Deny"}]


fake = telegram_support.fake  # the loopback Bot API, shared with the Telegram tests


@pytest.fixture
def telegram(make_connector, fake, settings):
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("tg_main", kind="telegram", config={"mode": "webhook", "api_base_url": fake.url, "poll_timeout": 1},
                   credentials={"bot_token": TOKEN})
    return Connector.objects.get(pk="tg_main")


@pytest.fixture
def fake_brain(settings):
    server = FakeBrain(secret=django_settings.BRAIN_SIGNING_KEY).start()
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    settings.BRAIN_URL = server.url
    settings.BRAIN_MAX_RETRIES = 0
    yield server
    server.stop()


def press(delivery_id, button_id, *, chat=ADA, update_id=820013376, data=None):
    """The real-format callback_query fixture, as Telegram posts it when `button_id` of `delivery_id` is pressed."""
    update = json.loads((FIXTURES / "callback_query.json").read_text())
    update["update_id"] = update_id
    update["callback_query"]["data"] = data if data is not None else callback_token(delivery_id, button_id)
    update["callback_query"]["message"]["chat"]["id"] = int(chat)
    secret = Connector.objects.get(pk="tg_main").platform_secret
    return Client().post("/webhooks/telegram/tg_main/", data=json.dumps(update), content_type="application/json",
                         HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=secret)


# --- pure ------------------------------------------------------------------------------------


def test_the_callback_token_fits_telegrams_64_bytes_and_parses_back():
    token = callback_token("0b0c2f0e-5d7c-4c3a-9a43-1f2e3d4c5b6a", "x" * 24)
    assert len(token.encode()) <= 64
    assert parse_callback_token(token) == ("0b0c2f0e-5d7c-4c3a-9a43-1f2e3d4c5b6a", "x" * 24)
    for forged in ("ack:alert-7731", "b:nothex:approve", "b:" + "0" * 32 + ":bad id", "b:" + "0" * 31 + ":a"):
        assert parse_callback_token(forged) is None


@pytest.mark.parametrize("typed, picked", [("1", "approve"), (" 2. ", "deny"), ("#1", "approve"), ("3", None),
                                           ("0", None), ("1 please", None), ("", None)])
def test_a_numbered_reply_picks_its_option(typed, picked):
    button = numbered_choice(typed, APPROVE)
    assert (button["id"] if button else None) == picked


@pytest.mark.parametrize("buttons, problem", [
    ([{"id": f"b{n}", "label": "x"} for n in range(MAX_BUTTONS + 1)], "at most"),
    ([{"id": "a", "label": "A"}, {"id": "a", "label": "B"}], "used twice"),
    ([{"id": "x" * 25, "label": "A"}], "id must be"),
    ([{"id": "a b", "label": "A"}], "id must be"),
    ([{"id": "a", "label": "x" * 65}], "label must be"),
    ([{"id": "a", "label": "two\nlines"}], "printable"),
    ([{"id": "a"}], "exactly id and label"),
])
def test_invalid_buttons_are_refused_when_queued(make_connector, buttons, problem):
    make_connector()
    with pytest.raises(ValidationFailed) as refused:
        services.send_message(SYSTEM, "locmem_main", "ada", "Deploy?", buttons=buttons)
    assert problem in refused.value.details["buttons"]
    assert not Delivery.objects.exists()


# --- Telegram ---------------------------------------------------------------------------------


def test_buttons_arrive_as_an_inline_keyboard_and_a_press_reaches_brain_naming_delivery_and_button(
    telegram, fake, fake_brain
):
    delivery, _ = services.send_message(SYSTEM, "tg_main", ADA, "Deploy *v2* to production?", buttons=APPROVE)
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.buttons == APPROVE
    [sent] = fake.sent
    assert sent["visible_text"] == "Deploy v2 to production?"  # the buttons are not written into the text
    rows = sent["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in rows] == [["Approve"], ["Deny"]]
    assert rows[1][0]["callback_data"] == callback_token(delivery.pk, "deny")

    response = press(delivery.pk, "deny")
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == "Deny" and inbound.sender == ADA
    button = {"delivery_id": str(delivery.pk), "button_id": "deny", "label": "Deny", "via": "press"}
    assert inbound.metadata["button"] == button and "button_press" not in inbound.metadata
    [asked] = fake_brain.accepted
    assert asked.json["message"]["button"] == button and asked.json["message"]["content"] == "Deny"
    # The spinner stops: the press was answered.
    [answer] = fake.calls_to("answerCallbackQuery")
    assert answer.params["callback_query_id"] == "4382bfdwdsb323b2d9"


def test_a_forged_or_foreign_press_is_not_counted(telegram, fake):
    delivery, _ = services.send_message(SYSTEM, "tg_main", ADA, "Deploy?", buttons=APPROVE)
    other, _ = services.send_message(SYSTEM, "tg_main", "5550999999", "Deploy?", buttons=APPROVE)
    press(delivery.pk, "launch", update_id=1)  # no such button
    press(other.pk, "approve", update_id=2)  # a delivery sent to another chat
    press("0b0c2f0e-5d7c-4c3a-9a43-1f2e3d4c5b6a", "approve", update_id=3)  # no such delivery
    stored = InboundMessage.objects.order_by("platform_message_id")
    assert [m.metadata.get("button_refused") for m in stored] == [True, True, True]
    assert not any("button" in m.metadata for m in stored)


def test_brains_reply_with_two_buttons_is_sent_with_an_inline_keyboard(telegram, fake, fake_brain):
    fake_brain.buttons = [{"id": "yes", "label": "Yes, book it"}, {"id": "no", "label": "No"}]
    update = json.loads((FIXTURES / "message_text.json").read_text())
    secret = Connector.objects.get(pk="tg_main").platform_secret
    Client().post("/webhooks/telegram/tg_main/", data=json.dumps(update), content_type="application/json",
                  HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=secret)
    reply = Delivery.objects.get()
    assert reply.buttons == fake_brain.buttons and reply.status == "sent"
    [call] = fake.calls_to("sendMessage")
    keyboard = call.param("reply_markup")["inline_keyboard"]
    assert [row[0]["text"] for row in keyboard] == ["Yes, book it", "No"]
    assert [row[0]["callback_data"] for row in keyboard] == [callback_token(reply.pk, "yes"), callback_token(reply.pk, "no")]


@pytest.mark.parametrize("buttons", [
    [{"id": "a", "label": "A"}, {"id": "a", "label": "B"}],
    [{"id": f"b{n}", "label": "x"} for n in range(MAX_BUTTONS + 1)],
    "not a list",
])
def test_brains_invalid_buttons_fail_the_reply(fake_brain, buttons):
    from connectors.delivery.brain import BrainRequest, HttpBrain
    fake_brain.buttons = buttons
    with pytest.raises(BrainError) as failed:
        HttpBrain(url=fake_brain.url, max_retries=0).reply(BrainRequest("c", "locmem", "ada", "hi"))
    assert failed.value.code == "brain_bad_response" and "buttons" in str(failed.value)


# --- SMS: numbered options ---------------------------------------------------------------------


def test_sms_gets_numbered_options_and_a_numbered_reply_is_read_back(client, twilio_connector, twilio_fake,
                                                                     fake_brain):
    twilio_connector("sms_in", "sms")
    delivery, _ = services.send_message(SYSTEM, "sms_in", TO, "Deploy v2 to production?", buttons=APPROVE)
    [sent] = twilio_fake.messages
    assert sent.form["Body"] == "Deploy v2 to production?\n\nReply 1 for Approve\nReply 2 for Deny"

    response = post_twilio(client, "/webhooks/twilio/sms_in/", twilio_fixture("sms_inbound", Body="2"))
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == "2"  # what the person typed; the pick is in the metadata
    button = {"delivery_id": str(delivery.pk), "button_id": "deny", "label": "Deny", "via": "number"}
    assert inbound.metadata["button"] == button
    assert fake_brain.accepted[0].json["message"]["button"] == button


def test_a_number_after_a_message_without_options_is_just_text(client, twilio_connector, twilio_fake, fake_brain):
    twilio_connector("sms_in", "sms")
    services.send_message(SYSTEM, "sms_in", TO, "Deploy?", buttons=APPROVE)
    services.send_message(SYSTEM, "sms_in", TO, "Never mind, done.")
    post_twilio(client, "/webhooks/twilio/sms_in/", twilio_fixture("sms_inbound", Body="1"))
    inbound = InboundMessage.objects.get()
    assert "button" not in inbound.metadata
    assert "button" not in fake_brain.accepted[0].json["message"]


def test_the_queued_audit_row_counts_buttons_and_holds_no_labels(make_connector):
    make_connector()
    services.send_message(SYSTEM, "locmem_main", "ada", "Deploy?", buttons=APPROVE)
    [row] = AuditEvent.objects.filter(action="message.queued")
    assert row.details["buttons"] == 2 and "Approve" not in json.dumps(row.details)


# --- Slack: Block Kit buttons and block_actions -------------------------------------------------


SLACK_BOT_TOKEN = "xoxb-1111111111-2222222222-buttonsTestToken01"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_ADA = "T061EG9R6:U061F7AUR"  # the block_actions fixture's team and user


@pytest.fixture
def slack(make_connector, settings):
    from tests.fakes.slack_server import FakeSlack
    server = FakeSlack(bot_tokens={SLACK_BOT_TOKEN}).start()
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("slack_main", kind="slack", config={"api_base_url": server.url},
                   credentials={"bot_token": SLACK_BOT_TOKEN, "signing_secret": SLACK_SECRET})
    yield server
    server.stop()


def post_block_actions(delivery_id, button_id, *, secret=SLACK_SECRET):
    """The real-format block_actions fixture for a press of `button_id`, posted as Slack does: form-encoded
    `payload=<json>` to the Events Request URL, signed v0 (computed here from Slack's documentation)."""
    import hashlib
    import hmac
    import time
    from urllib.parse import urlencode
    payload = json.loads((FIXTURES.parent / "slack" / "block_actions.json").read_text())
    payload["actions"][0].update(action_id=button_id, value=callback_token(delivery_id, button_id))
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return Client().post("/webhooks/slack/slack_main/", data=body, content_type="application/x-www-form-urlencoded",
                         HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp, HTTP_X_SLACK_SIGNATURE=f"v0={digest}")


def test_slack_buttons_are_block_kit_and_a_block_actions_press_reaches_brain(slack, fake_brain):
    delivery, _ = services.send_message(SYSTEM, "slack_main", SLACK_ADA, "Deploy *v2*?", buttons=APPROVE)
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    [sent] = slack.sent
    [call] = slack.calls_to("chat.postMessage")
    section, actions = call.params["blocks"]
    assert section["text"]["text"] == sent["text"] == "Deploy _v2_?"  # mrkdwn
    assert [(e["action_id"], e["text"]["text"], e["value"]) for e in actions["elements"]] == [
        ("approve", "Approve", callback_token(delivery.pk, "approve")), ("deny", "Deny", callback_token(delivery.pk, "deny"))]

    response = post_block_actions(delivery.pk, "approve")
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.sender == SLACK_ADA and inbound.content == "Approve"
    button = {"delivery_id": str(delivery.pk), "button_id": "approve", "label": "Approve", "via": "press"}
    assert inbound.metadata["button"] == button
    assert fake_brain.accepted[0].json["message"]["button"] == button
    assert slack.sent[-1]["channel"] == "D0LAN2Q65"  # BRAIN's answer went back to the DM


def test_a_slack_press_with_a_bad_signature_is_refused(slack):
    delivery, _ = services.send_message(SYSTEM, "slack_main", SLACK_ADA, "Deploy?", buttons=APPROVE)
    assert post_block_actions(delivery.pk, "approve", secret="not-the-signing-secret").status_code == 403
    assert not InboundMessage.objects.exists()


def test_a_socket_mode_interactive_envelope_is_a_press_too(make_connector, settings):
    import threading

    from connectors.platforms.slack import socket_mode
    from connectors.registry.kinds import connector_for
    from tests.connectors import test_slack
    from tests.fakes.slack_server import FakeSlack
    server = FakeSlack(bot_tokens={test_slack.BOT_TOKEN}, app_tokens={test_slack.APP_TOKEN}).start()
    try:
        make_connector("slack_main", kind="slack", config={"api_base_url": server.url, "mode": "socket"},
                       credentials={"bot_token": test_slack.BOT_TOKEN, "signing_secret": SLACK_SECRET,
                                    "app_token": test_slack.APP_TOKEN})
        delivery, _ = services.send_message(SYSTEM, "slack_main", SLACK_ADA, "Deploy?", buttons=APPROVE)
        payload = json.loads((FIXTURES.parent / "slack" / "block_actions.json").read_text())
        payload["actions"][0].update(action_id="deny", value=callback_token(delivery.pk, "deny"))
        stop, result = threading.Event(), {}
        row = Connector.objects.get(pk="slack_main")
        holder = threading.Thread(target=lambda: result.update(handled=socket_mode.hold_session(connector_for(row), stop)))
        holder.start()
        try:
            assert server.wait_for_socket(timeout=10)
            assert server.wait_for_ack(server.push_event(payload, envelope_type="interactive"), timeout=10)
        finally:
            stop.set()
            holder.join(timeout=15)
        assert result["handled"] == 1
        inbound = InboundMessage.objects.get()
        assert inbound.metadata["button"]["button_id"] == "deny" and inbound.content == "Deny"
    finally:
        server.stop()


# --- the REST API -----------------------------------------------------------------------------


def test_rest_send_takes_buttons_and_refuses_bad_ones(make_connector, make_user, token_for, api):
    make_connector()
    root = api(token_for(make_user("root", superuser=True)))
    sent = root.post("/api/v1/connectors/locmem_main/send/",
                     {"recipient": "ada", "content": "Deploy?", "buttons": APPROVE}, format="json")
    assert sent.status_code == 202, sent.content
    assert sent.json()["buttons"] == APPROVE
    # locmem shows no buttons: the options are numbered in the text it was handed.
    assert Delivery.objects.get().content == "Deploy?\n\nReply 1 for Approve\nReply 2 for Deny"
    refused = root.post("/api/v1/connectors/locmem_main/send/",
                        {"recipient": "ada", "content": "Deploy?", "buttons": APPROVE + APPROVE[:1]}, format="json")
    assert refused.status_code == 400 and "used twice" in refused.json()["error"]["details"]["buttons"]
    assert Delivery.objects.count() == 1


def test_whatsapp_gets_numbered_options_and_a_numbered_reply_is_read_back(client, twilio_connector, twilio_fake):
    ada = "whatsapp:+447700900123"  # the whatsapp_inbound fixture's sender
    twilio_connector("wa_hook", "whatsapp", from_number="whatsapp:+14155550100")
    post_twilio(client, "/webhooks/twilio/wa_hook/", twilio_fixture("whatsapp_inbound"))  # opens the 24-hour window
    delivery, _ = services.send_message(SYSTEM, "wa_hook", ada, "Move your 3pm to Thursday?", buttons=APPROVE)
    assert twilio_fake.messages[-1].form["Body"] == "Move your 3pm to Thursday?\n\nReply 1 for Approve\nReply 2 for Deny"
    sid = "SM" + "9" * 32
    post_twilio(client, "/webhooks/twilio/wa_hook/", twilio_fixture(
        "whatsapp_inbound", Body="1", MessageSid=sid, SmsSid=sid, SmsMessageSid=sid))
    answer = InboundMessage.objects.get(platform_message_id=sid)
    assert answer.metadata["button"] == {"delivery_id": str(delivery.pk), "button_id": "approve", "label": "Approve",
                                         "via": "number"}
