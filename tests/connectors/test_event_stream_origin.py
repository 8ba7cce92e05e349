"""Websocket /ws/events/: a browser's Origin must be this site's own origin (scheme, host and port)
or one listed in CSRF_TRUSTED_ORIGINS, and a hostile client frame closes the socket with 4400.

Through the project's real ASGI application with a logged-in session, as a browser would come;
tests/project/test_access_log.py checks the same rule through a real daphne."""
import pytest
from channels.db import database_sync_to_async

from tests.connectors.test_event_stream import (  # noqa: F401  (autouse fixtures of the stream tests)
    Stream,
    disconnect_streams,
    fast_timers,
    fresh_channel_layer,
    setup_world,
)

pytestmark = pytest.mark.django_db(transaction=True)

SERVER = "127.0.0.1:8000"


@pytest.fixture
def world(make_connector, make_user, token_for, grant):
    return lambda: setup_world(make_connector, make_user, token_for, grant)


@pytest.fixture
def session_cookie(client, make_user):
    async def login():
        user = await database_sync_to_async(make_user)("browser", superuser=True)
        await database_sync_to_async(client.force_login)(user)
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    return login


async def _outcome(cookie, origin, host=SERVER, extra=()):
    headers = [(b"cookie", cookie), (b"host", host.encode()), *extra]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    stream = Stream(headers=headers)
    await stream.comm.connect()
    try:
        message = await stream.next_message()
    except Exception as closed:  # Closed(code, reason)
        return getattr(closed, "code", closed)
    await stream.close()
    return message["type"]


@pytest.mark.parametrize(
    "origin, expected",
    [
        ("http://127.0.0.1:8000", "hello"),  # the page this server served
        ("HTTP://127.0.0.1:8000", "hello"),  # scheme and host are case-insensitive
        ("http://127.0.0.1:9999", 4403),  # the case: same host, another port (another site)
        ("https://127.0.0.1:8000", 4403),  # another scheme
        ("http://127.0.0.1", 4403),  # port 80, not 8000
        ("http://localhost:8000", 4403),  # an allowed host, but not the one this socket was opened on
        ("https://evil.example.com", 4403),
        ("null", 4403),  # sandboxed frames and file:// pages
        ("http://127.0.0.1:8000/path", 4403),  # not an origin at all
        ("http://user@127.0.0.1:8000", 4403),
        ("http://127.0.0.1:notaport", 4403),
        (None, "hello"),  # no Origin: not a browser, so no cookie riding along; the session still counts
    ],
)
async def test_origin_must_be_this_sites_scheme_host_and_port(origin, expected, world, session_cookie):
    await world()
    assert await _outcome(await session_cookie(), origin) == expected


async def test_default_ports_compare_equal(world, session_cookie):
    await world()
    cookie = await session_cookie()
    assert await _outcome(cookie, "http://127.0.0.1", host="127.0.0.1") == "hello"
    assert await _outcome(cookie, "http://127.0.0.1:80", host="127.0.0.1") == "hello"
    assert await _outcome(cookie, "http://127.0.0.1:8080", host="127.0.0.1") == 4403


async def test_a_host_outside_allowed_hosts_is_refused_even_when_origin_matches_it(world, session_cookie):
    """A DNS-rebinding page names itself in both Host and Origin: the Host must be one of ours."""
    await world()
    origin = "http://rebound.example.com:8000"
    assert await _outcome(await session_cookie(), origin, host="rebound.example.com:8000") == 4403


async def test_trusted_origins_match_exactly_with_their_scheme_and_port(world, session_cookie, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://brain.example.org", "https://*.apps.example.org"]
    await world()
    cookie = await session_cookie()
    assert await _outcome(cookie, "https://brain.example.org") == "hello"
    assert await _outcome(cookie, "https://team.apps.example.org") == "hello"
    assert await _outcome(cookie, "http://brain.example.org") == 4403
    assert await _outcome(cookie, "https://brain.example.org:8443") == 4403
    assert await _outcome(cookie, "https://brain.example.org.evil.net") == 4403
    assert await _outcome(cookie, "https://apps.example.org.evil.net") == 4403


async def test_behind_a_tls_proxy_the_forwarded_scheme_counts_only_when_trusted(world, session_cookie, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "brain.example.org"]
    await world()
    cookie = await session_cookie()
    https = [(b"x-forwarded-proto", b"https")]
    # Not trusted (BEHIND_TLS_PROXY off): the socket is plain ws, so only http:// is this site.
    assert await _outcome(cookie, "https://brain.example.org", host="brain.example.org", extra=https) == 4403
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await _outcome(cookie, "https://brain.example.org", host="brain.example.org", extra=https) == "hello"
    assert await _outcome(cookie, "http://brain.example.org", host="brain.example.org", extra=https) == 4403
    assert await _outcome(cookie, "http://brain.example.org", host="brain.example.org") == "hello"


async def test_the_public_base_url_is_our_origin(world, session_cookie, settings):
    """A proxy may pass its own Host upstream; PUBLIC_BASE_URL still names the site's origin."""
    settings.PUBLIC_BASE_URL = "https://brain.example.org/"
    await world()
    cookie = await session_cookie()
    assert await _outcome(cookie, "https://brain.example.org") == "hello"
    assert await _outcome(cookie, "http://brain.example.org") == 4403


@pytest.mark.parametrize(
    "frame",
    ["[" * 100_000, '{"type": "ack", "seq": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}", '{"a":' * 100_000],
    ids=["deep-array", "deep-seq", "deep-object"],
)
async def test_a_deeply_nested_client_frame_is_closed_with_4400(frame, world):
    people = await world()
    stream = await Stream(token=people["root"]).open()
    await stream.comm.send_to(text_data=frame)
    code, reason = await stream.close_code()
    assert code == 4400 and "ack" in reason
