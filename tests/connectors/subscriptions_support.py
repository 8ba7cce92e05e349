"""The event-subscription tests' fixtures (loopback receiver, owner, connector) and REST/delivery helpers."""
import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from connectors.events import subscriptions
from connectors.models import PERM_SEND, EventDelivery
from tests.fakes.receiver import FakeReceiver

LIST_URL = "/api/v1/subscriptions/"
PLACEHOLDER = "whsec_" + base64.b64encode(b"placeholder-until-we-know-it-000").decode()


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    """The fake receiver listens on 127.0.0.1, which production refuses by default."""
    settings.BRAIN_ALLOW_PRIVATE_URLS = True
    settings.BRAIN_URL_ALLOWED_HOSTS = []
    subscriptions.invalidate_cache()
    yield
    subscriptions.invalidate_cache()


@pytest.fixture
def receiver():
    fake = FakeReceiver(secret=PLACEHOLDER).start()
    yield fake
    fake.stop()


@pytest.fixture
def ada(make_user):
    return make_user("ada")


@pytest.fixture
def ada_api(ada, api, token_for):
    return api(token_for(ada))


@pytest.fixture
def connector(make_connector, ada, grant):
    connector = make_connector("locmem_main")
    grant(ada, PERM_SEND, connector)  # send implies view: ada may see this connector's events
    return connector


def subscribe(client, receiver, event_types=("connector.message.*",), **extra):
    """Create through REST; the receiver learns the secret the server generated."""
    r = client.post(LIST_URL, {"url": receiver.url, "event_types": list(event_types), **extra}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    receiver.secrets = [body["secret"]]
    return body


def audit_rows(action, **filters):
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("id"))


def deliveries_for(subscription_id):
    return list(EventDelivery.objects.filter(subscription_id=subscription_id).select_related("event").order_by("created_at"))


def make_due(delivery):
    """Let the backoff elapse, and the sweep's grace period too."""
    past = timezone.now() - timedelta(seconds=3600)
    EventDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=past, updated_at=past)
