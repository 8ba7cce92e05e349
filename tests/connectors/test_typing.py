"""The typing indicator while BRAIN works on a reply (issue 18): Telegram's sendChatAction through the real
python-telegram-bot SDK against the loopback fake Bot API, with a slow loopback fake BRAIN; failures that stay
cosmetic; no indicator for a pairing code (answered before BRAIN) nor for kinds without one."""
import logging
import time

import pytest
from django.conf import settings
from django.utils.module_loading import import_string
from telegram.error import BadRequest

from connectors import services
from connectors.models import Delivery, InboundMessage
from connectors.platforms import locmem
from connectors.platforms.base import BaseConnector, ConnectorError, IncomingMessage
from connectors.platforms.telegram import client
from connectors.registry import platform_state
from tests.conftest import SYSTEM
from tests.connectors import brain_support, telegram_support
from tests.connectors.telegram_support import ADA, GROUP, TOKEN, fixture, post_update, secret_of

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram
fake_brain = brain_support.fake_brain
http_brain_settings = brain_support.http_brain_settings

REPEAT = 0.2  # seconds between sendChatAction calls in these tests (4 in production)
BRAIN_SECONDS = 1.0  # how long the slow fake BRAIN thinks


@pytest.fixture
def slow_brain(http_brain_settings, fake_brain):
    """BRAIN answers after BRAIN_SECONDS; the indicator shows at once and repeats every REPEAT seconds."""
    http_brain_settings.TYPING_REPEAT_SECONDS = REPEAT
    http_brain_settings.TYPING_DELAY_SECONDS = 0
    http_brain_settings.BRAIN_TIMEOUT = BRAIN_SECONDS + 3  # slow, not too slow: BRAIN does answer
    fake_brain.slow_seconds = BRAIN_SECONDS
    fake_brain.set_mode("slow")
    return fake_brain


def methods(fake):
    """The Bot API methods the fake answered, in the order it answered them (getMe/setWebhook of start() left out)."""
    return [c.method for c in fake.calls if c.method in ("sendChatAction", "sendMessage")]


def assert_replied(fake, fake_brain, chat_id=ADA):
    [reply] = fake.sent
    assert reply["chat_id"] == chat_id and reply["text"].startswith("fake brain got: ")
    assert len(fake_brain.requests) == 1
    assert InboundMessage.objects.get().brain_status == InboundMessage.BrainStatus.REPLIED


@pytest.mark.django_db(transaction=True)
def test_typing_repeats_in_the_chat_while_brain_works_and_stops_before_the_reply(telegram, fake, slow_brain):
    telegram()
    started = time.monotonic()
    response = post_update("tg_main", fixture("message_text"), secret_of("tg_main"))
    assert response.status_code == 200
    assert time.monotonic() - started < BRAIN_SECONDS + 1.5  # the indicator held nothing up
    assert_replied(fake, slow_brain)

    actions = fake.calls_to("sendChatAction")
    assert len(actions) >= 3, methods(fake)  # ~BRAIN_SECONDS / REPEAT of them; at least a few, timing aside
    assert all(c.status == 200 for c in actions)
    assert fake.chat_actions == [{"chat_id": ADA, "action": "typing"}] * len(actions)
    # They were spread over BRAIN's time (repeated, not sent in one burst), and all came before the reply.
    assert actions[-1].received_at - actions[0].received_at >= BRAIN_SECONDS / 2
    order = methods(fake)
    assert order == ["sendChatAction"] * len(actions) + ["sendMessage"], order
    # The first came at once, not after BRAIN: BRAIN was asked before the first action plus its thinking time.
    assert actions[0].received_at < slow_brain.requests[0].received_at + BRAIN_SECONDS / 2

    time.sleep(REPEAT * 4)  # nothing keeps typing after the answer
    assert methods(fake) == order


