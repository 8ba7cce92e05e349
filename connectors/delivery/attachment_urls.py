"""Signed, short-lived URLs from which BRAIN downloads a stored attachment's decrypted bytes, and their checks.

URL: PUBLIC_BASE_URL + /attachments/<id>/?expires=<unix time>&sig=<hex HMAC-SHA256(key, "<id>.<expires>")>, the key
ATTACHMENT_URL_KEY (or, when that is empty, one derived from SECRET_KEY under a label of its own). It is valid for
ATTACHMENT_URL_TTL seconds. A download is also authorised by a request BRAIN signs as it is signed to (Standard
Webhooks headers under BRAIN_SIGNING_KEY) whose signed body is the request path, "/attachments/<id>/": a GET has no
body, and signing the path binds the signature to that one attachment. Without PUBLIC_BASE_URL no URL is given (a
system check warns); the signed-request route still works for a BRAIN that knows this service's address.
"""
import hashlib
import hmac
import re
import time
import unicodedata
from urllib.parse import quote, urlencode

from django.conf import settings
from django.urls import reverse

from audit import services as audit
from brain_connectors.shared import signing
from connectors.delivery import attachment_store
from connectors.models import Attachment
from connectors.permissions import Principal

DOWNLOADER = Principal.system_actor("brain", via="attachment_url")
DERIVATION_LABEL = b"brain-connectors attachment url key"


class Refused(Exception):
    """Not authorised: the caller learns nothing more (not whether the attachment exists)."""


class Unavailable(Exception):
    """Authorised, but there are no bytes to give: unknown id, not stored (yet), or its file is gone."""


def _key() -> bytes:
    if settings.ATTACHMENT_URL_KEY:
        return settings.ATTACHMENT_URL_KEY.encode()
    # A key of its own, derived: a leaked URL signature says nothing about SECRET_KEY's other uses.
    return hmac.new(settings.SECRET_KEY.encode(), DERIVATION_LABEL, hashlib.sha256).digest()


def signature(attachment_id, expires: int) -> str:
    return hmac.new(_key(), f"{attachment_id}.{int(expires)}".encode(), hashlib.sha256).hexdigest()


def path_for(attachment_id) -> str:
    return reverse("attachment-download", kwargs={"attachment_id": str(attachment_id)})


def url_for(attachment_id, *, now=None, ttl=None):
    """The signed URL of one stored attachment, or None without PUBLIC_BASE_URL (no address to give). Valid for
    `ttl` seconds: ATTACHMENT_URL_TTL (for BRAIN, which fetches at once) unless the caller says otherwise."""
    base = (settings.PUBLIC_BASE_URL or "").rstrip("/")
    if not base:
        return None
    expires = int(time.time() if now is None else now) + (settings.ATTACHMENT_URL_TTL if ttl is None else ttl)
    query = urlencode({"expires": expires, "sig": signature(attachment_id, expires)})
    return f"{base}{path_for(attachment_id)}?{query}"


def authorise(attachment_id: str, *, expires="", sig="", headers=None, path="") -> str:
    """How this download is authorised ("signed_url" or "signed_request"); raises Refused otherwise."""
    if sig:
        try:
            deadline = int(expires)
        except (TypeError, ValueError):
            raise Refused("bad expires")
        if deadline < time.time():
            raise Refused("expired")
        if hmac.compare_digest(signature(attachment_id, deadline).encode(), str(sig).encode("utf-8", "replace")):
            return "signed_url"
        raise Refused("bad signature")
    if headers and settings.BRAIN_SIGNING_KEY:
        try:
            signing.verify(settings.BRAIN_SIGNING_KEY, dict(headers.items()), path.encode())
        except signing.SignatureError:
            raise Refused("bad request signature")
        return "signed_request"
    raise Refused("no signature")


def open_for_download(attachment_id: str, via: str):
    """(row, plain bytes) of a stored attachment, audited (id, kind, size: never its name); raises Unavailable."""
    row = (Attachment.objects.filter(pk=attachment_id, status=Attachment.Status.STORED).exclude(storage_name="")
           .select_related("inbound").first())
    if row is None:
        raise Unavailable(attachment_id)
    try:
        data = attachment_store.read(row.storage_name)
    except FileNotFoundError:
        raise Unavailable(attachment_id)
    audit.record_action("attachment.download", DOWNLOADER, "connector", row.inbound.connector_id if row.inbound else "",
                        via=via, attachment_id=str(row.id), kind=row.kind, size=len(data))
    return row, data


UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def safe_file_name(row) -> str:
    """The name offered for saving: the person's file name without path parts or control characters, else one
    made of the kind and id."""
    name = unicodedata.normalize("NFC", row.file_name or "")
    name = UNSAFE.sub("_", name).strip(" .")[:200]
    return name or f"{row.kind}-{row.id}"


def content_disposition(row) -> str:
    return f"attachment; filename*=UTF-8''{quote(safe_file_name(row), safe='')}"
