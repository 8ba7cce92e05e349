"""The Telegram platform, through the real python-telegram-bot SDK against a loopback fake Bot API
(tests/fakes/telegram_server.py): starting and stopping (setWebhook/deleteWebhook with the secret),
webhooks posted to the public URL with the shared real-format fixtures, verification, sending
(splitting, migrations, each error class and the Delivery it leaves), and polling."""
import asyncio
import json
import random
import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import Conflict, ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms.telegram import client, split_text
from connectors.platforms.telegram.text import MAX_MESSAGE_LENGTH, utf16_len
from connectors.registry import platform_state
from connectors.registry.kinds import connector_for
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.deliveries import send_now
from tests.fakes.telegram_server import FakeTelegram

# Real-format Bot API payloads (updates as Telegram POSTs them, and its error bodies).
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
OTHER_TOKEN = "7000000002:AAFakeOtherBotTokenForTests0123456789"
PUBLIC = "https://brain.example.org"
SECRET_HEADER = "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN"
ADA = "5550123401"
GROUP = "-1001234567890"


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def counts():
    return InboundMessage.objects.count(), Delivery.objects.count(), AuditEvent.objects.count()


@pytest.fixture
def fake():
    server = FakeTelegram().start()
    yield server
    server.on_call = None
    server.stop()


@pytest.fixture
def public_url(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    return PUBLIC


@pytest.fixture
def telegram(make_connector, fake, public_url):
    """telegram(id, mode="webhook", start=True, token=TOKEN, **config) → the connector row."""

    def make(id="tg_main", mode="webhook", start=True, token=TOKEN, **config):
        config = {"mode": mode, "api_base_url": fake.url, "poll_timeout": 1, **config}
        make_connector(id, kind="telegram", start=start, config=config, credentials={"bot_token": token})
        return Connector.objects.get(pk=id)

    return make


def post_update(connector_id, payload, secret=None, *, raw=None):
    """POST an update to the public webhook URL, as Telegram does."""
    body = raw if raw is not None else json.dumps(payload)
    headers = {} if secret is None else {SECRET_HEADER: secret}
    return Client().post(f"/webhooks/telegram/{connector_id}/", data=body, content_type="application/json", **headers)


def secret_of(connector_id):
    return Connector.objects.get(pk=connector_id).platform_secret


# --- splitting (pure) ----------------------------------------------------------------------------


def _non_space(text):
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize(
    "text, limit, expected",
    [
        ("hello", 4096, ["hello"]),
        ("x" * 4096, 4096, ["x" * 4096]),
        ("aaaa\n\nbbbb\ncccc dddd", 12, ["aaaa", "bbbb", "cccc dddd"]),  # paragraph, then line, then word
        ("  indented\n  code block", 12, ["  indented", "  code block"]),  # indentation is kept
        ("aaaa bbbb\ncccc dddd", 12, ["aaaa bbbb", "cccc dddd"]),  # a line break beats a later space
        ("aaaa bbbb cccc", 12, ["aaaa bbbb", "cccc"]),  # words
        ("abcdefghijklmnop", 5, ["abcde", "fghij", "klmno", "p"]),  # one long word: cut inside, nothing lost
        ("aaaaa\n\nbbbbb", 5, ["aaaaa", "bbbbb"]),  # a paragraph break right at the limit
        ("a\n\n\n\n\n\n\n\nb", 3, ["a", "b"]),  # whitespace-only parts are not sent
        ("😀😀😀", 4, ["😀😀", "😀"]),  # emoji count as two UTF-16 units, and are never cut in half
        ("   ", 4096, []),
    ],
)
def test_split_text_examples(text, limit, expected):
    assert split_text(text, limit) == expected


def test_split_text_keeps_every_character_in_order_within_the_limit():
    rng = random.Random(20261125)
    alphabet = ["a", "b", "é", "😀", " ", " ", "\n", "\n\n", "word ", "x" * 50]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        limit = rng.randint(2, 120)
        parts = split_text(text, limit)
        assert all(0 < utf16_len(p) <= limit and p.strip() for p in parts), (text, limit, parts)
        assert _non_space("".join(parts)) == _non_space(text)  # nothing lost, nothing reordered


def test_a_10000_character_message_is_split_on_paragraphs():
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum " * 80 for i in range(10)]  # ~975 characters each
    text = "\n\n".join(paragraphs)
    assert 9_000 < len(text) <= 10_000
    parts = split_text(text)
    assert all(len(p) <= MAX_MESSAGE_LENGTH for p in parts)
    blocks = ["\n\n".join(paragraphs[i:i + 4]) for i in (0, 4, 8)]
    assert parts == [blocks[0].rstrip(), blocks[1].rstrip(), blocks[2]]  # whitespace goes at cuts only


# --- running the async SDK from synchronous code ------------------------------------------------


def test_calls_work_from_inside_a_running_event_loop_too(fake):
    """Under ASGI a caller may already run a loop in its thread: the call must not nest loops."""

    async def get_me():
        async with client.BotSession(TOKEN, fake.url) as bot:
            return await bot.get_me()

    async def async_caller():
        return client.run(get_me)  # a synchronous call made from async code

    assert client.run(get_me).username == "brain_connectors_bot"
    assert asyncio.run(async_caller()).username == "brain_connectors_bot"
    assert [c.method for c in fake.calls] == ["getMe", "getMe"]


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "config, credentials, field",
    [
        ({}, {"bot_token": TOKEN}, "config"),
        ({"mode": "push"}, {"bot_token": TOKEN}, "config"),
        ({"mode": "webhook", "api_base_url": "ftp://x"}, {"bot_token": TOKEN}, "config"),
        ({"mode": "webhook", "extra": 1}, {"bot_token": TOKEN}, "config"),
        ({"mode": "polling"}, {}, "credentials"),
        ({"mode": "polling"}, {"bot_token": "not-a-token-Zq9"}, "credentials"),
    ],
)
def test_invalid_config_or_credentials_are_refused_without_echoing_the_token(config, credentials, field):
    with pytest.raises(ValidationFailed) as caught:
        services.register_connector(SYSTEM, id="tg_bad", kind="telegram", display_name="Bad", config=config,
                                    credentials=credentials)
    assert field in caught.value.details
    assert "not-a-token-Zq9" not in json.dumps(caught.value.details) + caught.value.message
    assert not Connector.objects.filter(pk="tg_bad").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("recipient", ["ada", "55501 23401", "", "@ab"])
