"""The generated RBAC matrix for every MCP tool the server lists, for alice and bob at each level."""
import asyncio
from dataclasses import dataclass

import pytest

from brain_connectors.mcp import server as mcp_server
from tests.mcp_client import structured
from tests.project import rbac_support
from tests.project.rbac_support import (
    ACTOR,
    CONNECTED,
    GLOBAL,
    LEVELS,
    OWNERS,
    VICTIM,
    Rule,
    audit_mark,
    build_world,
    check_outcome,
    check_search_results,
    connector,
    expected,
    listing,
    personal,
    reads,
    shows_own,
    state_of,
)

_routing_settings = rbac_support._routing_settings


# --- MCP: every tool the server lists ------------------------------------------------------------


@dataclass(frozen=True)
class McpOp:
    rule: Rule
    action: str = ""
    args: object = None  # callable(objects of the target owner) -> the tool's arguments
    writes: bool = False
    listed: tuple = ()
    target: str = ""


MCP_OPS = {
    "send_message": McpOp(connector("send"), "message.send", writes=True, target="connector",
                          args=lambda o: {"connector_id": o["connector"], "recipient": "+4470000003", "content": "hi"}),
    "list_active_connectors": McpOp(listing("retrieve"),
                                    listed=(lambda data: {c["id"] for c in data["connectors"]}, "connector")),
    "get_connector_status": McpOp(connector("retrieve"), "connector.get", target="connector",
                                  args=lambda o: {"connector_id": o["connector"]}),
    "get_delivery_status": McpOp(connector("delivery"), "delivery.get", target="delivery",
                                 args=lambda o: {"delivery_id": o["delivery"]}),
    "notify_user": McpOp(GLOBAL, "notification.create", args=lambda o: {"username": o["username"], "content": "hi"}),
    "ask_user": McpOp(connector("send"), "question.ask", writes=True, target="connector",
                      args=lambda o: {"connector_id": o["connector"], "recipient": "+4470000004", "question": "Go?",
                                      "options": [{"id": "go", "label": "Go"}], "wait_seconds": 0}),
    # Its asker may read it too (tests/routing/test_ask_user_mcp.py); here SYSTEM asked: view on its connector.
    "get_question_answer": McpOp(connector("delivery"), "question.get", target="question",
                                 args=lambda o: {"question_id": o["question"]}),
    # A stranger's conversation (one's own is readable at every level: tests/conversations/test_read_permission.py).
    "get_conversation_context": McpOp(reads("retrieve"), "conversation.context", target="connector",
                                      args=lambda o: {"connector_id": o["connector"], "address": o["stranger"]}),
    "search_conversations": McpOp(personal(), "conversation.search", target="connector",
                                  args=lambda o: {"query": o["word"], "connector_id": o["connector"]},
                                  listed=(lambda data: {str(r["conversation_id"]) for r in data["results"]}, None)),
}


def mcp_tool_names():
    return sorted(tool.name for tool in asyncio.run(mcp_server.build_server().list_tools()))


MCP_TOOLS = mcp_tool_names()


def test_every_classified_mcp_tool_exists():
    assert set(MCP_OPS) - set(MCP_TOOLS) == set()


def mcp_cases():
    for name in MCP_TOOLS:
        if name not in MCP_OPS:
            yield pytest.param(name, "none", "own", id=f"mcp-{name}-UNCLASSIFIED")
            continue
        for level in LEVELS:
            for owner in OWNERS:
                yield pytest.param(name, level, owner, id=f"mcp-{name}-{level}-{owner}")


def call_tool(token, name, arguments):
    """The official SDK client, in memory, against the server `runmcp` would start with this token."""
    from mcp import Client

    async def scenario():
        async with Client(mcp_server.build_server(stdio_token=token)) as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(asyncio.wait_for(scenario(), 30))


# The tools run in the SDK's worker threads, on their own database connections: the world must be committed.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, level, owner", list(mcp_cases()))
def test_mcp(name, level, owner, make_user, grant, token_for):
    op = MCP_OPS.get(name)
    assert op is not None, f"MCP tool {name} is not in the RBAC matrix (MCP_OPS): classify it"
    world = build_world(level, CONNECTED, make_user, grant, token_for)
    target = world.of(owner)
    allowed, _ = expected(op.rule, level, owner, 200)
    before = {n: state_of(world, n) for n in (ACTOR, VICTIM)}
    mark = audit_mark()

    result = call_tool(world.token, name, op.args(target) if op.args else {})

    assert result.is_error == (not allowed), result.content
    target_id = target[op.target] if op.target and not allowed else None
    check_outcome(world, before, mark, allowed, op.action, op.writes and allowed, target_id)
    if op.listed and allowed:
        ids = op.listed[0](structured(result))
        key = op.listed[1]
        if key is None:
            check_search_results(world, ids)
        elif owner == "own":
            assert (target[key] in ids) == shows_own(op.rule, level), ids
        else:
            assert target[key] not in ids, f"bob's {key} is listed to alice"
