"""Sending files to Slack: OutgoingMessage.attachments through slack_sdk's files_upload_v2, in one call for all.

files_upload_v2 asks files.getUploadURLExternal for an upload URL per file, POSTs each file's bytes there, then
shares them all with files.completeUploadExternal (channel_id, initial_comment, thread_ts): one message with every
file. The two API calls carry the bot token to `api_base_url`; the upload POST carries none (slack_sdk sends the
bytes alone: the URL itself is the credential), and it goes through the same guarded aiohttp session as every call.
The upload URL must still be on Slack's own hosts (files.allowed: the API host, or files.slack.com for the official
API), so a Web API endpoint that answers an odd URL cannot send our users' files elsewhere.
"""
import re

from slack_sdk.errors import SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from connectors.platforms.base import ConnectorError
from connectors.platforms.slack import files

# A file of up to ATTACHMENT_MAX_BYTES (20 MB by default) must not be cut off by the 10 s meant for API calls.
UPLOAD_TIMEOUT = 300  # seconds per request while uploading
_STATUS = re.compile(r"status: (\d{3})")


class _UploadClient(AsyncWebClient):
    """The connector's client (same token, base URL and guarded session) that refuses an upload URL off Slack."""

    def __init__(self, client: AsyncWebClient, config):
        super().__init__(token=client.token, base_url=client.base_url, session=client.session,
                         timeout=max(client.timeout, UPLOAD_TIMEOUT), retry_handlers=[])
        self.slack_config = config

    async def files_getUploadURLExternal(self, **kwargs):
        # files_upload_v2 POSTs to this URL next: it is checked here, before any byte leaves.
        answer = await super().files_getUploadURLExternal(**kwargs)
        if not files.allowed(str(answer.get("upload_url") or ""), self.slack_config):
            raise ConnectorError("Slack's upload URL is not on Slack's file host; nothing was uploaded",
                                 permanent=True, code="unsafe_url")
        return answer


async def send_files(client: AsyncWebClient, config, channel, attachments, comment=None, thread_ts=None) -> str:
    """Upload `attachments` and share them in `channel` (in `thread_ts`'s thread), with `comment` above them, as one
    message; its platform message id (see message_id)."""
    uploads = [{"file": item.read(), "filename": item.file_name or item.kind, "title": _title(item)} for item in attachments]
    kwargs = {"thread_ts": thread_ts} if thread_ts else {}
    if comment:
        kwargs["initial_comment"] = comment
    try:
        completion = await _UploadClient(client, config).files_upload_v2(file_uploads=uploads, channel=channel,
                                                                         **kwargs)
    except SlackRequestError as exc:
        # The upload host refused the bytes. slack_sdk's text names the file: only the HTTP status is kept.
        found = _STATUS.search(str(exc))
        status = int(found.group(1)) if found else 0
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise ConnectorError(f"Slack's file host refused the upload (HTTP {status or '?'})", permanent=permanent,
                             code="bad_request" if permanent else "network_error") from None
    return message_id(completion.get("files"), channel)


def message_id(shared, channel) -> str:
    """The id a delivery keeps for the message the files made.

    Text messages keep Slack's `ts` (what chat.postMessage answers), so a file message keeps its ts too when Slack
    says it: files.completeUploadExternal shares asynchronously, and only when the share finished in time do its
    file objects carry `shares.{public,private}.<channel>[0].ts`. Otherwise the first file's id (F…), which also
    names exactly what was sent and never collides with a ts.
    """
    first = shared[0] if isinstance(shared, list) and shared and isinstance(shared[0], dict) else {}
    shares = first.get("shares") if isinstance(first.get("shares"), dict) else {}
    for visibility in ("public", "private"):
        where = shares.get(visibility)
        entries = where.get(channel) if isinstance(where, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict) and entries[0].get("ts"):
            return str(entries[0]["ts"])
    return str(first.get("id") or "")


def _title(item) -> str:
    # Slack shows a file's title in place of its name: a caption, when the file has its own, is said there.
    return (item.caption or item.file_name or item.kind)[:255]
