"""/preferences/ speaks plainly (issue 19): refusals in words rather than field names, a way back in
once signed out, and the emailed link's page telling an open /preferences/ tab that it paired."""
import json
import re

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from routing.models import ChannelIdentity

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada_client(make_user, make_connector):
    make_connector("cli_main", kind="cli")
    ada = make_user("ada")
    identity = ChannelIdentity.objects.create(user=ada, connector_id="cli_main", address="ada",
                                               verified_at=timezone.now())
    client = Client()
    client.force_login(ada)
    return client, identity


@pytest.mark.parametrize(
    "body, message",
    [
        ({"quiet_start": "22:00"}, "Quiet hours: give both a start and an end time, or neither."),
        ({"quiet_start": "08:00", "quiet_end": "08:00"}, "Quiet hours: the start and end times must differ."),
        ({"quiet_start": "7pm", "quiet_end": "08:00"},
         "Quiet hours: give the start as a time such as 22:00, or leave it empty."),
        ({"timezone": "Mars/Olympus_Mons"}, "Time zone: choose one such as Europe/London or UTC."),
        ({"notification_types": ["spam"]}, "Use it for: choose from standard, urgent, digest."),
    ],
)
def test_refusals_are_in_plain_words_and_details_keep_the_field_names(ada_client, body, message):
    client, identity = ada_client
    response = client.post("/api/v1/preferences/", json.dumps({"identity": identity.pk, **body}),
                           content_type="application/json", HTTP_X_CSRFTOKEN=client.cookies.get("csrftoken", ""))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["message"] == message
    assert not re.search(r"\b[a-z]+_[a-z]+\b", error["message"])  # no quiet_start, notification_types, …
    assert set(error["details"]) & {"quiet_hours", "quiet_start", "timezone", "notification_types"}


def test_the_page_offers_a_way_back_in_once_signed_out(ada_client):
    client, _ = ada_client
    html = client.get("/preferences/").content.decode()
    assert re.search(r'<p id="signed-out"[^>]*hidden>.*<a href="/accounts/login/\?next=/preferences/">Sign in again</a>',
                     html, re.S)


@pytest.mark.django_db(transaction=True)  # the link is mailed after commit
def test_the_confirmed_link_page_tells_the_preferences_tab(make_user, make_connector):
    make_connector("mail", kind="email", config={"from_address": "brain@example.org"})
    client = Client()
    client.force_login(make_user("ada"))
    page = client.get("/preferences/").content.decode()
    config = json.loads(re.search(r'<script id="preferences-config" type="application/json">(.*?)</script>',
                                  page, re.S).group(1))
    client.post("/api/v1/pairing-codes/", json.dumps({"connector": "mail", "address": "ada@example.org"}),
                content_type="application/json")
    path = re.search(r"https?://[^/\s]+(/preferences/pair/[A-Z0-9]{8}/)", mail.outbox[0].body).group(1)

    confirm = client.get(path).content.decode()
    assert "pair_link.js" not in confirm  # nothing paired yet: nothing to tell
    done = client.post(path).content.decode()
    script = re.search(r'<script src="[^"]*/preferences/pair_link\.js" data-channel="([^"]+)" defer>', done)
    assert script and script.group(1) == config["pairedChannel"]
