"""Event subscriptions: the service their owners use to create, change, list and delete them.

A subscription is a URL, a list of event types (exact, or prefixes ending in `.*`) and a
`whsec_` secret the server generates and shows once. Matching events are queued for it at
publish time (connectors.events.subscription_fanout) and POSTed, signed, by
connectors.events.subscription_delivery; `enqueue()` here hands one delivery to Celery.

Owners see and change only their own subscriptions (superusers see all); anybody else gets
"not found".

URLs pass the outbound-URL guard (brain_connectors.shared.url_guard), like every URL the service calls: when
a subscription is created or changed (a host that does not resolve is refused then), and on every
attempt inside the HTTP client (see connectors.events.subscription_delivery).
"""
import base64
import secrets as secrets_module
import threading
import time
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from audit import services as audit
from brain_connectors.shared import url_guard
from brain_connectors.shared.errors import Hidden, NotFound, PermissionDenied, ValidationFailed, audit_result
from connectors import task_queue as queue
from connectors.events.types import EVENT_TYPES, type_pattern_known
from connectors.models import DeliveryStatus, EventDelivery, EventSubscription

TARGET = "event_subscription"
MAX_EVENT_TYPES = 50
SECRET_BYTES = 32


# --- secrets, validation ---------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets_module.token_bytes(SECRET_BYTES)).decode()


def _check_event_types(event_types) -> list[str]:
    if not isinstance(event_types, (list, tuple)) or not all(isinstance(t, str) for t in event_types):
        raise ValidationFailed("event_types must be a list of strings.", details={"event_types": "must be a list of strings"})
    # An empty list would mean "everything" to type_matches(); say so explicitly with a prefix.
    cleaned = list(dict.fromkeys(t.strip() for t in event_types if t.strip()))
    if not cleaned:
        raise ValidationFailed(
            "event_types must name at least one type or prefix (e.g. connector.*).",
            details={"event_types": "must not be empty"},
        )
    if len(cleaned) > MAX_EVENT_TYPES:
        raise ValidationFailed(f"At most {MAX_EVENT_TYPES} event types.", details={"event_types": "too many"})
    unknown = [t for t in cleaned if not type_pattern_known(t)]
    if unknown:
        raise ValidationFailed(
            f"Unknown event types {unknown}; known: {', '.join(sorted(EVENT_TYPES))} "
            "(or a prefix like connector.message.*).",
            code="unknown_event_type",
            details={"event_types": unknown},
        )
    return cleaned


def _check_description(description) -> str:
    if not isinstance(description, str) or len(description) > 200:
        raise ValidationFailed("description must be at most 200 characters.", details={"description": "invalid"})
    return description.strip()


def _check_active(active) -> bool:
    if not isinstance(active, bool):
        raise ValidationFailed("active must be true or false.", details={"active": "must be a boolean"})
    return active


def url_safety_problem(url) -> str | None:
    """Why this subscription URL is refused, or None. Resolves the host (DNS)."""
    return url_guard.url_refusal(url)


def _check_url(url) -> str:
    problem = url_safety_problem(url)
    if problem:
        raise ValidationFailed(f"The url is refused: {problem}.", code="unsafe_url", details={"url": problem})
    return url


def _url_summary(url: str) -> dict:
    """What the audit log keeps of a URL: scheme and host. Paths and queries often carry tokens."""
    parts = urlsplit(url)
    return {"scheme": parts.scheme, "host": parts.hostname or ""}


# --- the per-process cache of active subscriptions -------------------------------------------

_cache_lock = threading.Lock()
_cache = {"expires": 0.0, "rows": ()}


def active_subscriptions():
    """(id, event_types) of active subscriptions, cached for EVENT_SUBSCRIPTION_CACHE_SECONDS so
    that publishing with no subscriptions costs no query. Local changes invalidate it; another
    process sees a change within the cache lifetime."""
    ttl = settings.EVENT_SUBSCRIPTION_CACHE_SECONDS
    now = time.monotonic()
    with _cache_lock:
        if ttl > 0 and _cache["expires"] > now:
            return _cache["rows"]
    rows = tuple(EventSubscription.objects.filter(active=True).values_list("id", "event_types"))
    with _cache_lock:
        _cache["rows"], _cache["expires"] = rows, now + ttl
    return rows


def invalidate_cache():
    with _cache_lock:
        _cache["expires"] = 0.0


def _invalidate_now_and_on_commit():
    # Now, for this transaction's own publishes; on commit, in case another thread reloaded the
    # old state in between.
    invalidate_cache()
    transaction.on_commit(invalidate_cache)


# --- management ------------------------------------------------------------------------------


def _require_user(principal):
    user = principal.user
    if user is None or not (user.is_active and user.is_authenticated):
        raise PermissionDenied("Event subscriptions belong to an active user account.")
    return user


def _load(principal, subscription_id, *, for_update=False, keeps_key=False):
    """The subscription if the principal owns it (or is a superuser); `not found` otherwise.

    `keeps_key`: the row is changed, not deleted, so FOR NO KEY UPDATE, which does not wait for
    the publishers that hold it FOR KEY SHARE (subscription_fanout) nor make them wait."""
    try:
        pk = uuid.UUID(str(subscription_id))
    except ValueError:
        raise NotFound(f"Subscription {subscription_id!r} does not exist.")
    qs = EventSubscription.objects.select_related("owner")
    if for_update:
        qs = qs.select_for_update(of=("self",), no_key=keeps_key)  # not the owner row: nothing here changes users
    subscription = qs.filter(pk=pk).first()
    if subscription is None:
        raise NotFound(f"Subscription {subscription_id!r} does not exist.")
    user = principal.user
    if principal.is_system or (user is not None and user.is_active and (user.is_superuser or subscription.owner_id == user.pk)):
        return subscription
    # 404 to the caller (existence stays hidden), `denied` in the audit log.
    raise Hidden(f"Subscription {subscription_id!r} does not exist.")


