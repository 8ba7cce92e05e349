"""Work outside requests: Redis (channel layer, broker), Celery's behaviour and the beat schedule of periodic tasks."""
from brain_connectors.settings.api import REFUSAL_AUDIT_WINDOW_SECONDS
from brain_connectors.settings.audit_chain import AUDIT_CHECKPOINT_INTERVAL_SECONDS, AUDIT_SEAL_INTERVAL_SECONDS
from brain_connectors.settings.connectors import (
    EVENT_RELAY_INTERVAL_SECONDS,
    HEALTH_CHECK_INTERVAL_SECONDS,
    SWEEP_INTERVAL_SECONDS,
)
from brain_connectors.settings.environment import env
from brain_connectors.settings.people import CONVERSATION_MEMORY_SWEEP_SECONDS, ROUTING_ACK_CHECK_SECONDS

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
# Celery's Django fixup (celery/fixups/django.py reads CELERY_DB_REUSE_MAX through this namespace) closes the
# worker's database connections around every task unless this is set; reusing them saves a PostgreSQL backend
# start per task. It closes them every N tasks instead; brain_connectors/celery.py also drops a connection that
# broke or outlived CONN_MAX_AGE before each task.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# --- Delivery engine ---------------------------------------------------------------------------
# "tasks": one Celery task per delivery (the default in eager mode: `make run` and the test suite).
# "sender": `manage.py runsender` processes claim due deliveries in batches and send them concurrently; sending a
# message wakes them with a PostgreSQL NOTIFY instead of a broker message (connectors/task_queue.py).
DELIVERY_ENGINE = env.str("DELIVERY_ENGINE", default="tasks" if CELERY_TASK_ALWAYS_EAGER else "sender")
# How often a sender looks for due work without being woken: retries that came due, and NOTIFYs it missed.
DELIVERY_SENDER_POLL_SECONDS = env.float("DELIVERY_SENDER_POLL_SECONDS", default=1.0)

# Celery beat (DatabaseScheduler) copies this into django-celery-beat's tables on start. The task
# names are stored there: they must not change.
CELERY_BEAT_SCHEDULE = {
    "sweep-deliveries": {"task": "connectors.tasks.sweep", "schedule": SWEEP_INTERVAL_SECONDS},
    "relay-events": {"task": "connectors.tasks.relay_events", "schedule": EVENT_RELAY_INTERVAL_SECONDS},
    "purge-events": {"task": "connectors.tasks.purge_events", "schedule": 3600.0},
    "close-refusal-windows": {
        "task": "brain_connectors.access.tasks.close_refusal_windows",
        "schedule": float(REFUSAL_AUDIT_WINDOW_SECONDS),
    },
    "health-checks": {"task": "connectors.tasks.health_checks", "schedule": HEALTH_CHECK_INTERVAL_SECONDS},
    "routing-ack-deadlines": {"task": "routing.tasks.check_ack_deadlines", "schedule": ROUTING_ACK_CHECK_SECONDS},
    "purge-conversations": {"task": "conversations.tasks.purge_conversations", "schedule": 86400.0},
    "record-pending-messages": {"task": "conversations.tasks.record_pending", "schedule": CONVERSATION_MEMORY_SWEEP_SECONDS},
    "sweep-event-deliveries": {"task": "connectors.tasks.sweep_event_deliveries", "schedule": SWEEP_INTERVAL_SECONDS},
    "audit-checkpoint": {"task": "audit.tasks.write_checkpoint", "schedule": AUDIT_CHECKPOINT_INTERVAL_SECONDS},
    # Expiring: behind a backlog, one round seals everything; the missed ones need not pile up.
    "audit-seal": {
        "task": "audit.tasks.seal_pending",
        "schedule": AUDIT_SEAL_INTERVAL_SECONDS,
        "options": {"expires": max(5 * AUDIT_SEAL_INTERVAL_SECONDS, 5.0)},
    },
}