@pytest.mark.django_db(transaction=True)
def test_typing_waits_for_the_delay_and_a_quick_answer_gets_none(telegram, fake, slow_brain, settings):
    settings.TYPING_DELAY_SECONDS = BRAIN_SECONDS / 2
    telegram()
    assert post_update("tg_main", fixture("message_text"), secret_of("tg_main")).status_code == 200
    actions = fake.calls_to("sendChatAction")
    assert len(actions) >= 1 and methods(fake)[-1] == "sendMessage"
    assert actions[0].received_at >= slow_brain.requests[0].received_at + BRAIN_SECONDS / 2 - 0.1

    settings.TYPING_DELAY_SECONDS = 1.0  # the default
    slow_brain.set_mode("normal")  # answers at once
    fake.reset()
    update = fixture("message_text")
    update["update_id"] += 1
    update["message"]["message_id"] += 1
    assert post_update("tg_main", update, secret_of("tg_main")).status_code == 200
    assert len(fake.sent) == 1 and len(slow_brain.requests) == 2
    time.sleep(1.2)
    assert fake.calls_to("sendChatAction") == []


@pytest.mark.django_db(transaction=True)
def test_typing_follows_a_group_that_moved_to_a_supergroup_as_the_reply_does(telegram, fake, slow_brain):
    telegram()
    moved_to = "-1009876543210"
    platform_state.save_platform_state("tg_main", **{f"migrated_chat:{GROUP}": int(moved_to)})
    assert post_update("tg_main", fixture("group_message"), secret_of("tg_main")).status_code == 200
    assert_replied(fake, slow_brain, chat_id=moved_to)
    assert fake.chat_actions and {a["chat_id"] for a in fake.chat_actions} == {moved_to}


@pytest.mark.django_db(transaction=True)
def test_a_failing_send_chat_action_is_retried_at_the_next_tick_and_the_reply_still_goes_out(
    telegram, fake, slow_brain, caplog
):
    telegram()
    fake.fail("server_error", method="sendChatAction")  # every sendChatAction answers 500
    with caplog.at_level(logging.INFO, logger="connectors.platforms.telegram.typing_indicator"):
        assert post_update("tg_main", fixture("message_text"), secret_of("tg_main")).status_code == 200
    assert_replied(fake, slow_brain)
    failed = fake.calls_to("sendChatAction")
    assert len(failed) >= 2 and all(c.status == 500 for c in failed)  # a 5xx may pass: tried again
    assert fake.chat_actions == []
    logged = [r for r in caplog.records if "sendChatAction" in r.getMessage()]
    assert logged and all(r.levelno == logging.INFO for r in logged)
    assert all("network_error" in r.getMessage() and TOKEN not in r.getMessage() for r in logged)
    assert Delivery.objects.get().status == "sent"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode, code", [("chat_not_found", "chat_not_found"), ("flood", "rate_limited"),
                                        ("invalid_token", "invalid_token")])
def test_a_refused_send_chat_action_ends_the_indicator_and_the_reply_still_goes_out(
    telegram, fake, slow_brain, caplog, mode, code
):
    telegram()
    fake.fail(mode, method="sendChatAction")
    with caplog.at_level(logging.INFO, logger="connectors.platforms.telegram.typing_indicator"):
        assert post_update("tg_main", fixture("message_text"), secret_of("tg_main")).status_code == 200
    assert_replied(fake, slow_brain)
    [refused] = fake.calls_to("sendChatAction")  # asked once: the same refusal would come back (or make it worse)
    assert refused.status >= 400
    [record] = [r for r in caplog.records if "sendChatAction" in r.getMessage()]
    assert record.levelno == logging.WARNING and f"({code})" in record.getMessage()
    assert TOKEN not in record.getMessage()


@pytest.mark.django_db(transaction=True)
def test_a_send_chat_action_slower_than_brain_does_not_delay_the_reply(telegram, fake, slow_brain):
    telegram()
    fake.slow_seconds = 5.0
    fake.fail("slow", method="sendChatAction", times=1)  # the first action hangs far longer than BRAIN thinks
    started = time.monotonic()
    assert post_update("tg_main", fixture("message_text"), secret_of("tg_main")).status_code == 200
    assert time.monotonic() - started < BRAIN_SECONDS + 1.5  # not BRAIN's second plus the hanging call's five
    assert_replied(fake, slow_brain)


@pytest.mark.django_db(transaction=True)
def test_a_pairing_code_is_answered_before_brain_without_typing(telegram, fake, slow_brain):
    telegram()
    assert post_update("tg_main", fixture("message_start_payload"), secret_of("tg_main")).status_code == 200
    [reply] = fake.sent  # routing's pairing handler answered (this code was never issued)
    assert reply["chat_id"] == ADA and not reply["text"].startswith("fake brain got")
    assert slow_brain.requests == []
    time.sleep(REPEAT * 2)
    assert fake.calls_to("sendChatAction") == []


