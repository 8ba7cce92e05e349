"""The front door `/`, the admin's "View site", the banner's real address and the first install's progress."""
import os
import re
import shutil
import stat
import subprocess

import pytest
from django.test import Client

from tests.conftest import BASE_DIR

LINKS = ('href="/admin/"', 'href="/dashboard/"', 'href="/preferences/"', 'href="/api/docs/"')


def _client(user=None):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.django_db
def test_anonymous_visitors_get_the_links_and_a_sign_in(settings):
    settings.DEBUG = True  # `/` used to be DEBUG's 404 page listing every URL pattern
    response = _client().get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert all(link in html for link in LINKS)
    assert 'id="sign-in" href="/accounts/login/"' in html
    assert "Signed in as" not in html and "/accounts/logout/" not in html
    assert "URLconf" not in html  # not the technical 404


@pytest.mark.django_db
def test_a_signed_in_person_sees_who_they_are_and_signs_out_back_to_the_front_door(make_user):
    client = _client(make_user("ada"))
    html = client.get("/").content.decode()
    assert all(link in html for link in LINKS)
    assert 'Signed in as <strong id="username">ada</strong>' in html
    assert 'id="sign-in"' not in html
    assert re.search(r'<form method="post" action="/accounts/logout/"', html)

    out = client.post("/accounts/logout/", {"next": "/"})
    assert out.status_code == 302 and out["Location"] == "/"
    after = client.get("/").content.decode()
    assert "Signed in as" not in after and 'id="sign-in"' in after


@pytest.mark.django_db
def test_the_sign_in_link_leads_to_the_end_user_login(make_user):
    make_user("ada", password="a-long-test-password")
    client = _client()
    href = re.search(r'id="sign-in" href="([^"]+)"', client.get("/").content.decode()).group(1)
    assert client.get(href).status_code == 200
    signed_in = client.post(href, {"username": "ada", "password": "a-long-test-password"})
    assert signed_in.status_code == 302
    assert "ada" in client.get("/").content.decode()


@pytest.mark.django_db
def test_the_front_door_is_never_cached_and_answers_only_reads():
    response = _client().get("/")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert _client().post("/").status_code == 405


@pytest.mark.django_db
def test_the_admin_view_site_link_goes_to_the_front_door(make_user):
    client = _client(make_user("root", superuser=True))
    page = client.get("/admin/")
    assert page.status_code == 200
    view_site = re.search(r'<a href="([^"]*)">View site</a>', page.content.decode())
    assert view_site is not None and view_site.group(1) == "/"
    front = client.get(view_site.group(1))
    assert front.status_code == 200 and 'href="/admin/"' in front.content.decode()


@pytest.mark.parametrize(
    "env,url",
    [
        ({"PORT": "8431"}, "http://127.0.0.1:8431/admin/"),
        ({"HOST": "localhost", "PORT": "9000"}, "http://localhost:9000/admin/"),
        ({"HOST": "0.0.0.0", "PORT": "8431"}, "http://127.0.0.1:8431/admin/"),  # noqa: S104 (not a bind)
        ({"HOST": "::1", "PORT": "8431"}, "http://[::1]:8431/admin/"),
        ({}, "http://127.0.0.1:8000/admin/"),
    ],
    ids=["port", "host-and-port", "wildcard-host", "ipv6", "defaults"],
)
def test_the_admin_banner_prints_the_address_the_server_runs_on(manage, env, url):
    # Empty HOST/PORT count as unset; the rest of the environment is the fixture's (the test database's URL).
    done = manage("ensure_admin", "--username", "first-admin", env={"HOST": "", "PORT": "", **env})
    assert done.returncode == 0, done.stderr
    assert f"Log in at {url}\n" in done.stdout


# The Makefile's targets run against a stub venv in a copy of the project's Makefile: the stub records how it was
# called, so the tests see what `make` runs and prints without installing or serving anything.
STUB = """#!/bin/sh
echo "$(basename "$0") $* | HOST=${HOST-unset} PORT=${PORT-unset}" >> "$(dirname "$0")/../../calls.log"
echo "Collecting stub-package"
"""


@pytest.fixture
def make_dir(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(BASE_DIR / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "daphne"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(stat.S_IRWXU)
    return tmp_path


def _make(directory, *args, env=None):
    clean = {key: value for key, value in os.environ.items() if key not in ("HOST", "PORT", "MAKEFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=directory, capture_output=True, text=True,
                          timeout=60, env={**clean, **(env or {})})


def test_make_run_passes_host_and_port_to_the_admin_banner_and_the_server(make_dir):
    done = _make(make_dir, "run", env={"PORT": "8431"})
    assert done.returncode == 0, done.stderr
    calls = (make_dir / "calls.log").read_text().splitlines()
    bootstrap = [call for call in calls if "manage.py bootstrap" in call]
    assert bootstrap == ["python manage.py bootstrap | HOST=127.0.0.1 PORT=8431"]
    assert any(call.startswith("daphne -b 127.0.0.1 -p 8431 ") for call in calls)
    assert "Serving on http://127.0.0.1:8431/" in done.stdout

    again = _make(make_dir, "run", "HOST=localhost", "PORT=9001")  # as make variables too
    assert again.returncode == 0, again.stderr
    assert "python manage.py bootstrap | HOST=localhost PORT=9001" in (make_dir / "calls.log").read_text()


def test_the_first_install_says_what_it_is_doing_and_lets_pip_show_each_package(make_dir):
    done = _make(make_dir, "install")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    step = "Installing the runtime requirements (requirements.txt; about 3 minutes the first time)…"
    assert step in lines
    # The step line comes before pip's own output, which is not silenced; bars are off outside a terminal (a CI log).
    assert lines.index(step) < lines.index("Collecting stub-package")
    pip = [call for call in (make_dir / "calls.log").read_text().splitlines() if "-m pip install" in call]
    assert len(pip) == 1 and " -q" not in pip[0] and "--progress-bar off" in pip[0]
    assert "-r requirements.txt" in pip[0]
    assert lines[-1] == "Runtime requirements installed."

    # Installed once: a second run does nothing and says nothing about installing.
    again = _make(make_dir, "install")
    assert again.returncode == 0 and "Installing" not in again.stdout


def test_the_development_install_says_what_it_is_doing(make_dir):
    done = _make(make_dir, "install-dev")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("Installing the development requirements (requirements-dev.txt;")
    assert "Collecting stub-package" in done.stdout
