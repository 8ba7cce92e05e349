"""Delivering queued events to subscriptions: signed POSTs, their outcomes and retries, and the sweeper.

Each matching event is POSTed as its CloudEvents envelope (the JSON of `Event.envelope()`), signed
Standard-Webhooks style (brain_connectors.shared.signing) with `webhook-id` = the event id, the same
on every retry, so receivers can drop duplicates. The flow, like the message pipeline:

    fan_out(event) ─► one EventDelivery row (queued) per matching subscription, in the publisher's
                      transaction (connectors.events.subscription_fanout) ─► on commit: Celery task
    deliver_event(id) ─► claim (queued → sending, attempts + 1, committed) ─► POST
                     ─► sent | queued again with backoff (408, 429, 5xx, network; Retry-After
                        honoured; dead after DELIVERY_MAX_ATTEMPTS) | failed (other answers)
                        each outcome + audit row in one transaction
    sweep()          ─► re-drives due queued rows and rows stuck in `sending` (Celery beat)

A permission revoked since the fan-out fails the delivery ("not visible to the owner"). The URL
guard runs on every attempt inside the HTTP client, on the very address it connects to
(brain_connectors.shared.guarded_http), so a DNS answer that changed since the subscription was
saved (rebinding) cannot redirect it. Redirects are never followed.
"""
import json
import logging
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared import url_guard
from brain_connectors.shared.guarded_http import UnresolvableHost, caused_by, guarded_client
from brain_connectors.shared.signing import signed_headers
from connectors.events.subscription_fanout import owner_may_view
from connectors.events.subscriptions import TARGET, enqueue
from connectors.models import DeliveryStatus, EventDelivery
from connectors.permissions import Principal
from connectors.platforms.webhook import parse_retry_after
from connectors.retry_schedule import due_and_stuck, retry_delay

logger = logging.getLogger(__name__)

USER_AGENT = "BRAIN-Connectors-Events/1.0"
TRANSIENT_STATUSES = {408, 429}
DELIVERY_SYSTEM = Principal.system_actor("event-delivery")
NOT_VISIBLE = "not visible to the owner"


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
        # This row only (of=self): the subscription and event rows are read, not changed, and
        # locking the subscription here as well would take it in the opposite order to
        # delete_subscription (subscription, then its deliveries through the cascade): a deadlock.
        delivery = (
            EventDelivery.objects.select_for_update(of=("self",))
            .select_related("subscription", "event")
            .filter(pk=delivery.pk)
            .first()
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
            EventDelivery.objects.select_for_update(of=("self",))  # the claim is this row's: see _finish()
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
    elif not owner_may_view(subscription.owner, delivery.event.connector_id):
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
