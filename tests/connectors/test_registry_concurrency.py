"""Races: concurrent registration of one id, and concurrent sends with one idempotency key."""
import pytest

from audit.services import verify_chain
from brain_connectors.shared.errors import Conflict
from connectors import services
from connectors.models import Connector, Delivery
from tests.audit.helpers import seal
from tests.concurrency import run_at_once
from tests.conftest import SYSTEM

THREADS = 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_registration_has_exactly_one_winner():
    results, errors = run_at_once(
        lambda i: services.register_connector(SYSTEM, id="race_one", kind="locmem", display_name=f"racer {i}"),
        THREADS,
    )
    assert len(results) == 1, errors
    assert len(errors) == THREADS - 1
    assert all(isinstance(e, Conflict) and e.code == "duplicate_id" and e.status == 409 for e in errors), errors
    assert Connector.objects.filter(pk="race_one").count() == 1
    seal()  # what the periodic sealer does after commit (PostgreSQL): the chain then holds every row
    report = verify_chain()
    assert report.ok and report.checked >= 1 and report.pending == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registration_over_http_on_postgres(live_server, make_user, token_for):
    import httpx

    token = token_for(make_user("racer", superuser=True))
    url = f"{live_server.url}/api/v1/connectors/"

    def post(i):
        return httpx.post(
            url,
            json={"id": "race_http", "kind": "locmem", "display_name": f"r{i}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).status_code

    statuses, errors = run_at_once(post, THREADS)
    assert not errors
    assert sorted(statuses) == [201] + [409] * (THREADS - 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_with_one_idempotency_key_create_one_delivery(make_connector):
    make_connector("race_send")
    results, errors = run_at_once(
        lambda i: services.send_message(SYSTEM, "race_send", "r", "same body", idempotency_key="one-key"),
        THREADS,
    )
    assert not errors, errors
    assert len({delivery.pk for delivery, _ in results}) == 1
    assert sum(1 for _, replayed in results if not replayed) == 1
    assert Delivery.objects.count() == 1
