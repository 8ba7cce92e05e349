"""cProfile over the hot paths that miss their goals (issue 16), in-process on PostgreSQL: where each one's time goes.

Paths (`--paths`, default all), each `--ops` operations:
- send_message: connectors.services.send_message to a started Telegram connector, called as send_throughput.py's
  enqueuers call it (its `enqueue`), with DELIVERY_ENGINE=sender: a NOTIFY at commit, nothing sent in-process;
- sender_batch: the batch sender's loop over `--ops` queued deliveries (`--chats` recipients): claims.claim_batch →
  Sender._send_all (the real concurrent sends, over the long-lived PTB client, to the fake Telegram) →
  sender.record_batch, until nothing is due. Sender.run() does the same with its database work on a thread of its
  own, which cProfile (one thread) would not follow; here the three steps run in turn on this thread, as run()
  awaits them in turn, each after close_old_connections() as Sender._on_database does;
- webhook_ingest: tests/fixtures/telegram/message_text.json (a new update_id each time) POSTed with the secret header
  to /webhooks/telegram/<id>/ through django.test.AsyncClient on one event loop: the ASGI path daphne serves;
- mcp_tool: one audited MCP tool call per op (`--mcp-tools`, one figure each), through the server build_server()
  makes (argument validation, the SDK's worker thread, token check, object permissions, audit row), no transport.

Each path runs a warm-up, then a timed pass without the profiler: wall and CPU per op (CPU of this process, every
thread; the fake Telegram runs in a child process, so its CPU is not in it) and pg_cpu (this database's backends,
from /proc). Then a profiled pass of as many ops, which also counts per op: SQL statements, transactions, write
commits (transactions that wrote, locked rows or NOTIFYed: each one WAL flush, an fdatasync with
synchronous_commit=on), connection health checks (CONN_HEALTH_CHECKS: a SELECT 1 after close_old_connections),
new connections and Redis round trips, from every thread. Work a path hands to another thread (the webhook view's
_handle, a sync MCP tool's body) is profiled there and merged in; Django's thread-sensitive middleware hops and the
event pusher's thread are not profiled (they show as waits, or not at all). `--timer wall` (default): cumulative
times are wall times, inflated by cProfile, shares are of the profiled wall; `--timer cpu`: each thread's CPU time.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/brain_bench_prof REDIS_URL=redis://127.0.0.1:6379/13 \\
    .venv/bin/python bench/profile_paths.py --ops 300

The database (brain_bench*) is created afresh; queued Celery tasks wait, unread, in a queue of this run's own.
"""
import argparse
import asyncio
import contextlib
import cProfile
import itertools
import json
import os
import pstats
import re
import subprocess
import sys
import time
import types
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import redis
import send_throughput
import webhook_ingest
from common import ROOT, emit, fresh_database, prepare_environment, setup_django

PATHS = ("send_message", "sender_batch", "webhook_ingest", "mcp_tool")
OURS = r"connectors|audit|conversations|routing|brain_connectors|psycopg|django/db|cryptography|celery|kombu|redis"
# Statements after which a COMMIT flushes WAL: row changes, row locks (they set xmax), NOTIFY (it takes an xid).
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b|\bFOR (NO KEY )?UPDATE\b|pg_notify", re.IGNORECASE)
SITE_PACKAGES = re.compile(r"^.*/site-packages/")
MCP_ARGUMENTS = {"get_connector_status": {"connector_id": "prof_mcp_0"}}  # tools not listed take none
TIMER = "wall"  # cProfile's clock (--timer): wall time, or each profiled thread's CPU time
NO_METER = types.SimpleNamespace(add_enqueue=lambda seconds: None)  # send_throughput.enqueue's CPU meter, unused


@contextlib.contextmanager
def patched(owner, name, make):
    """owner.name = make(original) while entered."""
    original = getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def counting(counts, key, is_async=False):
    def make(original):
        async def run_async(*args, **kwargs):
            counts[key] += 1
            return await original(*args, **kwargs)

        def run(*args, **kwargs):
            counts[key] += 1
            return original(*args, **kwargs)
        return run_async if is_async else run
    return make


