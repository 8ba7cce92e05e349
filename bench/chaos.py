"""Chaos run: N messages, inbound and outbound, through daphne, Celery workers and beat on a
throwaway PostgreSQL cluster and Redis server of its own, while processes are killed, the
database and the broker go down and the platform fails; then everything is reconciled.

    .venv/bin/python bench/chaos.py --messages 1000 --check      # CI: exits 1 on loss or duplicates
    .venv/bin/python bench/chaos.py                               # 10,000 messages

Inbound: real-format Telegram webhooks POSTed to daphne (unique update_id and text); BRAIN is the
loopback fake BRAIN, whose reply goes back out through the pipeline to the fake Telegram.
Outbound: POST /api/v1/connectors/<id>/send/ with an Idempotency-Key. A client retries whatever
failed (refused connection, timeout, 5xx, 429) with the same update_id or the same key, as a
platform or a REST client does, so a retry is never a new message.

Engines (`--engine`): "sender" (default) sends outbound messages and replies with `--senders`
`manage.py runsender` processes (batches, SKIP LOCKED, woken by NOTIFY and a 1 s poll); "tasks"
with a Celery task per delivery, as before issue 16. Celery workers run in both (BRAIN, receipts).

Meanwhile: kill -9 of daphne, of a worker and of a sender every --kill-every seconds (each web and
worker process that often, the senders in turn; restarted at once);
Redis flushed and restarted, PostgreSQL stopped with `pg_ctl stop -m immediate` and started
again, and the fake Telegram failing (500s, 429 flood control, connection refused) for a while,
each on its own period. Then the system settles (chaos off, the sweeper running under beat)
and the fakes' logs are reconciled with the database (bench/chaos_reconcile.py). One JSON line
per figure group on stdout; progress on stderr. The shared PostgreSQL and Redis are never used.
"""
import argparse
import base64
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from chaos_reconcile import attribute_duplicates, inbound_text, outbound_text, reconcile, verdict
from common import ROOT, emit, prepare_environment, setup_django

TOKEN = "7000000001:AAH-chaos-token-0123456789abcdefghij"
CONNECTOR = "tg_chaos"
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "telegram" / "message_text.json").read_text())
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RETRYABLE = {429, 500, 502, 503, 504}


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


# --- the clients ----------------------------------------------------------------------------------


class Clients:
    """Threads that push the messages at a steady pace, retrying with the same identity."""

    def __init__(self, args, base_urls, telegram, api_token, chats):
        self.args, self.base_urls, self.telegram, self.api_token, self.chats = args, base_urls, telegram, api_token, chats
        self.last_secret = telegram.webhook.get("secret_token", "")
        self.tag = args.tag
        self.inbound_accepted = {}  # update_id (str) → text
        self.outbound_accepted = {}  # idempotency key → (delivery id, text)
        self.refused = []  # answers that a retry cannot fix: a bug, reported
        self.retries = 0
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.started = None

    def run(self):
        self.started = time.monotonic()
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.args.clients)]
        for thread in threads:
            thread.start()
        return threads

    def _next(self):
        with self.lock:
            index = next(self.counter)
        if index >= self.args.messages:
            return None
        # Steady pace: message i is due at i / rate seconds.
        delay = self.started + index / self.args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return index

    def _worker(self):
        with httpx.Client(timeout=self.args.request_timeout) as client:
            while (index := self._next()) is not None:
                if index % 2 == 0:
                    self._inbound(client, index)
                else:
                    self._outbound(client, index)

    def _inbound(self, client, index):
        chat = self.chats[index % len(self.chats)]
        update = json.loads(json.dumps(FIXTURE))
        update["update_id"] = self.args.first_update_id + index
        update["message"]["message_id"] = 100000 + index
        update["message"]["from"]["id"] = update["message"]["chat"]["id"] = chat
        text = inbound_text(index, self.tag)
        update["message"]["text"] = text
        body = json.dumps(update).encode()
        path = f"/webhooks/telegram/{CONNECTOR}/"
        # The secret of the latest setWebhook, as Telegram sends: a connector restarted (by the health check, after
        # a stale heartbeat) registers a new one.
        # While none is set (between deleteWebhook and setWebhook), the last one: Telegram would hold the update.
        secret = self.last_secret = self.telegram.webhook.get("secret_token") or self.last_secret
        headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret}
        answer = self._post(client, path, body, headers)
        if answer is not None:
            with self.lock:
                self.inbound_accepted[str(update["update_id"])] = text

    def _outbound(self, client, index):
        text = outbound_text(index, self.tag)
        key = f"chaos-{self.tag}-{index}"
        body = json.dumps({"recipient": str(self.chats[index % len(self.chats)]), "content": text}).encode()
        path = f"/api/v1/connectors/{CONNECTOR}/send/"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_token}",
                   "Idempotency-Key": key}
        answer = self._post(client, path, body, headers)
        if answer is not None:
            with self.lock:
                self.outbound_accepted[key] = (answer["delivery_id"], text)

    def _post(self, client, path, body, headers):
        """POST until a 2xx (its JSON) or an answer a retry cannot change (None, recorded). Each
        try goes to the next web process, as a load balancer skips one that is down."""
        deadline = time.monotonic() + self.args.give_up_after
        pause = 0.2
        for attempt in itertools.count(random.randrange(len(self.base_urls))):
            url = self.base_urls[attempt % len(self.base_urls)] + path
            try:
                response = client.post(url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return response.json()
                if response.status_code not in RETRYABLE:
                    with self.lock:
                        self.refused.append({"path": path, "status": response.status_code,
                                             "body": response.text[:300]})
                    return None
            except httpx.HTTPError:
                pass  # refused, reset or timed out: the process is down or was killed mid-request
            if time.monotonic() > deadline:
                with self.lock:
                    self.refused.append({"path": path, "status": "gave up"})
                return None
            with self.lock:
                self.retries += 1
            if attempt % len(self.base_urls) == len(self.base_urls) - 1:  # every process tried: wait a little
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 1.5, 2.0)


