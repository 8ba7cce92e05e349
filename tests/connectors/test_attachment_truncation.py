"""A file cut short on the way (issue 18: "Oversized, truncated or mislabelled files ... refused with a clear error"):
the loopback fake Bot API announces one file_size in getFile and serves fewer bytes. The download is tried again
(ATTACHMENT_FETCH_ATTEMPTS), then the attachment is kept as unavailable (`truncated`), audited by id and size, and
the message still reaches BRAIN."""
import pytest

from audit.models import AuditEvent
from connectors.models import Attachment, InboundMessage
from tests.connectors import test_attachments
from tests.connectors.test_attachments import DOCUMENT_ID, PDF, fixture, reply_to

fake = test_attachments.fake
bot = test_attachments.bot
attachment_dir = test_attachments.attachment_dir


@pytest.mark.django_db(transaction=True)
def test_a_download_shorter_than_announced_is_refused_as_truncated_and_the_message_kept(bot, fake, settings):
    settings.ATTACHMENT_FETCH_ATTEMPTS = 2
    fake.add_file(DOCUMENT_ID, PDF[:40], file_path="documents/file_7.pdf", size=len(PDF))
    inbound = bot(fixture("message_document"))
    row = Attachment.objects.get(inbound=inbound)
    assert (row.status, row.storage_name) == ("unavailable", "")
    assert row.error == f"truncated: Telegram announced {len(PDF)} bytes and sent 40"
    assert len(fake.calls_to("downloadFile")) == 2  # tried again: a cut-short download may be whole next time
    inbound.refresh_from_db()
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    assert "document invoice-2026-11.pdf unavailable: truncated" in reply_to(inbound)
    audited = AuditEvent.objects.get(action="attachment.fetch", details__attachment_id=str(row.id))
    assert audited.result == "failure" and audited.details["error"] == "truncated"
    assert set(audited.details) == {"inbound_id", "attachment_id", "kind", "size", "error", "via"}


@pytest.mark.django_db(transaction=True)
def test_a_download_of_the_announced_size_is_stored(bot, fake):
    fake.add_file(DOCUMENT_ID, PDF, file_path="documents/file_7.pdf", size=len(PDF))
    inbound = bot(fixture("message_document"))
    assert Attachment.objects.get(inbound=inbound).status == "stored"
