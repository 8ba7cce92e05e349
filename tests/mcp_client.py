"""The official MCP client from the SDK, against `manage.py runmcp` in a subprocess (stdio or
streamable HTTP). Tests call `run(coroutine)` from plain sync tests."""
import asyncio
import contextlib
import json
import subprocess
import sys
import time

import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.conftest import BASE_DIR


def run(coroutine, timeout=60):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@contextlib.asynccontextmanager
async def stdio_session(env, *args, errlog=None):
    params = StdioServerParameters(
        command=sys.executable, args=[str(BASE_DIR / "manage.py"), "runmcp", *args], env=env, cwd=str(BASE_DIR)
    )
    with open(errlog or "/dev/null", "w") as err:
        async with stdio_client(params, errlog=err) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@contextlib.asynccontextmanager
async def http_session(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def structured(result):
    """A tool result's JSON (structured content, else its text)."""
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content.get("result", result.structured_content)
    return json.loads(result.content[0].text)


def error_text(result):
    assert result.is_error, result
    return result.content[0].text


class HttpServer:
    """`manage.py runmcp --transport streamable-http` on a free port."""

    def __init__(self, env, port):
        self.env, self.port = env, port
        self.url = f"http://127.0.0.1:{port}/mcp"

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "runmcp", "--transport", "streamable-http",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=BASE_DIR, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("runmcp exited: " + self.proc.stdout.read().decode(errors="replace"))
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/mcp", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.proc.kill()
        raise AssertionError("runmcp did not start listening")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