def test_recipients_that_are_not_chat_ids_are_refused_when_queued(telegram, recipient):
    telegram()
    with pytest.raises(ValidationFailed):
        services.send_message(SYSTEM, "tg_main", recipient, "hello")
    assert Delivery.objects.count() == 0


# --- start, stop, health ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_start_registers_the_webhook_with_a_fresh_secret_and_stop_deletes_it(telegram, fake):
    row = telegram()
    assert row.status == "CONNECTED", row.last_error
    [set_call] = fake.calls_to("setWebhook")
    assert set_call.token == TOKEN
    assert set_call.params["url"] == f"{PUBLIC}/webhooks/telegram/tg_main/"
    secret = row.platform_secret
    assert len(secret) >= 32 and set_call.params["secret_token"] == secret
    assert set(set_call.param("allowed_updates")) == {"message", "edited_message", "callback_query"}
    assert fake.webhook["secret_token"] == secret
    # Stored encrypted, never in clear.
    with connection.cursor() as cursor:
        cursor.execute("SELECT platform_secret FROM connectors_connector WHERE id = %s", ["tg_main"])
        assert secret not in cursor.fetchone()[0]
    assert row.platform_state["bot"] == {"id": fake.bot_id, "username": "brain_connectors_bot"}
    assert AuditEvent.objects.filter(action="connector.platform_secret", target_id="tg_main").exists()

    services.stop_connector(SYSTEM, "tg_main")
    assert len(fake.calls_to("deleteWebhook")) == 1 and fake.webhook == {}
    assert Connector.objects.get(pk="tg_main").status == "STOPPED"

    services.start_connector(SYSTEM, "tg_main")
    assert secret_of("tg_main") not in ("", secret)  # every start rotates the secret
    assert fake.calls_to("setWebhook")[-1].params["secret_token"] == secret_of("tg_main")


@pytest.mark.django_db(transaction=True)
def test_webhook_mode_without_public_base_url_fails_clearly(telegram, fake, settings):
    settings.PUBLIC_BASE_URL = ""
    row = telegram()
    assert row.status == "ERROR"
    assert "PUBLIC_BASE_URL" in row.last_error
    assert fake.calls == []  # nothing was half-registered
    assert AuditEvent.objects.filter(action="connector.start", result="failure",
                                     details__error="public_url_missing").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["webhook", "polling"])
