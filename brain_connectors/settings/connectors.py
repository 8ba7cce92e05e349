"""The connectors' knobs: platform classes, email, BRAIN, delivery retries, the event log and stream, health, metrics."""
from brain_connectors.settings.environment import DEBUG, env

# --- Connectors, BRAIN -----------------------------------------------------------------------
CONNECTOR_CLASSES = {
    "cli": "connectors.platforms.cli.CliConnector",
    "locmem": "connectors.platforms.locmem.LocmemConnector",
    "telegram": "connectors.platforms.telegram.TelegramConnector",
    "email": "connectors.platforms.email.EmailConnector",
    "webhook": "connectors.platforms.webhook.WebhookConnector",
    "sms": "connectors.platforms.sms.SmsConnector",
    "whatsapp": "connectors.platforms.whatsapp.WhatsAppConnector",
    "voice": "connectors.platforms.voice.VoiceConnector",
    "slack": "connectors.platforms.slack.SlackConnector",
}
CONNECTOR_CLASSES.update(env.dict("CONNECTOR_CLASSES_EXTRA", default={}))

# --- Email (the `email` connector) -----------------------------------------------------------
# EMAIL_URL (e.g. smtp+tls://user:pass@host:587; consolemail://) sets the backend, host, port, login
# and TLS at once. Without it: the console backend under DEBUG (make run), else SMTP with Django's
# defaults (localhost:25). An explicit EMAIL_BACKEND wins. pytest-django swaps in locmem.
EMAIL_BACKEND = "django.core.mail.backends." + ("console" if DEBUG else "smtp") + ".EmailBackend"
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)  # Django's default is to wait forever
if env.str("EMAIL_URL", default=""):
    _email = {k: v for k, v in env.email_url("EMAIL_URL").items() if v not in (None, "")}
    if "EMAIL_PORT" not in _email:  # the usual port for the scheme, not always Django's 25
        _email["EMAIL_PORT"] = 465 if _email.get("EMAIL_USE_SSL") else 587 if _email.get("EMAIL_USE_TLS") else 25
    globals().update(_email)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=EMAIL_BACKEND)
# The sender of the site's own mails: invitations and password resets (an email connector has its own).
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")

BRAIN_BACKEND = env.str("BRAIN_BACKEND", default="connectors.delivery.brain.EchoBrain")
BRAIN_URL = env.str("BRAIN_URL", default="")
# The outbound-URL guard (brain_connectors.shared.url_guard), for every URL the service calls: BRAIN_URL, the
# webhook kind's url, api_base_url, subscription URLs. Loopback, RFC 1918, CGNAT (100.64/10),
# unique-local IPv6 and other non-public addresses are refused unless BRAIN_ALLOW_PRIVATE_URLS is on
# (development, tests, a trusted internal network) or the host name is in BRAIN_URL_ALLOWED_HOSTS
# (say, an internal BRAIN). Link-local (169.254/16: cloud metadata), unspecified, multicast, reserved
# and tunnelled internal addresses are refused whatever these say.
BRAIN_ALLOW_PRIVATE_URLS = env.bool("BRAIN_ALLOW_PRIVATE_URLS", default=False)
BRAIN_URL_ALLOWED_HOSTS = env.list("BRAIN_URL_ALLOWED_HOSTS", default=[])
BRAIN_TIMEOUT = env.float("BRAIN_TIMEOUT", default=10.0)
BRAIN_MAX_RETRIES = env.int("BRAIN_MAX_RETRIES", default=2)
BRAIN_CONTEXT_LIMIT = env.int("BRAIN_CONTEXT_LIMIT", default=10)
# What BRAIN is told of the conversation so far: a function `provider(inbound) -> [{"role", "content", "time"}]`.
BRAIN_CONTEXT_PROVIDER = env.str("BRAIN_CONTEXT_PROVIDER", default="conversations.services.context_for_inbound")
# Functions that may answer an inbound message before BRAIN does (dotted paths, in order); each
# returns the reply text, or None to pass it on. Routing's pairing codes are answered this way.
INBOUND_MESSAGE_HANDLERS = env.list("INBOUND_MESSAGE_HANDLERS", default=["routing.pairing.handle_inbound"])
# While BRAIN works on a reply, platforms with a typing indicator show it, once BRAIN has taken TYPING_DELAY_SECONDS
# (a quick answer needs none). Telegram's lasts 5 seconds, so it is sent again every TYPING_REPEAT_SECONDS; 0 turns
# the indicator off.
TYPING_DELAY_SECONDS = env.float("TYPING_DELAY_SECONDS", default=1.0)
TYPING_REPEAT_SECONDS = env.float("TYPING_REPEAT_SECONDS", default=4.0)

