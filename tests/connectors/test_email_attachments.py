"""Files on outbound email: MIME attachments (name, type, bytes) beside the plain and HTML parts, end to end through
Django's SMTP backend into the loopback SMTP sink, and the total cap per message."""
import base64

import pytest

from tests.connectors.test_email import FROM, sink  # noqa: F401  (the SMTP sink fixture)
from tests.deliveries import send_now

pytestmark = pytest.mark.django_db(transaction=True)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


@pytest.fixture
def mailer(make_connector):
    return make_connector("mail", kind="email", config={"from_address": FROM})


def b64(data):
    return base64.b64encode(data).decode()


def test_files_arrive_as_mime_attachments_beside_the_text_and_html(mailer, sink):  # noqa: F811
    delivery = send_now("mail", "ada@example.org", "Your **report**", attachments=[
        {"data": b64(PDF), "file_name": "résumé 2026.pdf", "caption": "the signed copy"},
        {"data": b64(PNG), "file_name": "chart.png"}])
    assert delivery.status == "sent", delivery.last_error
    [received] = sink.messages
    msg = received.message
    assert msg.get_content_type() == "multipart/mixed"
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content()
    assert text.rstrip("\n") == "Your **report**\n\nrésumé 2026.pdf: the signed copy"
    assert "<strong>report</strong>" in html and "the signed copy" in html
    files = [(part.get_filename(), part.get_content_type(), part.get_content()) for part in msg.iter_attachments()]
    assert files == [("résumé 2026.pdf", "application/pdf", PDF), ("chart.png", "image/png", PNG)]


def test_a_file_alone_is_a_mail_with_just_the_file(mailer, sink):  # noqa: F811
    assert send_now("mail", "ada@example.org", "", attachments=[{"data": b64(PNG)}]).status == "sent"
    msg = sink.messages[0].message
    [part] = msg.iter_attachments()
    assert part.get_content() == PNG and part.get_content_type() == "image/png"
    assert part.get_filename() == "image-1"  # a file sent without a name gets one made of its kind
    assert msg.get_body(("plain", "html")) is None and len(msg.get_payload()) == 1


def test_files_over_twenty_megabytes_together_fail_without_sending(mailer, sink):  # noqa: F811
    """Each file is under the 20 MB cap, so the send is queued; together they would break a 25 MB mail limit."""
    big = PDF + b"\0" * 11 * 1024 * 1024
    delivery = send_now("mail", "ada@example.org", "two", attachments=[{"data": b64(big)}, {"data": b64(big)}])
    assert delivery.status == "failed" and "at most 20971520 bytes" in delivery.last_error
    assert sink.messages == []
