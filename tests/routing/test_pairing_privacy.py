"""Issue 14, item 1: where BRAIN delivers the pairing code to the address itself (email, or any
platform that declares `delivers_pairing_code`), only that address ever sees the code: not the
person who asked, not the pending list, conversation memory, the search index, events, audit
rows or logs. Such sends are limited per account and per address. Codes that people send to
BRAIN (Telegram, SMS, CLI…) are not kept in conversation memory either."""
import json
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import RateLimited, ValidationFailed
from brain_connectors.shared.log_redaction import redact
from connectors import services as connector_services
from connectors.models import Delivery, Event
from connectors.permissions import Principal
from connectors.platforms import locmem
from connectors.platforms.base import IncomingMessage
from connectors.platforms.locmem import LocmemConnector
from conversations.models import Message, PendingMessage
from conversations.services import context_for_address, search
from routing.models import ChannelIdentity, PairingCode
from routing.pairing import codes, issue, redeem
from tests.conftest import SYSTEM
from tests.connectors import telegram_support
from tests.connectors.telegram_support import ADA, fixture, post_update, secret_of

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram

PAIRING_CODES = "/api/v1/pairing-codes/"
LINK = re.compile(r"/preferences/pair/([A-Z0-9]{8})/")


class RelayConnector(LocmemConnector):
    """A made-up platform that, like email, sends the pairing code to the address itself."""

    delivers_pairing_code = True


def me(user):
    return Principal.for_user(user, via="test")


@pytest.fixture
def mailer(make_connector, settings):
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    return make_connector("mail", kind="email", config={"from_address": "brain@example.org"})


@pytest.fixture
def relay(make_connector, settings):
    settings.CONNECTOR_CLASSES = {**settings.CONNECTOR_CLASSES, "relay": f"{__name__}.RelayConnector"}
    settings.ROUTING_PAIRABLE_KINDS = (*codes.PAIRABLE_KINDS, "relay")
    return make_connector("relay_main", kind="relay")


def mailed_codes():
    return [LINK.search(message.body).group(1) for message in mail.outbox]


def everything_stored_as_text():
    """What the database holds outside the encrypted delivery: memory, events, audit rows."""
    return json.dumps(
        {
            "memory": [m.content for m in Message.objects.all()],
            "metadata": [m.metadata for m in Message.objects.all()],
            "pending": [(p.content, p.metadata) for p in PendingMessage.objects.all()],
            "events": [e.data for e in Event.objects.all()],
            "audit": [(a.action, a.target_id, a.details) for a in AuditEvent.objects.all()],
            "pairing": [(p.address, p.digest) for p in PairingCode.objects.all()],
        },
        default=str,
    )


# --- the code reaches the mailbox only --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_emailed_code_is_not_in_the_answer_nor_the_pending_list(mailer, make_user, api, token_for):
    mallory = make_user("mallory")  # signed in, holds no permission at all
    client = api(token_for(mallory))

    response = client.post(PAIRING_CODES, {"connector": "mail", "address": "victim@example.org"}, format="json")

    assert response.status_code == 201, response.content
    [code] = mailed_codes()
    text = response.content.decode()
    assert code not in text and "/preferences/pair/" not in text
    body = response.json()
    assert "code" not in body
    assert body["delivered_to"] == "v•••@example.org"
    assert "v•••@example.org" in body["instructions"] and "victim@example.org" not in body["instructions"]
    assert response["Cache-Control"] == "no-store"
    listing = client.get(PAIRING_CODES)
    assert listing.status_code == 200 and code not in listing.content.decode()
    # Without the code, the link cannot be confirmed: the address stays unpaired.
    assert ChannelIdentity.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_an_emailed_code_is_kept_nowhere_but_in_the_mail(mailer, make_user, api, token_for, client):
    ada = make_user("ada")
    issued = issue.request_pairing_code(me(ada), ada, "mail", "ada@example.org")
    assert issued.code is None  # the service never hands it to an edge
    [code] = mailed_codes()

    stored = everything_stored_as_text()
    assert code not in stored and code.lower() not in stored and "/preferences/pair/" not in stored
    # Memory keeps that a pairing mail went out, not its link.
    [message] = Message.objects.filter(conversation__connector_id="mail")
    assert message.role == "system" and "pairing" in message.content
    assert search(SYSTEM, code) == []
    assert context_for_address(SYSTEM, "mail", "ada@example.org")[0]["content"] == message.content

    # Staff who may see the delivery (a superuser here) do not see the mail's text either.
    root = make_user("root", superuser=True)
    delivery = Delivery.objects.get()
    detail = api(token_for(root)).get(f"/api/v1/deliveries/{delivery.pk}/")
    assert detail.status_code == 200 and code not in detail.content.decode()
    client.force_login(root)
    page = client.get(f"/admin/connectors/delivery/{delivery.pk}/change/")
    assert page.status_code == 200 and code not in page.content.decode()

    # The owner still pairs with the mailed link.
    browser = type(client)()
    browser.force_login(ada)
    assert browser.post(f"/preferences/pair/{code}/").status_code == 200
    assert ChannelIdentity.objects.get().address == "ada@example.org"
    assert code not in everything_stored_as_text()


