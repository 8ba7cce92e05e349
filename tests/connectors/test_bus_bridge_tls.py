"""The bus bridge's TLS settings against real nats-server processes with certificates made here: server TLS
(NATS_TLS_CA_FILE), mutual TLS (NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE), and no silent plaintext when the server
offers no TLS. Credentials: test_bus_bridge_auth.py."""
import asyncio
import logging
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command

from connectors.events.bus_bridge import Bridge, BridgeAuthError
from connectors.events.bus_stream import BridgeConfigError
from tests.connectors.nats_servers import (
    HAVE_NATS_SERVER,
    NATS_SERVER,
    ConfServer,
    Pki,
    assert_published,
    bus_settings,
    free_port_in_range,
    make_events,
    refused,
    run_once,
    secret_file,
)

pytestmark = pytest.mark.skipif(not HAVE_NATS_SERVER, reason=f"needs nats-server ({NATS_SERVER} is missing)")

TOKEN = "tok-tls-91c2e6d04b7f"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """Another CA, with a client certificate of its own: trusted by nobody here."""
    return Pki(tmp_path_factory.mktemp("other-pki"), name="other")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    server = ConfServer(tmp_path_factory.mktemp("nats-tls"), pki.tls_block(), scheme="tls").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    server = ConfServer(tmp_path_factory.mktemp("nats-mtls"), pki.tls_block(verify=True), scheme="tls").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """No TLS, a token: what a TLS-configured bridge must refuse."""
    server = ConfServer(tmp_path_factory.mktemp("nats-plain"), f'authorization {{ token: "{TOKEN}" }}').start()
    yield server
    server.stop()


def test_the_ca_file_makes_the_server_trusted_and_another_ca_is_named(transactional_db, settings, tls_server, pki,
                                                                      other_pki):
    bus_settings(settings, tls_server, NATS_TLS_CA_FILE=pki.ca)
    events = make_events(3)
    run_once()
    assert_published(settings, events)

    settings.NATS_TLS_CA_FILE = str(other_pki.ca)
    message = refused(settings)
    assert message.startswith("NATS's TLS certificate is not trusted (NATS_TLS_CA_FILE): "), message

    settings.NATS_TLS_CA_FILE = ""  # the system's CAs do not know our test CA either
    message = refused(settings)
    assert message.startswith("NATS's TLS certificate is not trusted (NATS_TLS_CA_FILE (unset: the system's CAs)"), \
        message


def test_mutual_tls_with_the_client_certificate_and_without_it(transactional_db, settings, mtls_server, pki,
                                                                other_pki):
    bus_settings(settings, mtls_server, NATS_TLS_CA_FILE=pki.ca, NATS_TLS_CERT_FILE=pki.client,
                 NATS_TLS_KEY_FILE=pki.client_key)
    events = make_events(2)
    run_once()
    assert_published(settings, events)

    for cert, key in (("", ""), (other_pki.client, other_pki.client_key)):  # none, or one the server's CA did not sign
        settings.NATS_TLS_CERT_FILE, settings.NATS_TLS_KEY_FILE = str(cert), str(key)
        message = refused(settings)
        assert message.startswith("NATS refused the TLS handshake (NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE): "), \
            message


def test_tls_settings_and_a_plaintext_server_the_bridge_refuses(transactional_db, settings, plain_server, pki,
                                                                 tmp_path):
    token = secret_file(tmp_path, TOKEN)
    bus_settings(settings, plain_server, NATS_TOKEN_FILE=token)
    events = make_events(2)
    run_once()  # the server works, in plaintext
    assert_published(settings, events)

    for setting, value in (("NATS_TLS_CA_FILE", pki.ca), ("NATS_TLS_CERT_FILE", pki.client)):
        bus_settings(settings, plain_server, NATS_TOKEN_FILE=token, **{setting: value})
        if setting == "NATS_TLS_CERT_FILE":
            settings.NATS_TLS_KEY_FILE = str(pki.client_key)
        message = refused(settings)
        assert message.startswith(f"NATS refused: the server at 127.0.0.1:{plain_server.port} does not offer TLS, "
                                  f"and {setting}"), message
        assert message.endswith("asks for it: refusing to connect in plaintext")


def test_nothing_crosses_the_wire_before_the_refusal(settings, pki):
    """A plaintext server asking for credentials, recording what it receives: the bridge with TLS settings reads
    its INFO and hangs up, its password unsent (not even the CONNECT line), and unnamed in the error."""
    received, port = bytearray(), free_port_in_range()
    info = b'INFO {"server_id":"FAKE","version":"2.9.10","proto":1,"auth_required":true,"max_payload":1048576}\r\n'

    async def handle(reader, writer):
        writer.write(info)
        await writer.drain()
        while data := await reader.read(4096):
            received.extend(data)
        writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        try:
            with pytest.raises(BridgeAuthError, match=f"the server at 127.0.0.1:{port} does not offer TLS") as info:
                await Bridge(interval=1, lease_seconds=5).run(once=True)
            assert "pw-in-url-4e0d" not in str(info.value)
        finally:
            server.close()
            await server.wait_closed()

    bus_settings(settings, type("S", (), {"url": f"nats://bridge:pw-in-url-4e0d@127.0.0.1:{port}"}),
                 NATS_TLS_CA_FILE=pki.ca)
    async_to_sync(scenario)()
    assert bytes(received) == b""


def test_a_running_bridge_refused_plaintext_says_so_on_every_attempt_and_stays_up(settings,
                                                                                   plain_server, pki, caplog):
    bus_settings(settings, plain_server, NATS_TLS_CA_FILE=pki.ca)
    bridge, loops, failures = Bridge(interval=1, lease_seconds=5), [], []

    async def run():
        loops.append(asyncio.get_running_loop())
        try:
            await bridge.run()
        except BaseException as exc:  # the test fails on it below: run() must keep trying, not raise
            failures.append(exc)

    def refusals():
        return [r for r in caplog.records if r.levelno == logging.ERROR and "does not offer TLS" in r.getMessage()]

    caplog.set_level(logging.INFO, logger="connectors.events.bus_bridge")
    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    try:
        # The first retry comes after the first second of backoff: two refusals prove the loop goes on.
        done, deadline = threading.Event(), time.monotonic() + 30  # a bound on the wait, not a timing assertion
        while not done.wait(0.05) and thread.is_alive() and len(refusals()) < 2 and time.monotonic() < deadline:
            pass
        assert len(refusals()) >= 2 and thread.is_alive(), (failures, caplog.text)
    finally:
        if loops:
            loops[0].call_soon_threadsafe(bridge.stop)
        thread.join(15)
    assert not thread.is_alive() and failures == []
    assert all("retrying in" in r.getMessage() for r in refusals())


def test_a_key_without_its_certificate_stops_the_command_at_start_up(settings, tls_server, pki):
    bus_settings(settings, tls_server, NATS_TLS_CA_FILE=pki.ca, NATS_TLS_KEY_FILE=pki.client_key)
    with pytest.raises(CommandError, match="NATS_TLS_KEY_FILE is set without NATS_TLS_CERT_FILE"):
        call_command("runbridge", "--once")

    # A certificate file without the key in it, and no key file: also before any connection.
    bus_settings(settings, tls_server, NATS_TLS_CA_FILE=pki.ca, NATS_TLS_CERT_FILE=pki.client)
    message = refused(settings, BridgeConfigError)
    assert message.startswith("NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE: cannot load the client certificate"), message
