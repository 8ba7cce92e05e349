"""Shared set-up for benchmarks: a throwaway environment on PostgreSQL and Redis, Django, and
figures printed as JSON lines. Benchmarks print; they never assert about time."""
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/brain_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


def prepare_environment(database_url=None, redis_url=None, **extra):
    """Environment variables for this process and its children (daphne, workers)."""
    from cryptography.fernet import Fernet

    env = {
        "DJANGO_SETTINGS_MODULE": "brain_connectors.settings",
        "BRAIN_READ_DOTENV": "0",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "SECRET_KEY": base64.urlsafe_b64encode(os.urandom(48)).decode(),
        "FERNET_KEYS": Fernet.generate_key().decode(),
        "SEARCH_INDEX_KEY": os.urandom(16).hex(),
        "BRAIN_SIGNING_KEY": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
        "AUDIT_CHAIN_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        # A throwaway database: its checkpoints must not land in the project's var/.
        "AUDIT_CHECKPOINT_DIR": os.path.join(tempfile.gettempdir(), f"brain_bench_audit_checkpoints_{os.getpid()}"),
        "DATABASE_URL": database_url or os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE),
        "REDIS_URL": redis_url or os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        # Each delivery by its own Celery task, as before, unless a bench runs `manage.py runsender` processes.
        "DELIVERY_ENGINE": os.environ.get("BENCH_DELIVERY_ENGINE", "tasks"),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT_PER_MINUTE": "1000000",
        # The fakes (Telegram, Twilio, BRAIN, receivers) listen on 127.0.0.1, which the
        # outbound-URL guard refuses by default.
        "BRAIN_ALLOW_PRIVATE_URLS": "true",
        **extra,
    }
    os.environ.update(env)
    return dict(os.environ)


def fresh_database(database_url):
    """Drop and create the benchmark database (never the project's own)."""
    name = database_url.rsplit("/", 1)[1]
    if not name.startswith("brain_bench"):
        raise SystemExit(f"refusing to recreate {name!r}: benchmark databases are named brain_bench*")
    server = database_url.rsplit("/", 1)[0] + "/postgres"
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", server, "-q", "-c", sql], check=True)


def setup_django(migrate=True):
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)


def flush_redis(redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values):
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def emit(**figures):
    print(json.dumps(figures), flush=True)
