"""The fake Slack (tests/fakes/slack_server.py) against the real slack_sdk clients: WebClient and
AsyncWebClient for the Web API, SocketModeClient (aiohttp) for Socket Mode. No database."""
import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import FakeSlack

# Pure functions and loopback fakes: nothing here depends on the database, so the PostgreSQL pass skips it.
pytestmark = pytest.mark.vendor_neutral

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slack"
BOT = "xoxb-1111-2222-fakebottoken"
APP = "xapp-1-A0MDYCDME-3333-fakeapptoken"


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def fake():
    with FakeSlack(bot_tokens={BOT}, app_tokens={APP}, slow_seconds=0.3) as fake:
        yield fake


@pytest.fixture
def web(fake):
    return WebClient(token=BOT, base_url=fake.url)


def slack_error(call) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value


def test_auth_test_answers_the_fixture_and_records_the_call(fake, web):
    assert fake.url == f"http://127.0.0.1:{fake.port}/api/"
    assert web.auth_test().data == fixture("auth_test_ok.json")  # the defaults are the fixture's workspace
    [call] = fake.calls_to("auth.test")
    assert (call.token, call.status, call.ok, call.error) == (BOT, 200, True, None)

    other = FakeSlack(team_id="T0OTHER", user_id="U0OTHER", bot_id="B0OTHER").start()
    try:
        data = WebClient(token="xoxb-any", base_url=other.url).auth_test().data
        assert (data["team_id"], data["user_id"], data["bot_id"]) == ("T0OTHER", "U0OTHER", "B0OTHER")
    finally:
        other.stop()


def test_post_message_answers_increasing_ts_and_records_thread_ts(fake, web):
    first = web.chat_postMessage(channel="C0LAN2Q65", text="first", mrkdwn=False)
    reply = web.chat_postMessage(channel="C0LAN2Q65", text="in the thread", thread_ts=first["ts"])
    assert set(first.data) == set(fixture("chat_post_message_ok.json"))
    assert first["channel"] == "C0LAN2Q65" and first["message"]["text"] == "first"
    assert float(reply["ts"]) > float(first["ts"]) and len(reply["ts"].split(".")[1]) == 6
    assert reply["message"]["thread_ts"] == first["ts"]
    calls = fake.calls_to("chat.postMessage")
    assert [c.params.get("thread_ts") for c in calls] == [None, first["ts"]]
    assert calls[0].params["mrkdwn"] is False  # a JSON body keeps its types
    assert [(m["text"], m["thread_ts"]) for m in fake.sent] == [("first", None), ("in the thread", first["ts"])]


def test_channel_rules(fake, web):
    fake.forget_channel("C0GONE")
    fake.kick_from("C0KICKED")
    assert slack_error(lambda: web.chat_postMessage(channel="C0GONE", text="x")).response["error"] == "channel_not_found"
    assert slack_error(lambda: web.chat_postMessage(channel="C0KICKED", text="x")).response["error"] == "not_in_channel"
    too_long = slack_error(lambda: web.chat_postMessage(channel="C0LAN2Q65", text="x" * 40_001))
    assert (too_long.response.status_code, too_long.response["error"]) == (200, "msg_too_long")
    assert web.chat_postMessage(channel="C0LAN2Q65", text="x" * 40_000)["ok"]
    assert [c.error for c in fake.calls] == ["channel_not_found", "not_in_channel", "msg_too_long", None]


def test_a_user_id_posts_to_the_dm_that_conversations_open_names(fake, web):
    dm = web.conversations_open(users="U061F7AUR")["channel"]["id"]
    assert dm == "D061F7AUR" == fake.dm_id("U061F7AUR")
    assert web.chat_postMessage(channel="U061F7AUR", text="hello there")["channel"] == dm
    assert fake.calls_to("conversations.open")[0].params == {"users": "U061F7AUR"}  # form-encoded
    group = web.conversations_open(users=["U061F7AUR", "U0ANOTHER"])["channel"]["id"]
    assert group.startswith("G") and web.conversations_open(users="U0ANOTHER,U061F7AUR")["channel"]["id"] == group
    fake.forget_user("U0GONE")
    assert slack_error(lambda: web.conversations_open(users="U0GONE")).response["error"] == "user_not_found"


