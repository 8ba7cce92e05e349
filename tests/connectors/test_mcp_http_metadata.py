"""`runmcp --transport streamable-http` as started by a person: no deprecation warnings, and no OAuth metadata URL it
advertises answers 404 (it takes bearer API tokens, so it advertises none)."""
import re
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import BASE_DIR, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def _well_known_documents(base, advertised):
    """Every OAuth metadata document a client would look for, starting from what the server advertises."""
    urls = list(advertised) + [f"{base}/.well-known/oauth-protected-resource/mcp",
                               f"{base}/.well-known/oauth-protected-resource"]
    seen, answers = set(), {}
    while urls:
        url = urls.pop(0)
        if url in seen or urlsplit(url).hostname != "127.0.0.1":  # never leave this machine
            continue
        seen.add(url)
        answer = httpx.get(url, timeout=10)
        answers[url] = answer.status_code
        if answer.status_code == 200:
            # A protected resource's metadata names its authorization servers: their metadata must answer.
            for issuer in answer.json().get("authorization_servers", []):
                urls.append(issuer.rstrip("/") + "/.well-known/oauth-authorization-server")
                urls.append(issuer.rstrip("/") + "/.well-known/openid-configuration")
                advertised.append(issuer.rstrip("/") + "/.well-known/oauth-authorization-server")
    return answers


def test_http_transport_starts_without_warnings_and_advertises_no_dead_metadata(subprocess_env):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-W", "default", str(BASE_DIR / "manage.py"), "runmcp", "--transport", "streamable-http",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=BASE_DIR, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=err,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, "runmcp exited"
                try:
                    unauthenticated = httpx.post(f"{base}/mcp", json=INITIALIZE, timeout=2,
                                                 headers={"Accept": "application/json, text/event-stream"})
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "runmcp did not start listening"
                    time.sleep(0.2)
            challenge = unauthenticated.headers["WWW-Authenticate"]
            advertised = re.findall(r'resource_metadata="([^"]+)"', challenge)
            answers = _well_known_documents(base, advertised)
        finally:
            proc.terminate()
            proc.wait(10)
        err.seek(0)
        stderr = err.read().decode(errors="replace")

    assert unauthenticated.status_code == 401 and challenge.startswith("Bearer")
    assert "MCPDeprecationWarning" not in stderr and "Warning:" not in stderr, stderr
    assert "MCP server on" in stderr
    # What the server advertises (the 401's resource_metadata and the authorization servers named there) answers.
    dead = [url for url in advertised if answers.get(url) != 200]
    assert dead == [], answers
