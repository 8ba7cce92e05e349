"""The outbound-URL guard (issue 14, item 3): which addresses are refused, what
BRAIN_ALLOW_PRIVATE_URLS and BRAIN_URL_ALLOWED_HOSTS open, and the refusals when a URL is saved:
the webhook kind's `url`, `api_base_url` (Telegram, Twilio), subscription URLs, BRAIN_URL.

Nothing here connects anywhere: names resolve through a stub (`dns`), so a name can "resolve" to
169.254.169.254 without any packet leaving the machine."""
import socket

import pytest
from django.core.checks import Error, Warning
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from audit.models import AuditEvent
from brain_connectors import checks
from brain_connectors.shared import url_guard
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector
from tests.conftest import SYSTEM
from tests.connectors import url_guard_support
from tests.connectors.url_guard_support import PUBLIC_ADDRESS

SECRET = "a-long-enough-plain-secret"
TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": "tw_test_token_0123456789abcdef"}


strict = url_guard_support.strict
dns = url_guard_support.dns


# --- which addresses ---------------------------------------------------------------------------

ALWAYS_REFUSED = [
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "0.0.0.0",  # noqa: S104 (an address to refuse, not one to bind)
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "fe80::1",
    "ff02::1",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 around 169.254.169.254
    "2002:a00:1::",  # 6to4 around 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 around 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    "64:ff9b::c0a8:101",  # NAT64 around 192.168.1.1
    "64:ff9b:1::808:808",  # local-use NAT64: where its IPv4 address sits depends on the translator
    "64:ff9b:1:7f00:0:100::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "::ffff:169.254.169.254",  # IPv4-mapped metadata
]
PRIVATE = [
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.10",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "198.18.0.1",  # benchmarking
    "2001:db8::1",  # documentation
]
PUBLIC = [PUBLIC_ADDRESS, "8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808", "::ffff:8.8.8.8"]


def literal(address):
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("address", ALWAYS_REFUSED + PRIVATE)
def test_internal_addresses_are_refused_by_default_and_the_refusal_names_the_setting(strict, address):
    with pytest.raises(url_guard.UnsafeURL) as caught:
        url_guard.check_url(f"http://{literal(address)}:8080/hook")
    assert "BRAIN_ALLOW_PRIVATE_URLS" in str(caught.value)


@pytest.mark.parametrize("address", PRIVATE)
def test_the_setting_allows_loopback_private_cgnat_and_ula(strict, address):
    strict.BRAIN_ALLOW_PRIVATE_URLS = True
    assert url_guard.check_url(f"http://{literal(address)}/hook")


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
def test_the_setting_never_allows_link_local_multicast_reserved_or_embedded_internal_ipv4(strict, address):
    strict.BRAIN_ALLOW_PRIVATE_URLS = True
    with pytest.raises(url_guard.UnsafeURL, match="always refused"):
        url_guard.check_url(f"https://{literal(address)}/hook")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(strict, address):
    assert url_guard.check_url(f"https://{literal(address)}/hook")


def test_a_name_is_judged_by_every_address_it_resolves_to(strict, dns):
    dns["public.example"] = [PUBLIC_ADDRESS]
    dns["mixed.example"] = [PUBLIC_ADDRESS, "169.254.169.254"]
    dns["rebound.example"] = ["2002:7f00:1::"]
    assert url_guard.check_url("https://public.example/x") == [PUBLIC_ADDRESS]
    for name in ("mixed.example", "rebound.example"):
        with pytest.raises(url_guard.UnsafeURL):
            url_guard.check_url(f"https://{name}/x")
    # Other spellings of 127.0.0.1 go through the same resolution.
    for spelling in ("2130706433", "0x7f.1", "127.1"):
        with pytest.raises(url_guard.UnsafeURL, match="loopback"):
            url_guard.check_url(f"http://{spelling}/x")