@pytest.mark.django_db(transaction=True)
def test_typing_repeat_seconds_0_turns_the_indicator_off(telegram, fake, slow_brain, settings):
    settings.TYPING_REPEAT_SECONDS = 0
    telegram()
    assert post_update("tg_main", fixture("message_text"), secret_of("tg_main")).status_code == 200
    assert_replied(fake, slow_brain)
    assert fake.calls_to("sendChatAction") == []


def test_only_telegram_has_a_typing_indicator():
    """Slack (no typing indicator for bots in the Web API), Twilio SMS, WhatsApp and voice, email, the generic
    webhook, the CLI and locmem keep the default: no indicator."""
    with_hook = {kind for kind, path in settings.CONNECTOR_CLASSES.items()
                 if import_string(path).typing is not BaseConnector.typing}
    assert with_hook == {"telegram"}


# --- kinds without the hook, and hooks that misbehave ---------------------------------------------------------


def _incoming(n=1):
    return IncomingMessage(sender="+15550001", content="what now?", platform_message_id=f"t-{n}", sender_name="Ada")


@pytest.mark.django_db
def test_a_kind_without_an_indicator_is_answered_as_before(
    slow_brain, make_connector, django_capture_on_commit_callbacks
):
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        inbound, _ = services.receive_message("locmem_main", _incoming())
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    assert [m.content for _, m in locmem.outbox] == ["fake brain got: what now? with 0 context"]


class _Breaks:
    def __init__(self, where):
        self.where = where

    def __enter__(self):
        if self.where == "enter":
            raise RuntimeError("enter")
        return self

    def __exit__(self, *exc_info):
        if self.where == "exit":
            raise RuntimeError("exit")
        return False


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["hook", "enter", "exit"])
def test_a_platform_hook_that_raises_never_costs_the_reply(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks, monkeypatch, caplog, where
):
    def typing(self, recipient, metadata):
        if where == "hook":
            raise RuntimeError("hook")
        return _Breaks(where)

    monkeypatch.setattr(locmem.LocmemConnector, "typing", typing)
    make_connector()
    with caplog.at_level(logging.WARNING, logger="connectors.delivery.replies"):
        with django_capture_on_commit_callbacks(execute=True):
            inbound, _ = services.receive_message("locmem_main", _incoming())
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    assert [m.content for _, m in locmem.outbox] == ["fake brain got: what now? with 0 context"]
    [record] = [r for r in caplog.records if "typing indicator" in r.getMessage()]
    assert "RuntimeError" in record.getMessage()


@pytest.mark.django_db
def test_a_connector_in_error_shows_no_indicator_while_brain_works(
    http_brain_settings, fake_brain, make_connector, django_capture_on_commit_callbacks, monkeypatch
):
    """In ERROR, BRAIN is still asked but the reply waits queued for the restart: "typing…" would promise an answer
    that is not coming yet (and the platform is likely what failed)."""
    asked = []
    monkeypatch.setattr(locmem.LocmemConnector, "typing",
                        lambda self, recipient, metadata: asked.append(recipient) or _Breaks("nowhere"))
    make_connector()
    with django_capture_on_commit_callbacks(execute=True):
        services.receive_message("locmem_main", _incoming(1))
    assert asked == ["+15550001"]  # running: the hook is asked, for the sender
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("No heartbeat", code="heartbeat_stale"))
    with django_capture_on_commit_callbacks(execute=True):
        inbound, _ = services.receive_message("locmem_main", _incoming(2))
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED and len(fake_brain.requests) == 2
    assert asked == ["+15550001"]


# --- the fake speaks sendChatAction as Telegram does ---------------------------------------------------------


def test_the_fake_accepts_telegrams_chat_actions_and_refuses_others(fake):
    async def act(action, chat_id=ADA):
        async with client.BotSession(TOKEN, fake.url) as bot:
            return await bot.send_chat_action(chat_id=chat_id, action=action)

    assert client.run(act, "typing") is True
    assert client.run(act, "upload_document") is True
    with pytest.raises(BadRequest, match="(?i)wrong parameter action"):
        client.run(act, "dancing")
    fake.forget_chat("42")
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        client.run(act, "typing", "42")
    assert fake.chat_actions == [{"chat_id": ADA, "action": "typing"}, {"chat_id": ADA, "action": "upload_document"}]
