"""A preference's fields: validation of a create or a change (every problem at once), times and time zones."""
import re
from datetime import time
from functools import lru_cache
from zoneinfo import available_timezones

from brain_connectors.shared.errors import ValidationFailed
from routing.models import ChannelIdentity, NotificationType

PREFERENCE_FIELDS = ("identity", "priority", "enabled", "notification_types", "quiet_start", "quiet_end", "timezone")
MAX_PRIORITY = 1000
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@lru_cache(maxsize=1)
def _zones():
    return frozenset(available_timezones()) | {"UTC"}


def valid_timezone(name):
    return isinstance(name, str) and name in _zones()


def _parse_time(name, value, problems):
    if value is None or value == "":
        return None
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    if not isinstance(value, str) or not TIME_RE.fullmatch(value.strip()):
        problems[name] = "must be a time as HH:MM (00:00 to 23:59), or null"
        return None
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes))


def format_time(value):
    return value.strftime("%H:%M") if value is not None else None


# The message of a refusal, in plain words for people (the /preferences/ page shows it as is);
# `details` keeps the API's field names for programs.
PLAIN_WORDS = {
    "identity": "Channel: choose one of your channels.",
    "priority": f"Position: give a whole number from 1 to {MAX_PRIORITY}.",
    "enabled": "Enabled: give true or false.",
    "notification_types": "Use it for: choose from " + ", ".join(NotificationType.values) + ".",
    "quiet_start": "Quiet hours: give the start as a time such as 22:00, or leave it empty.",
    "quiet_end": "Quiet hours: give the end as a time such as 07:00, or leave it empty.",
    "timezone": "Time zone: choose one such as Europe/London or UTC.",
    "quiet_hours_half": "Quiet hours: give both a start and an end time, or neither.",
    "quiet_hours_same": "Quiet hours: the start and end times must differ.",
}


def _plain_message(problems, quiet_hours_reason):
    lines = []
    for name in problems:
        if name == "quiet_hours":
            lines.append(PLAIN_WORDS[quiet_hours_reason])
        elif problems[name] == "unknown field":
            lines.append(f"{name!r} is not a setting of a channel in the list.")
        elif name == "identity" and problems[name] == "required":
            lines.append("Channel: choose which channel to add.")
        else:
            lines.append(PLAIN_WORDS[name])
    return " ".join(lines)


def clean_preference(user, data, current=None):
    """Validate a create (current=None) or a change; returns the values to set. Every problem is
    reported at once, in `details`, by field."""
    unknown = set(data) - set(PREFERENCE_FIELDS)
    problems = {name: "unknown field" for name in sorted(unknown)}
    values = {}
    if "identity" in data:
        identity = None
        raw = data["identity"]
        if isinstance(raw, ChannelIdentity):
            identity = raw if raw.user_id == user.pk else None
        elif isinstance(raw, int) and not isinstance(raw, bool):
            identity = ChannelIdentity.objects.filter(pk=raw, user=user).first()
        if identity is None:
            problems["identity"] = f"must be the id of one of {user.get_username()}'s identities"
        else:
            values["identity"] = identity
    elif current is None:
        problems["identity"] = "required"
    if "priority" in data:
        raw = data["priority"]
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_PRIORITY:
            problems["priority"] = f"must be an integer from 1 to {MAX_PRIORITY}"
        else:
            values["priority"] = raw
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            problems["enabled"] = "must be true or false"
        else:
            values["enabled"] = data["enabled"]
    if "notification_types" in data:
        raw = data["notification_types"]
        allowed = NotificationType.values
        if not isinstance(raw, (list, tuple)) or not all(isinstance(t, str) for t in raw):
            problems["notification_types"] = f"must be a list of {', '.join(allowed)}"
        else:
            bad = sorted(set(raw) - set(allowed))
            if bad:
                problems["notification_types"] = f"unknown types {bad}; choose from {', '.join(allowed)}"
            else:
                values["notification_types"] = [t for t in allowed if t in raw]  # canonical order, no duplicates
    elif current is None:
        values["notification_types"] = list(NotificationType.values)
    for name in ("quiet_start", "quiet_end"):
        if name in data:
            values[name] = _parse_time(name, data[name], problems)
    if "timezone" in data:
        if not valid_timezone(data["timezone"]):
            problems["timezone"] = "must be an IANA time zone name such as Europe/London or UTC"
        else:
            values["timezone"] = data["timezone"]
    quiet_hours_reason = None
    if not problems.keys() & {"quiet_start", "quiet_end"}:
        start = values.get("quiet_start", current.quiet_start if current else None)
        end = values.get("quiet_end", current.quiet_end if current else None)
        if (start is None) != (end is None):
            problems["quiet_hours"] = "give both quiet_start and quiet_end, or neither"
            quiet_hours_reason = "quiet_hours_half"
        elif start is not None and start == end:
            problems["quiet_hours"] = "quiet_start and quiet_end must differ"
            quiet_hours_reason = "quiet_hours_same"
    if problems:
        raise ValidationFailed(_plain_message(problems, quiet_hours_reason), details=problems)
    return values
