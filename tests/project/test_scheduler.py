"""The embedded scheduler (`manage.py runscheduler`): runs the beat schedule one task at a time, survives failures."""
import io
import logging

import pytest
from celery import shared_task
from django.core.management import call_command
from django.db import OperationalError, connection

from brain_connectors import scheduler

pytestmark = pytest.mark.django_db(transaction=True)

calls = []


@shared_task(name="tests.scheduler.boom")
def boom():
    calls.append("boom")
    raise RuntimeError("a task that always fails")


@shared_task(name="tests.scheduler.locked")
def locked():
    calls.append("locked")
    if calls.count("locked") == 1:
        raise OperationalError("database is locked")


@shared_task(name="tests.scheduler.uses_db")
def uses_db():
    # Each run starts on a fresh connection: the one before was closed after its run.
    calls.append(("uses_db", connection.connection is None))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_without_eager_celery_the_command_leaves_the_schedule_to_beat(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    err = io.StringIO()
    call_command("runscheduler", stderr=err)  # returns at once: nothing to run here
    assert "`celery beat` and workers run the periodic tasks" in err.getvalue()


def test_the_default_schedule_leaves_the_audit_chain_to_the_server(settings):
    settings.AUDIT_CHECKPOINT_IN_DAPHNE = True
    tasks = {entry.task for entry in scheduler.entries()}
    assert "connectors.tasks.sweep" in tasks and "connectors.tasks.health_checks" in tasks
    assert not tasks & set(scheduler.SERVED_BY_ASGI)
    settings.AUDIT_CHECKPOINT_IN_DAPHNE = False
    assert set(scheduler.SERVED_BY_ASGI) <= {entry.task for entry in scheduler.entries()}
    settings.CELERY_BEAT_SCHEDULE = {**settings.CELERY_BEAT_SCHEDULE,
                                     "health-checks": {"task": "connectors.tasks.health_checks", "schedule": 0.0}}
    assert "connectors.tasks.health_checks" not in {entry.task for entry in scheduler.entries()}  # 0 turns it off


def test_failures_are_logged_a_locked_database_is_retried_soon_and_the_loop_goes_on(settings, monkeypatch, caplog):
    calls.clear()
    monkeypatch.setattr(scheduler, "LOCKED_RETRY_SECONDS", 0.01)
    settings.CELERY_BEAT_SCHEDULE = {
        "boom": {"task": "tests.scheduler.boom", "schedule": 0.05},
        # Once an hour: only the quick retry after "database is locked" can run it a second time in this test.
        "locked": {"task": "tests.scheduler.locked", "schedule": 3600.0},
        "uses-db": {"task": "tests.scheduler.uses_db", "schedule": 0.05},
    }
    entries = scheduler.entries()
    with caplog.at_level(logging.WARNING, logger="brain_connectors.scheduler"):
        scheduler.run(entries, keep_going=lambda: calls.count("boom") < 3)

    assert calls.count("boom") == 3  # every failure logged, none stopped the loop
    assert calls.count("locked") == 2  # locked once, tried again well before its hour
    db_runs = [fresh for name, fresh in (c for c in calls if isinstance(c, tuple))]
    assert len(db_runs) >= 2 and all(db_runs[1:])
    messages = [r.getMessage() for r in caplog.records if r.name == "brain_connectors.scheduler"]
    assert messages.count("scheduled task boom failed") == 3
    assert "scheduled task locked: the database is locked; trying again in 0 s" in messages
