"""Periodic health checks, incidents and downtime alerts (connectors.monitoring), on real locmem
connectors: `health: fail` makes a check fail, and alerts land in locmem's outbox."""
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import PermissionDenied
from connectors import services, tasks
from connectors.models import AlertRecipient, Connector, ConnectorStatus, Delivery, Event
from connectors.monitoring import alert_recipients, alerts, incidents, reporting
from connectors.monitoring import health as monitoring
from connectors.permissions import Principal
from connectors.platforms import locmem
from connectors.platforms.base import ConnectorError, HealthResult
from tests.clock import stepping_time
from tests.conftest import SYSTEM


@pytest.fixture(autouse=True)
def health_settings(settings):
    settings.HEALTH_FAILURE_THRESHOLD = 3
    settings.HEALTH_STALE_SECONDS = 300
    settings.HEALTH_AUTO_RESTART = True
    # Rounds run back to back here; the spacing guard has its own test.
    settings.HEALTH_CHECK_MIN_SPACING_SECONDS = 0
    return settings


def health_events(connector_id):
    return list(Event.objects.filter(type="connector.health.check", connector_id=connector_id).order_by("seq"))


def set_health(connector_id, health):
    services.update_connector(SYSTEM, connector_id, config={"health": health})


def status_of(connector_id):
    return Connector.objects.get(pk=connector_id).status


def alerts_to(recipient):
    return [message for _, message in locmem.outbox if message.recipient == recipient]


@pytest.mark.django_db
def test_a_passing_check_emits_its_latency_and_refreshes_the_heartbeat(make_connector, monkeypatch):
    make_connector("locmem_main")
    monkeypatch.setattr(monitoring, "time", stepping_time(0.0125))  # the check takes 12.5 ms exactly
    earlier = timezone.now() - timedelta(seconds=100)
    Connector.objects.filter(pk="locmem_main").update(last_heartbeat=earlier, health_failures=2)

    outcome = tasks.health_checks()  # the beat task runs the same code

    assert outcome["checked"] == 1 and outcome["failed"] == 0
    connector = Connector.objects.get(pk="locmem_main")
    assert connector.status == ConnectorStatus.CONNECTED
    assert connector.last_heartbeat > earlier
    assert connector.health_failures == 0
    [event] = health_events("locmem_main")
    assert event.data["ok"] is True and event.data["failures"] == 0 and event.data["stale"] is False
    assert (event.data["latency_ms"], event.data["detail"], event.data["trigger"]) == (12.5, "in-memory outbox", "schedule")
    row = AuditEvent.objects.filter(action="connector.health", target_id="locmem_main").get()
    assert row.principal == "system:health" and row.result == "success" and row.details["ok"] is True


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["fail", "raise"])
def test_n_failures_in_a_row_move_a_connector_to_error(make_connector, mode):
    make_connector("locmem_main")
    set_health("locmem_main", mode)

    for expected_failures in (1, 2):
        monitoring.run_health_checks()
        connector = Connector.objects.get(pk="locmem_main")
        assert connector.status == ConnectorStatus.CONNECTED
        assert connector.health_failures == expected_failures
    assert not Event.objects.filter(type="connector.error").exists()

    outcome = monitoring.run_health_checks()

    assert outcome["errored"] == 1
    connector = Connector.objects.get(pk="locmem_main")
    assert connector.status == ConnectorStatus.ERROR
    assert "3 health checks failed in a row" in connector.last_error
    assert [e.data["ok"] for e in health_events("locmem_main")] == [False, False, False]
    [error] = Event.objects.filter(type="connector.error", connector_id="locmem_main")
    assert error.data["error"] == "health_check_failed"
    assert AuditEvent.objects.filter(action="connector.error", target_id="locmem_main", principal="system:health").exists()
    # The incident opened at the end of the same round.
    assert connector.incident_started_at is not None


@pytest.mark.django_db
def test_a_stale_heartbeat_moves_a_connector_to_error(make_connector, settings):
    # A polling Telegram bot's heartbeat comes from its `runconnectors` process, not from the
    # check: a check that passes cannot refresh it, so a dead runner shows as stale.
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "locmem": "tests.connectors.test_monitoring.PollingLocmem"}
    make_connector("locmem_poll")
    old = timezone.now() - timedelta(seconds=301)
    Connector.objects.filter(pk="locmem_poll").update(last_heartbeat=old)

    monitoring.run_health_checks()

    connector = Connector.objects.get(pk="locmem_poll")
    assert connector.status == ConnectorStatus.ERROR
    assert connector.last_heartbeat == old
    assert "No heartbeat for over 300s" in connector.last_error
    [check] = health_events("locmem_poll")
    assert check.data["ok"] is True and check.data["stale"] is True
    [error] = Event.objects.filter(type="connector.error", connector_id="locmem_poll")
    assert error.data["error"] == "heartbeat_stale"

    # Its health check passes, but a restart cannot bring a dead runner back: it stays in ERROR.
    monitoring.run_health_checks()
    assert status_of("locmem_poll") == ConnectorStatus.ERROR


