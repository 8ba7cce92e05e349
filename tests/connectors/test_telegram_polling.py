"""Telegram in polling mode: getUpdates offsets, batches, crashes, stop requests and long polling."""
import threading

import pytest

from connectors import services
from connectors.models import Connector, InboundMessage
from connectors.registry import platform_state
from tests.connectors import telegram_support
from tests.connectors.telegram_support import fixture, poll

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram


# --- polling ---------------------------------------------------------------------------------------


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