def create_subscription(principal, *, url, event_types, description="", active=True):
    """Returns (subscription, secret). The secret is shown this once; only its ciphertext is kept."""
    with audit.audited("subscription.create", principal, TARGET, "", classify=audit_result):
        owner = _require_user(principal)
        description = _check_description(description)
        event_types = _check_event_types(event_types)
        active = _check_active(active)
        _check_url(url)
        secret = new_secret()
        with transaction.atomic():
            subscription = EventSubscription.objects.create(
                owner=owner, url=url, event_types=event_types, description=description, secret=secret, active=active
            )
            audit.record_action(
                "subscription.create",
                principal,
                TARGET,
                str(subscription.pk),
                event_types=event_types,
                active=active,
                **_url_summary(url),
            )
            _invalidate_now_and_on_commit()
    return subscription, secret


def update_subscription(principal, subscription_id, **changes):
    allowed = {"url", "event_types", "description", "active"}
    with audit.audited("subscription.update", principal, TARGET, str(subscription_id), classify=audit_result):
        unknown = set(changes) - allowed
        if unknown:
            raise ValidationFailed(f"Cannot change {sorted(unknown)}.", details={k: "read-only" for k in unknown})
        if not changes:
            raise ValidationFailed("Nothing to change.", details={"body": "give at least one field"})
        cleaned = {}
        if "description" in changes:
            cleaned["description"] = _check_description(changes["description"])
        if "event_types" in changes:
            cleaned["event_types"] = _check_event_types(changes["event_types"])
        if "active" in changes:
            cleaned["active"] = _check_active(changes["active"])
        # Ownership first (a stranger gets "not found" whatever the body says), then the URL,
        # whose DNS lookup must not run under the row lock taken below.
        _load(principal, subscription_id)
        if "url" in changes:
            cleaned["url"] = _check_url(changes["url"])
        with transaction.atomic():
            subscription = _load(principal, subscription_id, for_update=True, keeps_key=True)
            for name, value in cleaned.items():
                setattr(subscription, name, value)
            subscription.save()
            details = {"fields": sorted(cleaned)}
            if "url" in cleaned:
                details.update(_url_summary(cleaned["url"]))
            if "event_types" in cleaned:
                details["event_types"] = cleaned["event_types"]
            if "active" in cleaned:
                details["active"] = cleaned["active"]
            audit.record_action("subscription.update", principal, TARGET, str(subscription.pk), **details)
            _invalidate_now_and_on_commit()
    return subscription


def rotate_secret(principal, subscription_id) -> tuple[EventSubscription, str]:
    """Replace the secret; returns (subscription, new secret), shown this once. Deliveries made
    from now on (retries included) are signed with the new one."""
    with audit.audited("subscription.rotate_secret", principal, TARGET, str(subscription_id), classify=audit_result):
        secret = new_secret()
        with transaction.atomic():
            subscription = _load(principal, subscription_id, for_update=True, keeps_key=True)
            subscription.secret = secret
            subscription.save(update_fields=["secret", "updated_at"])
            audit.record_action("subscription.rotate_secret", principal, TARGET, str(subscription.pk))
    return subscription, secret


def delete_subscription(principal, subscription_id):
    with audit.audited("subscription.delete", principal, TARGET, str(subscription_id), classify=audit_result):
        with transaction.atomic():
            # FOR UPDATE: waits for publishers that are queueing deliveries for it (they hold
            # FOR KEY SHARE, see subscription_fanout), so the cascade below deletes theirs too.
            subscription = _load(principal, subscription_id, for_update=True)
            pk = str(subscription.pk)
            summary = _url_summary(subscription.url)
            subscription.delete()  # its EventDelivery rows go with it
            audit.record_action("subscription.delete", principal, TARGET, pk, **summary)
            _invalidate_now_and_on_commit()


def list_subscriptions(principal):
    qs = EventSubscription.objects.select_related("owner").order_by("created_at", "id")
    user = principal.user
    if not principal.is_system:
        if user is None or not user.is_active:
            qs = qs.none()
        elif not user.is_superuser:
            qs = qs.filter(owner=user)
    audit.record_action("subscription.list", principal, TARGET, "")
    return qs


def get_subscription(principal, subscription_id):
    with audit.audited("subscription.get", principal, TARGET, str(subscription_id), classify=audit_result):
        subscription = _load(principal, subscription_id)
        audit.record_action("subscription.get", principal, TARGET, str(subscription.pk))
    return subscription


def list_deliveries(principal, subscription_id, *, status=None):
    """The subscription's deliveries, newest first (a queryset: the caller paginates)."""
    with audit.audited("subscription.deliveries", principal, TARGET, str(subscription_id), classify=audit_result):
        if status is not None and status not in DeliveryStatus.values:
            raise ValidationFailed(
                f"Unknown status {status!r}; use one of {', '.join(DeliveryStatus.values)}.", details={"status": "unknown"}
            )
        subscription = _load(principal, subscription_id)
        qs = EventDelivery.objects.filter(subscription=subscription).select_related("event").order_by("-created_at", "-id")
        if status:
            qs = qs.filter(status=status)
        audit.record_action("subscription.deliveries", principal, TARGET, str(subscription.pk))
    return qs


# --- queueing ----------------------------------------------------------------------------------


def enqueue(event_delivery_id, countdown=None):
    queue.enqueue(queue.DELIVER_EVENT, str(event_delivery_id), countdown=countdown)
