"""The only writers of the connector registry, deliveries and inbound messages.

Every function takes the acting `Principal`, checks its object permission, changes state and
writes the audit row in one transaction. A refused or failed call also leaves an audit row
(result `denied` or `failure`) and raises a `ServiceError` that every edge reports as is.
Network calls to platforms happen outside transactions, between two committed states.
"""
import hashlib
import json
import logging
import random
import re
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, models, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from audit import services as audit
from brain_connectors.shared import quotas
from brain_connectors.shared.errors import (
    Conflict,
    Hidden,
    NotFound,
    PermissionDenied,
    ServiceError,
    ValidationFailed,
    audit_result,
)
from connectors.events import log as events
from connectors.models import (
    ALLOWED_TRANSITIONS,
    CONNECTOR_ID_PATTERN,
    PERM_ADMIN,
    PERM_MANAGE,
    PERM_SEND,
    PERM_VIEW,
    Connector,
    ConnectorStatus,
    Delivery,
    DeliveryStatus,
    InboundMessage,
    connector_id_validator,
)
from connectors.permissions import Principal, can_create_connectors, has_perm, permission_test, viewable_connectors
from connectors.platforms.base import ConnectorError, IncomingMessage, MessageValidationError, OutgoingMessage
from connectors.registry import destinations
from connectors.registry.kinds import UnknownKind, connector_for, get_connector_class

logger = logging.getLogger(__name__)

BRAIN = Principal.system_actor("brain")


# --- events and signals -----------------------------------------------------------------------


def _emit(event_type, connector_id, **data):
    """Append an event in the current transaction (see connectors.events.log): ids, statuses and
    lengths only, never content."""
    events.publish(event_type, connector_id=connector_id, data=data)


def _settled(delivery, via, acknowledged=False):
    """Tell listeners (routing's fallback) after commit that a delivery reached an outcome."""
    from connectors.signals import delivery_settled

    payload = {
        "delivery_id": str(delivery.id),
        "connector_id": delivery.connector_id,
        "status": delivery.status,
        "via": via,
        "acknowledged": acknowledged,
    }

    def send():
        for receiver, result in delivery_settled.send_robust(sender=Delivery, **payload):
            if isinstance(result, Exception):
                logger.error("delivery_settled receiver %s failed: %s", receiver, result, exc_info=result)

    transaction.on_commit(send)


def _recorded(connector, direction, address, content, at, principal, **ids):
    """Hand a stored message to conversation memory in this same transaction (see signals)."""
    from connectors.signals import message_recorded

    message_recorded.send(
        sender=Connector,
        connector_id=connector.pk,
        kind=connector.kind,  # the receiver needs it for the address rules: spares it a query per message
        direction=direction,
        address=address,
        content=content,
        at=at,
        principal=str(principal),
        inbound_id=ids.get("inbound_id"),
        delivery_id=ids.get("delivery_id"),
        platform_message_id=ids.get("platform_message_id", ""),
        metadata=ids.get("metadata", {}),
    )


def _load(principal, connector_id, perm, *, for_update=False):
    qs = Connector.objects.select_for_update() if for_update else Connector.objects.all()
    try:
        connector = qs.get(pk=connector_id)
    except (Connector.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Connector {connector_id!r} does not exist.")
    allowed = permission_test(principal, connector)
    if not allowed(PERM_VIEW):
        raise Hidden(f"Connector {connector_id!r} does not exist.")
    if not allowed(perm):
        raise PermissionDenied(f"You need the {perm} permission on connector {connector_id!r}.")
    return connector


def _require_running(connector):
    if connector.status != ConnectorStatus.CONNECTED:
        raise Conflict(
            f"Connector {connector.id!r} is {connector.status}, not CONNECTED; start it first.",
            code="connector_not_running",
        )


def _transition(connector, new_status):
    if new_status not in ALLOWED_TRANSITIONS[connector.status]:
        raise Conflict(
            f"Connector {connector.id!r} cannot go from {connector.status} to {new_status}.",
            code="invalid_transition",
            details={"status": connector.status, "requested": new_status},
        )
    connector.status = new_status


# --- validation ------------------------------------------------------------------------------


def _validated_kind_class(kind):
    try:
        return get_connector_class(kind)
    except UnknownKind as exc:
        raise ValidationFailed(str(exc), code="unknown_kind", details={"kind": str(exc)})


def _check_config(kind_class, config):
    if not isinstance(config, dict):
        raise ValidationFailed("config must be a JSON object.", code="invalid_config", details={"config": "must be an object"})
    errors = kind_class.validate_config(config)
    if errors:
        raise ValidationFailed(
            f"Invalid config for kind {kind_class.kind!r}.", code="invalid_config", details={"config": errors}
        )


def _check_credentials(kind_class, credentials):
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


def _check_quota(name, value):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000):
        raise ValidationFailed(f"{name} must be an integer from 1 to 1000000, or null.", details={name: "out of range"})


def _check_id(connector_id):
    from django.core.exceptions import ValidationError

    try:
        connector_id_validator(connector_id if isinstance(connector_id, str) else "")
        # The validator searches with `$`, which also matches before a final "\n" ("tg_main\n").
        if not re.fullmatch(CONNECTOR_ID_PATTERN, connector_id):
            raise ValidationError(connector_id_validator.message)
    except ValidationError as exc:
        raise ValidationFailed(exc.messages[0], code="invalid_id", details={"id": exc.messages[0]})


def _check_destinations(kind_class, changes):
    """The outbound-URL guard on new destination values: 400 `unsafe_url` naming the setting that
    would allow them. Resolves DNS, so never under a lock or in a transaction."""
    problems = destinations.refusals(kind_class, changes)
    if problems:
        raise ValidationFailed(
            f"The config points somewhere this service does not send to: {'; '.join(problems.values())}.",
            code="unsafe_url",
            details={"config": problems},
        )


