"""A real Celery worker on Redis is killed with SIGKILL in the middle of a batch and restarted.

Every message must reach the fake Telegram: none lost. A duplicate is allowed only where the
worker died between Telegram accepting a send and our commit (at most one per kill); each one
is counted, reported, and matched by a `message.redrive` audit row.
"""
import collections
import time

import pytest
from django.db import close_old_connections

from audit.models import AuditEvent
from connectors import services
from connectors.models import Delivery
from tests.conftest import SYSTEM
from tests.fakes.telegram_server import FakeTelegram
from tests.worker import CeleryWorker, use_broker

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHATS = [str(5550000000 + n) for n in range(10)]
PER_CHAT = 15


@pytest.fixture
def telegram():
    fake = FakeTelegram(slow_seconds=0.04).start()
    fake.fail("slow", method="sendMessage")  # 40 ms per send: the worker is busy when it dies
    yield fake
    fake.stop()


def test_kill_9_worker_mid_batch_loses_nothing(subprocess_env, make_connector, settings, telegram, capsys):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.DELIVERY_SENDING_TIMEOUT = 2
    settings.DELIVERY_SWEEP_GRACE = 1
    make_connector(
        "tg_crash",
        kind="telegram",
        config={"mode": "polling", "api_base_url": telegram.url},
        credentials={"bot_token": "7000000001:AAH-fake-token-for-tests"},
    )
    # One send in flight at a time, so "at most one duplicate per kill" is the bound to check.
    worker = CeleryWorker(subprocess_env, concurrency=1).start()
    restore = use_broker(worker.queue)
    try:
        expected = []
        for i in range(PER_CHAT):
            for chat in CHATS:
                text = f"crash-test {chat} #{i}"
                services.send_message(SYSTEM, "tg_crash", chat, text)
                expected.append(text)

        # Kill it while it is sending: some messages out, most still to go.
        deadline = time.monotonic() + 30
        while len(telegram.sent) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent_before_kill = len(telegram.sent)
        worker.kill()
        kills = 1
        assert 0 < sent_before_kill < len(expected), "the kill must land mid-batch"

        worker = CeleryWorker(subprocess_env, queue=worker.queue, concurrency=1).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            close_old_connections()
            if not Delivery.objects.exclude(status="sent").exists():
                break
            services.sweep()  # what Celery beat runs every SWEEP_INTERVAL_SECONDS
            time.sleep(1)
    finally:
        worker.stop()
        restore()

    arrived = collections.Counter(m["text"] for m in telegram.sent)
    lost = [text for text in expected if arrived[text] == 0]
    duplicates = sum(count - 1 for count in arrived.values() if count > 1)
    redrives = AuditEvent.objects.filter(action="message.redrive").count()
    statuses = collections.Counter(Delivery.objects.values_list("status", flat=True))
    with capsys.disabled():
        print(
            f"\n[worker crash] messages={len(expected)} sent_before_kill={sent_before_kill} kills={kills} "
            f"lost={len(lost)} duplicates={duplicates} redriven={redrives} statuses={dict(statuses)}"
        )
    assert lost == [], f"lost messages: {lost[:5]}… ({worker.log()})"
    assert statuses == {"sent": len(expected)}
    assert duplicates <= kills
    # Each duplicate is a re-driven delivery: the one the worker was sending when it died.
    redriven_ids = [e.details["delivery_id"] for e in AuditEvent.objects.filter(action="message.redrive")]
    redriven = {d.content for d in Delivery.objects.filter(pk__in=redriven_ids)}
    assert {text for text, count in arrived.items() if count > 1} <= redriven
    # Order per chat survived the crash.
    for chat in CHATS:
        sequence = [int(m["text"].rsplit("#", 1)[1]) for m in telegram.sent if m["text"].startswith(f"crash-test {chat} ")]
        firsts = list(dict.fromkeys(sequence))
        assert firsts == sorted(firsts), f"chat {chat} out of order: {sequence}"
