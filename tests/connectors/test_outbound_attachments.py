"""Outbound attachments (issue 18, part 1): a send names files by upload id, URL or inline data; everything is
checked before a delivery exists, each delivery keeps its own encrypted copy, and the platform gets the bytes."""
import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.delivery import attachment_store, outbound_attachments
from connectors.models import Attachment, Connector, Delivery
from connectors.platforms import locmem
from tests.conftest import SYSTEM
from tests.fakes.receiver import FakeReceiver

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


# --- REST --------------------------------------------------------------------------------------------------------


@pytest.fixture
def sender(make_user, token_for, api, make_connector, grant):
    connector = make_connector()
    user = make_user("sender")
    grant(user, "send_via_connector", connector)
    return api(token_for(user))


@pytest.mark.django_db(transaction=True)
def test_rest_send_takes_files_as_a_multipart_form(sender):
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "Two files", "buttons": '[{"id": "ok", "label": "OK"}]',
        "file": [SimpleUploadedFile("chart.png", PNG, content_type="image/png"),
                 SimpleUploadedFile("terms.pdf", PDF, content_type="application/pdf")],
    }, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert [(a["kind"], a["mime_type"], a["size"]) for a in body["attachments"]] == [
        ("image", "image/png", len(PNG)), ("document", "application/pdf", len(PDF))]
    assert "chart.png" not in response.content.decode()  # no file names in API responses
    [(_, message)] = locmem.outbox
    assert [a.read() for a in message.attachments] == [PNG, PDF] and message.buttons[0]["id"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_rest_upload_then_send_by_id(sender, make_user, token_for, api, grant):
    uploaded = sender.post("/api/v1/attachments/", {"file": SimpleUploadedFile("terms.pdf", PDF, "application/pdf")},
                           format="multipart")
    assert uploaded.status_code == 201, uploaded.content
    upload_id = uploaded.json()["id"]
    assert uploaded.json()["kind"] == "document" and uploaded.json()["expires_at"]
    sent = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "", "attachments": [{"id": upload_id, "caption": "Terms"}]}, format="json")
    assert sent.status_code == 202, sent.content
    [(_, message)] = locmem.outbox
    assert message.attachments[0].read() == PDF and message.attachments[0].caption == "Terms"
    # Someone else cannot send it, even with the send permission.
    other = make_user("other")
    grant(other, "send_via_connector", Connector.objects.get(pk="locmem_main"))
    refused = api(token_for(other)).post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "x", "attachments": [{"id": upload_id}]}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "attachment_not_found"


@pytest.mark.django_db(transaction=True)
def test_rest_upload_needs_the_send_permission_somewhere(make_user, token_for, api, make_connector):
    make_connector()
    nobody = api(token_for(make_user("nobody")))
    response = nobody.post("/api/v1/attachments/", {"file": SimpleUploadedFile("a.png", PNG, "image/png")}, format="multipart")
    assert response.status_code == 403 and not Attachment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rest_refuses_files_on_a_platform_without_them_before_any_delivery(sender, monkeypatch):
    monkeypatch.setattr(locmem.LocmemConnector, "supports_attachments", False)
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "hi", "attachments": [{"data": b64(PNG)}]}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "attachments_unsupported"
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rest_refuses_a_client_made_content_item(sender):
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "hi", "attachments": [{"content": "abc"}]}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_attachments"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("allow_private, path, why", [
    (False, "/files/a.png", "outbound-URL guard refused it"),  # a file that is there: only the guard stops it
    (True, "/files/missing.png", "(HTTP 405)"),  # the host has no such file
])
def test_rest_refuses_a_file_url_that_cannot_be_fetched(sender, settings, allow_private, path, why):
    """README: `attachment_fetch_failed` for a URL the outbound guard refuses (loopback while private URLs are
    off) or that cannot be fetched."""
    settings.BRAIN_ALLOW_PRIVATE_URLS = allow_private
    host = FakeReceiver().start()
    try:
        host.add_file("/files/a.png", PNG, "image/png")
        response = sender.post("/api/v1/connectors/locmem_main/send/", {
            "recipient": "ada", "content": "hi", "attachments": [{"url": f"http://{host.host}:{host.port}{path}"}]},
            format="json")
    finally:
        host.stop()
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "attachment_fetch_failed" and why in error["message"], error
    assert host.file_requests == []
    assert not Delivery.objects.exists() and not Attachment.objects.exists()


# --- BRAIN's answer ------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_brain(settings):
    from django.conf import settings as django_settings

    from tests.fakes.brain_server import FakeBrain
    server = FakeBrain(secret=django_settings.BRAIN_SIGNING_KEY).start()
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    settings.BRAIN_URL = server.url
    settings.BRAIN_MAX_RETRIES = 0
    yield server
    server.stop()


def ask(text="Send me the chart", number=1):
    from connectors.platforms.base import IncomingMessage
    return services.receive_message("locmem_main", IncomingMessage(sender="ada", content=text,
                                                                   platform_message_id=f"m{number}"))


