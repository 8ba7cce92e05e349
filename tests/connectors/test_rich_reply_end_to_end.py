"""Issue 18's end-to-end proof: a person's Telegram message reaches BRAIN, BRAIN answers with an image and two
buttons, the fake Bot API receives one sendPhoto carrying the image, the caption and the inline keyboard, and the
person's press comes back to BRAIN naming the delivery and the button. Everything crosses the public surface: the
webhook, the signed HTTP call to the fake BRAIN, the real SDK against the loopback Bot API."""
import base64
import json

import pytest
from django.test import Client

from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms.buttons import callback_token
from tests.connectors import test_buttons, test_outbound_attachments

pytestmark = pytest.mark.django_db(transaction=True)
fake = test_buttons.fake  # the loopback Bot API
telegram = test_buttons.telegram  # a started webhook-mode connector "tg_main" on it
fake_brain = test_buttons.fake_brain  # an HttpBrain answering from a loopback server
attachment_dir = test_outbound_attachments.attachment_dir  # autouse: this test's own attachment storage
PNG = test_outbound_attachments.PNG


def test_brains_reply_with_an_image_and_two_buttons_is_one_send_photo_and_the_press_returns(telegram, fake, fake_brain):
    fake_brain.buttons = [{"id": "yes", "label": "Yes, book it"}, {"id": "no", "label": "No"}]
    fake_brain.attachments = [{"data": base64.b64encode(PNG).decode(), "file_name": "seat-map.png"}]
    update = json.loads((test_buttons.FIXTURES / "message_text.json").read_text())
    response = Client().post("/webhooks/telegram/tg_main/", data=json.dumps(update), content_type="application/json",
                             HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=Connector.objects.get(pk="tg_main").platform_secret)
    assert response.status_code == 200

    question = InboundMessage.objects.get()
    assert question.brain_status == "replied"
    reply = Delivery.objects.get()
    assert reply.status == "sent" and reply.in_reply_to_id == question.pk and reply.attachment_count == 1
    [upload] = fake.sent_media
    assert upload["method"] == "sendPhoto" and upload["chat_id"] == str(update["message"]["chat"]["id"])
    [photo] = upload["items"]
    assert photo["data"] == PNG and photo["file_name"] == "seat-map.png"
    assert photo["caption"].startswith("fake brain got")
    keyboard = upload["reply_markup"]["inline_keyboard"]
    assert [row[0]["text"] for row in keyboard] == ["Yes, book it", "No"]
    assert keyboard[0][0]["callback_data"] == callback_token(reply.pk, "yes")
    assert fake.calls_to("sendMessage") == []  # one message: the photo carries the text and the buttons

    fake_brain.attachments = fake_brain.buttons = None
    assert test_buttons.press(reply.pk, "yes", chat=str(update["message"]["chat"]["id"])).status_code == 200
    press = InboundMessage.objects.exclude(pk=question.pk).get()
    button = {"delivery_id": str(reply.pk), "button_id": "yes", "label": "Yes, book it", "via": "press"}
    assert press.metadata["button"] == button and press.brain_status == "replied"
    asked_about_press = fake_brain.accepted[-1].json["message"]
    assert asked_about_press["button"] == button and asked_about_press["content"] == "Yes, book it"
