"""Settings, read from the environment (and from a git-ignored `.env` written by `make run`).

Missing secrets do not crash the import: with DEBUG off, `brain_connectors.checks` turns them into
system-check errors that name the variable, and asgi.py runs those checks before serving.
"""
import os
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if os.environ.get("BRAIN_READ_DOTENV", "1") != "0" and (BASE_DIR / ".env").exists():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

# A placeholder keeps Django importable; checks.py refuses to start with it when DEBUG is off.
MISSING_SECRET_PLACEHOLDER = "missing-secret-key-set-the-SECRET_KEY-environment-variable"  # noqa: S105 (a marker, not a key)
SECRET_KEY = env.str("SECRET_KEY", default="") or MISSING_SECRET_PLACEHOLDER
FERNET_KEYS = [k.strip() for k in env.str("FERNET_KEYS", default="").split(",") if k.strip()]
SEARCH_INDEX_KEY = env.str("SEARCH_INDEX_KEY", default="")
# While `rebuild_search_index` moves the index to a new SEARCH_INDEX_KEY, the old key here keeps
# not-yet-rebuilt messages findable. Remove it once the rebuild has completed.
SEARCH_INDEX_PREVIOUS_KEY = env.str("SEARCH_INDEX_PREVIOUS_KEY", default="")
BRAIN_SIGNING_KEY = env.str("BRAIN_SIGNING_KEY", default="")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="")

