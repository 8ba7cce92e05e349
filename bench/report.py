"""The benchmark report: runs every benchmark in bench/ and the peers (a plain python-telegram-bot
loop and Apprise, on the same loopback fake Telegram), then writes bench/results/latest.json (the
machine, every figure with its goal and whether it is met, and every raw JSON line), latest.md (a
table) and latest.png (each goal-bearing figure as a fraction of its goal, and the send
throughput of the pipeline against the peers).

    .venv/bin/python bench/report.py              # full sizes: the README's commands (long: conversations seeds 1M)
    .venv/bin/python bench/report.py --quick      # small sizes, a few minutes; figures are indicative only
    .venv/bin/python bench/report.py --quick --only send_throughput,peers

Each benchmark runs as its own process (this interpreter, from the project root) with the
environment as given: BENCH_DATABASE_URL and BENCH_REDIS_URL choose the databases, as for the
scripts themselves. A benchmark that fails or times out is reported as failed, with the tail of
its stderr and whatever figures it printed before; the report is written all the same.
The chaos run (bench/chaos.py) is included when that script exists, and noted as skipped when not.
"""
import argparse
import json
import operator
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STDERR_TAIL_LINES = 30


@dataclass
class Benchmark:
    name: str
    full: list
    quick: list
    timeout_full: int = 1800
    timeout_quick: int = 300
    optional: bool = False  # skipped with a note when its script does not exist (yet)
    extract: object = None  # set below, once the extractors are defined
    path: Path | None = None  # the script; bench/<name>.py unless given

    @property
    def script(self):
        return self.path or ROOT / "bench" / f"{self.name}.py"


# The same sizes for the pipeline and the peers, so their msg/s compare at each fake latency.
SEND_FULL = ["--messages", "1000", "--chats", "50", "--latencies-ms", "0,30"]
SEND_QUICK = ["--messages", "200", "--chats", "50", "--latencies-ms", "0,30"]

BENCHMARKS = [
    Benchmark("send_throughput", SEND_FULL + ["--concurrency", "8", "--enqueuers", "4"],
              SEND_QUICK + ["--concurrency", "8", "--enqueuers", "4"]),
    Benchmark("peers", SEND_FULL, SEND_QUICK),
    # Offered load: 100 messages a second against a fake answering after 30 ms, as the real Bot API does.
    Benchmark("send_latency", ["--rate", "100", "--messages", "1000", "--latencies-ms", "30", "--skip-plain"],
              ["--rate", "100", "--messages", "300", "--latencies-ms", "30", "--skip-plain"],
              path=ROOT / "bench" / "send_throughput.py"),
    Benchmark("webhook_ingest", ["--processes", "2", "--concurrency", "4", "--seconds", "15"],
              ["--processes", "2", "--concurrency", "4", "--seconds", "5", "--requests", "1000"]),
    Benchmark("mcp_latency", ["--calls", "300"], ["--calls", "100", "--warmup", "10"]),
    Benchmark("event_latency", ["--rate", "200", "--clients", "50", "--seconds", "10"],
              ["--rate", "200", "--clients", "50", "--seconds", "4"]),
    Benchmark("bus_bridge", ["--events", "5000", "--rate", "200", "--seconds", "10"],
              ["--events", "2000", "--rate", "200", "--seconds", "4"]),
    # The report judges the goal itself: a missed goal is a figure marked missed, not a failed run.
    Benchmark("dashboard_latency", ["--messages", "100", "--interval", "0.2", "--no-goal-exit"],
              ["--messages", "30", "--interval", "0.2", "--no-goal-exit"]),
    Benchmark("routing", ["--users", "100000", "--sample", "2000"], ["--users", "10000", "--sample", "500"]),
    Benchmark("conversations", ["--messages", "1000000"],
              ["--messages", "50000", "--conversations", "2000", "--contexts", "300", "--searches", "200",
               "--rotate-rows", "5000", "--unvacuumed", "5000"],
              timeout_full=3 * 3600, timeout_quick=400),
    Benchmark("chaos", ["--messages", "10000"], ["--messages", "400"], timeout_full=3600, timeout_quick=400,
              optional=True),
]

# --- figures -----------------------------------------------------------------------------------

OPS = {">=": (operator.ge, "≥"), ">": (operator.gt, ">"), "<=": (operator.le, "≤"), "<": (operator.lt, "<"),
       "==": (operator.eq, "=")}


