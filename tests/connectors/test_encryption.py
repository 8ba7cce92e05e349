"""Encrypted fields: ciphertext at rest, only isnull lookups, loud failure under a wrong key, and
key rotation with `manage.py rotate_keys`."""

import json
import re
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from connectors import services
from connectors.fields import DecryptionError, encrypted_fields
from connectors.models import Connector, Delivery, InboundMessage
from connectors.permissions import Principal

SYSTEM = Principal.system_actor("tests", via="test")
LOCMEM_SECRET = "locmem-api-key-Zq8vX1-do-not-store-me"


def new_key():
    return Fernet.generate_key().decode()


def raw_rows(table, columns="*", where="", params=()):
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {q(table)} {where}", list(params))
        return cursor.fetchall()


def raw_column(model, column):
    """{pk: stored value} of one column, read with SQL, bypassing the field."""
    q = connection.ops.quote_name
    rows = raw_rows(model._meta.db_table, f"{q(model._meta.pk.column)}, {q(column)}")
    return {str(pk): value for pk, value in rows}


def register(connector_id, **credentials):
    return services.register_connector(
        SYSTEM, id=connector_id, kind="locmem", display_name=connector_id.title(), credentials=credentials or None
    )


def inbound(connector, n, content):
    return InboundMessage.objects.create(
        connector=connector, platform_message_id=f"m{n}", sender="alice", content=content, received_at=timezone.now()
    )


def delivery(connector, content):
    return Delivery.objects.create(connector=connector, recipient="bob", content=content, principal="system:tests")


# --- at rest -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_connector_credentials_are_never_stored_in_plain_text(settings):
    connector = register("locmem_secret", api_key=LOCMEM_SECRET)

    stored = raw_column(Connector, "credentials")["locmem_secret"]
    assert LOCMEM_SECRET not in stored and "api_key" not in stored
    # It is ciphertext of the credentials under the configured key, not some other text.
    assert MultiFernet([Fernet(k) for k in settings.FERNET_KEYS]).decrypt(stored.encode()).decode() == json.dumps(
        {"api_key": LOCMEM_SECRET}
    )
    # No column of the connector table nor of the audit log holds the secret.
    for table in (Connector._meta.db_table, AuditEvent._meta.db_table):
        for row in raw_rows(table):
            assert all(LOCMEM_SECRET not in str(value) for value in row), table
    assert AuditEvent.objects.filter(action="connector.register", target_id="locmem_secret").exists()

    # And through the ORM the credentials come back.
    assert Connector.objects.get(pk="locmem_secret").get_credentials() == {"api_key": LOCMEM_SECRET}
    assert connector.has_credentials


@pytest.mark.django_db
def test_changed_credentials_stay_encrypted():
    register("locmem_secret", api_key="first-key-value")
    services.update_connector(SYSTEM, "locmem_secret", credentials={"api_key": LOCMEM_SECRET})

    stored = raw_column(Connector, "credentials")["locmem_secret"]
    assert LOCMEM_SECRET not in stored and "first-key-value" not in stored
    assert Connector.objects.get(pk="locmem_secret").get_credentials() == {"api_key": LOCMEM_SECRET}
    for row in raw_rows(AuditEvent._meta.db_table):
        assert all(LOCMEM_SECRET not in str(value) for value in row)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text", ["hello there", "", "ünïcödé — 日本語 — 🙂", "x" * 20_000, "line one\nline two\t'quoted' \"double\""]
)
def test_encrypted_text_round_trips_and_is_ciphertext_at_rest(text):
    connector = register("locmem_main")
    message = inbound(connector, 1, text)
    sent = delivery(connector, text)

    stored_inbound = raw_column(InboundMessage, "content")[str(message.pk)]
    [stored_delivery] = raw_column(Delivery, "content").values()
    for stored in (stored_inbound, stored_delivery):
        assert stored != text
        assert stored.startswith("gAAAAA")  # a Fernet token
        if text:
            assert text not in stored
    # Same plaintext, different ciphertext: nothing about equal values leaks.
    assert stored_inbound != stored_delivery

    assert InboundMessage.objects.get(pk=message.pk).content == text
    assert Delivery.objects.get(pk=sent.pk).content == text
    assert list(InboundMessage.objects.values_list("content", flat=True)) == [text]


# --- lookups ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_isnull_lookup_works():
    connector = register("locmem_main", api_key=LOCMEM_SECRET)
    inbound(connector, 1, "hello")
    assert InboundMessage.objects.filter(content__isnull=False).count() == 1
    assert InboundMessage.objects.filter(content__isnull=True).count() == 0
    assert list(Connector.objects.filter(credentials__isnull=False).values_list("pk", flat=True)) == ["locmem_main"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "lookup, value",
    [
        ("content", "hello"),
        ("content__exact", "hello"),
        ("content__iexact", "hello"),
        ("content__contains", "ell"),
        ("content__icontains", "ell"),
        ("content__startswith", "he"),
        ("content__endswith", "lo"),
        ("content__in", ["hello"]),
        ("content__gt", "a"),
        ("content__regex", "^h"),
        ("content__lower", "hello"),
        ("content__lower__exact", "hello"),
    ],
)
def test_other_lookups_raise_field_error(lookup, value):
    connector = register("locmem_main")
    inbound(connector, 1, "hello")
    with pytest.raises(FieldError, match="isnull|transforms"):
        list(InboundMessage.objects.filter(**{lookup: value}))
    with pytest.raises(FieldError):
        list(InboundMessage.objects.exclude(**{lookup: value}))


