"""Fixtures of the webhook fuzz tests: one started connector per webhook kind (against the loopback
fakes), the way each platform signs, and a snapshot of every table a webhook could write.

FUZZ_EXAMPLES=<factor> multiplies every test's number of examples (default 1: the whole package in
about a minute on SQLite); e.g. FUZZ_EXAMPLES=20 for a long hunt before a release.
"""
import hashlib
import hmac
import os
import time
from urllib.parse import quote

import pytest
from django.apps import apps
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http.multipartparser import MultiPartParserError
from django.test import RequestFactory
from hypothesis import HealthCheck
from hypothesis import settings as hsettings

from brain_connectors.shared import signing
from connectors.models import Connector
from connectors.platforms.webhook_urls import public_url
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.twilio_server import FakeTwilio, sign

SCALE = max(1, int(os.environ.get("FUZZ_EXAMPLES", "1")))
PUBLIC = "https://brain.example.org"
TG_TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "tw_test_token_0123456789abcdef"
HOOK_SECRET = "whsec_" + "d2ViaG9vay1mdXp6LXNlY3JldC0wMTIzNDU2Nzg5YWI="  # base64("webhook-fuzz-secret-0123456789ab")
FROM_NUMBER = "+14155550100"
SLACK_TOKEN = "xoxb-1111111111-2222222222-FuzzFuzzFuzzFuzzFuzz"  # noqa: S105 (a test credential)
SLACK_SECRET = "f0a1b2c3d4e5f60718293a4b5c6d7e8f"  # noqa: S105 (a test credential)

# Tables a webhook may touch. Anything else changing is a bug too, so all their models are counted.
WATCHED_APPS = ("connectors", "routing", "conversations", "audit")


def fuzz_settings(examples, **kwargs):
    """Hypothesis settings for one test: `examples` × FUZZ_EXAMPLES, no deadline (the database and
    the loopback fakes make timings noisy), and the function-scoped fixtures shared by all examples
    on purpose (the connectors; each example compares the tables before and after itself)."""
    return hsettings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
        **kwargs,
    )


def snapshot():
    """Row counts of every watched model, and the connector rows' mutable state."""
    counts = {}
    for app in WATCHED_APPS:
        for model in apps.get_app_config(app).get_models():
            counts[model._meta.label] = model.objects.count()
    connectors = list(
        Connector.objects.order_by("pk").values_list(
            "pk", "status", "platform_state", "updated_at", "last_error", "health_failures"
        )
    )
    return counts, connectors


def delta(before, after):
    """{model label: change in row count} for the models that changed."""
    return {label: after[0][label] - n for label, n in before[0].items() if after[0][label] != n}


# --- signing as each platform does -----------------------------------------------------------


def twilio_signature(path, body, content_type, token=AUTH_TOKEN):
    """(X-Twilio-Signature, decodable) for POSTing `body` to `path` (query included). Twilio signs
    the public URL and the form fields as the receiver decodes them, so both are taken from an
    identical request. A body Django cannot decode as a form at all (non-UTF-8 charset, too many
    fields, broken multipart) is signed without fields and `decodable` is False: Django answers it 400."""
    request = RequestFactory().generic("POST", path, data=body, content_type=content_type)
    try:
        params = request.POST
    except (BadRequest, SuspiciousOperation, MultiPartParserError):
        return sign(token, public_url(request), {}), False
    return sign(token, public_url(request), params), True


def hook_headers(body, secret=HOOK_SECRET, **kwargs):
    return signing.signed_headers(secret, body, **kwargs)


def url(route, connector_id):
    return route.format(id=quote(connector_id.encode("utf-8", "surrogatepass"), safe=""))


# --- connectors ------------------------------------------------------------------------------


@pytest.fixture
def brain_calls(monkeypatch):
    """Inbound messages handed to BRAIN after commit. Recorded, not run: a reply would go out
    through the platforms and blur what the webhook itself wrote."""
    calls = []
    monkeypatch.setattr("connectors.task_queue.enqueue_brain", calls.append)
    return calls


@pytest.fixture
def webhook_connectors(make_connector, settings, brain_calls):
    """Started connectors of every kind with a webhook: tgm, sms, wap, voice, hook, slk (and `off`, a
    stopped SMS connector)."""
    settings.PUBLIC_BASE_URL = PUBLIC
    telegram = FakeTelegram().start()
    twilio = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
    slack = FakeSlack().start()
    twilio_credentials = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
    twilio_config = {"from_number": FROM_NUMBER, "api_base_url": twilio.url, "timeout": 2}
    try:
        make_connector("tgm", kind="telegram", config={"mode": "webhook", "api_base_url": telegram.url},
                       credentials={"bot_token": TG_TOKEN})
        make_connector("sms", kind="sms", config=twilio_config, credentials=twilio_credentials)
        make_connector("wap", kind="whatsapp", config=twilio_config, credentials=twilio_credentials)
        # reply_wait_seconds 0: the TwiML answer does not wait for a BRAIN that is not called here.
        make_connector("voice", kind="voice", config={**twilio_config, "reply_wait_seconds": 0},
                       credentials=twilio_credentials)
        make_connector("hook", kind="webhook", config={"url": "http://127.0.0.1:9/unused"},
                       credentials={"signing_secret": HOOK_SECRET})
        make_connector("off", kind="sms", start=False, config=twilio_config, credentials=twilio_credentials)
        make_connector("slk", kind="slack", config={"api_base_url": slack.url},
                       credentials={"bot_token": SLACK_TOKEN, "signing_secret": SLACK_SECRET})
        yield {"telegram_secret": Connector.objects.get(pk="tgm").platform_secret, "telegram": telegram,
               "twilio": twilio, "slack": slack}
    finally:
        telegram.stop()
        twilio.stop()
        slack.stop()


def slack_headers(body: bytes, secret=SLACK_SECRET, timestamp=None):
    """Slack's request signature, computed from its documentation: v0= hex HMAC-SHA256 of v0:{timestamp}:{body}."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}
