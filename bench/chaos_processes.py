"""The chaos run's processes: a throwaway PostgreSQL cluster and Redis server, the service's processes, and helpers."""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ROOT

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def log(message):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 (not up yet: any error means "try again")
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


# --- the throwaway PostgreSQL cluster and Redis server ------------------------------------------


class Postgres:
    """A cluster in a temporary directory, owned by the `postgres` user (PostgreSQL refuses root)."""

    def __init__(self, workdir):
        self.data = workdir / "pgdata"
        self.socket_dir = workdir / "pgsock"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/brain_chaos"
        self.stops = 0
        self.outages = []  # (stopped at, started again at), wall times

    def _as_postgres(self, *argv, check=True):
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self):
        for path in (self.data, self.socket_dir):
            path.mkdir()
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        open(self.log, "w").close()
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres", "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "--no-sync", "-E", "UTF8")
        self.start()
        subprocess.run(["psql", self.url.rsplit("/", 1)[0] + "/postgres", "-q", "-c", "CREATE DATABASE brain_chaos"],
                       check=True)

    def start(self):
        # fsync off: a process crash (stop -m immediate) still recovers from the WAL in the page
        # cache; only an OS crash would need fsync, and this cluster is thrown away.
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c max_connections=200")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "-t", "60", "start")

    def stop_immediate(self):
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)
        self.stops += 1

    def destroy(self):
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        self.proc = None
        self.restarts = 0

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115 (the child keeps it)
        )
        import redis

        wait_for(lambda: redis.Redis.from_url(self.url).ping(), 20, "redis-server")

    def flush_and_restart(self):
        """FLUSHALL on our own server only, then kill -9 and start it empty on the same port."""
        import redis

        try:
            redis.Redis.from_url(self.url, socket_timeout=2).flushall()
        except redis.RedisError:
            pass
        self.stop()
        self.start()
        self.restarts += 1

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --- the service's processes ----------------------------------------------------------------------


class Service:
    """One process of the deployment (daphne, a worker, a sender, beat), restarted whenever it exits.

    `ready` is checked by `ready_check(service)`; `uptime()` counts from the moment it was seen ready,
    so kills are spaced by time actually serving (a restart takes seconds of CPU on a small machine)."""

    def __init__(self, name, argv, env, workdir, ready_check):
        self.name, self.argv, self.env, self.ready_check = name, argv, env, ready_check
        self.log = workdir / f"{name}.log"
        self.proc = None
        self.kills = 0
        self.kill_times = []
        self.unexpected_exits = 0
        self.lock = threading.Lock()
        self.ready_since = None
        self.log_offset = 0
        self.stopped = False

    def start(self):
        with self.lock:
            if self.stopped:
                return self
            self.log_offset = self.log.stat().st_size if self.log.exists() else 0
            self.ready_since = None
            # Kills spread out (± 30 %), so processes started together are not all down together.
            self.jitter = random.uniform(0.7, 1.3)
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=open(self.log, "ab"),  # noqa: SIM115
                                         stderr=subprocess.STDOUT)
        return self

    def uptime(self):
        """Seconds since it was seen ready (checking now if not yet), or None while starting."""
        if self.ready_since is None:
            try:
                if self.ready_check(self):
                    self.ready_since = time.monotonic()
            except Exception:  # noqa: BLE001 (not up yet)
                pass
        return None if self.ready_since is None else time.monotonic() - self.ready_since

    def log_since_start(self):
        with open(self.log, "rb") as f:
            f.seek(self.log_offset)
            return f.read()

    def kill9(self):
        with self.lock:
            proc = self.proc
            if proc and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                self.kill_times.append(time.time())
                proc.wait(10)
                self.kills += 1
        self.start()

    def supervise(self):
        """Restart the process if it exited on its own (e.g. a worker giving up on a lost broker)."""
        with self.lock:
            exited = not self.stopped and self.proc is not None and self.proc.poll() is not None
        if exited:
            self.unexpected_exits += 1
            log(f"{self.name} exited with {self.proc.returncode}; restarting")
            self.start()

    def stop(self):
        with self.lock:
            proc, self.proc, self.stopped = self.proc, None, True
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