def test_an_invalid_token_puts_the_connector_in_error_with_the_reason(telegram, fake, mode):
    fake.tokens = {OTHER_TOKEN}
    row = telegram(mode=mode)
    assert row.status == "ERROR"
    assert "rejected the bot token" in row.last_error and "Unauthorized" in row.last_error
    assert TOKEN not in row.last_error and TOKEN.split(":")[1] not in row.last_error
    assert [c.status for c in fake.calls] == [401]  # getMe refused; no webhook registered
    assert AuditEvent.objects.filter(action="connector.start", result="failure", details__error="invalid_token").exists()


@pytest.mark.django_db(transaction=True)
def test_start_when_telegram_is_unreachable_fails_with_the_reason(telegram, fake):
    fake.down()
    row = telegram()
    assert row.status == "ERROR" and "unreachable" in row.last_error


@pytest.mark.django_db(transaction=True)
def test_polling_mode_deletes_any_webhook_and_accepts_no_webhook_calls(telegram, fake):
    fake.webhook = {"url": "https://old.example.org/hook", "secret_token": "old"}
    row = telegram(mode="polling")
    assert row.status == "CONNECTED"
    assert fake.calls_to("setWebhook") == [] and len(fake.calls_to("deleteWebhook")) == 1
    assert fake.webhook == {} and row.platform_secret == ""
    before = counts()
    assert post_update("tg_main", fixture("message_text"), secret="old").status_code == 403
    assert post_update("tg_main", fixture("message_text"), secret="").status_code == 403
    assert counts() == before


@pytest.mark.django_db(transaction=True)
def test_health_check_calls_get_me_and_checks_the_webhook(telegram, fake):
    telegram()
    result = services.test_connector(SYSTEM, "tg_main")
    assert result.ok and "@brain_connectors_bot" in result.detail
    assert fake.calls[-2].method == "getMe" and fake.calls[-1].method == "getWebhookInfo"

    fake.webhook = {"url": "https://someone-else.example.org/hook"}  # another deployment took the bot
    result = services.test_connector(SYSTEM, "tg_main")
    assert not result.ok and "someone-else" in result.detail

    fake.down()
    result = services.test_connector(SYSTEM, "tg_main")
    assert not result.ok and "unreachable" in result.detail
    assert "unreachable" in Connector.objects.get(pk="tg_main").last_error


# --- sending -------------------------------------------------------------------------------------


def send(connector_id, content, recipient=ADA, **kwargs):
    return send_now(connector_id, recipient, content, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_send_delivers_markdown_as_telegram_html_and_records_the_message_id(telegram, fake):
    telegram()
    delivery = send("tg_main", "Tomorrow you have *two* meetings <b>.")
    assert delivery.status == "sent" and delivery.attempts == 1
    [call] = fake.calls_to("sendMessage")
    # BRAIN's Markdown is rendered; its own "<b>" stays text (escaped), never markup.
    assert call.params["chat_id"] == ADA and call.params["text"] == "Tomorrow you have <i>two</i> meetings &lt;b&gt;."
    assert call.params["parse_mode"] == "HTML"
    assert fake.sent[0]["visible_text"] == "Tomorrow you have two meetings <b>."
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])


@pytest.mark.django_db(transaction=True)
def test_a_long_message_is_sent_in_ordered_parts(telegram, fake):
    telegram()
    paragraphs = [f"Part {i}. " + " ".join(f"w{i}-{j}" for j in range(500)) for i in range(4)]
    content = "\n\n".join(paragraphs)[:10_000]
    delivery = send("tg_main", content)
    assert delivery.status == "sent"
    texts = [s["text"] for s in fake.sent]
    assert len(texts) == len(split_text(content)) >= 3
    assert all(len(t) <= 4096 for t in texts)
    assert _non_space("".join(texts)) == _non_space(content)
    assert [t[:6] for t in texts if t.startswith("Part ")] == sorted(t[:6] for t in texts if t.startswith("Part "))
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])  # the first part's id
    assert not any(k.startswith("sending:") for k in Connector.objects.get(pk="tg_main").platform_state)


@pytest.mark.django_db(transaction=True)
def test_a_failure_in_the_middle_of_a_long_message_does_not_resend_the_parts_already_sent(telegram, fake):
    telegram()
    content = "\n\n".join(["a" * 4000, "b" * 4000, "c" * 1900])
    fake.fail("server_error", method="sendMessage", times=1, after=1)
    delivery = send("tg_main", content)
    assert delivery.status == "queued" and [s["text"][0] for s in fake.sent] == ["a"]
    services.attempt_delivery(delivery.pk)  # the retry (the sweeper or Celery would do this)
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 2
    assert [s["text"][0] for s in fake.sent] == ["a", "b", "c"]
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])
    assert not any(k.startswith("sending:") for k in Connector.objects.get(pk="tg_main").platform_state)