@pytest.mark.django_db
def test_credentials_cannot_be_searched():
    register("locmem_main", api_key=LOCMEM_SECRET)
    with pytest.raises(FieldError, match="isnull"):
        Connector.objects.filter(credentials__contains=LOCMEM_SECRET).exists()
    with pytest.raises(FieldError, match="isnull"):
        Connector.objects.filter(credentials="").exists()


# --- wrong key -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_wrong_key_fails_loudly(settings, make_user, token_for, api):
    connector = register("locmem_main", api_key=LOCMEM_SECRET)
    message = inbound(connector, 1, "hello")
    stored = raw_column(Connector, "credentials")["locmem_main"]

    settings.FERNET_KEYS = [new_key()]

    with pytest.raises(DecryptionError, match="Connector.credentials") as exc:
        Connector.objects.get(pk="locmem_main")
    assert "FERNET_KEYS" in str(exc.value)
    assert stored not in str(exc.value)  # the error does not echo the ciphertext
    with pytest.raises(DecryptionError, match="InboundMessage.content"):
        InboundMessage.objects.get(pk=message.pk)
    with pytest.raises(DecryptionError):
        list(InboundMessage.objects.values_list("content", flat=True))

    # Over the API: a clear 500 in the error shape, never ciphertext passed off as the value.
    admin = make_user("root", superuser=True)
    response = api(token_for(admin)).get("/api/v1/connectors/locmem_main/")
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "decryption_failed"
    assert stored not in response.content.decode()


@pytest.mark.django_db
def test_old_key_still_decrypts_when_listed_after_the_new_one(settings):
    key_a, key_b = new_key(), new_key()
    settings.FERNET_KEYS = [key_a]
    register("locmem_main", api_key=LOCMEM_SECRET)
    settings.FERNET_KEYS = [key_b, key_a]
    assert Connector.objects.get(pk="locmem_main").get_credentials() == {"api_key": LOCMEM_SECRET}
    # New writes use the first key.
    services.update_connector(SYSTEM, "locmem_main", credentials={"api_key": "newer"})
    Fernet(key_b).decrypt(raw_column(Connector, "credentials")["locmem_main"].encode())


# --- rotate_keys -----------------------------------------------------------------------------

# Every encrypted column the project has, as rotate_keys finds them (new ones are covered too).
ENCRYPTED_COLUMNS = [(f"{model._meta.label}.{field.name}", model, field.column) for model, field in encrypted_fields()]


def test_the_known_encrypted_columns_are_found():
    labels = {label for label, _, _ in ENCRYPTED_COLUMNS}
    assert {
        "connectors.Connector.credentials",
        "connectors.InboundMessage.content",
        "connectors.Delivery.content",
    } <= labels


def make_encrypted_rows(prefix):
    """Rows in every encrypted column; returns what they must decrypt to."""
    plain = {}
    for n in range(3):
        connector = register(f"{prefix}_{n}", api_key=f"{prefix}-api-key-{n}")
        plain[(Connector, connector.pk)] = ("credentials", json.dumps({"api_key": f"{prefix}-api-key-{n}"}))
        for m in range(2):
            msg = inbound(connector, m, f"{prefix} inbound {n}/{m}")
            plain[(InboundMessage, msg.pk)] = ("content", msg.content)
            out = delivery(connector, f"{prefix} reply {n}/{m}")
            plain[(Delivery, out.pk)] = ("content", out.content)
    return plain


def assert_all_decrypt(plain):
    for (model, pk), (field, text) in plain.items():
        assert getattr(model.objects.get(pk=pk), field) == text


def snapshot():
    """{label: {pk: ciphertext}} of every non-null encrypted value (the ones rotate_keys handles)."""
    return {
        label: {pk: value for pk, value in raw_column(model, column).items() if value is not None}
        for label, model, column in ENCRYPTED_COLUMNS
    }


def counts(output):
    """{label: (re-encrypted, already current)} from rotate_keys' report."""
    found = re.findall(r"^(\S+): (\d+) re-encrypted, (\d+) already under the first key$", output, re.M)
    return {label: (int(a), int(b)) for label, a, b in found}


