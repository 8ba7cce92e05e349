"""Pairing a channel identity with a one-time code: through a real-format Telegram `/start CODE`
webhook (the loopback Bot API fake receives the bot's answer), a Twilio SMS and WhatsApp webhook,
the CLI, and an emailed link; and every way a code is refused without storing anything."""
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import Conflict, NotFound, ValidationFailed
from connectors.models import Delivery, Event, InboundMessage
from connectors.permissions import Principal
from connectors.registry.kinds import get_connector_class
from routing.models import ChannelIdentity, ConnectorPreference, PairingAttempt, PairingCode
from routing.pairing import codes, inbound, issue, redeem
from tests.connectors import telegram_support, twilio_support
from tests.connectors.telegram_support import ADA, fixture, post_update, secret_of
from tests.connectors.twilio_support import post_twilio

fake = telegram_support.fake
public_url = telegram_support.public_url
telegram = telegram_support.telegram
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector


def me(user):
    return Principal.for_user(user, via="test")


def stored():
    return ChannelIdentity.objects.count(), ConnectorPreference.objects.count()


def start_update(text):
    update = fixture("message_start_payload")
    update["message"]["text"] = text
    return update


# --- Telegram, end to end ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_telegram_start_code_pairs_the_chat_and_the_bot_says_so(telegram, fake, make_user):
    ada = make_user("ada")
    telegram()
    issued = issue.request_pairing_code(me(ada), ada, "tg_main")
    code = issued.code
    assert len(code) == 8 and "/start " + code in issued.instructions
    # Only the digest is stored.
    row = PairingCode.objects.get()
    assert row.digest == codes.digest(code) and code not in str(row.__dict__)

    # Typed as people do: lower case, with a dash, as in the real-format fixture.
    text = f"/start {code[:4].lower()}-{code[4:].lower()}"
    response = post_update("tg_main", start_update(text), secret_of("tg_main"))
    assert response.status_code == 200

    identity = ChannelIdentity.objects.get()
    assert (identity.user, identity.connector_id, identity.address) == (ada, "tg_main", ADA)
    row.refresh_from_db()
    assert row.used_at is not None and row.identity == identity
    # A preference was added so that BRAIN can reach Ada there at once.
    preference = ConnectorPreference.objects.get()
    assert (preference.identity, preference.priority, preference.enabled) == (identity, 1, True)
    assert preference.notification_types == ["standard", "urgent", "digest"]

    # The bot answered in the chat; BRAIN (EchoBrain would answer "Echo: …") was not asked.
    [reply] = fake.sent
    assert reply["chat_id"] == ADA and reply["text"].startswith("Paired with ada.")
    assert not any(m["text"].startswith("Echo") for m in fake.sent)
    assert InboundMessage.objects.get().brain_status == "replied"

    paired = AuditEvent.objects.get(action="identity.paired")
    assert paired.target_id == str(identity.pk) and paired.details["user_id"] == ada.pk
    assert ADA not in str(paired.details) and code not in str(paired.details)
    event = Event.objects.get(type="preference.updated")
    assert event.connector_id == "tg_main"
    assert event.data["user_id"] == ada.pk and event.data["identity_id"] == identity.pk
    assert event.data["preference_id"] == preference.pk


@pytest.mark.django_db(transaction=True)
def test_a_guessed_telegram_code_is_refused_and_counted(telegram, fake, make_user):
    make_user("ada")
    telegram()
    assert post_update("tg_main", start_update("/start ZZ22ZZ22"), secret_of("tg_main")).status_code == 200
    assert stored() == (0, 0)
    [reply] = fake.sent
    assert "not valid" in reply["text"]
    assert PairingAttempt.objects.filter(connector_id="tg_main", sender=ADA).count() == 1
    refused = AuditEvent.objects.get(action="identity.pair")
    assert refused.result == "failure" and refused.details["reason"] == "unknown"


@pytest.mark.django_db(transaction=True)
def test_ordinary_telegram_messages_still_go_to_brain(telegram, fake, make_user):
    telegram()
    assert post_update("tg_main", fixture("message_text"), secret_of("tg_main")).status_code == 200
    assert post_update("tg_main", start_update("/start"), secret_of("tg_main")).status_code == 200
    assert [m["text"].startswith("Echo") for m in fake.sent] == [True, True]
    assert PairingAttempt.objects.count() == 0


def test_what_counts_as_a_code_per_kind():
    assert inbound.code_in("telegram", "/start K7Q2-MX4P") == "K7Q2MX4P"
    assert inbound.code_in("telegram", "/start", {"start_payload": ""}) is None
    assert inbound.code_in("telegram", "K7Q2MX4P") is None  # Telegram: only /start CODE
    assert inbound.code_in("sms", "  k7q2mx4p \n") == "K7Q2MX4P"
    assert inbound.code_in("whatsapp", "K7Q2 MX4P") == "K7Q2MX4P"
    assert inbound.code_in("sms", "whatever") is None  # a word is not a code: no digit
    assert inbound.code_in("sms", "12345678") is None  # nor a number
    assert inbound.code_in("sms", "K7Q2MX4P please") is None
    assert inbound.code_in("voice", "K7Q2MX4P") is None
    assert inbound.code_in("locmem", "K7Q2MX4P") is None


