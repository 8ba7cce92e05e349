"""Patterns match whole values: no trailing newline slips past `$` (issue 14, item 6).

jsonschema matches a schema's `pattern` with Python's `re.search`, where `$` also matches just
before a final "\\n": an email subject "Hello\\n" passed the config check and then failed every
send. The same holds for Python `re` patterns used with match(). Patterns now end with
connectors.platforms.base.PATTERN_END (`(?!\\n)$`), which means the very end in Python, ECMA-262 and Rust
regex alike (`\\Z` is Python only: jsonschema_rs refuses it), and code uses fullmatch()."""
import jsonschema
import jsonschema_rs
import pytest
from django.conf import settings as django_settings

from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector
from connectors.platforms.base import PATTERN_END
from connectors.platforms.telegram.connector import TelegramConnector
from connectors.registry.kinds import get_connector_class
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": "tw_test_token_0123456789abcdef"}


def register(kind, config, credentials, id="anchored"):
    return services.register_connector(SYSTEM, id=id, kind=kind, display_name="x", config=config,
                                       credentials=credentials)


@pytest.mark.parametrize(
    "kind, config, credentials, field",
    [
        ("email", {"from_address": "brain@example.org", "subject": "Hello\n"}, {}, "config"),
        ("telegram", {"mode": "polling"}, {"bot_token": TOKEN + "\n"}, "credentials"),
        ("sms", {"from_number": "+14155550100\n"}, TWILIO, "config"),
        ("sms", {"from_number": "+14155550100"}, {**TWILIO, "account_sid": TWILIO["account_sid"] + "\n"},
         "credentials"),
        ("whatsapp", {"from_number": "+14155550100", "template_content_sid": "HX" + "0" * 32 + "\n"}, TWILIO,
         "config"),
        ("voice", {"from_number": "+14155550100", "language": "en-GB\n"}, TWILIO, "config"),
    ],
)
def test_a_trailing_newline_is_refused_by_the_schemas(kind, config, credentials, field):
    with pytest.raises(ValidationFailed) as caught:
        register(kind, config, credentials)
    assert field in caught.value.details
    assert not Connector.objects.exists()


def test_the_same_values_without_the_newline_are_accepted():
    register("email", {"from_address": "brain@example.org", "subject": "Hello"}, {}, id="mail")
    register("voice", {"from_number": "+14155550100", "language": "en-GB"}, TWILIO, id="voice")


def test_a_connector_id_with_a_trailing_newline_is_refused():
    with pytest.raises(ValidationFailed) as caught:
        services.register_connector(SYSTEM, id="mail_main\n", kind="locmem", display_name="x")
    assert caught.value.code == "invalid_id"


@pytest.mark.parametrize(
    "check",
    [
        lambda: TelegramConnector.validate_recipient("5550123401\n"),
        lambda: TelegramConnector.validate_recipient("@brain_bot\n"),
    ],
)
def test_recipients_with_a_newline_are_refused(check):
    assert check() is not None


def schema_patterns():
    for kind in django_settings.CONNECTOR_CLASSES:
        cls = get_connector_class(kind)
        for which in ("config_schema", "credentials_schema"):
            for name, prop in getattr(cls, which).get("properties", {}).items():
                if "pattern" in prop:
                    yield pytest.param(prop["pattern"], id=f"{kind}.{name}")


@pytest.mark.parametrize("pattern", list(schema_patterns()))
def test_every_schema_pattern_is_anchored_portably(pattern):
    assert pattern.endswith(PATTERN_END), pattern
    # Valid in both validators this project has (jsonschema_rs refuses \Z, for one).
    jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    jsonschema.Draft202012Validator.check_schema({"type": "string", "pattern": pattern})


def test_pattern_end_means_the_very_end_in_both_validators():
    schema = {"type": "string", "pattern": f"^[a-z]+{PATTERN_END}"}
    for validator in (jsonschema.Draft202012Validator(schema), jsonschema_rs.validator_for(schema)):
        assert validator.is_valid("abc")
        assert not validator.is_valid("abc\n")
