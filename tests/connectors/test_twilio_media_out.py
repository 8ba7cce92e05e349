"""Files on outbound SMS (MMS) and WhatsApp messages through the real Twilio SDK against the loopback fake: each file
goes as a MediaUrl (our signed URL, which must download the very bytes), Twilio's limits per platform, WhatsApp's one
file per message, and the refusals (no PUBLIC_BASE_URL, outside the window, over the MMS total)."""
import base64
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery
from connectors.platforms.attachments import OutgoingAttachment
from connectors.platforms.base import ConnectorError, IncomingMessage, OutgoingMessage
from connectors.registry.kinds import connector_for
from tests.connectors import twilio_support
from tests.connectors.twilio_support import PUBLIC, audit_details
from tests.deliveries import retry_now, send_now

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
TO = "+14155550199"
ADA = "whatsapp:+447700900123"
TEMPLATE = "HX" + "ab" * 16


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.BRAIN_BACKEND = "tests.connectors.twilio_brains.NoReplyBrain"
    return tmp_path


def b64(data):
    return base64.b64encode(data).decode()


def download(url):
    """What Twilio gets when it fetches `url` (a URL under PUBLIC_BASE_URL, asked of this service)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    return Client().get(f"{parts.path}?{parts.query}")


def heard_from(connector_id, hours_ago=1.0):
    """Ada wrote to us `hours_ago` hours ago: the WhatsApp window is open for 24 hours after that."""
    services.receive_message(connector_id, IncomingMessage(
        sender=ADA, content="hi", platform_message_id=f"SM-{hours_ago}",
        received_at=timezone.now() - timedelta(hours=hours_ago)))


# --- SMS: one MMS with every file --------------------------------------------------------------


def test_mms_carries_every_file_as_a_media_url_that_downloads_its_bytes(twilio_connector, twilio_fake):
    twilio_connector("sms_mms", "sms")
    delivery = send_now("sms_mms", TO, "Your **report**", attachments=[
        {"data": b64(PNG), "file_name": "chart.png", "caption": "Q3 chart"}, {"data": b64(PDF), "file_name": "r.pdf"}])
    assert delivery.status == "sent"
    [sent] = twilio_fake.messages
    assert sent.form["To"] == TO and sent.form["Body"] == "Your report\n\nQ3 chart"  # plain text, captions after
    assert delivery.platform_message_id == sent.response["sid"] and sent.response["num_media"] == "2"
    assert len(sent.media_urls) == 2 and all(url.startswith(f"{PUBLIC}/attachments/") for url in sent.media_urls)
    png, pdf = (download(url) for url in sent.media_urls)
    assert (png.status_code, png.content, png["Content-Type"]) == (200, PNG, "image/png")
    assert (pdf.status_code, pdf.content, pdf["Content-Type"]) == (200, PDF, "application/pdf")


def test_a_file_alone_goes_without_a_body(twilio_connector, twilio_fake):
    twilio_connector("sms_alone", "sms")
    assert send_now("sms_alone", TO, "", attachments=[{"data": b64(PNG)}]).status == "sent"
    [sent] = twilio_fake.messages
    assert "Body" not in sent.params and download(sent.media_urls[0]).content == PNG


def test_a_tampered_media_url_downloads_nothing(twilio_connector, twilio_fake):
    twilio_connector("sms_tamper", "sms")
    send_now("sms_tamper", TO, "x", attachments=[{"data": b64(PNG)}])
    url = twilio_fake.messages[0].media_urls[0]
    assert download(url.replace("sig=", "sig=0")).status_code == 403


def test_mms_over_five_megabytes_in_total_fails_without_sending(twilio_connector, twilio_fake):
    """Each file is under the 5 MB cap, so the send is queued; together they are over what one MMS carries."""
    twilio_connector("sms_big", "sms")
    big = PNG + b"\0" * 3_000_000
    delivery = send_now("sms_big", TO, "two photos", attachments=[{"data": b64(big)}, {"data": b64(big)}])
    assert delivery.status == "failed" and "5000000 bytes" in delivery.last_error
    assert audit_details("message.failed")[-1]["error"] == "too_large" and twilio_fake.messages == []


def test_a_file_over_the_mms_cap_is_refused_when_queued(twilio_connector, twilio_fake):
    twilio_connector("sms_cap", "sms")
    with pytest.raises(ValidationFailed) as caught:
        send_now("sms_cap", TO, "x", attachments=[{"data": b64(PDF + b"\0" * 5_000_000)}])
    assert caught.value.code == "attachment_too_large" and not Delivery.objects.exists()


def test_stickers_are_refused_when_queued(twilio_connector, twilio_fake):
    twilio_connector("sms_sticker", "sms")
    with pytest.raises(ValidationFailed) as caught:
        send_now("sms_sticker", TO, "x", attachments=[{"data": b64(PNG), "kind": "sticker"}])
    assert caught.value.code == "attachments_unsupported"


@pytest.mark.parametrize("kind, recipient", [("sms", TO), ("whatsapp", ADA)])
def test_without_public_base_url_files_are_refused_before_any_delivery(settings, twilio_connector, twilio_fake, kind,
                                                                       recipient):
    settings.PUBLIC_BASE_URL = ""
    twilio_connector(f"{kind}_nourl", kind)
    with pytest.raises(ValidationFailed) as caught:
        send_now(f"{kind}_nourl", recipient, "x", attachments=[{"data": b64(PNG)}])
    assert caught.value.code == "attachments_unsupported" and "PUBLIC_BASE_URL" in caught.value.message
    assert not Delivery.objects.exists() and twilio_fake.messages == []


@pytest.mark.parametrize("kind", ["sms", "whatsapp"])
def test_a_file_without_a_url_at_send_time_fails_permanently(twilio_connector, twilio_fake, kind):
    """PUBLIC_BASE_URL removed after the message was queued: the platform refuses to send the files without one."""
    twilio_connector(f"{kind}_lost", kind)
    if kind == "whatsapp":
        heard_from(f"{kind}_lost")
    platform = connector_for(Connector.objects.get(pk=f"{kind}_lost"))
    message = OutgoingMessage(recipient=ADA if kind == "whatsapp" else TO, content="x", attachments=(OutgoingAttachment(
        id="1", kind="image", mime_type="image/png", size=len(PNG), file_name="a.png", url="", load=lambda: PNG),))
    with pytest.raises(ConnectorError) as caught:
        platform.send(message, delivery_id="d1")
    assert caught.value.permanent and caught.value.code == "no_public_url" and twilio_fake.messages == []


# --- WhatsApp: one file per message ------------------------------------------------------------


def test_whatsapp_sends_one_message_per_file_the_text_with_the_first(twilio_connector, twilio_fake):
    twilio_connector("wa_files", "whatsapp", from_number="whatsapp:+14155550100")
    heard_from("wa_files")
    delivery = send_now("wa_files", "+447700900123", "Here **they** are", attachments=[
        {"data": b64(PNG), "caption": "the chart"}, {"data": b64(PDF), "file_name": "terms.pdf", "caption": "terms"}])
    assert delivery.status == "sent"
    first, second = twilio_fake.messages
    assert [m.form["To"] for m in (first, second)] == [ADA, ADA]
    assert first.form["Body"] == "Here *they* are\n\nthe chart" and second.form["Body"] == "terms"
    assert [len(m.media_urls) for m in (first, second)] == [1, 1]
    assert download(first.media_urls[0]).content == PNG and download(second.media_urls[0]).content == PDF
    assert delivery.platform_message_id == first.response["sid"]
    assert "sending:" not in str(Connector.objects.get(pk="wa_files").platform_state)


def test_whatsapp_resumes_after_the_files_already_sent(twilio_connector, twilio_fake):
    twilio_connector("wa_resume", "whatsapp")
    heard_from("wa_resume")
    twilio_fake.queue_modes("normal", "error_500")
    delivery = send_now("wa_resume", ADA, "Two files", attachments=[{"data": b64(PNG)}, {"data": b64(PDF)}])
    assert delivery.status == "queued" and len(twilio_fake.messages) == 1
    delivery = retry_now(delivery)
    assert delivery.status == "sent"
    first, second = twilio_fake.messages  # the first file was not sent again
    assert download(first.media_urls[0]).content == PNG and download(second.media_urls[0]).content == PDF
    assert "Body" not in second.params and delivery.platform_message_id == first.response["sid"]


def test_whatsapp_files_outside_the_window_fail_even_with_a_template(twilio_connector, twilio_fake):
    twilio_connector("wa_closed", "whatsapp", template_content_sid=TEMPLATE)
    heard_from("wa_closed", hours_ago=30)
    delivery = send_now("wa_closed", ADA, "late", attachments=[{"data": b64(PNG)}])
    assert delivery.status == "failed" and twilio_fake.messages == []
    assert audit_details("message.failed")[-1]["error"] == "outside_window"


def test_whatsapp_caps_images_at_5_mb_and_documents_at_16_mb(twilio_connector, twilio_fake):
    twilio_connector("wa_caps", "whatsapp")
    heard_from("wa_caps")
    with pytest.raises(ValidationFailed) as caught:
        send_now("wa_caps", ADA, "x", attachments=[{"data": b64(PNG + b"\0" * 5_000_000)}])
    assert caught.value.code == "attachment_too_large"
    document = PDF + b"\0" * 6_000_000
    assert send_now("wa_caps", ADA, "x", attachments=[{"data": b64(document)}]).status == "sent"
    assert download(twilio_fake.messages[0].media_urls[0]).content == document
