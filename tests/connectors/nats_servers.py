"""Throwaway nats-server processes with a config file of their own (auth, TLS), and the certificates they need.

Used by tests/connectors/test_bus_bridge_auth*.py: one server per configuration, JetStream on, its store in the
test's temporary directory, on a port of 26000-26999 (this suite's range)."""
import datetime
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
