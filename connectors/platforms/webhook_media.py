"""The generic webhook's inbound attachments: `attachments: [{"url", "mime_type"?, "file_name"?, "caption"?}]`.

The sender names files by URL; the service downloads each after the message is committed, through the outbound-URL
guard (guarded_client: every connection, redirects included, is checked as it is made), so a URL that leads to a
private or metadata address is refused and the attachment marked unavailable, never fetched. No credential is sent:
the URL is the sender's, and must be fetchable as it is (a signed or public link).
"""
from urllib.parse import urlsplit

import httpx

from brain_connectors.shared.guarded_http import guarded_client
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.platforms.attachments import MAX_CAPTION_LENGTH, MAX_FILE_NAME_LENGTH, MAX_PLATFORM_REF_LENGTH
from connectors.platforms.base import PATTERN_END, Attachment, ConnectorError
from connectors.platforms.media_download import kind_for, retry_after_of, status_error, too_large

MAX_ATTACHMENTS = 10
MAX_REDIRECTS = 3
WHO = "The file host"

ATTACHMENTS_SCHEMA = {
    "type": "array",
    "maxItems": MAX_ATTACHMENTS,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            # The form only: where it leads is the guard's call when it is fetched.
            "url": {"type": "string", "maxLength": MAX_PLATFORM_REF_LENGTH, "pattern": rf"^https?://[^\s]+{PATTERN_END}"},
            "mime_type": {"type": "string", "maxLength": 255,
                          "pattern": rf"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*{PATTERN_END}"},
            "file_name": {"type": "string", "maxLength": MAX_FILE_NAME_LENGTH},
            "caption": {"type": "string", "maxLength": MAX_CAPTION_LENGTH},
        },
    },
}


def url_problem(url: str) -> str | None:
    """What is wrong with an attachment URL's form (the guard judges its address later), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        return "must be an http(s) URL"
    if not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    return None


def parse(items) -> tuple:
    """Attachment objects from a body already checked against ATTACHMENTS_SCHEMA; ValueError(index, reason)."""
    result = []
    for index, item in enumerate(items):
        problem = url_problem(item["url"])
        if problem:
            raise ValueError(f"attachments.{index}.url", problem)
        mime_type = item.get("mime_type", "").lower()
        result.append(Attachment(kind=kind_for(mime_type), mime_type=mime_type, file_name=item.get("file_name", ""),
                                 caption=item.get("caption", ""), platform_ref=item["url"]))
    return tuple(result)


def download(url: str, max_bytes: int, timeout: float) -> bytes:
    """The bytes at `url`, at most `max_bytes`; every hop checked by the outbound-URL guard."""
    try:
        with guarded_client(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client, \
                client.stream("GET", url) as response:
            if not 200 <= response.status_code < 300:
                raise status_error(response.status_code, WHO, retry_after_of(response.headers))
            announced = response.headers.get("content-length")
            if announced and announced.isdigit() and int(announced) > max_bytes:
                raise too_large(int(announced), max_bytes, WHO)
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise too_large(f"more than {max_bytes}", max_bytes, WHO)
            return bytes(data)
    except UnsafeURL as exc:
        raise ConnectorError(f"the outbound-URL guard refused it: {exc}", permanent=True, code="unsafe_url") from None
    except httpx.TooManyRedirects:
        raise ConnectorError("the file URL redirected too often", permanent=True, code="download_failed") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise ConnectorError("the file URL is unusable", permanent=True, code="bad_request") from None
    except httpx.TimeoutException:
        raise ConnectorError(f"the file host did not answer within {timeout:g}s", code="timeout") from None
    except httpx.HTTPError as exc:  # its text may quote the URL (the sender's link to a person's file)
        raise ConnectorError(f"the file host is unreachable: {type(exc).__name__}", code="network_error") from None
