"""The outbound-URL guard: one rule for every URL this service calls (SSRF protection).

Used for the `webhook` kind's `url`, every `api_base_url` (Telegram, Twilio), event subscription
URLs and `BRAIN_URL`:

- when a URL is saved (or, for BRAIN_URL, by a system check at start-up): `check_url()` refuses
  what is not http(s), carries a user name or password, or whose host resolves to an address the
  rules below refuse (every address the name has, not just the first);
- when the call is made: `brain_connectors.shared.guarded_http` runs the same address check inside the HTTP
  client, on the addresses it is about to connect to, so a DNS answer that changed since the save
  (DNS rebinding) is caught too. See that module for what is and is not pinned.

The rules, on each address:

- always refused: unspecified (0.0.0.0/8, ::), link-local (169.254/16, where cloud metadata lives;
  fe80::/10), multicast, reserved (240/4, broadcast, unallocated IPv6 blocks), IPv4-compatible
  IPv6 (::a.b.c.d), Teredo (2001::/32), local-use NAT64 (64:ff9b:1::/48), and 6to4 (2002::/16)
  or NAT64 (64:ff9b::/96) addresses that embed a non-public IPv4 address;
- refused unless BRAIN_ALLOW_PRIVATE_URLS is on, or the host name is in BRAIN_URL_ALLOWED_HOSTS
  (a name the operator vouches for: say, an internal BRAIN; it need not resolve when saved):
  loopback (127/8, ::1), RFC 1918, CGNAT (100.64/10), unique-local (fc00::/7), site-local
  (fec0::/10), and anything else that is not globally routable;
- IPv4-mapped IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address it is, to the kernel.

Every refusal names BRAIN_ALLOW_PRIVATE_URLS, saying whether it would change the answer.
"""
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

SETTING = "BRAIN_ALLOW_PRIVATE_URLS"
HOSTS_SETTING = "BRAIN_URL_ALLOWED_HOSTS"
MAX_URL_LENGTH = 2000

