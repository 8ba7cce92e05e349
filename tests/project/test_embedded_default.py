"""`make run`'s processes, started as a user would: a send that fails once is retried, and a send over its quota is
delayed, and both are delivered, with no other command.

The processes are the ones `make -n run` prints (bootstrap, then the scheduler beside daphne in one shell line), so a
Makefile that stops starting the scheduler fails this test. They run on a fresh SQLite file, with no broker (Celery
eager, the embedded default). The sweeper's interval and grace are set far beyond the test: what sends the retry and
the delayed message is the scheduler's every-second `send-due-deliveries`, not a sweep.
"""
import base64
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BASE_DIR, free_port
from tests.fakes.receiver import FakeReceiver

# Its own SQLite database whatever the suite runs on: proving it again on PostgreSQL would prove nothing new.
pytestmark = [pytest.mark.slow, pytest.mark.vendor_neutral]

SECRET = "whsec_" + base64.b64encode(b"embedded-default-secret-01234567").decode()


def _user_env(tmp_path):
    """The environment of a user's `make run`: no broker, nothing that makes Celery eager by hand."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "CELERY_TASK_ALWAYS_EAGER", "DELIVERY_ENGINE", "DATABASE_URL", "MAKEFLAGS")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "brain_connectors.settings",
            "BRAIN_READ_DOTENV": "0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
            "PYTHONUNBUFFERED": "1",
            # The sweeper runs once, at the start, and never again in this test: it cannot be what sends the retry.
            "SWEEP_INTERVAL_SECONDS": "3600",
            "DELIVERY_SWEEP_GRACE": "3600",
            # Off (the scheduler skips a 0 interval): a health check pings the receiver, and could take its one 503.
            "HEALTH_CHECK_INTERVAL_SECONDS": "0",
        }
    )
    return env


def _manage(env, *args):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _run_target_script(env, port, tmp_path):
    """What `make run` runs, as `make -n run` prints it, for this venv, HOST and PORT. The install step is skipped
    (a fresh stamp: this venv is installed), and so is dotenv_init: it would write a `.env` of secrets into the
    checkout, and this environment sets everything itself (BRAIN_READ_DOTENV=0)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = tmp_path / "installed"
    stamp.touch()
    venv = Path(sys.executable).parent.parent  # not resolved: the venv's own bin/, where daphne is
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", f"STAMP={stamp}", f"VENV={venv}", "HOST=127.0.0.1",
         f"PORT={port}"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert any("brain_connectors.dotenv_init" in line for line in lines), printed.stdout
    return "\n".join(line for line in lines if "brain_connectors.dotenv_init" not in line)


def _start_run_target(env, port, tmp_path, log):
    """The run target's commands in one shell: bootstrap, then the scheduler in the background and daphne."""
    script = _run_target_script(env, port, tmp_path)
    # A session of its own, so that cleanup can reach the scheduler too whatever happens.
    proc = subprocess.Popen(["sh", "-c", script], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("daphne did not start")


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _drain_quota(tmp_path, key):
    """Take the bucket `key` one token below empty (its rate is 60 a minute: the next send waits about 2 s)."""
    with sqlite3.connect(tmp_path / "db.sqlite3", timeout=10) as db:
        db.execute("INSERT OR REPLACE INTO connectors_quotabucket (key, tokens, stamp) VALUES (?, ?, ?)",
                   (key, -1.0, time.time()))


def _wait_sent(urls, headers, deadline):
    rows = [httpx.get(url, headers=headers, timeout=10).json() for url in urls]
    while any(row["status"] != "sent" for row in rows) and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = [httpx.get(url, headers=headers, timeout=10).json() for url in urls]
    return rows


def test_a_failed_send_and_a_quota_delayed_send_are_delivered_under_make_run(tmp_path):
    env = _user_env(tmp_path)
    receiver = FakeReceiver(secret=SECRET, retry_after=1).start()
    receiver.queue_modes("error_503")  # the first call fails, with Retry-After: 1; then "ok"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        server = _start_run_target(env, port, tmp_path, log)
        try:
            token = _manage(env, "create_api_token", "admin").strip().splitlines()[-1]
            headers = {"Authorization": f"Bearer {token}"}
            created = httpx.post(f"{api}/connectors/", headers=headers, timeout=10, json={
                "id": "hook_retry", "kind": "webhook", "display_name": "Retry once", "recipient_quota_per_minute": 60,
                "config": {"url": receiver.url}, "credentials": {"signing_secret": SECRET}})
            assert created.status_code == 201, created.text
            assert httpx.post(f"{api}/connectors/hook_retry/start/", headers=headers, timeout=10).status_code == 200
            urls = []
            for recipient, content in (("ada", "hello after one failure"), ("bob", "hello after a quota wait")):
                if recipient == "bob":
                    _drain_quota(tmp_path, "recipient:hook_retry:bob")
                sent = httpx.post(f"{api}/connectors/hook_retry/send/", headers=headers, timeout=10,
                                  json={"recipient": recipient, "content": content})
                assert sent.status_code in (200, 201, 202), sent.text
                urls.append(f"{api}/deliveries/{sent.json()['delivery_id']}/")
            # Its first attempt ran inline with the request (eager Celery) and found no token: it waits, queued.
            delayed = httpx.get(urls[-1], headers=headers, timeout=10).json()
            rows = _wait_sent(urls, headers, time.monotonic() + 30)
        finally:
            server.send_signal(signal.SIGTERM)  # daphne (the shell exec'd it): the scheduler follows its parent
            server.wait(timeout=20)
            receiver.stop()
        deadline = time.monotonic() + 15
        while _group_alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left_behind = _group_alive(server.pid)
        if left_behind:
            os.killpg(server.pid, signal.SIGKILL)
    output = log_path.read_text(errors="replace")

    assert (delayed["status"], delayed["attempts"]) == ("queued", 0), (delayed, output[-3000:])
    assert [(row["status"], row["attempts"]) for row in rows] == [("sent", 2), ("sent", 1)], (rows, output[-3000:])
    by_content = {}
    for request in receiver.requests:
        by_content.setdefault(request.json["content"], []).append(request)
    ada, bob = by_content["hello after one failure"], by_content["hello after a quota wait"]
    assert [r.status for r in ada] == [503, 200] and [r.status for r in bob] == [200], output[-3000:]
    assert "send-due-deliveries every 1 s" in output and "Serving on http://127.0.0.1:" in output, output[-3000:]
    assert all(r.verified for r in ada + bob) and ada[0].webhook_id == ada[1].webhook_id
    # The scheduler stopped with the server: `make run` leaves nothing running.
    assert not left_behind, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # Neither process logs the secret, the token or the messages.
    assert not [value for value in (SECRET, token, "hello after one failure", "hello after a quota wait")
                if value in output]
