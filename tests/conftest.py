"""Shared fixtures. Tests reach the code through its public surface (HTTP, commands,
subprocesses) as well as through services."""
import contextlib
import itertools
import os
import shutil
import socket
import sys
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from connectors import services
from connectors.permissions import Principal
from connectors.platforms import locmem
from connectors.tokens import create_token

# The suite-wide check that no secret or message content reaches the logs (issue 8).
pytest_plugins = ("tests.log_guard",)

SYSTEM = Principal.system_actor("tests", via="test")
BASE_DIR = settings.BASE_DIR


# --- services that may be absent -----------------------------------------------------------


def _redis_reachable():
    url = os.environ.get("REDIS_URL")
    if not url:
        return False, "REDIS_URL is not set"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        return False, f"Redis at REDIS_URL is unreachable: {exc}"
    return True, ""


def pytest_collection_modifyitems(config, items):
    redis_ok, redis_reason = _redis_reachable()
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://…"))
        if "redis" in item.keywords and not redis_ok:
            item.add_marker(pytest.mark.skip(reason=f"needs Redis: {redis_reason}"))
        if "vendor_neutral" in item.keywords and on_postgres:
            # CI runs the suite twice (embedded defaults, then PostgreSQL): a slow subprocess test of start-up
            # checks or of the test tooling itself would prove the same thing twice.
            item.add_marker(pytest.mark.skip(reason="vendor-neutral: proven by the run on the embedded defaults"))


# --- the audit triggers vs. test flushes -----------------------------------------------------


def _delete_from_tables_with_rows(connection, tables):
    """PostgreSQL's flush for tests: DELETE FROM the tables that hold rows, instead of one TRUNCATE of all of them.

    A TRUNCATE gives every table (and index) a new file, synced at commit: about a second per transactional test
    here, for ~80 tables of which a test fills a handful. The foreign keys are deferred (Django's), so the order does
    not matter; sequences are not reset either way."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join(f"SELECT %s WHERE EXISTS (SELECT 1 FROM {quote(table)})" for table in tables), list(tables)
        )
        filled = [row[0] for row in cursor.fetchall()]
    return [f"DELETE FROM {quote(table)};" for table in filled]


@pytest.fixture(scope="session", autouse=True)
def _flush_keeps_audit_triggers():
    """Transactional tests end with a flush: DELETE FROM on SQLite, TRUNCATE on PostgreSQL, which the
    audit table's append-only triggers refuse (as they should, in production). The test harness lifts
    them for the flush only, in the flush's own transaction, and puts them back."""
    import importlib

    from audit import triggers

    vendor = "sqlite" if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") else "postgresql"
    backend = settings.DATABASES["default"]["ENGINE"]
    importlib.import_module(f"{backend}.base")  # loads the backend before its operations module
    operations = importlib.import_module(f"{backend}.operations").DatabaseOperations
    original = operations.sql_flush

    def sql_flush(self, style, tables, *args, **kwargs):
        if vendor == "postgresql" and tables:
            statements = _delete_from_tables_with_rows(self.connection, tables)
        else:
            statements = original(self, style, tables, *args, **kwargs)
        if triggers.TABLE not in tables:
            return statements
        return [*triggers.REMOVE[vendor], *statements, *triggers.INSTALL[vendor]]

    operations.sql_flush = sql_flush
    yield
    operations.sql_flush = original


# --- audit checkpoints: one directory per test -----------------------------------------------

_CHECKPOINT_RUN_DIR = os.path.join(settings.AUDIT_CHECKPOINT_DIR, f"pytest-{os.getpid()}")
_checkpoint_dirs = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _remove_checkpoint_dirs():
    yield
    shutil.rmtree(_CHECKPOINT_RUN_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):  # the per-run parent too, unless something else is in it
        os.rmdir(settings.AUDIT_CHECKPOINT_DIR)


@pytest.fixture(autouse=True)
def _checkpoint_dir_per_test(monkeypatch):
    """Each test starts with an empty audit log, so a checkpoint left by an earlier test would read as
    deleted rows. Subprocesses (daphne, manage.py) get the same directory through the environment."""
    from django.test import override_settings

    path = os.path.join(_CHECKPOINT_RUN_DIR, f"t{next(_checkpoint_dirs)}")
    monkeypatch.setenv("AUDIT_CHECKPOINT_DIR", path)
    with override_settings(AUDIT_CHECKPOINT_DIR=path):
        yield


# --- people, tokens, clients -----------------------------------------------------------------


@pytest.fixture
def make_user(db, django_user_model):
    def make(username, *, staff=False, superuser=False, password="pw-for-tests-only"):
        if superuser:
            return django_user_model.objects.create_superuser(username=username, password=password, email="")
        return django_user_model.objects.create_user(username=username, password=password, is_staff=staff)

    return make


@pytest.fixture
def grant():
    def do(user, perm, connector):
        services.grant_permission(SYSTEM, connector.pk, perm, user=user)

    return do


@pytest.fixture
def token_for():
    def make(user, **kwargs):
        return create_token(SYSTEM, user, **kwargs)[1]

    return make


@pytest.fixture
def api():
    """An APIClient factory: api(token) sends `Authorization: Bearer <token>`."""

    def make(token=None):
        client = APIClient()
        if token:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return make


# --- connectors ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clear_locmem_outbox():
    locmem.outbox.clear()
    yield
    locmem.outbox.clear()


@pytest.fixture
def make_connector(db):
    def make(id="locmem_main", kind="locmem", start=True, **kwargs):
        kwargs.setdefault("display_name", id.replace("_", " ").title())
        connector = services.register_connector(SYSTEM, id=id, kind=kind, **kwargs)
        if start:
            connector = services.start_connector(SYSTEM, id)
        return connector

    return make


# --- subprocesses ----------------------------------------------------------------------------


def test_database_url():
    """DATABASE_URL of the database this test runs on, for subprocesses to share it."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture
def subprocess_env(transactional_db):
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "brain_connectors.settings",
            "BRAIN_READ_DOTENV": "0",
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
            # The files a subprocess stores go where this process reads them (brain_connectors/settings_test.py).
            "ATTACHMENTS_DIR": settings.STORAGES["attachments"]["OPTIONS"]["location"],
        }
    )
    return env


@pytest.fixture
def manage(subprocess_env):
    """Run `manage.py …` in a new process on the test database."""
    import subprocess

    def run(*args, input=None, timeout=60, env=None):
        return subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**subprocess_env, **(env or {})},
            cwd=BASE_DIR,
        )

    return run


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