class PollingLocmem(locmem.LocmemConnector):
    runs_poller = True


@pytest.mark.django_db
def test_a_fresh_heartbeat_is_not_stale(make_connector, settings):
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "locmem": "tests.connectors.test_monitoring.PollingLocmem"}
    make_connector("locmem_poll")
    Connector.objects.filter(pk="locmem_poll").update(last_heartbeat=timezone.now() - timedelta(seconds=200))
    monitoring.run_health_checks()
    assert status_of("locmem_poll") == ConnectorStatus.CONNECTED


@pytest.mark.django_db(transaction=True)
def test_downtime_alert_once_per_incident_and_recovery_alert(make_connector, monkeypatch):
    make_connector("locmem_main")
    make_connector("locmem_alerts")
    staff = AlertRecipient.objects.create(connector_id="locmem_alerts", recipient="oncall-ada", description="on call")
    AlertRecipient.objects.create(connector_id="locmem_alerts", recipient="retired-bob", active=False)
    set_health("locmem_main", "fail")

    for _ in range(3):
        monitoring.run_health_checks()

    connector = Connector.objects.get(pk="locmem_main")
    assert connector.status == ConnectorStatus.ERROR
    started = connector.incident_started_at
    [down] = alerts_to("oncall-ada")
    assert "DOWN" in down.content and "locmem_main" in down.content and "ERROR" in down.content
    assert "3 health checks failed in a row" in down.content
    assert started.strftime("%Y-%m-%d %H:%M:%S") in down.content and alerts_to("retired-bob") == []
    delivery = Delivery.objects.get(principal="system:health", recipient="oncall-ada")
    assert delivery.idempotency_key == f"alert:locmem_main:{started.isoformat()}:{staff.pk}:down"

    # More failing rounds, and an explicit re-run of the reconciliation: still one alert.
    monitoring.run_health_checks()
    monitoring.run_health_checks()
    assert incidents.reconcile_incidents() == {"opened": 0, "closed": 0}
    assert len(alerts_to("oncall-ada")) == 1 and Connector.objects.get(pk="locmem_main").incident_started_at == started

    # Healthy again: the round restarts it (recovery) and tells staff how long it was down.
    set_health("locmem_main", "ok")
    monkeypatch.setattr(incidents, "timezone", SimpleNamespace(now=lambda: started + timedelta(seconds=90.04)))
    outcome = monitoring.run_health_checks()

    assert outcome["restarted"] == 1 and outcome["incidents"] == {"opened": 0, "closed": 1}
    connector = Connector.objects.get(pk="locmem_main")
    assert connector.status == ConnectorStatus.CONNECTED and connector.incident_started_at is None
    down_again, up = alerts_to("oncall-ada")
    assert down_again is down and "RECOVERED" in up.content and "locmem_main" in up.content and " down " in up.content
    assert Delivery.objects.filter(idempotency_key=f"alert:locmem_main:{started.isoformat()}:{staff.pk}:up").count() == 1
    assert AuditEvent.objects.filter(action="connector.start", target_id="locmem_main", principal="system:health").exists()
    opened = AuditEvent.objects.get(action="connector.incident.open", target_id="locmem_main")
    closed = AuditEvent.objects.get(action="connector.incident.close", target_id="locmem_main")
    assert closed.details["downtime_seconds"] == 90.0 and opened.id < closed.id  # 90.04 s, to a tenth
    assert AuditEvent.objects.filter(action="connector.alert", target_id="locmem_main", result="success").count() == 2

    monitoring.run_health_checks()
    assert len(alerts_to("oncall-ada")) == 2


