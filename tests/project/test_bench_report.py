"""bench/report.py reads each benchmark's JSON lines into figures with goals, reports a failing
benchmark instead of dropping it, and writes the table and chart; bench/peers.py really sends to
the fake Telegram and counts what the fake received."""
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fakes.telegram_server import FakeTelegram

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load("report")


@pytest.fixture
def peers():
    # peers.py imports its neighbours (common, send_throughput) by name: bench/ goes last on the
    # path, so bench/routing.py can never shadow the routing app.
    sys.path.append(str(BENCH))
    try:
        yield _load("peers")
    finally:
        sys.path.remove(str(BENCH))


def by_name(figures):
    return {fig["name"]: fig for fig in figures}


def test_goals_are_judged_in_their_direction_with_boundaries():
    routing = by_name(report.extract_routing([
        {"bench": "routing", "phase": "seed", "users": 1000},
        {"bench": "routing", "phase": "cold", "decisions": 10, "p50_ms": 1.0, "p99_ms": 2.01},
        {"bench": "routing", "phase": "warm", "decisions": 10, "p50_ms": 0.02, "p99_ms": 2.0, "queries": 0},
    ]))
    assert routing["decide() p99, warm (cached)"]["met"] is True  # ≤ 2 ms: exactly 2 meets it
    assert routing["decide() p99, cold (cache cleared)"]["met"] is False
    ingest = by_name(report.extract_webhook_ingest([
        {"bench": "webhook_ingest", "client": "python", "requests": 100, "concurrency": 4, "ok": 100, "stored": 99,
         "req_per_s": 300.0, "p50_ms": 10.0, "p99_ms": 50.0},
    ]))
    assert ingest["ingest req/s"]["met"] is True  # ≥ 300
    assert ingest["ingest p99"]["met"] is False  # < 50 ms: 50 misses
    assert ingest["acknowledged webhooks not stored"]["value"] == 1
    assert ingest["acknowledged webhooks not stored"]["met"] is False
    assert report.attainment(ingest["ingest req/s"]) == 1.0
    assert report.attainment(ingest["ingest p99"]) == 1.0
    assert report.attainment(ingest["acknowledged webhooks not stored"]) is None  # pass/fail, no scale


def test_dashboard_latency_goal_and_missing_rows_and_the_report_judges_it():
    line = {"bench": "dashboard_latency", "messages": 30, "shown": 29, "missing": 1, "interval_s": 0.2,
            "p50_ms": 40.0, "p99_ms": 1000.0, "max_ms": 1200.0}
    latency, missing = report.extract_dashboard_latency([line])
    assert (latency["value"], latency["met"]) == (1000.0, False)  # < 1,000 ms: exactly 1,000 misses
    assert (missing["value"], missing["met"]) == (1, False)
    latency, missing = report.extract_dashboard_latency([{**line, "p99_ms": 999.9, "missing": 0, "shown": 30}])
    assert latency["met"] is True and missing["met"] is True
    with pytest.raises(LookupError):
        report.extract_dashboard_latency([{"bench": "routing"}])
    # The script exits 1 on a missed goal; the report asks it not to, so a miss is a figure, not a failed run.
    [entry] = [b for b in report.BENCHMARKS if b.name == "dashboard_latency"]
    assert "--no-goal-exit" in entry.full and "--no-goal-exit" in entry.quick
    assert entry.script.exists() and entry.extract is report.extract_dashboard_latency


def test_send_throughput_figures_carry_the_pipeline_rate_for_the_peer_comparison():
    lines = [
        {"bench": "send_throughput", "path": "pipeline", "fake_latency_ms": 30, "messages": 200, "msg_per_s": 60.0,
         "enqueue_to_sent_p50_ms": 70, "enqueue_to_sent_p99_ms": 300},
        {"bench": "send_throughput", "path": "plain_ptb_loop", "fake_latency_ms": 30, "messages": 200,
         "msg_per_s": 30.0},
        {"bench": "send_throughput", "fake_latency_ms": 30, "ratio_vs_plain": 2.0, "goal": 0.8, "meets_goal": True},
    ]
    [fig] = report.extract_send_throughput(lines)
    assert (fig["value"], fig["met"], fig["pipeline_msg_per_s"], fig["fake_latency_ms"]) == (2.0, True, 60.0, 30)
    with pytest.raises(LookupError):
        report.extract_send_throughput(lines[:2])  # no ratio line: nothing to report


