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
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from chaos_load import CONNECTOR, Chaos, Clients
from chaos_processes import Postgres, Redis, Service, free_port, log, wait_for
from chaos_reconcile import attribute_duplicates, reconcile, verdict
from common import ROOT, emit, prepare_environment, setup_django

TOKEN = "7000000001:AAH-chaos-token-0123456789abcdefghij"


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