@contextlib.contextmanager
def round_trips():
    """Counts what this process (every thread) sends PostgreSQL and Redis while entered."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.postgresql.base import DatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from redis.asyncio.connection import AbstractConnection as AsyncRedisConnection
    from redis.connection import AbstractConnection as RedisConnection

    counts = Counter()

    def execute(original):
        def run(cursor, sql, params, many, executor):
            counts["sql"] += 1
            wrote = bool(WRITES.search(sql))
            if cursor.db.in_atomic_block:
                cursor.db.profile_wrote = getattr(cursor.db, "profile_wrote", False) or wrote
            else:  # autocommit: the statement is a transaction of its own
                counts["transactions"] += 1
                counts["write_commits"] += wrote
            return original(cursor, sql, params, many, executor)
        return run

    def ending(committed):
        def make(original):
            def run(db, *args, **kwargs):
                counts["transactions" if committed else "rollbacks"] += 1
                counts["write_commits"] += committed and getattr(db, "profile_wrote", False)
                db.profile_wrote = False
                return original(db, *args, **kwargs)
            return run
        return make

    with contextlib.ExitStack() as stack:
        for owner, name, make in [
            (CursorWrapper, "_execute_with_wrappers", execute),
            (BaseDatabaseWrapper, "commit", ending(True)), (BaseDatabaseWrapper, "rollback", ending(False)),
            (BaseDatabaseWrapper, "connect", counting(counts, "db_connects")),
            (DatabaseWrapper, "is_usable", counting(counts, "health_checks")),
            (RedisConnection, "send_packed_command", counting(counts, "redis_round_trips")),
            (AsyncRedisConnection, "send_packed_command", counting(counts, "redis_round_trips", True)),
        ]:
            stack.enter_context(patched(owner, name, make))
        yield counts


class Profiles:
    """A cProfile of this thread, and one of the work it hands to other threads (one call at a time), merged."""

    def __init__(self, timer):
        profile = (lambda: cProfile.Profile(time.thread_time)) if timer == "cpu" else cProfile.Profile
        self.main, self.hopped, self.hops = profile(), profile(), 0

    def in_thread(self, fn):
        def run(*args, **kwargs):
            self.hops += 1
            self.hopped.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                self.hopped.disable()
        return run

    def stats(self):
        stats = pstats.Stats(self.main)
        if self.hops:
            stats.add(self.hopped)

        def short(key):  # paths from the project root or site-packages, which OURS then matches
            return SITE_PACKAGES.sub("", key[0]).replace(f"{ROOT}/", ""), key[1], key[2]

        return pstats.Stats(types.SimpleNamespace(create_stats=lambda: None, stats={
            short(key): (cc, nc, tt, ct, {short(c): v for c, v in callers.items()})
            for key, (cc, nc, tt, ct, callers) in stats.stats.items()}))


def database_cpu():  # {pid: CPU seconds} of this database's backends
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {pid: send_throughput._proc_cpu_seconds(pid, children=False) for (pid,) in cursor.fetchall()}


def measure(path, ops, run, prepare=lambda n: None, hop=None, after=dict, **labels):
    """Warm up; time `ops` operations; profile `ops` more; print the profile and emit the figures.
    prepare(n) readies n operations unmeasured; hop(wrap) patches the hand-off to another thread with wrap."""
    prepare(warm := max(10, ops // 10))
    run(warm)
    prepare(ops)
    pg_before = database_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    run(ops)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pg_cpu = sum(seconds - pg_before.get(pid, 0.0) for pid, seconds in database_cpu().items())
    prepare(ops)
    profiles = Profiles(TIMER)
    with round_trips() as counts, (hop(profiles.in_thread) if hop else contextlib.nullcontext()):
        profiled = time.perf_counter()
        profiles.main.enable()
        run(ops)
        profiles.main.disable()
        profiled = time.perf_counter() - profiled
    stats = profiles.stats()
    whole = profiled if TIMER == "wall" else stats.total_tt  # what shares are of: the wall, or the profiled CPU
    def per_op(seconds):
        return round(seconds * 1000 / ops, 3)
    per_op_counts = {key: round(value / ops, 2) for key, value in sorted(counts.items())}
    title = " ".join([path, *(f"{k}={v}" for k, v in labels.items())])
    print(f"\n=== {title} — {ops} ops: wall {per_op(wall)} ms/op, CPU {per_op(cpu)} ms/op (this process), "
          f"PostgreSQL backends {per_op(pg_cpu)} ms/op; under cProfile {per_op(profiled)} ms/op wall "
          f"(profile timer: {TIMER})", flush=True)
    print("per op: " + ", ".join(f"{key} {value}" for key, value in per_op_counts.items()))
    stats.sort_stats("cumulative").print_stats(OURS, 15)
    print(f"--- {path}: self time, every function")
    stats.sort_stats("tottime").print_stats(12)
    ours = sorted(((pstats.func_std_string(key), value[3]) for key, value in stats.stats.items()
                   if re.search(OURS, pstats.func_std_string(key))), key=lambda row: -row[1])
    top = [[name, per_op(seconds), round(seconds / whole, 3)] for name, seconds in ours[:5]]
    emit(bench="profile_paths", path=path, **labels, ops=ops, cpu_ms_per_op=per_op(cpu), wall_ms_per_op=per_op(wall),
         pg_cpu_ms_per_op=per_op(pg_cpu), profiled_wall_ms_per_op=per_op(profiled), per_op=per_op_counts,
         profile_timer=TIMER, top=top, load_1m=round(os.getloadavg()[0], 2), **after())


def enqueuer(connector_id, chats):
    """n send_message calls, as send_throughput.py's enqueuers make them, to `chats` recipients in turn."""
    from connectors import services
    from connectors.permissions import Principal

    system, numbers = Principal.system_actor("bench", via="bench"), itertools.count()

    def run(n):
        for _ in range(n):
            send_throughput.enqueue(services, system, connector_id, next(numbers), chats, NO_METER)
    return run


