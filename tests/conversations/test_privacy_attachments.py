"""Attachments under the privacy controls: a person's export carries their files (metadata and bytes, within a
budget), erasure and retention delete the rows and the stored files, and expired uploads are refused and swept."""
import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.delivery import outbound_attachments, sweeper
from connectors.models import Attachment, Delivery, InboundMessage
from connectors.permissions import Principal
from conversations import privacy
from conversations.models import Message
from routing.models import ChannelIdentity
from tests.conftest import SYSTEM
from tests.connectors.test_attachments_media import hook, receiver  # noqa: F401  (the fake webhook sender)

pytestmark = pytest.mark.django_db(transaction=True)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b"0123456789" * 100 + b"\n%%EOF\n"


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


@pytest.fixture
def ada_history(hook, receiver, make_connector, make_user):  # noqa: F811
    """Ada (account "ada") sent a PDF and a picture through the webhook connector (fetched from the fake file
    host, answered by EchoBrain) and was sent a PDF on locmem; both addresses are paired to her account. Bob was
    sent a picture on locmem, which must survive anything done to Ada."""
    ada = make_user("ada")
    response = hook({"sender": "ada", "content": "my papers", "attachments": [
        {"url": receiver.add_file("/files/tax.pdf", PDF, "application/pdf"), "mime_type": "application/pdf",
         "file_name": "tax-return.pdf", "caption": "canary-caption-71"},
        {"url": receiver.add_file("/files/scan.png", PNG, "image/png"), "mime_type": "image/png"}]})
    assert response.status_code == 200, response.content
    make_connector()
    sent, _ = services.send_message(SYSTEM, "locmem_main", "ada-local", "Your copy", attachments=[
        {"data": base64.b64encode(PDF).decode(), "file_name": "copy.pdf", "caption": "signed"}])
    bobs, _ = services.send_message(SYSTEM, "locmem_main", "bob-local", "", attachments=[
        {"data": base64.b64encode(PNG).decode(), "file_name": "bob.png"}])
    for connector_id, address in (("hook", "ada"), ("locmem_main", "ada-local")):
        ChannelIdentity.objects.create(user=ada, connector_id=connector_id, address=address,
                                       verified_at=timezone.now())
    inbound = InboundMessage.objects.get(connector_id="hook")
    assert Attachment.objects.filter(inbound=inbound, status="stored").count() == 2
    return {"ada": ada, "inbound": inbound, "sent": sent, "bobs": bobs}


def _files(directory):
    return sorted(path.name for path in directory.iterdir())


def _stored_names(**owner):
    return sorted(Attachment.objects.filter(**owner).values_list("storage_name", flat=True))


def test_the_export_lists_each_message_files_with_their_bytes(ada_history):
    data = privacy.export_person(Principal.for_user(ada_history["ada"], via="test"), "ada")
    json.dumps(data)  # still one JSON document
    messages = {m["content"]: m for c in data["conversations"] for m in c["messages"]}
    pdf, png = messages["my papers"]["attachments"]
    assert {k: pdf[k] for k in ("kind", "mime_type", "size", "file_name", "caption", "status")} == {
        "kind": "document", "mime_type": "application/pdf", "size": len(PDF), "file_name": "tax-return.pdf",
        "caption": "canary-caption-71", "status": "stored"}
    assert base64.b64decode(pdf["data"]) == PDF and base64.b64decode(png["data"]) == PNG
    assert pdf["id"] == str(Attachment.objects.get(inbound=ada_history["inbound"], position=0).id)
    [copy] = messages["Your copy"]["attachments"]
    assert (copy["file_name"], copy["caption"], base64.b64decode(copy["data"])) == ("copy.pdf", "signed", PDF)
    assert all(m["attachments"] == [] for m in messages.values() if m["content"] not in ("my papers", "Your copy"))
    assert "bob.png" not in json.dumps(data)
    row = AuditEvent.objects.filter(action="conversations.export").latest("id")
    assert row.details["attachments"] == 3
    assert "tax-return" not in json.dumps(row.details) and "canary-caption" not in json.dumps(row.details)


def test_past_the_byte_budget_or_without_its_file_an_attachment_is_listed_without_bytes(ada_history, settings,
                                                                                       attachment_dir):
    settings.PRIVACY_EXPORT_ATTACHMENT_BYTES = len(PDF) + len(PNG)  # room for the inbound pair, not the copy
    data = privacy.export_person(SYSTEM, "ada")
    files = {a["file_name"]: a for c in data["conversations"] for m in c["messages"] for a in m["attachments"]}
    assert base64.b64decode(files["tax-return.pdf"]["data"]) == PDF
    assert files["copy.pdf"]["data"] is None and files["copy.pdf"]["data_omitted"] == "export_limit"
    [lost] = _stored_names(inbound=ada_history["inbound"], position=0)
    (attachment_dir / lost).unlink()
    settings.PRIVACY_EXPORT_ATTACHMENT_BYTES = 10 * len(PDF)
    data = privacy.export_person(SYSTEM, "ada")
    files = {a["file_name"]: a for c in data["conversations"] for m in c["messages"] for a in m["attachments"]}
    assert files["tax-return.pdf"]["data"] is None and files["tax-return.pdf"]["data_omitted"] == "unreadable"
    assert base64.b64decode(files["copy.pdf"]["data"]) == PDF  # an unreadable file takes no room from the others


