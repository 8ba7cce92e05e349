"""Event bus bridge: events per second from the durable log to NATS JetStream, and the lag commit → JetStream ack.

A nats-server of its own (JetStream, a temporary store, a free port on 127.0.0.1; never the shared :4222) and a
fresh PostgreSQL database (brain_bench_bus). The bridge is the real `manage.py runbridge` subprocess, as deployed.
Events are committed with `connectors.events.log.publish()`, each in its own transaction, the app's own path: on
PostgreSQL the sequencer numbers them right after commit (the on_commit pass publish() registers).

Two phases, one JSON line each:

- backlog: the bridge starts on an empty log and settles (stream ensured, lease held), is paused with SIGSTOP while
  `--events` events are committed, then resumed with SIGCONT. Throughput = events / (last - first stream
  timestamp): the bridge's publishing alone, without its start-up or the filling of the log. CPU-ms per event =
  the bridge process's utime + stime (/proc/<pid>/stat) from SIGCONT until the last event is in the stream.
- steady: the bridge runs caught up while events are committed at `--rate` per second for `--seconds`. Lag per
  event = its JetStream timestamp - its commit time. Commit time: wall clock in an on_commit callback registered
  before publish()'s own (so: right after COMMIT, before the sequencer's pass). Ack time: the stream's timestamp
  of the message, which nats-server sets when it stores it, just before it sends the publish acknowledgement to
  the bridge. Both clocks are this machine's. The first `--warmup` seconds are committed but not counted.
  Its CPU-ms per event includes the bridge's idle waits between events: caught up, it waits for the sequencer's
  NOTIFY (PostgreSQL LISTEN), with a look at the log every second as a safety net.

The stream is read after each phase with a pull consumer (so no reader competes with the bridge for CPU); every
event must be there exactly once, in seq order. Goals (issue 20): ≥ 2,000 events/s, p99 commit → ack < 100 ms.

    .venv/bin/python bench/bus_bridge.py --events 5000 --rate 200 --seconds 10
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from common import ROOT, emit, fresh_database, prepare_environment, setup_django, summary_ms

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/brain_bench_bus"
STREAM = "BRAIN_CONNECTORS"
SUBJECTS = "brain.connectors.>"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nats(store):
    port = free_port()
    proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("nats-server did not start")


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_messages(url):
    async def count():
        import nats

        nc = await nats.connect(url, allow_reconnect=False)
        try:
            return (await nc.jetstream().stream_info(STREAM)).state.messages
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await nc.close()
    return asyncio.run(count())


def read_stream(url, start_seq):
    """(event seq, event id, stream timestamp as epoch seconds) of every message from stream sequence `start_seq`."""
    async def read():
        import nats
        from nats.js.api import ConsumerConfig, DeliverPolicy

        nc = await nats.connect(url, allow_reconnect=False)
        found = []
        try:
            js = nc.jetstream()
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
            sub = await js.pull_subscribe(SUBJECTS, durable=f"bench{start_seq}", stream=STREAM, config=config)
            while True:
                try:
                    batch = await sub.fetch(1000, timeout=1)
                except (TimeoutError, asyncio.TimeoutError):
                    return found
                for msg in batch:
                    body = json.loads(msg.data)
                    found.append((body["seq"], msg.headers.get("Nats-Msg-Id"), msg.metadata.timestamp.timestamp()))
                    await msg.ack()
        finally:
            await nc.close()
    return asyncio.run(read())


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def commit_events(count, rate=None):
    """Commit `count` events, each in its own transaction (at `rate` per second if given); {event id: commit time}."""
    from django.db import transaction

    from connectors.events import log as events

    commits = {}
    start = time.perf_counter() + 0.1
    for i in range(count):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        committed = {}
        with transaction.atomic():
            # Registered before publish()'s own callback (the sequencer's pass), so it runs first: right after COMMIT.
            transaction.on_commit(lambda box=committed: box.__setitem__("at", time.time()))
            event = events.publish("connector.message.sent", connector_id="bench_bus",
                                   data={"delivery_id": f"bench-{i}", "length": 42})
        commits[str(event.event_id)] = committed["at"]
    return commits


def check(messages, commits):
    """Missing, duplicated and out-of-order counts of the stream's messages against the committed events."""
    ids = [event_id for _, event_id, _ in messages]
    seqs = [seq for seq, _, _ in messages]
    return {
        "missing": sum(1 for event_id in commits if event_id not in set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "out_of_order": sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a),
    }


