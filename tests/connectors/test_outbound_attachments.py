"""Outbound attachments (issue 18, part 1): a send names files by upload id, URL or inline data; everything is
checked before a delivery exists, each delivery keeps its own encrypted copy, and the platform gets the bytes."""
import base64

import pytest

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.delivery import attachment_store, outbound_attachments
from connectors.models import Attachment, Delivery
from connectors.platforms import locmem
from tests.conftest import SYSTEM

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


def b64(data):
    return base64.b64encode(data).decode()


@pytest.mark.django_db(transaction=True)
def test_inline_files_reach_the_platform_with_the_text_and_are_stored_encrypted(make_connector, attachment_dir):
    make_connector()
    delivery, _ = services.send_message(SYSTEM, "locmem_main", "ada", "Your report", attachments=[
        {"data": b64(PNG), "file_name": "chart.png"}, {"data": b64(PDF), "file_name": "../../etc/report.pdf"}])
    assert delivery.attachment_count == 2
    [(_, message)] = locmem.outbox
    assert message.content == "Your report"
    assert [(a.kind, a.mime_type, a.file_name) for a in message.attachments] == [
        ("image", "image/png", "chart.png"), ("document", "application/pdf", "_.._etc_report.pdf")]
    assert [a.read() for a in message.attachments] == [PNG, PDF]
    for row in Attachment.objects.filter(delivery=delivery):
        on_disk = (attachment_dir / row.storage_name).read_bytes()
        assert PNG not in on_disk and PDF not in on_disk  # encrypted at rest
    queued = AuditEvent.objects.get(action="message.queued", details__delivery_id=str(delivery.id))
    assert [item["kind"] for item in queued.details["attachments"]] == ["image", "document"]
    assert "chart" not in str(queued.details)


@pytest.mark.django_db(transaction=True)
def test_a_file_alone_is_a_message(make_connector):
    make_connector()
    services.send_message(SYSTEM, "locmem_main", "ada", "", attachments=[{"data": b64(PNG)}])
    [(_, message)] = locmem.outbox
    assert message.content == "" and message.attachments[0].kind == "image"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("item, code", [
    ({"data": b64(PDF), "kind": "image"}, "attachment_mismatch"),
    ({"data": b64(PNG), "mime_type": "application/pdf"}, "attachment_mismatch"),
    ({"data": "not base64!"}, "invalid_attachments"),
    ({"data": ""}, "invalid_attachments"),
    ({"id": "00000000-0000-0000-0000-000000000000"}, "attachment_not_found"),
    ({"url": "ftp://example.org/x"}, "invalid_attachments"),
    ({"data": b64(PNG), "url": "https://example.org/x"}, "invalid_attachments"),
])
def test_bad_files_are_refused_before_any_delivery(make_connector, item, code, attachment_dir):
    make_connector()
    with pytest.raises(ValidationFailed) as caught:
        services.send_message(SYSTEM, "locmem_main", "ada", "hi", attachments=[item])
    assert caught.value.code == code
    assert not Delivery.objects.exists() and not Attachment.objects.exists()
    assert not list(attachment_dir.iterdir())


@pytest.mark.django_db(transaction=True)
def test_a_file_over_the_cap_is_refused(make_connector, settings):
    make_connector()
    settings.ATTACHMENT_MAX_BYTES_BY_KIND = {**settings.ATTACHMENT_MAX_BYTES_BY_KIND, "image": 10}
    with pytest.raises(ValidationFailed) as caught:
        services.send_message(SYSTEM, "locmem_main", "ada", "hi", attachments=[{"data": b64(PNG)}])
    assert caught.value.code == "attachment_too_large"


@pytest.mark.django_db(transaction=True)
def test_a_platform_without_attachments_refuses_them_with_a_clear_code(make_connector, monkeypatch):
    make_connector()
    monkeypatch.setattr(locmem.LocmemConnector, "supports_attachments", False)
    with pytest.raises(ValidationFailed) as caught:
        services.send_message(SYSTEM, "locmem_main", "ada", "hi", attachments=[{"data": b64(PNG)}])
    assert caught.value.code == "attachments_unsupported" and "cannot send attachments" in caught.value.message
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_upload_is_sent_by_id_many_times_by_its_owner_only(make_connector, make_user, grant):
    make_connector()
    upload = outbound_attachments.upload(SYSTEM, PDF, file_name="terms.pdf")
    for person in ("ada", "bob"):
        services.send_message(SYSTEM, "locmem_main", person, "Terms", attachments=[{"id": str(upload.id)}])
    assert [m.attachments[0].read() for _, m in locmem.outbox] == [PDF, PDF]
    assert [m.attachments[0].file_name for _, m in locmem.outbox] == ["terms.pdf", "terms.pdf"]
    names = set(Attachment.objects.values_list("storage_name", flat=True))
    assert len(names) == 3  # each delivery its own copy
    assert attachment_store.read(upload.storage_name) == PDF


@pytest.mark.django_db(transaction=True)
def test_the_same_idempotency_key_with_another_file_is_a_conflict(make_connector):
    make_connector()
    services.send_message(SYSTEM, "locmem_main", "ada", "x", idempotency_key="k1", attachments=[{"data": b64(PNG)}])
    _, replayed = services.send_message(SYSTEM, "locmem_main", "ada", "x", idempotency_key="k1",
                                        attachments=[{"data": b64(PNG)}])
    assert replayed and Attachment.objects.count() == 1
    with pytest.raises(Exception) as caught:
        services.send_message(SYSTEM, "locmem_main", "ada", "x", idempotency_key="k1", attachments=[{"data": b64(PDF)}])
    assert caught.value.code == "idempotency_conflict"