_net = ipaddress.ip_network
# Checked in this order; the first match decides. Explicit, because ipaddress's own is_private /
# is_global have changed between Python releases (and call NAT64 "reserved").
_ALWAYS = (
    (_net("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_net("169.254.0.0/16"), "a link-local address (where cloud metadata lives)"),
    (_net("224.0.0.0/4"), "a multicast address"),
    (_net("240.0.0.0/4"), "a reserved address"),
    (_net("::/128"), "the unspecified address"),
    (_net("fe80::/10"), "a link-local address"),
    (_net("ff00::/8"), "a multicast address"),
    (_net("2001::/32"), "a Teredo tunnel address (a relay decides where it leads)"),
    # RFC 8215: where the IPv4 address sits depends on the translator's prefix length (/48 to /96),
    # so what it carries cannot be judged from the address.
    (_net("64:ff9b:1::/48"), "a local-use NAT64 address (the IPv4 address it carries cannot be judged)"),
)
_PRIVATE = (
    (_net("127.0.0.0/8"), "a loopback address"),
    (_net("::1/128"), "a loopback address"),
    (_net("10.0.0.0/8"), "a private (RFC 1918) address"),
    (_net("172.16.0.0/12"), "a private (RFC 1918) address"),
    (_net("192.168.0.0/16"), "a private (RFC 1918) address"),
    (_net("100.64.0.0/10"), "a carrier-grade NAT (RFC 6598) address"),
    (_net("fc00::/7"), "a unique-local (private IPv6) address"),
    (_net("fec0::/10"), "a site-local (private IPv6) address"),
)
_MAPPED = _net("::ffff:0:0/96")
_COMPATIBLE = _net("::/96")
_SIXTOFOUR = _net("2002::/16")
_NAT64 = _net("64:ff9b::/96")

ALWAYS, PRIVATE = "always", "private"


class UnsafeURL(Exception):
    """The URL points somewhere we refuse to send to."""


class Unresolvable(Exception):
    """The host did not resolve (a transient problem at call time)."""


def allow_private() -> bool:
    return bool(getattr(settings, SETTING, False))


def _allowed_hosts() -> set[str]:
    return {h.strip().lower().rstrip(".") for h in getattr(settings, HOSTS_SETTING, ()) if h.strip()}


def host_allowed(host: str) -> bool:
    return host.lower().rstrip(".") in _allowed_hosts()


def _v4(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value & 0xFFFFFFFF)


def classify(address) -> tuple[str, str] | None:
    """(ALWAYS | PRIVATE, why) for an address the rules refuse, None for a public one."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        if ip in _MAPPED:
            return classify(ip.ipv4_mapped)  # the same socket, to the kernel
        embedded = ip.sixtofour if ip in _SIXTOFOUR else _v4(int(ip)) if ip in _NAT64 else None
        if embedded is not None:
            verdict = classify(embedded)
            if verdict is None:
                return None  # a tunnel or translator to a public address
            form = "6to4" if ip in _SIXTOFOUR else "NAT64"
            return ALWAYS, f"a {form} address embedding {embedded}, which is {verdict[1]}"
        if ip in _COMPATIBLE and ip != ipaddress.IPv6Address("::1") and not ip.is_unspecified:
            return ALWAYS, "an IPv4-compatible IPv6 address (deprecated)"
    for network, why in _ALWAYS:
        if ip.version == network.version and ip in network:
            return ALWAYS, why
    for network, why in _PRIVATE:
        if ip.version == network.version and ip in network:
            return PRIVATE, why
    if ip.is_reserved:
        return ALWAYS, "a reserved address"
    if not ip.is_global:
        return PRIVATE, "a non-public (special-purpose) address"
    return None


def address_problem(address, host="") -> str | None:
    """Why connecting to `address` (resolved from `host`) is refused now, or None."""
    verdict = classify(address)
    if verdict is None:
        return None
    kind, why = verdict
    if kind == ALWAYS:
        return f"{address} is {why}, always refused ({SETTING} does not change this)"
    if allow_private() or (host and host_allowed(host)):
        return None
    return (
        f"{address} is {why}; set {SETTING}=true to allow private addresses "
        f"(development, or a trusted internal network), or list the host name in {HOSTS_SETTING}"
    )


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` has (IP literals included, in any form getaddrinfo reads: 0x7f.1,
    2130706433…). Looked up through socket.getaddrinfo on each call, so tests can stub DNS."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise Unresolvable(f"the host {host!r} does not resolve ({exc})") from None
    # A scope (fe80::1%eth0) says which interface, not which address: judge the address.
    addresses = list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))
    if not addresses:
        raise Unresolvable(f"the host {host!r} does not resolve")
    return addresses


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for host:port, if every one passes. Raises UnsafeURL, or
    Unresolvable. A name with one public and one internal address is refused as a whole: which
    one a client picks is not ours to decide."""
    addresses = _resolve(host, port)
    for address in addresses:
        problem = address_problem(address, host)
        if problem:
            raise UnsafeURL(problem)
    return addresses


def url_problem(url) -> str | None:
    """What is wrong with a URL's form (no DNS): http(s), a host, no credentials, no fragment."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        return f"must be a URL of at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (URLs are stored and shown in clear; use the credentials)"
    if parts.fragment:
        return "must not have a #fragment"
    if not parts.hostname.isascii():
        # One spelling for the DNS lookup, the Host header and TLS alike.
        return "write the host name in its ASCII (xn--) form"
    return None


def check_url(url, *, https_unless_private=False) -> list[str]:
    """Check a URL's form and every address its host resolves to; returns the addresses.

    https_unless_private: for URLs the connector's credentials travel to (api_base_url): plain
    http:// only when every address is a private one this deployment allows (a fake or a Bot API
    server on the local network), never across the Internet.
    Raises UnsafeURL, or Unresolvable when DNS gives no answer (except for a name listed in
    BRAIN_URL_ALLOWED_HOSTS: the operator vouched for it, and it may not be up yet).
    """
    problem = url_problem(url)
    if problem:
        raise UnsafeURL(problem)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = checked_addresses(parts.hostname, port)
    except Unresolvable:
        if host_allowed(parts.hostname):
            return []  # a name the operator vouched for, not up yet: each call checks it again
        raise
    if https_unless_private and parts.scheme == "http" and any(classify(a) is None for a in addresses):
        raise UnsafeURL(
            "plain http:// would send the credentials across the Internet: use https:// (http:// is "
            f"only for private addresses allowed by {SETTING} or {HOSTS_SETTING})"
        )
    return addresses


def url_refusal(url, *, https_unless_private=False) -> str | None:
    """Why this URL is refused when saved (a sentence for a 400 answer), or None. Resolves DNS: call
    it outside transactions. A host that does not resolve is refused too: it cannot be judged,
    and it is usually a typo."""
    try:
        check_url(url, https_unless_private=https_unless_private)
    except (UnsafeURL, Unresolvable) as exc:
        return str(exc)
    return None


def origin(url) -> str | None:
    """scheme://host[:port] of a URL, for audit rows: paths and queries often carry tokens."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")