@pytest.mark.django_db(transaction=True)
def test_a_migrated_group_is_followed_and_remembered(telegram, fake):
    telegram()
    old, new = "-4001234567", -1001234567891
    fake.migrate_chat(old, new)
    delivery = send("tg_main", "to the ops group", recipient=old)
    assert delivery.status == "sent"
    assert [c.params["chat_id"] for c in fake.calls_to("sendMessage")] == [old, str(new)]
    assert [s["chat_id"] for s in fake.sent] == [str(new)]
    assert Connector.objects.get(pk="tg_main").platform_state[f"migrated_chat:{old}"] == new

    send("tg_main", "again", recipient=old)  # goes straight to the new chat
    assert [c.params["chat_id"] for c in fake.calls_to("sendMessage")][2:] == [str(new)]


@pytest.mark.django_db(transaction=True)
def test_the_migrate_error_fixture_is_followed(telegram, fake):
    telegram()
    assert fixture("error_migrated")["parameters"]["migrate_to_chat_id"] == fake.migrate_to
    fake.fail("migrated", method="sendMessage", times=1)
    delivery = send("tg_main", "hello group", recipient="-4001234567")
    assert delivery.status == "sent" and fake.sent[0]["chat_id"] == str(fake.migrate_to)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "mode, status, code, permanent",
    [
        ("blocked", "failed", "recipient_blocked", True),
        ("chat_not_found", "failed", "chat_not_found", True),
        ("flood", "queued", "rate_limited", False),
        ("server_error", "queued", "network_error", False),
        ("bad_gateway", "queued", "network_error", False),
    ],
)
def test_send_errors_are_classified(telegram, fake, mode, status, code, permanent):
    telegram()
    fake.fail(mode, method="sendMessage")
    before = timezone.now()
    delivery = send("tg_main", "hello")
    assert delivery.status == status and delivery.attempts == 1
    audit = AuditEvent.objects.filter(action__in=["message.failed", "message.retry"]).get()
    assert audit.details["error"] == code and audit.details["permanent"] is permanent
    assert Connector.objects.get(pk="tg_main").status == "CONNECTED"  # one recipient's problem only
    if mode == "flood":  # Telegram's retry_after is honoured
        assert delivery.next_attempt_at >= before + timedelta(seconds=fake.retry_after)
    if not permanent:
        fake.clear_failures()
        services.attempt_delivery(delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == "sent" and delivery.attempts == 2


@pytest.mark.django_db(transaction=True)
def test_error_fixtures_match_what_the_fake_answers(fake):
    # The fake's error bodies are the shared real-format ones.
    assert fake._failure_answer("flood")[1] == fixture("error_flood")
    assert fake._failure_answer("blocked")[1] == fixture("error_blocked")
    assert fake._failure_answer("chat_not_found")[1] == fixture("error_chat_not_found")
    assert fake._failure_answer("migrated")[1] == fixture("error_migrated")


@pytest.mark.django_db(transaction=True)
def test_a_blocked_recipient_fails_only_that_recipient(telegram, fake):
    telegram()
    fake.block_chat(ADA)
    blocked = send("tg_main", "hello", recipient=ADA)
    other = send("tg_main", "hello", recipient="5550123402")
    assert (blocked.status, other.status) == ("failed", "sent")
    assert "blocked" in blocked.last_error


@pytest.mark.django_db(transaction=True)
def test_timeouts_and_an_unreachable_api_are_transient(telegram, fake):
    telegram(timeout=1)
    fake.slow_seconds = 3
    fake.fail("slow", method="sendMessage", times=1)
    slow = send("tg_main", "slow one")
    assert slow.status == "queued" and "in time" in slow.last_error
    fake.down()
    down = send("tg_main", "down one", recipient="5550123402")
    assert down.status == "queued" and "unreachable" in down.last_error
    fake.up()
    for delivery in (slow, down):
        services.attempt_delivery(delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == "sent"


@pytest.mark.django_db(transaction=True)
def test_a_network_latency_on_the_fake_delays_answers_but_loses_nothing(telegram, fake):
    """The fake's latency models the round trip to the real Bot API (bench/send_throughput.py): the server holds
    each call that long (its own clock says so), and the client waits for the answer instead of retrying."""
    telegram()
    fake.latency_seconds = 0.3
    delivery = send("tg_main", "after a round trip")
    assert delivery.status == "sent" and [m["text"] for m in fake.sent] == ["after a round trip"]
    [call] = fake.calls_to("sendMessage")
    assert call.held_seconds >= fake.latency_seconds and call.status == 200


@pytest.mark.django_db(transaction=True)
def test_a_revoked_token_fails_the_delivery_and_puts_the_connector_in_error(telegram, fake):
    telegram()
    fake.tokens = {OTHER_TOKEN}  # the token was revoked after start
    delivery = send("tg_main", "hello")
    assert delivery.status == "failed" and "rejected the bot token" in delivery.last_error
    row = Connector.objects.get(pk="tg_main")
    assert row.status == "ERROR" and "rejected the bot token" in row.last_error
    assert TOKEN not in row.last_error
    assert AuditEvent.objects.filter(action="connector.error", target_id="tg_main", details__error="invalid_token").exists()
    with pytest.raises(Conflict):  # callers (and the router) hear at once that it is not running
        services.send_message(SYSTEM, "tg_main", ADA, "later")


# --- inbound webhooks ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_text_message_is_stored_and_answered_in_the_same_chat(telegram, fake):
    telegram()
    response = post_update("tg_main", fixture("message_text"), secret_of("tg_main"))
    assert response.status_code == 200 and response.json()["stored"] == 1
    inbound = InboundMessage.objects.get()
    assert inbound.platform_message_id == "820013371"
    assert (inbound.sender, inbound.sender_name) == (ADA, "Ada Moreau")
    assert inbound.content == "Hi BRAIN, what is on my calendar tomorrow?"
    assert inbound.metadata["message_id"] == 1207 and inbound.metadata["chat_type"] == "private"
    assert inbound.received_at.timestamp() == 1764067200
    # EchoBrain's reply went back to Ada's chat, threaded under her message.
    [reply] = fake.sent
    assert reply["chat_id"] == ADA and reply["text"].startswith("Echo:")
    assert reply["reply_parameters"]["message_id"] == 1207
    inbound.refresh_from_db()
    assert inbound.brain_status == "replied"


@pytest.mark.django_db(transaction=True)
def test_an_edited_message_is_a_new_inbound_message_marked_as_an_edit(telegram):
    telegram()
    secret = secret_of("tg_main")
    assert post_update("tg_main", fixture("message_text"), secret).status_code == 200
    assert post_update("tg_main", fixture("edited_message"), secret).status_code == 200
    original, edit = InboundMessage.objects.order_by("platform_message_id")
    assert (original.platform_message_id, edit.platform_message_id) == ("820013371", "820013373")
    assert original.metadata["message_id"] == edit.metadata["message_id"] == 1207
    assert edit.metadata["edited"] is True and "edited" not in original.metadata
    assert edit.content.endswith("on Friday?")


@pytest.mark.django_db(transaction=True)
def test_a_voice_message_is_stored_as_a_file_reference(telegram):
    telegram()
    assert post_update("tg_main", fixture("message_voice"), secret_of("tg_main")).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == ""  # no placeholder text: the voice note is an attachment (test_attachments.py)
    assert inbound.metadata["type"] == "voice" and inbound.metadata["duration"] == 3
    [attachment] = inbound.attachments.all()
    assert (attachment.kind, attachment.platform_ref, attachment.mime_type) == ("voice", "AwACAgIAAxkBAAIBVWVoice", "audio/ogg")


@pytest.mark.django_db(transaction=True)
def test_a_photo_with_a_caption_is_stored_as_its_caption_with_the_photo_attached(telegram):
    telegram()
    update = fixture("message_text")
    message = update["message"]
    del message["text"]
    message["caption"] = "What is this plant?"
    message["photo"] = [{"file_id": "AgACAgIAAxkBAAIBp", "file_unique_id": "AQADp", "width": 90, "height": 90}]
    assert post_update("tg_main", update, secret_of("tg_main")).json()["stored"] == 1
    inbound = InboundMessage.objects.get()
    assert inbound.content == "What is this plant?" and inbound.metadata["type"] == "image"
    [photo] = inbound.attachments.all()
    assert (photo.kind, photo.caption, photo.platform_ref) == ("image", "What is this plant?", "AgACAgIAAxkBAAIBp")


@pytest.mark.django_db(transaction=True)
def test_a_start_link_payload_is_kept(telegram):
    telegram()
    assert post_update("tg_main", fixture("message_start_payload"), secret_of("tg_main")).status_code == 200
    assert InboundMessage.objects.get().metadata["start_payload"] == "K7Q2-MX4P"


def _group(text, entities=None, **extra):
    update = fixture("group_message")
    update["message"]["text"] = text
    if entities is None:
        update["message"].pop("entities", None)
    else:
        update["message"]["entities"] = entities
    update["message"].update(extra)
    return update


@pytest.mark.django_db(transaction=True)
def test_group_messages_are_taken_only_when_they_address_the_bot(telegram, fake):
    telegram()
    secret = secret_of("tg_main")
    # The fixture mentions the bot: stored, and the reply goes to the group.
    assert post_update("tg_main", fixture("group_message"), secret).json()["stored"] == 1
    inbound = InboundMessage.objects.get()
    assert inbound.sender == GROUP and inbound.sender_name == "Bo"
    assert inbound.metadata["chat_title"] == "Ops team"
    assert fake.sent[-1]["chat_id"] == GROUP

    ignored = [
        _group("just chatting", update_id=1),
        _group("@some_other_bot hi", [{"offset": 0, "length": 15, "type": "mention"}]),
        _group("replying to Bo", reply_to_message={"message_id": 80, "date": 1764067000,
                                                   "chat": {"id": int(GROUP), "type": "supergroup"},
                                                   "from": {"id": 5550123402, "is_bot": False, "first_name": "Bo"},
                                                   "text": "earlier"}),
    ]
    for number, update in enumerate(ignored):
        update["update_id"] = 900 + number
        response = post_update("tg_main", update, secret)
        assert response.status_code == 200 and "not addressed" in response.json()["ignored"]
    assert InboundMessage.objects.count() == 1

    reply_to_bot = _group("yes, do it", reply_to_message={
        "message_id": 81, "date": 1764067000, "chat": {"id": int(GROUP), "type": "supergroup"},
        "from": {"id": fake.bot_id, "is_bot": True, "first_name": "BRAIN"}, "text": "Shall I?"})
    reply_to_bot["update_id"] = 910
    command = _group("/status@brain_connectors_bot", [{"offset": 0, "length": 28, "type": "bot_command"}])
    command["update_id"] = 911
    for update in (reply_to_bot, command):
        assert post_update("tg_main", update, secret).json()["stored"] == 1
    assert InboundMessage.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_callback_query_is_stored_then_answered(telegram, fake):
    telegram()
    seen_when_answered = []

    def on_call(call):  # runs in the fake's thread when Telegram is asked to answer the button
        if call.method == "answerCallbackQuery":
            seen_when_answered.append(InboundMessage.objects.filter(platform_message_id="820013376").exists())
            connection.close()

    fake.on_call = on_call
    response = post_update("tg_main", fixture("callback_query"), secret_of("tg_main"))
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == "ack:alert-7731" and inbound.sender == ADA
    assert inbound.metadata["callback_query_id"] == "4382bfdwdsb323b2d9"
    [answer] = fake.calls_to("answerCallbackQuery")
    assert answer.params["callback_query_id"] == "4382bfdwdsb323b2d9" and answer.status == 200
    assert seen_when_answered == [True]  # answered only once the update was committed


@pytest.mark.django_db(transaction=True)
def test_a_failing_answer_to_a_callback_query_does_not_lose_the_update(telegram, fake):
    telegram()
    fake.fail("server_error", method="answerCallbackQuery")
    response = post_update("tg_main", fixture("callback_query"), secret_of("tg_main"))
    assert response.status_code == 200 and InboundMessage.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "body, reason",
    [
        (json.dumps({"update_id": 820013390, "my_chat_member": {"chat": {"id": 1, "type": "private"}}}), "unsupported"),
        (json.dumps({"update_id": 820013391, "poll": {"id": "1"}}), "unsupported"),
        (json.dumps({"update_id": 820013392, "message": {"message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"},
                                                        "from": {"id": 5, "is_bot": False, "first_name": "A"},
                                                        "sticker": {"file_id": "x"}}}), "malformed"),
        (json.dumps({"update_id": 820013393, "message": "not an object"}), "malformed"),
        (json.dumps({"message": {"text": "no update_id"}}), "malformed"),
        (json.dumps([1, 2, 3]), "malformed"),
        ("{not json", "malformed"),
        ("", "malformed"),
    ],
)
def test_unknown_and_malformed_updates_are_acknowledged_and_dropped(telegram, fake, body, reason):
    telegram()
    before = InboundMessage.objects.count(), Delivery.objects.count()
    response = post_update("tg_main", None, secret_of("tg_main"), raw=body)
    assert response.status_code == 200
    assert response.json()["ok"] is True and reason in response.json()["ignored"]
    assert (InboundMessage.objects.count(), Delivery.objects.count()) == before
    assert fake.calls_to("sendMessage") == []


