"""The connector registry through REST: CRUD, validation, transitions, send and idempotency."""
import pytest

from audit.models import AuditEvent
from connectors.models import Connector, Delivery
from connectors.platforms import locmem

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(make_user, token_for, api):
    return api(token_for(make_user("root", superuser=True)))


def create(client, **body):
    body.setdefault("kind", "locmem")
    body.setdefault("display_name", "Test")
    return client.post("/api/v1/connectors/", body, format="json")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def test_create_list_retrieve_update_delete(root):
    r = create(root, id="tg_prod", display_name="Prod", config={}, credentials={"api_key": "s3cret-value"})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "STOPPED" and body["has_credentials"] is True
    assert "credentials" not in body and "s3cret-value" not in r.content.decode()

    listed = root.get("/api/v1/connectors/").json()
    assert [c["id"] for c in listed["results"]] == ["tg_prod"]
    got = root.get("/api/v1/connectors/tg_prod/")
    assert got.status_code == 200 and "s3cret-value" not in got.content.decode()

    patched = root.patch("/api/v1/connectors/tg_prod/", {"display_name": "Renamed"}, format="json")
    assert patched.status_code == 200 and patched.json()["display_name"] == "Renamed"
    assert Connector.objects.get(pk="tg_prod").display_name == "Renamed"

    assert root.delete("/api/v1/connectors/tg_prod/").status_code == 204
    assert not Connector.objects.filter(pk="tg_prod").exists()
    actions = list(AuditEvent.objects.filter(target_id="tg_prod").values_list("action", flat=True))
    for expected in ("connector.register", "connector.get", "connector.update", "connector.delete"):
        assert expected in actions


def test_list_filters_by_kind_and_status(root, make_connector):
    make_connector("a_running", kind="locmem")
    make_connector("b_stopped", kind="locmem", start=False)
    make_connector("c_cli", kind="cli", start=False)
    ids = lambda r: [c["id"] for c in r.json()["results"]]  # noqa: E731
    assert ids(root.get("/api/v1/connectors/?kind=cli")) == ["c_cli"]
    assert ids(root.get("/api/v1/connectors/?status=CONNECTED")) == ["a_running"]
    assert ids(root.get("/api/v1/connectors/?kind=locmem&status=STOPPED")) == ["b_stopped"]
    assert_error(root.get("/api/v1/connectors/?status=BOGUS"), 400, "validation_error")


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"id": "x_one", "kind": "carrier_pigeon"}, "unknown_kind", "kind"),
        ({"id": "x_one", "config": {"fail_with": "sometimes"}}, "invalid_config", "config"),
        ({"id": "x_one", "config": {"unexpected": 1}}, "invalid_config", "config"),
        ({"id": "x_one", "credentials": {"api_key": 12345}}, "invalid_credentials", "credentials"),
        ({"id": "Bad Id!"}, "invalid_id", "id"),
        ({"id": "x_one", "display_name": "   "}, "validation_error", "display_name"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(root, body, code, field):
    before = Connector.objects.count()
    r = create(root, **body)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == code, error
    assert field in str(error["details"]) or field in error["message"]
    assert Connector.objects.count() == before
    # A refused attempt is still audited, without the secret it carried.
    failure = AuditEvent.objects.filter(
        action__in=["connector.register", "api.invalid_request"], result="failure"
    ).last()
    assert failure is not None and "12345" not in str(failure.details)


def test_credential_errors_never_echo_the_secret(root):
    r = create(root, id="x_two", credentials={"api_key": 987654321})
    assert r.status_code == 400
    assert "987654321" not in r.content.decode()


def test_duplicate_id_is_409(root):
    assert create(root, id="dup_one").status_code == 201
    assert_error(create(root, id="dup_one"), 409, "duplicate_id")
    assert Connector.objects.filter(pk="dup_one").count() == 1


def test_malformed_json_is_400(root):
    r = root.post("/api/v1/connectors/", "{not json", content_type="application/json")
    assert_error(r, 400, "parse_error")


def test_status_transitions(root):
    create(root, id="life_one")
    r = root.post("/api/v1/connectors/life_one/stop/")
    error = assert_error(r, 409, "invalid_transition")
    assert error["details"] == {"status": "STOPPED", "requested": "STOPPED"}
    assert root.post("/api/v1/connectors/life_one/start/").json()["status"] == "CONNECTED"
    assert_error(root.post("/api/v1/connectors/life_one/start/"), 409, "invalid_transition")
    assert_error(root.delete("/api/v1/connectors/life_one/"), 409, "connector_running")
    assert root.post("/api/v1/connectors/life_one/disable/").json()["status"] == "DISABLED"
    assert_error(root.post("/api/v1/connectors/life_one/start/"), 409, "invalid_transition")
    assert root.post("/api/v1/connectors/life_one/enable/").json()["status"] == "STOPPED"
    assert root.delete("/api/v1/connectors/life_one/").status_code == 204


def test_failed_start_goes_to_error_with_reason(root, settings):
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "locmem": "tests.connectors.broken.FailingStartConnector"}
    create(root, id="broken_one")
    body = root.post("/api/v1/connectors/broken_one/start/").json()
    assert body["status"] == "ERROR" and "token rejected" in body["last_error"]
    assert AuditEvent.objects.filter(action="connector.start", target_id="broken_one", result="failure").exists()


