"""Which file types each attachment kind may be.

The allowlist (ALLOWED_TYPES) names canonical MIME types (attachment_store.ALIASES folds a format's other names onto
them). It holds for every file the service stores, inbound and outbound; a platform that takes fewer types names
them in its connector's `attachment_mime_types` (WhatsApp: twilio_common/outbound_media.py). Executables and
scripts are never allowed, whatever they are labelled: their signatures are refused first (puremagic names no MIME
type for a Windows or Linux executable, so the label alone would let one through as a "document").
"""

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/heif", "image/heic", "image/avif",
                         "image/bmp", "image/tiff"})
AUDIO_TYPES = frozenset({"audio/mpeg", "audio/mp4", "application/ogg", "audio/wav", "audio/aac", "audio/flac",
                         "audio/amr", "audio/3gpp", "audio/webm", "audio/x-matroska", "video/mp4", "video/webm",
                         "video/3gpp"})
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm", "video/3gpp", "video/mpeg", "application/ogg",
                         "video/x-matroska", "audio/x-matroska", "video/x-msvideo"})
ZIP = "application/zip"
OFFICE_TYPES = frozenset({
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
})
TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown", "text/tab-separated-values", "text/calendar",
                        "text/vcard", "application/json", "application/xml", "application/rtf"})
# A document is what a person sends "as a file": papers, sheets, text, a zip, or a photo or recording sent
# uncompressed. Not HTML or SVG (they carry scripts), not executables, not unknown binary data.
DOCUMENT_TYPES = frozenset({"application/pdf", ZIP, *OFFICE_TYPES, *TEXT_TYPES, *IMAGE_TYPES, *AUDIO_TYPES,
                            *VIDEO_TYPES})
ALLOWED_TYPES = {
    "image": IMAGE_TYPES,
    "audio": AUDIO_TYPES,
    "voice": AUDIO_TYPES,
    "video": VIDEO_TYPES,
    "sticker": frozenset({"image/webp", "image/png", "application/x-tgsticker", "application/gzip", "video/webm"}),
    "contact": frozenset({"text/vcard"}),
    "document": DOCUMENT_TYPES,
}
# Every zip file looks the same to puremagic (it names them all as .docx): these labels agree with a zip's bytes.
ZIP_LABELS = frozenset({ZIP, "application/epub+zip", *(name for name in OFFICE_TYPES
                                                      if "openxml" in name or "opendocument" in name)})
# Labels of formats with a signature puremagic knows: bytes it does not recognise are not that format.
SIGNED_TYPES = frozenset({"application/pdf", "image/jpeg", "image/png", "image/gif", "image/webp", *ZIP_LABELS})

# Programs, whatever their label: Windows PE (MZ), ELF, Mach-O (both byte orders, 32/64-bit, universal; also a Java
# class), Android DEX, and scripts (#!).
EXECUTABLE_SIGNATURES = (b"MZ", b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                         b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"dex\n", b"#!")

def is_executable(data: bytes) -> bool:
    return data.startswith(EXECUTABLE_SIGNATURES)


def looks_like_text(data: bytes) -> bool:
    """UTF-8 without NUL bytes: plain text, CSV, Markdown (formats with no signature)."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def allowed(kind: str, mime_type: str) -> bool:
    types = ALLOWED_TYPES.get(kind)
    return types is None or mime_type in types
