"""The bus bridge's credential settings against real nats-server processes: token, user and password, NKey seed and
.creds files. Each configuration gets one module-wide server; the bridge runs in this process (`run(once=True)`)
with a stream of its own per test, so a test costs a connection, not a Django start-up.
TLS is in test_bus_bridge_tls.py."""
import pytest
from django.core.management import CommandError, call_command

from connectors.events import bus_bridge
from connectors.events.bus_stream import BridgeConfigError
from tests.connectors.nats_servers import (
    HAVE_NATS_SERVER,
    NATS_SERVER,
    ConfServer,
    assert_published,
    bus_settings,
    make_events,
    refused,
    run_once,
    secret_file,
    user_seed,
)

pytestmark = pytest.mark.skipif(not HAVE_NATS_SERVER, reason=f"needs nats-server ({NATS_SERVER} is missing)")

TOKEN = "tok-7fd1c0a9e2b44e1f"
PASSWORD = "pw-3b9e77d0c5a14f62"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    server = ConfServer(tmp_path_factory.mktemp("nats-token"), f'authorization {{ token: "{TOKEN}" }}').start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def user_server(tmp_path_factory):
    body = f'authorization {{ users: [ {{ user: "bridge", password: "{PASSWORD}" }} ] }}'
    server = ConfServer(tmp_path_factory.mktemp("nats-user"), body).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nkey_user():
    return user_seed()


@pytest.fixture(scope="module")
def nkey_server(tmp_path_factory, nkey_user):
    body = f'authorization {{ users: [ {{ nkey: "{nkey_user[1]}" }} ] }}'
    server = ConfServer(tmp_path_factory.mktemp("nats-nkey"), body).start()
    yield server
    server.stop()


def test_a_token_file_logs_in_and_a_wrong_one_is_refused_by_name(transactional_db, settings, token_server, tmp_path):
    bus_settings(settings, token_server, NATS_TOKEN_FILE=secret_file(tmp_path, TOKEN + "\n"))
    events = make_events(3)
    run_once()
    assert_published(settings, events)

    settings.NATS_TOKEN_FILE = str(secret_file(tmp_path, "tok-wrong-5a1e90c3d7"))
    message = refused(settings)
    assert message.startswith("NATS refused the credentials (NATS_TOKEN_FILE): ") and "Authorization" in message
    assert "tok-wrong-5a1e90c3d7" not in message

    settings.NATS_TOKEN_FILE = ""  # no credentials at all: the setting to fill in is named
    assert "none of NATS_CREDS_FILE, NATS_NKEY_SEED_FILE, NATS_TOKEN_FILE, NATS_USER is set" in refused(settings)


def test_a_user_and_password_file_log_in_and_a_wrong_password_is_refused(transactional_db, settings, user_server,
                                                                          tmp_path):
    bus_settings(settings, user_server, NATS_USER="bridge", NATS_PASSWORD_FILE=secret_file(tmp_path, PASSWORD + "\n"))
    events = make_events(2)
    run_once()
    assert_published(settings, events)

    settings.NATS_PASSWORD_FILE = str(secret_file(tmp_path, "pw-wrong-0c4d2e8b61"))
    message = refused(settings)
    assert message.startswith("NATS refused the credentials (NATS_USER / NATS_PASSWORD_FILE): ")
    assert "pw-wrong-0c4d2e8b61" not in message

    settings.NATS_USER = ""  # half a credential: a configuration error, before any connection
    assert "NATS_USER and NATS_PASSWORD_FILE go together" in refused(settings, BridgeConfigError)


def test_a_password_in_the_url_never_reaches_the_error(settings, monkeypatch):
    """A user:password@ in NATS_URL works with nats-py; when the server cannot be reached, the error says where
    without it. Port 1 on 127.0.0.1 refuses at once; the bridge gives up after CONNECT_WAIT."""
    monkeypatch.setattr(bus_bridge, "CONNECT_WAIT", 0.3)
    bus_settings(settings, type("S", (), {"url": "nats://bridge:pw-in-url-77aa31@127.0.0.1:1"}))
    message = refused(settings, ConnectionError)
    assert "cannot reach NATS at nats://127.0.0.1:1" in message and "pw-in-url-77aa31" not in message


def test_an_nkey_seed_file_logs_in_and_a_stranger_or_a_malformed_seed_is_named(transactional_db, settings,
                                                                               nkey_server, nkey_user, tmp_path):
    seed, _ = nkey_user
    bus_settings(settings, nkey_server, NATS_NKEY_SEED_FILE=secret_file(tmp_path, seed + "\n"))
    events = make_events(3)
    run_once()
    assert_published(settings, events)

    stranger, _ = user_seed()  # a valid seed the server does not know
    settings.NATS_NKEY_SEED_FILE = str(secret_file(tmp_path, stranger))
    message = refused(settings)
    assert message.startswith("NATS refused the credentials (NATS_NKEY_SEED_FILE): ")
    assert stranger not in message

    malformed = secret_file(tmp_path, "SUNOTASEED" + seed[10:-4])
    settings.NATS_NKEY_SEED_FILE = str(malformed)
    assert refused(settings, BridgeConfigError) == f"NATS_NKEY_SEED_FILE: {malformed} holds no valid NKey seed"

    settings.NATS_NKEY_SEED_FILE = str(tmp_path / "missing")
    assert "NATS_NKEY_SEED_FILE: cannot read" in refused(settings, BridgeConfigError)


def creds(jwt, seed):
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            f"************************* IMPORTANT *************************\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n")


def test_a_malformed_creds_file_is_a_configuration_error_naming_it(settings, nkey_server,
                                                                   nkey_user, tmp_path):
    """nats-py reads a .creds file without its JWT block in an endless loop (in the event loop, so nothing times
    out): the bridge checks the file first."""
    seed, _ = nkey_user
    bus_settings(settings, nkey_server)
    for text, problem in [(f"-----BEGIN USER NKEY SEED-----\n{seed}\n", "no 'BEGIN NATS USER JWT' block"),
                          ("-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n",
                           "no 'BEGIN USER NKEY SEED' block"),
                          (creds("eyJ0eXAiOiJKV1QifQ.e30.c2ln", "SUnot-a-seed"), "holds no valid NKey seed")]:
        settings.NATS_CREDS_FILE = str(secret_file(tmp_path, text))
        message = refused(settings, BridgeConfigError)
        assert message.startswith(f"NATS_CREDS_FILE: {settings.NATS_CREDS_FILE} ") and problem in message, message
        assert seed not in message

    # Well formed, but the server (NKey users, no operator) accepts no user JWT: refused, the setting named.
    settings.NATS_CREDS_FILE = str(secret_file(tmp_path, creds("eyJ0eXAiOiJKV1QifQ.e30.c2ln", seed)))
    message = refused(settings)
    assert message.startswith("NATS refused the credentials (NATS_CREDS_FILE): ") and seed not in message


def test_two_credentials_at_once_stop_the_command_at_start_up(settings, token_server, tmp_path):
    bus_settings(settings, token_server, NATS_TOKEN_FILE=secret_file(tmp_path, TOKEN),
                 NATS_NKEY_SEED_FILE=secret_file(tmp_path, user_seed()[0]))
    with pytest.raises(CommandError, match="Set only one of NATS_NKEY_SEED_FILE, NATS_TOKEN_FILE"):
        call_command("runbridge", "--once")