def backlog(bridge, url, count, stored):
    os.kill(bridge.pid, signal.SIGSTOP)
    try:
        filled = time.monotonic()
        commits = commit_events(count)
        filled = time.monotonic() - filled
    finally:
        cpu_before = cpu_seconds(bridge.pid)
        os.kill(bridge.pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(lambda: (stream_messages(url) or 0) >= stored + count, 600, "the backlog in the stream")
    cpu = cpu_seconds(bridge.pid) - cpu_before
    drained = time.monotonic() - resumed
    messages = read_stream(url, stored + 1)
    times = [at for _, _, at in messages]
    span = max(times) - min(times)
    emit(bench="bus_bridge", phase="backlog", events=count, batch_size=int(os.environ["NATS_BATCH_SIZE"]),
         events_per_s=round(count / span, 1) if span > 0 else None, first_to_last_ack_s=round(span, 3),
         resume_to_drained_s=round(drained, 3), bridge_cpu_ms_per_event=round(cpu * 1000 / count, 3),
         fill_events_per_s=round(count / filled, 1), **check(messages, commits),
         goal="events_per_s >= 2000")
    return stored + count


def steady(bridge, url, rate, seconds, warmup, stored):
    total = int(rate * (warmup + seconds))
    cpu_before = cpu_seconds(bridge.pid)
    started = time.monotonic()
    commits = commit_events(total, rate)
    achieved = total / (time.monotonic() - started)
    wait_until(lambda: (stream_messages(url) or 0) >= stored + total, 120, "the steady events in the stream")
    cpu = cpu_seconds(bridge.pid) - cpu_before
    messages = read_stream(url, stored + 1)
    acked = {event_id: at for _, event_id, at in messages}
    counted = list(commits.items())[int(rate * warmup):]
    lags = [acked[event_id] - at for event_id, at in counted if event_id in acked]
    emit(bench="bus_bridge", phase="steady", rate_per_s=rate, achieved_rate_per_s=round(achieved, 1),
         events=len(counted), warmup_events_not_counted=total - len(counted), **summary_ms(lags),
         min_ms=round(min(lags) * 1000, 2) if lags else None, bridge_cpu_ms_per_event=round(cpu * 1000 / total, 3), **check(messages, commits),
         ack_time="stream timestamp (nats-server's, when stored, before its publish ack)",
         commit_time="wall clock right after COMMIT (on_commit, before the sequencer's pass)",
         goal="p99_ms < 100")
    return stored + total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="backlog size (0: no backlog phase)")
    parser.add_argument("--rate", type=float, default=200, help="steady phase: events committed per second")
    parser.add_argument("--seconds", type=float, default=10, help="steady phase: measured seconds (0: no steady phase)")
    parser.add_argument("--warmup", type=float, default=1.0, help="steady phase: seconds of events not counted")
    parser.add_argument("--batch-size", type=int, help="NATS_BATCH_SIZE for the bridge (default: the setting's)")
    args = parser.parse_args()
    if not os.path.exists(NATS_SERVER):
        raise SystemExit(f"needs nats-server ({NATS_SERVER} is missing)")

    store = tempfile.mkdtemp(prefix="bench_bus_js_")
    nats_proc, url = start_nats(store)
    extra = {"NATS_URL": url}
    if args.batch_size:
        extra["NATS_BATCH_SIZE"] = str(args.batch_size)
    env = prepare_environment(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE), **extra)
    bridge = None
    try:
        fresh_database(env["DATABASE_URL"])
        setup_django()
        from django.conf import settings

        os.environ.setdefault("NATS_BATCH_SIZE", str(settings.NATS_BATCH_SIZE))
        from connectors import services
        from connectors.permissions import Principal

        services.register_connector(Principal.system_actor("bench", via="bench"), id="bench_bus", kind="locmem",
                                    display_name="Bench bus")
        bridge = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runbridge"], cwd=ROOT, env=env)
        # Settled: connected, the stream made (the register_connector event, if any, published), lease held.
        wait_until(lambda: stream_messages(url) is not None, 60, "the bridge to create the stream")
        time.sleep(1)
        stored = stream_messages(url)
        if args.events:
            stored = backlog(bridge, url, args.events, stored)
        if args.seconds:
            steady(bridge, url, args.rate, args.seconds, args.warmup, stored)
    finally:
        if bridge is not None:
            bridge.terminate()
            try:
                bridge.wait(timeout=15)
            except subprocess.TimeoutExpired:
                bridge.kill()
        nats_proc.terminate()
        nats_proc.wait(timeout=10)
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