def test_the_issue_16_goals_cpu_per_message_apprise_and_offered_load():
    """The ratio goal depends on the fake's latency (≥ 0.8 at once, ≥ 3 at 30 ms), CPU-ms per message
    is a figure with its goal, the pipeline is compared with Apprise from the same run, and the
    offered-load run gives its p99."""
    lines = [
        {"bench": "send_throughput", "path": "pipeline", "fake_latency_ms": 30, "messages": 200, "msg_per_s": 90.0,
         "enqueue_to_sent_p50_ms": 70, "enqueue_to_sent_p99_ms": 150, "cpu_ms_per_msg": 12.5,
         "cpu_ms_enqueuers": 900.0, "cpu_ms_senders": 400.0},
        {"bench": "send_throughput", "path": "plain_ptb_loop", "fake_latency_ms": 30, "messages": 200,
         "msg_per_s": 30.0},
        {"bench": "send_throughput", "fake_latency_ms": 30, "ratio_vs_plain": 3.0},
    ]
    ratio, cpu = report.extract_send_throughput(lines)
    assert (ratio["goal_value"], ratio["met"]) == (3, True)
    assert (cpu["value"], cpu["goal_value"], cpu["met"]) == (12.5, 10, False)
    assert "enqueuers 900.0" in cpu["detail"]
    peers = report.extract_peers([
        {"bench": "peers", "peer": "apprise", "fake_latency_ms": 30, "msg_per_s": 120.0, "messages": 200,
         "received": 200},
    ])
    results = [{"name": "send_throughput", "figures": [ratio, cpu]}, {"name": "peers", "figures": peers}]
    [apprise] = report.apprise_figures(results)
    assert (apprise["value"], apprise["met"]) == (0.75, False)
    assert report.apprise_figures(results[:1]) == []  # no peers run: no comparison
    [latency] = report.extract_send_latency([lines[0]])
    assert (latency["value"], latency["goal_value"], latency["met"]) == (150, 200, True)


def test_a_failing_benchmark_is_reported_with_its_stderr_and_partial_figures(tmp_path):
    script = tmp_path / "breaks.py"
    script.write_text(
        "import json, sys\n"
        "print(json.dumps({'bench': 'routing', 'phase': 'seed', 'users': 5}))\n"
        "print('not json')\n"
        "print('Traceback: the database went away', file=sys.stderr)\n"
        "sys.exit(3)\n")
    broken = report.Benchmark("routing", [], [], path=script, extract=report.extract_routing)
    result = report.run_benchmark(broken, quick=True)
    assert result["status"] == "failed"
    assert result["reason"] == "exited with status 3"
    assert result["stderr_tail"] == ["Traceback: the database went away"]
    assert result["lines"] == [{"bench": "routing", "phase": "seed", "users": 5}]
    assert result["other_output"] == ["not json"]

    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(60)\n")
    result = report.run_benchmark(report.Benchmark("routing", [], [], path=slow, extract=report.extract_routing),
                                  quick=True, timeout=1)
    assert (result["status"], result["reason"]) == ("failed", "timed out after 1 s")
    assert result["seconds"] < 30

    missing = report.Benchmark("chaos", [], [], optional=True, path=tmp_path / "absent.py")
    assert report.run_benchmark(missing, quick=True)["status"] == "skipped"


