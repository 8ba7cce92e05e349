"""`make run`'s processes, started as a user would: a send that fails once is retried and delivered, no other command.

The processes are the run target's own commands (bootstrap, then the scheduler beside daphne in one shell line) on a
fresh SQLite file, with no broker (Celery eager, the embedded default). Only the intervals are shortened.
"""
import base64
import os
import signal
import subprocess
import sys
import time

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
           if k not in ("REDIS_URL", "CELERY_TASK_ALWAYS_EAGER", "DELIVERY_ENGINE", "DATABASE_URL")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "brain_connectors.settings",
            "BRAIN_READ_DOTENV": "0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
            "PYTHONUNBUFFERED": "1",
            # Short enough for a test; the README gives the defaults' bound.
            "SWEEP_INTERVAL_SECONDS": "1",
            "DELIVERY_SWEEP_GRACE": "1",
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


def _start_run_target(env, port, log):
    """The run target's last line: the scheduler in the background, then the shell replaced by daphne."""
    line = (f"{sys.executable} manage.py runscheduler & exec {sys.executable} -m daphne -b 127.0.0.1 -p {port} "
            "brain_connectors.asgi:application")
    # A session of its own, so that cleanup can reach the scheduler too whatever happens.
    proc = subprocess.Popen(["sh", "-c", line], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
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


def test_a_send_that_fails_once_is_delivered_under_make_run(tmp_path):
    env = _user_env(tmp_path)
    _manage(env, "bootstrap")
    token = _manage(env, "create_api_token", "admin").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    receiver = FakeReceiver(secret=SECRET, retry_after=1).start()
    receiver.queue_modes("error_503")  # the first call fails, with Retry-After: 1; then "ok"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        server = _start_run_target(env, port, log)
        try:
            created = httpx.post(f"{api}/connectors/", headers=headers, timeout=10, json={
                "id": "hook_retry", "kind": "webhook", "display_name": "Retry once",
                "config": {"url": receiver.url}, "credentials": {"signing_secret": SECRET}})
            assert created.status_code == 201, created.text
            assert httpx.post(f"{api}/connectors/hook_retry/start/", headers=headers, timeout=10).status_code == 200
            sent = httpx.post(f"{api}/connectors/hook_retry/send/", headers=headers, timeout=10,
                              json={"recipient": "ada", "content": "hello after one failure"})
            assert sent.status_code in (200, 201, 202), sent.text
            delivery_url = f"{api}/deliveries/{sent.json()['delivery_id']}/"

            # The first attempt ran inline with the request (eager Celery) and failed: the row waits for the sweep.
            deadline = time.monotonic() + 45
            delivery = httpx.get(delivery_url, headers=headers, timeout=10).json()
            while delivery["status"] != "sent" and time.monotonic() < deadline:
                time.sleep(0.5)
                delivery = httpx.get(delivery_url, headers=headers, timeout=10).json()
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

    assert delivery["status"] == "sent", (delivery, output[-3000:])
    assert delivery["attempts"] == 2
    sends = receiver.requests
    assert [r.status for r in sends] == [503, 200], output[-3000:]
    assert "Scheduler: sweep-deliveries every 1 s" in output, output[-3000:]
    assert all(r.verified for r in sends) and sends[0].webhook_id == sends[1].webhook_id
    assert sends[1].json["content"] == "hello after one failure"
    # The scheduler stopped with the server: `make run` leaves nothing running.
    assert not left_behind, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # Neither process logs the secret, the token or the message.
    assert not [value for value in (SECRET, token, "hello after one failure") if value in output]
