"""Event subscriptions: other systems receive our events as signed HTTP POSTs.

A subscription is a URL, a list of event types (exact, or prefixes ending in `.*`) and a
`whsec_` secret the server generates and shows once. Every event that matches and that the
owner may see is POSTed as its CloudEvents envelope (the JSON of `Event.envelope()`), signed
Standard-Webhooks style (brain_connectors.shared.signing) with `webhook-id` = the event id, the same on every
retry, so receivers can drop duplicates.

The flow, like the message pipeline (connectors.services):

    events.publish() ─► fan_out(event): one EventDelivery row (queued) per matching subscription,
                        in the publisher's transaction ─► on commit: Celery task deliver_event
    deliver_event(id) ─► claim (queued → sending, attempts + 1, committed) ─► POST
                     ─► sent | queued again with backoff (408, 429, 5xx, network; Retry-After
                        honoured; dead after DELIVERY_MAX_ATTEMPTS) | failed (other answers)
                        each outcome + audit row in one transaction
    sweep()          ─► re-drives due queued rows and rows stuck in `sending` (Celery beat)

Owners see and change only their own subscriptions (superusers see all); anybody else gets
"not found". Subscriptions never deliver an event the owner could not read through the API:
events of connectors they cannot view are skipped at fan-out (no row), and checked again at
delivery time (a permission revoked meanwhile fails the delivery, "not visible to the owner").

URLs pass the outbound-URL guard (brain_connectors.shared.url_guard), like every URL the service calls: when
a subscription is created or changed (a host that does not resolve is refused then), and on every
attempt inside the HTTP client, on the very address it connects to (brain_connectors.shared.guarded_http), so
a DNS answer that changed in between (rebinding) cannot redirect it. Redirects are never followed.
"""
import base64
import json
import logging
import secrets as secrets_module
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared import url_guard
from brain_connectors.shared.errors import Hidden, NotFound, PermissionDenied, ValidationFailed, audit_result
from brain_connectors.shared.guarded_http import UnresolvableHost, caused_by, guarded_client
from brain_connectors.shared.signing import signed_headers
from connectors.delivery import queue
from connectors.delivery.schedule import due_and_stuck, retry_delay
from connectors.events import log as events
from connectors.models import DeliveryStatus, EventDelivery, EventSubscription
from connectors.permissions import Principal, viewable_connectors
from connectors.platforms.webhook import parse_retry_after

logger = logging.getLogger(__name__)

