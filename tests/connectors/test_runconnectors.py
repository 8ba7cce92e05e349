"""`manage.py runconnectors`: heartbeats and one lease per polling connector, so that of several
processes exactly one polls a bot at a time, and another takes over when it dies.

In-process tests drive connectors.registry.runner directly; the last ones run real `manage.py
runconnectors` processes against the loopback fake Telegram."""
import json
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit import services as audit_services
from audit.models import AuditEvent
from connectors import services
from connectors.models import Connector, Delivery, InboundMessage
from connectors.registry.kinds import connector_for
from connectors.registry.runner import Runner
from tests.concurrency import backends_waiting_for_a_lock, wait_until
from tests.conftest import BASE_DIR, SYSTEM
from tests.fakes.telegram_server import FakeTelegram

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"
TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
OTHER_TOKEN = "7000000002:AAFakeOtherBotTokenForTests0123456789"

pytestmark = pytest.mark.django_db(transaction=True)


def update(update_id, text="hello"):
    data = json.loads((FIXTURES / "message_text.json").read_text())
    data["update_id"] = update_id
    data["message"]["text"] = text
    return data


@pytest.fixture
def fake():
    server = FakeTelegram(max_long_poll=1).start()
    yield server
    server.stop()


@pytest.fixture
def poller(make_connector, fake, settings):
    settings.PUBLIC_BASE_URL = "https://brain.example.org"

    def make(id="tg_poll", mode="polling"):
        make_connector(id, kind="telegram", config={"mode": mode, "api_base_url": fake.url, "poll_timeout": 1},
                       credentials={"bot_token": TOKEN})
        return Connector.objects.get(pk=id)

    return make


def lease_owner(connector_id="tg_poll"):
    return Connector.objects.get(pk=connector_id).lease_owner


def rounds_of(runner):
    """Counts the runner's rounds from now on (renew_leases still does the work)."""
    counter, renew = SimpleNamespace(count=0), runner.renew_leases

    def counted():
        held = renew()
        counter.count += 1
        return held

    runner.renew_leases = counted
    return counter


def heartbeats_of(proc):
    rows = AuditEvent.objects.filter(action="connector.heartbeat", target_id="tg_poll").values_list("details", flat=True)
    return sum(1 for details in rows if f":{proc.pid}:" in details.get("lease_owner", ""))


# --- the runner, in process -----------------------------------------------------------------------


def test_one_round_heartbeats_leases_polls_and_releases(poller, fake):
    row = poller()
    started_heartbeat = row.last_heartbeat
    fake.enqueue_update(update(100))
    Runner(owner="test-host:1:aaaa", lease_seconds=30, interval=1).run(once=True)
    assert list(InboundMessage.objects.values_list("platform_message_id", flat=True)) == ["100"]
    row.refresh_from_db()
    assert row.last_heartbeat > started_heartbeat
    assert row.lease_owner == "" and row.lease_expires_at is None  # released on the way out
    heartbeats = AuditEvent.objects.filter(action="connector.heartbeat", target_id="tg_poll")
    assert [h.details["lease_owner"] for h in heartbeats] == ["test-host:1:aaaa"]
    assert AuditEvent.objects.filter(action="connector.lease_released", target_id="tg_poll").count() == 1


def test_a_connector_leased_by_another_live_process_is_left_alone(poller, fake):
    poller()
    services.heartbeat(SYSTEM, "tg_poll", lease_owner="other-host:2:bbbb", lease_seconds=60)
    fake.enqueue_update(update(101))
    Runner(owner="test-host:1:aaaa", lease_seconds=30, interval=1).run(once=True)
    assert fake.calls_to("getUpdates") == []
    assert InboundMessage.objects.count() == 0
    assert lease_owner() == "other-host:2:bbbb"  # not released by someone who does not hold it
    # A lease plainly held is skipped without even asking: no refused heartbeat fills the audit log.
    assert not AuditEvent.objects.filter(action="connector.heartbeat", result="failure").exists()


def test_an_expired_lease_is_taken_over(poller, fake):
    poller()
    services.heartbeat(SYSTEM, "tg_poll", lease_owner="dead-host:3:cccc", lease_seconds=60)
    # The owner died a while ago: its lease ran out.
    Connector.objects.filter(pk="tg_poll").update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    fake.enqueue_update(update(102))
    Runner(owner="test-host:1:aaaa", lease_seconds=30, interval=1).run(once=True)
    assert InboundMessage.objects.count() == 1


