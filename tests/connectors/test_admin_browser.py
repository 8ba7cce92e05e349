"""The admin's connector form in a real browser (headless Chromium via Playwright, daphne in a subprocess): for each
kind, choose it, fill its fields, submit, and the connector exists with that config and those credentials."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from connectors.models import Connector
from tests.connectors.admin_kinds import VALID
from tests.connectors.test_dashboard_browser import PASSWORD, browser, server, staff_member  # noqa: F401  (fixtures)
from tests.connectors.url_guard_support import PUBLIC_ADDRESS

pytestmark = [pytest.mark.slow, pytest.mark.vendor_neutral, pytest.mark.django_db(transaction=True)]

# The server process resolves names for real: the webhook's URL names a public address instead.
WEBHOOK_URL = f"https://{PUBLIC_ADDRESS}/hooks/brain"


def _stored(connector_id):
    """(config, credentials) of a connector, read in a thread of its own (Playwright's loop runs in this one, and
    Django refuses the ORM there)."""

    def read():
        try:
            connector = Connector.objects.filter(pk=connector_id).first()
            return None if connector is None else (connector.config, connector.get_credentials())
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read).result()


def _fill(page, name, value):
    tag = page.eval_on_selector(f'[name="{name}"]', "e => e.tagName")
    if tag == "SELECT":
        page.select_option(f'select[name="{name}"]', value)
    else:
        page.fill(f'[name="{name}"]', value)


def _log_in(browser, base):  # noqa: F811
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.goto(base + "/admin/login/?next=/admin/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(base + "/admin/")
    return page


def test_each_kinds_add_form_fills_and_submits_in_a_browser(staff_member, server, browser):  # noqa: F811
    page = _log_in(browser, server)
    for kind, (config, credentials, (stored_config, stored_credentials)) in sorted(VALID.items()):
        if kind == "webhook":
            config = {**config, "config__url": WEBHOOK_URL}
            stored_config = {**stored_config, "url": WEBHOOK_URL}
        page.goto(server + "/admin/connectors/connector/add/")
        page.select_option('select[name="kind"]', kind)
        page.click("#choose-kind input[type=submit]")
        page.wait_for_selector('input[name="id"]')
        assert f"kind={kind}" in page.url
        page.fill('input[name="id"]', f"{kind}_browser")
        page.fill('input[name="display_name"]', f"{kind} in a browser")
        for name, value in {**config, **credentials}.items():
            _fill(page, name, value)
        page.click('input[name="_save"]')
        page.wait_for_url(server + "/admin/connectors/connector/", timeout=10_000)
        assert _stored(f"{kind}_browser") == (stored_config, stored_credentials), kind


def test_an_empty_required_field_is_one_plain_error_in_the_browser(staff_member, server, browser):  # noqa: F811
    page = _log_in(browser, server)
    page.goto(server + "/admin/connectors/connector/add/?kind=email")
    page.fill('input[name="id"]', "email_empty")
    page.fill('input[name="display_name"]', "Empty email")
    page.click('input[name="_save"]')
    page.wait_for_selector(".errorlist")
    errors = page.eval_on_selector_all("ul.errorlist li", "items => items.map(i => i.textContent.trim())")
    assert errors == ["From address: this field is required."]
    assert _stored("email_empty") is None
