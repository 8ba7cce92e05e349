"""API tokens: stored only as digests, refused with a 401 (and an audit row) when bad, managed with
`create_api_token` / `revoke_api_token` and under /api/v1/tokens/."""

import hashlib
import secrets
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from connectors.models import ApiToken
from connectors.permissions import Principal
from connectors.tokens import TOKEN_RE, revoke_token

SYSTEM = Principal.system_actor("tests", via="test")
CONNECTORS = "/api/v1/connectors/"
TOKENS = "/api/v1/tokens/"


def digest(token):  # README: "Only its SHA-256 digest is stored": computed here, not imported from connectors.tokens
    return hashlib.sha256(token.encode()).hexdigest()


def secret_of(token):
    return TOKEN_RE.match(token).group(2)


def prefix_of(token):
    return TOKEN_RE.match(token).group(1)


def whole_database_text():
    """Every value in every table, as text."""
    if connection.vendor == "sqlite":
        return "\n".join(connection.connection.iterdump())
    q = connection.ops.quote_name
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT t::text FROM {q(table)} AS t")
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


def assert_error_shape(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


def denied_auth_rows():
    return list(AuditEvent.objects.filter(action="auth.token", result="denied").order_by("id"))


# --- at rest ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tokens_are_never_stored_in_plain_text(make_user, token_for, api):
    alice = make_user("alice")
    token = token_for(alice, name="laptop")
    revoked = token_for(alice)
    revoke_token(SYSTEM, prefix_of(revoked))
    assert api(token).get(CONNECTORS).status_code == 200  # used once: last_used_at is written
    # A refused, well-formed token leaves its prefix in the audit log, never its secret.
    unknown = f"bct_{prefix_of(token)}_{secrets.token_urlsafe(32)}"
    assert api(unknown).get(CONNECTORS).status_code == 401
    assert api(revoked).get(CONNECTORS).status_code == 401

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(ApiToken._meta.db_table)}")
        token_rows = cursor.fetchall()
    assert len(token_rows) == 2
    stored = "\n".join(str(value) for row in token_rows for value in row)
    everything = whole_database_text()
    for text in (stored, everything):
        for plain in (token, revoked, unknown):
            assert plain not in text
            assert secret_of(plain) not in text
        # The scan does see the rows: the digests and the public prefixes are there.
        assert digest(token) in text and digest(revoked) in text
        assert prefix_of(token) in text


# --- refused tokens --------------------------------------------------------------------------


def _expired(make_user, token_for):
    token = token_for(make_user("alice"))
    ApiToken.objects.filter(prefix=prefix_of(token)).update(expires_at=timezone.now() - timedelta(seconds=1))
    return token, "expired", prefix_of(token)


def _revoked(make_user, token_for):
    token = token_for(make_user("alice"))
    revoke_token(SYSTEM, prefix_of(token))
    return token, "revoked", prefix_of(token)


def _unknown(make_user, token_for):
    return f"bct_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}", "unknown", None


def _unknown_secret_of_a_known_prefix(make_user, token_for):
    token = token_for(make_user("alice"))
    forged = f"bct_{prefix_of(token)}_{secrets.token_urlsafe(32)}"
    return forged, "unknown", prefix_of(token)


def _inactive_user(make_user, token_for):
    user = make_user("alice")
    token = token_for(user)
    user.is_active = False
    user.save()
    return token, "inactive_user", prefix_of(token)


def _malformed(value):
    def make(make_user, token_for):
        token_for(make_user("alice"))  # a valid token exists; the malformed one is not it
        return value, "malformed", ""

    return make


