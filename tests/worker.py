"""A real Celery worker in a subprocess, on Redis and the test database, for integration tests
and benchmarks. One process (thread pool), so `kill -9` takes the whole worker down at once."""
import os
import signal
import subprocess
import sys
import time
import uuid

from django.conf import settings


class CeleryWorker:
    def __init__(self, env, queue=None, concurrency=4, extra_env=None):
        self.queue = queue or f"test-{uuid.uuid4().hex[:8]}"
        # A worker sends deliveries by their tasks unless told otherwise (not eager would default to the sender
        # engine, which needs `manage.py runsender` processes).
        self.env = {"DELIVERY_ENGINE": "tasks", **env, **(extra_env or {}), "CELERY_TASK_ALWAYS_EAGER": "false",
                    "CELERY_QUEUE": self.queue}
        self.concurrency = concurrency
        self.proc = None
        self.log_path = os.path.join(settings.BASE_DIR, "var", f"worker-{self.queue}.log")

    def start(self, ready_timeout=30):
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "brain_connectors", "worker", "-P", "threads",
             "-c", str(self.concurrency), "-Q", self.queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "INFO"],
            cwd=settings.BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log()}")
            if b"ready." in open(self.log_path, "rb").read():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.log()}")

    def kill(self):
        """kill -9: no warm shutdown, unacknowledged tasks stay with the dead worker."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]


def use_broker(queue):
    """Point this (test) process's Celery app at Redis and the worker's queue; returns a restore function."""
    from brain_connectors.celery import app

    keys = ("task_always_eager", "broker_url", "task_default_queue")

    def reset_pool():
        # Drop the app's references only: kombu's global registry keeps one live pool per broker
        # URL, and closing it here would break whoever uses that URL next ("Acquire on closed pool").
        app._pool = None
        app.amqp._producer_pool = None

    app.conf.update(task_always_eager=False, broker_url=os.environ["REDIS_URL"], task_default_queue=queue)
    reset_pool()

    def restore():
        # Remove our overrides, so the values come from Django settings again.
        for key in keys:
            app.conf.changes.pop(key, None)
        reset_pool()

    return restore
