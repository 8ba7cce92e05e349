"""Who is calling the MCP server: the caller's API token, checked on every call, as a Principal.

The REST API's hashed tokens, checked again on every call (a revoked token stops working at once):
- over stdio, the token given at start (`BRAIN_MCP_TOKEN` or `--token-file`), set by build_server();
- over streamable HTTP, the `Authorization: Bearer` header of each request, verified by the SDK's
  bearer middleware through `ApiTokenVerifier` (401 without a valid one).
"""
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from brain_connectors.mcp.registry import Unauthenticated
from connectors import tokens
from connectors.permissions import Principal

VIA = "mcp"  # the `via` of every audit row an MCP call writes

_stdio_token = None  # set by use_stdio_token() for stdio; HTTP requests carry their own


def use_stdio_token(raw):
    """The token every call runs as when the transport carries none (stdio); None for HTTP."""
    global _stdio_token
    _stdio_token = raw


def current_principal():
    """The token's user, checked now: an expired or revoked token stops working mid-session."""
    access = get_access_token()
    raw = access.token if access is not None else _stdio_token
    if raw is None:
        raise Unauthenticated("No API token: this server was started without one.")
    try:
        user, _ = tokens.authenticate(raw)
    except tokens.TokenRejected as exc:
        tokens.record_rejection(exc, VIA)
        raise Unauthenticated(f"The API token is {exc.reason.replace('_', ' ')}; ask for a new one.")
    return Principal.for_user(user, VIA)


class ApiTokenVerifier:
    """For the SDK's bearer middleware (streamable HTTP): a request without a live token is 401."""

    async def verify_token(self, token):
        return await sync_to_async(self._verify, thread_sensitive=False)(token)

    @staticmethod
    def _verify(token):
        close_old_connections()
        try:
            user, row = tokens.authenticate(token)
        except tokens.TokenRejected as exc:
            tokens.record_rejection(exc, VIA)
            return None
        finally:
            close_old_connections()
        return AccessToken(
            token=token, client_id=f"user:{user.pk}", scopes=[], expires_at=int(row.expires_at.timestamp())
        )