# --- the chaos schedule ---------------------------------------------------------------------------


class Chaos:
    def __init__(self, args, webs, workers, senders, beat, postgres, redis_server, telegram):
        self.args, self.webs, self.workers, self.senders, self.beat = args, webs, workers, senders, beat
        self.postgres, self.redis, self.telegram = postgres, redis_server, telegram
        self.stop_event = threading.Event()
        self.provider_windows = Counter()
        self.log = []

    def run(self):
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        return thread

    def _loop(self):
        start = time.monotonic()
        due = {"redis": self.args.redis_every, "pg": self.args.pg_every,
               "provider": self.args.provider_every}
        while not self.stop_event.wait(0.25):
            elapsed = time.monotonic() - start
            for service in (*self.webs, *self.workers, *self.senders, self.beat):
                service.supervise()
            # kill -9 each web and worker process once it has served for about kill_every seconds, and a
            # sender per round: each sender after about kill_every × senders (a killed sender leaves its whole
            # batch to the sweeper, and every restart costs a Django start-up on a small machine)
            for service, period in [*((s, self.args.kill_every) for s in (*self.webs, *self.workers)),
                                    *((s, self.args.kill_every * len(self.senders)) for s in self.senders)]:
                uptime = service.uptime()
                if uptime is not None and uptime >= period * service.jitter:
                    service.kill9()
            if elapsed >= due["redis"]:
                due["redis"] += self.args.redis_every
                log("redis: FLUSHALL and restart")
                self.redis.flush_and_restart()
            if elapsed >= due["pg"]:
                due["pg"] += self.args.pg_every
                log("postgres: stop -m immediate")
                stopped = time.time()
                self.postgres.stop_immediate()
                time.sleep(self.args.pg_down_seconds)
                self.postgres.start()
                self.postgres.outages.append((stopped, time.time()))
                log("postgres: started again")
            if elapsed >= due["provider"]:
                due["provider"] += self.args.provider_every
                self._provider_failure()

    def _provider_failure(self):
        """A few seconds of a failing Telegram, the kind chosen in turn: 500s, flood control, down."""
        kinds = ("server_error", "flood", "down")
        kind = kinds[sum(self.provider_windows.values()) % len(kinds)]
        self.provider_windows[kind] += 1
        log(f"telegram: {kind} for {self.args.provider_fail_seconds}s")
        if kind == "down":
            self.telegram.down()
        else:
            self.telegram.fail(kind, method="sendMessage")
        # Restored from its own timer, so the kills keep their schedule meanwhile.
        threading.Timer(self.args.provider_fail_seconds, self._provider_restore).start()

    def _provider_restore(self):
        self.telegram.clear_failures()
        self.telegram.up()

    def stop(self):
        self.stop_event.set()


# --- set-up, settling, reconciliation ---------------------------------------------------------------