INSTALLED_APPS = [
    "daphne",  # must come first so that its runserver serves ASGI
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "channels",
    "django_celery_beat",
    "brain_connectors.apps.BrainConnectorsConfig",
    "audit",
    "axes",  # django-axes: login lockout (see "Login protection" below)
    "brain_connectors.access",
    "connectors",
    "routing",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "brain_connectors.static_middleware.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a refused login into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "brain_connectors.urls"
ASGI_APPLICATION = "brain_connectors.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# The embedded default is SQLite under var/; DATABASE_URL switches to PostgreSQL (psycopg 3).
(BASE_DIR / "var" / "staticfiles").mkdir(parents=True, exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue instead of
            # failing on lock upgrade, and the audit hash chain is serialised.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    # Reuse connections for a minute (checked before reuse): a new PostgreSQL connection per
    # request costs more than the request itself.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and Celery broker --------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# Longer than any task, so Redis does not hand an unacknowledged task to a second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
CELERY_TIMEZONE = "UTC"

# --- Auth, permissions -----------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: django-axes' lockout check must refuse before any backend accepts the right password.
    "brain_connectors.access.login.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row; anonymous requests are refused anyway
LOGIN_URL = "/admin/login/"
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

API_TOKEN_DEFAULT_TTL_DAYS = env.int("API_TOKEN_DEFAULT_TTL_DAYS", default=90)
API_TOKEN_MAX_TTL_DAYS = env.int("API_TOKEN_MAX_TTL_DAYS", default=3650)

# --- Login protection (django-axes; glue and audit in access/login.py) -----------------------
# /admin/login/ and /accounts/login/ refuse every attempt, the right password included, once an
# account has LOGIN_FAILURE_LIMIT failures from any addresses, or an address has as many on any
# accounts, within LOGIN_COOLOFF_MINUTES of the latest. Per account stops distributed guessing;
# per address stops spraying one password over many accounts. The price: anyone can lock a known
# username for that long. Unlock at once: manage.py axes_reset_username <name> / axes_reset_ip <ip>.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"  # shared by every process
# No reset on success: signing in to any account of one's own would also wipe the failures counted
# against one's address, and against the account under attack from that address.
AXES_RESET_ON_SUCCESS = False
# Attempts refused during a lockout neither restart it nor append to axes' attempt rows, which
# would otherwise grow with every request an attacker makes.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "brain_connectors.access.login.lockout_response"  # 429, Retry-After, a page in plain words
AXES_CLIENT_IP_CALLABLE = "brain_connectors.access.ip.client_ip"
AXES_VERBOSE = False  # no start-up banner on every manage.py command; failures are still logged
# How many reverse proxies in front of the app append to X-Forwarded-For. 0: the client is
# REMOTE_ADDR, and X-Forwarded-For (which anyone can send) is ignored for lockouts and throttles.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "connectors.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # IsAuthenticated that also throttles unauthenticated clients per address (429).
    "DEFAULT_PERMISSION_CLASSES": ["brain_connectors.shared.throttling.IsAuthenticatedOrThrottled"],
    "DEFAULT_THROTTLE_CLASSES": ["brain_connectors.shared.throttling.ClientQuotaThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "brain_connectors.shared.api_errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "brain_connectors.shared.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    # JSON nested past brain_connectors.shared.parsers.MAX_JSON_DEPTH is a 400, not a RecursionError (a 500).
    "DEFAULT_PARSER_CLASSES": [
        "brain_connectors.shared.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# The most rows one page of a list may ask for with ?limit= (more is a 400, not a silent clamp).
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)

SPECTACULAR_SETTINGS = {
    "TITLE": "BRAIN Connectors API",
    "DESCRIPTION": "The synapse layer between BRAIN and people on real channels.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["brain_connectors.shared.throttling.IsAuthenticatedOrThrottled"],
    "SWAGGER_UI_DIST": "SIDECAR",  # assets served by the app itself: works offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status": name each choice set, so the schema needs no guessed names.
    "ENUM_NAME_OVERRIDES": {
        "ConnectorStatusEnum": "connectors.models.ConnectorStatus",
        "DeliveryStatusEnum": "connectors.models.DeliveryStatus",
        # Serializers that list the values alone (no labels) are a different choice set to it.
        "DeliveryStatusValuesEnum": ["queued", "sending", "sent", "delivered", "failed", "dead"],
        "NotificationStatusEnum": ["sending", "delivered", "exhausted", "unroutable"],
        "NotificationTypeEnum": ["standard", "urgent", "digest"],
    },
}

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

DELIVERY_MAX_ATTEMPTS = env.int("DELIVERY_MAX_ATTEMPTS", default=8)
# A delivery left in `sending` this long lost its worker; the sweeper queues it again.
DELIVERY_SENDING_TIMEOUT = env.int("DELIVERY_SENDING_TIMEOUT", default=120)
# Work younger than this is left to its own task before the sweeper re-drives it.
DELIVERY_SWEEP_GRACE = env.int("DELIVERY_SWEEP_GRACE", default=10)
BRAIN_CLAIM_TIMEOUT = env.int("BRAIN_CLAIM_TIMEOUT", default=120)
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", default=15.0)
# Celery beat (DatabaseScheduler) copies this into django-celery-beat's tables on start.
CELERY_BEAT_SCHEDULE = {
    "sweep-deliveries": {"task": "connectors.tasks.sweep", "schedule": SWEEP_INTERVAL_SECONDS},
}
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
CELERY_BEAT_SCHEDULE["relay-events"] = {"task": "connectors.tasks.relay_events", "schedule": EVENT_RELAY_INTERVAL_SECONDS}
CELERY_BEAT_SCHEDULE["purge-events"] = {"task": "connectors.tasks.purge_events", "schedule": 3600.0}

API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=600)
QUOTA_KEY_PREFIX = env.str("QUOTA_KEY_PREFIX", default="brain:quota:")

# --- Unauthenticated clients: throttle, and counted audit of refusals (access/refusals.py) ---
# Requests to the API and /metrics without valid credentials (none, or a refused token) share a
# bucket per client address (IPv6: per /64) of this many a minute; beyond it, 429 with Retry-After.
# 0 turns the throttle off.
API_ANON_RATE_PER_MINUTE = env.int("API_ANON_RATE_PER_MINUTE", default=60)
# Refused tokens (and logins refused during a lockout) are audited once per window per kind; the
# repeats are counted and written as one `….repeated` row when the window ends.
REFUSAL_AUDIT_WINDOW_SECONDS = env.int("REFUSAL_AUDIT_WINDOW_SECONDS", default=60)
CELERY_BEAT_SCHEDULE["close-refusal-windows"] = {
    "task": "brain_connectors.access.tasks.close_refusal_windows",
    "schedule": float(REFUSAL_AUDIT_WINDOW_SECONDS),
}

# --- Health checks, downtime alerts, metrics (connectors.monitoring.health, connectors.monitoring.metrics) ------
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
CELERY_BEAT_SCHEDULE["health-checks"] = {
    "task": "connectors.tasks.health_checks",
    "schedule": HEALTH_CHECK_INTERVAL_SECONDS,
}
# /metrics (connectors/monitoring/metrics.py): superusers and holders of access.view_metrics (session or API
# token), or Authorization: Bearer <METRICS_SCRAPE_TOKEN> (32+ characters; empty: none). When
# METRICS_ALLOWED_IPS (CIDRs, matched against REMOTE_ADDR only) is set, every scrape must also come
# from one of them: an address alone never grants access.
METRICS_SCRAPE_TOKEN = env.str("METRICS_SCRAPE_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
METRICS_LATENCY_BUCKETS = [
    float(b) for b in env.list("METRICS_LATENCY_BUCKETS", default=["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300"])
]

# --- Notifications (routing.notify) ---------------------------------------------------------
# An urgent notification sent but not acknowledged within this many seconds goes to its next
# channel; the beat task checks deadlines every ROUTING_ACK_CHECK_SECONDS.
ROUTING_URGENT_ACK_SECONDS = env.int("ROUTING_URGENT_ACK_SECONDS", default=300)
ROUTING_ACK_CHECK_SECONDS = env.float("ROUTING_ACK_CHECK_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE["routing-ack-deadlines"] = {
    "task": "routing.tasks.check_ack_deadlines",
    "schedule": ROUTING_ACK_CHECK_SECONDS,
}

# --- Pairing mails (routing.delivered_codes) ------------------------------------------------------
# Where BRAIN sends the pairing link itself (email), anyone signed in could make it mail anyone:
# links sent per account and per address (case and +tags ignored) in the last hour, counted in the
# database. Past either: 429 pairing_rate_limited with Retry-After, nothing sent.
ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR = env.int("ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR", default=5)
ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR = env.int("ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR", default=3)

# --- The router (routing.router) ------------------------------------------------------------
# Kinds tried, in this order, for people who set no preferences (their verified identities).
ROUTING_DEFAULT_KIND_ORDER = env.list(
    "ROUTING_DEFAULT_KIND_ORDER", default=["telegram", "whatsapp", "sms", "email", "voice", "webhook", "cli", "locmem"]
)
# A leased (runconnectors) connector whose heartbeat is older than this is skipped.
ROUTING_STALE_HEARTBEAT_SECONDS = env.int("ROUTING_STALE_HEARTBEAT_SECONDS", default=300)
# Per-process cache of identities, preferences and connector states: lifetime and size.
ROUTING_CACHE_SECONDS = env.float("ROUTING_CACHE_SECONDS", default=5.0)
ROUTING_CACHE_MAX_USERS = env.int("ROUTING_CACHE_MAX_USERS", default=100_000)

# --- Conversation privacy (conversations.privacy) ------------------------------------------------
# Messages older than this are purged (per-connector RetentionPolicy rows override it); 0 keeps them.
CONVERSATION_RETENTION_DAYS = env.int("CONVERSATION_RETENTION_DAYS", default=365)
CELERY_BEAT_SCHEDULE["purge-conversations"] = {"task": "conversations.tasks.purge_conversations", "schedule": 86400.0}

# --- Conversation memory and search (conversations.services, conversations.search) ----------
# On: BRAIN's context for a paired person spans all their channels (Telegram → WhatsApp).
CONVERSATION_CONTEXT_CROSS_CHANNEL = env.bool("CONVERSATION_CONTEXT_CROSS_CHANNEL", default=False)

# --- Internationalisation, static ------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the app directories, so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security (production defaults when DEBUG is off) ----------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# healthz/readyz are probed over plain HTTP by load balancers inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz\Z", r"^readyz\Z"]  # Django uses re.search: `$` would also take "healthz\n"
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=[])

# --- Event subscriptions (connectors.events.subscriptions) ------------------------------------------
# Their URLs pass the outbound-URL guard: see BRAIN_ALLOW_PRIVATE_URLS.
EVENT_SUBSCRIPTION_TIMEOUT = env.float("EVENT_SUBSCRIPTION_TIMEOUT", default=10.0)
# How long each process caches the list of active subscriptions (publishing checks it).
EVENT_SUBSCRIPTION_CACHE_SECONDS = env.float("EVENT_SUBSCRIPTION_CACHE_SECONDS", default=2.0)
CELERY_BEAT_SCHEDULE["sweep-event-deliveries"] = {
    "task": "connectors.tasks.sweep_event_deliveries",
    "schedule": SWEEP_INTERVAL_SECONDS,
}

# --- Audit chain (audit.services, audit.checkpoints) ------------------------------------------
# The chain's HMAC key, kept outside the database so that the database alone cannot re-chain a
# rewritten log. At least 32 characters; required (a check error) with DEBUG off, and audit rows
# are never written without it. Former keys (comma-separated) only verify the rows they wrote.
AUDIT_CHAIN_KEY = env.str("AUDIT_CHAIN_KEY", default="")
AUDIT_CHAIN_PREVIOUS_KEYS = [k.strip() for k in env.str("AUDIT_CHAIN_PREVIOUS_KEYS", default="").split(",") if k.strip()]
# The chain's head (seq and MAC) is checkpointed here, outside the database, in a subdirectory per
# database, so that deleting the newest rows is detected. verify_audit must see this directory.
AUDIT_CHECKPOINT_DIR = env.str("AUDIT_CHECKPOINT_DIR", default=str(BASE_DIR / "var" / "audit-checkpoints"))
AUDIT_CHECKPOINT_INTERVAL_SECONDS = env.float("AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=60.0)
# Writers: Celery beat where it runs, and each daphne process (`make run` has no beat).
AUDIT_CHECKPOINT_IN_DAPHNE = env.bool("AUDIT_CHECKPOINT_IN_DAPHNE", default=True)
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {
    "task": "audit.tasks.write_checkpoint",
    "schedule": AUDIT_CHECKPOINT_INTERVAL_SECONDS,
}

# --- Logging: secrets never reach it (see brain_connectors.shared.log_redaction) -----------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "brain_connectors.shared.log_redaction.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["stderr"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # httpx logs every request URL at INFO, and Telegram's URLs carry the bot token.
        "httpx": {"level": "WARNING"},
        # Django's own handlers (`console` under DEBUG, `mail_admins`, `django.server`) would write
        # request lines the redaction filter never saw: their records go to `stderr` above instead.
        "django": {"handlers": [], "level": "NOTSET"},
        "django.server": {"handlers": [], "level": "NOTSET", "propagate": True},
    },
}