# --- SMS and WhatsApp through the Twilio webhook ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sms_code_pairs_the_number(client, twilio_connector, twilio_fake, make_user):
    ada = make_user("ada")
    twilio_connector("sms_main", "sms")
    code = issue.request_pairing_code(me(ada), ada, "sms_main").code
    payload = twilio_support.fixture("sms_inbound", Body=f" {code.lower()} ")
    assert post_twilio(client, "/webhooks/twilio/sms_main/", payload).status_code == 200
    identity = ChannelIdentity.objects.get()
    assert (identity.user, identity.address) == (ada, "+14155550199")
    [reply] = twilio_fake.messages
    assert reply.form["To"] == "+14155550199" and reply.form["Body"].startswith("Paired with ada.")


@pytest.mark.django_db(transaction=True)
def test_whatsapp_senders_are_stored_as_plain_e164(client, twilio_connector, twilio_fake, make_user):
    ada = make_user("ada")
    twilio_connector("wa_main", "whatsapp", from_number="whatsapp:+14155550100")
    code = issue.request_pairing_code(me(ada), ada, "wa_main").code
    payload = twilio_support.fixture("whatsapp_inbound", Body=code)
    sender = payload["From"]
    assert sender.startswith("whatsapp:+")
    assert post_twilio(client, "/webhooks/twilio/wa_main/", payload).status_code == 200
    assert ChannelIdentity.objects.get().address == sender.removeprefix("whatsapp:")


def test_phone_addresses_must_be_e164(make_user, make_connector):
    ada = make_user("ada")
    make_connector("cli_main", kind="cli")
    code = issue.request_pairing_code(me(ada), ada, "cli_main").code
    with pytest.raises(ValidationFailed):
        get_connector_class("sms").normalize_address("07700 900123")
    with pytest.raises(ValidationFailed):
        get_connector_class("whatsapp").normalize_address("whatsapp:447700900123")
    assert get_connector_class("sms").normalize_address("+44 7700 900-123") == "+447700900123"
    assert get_connector_class("whatsapp").normalize_address("whatsapp:+447700900123") == "+447700900123"
    # The CLI person pairs fine with the same code (the code was for the CLI connector).
    assert redeem.redeem_code("cli_main", "ada", code).ok


@pytest.mark.django_db(transaction=True)
def test_an_sms_from_a_short_code_cannot_pair(client, twilio_connector, twilio_fake, make_user):
    ada = make_user("ada")
    twilio_connector("sms_main", "sms")
    code = issue.request_pairing_code(me(ada), ada, "sms_main").code
    redemption = redeem.redeem_code("sms_main", "72345", code)
    assert not redemption.ok and "E.164" in redemption.reply
    assert stored() == (0, 0) and PairingCode.objects.get().used_at is None


# --- refusals (services, through the CLI connector: no platform needed) ------------------------------


@pytest.fixture
def cli(make_connector):
    return make_connector("cli_main", kind="cli")


def test_expired_code_is_refused_and_nothing_stored(make_user, cli):
    ada = make_user("ada")
    code = issue.request_pairing_code(me(ada), ada, "cli_main").code
    PairingCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    redemption = redeem.redeem_code("cli_main", "ada", code)
    assert not redemption.ok and "expired" in redemption.reply
    assert stored() == (0, 0) and PairingCode.objects.get().used_at is None


def test_a_code_expires_after_an_hour(make_user, cli):
    ada = make_user("ada")
    issued = issue.request_pairing_code(me(ada), ada, "cli_main")
    assert timedelta(minutes=59) < issued.pairing.expires_at - timezone.now() <= timedelta(hours=1)
    later = timezone.now() + timedelta(hours=1, seconds=1)
    assert "expired" in redeem.redeem_code("cli_main", "ada", issued.code, now=later).reply


def test_a_used_code_is_refused(make_user, cli):
    ada = make_user("ada")
    code = issue.request_pairing_code(me(ada), ada, "cli_main").code
    assert redeem.redeem_code("cli_main", "ada", code).ok
    again = redeem.redeem_code("cli_main", "mallory", code)
    assert not again.ok and "already been used" in again.reply
    assert list(ChannelIdentity.objects.values_list("address", flat=True)) == ["ada"]


def test_a_code_for_another_connector_is_refused(make_user, make_connector, cli):
    ada = make_user("ada")
    make_connector("cli_other", kind="cli")
    code = issue.request_pairing_code(me(ada), ada, "cli_other").code
    assert "another channel" in redeem.redeem_code("cli_main", "ada", code).reply
    assert stored() == (0, 0)


def test_an_address_paired_to_another_account_is_refused(make_user, cli):
    ada, bob = make_user("ada"), make_user("bob")
    assert redeem.redeem_code("cli_main", "shared", issue.request_pairing_code(me(ada), ada, "cli_main").code).ok
    code = issue.request_pairing_code(me(bob), bob, "cli_main").code
    redemption = redeem.redeem_code("cli_main", "shared", code)
    assert not redemption.ok and "already paired with another account" in redemption.reply
    assert ChannelIdentity.objects.get().user == ada
    assert PairingCode.objects.get(user=bob).used_at is None  # still usable from Bob's own address
    assert AuditEvent.objects.filter(action="identity.pair", details__reason="taken").count() == 1