TARGET = "event_subscription"
USER_AGENT = "BRAIN-Connectors-Events/1.0"
MAX_EVENT_TYPES = 50
SECRET_BYTES = 32
TRANSIENT_STATUSES = {408, 429}
DELIVERY_SYSTEM = Principal.system_actor("event-delivery")
NOT_VISIBLE = "not visible to the owner"


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
    unknown = [t for t in cleaned if not events.type_pattern_known(t)]
    if unknown:
        raise ValidationFailed(
            f"Unknown event types {unknown}; known: {', '.join(sorted(events.EVENT_TYPES))} "
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


def _active_subscriptions():
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


def _load(principal, subscription_id, *, for_update=False):
    """The subscription if the principal owns it (or is a superuser); `not found` otherwise."""
    try:
        pk = uuid.UUID(str(subscription_id))
    except ValueError:
        raise NotFound(f"Subscription {subscription_id!r} does not exist.")
    qs = EventSubscription.objects.select_related("owner")
    if for_update:
        qs = qs.select_for_update(of=("self",))  # not the owner row: nothing here changes users
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
            # The log lock first, as publishers take it: see fan_out() on why the order matters.
            audit.lock_log()
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
        # whose DNS lookup must not run under the event log lock taken below.
        _load(principal, subscription_id)
        if "url" in changes:
            cleaned["url"] = _check_url(changes["url"])
        with transaction.atomic():
            audit.lock_log()
            subscription = _load(principal, subscription_id, for_update=True)
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
            audit.lock_log()
            subscription = _load(principal, subscription_id, for_update=True)
            subscription.secret = secret
            subscription.save(update_fields=["secret", "updated_at"])
            audit.record_action("subscription.rotate_secret", principal, TARGET, str(subscription.pk))
    return subscription, secret


def delete_subscription(principal, subscription_id):
    with audit.audited("subscription.delete", principal, TARGET, str(subscription_id), classify=audit_result):
        with transaction.atomic():
            audit.lock_log()
            subscription = _load(principal, subscription_id, for_update=True)
            pk = str(subscription.pk)
            summary = _url_summary(subscription.url)
            subscription.delete()  # its EventDelivery rows go with it
            audit.record_action("subscription.delete", principal, TARGET, pk, **summary)
            _invalidate_now_and_on_commit()


def list_subscriptions(principal):
    qs = EventSubscription.objects.select_related("owner").order_by("created_at")
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
        qs = EventDelivery.objects.filter(subscription=subscription).select_related("event").order_by("-created_at")
        if status:
            qs = qs.filter(status=status)
        audit.record_action("subscription.deliveries", principal, TARGET, str(subscription.pk))
    return qs


# --- fan-out (inside events.publish) ---------------------------------------------------------


def _owner_may_view(owner, connector_id) -> bool:
    """The rule of the event API (events.visible_query): superusers see every event, others only
    those of connectors they may view; events about no connector are for superusers."""
    if not owner.is_active:
        return False
    if owner.is_superuser:
        return True
    if not connector_id:
        return False
    return viewable_connectors(Principal.for_user(owner, via="subscription")).filter(pk=connector_id).exists()


def fan_out(event):
    """Queue one delivery per active subscription matching `event`, in the publisher's transaction.

    Called by events.publish() with the event log lock held. Every writer of subscriptions takes
    that lock before touching the row, so a subscription seen here cannot be deleted before this
    transaction commits (no foreign-key failure at commit), and the order of the two locks is
    the same everywhere (no deadlock).
    """
    matching = [pk for pk, patterns in _active_subscriptions() if patterns and events.type_matches(event.type, patterns)]
    if not matching:
        return []
    live = EventSubscription.objects.filter(pk__in=matching, active=True).select_related("owner")
    rows = [
        EventDelivery(subscription=subscription, event=event)
        for subscription in live
        if _owner_may_view(subscription.owner, event.connector_id)
    ]
    if not rows:
        return []
    EventDelivery.objects.bulk_create(rows)
    ids = [row.pk for row in rows]
    transaction.on_commit(lambda: [enqueue(pk) for pk in ids])
    return rows


def enqueue(event_delivery_id, countdown=None):
    queue.enqueue(queue.DELIVER_EVENT, str(event_delivery_id), countdown=countdown)


# --- delivery --------------------------------------------------------------------------------


class _Outcome:
    def __init__(self, status, *, response_status=None, error="", retry_after=None, code=""):
        self.status = status  # "sent", "transient", "permanent"
        self.response_status = response_status
        self.error = error
        self.retry_after = retry_after
        self.code = code


def _post(url, body: bytes, headers: dict) -> _Outcome:
    timeout = float(settings.EVENT_SUBSCRIPTION_TIMEOUT)
    try:
        # The guard checks the address of the connection it opens (and tries the host's next
        # address on a refused connection), so what passed is what is called.
        with guarded_client(timeout=timeout) as client:
            # Streamed and never read: the receiver's body does not matter, and may be large.
            with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
    except url_guard.UnsafeURL as exc:
        return _Outcome("permanent", error=f"unsafe url: {exc}", code="unsafe_url")
    except httpx.TimeoutException:
        return _Outcome("transient", error=f"the receiver did not answer within {timeout:g}s", code="timeout")
    except httpx.HTTPError as exc:
        unresolved = caused_by(exc, UnresolvableHost)
        if unresolved is not None:
            return _Outcome("transient", error=str(unresolved), code="unresolvable")
        return _Outcome("transient", error=f"the receiver is unreachable: {type(exc).__name__}", code="unreachable")
    if 200 <= status < 300:
        return _Outcome("sent", response_status=status)
    if status in TRANSIENT_STATUSES or status >= 500:
        return _Outcome("transient", response_status=status, retry_after=retry_after,
                        error=f"the receiver answered HTTP {status}",
                        code="rate_limited" if status == 429 else "receiver_unavailable")
    # 3xx included: redirects are not followed (they could point anywhere).
    return _Outcome("permanent", response_status=status, error=f"the receiver refused the event: HTTP {status}",
                    code="receiver_refused")


def _finish(delivery, outcome: _Outcome):
    """Record an attempt's outcome and its audit row in one transaction."""
    retry = None
    with transaction.atomic():
        # The log lock before the row lock, the order delete_subscription takes them in (its
        # cascade locks this row): the other order could deadlock.
        audit.lock_log()
        delivery = (
            EventDelivery.objects.select_for_update().select_related("subscription", "event").filter(pk=delivery.pk).first()
        )
        if delivery is None:
            return None  # the subscription was deleted during the attempt, its deliveries with it
        now = timezone.now()
        delivery.response_status = outcome.response_status
        if outcome.status == "sent":
            delivery.status = DeliveryStatus.SENT
            delivery.sent_at = now
            delivery.next_attempt_at = None
            delivery.last_error = ""
        else:
            delivery.last_error = outcome.error[:2000]
            if outcome.status == "permanent":
                delivery.status = DeliveryStatus.FAILED
                delivery.next_attempt_at = None
            elif delivery.attempts >= settings.DELIVERY_MAX_ATTEMPTS:
                delivery.status = DeliveryStatus.DEAD
                delivery.next_attempt_at = None
            else:
                retry = retry_delay(delivery.attempts, outcome.retry_after)
                delivery.status = DeliveryStatus.QUEUED
                delivery.next_attempt_at = now + timedelta(seconds=retry)
        delivery.save()
        action = {
            DeliveryStatus.SENT: "subscription.delivery.sent",
            DeliveryStatus.QUEUED: "subscription.delivery.retry",
        }.get(delivery.status, "subscription.delivery.failed")
        audit.record_action(
            action,
            DELIVERY_SYSTEM,
            TARGET,
            str(delivery.subscription_id),
            result=audit.SUCCESS if delivery.status == DeliveryStatus.SENT else audit.FAILURE,
            event_delivery_id=str(delivery.pk),
            event_id=str(delivery.event.event_id),
            event_type=delivery.event.type,
            status=delivery.status,
            attempts=delivery.attempts,
            response_status=delivery.response_status,
            error=outcome.code,
        )
        # Eager mode (make run) would retry in a tight loop; there the row waits for a sweep.
        if retry is not None and not settings.CELERY_TASK_ALWAYS_EAGER:
            pk = delivery.pk
            transaction.on_commit(lambda: enqueue(pk, countdown=retry))
    return delivery


def deliver_event(event_delivery_id):
    """Make one attempt at a queued, due EventDelivery. Returns the row (None if it is gone)."""
    with transaction.atomic():
        delivery = (
            EventDelivery.objects.select_for_update()
            .select_related("subscription", "subscription__owner", "event")
            .filter(pk=event_delivery_id)
            .first()
        )
        if delivery is None or delivery.status != DeliveryStatus.QUEUED:
            return delivery  # a duplicate task, or settled already: the row lock lets one through
        now = timezone.now()
        if delivery.next_attempt_at and delivery.next_attempt_at > now:
            return delivery  # early (a duplicate task or a sweep race): its own task comes later
        subscription = delivery.subscription
        delivery.attempts += 1
        delivery.status = DeliveryStatus.SENDING
        delivery.save(update_fields=["status", "attempts", "updated_at"])
    # Checked per attempt, outside the row lock (DNS and permission queries can be slow).
    refusal = None
    if not subscription.active:
        refusal = _Outcome("permanent", error="the subscription is inactive", code="subscription_inactive")
    elif not _owner_may_view(subscription.owner, delivery.event.connector_id):
        refusal = _Outcome("permanent", error=NOT_VISIBLE, code="not_visible")
    elif problem := url_guard.url_problem(subscription.url):
        refusal = _Outcome("permanent", error=f"unsafe url: {problem}", code="unsafe_url")
    if refusal is not None:
        return _finish(delivery, refusal)
    body = json.dumps(delivery.event.envelope(), ensure_ascii=False, separators=(",", ":")).encode()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signed_headers(subscription.secret, body, msg_id=str(delivery.event.event_id)),
    }
    try:
        outcome = _post(subscription.url, body, headers)
    except Exception as exc:  # a bug must not leave the row in `sending` until the sweep
        logger.exception("Unexpected error delivering event delivery %s", delivery.pk)
        outcome = _Outcome("transient", error=f"{type(exc).__name__}", code="internal_error")
    return _finish(delivery, outcome)


