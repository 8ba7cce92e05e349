"""Shared pieces of the Telegram tests: the fake Bot API, connectors on it, fixtures, post/send/poll helpers.

The loopback fake is tests/fakes/telegram_server.py; the fixtures are real-format Bot API payloads."""
import json
import re
import threading
from pathlib import Path

import pytest
from django.test import Client

from audit.models import AuditEvent
from connectors.models import Connector, Delivery, InboundMessage
from connectors.registry.kinds import connector_for
from tests.deliveries import send_now
from tests.fakes.telegram_server import FakeTelegram

# Real-format Bot API payloads (updates as Telegram POSTs them, and its error bodies).
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
OTHER_TOKEN = "7000000002:AAFakeOtherBotTokenForTests0123456789"
PUBLIC = "https://brain.example.org"
SECRET_HEADER = "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN"
ADA = "5550123401"
GROUP = "-1001234567890"


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def counts():
    return InboundMessage.objects.count(), Delivery.objects.count(), AuditEvent.objects.count()


@pytest.fixture
def fake():
    server = FakeTelegram().start()
    yield server
    server.on_call = None
    server.stop()


@pytest.fixture
def public_url(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    return PUBLIC


@pytest.fixture
def telegram(make_connector, fake, public_url):
    """telegram(id, mode="webhook", start=True, token=TOKEN, **config) → the connector row."""

    def make(id="tg_main", mode="webhook", start=True, token=TOKEN, **config):
        config = {"mode": mode, "api_base_url": fake.url, "poll_timeout": 1, **config}
        make_connector(id, kind="telegram", start=start, config=config, credentials={"bot_token": token})
        return Connector.objects.get(pk=id)

    return make


def post_update(connector_id, payload, secret=None, *, raw=None):
    """POST an update to the public webhook URL, as Telegram does."""
    body = raw if raw is not None else json.dumps(payload)
    headers = {} if secret is None else {SECRET_HEADER: secret}
    return Client().post(f"/webhooks/telegram/{connector_id}/", data=body, content_type="application/json", **headers)


def secret_of(connector_id):
    return Connector.objects.get(pk=connector_id).platform_secret


def _non_space(text):
    return re.sub(r"\s+", "", text)


def send(connector_id, content, recipient=ADA, **kwargs):
    return send_now(connector_id, recipient, content, **kwargs)


def poll(connector_id="tg_poll", stop_event=None):
    row = Connector.objects.get(pk=connector_id)
    return connector_for(row).poll_once(stop_event or threading.Event())
