"""Checks of what a caller asks to store on a connector: id, kind, name, config, credentials, quotas, destinations."""
import re

from django.core.exceptions import ValidationError

from brain_connectors.shared.errors import ValidationFailed
from connectors.models import CONNECTOR_ID_PATTERN, connector_id_validator
from connectors.registry import destinations
from connectors.registry.kinds import UnknownKind, get_connector_class


def validated_kind_class(kind):
    try:
        return get_connector_class(kind)
    except UnknownKind as exc:
        raise ValidationFailed(str(exc), code="unknown_kind", details={"kind": str(exc)})


def check_config(kind_class, config):
    if not isinstance(config, dict):
        raise ValidationFailed("config must be a JSON object.", code="invalid_config", details={"config": "must be an object"})
    errors = kind_class.validate_config(config)
    if errors:
        raise ValidationFailed(
            f"Invalid config for kind {kind_class.kind!r}.", code="invalid_config", details={"config": errors}
        )


def check_credentials(kind_class, credentials):
    if not isinstance(credentials, dict):
        raise ValidationFailed(
            "credentials must be a JSON object.", code="invalid_credentials", details={"credentials": "must be an object"}
        )
    errors = kind_class.validate_credentials(credentials)
    if errors:
        raise ValidationFailed(
            f"Invalid credentials for kind {kind_class.kind!r}.",
            code="invalid_credentials",
            details={"credentials": errors},
        )


def check_quota(name, value):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000):
        raise ValidationFailed(f"{name} must be an integer from 1 to 1000000, or null.", details={name: "out of range"})


def check_id(connector_id):
    try:
        connector_id_validator(connector_id if isinstance(connector_id, str) else "")
        # The validator searches with `$`, which also matches before a final "\n" ("tg_main\n").
        if not re.fullmatch(CONNECTOR_ID_PATTERN, connector_id):
            raise ValidationError(connector_id_validator.message)
    except ValidationError as exc:
        raise ValidationFailed(exc.messages[0], code="invalid_id", details={"id": exc.messages[0]})


def check_display_name(name):
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationFailed("display_name must be 1-200 characters.", details={"display_name": "invalid"})


def check_destinations(kind_class, changes):
    """The outbound-URL guard on new destination values: 400 `unsafe_url` naming the setting that
    would allow them. Resolves DNS, so never under a lock or in a transaction."""
    problems = destinations.refusals(kind_class, changes)
    if problems:
        raise ValidationFailed(
            f"The config points somewhere this service does not send to: {'; '.join(problems.values())}.",
            code="unsafe_url",
            details={"config": problems},
        )