def figure(name, value, unit="", op=None, target=None, detail="", met=None, **extra):
    """One headline figure. With a goal (`op` and `target`), `met` is computed unless given (some
    goals also carry a condition the benchmark checked itself, e.g. no events missing)."""
    result = {"name": name, "value": value, "unit": unit, "detail": detail, **extra}
    if op is not None:
        compare, symbol = OPS[op]
        result.update(goal=f"{symbol} {target}{' ' + unit if unit else ''}", goal_op=op, goal_value=target)
        result["met"] = met if met is not None else (value is not None and bool(compare(value, target)))
    return result


def attainment(fig):
    """How far a figure is from its goal as one number, ≥ 1 when met: measured/goal for figures
    that should be high, goal/measured for ones that should be low. None for exact-count goals
    (lost = 0), which are pass/fail and have no scale."""
    op, target, value = fig.get("goal_op"), fig.get("goal_value"), fig.get("value")
    if op is None or value is None or op == "==":
        return None
    if op in (">=", ">"):
        return value / target if target else None
    return target / value if value > 0 else None


def select(lines, **match):
    return [line for line in lines if all(line.get(k) == v for k, v in match.items())]


def first(lines, **match):
    found = select(lines, **match)
    if not found:
        raise LookupError(f"no line with {match}")
    return found[-1]


# The goals of issue 16: the pipeline against a plain PTB loop (which sends one message at a time, so a
# latency-bound loop is what a concurrent pipeline should beat several times over) and against Apprise.
RATIO_GOALS = {0: 0.8, 30: 3}
APPRISE_RATIO_GOAL = 1.0
CPU_MS_PER_MESSAGE_GOAL = 10


def extract_send_throughput(lines):
    figures = []
    for ratio in [line for line in lines if "ratio_vs_plain" in line]:
        latency = ratio["fake_latency_ms"]
        pipeline = first(lines, path="pipeline", fake_latency_ms=latency)
        plain = first(lines, path="plain_ptb_loop", fake_latency_ms=latency)
        goal = ratio.get("goal", RATIO_GOALS.get(latency, 0.8))
        figures.append(figure(
            f"pipeline ÷ plain PTB loop msg/s, fake answers after {latency} ms", ratio["ratio_vs_plain"], "", ">=", goal,
            detail=f"pipeline {pipeline['msg_per_s']} msg/s (enqueue→sent p50 {pipeline['enqueue_to_sent_p50_ms']} ms, "
                   f"p99 {pipeline['enqueue_to_sent_p99_ms']} ms), plain loop {plain['msg_per_s']} msg/s, "
                   f"{pipeline['messages']} messages",
            fake_latency_ms=latency, pipeline_msg_per_s=pipeline["msg_per_s"]))
        if "cpu_ms_per_msg" in pipeline:
            parts = ", ".join(f"{key[len('cpu_ms_'):]} {value}" for key, value in pipeline.items()
                              if key.startswith("cpu_ms_") and key != "cpu_ms_per_msg")
            figures.append(figure(
                f"CPU-ms per delivered message, all processes, fake answers after {latency} ms",
                pipeline["cpu_ms_per_msg"], "ms", "<=", CPU_MS_PER_MESSAGE_GOAL,
                detail=f"CPU-ms over the run by part: {parts}" if parts else "", fake_latency_ms=latency))
    if not figures:
        raise LookupError("no ratio_vs_plain line")
    return figures


def extract_send_latency(lines):
    pipeline = first(lines, bench="send_throughput", path="pipeline")
    return [figure(
        "enqueue → sent p99 at 100 msg/s offered, fake answers after 30 ms", pipeline["enqueue_to_sent_p99_ms"], "ms",
        "<", 200, detail=f"p50 {pipeline['enqueue_to_sent_p50_ms']} ms; achieved {pipeline['msg_per_s']} msg/s over "
                         f"{pipeline['messages']} messages")]


