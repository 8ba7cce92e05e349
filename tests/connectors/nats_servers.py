"""Throwaway nats-server processes with a config file of their own (auth, TLS), the certificates and NKeys they
need, and the bridge run in this process against them.

Used by tests/connectors/test_bus_bridge_auth.py and test_bus_bridge_tls.py: one server per configuration,
JetStream on, its store in the test's temporary directory, on a port of 26000-26999 (this suite's range)."""
import asyncio
import datetime
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time
import uuid

import nkeys
import pytest
from asgiref.sync import async_to_sync
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.events.bus_bridge import Bridge, BridgeAuthError
from connectors.events.bus_connect import TLSOnlyClient, connect_options
from connectors.events.log import publish
from connectors.models import BusCursor, Event

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
HAVE_NATS_SERVER = os.path.exists(NATS_SERVER)


def free_port_in_range(low=26000, high=26999):
    for port in random.sample(range(low, high + 1), high - low + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


class ConfServer:
    """nats-server -c <generated config>: `body` is the config's auth / TLS part."""

    def __init__(self, directory, body, scheme="nats"):
        directory.mkdir(parents=True, exist_ok=True)
        self.port, self.directory = free_port_in_range(), directory
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.conf = directory / "nats.conf"
        store = directory / "js"
        self.conf.write_text(f'listen: "127.0.0.1:{self.port}"\njetstream {{ store_dir: "{store}" }}\n{body}\n')
        self.log = directory / "nats.log"
        self.proc = None

    def start(self):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()}")
            if "Server is ready" in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"nats-server did not start: {self.log.read_text()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# --- certificates ------------------------------------------------------------------------------------------------
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _cert(subject_name, key, issuer_cert, issuer_key, *, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_name)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, as PEM files in `directory`."""

    def __init__(self, directory, name="test"):
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca_cert = _cert(f"{name} CA", ca_key, None, None, ca=True)
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        for role in ("server", "client"):
            key = _key()
            cert = _cert(f"{name} {role}", key, ca_cert, ca_key, server=role == "server")
            path = directory / f"{role}.pem"
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            setattr(self, role, path)
            setattr(self, f"{role}_key", _write_key(key, directory / f"{role}-key.pem"))

    def tls_block(self, verify=False):
        return (f'tls {{ cert_file: "{self.server}", key_file: "{self.server_key}", ca_file: "{self.ca}", '
                f"verify: {'true' if verify else 'false'}, timeout: 2 }}")


# --- NKeys ---------------------------------------------------------------------------------------------------------
def user_seed():
    """(seed, public key) of a new NKey user."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


# --- the bridge, in this process ---------------------------------------------------------------------------------
def make_events(n):
    ids = [publish("connector.health.check", connector_id=f"c{i}", data={"n": i}).pk for i in range(n)]
    events = list(Event.objects.filter(pk__in=ids).order_by("seq"))
    assert len(events) == n and all(e.seq is not None for e in events)
    return events


def bus_settings(settings, server, **extra):
    """Point the bridge at `server` with a stream and subjects of this test's own."""
    name = uuid.uuid4().hex[:10]
    settings.NATS_URL = server.url
    settings.NATS_STREAM, settings.NATS_SUBJECT_PREFIX = f"T{name}", f"t{name}"
    for setting in ("NATS_CREDS_FILE", "NATS_NKEY_SEED_FILE", "NATS_TOKEN_FILE", "NATS_USER", "NATS_PASSWORD_FILE",
                    "NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"):
        setattr(settings, setting, "")
    for setting, value in extra.items():
        setattr(settings, setting, str(value))


def run_once():
    """One `runbridge --once` in this process: the ORM calls run in this thread, on the test's connection."""
    bridge = Bridge(interval=1, lease_seconds=5)
    async_to_sync(bridge.run)(once=True)
    return bridge


def stream_msg_ids(settings):
    """The Nats-Msg-Id of each message in the test's stream, read with the settings' credentials."""
    async def read():
        nc = TLSOnlyClient()
        await nc.connect(**connect_options(), allow_reconnect=False, connect_timeout=2)
        try:
            js = nc.jetstream(timeout=2)
            count = (await js.stream_info(settings.NATS_STREAM)).state.messages
            return [(await js.get_msg(settings.NATS_STREAM, seq)).headers["Nats-Msg-Id"]
                    for seq in range(1, count + 1)]
        finally:
            await nc.close()
    return asyncio.run(read())


def assert_published(settings, events):
    assert stream_msg_ids(settings) == [str(e.event_id) for e in events]
    assert BusCursor.objects.get(stream=settings.NATS_STREAM).last_seq == events[-1].seq


def refused(settings, exc_type=BridgeAuthError):
    """run_once() fails with exc_type; its message, for the test to read."""
    with pytest.raises(exc_type) as info:
        run_once()
    return str(info.value)


def secret_file(tmp_path, text, name=None):
    path = tmp_path / (name or uuid.uuid4().hex)
    path.write_text(text)
    return path
