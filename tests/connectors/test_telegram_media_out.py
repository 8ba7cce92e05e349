"""Telegram outbound files (issue 18): sendPhoto, sendDocument, sendVoice, sendVideo, sendSticker and sendMediaGroup
through the real python-telegram-bot SDK against the loopback fake Bot API (tests/fakes/telegram_media.py), with the
message text as an HTML caption, inline keyboards, refusals and the size caps; and the plan (pure) behind them."""
import asyncio
import base64
import struct
import zlib

import pytest

from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.delivery import attachment_store
from connectors.delivery.sender import Sender
from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms.attachments import OutgoingAttachment
from connectors.platforms.base import OutgoingMessage
from connectors.platforms.buttons import callback_token
from connectors.platforms.telegram import media
from connectors.platforms.telegram.text import Part
from tests.conftest import SYSTEM
from tests.connectors import telegram_support, test_buttons, test_outbound_attachments
from tests.deliveries import retry_now, send_now

pytestmark = pytest.mark.django_db(transaction=True)
fake = telegram_support.fake  # the loopback Bot API
public_url = telegram_support.public_url
telegram = telegram_support.telegram  # telegram() → a started webhook-mode connector "tg_main" on the fake
attachment_dir = test_outbound_attachments.attachment_dir  # autouse: each test its own attachment storage

ADA, GROUP = telegram_support.ADA, telegram_support.GROUP
APPROVE = test_buttons.APPROVE
PNG, PDF = test_outbound_attachments.PNG, test_outbound_attachments.PDF
# Tiny files puremagic recognises (attachment_store.detect): an Ogg Opus header, an MP4 "ftyp" box, a lossless WEBP,
# a one-pixel GIF.
OGG = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(16)
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00"
       b"\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def b64(data):
    return base64.b64encode(data).decode()


def png(width, height):
    """A valid, blank RGBA PNG of that size."""
    def chunk(tag, body):
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    rows = b"".join(b"\x00" + bytes(4 * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def sends(fake):
    """The send* methods the fake answered with 200, in order."""
    return [c.method for c in fake.calls if c.method.startswith("send") and c.status == 200]


def test_the_sample_files_are_what_they_claim():
    assert [attachment_store.detect(data) for data in (OGG, MP4, WEBP, GIF)] == [
        "application/ogg", "video/mp4", "image/webp", "image/gif"]


# --- one file ------------------------------------------------------------------------------------


def test_one_image_goes_by_send_photo_with_its_bytes_and_the_text_as_html_caption(telegram, fake):
    telegram()
    delivery = send_now("tg_main", ADA, "Your **weekly** chart", attachments=[{"data": b64(PNG), "file_name": "c.png"}])
    assert delivery.status == "sent", delivery.last_error
    [upload] = fake.sent_media
    assert upload["method"] == "sendPhoto" and upload["chat_id"] == ADA
    [photo] = upload["items"]
    assert photo["data"] == PNG and photo["file_name"] == "c.png"
    assert (photo["caption"], photo["parse_mode"], photo["visible_caption"]) == (
        "Your <b>weekly</b> chart", "HTML", "Your weekly chart")
    assert sends(fake) == ["sendPhoto"]  # the text is the caption, not a message of its own
    assert delivery.platform_message_id == str(upload["message_ids"][0])


@pytest.mark.parametrize("item, method, field", [
    ({"data": b64(PDF), "file_name": "report.pdf"}, "sendDocument", "document"),
    ({"data": b64(OGG), "file_name": "note.ogg", "kind": "voice"}, "sendVoice", "voice"),
    ({"data": b64(MP4), "file_name": "clip.mp4"}, "sendVideo", "video"),
    ({"data": b64(GIF), "file_name": "dance.gif"}, "sendDocument", "document"),  # sendPhoto would keep one frame
])
def test_each_kind_goes_by_its_own_method_with_its_file_name(telegram, fake, item, method, field):
    telegram()
    delivery = send_now("tg_main", ADA, "", attachments=[item])
    assert delivery.status == "sent", delivery.last_error
    [upload] = fake.sent_media
    [sent] = upload["items"]
    assert upload["method"] == method and sent["type"] == field
    assert sent["data"] == base64.b64decode(item["data"]) and sent["file_name"] == item["file_name"]
    assert sent["caption"] is None
    assert fake.calls_to(method)[0].response["result"][field]["file_id"]  # Telegram's answer names the stored file


def test_a_sticker_takes_no_caption_so_the_text_goes_first(telegram, fake):
    telegram()
    delivery = send_now("tg_main", ADA, "Well done!", attachments=[{"data": b64(WEBP), "kind": "sticker"}])
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendMessage", "sendSticker"]
    assert fake.sent[0]["visible_text"] == "Well done!"
    [upload] = fake.sent_media
    assert upload["items"][0]["data"] == WEBP and "caption" not in fake.calls_to("sendSticker")[0].params


def test_a_text_too_long_for_a_caption_is_sent_first_then_the_file_without_one(telegram, fake):
    telegram()
    text = "A long report. " * 80  # 1,200 characters: over the 1,024 caption limit
    delivery = send_now("tg_main", ADA, text, attachments=[{"data": b64(PDF), "file_name": "report.pdf"}])
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendMessage", "sendDocument"]
    assert fake.sent[0]["visible_text"] == text.strip()
    assert fake.sent_media[0]["items"][0]["caption"] is None
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])  # the first message's