def test_wrong_codes_are_rate_limited_per_sender(make_user, cli, settings):
    ada = make_user("ada")
    code = issue.request_pairing_code(me(ada), ada, "cli_main").code
    for guess in ["AAAA2222", "BBBB3333", "CCCC4444", "DDDD5555", "EEEE6666"]:
        assert "not valid" in redeem.redeem_code("cli_main", "eve", guess).reply
    # The sixth try is not even looked at, right code included.
    blocked = redeem.redeem_code("cli_main", "eve", code)
    assert not blocked.ok and "Too many attempts" in blocked.reply
    assert stored() == (0, 0)
    # Another sender is not blocked by Eve's guesses.
    assert redeem.redeem_code("cli_main", "ada", code).ok
    # After the window, Eve may try again.
    later = timezone.now() + timedelta(minutes=16)
    assert "not valid" in redeem.redeem_code("cli_main", "eve", "FFFF7777", now=later).reply


def test_at_most_three_codes_pending(make_user, cli):
    ada = make_user("ada")
    for _ in range(3):
        issue.request_pairing_code(me(ada), ada, "cli_main")
    with pytest.raises(Conflict) as refused:
        issue.request_pairing_code(me(ada), ada, "cli_main")
    assert refused.value.code == "too_many_pending_codes"
    assert PairingCode.objects.count() == 3
    assert AuditEvent.objects.filter(action="pairing.code_requested", result="failure").count() == 1
    # Expired ones do not count.
    PairingCode.objects.filter(pk=PairingCode.objects.first().pk).update(expires_at=timezone.now())
    issue.request_pairing_code(me(ada), ada, "cli_main")


def test_only_connected_pairable_connectors(make_user, make_connector):
    ada = make_user("ada")
    make_connector("locmem_main")  # not a pairable kind
    make_connector("cli_off", kind="cli", start=False)
    with pytest.raises(ValidationFailed):
        issue.request_pairing_code(me(ada), ada, "locmem_main")
    with pytest.raises(Conflict):
        issue.request_pairing_code(me(ada), ada, "cli_off")
    with pytest.raises(ValidationFailed):
        issue.request_pairing_code(me(ada), ada, "nope")
    assert [c["id"] for c in issue.list_pairing_channels(me(ada))] == []


def test_nobody_requests_codes_for_someone_else_without_permission(make_user, cli):
    ada, bob = make_user("ada"), make_user("bob", staff=True)
    with pytest.raises(NotFound):
        issue.request_pairing_code(me(bob), ada, "cli_main")
    assert PairingCode.objects.count() == 0
    assert AuditEvent.objects.filter(action="pairing.code_requested", result="denied").exists()


# --- email: a link, confirmed with a POST ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_emailed_link_pairs_after_a_confirming_post(make_user, make_connector, settings):
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    ada, bob = make_user("ada"), make_user("bob")
    make_connector("mail", kind="email", config={"from_address": "brain@example.org"})
    issued = issue.request_pairing_code(me(ada), ada, "mail", "Ada@Example.ORG")
    assert "A•••@example.org" in issued.instructions and issued.code is None  # the code is in the mail only
    [message] = mail.outbox
    assert message.to == ["Ada@example.org"]
    link = re.search(r"https://brain\.example\.org/preferences/pair/[A-Z0-9]{8}/", message.body).group(0)
    assert Delivery.objects.get().recipient == "Ada@example.org"
    path = link.removeprefix("https://brain.example.org")

    anonymous = Client().get(path)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]

    browser = Client()
    browser.force_login(ada)
    page = browser.get(path)
    assert page.status_code == 200 and b"Confirm" in page.content and b"Ada@example.org" in page.content
    assert ChannelIdentity.objects.count() == 0  # a GET (or a link prefetcher) pairs nothing

    other = Client()
    other.force_login(bob)
    assert other.post(path).status_code == 404
    assert ChannelIdentity.objects.count() == 0

    done = browser.post(path)
    assert done.status_code == 200 and b"Paired with ada" in done.content
    identity = ChannelIdentity.objects.get()
    assert (identity.user, identity.connector_id, identity.address) == (ada, "mail", "Ada@example.org")
    assert AuditEvent.objects.filter(action="identity.paired", principal="user:ada").exists()
    assert browser.post(path).status_code == 409  # used


def test_email_codes_need_an_address_and_others_refuse_one(make_user, make_connector, cli):
    ada = make_user("ada")
    make_connector("mail", kind="email", config={"from_address": "brain@example.org"})
    with pytest.raises(ValidationFailed):
        issue.request_pairing_code(me(ada), ada, "mail")
    with pytest.raises(ValidationFailed):
        issue.request_pairing_code(me(ada), ada, "mail", "not an address")
    with pytest.raises(ValidationFailed):
        issue.request_pairing_code(me(ada), ada, "cli_main", "ada@example.org")
    assert PairingCode.objects.count() == 0