# --- registry --------------------------------------------------------------------------------


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
        _check_id(id)
        kind_class = _validated_kind_class(kind)
        if not isinstance(display_name, str) or not display_name.strip() or len(display_name) > 200:
            raise ValidationFailed("display_name must be 1-200 characters.", details={"display_name": "invalid"})
        _check_config(kind_class, config)
        _check_credentials(kind_class, credentials)
        _check_quota("quota_per_minute", quota_per_minute)
        _check_quota("recipient_quota_per_minute", recipient_quota_per_minute)
        targets = destinations.present(kind_class, config)
        _check_destinations(kind_class, targets)
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
                    from guardian.shortcuts import assign_perm

                    assign_perm(PERM_ADMIN, principal.user, connector)
                audit.record_action(
                    "connector.register",
                    principal,
                    "connector",
                    connector.id,
                    kind=kind,
                    **({"destinations": destinations.summary(targets)} if targets else {}),
                )
                _emit("connector.registered", connector.id, kind=kind, status=connector.status)
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
            current = _load(principal, connector_id, needed)
            kind_class = _validated_kind_class(current.kind)
            moved = destinations.moved(kind_class, current.config, changes["config"])
            if moved and not has_perm(principal, PERM_ADMIN, current):
                raise PermissionDenied(destinations.denial(kind_class, moved))
            _check_config(kind_class, changes["config"])
            _check_destinations(kind_class, moved)
        with transaction.atomic():
            connector = _load(principal, connector_id, needed, for_update=True)
            kind_class = _validated_kind_class(connector.kind)
            if "display_name" in changes:
                name = changes["display_name"]
                if not isinstance(name, str) or not name.strip() or len(name) > 200:
                    raise ValidationFailed("display_name must be 1-200 characters.", details={"display_name": "invalid"})
                connector.display_name = name.strip()
            if "config" in changes:
                if destinations.moved(kind_class, connector.config, changes["config"]) != moved:
                    # Changed by someone else since the first look: what was checked is stale.
                    raise Conflict("The connector's config changed meanwhile; read it again and retry.",
                                   code="config_changed")
                connector.config = changes["config"]
            if "credentials" in changes:
                _check_credentials(kind_class, changes["credentials"])
                connector.set_credentials(changes["credentials"])
            for quota in ("quota_per_minute", "recipient_quota_per_minute"):
                if quota in changes:
                    _check_quota(quota, changes[quota])
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
            _emit("connector.updated", connector.id, fields=sorted(changes), status=connector.status)
    return connector


def delete_connector(principal, connector_id):
    with audit.audited("connector.delete", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_ADMIN, for_update=True)
            if connector.status in (ConnectorStatus.CONNECTED, ConnectorStatus.STARTING):
                raise Conflict(
                    f"Connector {connector_id!r} is {connector.status}; stop it before deleting it.",
                    code="connector_running",
                )
            kind = connector.kind
            connector.delete()
            audit.record_action("connector.delete", principal, "connector", connector_id, kind=kind)
            _emit("connector.deleted", connector_id, kind=kind)


def start_connector(principal, connector_id):
    """STOPPED/ERROR → STARTING (committed) → platform start → CONNECTED or ERROR (committed)."""
    with audit.audited("connector.start", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_MANAGE, for_update=True)
            _transition(connector, ConnectorStatus.STARTING)
            connector.save(update_fields=["status", "updated_at"])
        try:
            connector_for(connector).start()
        except ConnectorError as exc:
            return _finish_start(principal, connector_id, error=exc.message, code=exc.code)
        except Exception as exc:  # a bug or an unexpected SDK error must not leave STARTING behind
            logger.exception("Starting connector %s failed", connector_id)
            return _finish_start(principal, connector_id, error=f"{type(exc).__name__}: {exc}")
        return _finish_start(principal, connector_id, error=None)


def _finish_start(principal, connector_id, *, error, code="platform_error"):
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        if connector.status != ConnectorStatus.STARTING:  # stopped meanwhile: keep what the later call decided
            audit.record_action(
                "connector.start",
                principal,
                "connector",
                connector_id,
                outcome="superseded",
                status=connector.status,
            )
            return connector
        now = timezone.now()
        if error is None:
            connector.status = ConnectorStatus.CONNECTED
            connector.last_error = ""
            connector.last_heartbeat = now
        else:
            connector.status = ConnectorStatus.ERROR
            connector.last_error = error[:2000]
        connector.save(update_fields=["status", "last_error", "last_heartbeat", "updated_at"])
        if error is None:
            audit.record_action("connector.start", principal, "connector", connector_id, status=connector.status)
            _emit("connector.started", connector_id, status=connector.status)
        else:
            audit.record_action(
                "connector.start",
                principal,
                "connector",
                connector_id,
                result=audit.FAILURE,
                status=connector.status,
                error=code,
            )
            _emit("connector.error", connector_id, status=connector.status, error=code, during="start")
    return connector


def stop_connector(principal, connector_id):
    with audit.audited("connector.stop", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_MANAGE, for_update=True)
            _transition(connector, ConnectorStatus.STOPPED)
            connector.lease_owner, connector.lease_expires_at = "", None
            connector.save(update_fields=["status", "lease_owner", "lease_expires_at", "updated_at"])
            audit.record_action("connector.stop", principal, "connector", connector_id)
            _emit("connector.stopped", connector_id, status=connector.status)
        try:
            connector_for(connector).stop()
        except Exception as exc:  # the connector is stopped on our side either way; say what failed
            logger.warning("Platform-side stop of %s failed: %s", connector_id, exc)
    return connector


