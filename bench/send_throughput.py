"""Outbound throughput: N messages through send_message → the delivery engine → the loopback fake Telegram, on
PostgreSQL and Redis; then the same N with a plain python-telegram-bot loop to the same fake. Prints msg/s,
enqueue→sent p50/p99, the ratio, and the CPU-ms each delivered message cost across every process involved.

Engines (`--engine`): "sender" (default) runs `--senders` `manage.py runsender` processes, woken by PostgreSQL
NOTIFY; "tasks" is the per-delivery Celery task. A Celery worker runs in both, for the rest of the work that
sending a message queues (conversation analysis).

Each figure is taken at every `--latencies-ms`: the fake waits that long before answering, as the real Bot API's
round trip does (tens of ms from most hosts). Modes:
- default: `--enqueuers` threads call send_message as fast as they can while the engine sends;
- `--preload`: everything is queued first, then the engine starts: the send side alone (msg/s of the drain);
- `--rate R`: offered load, R messages a second; reports enqueue→sent p50/p99 (goal p99 < 200 ms at 30 ms).

CPU-ms per delivered message sums user+system time over the run for the enqueuing threads of this process, the
senders, the Celery worker, and every PostgreSQL and Redis server process on the machine (from /proc; backends
that exited count through their parent's cutime/cstime). The machine's load average is printed with each figure:
other work on a shared machine shows up in the PostgreSQL and Redis shares.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/brain_bench \\
    .venv/bin/python bench/send_throughput.py --messages 1000 --chats 50 --concurrency 8 --enqueuers 4
"""
import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from common import ROOT, emit, fresh_database, prepare_environment, setup_django, summary_ms

TOKEN = "7000000001:AAH-bench-token-0123456789abcdefghij"
TICK = os.sysconf("SC_CLK_TCK")


# --- CPU accounting -----------------------------------------------------------------------------------------


def _proc_cpu_seconds(pid, children=True):
    """utime+stime (and, with children, the reaped children's cutime+cstime) of one process, or 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the ")" closing comm: fields[0] is state (field 3); utime..cstime are fields 14-17.
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / TICK


def _servers():
    """{pid: comm} of every PostgreSQL and Redis server process now."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm in ("postgres", "redis-server"):
                found[int(entry)] = comm
    return found


class CpuMeter:
    """CPU seconds per part, from a snapshot at start() to one at stop()."""

    def __init__(self, processes):
        self.processes = processes  # {"senders": [pid, …], "worker": [pid]}
        self.enqueue_seconds = 0.0
        self._lock = threading.Lock()

    def add_enqueue(self, seconds):
        with self._lock:
            self.enqueue_seconds += seconds

    def _snapshot(self):
        parts = {name: {pid: _proc_cpu_seconds(pid) for pid in pids} for name, pids in self.processes.items()}
        servers = _servers()
        for comm, name in (("postgres", "postgres"), ("redis-server", "redis")):
            parts[name] = {pid: _proc_cpu_seconds(pid) for pid, c in servers.items() if c == comm}
        return parts

    def start(self):
        self.enqueue_seconds = 0.0
        self._before = self._snapshot()

    def stop(self, delivered):
        after = self._snapshot()
        spent = {"enqueuers": self.enqueue_seconds}
        for name, pids in after.items():
            before = self._before.get(name, {})
            # A pid gone by now is counted in its parent's cutime (postgres backends → postmaster).
            spent[name] = sum(pids.values()) - sum(v for pid, v in before.items() if pid in pids)
        total = sum(spent.values())
        figures = {f"cpu_ms_{name}": round(seconds * 1000, 1) for name, seconds in spent.items()}
        return {"cpu_ms_per_msg": round(total * 1000 / max(1, delivered), 2), **figures}


# --- processes ----------------------------------------------------------------------------------------------


