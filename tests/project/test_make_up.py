"""`make up`: the full stack (Procfile run by honcho) on PostgreSQL and Redis, one message end to end, then Ctrl-C."""
import base64
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.db import connection

from tests.conftest import BASE_DIR, free_port
from tests.fakes.receiver import FakeReceiver

# The Procfile's processes, as their command lines show them.
STACK = {
    "web": "daphne",
    "worker": "celery -A brain_connectors worker",
    "beat": "celery -A brain_connectors beat",
    "sender": "manage.py runsender",
    "connectors": "manage.py runconnectors",
    "bridge": "manage.py runbridge",
}


def _make_env(**overrides):
    """The test's environment without the make variables of an outer `make test` (they would leak into ours)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def _make_up(env, *args, timeout=20):
    return subprocess.run(["make", "--no-print-directory", "up", *args], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- refusals: the environment is checked before anything is installed -------------------------------------


@pytest.mark.vendor_neutral
@pytest.mark.parametrize(
    ("database_url", "redis_url", "says"),
    [
        (None, "redis://127.0.0.1:6379/9", "make up needs PostgreSQL: DATABASE_URL is not set."),
        ("sqlite:////tmp/hunter2-db.sqlite3", "redis://127.0.0.1:6379/9",
         "make up needs PostgreSQL: DATABASE_URL is a sqlite: URL, not postgres://."),
        ("postgres://brain:hunter2@127.0.0.1:5432/brain", None, "make up needs Redis: REDIS_URL is not set."),
    ],
)
def test_make_up_refuses_without_postgres_and_redis(database_url, redis_url, says):
    # VENV points nowhere: had the check let it through, `make install` would fail on the missing virtualenv
    # instead of printing the refusal.
    result = _make_up(_make_env(DATABASE_URL=database_url, REDIS_URL=redis_url), "VENV=/nonexistent-venv")
    assert result.returncode == 2
    assert says in result.stderr
    assert "hunter2" not in result.stdout + result.stderr  # the URL is never echoed: it may hold a password
    assert "pip" not in result.stdout + result.stderr


# --- the smoke test -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _fresh_database():
    """A database of this test's own on the suite's PostgreSQL server, dropped afterwards."""
    import psycopg

    s = connection.settings_dict
    name = f"brain_up_{os.getpid()}"
    server = {"host": s["HOST"] or "127.0.0.1", "port": s["PORT"] or 5432, "user": s["USER"] or "postgres",
              "password": s.get("PASSWORD") or None}
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    auth = server["user"] + (f":{server['password']}" if server["password"] else "")
    try:
        yield f"postgres://{auth}@{server['host']}:{server['port']}/{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_db_9():
    parts = urlsplit(os.environ["REDIS_URL"])
    return urlunsplit(parts._replace(path="/9"))


def _descendants(root):
    """{pid: (pgid, command line)} of every live process below `root`, read from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, …
        children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[2]), cmdline))
    found, todo = {}, [root]
    while todo:
        for pid, pgid, cmdline in children.get(todo.pop(), []):
            found[pid] = (pgid, cmdline)
            todo.append(pid)
    return found


def _group_alive(pgid):
    """True while a process of group `pgid` still runs (zombies excepted: see _running)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def _running(pid):
    """True while `pid` runs. A zombie (state Z: exited, not yet reaped, e.g. reparented to a container's init that
    does not reap) has stopped: it holds no resources and runs nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate, seconds, what, log):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {seconds} s; the stack's output:\n{log()}")


