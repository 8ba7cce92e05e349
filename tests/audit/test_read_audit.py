"""Every read writes exactly the audit row audit/reads.py names (or is on its NOT_AUDITED list).

The reads are not listed by hand: the REST ones are every GET operation of the live OpenAPI schema, the
MCP ones every read-only tool and resource the MCP server lists. Each is performed once, as alice on
her own objects (she holds admin_connector on her connector, so every read succeeds), and the audit
rows it wrote are compared with the registry. A new GET endpoint or read tool fails here until it is
audited and registered, or registered as not audited with a reason.

The world (alice's and bob's connectors, deliveries, identities, conversations, ...) is the RBAC
matrix's (tests/project/rbac_support.py), and the paths and queries of each operation are its tables'
(test_rbac_generated.py, test_rbac_generated_mcp.py).
"""
import asyncio
from pprint import pformat
from urllib.parse import urlencode

import pytest
from django.urls import get_resolver, reverse

from audit import reads
from audit.models import AuditEvent
from brain_connectors.mcp import server as mcp_server
from tests.project.rbac_support import ACTOR, CONNECTED, audit_mark, build_world
from tests.project.test_rbac_generated import REST_OPS, SCHEMA_OPS, fill_path
from tests.project.test_rbac_generated_mcp import MCP_OPS

GET_OPS = {op_id: path for op_id, (method, path) in SCHEMA_OPS.items() if method == "GET"}


@pytest.fixture(autouse=True)
def _routing_settings(settings):
    settings.ROUTING_PAIRABLE_KINDS = ("locmem",)
    settings.BRAIN_ALLOW_PRIVATE_URLS = True


def rows_since(mark):
    return list(AuditEvent.objects.filter(id__gt=mark).order_by("id").values_list("action", "result", "principal"))


def expected_rows(action):
    return [] if action is None else [(action, "success", f"user:{ACTOR}")]


def test_the_registry_names_only_live_reads_and_known_actions():
    """A registry row for a read that no longer exists (or a write) is stale; every action is described."""
    assert set(reads.REST) - set(GET_OPS) == set()
    assert set(reads.REST) & set(reads.NOT_AUDITED) == set()
    assert set(reads.REST.values()) | set(reads.MCP.values()) <= set(reads.ACTIONS)


def rest_path(op_id, path, objects):
    op = REST_OPS[op_id]  # the RBAC matrix knows how to fill each operation
    if "{" in path:
        path = fill_path(path, objects[op.fill])
    query = {name: objects.get(key, key) for name, key in op.query if name != "user"}  # as herself: no ?user=
    return path + ("?" + urlencode(query) if query else "")


@pytest.mark.django_db
def test_every_rest_read_writes_exactly_its_registered_audit_row(make_user, grant, token_for, api):
    world = build_world("admin", CONNECTED, make_user, grant, token_for)
    client = api(world.token)
    wrong = {}
    for op_id, path in sorted(GET_OPS.items()):
        if op_id not in reads.REST and op_id not in reads.NOT_AUDITED:
            wrong[op_id] = "not in audit/reads.py: audit it (REST) or say why not (NOT_AUDITED)"
            continue
        mark = audit_mark()
        response = client.get(rest_path(op_id, path, world.of("own")))
        assert response.status_code == 200, (op_id, response.status_code, response.content[:300])
        got, want = rows_since(mark), expected_rows(reads.REST.get(op_id))
        if got != want:
            wrong[op_id] = {"wrote": got, "registry": want}
    assert wrong == {}, pformat(wrong)
    # A refusal is audited under the same action (as `denied`): one name per read. Bob's, in the same world.
    for op_id in ("v1_deliveries_retrieve", "v1_conversations_people_sentiment_retrieve"):
        mark = audit_mark()
        response = client.get(rest_path(op_id, GET_OPS[op_id], world.of("other")))
        assert response.status_code in (403, 404), (op_id, response.status_code)
        assert [(a, r) for a, r, _ in rows_since(mark)] == [(reads.REST[op_id], "denied")]


@pytest.mark.django_db
def test_a_refused_list_keeps_its_failure_row(make_user, token_for, api):
    """A paginated list reads in one transaction with its audit row, but a refusal's row is not rolled back."""
    client = api(token_for(make_user("dora")))
    for path, action in (("/api/v1/connectors/?status=nope", "connector.list"),
                         ("/api/v1/deliveries/?status=nope", "delivery.list")):
        mark = audit_mark()
        assert client.get(path).status_code == 400
        assert [(a, r) for a, r, _ in rows_since(mark)] == [(action, "failure")]