def apprise_figures(results):
    """The pipeline's msg/s over Apprise's at each fake latency, from the same report run (goal ≥ 1)."""
    by_name = {result["name"]: result for result in results}
    send, peers = by_name.get("send_throughput"), by_name.get("peers")
    if not send or not peers:
        return []
    apprise = {fig["fake_latency_ms"]: fig for fig in peers["figures"] if fig.get("peer") == "apprise"}
    figures = []
    for fig in send["figures"]:
        latency, pipeline = fig.get("fake_latency_ms"), fig.get("pipeline_msg_per_s")
        peer = apprise.get(latency)
        if pipeline is None or not peer or not peer.get("value"):
            continue
        figures.append(figure(
            f"pipeline ÷ Apprise msg/s, fake answers after {latency} ms", round(pipeline / peer["value"], 3), "",
            ">=", APPRISE_RATIO_GOAL, detail=f"pipeline {pipeline} msg/s, Apprise {peer['value']} msg/s",
            fake_latency_ms=latency))
    return figures


def extract_peers(lines):
    figures = []
    for line in select(lines, bench="peers"):
        figures.append(figure(
            f"{line['peer']} msg/s, fake answers after {line['fake_latency_ms']} ms", line["msg_per_s"], "msg/s",
            detail=f"{line['received']}/{line['messages']} received by the fake; per message p50 "
                   f"{line.get('per_message_p50_ms')} ms, p99 {line.get('per_message_p99_ms')} ms",
            peer=line["peer"], fake_latency_ms=line["fake_latency_ms"],
            per_message_p50_ms=line.get("per_message_p50_ms"), per_message_p99_ms=line.get("per_message_p99_ms")))
    if not figures:
        raise LookupError("no peers line")
    return figures


def extract_webhook_ingest(lines):
    line = first(lines, bench="webhook_ingest")
    if line["client"] == "wrk":
        acknowledged = line["requests"] - line["non_2xx"]
        how = f"wrk, {line['processes']} daphne processes, {line['concurrency']} connections"
    else:
        acknowledged = line["ok"]
        how = f"python client ({line['requests']} requests, {line['concurrency']} connections; wrk not installed)"
    unstored = max(0, acknowledged - line["stored"])
    return [
        figure("ingest req/s", line["req_per_s"], "req/s", ">=", 300, detail=how),
        figure("ingest p99", line["p99_ms"], "ms", "<", 50, detail=f"p50 {line['p50_ms']} ms"),
        figure("acknowledged webhooks not stored", unstored, "", "==", 0,
               detail=f"{acknowledged} acknowledged, {line['stored']} stored"),
    ]


def extract_mcp_latency(lines):
    figures = []
    for line in select(lines, bench="mcp_latency", transport="stdio"):
        http = select(lines, bench="mcp_latency", transport="streamable-http", tool=line["tool"])
        detail = f"p99 {line['p99_ms']} ms over {line['calls']} calls"
        if http:
            detail += f"; streamable HTTP p50 {http[-1]['p50_ms']} ms, p99 {http[-1]['p99_ms']} ms"
        figures.append(figure(f"MCP {line['tool']} p50 (stdio)", line["p50_ms"], "ms", "<", 10, detail=detail))
    if not figures:
        raise LookupError("no stdio line")
    return figures


def extract_event_latency(lines):
    line = first(lines, bench="event_latency")
    return [
        figure("commit → websocket client p99", line["p99_ms"], "ms", "<", 50,
               detail=f"p50 {line['p50_ms']} ms, max {line['max_ms']} ms; {line['rate_per_s']} events/s to "
                      f"{line['clients']} clients, {line['deliveries']} deliveries"),
        figure("events missing or out of order", line["missing"] + line["out_of_order"], "", "==", 0,
               detail=f"missing {line['missing']}, out of order {line['out_of_order']}"),
    ]


def extract_bus_bridge(lines):
    """bench/bus_bridge.py: the backlog's events/s through `runbridge` and the steady phase's commit → ack lag."""
    figures = []
    for line in select(lines, bench="bus_bridge", phase="backlog")[-1:]:
        figures.append(figure(
            "bus bridge events/s to JetStream (backlog)", line["events_per_s"], "events/s", ">=", 2000,
            detail=f"{line['events']} events, batch {line['batch_size']}; bridge CPU "
                   f"{line['bridge_cpu_ms_per_event']} ms/event"))
    for line in select(lines, bench="bus_bridge", phase="steady")[-1:]:
        figures.append(figure(
            "commit → JetStream ack p99", line["p99_ms"], "ms", "<", 100,
            detail=f"p50 {line['p50_ms']} ms, max {line['max_ms']} ms; {line['rate_per_s']} events/s offered, "
                   f"{line['events']} events"))
    phases = select(lines, bench="bus_bridge")
    if not figures:
        raise LookupError("no bus_bridge line")
    lost = sum(line["missing"] + line["duplicates"] + line["out_of_order"] for line in phases)
    figures.append(figure("bus events missing, duplicated or out of order", lost, "", "==", 0))
    return figures


