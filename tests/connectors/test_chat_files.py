"""Files in `manage.py chat` (a subprocess on the test database, fed on stdin): `/attach <path> [caption]` sends a
local file, stored at once and seen by BRAIN; clear refusals for a missing, too big or mislabelled file; a message
to the person with files saves them into the downloads folder, never over an existing file."""
import base64

import pytest

from connectors import services
from connectors.delivery import attachment_store
from connectors.models import Attachment, InboundMessage
from tests.connectors.test_chat_command import ECHO, SYSTEM, _cli_connector, output_lines

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def store_dir(settings, tmp_path):
    """One attachment storage folder for this process and the chat subprocess (ATTACHMENTS_DIR)."""
    folder = tmp_path / "attachments"
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(folder)}}}
    return folder


def b64(data):
    return base64.b64encode(data).decode()


def chat(manage, store_dir, *lines, extra=(), env=None):
    result = manage("chat", "--as", "alice", *extra, input="".join(f"{line}\n" for line in lines),
                    env={**ECHO, "ATTACHMENTS_DIR": str(store_dir), **(env or {})})
    assert result.returncode == 0, result.stderr
    return result


def test_attach_sends_a_local_file_stored_at_once_and_brain_sees_it(manage, store_dir, tmp_path):
    (tmp_path / "my chart.png").write_bytes(PNG)
    result = chat(manage, store_dir, f'/attach "{tmp_path}/my chart.png"  the Q3 chart')
    assert output_lines(result, "brain> ") == [
        f'brain> Echo: "the Q3 chart" (0 context messages) [1 attachment: image my chart.png (image/png, {len(PNG)} '
        'bytes)]']
    inbound = InboundMessage.objects.get()
    assert inbound.content == "the Q3 chart"
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.mime_type, row.status, row.file_name, row.caption) == (
        "image", "image/png", "stored", "my chart.png", "the Q3 chart")
    assert attachment_store.read(row.storage_name) == PNG
    assert PNG not in (store_dir / row.storage_name).read_bytes()  # encrypted at rest


def test_a_file_alone_has_no_text(manage, store_dir, tmp_path):
    (tmp_path / "terms.pdf").write_bytes(PDF)
    result = chat(manage, store_dir, f"/attach {tmp_path}/terms.pdf")
    assert output_lines(result, "brain> ")[0].startswith('brain> Echo: "" (0 context messages) [1 attachment: document')
    assert Attachment.objects.get().mime_type == "application/pdf"


@pytest.mark.parametrize("name, data, env, reason", [
    ("missing.pdf", None, {}, "missing.pdf: no such file"),
    ("big.pdf", PDF, {"ATTACHMENT_MAX_BYTES": "10"}, "over the 10-byte limit"),
    ("fake.png", b"just some text", {}, "fake.png is not what its name says"),
    ("empty.pdf", b"", {}, "empty.pdf is empty"),
    ("", None, {}, "/attach needs a file"),
])
def test_unusable_files_are_refused_clearly_and_the_session_goes_on(manage, store_dir, tmp_path, name, data, env,
                                                                    reason):
    if data is not None:
        (tmp_path / name).write_bytes(data)
    result = chat(manage, store_dir, f"/attach {tmp_path / name if name else ''}", "still here", env=env)
    [refusal] = output_lines(result, "! Not sent: ")
    assert reason in refusal
    assert output_lines(result, "brain> ") == ['brain> Echo: "still here" (0 context messages)']
    assert InboundMessage.objects.count() == 1 and not Attachment.objects.exists()
    assert not store_dir.exists() or not list(store_dir.iterdir())


def test_files_sent_to_the_person_are_saved_never_over_an_existing_file(manage, make_connector, store_dir, tmp_path):
    _cli_connector(make_connector)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "chart.png").write_bytes(b"mine")
    services.send_message(SYSTEM, "cli", "alice", "Your files", attachments=[
        {"data": b64(PNG), "file_name": "chart.png"},
        {"data": b64(PDF), "file_name": "../../escape.pdf"}])
    result = chat(manage, store_dir, extra=("--downloads", str(downloads)))
    assert output_lines(result, "notice> ") == ["notice> Your files"]
    assert output_lines(result, "file> ") == [
        f"file> image (image/png, {len(PNG)} bytes) saved to {downloads / 'chart-1.png'}",
        f"file> document (application/pdf, {len(PDF)} bytes) saved to {downloads / '_.._escape.pdf'}",
    ]
    assert (downloads / "chart.png").read_bytes() == b"mine"
    assert (downloads / "chart-1.png").read_bytes() == PNG and (downloads / "_.._escape.pdf").read_bytes() == PDF
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attachments", "downloads"]
