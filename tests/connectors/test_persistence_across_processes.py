"""The registry lives in the database: another process sees it, and a server restart keeps it."""
import base64
import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import BASE_DIR, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_connector_registered_here_is_listed_by_a_new_process(make_connector, manage):
    make_connector("seen_elsewhere")
    make_connector("stopped_one", start=False)
    result = manage("list_connectors")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines()[1:]}
    assert lines == {"seen_elsewhere": "CONNECTED", "stopped_one": "STOPPED"}

    refused = manage("list_connectors", "--status", "SLEEPING")
    assert refused.returncode != 0 and "Unknown status 'SLEEPING'" in refused.stderr
    assert "Traceback" not in refused.stderr


def _start_daphne(env, port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "brain_connectors.asgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("daphne did not start: " + proc.stdout.read().decode(errors="replace"))


def test_connector_created_over_rest_survives_a_server_restart(subprocess_env, make_user, token_for):
    token = token_for(make_user("operator", superuser=True))
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1/connectors/"

    server = _start_daphne(subprocess_env, port)
    try:
        created = httpx.post(
            base, json={"id": "durable_one", "kind": "cli", "display_name": "Durable"}, headers=headers, timeout=10
        )
        assert created.status_code == 201, created.text
        assert httpx.post(base + "durable_one/start/", headers=headers, timeout=10).json()["status"] == "CONNECTED"
    finally:
        server.kill()
        server.wait(timeout=10)

    server = _start_daphne(subprocess_env, port)
    try:
        listed = httpx.get(base, headers=headers, timeout=10).json()["results"]
        assert [(c["id"], c["status"]) for c in listed] == [("durable_one", "CONNECTED")]
    finally:
        server.kill()
        server.wait(timeout=10)


def test_webhooks_are_served_through_daphne_without_the_site_middleware(subprocess_env, make_connector):
    """brain_connectors.asgi sends /webhooks/ to a Django handler without sessions, CSRF or
    auth middleware (they cost a thread hop each); everything else keeps the full stack."""
    from connectors.models import InboundMessage
    from tests.fakes.receiver import sign_request

    secret = "whsec_" + base64.b64encode(b"daphne-webhook-secret-0123456789").decode()
    forger = "whsec_" + base64.b64encode(b"somebody-elses-secret-0123456789").decode()
    make_connector("hook_daphne", kind="webhook", config={"url": "http://127.0.0.1:9/unused"},  # never called
                   credentials={"signing_secret": secret})
    port = free_port()
    server = _start_daphne(subprocess_env, port)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/inbound/hook_daphne/"
        body = json.dumps({"sender": "ada", "content": "through daphne", "id": "d-1"}).encode()
        first = httpx.post(url, content=body, headers={"Content-Type": "application/json",
                                                       **sign_request(secret, body, "wh-d1")}, timeout=10)
        again = httpx.post(url, content=body, headers={"Content-Type": "application/json",
                                                       **sign_request(secret, body, "wh-d2")}, timeout=10)
        forged = httpx.post(url, content=body, headers={"Content-Type": "application/json",
                                                        **sign_request(forger, body, "wh-d3")}, timeout=10)
        admin = httpx.get(f"http://127.0.0.1:{port}/admin/login/", timeout=10)
    finally:
        server.kill()
        server.wait(timeout=10)

    assert (first.status_code, first.json()["stored"]) == (200, 1)
    assert (again.status_code, again.json()["stored"]) == (200, 0)
    assert forged.status_code == 403
    assert [m.content for m in InboundMessage.objects.filter(connector_id="hook_daphne")] == ["through daphne"]
    # The site keeps its middleware (clickjacking header, CSRF cookie); webhooks do not need them.
    assert admin.headers.get("X-Frame-Options") == "DENY" and "csrftoken" in admin.cookies
    assert "X-Frame-Options" not in first.headers and not first.cookies