@pytest.mark.django_db(transaction=True)
def test_a_platform_that_delivers_codes_itself_gets_the_same_treatment(relay, make_user):
    ada = make_user("ada")
    [channel] = [c for c in issue.list_pairing_channels(me(ada)) if c["id"] == "relay_main"]
    assert channel["needs_address"] is True
    with pytest.raises(ValidationFailed):
        issue.request_pairing_code(me(ada), ada, "relay_main")  # the address is required

    issued = issue.request_pairing_code(me(ada), ada, "relay_main", "ada-on-relay")

    assert issued.code is None and "ada-on-relay" not in issued.instructions
    [(connector_id, sent)] = locmem.outbox
    code = LINK.search(sent.content).group(1)
    assert connector_id == "relay_main" and sent.recipient == "ada-on-relay"
    assert code not in everything_stored_as_text()
    # Such a code is redeemed through the link only: sending it back to BRAIN pairs nothing.
    assert not redeem.redeem_code("relay_main", "ada-on-relay", code).ok
    assert ChannelIdentity.objects.count() == 0


def test_channels_say_which_ones_need_an_address(make_user, make_connector, mailer):
    make_connector("cli_main", kind="cli")
    channels = {c["id"]: c for c in issue.list_pairing_channels(me(make_user("ada")))}
    assert channels["mail"]["needs_address"] is True and channels["cli_main"]["needs_address"] is False


# --- rate limits on the mails -----------------------------------------------------------------------


@pytest.fixture
def limits(settings):
    settings.ROUTING_PAIRING_MAX_PENDING = 10
    settings.ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR = 2
    settings.ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR = 2


