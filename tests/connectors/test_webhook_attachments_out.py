"""Files on the generic webhook's outbound POST: described in the signed JSON with a signed URL each, which the
receiver downloads the bytes from; without PUBLIC_BASE_URL there is no URL to give, so the send is refused."""
import base64
from urllib.parse import urlsplit

import pytest
from django.test import Client

from brain_connectors.shared.errors import ValidationFailed
from connectors.models import Attachment, Delivery
from tests.connectors.test_webhook_platform import hook, receiver  # noqa: F401  (fixtures)
from tests.deliveries import retry_now, send_now

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "https://connectors.example.org"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    settings.PUBLIC_BASE_URL = PUBLIC
    return tmp_path


def b64(data):
    return base64.b64encode(data).decode()


def download(url):
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    return Client().get(f"{parts.path}?{parts.query}")


def test_the_signed_json_describes_each_file_and_its_url_downloads_the_bytes(hook, receiver):  # noqa: F811
    delivery = send_now("hook", "ada", "Your report", attachments=[
        {"data": b64(PDF), "file_name": "report.pdf", "caption": "Q3"}, {"data": b64(PNG)}])
    assert delivery.status == "sent", delivery.last_error
    [request] = receiver.requests
    assert request.verified, request.rejection
    assert request.json["content"] == "Your report"
    rows = list(Attachment.objects.filter(delivery=delivery).order_by("position"))
    described = [{k: v for k, v in item.items() if k != "url"} for item in request.json["attachments"]]
    assert described == [
        {"id": str(rows[0].id), "kind": "document", "mime_type": "application/pdf", "size": len(PDF),
         "file_name": "report.pdf", "caption": "Q3"},
        {"id": str(rows[1].id), "kind": "image", "mime_type": "image/png", "size": len(PNG),
         "file_name": "image-2", "caption": ""},
    ]
    pdf, png = (download(item["url"]) for item in request.json["attachments"])
    assert (pdf.status_code, pdf.content, pdf["Content-Type"]) == (200, PDF, "application/pdf")
    assert (png.status_code, png.content) == (200, PNG)


def test_a_retry_carries_the_same_files(hook, receiver):  # noqa: F811
    receiver.queue_modes("error_503")
    delivery = send_now("hook", "ada", "", attachments=[{"data": b64(PDF)}])
    assert delivery.status == "queued"
    assert retry_now(delivery).status == "sent"
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivery.id)
    assert [item["id"] for item in first.json["attachments"]] == [item["id"] for item in second.json["attachments"]]
    assert download(second.json["attachments"][0]["url"]).content == PDF


def test_a_message_without_files_has_no_attachments_key(hook, receiver):  # noqa: F811
    send_now("hook", "ada", "plain")
    assert "attachments" not in receiver.requests[0].json


def test_without_public_base_url_files_are_refused_before_any_delivery(settings, hook, receiver):  # noqa: F811
    settings.PUBLIC_BASE_URL = ""
    with pytest.raises(ValidationFailed) as caught:
        send_now("hook", "ada", "x", attachments=[{"data": b64(PNG)}])
    assert caught.value.code == "attachments_unsupported" and "PUBLIC_BASE_URL" in caught.value.message
    assert not Delivery.objects.exists() and receiver.requests == []
