"""`manage.py chat`'s files: a local file sent as an attachment; files sent to the person saved to a folder.

The CLI has no platform to fetch a file from, and the fetch task may run on another machine than the terminal: so a
local file is read, checked (type from its bytes, size under ATTACHMENT_MAX_BYTES_BY_KIND) and stored encrypted
here, and its row is stored at once (receive_message's `stored_files`). An outbound file is decrypted into the
downloads folder under its sanitised name, never over an existing file (name-1.ext, name-2.ext... instead).
"""
import itertools
import mimetypes
import os
import uuid
from pathlib import Path

from django.conf import settings

from brain_connectors.shared.errors import DecryptionError
from connectors.delivery import attachment_store, attachment_urls
from connectors.delivery.inbound import receive_message
from connectors.models import Attachment as AttachmentRow
from connectors.platforms.attachments import MAX_FILE_NAME_LENGTH, Attachment
from connectors.platforms.media_download import kind_for

LOCAL_REF = "local"  # a file the CLI stored itself: nothing to fetch, so its platform_ref names no place


class FileProblem(Exception):
    """Why a local file cannot be sent, in words for the person at the terminal."""


def _limit(kind) -> int:
    return settings.ATTACHMENT_MAX_BYTES_BY_KIND.get(kind, settings.ATTACHMENT_MAX_BYTES)


def read_local(path: str, caption: str = "") -> tuple[Attachment, bytes]:
    """The file at `path` as an Attachment and its bytes; FileProblem when it is missing, unreadable, empty, too
    big or not what its name says."""
    target = Path(path).expanduser()
    largest = max([settings.ATTACHMENT_MAX_BYTES, *settings.ATTACHMENT_MAX_BYTES_BY_KIND.values()])
    try:
        if not target.exists():
            raise FileProblem(f"{path}: no such file")
        if not target.is_file():
            raise FileProblem(f"{path} is not a file")
        if target.stat().st_size > largest:
            raise FileProblem(f"{path} is {target.stat().st_size} bytes, over the {largest}-byte limit")
        with target.open("rb") as handle:
            data = handle.read(largest + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise FileProblem(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if not data:
        raise FileProblem(f"{path} is empty")
    declared = attachment_store.detect(data) or mimetypes.guess_type(target.name)[0] or ""
    kind = kind_for(declared)
    if len(data) > _limit(kind):
        raise FileProblem(f"{path} is over the {_limit(kind)}-byte limit for a {kind}")
    try:
        mime_type = attachment_store.check_type(kind, declared, data)
    except attachment_store.ContentMismatch as exc:
        raise FileProblem(f"{path} is not what its name says: {exc}") from None
    item = Attachment(kind=kind, mime_type=mime_type, size=len(data), file_name=target.name[:MAX_FILE_NAME_LENGTH],
                      caption=caption, platform_ref=LOCAL_REF)
    return item, data


def receive_local(connector_id, message, files, principal):
    """receive_message() for a message whose attachments' bytes are `files` (in order): stored first, then the
    message with its rows already stored. The stored copies are removed when the message is not stored."""
    names = [attachment_store.save(uuid.uuid4(), data) for data in files]
    try:
        inbound, created = receive_message(connector_id, message, principal=principal, stored_files=names)
    except BaseException:
        _discard(names)
        raise
    if not created:
        _discard(names)
    return inbound, created


def _discard(names):
    for name in names:
        attachment_store.storage().delete(name)


def save_files(delivery, folder: Path) -> list[tuple]:
    """Write each file of `delivery` into `folder`: (row, path) each, path None when its bytes are gone."""
    saved = []
    for row in AttachmentRow.objects.filter(delivery=delivery).order_by("position"):
        try:
            data = attachment_store.read(row.storage_name)
        except (FileNotFoundError, DecryptionError):
            saved.append((row, None))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        saved.append((row, write_new(folder, attachment_urls.safe_file_name(row), data)))
    return saved


def write_new(folder: Path, name: str, data: bytes) -> Path:
    """`data` in a new file in `folder` named `name`, or name-1, name-2... when that exists: never overwrites."""
    stem, suffix = os.path.splitext(name)
    for number in itertools.count():
        path = folder / (name if number == 0 else f"{stem}-{number}{suffix}")
        try:
            with path.open("xb") as handle:  # exclusive: fails rather than replace a file, even one made just now
                handle.write(data)
            return path
        except FileExistsError:
            continue
