"""/metrics: who may scrape it, and that its figures are the database's."""
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from connectors import services
from connectors.models import Delivery, Event
from connectors.platforms.base import ConnectorError
from tests.conftest import SYSTEM


def scrape(client, **extra):
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def samples(family, name=None, **labels):
    return {
        tuple(sorted((k, v) for k, v in s.labels.items() if k not in labels)): s.value
        for s in family.samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    }


SCRAPE_TOKEN = "scrape-" + "k" * 40


@pytest.fixture
def scraper(make_user):
    """A user holding only the explicit permission to scrape /metrics."""
    user = make_user("prometheus")
    user.user_permissions.add(Permission.objects.get(content_type__app_label="access", codename="view_metrics"))
    return user


@pytest.mark.django_db
def test_anonymous_gets_401_with_a_challenge():
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.django_db
def test_non_staff_gets_403_by_session_and_by_token(make_user, token_for, client):
    user = make_user("ada")
    client.force_login(user)
    assert client.get("/metrics").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for(user)}").status_code == 403


@pytest.mark.django_db
def test_staff_alone_may_not_scrape(make_user, token_for, client):
    """The figures name every connector: being staff (which any admin user is) is not enough."""
    staff = make_user("grace", staff=True)
    client.force_login(staff)
    assert client.get("/metrics").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for(staff)}").status_code == 403


@pytest.mark.django_db
def test_superusers_may_scrape_by_session_and_by_token(make_user, token_for, client):
    root = make_user("root", superuser=True)
    client.force_login(root)
    scrape(client)
    scrape(Client(), HTTP_AUTHORIZATION=f"Bearer {token_for(root)}")


@pytest.mark.django_db
def test_the_view_metrics_permission_may_scrape_directly_or_through_a_group(scraper, make_user, token_for, client):
    scrape(Client(), HTTP_AUTHORIZATION=f"Bearer {token_for(scraper)}")
    client.force_login(scraper)
    scrape(client)
    member = make_user("ops")
    group = Group.objects.create(name="monitoring")
    group.permissions.add(Permission.objects.get(codename="view_metrics"))
    member.groups.add(group)
    scrape(Client(), HTTP_AUTHORIZATION=f"Bearer {token_for(member)}")


@pytest.mark.django_db
def test_a_deactivated_holder_of_the_permission_is_refused(scraper, token_for, client):
    client.force_login(scraper)
    scraper.is_active = False
    scraper.save()
    assert client.get("/metrics").status_code in (401, 403)


@pytest.mark.django_db
def test_the_scrape_token(settings):
    settings.METRICS_SCRAPE_TOKEN = SCRAPE_TOKEN
    scrape(Client(), HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}")
    for wrong in (SCRAPE_TOKEN[:-1], SCRAPE_TOKEN + "x", SCRAPE_TOKEN.upper()):
        assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {wrong}").status_code == 401
    [row] = AuditEvent.objects.filter(action="auth.token")  # three refusals, one row for the window
    assert row.details["via"] == "metrics"
    assert SCRAPE_TOKEN not in str(row.details) and SCRAPE_TOKEN[:20] not in row.target_id


@pytest.mark.django_db
def test_without_a_configured_scrape_token_no_bearer_value_is_one(settings):
    settings.METRICS_SCRAPE_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


@pytest.mark.django_db
def test_a_bad_token_is_401_and_audited():
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer bct_nope")
    assert response.status_code == 401
    row = AuditEvent.objects.get(action="auth.token")
    assert row.result == "denied" and row.details == {"via": "metrics", "reason": "malformed", "ip": "127.0.0.1"}


@pytest.mark.django_db
def test_unauthenticated_scrapes_are_throttled_per_address(settings):
    settings.API_ANON_RATE_PER_MINUTE = 2
    assert [Client(REMOTE_ADDR="10.20.30.40").get("/metrics").status_code for _ in range(2)] == [401, 401]
    response = Client(REMOTE_ADDR="10.20.30.40").get("/metrics", HTTP_AUTHORIZATION="Bearer bct_nope")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert Client(REMOTE_ADDR="10.20.30.41").get("/metrics").status_code == 401


@pytest.mark.django_db
def test_the_ip_allowlist_is_a_further_requirement_not_a_grant(settings, scraper, token_for):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    settings.METRICS_SCRAPE_TOKEN = SCRAPE_TOKEN
    # An allowed address alone is not enough.
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 401
    scrape(Client(REMOTE_ADDR="10.1.2.3"), HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}")
    scrape(Client(REMOTE_ADDR="2001:db8::5"), HTTP_AUTHORIZATION=f"Bearer {token_for(scraper)}")
    # Valid credentials from elsewhere are refused; a forwarded header does not count.
    for extra in ({}, {"HTTP_X_FORWARDED_FOR": "10.1.2.3"}):
        response = Client(REMOTE_ADDR="192.168.1.1").get("/metrics", HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}",
                                                          **extra)
        assert response.status_code == 403