def started_telegram(connector_id, fake_url, mode="polling"):
    from connectors import services
    from connectors.permissions import Principal

    system = Principal.system_actor("bench", via="bench")
    services.register_connector(system, id=connector_id, kind="telegram", display_name=connector_id,
                                config={"mode": mode, "api_base_url": fake_url},
                                credentials={"bot_token": send_throughput.TOKEN})
    services.start_connector(system, connector_id)
    return system


def path_send_message(args, fake_url):
    from connectors import services

    system = started_telegram("prof_send", fake_url)
    measure("send_message", args.ops, enqueuer("prof_send", args.chats))
    services.stop_connector(system, "prof_send")  # its queued rows are not for sender_batch to send


def path_sender_batch(args, fake_url):
    from django.db import close_old_connections

    from connectors.delivery import claims
    from connectors.delivery.sender import Sender, record_batch
    from connectors.models import Delivery
    from connectors.platforms.base import close_sender_clients

    started_telegram("prof_sender", fake_url)
    sender, loop, batches = Sender(), asyncio.new_event_loop(), []
    rows = Delivery.objects.filter(connector_id="prof_sender")
    loop.set_default_executor(ThreadPoolExecutor(max_workers=min(sender.concurrency, 32), thread_name_prefix="send"))

    def on_database(work, *work_args):  # Sender._on_database, on this thread
        close_old_connections()
        return work(*work_args)

    def drain(n):
        batches.append(0)
        while claimed := on_database(claims.claim_batch, sender.batch):
            results = loop.run_until_complete(sender._send_all(claimed))
            on_database(record_batch, results)
            batches[-1] += 1

    try:
        measure("sender_batch", args.ops, drain, prepare=enqueuer("prof_sender", args.chats),
                after=lambda: {"batches": batches[-1], "chats": args.chats, "fake_latency_ms": args.fake_latency_ms,
                               "unsent": rows.exclude(status="sent").count()})
    finally:
        loop.run_until_complete(close_sender_clients())
        loop.close()


def path_webhook_ingest(args, fake_url):
    from django.test import AsyncClient

    from connectors import webhooks
    from connectors.models import Connector, InboundMessage

    started_telegram("prof_ingest", fake_url, mode="webhook")
    secret = Connector.objects.get(pk="prof_ingest").platform_secret
    client, headers = AsyncClient(), {"X-Telegram-Bot-Api-Secret-Token": secret}
    loop, numbers, refused = asyncio.new_event_loop(), itertools.count(), Counter()

    async def post(n):
        for _ in range(n):
            i = next(numbers)
            update = json.loads(json.dumps(webhook_ingest.FIXTURE))
            update["update_id"], update["message"]["message_id"] = 900000000 + i, 100000 + i
            response = await client.post("/webhooks/telegram/prof_ingest/", data=json.dumps(update),
                                         content_type="application/json", headers=headers)
            if response.status_code != 200:
                refused[response.status_code] += 1

    def after():
        posted, stored = next(numbers), InboundMessage.objects.filter(connector_id="prof_ingest").count()
        return {"refused": dict(refused), "all_stored": stored == posted and not refused}

    try:
        measure("webhook_ingest", args.ops, lambda n: loop.run_until_complete(post(n)),
                hop=lambda wrap: patched(webhooks, "_handle", wrap), after=after)
    finally:
        loop.close()


