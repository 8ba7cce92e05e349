"""Sending over Telegram: splitting, group migrations, each error class and the Delivery it leaves."""
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import Conflict
from connectors import services
from connectors.models import Connector
from connectors.platforms.telegram import split_text
from tests.conftest import SYSTEM
from tests.connectors import telegram_support
from tests.connectors.telegram_support import ADA, OTHER_TOKEN, TOKEN, _non_space, fixture, send

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram


# --- sending -------------------------------------------------------------------------------------


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
