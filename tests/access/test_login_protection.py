"""Login brute force (issue 14): django-axes locks an account after AXES_FAILURE_LIMIT failures from
anywhere, and an address after as many failures on any accounts; the right password does not get
through a lock. Failed logins and lockouts are audited, never with the password, and attempts made
during a lockout are counted rather than written one row each."""
import itertools
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.db import connections
from django.test import AsyncClient, Client
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.access import refusals
from tests.connectors.test_tokens import whole_database_text

PASSWORD = "the-right-password-42"
WRONG = "a-wrong-password-77"
LOGIN_URLS = ["/accounts/login/", "/admin/login/"]
_addresses = (f"10.{i // 250}.{i % 250}.{7}" for i in itertools.count(1))


def new_ip():
    """A fresh client address, so no test shares lockout state with another."""
    return next(_addresses)


def post_login(url, username, password, ip, **extra):
    client = Client(REMOTE_ADDR=ip)
    response = client.post(url, {"username": username, "password": password}, **extra)
    return client, response


def signed_in(client):
    return "_auth_user_id" in client.session


def assert_locked_page(response):
    assert response.status_code == 429, response.content[:300]
    assert response["Retry-After"] == str(15 * 60)
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "Too many failed sign-in attempts" in text and "15 minutes" in text


@pytest.fixture
def ada(make_user):
    # Staff, so that the right password also signs in at /admin/login/.
    return make_user("ada", staff=True, password=PASSWORD)


@pytest.mark.django_db
@pytest.mark.parametrize("url", LOGIN_URLS)
def test_five_wrong_passwords_lock_the_account_and_the_right_one_is_refused(url, ada):
    ip = new_ip()
    statuses = [post_login(url, "ada", WRONG, ip)[1].status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]  # the fifth failure starts the lockout

    client, response = post_login(url, "ada", PASSWORD, ip)
    assert_locked_page(response)
    assert not signed_in(client)


@pytest.mark.django_db
@pytest.mark.parametrize("url", LOGIN_URLS)
def test_the_account_lock_holds_from_every_address(url, ada):
    for _ in range(5):  # a distributed attack: one guess from each of five addresses
        post_login(url, "ada", WRONG, new_ip())
    client, response = post_login(url, "ada", PASSWORD, new_ip())
    assert_locked_page(response)
    assert not signed_in(client)


@pytest.mark.django_db
@pytest.mark.parametrize("url", LOGIN_URLS)
def test_an_address_is_locked_across_usernames(url, ada, make_user):
    make_user("grace", staff=True, password=PASSWORD)
    ip = new_ip()
    for i in range(5):  # password spraying: one guess at each of five accounts
        post_login(url, f"someone-{i}", WRONG, ip)
    client, response = post_login(url, "grace", PASSWORD, ip)
    assert_locked_page(response)
    assert not signed_in(client)
    # Neither grace nor ada is locked as an account: from another address they sign in.
    client, response = post_login(url, "grace", PASSWORD, new_ip())
    assert response.status_code == 302 and signed_in(client)


