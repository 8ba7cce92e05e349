"""Slack end to end beyond one message: pairing a Slack identity by DM, notify_user reaching it, conversation
memory per DM and per channel thread, and Socket Mode held by `runconnectors` against the fake's websocket."""
import threading
import time

import pytest

from connectors import services
from connectors.models import InboundMessage
from connectors.permissions import Principal
from connectors.platforms.slack import socket_mode
from connectors.registry.kinds import connector_for
from connectors.registry.runner import Poller, Runner
from conversations.models import Conversation
from routing.models import ChannelIdentity
from routing.notify import creation
from routing.pairing import issue
from tests.concurrency import wait_until
from tests.conftest import SYSTEM
from tests.connectors import test_slack
from tests.connectors.test_slack import ADA, TEAM, fixture, post_event
from tests.fakes.slack_server import FakeSlack

fake = test_slack.fake
slack = test_slack.slack


def me(user):
    return Principal.for_user(user, via="test")


def dm_with(text, ts=None):
    """message_im with another text, sent now (memory orders a conversation by the platform's time)."""
    ts = ts or f"{time.time():.6f}"
    payload = fixture("message_im")
    payload["event"].update(text=text, ts=ts, event_ts=ts, blocks=[])
    payload["event_id"] = f"Ev{ts.replace('.', '')}"
    return payload


@pytest.mark.django_db(transaction=True)
def test_a_code_sent_by_dm_pairs_the_slack_identity_and_notify_user_reaches_it(slack, fake, make_user):
    ada = make_user("ada")
    slack()
    issued = issue.request_pairing_code(me(ada), ada, "slack_main")
    assert issued.instructions == f"Send {issued.code} to @brain in a direct message on Slack."
    text = f"{issued.code[:4].lower()}-{issued.code[4:].lower()}"
    assert post_event("slack_main", dm_with(text)).json()["stored"] == 1

    identity = ChannelIdentity.objects.get()
    assert (identity.user, identity.connector_id, identity.address) == (ada, "slack_main", f"{TEAM}:{ADA}")
    [confirmation] = fake.sent
    assert confirmation["channel"] == "D0LAN2Q65" and confirmation["text"].startswith("Paired with ada.")

    notification, _ = creation.notify_user(SYSTEM, ada, "Your build is green", "standard")
    notification.refresh_from_db()
    assert notification.status in ("sent", "delivered"), notification.status
    assert [c.params["users"] for c in fake.calls_to("conversations.open")] == [ADA]
    assert fake.sent[-1]["channel"] == FakeSlack.dm_id(ADA) and fake.sent[-1]["text"] == "Your build is green"


@pytest.mark.django_db(transaction=True)
def test_a_code_posted_in_a_channel_does_not_pair(slack, fake, make_user):
    ada = make_user("ada")
    slack()
    issued = issue.request_pairing_code(me(ada), ada, "slack_main")
    mention = fixture("app_mention")
    mention["event"]["text"] = f"<@U0BOTUSER> {issued.code}"
    assert post_event("slack_main", mention).json()["stored"] == 1
    assert ChannelIdentity.objects.count() == 0
    assert fake.sent[0]["text"].startswith("Echo:")  # BRAIN got it as an ordinary message


@pytest.mark.django_db(transaction=True)
def test_memory_keeps_one_conversation_per_dm_and_one_per_channel_thread(slack, fake):
    slack()
    post_event("slack_main", dm_with("first"))
    post_event("slack_main", dm_with("second"))
    post_event("slack_main", fixture("app_mention"))
    # BRAIN's second DM answer counted the first exchange as context: the DM is one conversation.
    assert fake.sent[1]["text"].endswith("(2 context messages)"), fake.sent[1]["text"]
    assert fake.sent[2]["text"].endswith("(0 context messages)")  # the channel thread is another
    wait_until(lambda: Conversation.objects.count() == 2, 10, "two conversations in memory")
    addresses = set(Conversation.objects.values_list("address", flat=True))
    assert addresses == {f"{TEAM}:{ADA}", f"{TEAM}:C0LAN2Q65:1733312400.000300"}


# --- Socket Mode ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_socket_mode_stores_an_event_then_acknowledges_it_and_replies(slack, fake):
    row = slack(mode="socket")
    stop = threading.Event()
    result = {}
    holder = threading.Thread(target=lambda: result.update(handled=socket_mode.hold_session(connector_for(row), stop)))
    holder.start()
    try:
        assert fake.wait_for_socket(timeout=10)
        acked_before_stored = []
        envelope = fake.push_event(fixture("message_im"))
        assert fake.wait_for_ack(envelope, timeout=10)
        acked_before_stored.append(InboundMessage.objects.count() == 0)
        # Slack sends an unacknowledged envelope again: stored once.
        again = fake.push_event(fixture("message_im"), retry_attempt=1)
        assert fake.wait_for_ack(again, timeout=10)
    finally:
        stop.set()
        holder.join(timeout=15)
    assert not holder.is_alive() and result["handled"] == 1
    assert acked_before_stored == [False]  # the ack came after the row was committed
    inbound = InboundMessage.objects.get()
    assert inbound.sender == f"{TEAM}:{ADA}" and inbound.metadata["channel"] == "D0LAN2Q65"
    assert [c.token for c in fake.calls_to("apps.connections.open")][-1] == test_slack.APP_TOKEN
    wait_until(lambda: len(fake.sent) == 1, 10, "the reply at the fake")
    assert fake.sent[0]["thread_ts"] == "1733312345.000200"


@pytest.mark.django_db(transaction=True)
def test_runconnectors_leases_a_socket_mode_connector_and_reconnects_when_slack_asks(slack, fake):
    slack(mode="socket")
    runner = Runner(lease_seconds=30, interval=1)
    assert runner.renew_leases() == {"slack_main"}
    poller = Poller(runner, "slack_main")
    poller.start()
    try:
        assert fake.wait_for_socket(timeout=10)
        assert fake.disconnect_sockets() == 1  # Slack's "refresh_requested": the SDK reconnects
        wait_until(lambda: fake.socket_connections >= 2, 15, "a reconnection")
        envelope = fake.push_event(fixture("message_im"))
        assert fake.wait_for_ack(envelope, timeout=10)
    finally:
        poller.stop_event.set()
        poller.join(timeout=20)
        runner.shutdown()
    assert not poller.is_alive()
    assert InboundMessage.objects.count() == 1
    services.stop_connector(SYSTEM, "slack_main")