@pytest.mark.django_db(transaction=True)
def test_forged_or_missing_secrets_are_refused_before_any_write(telegram):
    telegram()
    telegram("tg_other")
    good = secret_of("tg_main")
    before = counts()
    for secret in (None, "", "wrong", good[:-1], good + "x", secret_of("tg_other"), good.upper()):
        response = post_update("tg_main", fixture("message_text"), secret)
        assert response.status_code == 403, secret
        assert "secret" in response.json()["error"]["message"].lower()
    assert counts() == before
    assert post_update("tg_main", fixture("message_text"), good).status_code == 200  # the real one works


@pytest.mark.django_db(transaction=True)
def test_webhooks_before_the_first_start_are_refused(telegram):
    telegram(start=False)
    before = counts()
    assert post_update("tg_main", fixture("message_text"), "").status_code == 403
    assert post_update("tg_main", fixture("message_text"), "anything").status_code == 403
    assert counts() == before


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_update_is_stored_once(telegram, fake):
    telegram()
    secret = secret_of("tg_main")
    first = post_update("tg_main", fixture("message_text"), secret)
    again = post_update("tg_main", fixture("message_text"), secret)
    assert (first.json()["stored"], again.json()["stored"]) == (1, 0)
    assert InboundMessage.objects.count() == 1 and len(fake.sent) == 1  # BRAIN answered once


