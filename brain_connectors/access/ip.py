"""The client's address, for lockouts, throttles and audit rows.

REMOTE_ADDR by default: X-Forwarded-For is whatever the client wrote, and trusting it would let an
attacker pick a fresh address for every guess. Behind reverse proxies, set TRUSTED_PROXY_COUNT to
how many of them append to X-Forwarded-For: the client is then the address the outermost of them
saw, counted from the right, where the client cannot write.
"""
import ipaddress

from django.conf import settings


def client_ip(request):
    """The client's address as text, or None when the request has none (a test, a command)."""
    meta = getattr(request, "META", None) or {}
    remote = _valid(meta.get("REMOTE_ADDR", ""))
    hops = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if hops > 0 and remote is not None:
        forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return _valid(forwarded[-hops]) or remote
    return remote


def throttle_key(ip):
    """What one client is, for counting: an IPv4 address, or an IPv6 /64 (one host usually holds a
    whole /64, and could otherwise take a new address for every request)."""
    try:
        address = ipaddress.ip_address(str(ip).strip()) if ip else None
    except ValueError:  # a peer that is no address (a unix socket's path)
        address = None
    if address is None:
        return "unknown"
    if address.version == 6:
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _valid(text):
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None