def extract_dashboard_latency(lines):
    """bench/dashboard_latency.py: REST send → the message's row in the dashboard's DOM, in headless Chromium."""
    line = first(lines, bench="dashboard_latency")
    return [
        figure("REST send → dashboard feed row p99", line["p99_ms"], "ms", "<", 1000,
               detail=f"p50 {line['p50_ms']} ms, max {line['max_ms']} ms; {line['shown']} messages, one every "
                      f"{line['interval_s']} s"),
        figure("messages missing from the dashboard", line["missing"], "", "==", 0),
    ]


def extract_routing(lines):
    warm, cold = first(lines, bench="routing", phase="warm"), first(lines, bench="routing", phase="cold")
    seed = select(lines, bench="routing", phase="seed")
    size = f"{seed[-1]['users']:,} people" if seed else ""
    return [
        figure("decide() p99, warm (cached)", warm["p99_ms"], "ms", "<=", 2,
               detail=f"p50 {warm['p50_ms']} ms, {warm['queries']} queries; {size}"),
        figure("decide() p99, cold (cache cleared)", cold["p99_ms"], "ms", "<=", 2,
               detail=f"p50 {cold['p50_ms']} ms; {cold['decisions']} decisions"),
    ]


def extract_conversations(lines):
    context = first(lines, bench="conversations", phase="get_context")
    search = first(lines, bench="conversations", phase="search")
    rotate = first(lines, bench="conversations", phase="rotate_keys")
    seed = select(lines, bench="conversations", phase="seed")
    size = f"{seed[-1]['messages']:,} messages" if seed else ""
    return [
        figure("get_context p99", context["p99_ms"], "ms", "<", 5, detail=f"p50 {context['p50_ms']} ms; {size}"),
        figure("search p95", search["p95_ms"], "ms", "<", 50,
               detail=f"p50 {search['p50_ms']} ms, p99 {search['p99_ms']} ms; {search['queries']} queries"),
        figure("rotate_keys rate", rotate["rows_per_s"], "rows/s",
               detail=f"{rotate['rows']:,} rows; whole table ≈ {rotate['full_table_estimate_s']} s"),
    ]


def extract_chaos(lines):
    """bench/chaos.py's verdict: nothing lost, no inbound duplicates, outbound duplicates within
    their bound (at most one per worker killed between the platform's answer and the commit)."""
    verdict = first(lines, bench="chaos", part="verdict")
    run = select(lines, bench="chaos", part="run")
    chaos = select(lines, bench="chaos", part="chaos")
    context = []
    if run:
        context.append(f"{run[-1].get('messages'):,} messages, settled {run[-1].get('settled')}")
    if chaos:
        kills = {k: v for k, v in chaos[-1].items() if isinstance(v, int) and not isinstance(v, bool)}
        context.append(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kills.items()))
    bound = verdict.get("outbound_duplicate_bound")
    return [
        figure("messages lost", verdict["lost"], "", "==", 0, detail="; ".join(context)),
        figure("inbound duplicates", verdict["inbound_duplicates"], "", "==", 0),
        figure("outbound duplicates within their bound", int(bool(verdict["bound_held"])), "", "==", 1,
               detail=f"{verdict['outbound_duplicates']} outbound duplicates, bound {bound}; 1 = held"),
        figure("verdict ok", int(bool(verdict["ok"])), "", "==", 1,
               detail="; ".join(verdict.get("reasons") or []) or "1 = ok"),
    ]


for _benchmark in BENCHMARKS:
    _benchmark.extract = globals()[f"extract_{_benchmark.name}"]
del _benchmark

# --- running ---------------------------------------------------------------------------------


def parse_output(stdout):
    lines, other = [], []
    for raw in stdout.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            parsed = json.loads(raw)
        except ValueError:
            other.append(raw)
            continue
        (lines if isinstance(parsed, dict) else other).append(parsed if isinstance(parsed, dict) else raw)
    return lines, other


