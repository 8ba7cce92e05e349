"""Inbound media of a Twilio message (MediaUrlN): downloaded with the account's Basic auth, every hop guarded.

Twilio's media URL (https://api.twilio.com/2010-04-01/Accounts/<sid>/Messages/<MM…>/Media/<ME…>) answers a
redirect to the file host (a short-lived signed URL). The URL came in a signed webhook, yet it is still checked: only
the Twilio API's host (or the connector's `api_base_url` host) and only this account's path get the credentials,
and a URL on api.twilio.com is sent to `api_base_url` when there is one, as every other API call is. requests follows
the redirect through the guarded session (each new connection checked by the outbound-URL guard) and drops the
Authorization header when the redirect leaves the host.
"""
from urllib.parse import urlsplit, urlunsplit

import requests

from brain_connectors.shared.guarded_http import caused_by, guard_session
from brain_connectors.shared.url_guard import UnsafeURL
from connectors.platforms.base import ConnectorError
from connectors.platforms.media_download import retry_after_of, status_error, too_large

TWILIO_API_HOST = "api.twilio.com"
MAX_REDIRECTS = 3  # Twilio answers one; a longer chain is not Twilio
WHO = "Twilio"


def media_url(url: str, credentials: dict, config: dict) -> str:
    """Where to fetch a MediaUrl from, or ConnectorError when it is not this account's media on the Twilio API."""
    parts = urlsplit(url or "")
    base = urlsplit(config["api_base_url"].rstrip("/")) if config.get("api_base_url") else None
    hosts = {TWILIO_API_HOST} | ({base.hostname} if base else set())
    prefix = f"/2010-04-01/Accounts/{credentials.get('account_sid', '')}/"
    if parts.scheme not in ("https", "http") or parts.hostname not in hosts or parts.username or parts.password \
            or not parts.path.startswith(prefix) or (parts.scheme == "http" and base is None):
        raise ConnectorError("the media URL is not this account's media on the Twilio API", permanent=True,
                             code="bad_request")
    if base is None:
        return url
    return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))


def download(url: str, credentials: dict, config: dict, max_bytes: int, timeout: float) -> bytes:
    """The bytes at a Twilio MediaUrl, at most `max_bytes` (more is refused as too_large, unread)."""
    target = media_url(url, credentials, config)
    session = guard_session(requests.Session())
    session.max_redirects = MAX_REDIRECTS
    try:
        with session.get(target, auth=(credentials.get("account_sid", ""), credentials.get("auth_token", "")),
                         timeout=timeout, stream=True, allow_redirects=True) as response:
            if not 200 <= response.status_code < 300:
                raise status_error(response.status_code, WHO, retry_after_of(response.headers))
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > max_bytes:
                raise too_large(int(announced), max_bytes, WHO)
            data = bytearray()
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise too_large(f"more than {max_bytes}", max_bytes, WHO)
            return bytes(data)
    except requests.RequestException as exc:
        refused = caused_by(exc, UnsafeURL)
        if refused is not None:
            raise ConnectorError(f"the outbound-URL guard refused the file host: {refused}", permanent=True,
                                 code="unsafe_url") from None
        if isinstance(exc, requests.TooManyRedirects):
            raise ConnectorError("Twilio's media URL redirected too often", permanent=True,
                                 code="download_failed") from None
        # The exception text quotes the URL (a signed link to the person's file): its type only.
        raise ConnectorError(f"Twilio media download failed: {type(exc).__name__}", code="network_error") from None
    except UnsafeURL as exc:
        raise ConnectorError(f"the outbound-URL guard refused the file host: {exc}", permanent=True,
                             code="unsafe_url") from None
    finally:
        session.close()