def rotate(*args):
    out = StringIO()
    call_command("rotate_keys", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize("batch_args", [[], ["--batch-size", "2"], ["--batch-size", "1"]])
def test_rotate_keys_moves_every_value_to_the_new_key(settings, batch_args):
    key_a, key_b = new_key(), new_key()
    settings.FERNET_KEYS = [key_a]
    plain = make_encrypted_rows("old")
    before = snapshot()

    settings.FERNET_KEYS = [key_b, key_a]
    output = rotate(*batch_args)
    assert "Key rotation complete." in output
    totals = {label: len(before[label]) for label, _, _ in ENCRYPTED_COLUMNS}
    assert counts(output) == {label: (total, 0) for label, total in totals.items()}

    after = snapshot()
    for label, _, _ in ENCRYPTED_COLUMNS:
        assert after[label].keys() == before[label].keys()
        for pk, token in after[label].items():
            assert token != before[label][pk]
            Fernet(key_b).decrypt(token.encode())
            with pytest.raises(InvalidToken):
                Fernet(key_a).decrypt(token.encode())

    # The old key can go: everything still decrypts with the new key alone.
    settings.FERNET_KEYS = [key_b]
    assert_all_decrypt(plain)

    # Running again finds nothing to do and changes nothing.
    output = rotate(*batch_args)
    assert counts(output) == {label: (0, total) for label, total in totals.items()}
    assert snapshot() == after

    rotations = AuditEvent.objects.filter(action="keys.rotate").order_by("id")
    assert rotations.count() == 2
    assert rotations.first().details["fields"]["connectors.Delivery.content"] == {
        "rotated": totals["connectors.Delivery.content"],
        "already_current": 0,
    }


@pytest.mark.django_db
def test_rotate_keys_skips_values_already_under_the_new_key(settings):
    """A run stopped half-way (or values the service wrote meanwhile) is continued, not redone."""
    key_a, key_b = new_key(), new_key()
    settings.FERNET_KEYS = [key_a]
    plain = make_encrypted_rows("old")
    old = snapshot()
    settings.FERNET_KEYS = [key_b, key_a]
    plain.update(make_encrypted_rows("new"))  # written under key B already
    before = snapshot()

    output = rotate()
    expected = {label: (len(old[label]), len(before[label]) - len(old[label])) for label, _, _ in ENCRYPTED_COLUMNS}
    assert expected["connectors.Connector.credentials"] == (3, 3)
    assert expected["connectors.InboundMessage.content"] == expected["connectors.Delivery.content"] == (6, 6)
    assert counts(output) == expected
    after = snapshot()
    for label, _, _ in ENCRYPTED_COLUMNS:
        for pk, token in after[label].items():
            if pk in old[label]:
                assert token != before[label][pk], "a value under the old key was not rotated"
            else:
                assert token == before[label][pk], "a value already under the first key was rewritten"

    settings.FERNET_KEYS = [key_b]
    assert_all_decrypt(plain)


@pytest.mark.django_db
@pytest.mark.parametrize("batch_args", [[], ["--batch-size", "1"]])
def test_rotate_keys_stops_clearly_at_a_value_no_key_decrypts(settings, batch_args):
    key_a, key_b, lost_key = new_key(), new_key(), new_key()
    settings.FERNET_KEYS = [key_a]
    register("conn_a", api_key="secret-a")
    register("conn_b", api_key="secret-b")
    settings.FERNET_KEYS = [lost_key]
    register("conn_c", api_key="secret-c")
    settings.FERNET_KEYS = [key_a]
    register("conn_d", api_key="secret-d")

    settings.FERNET_KEYS = [key_b, key_a]
    with pytest.raises(CommandError) as exc:
        rotate(*batch_args)
    message = str(exc.value)
    assert "connectors.Connector.credentials row conn_c" in message
    assert "no key in FERNET_KEYS decrypts it" in message
    assert not AuditEvent.objects.filter(action="keys.rotate").exists()

    stored = raw_column(Connector, "credentials")
    # The rows before the bad one are done, the bad one is untouched, the rest wait for a rerun.
    for done in ("conn_a", "conn_b"):
        Fernet(key_b).decrypt(stored[done].encode())
    Fernet(lost_key).decrypt(stored["conn_c"].encode())
    Fernet(key_a).decrypt(stored["conn_d"].encode())

    # With the lost key found, a rerun finishes the job and skips what is done.
    settings.FERNET_KEYS = [key_b, key_a, lost_key]
    assert counts(rotate(*batch_args))["connectors.Connector.credentials"] == (2, 2)
    settings.FERNET_KEYS = [key_b]
    assert [Connector.objects.get(pk=f"conn_{x}").get_credentials()["api_key"] for x in "abcd"] == [
        f"secret-{x}" for x in "abcd"
    ]


@pytest.mark.django_db
def test_rotate_keys_refuses_a_bad_batch_size():
    with pytest.raises(CommandError, match="batch-size"):
        rotate("--batch-size", "0")


@pytest.mark.django_db
def test_no_keys_at_all_fails_loudly(settings):
    register("locmem_main", api_key=LOCMEM_SECRET)
    settings.FERNET_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="FERNET_KEYS is not set"):
        Connector.objects.get(pk="locmem_main")
    with pytest.raises(ImproperlyConfigured, match="FERNET_KEYS is not set"):
        register("locmem_other", api_key="another")
    assert list(raw_column(Connector, "credentials")) == ["locmem_main"]