def configure(env, telegram):
    """The connector, a REST user allowed to send on it and their token. Returns (secret, token)."""
    from django.contrib.auth import get_user_model

    from connectors import services
    from connectors.models import PERM_SEND, Connector, ConnectorStatus
    from connectors.permissions import Principal
    from connectors.tokens import create_token

    system = Principal.system_actor("chaos", via="bench")
    services.register_connector(system, id=CONNECTOR, kind="telegram", display_name="Chaos",
                                config={"mode": "webhook", "api_base_url": telegram.url, "timeout": 5},
                                credentials={"bot_token": TOKEN})
    services.start_connector(system, CONNECTOR)
    user = get_user_model().objects.create_user(username="chaos-client", password=os.urandom(16).hex())
    services.grant_permission(system, CONNECTOR, PERM_SEND, user=user)
    token = create_token(system, user)[1]
    connector = Connector.objects.get(pk=CONNECTOR)
    if connector.status != ConnectorStatus.CONNECTED:
        raise SystemExit(f"the connector did not start: {connector.status} {connector.last_error}")
    return connector.platform_secret, token


def database_state():
    """The rows reconciliation needs, read fresh (the chaos restarted the server under us)."""
    from django.db import connections

    from audit.models import AuditEvent
    from connectors.models import Delivery, InboundMessage

    connections.close_all()
    inbound = [
        {"id": m.pk, "platform_message_id": m.platform_message_id, "content": m.content,
         "brain_status": m.brain_status}
        for m in InboundMessage.objects.filter(connector_id=CONNECTOR)
    ]
    deliveries = [
        {"id": str(d.pk), "status": d.status, "content": d.content, "in_reply_to": d.in_reply_to_id,
         "attempts": d.attempts}
        for d in Delivery.objects.filter(connector_id=CONNECTOR)
    ]
    redriven = {e.details.get("delivery_id") for e in AuditEvent.objects.filter(action="message.redrive")}
    return inbound, deliveries, redriven


def unsettled():
    """(deliveries not settled, inbound messages not answered): zero when the system is done."""
    from django.db import connections

    from connectors.models import Delivery, InboundMessage

    connections.close_all()
    open_deliveries = Delivery.objects.exclude(status__in=["sent", "delivered", "failed", "dead"]).count()
    waiting = InboundMessage.objects.exclude(brain_status__in=["replied", "no_reply", "failed"]).count()
    return open_deliveries, waiting


def settle(args, telegram, services_):
    """Wait until every delivery and inbound message has settled and the platform stopped
    receiving, or the timeout. Returns the seconds it took (None on timeout)."""
    started = time.monotonic()
    last_sent, quiet_since = -1, time.monotonic()
    while time.monotonic() - started < args.settle_timeout:
        for service in services_:
            service.supervise()
        try:
            open_deliveries, waiting = unsettled()
        except Exception as exc:  # noqa: BLE001 (the database may still be recovering)
            log(f"settle: database not ready ({type(exc).__name__})")
            time.sleep(1)
            continue
        sent = len(telegram.sent)
        if sent != last_sent:
            last_sent, quiet_since = sent, time.monotonic()
        log(f"settle: {open_deliveries} deliveries open, {waiting} inbound waiting, platform has {sent}")
        if open_deliveries == 0 and waiting == 0 and time.monotonic() - quiet_since >= 3:
            return round(time.monotonic() - started, 1)
        time.sleep(2)
    return None


