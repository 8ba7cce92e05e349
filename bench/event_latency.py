"""Event stream latency: from an event's commit in PostgreSQL to its arrival at websocket clients
of /ws/events/, through daphne and the Redis channel layer.

A publisher process appends events with `connectors.events.log.publish()` at a steady rate, each in
its own transaction, and notes the time of each commit (an on_commit callback registered before
the push). `--clients` websocket clients (aiohttp, Bearer token, acking like the dashboard does)
note when each event arrives. Latency = arrival - commit, over every (client, event) pair; the
clocks are the same machine's. Goal: p99 under 50 ms at 200 events/s with 50 clients.

The first `--warmup` seconds of events are sent but not counted: they pay for connections being
opened and code paths run for the first time (about 100 ms at first, gone within a second).

    .venv/bin/python bench/event_latency.py --rate 200 --clients 50 --seconds 10
"""
import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, emit, flush_redis, fresh_database, percentile, prepare_environment, setup_django, summary_ms

sys.path.insert(0, str(ROOT / "bench"))


def publish_at_rate(rate, seconds, out_path):
    """The publisher process: `rate` events per second for `seconds`, commit times to a file."""
    setup_django(migrate=False)
    from django.db import transaction

    from connectors.events import log as events

    commits = {}
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        committed = {}
        with transaction.atomic():
            # Registered before publish()'s own callback, so it runs first: right after COMMIT.
            transaction.on_commit(lambda box=committed: box.__setitem__("at", time.time()))
            event = events.publish(
                "connector.message.sent", connector_id="bench_events", data={"delivery_id": f"bench-{i}", "length": 42}
            )
        # By event id: on PostgreSQL the seq is given after commit (connectors.events.sequencer).
        commits[str(event.event_id)] = committed["at"]
    Path(out_path).write_text(json.dumps(commits))


async def client(url, token, arrivals, ready, stop):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, heartbeat=None) as ws:
            hello = json.loads((await ws.receive()).data)
            assert hello["type"] == "hello", hello
            ready.release()
            last_ack, unacked = time.monotonic(), 0
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(ws.receive(), timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise SystemExit(f"socket closed: {message.type} {message.data} {ws.close_code}")
                now = time.time()
                body = json.loads(message.data)
                if body["type"] != "event":
                    continue
                arrivals.append((body["event"]["seq"], body["event"]["id"], now))
                unacked += 1
                if unacked >= 50 or time.monotonic() - last_ack > 0.1:
                    await ws.send_str(json.dumps({"type": "ack", "seq": body["event"]["seq"]}))
                    last_ack, unacked = time.monotonic(), 0


async def run_clients(ports, token, count, publisher_cmd, env):
    arrivals = [[] for _ in range(count)]
    ready, stop = asyncio.Semaphore(0), asyncio.Event()
    tasks = [
        asyncio.ensure_future(client(f"ws://127.0.0.1:{ports[i % len(ports)]}/ws/events/", token, arrivals[i], ready, stop))
        for i in range(count)
    ]
    for _ in range(count):
        await asyncio.wait_for(ready.acquire(), timeout=60)
    publisher = await asyncio.create_subprocess_exec(*publisher_cmd, cwd=ROOT, env=env)
    await publisher.wait()
    if publisher.returncode:
        raise SystemExit("the publisher failed")
    await asyncio.sleep(2)  # the last events' way to the clients
    stop.set()
    await asyncio.gather(*tasks)
    return arrivals


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200, help="events per second")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds, after the warm-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of events sent first and not counted")
    parser.add_argument("--processes", type=int, default=1, help="daphne processes (clients spread over them)")
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--publisher", help=argparse.SUPPRESS)  # internal: run as the publisher process
    args = parser.parse_args()

    if args.publisher:
        return publish_at_rate(args.rate, args.seconds, args.publisher)

    from webhook_ingest import start_daphne

    env = prepare_environment()
    fresh_database(env["DATABASE_URL"])
    flush_redis(env["REDIS_URL"])
    setup_django()
    from django.contrib.auth import get_user_model

    from connectors import services
    from connectors.permissions import Principal
    from connectors.tokens import create_token

    system = Principal.system_actor("bench", via="bench")
    root = get_user_model().objects.create_superuser("bench", password=None, email="")
    token = create_token(system, root)[1]
    services.register_connector(system, id="bench_events", kind="locmem", display_name="Bench events")

    servers = start_daphne(env, args.port, args.processes)
    out = tempfile.NamedTemporaryFile(prefix="bench_events_", suffix=".json", delete=False).name
    total_seconds = args.warmup + args.seconds
    publisher_cmd = [sys.executable, __file__, "--publisher", out, "--rate", str(args.rate), "--seconds", str(total_seconds)]
    try:
        ports = [args.port + i for i in range(args.processes)]
        # The clients' own garbage collections (100,000 arrivals kept) would stall their loop
        # and be counted as stream latency: the measuring side keeps out of the way.
        gc.disable()
        arrivals = asyncio.run(run_clients(ports, token, args.clients, publisher_cmd, env))
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)
    commits = json.loads(Path(out).read_text())  # in publishing order
    warmup_events = int(args.rate * args.warmup)
    commits = dict(list(commits.items())[warmup_events:])
    latencies, missing, out_of_order = [], 0, 0
    for received in arrivals:
        seqs = [seq for seq, _, _ in received]
        out_of_order += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a)
        got = {event_id: at for _, event_id, at in received}
        missing += sum(1 for event_id in commits if event_id not in got)
        latencies += [got[event_id] - at for event_id, at in commits.items() if event_id in got]
    p99 = percentile(latencies, 99) * 1000
    emit(
        bench="event_latency",
        rate_per_s=args.rate,
        clients=args.clients,
        daphne_processes=args.processes,
        warmup_events_not_counted=warmup_events,
        events=len(commits),
        deliveries=len(latencies),
        missing=missing,
        out_of_order=out_of_order,
        **summary_ms(latencies),
        goal="p99 < 50 ms",
        goal_met=p99 < 50 and missing == 0,
    )
    subprocess.run(["rm", "-f", out], check=False)


if __name__ == "__main__":
    main()
