"""Shared pieces of the BRAIN tests: the loopback fake BRAIN, requests, clients and independently signed headers."""
import base64
import hashlib
import hmac
import json
import time

import pytest
from django.conf import settings

from connectors.delivery.brain import BrainRequest, HttpBrain
from tests.fakes.brain_server import FakeBrain

OTHER_KEY = "whsec_" + base64.b64encode(b"another-key-for-rotation-tests-0001").decode()


@pytest.fixture
def fake_brain():
    fake = FakeBrain(secret=settings.BRAIN_SIGNING_KEY, slow_seconds=3.0).start()
    yield fake
    fake.stop()


def brain_request(content="hello", context=None):
    return BrainRequest(
        connector_id="locmem_main",
        connector_kind="locmem",
        sender="+15550001",
        sender_name="Ada",
        content=content,
        message_id="m-1",
        context=context if context is not None else [],
    )


def http_brain(fake, **kwargs):
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("backoff", 0)
    kwargs.setdefault("timeout", 2.0)
    return HttpBrain(url=fake.url if isinstance(fake, FakeBrain) else fake, **kwargs)


def independent_headers(secret, body: bytes, *, msg_id="msg_test", timestamp=None):
    """Standard-Webhooks headers computed here, without brain_connectors.shared.signing."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


BODY = json.dumps(
    {"connector": {"id": "c", "kind": "locmem"}, "message": {"id": "1", "sender": "s", "sender_name": "",
     "content": "hi"}, "context": []}
).encode()


@pytest.fixture
def http_brain_settings(settings, fake_brain):
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    settings.BRAIN_URL = fake_brain.url
    settings.BRAIN_MAX_RETRIES = 1
    return settings
