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

from audit import reads
from audit import services as audit
from brain_connectors.shared.errors import Conflict, Hidden, NotFound, ValidationFailed
from connectors.permissions import Principal
from routing.access import check_actor
from routing.changes import audited_change, forget_cached_routes, publish_preference_update, record_change
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


def _refuse_taken(user, exclude_pk, field, value, shown, message, code):
    """Conflict `code` if another of the person's preferences has `field` = `value`; `message` is formatted
    with `shown` (how the value is named, also in the details) as `value` and that preference's id as `other`."""
    other = ConnectorPreference.objects.filter(user=user, **{field: value}).exclude(pk=exclude_pk).first()
    if other is not None:
        raise Conflict(message.format(value=shown, other=other.pk), code=code, details={field: shown, "preference": other.pk})


def _priority_clash(user, priority, exclude_pk=None):
    _refuse_taken(user, exclude_pk, "priority", priority, priority,
                  "Priority {value} is already taken by preference {other}; choose another or reorder.", "priority_taken")


def _identity_clash(user, identity, exclude_pk=None):
    _refuse_taken(user, exclude_pk, "identity", identity, identity.pk,
                  "Identity {value} already has preference {other}; change that one instead.", "identity_has_preference")


def list_preferences(principal: Principal, user):
    check_actor(principal, user, "view_connectorpreference")
    with transaction.atomic():
        rows = _preferences_of(user)
        reads.record_read("preference.list", principal, "user", user.pk, count=len(rows))
    return rows


def _preferences_of(user):
    return list(ConnectorPreference.objects.filter(user=user).select_related("identity").order_by("priority"))


def _lock_user(user):
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def create_preference(principal: Principal, user, data=None, **fields):
    """Add a preference: `identity` (id, required), `priority` (default: after the others),
    `enabled`, `notification_types` (default: all), `quiet_start`/`quiet_end` ("HH:MM"), `timezone`."""
    data = {**(data or {}), **fields}
    with audited_change("preference.created", principal, "user", getattr(user, "pk", "")):
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
            record_change("preference.created", principal, ("connector_preference", preference.pk), user.pk, {"fields": fields},
                          "created", [preference.identity.connector_id], preference_id=preference.pk, fields=fields)
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
    with audited_change("preference.updated", principal, "connector_preference", preference_id):
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
                connectors = [preference.identity.connector_id]
                if preference.identity.connector_id != old_connector:
                    connectors.append(old_connector)
                record_change("preference.updated", principal, ("connector_preference", preference.pk), user.pk, {"fields": changed},
                              "updated", connectors, preference_id=preference.pk, fields=changed)
    return preference


def delete_preference(principal: Principal, user, preference_id):
    with audited_change("preference.deleted", principal, "connector_preference", preference_id):
        with transaction.atomic():
            check_actor(principal, user, "delete_connectorpreference")
            preference = _own_preference(user, preference_id)
            pk, connector_id = preference.pk, preference.identity.connector_id
            preference.delete()
            record_change("preference.deleted", principal, ("connector_preference", pk), user.pk, {},
                          "deleted", [connector_id], preference_id=pk, fields=["preference"])


def reorder_preferences(principal: Principal, user, order):
    """Renumber the person's preferences 1..n in the given order (all of their ids, once each)."""
    with audited_change("preference.reordered", principal, "user", getattr(user, "pk", "")):
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
    return _preferences_of(user)  # the new order, for the caller who just changed it (audited above)
