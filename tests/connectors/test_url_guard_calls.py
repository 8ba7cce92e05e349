"""The outbound-URL guard when the call is made (issue 14, item 3): every client checks the
addresses it is about to connect to, so a DNS answer that changed since the URL was saved (DNS
rebinding), or a setting turned off since, is refused before a byte is sent. Covered: the webhook
kind, Telegram (python-telegram-bot), Twilio (its SDK), HttpBrain and event subscriptions.

The refused destination is always one of our own loopback fakes, so a failure of the guard shows
as a request the fake received, never as traffic to a private or metadata address."""
import pytest
from django.conf import settings as django_settings

from audit.models import AuditEvent
from connectors import services
from connectors.delivery.brain import BrainError, BrainRequest, HttpBrain
from connectors.events import log as events
from connectors.events import subscriptions
from connectors.models import PERM_SEND, Connector, DeliveryStatus, EventDelivery
from tests.conftest import SYSTEM
from tests.connectors import url_guard_support
from tests.connectors.url_guard_support import PUBLIC_ADDRESS
from tests.deliveries import send_now
from tests.fakes.brain_server import FakeBrain
from tests.fakes.receiver import FakeReceiver
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.twilio_server import FakeTwilio

pytestmark = pytest.mark.django_db(transaction=True)

strict = url_guard_support.strict
dns = url_guard_support.dns

SECRET = "whsec_d2ViaG9vay10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5YWI="
TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "tw_test_token_0123456789abcdef"


def named(url, name):
    """The fake's URL with its 127.0.0.1 replaced by a host name."""
    return url.replace("127.0.0.1", name)


@pytest.fixture
def receiver():
    fake = FakeReceiver(secret=SECRET).start()
    yield fake
    fake.stop()


# --- the webhook kind --------------------------------------------------------------------------


def test_a_webhook_url_rebound_to_loopback_is_refused_at_send_time(strict, dns, make_connector, receiver):
    dns["hooks.example"] = [PUBLIC_ADDRESS]  # what it resolved to when saved
    make_connector("hook", kind="webhook", config={"url": named(receiver.url, "hooks.example"), "timeout": 1},
                   credentials={"signing_secret": SECRET})
    dns["hooks.example"] = ["127.0.0.1"]  # ... and now: our fake stands in for an internal service
    delivery = send_now("hook", "ada", "hello")
    assert delivery.status == DeliveryStatus.FAILED and "BRAIN_ALLOW_PRIVATE_URLS" in delivery.last_error
    assert receiver.requests == []
    connector = Connector.objects.get(pk="hook")
    assert connector.status == "ERROR" and "BRAIN_ALLOW_PRIVATE_URLS" in connector.last_error
    assert AuditEvent.objects.filter(action="connector.error", details__error="unsafe_url").exists()


def test_a_webhook_post_goes_to_the_checked_address_under_its_own_name(dns, make_connector, receiver):
    dns["hooks.example"] = ["127.0.0.1"]  # allowed here: the test settings allow private addresses
    url = named(receiver.url, "hooks.example")
    make_connector("hook", kind="webhook", config={"url": url, "timeout": 1}, credentials={"signing_secret": SECRET})
    assert send_now("hook", "ada", "hello").status == DeliveryStatus.SENT
    (request,) = receiver.requests
    assert request.verified and request.headers["host"] == url.split("/")[2]


def test_the_webhook_health_check_is_guarded_too(strict, dns, make_connector, receiver):
    dns["hooks.example"] = [PUBLIC_ADDRESS]
    make_connector("hook", kind="webhook", start=False, config={"url": named(receiver.url, "hooks.example")},
                   credentials={"signing_secret": SECRET})
    dns["hooks.example"] = ["127.0.0.1"]
    result = services.test_connector(SYSTEM, "hook")
    assert not result.ok and "BRAIN_ALLOW_PRIVATE_URLS" in result.detail
    assert receiver.requests == []


# --- Telegram (python-telegram-bot) ------------------------------------------------------------


@pytest.fixture
def telegram_fake():
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


def test_telegram_calls_are_checked_when_made(settings, dns, make_connector, telegram_fake):
    dns["bot-api.lan"] = ["127.0.0.1"]
    make_connector("tg_main", kind="telegram", start=False,
                   config={"mode": "polling", "api_base_url": named(telegram_fake.url, "bot-api.lan")},
                   credentials={"bot_token": TOKEN})
    settings.BRAIN_ALLOW_PRIVATE_URLS = False  # turned off since the URL was saved
    connector = services.start_connector(SYSTEM, "tg_main")
    assert connector.status == "ERROR" and "BRAIN_ALLOW_PRIVATE_URLS" in connector.last_error
    assert telegram_fake.calls == []
    # With the setting back on, the same URL works, through the name.
    settings.BRAIN_ALLOW_PRIVATE_URLS = True
    assert services.start_connector(SYSTEM, "tg_main").status == "CONNECTED"
    assert [c.method for c in telegram_fake.calls][:1] == ["getMe"]