def run_benchmark(benchmark, quick, timeout=None, env=None, python=sys.executable):
    """Run one benchmark to completion (or its timeout) and read its figures."""
    args = benchmark.quick if quick else benchmark.full
    script = benchmark.script
    command = [python, str(script.relative_to(ROOT) if script.is_relative_to(ROOT) else script), *args]
    result = {"name": benchmark.name, "command": " ".join(command[1:]), "status": "ok", "figures": [], "lines": []}
    if not script.exists():
        if benchmark.optional:
            result.update(status="skipped", reason=f"{result['command'].split()[0]} does not exist")
            return result
        raise SystemExit(f"{script} is missing")
    timeout = timeout or (benchmark.timeout_quick if quick else benchmark.timeout_full)
    started = time.monotonic()
    # A session of its own, so a timeout can end the benchmark together with its daphne and
    # worker children (by this process group's id, nothing else).
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stdout, stderr = _stop_group(process)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["returncode"] = process.returncode
    result["lines"], other = parse_output(stdout)
    if other:
        result["other_output"] = other[-STDERR_TAIL_LINES:]
    try:
        result["figures"] = benchmark.extract(result["lines"])
    except (LookupError, TypeError) as exc:
        extract_error = f"its output had no figures to report ({exc})"
    else:
        extract_error = None
    if timed_out:
        result.update(status="failed", reason=f"timed out after {timeout} s")
    elif process.returncode < 0:
        result.update(status="failed", reason=f"killed by signal {-process.returncode}")
    elif process.returncode != 0:
        result.update(status="failed", reason=f"exited with status {process.returncode}")
    elif extract_error:
        result.update(status="failed", reason=extract_error)
    if result["status"] != "ok":
        result["stderr_tail"] = stderr.splitlines()[-STDERR_TAIL_LINES:]
    return result


def _stop_group(process):
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return process.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return "", ""


# --- the machine -------------------------------------------------------------------------------


def _command_output(command):
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_info():
    database = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/brain_bench")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    redis_version = None
    try:
        import redis

        redis_version = redis.Redis.from_url(redis_url, socket_timeout=5).info("server").get("redis_version")
    except Exception:  # noqa: BLE001 - the report says "unknown" rather than failing on it
        pass
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    changed = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": _command_output(["psql", database.rsplit("/", 1)[0] + "/postgres", "-tAc", "SHOW server_version"]),
        "redis": redis_version,
        "wrk": _command_output(["sh", "-c", "command -v wrk"]) is not None,
        "commit": f"{commit}{' (with uncommitted changes)' if changed else ''}" if commit else None,
    }


# --- writing -----------------------------------------------------------------------------------


def _format(value):
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def _peer_cells(results):
    """{fake latency: {peer: figure}} from the peers benchmark."""
    cells = {}
    for result in results:
        if result["name"] == "peers":
            for fig in result["figures"]:
                cells.setdefault(fig["fake_latency_ms"], {})[fig["peer"]] = fig
    return cells


def _peer_text(fig, peers):
    at = peers.get(fig.get("fake_latency_ms"), {})
    parts = [f"{name.replace('_', ' ')} {_format(peer['value'])} msg/s" for name, peer in at.items()]
    return "; ".join(parts) if parts else ""