def test_a_files_own_caption_is_used_where_the_text_is_not(telegram, fake):
    telegram()
    delivery = send_now("tg_main", ADA, "", attachments=[
        {"data": b64(PDF), "file_name": "a.pdf", "caption": "Terms *v2*"}, {"data": b64(MP4), "caption": "Demo"}])
    assert delivery.status == "sent", delivery.last_error
    assert [(u["method"], u["items"][0]["caption"]) for u in fake.sent_media] == [
        ("sendDocument", "Terms <i>v2</i>"), ("sendVideo", "Demo")]


def test_a_caption_telegram_cannot_parse_is_sent_again_as_plain_text(telegram, fake):
    telegram()
    fake.fail("bad_entities", method="sendPhoto", times=1)
    delivery = send_now("tg_main", ADA, "**bold** move", attachments=[{"data": b64(PNG)}])
    assert delivery.status == "sent", delivery.last_error
    assert [c.status for c in fake.calls_to("sendPhoto")] == [400, 200]
    [photo] = fake.sent_media[0]["items"]
    assert (photo["caption"], photo["parse_mode"], photo["data"]) == ("bold move", None, PNG)


def test_an_image_telegram_refuses_as_a_photo_goes_again_as_a_document(telegram, fake):
    telegram()
    banner = png(1, 40)  # sides 40 times apart: sendPhoto allows 20
    delivery = send_now("tg_main", ADA, "The *banner*", buttons=APPROVE,
                        attachments=[{"data": b64(banner), "file_name": "banner.png"}])
    assert delivery.status == "sent", delivery.last_error
    [refused] = fake.calls_to("sendPhoto")
    assert refused.status == 400 and "PHOTO_INVALID_DIMENSIONS" in refused.response["description"]
    [upload] = fake.sent_media
    assert upload["method"] == "sendDocument" and upload["items"][0]["data"] == banner
    assert upload["items"][0]["file_name"] == "banner.png" and upload["items"][0]["caption"] == "The <i>banner</i>"
    assert upload["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == callback_token(delivery.pk, "approve")


# --- several files ---------------------------------------------------------------------------------


def test_three_images_go_as_one_media_group_with_the_caption_on_the_first(telegram, fake):
    telegram()
    images = [{"data": b64(PNG), "file_name": f"p{n}.png"} for n in range(3)]
    delivery = send_now("tg_main", ADA, "Three *views*", attachments=images)
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendMediaGroup"]
    [group] = fake.sent_media
    assert [(i["type"], i["file_name"], i["data"]) for i in group["items"]] == [
        ("photo", f"p{n}.png", PNG) for n in range(3)]
    assert [i["caption"] for i in group["items"]] == ["Three <i>views</i>", None, None]
    assert group["items"][0]["parse_mode"] == "HTML"
    answered = fake.calls_to("sendMediaGroup")[0].response["result"]
    assert len({m["media_group_id"] for m in answered}) == 1 and all(m["photo"] for m in answered)
    assert delivery.platform_message_id == str(group["message_ids"][0])


def test_a_group_caption_telegram_cannot_parse_is_sent_again_as_plain_text(telegram, fake):
    telegram()
    fake.fail("bad_entities", method="sendMediaGroup", times=1)
    delivery = send_now("tg_main", ADA, "**Two** views", attachments=[{"data": b64(PNG)}, {"data": b64(MP4)}])
    assert delivery.status == "sent", delivery.last_error
    assert [c.status for c in fake.calls_to("sendMediaGroup")] == [400, 200]
    [group] = fake.sent_media
    assert [(i["caption"], i["parse_mode"], i["data"]) for i in group["items"]] == [
        ("Two views", None, PNG), (None, None, MP4)]


def test_an_album_with_an_image_telegram_refuses_as_a_photo_is_sent_file_by_file(telegram, fake):
    telegram()
    banner = png(40, 1)
    delivery = send_now("tg_main", ADA, "Both", attachments=[{"data": b64(PNG)}, {"data": b64(banner)}])
    assert delivery.status == "sent", delivery.last_error
    assert [(c.method, c.status) for c in fake.calls if c.method.startswith("send")] == [
        ("sendMediaGroup", 400), ("sendPhoto", 200), ("sendPhoto", 400), ("sendDocument", 200)]
    assert [(u["items"][0]["data"], u["items"][0]["visible_caption"]) for u in fake.sent_media] == [
        (PNG, "Both"), (banner, None)]


def test_photos_and_documents_group_apart_and_a_voice_note_goes_alone(telegram, fake):
    telegram()
    delivery = send_now("tg_main", ADA, "", attachments=[
        {"data": b64(PNG)}, {"data": b64(MP4)}, {"data": b64(PDF)}, {"data": b64(PDF)},
        {"data": b64(OGG), "kind": "voice"}])
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendMediaGroup", "sendMediaGroup", "sendVoice"]
    assert [[i["type"] for i in u["items"]] for u in fake.sent_media] == [
        ["photo", "video"], ["document", "document"], ["voice"]]


# --- buttons -------------------------------------------------------------------------------------


def test_an_image_with_two_buttons_carries_the_keyboard_and_a_press_comes_back(telegram, fake):
    telegram()
    delivery = send_now("tg_main", ADA, "Deploy this build?", buttons=APPROVE, attachments=[{"data": b64(PNG)}])
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendPhoto"]
    [upload] = fake.sent_media
    rows = upload["reply_markup"]["inline_keyboard"]
    assert [[(b["text"], b["callback_data"]) for b in row] for row in rows] == [
        [("Approve", callback_token(delivery.pk, "approve"))], [("Deny", callback_token(delivery.pk, "deny"))]]
    assert upload["items"][0]["visible_caption"] == "Deploy this build?"

    assert test_buttons.press(delivery.pk, "approve").status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.metadata["button"] == {"delivery_id": str(delivery.pk), "button_id": "approve",
                                          "label": "Approve", "via": "press"}


def test_a_media_group_cannot_carry_buttons_so_a_short_text_after_it_does(telegram, fake):
    telegram()
    delivery = send_now("tg_main", ADA, "Pick one", buttons=APPROVE, attachments=[{"data": b64(PNG)}] * 2)
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendMediaGroup", "sendMessage"]
    [group] = fake.sent_media
    assert group["reply_markup"] is None and group["items"][0]["visible_caption"] == "Pick one"
    [note] = fake.sent
    assert note["visible_text"] == media.KEYBOARD_NOTE
    assert note["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == callback_token(delivery.pk, "approve")
    assert delivery.platform_message_id == str(note["message_id"])  # the message with the buttons


def test_with_the_text_sent_apart_the_buttons_ride_on_it_before_the_group(telegram, fake):
    telegram()
    text = "Read this first. " * 70  # over the caption limit
    delivery = send_now("tg_main", ADA, text, buttons=APPROVE, attachments=[{"data": b64(PNG)}] * 2)
    assert sends(fake) == ["sendMessage", "sendMediaGroup"]
    assert fake.sent[0]["reply_markup"]["inline_keyboard"][1][0]["callback_data"] == callback_token(delivery.pk, "deny")
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])