def test_erasure_deletes_the_attachment_rows_and_their_files(ada_history, attachment_dir, api, token_for):
    bobs_files = _stored_names(delivery=ada_history["bobs"])
    assert len(_files(attachment_dir)) == 4
    response = api(token_for(ada_history["ada"])).delete("/api/v1/conversations/people/ada/")
    assert response.status_code == 200, response.content
    assert response.json()["erased"]["attachments"] == 3
    assert not Attachment.objects.filter(inbound=ada_history["inbound"]).exists()
    assert not Attachment.objects.filter(delivery=ada_history["sent"]).exists()
    assert _files(attachment_dir) == bobs_files  # Bob's file is all that is left on disk
    assert AuditEvent.objects.filter(action="conversations.erase").latest("id").details["attachments"] == 3


def test_a_failed_erasure_keeps_the_files(ada_history, attachment_dir, monkeypatch):
    before = _files(attachment_dir)

    def broken(*args, **kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(privacy.audit, "record", broken)
    with pytest.raises(RuntimeError):
        privacy.erase_person(SYSTEM, "ada")
    assert _files(attachment_dir) == before and Attachment.objects.count() == 4


def test_retention_deletes_the_files_of_the_messages_it_purges(ada_history, attachment_dir, settings):
    settings.CONVERSATION_RETENTION_DAYS = 30
    inbound_files, kept = _stored_names(inbound=ada_history["inbound"]), _stored_names(delivery=ada_history["sent"])
    Message.objects.filter(inbound_id=ada_history["inbound"].pk).update(created_at=timezone.now() - timedelta(days=31))
    result = privacy.purge_expired()
    assert (result["messages"], result["attachments"]) == (1, 2)
    assert not Attachment.objects.filter(inbound=ada_history["inbound"]).exists()
    assert not set(inbound_files) & set(_files(attachment_dir))
    assert set(kept) <= set(_files(attachment_dir)) and Attachment.objects.filter(delivery=ada_history["sent"]).exists()
    assert AuditEvent.objects.filter(action="conversations.purge").latest("id").details["attachments"] == 2


def test_an_expired_upload_is_refused_then_swept_with_its_file(make_connector, make_user, grant, settings,
                                                               attachment_dir):
    user = make_user("uploader")
    grant(user, "send_via_connector", make_connector())
    principal = Principal.for_user(user, via="test")
    fresh = outbound_attachments.upload(principal, PDF, file_name="fresh.pdf")
    old = outbound_attachments.upload(principal, PNG, file_name="old.png")
    Attachment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))
    with pytest.raises(ValidationFailed) as refused:
        services.send_message(principal, "locmem_main", "ada", "", attachments=[{"id": str(old.id)}])
    assert refused.value.code == "attachment_not_found" and not Delivery.objects.exists()
    assert sweeper.sweep()["uploads_expired"] == 1
    assert AuditEvent.objects.get(action="attachment.expire").details["count"] == 1
    assert list(Attachment.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert _files(attachment_dir) == [fresh.storage_name]
    delivery, _ = services.send_message(principal, "locmem_main", "ada", "", attachments=[{"id": str(fresh.id)}])
    assert delivery.attachment_count == 1


def test_the_admin_export_of_several_people_shares_one_byte_budget(ada_history, client, make_user, settings):
    from conversations.models import Conversation

    bob = make_user("bob")
    Conversation.objects.filter(address__in=["ada", "ada-local"]).update(person=ada_history["ada"])
    Conversation.objects.filter(address="bob-local").update(person=bob)
    settings.PRIVACY_EXPORT_ATTACHMENT_BYTES = 2 * len(PDF) + len(PNG)  # each person alone would fit
    client.force_login(make_user("root", superuser=True))
    response = client.post("/admin/conversations/conversation/", {
        "action": "export_people", "_selected_action": list(Conversation.objects.values_list("pk", flat=True))})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    exports = json.loads(response.content)
    assert sorted(e["person"] for e in exports) == ["ada", "bob"]
    files = [a for e in exports for c in e["conversations"] for m in c["messages"] for a in m["attachments"]]
    assert len(files) == 4
    carried = sum(len(base64.b64decode(a["data"])) for a in files if a["data"] is not None)
    assert carried <= settings.PRIVACY_EXPORT_ATTACHMENT_BYTES
    assert [a["data_omitted"] for a in files if a["data"] is None] == ["export_limit"]
