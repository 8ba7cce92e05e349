"""Unauthenticated amplification (issue 14): clients without valid credentials are throttled per
address (429 with Retry-After), and refused tokens are audited once per window per (edge, address,
reason, real token prefix), with the repeats counted in the database and told in a summary row."""
import itertools
import secrets
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import close_old_connections
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from brain_connectors.access import refusals
from brain_connectors.access.models import RefusalTally
from connectors import quotas, tokens
from connectors.models import ApiToken
from tests.connectors.test_tokens import assert_error_shape, prefix_of

CONNECTORS = "/api/v1/connectors/"
_addresses = (f"172.16.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def new_ip():
    return next(_addresses)


def bogus():
    return f"bct_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def client_from(ip, token=None):
    client = APIClient(REMOTE_ADDR=ip)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def rows(action="auth.token"):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def close_windows():
    refusals.close_ended_windows(now=timezone.now() + timedelta(seconds=61))


@pytest.mark.django_db
def test_300_bogus_tokens_leave_one_row_and_a_count_and_are_throttled_after_the_limit(settings, monkeypatch):
    settings.API_ANON_RATE_PER_MINUTE = 60
    # The bucket's clock stands still, so that its refill (one a second) does not depend on how fast this runs.
    monkeypatch.setattr(quotas, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    ip = new_ip()
    responses = [client_from(ip, bogus()).get(CONNECTORS) for _ in range(300)]
    assert [r.status_code for r in responses] == [401] * 60 + [429] * 240
    throttled = responses[60:]
    error = assert_error_shape(throttled[0], 429)
    assert error["code"] == "rate_limited"
    assert throttled[0]["Retry-After"] == "1"  # one request's worth of refill

    [first] = rows()
    assert first.principal == "anonymous" and first.result == "denied"
    assert first.details == {"via": "api", "reason": "unknown", "ip": ip}
    assert rows("auth.token.repeated") == []

    close_windows()
    [summary] = rows("auth.token.repeated")
    assert summary.details["repeats"] == 299 and summary.details["throttled"] == len(throttled)
    assert summary.details["ip"] == ip and summary.details["reason"] == "unknown"
    assert RefusalTally.objects.count() == 0  # closed windows are removed
    assert AuditEvent.objects.filter(action__startswith="auth.").count() == 2


@pytest.mark.django_db
def test_no_credentials_are_throttled_per_address_without_audit_rows(settings, make_user, token_for):
    settings.API_ANON_RATE_PER_MINUTE = 5
    ip = new_ip()
    assert [client_from(ip).get(CONNECTORS).status_code for _ in range(5)] == [401] * 5
    response = client_from(ip).get(CONNECTORS)
    error = assert_error_shape(response, 429)
    assert error["code"] == "rate_limited" and int(response["Retry-After"]) >= 1
    # Another address is not affected, and neither is a valid token from the throttled address.
    assert client_from(new_ip()).get(CONNECTORS).status_code == 401
    assert client_from(ip, token_for(make_user("alice"))).get(CONNECTORS).status_code == 200
    assert AuditEvent.objects.filter(action__startswith="auth.").count() == 0


@pytest.mark.django_db
def test_the_anonymous_bucket_is_shared_by_missing_and_bad_tokens(settings):
    settings.API_ANON_RATE_PER_MINUTE = 3
    ip = new_ip()
    assert client_from(ip).get(CONNECTORS).status_code == 401
    assert client_from(ip, bogus()).get(CONNECTORS).status_code == 401
    assert client_from(ip, "not-even-a-token").get(CONNECTORS).status_code == 401
    assert client_from(ip, bogus()).get(CONNECTORS).status_code == 429
    assert client_from(ip).get(CONNECTORS).status_code == 429


@pytest.mark.django_db
def test_ipv6_clients_are_throttled_per_64_network(settings):
    settings.API_ANON_RATE_PER_MINUTE = 2
    for i in range(2):
        assert client_from(f"2001:db8:1:2::{i + 1}").get(CONNECTORS).status_code == 401
    assert client_from("2001:db8:1:2:ffff::9").get(CONNECTORS).status_code == 429
    assert client_from("2001:db8:1:3::1").get(CONNECTORS).status_code == 401


@pytest.mark.django_db
def test_random_prefixes_do_not_defeat_the_count_but_real_prefixes_keep_their_own_row(make_user, token_for):
    ip = new_ip()
    for _ in range(20):
        assert client_from(ip, bogus()).get(CONNECTORS).status_code == 401
    assert len(rows()) == 1

    live = token_for(make_user("alice"))
    forged = f"bct_{prefix_of(live)}_{secrets.token_urlsafe(32)}"  # someone guessing a real token's secret
    expired = token_for(make_user("bob"))
    ApiToken.objects.filter(prefix=prefix_of(expired)).update(expires_at=timezone.now() - timedelta(seconds=1))
    for token in (forged, forged, expired, expired, expired):
        assert client_from(ip, token).get(CONNECTORS).status_code == 401
    assert [(r.target_id, r.details["reason"]) for r in rows()[1:]] == [
        (prefix_of(live), "unknown"), (prefix_of(expired), "expired"),
    ]
    close_windows()
    counts = {(r.target_id, r.details["reason"]): r.details["repeats"] for r in rows("auth.token.repeated")}
    assert counts == {(rows()[0].target_id, "unknown"): 19, (prefix_of(live), "unknown"): 1,
                      (prefix_of(expired), "expired"): 2}


@pytest.mark.django_db
def test_a_new_window_first_writes_the_summary_of_the_last(settings):
    ip = new_ip()
    for _ in range(3):
        client_from(ip, "garbage").get(CONNECTORS)
    RefusalTally.objects.update(window_start=timezone.now() - timedelta(seconds=61))
    client_from(ip, "garbage").get(CONNECTORS)
    assert [(r.action, r.details.get("repeats")) for r in AuditEvent.objects.filter(action__startswith="auth.token")
            .order_by("id")] == [("auth.token", None), ("auth.token.repeated", 2), ("auth.token", None)]


@pytest.mark.django_db
def test_a_window_without_repeats_closes_without_a_summary():
    client_from(new_ip(), "garbage").get(CONNECTORS)
    close_windows()
    assert rows("auth.token.repeated") == [] and RefusalTally.objects.count() == 0


@pytest.mark.django_db
def test_the_periodic_task_closes_ended_windows_only():
    from brain_connectors.access.tasks import close_refusal_windows

    old, fresh = new_ip(), new_ip()
    for _ in range(2):
        client_from(old, "garbage").get(CONNECTORS)
        client_from(fresh, "garbage").get(CONNECTORS)
    RefusalTally.objects.filter(details__ip=old).update(window_start=timezone.now() - timedelta(seconds=61))
    close_refusal_windows.delay()
    [summary] = rows("auth.token.repeated")
    assert summary.details["ip"] == old and summary.details["repeats"] == 1
    assert list(RefusalTally.objects.values_list("details__ip", flat=True)) == [fresh]


@pytest.mark.django_db(transaction=True)
def test_concurrent_refusals_are_all_counted():
    """The count lives in one database row updated in place, so every process and thread adds to it."""
    errors = []

    def refuse(n):
        try:
            for _ in range(n):
                try:
                    tokens.authenticate("garbage")
                except tokens.TokenRejected as exc:
                    tokens.record_rejection(exc, via="api", ip="192.0.2.1")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=refuse, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(rows()) == 1
    close_windows()
    [summary] = rows("auth.token.repeated")
    assert summary.details["repeats"] == 99
