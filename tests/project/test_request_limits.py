"""Hostile request shapes get a 400, never a 500 or an unbounded answer (issue 14, item 6):

- a JSON body nested 100,000 levels deep, on every REST operation that takes a body, in the admin's
  JSON fields and over MCP's streamable HTTP (the webhooks are fuzzed with it in tests/fuzz, the
  websocket's ack frames in tests/connectors/test_event_stream.py);
- `?limit=` above the documented maximum, on every paginated list and on conversation search.
"""
import json

import pytest
from django.conf import settings as django_settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings

from audit.models import AuditEvent
from connectors.events import subscriptions
from connectors.models import Connector
from connectors.permissions import Principal
from routing.models import ChannelIdentity, ConnectorPreference
from routing.notify import creation
from tests.conftest import SYSTEM, free_port
from tests.mcp_client import HttpServer

pytestmark = pytest.mark.django_db

DEPTH = 100_000
DEEP_ARRAY = "[" * DEPTH + "]" * DEPTH
DEEP_OBJECT = '{"a":' * DEPTH + "1" + "}" * DEPTH


def _schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations_with_a_body():
    return sorted(
        (method.upper(), path)
        for path, operations in _schema()["paths"].items()
        for method, operation in operations.items()
        # A multipart-only operation (the file upload) has no JSON to nest.
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    )


@pytest.fixture
def world(make_user, make_connector, token_for, settings):
    """A superuser with one object of each kind a body-taking operation names in its path."""
    settings.BRAIN_URL_ALLOWED_HOSTS = ["hooks.example.org"]  # no DNS answer needed
    root = make_user("root", superuser=True)
    make_connector("deep_c")
    identity = ChannelIdentity.objects.create(
        user=root, connector_id="deep_c", address="+447700900300", verified_at=timezone.now()
    )
    preference = ConnectorPreference.objects.create(user=root, identity=identity, priority=1)
    subscription, _ = subscriptions.create_subscription(
        Principal.for_user(root, via="test"), url="https://hooks.example.org/deep", event_types=["connector.*"]
    )
    ids = {
        "/api/v1/connectors/": "deep_c",
        "/api/v1/identities/": identity.pk,
        "/api/v1/preferences/": preference.pk,
        "/api/v1/subscriptions/": subscription.pk,
    }
    return root, token_for(root), ids


def _url(path, ids):
    for prefix, value in ids.items():
        if path.startswith(prefix):
            return path.replace("{id}", str(value))
    assert "{" not in path, f"no object for {path}"
    return path


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize("method, path", _operations_with_a_body())
def test_deeply_nested_json_is_a_400_on_every_operation_with_a_body(method, path, body, world, api):
    _, token, ids = world
    before = Connector.objects.count()
    response = getattr(api(token), method.lower())(_url(path, ids), body, content_type="application/json")
    assert response.status_code == 400, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["code"] == "parse_error" and "nested" in error["message"]
    assert Connector.objects.count() == before
    refused = AuditEvent.objects.filter(action="api.invalid_request").latest("id")
    assert (refused.principal, refused.result, refused.details["method"]) == ("user:root", "failure", method)


def test_json_nested_past_the_limit_is_refused_and_at_the_limit_accepted(world, api):
    """Past MAX_JSON_DEPTH: refused before any serializer or service sees it (a body that the
    decoder survives can still overflow json.dumps further down, in the audit row or the database)."""
    from brain_connectors.shared import parsers

    _, token, _ = world
    client = api(token)
    deep = client.patch("/api/v1/connectors/deep_c/", {"config": _nest(parsers.MAX_JSON_DEPTH + 1)}, format="json")
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "parse_error"
    at_limit = client.patch("/api/v1/connectors/deep_c/", {"config": _nest(parsers.MAX_JSON_DEPTH)}, format="json")
    # The locmem kind refuses an unknown config key: a business rule, past the parser.
    assert at_limit.status_code == 400 and at_limit.json()["error"]["code"] == "invalid_config", at_limit.content