def sweep(limit=500):
    """Re-drive event deliveries the broker may have lost (Celery beat, "sweep-event-deliveries").

    - queued rows that are due and older than DELIVERY_SWEEP_GRACE get their task again (a
      duplicate task is harmless: the claim under the row lock lets one through);
    - rows stuck in `sending` past DELIVERY_SENDING_TIMEOUT (their worker died) go back to
      `queued` and are sent again: the receiver may see the event twice, with the same
      webhook-id, and drops the duplicate. Audited as `subscription.delivery.redrive`.
    Returns counts.
    """
    now = timezone.now()
    due, stuck = due_and_stuck(EventDelivery, now, limit)
    redriven = []
    for pk in stuck:
        with transaction.atomic():
            audit.lock_log()  # before the row lock, as in _finish()
            delivery = EventDelivery.objects.select_for_update().filter(pk=pk, status=DeliveryStatus.SENDING).first()
            if delivery is None:
                continue
            delivery.status = DeliveryStatus.QUEUED
            delivery.next_attempt_at = None
            delivery.last_error = "re-driven: the worker sending it stopped"
            delivery.save(update_fields=["status", "next_attempt_at", "last_error", "updated_at"])
            audit.record_action(
                "subscription.delivery.redrive",
                DELIVERY_SYSTEM,
                TARGET,
                str(delivery.subscription_id),
                event_delivery_id=str(delivery.pk),
            )
            redriven.append(pk)
    for pk in [*redriven, *due]:
        enqueue(pk)
    return {"event_deliveries_due": len(due), "event_deliveries_redriven": len(redriven)}