@pytest.mark.django_db(transaction=True)
def test_concurrent_redeliveries_store_one_row_and_answer_once(telegram, fake):
    telegram()
    secret = secret_of("tg_main")
    statuses, errors = run_at_once(lambda i: post_update("tg_main", fixture("message_voice"), secret).status_code, 5)
    assert errors == [] and statuses == [200] * 5
    assert InboundMessage.objects.count() == 1
    assert len(fake.sent) == 1


@pytest.mark.django_db(transaction=True)
def test_a_stopped_connector_answers_503_so_telegram_retries(telegram):
    telegram()
    secret = secret_of("tg_main")
    services.stop_connector(SYSTEM, "tg_main")
    assert post_update("tg_main", fixture("message_text"), secret).status_code == 503
    assert InboundMessage.objects.count() == 0


# --- polling ---------------------------------------------------------------------------------------


def poll(connector_id="tg_poll", stop_event=None):
    row = Connector.objects.get(pk=connector_id)
    return connector_for(row).poll_once(stop_event or threading.Event())


@pytest.mark.django_db(transaction=True)
def test_poll_once_stores_updates_and_advances_the_offset(telegram, fake):
    telegram("tg_poll", mode="polling")
    text = fake.enqueue_update(fixture("message_text"))
    unknown = fake.enqueue_update({"update_id": 820013372, "channel_post": {
        "message_id": 5, "date": 1764067300, "chat": {"id": -1009876543210, "type": "channel"}, "text": "news"}})
    query = fake.enqueue_update(fixture("callback_query"))
    assert poll() == 3
    assert fake.calls_to("getUpdates")[0].params.get("offset") in (None, "")
    assert sorted(InboundMessage.objects.values_list("platform_message_id", flat=True)) == [
        str(text["update_id"]), str(query["update_id"])]
    assert unknown["update_id"] not in InboundMessage.objects.values_list("platform_message_id", flat=True)
    assert Connector.objects.get(pk="tg_poll").platform_state["offset"] == query["update_id"] + 1
    assert [c.params["callback_query_id"] for c in fake.calls_to("answerCallbackQuery")] == ["4382bfdwdsb323b2d9"]

    assert poll() == 0  # the next poll confirms the batch: Telegram drops it
    assert fake.calls_to("getUpdates")[-1].params["offset"] == str(query["update_id"] + 1)
    assert fake.pending_updates == []
    assert InboundMessage.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_update_the_sdk_cannot_parse_is_skipped_not_the_whole_batch(telegram, fake):
    telegram("tg_poll", mode="polling")
    fake.enqueue_update({**fixture("message_text"), "update_id": 300})
    fake.enqueue_update({"update_id": 301, "my_chat_member": {"chat": {"id": 1}}})  # PTB chokes on this
    fake.enqueue_update({**fixture("message_voice"), "update_id": 302})
    assert poll() == 3
    assert sorted(InboundMessage.objects.values_list("platform_message_id", flat=True)) == ["300", "302"]
    assert Connector.objects.get(pk="tg_poll").platform_state["offset"] == 303
    assert poll() == 0 and fake.pending_updates == []


