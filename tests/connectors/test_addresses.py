"""One address normaliser per platform (owned by the platform), one masking function.

The tables pin what routing stores for an identity (strict) and conversation memory for a
conversation (lenient): memory links to identities by address, so both must come from the same
rules. The last tests fail when a second copy of those rules appears outside connectors.
"""
import re
from pathlib import Path

import pytest

from brain_connectors.shared.errors import ValidationFailed
from connectors.platforms.addresses import InvalidAddress, mask_address
from connectors.registry.kinds import get_connector_class

ROOT = Path(__file__).resolve().parents[2]
PHONE = "phone number in E.164 form (+<country code><number>, e.g. +14155550123)"

STRICT = [
    # kind, input, stored form
    ("sms", "+14155550100", "+14155550100"),
    ("sms", " +44 7700 900-123 ", "+447700900123"),
    ("sms", "(+44) 7700.900\u00a0123", "+447700900123"),
    ("voice", "+1 415 555 0100", "+14155550100"),
    ("whatsapp", "+447700900123", "+447700900123"),
    ("whatsapp", "whatsapp:+447700900123", "+447700900123"),
    ("whatsapp", " WhatsApp:+44 7700 900123", "+447700900123"),
    ("email", "Ada@Example.ORG", "Ada@example.org"),
    ("email", " ada@example.org ", "ada@example.org"),
    ("telegram", " 123456789 ", "123456789"),
    ("telegram", "-100123", "-100123"),
    ("cli", "ada", "ada"),
    ("cli", "whatsapp:+447700900123", "whatsapp:+447700900123"),  # the prefix is WhatsApp's alone
    ("locmem", "A" * 255, "A" * 255),
    ("webhook", " user-7 ", "user-7"),
]

REFUSED = [
    # kind, input, message
    ("sms", "07700 900123", f"The phone number must be a {PHONE}."),
    ("sms", "whatsapp:+447700900123", f"The phone number must be a {PHONE}."),
    ("voice", "client:alice", f"The phone number must be a {PHONE}."),
    ("whatsapp", "whatsapp:447700900123", f"The phone number must be a {PHONE}."),
    ("whatsapp", "+447700900123\n+1", f"The phone number must be a {PHONE}."),
    ("email", "not-an-email", "The email address must be a valid email address such as name@example.org."),
    ("email", "", "The email address must be an email address."),
    ("telegram", "  ", "The address must be 1-255 characters."),
    ("cli", "A" * 256, "The address must be 1-255 characters."),
    ("webhook", None, "The address must be 1-255 characters."),
]

LENIENT = [
    ("whatsapp", " whatsapp:+447700900123 ", "+447700900123"),
    ("whatsapp", "WHATSAPP:+44 7700 900123", "+44 7700 900123"),
    ("whatsapp", "whatsapp:", ""),
    ("sms", " +44 7700 900123", "+44 7700 900123"),
    ("email", " Ada@Example.ORG ", "Ada@Example.ORG"),
    ("telegram", "", ""),
    ("cli", None, ""),
    ("cli", " whatsapp:+447700900123", "whatsapp:+447700900123"),
]


@pytest.mark.parametrize("kind,address,stored", STRICT)
def test_strict_form_per_kind(kind, address, stored):
    assert get_connector_class(kind).normalize_address(address) == stored


@pytest.mark.parametrize("kind,address,message", REFUSED)
def test_refusals_per_kind(kind, address, message):
    with pytest.raises(InvalidAddress) as caught:
        get_connector_class(kind).normalize_address(address)
    error = caught.value
    assert isinstance(error, ValidationFailed)  # routing's callers turn it into a 400 or a refusal
    assert (error.message, error.code) == (message, "invalid_address")
    assert error.details == {"address": error.problem} and message == f"The {error.subject} {error.problem}."


@pytest.mark.parametrize("kind,address,kept", LENIENT)
def test_lenient_form_per_kind(kind, address, kept):
    assert get_connector_class(kind).normalize_address(address, strict=False) == kept


@pytest.mark.parametrize("kind", ["sms", "voice", "whatsapp", "email", "telegram", "cli", "locmem", "webhook"])
def test_the_stored_form_is_a_fixed_point(kind):
    platform = get_connector_class(kind)
    for stored in (row[2] for row in STRICT if row[0] == kind):
        assert platform.normalize_address(stored) == stored
        # memory keeps a stored identity address as it is, so the two keep matching
        assert platform.normalize_address(stored, strict=False) == stored


@pytest.mark.parametrize("address,hint", [
    ("+447700901234", "+44••••1234"),
    ("whatsapp:+14155550100", "+14••••0100"),
    (" a@example.org", "a•••@example.org"),
    ("https://hooks.example.com/x/secret", "https://hooks.example.com/••••"),
    ("123456789", "••••6789"),
    ("+123456", "••••3456"),
    ("abcd", "••••"),
    ("", "••••"),
    (None, "••••"),
])
def test_one_mask(address, hint):
    assert mask_address(address) == hint


# --- no second copy ------------------------------------------------------------------------------

APPS = ("connectors", "routing", "conversations", "audit", "brain_connectors")
WHATSAPP_MODULE = Path("connectors/platforms/whatsapp.py")
# Places that ADD the prefix to find InboundMessage rows (Twilio's `From` keeps it); none strips it.
PREFIX_ADDED = {Path("routing/router/loading.py"): 1, Path("routing/router/cache.py"): 3}


def _sources():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "migrations" not in relative.parts:
                yield relative, path.read_text(encoding="utf-8")


def test_the_whatsapp_prefix_is_handled_only_by_the_whatsapp_platform():
    found = {}
    for relative, text in _sources():
        if relative != WHATSAPP_MODULE:
            count = len(re.findall(r"""["']whatsapp:["']""", text, flags=re.IGNORECASE))
            if count:
                found[relative] = count
    assert found == PREFIX_ADDED, (
        "the `whatsapp:` prefix belongs to connectors/platforms/whatsapp.py "
        "(WhatsAppConnector.normalize_address); call it through connectors.registry.kinds"
    )


def test_one_normaliser_and_one_mask():
    normalisers, masks = [], []
    for relative, text in _sources():
        if re.search(r"^\s*def normali[sz]e_(address|phone)\b", text, flags=re.MULTILINE):
            normalisers.append(str(relative))
        if re.search(r"^\s*def (mask_address|address_hint|\w*mask\w*)\(", text, flags=re.MULTILINE):
            masks.append(str(relative))
    assert normalisers == [
        "connectors/platforms/base.py", "connectors/platforms/email.py", "connectors/platforms/slack/connector.py",
        "connectors/platforms/twilio_common/__init__.py", "connectors/platforms/whatsapp.py",
    ]
    assert masks == ["connectors/platforms/addresses.py"]
