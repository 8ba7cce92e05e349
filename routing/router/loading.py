"""Reads the router's inputs from the database: every connector's state, and one person's entries, one query each.

`load_entries(user_id)` reads a person's identities, each with its preference and, for WhatsApp,
the time of the person's newest message from that address on that connector.
"""
import json

from django.db import connection
from django.db.models import FilteredRelation, OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat

from connectors.models import Connector, InboundMessage
from connectors.platforms.addresses import mask_address
from routing.models import ChannelIdentity
from routing.router.snapshot import ConnectorState, Entry

_compiled = {}  # SQL compiled once per process (PostgreSQL)


def load_connector_states():
    """Every connector's routing-relevant state, in one query."""
    states = {}
    qs = Connector.objects.order_by().values_list(
        "id", "kind", "status", "last_heartbeat", "lease_owner", "quota_per_minute",
        "recipient_quota_per_minute", "config",
    )
    if connection.vendor == "postgresql":  # compiled once, as in _entry_rows
        if "states" not in _compiled:
            _compiled["states"] = qs.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(*_compiled["states"])
            rows = cursor.fetchall()
    else:
        rows = list(qs)
    for cid, kind, status, beat, lease, quota, rquota, config in rows:
        if isinstance(config, str):
            config = json.loads(config)
        has_template = bool(isinstance(config, dict) and config.get("template_content_sid"))
        states[cid] = ConnectorState(cid, kind, status, beat, lease or "", quota, rquota, has_template)
    return states


_SENTINEL_USER = -7_919_000_001  # stands for the user id in the SQL compiled once per process


def _entries_queryset(user_id):
    newest_inbound = (
        InboundMessage.objects.filter(connector_id=OuterRef("connector_id"))
        .filter(Q(sender=OuterRef("address")) | Q(sender=Concat(Value("whatsapp:"), OuterRef("address"))))
        .order_by("-received_at")
        .values("received_at")[:1]
    )
    return (
        ChannelIdentity.objects.filter(user_id=user_id)
        .annotate(pref=FilteredRelation("preferences", condition=Q(preferences__user_id=user_id)))
        .annotate(last_inbound=Subquery(newest_inbound))
        .order_by()
        .values_list(
            "id", "connector_id", "address", "pref__id", "pref__priority", "pref__enabled",
            "pref__notification_types", "pref__quiet_start", "pref__quiet_end", "pref__timezone",
            "last_inbound",
        )
    )


def _entry_rows(user_id):
    """The rows of `_entries_queryset`. On PostgreSQL the SQL is compiled once per process (the
    ORM's compilation costs more than the query itself) and run with this user's id."""
    if connection.vendor != "postgresql":
        return list(_entries_queryset(user_id))
    if "sql" not in _compiled:
        sql, params = _entries_queryset(_SENTINEL_USER).query.sql_with_params()
        _compiled["sql"] = (sql, tuple(params))
    sql, params = _compiled["sql"]
    with connection.cursor() as cursor:
        cursor.execute(sql, [user_id if p == _SENTINEL_USER else p for p in params])
        rows = cursor.fetchall()
    # psycopg hands jsonb to Django as text: decode it as the ORM would.
    return [(*row[:6], json.loads(row[6]) if isinstance(row[6], str) else row[6], *row[7:]) for row in rows]


def load_entries(user_id):
    """The person's identities, each with its preference and newest inbound time, in one query."""
    entries = []
    for iid, cid, address, pid, priority, enabled, types, qs, qe, tz, last in _entry_rows(user_id):
        entries.append(
            Entry(
                identity_id=iid,
                connector_id=cid,
                address=address,
                address_hint=mask_address(address),
                preference_id=pid,
                priority=priority,
                enabled=True if enabled is None else enabled,
                notification_types=tuple(types or ()),
                quiet_start=qs,
                quiet_end=qe,
                timezone=tz or "UTC",
                last_inbound=last,
                user_id=user_id,
            )
        )
    return tuple(entries)
