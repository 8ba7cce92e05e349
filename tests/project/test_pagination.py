"""Strict pagination on every paginated REST list, found in the OpenAPI schema (a new list is covered as soon as
it is documented): `limit` / `offset` values that are not whole numbers in bounds are a 400 `validation_error`
naming the parameter, and paging with limit/offset shows every object exactly once, with no overlap and no gap,
even when the objects were created in the same instant (the order needs a unique tie-breaker)."""
import json
from datetime import datetime, timezone

import pytest
from drf_spectacular.settings import spectacular_settings

from connectors import services
from connectors.events import subscriptions
from connectors.models import Delivery, Event, EventDelivery, EventSubscription
from connectors.permissions import Principal
from routing.models import Notification
from routing.notify import creation
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

# The instant every object of a paging test is given: rows created in one transaction (PostgreSQL's now()) or in
# one clock tick share it, and only a unique tie-breaker keeps their order the same from one page to the next.
SAME_INSTANT = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
MANY, LIMIT = 7, 3  # three pages: 3 + 3 + 1


def _schema():
    generator = spectacular_settings.DEFAULT_GENERATOR_CLASS()
    return json.loads(json.dumps(generator.get_schema(request=None, public=True), default=str))


def _paginated_lists(schema):
    """GET operations whose 200 answer is the paginated envelope (count, next, previous, results)."""
    found = []
    for path, item in schema["paths"].items():
        answer = item.get("get", {}).get("responses", {}).get("200", {})
        ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
        properties = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
        if {"count", "next", "previous", "results"} <= set(properties):
            found.append(path)
    return sorted(found)


SCHEMA = _schema()
PAGINATED = _paginated_lists(SCHEMA)


