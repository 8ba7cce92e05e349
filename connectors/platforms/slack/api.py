"""Calling the Slack Web API through slack_sdk's AsyncWebClient, behind the outbound-URL guard.

Every client gets an aiohttp session from brain_connectors.shared.guarded_aiohttp, so each connection it opens goes
to an address the guard judged. From synchronous code (start, health checks, the task engine's sends) a call runs
in a fresh event loop with a session that lives as long as the call. The batch sender keeps one client per
connector per process instead (`sender_client`), so its sends reuse kept-alive connections; they are closed when
the sender's loop ends.

`translate()` turns a Slack failure into ConnectorError: permanent for the recipient or for the whole connector
(a bad token), or worth retrying (`ratelimited` with its Retry-After, 5xx, the network).
"""
import asyncio

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from brain_connectors.shared.guarded_aiohttp import guarded_session
from brain_connectors.shared.guarded_http import caused_by
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.platforms.base import ConnectorError, on_sender_close, run_sync

OFFICIAL_API_BASE_URL = "https://slack.com/api/"
DEFAULT_TIMEOUT = 10  # seconds per request

# Slack's error strings (HTTP 200, "ok": false) that no retry can fix. For the whole connector: the token.
CONNECTOR_ERRORS = {
    "invalid_auth": "invalid_token", "not_authed": "invalid_token", "token_revoked": "invalid_token",
    "token_expired": "invalid_token", "account_inactive": "account_inactive", "not_allowed_token_type": "invalid_token",
}
# For this recipient or this message: the channel, the person, the text.
RECIPIENT_ERRORS = {
    "channel_not_found": "chat_not_found", "not_in_channel": "recipient_forbidden", "is_archived": "recipient_forbidden",
    "user_not_found": "chat_not_found", "user_disabled": "recipient_forbidden", "cannot_dm_bot": "recipient_forbidden",
    "restricted_action": "recipient_forbidden", "msg_too_long": "bad_request", "no_text": "bad_request",
    "missing_scope": "missing_scope", "invalid_arguments": "bad_request", "too_many_attachments": "bad_request",
}


def api_base_url(config) -> str:
    url = config.get("api_base_url") or OFFICIAL_API_BASE_URL
    return url if url.endswith("/") else url + "/"  # slack_sdk appends the method name as is


def new_client(token, config, session) -> AsyncWebClient:
    # No retry handlers: a retry is the delivery engine's decision (backoff, quotas, order), not the SDK's.
    return AsyncWebClient(token=token, base_url=api_base_url(config), session=session,
                          timeout=int(config.get("timeout", DEFAULT_TIMEOUT)), retry_handlers=[])


def call(token, config, operation):
    """`await operation(client)` from synchronous code, with a client and session that live as long as the call."""
    async def once():
        async with guarded_session(limit=4) as session:
            return await operation(new_client(token, config, session))

    try:
        return run_sync(once)
    except Exception as exc:
        raise translate(exc, token) from exc


# --- long-lived clients, for the batch sender -----------------------------------------------------
_sender_clients: dict = {}  # (loop, connector pk) → (connector updated_at, client, session)


async def sender_client(connector, token, config) -> AsyncWebClient:
    """This connector's client on the running loop, rebuilt when the connector row changed (a new token or URL)."""
    key = (asyncio.get_running_loop(), connector.pk)
    kept = _sender_clients.get(key)
    if kept is not None and kept[0] == connector.updated_at:
        return kept[1]
    if kept is not None:
        await kept[2].close()
    session = guarded_session(limit=64)
    client = new_client(token, config, session)
    _sender_clients[key] = (connector.updated_at, client, session)
    return client


async def close_sender_clients():
    loop = asyncio.get_running_loop()
    for key in [key for key in _sender_clients if key[0] is loop]:
        _, _, session = _sender_clients.pop(key)
        await session.close()


on_sender_close(close_sender_clients)


# --- errors ------------------------------------------------------------------------------------------
def translate(exc, token="") -> ConnectorError:
    """What a failed Web API call means for us (see the module docstring)."""
    if isinstance(exc, ConnectorError):
        return exc
    refused = caused_by(exc, UnsafeURL)
    if refused is not None:  # api_base_url leads somewhere the guard refuses: an admin must fix it
        return ConnectorError(f"api_base_url is refused: {refused}", permanent=True, code="unsafe_url")
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 0)
        data = getattr(response, "data", None)  # a str when the body was not JSON (an HTML 500 page)
        error = (data.get("error") if isinstance(data, dict) else "") or ""
        if status == 429 or error == "ratelimited":
            seconds = _retry_after(response)
            return ConnectorError(f"Slack rate limit: retry after {seconds:g}s", retry_after=seconds, code="rate_limited")
        if error in CONNECTOR_ERRORS:
            return ConnectorError(f"Slack refused the token ({error})", permanent=True, code=CONNECTOR_ERRORS[error])
        if error in RECIPIENT_ERRORS:
            return ConnectorError(f"Slack refused the request ({error})", permanent=True, code=RECIPIENT_ERRORS[error])
        if status >= 500 or not error:
            return ConnectorError(f"Slack is failing (HTTP {status})", code="network_error")
        # An error string we do not know: retried (a bounded number of times) rather than a message lost for good.
        return ConnectorError(f"Slack error: {error}", code="platform_error")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError, SlackClientError)):
        detail = str(exc).replace(token, "<token>") if token else str(exc)
        return ConnectorError(f"Slack unreachable: {type(exc).__name__}: {detail}"[:500], code="network_error")
    raise exc


def _retry_after(response) -> float:
    try:
        return max(1.0, float(response.headers.get("Retry-After") or response.headers.get("retry-after") or 1))
    except (TypeError, ValueError, AttributeError):
        return 1.0
