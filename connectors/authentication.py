"""DRF authentication with hashed bearer tokens (`Authorization: Bearer bct_…`)."""
from rest_framework import authentication, exceptions

from . import tokens


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
            tokens.record_rejection(exc, via="api")
            raise exceptions.AuthenticationFailed(f"Invalid token: {exc.reason.replace('_', ' ')}.")
        return user, token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'