REFUSED = {
    "expired": _expired,
    "revoked": _revoked,
    "unknown": _unknown,
    "unknown-secret-known-prefix": _unknown_secret_of_a_known_prefix,
    "inactive-user": _inactive_user,
    "malformed-garbage": _malformed("not-a-token"),
    "malformed-short": _malformed("bct_abc_def"),
    "malformed-uppercase-prefix": _malformed("bct_ABCDEF12_" + "a" * 43),
    "malformed-truncated": _malformed("bct_abcdef12_" + "a" * 42),
    "malformed-trailing": _malformed("bct_abcdef12_" + "a" * 43 + "!"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_refused_tokens_get_401_and_an_audit_row(case, make_user, token_for, api):
    token, reason, prefix = case(make_user, token_for)
    before = len(denied_auth_rows())

    response = api(token).get(CONNECTORS)

    error = assert_error_shape(response, 401)
    assert error["code"] == "authentication_failed"
    assert reason.replace("_", " ") in error["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert token not in response.content.decode()

    rows = denied_auth_rows()
    assert len(rows) == before + 1, "one denied auth.token row for the first refusal of its kind in a window"
    row = rows[-1]
    assert row.principal == "anonymous"
    assert row.details == {"via": "api", "reason": reason, "ip": "127.0.0.1"}
    assert row.target_type == "api_token"
    if prefix is not None:
        assert row.target_id == prefix
    assert token not in str(row.details) and token not in row.target_id


@pytest.mark.django_db
def test_no_credentials_get_401_in_the_error_shape_without_an_auth_row(api):
    error = assert_error_shape(api().get(CONNECTORS), 401)
    assert error["code"] == "not_authenticated"
    assert denied_auth_rows() == []


@pytest.mark.django_db
def test_a_good_token_works(make_user, token_for, api, make_connector, grant):
    alice = make_user("alice")
    connector = make_connector("locmem_main")
    grant(alice, "view_connector", connector)
    token = token_for(alice)

    response = api(token).get(CONNECTORS)
    assert response.status_code == 200, response.content
    assert [c["id"] for c in response.json()["results"]] == ["locmem_main"]
    assert denied_auth_rows() == []
    assert ApiToken.objects.get(prefix=prefix_of(token)).last_used_at is not None
    # The request ran as alice.
    assert AuditEvent.objects.filter(action="connector.list", principal="user:alice").exists()


@pytest.mark.django_db
def test_a_token_stops_working_when_it_expires(make_user, token_for, api):
    token = token_for(make_user("alice"), expires_in="1m")
    assert api(token).get(CONNECTORS).status_code == 200
    ApiToken.objects.filter(prefix=prefix_of(token)).update(expires_at=timezone.now())
    assert api(token).get(CONNECTORS).status_code == 401


# --- create_api_token ------------------------------------------------------------------------


@pytest.mark.slow
def test_create_api_token_command_prints_a_working_token(manage, make_user, api):
    make_user("alice")
    started = timezone.now()
    done = manage("create_api_token", "alice", "--expires-in", "1h", "--name", "ci")
    assert done.returncode == 0, done.stderr

    last_line = done.stdout.rstrip("\n").split("\n")[-1]
    assert TOKEN_RE.fullmatch(last_line), repr(done.stdout)
    token = last_line
    assert secret_of(token) not in done.stderr  # the notice names the prefix only
    assert prefix_of(token) in done.stderr

    stored = ApiToken.objects.get(prefix=prefix_of(token))
    assert stored.user.username == "alice" and stored.name == "ci"
    assert stored.digest == digest(token)
    assert started + timedelta(minutes=59) < stored.expires_at < timezone.now() + timedelta(minutes=61)

    response = api(token).get(CONNECTORS)
    assert response.status_code == 200, response.content
    assert AuditEvent.objects.filter(action="token.create", target_id=prefix_of(token)).exists()


@pytest.mark.django_db
def test_create_api_token_via_call_command(make_user, api):
    make_user("bob")
    out = StringIO()
    call_command("create_api_token", "bob", "--expires-in", "30m", stdout=out, stderr=StringIO())
    token = out.getvalue().rstrip("\n").split("\n")[-1]
    assert TOKEN_RE.fullmatch(token)
    stored = ApiToken.objects.get(prefix=prefix_of(token))
    assert stored.digest == digest(token) and timedelta(minutes=29) < stored.expires_at - timezone.now() <= timedelta(minutes=30)
    assert api(token).get(CONNECTORS).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["1x", "h", "0h", "0d", "1.5h", "99999d", "1 h", "-1h", "1hour"])
def test_create_api_token_refuses_an_invalid_lifetime(value, make_user):
    make_user("alice")
    with pytest.raises(CommandError, match=r"(?i)duration|lifetime"):
        call_command("create_api_token", "alice", f"--expires-in={value}", stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_create_api_token_refuses_an_unknown_user(make_user):
    make_user("alice")
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost", stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_create_api_token_refuses_an_inactive_user(make_user):
    user = make_user("alice")
    user.is_active = False
    user.save()
    with pytest.raises(CommandError, match="inactive"):
        call_command("create_api_token", "alice", stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.slow
def test_create_api_token_errors_exit_non_zero(manage, make_user):
    make_user("alice")
    done = manage("create_api_token", "ghost")
    assert done.returncode != 0 and "No user named 'ghost'" in done.stderr
    done = manage("create_api_token", "alice", "--expires-in", "soon")
    assert done.returncode != 0 and "Invalid duration" in done.stderr
    assert not ApiToken.objects.exists()


# --- revoke_api_token ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("form", ["token", "prefix", "bct_prefix", "display"])
def test_revoke_api_token_command(form, make_user, token_for, api):
    token = token_for(make_user("alice"))
    other = token_for(make_user("bob"))
    assert api(token).get(CONNECTORS).status_code == 200
    prefix = prefix_of(token)
    argument = {"token": token, "prefix": prefix, "bct_prefix": f"bct_{prefix}", "display": f"bct_{prefix}…"}[form]

    out = StringIO()
    call_command("revoke_api_token", argument, stdout=out, stderr=StringIO())
    assert f"Revoked bct_{prefix}" in out.getvalue()

    assert ApiToken.objects.get(prefix=prefix).revoked_at is not None
    error = assert_error_shape(api(token).get(CONNECTORS), 401)
    assert "revoked" in error["message"]
    assert api(other).get(CONNECTORS).status_code == 200  # only that token
    assert AuditEvent.objects.filter(action="token.revoke", target_id=prefix, result="success").exists()


@pytest.mark.django_db
def test_revoke_api_token_refuses_an_unknown_prefix(make_user, token_for):
    token_for(make_user("alice"))
    with pytest.raises(CommandError, match="No token with prefix 'deadbeef'"):
        call_command("revoke_api_token", "deadbeef", stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()
    assert AuditEvent.objects.filter(action="token.revoke", target_id="deadbeef", result="failure").exists()


# --- /api/v1/tokens/ -------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_own_tokens_without_secrets(make_user, token_for, api):
    alice, bob = make_user("alice"), make_user("bob")
    mine = [token_for(alice, name="laptop"), token_for(alice, name="ci")]
    revoke_token(SYSTEM, prefix_of(mine[1]))
    theirs = token_for(bob, name="bob's")

    response = api(mine[0]).get(TOKENS)
    assert response.status_code == 200, response.content
    items = response.json()
    assert sorted(i["prefix"] for i in items) == sorted(prefix_of(t) for t in mine)
    for item in items:
        assert set(item) == {"prefix", "name", "created_at", "expires_at", "revoked_at", "last_used_at"}
    by_prefix = {i["prefix"]: i for i in items}
    assert by_prefix[prefix_of(mine[0])]["name"] == "laptop"
    assert by_prefix[prefix_of(mine[1])]["revoked_at"] is not None
    assert by_prefix[prefix_of(mine[0])]["revoked_at"] is None

    text = response.content.decode()
    for token in [*mine, theirs]:
        assert secret_of(token) not in text and digest(token) not in text
    assert prefix_of(theirs) not in text


@pytest.mark.django_db
def test_list_tokens_needs_authentication(api):
    assert_error_shape(api().get(TOKENS), 401)


@pytest.mark.django_db
def test_delete_revokes_own_token(make_user, token_for, api):
    alice = make_user("alice")
    current, spare = token_for(alice), token_for(alice)

    response = api(current).delete(f"{TOKENS}{prefix_of(spare)}/")
    assert response.status_code == 204, response.content
    assert ApiToken.objects.get(prefix=prefix_of(spare)).revoked_at is not None
    assert api(spare).get(CONNECTORS).status_code == 401
    assert api(current).get(CONNECTORS).status_code == 200

    # Revoking the token in use works too; it is refused from then on.
    assert api(current).delete(f"{TOKENS}{prefix_of(current)}/").status_code == 204
    assert_error_shape(api(current).get(CONNECTORS), 401)


@pytest.mark.django_db
def test_delete_of_another_users_token_is_refused_and_changes_nothing(make_user, token_for, api):
    alice, bob = make_user("alice"), make_user("bob")
    alices, bobs = token_for(alice), token_for(bob)

    response = api(alices).delete(f"{TOKENS}{prefix_of(bobs)}/")
    error = assert_error_shape(response, 404)  # README: 404 for an object "you may not view", like a missing one
    assert error["code"] == "not_found"

    assert ApiToken.objects.get(prefix=prefix_of(bobs)).revoked_at is None
    assert api(bobs).get(CONNECTORS).status_code == 200
    assert AuditEvent.objects.filter(action="token.revoke", target_id=prefix_of(bobs), result="denied").exists()


@pytest.mark.django_db
def test_delete_of_an_unknown_token_is_404(make_user, token_for, api):
    token = token_for(make_user("alice"))
    error = assert_error_shape(api(token).delete(f"{TOKENS}deadbeef/"), 404)
    assert error["code"] == "not_found"
    assert AuditEvent.objects.filter(
        action="token.revoke", target_id="deadbeef", result="failure", principal="user:alice"
    ).exists()


@pytest.mark.django_db
def test_a_superuser_may_revoke_anyones_token(make_user, token_for, api):
    root, bob = make_user("root", superuser=True), make_user("bob")
    bobs = token_for(bob)
    assert api(token_for(root)).delete(f"{TOKENS}{prefix_of(bobs)}/").status_code == 204
    assert api(bobs).get(CONNECTORS).status_code == 401


@pytest.mark.django_db
def test_other_authorization_schemes_are_not_bearer_tokens(make_user, token_for):
    token = token_for(make_user("alice"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert_error_shape(client.get(CONNECTORS), 401)
    assert denied_auth_rows() == []