def test_a_short_scrape_token_fails_the_system_checks(settings):
    from django.core.checks import run_checks

    settings.METRICS_SCRAPE_TOKEN = "short"
    assert "access.E001" in {e.id for e in run_checks()}
    settings.METRICS_SCRAPE_TOKEN = SCRAPE_TOKEN
    assert "access.E001" not in {e.id for e in run_checks()}


@pytest.mark.django_db(transaction=True)
def test_staff_session_sees_real_figures(make_user, make_connector, client):
    make_connector("locmem_main")
    make_connector("locmem_down", config={"fail_with": "permanent"})
    make_connector("locmem_off", start=False)
    for i in range(3):
        services.send_message(SYSTEM, "locmem_main", f"ada-{i}", "hello")
    services.send_message(SYSTEM, "locmem_down", "bob", "hello")
    # Known latencies: 0.3 s and 7 s from queueing to the platform accepting it.
    sent = list(Delivery.objects.filter(connector_id="locmem_main").order_by("recipient"))
    assert all(d.status == "sent" for d in sent)
    now = timezone.now()
    for delivery, seconds in zip(sent, (0.3, 7, 0.05), strict=True):
        Delivery.objects.filter(pk=delivery.pk).update(created_at=now - timedelta(seconds=seconds), sent_at=now)
    services.record_connector_error(SYSTEM, "locmem_down", ConnectorError("boom"))
    # One event the live stream never got, committed 42 s ago.
    oldest = Event.objects.order_by("seq").first()
    Event.objects.filter(pushed_at__isnull=True).update(pushed_at=now)
    Event.objects.filter(seq=oldest.seq).update(pushed_at=None, time=now - timedelta(seconds=42))

    client.force_login(make_user("grace", superuser=True))
    families = scrape(client)

    latency = families["brain_message_latency_seconds"]
    main = samples(latency, "brain_message_latency_seconds_bucket", connector="locmem_main")
    assert main[(("le", "0.1"),)] == 1
    assert main[(("le", "0.25"),)] == 1
    assert main[(("le", "0.5"),)] == 2
    assert main[(("le", "5.0"),)] == 2
    assert main[(("le", "10.0"),)] == 3
    assert main[(("le", "+Inf"),)] == 3
    assert samples(latency, "brain_message_latency_seconds_count", connector="locmem_main") == {(): 3}
    [total] = samples(latency, "brain_message_latency_seconds_sum", connector="locmem_main").values()
    assert total == pytest.approx(7.35, abs=0.01)
    assert not samples(latency, connector="locmem_down")  # nothing ever sent there

    deliveries = families["brain_deliveries"]
    assert samples(deliveries, connector="locmem_main")[(("status", "sent"),)] == 3
    assert samples(deliveries, connector="locmem_main")[(("status", "failed"),)] == 0
    assert samples(deliveries, connector="locmem_down")[(("status", "failed"),)] == 1

    up = samples(families["brain_connector_up"])
    assert up[(("connector", "locmem_main"), ("kind", "locmem"), ("status", "CONNECTED"))] == 1
    assert up[(("connector", "locmem_down"), ("kind", "locmem"), ("status", "ERROR"))] == 0
    assert up[(("connector", "locmem_off"), ("kind", "locmem"), ("status", "STOPPED"))] == 0
    assert samples(families["brain_connector_health_failures"], connector="locmem_main") == {(("kind", "locmem"),): 0}

    assert families["brain_event_stream_unpushed"].samples[0].value == 1
    assert families["brain_event_stream_lag_seconds"].samples[0].value == pytest.approx(42, abs=5)
    assert families["brain_event_latest_seq"].samples[0].value == Event.objects.order_by("-seq").first().seq

    # Nothing about people or content in the exposition.
    body = client.get("/metrics").content.decode()
    assert "ada-0" not in body and "hello" not in body


@pytest.mark.django_db
def test_lag_is_zero_when_everything_was_pushed(scraper, client):
    Event.objects.all().delete()
    client.force_login(scraper)
    families = scrape(client)
    assert families["brain_event_stream_lag_seconds"].samples[0].value == 0
    assert families["brain_event_stream_unpushed"].samples[0].value == 0