def start_senders(env, count, concurrency):
    senders = []
    for i in range(count):
        (ROOT / "var" / f"bench-sender-{i}.log").write_bytes(b"")
        log = open(ROOT / "var" / f"bench-sender-{i}.log", "ab")  # noqa: SIM115 (the child keeps its own copy)
        senders.append(subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runsender", "--concurrency", str(concurrency)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ))
        log.close()
    for i, proc in enumerate(senders):  # ready (Django loaded, checks run): their start-up is not counted
        deadline = time.monotonic() + 60
        while b"runsender: sending" not in (ROOT / "var" / f"bench-sender-{i}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"runsender {i} did not start: see var/bench-sender-{i}.log")
            time.sleep(0.1)
    return senders


def stop_processes(processes):
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- runs ---------------------------------------------------------------------------------------------------


def enqueue(services, system, connector_id, i, chats, meter):
    from django.db import close_old_connections

    started = time.thread_time()
    services.send_message(system, connector_id, str(5550000000 + i % chats), f"bench message {i}")
    close_old_connections()
    meter.add_enqueue(time.thread_time() - started)


def pipeline_run(args, env, fake, connector_id):
    from django.db import close_old_connections

    from connectors import services
    from connectors.models import Delivery
    from connectors.permissions import Principal
    from tests.worker import CeleryWorker, use_broker

    system = Principal.system_actor("bench", via="bench")
    services.register_connector(
        system, id=connector_id, kind="telegram", display_name="Bench",
        config={"mode": "polling", "api_base_url": fake.url}, credentials={"bot_token": TOKEN},
    )
    services.start_connector(system, connector_id)
    fake.reset()
    worker = CeleryWorker(env, concurrency=args.concurrency, extra_env={"DELIVERY_ENGINE": args.engine})
    restore = use_broker(worker.queue)
    senders = []

    def start_engine():
        nonlocal senders
        worker.start()
        if args.engine == "sender":
            senders = start_senders({**env, "CELERY_QUEUE": worker.queue}, args.senders, args.sender_concurrency)
        return {"senders": [p.pid for p in senders], "worker": [worker.proc.pid]}

    try:
        meter = CpuMeter({})
        if not args.preload:
            meter.processes = start_engine()
        meter.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.enqueuers) as pool:
            if args.rate:  # offered load: message i is due at i / rate seconds
                def offer(i):
                    time.sleep(max(0.0, started + i / args.rate - time.perf_counter()))
                    enqueue(services, system, connector_id, i, args.chats, meter)

                list(pool.map(offer, range(args.messages)))
            else:
                list(pool.map(lambda i: enqueue(services, system, connector_id, i, args.chats, meter),
                              range(args.messages)))
        enqueued = time.perf_counter()
        if args.preload:
            meter.processes = start_engine()
            meter.start()  # the drain alone: not the enqueueing, nor the engine's start-up
            started = time.perf_counter()
        sent = Delivery.objects.filter(connector_id=connector_id, status="sent")
        while len(fake.sent) < args.messages or sent.count() < args.messages:  # the fake has it, and it is committed
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"timed out: {len(fake.sent)}/{args.messages} sent")
            time.sleep(0.02)
            close_old_connections()
        finished = time.perf_counter()
        cpu = meter.stop(args.messages)
    finally:
        stop_processes(senders)
        worker.stop()
        restore()
    rows = list(sent.values_list("created_at", "sent_at"))
    latencies = [(sent_at - created).total_seconds() for created, sent_at in rows]
    return {
        "messages": args.messages,
        "sent_rows": len(rows),
        "seconds": round(finished - started, 3),
        "enqueue_seconds": round(enqueued - (started if not args.preload else enqueued), 3),
        "msg_per_s": round(args.messages / (finished - started), 1),
        **{f"enqueue_to_sent_{k}": v for k, v in summary_ms(latencies).items()},
        **cpu,
    }


def plain_loop_run(args, fake):
    from telegram import Bot

    async def loop():
        async with Bot(TOKEN, base_url=f"{fake.url}/bot") as bot:
            started = time.perf_counter()
            for i in range(args.messages):
                await bot.send_message(chat_id=5550000000 + i % args.chats, text=f"plain message {i}")
            return time.perf_counter() - started

    fake.reset()
    seconds = asyncio.run(loop())
    return {"messages": args.messages, "seconds": round(seconds, 3), "msg_per_s": round(args.messages / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--engine", choices=("sender", "tasks"), default="sender")
    parser.add_argument("--senders", type=int, default=1, help="runsender processes (sender engine)")
    parser.add_argument("--sender-concurrency", type=int, default=64, help="sends in flight per sender")
    parser.add_argument("--concurrency", type=int, default=8, help="Celery worker threads")
    parser.add_argument("--enqueuers", type=int, default=4, help="concurrent send_message callers")
    parser.add_argument("--rate", type=float, default=0, help="offered load in messages a second (0: flat out)")
    parser.add_argument("--preload", action="store_true", help="queue everything first, then start the engine")
    parser.add_argument("--latencies-ms", default="0,30", help="the fake's answer delays to measure at")
    parser.add_argument("--skip-plain", action="store_true", help="do not run the plain PTB loop")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    latencies = [int(value) for value in args.latencies_ms.split(",")]

    env = prepare_environment(DELIVERY_ENGINE=args.engine)
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from tests.fakes.telegram_server import FakeTelegram

    fake = FakeTelegram().start()
    mode = "preload" if args.preload else (f"rate_{args.rate:g}" if args.rate else "flat_out")
    try:
        for latency_ms in latencies:
            fake.latency_seconds = latency_ms / 1000
            load = os.getloadavg()[0]
            pipeline = pipeline_run(args, env, fake, f"tg_bench_{latency_ms}ms")
            emit(bench="send_throughput", path="pipeline", engine=args.engine, senders=args.senders, mode=mode,
                 fake_latency_ms=latency_ms, load_1m_before=round(load, 2), **pipeline)
            if args.skip_plain:
                continue
            plain = plain_loop_run(args, fake)
            emit(bench="send_throughput", path="plain_ptb_loop", fake_latency_ms=latency_ms, **plain)
            goal = 0.8 if latency_ms == 0 else 3
            ratio = round(pipeline["msg_per_s"] / plain["msg_per_s"], 3)
            emit(bench="send_throughput", engine=args.engine, mode=mode, fake_latency_ms=latency_ms,
                 ratio_vs_plain=ratio, goal=goal, meets_goal=ratio >= goal)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