class Stack:
    """`make up` in a subprocess, as a user starts it, on a fresh database; always leaves no process behind."""

    def __init__(self, database_url):
        venv = Path(sys.executable).parent.parent
        assert (venv / "bin" / "honcho").exists(), "honcho is in requirements.txt; install it into this virtualenv"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = _make_env(
            DJANGO_SETTINGS_MODULE="brain_connectors.settings",
            DATABASE_URL=database_url,
            REDIS_URL=_redis_db_9(),
            CELERY_QUEUE=f"up-{os.getpid()}",  # db 9 may be shared; the queue is not
            CELERY_TASK_ALWAYS_EAGER=None,  # the test settings force eager mode; the stack decides from REDIS_URL
            DELIVERY_ENGINE=None,
            BRAIN_READ_DOTENV="0",  # no .env read, none written into the checkout
            PYTHONUNBUFFERED="1",
        )
        self.log_file = tempfile.NamedTemporaryFile(prefix="make-up-", suffix=".log", delete=False)  # noqa: SIM115
        # STAMP= : this test's virtualenv is already installed (tests run in it), so `make up` installs nothing.
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "up", f"VENV={venv}", "STAMP=", f"PORT={self.port}", "HOST=127.0.0.1"],
            cwd=BASE_DIR, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives `make up`: Ctrl-C reaches it all
        )
        self.processes = {}

    def log(self, tail=6000):
        """The stack's output: its last `tail` characters for an error message, or all of it (tail=None)."""
        text = Path(self.log_file.name).read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def wait_healthy(self):
        def healthy():
            assert self.proc.poll() is None, f"make up exited ({self.proc.returncode}):\n{self.log()}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
            return False

        _wait_for(healthy, 40, "/healthz did not answer", self.log)
        # Every process of the Procfile runs (web answering proves only the first).
        _wait_for(lambda: all(any(command in cmdline for _, cmdline in _descendants(self.proc.pid).values())
                              for command in STACK.values()), 20, "not every process started", self.log)
        self.processes = _descendants(self.proc.pid)

    def wait_stopped(self, seconds, after):
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"make up did not stop within {seconds} s {after}:\n{self.log()}")

    def kill(self):
        for pgid in {pgid for pgid, _ in _descendants(self.proc.pid).values()} | {self.proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def assert_nothing_left(self):
        """Each process group honcho made is empty, and so is make's: no orphans."""
        groups = {pgid for pgid, _ in self.processes.values()}
        assert len(groups) >= len(STACK)  # honcho runs each process in a group of its own
        deadline = time.monotonic() + 10  # a killed process takes a moment to leave
        while time.monotonic() < deadline and (
                [pid for pid in self.processes if _running(pid)] or any(map(_group_alive, groups))):
            time.sleep(0.2)
        assert [pgid for pgid in groups | {self.proc.pid} if _group_alive(pgid)] == []
        assert [pid for pid in self.processes if _running(pid)] == []

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        os.unlink(self.log_file.name)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_make_up_sends_a_message_end_to_end_and_stops_every_process_on_ctrl_c():
    secret = "whsec_" + base64.b64encode(b"make-up-smoke-test-signing-key!!").decode()
    receiver = FakeReceiver(secret=secret).start()
    with _fresh_database() as database_url:
        stack = Stack(database_url)
        try:
            stack.wait_healthy()
            token = subprocess.run(
                [sys.executable, "manage.py", "create_api_token", "admin", "--expires-in", "1h"],
                cwd=BASE_DIR, env=stack.env, capture_output=True, text=True, timeout=30,
            )
            assert token.returncode == 0, token.stderr
            headers = {"Authorization": f"Bearer {token.stdout.strip().splitlines()[-1]}"}
            base = stack.base
            created = httpx.post(f"{base}/api/v1/connectors/", headers=headers, timeout=10, json={
                "id": "up_hook", "kind": "webhook", "display_name": "Smoke test",
                "config": {"url": receiver.url}, "credentials": {"signing_secret": secret}})
            assert created.status_code == 201, created.text
            started = httpx.post(f"{base}/api/v1/connectors/up_hook/start/", headers=headers, timeout=10)
            assert started.json()["status"] == "CONNECTED", started.text
            sent = httpx.post(f"{base}/api/v1/connectors/up_hook/send/", timeout=10,
                              headers={**headers, "Idempotency-Key": "up-smoke-1"},
                              json={"recipient": "ada", "content": "Through the whole stack."})
            assert sent.status_code in (200, 201, 202), sent.text

            _wait_for(lambda: receiver.requests, 20, "the message did not reach the receiver", stack.log)
            [request] = receiver.requests
            assert request.verified, request.rejection
            assert (request.json["recipient"], request.json["content"]) == ("ada", "Through the whole stack.")

            os.killpg(stack.proc.pid, signal.SIGINT)  # Ctrl-C
            stack.wait_stopped(20, "after Ctrl-C")
            output = stack.log(tail=None)
        finally:
            receiver.stop()
            stack.close()

    assert stack.proc.returncode != 0  # make reports the interrupt
    for name in STACK:
        assert f"{name}.1 stopped" in output, output
    assert "web.1        | " in output  # each process's output, prefixed with its name
    stack.assert_nothing_left()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_make_up_stops_every_process_when_one_dies():
    """A stack with a dead sender would accept messages and never send them: honcho takes the rest down with it."""
    with _fresh_database() as database_url:
        stack = Stack(database_url)
        try:
            stack.wait_healthy()
            [sender] = [pid for pid, (_, cmdline) in stack.processes.items()
                        if cmdline.startswith("python") and "manage.py runsender" in cmdline]
            os.kill(sender, signal.SIGKILL)
            stack.wait_stopped(20, "after its sender died")
            # All of it: a process's traceback on the way down (beat losing its database connection) can be longer
            # than the tail that error messages show, and push the first "stopped" line out of it.
            output = stack.log(tail=None)
        finally:
            stack.close()

    assert stack.proc.returncode != 0
    for name in STACK:
        assert f"{name}.1 stopped" in output, output
    stack.assert_nothing_left()
