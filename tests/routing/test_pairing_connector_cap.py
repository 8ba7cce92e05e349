"""README "Pairing": "past 200 per connector in the window (`ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR`) every
sender on it waits". The cap is proven at the documented number itself, through redeem_code (the service every
channel's inbound handler calls), with wrong codes from 200 different senders (each under the per-sender limit)."""
import re
from datetime import timedelta

from django.utils import timezone

from audit.models import AuditEvent
from connectors.permissions import Principal
from routing.models import ChannelIdentity, PairingAttempt
from routing.pairing import codes, issue, redeem
from tests.conftest import BASE_DIR
from tests.routing.test_pairing import cli  # noqa: F401  (fixture: the `cli_main` connector)


def readme_cap():
    text = " ".join((BASE_DIR / "README.md").read_text().split())
    (number,) = re.findall(r"past (\d+) per connector in the window \(`ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR`\)", text)
    return int(number)


def wrong(sender, connector="cli_main"):
    return redeem.redeem_code(connector, sender, "AAAA2222").reply


def code_for(user, connector="cli_main"):
    return issue.request_pairing_code(Principal.for_user(user, via="test"), user, connector).code


def test_the_default_cap_is_the_readme_number():
    assert readme_cap() == 200
    assert codes.max_attempts_per_connector() == readme_cap()  # the project's settings, not overridden here


def test_the_connector_waits_exactly_past_the_cap(make_user, make_connector, cli, settings):  # noqa: F811
    """Every attempt through the service, with the cap lowered (200 real attempts would cost seconds)."""
    settings.ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR = cap = 7  # above the per-sender limit (5)
    make_connector("cli_other", kind="cli")
    ada, bob = make_user("ada"), make_user("bob")
    for i in range(cap - 1):
        assert "not valid" in wrong(f"guesser-{i}")
    # With cap - 1 attempts counted, codes are still looked at: the right one pairs (and is not an attempt).
    assert redeem.redeem_code("cli_main", "ada-laptop", code_for(ada)).ok
    assert "not valid" in wrong("one-more")  # the cap-th wrong code is still looked at, and counted
    assert PairingAttempt.objects.filter(connector_id="cli_main").count() == cap

    # Past the cap every sender waits, a new one with the right code included; nothing is stored or counted.
    bob_code = code_for(bob)
    blocked = redeem.redeem_code("cli_main", "bob-laptop", bob_code)
    assert not blocked.ok and "Too many attempts" in blocked.reply
    assert not ChannelIdentity.objects.filter(user=bob).exists()
    assert PairingAttempt.objects.filter(connector_id="cli_main").count() == cap
    assert AuditEvent.objects.filter(action="identity.pair", details__reason="rate_limited").count() == 1

    # Another connector is not held up, and after the window the connector listens again.
    assert redeem.redeem_code("cli_other", "bob-laptop", code_for(bob, "cli_other")).ok
    later = timezone.now() + codes.attempt_window() + timedelta(seconds=1)
    assert redeem.redeem_code("cli_main", "bob-laptop", bob_code, now=later).ok


def test_at_the_documented_number_itself(make_user, cli):  # noqa: F811
    """The default cap, unlowered: 199 earlier wrong codes (as the service stores them, one row each, from
    different senders), then the 200th and 201st attempts through the service."""
    cap = readme_cap()
    PairingAttempt.objects.bulk_create(PairingAttempt(connector_id="cli_main", sender=f"guesser-{i}") for i in range(cap - 1))
    ada = make_user("ada")
    assert "not valid" in wrong("one-more")  # the 200th is looked at
    blocked = redeem.redeem_code("cli_main", "ada-laptop", code_for(ada))  # the 201st is not, the right code included
    assert not blocked.ok and "Too many attempts" in blocked.reply
    assert PairingAttempt.objects.filter(connector_id="cli_main").count() == cap
    assert not ChannelIdentity.objects.exists()
