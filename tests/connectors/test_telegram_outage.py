"""A provider outage of any length loses nothing: the backlog drains, in order per chat, once the
fake Telegram is back."""
import pytest
from django.utils import timezone

from connectors import services
from connectors.models import Delivery
from tests.conftest import SYSTEM
from tests.fakes.telegram_server import FakeTelegram

TOKEN = "7000000001:AAH-outage-test-token-0123456789"
CHATS = ["5550000001", "5550000002", "5550000003"]


@pytest.fixture
def fake():
    server = FakeTelegram().start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_outage_then_recovery_delivers_everything_in_order(make_connector, fake, settings):
    settings.DELIVERY_SWEEP_GRACE = 0
    settings.DELIVERY_MAX_ATTEMPTS = 50  # a long outage: many failed attempts, none fatal
    make_connector("tg_outage", kind="telegram", config={"mode": "polling", "api_base_url": fake.url, "timeout": 2},
                   credentials={"bot_token": TOKEN})
    fake.down()
    for i in range(4):
        for chat in CHATS:
            services.send_message(SYSTEM, "tg_outage", chat, f"{chat} #{i}")
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}

    # Many rounds of the sweeper during the outage: attempts fail, nothing is dropped.
    for _ in range(5):
        Delivery.objects.update(next_attempt_at=timezone.now())  # do not wait out the backoff
        services.sweep()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    assert all(d.attempts >= 5 for d in Delivery.objects.filter(recipient__in=CHATS).order_by("created_at")[:3])
    assert fake.sent == []

    fake.up()
    for _ in range(20):
        if not Delivery.objects.exclude(status="sent").exists():
            break
        Delivery.objects.filter(status="queued").update(next_attempt_at=timezone.now())
        services.sweep()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    for chat in CHATS:
        assert [m["text"] for m in fake.sent if m["chat_id"] == chat] == [f"{chat} #{i}" for i in range(4)]