def _nest(depth):
    """A value that makes the body `{"config": value}` nest `depth` levels."""
    value = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_every_view_uses_the_project_parsers():
    """The depth limit is the project-wide parser: no REST view may bring its own JSON parser."""
    from brain_connectors.shared import parsers

    assert api_settings.DEFAULT_PARSER_CLASSES[0] is parsers.SafeJSONParser

    def views(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from views(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                cls = getattr(pattern.callback, "cls", None)
                if cls is not None:
                    yield cls

    for view in views(get_resolver().url_patterns):
        json_parsers = [p for p in getattr(view, "parser_classes", []) if issubclass(p, JSONParser)]
        assert all(issubclass(p, parsers.SafeJSONParser) for p in json_parsers), view


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_the_admin_json_fields_refuse_deep_nesting_with_a_form_error(body, make_user, client):
    client.force_login(make_user("admin", superuser=True))
    response = client.post(
        "/admin/connectors/connector/add/",
        {"id": "deep_admin", "kind": "locmem", "display_name": "Deep", "config": body, "new_credentials": body,
         "quota_per_minute": 60, "recipient_quota_per_minute": 10},
    )
    assert response.status_code == 200  # the form again, with its errors
    assert "nested" in response.content.decode()
    assert not Connector.objects.filter(pk="deep_admin").exists()


def test_a_body_over_the_upload_limit_is_a_400_in_the_api_error_shape(world, api, settings):
    """Django refuses it (RequestDataTooBig) before DRF sees it; the answer was an HTML page."""
    _, token, _ = world
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"id": "big_one", "kind": "locmem", "display_name": "x" * 20_000})
    response = api(token).post("/api/v1/connectors/", body, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "request_too_large"
    assert not Connector.objects.filter(pk="big_one").exists()


@pytest.mark.slow
def test_mcp_http_refuses_deep_json_with_a_400_and_keeps_serving(subprocess_env, make_user, token_for):
    import httpx

    token = token_for(make_user("operator", superuser=True))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    with HttpServer(subprocess_env, free_port()) as server:
        deep = httpx.post(server.url, content=DEEP_OBJECT, headers=headers, timeout=10)
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        after = httpx.post(server.url, json=initialize, headers=headers, timeout=10)
    assert deep.status_code == 400, deep.text[:300]
    assert after.status_code == 200


# --- ?limit= ---------------------------------------------------------------------------------


def _paginated_lists():
    """Every operation whose schema declares a `limit` query parameter."""
    found = []
    for path, operations in _schema()["paths"].items():
        for operation in operations.values():
            names = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
            if "limit" in names:
                found.append((path, names["limit"]["schema"]))
    return sorted(found, key=lambda item: item[0])


LIST_PATHS = [path for path, _ in _paginated_lists()]


@pytest.fixture
def lists(make_user, make_connector, token_for, settings):
    settings.BRAIN_URL_ALLOWED_HOSTS = ["hooks.example.org"]
    root = make_user("root", superuser=True)
    make_connector("limit_c")
    subscription, _ = subscriptions.create_subscription(
        Principal.for_user(root, via="test"), url="https://hooks.example.org/limits", event_types=["connector.*"]
    )
    creation.notify_user(SYSTEM, root, "The build is green.", "standard")
    return token_for(root), {"{id}": str(subscription.pk)}


def test_every_limit_parameter_declares_its_maximum_in_the_schema():
    declared = dict(_paginated_lists())
    assert declared, "no operation takes ?limit="
    for path, schema in declared.items():
        assert schema.get("minimum") == 1 and isinstance(schema.get("maximum"), int), (path, schema)
    assert declared["/api/v1/connectors/"]["maximum"] == django_settings.API_MAX_PAGE_SIZE
    assert declared["/api/v1/events/"]["maximum"] == 1000
    assert declared["/api/v1/conversations/search/"]["maximum"] == 200


@pytest.mark.parametrize("path", LIST_PATHS)
def test_a_limit_above_the_maximum_is_a_400_naming_limit_and_the_maximum(path, lists, api):
    token, params = lists
    url = path.replace("{id}", params["{id}"])
    maximum = dict(_paginated_lists())[path]["maximum"]
    query = {"limit": maximum + 1, "q": "green"}  # q: search needs words; other lists ignore it or refuse it
    client = api(token)
    if "search" not in path:
        query.pop("q")
    too_many = client.get(url, query)
    assert too_many.status_code == 400, too_many.content[:300]
    error = too_many.json()["error"]
    assert "limit" in error["details"] and str(maximum) in error["message"] + json.dumps(error["details"])
    assert client.get(url, {**query, "limit": maximum}).status_code == 200
    for bad in ("0", "-1", "+5", " 5", "1e3"):
        assert client.get(url, {**query, "limit": bad}).status_code == 400, (url, bad)


def test_the_maximum_page_size_is_a_setting(lists, api, settings):
    token, _ = lists
    settings.API_MAX_PAGE_SIZE = 2
    client = api(token)
    assert client.get("/api/v1/connectors/", {"limit": 3}).status_code == 400
    assert client.get("/api/v1/connectors/", {"limit": 2}).status_code == 200
