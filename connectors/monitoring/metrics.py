"""Prometheus metrics at `/metrics`, computed from the database at scrape time.

Every figure comes from PostgreSQL/SQLite when Prometheus scrapes, not from counters kept in
one process's memory: daphne, the Celery workers and `runconnectors` are separate processes,
and whichever of them answers the scrape reports the same, complete numbers. Each family is a
handful of aggregate queries (conditional COUNTs per histogram bucket, GROUP BY for statuses),
never a loop over rows in Python. Labels carry connector ids, kinds and statuses only: no
recipients, no message content, no secrets.

Access: the figures name every connector, so being staff is not enough. A superuser, or a user
holding `access.view_metrics` (directly or through a group), by session or bearer API token; or
`Authorization: Bearer <METRICS_SCRAPE_TOKEN>`, compared in constant time. When
METRICS_ALLOWED_IPS is set (CIDRs, matched against REMOTE_ADDR: the scraper's address, not a
proxy's; X-Forwarded-For never counts here), the request must also come from there: an address is
a further requirement, never a grant on its own. No credentials: 401; a refused token: 401 (audited,
counted); credentials without the right: 403. Unauthenticated requests take from the address's
bucket of the API's anonymous throttle (429 beyond it).
"""
import hmac
import ipaddress
import logging
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from brain_connectors.access.ip import client_ip
from connectors import tokens
from connectors.events.bus_lease import bus_lag
from connectors.models import Connector, ConnectorStatus, Delivery, DeliveryStatus, Event
from connectors.throttling import anonymous_wait

logger = logging.getLogger(__name__)


class DatabaseCollector:
    """A prometheus_client custom collector: `collect()` runs the queries on every scrape."""

    def collect(self):
        connectors = list(Connector.objects.order_by("id").values_list("id", "kind", "status", "health_failures"))
        yield from self._connectors(connectors)
        yield from self._deliveries([c[0] for c in connectors])
        yield self._latency()
        yield from self._event_stream()

    def _connectors(self, connectors):
        up = GaugeMetricFamily("brain_connector_up", "1 if the connector is CONNECTED, else 0.",
                               labels=["connector", "kind", "status"])
        failures = GaugeMetricFamily("brain_connector_health_failures",
                                     "Health checks the connector failed in a row.", labels=["connector", "kind"])
        for connector_id, kind, status, health_failures in connectors:
            up.add_metric([connector_id, kind, status], 1 if status == ConnectorStatus.CONNECTED else 0)
            failures.add_metric([connector_id, kind], health_failures)
        yield up
        yield failures

    def _deliveries(self, connector_ids):
        family = GaugeMetricFamily("brain_deliveries", "Outbound messages by connector and current status.",
                                   labels=["connector", "status"])
        counts = {
            (row["connector_id"], row["status"]): row["n"]
            for row in Delivery.objects.order_by().values("connector_id", "status").annotate(n=Count("pk"))
        }
        # Every status of every connector, zeros included: a series that appears only once it is
        # non-zero breaks rate() and alerting on absence.
        for connector_id in connector_ids:
            for status in DeliveryStatus.values:
                family.add_metric([connector_id, status], counts.get((connector_id, status), 0))
        yield family

    def _latency(self):
        """Queued → accepted by the platform (sent_at - created_at), per connector, cumulative buckets."""
        buckets = sorted(settings.METRICS_LATENCY_BUCKETS)
        latency = ExpressionWrapper(F("sent_at") - F("created_at"), output_field=DurationField())
        aggregates = {"count": Count("pk"), "total": Sum("latency")}
        for i, bound in enumerate(buckets):
            aggregates[f"le{i}"] = Count("pk", filter=Q(latency__lte=timezone.timedelta(seconds=bound)))
        rows = (
            Delivery.objects.filter(sent_at__isnull=False)
            .annotate(latency=latency)
            .order_by()
            .values("connector_id")
            .annotate(**aggregates)
        )
        family = HistogramMetricFamily(
            "brain_message_latency_seconds",
            "Time from queueing an outbound message to the platform accepting it.",
            labels=["connector"],
        )
        for row in rows:
            points = [(_bound(b), row[f"le{i}"]) for i, b in enumerate(buckets)] + [("+Inf", row["count"])]
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            family.add_metric([row["connector_id"]], points, sum_value=max(total, 0.0))
        return family

    def _event_stream(self):
        unpushed = Event.objects.filter(pushed_at__isnull=True).aggregate(n=Count("id"), oldest=Min("time"))
        latest = Event.objects.aggregate(m=Max("seq"))["m"] or 0
        lag = (timezone.now() - unpushed["oldest"]).total_seconds() if unpushed["oldest"] else 0.0
        yield GaugeMetricFamily(
            "brain_event_stream_lag_seconds",
            "Age of the oldest committed event not yet pushed to the live stream (0 when none).",
            value=max(lag, 0.0),
        )
        yield GaugeMetricFamily("brain_event_stream_unpushed", "Committed events not yet pushed to the live stream.",
                                value=unpushed["n"])
        yield GaugeMetricFamily("brain_event_latest_seq", "The highest event sequence number.", value=latest)
        bus = GaugeMetricFamily("brain_event_bus_lag", "Committed events the NATS JetStream bridge has not had "
                                "acknowledged yet (the log's highest seq minus the stream's cursor).", labels=["stream"])
        for row in bus_lag(latest):
            bus.add_metric([row["stream"]], row["lag"])
        yield bus


def _bound(value: float) -> str:
    return repr(float(value))  # Prometheus' own form: 0.5, 1.0, 300.0


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def render() -> bytes:
    return generate_latest(REGISTRY)


# --- access ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]):
    try:
        return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {exc}") from exc


def ip_allowed(address: str) -> bool:
    networks = _networks(tuple(settings.METRICS_ALLOWED_IPS))
    if not networks or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _denied(status, message, retry_after=None):
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def may_scrape(user):
    return user.is_active and (user.is_superuser or user.has_perm("access.view_metrics"))


def _is_scrape_token(raw):
    expected = settings.METRICS_SCRAPE_TOKEN
    return bool(expected) and hmac.compare_digest(raw.encode(), expected.encode())


def _unauthenticated(request, rejected=None):
    """401, or 429 once the address has used its anonymous bucket; a refused token is audited (counted)."""
    ip = client_ip(request)
    wait = anonymous_wait(ip)
    if rejected is not None:
        tokens.record_rejection(rejected, via="metrics", ip=ip, throttled=bool(wait))
    if wait:
        return _denied(429, "Too many unauthenticated requests from this address.", retry_after=wait)
    if rejected is not None:
        return _denied(401, f"Invalid token: {rejected.reason.replace('_', ' ')}.")
    return _denied(401, "Authentication required: METRICS_SCRAPE_TOKEN, or the session or API token of a user "
                        "allowed to scrape.")


@require_GET
def metrics_view(request):
    if settings.METRICS_ALLOWED_IPS and not ip_allowed(request.META.get("REMOTE_ADDR", "")):
        return _denied(403, "Metrics are not served to this address.")
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() == "bearer":
        raw = raw.strip()
        if not _is_scrape_token(raw):
            try:
                user, _token = tokens.authenticate(raw)
            except tokens.TokenRejected as exc:
                return _unauthenticated(request, exc)
            if not may_scrape(user):
                return _denied(403, "Scraping metrics needs a superuser or the access.view_metrics permission.")
    elif request.user.is_authenticated:
        if not may_scrape(request.user):
            return _denied(403, "Scraping metrics needs a superuser or the access.view_metrics permission.")
    else:
        return _unauthenticated(request)
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
