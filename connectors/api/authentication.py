"""DRF authentication with hashed bearer tokens (`Authorization: Bearer bct_…`)."""
from rest_framework import authentication, exceptions

from brain_connectors.access.ip import client_ip
from connectors import throttling, tokens


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        try:
            user, token = tokens.authenticate(raw.strip())
        except tokens.TokenRejected as exc:
            # A refused token is an unauthenticated request: it takes from the address's bucket
            # (connectors.throttling), and beyond it is a 429, still counted in the audit tally.
            ip = client_ip(request)
            wait = throttling.anonymous_wait(ip)
            tokens.record_rejection(exc, via="api", ip=ip, throttled=bool(wait))
            if wait:
                raise exceptions.Throttled(wait=wait)
            raise exceptions.AuthenticationFailed(f"Invalid token: {exc.reason.replace('_', ' ')}.")
        return user, token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'