@pytest.mark.django_db(transaction=True)
def test_a_crash_while_storing_loses_nothing_and_duplicates_nothing(telegram, fake, monkeypatch):
    telegram("tg_poll", mode="polling")
    updates = [fake.enqueue_update({**fixture("message_text"), "update_id": 5000 + i}) for i in range(3)]
    for i, update in enumerate(updates):
        update["message"]["text"] = f"message {i}"

    real_save = platform_state.save_platform_state
    saves = []

    def crash_on_second_offset(connector_id, **state):
        if "offset" in state:
            saves.append(state["offset"])
            if len(saves) == 2:
                raise RuntimeError("the process died here")
        return real_save(connector_id, **state)

    monkeypatch.setattr(platform_state, "save_platform_state", crash_on_second_offset)
    with pytest.raises(RuntimeError):
        poll()
    monkeypatch.setattr(platform_state, "save_platform_state", real_save)
    # Update 5001 was stored in the same transaction as its offset: both rolled back.
    assert list(InboundMessage.objects.values_list("platform_message_id", flat=True)) == ["5000"]
    assert Connector.objects.get(pk="tg_poll").platform_state["offset"] == 5001

    assert poll() == 2  # the restart fetches from the stored offset
    assert sorted(InboundMessage.objects.values_list("platform_message_id", flat=True)) == ["5000", "5001", "5002"]
    assert len(fake.sent) == 3  # BRAIN answered each message once

    assert poll() == 0 and fake.pending_updates == []  # confirmed
    # Telegram redelivering already stored updates (an offset lost) creates nothing new.
    services.save_platform_state("tg_poll", offset=5000)
    for update in updates:
        fake.enqueue_update(update)
    assert poll() == 3
    assert InboundMessage.objects.count() == 3 and len(fake.sent) == 3


