"""Telegram webhooks posted to the public URL: storage, groups, callback queries, secrets and redeliveries."""
import json

import pytest
from django.db import connection

from connectors import services
from connectors.models import Delivery, InboundMessage
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM
from tests.connectors import telegram_support
from tests.connectors.telegram_support import ADA, GROUP, counts, fixture, post_update, secret_of

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram


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