DELIVERY_MAX_ATTEMPTS = env.int("DELIVERY_MAX_ATTEMPTS", default=8)
# A delivery left in `sending` this long lost its worker; the sweeper queues it again.
DELIVERY_SENDING_TIMEOUT = env.int("DELIVERY_SENDING_TIMEOUT", default=120)
# Work younger than this is left to its own task before the sweeper re-drives it.
DELIVERY_SWEEP_GRACE = env.int("DELIVERY_SWEEP_GRACE", default=10)
BRAIN_CLAIM_TIMEOUT = env.int("BRAIN_CLAIM_TIMEOUT", default=120)
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", default=15.0)

# --- Event log, live stream -----------------------------------------------------------------
# CloudEvents `source` of everything this deployment emits.
EVENT_SOURCE = env.str("EVENT_SOURCE", default="/brain-connectors")
EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", default=30)
# Events unpushed this long after commit are pushed again by the relay.
EVENT_RELAY_GRACE_SECONDS = env.float("EVENT_RELAY_GRACE_SECONDS", default=5.0)
EVENT_RELAY_INTERVAL_SECONDS = env.float("EVENT_RELAY_INTERVAL_SECONDS", default=5.0)
# How long the pusher waits after an event for others to send with it (latency vs. Redis work).
EVENT_PUSH_BATCH_SECONDS = env.float("EVENT_PUSH_BATCH_SECONDS", default=0.005)
# Websocket /ws/events/: events in flight without an ack before the client counts as slow, how
# long it may stay that way before it is disconnected, the ping interval, and how often each
# daphne process checks the log for events the channel layer lost.
EVENTS_WS_WINDOW = env.int("EVENTS_WS_WINDOW", default=500)
EVENTS_WS_SLOW_CLIENT_SECONDS = env.float("EVENTS_WS_SLOW_CLIENT_SECONDS", default=30.0)
EVENTS_WS_PING_SECONDS = env.float("EVENTS_WS_PING_SECONDS", default=20.0)
EVENTS_WS_CATCHUP_SECONDS = env.float("EVENTS_WS_CATCHUP_SECONDS", default=5.0)
# How often an open socket re-reads its user's permissions, activity and token.
EVENTS_WS_ACCESS_SECONDS = env.float("EVENTS_WS_ACCESS_SECONDS", default=10.0)

# --- Event subscriptions (connectors.events.subscriptions) ----------------------------------
# Their URLs pass the outbound-URL guard: see BRAIN_ALLOW_PRIVATE_URLS.
EVENT_SUBSCRIPTION_TIMEOUT = env.float("EVENT_SUBSCRIPTION_TIMEOUT", default=10.0)
# How long each process caches the list of active subscriptions (publishing checks it).
EVENT_SUBSCRIPTION_CACHE_SECONDS = env.float("EVENT_SUBSCRIPTION_CACHE_SECONDS", default=2.0)