def test_allowed_host_names_may_be_private_but_never_link_local(strict, dns):
    dns["brain.internal"] = ["10.0.0.7"]
    dns["metadata.internal"] = ["169.254.169.254"]
    strict.BRAIN_URL_ALLOWED_HOSTS = ["brain.internal", "metadata.internal"]
    assert url_guard.check_url("http://brain.internal:8000/brain") == ["10.0.0.7"]
    dns["brain.internal."] = ["10.0.0.8"]
    assert url_guard.check_url("http://Brain.Internal./brain") == ["10.0.0.8"]  # the same name
    with pytest.raises(url_guard.UnsafeURL, match="always refused"):
        url_guard.check_url("http://metadata.internal/")
    with pytest.raises(url_guard.UnsafeURL):
        url_guard.check_url("http://10.0.0.7/")  # the address itself is not allowed, only the name


@pytest.mark.parametrize("url", ["ftp://example.org/", "https://user:pw@example.org/", "https://exämple.org/",
                                 "https://example.org/#x", "https://example.org:99999/", "http:///x"])
def test_malformed_urls_are_refused_before_any_lookup(strict, url, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("no DNS lookup expected"))
    with pytest.raises(url_guard.UnsafeURL):
        url_guard.check_url(url)


def test_origin_keeps_scheme_host_and_port_only():
    assert url_guard.origin("https://Bot.Example.NET:8443/bot123:AAA/x?token=abc") == "https://bot.example.net:8443"
    assert url_guard.origin("http://[::1]/x") == "http://[::1]"
    assert url_guard.origin(None) is None


# --- when a URL is saved -----------------------------------------------------------------------


def register(id, kind, config, credentials):
    return services.register_connector(SYSTEM, id=id, kind=kind, display_name=id, config=config,
                                       credentials=credentials)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kind, config, credentials",
    [
        ("webhook", {"url": "http://169.254.169.254/latest/meta-data/"}, {"signing_secret": SECRET}),
        ("webhook", {"url": "http://127.0.0.1:9/hook"}, {"signing_secret": SECRET}),
        ("webhook", {"url": "http://[2002:7f00:1::]/hook"}, {"signing_secret": SECRET}),
        ("webhook", {"url": "https://metadata.example/hook"}, {"signing_secret": SECRET}),
        ("telegram", {"mode": "polling", "api_base_url": "http://10.0.0.5:8081"}, {"bot_token": TOKEN}),
        ("telegram", {"mode": "polling", "api_base_url": "https://metadata.example"}, {"bot_token": TOKEN}),
        ("sms", {"from_number": "+14155550100", "api_base_url": "http://127.0.0.1:9"}, TWILIO),
        ("whatsapp", {"from_number": "+14155550100", "api_base_url": "https://[64:ff9b::a9fe:a9fe]"}, TWILIO),
        ("voice", {"from_number": "+14155550100", "api_base_url": "https://100.64.0.1"}, TWILIO),
    ],
)
def test_connector_destinations_are_refused_when_saved(strict, dns, kind, config, credentials):
    dns["metadata.example"] = ["169.254.169.254"]
    with pytest.raises(ValidationFailed) as caught:
        register("guarded", kind, config, credentials)
    assert caught.value.code == "unsafe_url"
    assert "BRAIN_ALLOW_PRIVATE_URLS" in caught.value.message + str(caught.value.details)
    assert not Connector.objects.filter(pk="guarded").exists()
    (row,) = AuditEvent.objects.filter(action="connector.register")
    assert row.result == "failure" and row.details["error"] == "unsafe_url"


@pytest.mark.django_db
def test_credentials_never_travel_over_plain_http_to_a_public_host(strict, dns):
    dns["bot-api.example"] = [PUBLIC_ADDRESS]
    with pytest.raises(ValidationFailed) as caught:
        register("tg_main", "telegram", {"mode": "polling", "api_base_url": "http://bot-api.example"}, {"bot_token": TOKEN})
    assert "https://" in caught.value.message + str(caught.value.details)
    register("tg_main", "telegram", {"mode": "polling", "api_base_url": "https://bot-api.example"}, {"bot_token": TOKEN})
    # A Bot API server on the local network may speak plain http when private addresses are allowed.
    strict.BRAIN_ALLOW_PRIVATE_URLS = True
    register("tg_lan", "telegram", {"mode": "polling", "api_base_url": "http://10.0.0.5:8081"}, {"bot_token": TOKEN})
    # Message content (the webhook kind) may: that is what its receivers often run.
    register("hook_main", "webhook", {"url": "http://bot-api.example/hook"}, {"signing_secret": SECRET})


