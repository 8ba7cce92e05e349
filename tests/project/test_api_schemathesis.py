"""Schemathesis over every operation of the OpenAPI schema at /api/schema/.

Each operation is one test: Hypothesis generates requests from the schema (valid ones and, in
negative mode, invalid ones), sends them to the app in-process (WSGI) with a superuser's Bearer
token, and Schemathesis checks every answer: no server error, a documented status code, a
documented content type and a body that matches the documented schema, and more (see
EXCLUDED_CHECKS).

The database holds a small, realistic world (connectors, deliveries, identities, preferences,
pairing codes, notifications, subscriptions, conversations, a second user and token) and path
parameters often name one of its objects, so operations are exercised past their 404s.
`test_observed_statuses_reach_past_not_found` proves that for every operation of the schema, and runs
itself whatever test_api did not run in the session (the test alone, `-k`, another order).

Nothing leaves the machine: every host name resolves to 127.0.0.1 and a connection to any other
address is refused (see `_loopback_only`). Connectors are locmem/cli, which send nowhere.
"""
import collections
import contextlib
import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.db import transaction
from django.utils import timezone
from drf_spectacular.settings import spectacular_settings
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.python._constants.orchestrator import make_constants_value_source
from schemathesis.specs.openapi import checks as openapi_checks

from connectors import services
from connectors.events import sequencer, subscriptions
from connectors.models import Delivery
from connectors.permissions import Principal
from conversations.models import Conversation, Message
from conversations.recording import record_pending
from routing.models import ChannelIdentity, ConnectorPreference
from routing.notify import creation
from routing.pairing import issue
from tests.conftest import SYSTEM

# The test's transaction, quiet 4xx logs, loopback only: autouse fixtures, active here by being imported.
from tests.project.schemathesis_support import (  # noqa: F401
    _keep_the_test_transaction,
    _loopback_only,
    _no_request_warnings,
)

pytestmark = pytest.mark.django_db


def _generated_schema():
    """The document /api/schema/ serves, built the way SpectacularAPIView builds it.

    The served view needs a login (a database), which does not exist while pytest collects, so
    the test cases come from the same generator; `test_served_schema_is_the_one_under_test`
    checks that the two are identical."""
    generator = spectacular_settings.DEFAULT_GENERATOR_CLASS()
    return json.loads(json.dumps(generator.get_schema(request=None, public=True), default=str))


RAW_SCHEMA = _generated_schema()
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.app = WSGIHandler()

# Every built-in check runs except this one:
# - positive_data_acceptance expects every schema-valid request to succeed, i.e. a schema that
#   states every rule. Ours cannot: a kind's config and credentials, a recipient's format per
#   platform, a username or connector that must exist, a DNS-checked URL, "give at least one
#   field" are business rules, refused with a documented 400 and a named field. Everything the
#   schema does state is enforced by negative_data_rejection, which runs.
EXCLUDED_CHECKS = [openapi_checks.positive_data_acceptance]

# The caller's token, set by the `world` fixture.
CALLER = {}

# Status codes seen per operation: test_api records them, `observed` fills in any operation it did not run.
OBSERVED = collections.defaultdict(collections.Counter)
# Positive cases seeded per operation (_seed_with_world).
SEEDED = collections.Counter()


# --- the world -------------------------------------------------------------------------------


CONNECTOR_IDS = ["locmem_main", "locmem_spare", "cli_main", "locmem_stopped", "locmem_idle"]
USERNAMES = ["root", "ada", "bob"]