def path_mcp_tool(args, fake_url):
    import anyio.to_thread
    from django.contrib.auth import get_user_model

    from brain_connectors.mcp.server import build_server
    from connectors import services
    from connectors.permissions import Principal
    from connectors.tokens import create_token

    system = Principal.system_actor("bench", via="bench")
    user = get_user_model().objects.create_user("prof_operator")  # object permissions, not a superuser
    for i in range(args.connectors):  # as bench/mcp_latency.py sets them up
        services.register_connector(system, id=f"prof_mcp_{i}", kind="locmem", display_name=f"Bench {i}")
        services.start_connector(system, f"prof_mcp_{i}")
        services.grant_permission(system, f"prof_mcp_{i}", "view_connector", user=user)
    server = build_server(stdio_token=create_token(system, user)[1])
    loop = asyncio.new_event_loop()

    def hop(wrap):  # a sync tool runs in anyio's worker thread (mcp's func_metadata.call_fn)
        def make(original):
            async def run_sync(func, *run_args, **kwargs):
                return await original(wrap(func), *run_args, **kwargs)
            return run_sync
        return patched(anyio.to_thread, "run_sync", make)

    try:
        for tool in args.mcp_tools.split(","):
            async def call(n, tool=tool):
                for _ in range(n):
                    result = await server.call_tool(tool, MCP_ARGUMENTS.get(tool, {}))
                    if result.is_error:
                        raise SystemExit(f"{tool} failed: {result.content}")

            measure("mcp_tool", args.ops, lambda n, call=call: loop.run_until_complete(call(n)), hop=hop, tool=tool,
                    connectors=args.connectors)
    finally:
        loop.close()


def start_fake(latency_ms):
    """The fake Telegram in a child process (its CPU is not ours); it exits when its stdin closes."""
    code = ("import sys; from tests.fakes.telegram_server import FakeTelegram; "
            f"fake = FakeTelegram(latency_seconds={latency_ms / 1000}).start(); print(fake.url, flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc, proc.stdout.readline().strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--chats", type=int, default=50, help="recipients of send_message and sender_batch")
    parser.add_argument("--fake-latency-ms", type=int, default=0, help="the fake Telegram's answer delay")
    parser.add_argument("--connectors", type=int, default=20, help="connectors the MCP user may view")
    parser.add_argument("--mcp-tools", default="get_connector_status,list_active_connectors")
    parser.add_argument("--timer", choices=("wall", "cpu"), default="wall", help="what the profiles measure")
    args = parser.parse_args()
    global TIMER
    TIMER = args.timer
    if set(paths := args.paths.split(",")) - set(PATHS):
        parser.error(f"unknown paths: {sorted(set(paths) - set(PATHS))}")

    env = prepare_environment(redis_url=os.environ.get("REDIS_URL"), DELIVERY_ENGINE="sender",
                              PUBLIC_BASE_URL="https://bench.example.org",
                              ALLOWED_HOSTS="127.0.0.1,localhost,testserver")
    fresh_database(env["DATABASE_URL"])
    fake, fake_url = start_fake(args.fake_latency_ms)
    setup_django()
    from tests.worker import use_broker

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    emit(bench="profile_paths", commit=commit.strip(), ops=args.ops, paths=paths, python=sys.version.split()[0],
         cpus=os.cpu_count(), load_1m=round(os.getloadavg()[0], 2))
    queue = f"profile-{uuid.uuid4().hex[:8]}"
    restore = use_broker(queue)  # the tasks these paths queue (BRAIN, conversation analysis) wait here, unread
    try:
        for path in paths:
            globals()[f"path_{path}"](args, fake_url)
    finally:
        restore()
        fake.stdin.close()
        fake.wait(10)
        broker = redis.Redis.from_url(env["REDIS_URL"])
        for key in broker.scan_iter(match=f"*{queue}*"):
            broker.delete(key)


if __name__ == "__main__":
    main()