@pytest.mark.django_db(transaction=True)
def test_alerts_are_idempotent_per_incident_recipient_and_phase(make_connector):
    make_connector("locmem_main")
    make_connector("locmem_alerts")
    recipient = AlertRecipient.objects.create(connector_id="locmem_alerts", recipient="oncall-ada")
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("token revoked", code="invalid_token"))
    incidents.reconcile_incidents()
    connector = Connector.objects.get(pk="locmem_main")

    # A second worker that somehow got past the incident lock (say its transaction was rolled
    # back and retried) queues the same alert again: the idempotency key replays the first one.
    text = alerts_to("oncall-ada")[0].content
    alerts.send_alert(connector, connector.incident_started_at, "down", text)

    assert len(alerts_to("oncall-ada")) == 1
    assert Delivery.objects.filter(recipient="oncall-ada").count() == 1
    replay = AuditEvent.objects.filter(action="connector.alert").order_by("-id").first()
    assert replay.details["replayed"] is True and replay.details["alert_recipient"] == recipient.pk
    assert "token revoked" in text


@pytest.mark.django_db(transaction=True)
def test_alert_cannot_go_through_the_failing_connector_or_a_stopped_one(make_connector):
    make_connector("locmem_main")
    make_connector("locmem_stopped", start=False)
    make_connector("locmem_alerts")
    same = AlertRecipient.objects.create(connector_id="locmem_main", recipient="via-itself")
    stopped = AlertRecipient.objects.create(connector_id="locmem_stopped", recipient="via-stopped")
    AlertRecipient.objects.create(connector_id="locmem_alerts", recipient="oncall-ada")

    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("boom"))
    incidents.reconcile_incidents()

    assert [m.recipient for _, m in locmem.outbox] == ["oncall-ada"]
    refused = {
        row.details["alert_recipient"]: row.details["error"]
        for row in AuditEvent.objects.filter(action="connector.alert", result="failure")
    }
    assert refused == {same.pk: "channel_is_the_failing_connector", stopped.pk: "channel_stopped"}


@pytest.mark.django_db(transaction=True)
def test_stopping_an_errored_connector_closes_its_incident(make_connector):
    make_connector("locmem_main")
    make_connector("locmem_alerts")
    AlertRecipient.objects.create(connector_id="locmem_alerts", recipient="oncall-ada")
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("boom"))
    incidents.reconcile_incidents()
    services.stop_connector(SYSTEM, "locmem_main")

    assert incidents.reconcile_incidents() == {"opened": 0, "closed": 1}

    assert Connector.objects.get(pk="locmem_main").incident_started_at is None
    down, closed = alerts_to("oncall-ada")
    assert "CLOSED" in closed.content and "stopped" in closed.content


@pytest.mark.django_db
def test_a_failing_restart_leaves_it_in_error(make_connector, settings):
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "locmem": "tests.connectors.test_monitoring.UnstartableLocmem"}
    make_connector("locmem_main", start=False)
    Connector.objects.filter(pk="locmem_main").update(status=ConnectorStatus.ERROR)

    outcome = monitoring.run_health_checks()

    assert outcome.get("restarted", 0) == 0
    connector = Connector.objects.get(pk="locmem_main")
    assert connector.status == ConnectorStatus.ERROR and "cannot start" in connector.last_error


class UnstartableLocmem(locmem.LocmemConnector):
    def start(self):
        raise ConnectorError("cannot start")


@pytest.mark.django_db
def test_auto_restart_can_be_turned_off(make_connector, settings):
    settings.HEALTH_AUTO_RESTART = False
    make_connector("locmem_main")
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("boom"))
    monitoring.run_health_checks()
    assert status_of("locmem_main") == ConnectorStatus.ERROR


@pytest.mark.django_db
def test_overlapping_rounds_count_a_failure_once(make_connector, settings):
    settings.HEALTH_CHECK_MIN_SPACING_SECONDS = 30
    make_connector("locmem_main")
    set_health("locmem_main", "fail")
    services.test_connector(SYSTEM, "locmem_main")  # a person's manual test does not count

    assert monitoring.run_health_checks()["checked"] == 1
    assert monitoring.run_health_checks()["skipped"] == 1

    assert Connector.objects.get(pk="locmem_main").health_failures == 1
    assert len([e for e in health_events("locmem_main") if e.data.get("trigger") == "schedule"]) == 1


@pytest.mark.django_db
def test_stopped_and_disabled_connectors_are_not_checked(make_connector):
    make_connector("locmem_stopped", start=False)
    assert monitoring.run_health_checks()["checked"] == 0
    assert health_events("locmem_stopped") == []


@pytest.mark.django_db
def test_event_and_audit_carry_no_secrets(make_connector, settings):
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "locmem": "tests.connectors.test_monitoring.LeakyLocmem"}
    make_connector("locmem_main")
    monitoring.run_health_checks()
    [event] = health_events("locmem_main")
    assert settings.SECRET_KEY not in event.data["detail"] and "[redacted]" in event.data["detail"]
    assert len(event.data["detail"]) <= reporting.DETAIL_MAX


