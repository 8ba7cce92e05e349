"""The admin's connector form as a person meets it: the kind first, then one field per setting, one clear error each."""
import re

import pytest
from django.contrib.messages import get_messages

from audit.models import AuditEvent
from connectors.models import Connector
from connectors.registry.kinds import available_kinds
from tests.connectors.admin_kinds import REQUIRED, VALID
from tests.connectors.url_guard_support import PUBLIC_ADDRESS, dns  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/connectors/connector/add/"


@pytest.fixture
def boss(client, make_user):
    client.force_login(make_user("boss", superuser=True))
    return client


def base(kind, **extra):
    return {"id": f"{kind}_admin", "kind": kind, "display_name": f"{kind} via admin", "quota_per_minute": "",
            "recipient_quota_per_minute": "", "config": "", "new_credentials": "", **extra}


def errors_of(page):
    return re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', page, re.S)


def test_every_kind_is_covered():
    assert set(VALID) == set(available_kinds()) == set(REQUIRED)


def test_the_add_page_asks_for_the_kind_first(boss):
    page = boss.get(ADD_URL).content.decode()
    assert 'name="kind"' in page and "Next" in page
    assert "config__" not in page and "new_credentials" not in page


@pytest.mark.parametrize("kind", sorted(VALID))
def test_the_add_form_shows_the_kinds_fields_with_help(boss, kind):
    config, credentials, _ = VALID[kind]
    page = boss.get(f"{ADD_URL}?kind={kind}").content.decode()
    for name in [*config, *credentials]:
        assert f'name="{name}"' in page, name
    assert ">null<" not in page and "null</textarea>" not in page
    for name in credentials:  # secrets are typed into password inputs
        assert re.search(rf'<input type="password" name="{name}"', page), name
    assert "Add connector: " in page and f"({kind})</h1>" in page
    if kind == "email":
        assert "The address messages are sent from." in page and "brain@example.org" in page


@pytest.mark.parametrize("kind", sorted(VALID))
def test_posting_valid_fields_creates_the_connector(boss, kind, dns):  # noqa: F811
    dns["hooks.example"] = [PUBLIC_ADDRESS]  # the webhook's URL must resolve to a public address
    config, credentials, (stored_config, stored_credentials) = VALID[kind]
    r = boss.post(f"{ADD_URL}?kind={kind}", base(kind, **config, **credentials))
    assert r.status_code == 302, errors_of(r.content.decode())
    connector = Connector.objects.filter(pk=f"{kind}_admin").first()
    assert connector is not None, [m.message for m in get_messages(r.wsgi_request)]
    assert connector.kind == kind and connector.config == stored_config
    assert connector.get_credentials() == stored_credentials
    assert AuditEvent.objects.filter(action="connector.register", target_id=connector.pk, result=AuditEvent.Result.SUCCESS).exists()
    page = boss.get(f"/admin/connectors/connector/{connector.pk}/change/").content.decode()
    for secret in stored_credentials.values():
        assert secret not in page


@pytest.mark.parametrize("kind", sorted(VALID))
def test_empty_fields_give_one_plain_error_per_required_field(boss, kind):
    r = boss.post(f"{ADD_URL}?kind={kind}", base(kind))
    page = r.content.decode()
    if not REQUIRED[kind]:
        assert r.status_code == 302, errors_of(page)
        return
    assert r.status_code == 200 and not Connector.objects.exists()
    errors = errors_of(page)
    assert len(errors) == len(REQUIRED[kind]), errors
    for label in REQUIRED[kind]:
        assert page.count(f"{label}: this field is required.") == 1, label
    assert "is a required property" not in page and "(root)" not in page


def test_the_email_example_from_the_issue(boss):
    page = boss.post(f"{ADD_URL}?kind=email", base("email")).content.decode()
    assert "From address: this field is required." in page
    assert "(root): &#x27;from_address&#x27; is a required property" not in page


@pytest.mark.parametrize(
    "kind, field, value, message",
    [
        ("sms", "config__from_number", "not a number!", "From number: enter a value like +15550100"),
        ("slack", "config__timeout", "500", "Timeout: enter a number from 1 to 120."),
        ("email", "config__from_address", "nobody", "From address:"),
        ("locmem", "config", "{not json", "Enter a valid JSON"),
    ],
)
def test_invalid_input_gives_exactly_one_error(boss, kind, field, value, message):
    config, credentials, _ = VALID[kind]
    r = boss.post(f"{ADD_URL}?kind={kind}", base(kind, **{**config, **credentials, field: value}))
    page = r.content.decode()
    assert r.status_code == 200 and not Connector.objects.exists()
    errors = errors_of(page)
    assert len(errors) == 1 and message in errors[0], errors


def test_a_wrong_secret_is_refused_without_echoing_it(boss):
    config, credentials, _ = VALID["telegram"]
    r = boss.post(f"{ADD_URL}?kind=telegram", base("telegram", **config, **{"credentials__bot_token": "leaky-secret"}))
    page = r.content.decode()
    assert len(errors_of(page)) == 1 and "Bot token:" in page and "leaky-secret" not in page


def test_editing_keeps_credentials_left_empty_and_changes_one_typed(boss, make_connector):
    sid = "AC" + "fedcba9876543210" * 2
    make_connector("sms_edit", kind="sms", start=False, config={"from_number": "+15550100"},
                   credentials={"account_sid": sid, "auth_token": "OldTok3nValue0123456789abcdefXYZ"})
    url = "/admin/connectors/connector/sms_edit/change/"
    page = boss.get(url).content.decode()
    assert 'value="+15550100"' in page and "OldTok3nValue0123456789abcdefXYZ" not in page and sid not in page
    form = {"display_name": "Texts", "quota_per_minute": "", "recipient_quota_per_minute": "", "config": "",
            "new_credentials": "", "config__from_number": "+15550111", "credentials__account_sid": "",
            "credentials__auth_token": ""}
    r = boss.post(url, form)
    assert r.status_code == 302, errors_of(r.content.decode())
    connector = Connector.objects.get(pk="sms_edit")
    assert connector.config == {"from_number": "+15550111"}
    assert connector.get_credentials() == {"account_sid": sid, "auth_token": "OldTok3nValue0123456789abcdefXYZ"}
    r = boss.post(url, {**form, "credentials__auth_token": "NewTok3nValue0123456789abcdefXYZ"})
    assert r.status_code == 302
    assert Connector.objects.get(pk="sms_edit").get_credentials() == {"account_sid": sid, "auth_token": "NewTok3nValue0123456789abcdefXYZ"}


def test_the_credentials_column_says_not_needed_where_none_are(boss, make_connector):
    make_connector("plain_cli", kind="cli", start=False)
    make_connector("no_key", kind="locmem", start=False)
    page = boss.get("/admin/connectors/connector/").content.decode()
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr>.*?>(plain_cli|no_key)</a>(.*?)</tr>', page, re.S)}
    assert "not needed" in rows["plain_cli"]
    assert "not needed" not in rows["no_key"] and "icon-no" in rows["no_key"]
