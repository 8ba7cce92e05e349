"""Sending a file by URL (issue 18: "`send/` accepts attachments ... by URL"): through REST send/, the MCP
send_message tool and BRAIN's reply, fetched from a loopback file host before the delivery exists; and the
outbound-URL guard refusing a name that resolves to the cloud metadata address on that path (no connection is
made to it) with attachment_fetch_failed, before any delivery is created."""
import asyncio
import base64
import socket

import pytest

from brain_connectors.mcp import server as mcp_server
from connectors.delivery import attachment_store
from connectors.models import Attachment, Delivery
from connectors.platforms import locmem
from tests.connectors import test_outbound_attachments, url_guard_support
from tests.connectors.test_outbound_attachments import PDF, PNG, ask
from tests.fakes.receiver import FakeReceiver
from tests.mcp_client import error_text, structured

pytestmark = pytest.mark.django_db(transaction=True)
attachment_dir = test_outbound_attachments.attachment_dir
fake_brain = test_outbound_attachments.fake_brain
sender = test_outbound_attachments.sender
dns = url_guard_support.dns
METADATA_URL = "http://files.example.org/latest/meta-data/chart.png"


@pytest.fixture
def file_host():
    host = FakeReceiver(secret="whsec_" + base64.b64encode(b"file-host-secret-0123456789abcd").decode()).start()
    yield host
    host.stop()


@pytest.fixture
def no_metadata_connection(dns, monkeypatch):
    """files.example.org resolves to 169.254.169.254; any connection but to loopback fails the test (and is
    recorded), so the guard's refusal is seen without a packet leaving the machine."""
    dns["files.example.org"] = ["169.254.169.254"]
    connected = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        connected.append(address)
        if address[0] != "127.0.0.1":
            raise AssertionError(f"connected to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return connected


def mcp_call(token, arguments):
    from mcp import Client

    async def scenario():
        async with Client(mcp_server.build_server(stdio_token=token)) as client:
            return await client.call_tool("send_message", arguments)

    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_rest_send_fetches_a_file_by_url_before_the_delivery(sender, file_host):
    url = file_host.add_file("/files/chart.png", PNG, "image/png")
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "The chart", "attachments": [{"url": url, "caption": "Q3"}]}, format="json")
    assert response.status_code == 202, response.content
    assert file_host.file_requests == ["/files/chart.png"]
    [(_, message)] = locmem.outbox
    [attachment] = message.attachments
    assert (attachment.kind, attachment.mime_type, attachment.caption) == ("image", "image/png", "Q3")
    assert attachment.read() == PNG
    assert url not in response.content.decode()


def test_mcp_send_message_fetches_a_file_by_url(make_connector, make_user, token_for, file_host):
    make_connector()
    token = token_for(make_user("operator", superuser=True))
    url = file_host.add_file("/files/terms.pdf", PDF, "application/pdf")
    result = structured(mcp_call(token, {"connector_id": "locmem_main", "recipient": "ann", "content": "",
                                         "attachments": [{"url": url, "file_name": "terms.pdf"}]}))
    [row] = Attachment.objects.filter(delivery_id=result["delivery_id"])
    assert (row.kind, row.mime_type, row.file_name) == ("document", "application/pdf", "terms.pdf")
    assert attachment_store.read(row.storage_name) == PDF and file_host.file_requests == ["/files/terms.pdf"]


def test_brains_reply_may_name_its_file_by_url(make_connector, fake_brain, file_host):
    make_connector()
    fake_brain.attachments = [{"url": file_host.add_file("/files/chart.png", PNG, "image/png"), "caption": "Q3"}]
    inbound, _ = ask()
    inbound.refresh_from_db()
    assert inbound.brain_status == "replied"
    [(_, message)] = locmem.outbox
    assert message.attachments[0].read() == PNG and message.attachments[0].caption == "Q3"
    assert Delivery.objects.get().in_reply_to_id == inbound.pk


def test_rest_send_refuses_a_url_that_resolves_to_the_metadata_address(sender, no_metadata_connection):
    response = sender.post("/api/v1/connectors/locmem_main/send/", {
        "recipient": "ada", "content": "x", "attachments": [{"url": METADATA_URL}]}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "attachment_fetch_failed" and "outbound-URL guard refused it" in error["message"]
    assert no_metadata_connection == [] and not Delivery.objects.exists() and locmem.outbox == []


def test_mcp_send_message_refuses_a_url_that_resolves_to_the_metadata_address(make_connector, make_user, token_for,
                                                                              no_metadata_connection):
    make_connector()
    token = token_for(make_user("operator", superuser=True))
    result = mcp_call(token, {"connector_id": "locmem_main", "recipient": "ann", "content": "x",
                              "attachments": [{"url": METADATA_URL}]})
    assert "outbound-URL guard refused it" in error_text(result)
    assert no_metadata_connection == [] and not Delivery.objects.exists()
