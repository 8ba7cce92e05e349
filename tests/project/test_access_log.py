"""A real daphne, started as `make run`, bench/ and the other tests start it: its access log and
Django's own request warnings keep method, path and status, but no query values, pairing codes,
tokens or search words. The websocket Origin rule is checked through the same daphne, whose
websocket scope (no `scheme`, a `server` address) differs from the test communicator's."""
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp
import httpx
import pytest

from tests.conftest import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SEARCH_WORDS = "periwinkle marmalade"
UNKNOWN_CODE = "W7K2QX9M"


def _port():
    """A free port of the range these tests may use (18600-18699)."""
    for port in range(18600, 18700):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 18600-18699")


@pytest.fixture(params=["false"], ids=lambda debug: f"DEBUG={debug}")
def daphne(request, subprocess_env):
    """`daphne -b 127.0.0.1 -p PORT brain_connectors.asgi:application`, as the Makefile runs it
    (DEBUG=true is `make run`'s .env). Yields (base URL, a function returning (stdout, stderr)
    once the server has stopped)."""
    port = _port()
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "brain_connectors.asgi:application"],
        cwd=BASE_DIR, env={**subprocess_env, "DEBUG": request.param}, stdout=out, stderr=err,
    )
    base = f"http://127.0.0.1:{port}"

    def output():
        out.seek(0)
        err.seek(0)
        return out.read().decode(errors="replace"), err.read().decode(errors="replace")

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("daphne did not start:\n" + "\n".join(output()))
        time.sleep(0.2)

    def stop():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return output()

    yield base, stop
    stop()
    out.close()
    err.close()


def _session_cookie(client, user):
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _websocket(url, **kwargs):
    """The first frame's type, or the close code."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, **kwargs) as ws:
            frame = await asyncio.wait_for(ws.receive(), 10)
            if frame.type == aiohttp.WSMsgType.TEXT:
                return json.loads(frame.data)["type"]
            return ws.close_code


@pytest.mark.parametrize("daphne", ["false", "true"], indirect=True)
def test_access_log_and_request_warnings_carry_no_query_values_codes_or_tokens(
    daphne, make_user, make_connector, token_for, client
):
    base, stop = daphne
    make_connector("log_c")
    ada = make_user("ada", superuser=True)
    token = token_for(ada)
    cookie = _session_cookie(client, ada)
    bearer = {"Authorization": f"Bearer {token}"}

    search = httpx.get(f"{base}/api/v1/conversations/search/", params={"q": SEARCH_WORDS, "limit": 5},
                       headers=bearer, timeout=10)
    anonymous_link = httpx.get(f"{base}/preferences/pair/{UNKNOWN_CODE}/", timeout=10)
    unknown_link = httpx.get(f"{base}/preferences/pair/{UNKNOWN_CODE}/", cookies={"sessionid": cookie}, timeout=10)
    token_in_query = httpx.get(f"{base}/api/v1/connectors/", params={"access_token": token}, timeout=10)
    stream = asyncio.run(_websocket(f"{base.replace('http', 'ws')}/ws/events/?types=connector.*&since=0",
                                    headers=bearer))
    stdout, stderr = stop()

    assert (search.status_code, anonymous_link.status_code, unknown_link.status_code) == (200, 302, 404)
    assert token_in_query.status_code == 401 and stream == "hello"
    everything = stdout + stderr
    # split("_", 2): the secret part may itself hold "_" (a random token failed with split("_")[2] == "")
    for secret in (*SEARCH_WORDS.split(), UNKNOWN_CODE, token, token.split("_", 2)[2]):
        assert secret not in everything, f"{secret[:4]}… in the logs:\n{everything[-3000:]}"
    # Still useful: method, path (secret segments masked), parameter names and status.
    assert '"GET /api/v1/conversations/search/?q=[redacted]&limit=[redacted]" 200' in stdout, stdout
    assert '"GET /preferences/pair/[redacted]/" 302' in stdout, stdout
    assert '"GET /preferences/pair/[redacted]/" 404' in stdout, stdout
    assert '"GET /api/v1/connectors/?access_token=[redacted]" 401' in stdout, stdout
    assert '"WSCONNECT /ws/events/' in stdout, stdout
    # Django's own warning for the 404 names the path, masked the same way.
    assert "Not Found: /preferences/pair/[redacted]/" in stderr, stderr


def test_websocket_origin_through_daphne_must_be_this_sites_scheme_host_and_port(daphne, make_user, client):
    base, _ = daphne
    cookie = {"Cookie": f"sessionid={_session_cookie(client, make_user('ada', superuser=True))}"}
    url = f"{base.replace('http', 'ws')}/ws/events/"

    def opened_from(origin):
        return asyncio.run(_websocket(url, headers={**cookie, "Origin": origin}))

    assert opened_from(base) == "hello"
    assert opened_from("http://127.0.0.1:9999") == 4403  # the case: a valid session, another site
    assert opened_from(base.replace("http", "https")) == 4403
    assert opened_from(base.replace("127.0.0.1", "localhost")) == 4403