# --- Twilio (its SDK, over requests) -----------------------------------------------------------


@pytest.fixture
def twilio_fake():
    fake = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
    yield fake
    fake.stop()


def test_twilio_calls_are_checked_when_made(settings, dns, make_connector, twilio_fake):
    dns["twilio.lan"] = ["127.0.0.1"]
    make_connector("sms", kind="sms", start=False,
                   config={"from_number": "+14155550100", "api_base_url": named(twilio_fake.url, "twilio.lan"),
                           "timeout": 2},
                   credentials={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
    settings.BRAIN_ALLOW_PRIVATE_URLS = False
    connector = services.start_connector(SYSTEM, "sms")
    assert connector.status == "ERROR" and "BRAIN_ALLOW_PRIVATE_URLS" in connector.last_error
    assert twilio_fake.requests == []
    settings.BRAIN_ALLOW_PRIVATE_URLS = True
    assert services.start_connector(SYSTEM, "sms").status == "CONNECTED"
    assert len(twilio_fake.requests) == 1


# --- HttpBrain ---------------------------------------------------------------------------------


@pytest.fixture
def fake_brain():
    fake = FakeBrain(secret=django_settings.BRAIN_SIGNING_KEY).start()
    yield fake
    fake.stop()


def ask(url):
    request = BrainRequest(connector_id="c", connector_kind="locmem", sender="ada", content="hi")
    return HttpBrain(url=url, max_retries=2, backoff=0, timeout=2).reply(request)


def test_brain_calls_are_checked_when_made_and_not_retried(strict, dns, fake_brain):
    with pytest.raises(BrainError) as caught:
        ask(fake_brain.url)
    assert "BRAIN_ALLOW_PRIVATE_URLS" in str(caught.value) and caught.value.code == "brain_unsafe_url"
    dns["brain.example"] = ["169.254.169.254"]  # as if rebound after the start-up check
    with pytest.raises(BrainError, match="always refused"):
        ask(named(fake_brain.url, "brain.example"))
    assert fake_brain.requests == []


def test_an_internal_brain_is_reached_through_an_allowed_host_name(strict, dns, fake_brain):
    dns["brain.internal"] = ["127.0.0.1"]
    strict.BRAIN_URL_ALLOWED_HOSTS = ["brain.internal"]
    url = named(fake_brain.url, "brain.internal")
    assert ask(url).startswith("fake brain got: hi")
    (request,) = fake_brain.requests
    assert request.headers["host"] == url.split("/")[2]


# --- event subscriptions -----------------------------------------------------------------------


def test_a_subscription_rebound_to_loopback_fails_without_a_request(strict, dns, make_user, api, token_for,
                                                                    make_connector, grant, receiver):
    ada = make_user("ada")
    connector = make_connector("locmem_main")
    grant(ada, PERM_SEND, connector)
    dns["crm.example"] = [PUBLIC_ADDRESS]
    r = api(token_for(ada)).post("/api/v1/subscriptions/", {"url": named(receiver.url, "crm.example"),
                                                           "event_types": ["connector.error"]}, format="json")
    assert r.status_code == 201, r.content
    subscriptions.invalidate_cache()
    dns["crm.example"] = ["127.0.0.1"]
    events.publish("connector.error", connector_id=connector.pk, data={})
    (delivery,) = EventDelivery.objects.all()
    assert delivery.status == DeliveryStatus.FAILED and delivery.last_error.startswith("unsafe url")
    assert "BRAIN_ALLOW_PRIVATE_URLS" in delivery.last_error
    assert receiver.requests == []


def test_a_host_that_stops_resolving_is_an_outage_not_a_refusal(settings, dns, make_user, api, token_for,
                                                                 make_connector, grant, receiver, twilio_fake):
    """Retried later, as before the guard: only an address the rules refuse is permanent."""
    ada = make_user("ada")
    connector = make_connector("locmem_main")
    grant(ada, PERM_SEND, connector)
    dns["crm.lan"] = ["127.0.0.1"]
    r = api(token_for(ada)).post("/api/v1/subscriptions/", {"url": named(receiver.url, "crm.lan"),
                                                           "event_types": ["connector.error"]}, format="json")
    assert r.status_code == 201, r.content
    subscriptions.invalidate_cache()
    del dns["crm.lan"]
    events.publish("connector.error", connector_id=connector.pk, data={})
    (delivery,) = EventDelivery.objects.all()
    assert delivery.status == DeliveryStatus.QUEUED and "does not resolve" in delivery.last_error
    # Twilio: a start that cannot reach the API goes ahead (sends are retried), as for any outage.
    dns["twilio.lan"] = ["127.0.0.1"]
    make_connector("sms", kind="sms", start=False,
                   config={"from_number": "+14155550100", "api_base_url": named(twilio_fake.url, "twilio.lan")},
                   credentials={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
    del dns["twilio.lan"]
    assert services.start_connector(SYSTEM, "sms").status == "CONNECTED"
    assert twilio_fake.requests == [] and receiver.requests == []