def set_disabled(principal, connector_id, disabled: bool, reason=""):
    action = "connector.disable" if disabled else "connector.enable"
    with audit.audited(action, principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_MANAGE, for_update=True)
            _transition(connector, ConnectorStatus.DISABLED if disabled else ConnectorStatus.STOPPED)
            if reason:
                connector.last_error = reason[:2000]
            connector.save(update_fields=["status", "last_error", "updated_at"])
            audit.record_action(action, principal, "connector", connector_id)
            if disabled:
                _emit("connector.stopped", connector_id, status=connector.status, disabled=True)
            else:
                _emit("connector.updated", connector_id, fields=["status"], status=connector.status)
    return connector


def heartbeat(principal, connector_id, *, lease_owner=None, lease_seconds=60):
    """Record that the connector is alive; with `lease_owner`, also take or renew its lease.

    Returns the connector, or raises Conflict if another live process holds the lease.
    """
    with audit.audited("connector.heartbeat", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_MANAGE, for_update=True)
            now = timezone.now()
            fields = ["last_heartbeat", "updated_at"]
            if lease_owner is not None:
                held_by_other = (
                    connector.lease_owner
                    and connector.lease_owner != lease_owner
                    and connector.lease_expires_at
                    and connector.lease_expires_at > now
                )
                if held_by_other:
                    raise Conflict(
                        f"Connector {connector_id!r} is leased by another process until "
                        f"{connector.lease_expires_at.isoformat()}.",
                        code="lease_held",
                    )
                connector.lease_owner = lease_owner
                connector.lease_expires_at = now + timedelta(seconds=lease_seconds)
                fields += ["lease_owner", "lease_expires_at"]
            connector.last_heartbeat = now
            connector.save(update_fields=fields)
            audit.record_action(
                "connector.heartbeat",
                principal,
                "connector",
                connector_id,
                lease_owner=lease_owner or "",
            )
    return connector


def release_lease(principal, connector_id, lease_owner):
    """Give up a lease this owner holds (a clean shutdown), so another process need not wait for
    it to expire. A lease held by someone else is left alone. Returns True if released."""
    with transaction.atomic():
        connector = Connector.objects.select_for_update().filter(pk=connector_id).first()
        if connector is None or not lease_owner or connector.lease_owner != lease_owner:
            return False
        connector.lease_owner, connector.lease_expires_at = "", None
        connector.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
        audit.record_action(
            "connector.lease_released",
            principal,
            "connector",
            connector_id,
            lease_owner=lease_owner,
        )
    return True


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
        connector = _load(principal, connector_id, perm)
        audit.record_action("connector.get", principal, "connector", connector_id)
    return connector


def test_connector(principal, connector_id):
    """Run the platform's health check now and record the outcome on the connector."""
    with audit.audited("connector.test", principal, "connector", connector_id, classify=audit_result):
        connector = _load(principal, connector_id, PERM_MANAGE)
        started = time.monotonic()
        try:
            result = connector_for(connector).health_check()
        except ConnectorError as exc:
            from connectors.platforms.base import HealthResult

            result = HealthResult(ok=False, detail=exc.message)
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        with transaction.atomic():
            connector = Connector.objects.select_for_update().get(pk=connector_id)
            if result.ok:
                connector.last_heartbeat = timezone.now()
            else:
                connector.last_error = result.detail[:2000]
            connector.save(update_fields=["last_heartbeat", "last_error", "updated_at"])
            audit.record_action(
                "connector.test",
                principal,
                "connector",
                connector_id,
                result=audit.SUCCESS if result.ok else audit.FAILURE,
                ok=result.ok,
            )
            _emit("connector.health.check", connector_id, ok=result.ok, latency_ms=latency_ms, trigger="manual")
    return result


# --- permissions -----------------------------------------------------------------------------


def grant_permission(principal, connector_id, perm, *, user=None, group=None):
    return _change_permission(principal, connector_id, perm, user=user, group=group, grant=True)


def revoke_permission(principal, connector_id, perm, *, user=None, group=None):
    return _change_permission(principal, connector_id, perm, user=user, group=group, grant=False)


def _change_permission(principal, connector_id, perm, *, user, group, grant):
    from guardian.shortcuts import assign_perm, remove_perm

    from connectors.permissions import LEVELS

    action = "permission.grant" if grant else "permission.revoke"
    with audit.audited(action, principal, "connector", connector_id, classify=audit_result):
        if perm not in LEVELS:
            raise ValidationFailed(f"Unknown permission {perm!r}; use one of {', '.join(LEVELS)}.")
        if (user is None) == (group is None):
            raise ValidationFailed("Name exactly one user or one group.")
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_ADMIN, for_update=True)
            (assign_perm if grant else remove_perm)(perm, user or group, connector)
            grantee = f"user:{user.get_username()}" if user else f"group:{group.name}"
            audit.record_action(action, principal, "connector", connector_id, permission=perm, grantee=grantee)


# --- messages --------------------------------------------------------------------------------


