"""Inbound ingest: real-format Telegram webhooks POSTed to daphne, each persisted before its 200,
on PostgreSQL (BRAIN tasks go to Redis; no worker runs, so only ingest is measured).
Prints req/s and p50/p99 latency (goal: ≥ 300 req/s with p99 < 50 ms) and checks that every
acknowledged update is in the database.

    .venv/bin/python bench/webhook_ingest.py --requests 3000 --concurrency 16
"""
import argparse
import json
import shutil
import subprocess
import sys
import threading
import time

import httpx
from common import ROOT, emit, fresh_database, prepare_environment, setup_django, summary_ms

TOKEN = "7000000001:AAH-bench-token-0123456789abcdefghij"
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "telegram" / "message_text.json").read_text())


def start_daphne(env, port, processes=1):
    """`processes` daphne processes, one per core, on ports port, port+1, …, as they would run
    behind a load balancer that spreads connections evenly. (Sharing one listening socket is
    not even: Twisted accepts a whole burst of connections in whichever process wakes first.)"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port + i), "brain_connectors.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i in range(processes)
    ]
    for i in range(processes):
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port + i}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            for proc in procs:
                proc.kill()
            raise SystemExit("daphne did not start")
    return procs


def load(url, secret, total, concurrency, first_id=0):
    latencies, failures = [], []
    counter = iter(range(total))
    lock = threading.Lock()

    def worker():
        with httpx.Client(timeout=30) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                update = json.loads(json.dumps(FIXTURE))
                update["update_id"] = 900000000 + first_id + i
                update["message"]["message_id"] = 100000 + first_id + i
                body = json.dumps(update).encode()
                started = time.perf_counter()
                r = client.post(url, content=body, headers={
                    "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret})
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies if r.status_code == 200 else failures).append(elapsed if r.status_code == 200 else r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, failures


WRK_SCRIPT = """
function init(args)
  n = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Telegram-Bot-Api-Secret-Token"] = "%(secret)s"
end
function request()
  n = n + 1
  local uid = 500000000 + %(offset)d + n
  return wrk.format(nil, nil, nil, string.format([[%(template)s]], uid, uid))
end
"""


def wrk_load(urls, secret, seconds, connections):
    """Load from native processes (wrk), so a Python client does not eat the CPU: one wrk per
    daphne process, all at once, the connections split evenly. The combined p99 is reported
    as the worst process's p99, which bounds it from above (at most 1% of each process's
    requests are slower than its own p99)."""
    import tempfile

    template = dict(FIXTURE)
    template = json.dumps({**template, "update_id": 0, "message": {**FIXTURE["message"], "message_id": 0}})
    template = template.replace('"update_id": 0', '"update_id": %d').replace('"message_id": 0', '"message_id": %d')
    runs = []
    for index, url in enumerate(urls):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % {"secret": secret, "template": template, "offset": index * 100_000_000})
        per_process = max(1, connections // len(urls))
        runs.append(subprocess.Popen(
            ["wrk", "-t1", f"-c{per_process}", f"-d{seconds}s", "--latency", "-s", script.name, url],
            stdout=subprocess.PIPE, text=True,
        ))
    outputs = [run.communicate()[0] for run in runs]
    if any(run.returncode for run in runs):
        raise SystemExit("wrk failed:\n" + "\n".join(outputs))
    parsed = [_parse_wrk(out) for out in outputs]
    return {
        "requests": sum(p["requests"] for p in parsed),
        "non_2xx": sum(p["non_2xx"] for p in parsed),
        "req_per_s": round(sum(p["req_per_s"] for p in parsed), 1),
        "p50_ms": max(p["p50_ms"] for p in parsed),
        "p99_ms": max(p["p99_ms"] for p in parsed),
    }


def _parse_wrk(out):
    import re

    def ms(label):
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 2)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--seconds", type=int, default=15, help="wrk run length")
    parser.add_argument("--processes", type=int, default=1, help="daphne processes, one port each")
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()

    env = prepare_environment(PUBLIC_BASE_URL="https://bench.example.org")
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from connectors import services
    from connectors.models import Connector, InboundMessage
    from connectors.permissions import Principal
    from tests.fakes.telegram_server import FakeTelegram

    fake = FakeTelegram().start()
    system = Principal.system_actor("bench", via="bench")
    services.register_connector(system, id="tg_ingest", kind="telegram", display_name="Ingest",
                                config={"mode": "webhook", "api_base_url": fake.url}, credentials={"bot_token": TOKEN})
    services.start_connector(system, "tg_ingest")
    secret = Connector.objects.get(pk="tg_ingest").platform_secret
    servers = start_daphne(env, args.port, args.processes)
    try:
        urls = [f"http://127.0.0.1:{args.port + i}/webhooks/telegram/tg_ingest/" for i in range(args.processes)]
        url = urls[0]
        load(url, secret, min(200, args.requests), args.concurrency)  # warm-up (its rows are counted too)
        warm = InboundMessage.objects.count()
        if args.client == "wrk":
            figures = wrk_load(urls, secret, args.seconds, args.concurrency)
            stored = InboundMessage.objects.count() - warm
            emit(bench="webhook_ingest", client="wrk", processes=args.processes, concurrency=args.concurrency,
                 stored=stored,
                 all_acknowledged_stored=stored >= figures["requests"] - figures["non_2xx"], **figures,
                 goal="≥300 req/s, p99 < 50 ms")
            return
        seconds, latencies, failures = load(url, secret, args.requests, args.concurrency, first_id=10_000_000)
        stored = InboundMessage.objects.count() - warm
    finally:
        for server in servers:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        fake.stop()
    emit(bench="webhook_ingest", client="python", requests=args.requests, concurrency=args.concurrency,
         ok=len(latencies), failed=len(failures), stored=stored, seconds=round(seconds, 3),
         req_per_s=round(len(latencies) / seconds, 1), **summary_ms(latencies), goal="≥300 req/s, p99 < 50 ms")


if __name__ == "__main__":
    main()
