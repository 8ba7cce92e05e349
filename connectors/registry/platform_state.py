"""What a platform keeps on its connector row between runs: state (offsets, bot ids) and its own secret."""
from django.db import transaction

from audit import services as audit
from connectors.models import Connector
from connectors.permissions import Principal


def save_platform_state(connector_id, **state):
    """Merge keys into the connector's platform_state (in the caller's transaction, if any)."""
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        connector.platform_state = {**connector.platform_state, **state}
        connector.save(update_fields=["platform_state", "updated_at"])
    return connector


def discard_platform_state(connector_id, *keys):
    """Remove keys from the connector's platform_state (in the caller's transaction, if any)."""
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        if any(key in connector.platform_state for key in keys):
            connector.platform_state = {k: v for k, v in connector.platform_state.items() if k not in keys}
            connector.save(update_fields=["platform_state", "updated_at"])
    return connector


def save_platform_secret(connector_id, secret, principal=None):
    """Replace the secret a platform generated for itself (e.g. Telegram's webhook secret_token),
    encrypted at rest. Audited without the value."""
    principal = principal or Principal.system_actor("platform", via="platform")
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        connector.platform_secret = secret
        connector.save(update_fields=["platform_secret", "updated_at"])
        audit.record_action("connector.platform_secret", principal, "connector", connector_id, set=bool(secret))
    return connector