def _request_hash(connector_id, recipient, content):
    canonical = json.dumps([connector_id, recipient, content], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def send_message(principal, connector_id, recipient, content, *, idempotency_key=None, in_reply_to=None,
                 memory_content=None):
    """Queue one outbound message; returns (delivery, replayed).

    `memory_content`, when given, is what conversation memory keeps instead of `content`: for a
    message carrying a one-time secret (routing's pairing link), which must reach the recipient
    but never the memory, its search index or anyone who reads conversations.

    With an idempotency key, the same key and body return the original delivery (replayed=True),
    and the same key with another body is a Conflict. The delivery task runs after commit.
    """
    with audit.audited("message.send", principal, "connector", connector_id, classify=audit_result):
        try:
            message = OutgoingMessage(recipient=recipient, content=content)
        except MessageValidationError as exc:
            raise ValidationFailed("Invalid message.", details=exc.errors)
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255 or not idempotency_key.isprintable()
        ):
            raise ValidationFailed(
                "Idempotency-Key must be 1-255 printable characters.", details={"idempotency_key": "invalid"}
            )
        request_hash = _request_hash(connector_id, message.recipient, message.content)
        with transaction.atomic():
            connector = _load(principal, connector_id, PERM_SEND)
            _check_recipient(connector, message.recipient)
            if idempotency_key is not None:
                existing = _replay(principal, idempotency_key, request_hash)
                if existing:
                    audit.record_action(
                        "message.send",
                        principal,
                        "connector",
                        connector_id,
                        delivery_id=str(existing.id),
                        replayed=True,
                    )
                    return existing, True
            _require_running(connector)
            try:
                # A savepoint only when a concurrent request with the same key can collide.
                with transaction.atomic(savepoint=idempotency_key is not None):
                    delivery = Delivery.objects.create(
                        connector=connector,
                        recipient=message.recipient,
                        content=message.content,
                        principal=principal.key,
                        requested_by=principal.user,
                        idempotency_key=idempotency_key,
                        request_hash=request_hash,
                        in_reply_to=in_reply_to,
                    )
            except IntegrityError:
                # A concurrent request with the same key won: answer as its replay.
                existing = _replay(principal, idempotency_key, request_hash)
                if existing is None:
                    raise
                audit.record_action(
                    "message.send",
                    principal,
                    "connector",
                    connector_id,
                    delivery_id=str(existing.id),
                    replayed=True,
                )
                return existing, True
            audit.record_action(
                "message.queued",
                principal,
                "connector",
                connector_id,
                delivery_id=str(delivery.id),
                length=len(message.content),
            )
            _emit("connector.message.queued", connector_id, delivery_id=str(delivery.id), length=len(message.content))
            _recorded(
                connector, "outbound", delivery.recipient,
                delivery.content if memory_content is None else memory_content, delivery.created_at, principal,
                delivery_id=delivery.id,
                metadata={"in_reply_to": in_reply_to.pk} if in_reply_to is not None else {},
            )
            transaction.on_commit(lambda: enqueue_delivery(delivery.id))
    return delivery, False


def _check_recipient(connector, recipient):
    """The platform's own address rules (e.g. a valid email address), so the caller hears at once."""
    try:
        problem = get_connector_class(connector.kind).validate_recipient(recipient)
    except UnknownKind:
        return  # the delivery task reports the missing kind
    if problem:
        raise ValidationFailed(
            f"Invalid recipient for a {connector.kind} connector: {problem}.",
            code="invalid_recipient",
            details={"recipient": problem},
        )


def _replay(principal, idempotency_key, request_hash):
    existing = Delivery.objects.filter(principal=principal.key, idempotency_key=idempotency_key).first()
    if existing and existing.request_hash != request_hash:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_conflict",
            details={"delivery_id": str(existing.id)},
        )
    return existing


def enqueue_delivery(delivery_id, countdown=None):
    from connectors.tasks import deliver

    if countdown:
        deliver.apply_async(args=[str(delivery_id)], countdown=countdown)
    else:
        deliver.delay(str(delivery_id))


def retry_delay(attempts, retry_after=None):
    """Exponential backoff with full jitter, capped at 15 minutes; the platform's ask wins if longer."""
    delay = random.uniform(0, min(900, 2 ** min(attempts, 10)))
    if retry_after:
        delay = max(delay, float(retry_after))
    return delay