# --- Health checks, downtime alerts, metrics (connectors.monitoring) --------------------------
HEALTH_CHECK_INTERVAL_SECONDS = env.float("HEALTH_CHECK_INTERVAL_SECONDS", default=60.0)
# Failed checks in a row before a CONNECTED connector goes to ERROR (and an incident opens).
HEALTH_FAILURE_THRESHOLD = env.int("HEALTH_FAILURE_THRESHOLD", default=3)
# A CONNECTED connector whose last heartbeat is older than this goes to ERROR.
HEALTH_STALE_SECONDS = env.int("HEALTH_STALE_SECONDS", default=300)
# Restart an ERROR connector (non-polling kinds) once its health check passes again.
HEALTH_AUTO_RESTART = env.bool("HEALTH_AUTO_RESTART", default=True)
# Overlapping rounds (a slow round, two beat processes) skip connectors checked this recently.
HEALTH_CHECK_MIN_SPACING_SECONDS = env.float(
    "HEALTH_CHECK_MIN_SPACING_SECONDS", default=HEALTH_CHECK_INTERVAL_SECONDS / 2
)
# /metrics (connectors/monitoring/metrics.py): superusers and holders of access.view_metrics (session or API
# token), or Authorization: Bearer <METRICS_SCRAPE_TOKEN> (32+ characters; empty: none). When
# METRICS_ALLOWED_IPS (CIDRs, matched against REMOTE_ADDR only) is set, every scrape must also come
# from one of them: an address alone never grants access.
METRICS_SCRAPE_TOKEN = env.str("METRICS_SCRAPE_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
METRICS_LATENCY_BUCKETS = [
    float(b) for b in env.list("METRICS_LATENCY_BUCKETS", default=["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300"])
]
# Attachments (connectors/delivery/attachments.py): the largest file fetched per kind, in bytes. The default is the
# Telegram Bot API's getFile limit (20 MB); a bigger file is kept as an "unavailable" attachment, never fetched.
ATTACHMENT_MAX_BYTES = env.int("ATTACHMENT_MAX_BYTES", default=20 * 1024 * 1024)
ATTACHMENT_MAX_BYTES_BY_KIND = {
    kind: env.int(f"ATTACHMENT_MAX_BYTES_{kind.upper()}", default=ATTACHMENT_MAX_BYTES)
    for kind in ("image", "audio", "voice", "video", "document", "sticker")
}
# Tries per file when fetching fails in a way that may pass (network, 5xx, flood control), the first retry after
# ATTACHMENT_FETCH_RETRY_SECONDS, doubling; BRAIN is asked once the file is stored or given up on.
ATTACHMENT_FETCH_ATTEMPTS = env.int("ATTACHMENT_FETCH_ATTEMPTS", default=3)
ATTACHMENT_FETCH_RETRY_SECONDS = env.float("ATTACHMENT_FETCH_RETRY_SECONDS", default=5.0)
# The sweeper leaves a message alone this long while its files are being fetched (then BRAIN's task fetches them).
ATTACHMENT_FETCH_GRACE = env.int("ATTACHMENT_FETCH_GRACE", default=600)
# How long a signed attachment URL in BRAIN's payload stays valid (seconds). BRAIN fetches the file at once.
ATTACHMENT_URL_TTL = env.int("ATTACHMENT_URL_TTL", default=600)
# Outbound files (connectors/delivery/outbound_attachments.py): how long a file named by URL may take to fetch, and
# how long an upload (POST /api/v1/attachments/) waits for the sends that name it before the sweeper deletes it.
ATTACHMENT_FETCH_TIMEOUT = env.float("ATTACHMENT_FETCH_TIMEOUT", default=20.0)
ATTACHMENT_UPLOAD_TTL = env.int("ATTACHMENT_UPLOAD_TTL", default=24 * 3600)
# How long the signed URL of an outbound file stays valid for the platform that fetches it (Twilio's MediaUrl, the
# generic webhook's receiver): Twilio may queue a message for up to 4 hours before it fetches the media.
ATTACHMENT_MEDIA_URL_TTL = env.int("ATTACHMENT_MEDIA_URL_TTL", default=4 * 3600)
# Voice and audio transcription (connectors/delivery/transcription.py): a dotted path, empty for none (the default).
# connectors.delivery.transcription.HttpTranscriber speaks OpenAI's POST /v1/audio/transcriptions, as local Whisper
# servers (faster-whisper-server, whisper.cpp's server, LocalAI) do; TRANSCRIBER_URL is that server's base URL.
TRANSCRIBER = env.str("TRANSCRIBER", default="")
TRANSCRIBER_URL = env.str("TRANSCRIBER_URL", default="")
TRANSCRIBER_API_KEY = env.str("TRANSCRIBER_API_KEY", default="")
TRANSCRIBER_MODEL = env.str("TRANSCRIBER_MODEL", default="whisper-1")
TRANSCRIBER_TIMEOUT = env.float("TRANSCRIBER_TIMEOUT", default=120.0)