def page_names():
    """{URL name: whether it takes arguments} of every route outside the REST API (whose reads are the
    schema's operations) and the platform webhooks (POSTs from the platforms); the admin is one name."""
    names = {}

    def walk(resolver, prefix):
        for pattern in resolver.url_patterns:
            route = prefix + str(pattern.pattern)
            if getattr(pattern, "namespace", None) == "admin":
                names["admin"] = True
            elif hasattr(pattern, "url_patterns"):
                walk(pattern, route)
            elif pattern.name == "api-root" or not route.startswith(("api/v1/", "webhooks/")):
                # arguments: every variant of the route takes some (the API root has a `.json` variant)
                names[pattern.name] = names.get(pattern.name, True) and bool(pattern.pattern.regex.groups)
    walk(get_resolver(), "")
    return names


@pytest.mark.django_db
def test_every_page_is_classified_and_the_unaudited_ones_write_no_row(make_user, client):
    pages = page_names()
    unclassified = set(pages) - set(reads.PAGES) - set(reads.NOT_AUDITED)
    assert unclassified == set(), "pages missing from audit/reads.py (PAGES or NOT_AUDITED)"
    assert set(reads.PAGES) <= set(pages)
    client.force_login(make_user("root", superuser=True))
    wrote = {}
    for name, has_arguments in sorted(pages.items()):
        if has_arguments or name == "admin" or name in reads.PAGES:
            continue  # the audited download: tests/connectors/test_attachment_urls.py
        mark = audit_mark()
        client.get(reverse(name))
        wrote[name] = rows_since(mark)
    assert {"home", "preferences", "dashboard-state", "metrics", "schema"} <= set(wrote)
    assert {name: rows for name, rows in wrote.items() if rows} == {}


def test_record_read_refuses_an_action_the_registry_does_not_name():
    with pytest.raises(reads.UnregisteredRead):
        reads.record_read("connector.peek", None, "connector", "x")


# --- MCP ------------------------------------------------------------------------------------------


def mcp_reads(token, world):
    """{name: audit rows written} for every read-only tool and every resource read the server lists,
    through the SDK's in-memory client (the server `runmcp` would start with this token)."""
    from mcp import Client

    own = world.of("own")
    written, writes = {}, set()

    async def scenario():
        async with Client(mcp_server.build_server(stdio_token=token)) as client:
            for tool in (await client.list_tools()).tools:
                if tool.annotations is None or not tool.annotations.read_only_hint:
                    writes.add(tool.name)  # audited as a change, not here
                    continue
                op = MCP_OPS.get(tool.name)
                arguments = op.args(own) if op is not None and op.args else {}
                mark = await asyncio.to_thread(audit_mark)
                result = await client.call_tool(tool.name, arguments)
                assert not result.is_error, (tool.name, result.content)
                written[tool.name] = await asyncio.to_thread(rows_since, mark)
            mark = await asyncio.to_thread(audit_mark)
            resources = (await client.list_resources()).resources
            written["resources/list"] = await asyncio.to_thread(rows_since, mark)
            assert own["connector"] in {str(r.uri) for r in resources} | {r.name for r in resources}
            for template in (await client.list_resource_templates()).resource_templates:
                mark = await asyncio.to_thread(audit_mark)
                await client.read_resource(template.uri_template.replace("{connector_id}", own["connector"]))
                written[template.uri_template] = await asyncio.to_thread(rows_since, mark)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    return written, writes


# The tools without readOnlyHint. A new one must be added here knowingly: if it only reads, it needs the hint
# (and then a row in audit/reads.py), or it would escape this test.
WRITE_TOOLS = {"send_message", "notify_user", "ask_user"}


# The tools run in the SDK's worker threads, on their own database connections: the world must be committed.
@pytest.mark.django_db(transaction=True)
def test_every_mcp_read_writes_exactly_its_registered_audit_row(make_user, grant, token_for):
    world = build_world("admin", CONNECTED, make_user, grant, token_for)
    written, writes = mcp_reads(world.token, world)
    assert writes == WRITE_TOOLS
    wrong = {}
    for name, got in sorted(written.items()):
        if name not in reads.MCP and name not in reads.NOT_AUDITED:
            wrong[name] = "not in audit/reads.py: audit it (MCP) or say why not (NOT_AUDITED)"
        elif got != expected_rows(reads.MCP.get(name)):
            wrong[name] = {"wrote": got, "registry": expected_rows(reads.MCP.get(name))}
    assert wrong == {}, pformat(wrong)
    assert set(reads.MCP) - set(written) == set(), "registry rows for reads the MCP server no longer has"
