"""The Twilio REST client: the SDK's own, pointed at `api_base_url` when the config has one.

Its requests session connects only through the outbound-URL guard (brain_connectors.shared.guarded_http): the
address of every new connection is checked as it is made, and environment proxies are not used.
"""
import logging
from urllib.parse import urlsplit, urlunsplit

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from brain_connectors.shared.guarded_http import guard_session

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


class BaseUrlHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, sending every request to `base_url` instead of https://api.twilio.com
    (path and query kept), and remembering the last response's headers (Retry-After)."""

    def __init__(self, base_url=None, timeout=DEFAULT_TIMEOUT):
        super().__init__(timeout=timeout)
        guard_session(self.session)  # one client per call: the pool size of the SDK's adapter is moot
        self.base = urlsplit(base_url.rstrip("/")) if base_url else None
        self.last_headers = {}

    def rewrite(self, url):
        if self.base is None:
            return url
        parts = urlsplit(url)
        return urlunsplit((self.base.scheme, self.base.netloc, self.base.path + parts.path, parts.query, ""))

    # The SDK logs every request and all its headers at INFO; one DEBUG line each is enough here.
    def log_request(self, kwargs):
        logger.debug("Twilio request: %s %s", kwargs.get("method"), kwargs.get("url"))

    def log_response(self, status_code, response):
        logger.debug("Twilio response: HTTP %s", status_code)

    def request(self, method, url, *args, **kwargs):
        self.last_headers = {}
        response = super().request(method, self.rewrite(url), *args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


def make_client(credentials, config):
    """A Twilio client for one call; cheap, and never shared between threads."""
    http_client = BaseUrlHttpClient(config.get("api_base_url"), timeout=float(config.get("timeout", DEFAULT_TIMEOUT)))
    # A non-empty environment mapping keeps TWILIO_EDGE / TWILIO_REGION from the process
    # environment out: where requests go is the connector's config alone.
    return Client(
        credentials.get("account_sid"),
        credentials.get("auth_token"),
        http_client=http_client,
        environment={"BRAIN_CONNECTORS": "1"},
    )
