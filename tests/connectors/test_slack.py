"""The Slack platform, through the real slack_sdk against a loopback fake Slack (tests/fakes/slack_server.py):
starting (auth.test, the Request URL), Events API requests with the real-format fixtures (signature, retries,
which events count), replies in the thread, sending (DMs, channels, mrkdwn, splitting, each error class), and
pairing and routing over Slack."""
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from django.test import Client

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery, Event, InboundMessage
from connectors.platforms.addresses import InvalidAddress
from connectors.platforms.slack.connector import SlackConnector, to_mrkdwn
from tests.conftest import SYSTEM
from tests.deliveries import retry_now, send_now
from tests.fakes.slack_server import FakeSlack

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slack"
BOT_TOKEN = "xoxb-1111111111-2222222222-AbCdEfGhIjKlMnOpQrStUvWx"
APP_TOKEN = "xapp-1-A0MDYCDME-3333333333-abcdef0123456789"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PUBLIC = "https://brain.example.org"
TEAM, ADA = "T061EG9R6", "U061F7AUR"


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def counts():
    return InboundMessage.objects.count(), Delivery.objects.count(), AuditEvent.objects.count(), Event.objects.count()


def signed_headers(body: bytes, *, secret=SIGNING_SECRET, timestamp=None, retry=None):
    """Slack's headers, computed here from its documentation (not with the code under test)."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}
    if retry is not None:
        headers.update(HTTP_X_SLACK_RETRY_NUM=str(retry), HTTP_X_SLACK_RETRY_REASON="http_timeout")
    return headers


def post_event(connector_id, payload=None, *, raw=None, headers=None, **sign):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = signed_headers(body, **sign) if headers is None else headers
    return Client().post(f"/webhooks/slack/{connector_id}/", data=body, content_type="application/json", **headers)


@pytest.fixture
def fake():
    server = FakeSlack(bot_tokens={BOT_TOKEN}, app_tokens={APP_TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
def slack(make_connector, fake, settings):
    """slack(id, start=True, mode="events", **config) → the connector row."""
    settings.PUBLIC_BASE_URL = PUBLIC

    def make(id="slack_main", start=True, credentials=None, **config):
        config = {"api_base_url": fake.url, **config}
        credentials = credentials or {"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "app_token": APP_TOKEN}
        make_connector(id, kind="slack", start=start, config=config, credentials=credentials)
        return Connector.objects.get(pk=id)

    return make


# --- registering and starting ---------------------------------------------------------------------


@pytest.mark.django_db
def test_start_checks_the_token_records_the_bot_and_shows_the_request_url(slack, fake, admin_client):
    row = slack()
    assert row.status == "CONNECTED"
    assert [call.token for call in fake.calls_to("auth.test")] == [BOT_TOKEN]
    assert row.platform_state["bot"] == {"user_id": "U0BOTUSER", "team_id": TEAM, "bot_id": "B0BOTID01",
                                         "username": "brain", "team": "BRAIN Team"}
    body = admin_client.get("/api/v1/connectors/slack_main/").json()
    assert body["inbound_url"] == f"{PUBLIC}/webhooks/slack/slack_main/"
    assert "credentials" not in body and BOT_TOKEN not in json.dumps(body) and SIGNING_SECRET not in json.dumps(body)


@pytest.mark.django_db
def test_events_mode_without_public_base_url_fails_clearly(slack, settings):
    settings.PUBLIC_BASE_URL = ""
    slack(start=False)
    row = services.start_connector(SYSTEM, "slack_main")
    assert row.status == "ERROR" and "PUBLIC_BASE_URL" in row.last_error


@pytest.mark.django_db
def test_a_revoked_token_fails_the_start_and_the_health_check(slack, fake):
    fake.bot_tokens = {"xoxb-someone-else-0000000000"}
    row = services.start_connector(SYSTEM, slack(start=False).id)
    assert row.status == "ERROR" and "invalid_auth" in row.last_error and BOT_TOKEN not in row.last_error
    health = services.test_connector(SYSTEM, "slack_main")
    assert health.ok is False and "invalid_auth" in health.detail


@pytest.mark.django_db
@pytest.mark.parametrize("credentials, field", [
    ({"bot_token": "xoxp-user-token-not-a-bot-0000", "signing_secret": SIGNING_SECRET}, "bot_token"),
    ({"bot_token": BOT_TOKEN, "signing_secret": "short"}, "signing_secret"),
    ({"bot_token": BOT_TOKEN}, "(root)"),
    ({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "app_token": "xoxb-not-an-app-token00"}, "app_token"),
])
def test_credentials_are_validated_by_shape_without_echoing_them(make_connector, credentials, field):
    with pytest.raises(ValidationFailed) as refused:
        make_connector("slack_bad", kind="slack", start=False, config={}, credentials=credentials)
    assert refused.value.code == "invalid_credentials"
    assert field in refused.value.details["credentials"]
    assert not any(value in json.dumps(refused.value.details) for value in credentials.values() if len(value) > 8)


@pytest.mark.django_db
def test_socket_mode_needs_an_app_token(slack):
    slack(start=False, mode="socket", credentials={"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET})
    row = services.start_connector(SYSTEM, "slack_main")
    assert row.status == "ERROR" and "app_token" in row.last_error


# --- inbound: Events API ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_url_verification_answers_the_challenge(slack):
    slack()
    response = post_event("slack_main", fixture("url_verification"))
    assert response.status_code == 200
    assert response.json() == {"challenge": fixture("url_verification")["challenge"]}
    assert InboundMessage.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_direct_message_reaches_brain_once_and_the_reply_goes_into_its_thread(slack, fake):
    slack()
    payload = fixture("message_im")
    first = post_event("slack_main", payload)
    assert first.status_code == 200 and first.json()["stored"] == 1
    # Slack retries when the answer is slow: the same event, stored once, answered once.
    retry = post_event("slack_main", payload, retry=1)
    assert retry.status_code == 200 and retry.json()["stored"] == 0
    inbound = InboundMessage.objects.get()
    assert inbound.sender == f"{TEAM}:{ADA}"
    assert inbound.platform_message_id == "D0LAN2Q65:1733312345.000200"
    assert inbound.content == "Can you remind me about the standup at 10?"
    assert inbound.metadata["event_id"] == "Ev0PV52K21" and inbound.metadata["channel_type"] == "im"
    inbound.refresh_from_db()
    assert inbound.brain_status == "replied"
    [reply] = fake.sent
    assert reply["channel"] == "D0LAN2Q65" and reply["thread_ts"] == "1733312345.000200"
    assert reply["text"].startswith("Echo:")
    assert Delivery.objects.get(in_reply_to=inbound).status == "sent"


@pytest.mark.django_db(transaction=True)
def test_a_mention_in_a_channel_is_answered_in_its_thread_without_the_mention(slack, fake):
    slack()
    assert post_event("slack_main", fixture("app_mention")).json()["stored"] == 1
    inbound = InboundMessage.objects.get()
    assert inbound.content == "what is the deploy status?"
    assert inbound.metadata["conversation"] == f"{TEAM}:C0LAN2Q65:1733312400.000300"
    [reply] = fake.sent
    assert (reply["channel"], reply["thread_ts"]) == ("C0LAN2Q65", "1733312400.000300")


@pytest.mark.django_db(transaction=True)
def test_channel_messages_are_taken_only_when_configured_and_reply_in_their_thread(slack, fake):
    slack()
    response = post_event("slack_main", fixture("message_in_thread"))
    assert response.status_code == 200 and "ignored" in response.json() and InboundMessage.objects.count() == 0
    services.update_connector(SYSTEM, "slack_main", config={"api_base_url": fake.url, "channel_messages": True})
    assert post_event("slack_main", fixture("message_in_thread")).json()["stored"] == 1
    [reply] = fake.sent
    assert (reply["channel"], reply["thread_ts"]) == ("C0LAN2Q65", "1733312400.000300")  # the thread's parent


@pytest.mark.django_db(transaction=True)
def test_a_mention_seen_as_both_message_and_app_mention_is_stored_once(slack, fake):
    slack(channel_messages=True)
    mention = fixture("app_mention")
    as_message = json.loads(json.dumps(mention))
    as_message["event"].update(type="message", channel_type="channel")
    as_message["event_id"] = "Ev0PV52K99"
    assert post_event("slack_main", mention).json()["stored"] == 1
    assert post_event("slack_main", as_message).json()["stored"] == 0
    assert len(fake.sent) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, reason", [
    ("message_bot", "a bot's message"),
    ("message_changed", "message_changed"),
])
def test_bot_messages_and_edits_are_acknowledged_and_dropped(slack, fake, name, reason):
    slack()
    before = counts()
    response = post_event("slack_main", fixture(name))
    assert response.status_code == 200 and reason in response.json()["ignored"]
    assert counts() == before and fake.sent == []


@pytest.mark.django_db(transaction=True)
def test_our_own_messages_are_never_answered(slack, fake):
    slack()
    own = fixture("message_im")
    own["event"]["user"] = "U0BOTUSER"
    assert "a bot's message" in post_event("slack_main", own).json()["ignored"]
    assert InboundMessage.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_file_without_text_is_a_message_with_its_attachment(slack, settings):
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.NoReplyBrain"  # the download is test_attachments_media's
    slack()
    payload = fixture("message_file_share")
    payload["event"]["text"] = ""
    assert post_event("slack_main", payload).json()["stored"] == 1
    inbound = InboundMessage.objects.get()
    assert inbound.content == ""
    assert [(a.kind, a.mime_type, a.size, a.file_name) for a in inbound.attachments.all()] == [
        ("image", "image/png", 48213, "screenshot.png")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ["unsigned", "forged", "other_secret", "stale", "future", "tampered", "bad_timestamp"])
def test_forged_stale_or_unsigned_requests_are_refused_before_any_write(slack, fake, case):
    slack()
    body = json.dumps(fixture("message_im")).encode()
    headers = {
        "unsigned": {},
        "forged": {**signed_headers(body), "HTTP_X_SLACK_SIGNATURE": "v0=" + "0" * 64},
        "other_secret": signed_headers(body, secret="another-signing-secret-000000"),
        "stale": signed_headers(body, timestamp=int(time.time()) - 330),  # margins: the check runs a little later
        "future": signed_headers(body, timestamp=int(time.time()) + 330),
        "tampered": signed_headers(body.replace(b"standup", b"shutdown")),
        "bad_timestamp": {**signed_headers(body), "HTTP_X_SLACK_REQUEST_TIMESTAMP": "12a"},
    }[case]
    before = counts()
    response = post_event("slack_main", raw=body, headers=headers)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert counts() == before and fake.sent == []


@pytest.mark.django_db(transaction=True)
def test_a_timestamp_within_five_minutes_is_accepted(slack):
    slack()
    assert post_event("slack_main", fixture("message_im"), timestamp=int(time.time()) - 290).json()["stored"] == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"type": "event_callback"}',
                                 b'{"type": "event_callback", "event": {"type": "message", "channel_type": "im"}}',
                                 b'{"type": "url_verification"}', b'{"type": "app_rate_limited"}'])
def test_malformed_but_signed_payloads_are_acknowledged_never_a_500(slack, raw):
    slack()
    before = counts()
    response = post_event("slack_main", raw=raw)
    assert response.status_code == 200 and "ignored" in response.json()
    assert counts() == before


@pytest.mark.django_db(transaction=True)
def test_a_socket_mode_connector_takes_no_http_events(slack):
    slack(mode="socket")
    assert post_event("slack_main", fixture("message_im")).status_code == 403
    assert InboundMessage.objects.count() == 0


# --- outbound ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_person_is_reached_in_their_dm_and_markdown_becomes_mrkdwn(slack, fake):
    slack()
    delivery = send_now("slack_main", f"{TEAM}:{ADA}", "**Standup** at 10, see [notes](https://example.org/n)")
    assert delivery.status == "sent"
    assert [c.params["users"] for c in fake.calls_to("conversations.open")] == [ADA]
    [sent] = fake.sent
    assert sent["channel"] == FakeSlack.dm_id(ADA)
    assert sent["text"] == "*Standup* at 10, see <https://example.org/n|notes>"
    assert delivery.platform_message_id == sent["ts"]


@pytest.mark.django_db(transaction=True)
def test_a_channel_id_is_posted_to_directly(slack, fake):
    slack()
    assert send_now("slack_main", "C0LAN2Q65", "deploy finished & green").status == "sent"
    assert fake.calls_to("conversations.open") == []
    assert fake.sent[0]["channel"] == "C0LAN2Q65" and fake.sent[0]["text"] == "deploy finished &amp; green"


def test_markdown_conversion_examples():
    assert to_mrkdwn("**bold** and *it* and ~~gone~~") == "*bold* and _it_ and ~gone~"
    assert to_mrkdwn("# Title\n\n- a\n- b") == "*Title*\n\n•   a\n•   b"
    assert to_mrkdwn("5 > 3 <b>") == "5 &gt; 3 &lt;b&gt;"
    assert to_mrkdwn("```\ncode **stays**\n```") == "```\ncode **stays**\n```"


@pytest.mark.django_db(transaction=True)
def test_a_long_text_is_split_at_paragraphs_in_order(slack, fake):
    slack()
    paragraphs = [f"paragraph {n} " + "x" * 1500 for n in range(5)]
    assert send_now("slack_main", "C0LAN2Q65", "\n\n".join(paragraphs)).status == "sent"
    texts = [sent["text"] for sent in fake.sent]
    assert len(texts) == 3 and all(len(text) <= 4000 for text in texts)
    assert "".join(texts).replace("\n", "") == "".join(paragraphs)


@pytest.mark.django_db(transaction=True)
def test_recipients_of_another_workspace_and_bad_shapes_are_refused(slack, fake):
    slack()
    with pytest.raises(ValidationFailed) as refused:
        services.send_message(SYSTEM, "slack_main", "#general", "hi")
    assert refused.value.code == "invalid_recipient"
    delivery = send_now("slack_main", f"T999OTHER:{ADA}", "hi")
    assert delivery.status == "failed" and "another Slack workspace" in delivery.last_error
    assert fake.sent == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["channel_not_found", "not_in_channel"])
def test_permanent_errors_fail_the_delivery_at_once(slack, fake, mode):
    slack()
    fake.fail(mode, method="chat.postMessage")
    delivery = send_now("slack_main", "C0LAN2Q65", "hello")
    assert delivery.status == "failed" and mode in delivery.last_error and delivery.attempts == 1
    assert Connector.objects.get(pk="slack_main").status == "CONNECTED"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["invalid_auth", "account_inactive"])
def test_a_dead_token_fails_the_delivery_and_stops_the_connector(slack, fake, mode):
    slack()
    fake.fail(mode)
    delivery = send_now("slack_main", "C0LAN2Q65", "hello")
    assert delivery.status == "failed" and mode in delivery.last_error
    row = Connector.objects.get(pk="slack_main")
    assert row.status == "ERROR" and BOT_TOKEN not in row.last_error


@pytest.mark.django_db(transaction=True)
def test_ratelimited_waits_for_retry_after_then_sends(slack, fake):
    slack()
    fake.retry_after = 7
    fake.fail("ratelimited", method="chat.postMessage", times=1)
    delivery = send_now("slack_main", "C0LAN2Q65", "hello")
    assert delivery.status == "queued" and "rate limit" in delivery.last_error
    waited = (delivery.next_attempt_at - delivery.updated_at).total_seconds()
    assert 6 <= waited <= 9  # Retry-After, honoured
    assert retry_now(delivery).status == "sent"
    assert [sent["text"] for sent in fake.sent] == ["hello"]


@pytest.mark.django_db(transaction=True)
def test_a_server_error_is_retried_not_failed(slack, fake):
    slack()
    fake.fail("server_error", method="chat.postMessage", times=1)
    delivery = send_now("slack_main", "C0LAN2Q65", "hello")
    assert delivery.status == "queued" and delivery.attempts == 1
    assert retry_now(delivery).status == "sent"


def test_validate_recipient_and_normalize_address():
    assert SlackConnector.validate_recipient(f"{TEAM}:{ADA}") is None
    assert SlackConnector.validate_recipient("u061f7aur") is None
    assert SlackConnector.validate_recipient("C0LAN2Q65") is None
    assert SlackConnector.validate_recipient("@ada") is not None
    assert SlackConnector.normalize_address(f" {TEAM.lower()}:{ADA} ") == f"{TEAM}:{ADA}"
    with pytest.raises(InvalidAddress):
        SlackConnector.normalize_address(ADA)  # a user id alone could be in any workspace