def attempt_delivery(delivery_id):
    """Deliver one queued message: claim it, call the platform, record the outcome."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().select_related("connector").filter(pk=delivery_id).first()
        if delivery is None or delivery.status != DeliveryStatus.QUEUED:
            return delivery
        now = timezone.now()
        if delivery.connector.status != ConnectorStatus.CONNECTED:
            # Not dropped: it waits queued until the connector runs again.
            return _defer(delivery, 60, f"connector is {delivery.connector.status}")
        earlier = (
            Delivery.objects.filter(
                connector_id=delivery.connector_id,
                recipient=delivery.recipient,
                status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING],
                created_at__lt=delivery.created_at,
            )
            .order_by("created_at")
            .first()
        )
        if earlier is not None:
            # In order per recipient: wait behind the earlier message (it kicks us when done).
            wait = (earlier.next_attempt_at - now).total_seconds() if earlier.next_attempt_at else 0
            return _defer(delivery, max(1.0, wait + 0.5), "", kick=False)
        wait = quotas.take(
            [
                (f"connector:{delivery.connector_id}", delivery.connector.quota_per_minute),
                (f"recipient:{delivery.connector_id}:{delivery.recipient}", delivery.connector.recipient_quota_per_minute),
            ]
        )
        if wait > 0:
            return _defer(delivery, wait, "")  # over quota: delayed, never dropped
        delivery.status = DeliveryStatus.SENDING
        delivery.attempts += 1
        delivery.save(update_fields=["status", "attempts", "updated_at"])
    connector = delivery.connector
    system = Principal.system_actor("delivery")
    metadata = {}
    if delivery.in_reply_to_id:
        inbound = InboundMessage.objects.filter(pk=delivery.in_reply_to_id).first()
        if inbound is not None:
            metadata["reply_to"] = {"platform_message_id": inbound.platform_message_id, "metadata": inbound.metadata}
    try:
        result = connector_for(connector).send(
            OutgoingMessage(recipient=delivery.recipient, content=delivery.content, metadata=metadata),
            delivery_id=str(delivery.id),
        )
    except ConnectorError as exc:
        return _record_send_failure(system, delivery, exc)
    except Exception as exc:
        logger.exception("Unexpected error delivering %s", delivery.id)
        return _record_send_failure(system, delivery, ConnectorError(f"{type(exc).__name__}: {exc}"))
    # The platform has the message now. Recording that must outlast a database blip: a row left in
    # `sending` is re-driven by the sweeper, which sends the message a second time.
    return _while_database_recovers(lambda: _record_sent(system, connector, delivery, result))


def _record_sent(system, connector, delivery, result):
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        now = timezone.now()
        delivery.status = DeliveryStatus.DELIVERED if result.delivered else DeliveryStatus.SENT
        delivery.platform_message_id = result.platform_message_id or ""
        delivery.sent_at = now
        if result.delivered:
            delivery.delivered_at = now
        delivery.last_error = ""
        delivery.save()
        audit.record_action(
            "message.sent",
            system,
            "connector",
            connector.id,
            delivery_id=str(delivery.id),
            attempts=delivery.attempts,
        )
        sent = {"delivery_id": str(delivery.id), "attempts": delivery.attempts, "length": len(delivery.content)}
        _emit("connector.message.sent", connector.id, **sent, latency_ms=_ms_since(delivery.created_at, now))
        if result.delivered:
            _emit("connector.message.delivered", connector.id, delivery_id=str(delivery.id), via="platform")
        _settled(delivery, "platform")
        _kick_next_for_recipient(delivery)
    return delivery


def _while_database_recovers(work):
    """work() (its own transaction), retried while the database is unreachable, for up to half of
    DELIVERY_SENDING_TIMEOUT: after that the sweeper re-drives the row anyway."""
    deadline = time.monotonic() + settings.DELIVERY_SENDING_TIMEOUT / 2
    while True:
        try:
            return work()
        except (OperationalError, InterfaceError):
            if time.monotonic() >= deadline or connection.in_atomic_block:
                raise  # inside a caller's transaction nothing can be retried here
            logger.warning("Database unreachable while recording a sent message; retrying")
            connection.close()  # the broken connection; the next query opens a new one
            time.sleep(1)


def _ms_since(start, end):
    return round((end - start).total_seconds() * 1000, 1)


def _defer(delivery, seconds, reason, kick=True):
    """Keep a delivery queued for later (inside the caller's transaction)."""
    delivery.next_attempt_at = timezone.now() + timedelta(seconds=seconds)
    if reason:
        delivery.last_error = reason
    delivery.save(update_fields=["next_attempt_at", "last_error", "updated_at"])
    if kick and not settings.CELERY_TASK_ALWAYS_EAGER:
        transaction.on_commit(lambda: enqueue_delivery(delivery.id, countdown=seconds))
    return delivery


def _kick_next_for_recipient(delivery):
    """After a delivery settles, send the next one queued for the same person right away."""
    following = (
        Delivery.objects.filter(
            connector_id=delivery.connector_id,
            recipient=delivery.recipient,
            status=DeliveryStatus.QUEUED,
            created_at__gt=delivery.created_at,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
        .first()
    )
    if following is not None:
        transaction.on_commit(lambda: enqueue_delivery(following))


def _record_send_failure(principal, delivery, error: ConnectorError):
    retry = None
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        delivery.last_error = error.message[:2000]
        if error.permanent:
            delivery.status = DeliveryStatus.FAILED
        elif delivery.attempts >= settings.DELIVERY_MAX_ATTEMPTS:
            delivery.status = DeliveryStatus.DEAD
        else:
            retry = retry_delay(delivery.attempts, error.retry_after)
            delivery.status = DeliveryStatus.QUEUED
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=retry)
        delivery.save()
        audit.record_action(
            "message.failed" if retry is None else "message.retry",
            principal,
            "connector",
            delivery.connector_id,
            result=audit.FAILURE,
            delivery_id=str(delivery.id),
            status=delivery.status,
            permanent=error.permanent,
            error=error.code,
        )
        if retry is None:
            _settled(delivery, "platform")
            _emit(
                "connector.message.failed",
                delivery.connector_id,
                delivery_id=str(delivery.id),
                status=delivery.status,
                attempts=delivery.attempts,
                permanent=error.permanent,
                error=error.code,
            )
        if error.permanent and error.code in CONNECTOR_FATAL_CODES:
            record_connector_error(principal, delivery.connector_id, error)
        # Eager mode (make run) would retry in a tight loop; there the row waits for a sweep.
        if retry is not None and not settings.CELERY_TASK_ALWAYS_EAGER:
            transaction.on_commit(lambda: enqueue_delivery(delivery.id, countdown=retry))
        if retry is None:
            _kick_next_for_recipient(delivery)
    return delivery


def get_delivery(principal, delivery_id):
    with audit.audited("delivery.get", principal, "delivery", str(delivery_id), classify=audit_result):
        delivery = Delivery.objects.select_related("connector").filter(pk=_uuid_or_none(delivery_id)).first()
        if delivery is None:
            raise NotFound(f"Delivery {delivery_id!r} does not exist.")
        if not has_perm(principal, PERM_VIEW, delivery.connector):
            raise Hidden(f"Delivery {delivery_id!r} does not exist.")
        audit.record_action("delivery.get", principal, "delivery", str(delivery.id))
    return delivery


def _uuid_or_none(value):
    import uuid

    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def mark_delivered(principal, delivery_id):
    """A receipt (or the CLI showing the message) confirms the person has it."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != DeliveryStatus.SENT:
            return delivery
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.save(update_fields=["status", "delivered_at", "updated_at"])
        audit.record_action(
            "message.delivered",
            principal,
            "connector",
            delivery.connector_id,
            delivery_id=str(delivery.id),
        )
        _emit("connector.message.delivered", delivery.connector_id, delivery_id=str(delivery.id), via="confirmation")
        _settled(delivery, "confirmation")
    return delivery


def acknowledge_delivery(connector_id, delivery_id, *, platform_message_id="", principal=None):
    """The person confirmed a message (e.g. pressed 1 on a notification call).

    Recorded as an audit row `message.acknowledged`; a `sent` delivery also becomes `delivered`.
    `platform_message_id`, when given, must match the delivery's (once it has one), so an
    acknowledgement cannot land on another message. Returns the delivery, or None if refused.
    """
    principal = principal or Principal.system_actor("platform", via="webhook")
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update().filter(pk=_uuid_or_none(delivery_id), connector_id=connector_id).first()
        )
        mismatch = (
            delivery is not None
            and platform_message_id
            and delivery.platform_message_id
            and delivery.platform_message_id != platform_message_id
        )
        if delivery is None or mismatch:
            audit.record_action(
                "message.acknowledged",
                principal,
                "connector",
                connector_id,
                result=audit.FAILURE,
                error="platform_id_mismatch" if mismatch else "unknown_message",
            )
            return None
        previous = delivery.status
        if previous == DeliveryStatus.SENT:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = timezone.now()
            delivery.save(update_fields=["status", "delivered_at", "updated_at"])
            _emit("connector.message.delivered", connector_id, delivery_id=str(delivery.id), via="acknowledgement")
        # Acknowledged even if a receipt marked it delivered before: the person confirmed it.
        _settled(delivery, "acknowledgement", acknowledged=True)
        audit.record_action(
            "message.acknowledged",
            principal,
            "connector",
            connector_id,
            delivery_id=str(delivery.id),
            previous=previous,
        )
    return delivery


def apply_receipt(connector_id, receipt, principal=None):
    """A delivery receipt: move the delivery with this platform id to delivered or failed.

    A receipt never moves a delivery backwards (a late "failed" after "delivered" is kept only
    in the audit log). Unknown ids are recorded and otherwise ignored.
    """
    principal = principal or Principal.system_actor("platform", via="webhook")
    if receipt.status not in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
        raise ValidationFailed(f"Unknown receipt status {receipt.status!r}.")
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update()
            .filter(connector_id=connector_id, platform_message_id=receipt.platform_message_id)
            .first()
        )
        if delivery is None:
            audit.record_action(
                "message.receipt",
                principal,
                "connector",
                connector_id,
                result=audit.FAILURE,
                error="unknown_message",
                status=receipt.status,
            )
            return None
        previous = delivery.status
        if previous in (DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.QUEUED):
            delivery.status = receipt.status
            if receipt.status == DeliveryStatus.DELIVERED:
                delivery.delivered_at = timezone.now()
            else:
                delivery.last_error = (receipt.error or "the platform reported the message undelivered")[:2000]
            delivery.save(update_fields=["status", "delivered_at", "last_error", "updated_at"])
            _emit(
                f"connector.message.{receipt.status}",
                connector_id,
                delivery_id=str(delivery.id),
                status=receipt.status,
                via="receipt",
            )
            _settled(delivery, "receipt")
        audit.record_action(
            "message.delivered" if receipt.status == DeliveryStatus.DELIVERED else "message.failed",
            principal,
            "connector",
            connector_id,
            delivery_id=str(delivery.id),
            receipt=receipt.status,
            previous=previous,
        )
    return delivery


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


# ConnectorError codes meaning the whole connector is unusable, not one recipient or one message
# (the platform rejected its credentials): the connector goes to ERROR with the reason.
# unsafe_url: a destination in its config leads where the outbound-URL guard refuses to send.
CONNECTOR_FATAL_CODES = frozenset({"invalid_token", "invalid_credentials", "account_inactive", "unsafe_url"})


def record_connector_error(principal, connector_id, error: ConnectorError):
    """A running connector hit an error that stops it (e.g. its token was revoked): CONNECTED →
    ERROR with the reason, lease released, audited. Anything but CONNECTED is left as it is."""
    with transaction.atomic():
        connector = Connector.objects.select_for_update().filter(pk=connector_id).first()
        if connector is None or connector.status != ConnectorStatus.CONNECTED:
            return connector
        connector.status = ConnectorStatus.ERROR
        connector.last_error = error.message[:2000]
        connector.lease_owner, connector.lease_expires_at = "", None
        connector.save(update_fields=["status", "last_error", "lease_owner", "lease_expires_at", "updated_at"])
        audit.record_action(
            "connector.error",
            principal,
            "connector",
            connector_id,
            result=audit.FAILURE,
            status=connector.status,
            error=error.code,
        )
        _emit("connector.error", connector_id, status=connector.status, error=error.code)
    return connector


class _DuplicateInbound(Exception):
    """The (connector, platform message id) pair is already stored."""


def receive_message(connector_id, message: IncomingMessage, principal=None, connector=None):
    """Store one inbound message exactly once; returns (inbound, created).

    A duplicate (same connector and platform message id, even concurrently) returns the stored
    row with created=False and triggers nothing. BRAIN is asked after commit, in a task.
    `connector` is the row when the caller has just loaded it (the webhook view), to save a query.
    """
    principal = principal or Principal.system_actor("platform", via="webhook")
    with audit.audited("message.receive", principal, "connector", connector_id, classify=audit_result):
        try:
            # The insert comes first and needs no savepoint of its own: a duplicate rolls back
            # this whole block (a savepoint only if a caller's transaction is open), which has
            # written nothing else yet. Two round trips fewer on the hottest inbound path.
            with transaction.atomic():
                if connector is None:
                    connector = Connector.objects.filter(pk=connector_id).first()
                if connector is None:
                    raise NotFound(f"Connector {connector_id!r} does not exist.")
                _require_running(connector)
                try:
                    inbound = InboundMessage.objects.create(
                        connector=connector,
                        platform_message_id=message.platform_message_id,
                        sender=message.sender,
                        sender_name=message.sender_name,
                        content=message.content,
                        metadata=message.metadata,
                        received_at=message.received_at or timezone.now(),
                    )
                except IntegrityError as exc:
                    raise _DuplicateInbound from exc
                audit.record_action(
                    "message.received",
                    principal,
                    "connector",
                    connector_id,
                    inbound_id=inbound.pk,
                    length=len(message.content),
                )
                _emit("connector.message.received", connector_id, inbound_id=inbound.pk, length=len(message.content))
                _recorded(
                    connector, "inbound", inbound.sender, inbound.content, inbound.received_at, principal,
                    inbound_id=inbound.pk, platform_message_id=inbound.platform_message_id,
                    metadata={"sender_name": inbound.sender_name} if inbound.sender_name else {},
                )
                transaction.on_commit(lambda: _enqueue_brain(inbound.pk))
        except _DuplicateInbound:
            with transaction.atomic():
                existing = InboundMessage.objects.get(connector_id=connector_id, platform_message_id=message.platform_message_id)
                audit.record_action(
                    "message.receive",
                    principal,
                    "connector",
                    connector_id,
                    inbound_id=existing.pk,
                    duplicate=True,
                )
            return existing, False
    return inbound, True


def _enqueue_brain(inbound_id):
    from connectors.tasks import handle_inbound

    handle_inbound.delay(inbound_id)


def conversation_context(inbound, limit=None):
    """The person's recent exchange on this connector before `inbound`, oldest first."""
    limit = settings.BRAIN_CONTEXT_LIMIT if limit is None else limit
    earlier_in = InboundMessage.objects.filter(
        connector_id=inbound.connector_id, sender=inbound.sender, received_at__lte=inbound.received_at
    ).exclude(pk=inbound.pk).order_by("-received_at")[:limit]
    earlier_out = Delivery.objects.filter(
        connector_id=inbound.connector_id, recipient=inbound.sender, created_at__lte=inbound.received_at
    ).order_by("-created_at")[:limit]
    items = [{"role": "user", "content": m.content, "time": m.received_at} for m in earlier_in]
    items += [{"role": "assistant", "content": d.content, "time": d.created_at} for d in earlier_out]
    items.sort(key=lambda item: item["time"])
    return [{**item, "time": item["time"].isoformat()} for item in items[-limit:]]


def _reply_key(inbound_id):
    """The idempotency key of BRAIN's reply to one inbound message: a re-run reuses the first reply."""
    return f"reply:{inbound_id}"


def reply_with_brain(inbound_id):
    """Ask BRAIN about one stored inbound message and send its reply, at most once."""
    from connectors.delivery.brain import BrainError, BrainRequest, get_brain

    with transaction.atomic():
        inbound = (
            InboundMessage.objects.select_for_update().select_related("connector").filter(pk=inbound_id).first()
        )
        if inbound is None or inbound.brain_status != InboundMessage.BrainStatus.PENDING:
            return inbound
        if Delivery.objects.filter(principal=BRAIN.key, idempotency_key=_reply_key(inbound.pk)).exists():
            # A re-drive after the reply was queued but before its status was saved (the worker or
            # the database went away): done, without asking BRAIN again. A second answer can differ,
            # and the reply's idempotency key would refuse it and mark the message failed.
            inbound.brain_status = InboundMessage.BrainStatus.REPLIED
            inbound.brain_error = ""
            inbound.save(update_fields=["brain_status", "brain_error"])
            audit.record_action(
                "brain.reply",
                BRAIN,
                "connector",
                inbound.connector_id,
                inbound_id=inbound.pk,
                outcome=inbound.brain_status,
                already_queued=True,
            )
            return inbound
        inbound.brain_status = InboundMessage.BrainStatus.THINKING
        inbound.brain_claimed_at = timezone.now()
        inbound.save(update_fields=["brain_status", "brain_claimed_at"])
    handled = _handled_before_brain(inbound)
    try:
        if handled is not None:
            reply = handled
        else:
            request = BrainRequest(
                connector_id=inbound.connector_id,
                connector_kind=inbound.connector.kind,
                sender=inbound.sender,
                sender_name=inbound.sender_name,
                content=inbound.content,
                message_id=inbound.platform_message_id,
                context=import_string(settings.BRAIN_CONTEXT_PROVIDER)(inbound),
            )
            reply = get_brain().reply(request)
    except Exception as exc:  # BrainError, or a bug/misconfiguration: never leave the message "thinking"
        if not isinstance(exc, BrainError):
            logger.exception("BRAIN backend failed unexpectedly for inbound %s", inbound.pk)
            exc = BrainError(f"{type(exc).__name__}: {exc}", code="brain_backend_error")
        with transaction.atomic():
            InboundMessage.objects.filter(pk=inbound.pk).update(
                brain_status=InboundMessage.BrainStatus.FAILED, brain_error=str(exc)[:2000]
            )
            audit.record_action(
                "brain.reply",
                BRAIN,
                "connector",
                inbound.connector_id,
                result=audit.FAILURE,
                inbound_id=inbound.pk,
                error=exc.code,
            )
        return inbound
    if reply:
        try:
            # The key makes a re-run of this task (after a crash) reuse the first reply.
            send_message(BRAIN, inbound.connector_id, inbound.sender, reply, idempotency_key=_reply_key(inbound.pk), in_reply_to=inbound)
        except ServiceError as exc:  # send_message audited the refusal itself
            InboundMessage.objects.filter(pk=inbound.pk).update(
                brain_status=InboundMessage.BrainStatus.FAILED, brain_error=exc.message[:2000]
            )
            return inbound
    status = InboundMessage.BrainStatus.REPLIED if reply else InboundMessage.BrainStatus.NO_REPLY
    with transaction.atomic():
        InboundMessage.objects.filter(pk=inbound.pk).update(brain_status=status, brain_error="")
        audit.record_action(
            "brain.reply",
            BRAIN,
            "connector",
            inbound.connector_id,
            inbound_id=inbound.pk,
            outcome=status,
        )
    return inbound


def broker_backlog():
    """Tasks waiting in the Celery queue, or None where that cannot be known (eager mode, a broker
    that does not say, or one that is down: then the sweeper behaves as if the queue were empty)."""
    from kombu.exceptions import ChannelError

    from brain_connectors.celery import app

    if app.conf.task_always_eager:
        return None
    try:
        with app.connection_for_read() as conn:
            declared = conn.default_channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
            return int(declared.message_count)
    except ChannelError as exc:
        if "NOT_FOUND" in str(exc):
            return 0  # Redis deletes an empty queue's key; RabbitMQ has not declared it yet
        logger.warning("Could not read the broker's queue length (%s); sweeping without it", exc)
        return None
    except Exception as exc:  # the broker is down or cannot count: re-drive as before
        logger.warning("Could not read the broker's queue length (%s); sweeping without it", type(exc).__name__)
        return None


def due_and_stuck(model, now, limit):
    """Ids of `model` rows (Delivery, EventDelivery) to re-drive: queued and due, left alone for
    DELIVERY_SWEEP_GRACE; and stuck in `sending` past DELIVERY_SENDING_TIMEOUT (worker died)."""
    due = list(
        model.objects.filter(status=DeliveryStatus.QUEUED)
        .filter(models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now))
        .filter(updated_at__lte=now - timedelta(seconds=settings.DELIVERY_SWEEP_GRACE))
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    stuck = list(
        model.objects.filter(
            status=DeliveryStatus.SENDING,
            updated_at__lte=now - timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT),
        ).values_list("pk", flat=True)[:limit]
    )
    return due, stuck


