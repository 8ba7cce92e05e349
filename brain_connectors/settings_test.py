"""Settings for pytest: the real settings with throwaway keys and eager Celery.

The test database is a SQLite file, so that subprocesses such as daphne or `manage.py` can open it.

DATABASE_URL and REDIS_URL still come from the environment, so the same suite runs on PostgreSQL
with the Redis channel layer when they are set. A developer's `.env` is never read.
"""
import os
import tempfile

from cryptography.fernet import Fernet

os.environ["BRAIN_READ_DOTENV"] = "0"
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-" + os.urandom(32).hex())
os.environ.setdefault("FERNET_KEYS", Fernet.generate_key().decode())
os.environ.setdefault("SEARCH_INDEX_KEY", os.urandom(32).hex())
os.environ.setdefault("BRAIN_SIGNING_KEY", "whsec_dGVzdC1zaWduaW5nLWtleS0xMjM0NTY3ODkwYWJjZGVm")
os.environ.setdefault("AUDIT_CHAIN_KEY", "test-audit-" + os.urandom(32).hex())
# Per run, never the project's var/ (tests/conftest.py narrows it to one directory per test).
os.environ.setdefault("AUDIT_CHECKPOINT_DIR", os.path.join(tempfile.gettempdir(), f"brain_audit_checkpoints_{os.getpid()}"))
# The fakes (Telegram, Twilio, BRAIN, webhook receivers) listen on 127.0.0.1, which the outbound-URL
# guard refuses by default; set in the environment so processes a test starts inherit it. The
# guard's own tests turn it off again.
os.environ["BRAIN_ALLOW_PRIVATE_URLS"] = "true"
# Production security defaults would redirect the test client to https.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")

from brain_connectors.settings import *  # noqa: E402,F403
from brain_connectors.settings import DATABASES, STORAGES  # noqa: E402

# Tests import brain_connectors.asgi in this process: no checkpoint thread here, writing at random
# moments into whichever test runs. Daphne started by a test (its own settings) still runs one.
AUDIT_CHECKPOINT_IN_DAPHNE = False

# Webhooks run in pool threads; persistent connections there would keep the test database busy
# when pytest-django drops it.
DATABASES["default"]["CONN_MAX_AGE"] = 0

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"brain_connectors_test_{os.getpid()}.sqlite3")
    }

# Attachments a test stores go to a directory of this run, never the project's var/.
STORAGES["attachments"]["OPTIONS"]["location"] = os.path.join(tempfile.gettempdir(), f"brain_attachments_{os.getpid()}")

# MD5 makes test users fast; PBKDF2 still verifies passwords set by subprocesses (ensure_admin).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
BRAIN_TIMEOUT = 2.0

API_RATE_LIMIT_PER_MINUTE = 100_000  # tests that check the quota lower it
API_ANON_RATE_PER_MINUTE = 100_000  # the same for the unauthenticated throttle (and login lockout stays on)
QUOTA_KEY_PREFIX = f"brain:test:{os.getpid()}:{os.urandom(4).hex()}:"  # no state shared between runs

# A test database need not survive a power cut: commits return without waiting for the WAL flush (PostgreSQL's
# synchronous_commit=off loses no consistency, only the last moments' transactions after a crash of the server).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c synchronous_commit=off".strip()
