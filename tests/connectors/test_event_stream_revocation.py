"""Websocket /ws/events/ while access changes under an open socket (README "Websocket /ws/events/": permissions, a
deactivated account and a revoked token are re-read every EVENTS_WS_ACCESS_SECONDS while the socket is open; close
code 4401 "access revoked while connected").

- a lost permission: the socket stays open, events of that connector stop, those of the others go on;
- a deactivated account: the socket closes with 4401, whether it came with a token or a session.

No sleeps: the tests wait for the access re-check through the pings it comes with (each timer tick re-reads access
before it pings, so the second ping stamped after a change follows a re-read that saw it)."""
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from connectors.models import PERM_VIEW
from connectors.registry.grants import revoke_permission
from tests.conftest import SYSTEM
from tests.connectors.event_stream_client import Closed, Stream
from tests.connectors.test_event_stream import (  # noqa: F401  (autouse fixtures of the stream tests)
    disconnect_streams,
    fast_timers,
    fresh_channel_layer,
    send,
    setup_world,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(make_connector, make_user, token_for, grant):
    return lambda: setup_world(make_connector, make_user, token_for, grant)


@pytest.fixture
def quick_recheck(settings):
    settings.EVENTS_WS_ACCESS_SECONDS = 0.05
    settings.EVENTS_WS_PING_SECONDS = 0.05


def _stamp(ping):
    return datetime.fromisoformat(ping["time"].replace("Z", "+00:00"))


async def wait_for_recheck_after(stream, changed_at, timeout=5):
    """Return once a ping shows a timer tick that began after `changed_at` (its access re-read came after it)."""
    pings = 0
    while pings < 2:
        message = await stream.next_message(timeout)
        if message["type"] == "ping" and _stamp(message) > changed_at:
            pings += 1


@database_sync_to_async
def deactivate(username):
    """What an administrator does in the admin's user page (Django's own form: no project service exists for it)."""
    user = get_user_model().objects.get(username=username)
    user.is_active = False
    user.save(update_fields=["is_active"])


async def close_after(stream, changed_at, timeout=5):
    """The close code and reason, which must come before a second ping stamped after `changed_at`: a tick that began
    after the change re-reads access and closes instead of pinging (one tick may have begun just before it)."""
    pings = 0
    while True:
        try:
            message = await stream.next_message(timeout)
        except Closed as closed:
            return closed.code, closed.reason
        if message["type"] == "ping" and _stamp(message) > changed_at:
            pings += 1
            assert pings < 2, "the stream went on after a re-check that should have closed it"


async def test_a_lost_permission_stops_that_connectors_events_and_the_socket_stays_open(
    world, quick_recheck, make_connector, grant
):
    people = await world()
    viewer = people["viewer_user"]  # may view ws_a
    await database_sync_to_async(lambda: grant(viewer, PERM_VIEW, make_connector("ws_c")))()
    stream = await Stream(token=people["viewer"]).open()

    await send("ws_a")
    before = await stream.events(2)
    assert {e["connector"] for e in before} == {"ws_a"}

    changed_at = datetime.now(UTC)
    await database_sync_to_async(revoke_permission)(SYSTEM, "ws_a", PERM_VIEW, user=viewer)
    await wait_for_recheck_after(stream, changed_at)

    await send("ws_a", "after the revocation")
    await send("ws_c")
    after = []
    while len(after) < 2:  # events come in seq order: any ws_a event would come before ws_c's
        message = await stream.next_message()
        if message["type"] == "event":
            after.append(message["event"])
    assert [e["connector"] for e in after] == ["ws_c", "ws_c"]
    await stream.close()


async def test_a_deactivated_account_ends_a_token_stream(world, quick_recheck):
    people = await world()
    stream = await Stream(token=people["viewer"]).open()
    await send("ws_a")
    assert len(await stream.events(2)) == 2
    changed_at = datetime.now(UTC)
    await deactivate("viewer")
    code, reason = await close_after(stream, changed_at)
    assert (code, reason) == (4401, "access revoked")


async def test_a_deactivated_account_ends_a_session_stream(world, quick_recheck, client, make_user):
    """A browser's socket: no token to re-check, so it is the account itself that is re-read."""
    await world()
    staff = await database_sync_to_async(make_user)("staffer", superuser=True)
    await database_sync_to_async(client.force_login)(staff)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    stream = await Stream(headers=[(b"cookie", cookie), (b"host", b"testserver"), (b"origin", b"http://testserver")]).open()
    await send("ws_b")
    assert len(await stream.events(2)) == 2
    changed_at = datetime.now(UTC)
    await deactivate("staffer")
    code, reason = await close_after(stream, changed_at)
    assert (code, reason) == (4401, "access revoked")