@pytest.mark.django_db
def test_a_forged_x_forwarded_for_does_not_escape_the_address_lock(ada):
    ip = new_ip()
    for i in range(5):
        post_login("/accounts/login/", f"someone-{i}", WRONG, ip, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    _, response = post_login("/accounts/login/", "ada", PASSWORD, ip, HTTP_X_FORWARDED_FOR="203.0.113.99")
    assert_locked_page(response)


@pytest.mark.django_db
def test_behind_a_trusted_proxy_clients_are_told_apart_by_x_forwarded_for(ada, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = new_ip()
    for i in range(5):  # the address the proxy saw is the last one in X-Forwarded-For
        post_login("/accounts/login/", f"someone-{i}", WRONG, proxy, HTTP_X_FORWARDED_FOR=f"1.2.3.4, 198.51.100.{i}, 198.51.100.7")
    _, response = post_login("/accounts/login/", "ada", PASSWORD, proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert_locked_page(response)
    client, response = post_login("/accounts/login/", "ada", PASSWORD, proxy, HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert response.status_code == 302 and signed_in(client)


@pytest.mark.django_db
def test_the_lock_lifts_after_the_cool_off(ada):
    ip = new_ip()
    for _ in range(5):
        post_login("/accounts/login/", "ada", WRONG, ip)
    assert post_login("/accounts/login/", "ada", PASSWORD, ip)[1].status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    client, response = post_login("/accounts/login/", "ada", PASSWORD, ip)
    assert response.status_code == 302 and signed_in(client)


@pytest.mark.django_db
def test_attempts_during_a_lockout_do_not_extend_it_or_grow_the_attempt_rows(ada):
    ip = new_ip()
    for _ in range(5):
        post_login("/accounts/login/", "ada", WRONG, ip)
    before = list(AccessAttempt.objects.values_list("failures_since_start", "attempt_time", "post_data"))
    for _ in range(10):
        assert post_login("/accounts/login/", "ada", WRONG, ip)[1].status_code == 429
    assert list(AccessAttempt.objects.values_list("failures_since_start", "attempt_time", "post_data")) == before


@pytest.mark.django_db
def test_an_administrator_unlocks_an_account_and_an_address(ada):
    for _ in range(5):
        post_login("/accounts/login/", "ada", WRONG, new_ip())
    assert post_login("/accounts/login/", "ada", PASSWORD, new_ip())[1].status_code == 429
    call_command("axes_reset_username", "ada")
    assert post_login("/accounts/login/", "ada", PASSWORD, new_ip())[1].status_code == 302

    ip = new_ip()
    for i in range(5):
        post_login("/accounts/login/", f"someone-{i}", WRONG, ip)
    assert post_login("/accounts/login/", "ada", PASSWORD, ip)[1].status_code == 429
    call_command("axes_reset_ip", ip)
    assert post_login("/accounts/login/", "ada", PASSWORD, ip)[1].status_code == 302


@pytest.mark.django_db
def test_a_successful_login_does_not_wipe_the_address_count(ada, make_user):
    """With reset-on-success, an attacker holding any account could sign in to it between guesses
    and erase the failures counted against their address and against the account they attack."""
    make_user("mallory", staff=True, password="mallory-own-password")
    ip = new_ip()
    for _ in range(4):
        post_login("/accounts/login/", "ada", WRONG, ip)
    assert post_login("/accounts/login/", "mallory", "mallory-own-password", ip)[1].status_code == 302
    assert post_login("/accounts/login/", "ada", WRONG, ip)[1].status_code == 429


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_page_under_asgi():
    """daphne runs the middleware chain asynchronously (AxesMiddleware.__acall__), a different path."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    await sync_to_async(get_user_model().objects.create_user)("ada", password=PASSWORD)
    client = AsyncClient(REMOTE_ADDR=new_ip())
    try:
        for _ in range(5):
            await client.post("/accounts/login/", {"username": "ada", "password": WRONG})
        assert_locked_page(await client.post("/accounts/login/", {"username": "ada", "password": PASSWORD}))
    finally:
        # The views ran on asgiref's thread: its connection would keep PostgreSQL's test database busy.
        await sync_to_async(connections.close_all)()


# --- audit -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", LOGIN_URLS)
def test_failed_logins_are_audited_with_username_and_address_never_the_password(url, ada):
    ip = new_ip()
    for username in ("ada", "ada", "nobody"):
        post_login(url, username, WRONG, ip)
    rows = list(AuditEvent.objects.filter(action="auth.login_failed").order_by("id"))
    assert [(r.principal, r.result, r.target_type, r.target_id) for r in rows] == [
        ("anonymous", "denied", "user", "ada"), ("anonymous", "denied", "user", "ada"),
        ("anonymous", "denied", "user", "nobody"),
    ]
    assert [r.details for r in rows] == [
        {"via": "login", "path": url, "ip": ip, "reason": "bad_credentials", "user_exists": True},
        {"via": "login", "path": url, "ip": ip, "reason": "bad_credentials", "user_exists": True},
        {"via": "login", "path": url, "ip": ip, "reason": "bad_credentials", "user_exists": False},
    ]
    assert WRONG not in whole_database_text()  # not in the audit log, nor in django-axes' tables


@pytest.mark.django_db
def test_a_lockout_is_audited_once_and_attempts_during_it_are_counted(ada):
    ip = new_ip()
    for _ in range(5):
        post_login("/accounts/login/", "ada", WRONG, ip)
    [lockout] = AuditEvent.objects.filter(action="auth.lockout")
    assert lockout.target_id == "ada" and lockout.result == "denied"
    assert lockout.details == {
        "via": "login", "path": "/accounts/login/", "ip": ip, "locked": ["ip_address", "username"],
        "failure_limit": 5, "cooloff_seconds": 900,
    }
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == 5

    last_before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    for i in range(30):  # the right password among them: refused without being checked
        post_login("/accounts/login/", "ada", PASSWORD if i % 3 else WRONG, ip)
    new = list(AuditEvent.objects.filter(id__gt=last_before).order_by("id"))
    assert [(r.action, r.details["reason"]) for r in new] == [("auth.login_failed", "locked_out")]
    assert AuditEvent.objects.filter(action="auth.lockout").count() == 1

    refusals.close_ended_windows(now=timezone.now() + timedelta(seconds=61))
    [summary] = AuditEvent.objects.filter(action="auth.login_failed.repeated")
    assert summary.target_id == "ada" and summary.details["repeats"] == 29 and summary.details["ip"] == ip
    assert PASSWORD not in whole_database_text() and WRONG not in whole_database_text()


@pytest.mark.django_db
def test_login_without_a_request_still_works_and_a_failure_is_audited(ada):
    """Code (and the test client's login()) may call authenticate() without a request: no lockout
    applies there, since no HTTP client can reach it."""
    assert Client().login(username="ada", password=PASSWORD)
    assert authenticate(username="ada", password=WRONG) is None
    [row] = AuditEvent.objects.filter(action="auth.login_failed")
    assert row.target_id == "ada" and row.details["ip"] is None and row.details["via"] == "login"


def test_the_lockout_backend_must_come_first(settings):
    """A password backend before it would accept the right password of a locked account."""
    from django.core.checks import run_checks

    assert "access.E002" not in {e.id for e in run_checks()}
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend", "brain_connectors.access.login.LockoutBackend"]
    assert "access.E002" in {e.id for e in run_checks()}
