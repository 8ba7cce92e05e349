"""The generated RBAC matrix for every websocket route and filter of /ws/events/, for alice and bob at each level."""
import json
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest

from connectors.events.stream_request import QUERY_PARAMETERS
from tests.project import rbac_support
from tests.project.rbac_support import (
    ACTOR,
    CONNECTED,
    LEVELS,
    OWNERS,
    VICTIM,
    Rule,
    audit_mark,
    build_world,
    check_outcome,
    connector,
    expected,
    listing,
    shows_own,
    state_of,
)

_routing_settings = rbac_support._routing_settings


# --- websocket: every route and every filter of /ws/events/ ---------------------------------------


@dataclass(frozen=True)
class WsOp:
    route: str
    rule: Rule
    query: tuple  # (name, world object or literal)
    action: str = ""
    target: str = ""


WS_OPS = {
    # the whole stream from the start of the log: alice's connector's events iff she may view it, never bob's
    "stream": WsOp("ws/events/", listing("retrieve"), (("since", "0"),)),
    # one connector's events, of some types: someone else's (or one alice may not view) is 4404, like a missing one
    "connector_filter": WsOp("ws/events/", connector("retrieve"),
                             (("since", "0"), ("connector", "connector"), ("types", "connector.*")),
                             "event.subscribe", "connector"),
}


def websocket_routes():
    from brain_connectors.asgi import websocket_routes as router

    return {str(route.pattern) for route in router.routes}


def test_every_websocket_route_and_filter_is_classified():
    assert {op.route for op in WS_OPS.values()} == websocket_routes()
    assert {name for op in WS_OPS.values() for name, _ in op.query} == set(QUERY_PARAMETERS)


def ws_cases():
    for name in WS_OPS:
        for level in LEVELS:
            for owner in OWNERS:
                yield pytest.param(name, level, owner, id=f"ws-{name}-{level}-{owner}")


@pytest.fixture
def fresh_channel_layer(settings):
    """Each async test has its own loop; channels_redis binds itself to the first (see test_event_stream)."""
    from channels.layers import channel_layers

    settings.EVENTS_WS_CATCHUP_SECONDS = settings.EVENTS_WS_ACCESS_SECONDS = 60
    settings.EVENTS_WS_PING_SECONDS = 0.05  # the end marker of receive_stream
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def receive_stream(communicator):
    """(close code or None, the events received before the first ping). The end marker: the timer that pings starts
    after the replay of the whole log, so anything the replay sent, allowed or not, came before it."""
    received = []
    while True:
        output = await communicator.receive_output(3)
        if output["type"] == "websocket.close":
            return output.get("code"), received
        message = json.loads(output["text"])
        if message["type"] == "ping":
            return None, received
        if message["type"] == "event":
            received.append(message["event"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, level, owner", list(ws_cases()))
async def test_websocket(name, level, owner, make_user, grant, token_for, fresh_channel_layer):
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from brain_connectors.asgi import application

    op = WS_OPS[name]
    world = await database_sync_to_async(build_world)(level, CONNECTED, make_user, grant, token_for)
    target = world.of(owner)
    allowed, _ = expected(op.rule, level, owner, 200)
    before = await database_sync_to_async(lambda: {n: state_of(world, n) for n in (ACTOR, VICTIM)})()
    mark = await database_sync_to_async(audit_mark)()
    query = urlencode({key: (target[value] if value in target else value) for key, value in op.query})

    communicator = WebsocketCommunicator(application, f"/{op.route}?{query}",
                                         headers=[(b"authorization", f"Bearer {world.token}".encode())])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    first = await communicator.receive_output(3)
    if first["type"] == "websocket.close":  # refused before the stream opens
        code, received = first.get("code"), []
    else:
        assert json.loads(first["text"])["type"] == "hello", first
        code, received = await receive_stream(communicator)
    if not communicator.future.done():
        await communicator.disconnect()

    assert code == (None if allowed else 4404)
    seen = {event["connector"] for event in received}
    await database_sync_to_async(check_outcome)(
        world, before, mark, allowed, op.action, False, target[op.target] if op.target and not allowed else None
    )
    if owner == "other" or not allowed:
        assert world.of("other")["connector"] not in seen, "bob's events reached alice"
    if allowed and op.rule.kind == "connector":
        assert seen == {target["connector"]} and all(e["type"].startswith("connector.") for e in received)
    if allowed and op.rule.kind == "listing":
        assert seen == ({world.of("own")["connector"]} if shows_own(op.rule, level) else set())
