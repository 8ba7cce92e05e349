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
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# The figures and the writing live in sibling modules; their names stay importable from here (report.<name>).
# bench/ goes on the path however this file is loaded (as a script, or by path from tests/project/test_bench_report.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_figures import (  # noqa: E402, F401
    APPRISE_RATIO_GOAL,
    CPU_MS_PER_MESSAGE_GOAL,
    OPS,
    RATIO_GOALS,
    apprise_figures,
    attainment,
    extract_bus_bridge,
    extract_chaos,
    extract_conversations,
    extract_dashboard_latency,
    extract_event_latency,
    extract_mcp_latency,
    extract_peers,
    extract_routing,
    extract_send_latency,
    extract_send_throughput,
    extract_webhook_ingest,
    figure,
    first,
    select,
)
from report_writing import _format, _peer_cells, _peer_text, write_chart, write_markdown  # noqa: E402, F401

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
