"""Conversations' MCP tools: read the recent conversation with one address, and search the history.

Registered with brain_connectors.mcp.registry, which discovers this module. Message content is
what people wrote: it comes back marked untrusted.
"""
from typing import Annotated

from pydantic import Field

from brain_connectors.mcp.registry import tool
from brain_connectors.mcp.schema import ConnectorId, untrusted
from connectors.permissions import Principal
from conversations import services as memory


@tool(
    "The recent conversation with one address on one connector (BRAIN's memory), oldest first: "
    "role (user, assistant, system), time and content. Your own conversation needs nothing; anyone "
    "else's needs the read_conversations permission on the connector.",
    readOnlyHint=True,
)
def get_conversation_context(
    principal: Principal,
    connector_id: ConnectorId,
    address: Annotated[str, Field(min_length=1, max_length=255, description="The person's address on it.")],
    limit: Annotated[int, Field(ge=1, le=100, description="How many recent messages (1-100).")] = 10,
) -> dict:
    items = memory.context_for_address(principal, connector_id, address, limit)
    return {"messages": [{**item, "content": untrusted(item["content"])} for item in items]}


@tool(
    "Search conversation history (encrypted at rest, searched through a keyed blind index). Every "
    "word must match; \"quoted phrases\" match exactly; no prefix or wildcard search. You see your "
    "own conversations, and everyone's on connectors where you hold read_conversations.",
    readOnlyHint=True,
)
def search_conversations(
    principal: Principal,
    query: Annotated[str, Field(min_length=1, max_length=200, description="Up to 10 words.")],
    connector_id: Annotated[str | None, Field(default=None, max_length=64, description="Optional connector id.")] = None,
) -> dict:
    messages = memory.search(principal, query, connector_id=connector_id)
    return {
        "results": [
            {**memory.result_dict(m), "content": untrusted(m.content)} for m in messages
        ]
    }
