"""Config keys that decide where a connector sends its credentials or messages.

A platform declares them (`BaseConnector.destination_config_keys`: `api_base_url`, the webhook
kind's `url`). connectors.services uses these helpers so that moving a destination needs
admin_connector, each new value passes the outbound-URL guard, and the audit row keeps the old and
new origin (scheme, host, port): never the path or query, which can carry tokens.
"""
from brain_connectors.shared.url_guard import origin, url_refusal
from connectors.platforms.base import CREDENTIALS

_ABSENT = object()


def moved(kind_class, old_config, new_config) -> dict:
    """{key: (old, new)} for each destination key added, removed or changed (None when absent)."""
    old_config = old_config if isinstance(old_config, dict) else {}
    new_config = new_config if isinstance(new_config, dict) else {}
    changes = {}
    for key in kind_class.destination_config_keys:
        before, after = old_config.get(key, _ABSENT), new_config.get(key, _ABSENT)
        if before != after:
            changes[key] = (None if before is _ABSENT else before, None if after is _ABSENT else after)
    return changes


def present(kind_class, config) -> dict:
    """{key: (None, value)} for each destination key a new connector's config sets."""
    return moved(kind_class, {}, config)


def refusals(kind_class, changes) -> dict[str, str]:
    """{key: why} for each new value the outbound-URL guard refuses. Resolves DNS: call it outside
    transactions. Credentials need https:// unless they stay on an allowed private network."""
    problems = {}
    for key, (_, value) in changes.items():
        if value is None:
            continue  # removed: the platform's default (its official API) applies
        kind = kind_class.destination_config_keys[key]
        problem = url_refusal(value, https_unless_private=kind == CREDENTIALS)
        if problem:
            problems[key] = problem
    return problems


def denial(kind_class, changes) -> str:
    keys = sorted(changes)
    what = " or ".join(sorted({kind_class.destination_config_keys[k] for k in keys}))
    return (
        f"Changing {', '.join(keys)} needs the admin_connector permission: it decides where the "
        f"connector's {what} are sent."
    )


def summary(changes) -> dict:
    """What the audit row keeps: {key: {"old": origin, "new": origin}}."""
    return {key: {"old": origin(old), "new": origin(new)} for key, (old, new) in sorted(changes.items())}