class LeakyLocmem(locmem.LocmemConnector):
    def health_check(self):
        from django.conf import settings

        return HealthResult(ok=False, detail=f"upstream said key={settings.SECRET_KEY} " + "x" * 500)


# --- the beat schedule reaches django-celery-beat ----------------------------------------------


# Transactional: the scheduler closes old database connections as it works, as beat does.
@pytest.mark.django_db(transaction=True)
def test_beat_schedule_is_written_to_the_periodic_task_table():
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from brain_connectors.celery import app

    DatabaseScheduler(app=app)  # what `celery beat -S django_celery_beat.schedulers:DatabaseScheduler` does at start

    health = PeriodicTask.objects.get(name="health-checks")
    assert health.task == "connectors.tasks.health_checks" and health.enabled
    assert health.interval.every == 60 and health.interval.period == "seconds"
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {"health-checks", "relay-events", "purge-events", "sweep-deliveries"} <= names


# --- managing alert recipients -------------------------------------------------------------------


@pytest.mark.django_db
def test_alert_recipient_service_checks_permissions_and_audits(make_connector, make_user, grant):
    from django.contrib.auth.models import Permission

    from connectors.models import PERM_SEND

    make_connector("locmem_alerts")
    staff = make_user("staffer", staff=True)
    principal = Principal.for_user(staff, via="admin")
    with pytest.raises(PermissionDenied):
        alert_recipients.save_alert_recipient(principal, connector_id="locmem_alerts", recipient="oncall-ada")
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["add_alertrecipient", "delete_alertrecipient"]))
    staff = type(staff).objects.get(pk=staff.pk)  # fresh permission cache
    principal = Principal.for_user(staff, via="admin")
    grant(staff, "view_connector", Connector.objects.get(pk="locmem_alerts"))
    with pytest.raises(PermissionDenied):  # may not make the system send through it
        alert_recipients.save_alert_recipient(principal, connector_id="locmem_alerts", recipient="oncall-ada")
    grant(staff, PERM_SEND, Connector.objects.get(pk="locmem_alerts"))

    row = alert_recipients.save_alert_recipient(principal, connector_id="locmem_alerts", recipient="oncall-ada")
    alert_recipients.delete_alert_recipient(principal, row.pk)

    assert not AlertRecipient.objects.exists()
    actions = list(
        AuditEvent.objects.filter(target_type="alert_recipient").order_by("id").values_list("action", "result")
    )
    assert actions == [
        ("alert_recipient.create", "denied"),
        ("alert_recipient.create", "denied"),
        ("alert_recipient.create", "success"),
        ("alert_recipient.delete", "success"),
    ]
    assert all("oncall-ada" not in str(row.details) for row in AuditEvent.objects.filter(target_type="alert_recipient"))


@pytest.mark.django_db
def test_admin_manages_alert_recipients_through_the_service(make_connector, make_user, client):
    make_connector("locmem_alerts")
    admin_user = make_user("root", superuser=True)
    client.force_login(admin_user)

    response = client.post(
        "/admin/connectors/alertrecipient/add/",
        {"connector": "locmem_alerts", "recipient": "oncall-ada", "description": "on call", "active": "on"},
    )

    assert response.status_code == 302, response.content[:500]
    row = AlertRecipient.objects.get()
    assert row.recipient == "oncall-ada" and row.active
    audit_row = AuditEvent.objects.get(action="alert_recipient.create")
    assert audit_row.principal == "user:root" and audit_row.details["via"] == "admin"
    assert client.get("/admin/connectors/alertrecipient/").status_code == 200

    response = client.post(f"/admin/connectors/alertrecipient/{row.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not AlertRecipient.objects.exists()
    assert AuditEvent.objects.filter(action="alert_recipient.delete").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_reconciliations_alert_once(make_connector):
    from tests.concurrency import run_at_once

    make_connector("locmem_main")
    make_connector("locmem_alerts")
    AlertRecipient.objects.create(connector_id="locmem_alerts", recipient="oncall-ada")
    services.record_connector_error(SYSTEM, "locmem_main", ConnectorError("boom"))

    results, errors = run_at_once(lambda i: incidents.reconcile_incidents()["opened"], 4, timeout=30)

    assert errors == []
    assert sorted(results) == [0, 0, 0, 1]
    assert len(alerts_to("oncall-ada")) == 1
    assert AuditEvent.objects.filter(action="connector.incident.open").count() == 1
