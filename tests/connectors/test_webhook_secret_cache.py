"""The webhook view's per-process cache of decrypted connector secrets (connectors.registry.secret_cache):
decrypted once, never stale after a change, and a forged request still writes nothing."""
import base64
import json

import pytest

from audit.models import AuditEvent
from connectors import services
from connectors.models import InboundMessage
from connectors.registry import secret_cache
from conversations.models import PendingMessage
from tests.conftest import SYSTEM
from tests.fakes.receiver import FakeReceiver, sign_request

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec_" + base64.b64encode(b"webhook-test-secret-0123456789ab").decode()
ROTATED = "whsec_" + base64.b64encode(b"the-rotated-secret-0123456789abc").decode()
URL = "/webhooks/inbound/cache_hook/"


@pytest.fixture(autouse=True)
def empty_cache():
    secret_cache.forget()
    yield
    secret_cache.forget()


@pytest.fixture
def hook(make_connector):
    receiver = FakeReceiver(secret=SECRET).start()  # where BRAIN's echo replies go
    yield make_connector("cache_hook", kind="webhook", config={"url": receiver.url, "timeout": 1},
                         credentials={"signing_secret": SECRET})
    receiver.stop()


@pytest.fixture
def decryptions(monkeypatch):
    calls = []
    decrypt = secret_cache.decrypt_str

    def counting(token, **kwargs):
        calls.append(kwargs.get("label"))
        return decrypt(token, **kwargs)

    monkeypatch.setattr(secret_cache, "decrypt_str", counting)
    return calls


def post(client, msg_id, secret, content="hello"):
    body = json.dumps({"id": msg_id, "sender": "ada", "content": content}).encode()
    return client.post(URL, data=body, content_type="application/json", headers=sign_request(secret, body, msg_id))


def written():
    return InboundMessage.objects.count(), AuditEvent.objects.count(), PendingMessage.objects.count()


def test_secrets_are_decrypted_once_per_process_not_per_request(hook, client, decryptions):
    assert post(client, "c1", SECRET).status_code == 200
    first = len(decryptions)
    assert first >= 1
    for i in range(3):
        assert post(client, f"c{i + 2}", SECRET).status_code == 200
    assert len(decryptions) == first
    assert InboundMessage.objects.count() == 4


def test_a_rotated_secret_refuses_the_old_signature_at_once(hook, client):
    assert post(client, "r1", SECRET).status_code == 200  # cached now
    services.update_connector(SYSTEM, "cache_hook", credentials={"signing_secret": ROTATED})

    before = written()
    assert post(client, "r2", SECRET).status_code == 403
    assert written() == before
    assert post(client, "r3", ROTATED).status_code == 200


def test_a_forged_signature_writes_nothing_cached_or_not(hook, client):
    forged = "whsec_" + base64.b64encode(b"not-the-secret-at-all-0123456789").decode()
    before = written()
    assert post(client, "f1", forged).status_code == 403  # before anything is cached
    assert post(client, "ok", SECRET).status_code == 200
    before = written()
    assert post(client, "f2", forged).status_code == 403  # with the secrets cached
    assert written() == before


def test_a_new_platform_secret_is_served_at_once(make_connector):
    make_connector("cache_locmem")
    assert secret_cache.connector_for_webhook("cache_locmem").platform_secret == ""
    services.save_platform_secret("cache_locmem", "telegram-style-secret-token-1")
    assert secret_cache.connector_for_webhook("cache_locmem").platform_secret == "telegram-style-secret-token-1"
    services.save_platform_secret("cache_locmem", "telegram-style-secret-token-2")
    row = secret_cache.connector_for_webhook("cache_locmem")
    assert row.platform_secret == "telegram-style-secret-token-2"
    assert row.get_credentials() == {}
    assert secret_cache.connector_for_webhook("nope") is None
