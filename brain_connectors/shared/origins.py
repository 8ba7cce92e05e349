"""Is a websocket's Origin this site? The rule Django's CSRF check applies to unsafe HTTP requests.

A browser sends the session cookie with any websocket handshake, whichever page opens it, so the
Origin is what stands between another site's script and a logged-in user's event stream. Scheme,
host and port all count: http://127.0.0.1:9999 is another site than http://127.0.0.1:8000, and so
is https:// of the same host. An Origin is accepted when it is

- the site's own origin: the scheme of this connection (https when a trusted TLS proxy says so:
  SECURE_PROXY_SSL_HEADER, i.e. BEHIND_TLS_PROXY), and the Host it was opened on, which must be one
  of ALLOWED_HOSTS (else a DNS-rebinding page could name itself in both);
- or listed in CSRF_TRUSTED_ORIGINS (exactly, or `scheme://*.domain` for its subdomains);
- or the origin of PUBLIC_BASE_URL, which names the site by definition (a proxy may pass its own
  Host upstream).

Daphne puts no `scheme` in a websocket scope, so a daphne that terminates TLS itself needs its
https origin in CSRF_TRUSTED_ORIGINS or PUBLIC_BASE_URL.
"""
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


def _split(text, *, exact):
    """(scheme, host, port) of an origin, or None. `exact`: a browser's serialised origin
    (`scheme://host[:port]` and nothing else); otherwise a configured URL whose path is ignored."""
    try:
        parts = urlsplit(text.strip() if not exact else text)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if exact and (parts.path or parts.query or parts.fragment):
        return None
    return scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS[scheme]


def _header(headers, meta_name):
    """A header by its request.META name (HTTP_X_FORWARDED_PROTO → x-forwarded-proto)."""
    return headers.get(meta_name.removeprefix("HTTP_").replace("_", "-").lower())


def _is_secure(scope, headers):
    """request.is_secure() for a websocket scope."""
    if settings.SECURE_PROXY_SSL_HEADER:
        name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = _header(headers, name)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") in ("wss", "https")


def _host(scope, headers, scheme):
    """request.get_host() for a websocket scope, unvalidated: (domain, port) or None."""
    host = None
    if settings.USE_X_FORWARDED_HOST:
        host = headers.get("x-forwarded-host")
    host = host or headers.get("host")
    if not host and scope.get("server"):
        server_host, server_port = scope["server"][:2]
        host = f"{server_host}:{server_port}" if server_port else server_host
    domain, port = split_domain_port(host or "")
    if not domain:
        return None
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django's get_host() allows
    if not validate_host(domain, allowed):
        return None
    return domain.strip("[]"), int(port) if port else DEFAULT_PORTS[scheme]


def site_origin(scope, headers):
    """(scheme, host, port) this connection was opened on, or None when its Host is not ours."""
    scheme = "https" if _is_secure(scope, headers) else "http"
    host = _host(scope, headers, scheme)
    return (scheme, *host) if host else None


def _trusted(origin):
    scheme, host, port = origin
    configured = [*settings.CSRF_TRUSTED_ORIGINS]
    if settings.PUBLIC_BASE_URL:
        configured.append(settings.PUBLIC_BASE_URL)
    for entry in configured:
        trusted = _split(entry, exact=False)
        if trusted is None or trusted[0] != scheme or trusted[2] != port:
            continue
        pattern = trusted[1]
        if pattern == host or (pattern.startswith("*.") and is_same_domain(host, pattern[1:])):
            return True
    return False


def origin_allowed(scope, headers: dict) -> bool:
    """`headers`: the handshake's headers, names lower-cased. No Origin at all is allowed: that is
    not a browser (scripts, services), so no one's cookies ride along, and it authenticates anyway."""
    text = headers.get("origin")
    if text is None:
        return True
    origin = _split(text, exact=True)
    if origin is None:  # "null" (sandboxed frames, file:// pages) and anything malformed
        return False
    return origin == site_origin(scope, headers) or _trusted(origin)