@pytest.mark.django_db(transaction=True)
def test_pairing_mails_are_limited_per_account(mailer, limits, make_user, api, token_for):
    client = api(token_for(make_user("mallory")))
    for n in (1, 2):
        answer = client.post(PAIRING_CODES, {"connector": "mail", "address": f"p{n}@example.org"}, format="json")
        assert answer.status_code == 201

    refused = client.post(PAIRING_CODES, {"connector": "mail", "address": "p3@example.org"}, format="json")

    assert refused.status_code == 429, refused.content
    assert refused.json()["error"]["code"] == "pairing_rate_limited"
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert len(mail.outbox) == 2 and PairingCode.objects.count() == 2
    row = AuditEvent.objects.get(action="pairing.code_requested", result="denied")
    assert row.details["error"] == "pairing_rate_limited" and "p3@example.org" not in json.dumps(row.details)
    # An hour later the account may ask again.
    PairingCode.objects.update(created_at=timezone.now() - timedelta(minutes=61))
    assert client.post(PAIRING_CODES, {"connector": "mail", "address": "p3@example.org"},
                       format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_pairing_mails_are_limited_per_address_across_accounts(mailer, limits, make_user):
    # Case and +tags reach the same mailbox, so they count as one address.
    for name, address in (("u1", "Victim@example.org"), ("u2", "victim+x@EXAMPLE.org")):
        user = make_user(name)
        issue.request_pairing_code(me(user), user, "mail", address)
    third = make_user("u3")

    with pytest.raises(RateLimited) as refused:
        issue.request_pairing_code(me(third), third, "mail", "VICTIM@example.org")

    assert refused.value.status == 429 and refused.value.retry_after > 0
    assert len(mail.outbox) == 2
    assert not PairingCode.objects.filter(user=third).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_address_limit_holds_when_accounts_ask_at_the_same_moment(mailer, limits, make_user):
    from tests.concurrency import run_at_once

    users = [make_user(f"racer{i}") for i in range(6)]

    def ask(i):
        return issue.request_pairing_code(me(users[i]), users[i], "mail", "victim@example.org")

    results, errors = run_at_once(ask, len(users))

    assert len(results) == 2 and all(isinstance(e, RateLimited) for e in errors), errors
    assert PairingCode.objects.filter(address="victim@example.org").count() == 2


def test_codes_people_send_themselves_are_not_limited_by_the_mail_limits(make_user, make_connector, limits):
    make_connector("cli_main", kind="cli")
    ada = make_user("ada")
    for _ in range(3):
        issue.request_pairing_code(me(ada), ada, "cli_main")
    assert PairingCode.objects.count() == 3


# --- codes sent to BRAIN are not remembered ---------------------------------------------------------


def receive(connector_id, sender, text, msg_id):
    return connector_services.receive_message(
        connector_id, IncomingMessage(sender=sender, content=text, platform_message_id=msg_id)
    )[0]


@pytest.mark.django_db(transaction=True)
def test_codes_sent_to_brain_are_not_kept_in_memory(make_user, make_connector):
    make_connector("cli_main", kind="cli")
    ada = make_user("ada")
    code = issue.request_pairing_code(me(ada), ada, "cli_main").code

    receive("cli_main", "ada", f" {code[:4].lower()}-{code[4:]} ", "p1")
    receive("cli_main", "eve", "ZZ22ZZ22", "p2")  # a wrong guess: someone's mistyped code, perhaps
    receive("cli_main", "ada", "what is the weather", "p3")

    assert ChannelIdentity.objects.get().address == "ada"
    user_messages = list(Message.objects.filter(role="user").order_by("id").values_list("content", flat=True))
    assert user_messages[2] == "what is the weather"
    for text in user_messages[:2]:
        assert "pairing code" in text and code not in text and "ZZ22ZZ22" not in text
    assert search(SYSTEM, code) == [] and search(SYSTEM, "ZZ22ZZ22") == []
    context = context_for_address(SYSTEM, "cli_main", "ada")
    assert code not in json.dumps(context) and code.lower() not in json.dumps(context)


@pytest.mark.django_db(transaction=True)
def test_a_telegram_start_code_is_not_kept_in_memory(telegram, fake, make_user):
    ada = make_user("ada")
    telegram()
    code = issue.request_pairing_code(me(ada), ada, "tg_main").code
    update = fixture("message_start_payload")
    update["message"]["text"] = f"/start {code}"

    assert post_update("tg_main", update, secret_of("tg_main")).status_code == 200

    assert ChannelIdentity.objects.get().address == ADA
    stored = [m.content for m in Message.objects.filter(role="user")]
    assert stored and all(code not in text for text in stored)
    assert search(SYSTEM, code) == []


# --- logs ------------------------------------------------------------------------------------------


def test_pairing_links_are_redacted_in_log_lines():
    # Django logs refused requests with their path ("Not Found: /preferences/pair/…/").
    assert redact("Not Found: /preferences/pair/K7Q2MX4P/") == "Not Found: /preferences/pair/[redacted]/"
    assert redact("GET https://brain.example.org/preferences/pair/k7q2-mx4p/ 409") == (
        "GET https://brain.example.org/preferences/pair/[redacted]/ 409"
    )


# --- whose addresses have accounts is not told ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_asking_for_an_address_paired_elsewhere_answers_as_for_a_free_one(mailer, make_user, api, token_for):
    ada = make_user("ada")
    issue.request_pairing_code(me(ada), ada, "mail", "ada@example.org")
    [code] = mailed_codes()
    assert redeem.confirm_email_link(me(ada), code).ok
    mail.outbox.clear()
    mallory = api(token_for(make_user("mallory")))

    taken = mallory.post(PAIRING_CODES, {"connector": "mail", "address": "ada@example.org"}, format="json")
    free = mallory.post(PAIRING_CODES, {"connector": "mail", "address": "bob@example.org"}, format="json")

    assert taken.status_code == free.status_code == 201, taken.content
    assert set(taken.json()) == set(free.json())
    assert taken.json()["instructions"].replace("a•••", "b•••") == free.json()["instructions"]
    # Only the mailbox learns why: a notice with no code and no link; the free address gets its link.
    notice, link = mail.outbox
    assert notice.to == ["ada@example.org"] and "already paired with another BRAIN account" in notice.body
    assert not LINK.search(notice.body) and LINK.search(link.body) and link.to == ["bob@example.org"]
    assert ChannelIdentity.objects.get(address="ada@example.org").user == ada
    assert AuditEvent.objects.filter(action="pairing.code_requested", details__taken_elsewhere=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_asking_again_for_your_own_paired_address_says_so(mailer, make_user, api, token_for):
    ada = make_user("ada")
    issue.request_pairing_code(me(ada), ada, "mail", "ada@example.org")
    [code] = mailed_codes()
    assert redeem.confirm_email_link(me(ada), code).ok

    again = api(token_for(ada)).post(PAIRING_CODES, {"connector": "mail", "address": "ada@example.org"}, format="json")

    assert again.status_code == 409 and again.json()["error"]["code"] == "already_paired"
    assert len(mail.outbox) == 1
