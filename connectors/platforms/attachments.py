"""`Attachment`: a file, place or contact a person sent with a message; `OutgoingAttachment`: a file we send."""
import math
from dataclasses import dataclass, field

IMAGE, AUDIO, VOICE, VIDEO, DOCUMENT, STICKER, LOCATION, CONTACT = (
    "image", "audio", "voice", "video", "document", "sticker", "location", "contact",
)
KINDS = (IMAGE, AUDIO, VOICE, VIDEO, DOCUMENT, STICKER, LOCATION, CONTACT)
# Kinds whose payload is in the message itself: nothing to download (but see Attachment.inline: a contact may be a
# card file the platform holds).
INLINE_KINDS = (LOCATION, CONTACT)
MAX_FILE_NAME_LENGTH = 255
MAX_CAPTION_LENGTH = 10_000
MAX_PLATFORM_REF_LENGTH = 1_000


@dataclass(frozen=True)
class Attachment:
    """One attachment. `platform_ref` is how the platform lets us fetch the bytes later (Telegram's file_id), never
    a URL that carries a credential; for a contact it holds the contact card as text (phone number and name), or,
    for a contact with a mime_type (a vCard file the platform holds, WhatsApp's), the reference to fetch the card by:
    once fetched, the card's text replaces it (card_text)."""

    kind: str
    mime_type: str = ""
    size: int | None = None  # bytes, as the platform announced it (checked again when fetched)
    file_name: str = ""
    caption: str = ""
    latitude: float | None = None
    longitude: float | None = None
    platform_ref: str = ""

    @property
    def inline(self) -> bool:
        """Complete as it is: a location, or a contact whose card is in platform_ref (not a file to fetch)."""
        return self.kind in INLINE_KINDS and not (self.kind == CONTACT and self.mime_type)


def attachment_problem(item) -> str | None:
    """Why `item` cannot be stored as an attachment, or None."""
    if not isinstance(item, Attachment):
        return f"must be Attachment objects (got {type(item).__name__})"
    if item.kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)} (got {item.kind!r})"
    texts = {"mime_type": (item.mime_type, 255), "file_name": (item.file_name, MAX_FILE_NAME_LENGTH),
             "caption": (item.caption, MAX_CAPTION_LENGTH), "platform_ref": (item.platform_ref, MAX_PLATFORM_REF_LENGTH)}
    for name, (value, limit) in texts.items():
        if not isinstance(value, str) or len(value) > limit:
            return f"{name} must be a string of at most {limit} characters"
        if "\x00" in value:
            return f"{name} must not contain NUL characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} must be valid Unicode"
    if item.size is not None and (not isinstance(item.size, int) or isinstance(item.size, bool) or item.size < 0):
        return "size must be a non-negative integer or None"
    if item.kind == LOCATION:
        for name, value, bound in (("latitude", item.latitude, 90), ("longitude", item.longitude, 180)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or abs(value) > bound:
                return f"a location needs a {name} between -{bound} and {bound}"
    elif not item.inline and not item.platform_ref:
        return "a file needs a platform_ref to fetch it by"
    return None


# vCard properties that hold pictures, sounds and keys (base64): nothing BRAIN reads, and long.
BINARY_VCARD_PROPERTIES = {"PHOTO", "LOGO", "SOUND", "KEY"}


def card_text(data: bytes) -> str:
    """A fetched vCard file as the text a contact keeps (platform_ref): decoded, folded lines joined, the binary
    properties left out, at most MAX_PLATFORM_REF_LENGTH characters."""
    lines = []
    for line in data.decode("utf-8", "replace").replace("\x00", "").splitlines():
        if line[:1] in (" ", "\t"):  # a folded line goes on the one before
            if lines:
                lines[-1] += line[1:]
            continue
        lines.append(line)
    kept = [line for line in lines
            if line.split(":", 1)[0].split(";", 1)[0].rsplit(".", 1)[-1].strip().upper() not in BINARY_VCARD_PROPERTIES]
    return "\n".join(kept)[:MAX_PLATFORM_REF_LENGTH]


def summary(kinds) -> str:
    """"[image]", "[2 images, document]": what a message carried, with no user content (no names, no captions)."""
    counts = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    parts = [kind if n == 1 else f"{n} {kind}s" for kind, n in counts.items()]
    return f"[{', '.join(parts)}]" if parts else ""


# Kinds a message may send (a location or a contact is something people send us, not something BRAIN sends).
OUTGOING_KINDS = (IMAGE, AUDIO, VOICE, VIDEO, DOCUMENT, STICKER)
MAX_OUTGOING_ATTACHMENTS = 10  # Telegram's media group holds at most 10


@dataclass(frozen=True)
class OutgoingAttachment:
    """A stored file sent with an outbound message. The platform reads its bytes with `load()` (decrypted from the
    attachment storage), or hands the platform `url` (a signed, expiring URL under PUBLIC_BASE_URL, "" without
    one) where the platform fetches media itself (Twilio's MediaUrl)."""

    id: str
    kind: str
    mime_type: str
    size: int
    file_name: str
    caption: str = ""
    url: str = ""
    load: object = field(default=None, compare=False, repr=False)  # () -> bytes

    def read(self) -> bytes:
        return self.load()