@pytest.mark.django_db(transaction=True)
def test_a_stop_request_leaves_the_rest_of_the_batch_unconfirmed(telegram, fake):
    telegram("tg_poll", mode="polling")
    fake.enqueue_update({**fixture("message_text"), "update_id": 7000})
    fake.enqueue_update({**fixture("message_voice"), "update_id": 7001})
    stop = threading.Event()
    stop.set()
    assert poll(stop_event=stop) == 0
    assert InboundMessage.objects.count() == 0 and "offset" not in Connector.objects.get(pk="tg_poll").platform_state
    assert poll() == 2


@pytest.mark.django_db(transaction=True)
def test_an_offset_of_another_bot_is_not_used(telegram, fake):
    telegram("tg_poll", mode="polling")
    services.save_platform_state("tg_poll", offset=999999999, offset_bot_id=1234)  # a previous token's bot
    fake.enqueue_update({**fixture("message_text"), "update_id": 10})
    assert poll() == 1
    assert fake.calls_to("getUpdates")[0].params.get("offset") in (None, "")


@pytest.mark.django_db(transaction=True)
def test_polling_while_a_webhook_is_set_is_a_transient_error(telegram, fake):
    from connectors.platforms.base import ConnectorError

    telegram("tg_poll", mode="polling")
    fake.webhook = {"url": "https://elsewhere.example.org/hook"}
    with pytest.raises(ConnectorError) as caught:
        poll()
    assert not caught.value.permanent and "webhook is active" in caught.value.message


@pytest.mark.django_db(transaction=True)
def test_long_polling_waits_for_an_update(telegram, fake):
    telegram("tg_poll", mode="polling", poll_timeout=5)
    timer = threading.Timer(0.5, lambda: fake.enqueue_update({**fixture("message_text"), "update_id": 42}))
    timer.start()
    try:
        assert poll() == 1
    finally:
        timer.cancel()
    assert fake.calls_to("getUpdates")[0].params["timeout"] == "5"
