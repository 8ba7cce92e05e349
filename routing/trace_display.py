"""A notification's trace and attempts as HTML tables for the admin: the router's decision and each channel tried."""
import json

from django.utils.html import format_html, format_html_join

SOURCES = {"preferences": "the person's preferences", "default_order": "the default order of kinds"}


def _table(headers, rows):
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),)
                                                for row in rows))
    return format_html('<table class="trace"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)


def _raw(value):
    """The stored JSON too, folded away: for a key this page does not know."""
    return format_html('<details><summary>raw JSON</summary><pre style="white-space: pre-wrap">{}</pre></details>',
                       json.dumps(value, indent=2, ensure_ascii=False))


def trace_html(trace):
    if not trace:
        return "-"
    summary = format_html(
        "<p>Decided {} from {}{}.</p>",
        trace.get("at", "?"),
        SOURCES.get(trace.get("source"), trace.get("source", "?")),
        f" in {trace['decision_ms']} ms" if trace.get("decision_ms") else "",
    )
    rows = [
        (c.get("priority") if c.get("priority") is not None else "-", c.get("kind") or "?", c.get("connector_id") or "-",
         c.get("address_hint") or "-", "yes" if c.get("included") else "no", c.get("reason") or "")
        for c in trace.get("candidates") or []
    ]
    table = _table(["Priority", "Kind", "Connector", "Address", "In the chain", "Why"], rows) if rows else format_html(
        "<p>{}</p>", "No channel: the person has no verified address.")
    return format_html("{}{}{}", summary, table, _raw(trace))


def attempts_html(attempts):
    if not attempts:
        return "-"
    rows = [
        (a.get("step", "?"), a.get("kind") or "?", a.get("connector_id") or "-", a.get("delivery_id") or "-",
         a.get("outcome") or "", a.get("reason") or "", a.get("started_at") or "-", a.get("ended_at") or "-")
        for a in attempts
    ]
    table = _table(["Step", "Kind", "Connector", "Delivery", "Outcome", "Why", "Started", "Ended"], rows)
    return format_html("{}{}", table, _raw(attempts))