@pytest.mark.django_db
def test_a_host_that_does_not_resolve_is_refused_when_saved(strict):
    with pytest.raises(ValidationFailed, match="does not resolve"):
        register("hook_main", "webhook", {"url": "https://no-such-host.invalid/hook"}, {"signing_secret": SECRET})


@pytest.mark.django_db
def test_the_setting_allows_loopback_destinations(strict):
    strict.BRAIN_ALLOW_PRIVATE_URLS = True
    register("hook_main", "webhook", {"url": "http://127.0.0.1:9/hook"}, {"signing_secret": SECRET})
    with pytest.raises(ValidationFailed):
        services.update_connector(SYSTEM, "hook_main", config={"url": "http://169.254.169.254/"})
    assert Connector.objects.get(pk="hook_main").config["url"] == "http://127.0.0.1:9/hook"


@pytest.mark.django_db
def test_a_rest_patch_to_an_internal_url_is_a_400_naming_the_setting(strict, make_user, api, token_for, dns):
    dns["hooks.example"] = [PUBLIC_ADDRESS]
    register("hook_main", "webhook", {"url": "https://hooks.example/in"}, {"signing_secret": SECRET})
    root = api(token_for(make_user("root", superuser=True)))
    r = root.patch("/api/v1/connectors/hook_main/", {"config": {"url": "http://169.254.169.254/"}}, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "unsafe_url" and "BRAIN_ALLOW_PRIVATE_URLS" in error["details"]["config"]["url"]
    assert Connector.objects.get(pk="hook_main").config["url"] == "https://hooks.example/in"


@pytest.mark.django_db(transaction=True)
def test_subscription_urls_share_the_guard(strict, make_user, api, token_for):
    ada = api(token_for(make_user("ada")))
    for url in ("http://[2002:7f00:1::]/hook", "http://[64:ff9b::a9fe:a9fe]/", "http://100.64.0.1/"):
        r = ada.post("/api/v1/subscriptions/", {"url": url, "event_types": ["connector.*"]}, format="json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe_url", (url, r.content)
        assert "BRAIN_ALLOW_PRIVATE_URLS" in r.json()["error"]["message"]


# --- BRAIN_URL at start-up ---------------------------------------------------------------------


def brain_messages(settings, url):
    settings.BRAIN_BACKEND = "connectors.delivery.brain.HttpBrain"
    settings.BRAIN_URL = url
    return [m for m in checks.check_brain_backend() if "BRAIN_URL" in m.msg]


def test_brain_url_is_checked_at_start_up(strict):
    [error] = brain_messages(strict, "http://169.254.169.254/brain")
    assert isinstance(error, Error) and "BRAIN_ALLOW_PRIVATE_URLS" in error.msg + (error.hint or "")
    [error] = brain_messages(strict, "http://127.0.0.1:9/brain")
    assert isinstance(error, Error) and "BRAIN_ALLOW_PRIVATE_URLS" in error.msg + (error.hint or "")
    with pytest.raises(SystemCheckError, match="BRAIN_URL"):
        call_command("check")
    strict.BRAIN_ALLOW_PRIVATE_URLS = True
    assert brain_messages(strict, "http://127.0.0.1:9/brain") == []
    assert [type(m) for m in brain_messages(strict, "http://169.254.169.254/brain")] == [Error]


def test_a_brain_url_that_does_not_resolve_yet_is_a_warning(strict):
    # BRAIN may come up after this service: start-up goes on, and each call checks again.
    [warning] = brain_messages(strict, "https://brain.invalid/brain")
    assert isinstance(warning, Warning) and "does not resolve" in warning.msg


def test_the_replaced_subscription_settings_stop_start_up(monkeypatch):
    monkeypatch.setenv("EVENT_SUBSCRIPTION_ALLOW_LOOPBACK", "true")
    [error] = checks.check_replaced_settings()
    assert "BRAIN_ALLOW_PRIVATE_URLS" in error.msg + (error.hint or "")
