"""Twilio REST errors and network failures → ConnectorError with a stable code."""
import email.utils
import time

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from brain_connectors.shared.url_guard import UnsafeURL
from connectors.platforms.base import ConnectorError

# Twilio error code → (our code, human summary). All permanent: the same request cannot succeed.
PERMANENT_CODES = {
    20003: ("invalid_credentials", "Twilio refused the account SID / auth token"),
    20005: ("account_inactive", "the Twilio account is suspended or closed"),
    20404: ("not_found", "Twilio does not know this resource (wrong account SID?)"),
    21211: ("invalid_recipient", "the 'To' number is not a valid phone number"),
    21214: ("invalid_recipient", "the 'To' number cannot be reached"),
    21217: ("invalid_recipient", "the 'To' number does not appear to be valid"),
    21401: ("invalid_recipient", "the phone number is invalid"),
    21407: ("invalid_recipient", "this phone number type is not supported"),
    21408: ("region_not_enabled", "sending to this region is not enabled on the Twilio account"),
    21421: ("invalid_recipient", "the phone number is invalid"),
    21606: ("invalid_sender", "the 'From' number cannot send this kind of message"),
    21608: ("invalid_recipient", "trial accounts may only send to verified numbers"),
    21610: ("unsubscribed", "the recipient has unsubscribed (replied STOP)"),
    21612: ("invalid_recipient", "Twilio cannot route to this number"),
    21614: ("invalid_recipient", "the 'To' number is not a valid mobile number"),
    21617: ("too_long", "the message body is too long"),
    21659: ("invalid_sender", "the 'From' number does not belong to the account"),
    21660: ("invalid_sender", "the 'From' number does not belong to the account"),
    63003: ("invalid_recipient", "the channel could not find the 'To' address"),
    63007: ("invalid_sender", "the WhatsApp sender is not set up on this account"),
    63016: ("outside_window", "outside the WhatsApp 24-hour window: a template is needed"),
    63024: ("invalid_recipient", "invalid WhatsApp recipient"),
}
RATE_LIMIT_CODES = {20429, 14107}


def parse_retry_after(value, now=None):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(delta, 0.0), 3600.0)


def map_twilio_error(exc, headers=None) -> ConnectorError:
    """Classify what the SDK raised. Never repeats credentials (the SDK's messages hold none)."""
    if isinstance(exc, requests.Timeout):
        return ConnectorError("Twilio did not answer in time", code="timeout")
    if isinstance(exc, requests.ConnectionError):
        return ConnectorError(f"Twilio is unreachable: {type(exc).__name__}", code="connection_error")
    if isinstance(exc, requests.RequestException):
        return ConnectorError(f"HTTP error talking to Twilio: {type(exc).__name__}", code="connection_error")
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    detail = getattr(exc, "msg", "") or getattr(exc, "detail", "") or getattr(exc, "title", "") or ""
    where = f"HTTP {status}" + (f", Twilio error {code}" if code else "")
    if status == 429 or code in RATE_LIMIT_CODES:
        retry_after = parse_retry_after(_header(headers, "retry-after"))
        return ConnectorError(f"Twilio rate limit ({where})", retry_after=retry_after, code="rate_limited")
    if code in PERMANENT_CODES:
        ours, summary = PERMANENT_CODES[code]
        return ConnectorError(f"{summary} ({where})", permanent=True, code=ours)
    if status == 401:
        return ConnectorError(f"Twilio refused the credentials ({where})", permanent=True, code="invalid_credentials")
    if isinstance(status, int) and status >= 500:
        return ConnectorError(f"Twilio is failing ({where})", code="platform_unavailable")
    if isinstance(status, int) and status in (408, 409, 423, 425):
        return ConnectorError(f"Twilio asked to retry ({where})", code="platform_busy")
    if isinstance(status, int) and 400 <= status < 500:
        summary = _first_line(detail)
        return ConnectorError(f"Twilio rejected the request ({where}): {summary}", permanent=True, code="rejected")
    return ConnectorError(f"Unexpected Twilio error ({where})", code="platform_error")


def _header(headers, name):
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _first_line(text):
    text = str(text or "").strip().splitlines()
    return text[0][:300] if text else "no detail"


def call_twilio(client, operation):
    """Run `operation(client)`; turn anything the SDK or the network raised into ConnectorError."""
    try:
        return operation(client)
    except UnsafeURL as exc:  # api_base_url leads somewhere the guard refuses: an admin must fix it
        raise ConnectorError(f"api_base_url is refused: {exc}", permanent=True, code="unsafe_url") from None
    except (TwilioRestException, TwilioException, requests.RequestException) as exc:
        raise map_twilio_error(exc, getattr(client.http_client, "last_headers", None)) from None