def test_unknown_connector_is_404(root):
    assert_error(root.get("/api/v1/connectors/nope_nope/"), 404, "not_found")
    assert_error(root.post("/api/v1/connectors/nope_nope/start/"), 404, "not_found")


def test_send_delivers_through_the_platform(root, make_connector, django_capture_on_commit_callbacks):
    make_connector("send_one")
    with django_capture_on_commit_callbacks(execute=True):
        r = root.post("/api/v1/connectors/send_one/send/", {"recipient": "+15550001", "content": "hi"}, format="json")
    assert r.status_code == 202, r.content
    body = r.json()
    # The task runs on commit, after this response was rendered: queued here, sent below.
    assert body["status"] == "queued" and body["delivery_id"]
    assert [(cid, m.recipient, m.content) for cid, m in locmem.outbox] == [("send_one", "+15550001", "hi")]
    got = root.get(f"/api/v1/deliveries/{body['delivery_id']}/").json()
    assert got["status"] == "sent" and got["attempts"] == 1


@pytest.mark.parametrize(
    "content, detail",
    [("", "must not be empty"), ("   ", "must not be empty"), ("x" * 10_001, "10000")],
)
def test_send_refuses_empty_or_too_long_content(root, make_connector, content, detail):
    make_connector("send_two")
    r = root.post("/api/v1/connectors/send_two/send/", {"recipient": "+1555", "content": content}, format="json")
    assert r.status_code == 400
    assert detail in r.content.decode()
    assert Delivery.objects.count() == 0 and locmem.outbox == []


def test_send_on_a_stopped_connector_is_refused(root, make_connector):
    make_connector("send_three", start=False)
    assert_error(
        root.post("/api/v1/connectors/send_three/send/", {"recipient": "a", "content": "b"}, format="json"),
        409,
        "connector_not_running",
    )
    assert Delivery.objects.count() == 0


def test_idempotency_key(root, make_connector, django_capture_on_commit_callbacks):
    make_connector("idem_one")
    url = "/api/v1/connectors/idem_one/send/"
    body = {"recipient": "r1", "content": "once"}
    with django_capture_on_commit_callbacks(execute=True):
        first = root.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = root.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["delivery_id"] == again.json()["delivery_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(locmem.outbox) == 1 and Delivery.objects.count() == 1

    conflict = root.post(url, {"recipient": "r1", "content": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert_error(conflict, 409, "idempotency_conflict")
    assert Delivery.objects.count() == 1


def test_idempotency_conflict_says_what_differs(root, make_connector):
    make_connector("idem_a")
    make_connector("idem_b")
    body = {"recipient": "r1", "content": "same body"}
    first = root.post("/api/v1/connectors/idem_a/send/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-x")
    assert first.status_code == 202

    # The very same body on another connector: the answer must not claim the body differs.
    elsewhere = assert_error(root.post("/api/v1/connectors/idem_b/send/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-x"),
                             409, "idempotency_conflict")
    assert "different request body" not in elsewhere["message"]
    assert "idem_a" in elsewhere["message"]
    assert elsewhere["details"]["connector_id"] == "idem_a"
    assert elsewhere["details"]["delivery_id"] == first.json()["delivery_id"]

    other_recipient = assert_error(root.post("/api/v1/connectors/idem_a/send/", {**body, "recipient": "r2"},
                                             format="json", HTTP_IDEMPOTENCY_KEY="k-x"), 409, "idempotency_conflict")
    assert "different recipient" in other_recipient["message"]
    other_content = assert_error(root.post("/api/v1/connectors/idem_a/send/", {**body, "content": "changed"},
                                           format="json", HTTP_IDEMPOTENCY_KEY="k-x"), 409, "idempotency_conflict")
    assert "different message" in other_content["message"]
    assert Delivery.objects.count() == 1


def test_idempotency_keys_are_per_principal(make_user, token_for, api, make_connector, grant):
    connector = make_connector("idem_two")
    a, b = make_user("ann"), make_user("bob")
    grant(a, "send_via_connector", connector)
    grant(b, "send_via_connector", connector)
    url = "/api/v1/connectors/idem_two/send/"
    ra = api(token_for(a)).post(url, {"recipient": "r", "content": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    rb = api(token_for(b)).post(url, {"recipient": "r", "content": "y"}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    assert ra.status_code == rb.status_code == 202
    assert ra.json()["delivery_id"] != rb.json()["delivery_id"]


def test_error_shape_for_unauthenticated(api):
    r = api().get("/api/v1/connectors/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(r.json()["error"]) == {"code", "message", "details"}


def test_openapi_schema_and_docs_need_login(root, client, make_user):
    assert root.get("/api/schema/").status_code == 200
    assert "/api/v1/connectors/{id}/send/" in root.get("/api/schema/?format=json").json()["paths"]
    assert client.get("/api/schema/").status_code in (401, 403)
    r = client.get("/api/docs/")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]
    client.force_login(make_user("docs_reader"))
    page = client.get("/api/docs/")
    assert page.status_code == 200 and b"swagger" in page.content.lower()
