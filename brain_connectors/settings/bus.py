"""The event bus bridge (`manage.py runbridge`): NATS connection, credentials, TLS, the JetStream stream it fills."""
from brain_connectors.settings.environment import env

# --- NATS JetStream bridge (connectors/events/bus_bridge.py) ----------------------------------------------------
# Empty NATS_URL: the bridge is off (runbridge idles). Several servers: comma-separated (nats://a:4222,nats://b:4222).
NATS_URL = env.str("NATS_URL", default="")
# At most one way to log in, each secret read from a file so it never sits in the environment or a process list:
# a .creds file (JWT + NKey seed), an NKey seed file, a file holding the token, or a user name with a password file.
NATS_CREDS_FILE = env.str("NATS_CREDS_FILE", default="")
NATS_NKEY_SEED_FILE = env.str("NATS_NKEY_SEED_FILE", default="")
NATS_TOKEN_FILE = env.str("NATS_TOKEN_FILE", default="")
NATS_USER = env.str("NATS_USER", default="")
NATS_PASSWORD_FILE = env.str("NATS_PASSWORD_FILE", default="")
# TLS: a CA bundle to trust (tls:// URLs use the system's otherwise), a client certificate and key for mutual TLS.
# With any of them set the bridge refuses a server that does not require TLS (no plaintext fall-back); a key file
# without its certificate file stops the bridge at start-up.
NATS_TLS_CA_FILE = env.str("NATS_TLS_CA_FILE", default="")
NATS_TLS_CERT_FILE = env.str("NATS_TLS_CERT_FILE", default="")
NATS_TLS_KEY_FILE = env.str("NATS_TLS_KEY_FILE", default="")
# Each event goes to "<prefix>.<event type>", e.g. brain.connectors.connector.message.sent.
NATS_SUBJECT_PREFIX = env.str("NATS_SUBJECT_PREFIX", default="brain.connectors")
NATS_STREAM = env.str("NATS_STREAM", default="BRAIN_CONNECTORS")
# 0 keeps messages for ever (the stream's own limits apply).
NATS_STREAM_MAX_AGE_SECONDS = env.int("NATS_STREAM_MAX_AGE_SECONDS", default=0)
# JetStream drops a second message with the same Nats-Msg-Id (the event id) within this window: what turns the
# bridge's at-least-once publishing (a restart re-publishes the unacknowledged tail) into exactly-once.
NATS_STREAM_DUPLICATE_WINDOW_SECONDS = env.int("NATS_STREAM_DUPLICATE_WINDOW_SECONDS", default=120)
# On: the bridge creates the stream, or updates what it manages (subjects, max age, duplicate window). Off: the
# stream must exist as configured, else the bridge stops with an error naming the setting that differs.
NATS_MANAGE_STREAM = env.bool("NATS_MANAGE_STREAM", default=True)
# Events read from the log and published per round; the cursor advances once per batch.
NATS_BATCH_SIZE = env.int("NATS_BATCH_SIZE", default=500)
