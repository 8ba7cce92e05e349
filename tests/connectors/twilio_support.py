"""Shared pieces of the Twilio tests: the loopback fake, connectors pointed at it, fixtures as
Twilio posts them (form-encoded, signed), and an embedded Celery worker for the non-eager path."""
import json
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.db import connection

from audit.models import AuditEvent
from connectors.models import Delivery, InboundMessage
from tests.fakes.twilio_server import FakeTwilio, sign

ACCOUNT_SID = "AC" + "0" * 32  # the fixtures' AccountSid
AUTH_TOKEN = "tw_test_token_0123456789abcdef"
FROM_NUMBER = "+14155550100"
PUBLIC = "https://brain.example.org"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "twilio"


def fixture(name, **overrides):
    """A Twilio fixture (form fields as a dict), with some fields replaced or (None) removed."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def twilio_fake():
    fake = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def twilio_connector(make_connector, twilio_fake):
    """twilio_connector(id, kind, **config): a registered, started connector using the fake."""

    def make(id, kind, start=True, credentials=None, **config):
        config.setdefault("from_number", FROM_NUMBER)
        config.setdefault("api_base_url", twilio_fake.url)
        config.setdefault("timeout", 2)
        return make_connector(
            id,
            kind=kind,
            start=start,
            config=config,
            credentials=credentials or {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
        )

    return make


def post_twilio(client, path, params, *, token=AUTH_TOKEN, sign_url=None, signature=None, **extra):
    """POST `params` form-encoded to `path` (which may carry a query) as Twilio would: signed with
    `token` for `sign_url` (default: the URL the test client calls, http://testserver + path)."""
    if signature is None:
        signature = sign(token, sign_url or f"http://testserver{path}", params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(
        path, data=urlencode(params), content_type="application/x-www-form-urlencoded", **headers, **extra
    )


def counts():
    return InboundMessage.objects.count(), Delivery.objects.count(), AuditEvent.objects.count()


def audit_details(action):
    return [e.details for e in AuditEvent.objects.filter(action=action).order_by("pk")]


@contextmanager
def embedded_worker():
    """A real Celery worker thread on an in-memory broker of its own, with eager mode off: tasks
    (BRAIN, deliveries) run beside the request, as with production workers. Nothing leaves the
    process, so concurrent test runs sharing a Redis cannot take each other's tasks."""
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from brain_connectors.celery import app as main_app

    app = Celery("brain_connectors_test_worker", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url="memory://",
        task_always_eager=False,
        broker_transport_options={},
        worker_hijack_root_logger=False,  # leave the logging of the test process alone
    )
    app.loader.import_default_modules()
    import connectors.tasks  # noqa: F401  (registers the shared tasks)

    app.finalize()

    def close_connection(**kwargs):
        if threading.current_thread() is not threading.main_thread():
            connection.close()

    task_postrun.connect(close_connection, weak=False)
    app.set_current()
    app.set_default()
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield app
    finally:
        task_postrun.disconnect(close_connection)
        main_app.set_current()
        main_app.set_default()
