"""Outbound throughput: N messages through send_message → deliver (a real Celery worker) → the
loopback fake Telegram, on PostgreSQL and Redis; then the same N with a plain python-telegram-bot
loop to the same fake. Prints msg/s, enqueue→sent p50/p99, and the ratio (goal: ≥ 0.8).

Each figure is taken at every `--latencies-ms`: the fake waits that long before answering, as
the real Bot API's round trip does (tens of ms from most hosts). At 0 ms both paths are pure CPU
on this machine, and the pipeline does far more per message (a committed delivery row and
audit row, a broker round trip, two more transactions in the worker) than a bare HTTP call.

    .venv/bin/python bench/send_throughput.py --messages 1000 --chats 50 --concurrency 8 --enqueuers 4
"""
import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from common import emit, fresh_database, prepare_environment, setup_django, summary_ms

TOKEN = "7000000001:AAH-bench-token-0123456789abcdefghij"


def enqueue(services, system, connector_id, i, chats):
    from django.db import close_old_connections

    services.send_message(system, connector_id, str(5550000000 + i % chats), f"bench message {i}")
    close_old_connections()


def pipeline_run(args, fake, connector_id):
    from django.db import close_old_connections

    from connectors import services
    from connectors.models import Delivery
    from connectors.permissions import Principal

    system = Principal.system_actor("bench", via="bench")
    services.register_connector(
        system, id=connector_id, kind="telegram", display_name="Bench",
        config={"mode": "polling", "api_base_url": fake.url}, credentials={"bot_token": TOKEN},
    )
    services.start_connector(system, connector_id)
    fake.reset()
    started = time.perf_counter()
    # Several concurrent callers, as REST clients are; each message is one send_message call.
    with ThreadPoolExecutor(args.enqueuers) as pool:
        list(pool.map(lambda i: enqueue(services, system, connector_id, i, args.chats), range(args.messages)))
    enqueued = time.perf_counter()
    sent = Delivery.objects.filter(connector_id=connector_id, status="sent")
    while len(fake.sent) < args.messages or sent.count() < args.messages:  # the fake has it, and it is committed
        if time.perf_counter() - started > args.timeout:
            raise SystemExit(f"timed out: {len(fake.sent)}/{args.messages} sent")
        time.sleep(0.02)
        close_old_connections()
    finished = time.perf_counter()
    rows = list(sent.values_list("created_at", "sent_at"))
    latencies = [(sent - created).total_seconds() for created, sent in rows]
    return {
        "messages": args.messages,
        "sent_rows": len(rows),
        "seconds": round(finished - started, 3),
        "enqueue_seconds": round(enqueued - started, 3),
        "msg_per_s": round(args.messages / (finished - started), 1),
        **{f"enqueue_to_sent_{k}": v for k, v in summary_ms(latencies).items()},
    }


def plain_loop_run(args, fake):
    from telegram import Bot

    async def loop():
        async with Bot(TOKEN, base_url=f"{fake.url}/bot") as bot:
            started = time.perf_counter()
            for i in range(args.messages):
                await bot.send_message(chat_id=5550000000 + i % args.chats, text=f"plain message {i}")
            return time.perf_counter() - started

    fake.reset()
    seconds = asyncio.run(loop())
    return {"messages": args.messages, "seconds": round(seconds, 3), "msg_per_s": round(args.messages / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads")
    parser.add_argument("--enqueuers", type=int, default=4, help="concurrent send_message callers")
    parser.add_argument("--latencies-ms", default="0,30", help="the fake's answer delays to measure at")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    latencies = [int(value) for value in args.latencies_ms.split(",")]

    env = prepare_environment()
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from tests.fakes.telegram_server import FakeTelegram
    from tests.worker import CeleryWorker, use_broker

    fake = FakeTelegram().start()
    worker = CeleryWorker(env, concurrency=args.concurrency).start()
    restore = use_broker(worker.queue)
    try:
        for latency_ms in latencies:
            fake.latency_seconds = latency_ms / 1000
            pipeline = pipeline_run(args, fake, f"tg_bench_{latency_ms}ms")
            emit(bench="send_throughput", path="pipeline", fake_latency_ms=latency_ms, **pipeline)
            plain = plain_loop_run(args, fake)
            emit(bench="send_throughput", path="plain_ptb_loop", fake_latency_ms=latency_ms, **plain)
            ratio = round(pipeline["msg_per_s"] / plain["msg_per_s"], 3)
            emit(bench="send_throughput", fake_latency_ms=latency_ms, ratio_vs_plain=ratio, goal=0.8,
                 meets_goal=ratio >= 0.8)
    finally:
        worker.stop()
        restore()
        fake.stop()


if __name__ == "__main__":
    main()