@pytest.fixture
def world(make_user, make_connector, token_for, grant, settings):
    """A superuser (the caller), Ada and Bob with identities, preferences, pairing codes,
    conversations and notifications, and connectors with deliveries."""
    settings.ROUTING_PAIRABLE_KINDS = ("locmem", "cli")  # pairing codes on the test connectors
    root = make_user("root", superuser=True)
    ada, bob = make_user("ada"), make_user("bob")
    make_connector("locmem_main")
    make_connector("locmem_spare")
    make_connector("cli_main", kind="cli")
    make_connector("locmem_stopped", start=False)
    make_connector("locmem_idle", start=False)
    grant(ada, "send_via_connector", services.get_connector(SYSTEM, "locmem_main"))
    for n in range(3):
        services.send_message(SYSTEM, "locmem_main", f"+4477009001{n:02d}", f"hello {n}")
    now = timezone.now()
    identities = [
        ChannelIdentity.objects.create(user=root, connector_id="locmem_main", address="+447700900200", verified_at=now),
        ChannelIdentity.objects.create(user=root, connector_id="cli_main", address="root", verified_at=now),
        ChannelIdentity.objects.create(user=ada, connector_id="locmem_spare", address="+447700900201", verified_at=now),
        ChannelIdentity.objects.create(user=bob, connector_id="cli_main", address="bob", verified_at=now),
    ]
    for priority, identity in enumerate(identities[:2], start=1):
        ConnectorPreference.objects.create(user=root, identity=identity, priority=priority)
    ConnectorPreference.objects.create(user=ada, identity=identities[2], priority=1)
    for who in (ada, bob):
        conversation = Conversation.objects.create(
            connector_id="locmem_main", address=f"{who.username}-addr", person=who, last_message_at=now
        )
        Message.objects.create(conversation=conversation, role="user", content=f"{who.username} likes bicycles", created_at=now)
        Message.objects.create(conversation=conversation, role="assistant", content="Noted.", created_at=now)
    as_root = Principal.for_user(root, via="test")
    subscriptions.create_subscription(as_root, url="https://hooks.example.org/brain", event_types=["connector.*"])
    issue.request_pairing_code(Principal.for_user(ada, via="test"), ada, "locmem_main")
    creation.notify_user(SYSTEM, root, "The build is green.", "standard")
    creation.notify_user(SYSTEM, ada, "Your parcel left the depot.", "urgent")
    record_pending()  # memory as the consumer leaves it, after commit
    token_for(bob)
    token_for(root, name="spare")  # one the caller may revoke; revoking the caller's own ends the test's reach
    # Number the world's events, as the sequencer does after commit on PostgreSQL (a `db` test never commits).
    sequencer.sequence_pending()
    # Read by SuperuserToken while Hypothesis generates the cases, before the test body runs.
    CALLER["token"] = token_for(root)
    yield
    CALLER.clear()


def _path_ids():
    """Ids of the world's objects per path prefix, read when the case runs (a DELETE earlier in
    the same test may have removed some)."""
    from connectors.models import ApiToken, EventSubscription
    from routing.models import Notification

    def ids(qs):
        return [str(pk) if not isinstance(pk, int) else pk for pk in qs]

    return {
        "/api/v1/connectors/": CONNECTOR_IDS,
        "/api/v1/conversations/": USERNAMES,
        "/api/v1/deliveries/": ids(Delivery.objects.values_list("pk", flat=True)),
        "/api/v1/identities/": ids(ChannelIdentity.objects.filter(user__username="root").values_list("pk", flat=True)),
        "/api/v1/preferences/": ids(ConnectorPreference.objects.filter(user__username="root").values_list("pk", flat=True)),
        "/api/v1/notifications/": ids(Notification.objects.values_list("pk", flat=True)),
        "/api/v1/subscriptions/": ids(EventSubscription.objects.values_list("pk", flat=True)),
        # Never the caller's own token: revoking it would turn the rest of the test into 401s.
        "/api/v1/tokens/": list(
            ApiToken.objects.exclude(prefix=CALLER["token"].split("_")[1]).values_list("prefix", flat=True)
        ),
    }


def _body_values():
    """Valid values per query parameter or body field name, so that filters find something and
    creations and changes succeed too."""
    identities = list(ChannelIdentity.objects.filter(user__username="root").values_list("pk", flat=True))
    preferences = list(ConnectorPreference.objects.filter(user__username="root").values_list("pk", flat=True))
    return {
        "id": ["fresh_locmem"],  # POST /connectors/: new the first time, then a 409 duplicate
        "kind": ["locmem"],
        "config": [{}],
        "credentials": [{}],
        "username": USERNAMES,
        "user": USERNAMES,
        "permission": ["view_connector", "send_via_connector", "manage_connector", "admin_connector"],
        "connector": CONNECTOR_IDS,
        "recipient": ["+447700900123", "someone@example.org"],
        "label": ["Laptop"],
        "identity": identities,
        "order": [preferences, preferences[::-1]],
        "timezone": ["UTC", "Europe/London"],
        "quiet_start": ["22:00"],
        "quiet_end": ["07:30"],
        "url": ["https://hooks.example.org/new"],
        "event_types": [["connector.*"], ["notification.delivered", "connector.message.sent"]],
    }


