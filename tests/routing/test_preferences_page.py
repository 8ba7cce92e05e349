"""The end-user page /preferences/: who may open it, the sign-in page for non-staff users, and
that it serves its own assets (no CDN, no inline script)."""
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db

ASSETS = ("preferences/preferences.js", "preferences/preferences.css", "preferences/favicon.svg")


def _client(user=None):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_anonymous_users_are_sent_to_the_end_user_login():
    response = _client().get("/preferences/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/preferences/"


def test_a_plain_user_signs_in_at_accounts_login_and_lands_on_the_page(make_user):
    make_user("ada", password="a-long-test-password")
    client = Client()
    form = client.get("/accounts/login/?next=/preferences/")
    assert form.status_code == 200
    html = form.content.decode()
    assert 'id="id_username"' in html and 'id="id_password"' in html and "csrfmiddlewaretoken" in html

    wrong = client.post("/accounts/login/", {"username": "ada", "password": "nope", "next": "/preferences/"})
    assert wrong.status_code == 200 and b'role="alert"' in wrong.content

    response = client.post("/accounts/login/", {"username": "ada", "password": "a-long-test-password",
                                                "next": "/preferences/"})
    assert response.status_code == 302 and response["Location"] == "/preferences/"
    assert client.get("/preferences/").status_code == 200
    # Without `next`, the login page also lands on the preferences page.
    client.post("/accounts/logout/")
    assert client.get("/preferences/").status_code == 302
    response = client.post("/accounts/login/", {"username": "ada", "password": "a-long-test-password"})
    assert response["Location"] == "/preferences/"


def test_the_login_refuses_an_external_next(make_user):
    make_user("ada", password="a-long-test-password")
    response = Client().post("/accounts/login/", {"username": "ada", "password": "a-long-test-password",
                                                   "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/preferences/"


def test_staff_pages_keep_the_admin_login():
    assert _client().get("/dashboard/")["Location"].startswith("/admin/login/")
    assert _client().get("/api/docs/")["Location"].startswith("/admin/login/")


def test_the_page_is_served_with_its_own_assets_and_config(make_user):
    response = _client(make_user("ada")).get("/preferences/")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert "csrftoken" in response.cookies  # the script sends it back as X-CSRFToken
    html = response.content.decode()
    for marker in ('id="identity-list"', 'id="pair-form"', 'id="pair-channel"', 'id="preference-list"',
                   'id="add-preference"', 'role="status"', 'aria-live="polite"', 'id="preferences-config"',
                   '"/api/v1/preferences/reorder/"', '"/api/v1/pairing-codes/channels/"', "Signed in as",
                   "/static/preferences/preferences.js", "/static/preferences/preferences.css"):
        assert marker in html, marker
    # No CDN: nothing from another origin; the only inline <script> is the JSON config.
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all("src=" in attrs or 'type="application/json"' in attrs for attrs in scripts), scripts
    for asset in ASSETS:
        assert finders.find(asset), asset


def test_the_assets_use_no_external_urls():
    for asset in ASSETS[:2]:
        text = open(finders.find(asset), encoding="utf-8").read()
        assert not re.search(r"https?://", text), asset
        assert "@import" not in text and "eval(" not in text
