"""The README's MCP tool table names exactly the tools the server lists, so the two cannot drift apart."""
import asyncio
import re

import pytest

from brain_connectors.mcp import server as mcp_server
from tests.conftest import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)  # tools are listed through the SDK's own client


def listed_tools(token):
    from mcp import Client

    async def scenario():
        async with Client(mcp_server.build_server(stdio_token=token)) as client:
            return await client.list_tools()

    return {tool.name for tool in asyncio.run(asyncio.wait_for(scenario(), 30)).tools}


def readme_tools():
    """The first column of the table under **Tools.** in the README's MCP section: `name(arguments)`."""
    text = (BASE_DIR / "README.md").read_text()
    section = text[text.index("## MCP server (Claude)"):]
    section = section[section.index("**Tools.**"):]
    table = section[:section.index("\n\n", section.index("| tool"))]
    return [m.group(1) for m in re.finditer(r"^\| `(\w+)\(", table, flags=re.MULTILINE)]


def test_the_readme_names_every_mcp_tool_once_and_no_other(make_user, token_for):
    names = readme_tools()
    assert len(names) == len(set(names)), names
    assert set(names) == listed_tools(token_for(make_user("operator", superuser=True)))
