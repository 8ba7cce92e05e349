"""Request quotas for the REST API, in token buckets shared by every process (connectors.quotas).

Over quota answers 429 with Retry-After.

- Authenticated clients: a bucket per user (API_RATE_LIMIT_PER_MINUTE).
- Unauthenticated clients (no credentials, or a token that was refused): a bucket per client
  address (API_ANON_RATE_PER_MINUTE), so a scanner or a token guesser cannot make us verify and
  audit without limit. DRF authenticates before it throttles, and a refused token ends the request
  in authentication, so this bucket is taken from there (BearerTokenAuthentication) and, for
  requests with no credentials, from the permission check, which DRF runs before its throttles.
"""
import math

from django.conf import settings
from rest_framework import exceptions, permissions
from rest_framework.throttling import BaseThrottle

from brain_connectors.access.ip import client_ip, throttle_key
from connectors import quotas


class ClientQuotaThrottle(BaseThrottle):
    def allow_request(self, request, view):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return True  # the permission check has taken from the address's bucket already
        self._wait = quotas.take([(f"api:user:{user.pk}", settings.API_RATE_LIMIT_PER_MINUTE)])
        return self._wait == 0

    def wait(self):
        return math.ceil(getattr(self, "_wait", 1) or 1)


def anonymous_wait(ip):
    """Take one request from the unauthenticated bucket of this client address.

    Returns 0 when it may go on, else the whole seconds to wait (for Retry-After).
    """
    wait = quotas.take([(f"anon:{throttle_key(ip)}", settings.API_ANON_RATE_PER_MINUTE)])
    return math.ceil(wait) if wait > 0 else 0


class IsAuthenticatedOrThrottled(permissions.IsAuthenticated):
    """IsAuthenticated, plus the address's bucket for requests without credentials (over it: 429)."""

    def has_permission(self, request, view):
        if super().has_permission(request, view):
            return True
        wait = anonymous_wait(client_ip(request))
        if wait:
            raise exceptions.Throttled(wait=wait)
        return False