def test_only_connectors_that_need_a_process_are_leased(poller, make_connector, fake):
    poller("tg_hook", mode="webhook")
    make_connector("plain_locmem")
    poller("tg_stopped")
    services.stop_connector(SYSTEM, "tg_stopped")
    runner = Runner(owner="test-host:1:aaaa", lease_seconds=30, interval=1)
    assert runner.candidates() == {}
    runner.run(once=True)
    assert fake.calls_to("getUpdates") == []
    assert not AuditEvent.objects.filter(action="connector.heartbeat").exists()


def test_an_invalid_token_while_polling_puts_the_connector_in_error(poller, fake):
    poller()
    fake.tokens = {OTHER_TOKEN}  # revoked after start
    Runner(owner="test-host:1:aaaa", lease_seconds=30, interval=1).run(once=True)
    row = Connector.objects.get(pk="tg_poll")
    assert row.status == "ERROR" and "rejected the bot token" in row.last_error
    assert TOKEN not in row.last_error
    assert row.lease_owner == ""
    assert AuditEvent.objects.filter(action="connector.error", details__error="invalid_token").count() == 1


def test_a_running_loop_polls_until_the_connector_stops_then_releases_on_exit(poller, fake):
    poller()
    runner = Runner(owner="test-host:1:aaaa", lease_seconds=3, interval=0.2)

    def run():
        try:
            runner.run()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=run)
    thread.start()
    try:
        fake.enqueue_update(update(200, "first"))
        wait_until(lambda: InboundMessage.objects.filter(platform_message_id="200").exists(), 15, "update 200 stored")
        assert lease_owner() == "test-host:1:aaaa"
        poller_thread = runner.pollers["tg_poll"]
        services.stop_connector(SYSTEM, "tg_poll")
        wait_until(lambda: not poller_thread.is_alive(), 10, "the poller to stop")
        calls = len(fake.calls_to("getUpdates"))
        fake.enqueue_update(update(201, "while stopped"))
        # End marker: two more whole rounds of the runner. Its poller is gone, and a round that wrongly took the
        # connector up again would have put a new one in runner.pollers before the round ended.
        rounds = rounds_of(runner)
        wait_until(lambda: rounds.count >= 2, 10, "two more rounds of the runner")
        assert "tg_poll" not in runner.pollers
        assert len(fake.calls_to("getUpdates")) == calls  # nobody polls a stopped connector
        services.start_connector(SYSTEM, "tg_poll")
        wait_until(lambda: InboundMessage.objects.filter(platform_message_id="201").exists(), 15, "update 201 stored")
    finally:
        runner.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert lease_owner() == ""
    assert fake.get_updates_conflicts == 0



