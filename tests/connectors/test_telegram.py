"""The Telegram platform against a loopback fake Bot API: splitting, configuration, start, stop and health.

Through the real python-telegram-bot SDK (tests/fakes/telegram_server.py): text splitting, the async SDK from
synchronous code, configuration, setWebhook/deleteWebhook with the secret, and health checks. Sending, webhooks
and polling are in test_telegram_sending.py, test_telegram_webhooks.py and test_telegram_polling.py."""
import asyncio
import json
import random

import pytest
from django.db import connection

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery
from connectors.platforms.telegram import client, split_text
from connectors.platforms.telegram.text import MAX_MESSAGE_LENGTH, utf16_len
from tests.conftest import SYSTEM
from tests.connectors import telegram_support
from tests.connectors.telegram_support import (
    OTHER_TOKEN,
    PUBLIC,
    TOKEN,
    _non_space,
    counts,
    fixture,
    post_update,
    secret_of,
)

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram


# --- splitting (pure) ----------------------------------------------------------------------------


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
