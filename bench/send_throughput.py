"""Outbound throughput: N messages through send_message → deliver (a real Celery worker) → the
loopback fake Telegram, on PostgreSQL and Redis; then the same N with a plain python-telegram-bot
loop to the same fake. Prints msg/s, enqueue→sent p50/p99, and the ratio (goal: ≥ 0.8).

    .venv/bin/python bench/send_throughput.py --messages 1000 --chats 50 --concurrency 8 --enqueuers 4
"""
import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from common import emit, fresh_database, prepare_environment, setup_django, summary_ms

TOKEN = "7000000001:AAH-bench-token-0123456789abcdefghij"


def enqueue(services, system, i, chats):
    from django.db import close_old_connections

    services.send_message(system, "tg_bench", str(5550000000 + i % chats), f"bench message {i}")
    close_old_connections()


def pipeline_run(args, fake, env):
    from django.db import close_old_connections

    from connectors import services
    from connectors.models import Delivery
    from connectors.permissions import Principal
    from tests.worker import CeleryWorker, use_broker

    system = Principal.system_actor("bench", via="bench")
    services.register_connector(
        system, id="tg_bench", kind="telegram", display_name="Bench",
        config={"mode": "polling", "api_base_url": fake.url}, credentials={"bot_token": TOKEN},
    )
    services.start_connector(system, "tg_bench")
    worker = CeleryWorker(env, concurrency=args.concurrency).start()
    restore = use_broker(worker.queue)
    try:
        fake.reset()
        started = time.perf_counter()
        # Several concurrent callers, as REST clients are; each message is one send_message call.
        with ThreadPoolExecutor(args.enqueuers) as pool:
            list(pool.map(lambda i: enqueue(services, system, i, args.chats), range(args.messages)))
        enqueued = time.perf_counter()
        while len(fake.sent) < args.messages:
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"timed out: {len(fake.sent)}/{args.messages} sent")
            time.sleep(0.02)
        finished = time.perf_counter()
        close_old_connections()
        rows = list(Delivery.objects.filter(status="sent").values_list("created_at", "sent_at"))
    finally:
        worker.stop()
        restore()
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
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    env = prepare_environment()
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from tests.fakes.telegram_server import FakeTelegram

    fake = FakeTelegram().start()
    try:
        pipeline = pipeline_run(args, fake, env)
        emit(bench="send_throughput", path="pipeline", **pipeline)
        plain = plain_loop_run(args, fake)
        emit(bench="send_throughput", path="plain_ptb_loop", **plain)
        ratio = round(pipeline["msg_per_s"] / plain["msg_per_s"], 3)
        emit(bench="send_throughput", ratio_vs_plain=ratio, goal=0.8, meets_goal=ratio >= 0.8)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