# A change each PATCH endpoint accepts on any of the world's objects.
MINIMAL_CHANGE = {
    "/api/v1/connectors/{id}/": {"display_name": "Renamed"},
    "/api/v1/identities/{id}/": {"label": "Laptop"},
    "/api/v1/preferences/{id}/": {"enabled": True},
}


def _pick(data, values, label):
    """One of `values`, or None (keep the generated value). The draws do not depend on the
    database (an index, reduced modulo the number of values), so Hypothesis replays them."""
    use = data.draw(st.booleans(), label=f"a real {label}")
    index = data.draw(st.integers(min_value=0, max_value=63), label=f"which {label}")
    return values[index % len(values)] if use and values else None


def _seed_with_world(case, data):
    """In positive mode, about half of the path parameters and known body fields take a value
    of the world, so operations reach real objects and succeed; the rest stay as generated.
    Negative cases are left alone: their meta says which part is invalid."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    operation = f"{case.method} {case.path}"
    # The first positive case of each operation always names a real object: whether 25 generated cases ever did
    # depended on what Hypothesis had generated earlier in the session (GET /deliveries/{id}/ once never did).
    first_of_operation = not SEEDED[operation]
    SEEDED[operation] += 1
    for name in sorted(case.path_parameters or {}):
        ids = next((ids for prefix, ids in _path_ids().items() if case.operation.path.startswith(prefix)), [])
        value = ids[0] if first_of_operation and ids else _pick(data, ids, f"path {name}")
        if value is not None:
            case.path_parameters[name] = value
    known = _body_values()
    if case.query is None and _declared(case, "query"):
        case.query = {}
    for where, values in (("query", case.query), ("body", case.body)):
        if isinstance(values, dict):
            # Optional fields the generator left out are added too (e.g. the username of a grant).
            for name in sorted((set(values) | _declared(case, where)) & set(known)):
                value = _pick(data, known[name], f"{where} {name}")
                if value is not None:
                    values[name] = value
    if isinstance(case.body, dict) and _pick(data, [True], "a body the API accepts"):
        # The schema lets extra properties through, which the API refuses ("unknown field"), and a grant
        # names a user or a group, not both: such bodies never reach the object. Negative cases (left
        # alone above) still send them.
        for name in set(case.body) - _declared(case, "body"):
            del case.body[name]
        if case.body.get("username") in USERNAMES:
            case.body.pop("group", None)
    minimal = MINIMAL_CHANGE.get(case.operation.path) if case.method == "PATCH" else None
    if minimal and not (isinstance(case.body, dict) and case.body):
        # Every field of a PATCH is optional, so the generator often sends none (or no body at all), which the
        # API refuses ("Nothing to change"). How often depended on what Hypothesis had generated earlier in the
        # session: after the parser fuzz tests, these PATCHes never reached an object. An empty positive case
        # gets one known-good field instead (no extra draw, so the other cases stay as they were).
        case.body = dict(minimal)


def _declared(case, where):
    """The query parameters or JSON body fields the schema declares for this operation."""
    operation = RAW_SCHEMA["paths"][case.operation.path][case.method.lower()]
    if where == "query":
        return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" not in body:
        return set()
    return set(RAW_SCHEMA["components"]["schemas"][body["$ref"].split("/")[-1]].get("properties", {}))


# --- the tests -------------------------------------------------------------------------------


@schema.auth(refresh_interval=None)  # no caching: each test has its own database and token
class SuperuserToken:
    """Every case carries the superuser's Bearer token, so every operation is reachable. Given to
    Schemathesis as its auth (not as extra headers) so that it knows the credentials: it then
    neither generates an Authorization header nor counts ours as generated data, and the
    `ignored_auth` check can send the same request without them and expect a 401."""

    def get(self, case, ctx):
        return CALLER["token"]

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=25,
    deadline=None,
    # The same cases on every run: CI stays stable, and the status-code floor below is meaningful.
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate],
)
def test_api(case, data, world):
    _seed_with_world(case, data)
    excluded = EXCLUDED_CHECKS
    if (case.media_type or "").startswith("multipart/"):
        # A form field is text whatever its schema type: a "number" caption arrives as the string "7.0", which is a
        # valid caption, so "schema-violating" multipart data cannot be told from valid data. Every other check runs.
        excluded = [*EXCLUDED_CHECKS, openapi_checks.negative_data_rejection]
    response = case.call_and_validate(excluded_checks=excluded)
    OBSERVED[f"{case.method} {case.path}"][response.status_code] += 1


def test_served_schema_is_the_one_under_test(api, make_user, token_for):
    """The cases above come from the generator; /api/schema/ serves the same document."""
    token = token_for(make_user("reader"))
    response = api(token).get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert json.loads(response.content) == _generated_schema()


# Every operation the served document declares, named as OBSERVED names them.
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in RAW_SCHEMA["paths"].items()
    for method in item
    if method in ("get", "put", "post", "patch", "delete", "head", "options", "trace")
)


def _exercise(label):
    """Run test_api's cases for one operation here, as the pytest plugin builds them (same settings, seed
    and checks), recording into OBSERVED. An operation the schema cannot load fails here."""
    for result in schema.get_all_operations():
        operation = result.ok() if isinstance(result, Ok) else None
        if operation is not None and f"{operation.method.upper()} {operation.path}" == label:
            break
    else:
        raise AssertionError(f"{label}: Schemathesis found no such operation in the schema")
    run = build_operation_test(
        config=schema.config,
        operation=operation,
        test_func=test_api,
        given_kwargs={"data": st.data()},
        feedback=FeedbackSources(constants_value_source=make_constants_value_source(schema)),
    )
    # Each operation on the world as it was (test_api gets a fresh world per operation).
    with contextlib.suppress(_RolledBack), transaction.atomic():
        run(world=None)
        raise _RolledBack


class _RolledBack(Exception):
    pass


@pytest.fixture
def observed(world):
    """OBSERVED for every operation of the schema: what test_api saw in this session, and for any operation it
    did not run (the test alone, `-k`, another order) the same cases run here. Self-contained, whatever ran
    before."""
    for label in OPERATIONS:
        if label not in OBSERVED:
            _exercise(label)
    return OBSERVED


# Alone, it runs every operation's cases itself (about as long as the whole file): more than the suite's timeout
# on a loaded machine.
@pytest.mark.timeout(900)
def test_observed_statuses_reach_past_not_found(observed):
    """The run above reached the objects, not only 404s: every operation answered something other
    than 401/404 at least once, and nearly every operation on one object (a path parameter)
    succeeded (2xx) at least once. Prints the status codes seen per operation."""
    never_answered = [name for name in OPERATIONS if not sum(observed.get(name, {}).values())]
    assert not never_answered, f"these operations were never exercised: {never_answered}"
    width = max(len(name) for name in OPERATIONS)
    for name in OPERATIONS:
        print(f"{name:<{width}}  " + "  ".join(f"{code}×{n}" for code, n in sorted(observed[name].items())))
    only_refused = [name for name in OPERATIONS if set(observed[name]) <= {401, 404}]
    assert not only_refused, f"these operations never got past 401/404: {only_refused}"
    on_objects = [name for name in OPERATIONS if "{" in name]
    never_succeeded = [name for name in on_objects if not any(200 <= code < 300 for code in observed[name])]
    print("never 2xx:", never_succeeded)
    # A few need a body whose fields must agree with each other and with the world (e.g. a
    # preference change); 25 generated examples rarely build one, so the floor is 90%, not all.
    assert len(never_succeeded) <= len(on_objects) // 10, f"too many never reached a real object: {never_succeeded}"