def _handled_before_brain(inbound):
    """The reply of the first INBOUND_MESSAGE_HANDLERS entry that takes this message (e.g. a
    pairing code for routing), or None to ask BRAIN. Handlers are dotted paths to functions
    `handler(inbound) -> str | None`; a failing handler is logged and skipped, never fatal."""
    for path in settings.INBOUND_MESSAGE_HANDLERS:
        try:
            reply = import_string(path)(inbound)
        except Exception:
            logger.exception("Inbound handler %s failed on inbound %s", path, inbound.pk)
            continue
        if reply is not None:
            return reply
    return None


def sweep(limit=500):
    """Re-drive work the broker may have lost; run periodically (Celery beat) and by runconnectors.

    - queued deliveries that are due get their task again (a duplicate task is harmless: the
      claim under a row lock lets one through);
    - deliveries stuck in `sending` past DELIVERY_SENDING_TIMEOUT (their worker died) go back to
      `queued`: if the platform had accepted the send just before the crash, this is the one
      place a duplicate can come from, and it is audited as `message.redrive`;
    - inbound messages whose BRAIN task never ran, or whose claim is stale, are asked again.
    Returns counts per kind of work.
    """
    now = timezone.now()
    system = Principal.system_actor("sweeper")
    # Queued rows are re-enqueued only into the room the broker has below `limit` waiting tasks. A
    # backlog means their tasks are most likely still in it; re-adding up to `limit` copies on every
    # sweep grew a backlog faster than workers drained it (bench/chaos.py, 10,000 messages). After
    # a broker flush the queue is empty and everything due is re-driven.
    room = limit if (waiting_tasks := broker_backlog()) is None else max(0, limit - waiting_tasks)
    due, stuck = due_and_stuck(Delivery, now, limit)
    due = due[:room]
    for pk in stuck:
        with transaction.atomic():
            delivery = Delivery.objects.select_for_update().filter(pk=pk, status=DeliveryStatus.SENDING).first()
            if delivery is None:
                continue
            delivery.status = DeliveryStatus.QUEUED
            delivery.last_error = "re-driven: the worker sending it stopped"
            delivery.save(update_fields=["status", "last_error", "updated_at"])
            audit.record_action(
                "message.redrive",
                system,
                "connector",
                delivery.connector_id,
                delivery_id=str(delivery.pk),
            )
    for pk in [*stuck, *due]:
        enqueue_delivery(pk)

    stale_claim = now - timedelta(seconds=settings.BRAIN_CLAIM_TIMEOUT)
    # Stale claims always: their worker died, so no task of theirs is waiting anywhere. Pending
    # messages only into the broker's room, like queued deliveries.
    stale = list(
        InboundMessage.objects.filter(brain_status=InboundMessage.BrainStatus.THINKING, brain_claimed_at__lte=stale_claim)
        .values_list("pk", flat=True)[:limit]
    )
    pending = list(
        InboundMessage.objects.filter(
            brain_status=InboundMessage.BrainStatus.PENDING,
            received_at__lte=now - timedelta(seconds=settings.DELIVERY_SWEEP_GRACE),
        ).values_list("pk", flat=True)[: max(0, room - len(due))]
    )
    waiting = stale + pending
    with transaction.atomic():
        reclaimed = InboundMessage.objects.filter(
            pk__in=waiting, brain_status=InboundMessage.BrainStatus.THINKING
        ).update(brain_status=InboundMessage.BrainStatus.PENDING)
        if reclaimed:  # their worker died while asking BRAIN: BRAIN may be asked a second time
            audit.record_action("brain.redrive", system, "inbound", "", count=reclaimed)
    for pk in waiting:
        _enqueue_brain(pk)
    return {"deliveries_due": len(due), "deliveries_redriven": len(stuck), "inbound_redriven": len(waiting)}