def test_tokens(fake, web):
    wrong = slack_error(lambda: WebClient(token="xoxb-not-ours", base_url=fake.url).auth_test())
    assert (wrong.response.status_code, wrong.response["error"]) == (200, "invalid_auth")
    assert slack_error(lambda: WebClient(base_url=fake.url).auth_test()).response["error"] == "not_authed"
    app_client = WebClient(token=APP, base_url=fake.url)
    assert slack_error(lambda: app_client.chat_postMessage(channel="C1", text="x")).response["error"] == \
        "not_allowed_token_type"
    assert slack_error(lambda: web.apps_connections_open(app_token=BOT)).response["error"] == "not_allowed_token_type"
    url = web.apps_connections_open(app_token=APP)["url"]
    assert url.startswith(f"ws://127.0.0.1:{fake.port}/link/?ticket=")
    # The token may also come as a form field, as in Slack's curl examples.
    request = urllib.request.Request(fake.url + "auth.test", data=f"token={BOT}".encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.load(answer)["ok"] is True
    assert fake.calls[-1].token == BOT and "token" not in fake.calls[-1].params


def test_ratelimited_is_a_429_with_retry_after(fake, web):
    fake.fail("ratelimited", method="chat.postMessage", times=1)
    assert web.auth_test()["ok"]  # another method is not affected
    error = slack_error(lambda: web.chat_postMessage(channel="C0LAN2Q65", text="x"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "3"
    assert error.response.data == fixture("error_ratelimited.json")
    assert web.chat_postMessage(channel="C0LAN2Q65", text="x")["ok"]  # times=1: only one
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]


async def test_async_web_client_sees_the_same_429(fake):
    fake.retry_after = 9
    fake.fail("ratelimited", times=1)
    with pytest.raises(SlackApiError) as caught:
        await AsyncWebClient(token=BOT, base_url=fake.url).auth_test()
    response = caught.value.response
    assert (response.status_code, response["error"]) == (429, "ratelimited")
    assert response.headers["retry-after"] == response.headers["Retry-After"] == "9"  # a case-insensitive multidict


def test_after_times_and_the_other_failure_modes(fake, web):
    fake.fail("server_error", after=1, times=1)
    assert web.auth_test()["ok"]
    error = slack_error(web.auth_test)
    assert error.response.status_code == 500 and fake.calls[-1].error == "internal error"
    assert web.auth_test()["ok"]
    for mode in ("channel_not_found", "not_in_channel", "invalid_auth", "account_inactive"):
        fake.fail(mode, times=1)
        error = slack_error(lambda: web.chat_postMessage(channel="C0LAN2Q65", text="x"))
        assert (error.response.status_code, error.response["error"]) == (200, mode)
    fake.fail("account_inactive")  # times=None: until cleared
    for _ in range(2):
        slack_error(web.auth_test)
    fake.clear_failures()
    assert web.auth_test()["ok"]
    fake.fail("slow", times=1)
    assert web.auth_test()["ok"]
    slow, = fake.calls[-1:]
    assert slow.ok and slow.held_seconds >= fake.slow_seconds  # the server's clock: it held the answer back
    with pytest.raises(ValueError):
        fake.fail("flood")


def test_unknown_method_is_a_404(fake, web):
    error = slack_error(lambda: web.api_call("chat.postEverywhere", json={"channel": "C1"}))
    assert (error.response.status_code, error.response["error"]) == (404, "unknown_method")


def test_on_call_runs_before_the_answer(fake, web):
    seen = []
    fake.on_call = lambda call: seen.append((call.method, call.status, len(fake.calls)))
    web.chat_postMessage(channel="C0LAN2Q65", text="x")
    assert seen == [("chat.postMessage", 0, 0)]


def test_down_refuses_connections_and_up_keeps_the_url(fake, web):
    url = fake.url
    fake.down()
    with pytest.raises(urllib.error.URLError):
        web.auth_test()
    fake.up()
    assert fake.url == url and web.auth_test()["ok"]


def test_push_event_needs_a_client(fake):
    with pytest.raises(RuntimeError):
        fake.push_event(fixture("message_im.json"))
    assert fake.wait_for_socket(timeout=0.05) is False
    assert fake.wait_for_ack("no-such-envelope", timeout=0.05) is False


async def test_socket_mode_client_receives_pushed_events_and_acks(fake):
    client = SocketModeClient(app_token=APP, web_client=AsyncWebClient(base_url=fake.url), ping_interval=1)
    frames, requests = [], []

    async def on_message(client, message, raw):
        frames.append(message)

    async def on_request(client, request):
        requests.append(request)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client.message_listeners.append(on_message)
    client.socket_mode_request_listeners.append(on_request)
    try:
        await client.connect()
        assert await asyncio.to_thread(fake.wait_for_socket, 5)
        payload = fixture("message_im.json")
        envelope_id = fake.push_event(payload)
        assert await asyncio.to_thread(fake.wait_for_ack, envelope_id, 5)
        assert fake.acks == [envelope_id]
        assert frames[0]["type"] == "hello" and frames[0]["connection_info"] == {"app_id": "A0MDYCDME"}
        [request] = requests
        assert (request.type, request.envelope_id, request.payload) == ("events_api", envelope_id, payload)
        assert request.retry_attempt == 0 and request.retry_reason == ""
        assert fake.calls_to("apps.connections.open")[0].token == APP

        # Slack rotates connections: a `disconnect` message, and the client opens a new one.
        assert fake.disconnect_sockets() == 1
        assert await asyncio.to_thread(_wait, lambda: fake.socket_connections == 2 and fake.open_sockets == 1)
        assert len(fake.calls_to("apps.connections.open")) == 2  # one reconnection, through a new URL
        again = fake.push_event(payload, retry_attempt=1)
        assert await asyncio.to_thread(fake.wait_for_ack, again, 5)
        assert requests[-1].retry_attempt == 1 and requests[-1].retry_reason == "timeout"

        await asyncio.to_thread(fake.down)  # the server goes away: the socket with it
        assert fake.open_sockets == 0
    finally:
        await client.close()


def _wait(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
