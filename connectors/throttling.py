"""Per-client request quota for the REST API: a token bucket per user (connectors.quotas), shared
by every process. Over quota answers 429 with Retry-After."""
import math

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from . import quotas


class ClientQuotaThrottle(BaseThrottle):
    def allow_request(self, request, view):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return True  # refused by authentication anyway
        self._wait = quotas.take([(f"api:user:{user.pk}", settings.API_RATE_LIMIT_PER_MINUTE)])
        return self._wait == 0

    def wait(self):
        return math.ceil(getattr(self, "_wait", 1) or 1)
