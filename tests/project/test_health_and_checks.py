"""Probes and configuration checks, as an operator meets them."""
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.conftest import BASE_DIR

pytestmark = pytest.mark.django_db


def test_healthz_needs_no_auth(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_readyz_reports_each_component(client):
    body = client.get("/readyz").json()
    assert body["status"] == "ok" and body["down"] == []
    assert set(body["components"]) == {"database", "channel_layer", "broker"}


def test_readyz_is_503_and_names_the_broken_part(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    from brain_connectors.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        r = client.get("/readyz")
    finally:
        app.conf.broker_url = "memory://localhost/"
    assert r.status_code == 503
    body = r.json()
    assert body["down"] == ["broker"] and body["components"]["broker"]["status"] == "down"


def test_readyz_reports_a_down_channel_layer(client, settings):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        r = client.get("/readyz")
    finally:
        channel_layers.backends.clear()
    assert r.status_code == 503 and "channel_layer" in r.json()["down"]


@pytest.mark.vendor_neutral
@pytest.mark.parametrize(
    "overrides, variable",
    [({"SECRET_KEY": ""}, "SECRET_KEY"), ({"FERNET_KEYS": ""}, "FERNET_KEYS")],
)
def test_missing_secret_stops_startup_with_a_named_error(manage, subprocess_env, overrides, variable):
    """With DEBUG off, a missing secret makes both `check` and the ASGI app (daphne) refuse to start."""
    env = {"DEBUG": "false", **overrides}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert f"{variable} is not set" in result.stderr

    asgi = subprocess.run(
        [sys.executable, "-c", "import brain_connectors.asgi"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**subprocess_env, **env},
    )
    assert asgi.returncode != 0 and f"{variable} is not set" in asgi.stderr


def test_invalid_fernet_key_is_a_check_error(settings):
    settings.FERNET_KEYS = ["not-a-fernet-key"]
    with pytest.raises(SystemCheckError, match="FERNET_KEYS entry #1 is not a valid Fernet key"):
        call_command("check")


def test_http_brain_without_url_is_a_check_error(settings):
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    settings.BRAIN_URL = ""
    with pytest.raises(SystemCheckError, match="BRAIN_URL is not set"):
        call_command("check")


def test_unknown_connector_class_is_a_check_error(settings):
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "pigeon": "nowhere.Pigeon"}
    with pytest.raises(SystemCheckError, match="CONNECTOR_CLASSES\\['pigeon'\\] cannot be imported"):
        call_command("check")


@pytest.mark.vendor_neutral
def test_a_missing_search_index_key_is_a_deployment_warning_only(manage):
    env = {"DEBUG": "false", "SEARCH_INDEX_KEY": ""}
    deploy = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert deploy.returncode != 0 and "brain_connectors.W001" in deploy.stderr
    everyday = manage("makemigrations", "--check", "--dry-run", env=env)
    assert everyday.returncode == 0, everyday.stderr
    assert everyday.stdout.strip() == "No changes detected" and "W001" not in everyday.stderr


@pytest.mark.vendor_neutral
def test_makemigrations_needs_no_secrets(manage):
    """Schema work reads models only: a bare checkout without secrets can check its migrations,
    while `check` (and serving) still refuses to run without them."""
    env = {"DEBUG": "false", "SECRET_KEY": "", "FERNET_KEYS": ""}
    schema = manage("makemigrations", "--check", "--dry-run", env=env)
    assert schema.returncode == 0, schema.stderr
    assert "No changes detected" in schema.stdout
    assert manage("check", env=env).returncode != 0
