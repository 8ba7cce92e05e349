"""The staff dashboard `/dashboard/`: a page, and the JSON snapshot it starts from.

The page (templates/dashboard/index.html, static/dashboard/) loads `/dashboard/state/` once, then
follows the event stream at `/ws/events/?since=<latest_seq of the snapshot>`: the snapshot counts
every event up to `latest_seq` and the stream delivers every event after it, so nothing is
counted twice or missed. It polls the snapshot (without the chart) for queue depths and
heartbeats, which are not events.

Read-only: nothing here writes, and nothing here shows message content (events never hold it).
"""
from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Max
from django.db.models.functions import TruncMinute
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from connectors.events import log as events
from connectors.events.bus_lease import bus_lag
from connectors.models import Delivery, DeliveryStatus, Event
from connectors.permissions import Principal, viewable_connectors

CHART_MINUTES = 30
# Chart series: the key the page uses, and the event type it counts.
CHART_TYPES = {
    "sent": "connector.message.sent",
    "received": "connector.message.received",
    "failed": "connector.message.failed",
}
RECENT_EVENTS = 50
LAST_ERROR_CHARS = 200
UNPUSHED_COUNT_CAP = 10_000
WS_PATH = "/ws/events/"


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def _truncate(text, limit=LAST_ERROR_CHARS):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def chart_counts(connector_ids, *, now, up_to_seq):
    """Messages per minute over the last CHART_MINUTES minutes, per connector and series.

    One grouped query (at most minutes × connectors × series rows), counting events with
    `seq <= up_to_seq` only, so that the live stream (which starts after it) adds the rest.
    """
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=CHART_MINUTES - 1)
    series = {cid: {key: [0] * CHART_MINUTES for key in CHART_TYPES} for cid in connector_ids}
    key_of = {t: k for k, t in CHART_TYPES.items()}
    rows = (
        Event.objects.filter(
            connector_id__in=list(connector_ids),
            type__in=list(CHART_TYPES.values()),
            time__gte=start,
            seq__lte=up_to_seq,
        )
        .annotate(minute=TruncMinute("time"))
        .values("connector_id", "type", "minute")
        .annotate(n=Count("seq"))
        .order_by()
    )
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < CHART_MINUTES:
            series[row["connector_id"]][key_of[row["type"]]][index] += row["n"]
    return {"start": _iso(start), "minutes": CHART_MINUTES, "series": series}


def stream_lag(now):
    """Events committed but not yet pushed to the channel layer (the relay re-pushes them)."""
    unpushed = Event.objects.filter(pushed_at__isnull=True)
    oldest = unpushed.order_by("seq").values_list("time", flat=True).first()
    return {
        "unpushed": unpushed.order_by()[:UNPUSHED_COUNT_CAP].count(),
        "unpushed_capped": UNPUSHED_COUNT_CAP,
        "oldest_unpushed_age_seconds": round((now - oldest).total_seconds(), 3) if oldest else None,
    }


def last_health_checks(connector_ids, *, up_to_seq):
    """Each connector's latest `connector.health.check` in the log, {id: {ok, latency_ms, time, trigger}}.

    From the event log (not the page's memory), so a reload shows the last check at once instead of
    waiting for the next one; cut at `up_to_seq` like the rest of the snapshot. Two queries.
    """
    latest = (
        Event.objects.filter(connector_id__in=list(connector_ids), type="connector.health.check",
                             seq__isnull=False, seq__lte=up_to_seq)
        .values("connector_id").annotate(last=Max("seq")).order_by().values_list("last", flat=True)
    )
    rows = Event.objects.filter(seq__in=list(latest)).values("connector_id", "time", "data")
    return {
        row["connector_id"]: {"ok": bool(row["data"].get("ok")), "latency_ms": row["data"].get("latency_ms"),
                              "time": _iso(row["time"]), "trigger": row["data"].get("trigger")}
        for row in rows
    }


def snapshot(principal, *, with_chart=True):
    """What the dashboard shows, for the connectors this principal may view."""
    # First the cursor, then everything else: whatever is read below is at least this recent,
    # and the chart and recent events are cut at it so the stream continues exactly after.
    latest = events.latest_seq()
    now = timezone.now()
    connectors = list(
        viewable_connectors(principal)
        .order_by("id")
        .values("id", "display_name", "kind", "status", "last_heartbeat", "last_error")
    )
    ids = [c["id"] for c in connectors]
    depth = dict(
        Delivery.objects.filter(connector_id__in=ids, status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
        .values("connector_id")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("connector_id", "n")
    )
    health = last_health_checks(ids, up_to_seq=latest)
    for c in connectors:
        c["health"] = health.get(c["id"])  # None: never checked (or its events were purged)
        c["last_heartbeat"] = _iso(c["last_heartbeat"])
        c["last_error"] = _truncate(c["last_error"] or "")
        c["queue_depth"] = depth.get(c["id"], 0)
    state = {
        "now": _iso(now),
        "latest_seq": latest,
        "oldest_seq": events.oldest_seq(),
        "connectors": connectors,
        "queue_depth": sum(depth.values()),
        "stream": stream_lag(now),
        "bus": bus_lag(latest),
        "ws_path": WS_PATH,
        "ws_window": settings.EVENTS_WS_WINDOW,
    }
    if with_chart:
        state["chart"] = chart_counts(ids, now=now, up_to_seq=latest)
        visible = None if (principal.is_system or principal.user.is_superuser) else ids
        recent = events.visible_query(visible).filter(seq__lte=latest).order_by("-seq")[:RECENT_EVENTS]
        state["recent_events"] = [e.envelope() for e in recent]
    return state


def _principal(request):
    return Principal.for_user(request.user, via="dashboard")


@never_cache
@staff_member_required
def dashboard(request):
    context = {
        **admin.site.each_context(request),
        "title": "Live dashboard",
        "chart_minutes": CHART_MINUTES,
        "ws_path": WS_PATH,
    }
    return render(request, "dashboard/index.html", context)


@never_cache
@staff_member_required
def dashboard_state(request):
    """`?chart=0` leaves out the chart and the recent events (the page's periodic poll)."""
    with_chart = request.GET.get("chart", "1") not in ("0", "false", "no")
    return JsonResponse(snapshot(_principal(request), with_chart=with_chart))
