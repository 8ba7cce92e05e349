"""The NATS JetStream bridge (`manage.py runbridge`) against a real nats-server of its own per test."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from connectors.events import bus_bridge
from connectors.events.log import publish
from connectors.models import BusCursor, Event
from tests.conftest import BASE_DIR, free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason=f"needs nats-server ({NATS_SERVER} is missing)"),
]
nats = pytest.importorskip("nats")


class NatsServer:
    """One nats-server with JetStream on 127.0.0.1, stoppable and restartable on the same port and store."""

    def __init__(self, store, *args):
        self.port, self.store, self.args, self.proc = free_port(), store, args, None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
                                      str(self.store), *self.args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "js")
    server.start()
    yield server
    server.stop()


async def _js(url, token=None):
    nc = await nats.connect(url, token=token, allow_reconnect=False)
    return nc, nc.jetstream()


def read_stream(url, stream="BRAIN_CONNECTORS", subjects="brain.connectors.>", token=None):
    """Everything in the stream, in stream order, through a JetStream pull consumer."""
    async def read():
        nc, js = await _js(url, token)
        try:
            sub = await js.pull_subscribe(subjects, durable=f"test{uuid.uuid4().hex[:8]}", stream=stream)
            found = []
            while True:
                try:
                    batch = await sub.fetch(500, timeout=1)
                except TimeoutError:  # nats-py's fetch raises its own or asyncio's: nothing more to read
                    return found
                for msg in batch:
                    await msg.ack()
                    found.append((msg.subject, dict(msg.headers or {}), json.loads(msg.data)))
        finally:
            await nc.close()
    return asyncio.run(read())


def stream_count(url, stream="BRAIN_CONNECTORS"):
    async def count():
        nc, js = await _js(url)
        try:
            return (await js.stream_info(stream)).state.messages
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()
    return asyncio.run(count())


def make_events(n, start=0):
    """n committed events, read back numbered (on PostgreSQL the sequencer gives `seq` after commit)."""
    ids = [publish("connector.health.check", connector_id=f"c{start + i}", data={"n": start + i, "ok": True}).pk
           for i in range(n)]
    events = list(Event.objects.filter(pk__in=ids).order_by("seq"))
    assert len(events) == n and all(e.seq is not None for e in events)
    return events


def bridge_env(server, **extra):
    return {"NATS_URL": server.url, "NATS_BATCH_SIZE": "5", **extra}


def start_bridge(subprocess_env, env, *args):
    return subprocess.Popen([sys.executable, str(BASE_DIR / "manage.py"), "runbridge", *args],
                            env={**subprocess_env, **env}, cwd=BASE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_exactly_once_in_order(messages, events):
    assert [m[2]["seq"] for m in messages] == [e.seq for e in events]
    assert [m[1]["Nats-Msg-Id"] for m in messages] == [str(e.event_id) for e in events]


def test_publishes_every_committed_event_in_seq_order(manage, nats_server):
    events = make_events(12)
    result = manage("runbridge", "--once", env=bridge_env(nats_server))
    assert result.returncode == 0, result.stderr
    messages = read_stream(nats_server.url)
    assert_exactly_once_in_order(messages, events)
    subject, headers, body = messages[0]
    assert subject == "brain.connectors.connector.health.check"
    assert body == events[0].envelope() | {"time": body["time"]}
    assert body["specversion"] == "1.0" and body["data"] == {"n": 0, "ok": True}
    assert BusCursor.objects.get(stream="BRAIN_CONNECTORS").last_seq == events[-1].seq


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's")
def test_a_caught_up_bridge_is_woken_by_the_sequencers_notify(transactional_db, nats_server, settings, monkeypatch):
    """With its safety-net poll set to ten minutes, only the NOTIFY that a sequencing pass sends at commit can bring
    new events to JetStream before the test gives up."""
    monkeypatch.setattr(bus_bridge, "IDLE_POLL_LISTENING", 600)
    settings.NATS_URL = nats_server.url
    bridge, loops = bus_bridge.Bridge(interval=5, lease_seconds=30), []

    async def run():
        loops.append(asyncio.get_running_loop())
        await bridge.run()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    try:
        wait_for(lambda: bridge.listener.listening, what="the bridge to LISTEN")
        events = make_events(3)
        wait_for(lambda: stream_count(nats_server.url) == 3, timeout=60, what="the NOTIFY to wake the bridge")
        # Idle again first: committed sooner, the two could ride the pass that follows the first batch, no NOTIFY needed.
        wait_for(lambda: bridge.idle, what="the bridge to be idle again")
        more = make_events(2, start=3)
        wait_for(lambda: stream_count(nats_server.url) == 5, timeout=60, what="a second NOTIFY")
    finally:
        loops[0].call_soon_threadsafe(bridge.stop)
        thread.join(30)
    assert not thread.is_alive()
    assert bridge.wakeups["notify"] >= 2 and bridge.wakeups["poll"] == 0
    assert_exactly_once_in_order(read_stream(nats_server.url), events + more)
    assert not bridge.listener.listening  # closed with the bridge


def test_kill_9_mid_batch_then_restart_delivers_each_event_once_in_order(subprocess_env, manage, nats_server):
    events = make_events(1000)
    env = bridge_env(nats_server)
    proc = start_bridge(subprocess_env, env, "--lease-seconds", "2", "--interval", "0.5")
    try:
        wait_for(lambda: stream_count(nats_server.url) >= 20, what="some acknowledged publishes")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert stream_count(nats_server.url) < len(events), "the bridge finished before the kill; kill earlier"
    # The restarted bridge waits out the dead one's lease, then re-publishes from the cursor.
    result = manage("runbridge", "--once", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_exactly_once_in_order(read_stream(nats_server.url), events)
    # The restarted bridge took the dead one's lease over, on the record.
    dead, restarted = AuditEvent.objects.filter(action="bus.lease_taken", target_id="BRAIN_CONNECTORS").order_by("id")
    assert restarted.details["previous_owner"] == dead.details["lease_owner"] != restarted.details["lease_owner"]
    # A crash between JetStream's ack and the cursor's UPDATE, at its worst: the whole log goes out again,
    # and JetStream's de-duplication by Nats-Msg-Id drops every copy.
    BusCursor.objects.filter(stream="BRAIN_CONNECTORS").update(last_seq=0)
    assert manage("runbridge", "--once", env=env, timeout=120).returncode == 0
    assert_exactly_once_in_order(read_stream(nats_server.url), events)


def bus_lag_everywhere(user):
    """The bridge's lag as /metrics and the dashboard's state report it: ({stream: lag}, [dashboard rows])."""
    client = Client()
    client.force_login(user)
    body = client.get("/metrics").content.decode()
    [family] = [f for f in text_string_to_metric_families(body) if f.name == "brain_event_bus_lag"]
    return ({s.labels["stream"]: s.value for s in family.samples},
            client.get("/dashboard/state/?chart=0").json()["bus"])


def test_the_lag_shows_in_metrics_and_on_the_dashboard(manage, nats_server, make_user, settings):
    boss = make_user("boss", superuser=True)
    assert bus_lag_everywhere(boss) == ({}, [])  # no NATS_URL, never ran: off
    settings.NATS_URL = nats_server.url
    events = make_events(7)
    assert bus_lag_everywhere(boss) == ({"BRAIN_CONNECTORS": 7},
                                        [{"stream": "BRAIN_CONNECTORS", "cursor": 0, "lag": 7}])
    assert manage("runbridge", "--once", env=bridge_env(nats_server)).returncode == 0
    assert bus_lag_everywhere(boss) == ({"BRAIN_CONNECTORS": 0},
                                        [{"stream": "BRAIN_CONNECTORS", "cursor": events[-1].seq, "lag": 0}])


def test_nats_server_restart_loses_nothing(subprocess_env, nats_server, make_user):
    first = make_events(50)
    proc = start_bridge(subprocess_env, bridge_env(nats_server), "--lease-seconds", "10", "--interval", "1")
    try:
        wait_for(lambda: stream_count(nats_server.url) == 50, what="the first events")
        nats_server.stop()
        second = make_events(50, start=50)  # committed while NATS is down: the log keeps them
        boss = make_user("boss", superuser=True)
        wait_for(lambda: bus_lag_everywhere(boss)[0] == {"BRAIN_CONNECTORS": 50}, what="the lag of the 50 events")
        nats_server.start()
        wait_for(lambda: stream_count(nats_server.url) == 100, timeout=60, what="the bridge to reconnect")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, output
    assert_exactly_once_in_order(read_stream(nats_server.url), first + second)
    assert "Disconnected from NATS" in output or "Bridge to NATS failed" in output


def _make_stream(url, **config):
    async def make():
        nc, js = await _js(url)
        try:
            await js.add_stream(nats.js.api.StreamConfig(**config))
        finally:
            await nc.close()
    asyncio.run(make())


def test_a_conflicting_stream_is_a_clear_error_naming_the_setting(manage, nats_server):
    make_events(3)
    _make_stream(nats_server.url, name="BRAIN_CONNECTORS", subjects=["brain.connectors.>"], duplicate_window=60)
    result = manage("runbridge", "--once", env=bridge_env(nats_server, NATS_MANAGE_STREAM="false"))
    assert result.returncode != 0
    assert "NATS_STREAM_DUPLICATE_WINDOW_SECONDS" in result.stderr and "NATS_MANAGE_STREAM is off" in result.stderr
    assert stream_count(nats_server.url) == 0

    # Another stream already owns our subjects: creating ours cannot work, whatever NATS_MANAGE_STREAM says.
    result = manage("runbridge", "--once", env=bridge_env(nats_server, NATS_STREAM="OTHER"))
    assert result.returncode != 0
    assert "NATS_SUBJECT_PREFIX" in result.stderr and "overlap" in result.stderr

    # Allowed to manage it: the bridge updates the window and publishes.
    result = manage("runbridge", "--once", env=bridge_env(nats_server))
    assert result.returncode == 0, result.stderr
    assert stream_count(nats_server.url) == 3


def test_a_bad_token_is_a_clear_error_without_the_token(manage, tmp_path):
    server = NatsServer(tmp_path / "js", "--auth", "right-token-123")
    server.start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text("wrong-token-456\n")
        result = manage("runbridge", "--once", env={"NATS_URL": server.url, "NATS_TOKEN_FILE": str(token_file)})
        assert result.returncode != 0
        assert "NATS refused the credentials (NATS_TOKEN_FILE)" in result.stderr
        assert "Authorization Violation" in result.stderr
        assert "wrong-token-456" not in result.stderr + result.stdout
    finally:
        server.stop()


def test_a_running_bridge_with_a_bad_token_says_why_on_every_attempt_and_stays_up(subprocess_env, tmp_path):
    server = NatsServer(tmp_path / "js", "--auth", "right-token-123")
    server.start()
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-456")
    proc = start_bridge(subprocess_env, {"NATS_URL": server.url, "NATS_TOKEN_FILE": str(token_file)})
    lines, refusal = [], "NATS refused the credentials (NATS_TOKEN_FILE)"
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # until the pipe closes
    reader.start()
    try:
        # Attempts at 0 s, ~1 s, ~3 s (backoff): wait for two refusals (a loaded machine starts Django slowly).
        wait_for(lambda: sum(refusal in line for line in lines) >= 2 or proc.poll() is not None, timeout=60,
                 what="two refused attempts")
        assert proc.poll() is None  # no crash loop: it keeps trying, and says why each time
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        reader.join(10)
        server.stop()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert output.count(refusal) >= 2, output
    assert "wrong-token-456" not in output


def test_two_bridges_one_stream_exactly_one_publishes(subprocess_env, nats_server):
    events = make_events(150)
    env = bridge_env(nats_server)
    procs = [start_bridge(subprocess_env, env, "--lease-seconds", "3", "--interval", "0.5") for _ in range(2)]
    try:
        wait_for(lambda: stream_count(nats_server.url) >= 150, what="every event")
        time.sleep(1)  # a second publisher would have added duplicates by now (beyond the dedupe, in stream seq)
    finally:
        outputs = []
        for proc in procs:
            proc.terminate()
            outputs.append(proc.communicate(timeout=20)[0])
    assert_exactly_once_in_order(read_stream(nats_server.url), events)
    holders = [out for out in outputs if "holds the lease on stream BRAIN_CONNECTORS" in out]
    assert len(holders) >= 1
    published = [int(out.rsplit("(", 1)[1].split()[0]) for out in outputs]  # "... stopped (N events published)"
    assert sorted(published) == [0, 150], outputs


def test_without_nats_url_the_bridge_is_off(manage):
    result = manage("runbridge", "--once", env={"NATS_URL": ""})
    assert result.returncode == 0
    assert "NATS_URL is not set" in result.stdout
