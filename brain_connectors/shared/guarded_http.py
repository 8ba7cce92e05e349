"""HTTP clients that check every address when they connect (brain_connectors.shared.url_guard's rules).

The check runs inside the client, where it opens a TCP connection: the host name is resolved
there, every address is judged, and the socket is opened to one of those very addresses. So the
check and the connection use the same DNS answer, and a name that resolved to a public address when
the URL was saved and to 169.254.169.254 now (DNS rebinding) is refused. The host name stays the
request's Host header and the TLS server name, so certificates are verified as usual.

- httpx (the `webhook` kind, event subscriptions, HttpBrain, python-telegram-bot):
  `guarded_client()`, `guarded_async_transport()`; the transport's connection pool gets a network
  backend that checks, then connects to the checked address.
- requests (the Twilio SDK): `guard_session()` mounts an adapter whose urllib3 connections do the
  same in `_new_conn`.

Refusals: url_guard.UnsafeURL is raised through the client as is (never a network error, so no
caller retries it; python-telegram-bot wraps it in NetworkError, see `caused_by`). A name that
does not resolve is an ordinary connection error (httpx.ConnectError, requests.ConnectionError).

Environment proxies (HTTPS_PROXY…) are not used (trust_env off): a proxy would connect on our
behalf to an address this process never sees. Connections already open in a pool are reused
without a new check: they go to an address that passed when they were opened.

What is not covered: the SDKs' own retries or redirects follow the same path (the Twilio SDK and
httpx follow none here); a call through any other client would not be checked.
"""
import ipaddress

import anyio
import httpcore
import httpx
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

from brain_connectors.shared.url_guard import Unresolvable, UnsafeURL, checked_addresses


class UnresolvableHost(httpcore.ConnectError):
    """DNS gave no answer: a connection error like any other (httpx maps it to ConnectError)."""


def caused_by(exc, cls):
    """The first exception of type `cls` in exc's chain (__cause__ / __context__), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, cls):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _addresses(host, port):
    try:
        return checked_addresses(host, port)
    except Unresolvable as exc:
        raise UnresolvableHost(str(exc)) from exc


def is_literal(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _GuardedBackend(httpcore.NetworkBackend):
    def __init__(self, inner):
        self._inner = inner

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last_error = None
        for address in _addresses(host, port):
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)
            except httpcore.ConnectError as exc:  # the host's next address, as a browser would
                last_error = exc
        raise last_error

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise UnsafeURL("unix sockets are not an outbound destination")

    def sleep(self, seconds):
        self._inner.sleep(seconds)


class _GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner):
        self._inner = inner

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if is_literal(host):  # no DNS: no need for a thread
            addresses = _addresses(host, port)
        else:  # getaddrinfo blocks: keep it off the event loop
            addresses = await anyio.to_thread.run_sync(_addresses, host, port)
        last_error = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except httpcore.ConnectError as exc:
                last_error = exc
        raise last_error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise UnsafeURL("unix sockets are not an outbound destination")

    async def sleep(self, seconds):
        await self._inner.sleep(seconds)


def _guard_pool(transport, backend_class):
    # httpx has no public hook for the network backend; its transport keeps the httpcore pool in
    # `_pool`, which reads `_network_backend` for every new connection. Fail loudly if that changes.
    pool = getattr(transport, "_pool", None)
    if not isinstance(getattr(pool, "_network_backend", None), (httpcore.NetworkBackend, httpcore.AsyncNetworkBackend)):
        raise RuntimeError("this httpx/httpcore version cannot take the outbound-URL guard")
    pool._network_backend = backend_class(pool._network_backend)
    return transport


def guarded_transport(**kwargs) -> httpx.HTTPTransport:
    return _guard_pool(httpx.HTTPTransport(**kwargs), _GuardedBackend)


def guarded_async_transport(**kwargs) -> httpx.AsyncHTTPTransport:
    return _guard_pool(httpx.AsyncHTTPTransport(**kwargs), _GuardedAsyncBackend)


def guarded_client(**kwargs) -> httpx.Client:
    """An httpx.Client whose every connection passes the guard. No redirects, no env proxies."""
    kwargs.setdefault("follow_redirects", False)
    return httpx.Client(transport=guarded_transport(), trust_env=False, **kwargs)


# --- requests / urllib3 (the Twilio SDK) -------------------------------------------------------


class _GuardedConnectionMixin:
    def _new_conn(self):
        try:
            addresses = checked_addresses(self._dns_host, self.port)
        except Unresolvable as exc:
            raise NameResolutionError(self.host, self, OSError(str(exc))) from exc
        original, last_error = self._dns_host, None
        try:
            for address in addresses:
                self._dns_host = address  # what urllib3 connects to; self.host stays the TLS name
                try:
                    return super()._new_conn()
                except NewConnectionError as exc:
                    last_error = exc
        finally:
            self._dns_host = original
        raise last_error


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnectionPool.ConnectionCls), {})


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnectionPool.ConnectionCls), {})


class GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise UnsafeURL("outbound proxies are not used: the guard could not see where they connect")


def guard_session(session, **adapter_kwargs):
    """Mount the guarded adapter on a requests.Session for http and https; no env proxies."""
    session.trust_env = False
    for prefix in ("http://", "https://"):
        session.mount(prefix, GuardedAdapter(**adapter_kwargs))
    return session
