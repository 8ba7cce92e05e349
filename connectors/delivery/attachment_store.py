"""Attachment bytes at rest: Fernet-encrypted (FERNET_KEYS) in the "attachments" storage, and checked by content type.

The storage is Django's storage API (settings.STORAGES["attachments"]): the local file system under var/attachments
by default, any backend in production. Names are the attachment's id only: no file name a person chose ever reaches
a path. The type is read from the bytes (puremagic: pure Python, no libmagic) and must agree with what the platform
declared, so that a file labelled "application/pdf" holding something else is refused rather than handed on; it must
also be a type its kind allows (attachment_types: the allowlist; executables and scripts never).
"""
import puremagic
from cryptography.fernet import InvalidToken
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from brain_connectors.shared.errors import DecryptionError
from connectors.delivery import attachment_types as types
from connectors.fields import get_fernet, get_primary_fernet

STORAGE_ALIAS = "attachments"
# Generic labels that promise nothing: any content matches them.
UNSPECIFIC = {"", "application/octet-stream", "binary/octet-stream"}
# Names one format goes by (declared by platforms) → the name puremagic gives it.
ALIASES = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "audio/mp3": "audio/mpeg", "audio/x-mp3": "audio/mpeg",
    "audio/ogg": "application/ogg", "audio/opus": "application/ogg", "video/ogg": "application/ogg",
    "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/x-m4a": "audio/mp4", "audio/m4a": "audio/mp4",
    "application/x-pdf": "application/pdf", "text/x-vcard": "text/vcard", "text/directory": "text/vcard",
    "image/x-ms-bmp": "image/bmp", "application/x-gzip": "application/gzip", "text/rtf": "application/rtf",
    "application/x-zip-compressed": "application/zip", "text/xml": "application/xml",
    "audio/x-flac": "audio/flac", "audio/x-aac": "audio/aac", "audio/3gp": "audio/3gpp", "audio/x-amr": "audio/amr",
    "text/x-markdown": "text/markdown", "text/comma-separated-values": "text/csv",
}
# What puremagic names every zip file (it cannot tell a .docx from any other zip without reading the archive).
ZIP_DETECTED = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
# Kinds whose bytes must be recognisably media of that family (their declared type is often empty).
FAMILY = {"image": "image/", "audio": "audio/", "voice": "audio/", "video": "video/"}
# Containers shared by several families (an .ogg holds audio or video; MP4 and WebM too).
CONTAINERS = {"application/ogg": {"audio/", "video/"}, "video/mp4": {"audio/", "video/"},
              "audio/mp4": {"audio/", "video/"}, "video/webm": {"audio/", "video/", "image/"},
              "application/gzip": {"application/x-tgsticker"}, ZIP_DETECTED: types.ZIP_LABELS}


class ContentMismatch(Exception):
    """The bytes are not what the platform said they were (the message says what each side said)."""


class TypeNotAllowed(ContentMismatch):
    """The bytes are a type this kind of attachment may not be (attachment_types.ALLOWED_TYPES), or a program."""


def detect(data: bytes) -> str:
    """The MIME type the bytes themselves show, or "" when puremagic does not recognise them."""
    try:
        return puremagic.from_string(data, mime=True) or ""
    except (puremagic.PureError, ValueError):
        return ""


def canonical(mime) -> str:
    """A MIME type's one name: lower case, no parameters, aliases folded (image/jpg → image/jpeg)."""
    mime = (mime or "").split(";")[0].strip().lower()
    return ALIASES.get(mime, mime)


def _agrees(declared, detected):
    if declared == detected:
        return True
    shared = CONTAINERS.get(detected, set())
    return any(declared.startswith(prefix) or declared == prefix for prefix in shared)


def check_type(kind: str, declared: str, data: bytes) -> str:
    """The MIME type to keep for `data`; raises ContentMismatch when the bytes contradict the label or the kind,
    TypeNotAllowed when the kind may not be that type (or the bytes are a program)."""
    if types.is_executable(data):
        raise TypeNotAllowed(f"the bytes are a program or script, which no {kind} may be")
    mime_type = _checked_type(kind, declared, data)
    if not types.allowed(kind, canonical(mime_type)):
        raise TypeNotAllowed(f"a {kind} may not be {canonical(mime_type) or 'unknown data'}")
    return mime_type


def _checked_type(kind, declared, data):
    detected, label = canonical(detect(data)), canonical(declared)
    family = FAMILY.get(kind)
    if not detected:
        # Plain text, CSV and many documents have no signature: accept them when nothing more specific was
        # promised; media must be recognisable.
        if family is not None:
            raise ContentMismatch(f"the bytes are no recognisable {kind} (declared {declared or 'nothing'})")
        if label in types.SIGNED_TYPES:
            raise ContentMismatch(f"declared {declared}, but the bytes do not start as one does")
        if label in UNSPECIFIC:
            return "text/plain" if types.looks_like_text(data) else "application/octet-stream"
        return declared
    if label not in UNSPECIFIC and not _agrees(label, detected):
        raise ContentMismatch(f"declared {declared}, but the bytes are {detected}")
    if family is not None and not (detected.startswith(family) or _agrees(family, detected)):
        raise ContentMismatch(f"a {kind} whose bytes are {detected}")
    if label in UNSPECIFIC:
        return types.ZIP if detected == ZIP_DETECTED else detected
    return declared


def storage():
    return storages[STORAGE_ALIAS]


def save(attachment_id, data: bytes) -> str:
    """Encrypt and store `data`; returns the storage name (kept in Attachment.storage_name)."""
    token = get_primary_fernet().encrypt(data)
    return storage().save(f"{attachment_id}.bin", ContentFile(token))


def read(storage_name: str) -> bytes:
    """The plain bytes of a stored attachment (every key in FERNET_KEYS decrypts; DecryptionError otherwise)."""
    with storage().open(storage_name, "rb") as handle:
        token = handle.read()
    try:
        return get_fernet().decrypt(token)
    except InvalidToken as exc:
        raise DecryptionError(f"Cannot decrypt attachment {storage_name}: none of FERNET_KEYS matches.") from exc


def rotate(attachments) -> tuple[int, int]:
    """Re-encrypt stored attachment files under the first key of FERNET_KEYS (manage.py rotate_keys); returns
    (rotated, already current). The new copy is written under a new name and the row switched to it with a
    compare-and-set before the old copy goes, so a stop at any point loses nothing."""
    primary, every_key = get_primary_fernet(), get_fernet()
    rotated = current = 0
    for attachment_id, name in attachments.exclude(storage_name="").values_list("id", "storage_name").iterator():
        with storage().open(name, "rb") as handle:
            token = handle.read()
        try:
            primary.decrypt(token)
            current += 1
            continue
        except InvalidToken:
            pass
        try:
            renewed = every_key.rotate(token)
        except InvalidToken as exc:
            raise DecryptionError(f"Attachment {attachment_id}: no key in FERNET_KEYS decrypts its file.") from exc
        new_name = storage().save(f"{attachment_id}.bin", ContentFile(renewed))
        if attachments.filter(pk=attachment_id, storage_name=name).update(storage_name=new_name):
            storage().delete(name)
            rotated += 1
        else:
            storage().delete(new_name)
    return rotated, current
