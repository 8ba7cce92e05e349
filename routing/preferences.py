"""Preferences: how a person wants to be reached — list, create, change, remove and reorder, and a new identity's default.

Every change takes the acting `Principal` and the person it acts for, checks permission, changes
state, writes the audit row and emits `preference.updated` in one transaction. Refusals raise a
`ServiceError` and leave an audit row of their own (`denied` or `failure`) while the change itself
is rolled back.
"""
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import Conflict, Hidden, NotFound, ValidationFailed, audit_result_limits_denied
from connectors.permissions import Principal
from routing.access import check_actor
from routing.changes import forget_cached_routes, publish_preference_update
from routing.models import ConnectorPreference, NotificationType
from routing.preference_values import MAX_PRIORITY, clean_preference


def default_preference(user, identity):
    """A new identity is tried after the person's existing channels, for every notification type."""
    prefs = ConnectorPreference.objects.filter(user=user)
    top = prefs.aggregate(m=Max("priority"))["m"] or 0
    zone = prefs.order_by("priority").values_list("timezone", flat=True).first() or "UTC"
    return ConnectorPreference.objects.create(
        user=user,
        identity=identity,
        priority=top + 1,
        enabled=True,
        notification_types=list(NotificationType.values),
        timezone=zone,
    )

def _priority_clash(user, priority, exclude_pk=None):
    other = ConnectorPreference.objects.filter(user=user, priority=priority).exclude(pk=exclude_pk).first()
    if other is not None:
        raise Conflict(
            f"Priority {priority} is already taken by preference {other.pk}; choose another or reorder.",
            code="priority_taken",
            details={"priority": priority, "preference": other.pk},
        )


def _identity_clash(user, identity, exclude_pk=None):
    other = ConnectorPreference.objects.filter(user=user, identity=identity).exclude(pk=exclude_pk).first()
    if other is not None:
        raise Conflict(
            f"Identity {identity.pk} already has preference {other.pk}; change that one instead.",
            code="identity_has_preference",
            details={"identity": identity.pk, "preference": other.pk},
        )


def list_preferences(principal: Principal, user):
    check_actor(principal, user, "view_connectorpreference")
    return list(ConnectorPreference.objects.filter(user=user).select_related("identity").order_by("priority"))


def _lock_user(user):
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def create_preference(principal: Principal, user, data=None, **fields):
    """Add a preference: `identity` (id, required), `priority` (default: after the others),
    `enabled`, `notification_types` (default: all), `quiet_start`/`quiet_end` ("HH:MM"), `timezone`."""
    data = {**(data or {}), **fields}
    with audit.audited(
        "preference.created",
        principal,
        "user",
        getattr(user, "pk", ""),
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            check_actor(principal, user, "add_connectorpreference")
            _lock_user(user)
            values = clean_preference(user, data)
            if "priority" not in values:
                values["priority"] = (ConnectorPreference.objects.filter(user=user).aggregate(m=Max("priority"))["m"] or 0) + 1
            _priority_clash(user, values["priority"])
            _identity_clash(user, values["identity"])
            preference = ConnectorPreference.objects.create(user=user, **values)
            fields = sorted(set(values) | {"identity"})
            audit.record_action(
                "preference.created",
                principal,
                "connector_preference",
                preference.pk,
                user_id=user.pk,
                fields=fields,
            )
            publish_preference_update(preference.identity.connector_id, user.pk, "created", preference_id=preference.pk, fields=fields)
            forget_cached_routes(user.pk)
    return preference


def _own_preference(user, preference_id):
    try:
        preference = ConnectorPreference.objects.select_for_update().select_related("identity").get(pk=int(preference_id))
    except (ConnectorPreference.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Preference {preference_id!r} does not exist.")
    if preference.user_id != user.pk:  # someone else's: hidden, and audited as a refusal
        raise Hidden(f"Preference {preference_id!r} does not exist.")
    return preference


def update_preference(principal: Principal, user, preference_id, data=None, **fields):
    data = {**(data or {}), **fields}
    with audit.audited(
        "preference.updated",
        principal,
        "connector_preference",
        preference_id,
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        if not data:
            raise ValidationFailed("Nothing to change.", details={"body": "give at least one field"})
        with transaction.atomic():
            check_actor(principal, user, "change_connectorpreference")
            _lock_user(user)
            preference = _own_preference(user, preference_id)
            values = clean_preference(user, data, current=preference)
            if "priority" in values:
                _priority_clash(user, values["priority"], exclude_pk=preference.pk)
            if "identity" in values:
                _identity_clash(user, values["identity"], exclude_pk=preference.pk)
            changed = sorted(name for name, value in values.items() if getattr(preference, name) != value)
            old_connector = preference.identity.connector_id
            for name, value in values.items():
                setattr(preference, name, value)
            if changed:
                preference.save()
                audit.record_action(
                    "preference.updated",
                    principal,
                    "connector_preference",
                    preference.pk,
                    user_id=user.pk,
                    fields=changed,
                )
                publish_preference_update(preference.identity.connector_id, user.pk, "updated", preference_id=preference.pk, fields=changed)
                if preference.identity.connector_id != old_connector:
                    publish_preference_update(old_connector, user.pk, "updated", preference_id=preference.pk, fields=changed)
                forget_cached_routes(user.pk)
    return preference


def delete_preference(principal: Principal, user, preference_id):
    with audit.audited(
        "preference.deleted",
        principal,
        "connector_preference",
        preference_id,
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            check_actor(principal, user, "delete_connectorpreference")
            preference = _own_preference(user, preference_id)
            pk, connector_id = preference.pk, preference.identity.connector_id
            preference.delete()
            audit.record_action("preference.deleted", principal, "connector_preference", pk, user_id=user.pk)
            publish_preference_update(connector_id, user.pk, "deleted", preference_id=pk, fields=["preference"])
            forget_cached_routes(user.pk)


def reorder_preferences(principal: Principal, user, order):
    """Renumber the person's preferences 1..n in the given order (all of their ids, once each)."""
    with audit.audited(
        "preference.reordered",
        principal,
        "user",
        getattr(user, "pk", ""),
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            check_actor(principal, user, "change_connectorpreference")
            _lock_user(user)
            prefs = {p.pk: p for p in ConnectorPreference.objects.select_for_update().select_related("identity").filter(user=user)}
            if (
                not isinstance(order, list)
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in order)
                or len(set(order)) != len(order)
                or set(order) != set(prefs)
            ):
                raise ValidationFailed(
                    "Give every one of your preference ids once, first = priority 1.",
                    details={"order": f"must be a permutation of {sorted(prefs)}"},
                )
            changed = [pk for position, pk in enumerate(order, start=1) if prefs[pk].priority != position]
            # Two steps, because (user, priority) is unique at every statement.
            for position, pk in enumerate(order, start=1):
                if pk in changed:
                    ConnectorPreference.objects.filter(pk=pk).update(priority=MAX_PRIORITY + position)
            for position, pk in enumerate(order, start=1):
                if pk in changed:
                    ConnectorPreference.objects.filter(pk=pk).update(priority=position, updated_at=timezone.now())
            audit.record_action(
                "preference.reordered",
                principal,
                "user",
                user.pk,
                user_id=user.pk,
                order=order,
                changed=changed,
            )
            for pk in changed:
                publish_preference_update(prefs[pk].identity.connector_id, user.pk, "reordered", preference_id=pk, fields=["priority"])
            if changed:
                forget_cached_routes(user.pk)
    return list_preferences(Principal.system_actor("routing"), user)