def test_the_schema_names_the_paginated_lists_and_their_parameters():
    # Discovery must find the lists (an envelope renamed would otherwise leave nothing to test).
    assert {"/api/v1/connectors/", "/api/v1/deliveries/", "/api/v1/notifications/"} <= set(PAGINATED)
    for path in PAGINATED:
        parameters = {p["name"]: p for p in SCHEMA["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert parameters["limit"]["schema"]["minimum"] == 1, path
        assert parameters["offset"]["schema"]["minimum"] == 0, path
    assert set(PAGINATED) <= set(MAKERS), f"a paginated list without a maker below: {set(PAGINATED) - set(MAKERS)}"


# --- the objects of each list ----------------------------------------------------------------------------------
# maker(root, make_connector, n) -> (the list's URL, the ids of the n objects it must list, the id's key in a row). Each puts its objects at SAME_INSTANT.


def _connectors(root, make_connector, n):
    ids = [f"page_{i}" for i in range(n)]
    for connector_id in ids:
        make_connector(connector_id, start=False)
    return "/api/v1/connectors/", ids, "id"


def _deliveries(root, make_connector, n):
    make_connector("page_deliveries")
    ids = [str(services.send_message(SYSTEM, "page_deliveries", f"+4477009002{i:02d}", f"page {i}")[0].pk)
           for i in range(n)]
    Delivery.objects.filter(pk__in=ids).update(created_at=SAME_INSTANT)
    return "/api/v1/deliveries/", ids, "delivery_id"


def _notifications(root, make_connector, n):
    ids = [str(creation.notify_user(SYSTEM, root, f"page {i}", "standard")[0].pk) for i in range(n)]
    Notification.objects.filter(pk__in=ids).update(created_at=SAME_INSTANT)
    return "/api/v1/notifications/", ids, "id"


def _subscriptions(root, make_connector, n):
    owner = Principal.for_user(root, via="test")
    ids = [str(subscriptions.create_subscription(owner, url=f"https://127.0.0.1/hook{i}", event_types=["connector.*"])[0].pk)
           for i in range(n)]
    EventSubscription.objects.filter(pk__in=ids).update(created_at=SAME_INSTANT)
    return "/api/v1/subscriptions/", ids, "id"


def _subscription_deliveries(root, make_connector, n):
    owner = Principal.for_user(root, via="test")
    subscription, _ = subscriptions.create_subscription(owner, url="https://127.0.0.1/hook", event_types=["connector.*"])
    events = [Event.objects.create(type="connector.started", source="/tests", time=SAME_INSTANT) for _ in range(n)]
    ids = [str(EventDelivery.objects.create(subscription=subscription, event=event).pk) for event in events]
    EventDelivery.objects.filter(pk__in=ids).update(created_at=SAME_INSTANT)
    return f"/api/v1/subscriptions/{subscription.pk}/deliveries/", ids, "id"


MAKERS = {
    "/api/v1/connectors/": _connectors,
    "/api/v1/deliveries/": _deliveries,
    "/api/v1/notifications/": _notifications,
    "/api/v1/subscriptions/": _subscriptions,
    "/api/v1/subscriptions/{id}/deliveries/": _subscription_deliveries,
}


@pytest.fixture
def root_api(make_user, token_for, api, settings):
    settings.BRAIN_ALLOW_PRIVATE_URLS = True  # the subscriptions' URLs are loopback ones, never called here
    root = make_user("root", superuser=True)
    return root, api(token_for(root))


@pytest.fixture
def listing(request, root_api, make_connector):
    """(client, URL, ids, id key) for the paginated list `request.param`, holding `n` objects (indirect: (path, n))."""
    path, n = request.param
    root, client = root_api
    return client, *MAKERS[path](root, make_connector, n)


# --- refused parameters ----------------------------------------------------------------------------------------

BAD = [("limit", "abc"), ("limit", "+5"), ("limit", "0"), ("limit", " 5"), ("limit", "5.0"),
       ("offset", "-1"), ("offset", "abc"), ("offset", "")]


@pytest.mark.parametrize("listing", [(path, 1) for path in PAGINATED], indirect=True, ids=PAGINATED)
def test_bad_limit_or_offset_is_a_400_naming_the_parameter(listing, settings):
    client, url, _, _ = listing
    undocumented = {}  # answers other than the documented 400
    for name, value in [*BAD, ("limit", str(settings.API_MAX_PAGE_SIZE + 1))]:  # one over the maximum too
        response = client.get(url, {name: value})  # urlencoded: "+5" arrives as "+5", not " 5"
        body = response.json()
        error = body.get("error", {})
        if not (response.status_code == 400 and error.get("code") == "validation_error"
                and set(error.get("details", {})) == {name} and name in error.get("message", "")):
            undocumented[f"{name}={value!r}"] = (response.status_code, body)
    assert undocumented == {}
    # The same list answers with good values: the 400s above are the parameters', not the URL's.
    response = client.get(url, {"limit": "1", "offset": "0"})
    assert response.status_code == 200 and response.json()["count"] == 1


# --- real paging -----------------------------------------------------------------------------------------------


def _walk(client, url, key):
    """Every page from offset 0 in steps of LIMIT, until one comes back short; returns (pages, count)."""
    pages, offset = [], 0
    while True:
        response = client.get(url, {"limit": LIMIT, "offset": offset})
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([row[key] for row in body["results"]])
        if len(body["results"]) < LIMIT or len(pages) > MANY:
            return pages, body["count"]
        offset += LIMIT


@pytest.mark.parametrize("listing", [(path, MANY) for path in PAGINATED], indirect=True, ids=PAGINATED)
def test_pages_show_every_object_exactly_once(listing):
    client, url, ids, key = listing
    pages, count = _walk(client, url, key)
    seen = [pk for page in pages for pk in page]
    assert count == MANY
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sorted(seen) == sorted(ids)  # each exactly once: no duplicate across pages, none skipped
    # The pages are slices of one order: the whole list in one page is the same sequence.
    whole = client.get(url, {"limit": MANY}).json()["results"]
    assert [row[key] for row in whole] == seen
    # `next` leads through the same pages.
    followed, link = [], f"{url}?limit={LIMIT}"
    while link:
        body = client.get(link).json()
        followed.append([row[key] for row in body["results"]])
        link = body["next"]
    assert followed == pages
