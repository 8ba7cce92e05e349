"""`manage.py rotate_keys` while the service keeps writing (README: "safe while the service runs").

The service, restarted with FERNET_KEYS=new,old, writes under the new key: new deliveries, inbound messages and
rewrites of values rotate_keys is about to re-encrypt (a connector's platform
secret). Afterwards every encrypted value of every column decrypts under the new key alone, none under the old
one, and nothing written meanwhile is lost or overwritten with its older value.

- forced interleaving (every database): service writes run between rotate_keys reading a batch and writing it
  back, in the columns that batch belongs to;
- free-running (PostgreSQL): a writer thread keeps writing through the service for the whole run.
"""
import threading
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection, connections

from connectors import services
from connectors.fields import encrypted_fields
from connectors.management.commands.rotate_keys import Command
from connectors.models import Connector, Delivery, InboundMessage
from connectors.platforms.base import IncomingMessage
from tests.concurrency import wait_until
from tests.conftest import SYSTEM

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


class World:
    """What the service was asked to write, to compare with what the tables hold afterwards."""

    def __init__(self):
        self.sent, self.received, self.secrets = {}, {}, {}
        self.count = 0

    def send(self, connector="rot_a"):
        self.count += 1
        text = f"outbound {self.count} on {connector}"
        delivery, _ = services.send_message(SYSTEM, connector, "ada", text)
        self.sent[str(delivery.pk)] = text

    def receive(self, connector="rot_a"):
        self.count += 1
        text = f"inbound {self.count} on {connector}"
        inbound, _ = services.receive_message(connector, IncomingMessage(sender="ada", content=text,
                                                                         platform_message_id=f"m{self.count}"))
        self.received[inbound.pk] = text

    def new_secret(self, connector):
        self.count += 1
        self.secrets[connector] = f"secret {self.count} of {connector}"
        services.save_platform_secret(connector, self.secrets[connector])


def raw_values():
    """{(label, pk): stored token} of every encrypted column, read past the ORM."""
    q = connection.ops.quote_name
    values = {}
    for model, field in encrypted_fields():
        table, pk, col = q(model._meta.db_table), q(model._meta.pk.column), q(field.column)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {pk}, {col} FROM {table} WHERE {col} IS NOT NULL AND {col} <> ''")  # noqa: S608
            for row_pk, token in cursor.fetchall():
                values[(f"{model._meta.label}.{field.name}", row_pk)] = token
    return values


def seed(settings, make_connector, world, rounds=4):
    settings.FERNET_KEYS = [OLD]
    for name in ("rot_a", "rot_b"):
        make_connector(name)
        world.new_secret(name)
    for _ in range(rounds):
        world.send("rot_a")
        world.send("rot_b")
        world.receive("rot_a")
    settings.FERNET_KEYS = [NEW, OLD]  # "put the new key first, restart the service"


def assert_all_under_the_new_key_and_nothing_lost(settings, world):
    values = raw_values()
    labels = {label for label, _ in values}
    assert {"connectors.Delivery.content", "connectors.InboundMessage.content",
            "connectors.Connector.platform_secret"} <= labels
    for where, token in values.items():
        Fernet(NEW).decrypt(token.encode())
        with pytest.raises(InvalidToken):
            Fernet(OLD).decrypt(token.encode())
            pytest.fail(f"{where} still decrypts under the old key")
    settings.FERNET_KEYS = [NEW]  # "remove the old key": everything written still reads, as written
    # BRAIN's replies to inbound messages are deliveries too (when their tasks run): those sent are all there.
    assert world.sent.items() <= {str(pk): c for pk, c in Delivery.objects.values_list("pk", "content")}.items()
    assert dict(InboundMessage.objects.values_list("pk", "content")) == world.received
    assert dict(Connector.objects.values_list("pk", "platform_secret")) == world.secrets


@pytest.mark.django_db
def test_service_writes_between_reading_and_writing_a_batch(settings, make_connector, monkeypatch):
    world = World()
    seed(settings, make_connector, world)
    real_write = Command._write
    columns_hit = []

    def write_after_the_service(table, pk, col, updates):
        """Between rotate_keys' read of a batch and its compare-and-set, the service writes to that very column."""
        column, name = col.strip('"`'), table.strip('"`')
        if (name, column) in columns_hit:  # once per column: each write adds rows for later batches to read
            return real_write(table, pk, col, updates)
        columns_hit.append((name, column))
        if column == "platform_secret":
            # Rewrites a value this batch is about to re-encrypt: rotate_keys must leave the new one alone.
            for connector in ("rot_a", "rot_b"):
                world.new_secret(connector)
        elif name == "connectors_delivery":
            world.send("rot_b")  # a new row, whose uuid sorts before or after the cursor
        elif name == "connectors_inboundmessage":
            world.receive("rot_b")
        return real_write(table, pk, col, updates)

    monkeypatch.setattr(Command, "_write", staticmethod(write_after_the_service))
    out = StringIO()
    call_command("rotate_keys", "--batch-size", "3", stdout=out, stderr=StringIO())
    assert {("connectors_connector", "platform_secret"), ("connectors_delivery", "content"),
            ("connectors_inboundmessage", "content")} <= set(columns_hit)
    assert_all_under_the_new_key_and_nothing_lost(settings, world)
    # The rewritten secrets were left alone: the compare-and-set saw them change.
    assert "connectors.Connector.platform_secret: 0 re-encrypted" in out.getvalue()
    # A second run has nothing left to do.
    again = StringIO()
    monkeypatch.setattr(Command, "_write", staticmethod(real_write))
    call_command("rotate_keys", stdout=again, stderr=StringIO())
    assert "connectors.Delivery.content: 0 re-encrypted" in again.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_writer_thread_keeps_writing_through_the_whole_rotation(settings, make_connector):
    world = World()
    seed(settings, make_connector, world, rounds=2)  # each write runs its tasks here (eager, committed): keep it short
    done, errors = threading.Event(), []

    def writer():
        try:
            for _ in range(6):  # a short run
                if done.is_set():
                    break
                world.send("rot_a")
                world.new_secret("rot_b")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    before = world.count
    thread.start()
    wait_until(lambda: world.count > before, 30, "the writer's first write")
    try:
        call_command("rotate_keys", "--batch-size", "4", stdout=StringIO(), stderr=StringIO())
    finally:
        done.set()
        thread.join(30)
    assert not thread.is_alive() and errors == []
    assert_all_under_the_new_key_and_nothing_lost(settings, world)