def write_markdown(report, path):
    machine, results = report["machine"], report["results"]
    peers = _peer_cells(results)
    load = report["load_average_1min"]
    out = ["# Benchmark report", ""]
    out.append(f"Generated {machine['date']} by `{report['command']}` at commit {machine['commit'] or 'unknown'}, "
               f"in {report['seconds']:.0f} s.")
    out.append(f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, "
               f"PostgreSQL {machine['postgres'] or 'unknown'}, Redis {machine['redis'] or 'unknown'}, "
               f"wrk {'installed' if machine['wrk'] else 'not installed (ingest uses the Python client)'}.")
    out.append("")
    busy = max(load["start"], load["end"]) > (machine["cpu_count"] or 1) * 0.5
    out.append(f"1-minute load average: {load['start']:.2f} at the start, {load['end']:.2f} at the end"
               + (" — the machine was doing other work as well, so the figures are noisier (and lower) than on a "
                  "quiet machine." if busy else "."))
    if report["preset"] == "quick":
        out.append("")
        out.append("**Quick run**: small sizes (`--quick`), to check that everything runs; the figures are indicative "
                   "only. The goals are set for the full sizes (`bench/report.py` without `--quick`).")
    if report.get("only"):
        out.append("")
        out.append(f"Only these benchmarks were run: {', '.join(report['only'])}.")
    out += ["", "| benchmark | figure | goal | met | peer figures |", "|---|---|---|---|---|"]
    for result in results:
        if result["name"] == "peers":
            continue
        if result["status"] == "skipped":
            out.append(f"| `{result['name']}` | skipped: {result['reason']} | | | |")
            continue
        if result["status"] == "failed":
            out.append(f"| `{result['name']}` | **failed**: {result['reason']} (see below) | | ✗ | |")
        for fig in result["figures"]:
            value = f"**{_format(fig['value'])}**{' ' + fig['unit'] if fig['unit'] else ''}"
            if fig.get("detail"):
                value += f" — {fig['detail']}"
            met = {True: "✓ met", False: "✗ **missed**"}.get(fig.get("met"), "")
            out.append(f"| `{result['name']}` | {fig['name']}: {value} | {fig.get('goal', '')} | {met} | "
                       f"{_peer_text(fig, peers) if result['name'] == 'send_throughput' else ''} |")

    out += ["", "## Sending: the pipeline against the peers", "",
            "The same fake Telegram (a real HTTP server on loopback) answers every sendMessage after the given delay, "
            "as the real Bot API's round trip does. The pipeline is `send_message` → Celery worker → fake, with every "
            "message committed and audited; the peers send one message at a time. Peer figures are counted from the "
            "calls the fake received; per message = the gap between consecutive arrivals.", "",
            "| fake answers after | BRAIN Connectors pipeline | plain python-telegram-bot loop | Apprise (`tgram://`) |",
            "|---|---|---|---|"]
    pipeline = {fig["fake_latency_ms"]: fig for result in results if result["name"] == "send_throughput"
                for fig in result["figures"]}
    for latency in sorted(set(pipeline) | set(peers)):
        row = [f"{latency} ms"]
        fig = pipeline.get(latency)
        row.append(f"{_format(fig['pipeline_msg_per_s'])} msg/s" if fig else "—")
        for name in ("plain_ptb_loop", "apprise"):
            peer = peers.get(latency, {}).get(name)
            row.append(f"{_format(peer['value'])} msg/s (per message p50 {_format(peer['per_message_p50_ms'])} ms, "
                       f"p99 {_format(peer['per_message_p99_ms'])} ms)" if peer else "—")
        out.append("| " + " | ".join(row) + " |")

    trouble = [result for result in results if result["status"] != "ok"]
    if trouble:
        out += ["", "## Failed or skipped", ""]
        for result in trouble:
            out.append(f"- `{result['name']}`: {result['status']}, {result['reason']}.")
            if result.get("stderr_tail"):
                out += ["", "  ```", *[f"  {line}" for line in result["stderr_tail"][-15:]], "  ```"]
    out += ["", "## Commands", ""]
    for result in results:
        took = f" ({result['seconds']} s)" if "seconds" in result else ""
        out.append(f"- `{result['command']}`{took}")
    out += ["", "Raw JSON lines and machine details: [latest.json](latest.json).", "", "![chart](latest.png)", ""]
    path.write_text("\n".join(out))


