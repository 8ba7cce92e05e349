"""Files people share with the bot (`files` of a message event): Attachments, downloaded after commit.

A file's `url_private_download` is fetched with `Authorization: Bearer <bot token>` (the app needs the `files:read`
scope) through the guarded aiohttp session, following no redirect. The token goes only to Slack: the URL's host
must be the Web API's host (`api_base_url`'s, so a loopback fake serves its own files), or files.slack.com when
`api_base_url` is the official https://slack.com/api/; plain http only when `api_base_url` itself is http.
"""
import asyncio
from urllib.parse import urlsplit

import aiohttp

from brain_connectors.shared.guarded_aiohttp import guarded_session
from brain_connectors.shared.guarded_http import caused_by
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.platforms.attachments import MAX_FILE_NAME_LENGTH, MAX_PLATFORM_REF_LENGTH
from connectors.platforms.base import Attachment, ConnectorError, run_sync
from connectors.platforms.media_download import kind_for, retry_after_of, status_error, too_large
from connectors.platforms.slack.api import OFFICIAL_API_BASE_URL, api_base_url

FILES_HOST = "files.slack.com"
WHO = "Slack"
# Files Slack lists but will not serve: another workspace's (external), deleted ones (tombstone), and those past a
# free workspace's history limit.
UNSERVED_MODES = {"external", "tombstone", "hidden_by_limit"}


def attachments(files) -> tuple:
    """The Attachments of an event's `files` (anything not a servable file is skipped)."""
    result = []
    for item in files if isinstance(files, list) else []:
        if not isinstance(item, dict) or item.get("mode") in UNSERVED_MODES or item.get("is_external"):
            continue
        url = item.get("url_private_download") or item.get("url_private")
        if not isinstance(url, str) or not url or len(url) > MAX_PLATFORM_REF_LENGTH or "\x00" in url:
            continue
        mime_type = item.get("mimetype") if isinstance(item.get("mimetype"), str) else ""
        mime_type = mime_type if len(mime_type) <= 255 and "\x00" not in mime_type else ""
        name = item.get("name") if isinstance(item.get("name"), str) else ""
        name = name.replace("\x00", "")[:MAX_FILE_NAME_LENGTH]
        size = item.get("size")
        size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
        result.append(Attachment(kind=kind_for(mime_type), mime_type=mime_type, size=size, file_name=name,
                                 platform_ref=url))
    return tuple(result)


def allowed(url: str, config) -> bool:
    """Whether the bot token may be sent to `url` (see the module docstring)."""
    base = api_base_url(config)
    api = urlsplit(base)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port out of range raises)
    except ValueError:
        return False
    hosts = {api.hostname} | ({FILES_HOST} if base == OFFICIAL_API_BASE_URL else set())
    same_origin = parts.hostname == api.hostname and parts.port == api.port
    return (parts.scheme == "https" or (parts.scheme == "http" and api.scheme == "http")) \
        and parts.hostname in hosts and (parts.hostname == FILES_HOST or same_origin) \
        and parts.username is None and parts.password is None


def download(token, config, url, max_bytes, timeout) -> bytes:
    if not allowed(url, config):
        raise ConnectorError("the file URL is not on Slack's file host", permanent=True, code="bad_request")

    async def once():
        async with guarded_session(limit=2) as session, session.get(
                url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if not 200 <= response.status < 300:
                raise status_error(response.status, WHO, retry_after_of(response.headers))
            if response.content_length is not None and response.content_length > max_bytes:
                raise too_large(response.content_length, max_bytes, WHO)
            if response.content_type == "text/html":
                # Slack answers its sign-in page, 200, when the token may not read files.
                raise ConnectorError("Slack answered a web page, not the file (is the files:read scope granted?)",
                                     permanent=True, code="download_failed")
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise too_large(f"more than {max_bytes}", max_bytes, WHO)
            return bytes(data)

    try:
        return run_sync(once)
    except ConnectorError:
        raise
    except Exception as exc:
        if caused_by(exc, UnsafeURL) is not None:
            raise ConnectorError(f"the outbound-URL guard refused Slack's file host: {caused_by(exc, UnsafeURL)}",
                                 permanent=True, code="unsafe_url") from None
        if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
            # Its text may quote the URL (which names the person's file): the type only.
            raise ConnectorError(f"Slack file download failed: {type(exc).__name__}", code="network_error") from None
        raise