def test_the_batch_sender_sends_a_photo_with_its_keyboard(settings, telegram, fake):
    settings.DELIVERY_ENGINE = "sender"
    telegram()
    delivery, _ = services.send_message(SYSTEM, "tg_main", ADA, "Approve?", buttons=APPROVE,
                                        attachments=[{"data": b64(PNG), "file_name": "build.png"}])
    asyncio.run(Sender(poll_seconds=0.05).run(until_idle=True))
    delivery.refresh_from_db()
    assert delivery.status == "sent", delivery.last_error
    [upload] = fake.sent_media
    assert upload["method"] == "sendPhoto" and upload["items"][0]["data"] == PNG
    assert upload["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == callback_token(delivery.pk, "approve")
    assert delivery.platform_message_id == str(upload["message_ids"][0])


# --- refusals and limits ---------------------------------------------------------------------------


def test_telegram_refusing_the_file_fails_the_delivery_with_its_reason(telegram, fake):
    telegram()
    fake.forget_chat(ADA)
    delivery = send_now("tg_main", ADA, "Report", attachments=[{"data": b64(PDF), "file_name": "r.pdf"}])
    assert delivery.status == "failed"
    assert delivery.last_error == "Telegram refused the request: Chat not found"
    assert not fake.sent_media and "r.pdf" not in delivery.last_error
    assert Connector.objects.get(pk="tg_main").status == "CONNECTED"  # one recipient's problem only


def test_a_failure_part_way_is_retried_and_the_files_already_sent_go_again(telegram, fake):
    """No progress is kept for files: at-least-once, as the rest of delivery."""
    telegram()
    fake.fail("server_error", method="sendDocument", times=1)
    delivery = send_now("tg_main", ADA, "", attachments=[{"data": b64(PNG)}, {"data": b64(PDF)}])
    assert delivery.status == "queued" and "unreachable or failing" in delivery.last_error
    delivery = retry_now(delivery)
    assert delivery.status == "sent", delivery.last_error
    assert sends(fake) == ["sendPhoto", "sendPhoto", "sendDocument"]


def test_a_group_that_became_a_supergroup_is_followed(telegram, fake):
    telegram()
    fake.migrate_chat(GROUP)
    delivery = send_now("tg_main", GROUP, "Chart", attachments=[{"data": b64(PNG)}])
    assert delivery.status == "sent", delivery.last_error
    assert [u["chat_id"] for u in fake.sent_media] == [str(fake.migrate_to)]
    state = Connector.objects.get(pk="tg_main").platform_state
    assert state[f"migrated_chat:{GROUP}"] == fake.migrate_to


def test_a_file_over_telegrams_50_mb_upload_limit_is_refused_when_sent(telegram, fake, settings):
    telegram()
    big = 100 * 1024 * 1024  # our own caps above Telegram's, so Telegram's is the one that refuses
    settings.ATTACHMENT_MAX_BYTES = big
    settings.ATTACHMENT_MAX_BYTES_BY_KIND = dict.fromkeys(settings.ATTACHMENT_MAX_BYTES_BY_KIND, big)
    data = PDF + bytes(media.UPLOAD_MAX_BYTES + 1 - len(PDF))
    with pytest.raises(ValidationFailed) as refused:
        services.send_message(SYSTEM, "tg_main", ADA, "", attachments=[{"data": b64(data), "kind": "document"}])
    assert refused.value.code == "attachment_too_large" and str(media.UPLOAD_MAX_BYTES) in refused.value.message
    assert not Delivery.objects.exists() and not fake.sent_media


# --- the plan (pure) -------------------------------------------------------------------------------


def attachment(kind, mime_type, size=100, caption=""):
    return OutgoingAttachment(id="x", kind=kind, mime_type=mime_type, size=size, file_name="f", caption=caption)


@pytest.mark.parametrize("kind, mime_type, size, method", [
    ("image", "image/png", 100, "photo"),
    ("image", "image/jpeg", media.PHOTO_MAX_BYTES, "photo"),
    ("image", "image/jpeg", media.PHOTO_MAX_BYTES + 1, "document"),
    ("image", "image/gif", 100, "document"),
    ("image", "image/svg+xml", 100, "document"),
    ("voice", "application/ogg", 100, "voice"),
    ("voice", "audio/mpeg", 100, "voice"),
    ("voice", "audio/wav", 100, "document"),
    ("audio", "audio/mpeg", 100, "audio"),
    ("audio", "application/ogg", 100, "document"),
    ("video", "video/mp4", 100, "video"),
    ("video", "video/quicktime", 100, "document"),
    ("sticker", "image/webp", 100, "sticker"),
    ("sticker", "video/webm", 100, "sticker"),
    ("sticker", "image/png", 100, "document"),
    ("document", "application/pdf", 100, "document"),
])
def test_which_method_a_file_goes_by(kind, mime_type, size, method):
    assert media.method_for(attachment(kind, mime_type, size)) == method


def test_the_plan_groups_consecutive_files_of_one_family_and_keeps_their_order():
    files = (attachment("image", "image/png"), attachment("video", "video/mp4"), attachment("document", "text/plain"),
             attachment("image", "image/png"), attachment("audio", "audio/mpeg"), attachment("audio", "audio/mpeg"))
    steps, keyboard_at = media.plan(OutgoingMessage(recipient="1", content="Hi", attachments=files))
    shapes = [tuple(f.method for f in s) if isinstance(s, tuple) else s.method for s in steps]
    assert shapes == [("photo", "video"), "document", "photo", ("audio", "audio")]
    assert steps[0][0].caption == Part(html="Hi", text="Hi") and keyboard_at is None


def test_a_files_own_caption_too_long_for_one_follows_it_as_text():
    long = "x " * 700
    files = (attachment("image", "image/png", caption=long), attachment("image", "image/png", caption="Second"))
    steps, _ = media.plan(OutgoingMessage(recipient="1", content="", attachments=files))
    group, after = steps
    assert [f.caption.text if f.caption else None for f in group] == [None, "Second"]
    assert after.text == long.strip()


def test_ten_photos_fill_one_group():
    files = tuple(attachment("image", "image/png") for _ in range(10))
    steps, keyboard_at = media.plan(OutgoingMessage(recipient="1", content="", buttons=tuple(APPROVE),
                                                    attachments=files), with_keyboard=True)
    assert len(steps) == 2 and len(steps[0]) == 10 and steps[1].text == media.KEYBOARD_NOTE and keyboard_at == 1
