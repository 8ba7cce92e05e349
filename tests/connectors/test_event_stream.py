"""Websocket /ws/events/ through the project's real ASGI application: authentication, Origin,
bad input with close codes, permission filtering, replay with `since`, resume with no gaps
across random disconnects, the relay after a lost push, a flushed Redis, flow control."""
import asyncio
import json
import os
import random
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async

from audit.models import AuditEvent
from connectors import services, tokens
from connectors.events import log as events
from connectors.events import push
from connectors.events.stream import EventStreamConsumer
from connectors.models import PERM_VIEW, Event
from tests.conftest import SYSTEM
from tests.connectors.event_stream_client import Stream, until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """One channel layer per test: each async test has its own event loop, and channels_redis
    binds its receive lock to the loop that first used it (daphne has one loop for its life)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
async def disconnect_streams():
    """Disconnect every stream a test opened, so that no consumer (and no event hub) outlives it."""
    Stream.opened.clear()
    yield
    for stream in Stream.opened:
        try:
            await stream.close()
        except Exception:  # noqa: S110 (a stream whose application already failed has nothing to close)
            pass
    Stream.opened.clear()
    # Close the Redis channel layer's connections on this test's loop: a receive still waiting in BZPOPMIN (5 s at a
    # time) then ends at once instead of holding the loop's teardown (seen hanging under CI load).
    from channels.layers import channel_layers
    for layer in list(channel_layers.backends.values()):
        close_pools = getattr(layer, "close_pools", None)
        if close_pools is not None:
            try:
                await close_pools()
            except Exception:  # noqa: S110 (a pool already gone has nothing to close)
                pass


@pytest.fixture(autouse=True)
def fast_timers(settings):
    settings.EVENTS_WS_CATCHUP_SECONDS = 60  # tests that rely on the timers lower them
    settings.EVENTS_WS_PING_SECONDS = 60
    settings.EVENTS_WS_ACCESS_SECONDS = 60


@pytest.fixture
def catch_up(monkeypatch):
    """`catch_up.on = False`: the log catch-up delivers nothing, so events reach a socket by live push only."""
    switch, real = SimpleNamespace(on=True), EventStreamConsumer._catch_up

    async def catch_up_if_on(consumer):
        if switch.on:
            await real(consumer)

    monkeypatch.setattr(EventStreamConsumer, "_catch_up", catch_up_if_on)
    return switch


@database_sync_to_async
def setup_world(make_connector, make_user, token_for, grant):
    a = make_connector("ws_a")
    make_connector("ws_b")
    root = make_user("root", superuser=True)
    viewer = make_user("viewer")
    grant(viewer, PERM_VIEW, a)
    return {"root": token_for(root), "viewer": token_for(viewer), "viewer_user": viewer}


@pytest.fixture
def world(make_connector, make_user, token_for, grant):
    return lambda: setup_world(make_connector, make_user, token_for, grant)


send = database_sync_to_async(lambda connector, text="hello": services.send_message(SYSTEM, connector, "ada", text))
latest = database_sync_to_async(events.latest_seq)


def all_seqs(connector_ids=None):
    qs = Event.objects.order_by("seq")
    if connector_ids is not None:
        qs = qs.filter(connector_id__in=connector_ids)
    return list(qs.values_list("seq", flat=True))


# --- refusals ------------------------------------------------------------------------------


async def test_unauthenticated_socket_is_closed_with_4401():
    stream = Stream()
    await stream.comm.connect()
    code, reason = await stream.close_code()
    assert code == 4401 and "log in" in reason


async def test_bad_token_is_closed_with_4401_and_audited():
    stream = Stream(token="bct_aaaaaaaa_" + "x" * 43)
    await stream.comm.connect()
    assert (await stream.close_code())[0] == 4401
    assert await database_sync_to_async(
        AuditEvent.objects.filter(action="auth.token", result="denied", details__via="websocket").exists
    )()


async def test_bad_tokens_are_counted_per_client_address():
    """Repeated refusals from one peer are one audit row and a count, and the row names the peer."""
    for _ in range(3):
        stream = Stream(token="bct_aaaaaaaa_" + "x" * 43)
        stream.comm.scope["client"] = ("198.51.100.7", 50000)  # read by the consumer when it connects
        await stream.comm.connect()
        assert (await stream.close_code())[0] == 4401
    refused = await database_sync_to_async(
        lambda: list(AuditEvent.objects.filter(action="auth.token", details__via="websocket").values("details"))
    )()
    assert [row["details"]["ip"] for row in refused] == ["198.51.100.7"]


async def test_foreign_origin_is_closed_with_4403(world):
    people = await world()
    stream = Stream(token=people["root"], headers=[(b"origin", b"https://evil.example.com")])
    await stream.comm.connect()
    assert (await stream.close_code())[0] == 4403
    # A browser sends the Host it opened the socket on; the Origin must be that same site.
    same_site = await Stream(
        token=people["root"], headers=[(b"host", b"testserver"), (b"origin", b"http://testserver")]
    ).open()
    assert same_site.hello["cursor"] == await latest()
    await same_site.close()


@pytest.mark.parametrize(
    "query, words",
    [("?since=-1", "since"), ("?since=abc", "since"), ("?since=1&since=2", "once"), ("?colour=red", "colour"),
     ("?types=connector.exploded", "Unknown event types"), ("?since=99999999999999999999", "since")],
)
async def test_malformed_queries_are_closed_with_4400(query, words, world):
    people = await world()
    stream = Stream(query, token=people["root"])
    await stream.comm.connect()
    code, reason = await stream.close_code()
    assert code == 4400 and words in reason


async def test_unknown_or_invisible_connector_is_closed_with_4404(world):
    people = await world()
    for query, who in (("?connector=nope", "root"), ("?connector=ws_b", "viewer")):
        stream = Stream(query, token=people[who])
        await stream.comm.connect()
        assert (await stream.close_code())[0] == 4404


async def test_a_client_message_other_than_an_ack_is_closed_with_4400(world):
    people = await world()
    stream = await Stream(token=people["root"]).open()
    await stream.comm.send_to(text_data="hello?")
    assert (await stream.close_code())[0] == 4400


# --- replay, live, filtering ---------------------------------------------------------------


async def test_since_replays_the_log_then_continues_live_in_order(world):
    people = await world()
    await send("ws_a")
    history = await database_sync_to_async(all_seqs)()
    stream = await Stream("?since=0", token=people["root"]).open()
    replayed = await stream.events(len(history))
    assert [e["seq"] for e in replayed] == history
    assert replayed[0]["type"] == "connector.registered" and replayed[0]["specversion"] == "1.0"
    await send("ws_b")
    live = await stream.events(2)
    assert [e["type"] for e in live] == ["connector.message.queued", "connector.message.sent"]
    assert live[0]["seq"] == history[-1] + 1 and live[1]["seq"] == history[-1] + 2
    assert "hello" not in json.dumps(live)  # ids and lengths, never the content
    await stream.close()


async def test_a_user_never_receives_events_of_connectors_they_may_not_view(world):
    people = await world()
    await send("ws_b", "secret for b")
    stream = await Stream("?since=0", token=people["viewer"]).open()
    expected = await database_sync_to_async(all_seqs)(["ws_a"])
    replayed = await stream.events(len(expected))
    assert {e["connector"] for e in replayed} == {"ws_a"}
    for _ in range(3):
        await send("ws_b")
    await send("ws_a")
    live = await stream.events_until(await latest())  # ws_a's last event: the ws_b ones came before it
    assert [e["connector"] for e in live] == ["ws_a", "ws_a"]
    await stream.close()


async def test_type_and_connector_filters(world):
    people = await world()
    stream = await Stream("?types=connector.message.sent&connector=ws_b", token=people["root"]).open()
    await send("ws_a")
    await send("ws_b")
    (only,) = await stream.events_until(marker := await latest())  # the last event: anything leaked comes first
    assert (only["type"], only["connector"], only["seq"]) == ("connector.message.sent", "ws_b", marker)
    await stream.close()


async def test_session_authentication_and_pings(world, client, settings, make_user):
    settings.EVENTS_WS_PING_SECONDS = 0.1
    settings.EVENTS_WS_CATCHUP_SECONDS = 0.1
    await world()
    staff = await database_sync_to_async(make_user)("staffer", staff=True, superuser=True)
    await database_sync_to_async(client.force_login)(staff)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    stream = await Stream(headers=[(b"cookie", cookie), (b"host", b"testserver"), (b"origin", b"http://testserver")]).open()
    ping = await stream.next_message(timeout=2)
    assert ping["type"] == "ping" and ping["latest_seq"] == await latest()
    await stream.close()


async def test_a_revoked_token_ends_the_stream(world, settings):
    settings.EVENTS_WS_ACCESS_SECONDS = 0.1
    people = await world()
    stream = await Stream(token=people["viewer"]).open()
    prefix = people["viewer"].split("_")[1]
    await database_sync_to_async(tokens.revoke_token)(SYSTEM, prefix)
    assert (await stream.close_code())[0] == 4401


# --- nothing lost -----------------------------------------------------------------------------


async def test_resume_with_since_has_no_gaps_across_random_disconnects(world):
    people = await world()
    rng = random.Random(int(os.environ.get("RESUME_SEED", "7")))
    start = await latest()
    done = asyncio.Event()

    async def publisher():
        for i in range(40):
            await send(rng.choice(["ws_a", "ws_b"]), f"m{i}")
            await asyncio.sleep(rng.uniform(0, 0.01))
        done.set()

    task = asyncio.ensure_future(publisher())
    received, cursor, reconnects = [], start, 0
    while True:
        stream = await Stream(f"?since={cursor}", token=people["root"]).open()
        for _ in range(rng.randint(1, 12)):
            try:
                (event,) = await stream.events(1, timeout=0.5)
            except asyncio.TimeoutError:
                break
            received.append(event["seq"])
            cursor = event["seq"]
        await stream.close()
        reconnects += 1
        if done.is_set() and cursor == await latest():
            break
    await task
    expected = [s for s in await database_sync_to_async(all_seqs)() if s > start]
    assert received == expected  # every event once, in order, despite the reconnects
    assert len(expected) == 80 and reconnects > 3


async def test_a_lost_push_still_arrives_through_the_relay(world, monkeypatch, settings, catch_up):
    settings.EVENTS_WS_CATCHUP_SECONDS = settings.EVENTS_WS_PING_SECONDS = 0.05
    people = await world()
    stream = await Stream(token=people["root"]).open()
    catch_up.on, refused, working = False, [], push._send_to_groups  # the relay is the only way in

    async def redis_down(events_):
        refused.append(events_)
        raise ConnectionError("channel layer unreachable")

    monkeypatch.setattr(push, "_send_to_groups", redis_down)
    await send("ws_a")
    await until(lambda: refused, "the push to fail")
    # End marker: a ping that knows of the events (the hub read the log), and no event before it.
    assert await stream.events_before_ping(await latest()) == []
    settings.EVENTS_WS_PING_SECONDS = 60  # no more pings: they would keep a missing event's wait below from timing out
    unpushed = await database_sync_to_async(lambda: list(Event.objects.filter(pushed_at__isnull=True).values_list("seq", flat=True)))()
    assert len(unpushed) == 2
    monkeypatch.setattr(push, "_send_to_groups", working)
    assert await database_sync_to_async(push.relay)(grace_seconds=0) == 2
    relayed = await stream.events(2)
    assert [e["seq"] for e in relayed] == unpushed
    assert not await database_sync_to_async(Event.objects.filter(pushed_at__isnull=True).exists)()
    await stream.close()


@pytest.mark.redis
async def test_flushing_redis_loses_nothing(world, settings, catch_up):
    import redis.asyncio as aioredis
    from channels.layers import get_channel_layer

    settings.EVENTS_WS_CATCHUP_SECONDS = 0.2
    people = await world()
    server = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    group = get_channel_layer()._group_key(push.GROUP_ALL)
    await server.flushdb()  # no membership left over by an earlier test
    stream = await Stream(token=people["root"]).open()
    await until(lambda: server.zcard(group), "the hub to join")  # else the flush below tests no re-join
    await server.flushdb()  # group memberships and queued messages are gone
    await server.aclose()
    await send("ws_a")
    caught_up = await stream.events(2, timeout=3)
    assert [e["type"] for e in caught_up] == ["connector.message.queued", "connector.message.sent"]
    # The hub's round that caught us up had re-joined the group first. From here on the catch-up delivers nothing:
    # only the live push can bring the next events, so a hub that does not re-join fails here.
    catch_up.on = False
    await send("ws_b")
    live = await stream.events(2, timeout=3)
    assert [e["seq"] for e in live] == [caught_up[1]["seq"] + 1, caught_up[1]["seq"] + 2]
    await stream.close()


# --- flow control -----------------------------------------------------------------------------


async def test_a_client_that_acks_gets_everything_a_slow_one_is_disconnected(world, settings):
    settings.EVENTS_WS_WINDOW = 5
    settings.EVENTS_WS_SLOW_CLIENT_SECONDS = 0.3
    settings.EVENTS_WS_CATCHUP_SECONDS = 0.1
    people = await world()
    for _ in range(6):
        await send("ws_a")
    history = await database_sync_to_async(all_seqs)()

    acking = await Stream("?since=0", token=people["root"]).open()
    assert acking.hello["window"] == 5
    got = []
    while len(got) < len(history):
        got += await acking.events(min(5, len(history) - len(got)))
    assert [e["seq"] for e in got] == history
    await acking.close()

    silent = await Stream("?since=0", token=people["root"]).open()
    first = await silent.events(5, ack=False)
    code, reason = await silent.close_code(timeout=3)
    assert code == 4408 and "since=0" in reason
    assert [e["seq"] for e in first] == history[:5]
