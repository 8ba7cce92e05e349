"""How the bus bridge logs in to NATS: connection options from the NATS_* settings, checked before any connection.

- At most one credential (NATS_CREDS_FILE, NATS_NKEY_SEED_FILE, NATS_TOKEN_FILE, NATS_USER with
  NATS_PASSWORD_FILE), each secret read from a file and checked here: a missing file, a seed that is no NKey seed
  or a .creds file without its JWT and seed blocks is a BridgeConfigError naming the setting (nats-py would
  otherwise fail deep inside the connection, or, for a .creds file without a JWT block, loop for ever reading it).
- TLS: NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE build one SSL context; a key without its
  certificate is a BridgeConfigError. With any of them set, TLSOnlyClient refuses a server that does not require
  TLS before anything, credentials included, crosses the wire: never a silent fall-back to plaintext.
- refusal() tells a refused login or a failed TLS handshake (retrying cannot help) from an outage, and names the
  setting to fix.
"""
import ssl
from pathlib import Path

import nkeys
from django.conf import settings
from nats.aio.client import Client
from nats.errors import Error as NatsError

from connectors.events.bus_stream import BridgeConfigError

CREDENTIAL_SETTINGS = ("NATS_CREDS_FILE", "NATS_NKEY_SEED_FILE", "NATS_TOKEN_FILE", "NATS_USER / NATS_PASSWORD_FILE")
TLS_SETTINGS = ("NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE")


class PlaintextRefused(NatsError):
    """TLS settings are given but the server offers a plaintext connection."""


class TLSOnlyClient(Client):
    """nats-py's client, refusing a server that does not require TLS when TLS is configured.

    nats-py (2.16) upgrades to TLS only when the server's INFO asks for it, even for a tls:// URL and an SSL
    context of ours; otherwise it sends CONNECT, credentials included, in plaintext. The INFO is processed before
    the upgrade and before CONNECT, so refusing here sends nothing."""

    async def _process_info(self, info, initial_connection=False):
        if initial_connection and "tls" in self.options and not info.get("tls_required"):
            uri = self._current_server.uri  # not its netloc: a user:password@ would come with it
            raise PlaintextRefused(
                f"the server at {uri.hostname}:{uri.port} does not offer TLS, and {' / '.join(tls_given())} "
                "asks for it: refusing to connect in plaintext")
        await super()._process_info(info, initial_connection=initial_connection)


def tls_given():
    return [name for name in TLS_SETTINGS if getattr(settings, name)]


def _given(name):
    return any(getattr(settings, part) for part in name.split(" / "))


def servers():
    return [u.strip() for u in settings.NATS_URL.split(",") if u.strip()]


def redacted(url):
    """A server URL fit for a log line: a user:password@ in it is cut out."""
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _read(setting):
    path = getattr(settings, setting)
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise BridgeConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BridgeConfigError(f"{setting}: {path} is not a text file") from None


def _check_seed(setting, seed):
    """An NKey user seed ("SU…"), or BridgeConfigError naming the setting (never the seed)."""
    try:
        nkeys.from_seed(bytearray(seed.strip().encode())).wipe()
    except (nkeys.NkeysError, ValueError, TypeError):
        raise BridgeConfigError(f"{setting}: {getattr(settings, setting)} holds no valid NKey seed") from None


def _block(text, begin):
    """The first line after the `-----BEGIN <begin>-----` line of a .creds file, or ''."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        if begin in line:
            return lines[number + 1].strip()
    return ""


def _check_creds(text):
    path = settings.NATS_CREDS_FILE
    if not _block(text, "BEGIN NATS USER JWT"):
        raise BridgeConfigError(f"NATS_CREDS_FILE: {path} is no .creds file (no 'BEGIN NATS USER JWT' block)")
    seed = _block(text, "BEGIN USER NKEY SEED")
    if not seed:
        raise BridgeConfigError(f"NATS_CREDS_FILE: {path} is no .creds file (no 'BEGIN USER NKEY SEED' block)")
    _check_seed("NATS_CREDS_FILE", seed)


def _tls_context():
    if settings.NATS_TLS_KEY_FILE and not settings.NATS_TLS_CERT_FILE:
        raise BridgeConfigError("NATS_TLS_KEY_FILE is set without NATS_TLS_CERT_FILE: set the client certificate "
                                "too (mutual TLS), or unset the key")
    try:
        context = ssl.create_default_context(cafile=settings.NATS_TLS_CA_FILE or None)
    except (OSError, ssl.SSLError) as exc:
        raise BridgeConfigError(f"NATS_TLS_CA_FILE: cannot load {settings.NATS_TLS_CA_FILE} ({exc})") from None
    if settings.NATS_TLS_CERT_FILE:
        try:
            context.load_cert_chain(settings.NATS_TLS_CERT_FILE, settings.NATS_TLS_KEY_FILE or None)
        except (OSError, ssl.SSLError) as exc:
            raise BridgeConfigError(f"NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE: cannot load the client certificate "
                                    f"and key ({exc})") from None
    return context


def connect_options():
    """Client.connect() keyword arguments for the credentials and TLS the settings name (never logged)."""
    options = {"servers": servers()}
    given = [name for name in CREDENTIAL_SETTINGS if _given(name)]
    if len(given) > 1:
        raise BridgeConfigError(f"Set only one of {', '.join(given)}")
    if settings.NATS_CREDS_FILE:
        _check_creds(_read("NATS_CREDS_FILE"))
        options["user_credentials"] = settings.NATS_CREDS_FILE
    elif settings.NATS_NKEY_SEED_FILE:
        _check_seed("NATS_NKEY_SEED_FILE", _read("NATS_NKEY_SEED_FILE"))
        options["nkeys_seed"] = settings.NATS_NKEY_SEED_FILE
    elif settings.NATS_TOKEN_FILE:
        options["token"] = _read("NATS_TOKEN_FILE").strip()
    elif given:
        if not (settings.NATS_USER and settings.NATS_PASSWORD_FILE):
            raise BridgeConfigError("NATS_USER and NATS_PASSWORD_FILE go together: set both, or neither")
        options["user"], options["password"] = settings.NATS_USER, _read("NATS_PASSWORD_FILE").rstrip("\r\n")
    if tls_given():
        options["tls"] = _tls_context()
    return options


def credential_setting():
    """The setting to blame when the server refuses us."""
    for name in CREDENTIAL_SETTINGS:
        if _given(name):
            return name
    return "NATS_URL (none of NATS_CREDS_FILE, NATS_NKEY_SEED_FILE, NATS_TOKEN_FILE, NATS_USER is set)"


def refusal(exc):
    """For a connection error that retrying at once cannot fix, the message naming the setting to blame; else None."""
    if isinstance(exc, PlaintextRefused):
        return f"NATS refused: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        where = "NATS_TLS_CA_FILE" if settings.NATS_TLS_CA_FILE else "NATS_TLS_CA_FILE (unset: the system's CAs)"
        return f"NATS's TLS certificate is not trusted ({where}): {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):  # the server's alert: it wants a client certificate, or not this one
        return f"NATS refused the TLS handshake (NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE): {exc.reason or exc}"
    text = str(exc).lower()
    if "authorization" in text or "authentication" in text or "permissions violation" in text:
        return f"NATS refused the credentials ({credential_setting()}): {exc}"
    return None
