"""aiohttp sessions whose every connection passes the outbound-URL guard (brain_connectors.shared.url_guard's rules).

The same promise as brain_connectors.shared.guarded_http, for clients built on aiohttp (slack_sdk's AsyncWebClient
and its Socket Mode client): the host name is resolved by our resolver, every address is judged, and aiohttp opens
the socket to one of exactly those addresses, so a name that rebinds to an internal address is refused.

aiohttp skips the resolver for IP literals; a trace hook judges those before the request starts. Environment
proxies are not used (trust_env off), and the session follows no redirects unless a caller asks.
"""
import socket

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver

from brain_connectors.shared.guarded_http import is_literal
from brain_connectors.shared.url_guard import Unresolvable, UnsafeURL, address_problem, checked_addresses


class GuardedResolver(AbstractResolver):
    """Resolves through url_guard.checked_addresses: an unsafe answer raises UnsafeURL, no answer is an OSError."""

    async def resolve(self, host, port=0, family=socket.AF_UNSPEC):
        try:
            addresses = await anyio.to_thread.run_sync(checked_addresses, host, port)  # getaddrinfo blocks
        except Unresolvable as exc:
            raise OSError(str(exc)) from exc
        return [
            {"hostname": host, "host": address, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
             "family": socket.AF_INET6 if ":" in address else socket.AF_INET}
            for address in addresses
        ]

    async def close(self):
        return None


async def _judge_literal_hosts(session, context, params):
    host = params.url.host or ""
    if is_literal(host) and (problem := address_problem(host, host)):
        raise UnsafeURL(problem)


def guarded_session(*, limit=100, **kwargs) -> aiohttp.ClientSession:
    """An aiohttp.ClientSession (to be created inside the event loop that uses it) whose connections pass the guard."""
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_judge_literal_hosts)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(), limit=limit)
    return aiohttp.ClientSession(connector=connector, trust_env=False, trace_configs=[trace], **kwargs)