def test_markdown_and_chart_are_written_for_a_report_with_a_failure(tmp_path):
    ok_lines = [
        {"bench": "send_throughput", "path": "pipeline", "fake_latency_ms": 0, "messages": 10, "msg_per_s": 20.0,
         "enqueue_to_sent_p50_ms": 70, "enqueue_to_sent_p99_ms": 300},
        {"bench": "send_throughput", "path": "plain_ptb_loop", "fake_latency_ms": 0, "messages": 10,
         "msg_per_s": 400.0},
        {"bench": "send_throughput", "fake_latency_ms": 0, "ratio_vs_plain": 0.05},
    ]
    peer_lines = [
        {"bench": "peers", "peer": "apprise", "fake_latency_ms": 0, "messages": 10, "received": 10,
         "msg_per_s": 300.0, "per_message_p50_ms": 3.0, "per_message_p99_ms": 9.0},
    ]
    results = [
        {"name": "send_throughput", "command": "bench/send_throughput.py", "status": "ok", "seconds": 1,
         "lines": ok_lines, "figures": report.extract_send_throughput(ok_lines)},
        {"name": "peers", "command": "bench/peers.py", "status": "ok", "lines": peer_lines,
         "figures": report.extract_peers(peer_lines)},
        {"name": "mcp_latency", "command": "bench/mcp_latency.py", "status": "failed", "lines": [], "figures": [],
         "reason": "exited with status 1", "stderr_tail": ["ConnectionRefusedError: postgres"]},
    ]
    data = {"command": "bench/report.py --quick", "preset": "quick", "only": None, "seconds": 5,
            "load_average_1min": {"start": 0.2, "end": 3.5}, "results": results,
            "machine": {"date": "2026-11-25T00:00:00+00:00", "cpu_count": 2, "platform": "Linux", "python": "3.11",
                        "postgres": "15", "redis": "7", "wrk": False, "commit": "abc123"}}
    report.write_markdown(data, tmp_path / "latest.md")
    report.write_chart(data, tmp_path / "latest.png")
    text = (tmp_path / "latest.md").read_text()
    assert "| `send_throughput` | pipeline ÷ plain PTB loop msg/s, fake answers after 0 ms: **0.05**" in text
    assert "✗ **missed** | apprise 300 msg/s |" in text
    assert "| `mcp_latency` | **failed**: exited with status 1" in text
    assert "ConnectionRefusedError: postgres" in text
    assert "1-minute load average: 0.20 at the start, 3.50 at the end — the machine was doing other work" in text
    assert "| 0 ms | 20 msg/s | — | 300 msg/s (per message p50 3 ms, p99 9 ms) |" in text
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(data)  # the report itself stays JSON


def test_peers_send_through_the_fake_and_are_counted_from_what_it_received(peers):
    from apprise.plugins.telegram import NotifyTelegram

    official = NotifyTelegram.notify_url
    fake = FakeTelegram().start()
    try:
        args = SimpleNamespace(messages=6, chats=3)
        apprise_figures = peers.apprise_run(args, fake)
        calls = fake.calls_to("sendMessage")
        assert [call.param("chat_id") for call in calls] == [5550000000 + i % 3 for i in range(6)]
        assert [call.param("text") for call in calls] == [f"apprise message {i}" for i in range(6)]
        assert NotifyTelegram.notify_url == official  # configuration restored for anything else in the process
        assert (apprise_figures["received"], apprise_figures["refused"]) == (6, 0)
        assert apprise_figures["msg_per_s"] > 0  # gaps between arrivals: ordered, and within the run
        assert apprise_figures["per_message_p50_ms"] <= apprise_figures["per_message_p99_ms"] <= apprise_figures["seconds"] * 1000

        ptb_figures = peers.ptb_run(args, fake)
        assert ptb_figures["received"] == 6
        assert [m["text"] for m in fake.sent] == [f"plain message {i}" for i in range(6)]

        fake.fail("server_error", method="sendMessage", times=1)
        with pytest.raises(SystemExit, match="failed notify at message 0"):
            peers.apprise_run(args, fake)
        assert NotifyTelegram.notify_url == official
    finally:
        fake.stop()
