"""Reaching people and remembering them: notification routing, pairing, conversation privacy and memory."""
from brain_connectors.settings.environment import env

# --- Notifications (routing.notify) ---------------------------------------------------------
# An urgent notification sent but not acknowledged within this many seconds goes to its next
# channel; the beat task checks deadlines every ROUTING_ACK_CHECK_SECONDS.
ROUTING_URGENT_ACK_SECONDS = env.int("ROUTING_URGENT_ACK_SECONDS", default=300)
ROUTING_ACK_CHECK_SECONDS = env.float("ROUTING_ACK_CHECK_SECONDS", default=15.0)

# --- Pairing codes (routing.pairing.codes) -------------------------------------------------------
# A code lives ROUTING_PAIRING_TTL_SECONDS and works once; a person may hold ROUTING_PAIRING_MAX_PENDING.
# Past ROUTING_PAIRING_MAX_ATTEMPTS failed attempts from one sender on a connector within the window (or
# ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR from all senders on it), codes are not even looked at.
ROUTING_PAIRING_TTL_SECONDS = env.int("ROUTING_PAIRING_TTL_SECONDS", default=3600)
ROUTING_PAIRING_MAX_PENDING = env.int("ROUTING_PAIRING_MAX_PENDING", default=3)
ROUTING_PAIRING_MAX_ATTEMPTS = env.int("ROUTING_PAIRING_MAX_ATTEMPTS", default=5)
ROUTING_PAIRING_ATTEMPT_WINDOW_SECONDS = env.int("ROUTING_PAIRING_ATTEMPT_WINDOW_SECONDS", default=15 * 60)
ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR = env.int("ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR", default=200)

# --- Pairing mails (routing.delivered_codes) ------------------------------------------------------
# Where BRAIN sends the pairing link itself (email), anyone signed in could make it mail anyone:
# links sent per account and per address (case and +tags ignored) in the last hour, counted in the
# database. Past either: 429 pairing_rate_limited with Retry-After, nothing sent.
ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR = env.int("ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR", default=5)
ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR = env.int("ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR", default=3)

# --- The router (routing.router) ------------------------------------------------------------
# Kinds tried, in this order, for people who set no preferences (their verified identities).
ROUTING_DEFAULT_KIND_ORDER = env.list(
    "ROUTING_DEFAULT_KIND_ORDER", default=["telegram", "slack", "whatsapp", "sms", "email", "voice", "webhook", "cli", "locmem"]
)
# A leased (runconnectors) connector whose heartbeat is older than this is skipped.
ROUTING_STALE_HEARTBEAT_SECONDS = env.int("ROUTING_STALE_HEARTBEAT_SECONDS", default=300)
# Per-process cache of identities, preferences and connector states: lifetime and size.
ROUTING_CACHE_SECONDS = env.float("ROUTING_CACHE_SECONDS", default=5.0)
ROUTING_CACHE_MAX_USERS = env.int("ROUTING_CACHE_MAX_USERS", default=100_000)

# --- Conversation privacy (conversations.privacy) ------------------------------------------------
# Messages older than this are purged (per-connector RetentionPolicy rows override it); 0 keeps them.
CONVERSATION_RETENTION_DAYS = env.int("CONVERSATION_RETENTION_DAYS", default=365)
# A person's export carries their files' bytes (base64) up to this many in all; past it, files are listed without
# them ("data_omitted": "export_limit"). The export is one JSON document built in memory: this bounds it.
PRIVACY_EXPORT_ATTACHMENT_BYTES = env.int("PRIVACY_EXPORT_ATTACHMENT_BYTES", default=50 * 1024 * 1024)

# --- Conversation memory and search (conversations.services, conversations.search) ----------
# On: BRAIN's context for a paired person spans all their channels (Telegram → WhatsApp).
CONVERSATION_CONTEXT_CROSS_CHANNEL = env.bool("CONVERSATION_CONTEXT_CROSS_CHANNEL", default=False)
# Memory is written after commit (conversations.recording): markers consumed this many at a time, one transaction each.
CONVERSATION_MEMORY_BATCH_SIZE = env.int("CONVERSATION_MEMORY_BATCH_SIZE", default=100)
# At most one consumer kick per web or worker process per this many seconds; markers committed meanwhile wait for the next.
CONVERSATION_MEMORY_KICK_SECONDS = env.float("CONVERSATION_MEMORY_KICK_SECONDS", default=0.25)
# Celery beat's safety net: consume whatever markers a lost kick left behind.
CONVERSATION_MEMORY_SWEEP_SECONDS = env.float("CONVERSATION_MEMORY_SWEEP_SECONDS", default=5.0)
