"""Files on an outbound Twilio message: Twilio fetches each one itself from its MediaUrl (our signed URL).

Twilio takes media by URL only, so every file goes as its OutgoingAttachment's signed, expiring URL under
PUBLIC_BASE_URL (connectors/delivery/attachment_urls.py); the service refuses a send with files when PUBLIC_BASE_URL
is unset (BaseConnector.attachments_need_public_url), and a URL still missing at send time is a permanent failure.
Limits, from Twilio's documentation:
- MMS (the `sms` kind): up to 10 media, 5 MB in total per message (each file is capped at 5 MB when queued; the
  total is checked here). Body and media go in one message.
- WhatsApp: ONE media per message; images up to 5 MB, audio, video and documents up to 16 MB. Several files go as
  several messages, the text as the body of the first (a caption, for an image, video or document).
"""
from connectors.platforms.attachments import AUDIO, DOCUMENT, IMAGE, VIDEO, VOICE
from connectors.platforms.base import ConnectorError

# Decimal megabytes: under Twilio's limit whichever megabyte it means.
MB = 1_000_000
MMS_MAX_TOTAL_BYTES = 5 * MB
MMS_MAX_MEDIA = 10
# A sticker is not in the list: Twilio sends no stickers over MMS, and WhatsApp takes only its own .webp format.
MEDIA_KINDS = (IMAGE, AUDIO, VOICE, VIDEO, DOCUMENT)
MMS_MAX_BYTES = dict.fromkeys(MEDIA_KINDS, MMS_MAX_TOTAL_BYTES)
WHATSAPP_MAX_BYTES = {IMAGE: 5 * MB, AUDIO: 16 * MB, VOICE: 16 * MB, VIDEO: 16 * MB, DOCUMENT: 16 * MB}
# The types the Twilio API for WhatsApp documents ("Guidance on WhatsApp Media Messages", Supported MIME types):
# images JPEG and PNG (WebP only as a sticker), audio OGG (Opus), AMR, 3GP, AAC and MPEG, video MP4, and documents
# PDF, DOC, DOCX, PPTX and XLSX. Canonical names, as attachment_store.check_type gives them.
WHATSAPP_AUDIO_TYPES = frozenset({"application/ogg", "audio/amr", "audio/3gpp", "audio/aac", "audio/mpeg"})
WHATSAPP_MIME_TYPES = {
    IMAGE: frozenset({"image/jpeg", "image/png"}), AUDIO: WHATSAPP_AUDIO_TYPES, VOICE: WHATSAPP_AUDIO_TYPES,
    VIDEO: frozenset({"video/mp4"}),
    DOCUMENT: frozenset({"application/pdf", "application/msword",
                         "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                         "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}),
}


def media_urls(attachments) -> list[str]:
    """The signed URL of each file, in order; ConnectorError(permanent) when one has none (PUBLIC_BASE_URL was
    removed after the message was queued: no retry brings it back)."""
    urls = [item.url for item in attachments]
    if not all(urls):
        raise ConnectorError("Twilio fetches files from a public URL, and this service has none: set "
                             "PUBLIC_BASE_URL.", permanent=True, code="no_public_url")
    return urls


def check_mms_total(attachments):
    """MMS caps the whole message, not each file: refused before sending (permanent), never cut."""
    total = sum(item.size for item in attachments)
    if total > MMS_MAX_TOTAL_BYTES:
        raise ConnectorError(f"An MMS carries at most {MMS_MAX_TOTAL_BYTES} bytes of media in total (these files "
                             f"are {total}).", permanent=True, code="too_large")
    if len(attachments) > MMS_MAX_MEDIA:
        raise ConnectorError(f"An MMS carries at most {MMS_MAX_MEDIA} files (got {len(attachments)}).",
                             permanent=True, code="too_large")


def with_captions(text: str, captions) -> str:
    """The text followed by the files' captions, one paragraph each (MMS has no caption per file)."""
    return "\n\n".join(part for part in (text, *captions) if part and part.strip())
