"""Channel identities: a person's verified addresses — list, label, remove, and add one verified outside pairing.

Every change takes the acting `Principal` and the person it acts for, checks permission, changes
state, writes the audit row and emits `preference.updated` in one transaction. Refusals raise a
`ServiceError` (rendered as `{"error": {...}}` by every edge) and leave an audit row of their own
(`denied` or `failure`) while the change itself is rolled back. Audit rows and events carry ids
and masked address hints ("+44••••1234"), never full addresses.
"""
from django.db import transaction
from django.utils import timezone

from audit import reads
from brain_connectors.shared.errors import (
    Conflict,
    Hidden,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from connectors.models import Connector
from connectors.permissions import Principal
from connectors.platforms.addresses import mask_address
from connectors.registry.kinds import get_connector_class
from routing.access import check_actor
from routing.changes import audited_change, record_change
from routing.models import ChannelIdentity
from routing.preferences import default_preference


def list_identities(principal: Principal, user):
    check_actor(principal, user, "view_channelidentity")
    with transaction.atomic():
        rows = list(ChannelIdentity.objects.filter(user=user).select_related("connector").order_by("id"))
        reads.record_read("identity.list", principal, "user", user.pk, count=len(rows))
    return rows


def _own_identity(user, identity_id, *, for_update=False):
    qs = ChannelIdentity.objects.select_related("connector")
    if for_update:
        qs = qs.select_for_update()
    try:
        identity = qs.get(pk=int(identity_id))
    except (ChannelIdentity.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Identity {identity_id!r} does not exist.")
    if identity.user_id != user.pk:  # someone else's: hidden, and audited as a refusal
        raise Hidden(f"Identity {identity_id!r} does not exist.")
    return identity


def add_identity(principal: Principal, user, connector_id, address, *, label=""):
    """An identity verified outside pairing (e.g. a voice number checked by phone), added by staff
    holding `routing.add_channelidentity` (or a superuser), never by people for themselves."""
    with audited_change("identity.added", principal, "user", getattr(user, "pk", "")):
        with transaction.atomic():
            actor = principal.user
            if not principal.is_system and not (
                actor and actor.is_active and actor.is_staff and actor.has_perm("routing.add_channelidentity")
            ):
                raise PermissionDenied("Only staff with routing.add_channelidentity may add identities without pairing.")
            connector = Connector.objects.filter(pk=connector_id).first()
            if connector is None:
                raise ValidationFailed(f"Connector {connector_id!r} does not exist.", details={"connector": "unknown"})
            clean = get_connector_class(connector.kind).normalize_address(address)
            if ChannelIdentity.objects.filter(connector=connector, address=clean).exists():
                raise Conflict("This address is already paired with an account.", code="already_paired")
            identity = ChannelIdentity.objects.create(
                user=user, connector=connector, address=clean, label=(label or "").strip()[:100], verified_at=timezone.now()
            )
            preference = default_preference(user, identity)
            record_change("identity.added", principal, ("channel_identity", identity.pk), user.pk,
                          {"connector": connector.id, "address_hint": mask_address(clean)},
                          "identity.added", [connector.id], identity_id=identity.pk, preference_id=preference.pk,
                          fields=["identity", "preference"])
    return identity


def update_identity(principal: Principal, user, identity_id, *, label):
    with audited_change("identity.updated", principal, "channel_identity", identity_id):
        if not isinstance(label, str) or len(label.strip()) > 100:
            raise ValidationFailed("The label must be text of at most 100 characters.", details={"label": "invalid"})
        with transaction.atomic():
            check_actor(principal, user, "change_channelidentity")
            identity = _own_identity(user, identity_id, for_update=True)
            identity.label = label.strip()
            identity.save(update_fields=["label"])
            record_change("identity.updated", principal, ("channel_identity", identity.pk), user.pk, {"fields": ["label"]},
                          "identity.updated", [identity.connector_id], identity_id=identity.pk, fields=["label"])
    return identity


def delete_identity(principal: Principal, user, identity_id):
    """Remove an identity and the preferences that use it."""
    with audited_change("identity.deleted", principal, "channel_identity", identity_id):
        with transaction.atomic():
            check_actor(principal, user, "delete_channelidentity")
            identity = _own_identity(user, identity_id, for_update=True)
            preference_ids = list(identity.preferences.values_list("pk", flat=True))
            connector_id, pk, hint = identity.connector_id, identity.pk, mask_address(identity.address)
            identity.delete()
            record_change("identity.deleted", principal, ("channel_identity", pk), user.pk,
                          {"connector": connector_id, "address_hint": hint, "preference_ids": preference_ids},
                          "identity.deleted", [connector_id], identity_id=pk, preference_ids=preference_ids, fields=["identity"])