@pytest.mark.django_db(transaction=True)
def test_brains_reply_may_carry_a_file_and_buttons(make_connector, fake_brain):
    make_connector()
    fake_brain.buttons = [{"id": "more", "label": "More"}, {"id": "done", "label": "Done"}]
    fake_brain.attachments = [{"data": b64(PNG), "file_name": "chart.png", "caption": "Q3"}]
    inbound, _ = ask()
    inbound.refresh_from_db()
    assert inbound.brain_status == "replied"
    [(_, message)] = locmem.outbox
    assert message.attachments[0].read() == PNG and message.attachments[0].kind == "image"
    assert [b["id"] for b in message.buttons] == ["more", "done"]
    assert Delivery.objects.get().in_reply_to_id == inbound.pk


@pytest.mark.django_db(transaction=True)
def test_a_file_alone_is_a_reply(make_connector, fake_brain, monkeypatch):
    make_connector()
    fake_brain.attachments = [{"data": b64(PDF), "file_name": "report.pdf"}]
    monkeypatch.setattr(fake_brain, "reply_for", lambda data: "")
    inbound, _ = ask()
    inbound.refresh_from_db()
    assert inbound.brain_status == "replied"
    [(_, message)] = locmem.outbox
    assert message.content == "" and message.attachments[0].read() == PDF


@pytest.mark.django_db(transaction=True)
def test_files_a_platform_cannot_carry_are_left_out_and_the_text_still_sent(make_connector, fake_brain, monkeypatch):
    make_connector()
    monkeypatch.setattr(locmem.LocmemConnector, "supports_attachments", False)
    fake_brain.attachments = [{"data": b64(PNG)}]
    inbound, _ = ask()
    inbound.refresh_from_db()
    assert inbound.brain_status == "replied"
    [(_, message)] = locmem.outbox
    assert message.content.startswith("fake brain got") and message.attachments == ()
    dropped = AuditEvent.objects.get(action="brain.reply", details__files_dropped=1)
    assert dropped.details["reason"] == "attachments_unsupported"


@pytest.mark.django_db(transaction=True)
def test_a_bad_file_from_brain_fails_the_reply_with_the_reason(make_connector, fake_brain):
    make_connector()
    fake_brain.attachments = [{"data": b64(PDF), "kind": "image"}]
    inbound, _ = ask()
    inbound.refresh_from_db()
    assert inbound.brain_status == "failed" and "not what it claims" in inbound.brain_error
    assert not Delivery.objects.exists() and not locmem.outbox


@pytest.mark.parametrize("files, reply", [
    ([{"id": "00000000-0000-0000-0000-000000000000"}], "hi"),
    ([{"data": "x", "url": "https://example.org/a.png"}], "hi"),
    ("not a list", "hi"),
    ([], ""),
])
def test_brains_malformed_files_are_a_bad_response(fake_brain, files, reply, monkeypatch):
    from connectors.delivery.brain import BrainError, BrainRequest, HttpBrain
    fake_brain.attachments = files
    monkeypatch.setattr(fake_brain, "reply_for", lambda data: reply)
    with pytest.raises(BrainError) as failed:
        HttpBrain(url=fake_brain.url, max_retries=0).reply(BrainRequest("c", "locmem", "ada", "hi"))
    assert failed.value.code == "brain_bad_response"


# --- files gone before the send ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["row deleted", "file deleted"])
def test_a_queued_message_whose_files_are_gone_fails_with_the_reason(make_connector, how, settings):
    """Erasure or retention may remove the files of a message still queued: it fails, never goes without them."""
    from connectors.delivery import attempts
    make_connector()
    settings.CELERY_TASK_ALWAYS_EAGER = False  # keep it queued
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("connectors.task_queue.delivery_due", lambda *args, **kwargs: None)
        delivery, _ = services.send_message(SYSTEM, "locmem_main", "ada", "", attachments=[{"data": b64(PNG)}])
    row = Attachment.objects.get(delivery=delivery)
    if how == "row deleted":
        row.delete()
    else:
        attachment_store.storage().delete(row.storage_name)
    attempts.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and not locmem.outbox
    assert "files were deleted" in delivery.last_error or "gone from storage" in delivery.last_error


@pytest.mark.django_db(transaction=True)
def test_the_batch_sender_fails_a_claimed_message_whose_file_rows_are_gone(make_connector, settings):
    from connectors.delivery import claims
    make_connector()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("connectors.task_queue.delivery_due", lambda *args, **kwargs: None)
        gone, _ = services.send_message(SYSTEM, "locmem_main", "ada", "", attachments=[{"data": b64(PNG)}])
        kept, _ = services.send_message(SYSTEM, "locmem_main", "bob", "", attachments=[{"data": b64(PNG)}])
    Attachment.objects.filter(delivery=gone).delete()
    claimed = claims.claim_batch()
    assert [claim.delivery.pk for claim in claimed] == [kept.pk]
    assert claimed[0].message.attachments[0].read() == PNG
    gone.refresh_from_db()
    assert gone.status == "failed" and "files were deleted" in gone.last_error