def write_chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = report["results"]
    bars = [(f"{result['name']}: {fig['name']}", attainment(fig), fig) for result in results
            for fig in result["figures"] if attainment(fig) is not None]
    checks = [fig for result in results for fig in result["figures"] if fig.get("goal_op") == "=="]
    peers = _peer_cells(results)
    pipeline = {fig["fake_latency_ms"]: fig["pipeline_msg_per_s"] for result in results
                if result["name"] == "send_throughput" for fig in result["figures"]}
    latencies = sorted(set(pipeline) | set(peers))

    height = max(4.5, 0.55 * len(bars) + 2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, height), gridspec_kw={"width_ratios": [3, 2]})
    if bars:
        labels = [label for label, _, _ in bars][::-1]
        values = [value for _, value, _ in bars][::-1]
        colours = ["#2e7d32" if f.get("met") else "#c62828" for _, _, f in bars][::-1]
        positions = range(len(bars))
        left.barh(positions, values, color=colours)
        left.set_xscale("log")
        left.axvline(1, color="black", linewidth=1)
        left.set_yticks(list(positions), labels, fontsize=8)
        for pos, (_, value, f) in zip(positions, bars[::-1], strict=True):
            text = f"{_format(f['value'])}{' ' + f['unit'] if f['unit'] else ''} (goal {f['goal']})"
            left.annotate(text, (value, pos), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
        lo, hi = min(values + [1]), max(values + [1])
        left.set_xlim(lo / 2, hi * 20)  # room for the value labels right of the longest bar
        left.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        left.set_xlabel("fraction of goal (log scale; ≥ 1 = met: measured/goal for rates, goal/measured for times)")
    met_checks = sum(1 for f in checks if f.get("met"))
    left.set_title(f"Figures against their goals (green met, red missed); exact-count checks met: "
                   f"{met_checks}/{len(checks)}", fontsize=10)

    series = [("BRAIN Connectors pipeline", lambda lat: pipeline.get(lat), "#1565c0"),
              ("plain PTB loop", lambda lat: peers.get(lat, {}).get("plain_ptb_loop", {}).get("value"), "#9e9e9e"),
              ("Apprise", lambda lat: peers.get(lat, {}).get("apprise", {}).get("value"), "#ef6c00")]
    width = 0.8 / len(series)
    for index, (label, value_at, colour) in enumerate(series):
        xs = [i + (index - 1) * width for i in range(len(latencies))]
        ys = [value_at(lat) or 0 for lat in latencies]
        drawn = right.bar(xs, ys, width, label=label, color=colour)
        right.bar_label(drawn, labels=[_format(y) if y else "n/a" for y in ys], fontsize=7)
    right.set_xticks(range(len(latencies)), [f"fake answers after {lat} ms" for lat in latencies])
    right.set_ylabel("messages per second")
    right.set_yscale("log")
    tallest = max([value_at(lat) or 0 for _, value_at, _ in series for lat in latencies] + [10])
    right.set_ylim(1, tallest * 3)  # bars grow from 1 msg/s, so their heights compare on the log scale
    right.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))
    right.set_title("Send throughput on the same fake Telegram", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"BRAIN Connectors benchmarks — {report['preset']} run, {report['machine']['date']}, "
                 f"load {report['load_average_1min']['start']:.1f}→{report['load_average_1min']['end']:.1f}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole report in a few minutes")
    parser.add_argument("--only", help="comma-separated benchmarks to run: " + ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--timeout", type=int, help="seconds per benchmark (default: per benchmark and preset)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rewrite latest.md and latest.png from the output directory's latest.json")
    args = parser.parse_args(argv)
    if args.render_only:
        report = json.loads((args.output_dir / "latest.json").read_text())
        write_markdown(report, args.output_dir / "latest.md")
        write_chart(report, args.output_dir / "latest.png")
        return 0
    names = [b.name for b in BENCHMARKS]
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    if only:
        unknown = [name for name in only if name not in names]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = [b for b in BENCHMARKS if not only or b.name in only]

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    machine = machine_info()
    results = []
    for benchmark in chosen:
        print(f"report: running {benchmark.name} …", file=sys.stderr, flush=True)
        result = run_benchmark(benchmark, args.quick, args.timeout)
        print(f"report: {benchmark.name} {result['status']}"
              + (f" in {result['seconds']} s" if "seconds" in result else "")
              + (f": {result['reason']}" if result.get("reason") else ""), file=sys.stderr, flush=True)
        results.append(result)
    for result in results:
        if result["name"] == "send_throughput":  # the comparison needs the peers' run too
            result["figures"] += apprise_figures(results)
    report = {
        "command": " ".join(["bench/report.py", *(argv if argv is not None else sys.argv[1:])]),
        "preset": "quick" if args.quick else "full",
        "only": only,
        "machine": machine,
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_markdown(report, args.output_dir / "latest.md")
    write_chart(report, args.output_dir / "latest.png")
    missed = [f"{r['name']}: {f['name']}" for r in results for f in r["figures"] if f.get("met") is False]
    failed = [r["name"] for r in results if r["status"] == "failed"]
    print(f"report: wrote {args.output_dir}/latest.{{json,md,png}}; {len(failed)} failed, {len(missed)} goals missed",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