def main():  # noqa: PLR0915 (one linear script: set up, run, settle, reconcile)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000, help="inbound + outbound, half each")
    parser.add_argument("--rate", type=float, default=40.0, help="messages pushed per second")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--chats", type=int, default=200, help="distinct Telegram chats")
    parser.add_argument("--web", type=int, default=2, help="daphne processes (the clients fail over)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--engine", choices=("sender", "tasks"), default="sender",
                        help="delivery engine: batch senders (default) or a Celery task per delivery")
    parser.add_argument("--senders", type=int, default=2, help="runsender processes (sender engine)")
    parser.add_argument("--sender-batch", type=int, default=200, help="deliveries a sender claims at a time")
    parser.add_argument("--kill-every", type=float, default=5.0, help="kill -9 daphne, a worker and a sender")
    parser.add_argument("--redis-every", type=float, default=20.0)
    parser.add_argument("--pg-every", type=float, default=30.0)
    parser.add_argument("--pg-down-seconds", type=float, default=2.0)
    parser.add_argument("--provider-every", type=float, default=12.0)
    parser.add_argument("--provider-fail-seconds", type=float, default=3.0)
    parser.add_argument("--settle-timeout", type=float, default=None,
                        help="seconds; ends as soon as all is settled (default: 300 + 0.15 per message)")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--give-up-after", type=float, default=300.0, help="a client's retries for one message")
    parser.add_argument("--check", action="store_true", help="exit 1 on loss, inbound duplicates or a broken bound")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, cluster) for a look")
    args = parser.parse_args()
    if args.engine == "tasks":
        args.senders = 0
    args.tag = os.urandom(3).hex()
    if args.settle_timeout is None:  # the backlog left by the chaos grows with the messages pushed
        args.settle_timeout = 300 + 0.15 * args.messages
    args.first_update_id = 700_000_000

    wall_started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="brain-chaos-"))
    workdir.chmod(0o755)  # the postgres user must reach its data directory inside
    log(f"work directory {workdir}")
    postgres, redis_server, started = Postgres(workdir), Redis(workdir), []
    telegram = brain = chaos = None

    def interrupted(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        postgres.init()
        redis_server.start()
        from tests.fakes.brain_server import FakeBrain
        from tests.fakes.telegram_server import FakeTelegram

        telegram = FakeTelegram(retry_after=2).start()
        brain_key = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        brain = FakeBrain(secret=brain_key).start()
        env = prepare_environment(
            postgres.url, redis_server.url,
            BRAIN_SIGNING_KEY=brain_key, BRAIN_URL=brain.url,
            PUBLIC_BASE_URL="https://chaos.example.org",
            BRAIN_BACKEND="connectors.delivery.brain.HttpBrain",
            BRAIN_TIMEOUT="3", BRAIN_MAX_RETRIES="1",
            # Shorter than the defaults so a run settles in minutes, still longer than any send (5 s)
            # or BRAIN call (2 × 3 s). The sweep grace stays the default: below the time a task can
            # wait in a backlogged queue, the sweeper would keep enqueuing copies of it.
            DELIVERY_SENDING_TIMEOUT="20", BRAIN_CLAIM_TIMEOUT="20",
            SWEEP_INTERVAL_SECONDS="5", DELIVERY_SWEEP_GRACE="10",
            # Every process (daphne NOTIFYs the senders at commit, beat's sweeper wakes them for re-driven rows).
            DELIVERY_ENGINE=args.engine,
        )
        setup_django()
        _, api_token = configure(env, telegram)
        web_ports = [free_port() for _ in range(args.web)]
        base_urls = [f"http://127.0.0.1:{port}" for port in web_ports]
        webs = [
            Service(f"daphne{i}", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "brain_connectors.asgi:application"], env, workdir,
                    lambda _, url=url: httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200)
            for i, (port, url) in enumerate(zip(web_ports, base_urls, strict=True))
        ]
        workers = [
            Service(f"worker{i}", [sys.executable, "-m", "celery", "-A", "brain_connectors", "worker", "-P", "threads",
                                   "-c", str(args.worker_threads), "-n", f"chaos{i}@%h", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat", "-l", "INFO"], env, workdir,
                    lambda service: b" ready." in service.log_since_start())
            for i in range(args.workers)
        ]
        senders = [
            Service(f"sender{i}", [sys.executable, str(ROOT / "manage.py"), "runsender", "--batch",
                                   str(args.sender_batch)], env, workdir,
                    lambda service: b"runsender: sending" in service.log_since_start())
            for i in range(args.senders)
        ]
        beat = Service("beat", [sys.executable, "-m", "celery", "-A", "brain_connectors", "beat", "-l", "WARNING",
                                "-s", str(workdir / "beat-schedule")], env, workdir, lambda _: True)
        for service in (*webs, *workers, *senders, beat):
            started.append(service.start())
        wait_for(lambda: all(web.uptime() is not None for web in webs), 90, "daphne")
        log(f"up: daphne on {web_ports}, {args.workers} workers, {args.senders} senders ({args.engine} engine), "
            f"beat; postgres on {postgres.port}, "
            f"redis on {redis_server.port}; pushing {args.messages} messages at {args.rate}/s")

        clients = Clients(args, base_urls, telegram, api_token, [7_100_000_000 + i for i in range(args.chats)])
        chaos = Chaos(args, webs, workers, senders, beat, postgres, redis_server, telegram)
        run_started = time.monotonic()
        chaos_thread = chaos.run()
        threads = clients.run()
        while any(thread.is_alive() for thread in threads):
            time.sleep(5)
            log(f"pushed: {len(clients.inbound_accepted)} inbound and {len(clients.outbound_accepted)} outbound "
                f"accepted, {clients.retries} retries; kills: web {sum(w.kills for w in webs)}, workers "
                f"{sum(w.kills for w in workers)}, senders {sum(s.kills for s in senders)}; redis {redis_server.restarts}, postgres {postgres.stops}; "
                f"platform got {len(telegram.sent)}")
        push_seconds = round(time.monotonic() - run_started, 1)
        chaos.stop()
        chaos_thread.join()
        time.sleep(args.provider_fail_seconds + 0.5)  # the last provider failure window ends
        telegram.clear_failures()
        telegram.up()
        log(f"all pushed in {push_seconds}s; chaos off, settling")
        settle_seconds = settle(args, telegram, [*webs, *workers, *senders, beat])

        inbound_rows, deliveries, redriven = database_state()
        figures = reconcile(
            inbound_accepted=clients.inbound_accepted, inbound_rows=inbound_rows,
            outbound_accepted=clients.outbound_accepted, deliveries=deliveries,
            platform_texts=[sent["visible_text"] for sent in telegram.sent],  # what the person sees
            brain_contents=[request.content for request in brain.accepted],
            redriven=redriven,
        )
        worker_kills = sum(w.kills for w in workers)
        sender_kills = sum(s.kills for s in senders)
        first_sent_at, sends = {}, Counter()
        for call in telegram.calls_to("sendMessage"):
            if call.status == 200:
                text = call.params.get("text")
                sends[text] += 1
                first_sent_at.setdefault(text, call.received_at)
        causes = attribute_duplicates(
            {text: at for text, at in first_sent_at.items() if sends[text] > 1}, postgres.outages,
            [at for w in workers for at in w.kill_times],
            sender_kills=[at for s in senders for at in s.kill_times] if senders else None,
        )
        ok, reasons, bound = verdict(
            figures, worker_kills=worker_kills, pg_stops=postgres.stops,
            worker_slots={"per_worker": args.worker_threads, "total": args.worker_threads * args.workers},
            sender_kills=sender_kills,
            sender_slots={"per_sender": args.sender_batch, "total": args.sender_batch * args.senders},
        )
        emit(bench="chaos", part="run", engine=args.engine, senders=args.senders, messages=args.messages,
             rate=args.rate, wall_seconds=round(time.monotonic() - wall_started, 1), push_seconds=push_seconds,
             settle_seconds=settle_seconds, settled=settle_seconds is not None, client_retries=clients.retries,
             refused=len(clients.refused), refused_examples=clients.refused[:3])
        emit(bench="chaos", part="chaos", web_kills=sum(w.kills for w in webs), worker_kills=worker_kills,
             sender_kills=sender_kills,
             redis_flush_restarts=redis_server.restarts, postgres_immediate_stops=postgres.stops,
             provider_failure_windows=dict(chaos.provider_windows),
             unexpected_exits={s.name: s.unexpected_exits for s in (*webs, *workers, *senders, beat)
                               if s.unexpected_exits},
             redriven_deliveries=len(redriven))
        emit(bench="chaos", part="inbound", **figures["inbound"])
        emit(bench="chaos", part="outbound", **figures["outbound"])
        emit(bench="chaos", part="replies", **figures["replies"])
        emit(bench="chaos", part="verdict", lost=figures["lost"], inbound_duplicates=figures["inbound_duplicates"],
             outbound_duplicates=figures["outbound_duplicates"], outbound_duplicates_after=causes,
             outbound_duplicate_bound=bound,
             bound_held=figures["outbound_duplicates"] <= bound and not figures["unexplained_outbound_duplicates"],
             ok=ok and settle_seconds is not None and not clients.refused, reasons=reasons)
        if settle_seconds is None:
            reasons.append("the system did not settle in time")
        if clients.refused:
            reasons.append(f"{len(clients.refused)} requests refused for good")
        if args.check and reasons:
            log("FAILED: " + "; ".join(reasons))
            return 1
        return 0
    finally:
        if chaos is not None:
            chaos.stop()  # first, so nothing is restarted while we stop it all
        for service in reversed(started):
            service.stop()
        for fake in (telegram, brain):
            if fake is not None:
                fake.stop()
        redis_server.stop()
        postgres.destroy()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