def test_a_poll_waits_for_a_stop_in_progress_instead_of_deadlocking(poller, fake):
    """A stop holds the connector row and then writes its audit row; a poll storing an update waits
    for the row and then goes on. It once deadlocked: the audit log had a global lock, which the poll
    took first (receive_message) and the stop second; PostgreSQL broke it by failing one of the two."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks that make backends wait exist on PostgreSQL only")
    row = poller()
    fake.enqueue_update(update(300, "during a stop"))
    errors = []

    def poll():
        try:
            connector_for(Connector.objects.get(pk=row.pk)).poll_once(threading.Event())
        except Exception as exc:  # reported by the assertions below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=poll)
    with transaction.atomic():  # what stop_connector does: the row, then (later) its audit row
        Connector.objects.select_for_update().get(pk=row.pk)
        thread.start()
        wait_until(backends_waiting_for_a_lock, 15, "the poll to wait for the connector row")
        # Appending to the audit log takes no lock any more (audit.sealer): nothing the waiting poll
        # holds can block it.
        audit_services.record("connector.stop", principal="test", target_type="connector", target_id=row.pk)
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert InboundMessage.objects.filter(platform_message_id="300").exists()
    assert Connector.objects.get(pk=row.pk).platform_state["offset"] == 301

@pytest.mark.slow
def test_the_command_with_once_does_one_round_and_exits(poller, fake, manage):
    poller()
    fake.enqueue_update(update(150, "from the command"))
    result = manage("runconnectors", "--once", "--lease-seconds", "20", "--interval", "2")
    assert result.returncode == 0, result.stderr
    assert InboundMessage.objects.filter(platform_message_id="150").exists()
    assert "leased tg_poll" in result.stderr and "released tg_poll" in result.stderr  # progress goes to stderr
    assert result.stdout == ""
    assert lease_owner() == ""


def test_interval_must_be_shorter_than_the_lease(manage):
    result = manage("runconnectors", "--interval", "5", "--lease-seconds", "5")
    assert result.returncode != 0
    assert "interval must be shorter than lease_seconds" in result.stderr


# --- two real processes ------------------------------------------------------------------------------


def _start_runner(subprocess_env, log_path, lease_seconds):
    log = open(log_path, "w")  # noqa: SIM115 (closed by the caller through proc.log)
    proc = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "runconnectors", "--interval", "0.3",
         "--lease-seconds", str(lease_seconds)],
        cwd=BASE_DIR, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=log,
    )
    proc.log = log
    return proc


def _owned_by(proc):
    return f":{proc.pid}:" in lease_owner()


@pytest.mark.slow
def test_two_processes_one_lease_and_a_takeover_after_kill_9(poller, fake, subprocess_env, tmp_path):
    poller()
    lease_seconds = 3
    first = _start_runner(subprocess_env, tmp_path / "first.log", lease_seconds)
    second = None
    try:
        wait_until(lambda: _owned_by(first), 60, "the first process to take the lease")
        fake.wait_for_calls("getUpdates", 1, timeout=30)

        second = _start_runner(subprocess_env, tmp_path / "second.log", lease_seconds)
        wait_until(lambda: "is leased by" in (tmp_path / "second.log").read_text(), 60,
                   "the second process to find the lease taken")
        fake.enqueue_update(update(300, "while the first one runs"))
        wait_until(lambda: InboundMessage.objects.filter(platform_message_id="300").exists(), 15, "update 300 stored")
        # A few more rounds of both processes (same interval): the first one's heartbeats mark them.
        beats = heartbeats_of(first)
        wait_until(lambda: heartbeats_of(first) >= beats + 3, 30, "three more rounds of the first process")
        assert _owned_by(first)
        second_log = (tmp_path / "second.log").read_text()
        assert "polling tg_poll" not in second_log and "leased tg_poll" not in second_log
        assert fake.get_updates_conflicts == 0  # never two getUpdates at once for the bot
        # Its reply to 300 out before the kill: this test is about the lease, not about re-driving
        # a reply the kill interrupted (under load the reply could lag the commit by seconds).
        # Marked sent, not only answered by the fake: killed in between, the reply would stay `sending`, and the
        # reply to 301 (same chat, sent in order) would wait behind it for the sweeper, which this test does not run.
        wait_until(lambda: len(fake.sent) >= 1, 30, "the first process's reply to update 300")
        wait_until(lambda: Delivery.objects.filter(in_reply_to__platform_message_id="300", status="sent").exists(), 30,
                   "the reply to 300 marked sent")

        first.send_signal(signal.SIGKILL)  # no clean-up: the lease stays until it expires
        first.wait(timeout=10)
        killed_at = timezone.now()
        assert _owned_by(first)
        wait_until(lambda: _owned_by(second), lease_seconds + 15, "the second process to take over")
        # Not before the dead process's lease ran out.
        heartbeats = AuditEvent.objects.filter(action="connector.heartbeat", target_id="tg_poll").order_by("id")
        takeover = next(h for h in heartbeats if f":{second.pid}:" in h.details.get("lease_owner", ""))
        assert takeover.time >= killed_at - timedelta(seconds=1)

        fake.enqueue_update(update(301, "after the takeover"))
        wait_until(lambda: InboundMessage.objects.filter(platform_message_id="301").exists(), 15, "update 301 stored")
        assert sorted(InboundMessage.objects.values_list("platform_message_id", flat=True)) == ["300", "301"]
        # The end marker: the reply to 301 marked sent, which happens after the fake answered it.
        wait_until(lambda: len(fake.sent) >= 2, 30, "BRAIN's replies")  # first: polling SQLite here slows its writers
        wait_until(lambda: Delivery.objects.filter(in_reply_to__platform_message_id="301", status="sent").exists(), 30,
                   "the reply to 301 marked sent")
        assert Delivery.objects.filter(connector_id="tg_poll").count() == 2
        assert len(fake.sent) == 2  # BRAIN answered each once, through the process that stored it
        row = Connector.objects.get(pk="tg_poll")
        assert row.last_heartbeat > timezone.now() - timedelta(seconds=5)  # heartbeats keep coming

        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        assert lease_owner() == ""  # a clean stop hands the lease back at once
        assert "released tg_poll" in (tmp_path / "second.log").read_text()
    finally:
        for proc in (first, second):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
                proc.log.close()
