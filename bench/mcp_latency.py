"""MCP round trips: `list_active_connectors` and `get_connector_status` through the official SDK
client, against `manage.py runmcp` over stdio and over streamable HTTP, on PostgreSQL. Each call
is authenticated, permission-checked and audited, as in production. Prints p50/p99 per tool and
transport (goal: p50 under 10 ms over stdio).

    .venv/bin/python bench/mcp_latency.py --calls 300
"""
import argparse
import asyncio
import socket
import time

from common import emit, fresh_database, prepare_environment, setup_django, summary_ms

TOOLS = [("list_active_connectors", {}), ("get_connector_status", {"connector_id": "bench_0"})]


async def measure(session, calls, warmup):
    figures = {}
    for name, arguments in TOOLS:
        for _ in range(warmup):
            await session.call_tool(name, arguments)
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            result = await session.call_tool(name, arguments)
            timings.append(time.perf_counter() - started)
            if result.is_error:
                raise SystemExit(f"{name} failed: {result.content}")
        figures[name] = timings
    return figures


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--connectors", type=int, default=20, help="connectors in the registry")
    args = parser.parse_args()

    env = prepare_environment()
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from django.contrib.auth import get_user_model

    from connectors import services
    from connectors.permissions import Principal
    from connectors.tokens import create_token
    from tests.mcp_client import HttpServer, http_session, stdio_session

    system = Principal.system_actor("bench", via="bench")
    for i in range(args.connectors):
        services.register_connector(system, id=f"bench_{i}", kind="locmem", display_name=f"Bench {i}")
        services.start_connector(system, f"bench_{i}")
    user = get_user_model().objects.create_user("bench_operator")
    viewer_perm = "view_connector"
    for i in range(args.connectors):  # an ordinary user with object permissions, not a superuser
        services.grant_permission(system, f"bench_{i}", viewer_perm, user=user)
    token = create_token(system, user)[1]

    async def over_stdio():
        async with stdio_session({**env, "BRAIN_MCP_TOKEN": token}) as session:
            return await measure(session, args.calls, args.warmup)

    async def over_http(url):
        async with http_session(url, token) as session:
            return await measure(session, args.calls, args.warmup)

    results = {"stdio": asyncio.run(over_stdio())}
    with HttpServer(env, free_port()) as server:
        results["streamable-http"] = asyncio.run(over_http(server.url))
    for transport, figures in results.items():
        for name, timings in figures.items():
            summary = summary_ms(timings)
            emit(bench="mcp_latency", transport=transport, tool=name, calls=len(timings), **summary,
                 goal="p50 < 10 ms over stdio" if transport == "stdio" else None,
                 meets_goal=summary["p50_ms"] < 10 if transport == "stdio" else None)


if __name__ == "__main__":
    main()
