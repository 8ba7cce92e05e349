"""Connector records: register, change, delete, list and read connectors (each call audited)."""
from django.db import IntegrityError, transaction
from guardian.shortcuts import assign_perm

from audit import services as audit
from brain_connectors.shared.errors import Conflict, PermissionDenied, ValidationFailed, audit_result
from connectors.models import PERM_ADMIN, PERM_MANAGE, PERM_VIEW, Connector, ConnectorStatus
from connectors.permissions import can_create_connectors, has_perm, viewable_connectors
from connectors.registry import destinations, validation
from connectors.registry.common import emit, load_connector


def register_connector(
    principal,
    *,
    id,
    kind,
    display_name,
    config=None,
    credentials=None,
    quota_per_minute=None,
    recipient_quota_per_minute=None,
):
    config = {} if config is None else config
    credentials = {} if credentials is None else credentials
    with audit.audited("connector.register", principal, "connector", id, classify=audit_result):
        if not can_create_connectors(principal):
            raise PermissionDenied("You need the connectors.add_connector permission to register connectors.")
        validation.check_id(id)
        kind_class = validation.validated_kind_class(kind)
        validation.check_display_name(display_name)
        validation.check_config(kind_class, config)
        validation.check_credentials(kind_class, credentials)
        validation.check_quota("quota_per_minute", quota_per_minute)
        validation.check_quota("recipient_quota_per_minute", recipient_quota_per_minute)
        targets = destinations.present(kind_class, config)
        validation.check_destinations(kind_class, targets)
        connector = Connector(
            id=id,
            kind=kind,
            display_name=display_name.strip(),
            config=config,
            quota_per_minute=quota_per_minute,
            recipient_quota_per_minute=recipient_quota_per_minute,
        )
        connector.set_credentials(credentials)
        try:
            with transaction.atomic():
                # force_insert: a concurrent registration of the same id fails on the primary key
                # instead of silently updating the winner's row.
                connector.save(force_insert=True)
                if principal.user is not None and not principal.user.is_superuser:
                    assign_perm(PERM_ADMIN, principal.user, connector)
                audit.record_action(
                    "connector.register",
                    principal,
                    "connector",
                    connector.id,
                    kind=kind,
                    **({"destinations": destinations.summary(targets)} if targets else {}),
                )
                emit("connector.registered", connector.id, kind=kind, status=connector.status)
        except IntegrityError:
            raise Conflict(f"A connector with id {id!r} already exists.", code="duplicate_id")
    return connector


def update_connector(principal, connector_id, **changes):
    """Change display_name, config, quotas (manage) or credentials (admin). Config keys that decide
    where the credentials or messages go (destination_config_keys) need admin too: with them, a
    manager could send the credentials to a host of their choosing."""
    allowed = {"display_name", "config", "credentials", "quota_per_minute", "recipient_quota_per_minute"}
    with audit.audited("connector.update", principal, "connector", connector_id, classify=audit_result):
        unknown = set(changes) - allowed
        if unknown:
            raise ValidationFailed(f"Cannot change {sorted(unknown)}.", details={k: "read-only" for k in unknown})
        needed = PERM_ADMIN if "credentials" in changes else PERM_MANAGE
        moved = {}
        if "config" in changes:
            # A first look without the row lock: the permission a config change needs depends on
            # the current config, and the guard's DNS lookups must not run under the lock. A caller
            # refused here causes no lookup at all.
            current = load_connector(principal, connector_id, needed)
            kind_class = validation.validated_kind_class(current.kind)
            moved = destinations.moved(kind_class, current.config, changes["config"])
            if moved and not has_perm(principal, PERM_ADMIN, current):
                raise PermissionDenied(destinations.denial(kind_class, moved))
            validation.check_config(kind_class, changes["config"])
            validation.check_destinations(kind_class, moved)
        with transaction.atomic():
            connector = load_connector(principal, connector_id, needed, for_update=True)
            kind_class = validation.validated_kind_class(connector.kind)
            if "display_name" in changes:
                validation.check_display_name(changes["display_name"])
                connector.display_name = changes["display_name"].strip()
            if "config" in changes:
                if destinations.moved(kind_class, connector.config, changes["config"]) != moved:
                    # Changed by someone else since the first look: what was checked is stale.
                    raise Conflict("The connector's config changed meanwhile; read it again and retry.",
                                   code="config_changed")
                connector.config = changes["config"]
            if "credentials" in changes:
                validation.check_credentials(kind_class, changes["credentials"])
                connector.set_credentials(changes["credentials"])
            for quota in ("quota_per_minute", "recipient_quota_per_minute"):
                if quota in changes:
                    validation.check_quota(quota, changes[quota])
                    setattr(connector, quota, changes[quota])
            connector.save()
            # Field names only: values may be secret (credentials) or large (config). Moved
            # destinations by origin: paths and queries can carry tokens.
            audit.record_action(
                "connector.update",
                principal,
                "connector",
                connector.id,
                fields=sorted(changes),
                **({"destinations": destinations.summary(moved)} if moved else {}),
            )
            emit("connector.updated", connector.id, fields=sorted(changes), status=connector.status)
    return connector


def delete_connector(principal, connector_id):
    with audit.audited("connector.delete", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = load_connector(principal, connector_id, PERM_ADMIN, for_update=True)
            if connector.status in (ConnectorStatus.CONNECTED, ConnectorStatus.STARTING):
                raise Conflict(
                    f"Connector {connector_id!r} is {connector.status}; stop it before deleting it.",
                    code="connector_running",
                )
            kind = connector.kind
            connector.delete()
            audit.record_action("connector.delete", principal, "connector", connector_id, kind=kind)
            emit("connector.deleted", connector_id, kind=kind)


def list_connectors(principal, *, kind=None, status=None):
    qs = viewable_connectors(principal)
    if kind:
        qs = qs.filter(kind=kind)
    if status is not None:  # "?status=" is not a status either
        if status not in ConnectorStatus.values:
            with audit.audited("connector.list", principal, "connector", "", classify=audit_result):
                raise ValidationFailed(
                    f"Unknown status {status!r}; use one of {', '.join(ConnectorStatus.values)}.",
                    details={"status": "unknown"},
                )
        qs = qs.filter(status=status)
    audit.record_action(
        "connector.list",
        principal,
        "connector",
        "",
        filters={"kind": kind or "", "status": status or ""},
    )
    return qs


def get_connector(principal, connector_id, perm=PERM_VIEW):
    with audit.audited("connector.get", principal, "connector", connector_id, classify=audit_result):
        connector = load_connector(principal, connector_id, perm)
        audit.record_action("connector.get", principal, "connector", connector_id)
    return connector
